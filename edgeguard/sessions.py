"""onnxruntime sessions: options, provider choice, and a check of what onnxruntime really gave.

onnxruntime falls back to the CPU silently when a provider cannot be used, so every session's
``get_providers()`` is compared with what was asked for.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import onnxruntime as ort

from edgeguard.errors import BundleError, ProviderError

log = logging.getLogger(__name__)

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
CHOICES = ("auto", "cpu", "cuda")


def available_providers() -> list[str]:
    return list(ort.get_available_providers())


def providers_from_choice(choice: str | Sequence[str]) -> list[str]:
    """'auto', 'cpu', 'cuda' or an explicit list of onnxruntime provider names -> the list to ask for."""
    available = available_providers()
    if isinstance(choice, str):
        key = choice.lower()
        if key == "cpu":
            return [CPU]
        if key == "cuda":
            if CUDA not in available:
                raise ProviderError(
                    f"providers='cuda' was asked for, but this onnxruntime has no {CUDA} "
                    f"(available: {', '.join(available)}); install onnxruntime-gpu or use providers='cpu'"
                )
            return [CUDA, CPU]
        if key == "auto":
            if CUDA in available:
                return [CUDA, CPU]
            log.warning("%s is not available; using the CPU", CUDA)
            return [CPU]
        raise ProviderError(f"unknown providers choice {choice!r}: use one of {', '.join(CHOICES)} or a list")
    names = list(choice)
    if not names or not all(isinstance(n, str) for n in names):
        raise ProviderError("an explicit providers list must hold onnxruntime provider names")
    missing = [n for n in names if n not in available]
    if missing:
        raise ProviderError(f"provider(s) {', '.join(missing)} not available (available: {', '.join(available)})")
    return names


def session_options(threads: int = 1) -> ort.SessionOptions:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3  # errors only
    return opts


def create_session(name: str, model: bytes, providers: list[str], *, threads: int = 1,
                   strict: bool = False) -> ort.InferenceSession:
    """A session for one verified model. ``strict``: refuse a silent fallback away from the first provider."""
    try:
        session = ort.InferenceSession(model, sess_options=session_options(threads), providers=providers)
    except Exception as e:  # onnxruntime raises its own types (Fail, InvalidGraph, ...)
        raise BundleError(f"{name}: onnxruntime could not load the model ({type(e).__name__}: "
                          f"{str(e).splitlines()[0] if str(e) else 'no message'})") from None
    used = session.get_providers()
    if providers[0] not in used:
        message = f"{name}: asked for {providers[0]} but onnxruntime runs it on {', '.join(used)}"
        if strict:
            raise ProviderError(message)
        log.warning(message)
    return session
