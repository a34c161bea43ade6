"""The 1000 ImageNet class names, and decoding of ImageNet logits into them."""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from typing import Any

import numpy as np

from ..core._errors import InvalidArgumentError, WeightsUnavailableError

__all__ = ["IMAGENET_CLASSES", "decode_imagenet_predictions", "imagenet_class_names"]

#: Number of ImageNet classes.
IMAGENET_CLASSES = 1000


@lru_cache(maxsize=1)
def _class_names() -> tuple[str, ...]:
    text = resources.files(__package__).joinpath("imagenet_classes.txt").read_text("utf-8")
    names = tuple(line.strip() for line in text.splitlines() if line.strip())
    if len(names) != IMAGENET_CLASSES:
        raise WeightsUnavailableError(
            f"the packaged imagenet_classes.txt has {len(names)} names, not "
            f"{IMAGENET_CLASSES}; reinstall xferclass"
        )
    return names


def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet class names, in the index order of the models' logits.

    The names are those of Keras's ``imagenet_class_index.json`` (``"tench"``,
    ``"goldfish"``, ..., ``"toilet_tissue"``); two names occur twice
    (``"crane"`` the bird and the machine, ``"maillot"``).

    Examples:
        >>> names = imagenet_class_names()
        >>> len(names), names[0], names[770]
        (1000, 'tench', 'running_shoe')
    """
    return list(_class_names())


def decode_imagenet_predictions(
    predictions: Any, top: int = 5
) -> list[list[tuple[int, str, float]]]:
    """The ``top`` best ImageNet classes of each row of logits or probabilities.

    Args:
        predictions: Array-like of shape ``(batch, 1000)`` (or ``(1000,)`` for
            one image): logits or probabilities; the scores are returned as
            given.
        top: How many classes to return per image.

    Returns:
        One list per image of ``(index, name, score)``, best first.

    Raises:
        InvalidArgumentError: ``predictions`` does not have 1000 columns, or
            ``top`` is not in 1..1000.

    Examples:
        >>> import numpy as np
        >>> scores = np.zeros(1000)
        >>> scores[954] = 3.0
        >>> decode_imagenet_predictions(scores, top=1)
        [[(954, 'banana', 3.0)]]
    """
    scores = np.asarray(predictions, dtype=np.float64)
    if scores.ndim == 1:
        scores = scores[None, :]
    if scores.ndim != 2 or scores.shape[1] != IMAGENET_CLASSES:
        raise InvalidArgumentError(
            f"predictions of shape {np.shape(predictions)} must be (batch, {IMAGENET_CLASSES})"
        )
    if isinstance(top, bool) or not isinstance(top, int) or not 1 <= top <= IMAGENET_CLASSES:
        raise InvalidArgumentError(f"top={top!r} must be an int in 1..{IMAGENET_CLASSES}")
    names = _class_names()
    order = np.argsort(-scores, axis=1, kind="stable")[:, :top]
    return [
        [(int(i), names[int(i)], float(row[int(i)])) for i in best]
        for row, best in zip(scores, order, strict=True)
    ]
