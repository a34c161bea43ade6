"""Small shared helpers for the tests: tiny models and tiny in-memory datasets."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

import xferclass

SIZE = 32
CLASSES = 3


def tiny_arrays(n: int = 48, size: int = SIZE, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Images whose class is told by a bright colour channel, and one-hot labels."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % CLASSES
    images = rng.uniform(0, 120, (n, size, size, 3)).astype("float32")
    for k in range(CLASSES):
        images[labels == k, :, :, k] += 130.0
    return images, np.eye(CLASSES, dtype="float32")[labels]


def tiny_dataset(n: int = 48, batch_size: int = 16, seed: int = 0) -> tf.data.Dataset:
    images, labels = tiny_arrays(n, seed=seed)
    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(batch_size)
    dataset.class_names = ["red", "green", "blue"]
    return dataset


def tiny_model(seed: int = 1, **kwargs: object) -> keras.Model:
    keras.utils.set_random_seed(seed)
    options: dict[str, object] = dict(weights=None, input_size=SIZE, head_units=16)
    options.update(kwargs)
    return xferclass.build_classifier("mobilenet_v2", num_classes=CLASSES, **options)


def twin(model: keras.Model) -> keras.Model:
    """An independent copy of ``model`` with the same weights."""
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy
