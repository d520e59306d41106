"""The latency benchmark's ``ray`` section: images/s of ``edgeguard.ray_screen.ScreenBatch`` in one process and on
a local Ray instance with 2 actors (one CPU and one onnxruntime thread each), on the same synthetic digits.

One process: ``ScreenBatch`` called on batches of ``BATCH`` rows in this process, as one actor runs it (one
onnxruntime and one numba thread), and ``Guard.screen`` on the same arrays (the pipeline without the records; its
numba kernels on every core), just before and just after the Ray run (their mean). Ray: the whole
``map_batches`` run, from building the dataset to the last verdict row back in this process, so it includes
starting the actors (each loads the bundle); ``steady`` counts the rows after the first batch came back over the
time since then (a block per batch, so that at most one batch per actor was under way before that moment). Ray
is started for the section and shut down after it."""

from __future__ import annotations

import time

import numpy as np

from benchmarks.latency.common import K_BATCH, Plan, log, numba_threads, skipped, synthetic_digits

BATCH = 256
ACTORS = 2


def section_ray(args, plan: Plan) -> dict:
    try:
        import ray
        import ray.data
    except ImportError:
        return skipped("Ray Data is not installed (pip install 'edgeguard[ray]')")
    from edgeguard.guard import Guard
    from edgeguard.ray_screen import ScreenBatch

    n = 2000 if plan.single_calls < 1000 else 20000
    images = synthetic_digits(n, seed=4)
    options = {"bundle": args.bundle, "k": K_BATCH, "providers": "cpu", "threads": 1}
    guard = Guard.load(args.bundle, providers="cpu", k=K_BATCH, threads=1)
    guard.warmup()
    screen = ScreenBatch(**options)

    def one_process() -> tuple[float, float]:
        with numba_threads(None):  # ScreenBatch leaves numba on one thread, as in an actor
            t0 = time.perf_counter()
            for i in range(0, n, BATCH):
                guard.screen(images[i:i + BATCH])
            t1 = time.perf_counter()
        for i in range(0, n, BATCH):
            screen({"source": np.arange(i, min(n, i + BATCH)).astype(str), "image": images[i:i + BATCH]})
        return n / (t1 - t0), n / (time.perf_counter() - t1)

    before = one_process()
    ray.init(num_cpus=ACTORS, include_dashboard=False, log_to_driver=False)
    try:
        ray.data.DataContext.get_current().enable_progress_bars = False
        t0 = time.perf_counter()
        ds = ray.data.from_items([{"source": str(i), "image": image} for i, image in enumerate(images)],
                                 override_num_blocks=-(-n // BATCH))  # a block per batch
        out = ds.map_batches(ScreenBatch, fn_constructor_kwargs=options, batch_size=BATCH, batch_format="numpy",
                             compute=ray.data.ActorPoolStrategy(size=ACTORS), num_cpus=1)
        rows, first_at, first_rows = 0, None, 0
        for table in out.iter_batches(batch_format="pyarrow", batch_size=None):
            rows += table.num_rows
            if first_at is None:
                first_at, first_rows = time.perf_counter(), rows
        wall = time.perf_counter() - t0
    finally:
        ray.shutdown()
    after = one_process()
    steady = (rows - first_rows) / (t0 + wall - first_at) if first_at and t0 + wall > first_at else None
    result = {"images": n, "batch": BATCH, "k": K_BATCH, "actors": ACTORS, "rows_back": rows,
              "guard_screen_images_per_s": (before[0] + after[0]) / 2,
              "one_process_images_per_s": (before[1] + after[1]) / 2,
              "ray_images_per_s": n / wall, "ray_steady_images_per_s": steady, "ray_wall_s": wall}
    log(f"  ray: one process {result['one_process_images_per_s']:,.0f} images/s, Ray with {ACTORS} actors "
        f"{result['ray_images_per_s']:,.0f} images/s ({wall:.1f} s, actor start included)")
    return result
