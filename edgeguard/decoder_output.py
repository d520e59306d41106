"""What the C image decoders print: libpng and libjpeg write warnings and errors straight to the C stderr (fd 2),
which OpenCV's log level does not reach. ``edgeguard.decode`` captures them around each decode, so that they never
reach the user and a refusal can carry their words; ``quiet_opencv`` silences OpenCV's own logging."""

from __future__ import annotations

import os
import re
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO

import cv2

__all__ = ["BENIGN_DECODER_MESSAGE", "decoder_messages", "decoding_many", "quiet_opencv"]

# libpng and libjpeg print their warnings and errors straight to the C stderr, which OpenCV's log level
# does not reach. These are their messages (libjpeg-turbo's JWRN_* texts); the benign ones do not
# mean the pixels are damaged (ancillary PNG chunks, stray bytes between JPEG segments).
_DECODER_LINE = re.compile(
    rb"(?:libpng (?:error|warning)|Corrupt JPEG data|Premature end of JPEG file|Invalid SOS parameters"
    rb"|Inconsistent progression|Unknown Adobe color transform|Warning: unknown JFIF|Application transferred)"
    rb"[^\n]*(?:\n|$)")
BENIGN_DECODER_MESSAGE = re.compile(
    r"libpng warning: (?:iCCP|sRGB|cHRM|gAMA|sBIT|bKGD|pHYs|tIME|tEXt|zTXt|iTXt|Ignoring)"
    r"|Corrupt JPEG data: \d+ extraneous bytes before marker|Warning: unknown JFIF|Unknown Adobe color transform")
_fd_lock = threading.Lock()
_fd_users = 0
_fd_saved = -1
_fd_file: IO[bytes] | None = None


@contextmanager
def decoder_messages() -> Iterator[list[str]]:
    """Collect what the C decoders print to fd 2 during the block, instead of letting it reach the user.

    fd 2 is process-wide: while any thread decodes, it points at a temporary file. When the last
    decoding thread is done it is restored, and whatever was captured that is not a decoder message
    (another thread's output) is written back. Yields a list that then holds this block's decoder
    messages (with concurrent decodes, possibly also another thread's).
    """
    global _fd_users, _fd_saved, _fd_file
    messages: list[str] = []
    capture: IO[bytes] | None
    with _fd_lock:
        if _fd_users == 0:
            try:
                if not hasattr(os, "pread"):  # not POSIX: leave fd 2 alone
                    raise OSError("no os.pread")
                if sys.stderr is not None:
                    sys.stderr.flush()
                capture = tempfile.TemporaryFile()
                saved = os.dup(2)
                os.dup2(capture.fileno(), 2)
            except (OSError, ValueError, AttributeError):  # no usable fd 2: nothing to capture
                capture = None
            else:
                _fd_file, _fd_saved = capture, saved
        else:
            capture = _fd_file
        if capture is not None:
            _fd_users += 1
            start = os.fstat(capture.fileno()).st_size
    if capture is None:
        yield messages
        return
    try:
        yield messages
    finally:
        with _fd_lock:
            file = capture  # still _fd_file: it is only closed when its last user is done
            end = os.fstat(file.fileno()).st_size
            text = os.pread(file.fileno(), end - start, start) if end > start else b""
            messages += [" ".join(m.decode("utf-8", "replace").split()) for m in _DECODER_LINE.findall(text)]
            _fd_users -= 1
            if _fd_users == 0:
                if sys.stderr is not None:
                    sys.stderr.flush()
                os.dup2(_fd_saved, 2)
                os.close(_fd_saved)
                rest = _DECODER_LINE.sub(b"", os.pread(file.fileno(), end, 0)) if end else b""
                while rest:
                    rest = rest[os.write(2, rest):]
                file.close()
                _fd_file, _fd_saved = None, -1


@contextmanager
def decoding_many() -> Iterator[None]:
    """Hold the capture of the decoders' messages (and OpenCV's silence) open across many decodes, such as a chunk
    of files: each decode inside still gets its own messages, without a temporary file and two ``dup2`` calls
    per image (a tenth of a millisecond each). What else reaches fd 2 meanwhile is written out when it ends."""
    with quiet_opencv(), decoder_messages():
        yield


_log_lock = threading.Lock()
_log_users = 0
_log_saved = 0


@contextmanager
def quiet_opencv() -> Iterator[None]:
    """Silence OpenCV's own logging to stderr during the block (a broken image or video being read).

    Thread-safe and nestable: the level is restored when the last block still open ends.
    """
    global _log_users, _log_saved
    logging = getattr(getattr(cv2, "utils", None), "logging", None)
    if logging is None:
        yield
        return
    with _log_lock:
        if _log_users == 0:
            _log_saved = logging.getLogLevel()
            logging.setLogLevel(logging.LOG_LEVEL_SILENT)
        _log_users += 1
    try:
        yield
    finally:
        with _log_lock:
            _log_users -= 1
            if _log_users == 0:
                logging.setLogLevel(_log_saved)
