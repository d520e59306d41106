"""The latency benchmark's results judged against the targets and rendered: rich tables, markdown report, docs."""

from __future__ import annotations

import sys

from benchmarks.latency.common import K_BATCH, STAGES, TARGETS

# --------------------------------------------------------------------------------------------- targets


def measured_targets(result: dict) -> dict[str, float | None]:
    single = {r["k"]: r for r in result["single"].get("rows", [])}
    ref = {(r["batch"], r["threads"]): r for r in result["reference"].get("rows", [])}
    cold = result["cold_start"]
    return {
        "p50_k10_ms": single[K_BATCH]["p50_ms"] if K_BATCH in single else None,
        "speedup_torch_b1": ref[(1, 1)]["speedup_vs_torch"] if (1, 1) in ref else None,
        "speedup_torch_b256": ref[(256, 1)]["speedup_vs_torch"] if (256, 1) in ref else None,
        "cold_start_warm_s": cold["plain_s"]["median"] if "plain_s" in cold else None,  # the plain command
    }


def evaluate_targets(result: dict) -> list[dict]:
    values = measured_targets(result)
    rows = []
    for key, text, limit, unit, higher in TARGETS:
        value = values[key]
        status = "SKIP" if value is None else ("PASS" if (value >= limit if higher else value <= limit) else "MISS")
        rows.append({"key": key, "target": text, "limit": limit, "unit": unit,
                     "comparison": ">=" if higher else "<=", "measured": value, "status": status})
    return rows


# ---------------------------------------------------------------------------------------------- tables


