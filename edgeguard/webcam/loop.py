"""``run``, the loop behind ``edgeguard webcam``: it opens the source, reads frames through a generator that
always releases the capture, screens every ``every``-th frame, draws, shows, records, and reports each frame
to a callback. It never prints; the CLI does."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from edgeguard.bundle import load_manifest
from edgeguard.errors import EdgeGuardError
from edgeguard.guard import Guard
from edgeguard.regions import MAX_DIGITS
from edgeguard.webcam.overlay import annotate
from edgeguard.webcam.screening import DigitResult, process_frame
from edgeguard.webcam.sources import SourceError, display_available, open_source, open_writer, read_frames, source_kind
from edgeguard.webcam.tracking import Tracker

__all__ = ["FrameResult", "RunSummary", "default_calibration", "run"]


def default_calibration(bundle: str | os.PathLike[str] | None = None) -> str:
    """The calibration to screen camera frames with (``Guard.load(calibration=...)``): "camera" (calibrated
    on filmed digits) when the bundle (None: the shipped one) has one, else "digits"."""
    try:
        manifest = load_manifest(bundle)
    except EdgeGuardError:
        return "digits"  # loading the bundle will report the problem
    return "camera" if manifest.camera_calibration is not None else "digits"


@dataclass(frozen=True)
class FrameResult:
    index: int  # 0-based frame number
    time_s: float  # position in the video (files) or seconds since the start (cameras, streams)
    screened: bool  # False when the results were carried over (``every`` > 1)
    digits: tuple[DigitResult, ...]
    fps: float | None  # frames per second of the whole loop, smoothed

    def to_dict(self) -> dict[str, Any]:
        return {"frame": self.index, "time_s": round(self.time_s, 4), "screened": self.screened,
                "fps": None if self.fps is None else round(self.fps, 2),
                "digits": [d.to_dict() for d in self.digits]}


@dataclass
class RunSummary:
    source: str
    kind: str  # "device", "file" or "url"
    frames: int = 0
    screened: int = 0
    digits: int = 0  # digit screenings (a digit seen in 10 screened frames counts 10 times)
    flagged: int = 0  # of which the stable verdict was not clean
    stopped: str = "end"  # end, truncated, quit, interrupted, max_frames, lost
    expected_frames: int | None = None  # what the file's header announces
    fps: float | None = None  # frames / seconds of the whole loop
    record: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def message(self) -> str:
        """One line saying how the run ended."""
        what = {"device": f"camera {self.source}", "url": "stream", "file": self.source}[self.kind]
        counts = (f"{self.frames} frames ({self.screened} screened), "
                  f"{self.flagged} of {self.digits} digit screenings flagged")
        speed = f", {self.fps:.1f} FPS" if self.fps else ""
        saved = f"; recorded to {self.record}" if self.record else ""
        how = {
            "end": f"{what}: ended after {counts}",
            "truncated": f"warning: {what}: ended early after {self.frames} of the {self.expected_frames} frames "
                         f"its header announces (truncated or corrupt file); {counts}",
            "quit": f"{what}: quit after {counts}",
            "interrupted": f"{what}: interrupted (Ctrl-C) after {counts}",
            "max_frames": f"{what}: stopped after {counts}",
            "lost": f"warning: {what}: stopped delivering frames after {counts}",
        }[self.stopped]
        return how + speed + saved


def run(guard: Guard, source: str | int | os.PathLike[str] = "0", *, display: bool | None = None,
        record: str | os.PathLike[str] | None = None, max_digits: int = MAX_DIGITS, every: int = 1, window: int = 5,
        on_frame: Callable[[FrameResult], None] | None = None, max_frames: int | None = None,
        title: str = "EdgeGuard", ink: str = "dark") -> RunSummary:
    """Screen the digits of every ``every``-th frame of ``source`` until it ends, the user quits
    (``q`` or Esc in the window, or Ctrl-C) or ``max_frames`` frames were read.

    ``display`` None: show a window when a display is available. ``record``: write the annotated
    video there (mp4v). ``on_frame`` is called with each frame's FrameResult. Raises SourceError when
    the source cannot be opened or yields no frame, RecordError when ``record`` cannot be written;
    every other ending (including Ctrl-C) returns a RunSummary. The capture and the writer are
    always released.
    """
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise ValueError(f"every must be a positive integer, got {every!r}")
    if max_digits < 1:
        raise ValueError(f"max_digits must be a positive integer, got {max_digits!r}")
    text = str(source) if isinstance(source, int) else os.fspath(source)
    summary = RunSummary(source=text, kind=source_kind(text))
    if display is None:
        display, why = display_available()
        if not display:
            summary.notes.append(f"{why}; running without a window")
    capture = open_source(text)
    loop = _Loop(guard, summary, capture, Tracker(window=window), record=record, max_digits=max_digits,
                 every=every, ink=ink, display=display, title=title)
    try:
        with closing(read_frames(capture)) as frames:
            for index, frame in enumerate(frames):
                result = loop.step(index, frame)
                if on_frame is not None:
                    on_frame(result)
                if summary.stopped == "quit":
                    break
                if max_frames is not None and summary.frames >= max_frames:
                    summary.stopped = "max_frames"
                    break
        if summary.frames == 0:
            raise SourceError("no frame could be read (not a video, or an empty or corrupt file)", text)
        _say_why_it_ended(summary)
    except KeyboardInterrupt:
        summary.stopped = "interrupted"
    finally:
        capture.release()
        loop.close()
    elapsed = time.perf_counter() - loop.start
    if summary.frames > 1 and elapsed > 0:
        summary.fps = summary.frames / elapsed
    return summary


def _say_why_it_ended(summary: RunSummary) -> None:
    """A source that ran out: a camera or stream that stopped, or a file shorter than its header says."""
    if summary.stopped != "end":
        return
    if summary.kind != "file":
        summary.stopped = "lost"
    elif summary.expected_frames:
        slack = max(1, summary.expected_frames // 100)  # containers whose count is an estimate
        if summary.frames < summary.expected_frames - slack:
            summary.stopped = "truncated"


class _Loop:
    """What ``run`` carries from frame to frame: the last results, the tracker, the writer, the window and
    the clock. ``step`` handles one frame; ``close`` releases the writer and closes the window."""

    def __init__(self, guard: Guard, summary: RunSummary, capture: cv2.VideoCapture, tracker: Tracker, *,
                 record: str | os.PathLike[str] | None, max_digits: int, every: int, ink: str, display: bool,
                 title: str) -> None:
        self.guard, self.summary, self.tracker = guard, summary, tracker
        self.display, self.window = display, _Window(title, summary)
        self.record, self.max_digits, self.every, self.ink = record, max_digits, every, ink
        self.live = summary.kind != "file"
        source_fps = capture.get(cv2.CAP_PROP_FPS)
        self.source_fps = source_fps if 1.0 <= source_fps <= 240.0 else 0.0
        if not self.live:
            count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
            summary.expected_frames = count if count > 0 else None
        self.writer: cv2.VideoWriter | None = None
        self.writer_size: tuple[int, ...] = ()
        self.results: tuple[DigitResult, ...] = ()
        self.fps: float | None = None  # smoothed
        self.start = self.last = time.perf_counter()

    def step(self, index: int, frame: np.ndarray) -> FrameResult:
        """Record (the writer opens on the first frame), screen every ``every``-th frame, time, draw, show."""
        if index == 0 and self.record is not None:
            self.writer = open_writer(self.record, frame, self.source_fps or 30.0)
            self.writer_size = frame.shape[:2]
            self.summary.record = os.fspath(self.record)
        screened = index % self.every == 0
        if screened:
            self._screen(frame)
        stamp = self._tick(index)
        self.summary.frames = index + 1
        if self.display or self.writer is not None:
            image = annotate(frame, self.results, self.fps)
            self._write(image)
            if self.display:
                self.display = self.window.show(image)  # False: it cannot be shown; carry on without
        return FrameResult(index, stamp, screened, self.results, self.fps)

    def _screen(self, frame: np.ndarray) -> None:
        self.results = tuple(process_frame(self.guard, frame, max_digits=self.max_digits, tracker=self.tracker,
                                           ink=self.ink))
        self.summary.screened += 1
        self.summary.digits += len(self.results)
        self.summary.flagged += sum(r.flagged for r in self.results)

    def _tick(self, index: int) -> float:
        """Smooth the loop's frame rate; the frame's time stamp (its position in a file, else time since the start)."""
        now = time.perf_counter()
        if index:
            rate = 1.0 / max(now - self.last, 1e-6)
            self.fps = rate if self.fps is None else 0.9 * self.fps + 0.1 * rate
        self.last = now
        if self.live or not self.source_fps:
            return now - self.start
        return index / self.source_fps

    def _write(self, image: np.ndarray) -> None:
        if self.writer is None:
            return
        if image.shape[:2] != self.writer_size:  # a camera that changed its resolution
            image = cv2.resize(image, (self.writer_size[1], self.writer_size[0]))
        self.writer.write(image)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()
        self.window.close()


class _Window:
    """The window the annotated frames are shown in; a user who closes it, or presses q or Esc, quits."""

    def __init__(self, title: str, summary: RunSummary) -> None:
        self.title, self.summary = title, summary
        self.shown = False

    def show(self, image: np.ndarray) -> bool:
        """Show ``image``; False when no window can be shown (noted in the summary)."""
        try:
            cv2.imshow(self.title, image)
            key = cv2.waitKey(1) & 0xFF
            closed = self.shown and cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) < 1
        except cv2.error as e:
            reason = " ".join(str(getattr(e, "err", "") or e).split())[:120]
            self.summary.notes.append(f"cannot show a window ({reason}); running without one")
            return False
        self.shown = True
        if key in (ord("q"), ord("Q"), 27) or closed:
            self.summary.stopped = "quit"
        return True

    def close(self) -> None:
        """Close the window, if one was shown."""
        if self.shown:
            try:
                cv2.destroyWindow(self.title)
                cv2.waitKey(1)
            except cv2.error:
                pass  # the window is already gone
