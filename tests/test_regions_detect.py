"""Several digits in one image: the shared region finder, `edgeguard detect --digits`, `Guard.screen_regions` and
`Guard.screen_image`, on generated pages (benchmarks/pages.py) and on single-digit images, which keep the verdicts
`Guard.screen_file` gives them."""

from __future__ import annotations

import io
import json
import math
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from benchmarks import pages
from edgeguard import regions, sheet
from edgeguard import webcam as cam
from edgeguard.cli import app
from edgeguard.errors import InputError
from edgeguard.regions import reading_order
from export import filming

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
runner = CliRunner()


def run(*args):
    result = runner.invoke(app, [str(a) for a in args])
    assert "Traceback" not in result.output
    return result


def records(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def iou(a, b) -> float:
    return cam.iou(tuple(a), tuple(b))


def page_of(mnist, layout: str, n: int, seed: int, size=None, extra=()) -> pages.Page:
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(mnist.test_x), n, replace=False)
    glyphs = [(int(mnist.test_y[c]), mnist.test_x[c], f"test#{c}") for c in chosen] + list(extra)
    return pages.render(glyphs, layout, rng, size)


@pytest.fixture(scope="module")
def sheet10(mnist, tmp_path_factory):
    """A photo of ten digits in rows (the issue's sheet), as a JPEG file."""
    page = page_of(mnist, "rows", 10, seed=3)
    path = tmp_path_factory.mktemp("pages") / "sheet.jpg"
    path.write_bytes(page.jpeg)
    return page, path


@pytest.fixture(scope="module")
def singles(mnist, tmp_path_factory):
    """Single-digit files: examples/, MNIST test digits as 28x28 PNGs, and generated single-digit photos."""
    folder = tmp_path_factory.mktemp("singles")
    files = sorted(p for p in EXAMPLES.iterdir() if p.suffix in (".png", ".jpg"))
    for i in range(6):
        cv2.imwrite(str(folder / f"mnist{i}.png"), mnist.test_x[i])
    for i, page in enumerate(pages.pages((mnist.test_x, mnist.test_y), 12, seed=21, layouts=("single",))):
        (folder / f"photo{i}.jpg").write_bytes(page.jpeg)
    return files + sorted(folder.iterdir())


# --------------------------------------------------------------------------- one region finder


def test_the_webcam_uses_the_shared_region_finder():
    assert cam.find_digit_regions is regions.find_digit_regions
    assert (cam.Box, cam.MAX_CANDIDATES, cam.MIN_HEIGHT, cam.CROP_SIDE) == \
           (regions.Box, regions.MAX_CANDIDATES, regions.MIN_HEIGHT, regions.CROP_SIDE)
    assert regions.FRAME == regions.Finder()  # the webcam's settings are the defaults, unchanged
    with pytest.raises(ValueError):
        regions.Finder(min_height=0.5, max_height=0.4)


def test_reading_order_follows_tilted_rows():
    rng = np.random.default_rng(0)
    for angle in (-10, -4, 0, 6, 10):
        t = math.tan(math.radians(angle))
        boxes = []  # three rows of five 40 px digits, the sheet tilted by `angle`
        for row in range(3):
            for col in range(5):
                x, y = 100 + 70 * col, 100 + 90 * row
                boxes.append((round(x - t * y * 0.2), round(y + t * x), 28, 40))
        order = rng.permutation(len(boxes))
        shuffled = [boxes[i] for i in order]
        assert [int(order[i]) for i in reading_order(shuffled)] == list(range(len(boxes))), angle


# --------------------------------------------------------------------------- detect: several digits


def test_detect_reports_every_digit_of_a_sheet(sheet10):
    page, path = sheet10
    result = run("detect", path, "--json")
    assert result.exit_code == 0, result.output
    rows = records(result.stdout)
    assert len(rows) == 10
    assert [r["index"] for r in rows] == list(range(10))
    reading = "".join(str(r["label"]) for r in rows)
    for r in rows:
        assert r["source"] == str(path) and r["status"] == "digits" and r["count"] == 10
        assert r["reading"] == reading and r["all_clean"] == all(not x["flagged"] for x in rows)
        assert r["calibration"] == sheet.REGIONS_CALIBRATION  # the shipped bundle has it
        assert len(r["box"]) == 4 and all(isinstance(v, int) for v in r["box"])
    # The boxes are the digits', in the order written (rows top to bottom, left to right), in the image's pixels.
    for truth, r in zip(page.digits, rows):
        assert iou(truth.box, r["box"]) >= 0.5
    assert sum(r["label"] == t.label for r, t in zip(rows, page.digits)) >= 9
    table = run("detect", path).stdout
    assert f"reads {reading}" in table and table.count("\n") >= 12  # a row per digit under the file's row


