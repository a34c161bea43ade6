"""Checks of arguments that several public functions take, with one message each."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ._errors import InvalidArgumentError

__all__ = ["as_size", "verbosity"]


def _side(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and bool(value >= 1)


def as_size(value: Any, argument: str) -> tuple[int, int]:
    """``(height, width)`` from an image size given as one int or a pair of ints.

    Raises:
        InvalidArgumentError: ``value`` is not a positive int or a pair of
            positive ints (a bool, a float, a string and a 0 are not).

    Examples:
        >>> as_size(224, "input_size"), as_size((96, 128), "size")
        ((224, 224), (96, 128))
        >>> try:
        ...     as_size(0, "size")
        ... except InvalidArgumentError as error:
        ...     print(error)
        size=0 is not an image size; pass a positive int or a (height, width) pair of positive ints
    """
    pair: tuple[Any, ...] = ()
    if _side(value):
        pair = (value, value)
    elif isinstance(value, Sequence) and not isinstance(value, (str, bytes)) and len(value) == 2:
        pair = tuple(value)
    elif isinstance(value, np.ndarray) and value.shape == (2,):
        pair = tuple(value.tolist())
    if len(pair) != 2 or not all(_side(side) for side in pair):
        raise InvalidArgumentError(
            f"{argument}={value!r} is not an image size; pass a positive int or a "
            "(height, width) pair of positive ints"
        )
    return (int(pair[0]), int(pair[1]))


def verbosity(verbose: Any) -> int:
    """``verbose`` as Keras's int, checked the same way for every public function.

    Every function that takes ``verbose`` accepts 0 (silent), 1 (a progress
    bar), 2 (one line per epoch or pass) and ``"auto"`` (1, as in Keras).

    Raises:
        InvalidArgumentError: Any other value (a bool too).

    Examples:
        >>> verbosity("auto"), verbosity(0), verbosity(2)
        (1, 0, 2)
    """
    if isinstance(verbose, str) and verbose == "auto":
        return 1
    if isinstance(verbose, bool) or verbose not in (0, 1, 2):
        raise InvalidArgumentError(f"verbose={verbose!r} must be 0, 1, 2 or 'auto'")
    return int(verbose)
