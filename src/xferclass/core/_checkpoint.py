"""Cheap checkpoints: the best weights in memory, the best model on disk, a small resume state.

* The best weights are copied in memory (NumPy arrays) whenever the monitored
  value improves, and put back at the end, as
  ``keras.callbacks.EarlyStopping(restore_best_weights=True)`` does.
* The full ``.keras`` model is written atomically at most once per improvement,
  and no more often than keeps its writes within ``CHECKPOINT_SHARE`` (10%) of
  the training time; a better epoch that comes sooner is written later (at the
  next due improvement, at the end, on Ctrl-C or on a non-finite loss).
* The resume state, written after an epoch under the same kind of throttle
  (:class:`WriteThrottle`) and after a phase's last epoch, holds only what
  changes in the current phase: the weights of the model being fitted (the head, or the top of
  the backbone and the head, or the whole model), the optimizer's variables,
  the epoch, the best value and the history. It is one ``.npz`` file, replaced
  atomically and fsynced, the way ``keras.callbacks.BackupAndRestore`` keeps
  its backup.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import keras
import numpy as np

from ._errors import InvalidArgumentError, ModelFileError
from ._files import atomic_write

__all__ = [
    "BestWeights",
    "WriteThrottle",
    "resume_path",
    "save_model",
    "write_resume_state",
    "read_resume_state",
]


def save_model(model: keras.Model, path: str | os.PathLike[str]) -> None:
    """Save ``model`` to a ``.keras`` file atomically.

    The model is written to a temporary file in the same folder and renamed over
    ``path``, so a crash at any instant leaves either the old file or the new
    one, never a half-written one.

    Examples:
        >>> xferclass.save_model(model, "runs/best.keras")  # doctest: +SKIP
    """
    path = os.fspath(path)
    if not path.endswith(".keras"):
        raise InvalidArgumentError(f"path={path!r} must end in .keras")
    atomic_write(path, model.save)


class WriteThrottle:
    """Keeps the writes of one file within ``share`` of the time between them.

    A file write (a whole ``.keras`` model, or a resume state with the whole
    backbone and the optimizer's slots) can cost seconds while an epoch on
    cached features takes a fraction of one. A write is due when the time since
    the last one ended is at least ``1 / share`` times what that write took, so
    the writes cost at most ``share`` of the time; the first write is always due.

    Args:
        share: The largest fraction of the time the writes may take.
        clock: Seconds, monotonic (a test may pass its own).

    Examples:
        >>> throttle = WriteThrottle(0.1)
        >>> throttle.due()
        True
        >>> with throttle.timed():
        ...     pass  # write the file
        >>> throttle.seconds < 1.0
        True
    """

    def __init__(self, share: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.share = share
        self.clock = clock
        #: How long the last write took, and when it ended (``None``: no write yet).
        self.seconds = 0.0
        self.ended: float | None = None

    def due(self) -> bool:
        """Whether writing now keeps the writes within their share."""
        if self.ended is None:
            return True
        return (self.clock() - self.ended) * self.share >= self.seconds

    @contextlib.contextmanager
    def timed(self) -> Iterator[None]:
        """Time the write in the ``with`` block; a write that fails is not counted."""
        started = self.clock()
        yield
        self.ended = self.clock()
        self.seconds = self.ended - started


def resume_path(checkpoint: str) -> str:
    """Where the resume state of ``checkpoint`` (a ``.keras`` path) is kept."""
    return checkpoint[: -len(".keras")] + ".resume.npz"


def write_resume_state(path: str, model: keras.Model, optimizer: Any, meta: dict[str, Any]) -> None:
    """Write ``model``'s weights, ``optimizer``'s variables and ``meta`` atomically."""
    arrays: dict[str, Any] = {"meta": np.frombuffer(json.dumps(meta).encode(), np.uint8)}
    for index, variable in enumerate(model.weights):
        arrays[f"w{index}"] = np.asarray(variable)
    for index, variable in enumerate(optimizer.variables if optimizer is not None else []):
        arrays[f"o{index}"] = np.asarray(variable)

    def write(temporary: str) -> None:
        with open(temporary, "wb") as out:
            np.savez(out, **arrays)

    atomic_write(path, write)


def read_resume_state(path: str) -> tuple[dict[str, Any], list[np.ndarray], list[np.ndarray]]:
    """The ``(meta, weights, optimizer variables)`` written by :func:`write_resume_state`."""
    try:
        with np.load(path) as saved:
            meta = json.loads(bytes(saved["meta"]).decode())
            weights = [saved[f"w{k}"] for k in range(meta["weights"])]
            slots = [saved[f"o{k}"] for k in range(meta["optimizer_variables"])]
    except (OSError, ValueError, KeyError) as error:
        raise ModelFileError(
            f"cannot resume from {path}: {error}; delete it to start afresh"
        ) from error
    return meta, weights, slots


def restore_resume_state(
    path: str, model: keras.Model, optimizer: Any, weights: list[Any], slots: list[Any]
) -> None:
    """Put saved weights and optimizer variables back into ``model`` and ``optimizer``."""
    if len(weights) != len(model.weights) or any(
        tuple(w.shape) != tuple(v.shape) for w, v in zip(weights, model.weights)
    ):
        raise ModelFileError(
            f"the resume state {path} was saved from another model or phase; "
            "delete it to start afresh"
        )
    for variable, value in zip(model.weights, weights):
        variable.assign(value)
    if slots and optimizer is not None:
        optimizer.build(model.trainable_variables)
        if len(optimizer.variables) != len(slots):
            raise ModelFileError(f"the optimizer state in {path} does not fit this optimizer")
        for variable, value in zip(optimizer.variables, slots):
            variable.assign(value)


class BestWeights:
    """A copy, in memory, of the variables as they were at the best epoch so far.

    ``track`` adds variables that a new phase will train: their current values
    are the ones they had at the best epoch, since nothing trained them since.
    """

    def __init__(self) -> None:
        self.epoch: int | None = None
        self.value: float | None = None
        self._saved: dict[int, tuple[Any, np.ndarray]] = {}

    @property
    def empty(self) -> bool:
        return not self._saved

    def take(self, variables: list[Any], epoch: int | None, value: float | None) -> None:
        """Copy ``variables`` and every variable copied before, as they are now."""
        self.epoch, self.value = epoch, value
        every = [variable for variable, _ in self._saved.values()]
        for variable in [*every, *variables]:
            self._saved[id(variable)] = (variable, np.array(variable))

    def variables(self) -> list[Any]:
        """The variables whose values are kept."""
        return [variable for variable, _ in self._saved.values()]

    def track(self, variables: list[Any]) -> None:
        if self.empty:
            return
        for variable in variables:
            if id(variable) not in self._saved:
                self._saved[id(variable)] = (variable, np.array(variable))

    def restore(self) -> None:
        for variable, value in self._saved.values():
            variable.assign(value)
