"""The backbone registry: one :class:`BackboneSpec` per backbone name."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..core._errors import BackboneNotFoundError, InvalidArgumentError

__all__ = ["BackboneSpec", "register_backbone", "list_backbones", "get_backbone"]

#: Signature of a backbone builder: ``builder(input_shape, weights) -> keras.Model``.
#: The model maps preprocessed images of ``input_shape`` to a feature map
#: (no classification top, no pooling).
BackboneBuilder = Callable[..., Any]


@dataclass(frozen=True)
class BackboneSpec:
    """Everything xferclass needs to know about one backbone.

    Attributes:
        name: Registry name, lower case (``"xception"``).
        builder: ``builder(input_shape=(h, w, 3), weights=...) -> keras.Model``
            returning the backbone without its top and without pooling.
        preprocess: How raw pixels in [0, 255] become the backbone's input; one
            of the modes of :class:`xferclass.Preprocessing` (``"tf"``,
            ``"torch"``, ``"caffe"``, ``"unit"``, ``"none"``).
        default_size: Native input size ``(height, width)``.
        min_size: Smallest input side the architecture accepts.
        weights: Where ``weights="imagenet"`` comes from, in words (shown by
            ``xferclass backbones`` and in errors).
        family: Architecture family, for listing.
        licence: Licence of the pretrained weights.
        extra: The pip extra that the builder needs, if any.
        taps: A regular expression matching (in full) the names of the backbone's layers
            whose outputs are its blocks' outputs: ``build_classifier(..., taps=True)``
            pools them too (features from every depth). None: the backbone has none.
    """

    name: str
    builder: BackboneBuilder
    preprocess: str
    default_size: tuple[int, int]
    min_size: int = 32
    weights: str = "keras.applications download (ImageNet)"
    family: str = ""
    licence: str = ""
    extra: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict, compare=False)
    taps: str | None = None


_REGISTRY: dict[str, BackboneSpec] = {}


def _normalise(name: str) -> str:
    return name.strip().lower().replace("-", "_")


def register_backbone(
    name: str,
    builder: BackboneBuilder,
    preprocess: str,
    default_size: int | tuple[int, int],
    *,
    min_size: int | None = None,
    weights: str = "custom",
    family: str = "custom",
    licence: str = "",
    extra: str | None = None,
    overwrite: bool = False,
    taps: str | None = None,
) -> BackboneSpec:
    """Add a backbone to the registry so that ``build_classifier`` can use it by name.

    Args:
        name: The name to register (case-insensitive; ``-`` and ``_`` are the same).
        builder: ``builder(input_shape, weights) -> keras.Model``: the feature
            extractor without top or pooling. ``weights`` is whatever the user
            passed to :func:`build_classifier` (``"imagenet"``, ``None`` or a path).
        preprocess: One of ``"tf"`` ([-1, 1]), ``"torch"`` (ImageNet mean/std),
            ``"caffe"`` (BGR, mean subtracted), ``"unit"`` ([0, 1]) or ``"none"``
            (the builder's model takes raw [0, 255] pixels).
        default_size: Native input size, an int or ``(height, width)``.
        min_size: Smallest input side the architecture accepts; defaults to
            the smaller of 32 and the native size.
        weights: Where pretrained weights come from, in words.
        family: Architecture family, for listing.
        licence: Licence of the pretrained weights.
        extra: Pip extra the builder needs, named in errors.
        overwrite: Replace an existing entry instead of raising.
        taps: A regular expression matching, in full, the names of the layers whose
            outputs are the blocks' outputs (``r"block\\d+_out"``): what
            ``build_classifier(..., taps=True)`` pools beside the last layer.

    Returns:
        The registered :class:`BackboneSpec`.

    Raises:
        ValueError: The name is taken (and ``overwrite`` is false), or
            ``preprocess`` or ``default_size`` is not valid.

    Examples:
        >>> import keras
        >>> from xferclass import register_backbone, build_classifier
        >>> def tiny(input_shape, weights=None):
        ...     inputs = keras.Input(input_shape)
        ...     x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(inputs)
        ...     return keras.Model(inputs, x, name="tiny")
        >>> spec = register_backbone("tiny_doc", tiny, preprocess="unit", default_size=32)
        >>> build_classifier("tiny_doc", num_classes=3, weights=None).output_shape
        (None, 3)
    """
    from .layers import PREPROCESS_MODES

    key = _normalise(name)
    if not key:
        raise InvalidArgumentError("register_backbone: name must be a non-empty string")
    if key in _REGISTRY and not overwrite:
        raise InvalidArgumentError(
            f"register_backbone: a backbone named {key!r} is already registered; "
            "pass overwrite=True to replace it"
        )
    if preprocess not in PREPROCESS_MODES:
        raise InvalidArgumentError(
            f"register_backbone: preprocess={preprocess!r} is not one of {sorted(PREPROCESS_MODES)}"
        )
    if not callable(builder):
        raise InvalidArgumentError(f"register_backbone: builder={builder!r} is not callable")
    size = (default_size, default_size) if isinstance(default_size, int) else tuple(default_size)
    if len(size) != 2 or any(int(s) < 1 for s in size):
        raise InvalidArgumentError(
            f"register_backbone: default_size={default_size!r} is not a valid size"
        )
    spec = BackboneSpec(
        name=key,
        builder=builder,
        preprocess=preprocess,
        default_size=(int(size[0]), int(size[1])),
        min_size=int(min_size) if min_size is not None else min(32, *size),
        weights=weights,
        family=family,
        licence=licence,
        extra=extra,
        taps=taps,
    )
    _REGISTRY[key] = spec
    return spec


def list_backbones(pattern: str | None = None) -> list[str]:
    """Names of the registered backbones, sorted, optionally filtered by a glob.

    Examples:
        >>> from xferclass import list_backbones
        >>> "xception" in list_backbones()
        True
        >>> list_backbones("resnet*")
        ['resnet50', 'resnet50_v2']
    """
    import fnmatch

    names = sorted(_REGISTRY)
    if pattern:
        names = [n for n in names if fnmatch.fnmatch(n, _normalise(pattern))]
    return names


def get_backbone(name: str) -> BackboneSpec:
    """Look a backbone up by name.

    Raises:
        BackboneNotFoundError: No backbone has that name; the message lists the
            closest registered names.

    Examples:
        >>> from xferclass import get_backbone
        >>> get_backbone("xception").default_size
        (299, 299)
    """
    if not isinstance(name, str):
        raise BackboneNotFoundError(f"backbone={name!r} is not a backbone name (expected a str)")
    key = _normalise(name)
    try:
        return _REGISTRY[key]
    except KeyError:
        close = difflib.get_close_matches(key, _REGISTRY, n=5, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise BackboneNotFoundError(
            f"backbone={name!r} is not a registered backbone{hint} "
            "(`xferclass backbones` or xferclass.list_backbones() lists them all)"
        ) from None