def test_digits_one_is_the_old_single_verdict(sheet10, guard):
    _, path = sheet10
    rows = records(run("detect", path, "--json", "--digits", "one").stdout)
    assert len(rows) == 1 and rows[0]["status"] == "whole" and rows[0]["index"] == 0
    old = guard.screen_file(path).to_dict()
    assert {k: rows[0][k] for k in old} == old


def test_digits_all_screens_a_lone_region_by_itself(tmp_path, mnist):
    page = page_of(mnist, "single", 1, seed=5, size=(800, 600))
    path = tmp_path / "one.jpg"
    path.write_bytes(page.jpeg)
    auto = records(run("detect", path, "--json").stdout)
    alone = records(run("detect", path, "--json", "--digits", "all").stdout)
    assert auto[0]["status"] == "whole" and auto[0]["box"] == [0, 0, 800, 600]
    assert len(alone) == 1 and alone[0]["status"] == "digits" and iou(alone[0]["box"], page.digits[0].box) >= 0.5
    assert run("detect", path, "--digits", "some").exit_code == 2


def test_fail_on_flagged_counts_one_flagged_digit(tmp_path, mnist):
    page = page_of(mnist, "rows", 3, seed=8, extra=[(-1, filming.hash_glyph(), "hash")])
    path = tmp_path / "form.jpg"
    path.write_bytes(page.jpeg)
    result = run("detect", path, "--json")
    rows = records(result.stdout)
    assert result.exit_code == 0 and len(rows) == 4
    hash_box = next(t.box for t in page.digits if t.name == "hash")
    flagged = [r for r in rows if r["flagged"]]
    assert [r["box"] for r in flagged] and all(iou(r["box"], hash_box) >= 0.5 for r in flagged)
    assert not rows[0]["all_clean"]
    assert run("detect", path, "--fail-on", "flagged").exit_code == 1


def _touching_digits(mnist, count: int = 6, pitch: int = 12) -> np.ndarray:
    """A photo-like image of ``count`` MNIST digits written so close that their strokes run into each other."""
    strip = np.zeros((28, pitch * (count - 1) + 28), np.uint8)
    for i in range(count):
        strip[:, pitch * i : pitch * i + 28] = np.maximum(strip[:, pitch * i : pitch * i + 28], mnist.test_x[i + 1])
    big = cv2.resize(strip, None, fx=6, fy=6, interpolation=cv2.INTER_CUBIC)
    page = np.full((600, 800), 215, np.uint8)
    y, x = (600 - big.shape[0]) // 2, (800 - big.shape[1]) // 2
    page[y : y + big.shape[0], x : x + big.shape[1]] -= (big.astype(np.float32) * 180 / 255).astype(np.uint8)
    return page


def test_an_unseparable_image_is_reported_as_such(tmp_path, mnist):
    path = tmp_path / "touching.png"
    cv2.imwrite(str(path), _touching_digits(mnist))
    result = run("detect", path, "--json")
    assert result.exit_code == 0, result.output
    rows = records(result.stdout)
    assert {r["status"] for r in rows} == {"unseparable"}
    assert all(r["reading"] is None and r["all_clean"] is False for r in rows)
    assert "too wide for one digit" in rows[0]["note"]
    assert not any(r.get("verdict") == "adversarial" and r["index"] == 0 and r["box"] == [0, 0, 800, 600]
                   for r in rows)
    assert "unseparable" in run("detect", path).stdout
    assert run("detect", path, "--fail-on", "flagged").exit_code == 1


# --------------------------------------------------------------------------- one digit: unchanged


