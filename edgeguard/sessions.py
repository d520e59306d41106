"""onnxruntime sessions: options, provider choice, and a check of what onnxruntime really gave.

onnxruntime falls back to the CPU silently when a provider cannot be used, so every session's
``get_providers()`` is compared with what was asked for.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import onnxruntime as ort

from edgeguard.errors import BundleError, ProviderChoiceError, ProviderError

log = logging.getLogger(__name__)

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
CHOICES = ("auto", "cpu", "cuda")


def available_providers() -> list[str]:
    return list(ort.get_available_providers())


def providers_from_choice(choice: str | Sequence[str]) -> list[str]:
    """'auto', 'cpu', 'cuda', onnxruntime provider names (a list, one name, or names separated by commas; 'cpu'
    and 'cuda' may stand for theirs) -> the list to ask for.

    A name onnxruntime does not know is a bad argument (:class:`ProviderChoiceError`, a ValueError); a known
    provider that this onnxruntime cannot use is a :class:`ProviderError`."""
    available = available_providers()
    if isinstance(choice, str):
        key = choice.strip().lower()
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
            log.debug("%s is not available; using the CPU", CUDA)  # nothing was asked for: no warning
            return [CPU]
        names: list[object] = [part.strip() for part in choice.split(",") if part.strip()]
    else:
        names = list(choice)
    if not names or not all(isinstance(n, str) for n in names):
        raise ProviderChoiceError(f"providers must be one of {', '.join(CHOICES)} or onnxruntime provider names "
                                  f"(such as {CPU}), got {choice!r}")
    resolved = [_provider_name(str(n)) for n in names]
    missing = [n for n in resolved if n not in available]
    if missing:
        raise ProviderError(f"provider(s) {', '.join(missing)} not available (available: {', '.join(available)})")
    return list(dict.fromkeys(resolved))


def _provider_name(name: str) -> str:
    """One name of a providers list as onnxruntime spells it ('cpu' and 'cuda' stand for theirs, any case)."""
    known = {n.lower(): n for n in ort.get_all_providers()}
    known.update({"cpu": CPU, "cuda": CUDA})
    found = known.get(name.strip().lower())
    if found is None:
        raise ProviderChoiceError(f"unknown execution provider {name!r}: use one of {', '.join(CHOICES)} or "
                                  f"onnxruntime provider names (available here: {', '.join(available_providers())})")
    return found


def session_options(threads: int = 1) -> ort.SessionOptions:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3  # errors only
    return opts


def create_session(name: str, model: bytes, providers: list[str], *, threads: int = 1,
                   strict: bool = False, fallback_level: int = logging.WARNING) -> ort.InferenceSession:
    """A session for one verified model. ``strict``: refuse a silent fallback away from the first provider;
    otherwise it is logged at ``fallback_level`` (``providers="auto"``: DEBUG, nothing was asked for)."""
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
        log.log(fallback_level, message)
    return session
