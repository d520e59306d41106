"""Exceptions raised by the EdgeGuard runtime."""

from __future__ import annotations

import os

__all__ = ["EdgeGuardError", "InputError", "BundleError", "ProviderError", "ProviderChoiceError", "CalibrationError"]


class EdgeGuardError(Exception):
    """Base class of every error that EdgeGuard raises on purpose."""


class InputError(EdgeGuardError, ValueError):
    """An input image or file that cannot be screened.

    ``str()`` is one line naming the file (when there is one) and the problem.
    ``.reason`` is the problem alone and ``.path`` the file (or ``None``).
    """

    def __init__(self, message: str, path: str | os.PathLike[str] | None = None) -> None:
        self.reason = " ".join(str(message).split())  # always one line
        self.path = path
        text = self.reason if path is None else f"{_display(path)}: {self.reason}"
        super().__init__(text)

    def with_path(self, path: str | os.PathLike[str]) -> InputError:
        """The same error, naming ``path`` (unchanged when it already names a file)."""
        if self.path is not None:
            return self
        return InputError(self.reason, path)

    def __reduce__(self) -> tuple[type[InputError], tuple[str, str | os.PathLike[str] | None]]:
        return (type(self), (self.reason, self.path))


def _display(path: str | os.PathLike[str]) -> str:
    """``path`` as text on one line (a name with control characters is shown quoted)."""
    text = os.fsdecode(path)
    return text if text.isprintable() else repr(text)


class BundleError(EdgeGuardError):
    """A model bundle that is missing, tampered with or malformed."""


class ProviderError(EdgeGuardError, RuntimeError):
    """An onnxruntime execution provider that was asked for is not available."""


class ProviderChoiceError(ProviderError, ValueError):
    """A providers choice that names no execution provider onnxruntime knows (a typo, an empty list): a bad
    argument, so a ValueError too (``edgeguard`` exits 2 for it, as for any bad option)."""


class CalibrationError(EdgeGuardError, ValueError):
    """A calibration on the user's images that cannot be fitted or written (``edgeguard calibrate``): too few
    images for the alpha asked for, labels that do not fit the images, or an output folder that would overwrite
    something. ``str()`` is one line."""
