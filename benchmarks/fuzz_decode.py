"""Fuzzing image decoding: every file either screens or is refused with an InputError, quietly and quickly.

Run (a set time; the summary is one JSON object on stdout, findings are saved to --out):

    python -m benchmarks.fuzz_decode --seconds 60                    # atheris when installed, else mutate
    python -m benchmarks.fuzz_decode --seconds 60 --engine mutate    # the pure-Python mutator, reproducible by --seed
    python -m benchmarks.fuzz_decode --seconds 600 --inputs 200      # stop at whichever limit comes first

Each input is written to a file with an image suffix and read with ``load_and_preprocess`` (the loading
path of ``Guard.screen_file`` and ``edgeguard detect``); what it accepts is screened by a Guard in batches.
A *finding* is any of:

- ``crash``: an exception other than InputError (an InputError is the documented refusal);
- ``bad_output``: an accepted image that is not a 28x28 float32 array in [0, 1], or a failed screening;
- ``slow``: one input took longer than --slow seconds (decompression bombs, pathological headers);
- ``noise``: something was written to the process's stderr (fd 2), e.g. libpng or libjpeg warnings,
  which ``edgeguard detect`` users would see as stray lines;
- ``warning``: a Python warning (e.g. numpy's RuntimeWarning).

Engines: ``atheris`` (libFuzzer's mutations, guided by the coverage of the Python loading code:
``edgeguard.decode``, ``edgeguard.headers`` and ``edgeguard.normalize``; OpenCV's C++ decoders are not
instrumented, so they are fuzzed blind) and ``mutate`` (seeded random
byte mutations: flips, interesting integers in headers, truncation, splicing, and PNG chunks whose CRCs are
fixed afterwards so the mutation reaches libpng instead of stopping at the CRC check). Both start from small
valid files of every supported format and from the malformed corpus of benchmarks/corpus.py.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import struct
import sys
import tempfile
import time
import warnings
import zlib
from pathlib import Path

import numpy as np

from edgeguard.contract import SIDE

SUFFIXES = (".png", ".jpg", ".bmp", ".tif", ".pgm", ".ppm", ".pnm", ".npy")
INTERESTING = (0, 1, 2, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0x8000, 0xFFFF, 0x10000, 40_000, 100_000,
               0x7FFFFFFF, 0x80000000, 0xFFFFFFFF)
KINDS = ("crash", "bad_output", "slow", "noise", "warning")


# --------------------------------------------------------------------------- seeds


def seeds() -> list[tuple[str, bytes]]:
    """(suffix, bytes): small valid files of every supported format, and the malformed corpus."""
    import cv2

    from benchmarks.corpus import make_corpus, seven

    digit = seven(40, 30)
    colour = cv2.cvtColor(digit, cv2.COLOR_GRAY2BGR)
    colour[..., 0] //= 2
    rgba = np.dstack([colour, 255 - digit])
    out = []
    for suffix, image, params in [
        (".png", digit, []), (".png", colour, []), (".png", rgba, []), (".png", digit.astype(np.uint16) * 257, []),
        (".jpg", digit, []), (".jpg", colour, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]),
        (".bmp", digit, []), (".bmp", colour, []), (".tif", digit, []), (".tif", colour, []),
        (".tif", digit.astype(np.float32) / 255, []), (".pgm", digit, []), (".ppm", colour, []),
    ]:
        ok, buffer = cv2.imencode(suffix, image, params)
        if ok:
            out.append((suffix, buffer.tobytes()))
    out.append((".pnm", b"P7\nWIDTH 3\nHEIGHT 2\nDEPTH 1\nMAXVAL 255\nTUPLTYPE GRAYSCALE\nENDHDR\n" + bytes(range(6))))
    for array in (digit, digit.astype(np.float32) / 255, digit[None].astype(np.int16), digit[:, :, None]):
        out.append((".npy", _npy_bytes(array)))
    with tempfile.TemporaryDirectory() as folder:
        for path in make_corpus(folder).values():
            if path.is_file() and not path.is_symlink() and os.access(path, os.R_OK) and path.suffix in SUFFIXES:
                data = path.read_bytes()
                if data:
                    out.append((path.suffix, data))
    return out


def _npy_bytes(array: np.ndarray) -> bytes:
    import io

    stream = io.BytesIO()
    np.save(stream, array)
    return stream.getvalue()


# --------------------------------------------------------------------------- mutations


def _fix_png_crcs(data: bytearray) -> bytearray:
    """Recomputes every chunk's CRC (after a mutation) so the file reaches libpng."""
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        return data
    pos = 8
    while pos + 12 <= len(data):
        (length,) = struct.unpack_from(">I", data, pos)
        end = pos + 12 + length
        if end > len(data):
            break
        struct.pack_into(">I", data, end - 4, zlib.crc32(data[pos + 4 : end - 4]))
        pos = end
    return data


