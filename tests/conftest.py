"""Shared pytest fixtures.

``tiny_dataset_dir`` is a small folder of labelled images (made once per test
session) that any test may read with :func:`xferclass.load_image_dataset`.
"""

from __future__ import annotations

import gc
import os
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

# engine="auto" stays in float32 in the tests (and their subprocesses), so what they
# compare with Keras does not depend on whether this CPU computes bfloat16; the tests of
# reduced precision (tests/runtime/test_precision.py) turn it back on themselves.
os.environ["XFERCLASS_PRECISION"] = "f32"

#: The classes of ``tiny_dataset_dir``, in alphabetical (label) order.
TINY_CLASSES = ("circle", "square", "triangle")
#: Images per class in ``tiny_dataset_dir``.
TINY_PER_CLASS = 8
#: Side of the images in ``tiny_dataset_dir``.
TINY_SIZE = 32
#: Each class's base colour (RGB), so that a tiny model learns them in a few steps.
_TINT = {"circle": (220, 60, 60), "square": (60, 200, 60), "triangle": (60, 80, 230)}


def shape_image(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """A ``size`` x ``size`` uint8 RGB image of one coloured shape on a noisy background.

    ``kind`` is ``"circle"``, ``"square"`` or ``"triangle"``; the shape's position,
    scale and colour vary a little from image to image, its colour family is the
    class's.
    """
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    centre_y, centre_x = size / 2 + rng.uniform(-size / 10, size / 10, 2)
    radius = size * rng.uniform(0.25, 0.35)
    if kind == "circle":
        mask = (y - centre_y) ** 2 + (x - centre_x) ** 2 <= radius**2
    elif kind == "square":
        mask = (np.abs(y - centre_y) <= radius * 0.85) & (np.abs(x - centre_x) <= radius * 0.85)
    elif kind == "triangle":
        top, bottom = centre_y - radius, centre_y + radius
        half_width = (y - top) / (2 * radius) * radius
        mask = (y >= top) & (y <= bottom) & (np.abs(x - centre_x) <= half_width)
    else:
        raise ValueError(f"unknown shape {kind!r}")
    image = rng.uniform(0, 50, (size, size, 3))
    colour = np.clip(np.array(_TINT[kind]) + rng.uniform(-25, 25, 3), 0, 255)
    image[mask] = colour
    return image.astype(np.uint8)


def make_shape_dataset(
    root: str | os.PathLike[str],
    per_class: int = TINY_PER_CLASS,
    size: int = TINY_SIZE,
    seed: int = 0,
    classes: tuple[str, ...] = TINY_CLASSES,
) -> Path:
    """Write ``root/<class>/<class>_NN.(png|jpg)``: shape images, PNG and JPEG alternating."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    for kind in classes:
        folder = root / kind
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = tf.constant(shape_image(kind, size, rng))
            if i % 2:
                encoded, suffix = tf.io.encode_jpeg(pixels, quality=95).numpy(), "jpg"
            else:
                encoded, suffix = tf.io.encode_png(pixels).numpy(), "png"
            (folder / f"{kind}_{i:02d}.{suffix}").write_bytes(encoded)
    return root


@pytest.fixture(scope="session")
def tiny_dataset_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with classes circle/square/triangle, 8 images of 32x32 pixels each.

    Read-only: tests that change files must copy it first.
    """
    return make_shape_dataset(tmp_path_factory.mktemp("tiny_dataset"))


@pytest.fixture(autouse=True, scope="module")
def _release_keras_state() -> object:
    """After each test module, drop Keras's global state and collect what it held.

    The suite runs in one process; without this, the graphs, traced functions and
    models of hundreds of tests stay reachable through Keras's global state until the
    end, and the process's memory grows with the number of tests.
    """
    yield
    keras.backend.clear_session()
    gc.collect()
