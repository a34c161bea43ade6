"""Checks of arguments that several public functions take, with one message each."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ._errors import InvalidArgumentError

__all__ = ["as_size"]


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
