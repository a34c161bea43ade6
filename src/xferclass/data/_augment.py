"""Augmentation: Keras random preprocessing layers from an ``augment=`` argument."""

from __future__ import annotations

from typing import Any

import keras

from ..core._errors import InvalidArgumentError

__all__ = ["AUGMENTATION_PRESETS", "make_augmentation"]

AUGMENTATION_PRESETS = ("flip", "light", "strong")


def make_augmentation(augment: Any, seed: int | None = None) -> keras.Sequential | None:
    """Turn an ``augment=`` argument into a Keras preprocessing-layer pipeline.

    Args:
        augment: ``None``/``False`` (none), ``True`` or ``"flip"`` (horizontal
            flips), ``"light"`` (flip, rotation 0.05, zoom 0.1, translation
            0.1), ``"strong"`` (flip, rotation 0.1, zoom 0.2, translation 0.2,
            contrast 0.2), a Keras layer, or a list of layers.
        seed: Seed of the random layers.

    Returns:
        A ``keras.Sequential`` of random layers, or ``None``.

    Examples:
        >>> from xferclass import make_augmentation
        >>> [layer.name for layer in make_augmentation("light").layers]
        ['flip', 'rotation', 'zoom', 'translation']
    """
    layers = keras.layers
    if augment is None or augment is False:
        return None
    if augment is True:
        augment = "flip"
    if isinstance(augment, str):
        if augment not in AUGMENTATION_PRESETS:
            raise InvalidArgumentError(
                f"augment={augment!r} is not one of {AUGMENTATION_PRESETS}, True, None, "
                "a Keras layer or a list of layers"
            )
        stack = [layers.RandomFlip("horizontal", seed=seed, name="flip")]
        if augment in ("light", "strong"):
            strength = 1.0 if augment == "light" else 2.0
            stack += [
                layers.RandomRotation(0.05 * strength, seed=seed, name="rotation"),
                layers.RandomZoom(0.1 * strength, seed=seed, name="zoom"),
                layers.RandomTranslation(
                    0.1 * strength, 0.1 * strength, seed=seed, name="translation"
                ),
            ]
        if augment == "strong":
            stack.append(layers.RandomContrast(0.2, seed=seed, name="contrast"))
        return keras.Sequential(stack, name=f"augment_{augment}")
    if isinstance(augment, keras.layers.Layer):
        return augment if isinstance(augment, keras.Sequential) else keras.Sequential([augment])
    if isinstance(augment, (list, tuple)) and all(
        isinstance(a, keras.layers.Layer) for a in augment
    ):
        return keras.Sequential(list(augment), name="augment")
    raise InvalidArgumentError(
        f"augment={augment!r} is not a preset name, a Keras layer or a list of layers"
    )