def test_single_digit_images_keep_todays_verdicts(singles, guard):
    result = run("detect", *singles, "--json")
    assert result.exit_code == 0, result.output
    rows = records(result.stdout)
    assert len(rows) == len(singles)
    unreadable = 0
    for path, row in zip(singles, rows):
        now = guard.screen_image(path)
        try:
            old = guard.screen_file(path)
        except InputError:  # where today's threshold finds no digit, the finder's one digit is screened
            unreadable += 1
            assert now.status == row["status"] == "digits" and len(now.digits) == 1, path.name
            continue
        assert now.status == "whole" and now.digits[0].screening == old, path.name
        assert row["status"] == "whole" and {k: row[k] for k in old.to_dict()} == old.to_dict(), path.name
    assert unreadable <= 2


# --------------------------------------------------------------------------- the API


def test_screen_regions_and_screen_image(guard, sheet10):
    page, path = sheet10
    found = guard.screen_regions(page.image)
    assert [d.index for d in found] == list(range(10))
    assert [d.box for d in found] == [d.box for d in guard.screen_image(page.image, digits="all").digits]
    image = guard.screen_image(path)
    assert image.status == "digits" and image.reading == "".join(str(d.label) for d in found)
    assert image.all_clean == (not any(d.flagged for d in found)) and image.source == str(path)
    assert image.records()[3]["index"] == 3
    with pytest.raises(ValueError):
        guard.screen_image(page.image, digits="many")
    with pytest.raises(ValueError):
        guard.screen(np.zeros((1, 28, 28), np.float32), calibration="tv")


# --------------------------------------------------------------------------- EXIF


def _with_orientation(bgr: np.ndarray, orientation: int) -> bytes:
    from PIL import Image

    rgb = Image.fromarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    exif = Image.Exif()
    exif[0x0112] = orientation
    out = io.BytesIO()
    rgb.save(out, format="JPEG", quality=95, exif=exif.tobytes())
    return out.getvalue()


def test_exif_orientation_is_applied(tmp_path, sheet10, guard):
    page, _ = sheet10
    upright = guard.screen_image(page.image)
    # A phone that stored the pixels sideways and the turn in the EXIF tag: 6 = turn 90 degrees clockwise to view.
    sideways = tmp_path / "sideways.jpg"
    sideways.write_bytes(_with_orientation(np.ascontiguousarray(np.rot90(page.image)), 6))
    turned = guard.screen_image(sideways)
    assert turned.size == upright.size and turned.status == "digits"
    assert turned.reading == upright.reading
    assert all(iou(a.box, b.box) >= 0.7 for a, b in zip(turned.digits, upright.digits))


# --------------------------------------------------------------------------- the benchmark


def test_match_counts_merged_and_split_digits():
    truths = [pages.Truth(1, (0, 0, 10, 20), "a"), pages.Truth(2, (15, 0, 10, 20), "b"),
              pages.Truth(3, (40, 0, 10, 20), "c"), pages.Truth(4, (60, 0, 10, 20), "d")]
    boxes = [(0, 0, 25, 20), (40, 0, 10, 9), (40, 11, 10, 9), (60, 0, 10, 20), (100, 100, 5, 5)]
    outcomes, spurious = pages.match(truths, boxes)
    assert [o for o, _ in outcomes] == ["merged", "merged", "split", "found"]
    assert outcomes[3] == ("found", 3) and spurious == 1


@pytest.mark.slow
def test_quick_pages_benchmark(tmp_path, mnist_files):
    """A real quick run (a few pages of each kind, seconds), as a process: it pins itself to one core.
    ``mnist_files``: skip where MNIST is not on disk (the benchmark process would download it)."""
    out = tmp_path / "pages.md"
    proc = subprocess.run([sys.executable, "-m", "benchmarks.pages", "--quick", "--json", "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result, text = json.loads(proc.stdout), out.read_text()
    for heading in ("## Targets", "## The calibration for cut-out digits", "## Test pages", "## Single-digit images",
                    "## Speed"):
        assert heading in text
    assert "`--quick` run" in text and result["quick"] is True
    assert result["choice"]["in_use"] == sheet.REGIONS_CALIBRATION
    assert result["single"]["identical"] == result["single"]["screened_today"]  # one digit: nothing changed
    assert result["timing"]["digits"] == 12 and result["timing"]["file_s"] > 0
    total = result["test"]["total"]
    assert total["digits"] == sum(total[k] for k in ("found", "merged", "split", "missed"))


def test_docs_link_the_report():
    docs = (ROOT / "docs" / "pages.md").read_text()
    assert "../reports/pages.md" in docs and "python -m benchmarks.pages" in docs
