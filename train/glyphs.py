"""Letters, Greek letters and symbols rendered from matplotlib's TrueType fonts: training non-digits.

Outlier exposure needs things that are not digits but are written like them. These glyphs come from the
fonts matplotlib ships (DejaVu Sans, Serif and Mono, STIX General: every style), drawn at random size, weight
and angle with Pillow and made MNIST-style by ``edgeguard.normalize.preprocess``. The robustness report's
letters-and-symbols set is drawn with OpenCV's Hershey fonts and is never trained on: the two sets share no
font. Characters easily read as a digit (O, l, S, Z, b, g, q, omicron, iota, ...) are left out, so the models
are never taught that a digit is not one.
"""

from __future__ import annotations

import string
from functools import cache
from pathlib import Path

import numpy as np

from edgeguard.normalize import preprocess

CANVAS = 96
DIGIT_LIKE = set("OoQDIl1iLjJ|ZzSsbBgqGTtady")
GREEK = "αβγδεζηθκλμνξπρσςτυφχψωΓΔΘΛΞΠΣΦΨΩ"
SYMBOLS = "#$%&*+=?@<>{}[]~^±×÷√∞≠≈∂∇∑∏★☆♠♣♥♦→←⊕⊗∀∃∈∩∪"
CHARACTERS = [c for c in string.ascii_letters if c not in DIGIT_LIKE] + list(GREEK.replace("ζ", "")) + list(SYMBOLS)


@cache
def font_files() -> tuple[str, ...]:
    """The TrueType files used: matplotlib's DejaVu (not the Display cuts) and STIX General fonts."""
    import matplotlib

    folder = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    files = [p for p in sorted(folder.glob("*.ttf"))
             if (p.name.startswith("DejaVu") and "Display" not in p.name) or p.name.startswith("STIXGeneral")]
    if not files:
        raise FileNotFoundError(f"no DejaVu or STIX fonts in {folder}")
    return tuple(str(p) for p in files)


@cache
def _font(path: str, size: int):
    from PIL import ImageFont

    return ImageFont.truetype(path, size)


def glyphs(n: int, seed: int) -> tuple[np.ndarray, list[str]]:
    """n MNIST-style float32 images (n, 28, 28) of rendered glyphs, and the character of each."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    fonts = font_files()
    images: list[np.ndarray] = []
    chars: list[str] = []
    while len(images) < n:
        ch = CHARACTERS[int(rng.integers(len(CHARACTERS)))]
        font = _font(fonts[int(rng.integers(len(fonts)))], int(rng.integers(7, 15)) * 5)
        canvas = Image.new("L", (CANVAS, CANVAS), 0)
        draw = ImageDraw.Draw(canvas)
        stroke = int(rng.integers(0, 3))
        draw.text((CANVAS / 2, CANVAS / 2), ch, fill=255, font=font, anchor="mm", stroke_width=stroke,
                  stroke_fill=255)
        canvas = canvas.rotate(float(rng.uniform(-20, 20)), resample=Image.BILINEAR)
        try:
            images.append(preprocess(np.asarray(canvas)))
        except ValueError:  # the font has no such glyph, or nothing was drawn
            continue
        chars.append(ch)
    return np.stack(images).astype(np.float32), chars
