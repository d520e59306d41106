"""EdgeGuard: tells an application whether to trust a digit image before it acts on a classifier's answer."""

__version__ = "0.1.0"

__all__ = ["Guard", "Verdict", "preprocess", "__version__"]


def __getattr__(name):
    # Lazy imports keep `import edgeguard` (and `edgeguard --version`) fast.
    if name in ("Guard", "Verdict"):
        from edgeguard import guard

        return getattr(guard, name)
    if name == "preprocess":
        from edgeguard.normalize import preprocess

        return preprocess
    raise AttributeError(f"module 'edgeguard' has no attribute {name!r}")