def mutate(data: bytes, rng: random.Random, pool: list[tuple[str, bytes]]) -> bytes:
    """1 to 4 random mutations of data."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(9)
        n = len(out)
        if n == 0:
            out += bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
            continue
        i = rng.randrange(n)
        if op == 0:  # flip a bit
            out[i] ^= 1 << rng.randrange(8)
        elif op == 1:  # an interesting byte
            out[i] = rng.choice((0, 1, 0x7F, 0x80, 0xFF))
        elif op == 2:  # an interesting 16/32-bit integer, in either byte order (header sizes)
            size, order = rng.choice((2, 4)), rng.choice("<>")
            value = rng.choice(INTERESTING) & ((1 << (8 * size)) - 1)
            out[i : i + size] = struct.pack(order + ("H" if size == 2 else "I"), value)
        elif op == 3:  # truncate
            del out[rng.randrange(n) :]
        elif op == 4:  # delete a range
            del out[i : i + rng.randint(1, 64)]
        elif op == 5:  # insert random bytes
            out[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 32)))
        elif op == 6:  # duplicate a range
            j = rng.randrange(n)
            out[i:i] = out[j : j + rng.randint(1, 256)]
        elif op == 7:  # splice with another seed
            other = rng.choice(pool)[1]
            cut = rng.randrange(len(other) + 1)
            out = out[:i] + bytearray(other[cut:])
        else:  # random bytes over a range
            for k in range(i, min(n, i + rng.randint(1, 16))):
                out[k] = rng.randrange(256)
    if rng.random() < 0.5:
        out = _fix_png_crcs(out)
    return bytes(out)


# --------------------------------------------------------------------------- the target


class Target:
    """Runs one input through loading, preprocessing and (in batches) screening; records the outcome."""

    def __init__(self, folder: Path, out: Path | None, slow_s: float, guard=None):
        from edgeguard.normalize import load_and_preprocess

        self.load = load_and_preprocess
        self.folder, self.out, self.slow_s, self.guard = folder, out, slow_s, guard
        self.counts = {"inputs": 0, "accepted": 0, "refused": 0, "screened": 0}
        self.findings: dict[str, int] = {kind: 0 for kind in KINDS}
        self.examples: list[dict] = []
        self.reasons: dict[str, int] = {}
        self.slowest_s = 0.0
        self.pending: list[np.ndarray] = []
        self.stderr_file = tempfile.TemporaryFile()  # fd 2 while an input is loaded
        self._stderr_size = 0

    def close(self) -> None:
        self.flush()
        self.stderr_file.close()

    def __call__(self, data: bytes, suffix: str) -> None:
        from edgeguard.errors import InputError

        self.counts["inputs"] += 1
        path = self.folder / f"input{suffix}"
        path.write_bytes(data)
        start = time.perf_counter()
        problem = None
        sys.stderr.flush()
        saved_fd = os.dup(2)
        os.dup2(self.stderr_file.fileno(), 2)  # what C libraries print while loading lands in the file
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                image = self.load(path)
            except InputError as e:
                self.counts["refused"] += 1
                reason = e.reason.split("(")[0].split(";")[0].strip()
                self.reasons[reason] = self.reasons.get(reason, 0) + 1
                image = None
            except Exception as e:  # the finding this harness is for
                problem = ("crash", f"{type(e).__name__}: {e}")
                image = None
            finally:
                sys.stderr.flush()
                os.dup2(saved_fd, 2)
                os.close(saved_fd)
        elapsed = time.perf_counter() - start
        self.slowest_s = max(self.slowest_s, elapsed)
        if image is not None:
            self.counts["accepted"] += 1
            if not (isinstance(image, np.ndarray) and image.shape == (SIDE, SIDE) and image.dtype == np.float32
                    and np.isfinite(image).all() and image.min() >= 0 and image.max() <= 1):
                problem = ("bad_output", f"{type(image).__name__} {getattr(image, 'shape', '')}")
            else:
                self.pending.append(image)
                if len(self.pending) >= 64:
                    self.flush()
        if problem is None and caught:
            problem = ("warning", str(caught[0].message))
        if problem is None and elapsed > self.slow_s:
            problem = ("slow", f"{elapsed:.2f} s")
        size = os.fstat(self.stderr_file.fileno()).st_size
        if problem is None and size > self._stderr_size:
            self.stderr_file.seek(self._stderr_size)
            problem = ("noise", self.stderr_file.read(200).decode("utf-8", "replace").strip())
        self._stderr_size = size
        if problem is not None:
            self.record(problem[0], problem[1], data, suffix)

    def flush(self) -> None:
        if not self.pending or self.guard is None:
            self.pending = []
            return
        batch, self.pending = np.stack(self.pending), []
        try:
            verdicts = self.guard.screen(batch)
            assert len(verdicts) == len(batch) and all(v.verdict for v in verdicts)
            self.counts["screened"] += len(verdicts)
        except Exception as e:
            self.record("bad_output", f"screening failed: {type(e).__name__}: {e}", b"", ".npy")

    def record(self, kind: str, detail: str, data: bytes, suffix: str) -> None:
        self.findings[kind] += 1
        saved = None
        if self.out is not None and data:
            self.out.mkdir(parents=True, exist_ok=True)
            saved = self.out / f"{kind}-{zlib.crc32(data):08x}{suffix}"
            saved.write_bytes(data)
        if len(self.examples) < 20:
            self.examples.append({"kind": kind, "detail": detail[:300], "suffix": suffix,
                                  "saved": None if saved is None else str(saved)})

    def summary(self, engine: str, seconds: float, elapsed: float) -> dict:
        return {"engine": engine, "seconds_asked": seconds, "seconds": round(elapsed, 2), **self.counts,
                "findings": dict(self.findings), "total_findings": sum(self.findings.values()),
                "slowest_input_s": round(self.slowest_s, 4),
                "top_refusals": dict(sorted(self.reasons.items(), key=lambda kv: -kv[1])[:8]),
                "examples": self.examples}


# --------------------------------------------------------------------------- engines


def fuzz(seconds: float, *, engine: str = "mutate", seed: int = 0, out: Path | None = None,
         slow_s: float = 2.0, screen: bool = True, guard=None, max_inputs: int | None = None) -> dict:
    """Runs the mutate engine in this process for ``seconds`` (or ``max_inputs`` inputs); returns the summary.

    ``screen``: accepted images are screened, by ``guard`` (default: a Guard on the shipped bundle).
    """
    if screen and guard is None:
        guard = _guard()
    pool = seeds()
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory() as folder:
        target = Target(Path(folder), out, slow_s, guard)
        start = time.perf_counter()
        try:
            for suffix, data in pool:  # every seed once, unmutated
                target(data, suffix)
            while time.perf_counter() - start < seconds and target.counts["inputs"] < (max_inputs or float("inf")):
                suffix, data = rng.choice(pool)
                if rng.random() < 0.1:
                    suffix = rng.choice(SUFFIXES)  # content and suffix disagree
                target(mutate(data, rng, pool), suffix)
        finally:
            target.close()
        return target.summary(engine, seconds, time.perf_counter() - start)


def _guard():
    from edgeguard import Guard

    return Guard.load(providers="cpu")


def _atheris(seconds: float, out: Path | None, slow_s: float, screen: bool, print_json: bool,
             max_inputs: int | None = None) -> None:
    """libFuzzer through atheris; ends the process itself when the time is up (exit 1 on findings)."""
    import atheris

    with atheris.instrument_imports(include=["edgeguard.normalize", "edgeguard.decode", "edgeguard.headers"]):
        import edgeguard.normalize  # noqa: F401  (imports edgeguard.decode and edgeguard.headers)
    guard = _guard() if screen else None
    pool = seeds()
    folder = Path(tempfile.mkdtemp(prefix="fuzz_decode_"))
    corpus = folder / "corpus"
    corpus.mkdir()
    for i, (suffix, data) in enumerate(pool):  # the first byte picks the suffix
        (corpus / f"seed{i}").write_bytes(bytes([SUFFIXES.index(suffix)]) + data)
    work = folder / "work"
    work.mkdir()
    target = Target(work, out, slow_s, guard)
    start = time.perf_counter()

    def one_input(data: bytes) -> None:
        if time.perf_counter() - start >= seconds or target.counts["inputs"] >= (max_inputs or float("inf")):
            target.close()
            summary = target.summary("atheris", seconds, time.perf_counter() - start)
            _report(summary, print_json)
            os._exit(1 if summary["total_findings"] else 0)
        if data:
            target(data[1:], SUFFIXES[data[0] % len(SUFFIXES)])

    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    artifacts = f"-artifact_prefix={out or folder}/"
    atheris.Setup([sys.argv[0], "-rss_limit_mb=4096", "-timeout=30", artifacts, str(corpus)], one_input)
    atheris.Fuzz()


def _report(summary: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(summary), flush=True)
        return
    print(f"{summary['engine']}: {summary['inputs']} inputs in {summary['seconds']} s: {summary['accepted']} accepted "
          f"({summary['screened']} screened), {summary['refused']} refused; findings {summary['findings']}; "
          f"slowest input {summary['slowest_input_s']} s", flush=True)
    for example in summary["examples"]:
        print(f"  {example['kind']}: {example['detail']} ({example['saved'] or 'not saved'})", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fuzz_decode", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="how long to fuzz (default 60)")
    parser.add_argument("--engine", choices=("auto", "atheris", "mutate"), default="auto",
                        help="auto: atheris when it is installed, else mutate")
    parser.add_argument("--inputs", type=int, default=None, help="stop after this many inputs (default: no limit)")
    parser.add_argument("--seed", type=int, default=0, help="mutate engine: random seed")
    parser.add_argument("--out", type=Path, default=None, help="folder for inputs that gave findings")
    parser.add_argument("--slow", type=float, default=2.0, help="seconds above which an input is a finding")
    parser.add_argument("--no-screen", action="store_true", help="only load and preprocess, no Guard")
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    args = parser.parse_args(argv)
    engine = args.engine
    if engine == "auto":
        try:
            import atheris  # noqa: F401
            engine = "atheris"
        except ImportError:
            engine = "mutate"
    if engine == "atheris":
        _atheris(args.seconds, args.out, args.slow, not args.no_screen, args.json, args.inputs)
        return 0  # not reached: the run ends the process
    summary = fuzz(args.seconds, engine=engine, seed=args.seed, out=args.out, slow_s=args.slow,
                   screen=not args.no_screen, max_inputs=args.inputs)
    _report(summary, args.json)
    return 1 if summary["total_findings"] else 0


if __name__ == "__main__":
    sys.exit(main())
