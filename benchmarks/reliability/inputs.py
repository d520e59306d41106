"""What a user hands EdgeGuard: the malformed-file corpus (through `edgeguard detect` and
``Guard.screen_file``), random arrays into ``Guard.screen``, truncated videos and pathological frames
through the webcam code.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.corpus import CASES, MARKER, make_corpus
from edgeguard.contract import N_PIXELS, SIDE

ROOT = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------- malformed inputs


def drop_dac_prefix() -> list[str] | None:
    """A command prefix under which a chmod-000 file is really unreadable, or None.

    As root, chmod does not stop reads; dropping CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH from the
    bounding set (setpriv) makes the kernel check the permission bits for root too.
    """
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return None
    prefix = [setpriv, "--bounding-set", "-dac_override,-dac_read_search"]
    with tempfile.TemporaryDirectory() as folder:
        probe = Path(folder) / "probe"
        probe.write_text("x")
        probe.chmod(0)
        try:
            check = subprocess.run(prefix + ["cat", str(probe)], capture_output=True, timeout=30)
        except OSError:
            return None
    return prefix if check.returncode != 0 and b"ermission denied" in check.stderr else None


def corpus_through_cli(dest: Path) -> dict:
    """Every corpus case in one real `edgeguard detect --json` process (the unreadable file truly unreadable)."""
    paths = make_corpus(dest)
    prefix = drop_dac_prefix()
    names = [n for n in paths if not (n == "unreadable" and prefix is None)]
    args = [os.fspath(paths[n]) for n in names]
    run = subprocess.run((prefix or []) + [sys.executable, "-m", "edgeguard", "detect", "--json", *args],
                         capture_output=True, text=True, timeout=600, cwd=ROOT)
    errors = [line for line in run.stderr.splitlines() if line.strip()]
    verdicts = [json.loads(line) for line in run.stdout.splitlines() if line.strip()]
    rows = []
    for name in names:
        case, path = CASES[name], os.fspath(paths[name])
        expect = case.cli_expect or case.expect
        fragment = case.cli_fragment if case.cli_expect else case.fragment
        mine = [line for line in errors if line.startswith(f"error: {path}:")]
        if expect == "refused":
            ok = len(mine) == 1 and fragment.lower() in mine[0].lower()
            got = mine[0] if len(mine) == 1 else f"{len(mine)} error lines"
        else:
            seen = [v for v in verdicts if v["source"] == path or v["source"].startswith(path + os.sep)]
            ok = len(seen) == 1 and not mine
            got = f"{len(seen)} verdict(s): {seen[0]['verdict'] if seen else '-'}"
        rows.append({"case": name, "what": case.what, "expect": expect, "ok": ok, "got": got})
    return {"rows": rows, "exit_code": run.returncode, "traceback": "Traceback" in run.stderr,
            "stray_stderr": [line for line in errors if not line.startswith("error: ")],
            "unreadable": "setpriv without CAP_DAC_OVERRIDE" if prefix else ("not root: chmod 000" if prefix == []
                                                                              else "skipped (no setpriv)"),
            "marker_created": (dest / MARKER).exists()}


@contextlib.contextmanager
def unreadable(path: Path):
    """In-process stand-in for a permission error on ``path`` (root reads chmod-000 files)."""
    real = pathlib.Path.read_bytes

    def read_bytes(self):
        if os.fspath(self) == os.fspath(path):
            raise PermissionError(13, "Permission denied", os.fspath(self))
        return real(self)

    pathlib.Path.read_bytes = read_bytes
    try:
        yield
    finally:
        pathlib.Path.read_bytes = real


def corpus_through_api(guard, dest: Path) -> dict:
    """Every corpus case through Guard.screen_file: a Verdict, or an InputError naming the file."""
    from edgeguard.errors import InputError

    paths = make_corpus(dest)
    rows = []
    for name, path in paths.items():
        case = CASES[name]
        guard_ctx = unreadable(path) if name == "unreadable" else contextlib.nullcontext()
        try:
            with guard_ctx:
                verdict = guard.screen_file(path)
            got, outcome = f"verdict {verdict.verdict}", "screened"
        except InputError as e:
            got, outcome = str(e), "refused"
            if case.expect == "refused" and not (case.fragment.lower() in str(e).lower() and path.name in str(e)
                                                 and "\n" not in str(e)):
                outcome = "refused (wrong message)"
        except Exception as e:  # a bug
            got, outcome = f"{type(e).__name__}: {e}", "crash"
        rows.append({"case": name, "what": case.what, "expect": case.expect, "ok": outcome == case.expect,
                     "got": got})
    return {"rows": rows, "marker_created": (dest / MARKER).exists()}


def screen_fuzz(guard, count: int = 300, seed: int = 0) -> dict:
    """Random arrays (shapes, dtypes, value ranges, layouts) into Guard.screen: verdicts or TypeError/ValueError."""
    rng = np.random.default_rng(seed)
    dtypes = [np.uint8, np.float32, np.float64, np.float16, np.int32, np.uint16, np.bool_, np.int8]
    s = SIDE
    shapes = [(s, s), (1, s, s), (3, s, s), (2, 1, s, s), (0, s, s), (s,), (s - 1, s), (s, s, 1),
              (1, 1, 1, s, s), (2, 3, s, s), (N_PIXELS,), ()]
    counts = {"verdicts": 0, "TypeError": 0, "ValueError": 0, "crash": 0}
    examples = []
    for _ in range(count):
        dtype = dtypes[int(rng.integers(len(dtypes)))]
        shape = shapes[int(rng.integers(len(shapes)))]
        scale = float(rng.choice([1.0, 255.0, 1e30, -1.0]))
        values = rng.random(shape) * scale
        if rng.random() < 0.1 and values.size:
            values.flat[int(rng.integers(values.size))] = rng.choice([np.nan, np.inf, -np.inf])
        with np.errstate(all="ignore"):
            array = values.astype(dtype)
        if rng.random() < 0.2 and array.ndim >= 2:
            array = np.swapaxes(array, -1, -2)  # non-contiguous
        try:
            verdicts = guard.screen(array)
            ok = len(verdicts) == (array.shape[0] if array.ndim >= 3 else 1)
            counts["verdicts" if ok else "crash"] += 1
        except TypeError:
            counts["TypeError"] += 1
        except ValueError:
            counts["ValueError"] += 1
        except Exception as e:
            counts["crash"] += 1
            examples.append(f"{dtype.__name__}{shape}: {type(e).__name__}: {e}")
    return {"cases": count, **counts, "examples": examples[:5]}


# --------------------------------------------------------------------------- webcam


def write_video(path: Path, frames: int = 30, size=(320, 240)) -> Path:
    """A small MJPG .avi of drawn digits on paper."""
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, size)
    for i in range(frames):
        frame = np.full((size[1], size[0], 3), 225, np.uint8)
        cv2.putText(frame, str(i % 10), (size[0] // 3 + i, size[1] * 2 // 3), cv2.FONT_HERSHEY_SIMPLEX, 4,
                    (20, 20, 20), 8)
        writer.write(frame)
    writer.release()
    return path


def noise_frame(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (480, 640, 3), dtype=np.uint8)


def tiny_contours_frame(count: int = 500) -> np.ndarray:
    import cv2

    frame = np.full((480, 640, 3), 230, np.uint8)
    for i in range(count):
        row, col = divmod(i, 25)
        cv2.circle(frame, (12 + col * 25, 12 + row * 23), 3, (20, 20, 20), -1)
    return frame


def many_digits_frame(count: int = 60) -> np.ndarray:
    """``count`` digit-sized marks: more candidates than any frame should screen."""
    import cv2

    frame = np.full((480, 640, 3), 230, np.uint8)
    for i in range(count):
        row, col = divmod(i, 10)
        cv2.putText(frame, str(i % 10), (8 + col * 63, 70 + row * 78), cv2.FONT_HERSHEY_SIMPLEX, 2, (20, 20, 20), 5)
    return frame


@contextlib.contextmanager
def captured_fd2():
    """Everything written to file descriptor 2 inside the block (C libraries included) -> the yielded list."""
    lines: list[str] = []
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield lines
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            lines += [line for line in capture.read().decode("utf-8", "replace").splitlines() if line.strip()]


def webcam_checks(guard, folder: Path) -> dict:
    try:
        from edgeguard import webcam
    except ImportError as e:
        return {"available": False, "why": str(e)}
    from edgeguard.errors import InputError

    rows = []
    video = write_video(folder / "video.avi")
    data = video.read_bytes()
    (folder / "half.avi").write_bytes(data[: len(data) // 2])
    (folder / "head.avi").write_bytes(data[:300])
    for name in ("half.avi", "head.avi"):
        start = time.perf_counter()
        with captured_fd2() as stray:
            try:
                summary = webcam.run(guard, folder / name, display=False)
                got = summary.message
                ok = summary.stopped in ("truncated", "end") and "\n" not in got
            except InputError as e:
                got, ok = str(e), "\n" not in str(e)
            except Exception as e:
                got, ok = f"{type(e).__name__}: {e}", False
        if stray:
            got += f" — and {len(stray)} stray stderr line(s): {' / '.join(line[:60] for line in stray)}"
        rows.append({"case": f"truncated video ({name})", "ok": ok and not stray,
                     "got": got.replace(str(folder), "<tmp>"), "seconds": round(time.perf_counter() - start, 3)})
    for name, frame in (("noise frame 640x480", noise_frame()), ("500 tiny contours", tiny_contours_frame()),
                        ("60 digit-sized marks", many_digits_frame())):
        batches = []
        real = guard.screen

        def counting(images, *, _batches=batches, _real=real, **kwargs):
            _batches.append(len(images))
            return _real(images, **kwargs)

        guard.screen = counting
        start = time.perf_counter()
        try:
            results = webcam.process_frame(guard, frame, max_digits=8)
            got, ok = f"{len(results)} digits, screen batches {batches}", len(batches) <= 1 and sum(batches) <= 8
        except Exception as e:
            got, ok = f"{type(e).__name__}: {e}", False
        finally:
            del guard.screen
        rows.append({"case": name, "ok": ok, "got": got, "seconds": round(time.perf_counter() - start, 3)})
    return {"available": True, "rows": rows}
