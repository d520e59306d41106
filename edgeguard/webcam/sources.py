"""Video in and out: opening a camera, a video file or a stream and reading its frames, the file that
``record`` writes, and whether a window can be shown. OpenCV's (and FFmpeg's) own complaints are silenced;
a source or record file that does not work is one :class:`SourceError` or :class:`RecordError` line."""

from __future__ import annotations

import os
import sys
from collections.abc import Generator
from pathlib import Path

import cv2
import numpy as np

from edgeguard.decoder_output import quiet_opencv
from edgeguard.errors import InputError

__all__ = ["SourceError", "RecordError", "source_kind", "open_source", "read_frames", "open_writer",
           "display_available"]


class SourceError(InputError):
    """A video source that cannot be opened or read."""


class RecordError(InputError):
    """A ``record`` file that cannot be written."""


def source_kind(source: str) -> str:
    """ "url", "device" (a camera index) or "file"."""
    if "://" in source:
        return "url"
    if source.isdigit() and not os.path.exists(source):
        return "device"
    return "file"


def open_source(source: str | int | os.PathLike[str]) -> cv2.VideoCapture:
    """Open a camera index (0, "1", ...), a video file or a stream URL; raise SourceError if it cannot be."""
    # FFmpeg prints its own complaints about broken files; our one-line message replaces them.
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    text = str(source) if isinstance(source, int) else os.fspath(source)
    kind = source_kind(text)
    with quiet_opencv():
        if kind == "device":
            capture = cv2.VideoCapture(int(text))
            if not capture.isOpened():
                capture.release()
                raise SourceError(f"camera {int(text)} could not be opened (no such device, or it is in use)")
            return capture
        if kind == "url":
            params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, 10_000, cv2.CAP_PROP_READ_TIMEOUT_MSEC, 10_000]
            capture = cv2.VideoCapture(text, cv2.CAP_FFMPEG, params)
            if not capture.isOpened():
                capture.release()
                raise SourceError("the stream could not be opened (check the URL and that it is reachable)", text)
            return capture
        path = Path(text)
        if "%" not in text:  # "%" is OpenCV's image-sequence pattern: no single file to check
            if not path.exists():
                raise SourceError("file not found (expected a camera index like 0, a video file or a URL)", text)
            if path.is_dir():
                raise SourceError("is a directory, not a video file", text)
            if not os.access(path, os.R_OK):
                raise SourceError("permission denied", text)
        capture = cv2.VideoCapture(text)
        fourcc = int(capture.get(cv2.CAP_PROP_FOURCC)) if capture.isOpened() else 0
        if not capture.isOpened() or fourcc.to_bytes(4, "little") == b"ansi":  # FFmpeg renders .txt as ANSI art
            capture.release()
            raise SourceError("not a video file OpenCV can read", text)
        return capture


def read_frames(capture: cv2.VideoCapture) -> Generator[np.ndarray, None, None]:
    """Frames until ``read()`` fails (end, unplugged camera, broken file); releases the capture when done."""
    try:
        while capture.isOpened():
            try:
                with quiet_opencv():
                    ok, frame = capture.read()
            except cv2.error:
                return
            if not ok or frame is None or frame.size == 0:
                return
            yield frame
    finally:
        capture.release()


def open_writer(record: str | os.PathLike[str], frame: np.ndarray, fps: float) -> cv2.VideoWriter:
    """A writer of ``frame``-sized mp4v video at ``record``; RecordError when that file cannot be written."""
    path = Path(record)
    if path.is_dir():
        raise RecordError("is a directory; expected a video file name such as out.mp4", path)
    if not path.parent.is_dir():
        raise RecordError(f"folder {path.parent} does not exist", path)
    h, w = frame.shape[:2]
    with quiet_opencv():
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), fps, (w, h))
    if not writer.isOpened():
        writer.release()
        raise RecordError("cannot be written (use a .mp4, .mov, .mkv or .avi file in a writable folder)", path)
    return writer


def display_available() -> tuple[bool, str]:
    """(whether a window can be shown, why not)."""
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return False, "no display (DISPLAY and WAYLAND_DISPLAY are not set)"
    return True, ""
