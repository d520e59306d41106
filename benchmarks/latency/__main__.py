"""``python -m benchmarks.latency``: the command line; runs the chosen sections and writes the outputs."""

from __future__ import annotations

import argparse
import datetime as _dt
import gc
import json
import os
import sys
import time
from pathlib import Path

import benchmarks.latency as package
from benchmarks.latency import measure, report
from benchmarks.latency.common import FULL, QUICK, ROOT, SCHEMA, SECTIONS, log, machine_info, skipped
from benchmarks.latency.ray_rate import section_ray
from benchmarks.latency.roofline import section_roofline


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.latency", description=package.__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer iterations and batch sizes (< 30 s)")
    p.add_argument("--json", action="store_true", help="print the results as JSON (and nothing else) on stdout")
    p.add_argument("--out", type=Path, help="write a markdown report here (e.g. reports/latency.md)")
    p.add_argument("--docs", type=Path, help="write the README performance section here (e.g. docs/performance.md)")
    p.add_argument("--bundle", default=None, help="model bundle folder (default: the shipped one)")
    p.add_argument("--sections", default=",".join(SECTIONS),
                   help=f"comma-separated subset of: {', '.join(SECTIONS)}")
    args = p.parse_args(argv)
    args.sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = [s for s in args.sections if s not in SECTIONS]
    if unknown:
        p.error(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    return args


def run(args: argparse.Namespace, argv: list[str]) -> dict:
    from edgeguard.bundle import load_bundle, sha256_bytes

    plan = QUICK if args.quick else FULL
    started = time.perf_counter()
    bundle = load_bundle(args.bundle)
    if not bundle.calibration:
        raise SystemExit(f"error: {bundle.path} is not calibrated, and guard.screen needs the calibration; "
                         "run `python -m export.calibrate` first (or pass --bundle)")
    result: dict = {
        "schema": SCHEMA,
        "command": " ".join(["python -m benchmarks.latency", *argv]),
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "quick": args.quick,
        "machine": machine_info(),
        "bundle": {"path": str(bundle.path.relative_to(ROOT) if bundle.path.is_relative_to(ROOT) else bundle.path),
                   "name": bundle.manifest.get("name"), "latent_dim": bundle.latent_dim,
                   "default_k": bundle.default_k,
                   "sha256": {name: sha256_bytes(data) for name, data in bundle.models.items()}},
    }
    steps = {
        "single": measure.section_single,
        "throughput": measure.section_throughput,
        "cold_start": measure.section_cold_start,
        "stages": measure.section_stages,
        "kernels": measure.section_kernels,
        "reference": measure.section_reference,
        "roofline": lambda args, plan: section_roofline(args, plan, result),  # uses single and throughput
        "ray": section_ray,
    }
    for name in SECTIONS:
        if name not in args.sections:
            result[name] = skipped("not selected (--sections)")
            continue
        log(f"{name} ...")
        gc.collect()
        t0 = time.perf_counter()
        result[name] = steps[name](args, plan)
        log(f"{name}: {time.perf_counter() - t0:.1f} s")
    result["machine"]["loadavg_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    result["targets"] = report.evaluate_targets(result)
    result["elapsed_s"] = time.perf_counter() - started
    return result


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    result = run(args, argv)
    for path, render in ((args.out, report.to_markdown), (args.docs, report.to_docs)):
        if path:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(render(result), encoding="utf-8")
            log(f"wrote {path}")
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        report.print_rich(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
