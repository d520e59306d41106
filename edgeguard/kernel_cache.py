"""Whether loading the numba kernels will find them compiled in numba's on-disk cache, decided without importing
numba: ``edgeguard detect`` says so in one line before a first compile (10-11 s after an install) instead of
being silent.

The kernels that load from the cache at import are the ones in ``edgeguard/kernels_numba.py`` compiled with a
signature; numba names each one's index ``kernels_numba.<name>-<line>.py<major><minor>.nbi``, in the folder
``numba_cache_root`` chooses (``$NUMBA_CACHE_DIR``, else ``edgeguard/__pycache__`` when writable, else
``$XDG_CACHE_HOME/edgeguard/numba``; ``kernels_numba`` applies it). An index older than the source counts as
missing (numba keys its cache on the source's digest: an edited file is compiled again).
"""

from __future__ import annotations

import ast
import hashlib
import os
import sys
from pathlib import Path

__all__ = ["kernels_cached", "numba_cache_root"]

SOURCE = Path(__file__).with_name("kernels_numba.py")


def numba_cache_root(source: Path = SOURCE) -> str | None:
    """Where numba should keep the kernels' cache: ``$NUMBA_CACHE_DIR``; None (numba's default, ``__pycache__``
    beside ``source``) when the package's folder is writable; else ``$XDG_CACHE_HOME/edgeguard/numba``.
    ``kernels_numba._configure_numba_cache`` applies this rule; ``cache_dir`` reads it."""
    configured = os.environ.get("NUMBA_CACHE_DIR", "")
    if configured:
        return configured
    package, pycache = source.parent, source.parent / "__pycache__"
    if os.access(package, os.W_OK) and (not pycache.is_dir() or os.access(pycache, os.W_OK)):
        return None
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "edgeguard", "numba")


def cache_dir(source: Path = SOURCE) -> Path:
    """The folder numba keeps the kernels' cache in (``numba_cache_root``'s rule)."""
    configured = numba_cache_root(source)
    if configured is None:
        return source.parent / "__pycache__"
    folder = os.path.dirname(os.path.abspath(source))  # numba's UserProvidedCacheLocator subfolder
    return Path(configured) / f"{os.path.basename(folder)}_{hashlib.sha1(folder.encode()).hexdigest()}"


def compiled_at_import(source: Path = SOURCE) -> list[tuple[str, int]]:
    """(name, first line) of each kernel compiled with a signature: ``@njit(SIG, ...)``."""
    found = []
    for node in ast.parse(source.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.FunctionDef):
            for deco in node.decorator_list:
                if isinstance(deco, ast.Call) and getattr(deco.func, "id", None) == "njit" and deco.args:
                    found.append((node.name, node.decorator_list[0].lineno))
    return found


def kernels_cached(source: Path = SOURCE) -> bool:
    """True when every kernel compiled at import has a cache index at least as new as ``source``."""
    try:
        folder, stamp = cache_dir(source), source.stat().st_mtime
        version = f"py{sys.version_info[0]}{sys.version_info[1]}"
        for name, line in compiled_at_import(source):
            index = folder / f"{source.stem}.{name}-{line}.{version}.nbi"
            if not index.is_file() or index.stat().st_mtime < stamp:
                return False
    except (OSError, SyntaxError, ValueError):
        return False
    return True
