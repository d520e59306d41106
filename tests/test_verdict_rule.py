"""The verdict rule, ``edgeguard.calibration.decide``, case by case.

Groups (edgeguard.calibration.SIGNALS): consistency = disagreement, input_mismatch, vote_entropy;
reconstruction = recon_mse, recon_mse_min, kl, posterior_spread; confidence = low_confidence.
"""

from __future__ import annotations

import pytest

from edgeguard.calibration import SIGNALS, VERDICTS, decide

ALPHA = 0.01
QUIET = 0.5  # a p-value that never fires

CASES = [
    # (id, per-signal p-values, combined p-value, expected verdict, expected reasons)
    ("combined above alpha is clean even when a signal fires",
     {"recon_mse": 0.001, "input_mismatch": QUIET}, 0.02, "clean", ()),
    ("combined exactly at alpha is clean (strictly below flags)",
     {"recon_mse": QUIET}, ALPHA, "clean", ()),
    ("only a reconstruction signal fires",
     {"recon_mse": 0.002, "input_mismatch": QUIET, "low_confidence": QUIET}, 0.001,
     "out_of_distribution", ("recon_mse",)),
    ("only a consistency signal fires",
     {"recon_mse": QUIET, "input_mismatch": 0.003, "low_confidence": QUIET}, 0.001,
     "adversarial", ("input_mismatch",)),
    ("both fire, reconstruction stronger",
     {"recon_mse": 0.0002, "input_mismatch": 0.004}, 0.0001,
     "out_of_distribution", ("recon_mse", "input_mismatch")),
    ("both fire, consistency stronger",
     {"recon_mse": 0.004, "input_mismatch": 0.0002}, 0.0001,
     "adversarial", ("input_mismatch", "recon_mse")),
    ("a tie between the groups goes to out_of_distribution",
     {"posterior_spread": 0.003, "disagreement": 0.003}, 0.001,
     "out_of_distribution", ("disagreement", "posterior_spread")),
    ("only low confidence fires: uncertain, named",
     {"recon_mse": QUIET, "input_mismatch": QUIET, "low_confidence": 0.002}, 0.005,
     "uncertain", ("low_confidence",)),
    ("nothing fires alone but the combination does: uncertain, 'combined'",
     {"recon_mse": 0.02, "input_mismatch": 0.03, "low_confidence": 0.02}, 0.004,
     "uncertain", ("combined",)),
    ("confidence and reconstruction fire: reconstruction names the kind",
     {"low_confidence": 0.0001, "kl": 0.005}, 0.00005,
     "out_of_distribution", ("low_confidence", "kl")),
    ("reasons are ordered by p-value, strongest first",
     {"recon_mse": 0.006, "kl": 0.001, "recon_mse_min": 0.003}, 0.0005,
     "out_of_distribution", ("kl", "recon_mse_min", "recon_mse")),
    ("a signal at exactly alpha does not fire",
     {"recon_mse": ALPHA, "vote_entropy": 0.009}, 0.001, "adversarial", ("vote_entropy",)),
]


@pytest.mark.parametrize(("p_signals", "p_combined", "verdict", "reasons"),
                         [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_decide(p_signals, p_combined, verdict, reasons):
    assert decide(p_signals, p_combined, ALPHA) == (verdict, reasons)


def test_every_signal_belongs_to_a_group_the_rule_knows():
    groups = {group for group, _ in SIGNALS.values()}
    assert groups == {"consistency", "reconstruction", "confidence"}
    for name, (group, _) in SIGNALS.items():
        verdict, reasons = decide({name: 1e-4}, 1e-4, ALPHA)
        expected = {"consistency": "adversarial", "reconstruction": "out_of_distribution",
                    "confidence": "uncertain"}[group]
        assert (verdict, reasons) == (expected, (name,)), name


@pytest.mark.parametrize("alpha", [0.001, 0.05, 0.2])
def test_alpha_moves_the_threshold(alpha):
    p = {"recon_mse": alpha * 0.9}
    assert decide(p, alpha * 0.9, alpha)[0] == "out_of_distribution"
    assert decide(p, alpha * 1.1, alpha) == ("clean", ())
    assert decide({"recon_mse": alpha * 1.1}, alpha * 0.5, alpha) == ("uncertain", ("combined",))


def test_verdicts_are_the_documented_four():
    assert VERDICTS == ("clean", "adversarial", "out_of_distribution", "uncertain")


@pytest.mark.parametrize("adversarial", [True, False])
def test_a_kind_rule_names_the_kind_when_a_signal_fired(adversarial):
    kind = "adversarial" if adversarial else "out_of_distribution"
    for p_signals in ({"recon_mse": 0.0002, "input_mismatch": 0.004}, {"input_mismatch": 0.003},
                      {"posterior_spread": 0.001, "low_confidence": 0.002}):
        verdict, reasons = decide(p_signals, 0.0001, ALPHA, adversarial)
        assert verdict == kind and reasons == decide(p_signals, 0.0001, ALPHA)[1]
    # It never overrides clean, nor uncertain (only confidence, or only the combination, fired).
    assert decide({"recon_mse": 0.001}, 0.02, ALPHA, adversarial) == ("clean", ())
    assert decide({"low_confidence": 0.002, "recon_mse": QUIET}, 0.005, ALPHA, adversarial) == \
        ("uncertain", ("low_confidence",))
    assert decide({"recon_mse": 0.02}, 0.004, ALPHA, adversarial) == ("uncertain", ("combined",))
