"""The reliability report: malformed inputs, fuzzing, bundle integrity, concurrency, memory, determinism.

    python -m benchmarks.reliability            # the full run (about 15 minutes on 2 busy cores)
    python -m benchmarks.reliability --quick    # the same checks, smaller (about 1 minute)
    python -m benchmarks.reliability --sustained 20000   # full, with a shorter sustained-load run

writes reports/reliability.md (``--out`` to change). Every number in it is computed by this run. The
checks are also what tests/test_hardening.py calls with small sizes. One module per job:

- ``inputs``: malformed files (the corpus of ``benchmarks/corpus.py``), random arrays, broken videos and frames;
- ``bundle``: tampered bundles, and the scan showing the runtime executes no code from a bundle;
- ``runtime``: concurrency, sustained load (memory), determinism, numba's workqueue layer;
- ``suite``: runs them all at the chosen sizes, one summary row per check;
- ``report``: the markdown; ``__main__``: the command line.
"""

from benchmarks.reliability.bundle import (
    TAMPERS,
    Tamper,
    bundle_integrity,
    code_execution_scan,
    forbid_onnxruntime,
    tampered_copy,
)
from benchmarks.reliability.inputs import (
    captured_fd2,
    corpus_through_api,
    corpus_through_cli,
    drop_dac_prefix,
    many_digits_frame,
    noise_frame,
    screen_fuzz,
    tiny_contours_frame,
    unreadable,
    webcam_checks,
    write_video,
)
from benchmarks.reliability.runtime import (
    across_processes,
    batch_composition,
    concurrent_vs_serial,
    image_pool,
    rss_bytes,
    sustained_memory,
    thread_counts,
    verdict_digest,
    workqueue_threads,
)

__all__ = [
    "TAMPERS", "Tamper", "across_processes", "batch_composition", "bundle_integrity", "captured_fd2",
    "code_execution_scan", "concurrent_vs_serial", "corpus_through_api", "corpus_through_cli", "drop_dac_prefix",
    "forbid_onnxruntime", "image_pool", "many_digits_frame", "noise_frame", "rss_bytes", "screen_fuzz",
    "sustained_memory", "tampered_copy", "thread_counts", "tiny_contours_frame", "unreadable", "verdict_digest",
    "webcam_checks", "workqueue_threads", "write_video",
]
