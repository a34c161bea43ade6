"""Exceptions raised by xferclass.

Every error a user can cause by passing bad input derives from
:class:`XferclassError`, so a caller can catch them all in one place; each also
derives from the built-in exception a Python user would expect (``ValueError``,
``FileNotFoundError``, ``KeyError``) so that generic handlers keep working.
"""

from __future__ import annotations

__all__ = [
    "XferclassError",
    "BackboneNotFoundError",
    "DatasetError",
    "WeightsUnavailableError",
    "ModelFileError",
    "TrainingError",
    "InvalidArgumentError",
    "InvalidArgumentTypeError",
    "MissingDependencyError",
    "ExportError",
    "UnsupportedBackendError",
    "FallbackWarning",
]


class XferclassError(Exception):
    """Base class of every error raised by xferclass on bad input."""


class BackboneNotFoundError(XferclassError, KeyError):
    """An unknown backbone name was asked for."""

    def __str__(self) -> str:  # KeyError quotes its message; show it plainly.
        return str(self.args[0]) if self.args else ""


class DatasetError(XferclassError, ValueError):
    """A dataset folder, file or tf.data pipeline cannot be used as given."""


class WeightsUnavailableError(XferclassError, RuntimeError):
    """Pretrained weights could not be downloaded or read."""


class ModelFileError(XferclassError, ValueError):
    """A model file is missing, truncated or not a Keras model."""


class TrainingError(XferclassError, RuntimeError):
    """Training stopped because it could not go on (for example a NaN loss)."""


class InvalidArgumentError(XferclassError, ValueError):
    """An argument has a value that xferclass cannot use (the message says which)."""


class InvalidArgumentTypeError(XferclassError, TypeError):
    """An argument has a type that xferclass cannot use (the message says which)."""


class MissingDependencyError(XferclassError, ImportError):
    """An optional dependency is not installed; the message names the extra to install."""


class ExportError(XferclassError, RuntimeError):
    """A model could not be exported to the asked-for format, or loaded or run on its runtime."""


class UnsupportedBackendError(XferclassError, RuntimeError):
    """Something xferclass does is not available on the Keras backend in use; the
    message names the backend and what to use instead."""


class FallbackWarning(UserWarning):
    """xferclass fell back to something that changes the numbers or the speed.

    The message says what was chosen instead and how to choose yourself (for
    example ``cache_dtype="float32"`` or a larger ``cache_memory``). Silence it
    with ``warnings.filterwarnings("ignore", category=xferclass.FallbackWarning)``.
    """


def first_line(error: BaseException) -> str:
    """The first line of ``error``'s message (its class name when it has none), for a message.

    Examples:
        >>> first_line(ValueError("Unsupported op: SomeOp\\n  at node 3"))
        'Unsupported op: SomeOp'
        >>> first_line(MemoryError())
        'MemoryError'
    """
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
