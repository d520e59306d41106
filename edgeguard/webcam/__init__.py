"""Frames -> digit regions -> one batched screen -> overlay: EdgeGuard on a camera, a video file or a stream.

One frame flows one way, one module per step:

    frame (BGR) -> digit regions, each cropped with paper padding       (edgeguard/regions.py, shared with detect)
      -> ``preprocess`` (MNIST format) -> ONE ``guard.screen`` call for the whole frame     (screening.py)
      -> ``Tracker`` (IoU matching, vote over the last few frames) -> ``DigitResult`` per digit  (tracking.py)
      -> ``annotate``: boxes coloured by verdict, labels, reasons, FPS                      (overlay.py)

``run`` (loop.py) is the loop behind ``edgeguard webcam``: it opens the source (sources.py), reads frames
through a generator that always releases the capture, screens every ``every``-th frame, draws, shows,
records, and reports each frame to a callback. It never prints; the CLI does.

The names below are the public API; import them from ``edgeguard.webcam``. (To replace one in a test,
patch it where it is used: ``run`` calls ``edgeguard.webcam.loop.process_frame``, for instance.)
"""

from edgeguard.regions import (
    CROP_SIDE,
    MAX_ASPECT,
    MAX_CANDIDATES,
    MAX_FILL,
    MAX_HEIGHT,
    MIN_ASPECT,
    MIN_HEIGHT,
    PAD,
    THRESHOLD_C,
    Box,
    find_digit_regions,
)
from edgeguard.webcam.loop import FrameResult, RunSummary, default_calibration, run
from edgeguard.webcam.overlay import COLOURS, SHORT, annotate, describe
from edgeguard.webcam.screening import DigitResult, process_frame
from edgeguard.webcam.sources import RecordError, SourceError, display_available, open_source, read_frames
from edgeguard.webcam.tracking import Tracker, iou

__all__ = [
    "Box", "DigitResult", "FrameResult", "RunSummary", "SourceError", "RecordError", "Tracker",
    "find_digit_regions", "process_frame", "annotate", "describe", "iou", "open_source", "read_frames",
    "display_available", "run", "default_calibration",
    # tuning constants and overlay styling
    "MAX_CANDIDATES", "MIN_HEIGHT", "MAX_HEIGHT", "MIN_ASPECT", "MAX_ASPECT", "MAX_FILL", "THRESHOLD_C",
    "CROP_SIDE", "PAD", "COLOURS", "SHORT",
]
