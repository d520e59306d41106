"""Latency, throughput, cold start and per-stage cost of the shipped bundle, against a PyTorch eager reference.

Run (from the repository root):

    python -m benchmarks.latency                          # full run, tables on stdout
    python -m benchmarks.latency --out reports/latency.md --docs docs/performance.md
    python -m benchmarks.latency --quick --json           # < 30 s; what the tests run

The runtime has two kernel backends (``Guard.load(kernels=...)``): ``numba`` (edgeguard/kernels.py, the default
for the API, and ``edgeguard detect`` from ``edgeguard.cli.NUMBA_MIN_IMAGES`` files on) and ``numpy``
(edgeguard/kernels_numpy.py: no numba import, what a plain ``edgeguard detect one.png`` uses). "The runtime" below
is ``guard.screen`` with the numba backend unless a section says otherwise.

Sections (``--sections`` picks some):

- ``single``: p50/p95/p99 of ``guard.screen`` on one image, K in {1, 10, 32}, one intra-op thread.
- ``throughput``: images/s at batch 1, 8, 64, 256, 1024, K=10, with one thread and with all cores.
- ``cold_start``: wall time of a fresh ``edgeguard detect one.png`` (the target; numpy backend through
  ``--kernels auto``) and of ``edgeguard detect --kernels numba one.png`` with a warm and with an empty numba
  cache; and where the plain command's time goes in a fresh process (plus what importing numba would add).
- ``stages``: encoder, sampling, decoder, classifier, voting and scoring, verdict: the pieces of
  ``Guard.analyze``/``Guard.screen`` called directly.
- ``kernels``: each kernel ``Guard`` calls, numba (edgeguard/kernels.py) against its NumPy twin
  (edgeguard/kernels_numpy.py), and whether a numpy-backend Guard gives the numba Guard's verdicts.
- ``reference``: the same weights in PyTorch eager (benchmarks/reference.py) and the numpy backend
  (``Guard.load(kernels="numpy")``: onnxruntime with NumPy post-processing), measured interleaved with the runtime
  in the same process (rounds of A B C, medians). Needs torch and onnx: the weights are read from the
  bundle's ONNX files and checked against onnxruntime; skipped, with the reason, when either is absent.
- ``roofline``: FLOPs per screened image counted from the ONNX graphs (Conv, ConvTranspose, Gemm, MatMul; needs
  the ``onnx`` package) against this machine's single-core float32 matmul GFLOP/s.

Timings are medians; ratios come from the same run, interleaved. Tests run ``--quick --json`` and check the
fields, never the times. The runtime (numpy, onnxruntime, numba) is all this needs; torch and onnx add sections.

Modules: ``common`` (what to measure and how to time it), ``measure`` (the sections that time the runtime),
``roofline`` (FLOPs and matmul speed), ``report`` (targets and the rich, markdown and docs output),
``__main__`` (the command line).
"""
