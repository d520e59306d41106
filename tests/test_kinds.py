"""The kind rule (edgeguard.kinds): its manifest entry, its arithmetic, and Guard using it."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from edgeguard import Guard
from edgeguard.bundle import load_bundle, shipped_bundle_path
from edgeguard.contract import MANIFEST, SCORE_NAMES
from edgeguard.errors import BundleError
from edgeguard.kinds import EPS, KindRule

ENTRY = {"signals": list(SCORE_NAMES), "mean": [0.0] * 8, "scale": [1.0] * 8,
         "coef": [0.0, 2.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0], "intercept": 0.5}


def test_round_trip_and_arithmetic():
    rule = KindRule.from_manifest(ENTRY)
    assert rule.to_manifest() == ENTRY and KindRule.from_manifest(rule.to_manifest()).to_manifest() == ENTRY
    rng = np.random.default_rng(0)
    scores = {n: rng.random(50).astype(np.float32) for n in SCORE_NAMES}
    expected = [2.0 * np.log(scores["input_mismatch"][i] + EPS) - np.log(scores["recon_mse"][i] + EPS) + 0.5 > 0
                for i in range(50)]
    assert rule.adversarial(scores).tolist() == expected


@pytest.mark.parametrize(("change", "message"), [
    ({"signals": ["nope"] * 8}, "signals"),
    ({"signals": []}, "signals"),
    ({"mean": [0.0] * 7}, "mean"),
    ({"coef": [float("nan")] * 8}, "coef"),
    ({"scale": [0.0] * 8}, "scale"),
    ({"intercept": "1"}, "intercept"),
    ({"intercept": True}, "intercept"),
])
def test_bad_entries_are_refused(change, message):
    with pytest.raises(BundleError, match=message):
        KindRule.from_manifest({**ENTRY, **change})
    with pytest.raises(BundleError, match="kind_rule"):
        KindRule.from_manifest([1, 2])


def bundle_with(tmp_path, rule):
    root = tmp_path / "bundle"
    shutil.copytree(shipped_bundle_path(), root)
    manifest = json.loads((root / MANIFEST).read_text())
    manifest["kind_rule"] = rule
    (root / MANIFEST).write_text(json.dumps(manifest))
    return root


def test_a_broken_rule_is_a_bundle_error(tmp_path):
    with pytest.raises(BundleError, match="kind_rule"):
        load_bundle(bundle_with(tmp_path, {**ENTRY, "scale": [-1.0] * 8}))


def test_the_shipped_bundle_has_a_kind_rule():
    assert load_bundle(None).info.kind_rule is not None


def test_guard_names_kinds_by_the_bundles_rule(tmp_path, mnist):
    noise = np.random.default_rng(3).random((20, 28, 28), dtype=np.float32)
    images = np.concatenate([noise, mnist.test_x[:20].astype(np.float32) / 255])
    for intercept, kind in ((50.0, "adversarial"), (-50.0, "out_of_distribution")):
        rule = {**ENTRY, "coef": [0.0] * 8, "intercept": intercept}
        verdicts = Guard.load(bundle_with(tmp_path / kind, rule), providers="cpu").screen(images)
        kinds = {v.verdict for v in verdicts[:20]}
        assert kinds <= {kind, "uncertain"} and kind in kinds
        assert sum(v.verdict == "clean" for v in verdicts[20:]) >= 18
