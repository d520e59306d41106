"""Every reliability check at the chosen sizes, in order, with a one-line summary row per check."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.corpus import SKIPPED
from benchmarks.reliability.bundle import bundle_integrity, code_execution_scan
from benchmarks.reliability.inputs import corpus_through_api, corpus_through_cli, screen_fuzz, webcam_checks
from benchmarks.reliability.report import status
from benchmarks.reliability.runtime import (
    across_processes,
    batch_composition,
    concurrent_vs_serial,
    sustained_memory,
    thread_counts,
    workqueue_threads,
)

ROOT = Path(__file__).resolve().parents[2]
FULL = dict(fuzz_s=120, screen_fuzz=3000, threads=8, screens_per_thread=1000, sustained=200_000, processes=2)
QUICK = dict(fuzz_s=8, screen_fuzz=300, threads=8, screens_per_thread=25, sustained=2_000, processes=1)


def run_all(quick: bool, log=print, **overrides) -> tuple[list[dict], dict]:
    """Every check at the QUICK or FULL sizes (``overrides`` replace some) -> (summary rows, details by check)."""
    from edgeguard import Guard

    sizes = {**(QUICK if quick else FULL), **overrides}
    guard = Guard.load(providers="cpu")
    guard.warmup()
    rows, details = [], {}

    def row(check, tried, cases, result, ok):
        rows.append({"check": check, "tried": tried, "cases": cases, "result": result, "status": status(ok)})
        log(f"{status(ok):9} {check}: {result}")

    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        cli = corpus_through_cli(folder / "cli")
        details["cli"] = cli
        good = sum(r["ok"] for r in cli["rows"])
        row("Malformed inputs: `edgeguard detect`", f"every corpus case in one `detect --json` run "
            f"(unreadable file: {cli['unreadable']})", len(cli["rows"]),
            f"{good}/{len(cli['rows'])} as expected (one `error:` line naming the file, or a verdict); "
            f"exit code {cli['exit_code']}; traceback: {'yes' if cli['traceback'] else 'no'}; "
            f"stray stderr lines: {len(cli['stray_stderr'])}",
            good == len(cli["rows"]) and cli["exit_code"] == 2 and not cli["traceback"] and not cli["stray_stderr"])
        api = corpus_through_api(guard, folder / "api")
        details["api"] = api
        good = sum(r["ok"] for r in api["rows"])
        row("Malformed inputs: `Guard.screen_file`", "every corpus case (unreadable: Path.read_bytes patched "
            "to raise PermissionError)", len(api["rows"]),
            f"{good}/{len(api['rows'])} as expected (InputError naming the file, or a Verdict)",
            good == len(api["rows"]))
        marker = cli["marker_created"] or api["marker_created"]
        row("Pickled `.npy` refused without unpickling", "object.npy whose `__reduce__` would create a marker file",
            2, f"marker file created: {'yes' if marker else 'no'}", not marker)

        log("fuzzing image decoding ...")
        from benchmarks.fuzz_decode import fuzz

        fz = fuzz(sizes["fuzz_s"], engine="mutate", seed=0, out=None, guard=guard)
        details["fuzz"] = fz
        row("Fuzzing image decoding (mutate engine)", f"`python -m benchmarks.fuzz_decode --engine mutate --seconds "
            f"{sizes['fuzz_s']}`: mutated PNG/JPEG/BMP/TIFF/PNM/.npy files, loaded and screened", fz["inputs"],
            f"{fz['accepted']} screened, {fz['refused']} refused (InputError); findings {fz['findings']}; "
            f"slowest input {fz['slowest_input_s']} s", fz["total_findings"] == 0)
        try:
            import atheris  # noqa: F401
            have_atheris = True
        except ImportError:
            have_atheris = False
        if have_atheris:
            run = subprocess.run([sys.executable, "-m", "benchmarks.fuzz_decode", "--engine", "atheris", "--seconds",
                                  str(sizes["fuzz_s"]), "--json", "--out", str(folder / "atheris")],
                                 capture_output=True, text=True, timeout=sizes["fuzz_s"] + 300, cwd=ROOT)
            lines = [line for line in run.stdout.splitlines() if line.startswith("{")]
            at = json.loads(lines[-1]) if lines else {"inputs": 0, "total_findings": -1, "findings": run.stderr[-200:]}
            details["atheris"] = at
            row("Fuzzing image decoding (atheris)", f"`python -m benchmarks.fuzz_decode --engine atheris --seconds "
                f"{sizes['fuzz_s']}` (coverage-guided on edgeguard.decode, edgeguard.headers and edgeguard.normalize)",
                at["inputs"],
                f"{at.get('accepted', 0)} screened, {at.get('refused', 0)} refused; findings {at['findings']}",
                run.returncode == 0 and at["total_findings"] == 0)
        sf = screen_fuzz(guard, sizes["screen_fuzz"])
        details["screen_fuzz"] = sf
        row("Fuzzing `Guard.screen` arrays", "random shapes, dtypes, value ranges, NaN/inf, non-contiguous",
            sf["cases"], f"{sf['verdicts']} verdicts, {sf['TypeError']} TypeError, {sf['ValueError']} ValueError, "
            f"{sf['crash']} other", sf["crash"] == 0)

        log("bundle integrity ...")
        bi = bundle_integrity()
        details["bundle"] = bi
        good = sum(r["ok"] for r in bi["rows"])
        row("Bundle integrity", "changed bytes, missing files, edited/malformed manifests, paths outside the bundle, "
            "a pickle posing as a model (see the table below)", len(bi["rows"]),
            f"{good}/{len(bi['rows'])} refused with a BundleError naming the problem; onnxruntime sessions created: "
            f"{sum(r['onnxruntime_calls'] for r in bi['rows'])}", good == len(bi["rows"]))
        scan = code_execution_scan()
        details["scan"] = scan
        row("No code from the bundle is executed", f"AST scan of {scan['files']} runtime modules for eval/exec/"
            "compile/__import__/importlib, pickle-like modules, np.load(allow_pickle=True)", scan["files"],
            f"{len(scan['hits'])} findings" + (f": {scan['hits']}" if scan["hits"] else ""), not scan["hits"])

        log("concurrency ...")
        cc = concurrent_vs_serial(guard, sizes["threads"], sizes["screens_per_thread"])
        details["concurrency"] = cc
        row("Concurrency", f"{cc['threads']} threads sharing one Guard, {sizes['screens_per_thread']} screen calls "
            f"each (batches of 1-8)", cc["calls"], f"{cc['mismatches']} of {cc['images']} verdicts differ from "
            f"serial screening ({cc['seconds']} s)", cc["mismatches"] == 0)
        wq = workqueue_threads()
        details["workqueue"] = wq
        row("Concurrency under numba's workqueue layer", "4 threads screening batches of 80 with "
            "NUMBA_THREADING_LAYER=workqueue (numba's fallback without OpenMP/TBB)", 8,
            "completed" if wq["ok"] else f"process aborted (exit {wq['returncode']}): {wq['message']}", wq["ok"])

        log(f"sustained load ({sizes['sustained']:,} images) ...")
        sm = sustained_memory(guard, sizes["sustained"])
        details["memory"] = sm
        row("Sustained load, resident memory", f"{sm['images']:,} images in {sm['calls']:,} screen calls of batch "
            "sizes 1-64; RSS after the first tenth vs the end", sm["images"],
            f"RSS {sm['rss_after_warmup_mb']} MB -> {sm['rss_end_mb']} MB (max {sm['rss_max_mb']} MB): growth "
            f"{sm['growth_pct']}% (max {sm['max_growth_pct']}%) in {sm['seconds']} s", sm["max_growth_pct"] < 5)

        log("determinism ...")
        ap = across_processes(processes=sizes["processes"])
        details["processes"] = ap
        row("Determinism across processes", f"{ap['images']} images screened here and in {ap['processes']} fresh "
            "process(es)", ap["images"], f"identical verdicts and scores: {'yes' if ap['equal'] else 'no'}",
            ap["equal"])
        bc = batch_composition(guard)
        details["batches"] = bc
        row("Determinism across batch compositions", "each image alone vs in batches of 7, 63, 64 and 200, shuffled "
            "(serial and parallel kernels)", bc["batches"], f"{bc['mismatches']} of {bc['images'] * 4} differ",
            bc["mismatches"] == 0)
        tc = thread_counts()
        details["threads"] = tc
        row("Determinism across thread counts", f"{', '.join(tc['settings'])} on {tc['images']} images",
            len(tc["settings"]), f"{tc['distinct_results']} distinct result(s)", tc["distinct_results"] == 1)

        log("webcam ...")
        wc = webcam_checks(guard, folder)
        details["webcam"] = wc
        if wc["available"]:
            good = sum(r["ok"] for r in wc["rows"])
            row("Webcam robustness", "truncated videos through `webcam.run`; noise, 500 tiny contours and 60 "
                "digit-sized marks through `process_frame`", len(wc["rows"]),
                f"{good}/{len(wc['rows'])} ended cleanly with a one-line message and nothing else on stderr, or "
                f"screened at most max_digits regions in one batch; slowest {max(r['seconds'] for r in wc['rows'])} s",
                good == len(wc["rows"]))
    details["skipped"] = dict(SKIPPED)
    return rows, details
