"""EdgeGuard: tells an application whether to trust a digit image before it acts on a classifier's answer."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what the lazy attributes below are, for type checkers
    from edgeguard.guard import Guard, Verdict
    from edgeguard.normalize import preprocess

__version__ = "0.1.0"

__all__ = ["Guard", "Verdict", "preprocess", "__version__"]


def __getattr__(name: str) -> Any:
    # Lazy imports keep `import edgeguard` (and `edgeguard --version`) fast. `preprocess` is the function:
    # no module under edgeguard/ is called preprocess, so importing one can never replace this attribute.
    if name in ("Guard", "Verdict"):
        from edgeguard import guard

        return getattr(guard, name)
    if name == "preprocess":
        from edgeguard.normalize import preprocess

        return preprocess
    raise AttributeError(f"module 'edgeguard' has no attribute {name!r}")
