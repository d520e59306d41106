"""python -m benchmarks.reliability: run every check, write the report."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from benchmarks.reliability import __doc__ as DOC
from benchmarks.reliability.report import render
from benchmarks.reliability.suite import run_all

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = ROOT / "reports" / "reliability.md"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.reliability", description=DOC.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes (about a minute)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"report file (default {DEFAULT_OUT})")
    parser.add_argument("--sustained", type=int, default=None,
                        help="images in the sustained-load run (default 200,000; --quick 2,000)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    overrides = {"sustained": args.sustained} if args.sustained else {}
    rows, details = run_all(args.quick, log=lambda text: print(text, file=sys.stderr, flush=True), **overrides)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    command = "python -m benchmarks.reliability" + (" --quick" if args.quick else "") + (
        f" --sustained {args.sustained}" if args.sustained else "")
    args.out.write_text(render(rows, details, command, time.perf_counter() - start) + "\n", encoding="utf-8")
    print(f"wrote {args.out}", file=sys.stderr)
    return 0 if all(r["status"] == "pass" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