def fmt(value, digits=3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def yes_no(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, dict):
        return ", ".join(f"{key}: {yes_no(v)}" for key, v in value.items())
    return "yes" if value else "NO"


def target_cells(t: dict, missing: str = "-") -> list[str]:
    return [t["target"], f"{t['comparison']} {t['limit']} {t['unit']}",
            f"{fmt(t['measured'])} {t['unit']}" if t["measured"] is not None else missing, t["status"]]


def roofline_rows(rf: dict) -> list[list[str]]:
    fp = rf["flops_per_pass"]
    rows = [[f"{name} pass", f"{fp[name] / 1e6:.2f} MFLOP"] for name in ("encoder", "decoder", "classifier")]
    rows += [[f"per screened image, K={k[1:]}", f"{v / 1e6:.2f} MFLOP"] for k, v in rf["flops_per_image"].items()]
    rows += [["numpy matmul 512x512, 1 thread", f"{rf['matmul_gflops_1t']:.1f} GFLOP/s"],
             ["numpy matmul 512x512, all cores", f"{rf['matmul_gflops_all']:.1f} GFLOP/s"],
             ["onnxruntime MatMul 512x512, 1 thread",
              f"{rf['ort_matmul_gflops_1t']:.1f} GFLOP/s" if rf["ort_matmul_gflops_1t"] else "-"],
             [f"floor: K={K_BATCH} image at matmul speed, 1 thread", f"{rf['floor_ms_k10']:.3f} ms"]]
    if "achieved_gflops_batch1" in rf:
        rows.append(["achieved, batch 1 (p50, K=10)",
                     f"{rf['achieved_gflops_batch1']:.1f} GFLOP/s = {100 * rf['fraction_batch1']:.0f}% of matmul"])
    if "achieved_gflops_batch256" in rf:
        rows.append(["achieved, batch 256 (1 thread, K=10)",
                     f"{rf['achieved_gflops_batch256']:.1f} GFLOP/s = {100 * rf['fraction_batch256']:.0f}% of matmul"])
    return rows


def tables(result: dict) -> list[tuple[str, list[str], list[list[str]], str | None]]:
    """(title, columns, rows, note) for every section: shared by the rich and the markdown output."""
    out = []
    m, v = result["machine"], result["machine"]["versions"]
    out.append(("Machine", ["cpu", "family/model", "SIMD", "cores", "python", "numpy", "onnxruntime", "numba",
                            "torch", "load avg (start)"],
                [[m["cpu"], m["cpu_family_model"], " ".join(m["simd"]), str(m["cores"]), v["python"], v["numpy"],
                  v["onnxruntime"], v["numba"], v.get("torch") or "-",
                  " ".join(f"{x:.2f}" for x in m["loadavg"]) if m["loadavg"] else "-"]], None))
    out.append(("Targets", ["target", "limit", "measured", "status"],
                [target_cells(t) for t in result["targets"]], None))
    s = result["single"]
    if "rows" in s:
        out.append(("Single-image latency, guard.screen (1 thread)", ["K", "calls", "p50 ms", "p95 ms", "p99 ms"],
                    [[str(r["k"]), str(r["calls"]), fmt(r["p50_ms"]), fmt(r["p95_ms"]), fmt(r["p99_ms"])]
                     for r in s["rows"]], None))
    tp = result["throughput"]
    if "rows" in tp:
        out.append((f"Batch throughput, K={K_BATCH}", ["batch", "threads", "median ms / call", "images/s"],
                    [[str(r["batch"]), str(r["threads"]), fmt(r["median_ms"]), fmt(r["images_per_s"], 0)]
                     for r in tp["rows"]], tp["note"]))
    c = result["cold_start"]
    if "plain_s" in c:
        out.append(("Cold start in a fresh process", ["command", "kernels", "numba cache", "median s", "min s", "runs"],
                    [[c[command], kernels, cache, fmt(c[key]["median"]), fmt(c[key]["min"]), str(len(c[key]["runs"]))]
                     for command, kernels, cache, key in (
                         ("command", "numpy (auto, 1 file)", "not used", "plain_s"),
                         ("numba_command", "numba", "warm", "numba_warm_cache_s"),
                         ("numba_command", "numba", "empty", "numba_empty_cache_s"))],
                    f"the target is the first row; python -c pass: {c['python_startup_s']:.3f} s"))
        out.append((f"Cold start, where the time goes: {c['command']} (fresh process)", ["phase", "ms"],
                    [[name, fmt(x, 1) if isinstance(x, float) else str(x)] for name, x in c["phases_ms"].items()],
                    "'+' lines: imported after the total in the same process, what the numba backend adds"))
    for r in result["stages"].get("rows", []):
        out.append((f"Stages, batch {r['batch']}, K={r['k']}, 1 thread (medians)", ["stage", "ms", "share"],
                    [[name, fmt(r["ms"][name]), f"{100 * r['share'][name]:.0f}%"] for name in STAGES]
                    + [["sum of stages", fmt(r["sum_ms"]), ""], ["guard.screen", fmt(r["screen_ms"]), ""]],
                    f"staged pipeline gives the same verdicts as guard.screen: {r['matches_guard']}"))
    kn = result["kernels"]
    if "rows" in kn:
        parity = kn["numpy_pipeline_parity"]
        out.append(("Kernels: numba vs NumPy twins (1 thread)",
                    ["kernel", "batch", "numba us", "kernels_numpy us", "x"],
                    [[r["kernel"], str(r["batch"]), fmt(r["numba_us"], 1), fmt(r["vectorised_us"], 1),
                      fmt(r["speedup_vs_vectorised"], 1)] for r in kn["rows"]],
                    f"{kn['note']}. Guard with kernels='numpy' vs 'numba' on {parity['images']} digits: same verdicts "
                    f"{yes_no(parity['same_verdicts'])}, same labels {yes_no(parity['same_labels'])}, max |score "
                    f"difference| {parity['max_abs_score_difference']:.2g}"))
    ref = result["reference"]
    if ref.get("skipped"):
        out.append(("Reference", ["skipped"], [[ref["reason"]]], None))
    elif "rows" in ref:
        p = ref["parity"]
        out.append((f"Runtime vs PyTorch eager and vs the numpy kernels backend, K={K_BATCH} (interleaved, medians)",
                    ["batch", "threads", "runtime ms", "torch ms", "speed-up", "numpy backend ms", "speed-up"],
                    [[str(r["batch"]), str(r["threads"]), fmt(r["runtime_ms"]), fmt(r["torch_ms"]),
                      f"{r['speedup_vs_torch']:.2f}x", fmt(r["numpy_post_ms"]), f"{r['speedup_vs_numpy_post']:.2f}x"]
                     for r in ref["rows"]],
                    f"{ref['weights']}; same weights as the bundle: {p['same_weights']} (max |mu diff| "
                    f"{p['max_abs_mu_difference']:.2g}, input labels agree on "
                    f"{100 * p['input_label_agreement']:.0f}%)"))
    rf = result["roofline"]
    if rf.get("skipped"):
        out.append(("Roofline", ["skipped"], [[rf["reason"]]], None))
    else:
        out.append(("Physical limit (roofline)", ["quantity", "value"], roofline_rows(rf), rf["counted"]))
    ry = result.get("ray", {})
    if ry.get("skipped"):
        out.append(("Ray Data", ["skipped"], [[ry["reason"]]], None))
    elif ry:
        out.append((f"Ray Data: {ry['images']:,} images, batches of {ry['batch']}, K={ry['k']}",
                    ["how", "images/s"],
                    [["Guard.screen, one process (numba on every core)", fmt(ry["guard_screen_images_per_s"], 0)],
                     ["ScreenBatch, one process (one actor's work)", fmt(ry["one_process_images_per_s"], 0)],
                     [f"Ray, {ry['actors']} actors (actor start included)", fmt(ry["ray_images_per_s"], 0)],
                     [f"Ray, {ry['actors']} actors, after the first batch", fmt(ry["ray_steady_images_per_s"], 0)]],
                    "ScreenBatch: the records edgeguard detect --ray writes (preprocessing, verdicts, columns), "
                    "with one onnxruntime and one numba thread as in each actor; one-process rates are the mean of "
                    "a run before and after Ray's, in the same process"))
    return out


# ---------------------------------------------------------------------------------------------- output


def print_rich(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    colours = {"PASS": "[green]PASS[/]", "MISS": "[red]MISS[/]", "SKIP": "[yellow]SKIP[/]"}
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 150)
    for title, columns, rows, note in tables(result):
        table = Table(title=title, title_justify="left", caption=note, caption_justify="left")
        for col in columns:
            table.add_column(col, overflow="fold")
        for row in rows:
            if row and row[-1] in colours:
                row = [*row[:-1], colours[row[-1]]]
            table.add_row(*row)
        console.print(table)
    console.print(f"command: {result['command']}  ({result['elapsed_s']:.0f} s)")


def markdown_table(columns, rows) -> str:
    def cell(x):
        return str(x).replace("|", "\\|")

    lines = ["| " + " | ".join(map(cell, columns)) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(map(cell, row)) + " |" for row in rows]
    return "\n".join(lines)


def load_note(machine: dict) -> str:
    """A warning when other work shared the CPU during the run (absolute times are then inflated)."""
    start, end = (machine.get("loadavg") or [0])[0], (machine.get("loadavg_end") or [0])[0]
    if max(start, end) < 1.5:  # this benchmark itself keeps about one core busy
        return ""
    return (f" The 1-minute load average was {start:.1f} at the start and {end:.1f} at the end on {machine['cores']} "
            "cores (this benchmark accounts for about 1): other jobs shared the CPU, so absolute times are "
            "pessimistic; the interleaved ratios are the robust numbers.")


def to_markdown(result: dict) -> str:
    m, v = result["machine"], result["machine"]["versions"]
    parts = [
        "# EdgeGuard latency report",
        "",
        f"Generated by `{result['command']}` on {result['created']} ({result['elapsed_s']:.0f} s). "
        f"Machine: {m['cpu']} (family/model {m['cpu_family_model']}, {' '.join(m['simd'])}), {m['cores']} cores, "
        f"{m['os']}, load average at the start {' '.join(f'{x:.2f}' for x in m['loadavg'] or [])}; "
        f"Python {v['python']}, numpy {v['numpy']}, onnxruntime {v['onnxruntime']}, numba {v['numba']}, "
        f"torch {v.get('torch') or 'not installed'}. Bundle: `{result['bundle']['path']}` "
        f"(sha256 of the models: {', '.join(f'{k} {h[:12]}' for k, h in result['bundle']['sha256'].items())}).",
        "",
        "Times are medians unless marked p95/p99; ratios are medians of per-round ratios from interleaved rounds "
        "in this same run." + load_note(m),
        "",
    ]
    for title, columns, rows, note in tables(result)[1:]:
        parts += [f"## {title}", "", markdown_table(columns, rows), ""]
        if note:
            parts += [f"_{note}_", ""]
    return "\n".join(parts)


def to_docs(result: dict) -> str:
    """The README's performance section: the machine, the headline medians and ratios, and the command."""
    m = result["machine"]
    single = {r["k"]: r for r in result["single"].get("rows", [])}
    tp = {(r["batch"], r["threads"]): r for r in result["throughput"].get("rows", [])}
    ref = result["reference"]
    cold = result["cold_start"]
    rf = result["roofline"]
    lines = [
        "## Performance",
        "",
        f"Measured with `{result['command']}` on {m['cpu']} ({m['cores']} cores), Python {m['versions']['python']}, "
        f"onnxruntime {m['versions']['onnxruntime']}, numba {m['versions']['numba']}"
        + (f", torch {m['versions']['torch']}" if m["versions"].get("torch") else "") + ", one intra-op thread "
        "unless stated. Medians; ratios from interleaved rounds in the same run. Full tables: "
        "[reports/latency.md](../reports/latency.md)." + load_note(m),
        "",
        markdown_table(["target", "limit", "measured", "status"],
                       [target_cells(t, missing="not measured") for t in result["targets"]]),
        "",
    ]
    if single:
        lines += ["Single image, `guard.screen`: " + "; ".join(
            f"K={k}: p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms" for k, r in single.items()) + ".", ""]
    if tp:
        batches = sorted({b for b, _ in tp})
        threads = sorted({t for _, t in tp})
        lines += [markdown_table(["batch (K=10)", *[f"images/s, {t} thread{'s' if t > 1 else ''}" for t in threads]],
                                 [[str(b), *[fmt(tp[(b, t)]["images_per_s"], 0) if (b, t) in tp else "-"
                                             for t in threads]] for b in batches]), ""]
    if not ref.get("skipped") and "rows" in ref:
        lines += ["Against the same weights in PyTorch eager (`benchmarks/reference.py`, K=10, one thread for both): "
                  + "; ".join(f"batch {r['batch']}: {r['speedup_vs_torch']:.1f}x faster" for r in ref["rows"]
                              if r["threads"] == 1)
                  + ". Against the numpy kernels backend (`Guard.load(kernels=\"numpy\")`, what `edgeguard detect` "
                  "uses for fewer than `NUMBA_MIN_IMAGES` files), the numba runtime is faster by: "
                  + "; ".join(f"batch {r['batch']}: {r['speedup_vs_numpy_post']:.1f}x" for r in ref["rows"]
                              if r["threads"] == 1) + ".", ""]
    elif ref.get("skipped"):
        lines += [f"PyTorch reference: skipped ({ref['reason']}).", ""]
    if "plain_s" in cold:
        empty = cold["numba_empty_cache_s"]["median"]
        lines += [f"Cold start in a fresh process: `{cold['command']}` (numpy kernels, numba not imported) "
                  f"{cold['plain_s']['median']:.2f} s; `{cold['numba_command']}` "
                  f"{cold['numba_warm_cache_s']['median']:.2f} s with a warm numba cache"
                  + (f", {empty:.2f} s with an empty one (the first run after an install compiles the kernels)"
                     if empty is not None else "") + ".", ""]
    if not rf.get("skipped"):
        lines += [f"One screened image at K=10 costs {rf['flops_per_image']['k10'] / 1e6:.1f} MFLOP (counted from the "
                  "ONNX graphs); this machine's single-core float32 matmul runs at "
                  f"{rf['matmul_gflops_1t']:.0f} GFLOP/s, "
                  f"so no single-thread implementation of these models can go below {rf['floor_ms_k10']:.2f} ms per "
                  "image at K=10"
                  + (f"; the whole screening reaches {100 * rf['fraction_batch1']:.0f}% of that speed at batch 1"
                     if "fraction_batch1" in rf else "")
                  + (f" and {100 * rf['fraction_batch256']:.0f}% at batch 256" if "fraction_batch256" in rf else "")
                  + ".", ""]
    lines += [f"Reproduce: `{result['command']}` (`--quick` for a 30-second smoke run, `--json` for machine-readable "
              "output).", ""]
    return "\n".join(lines)
