"""Small shared helpers for the tests: tiny models, tiny in-memory datasets, the example."""

from __future__ import annotations

import contextlib
import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import keras
import numpy as np
import pytest
import tensorflow as tf

import xferclass

SIZE = 32
CLASSES = 3
EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "clothing.py"


@contextlib.contextmanager
def example_module(name: str = "clothing_example") -> Iterator[ModuleType]:
    """``examples/clothing.py`` imported as module ``name`` (TensorFlow loads only when it runs)."""
    spec = importlib.util.spec_from_file_location(name, EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


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


def tiny_backbone(input_shape: tuple[int, int, int], weights: object = None) -> keras.Model:
    """A small conv net with BatchNorm and a residual block, quick to build and run.

    Layer names follow keras.applications: ``block{N}_...``; the residual add of
    block 2 means the graph cannot be cut between ``block2_conv_a`` and ``block2_add``.
    """
    inputs = keras.Input(input_shape)
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", name="stem_conv")(inputs)
    x = keras.layers.BatchNormalization(name="stem_bn")(x)
    x = keras.layers.ReLU(name="stem_relu")(x)
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same", name="block1_conv")(x)
    x = keras.layers.BatchNormalization(name="block1_bn")(x)
    x = keras.layers.ReLU(name="block1_relu")(x)
    y = keras.layers.Conv2D(16, 3, padding="same", name="block2_conv_a")(x)
    y = keras.layers.BatchNormalization(name="block2_bn")(y)
    y = keras.layers.ReLU(name="block2_relu")(y)
    y = keras.layers.Conv2D(16, 3, padding="same", name="block2_conv_b")(y)
    x = keras.layers.Add(name="block2_add")([x, y])
    x = keras.layers.Conv2D(32, 1, name="top_conv")(x)
    x = keras.layers.BatchNormalization(name="top_bn")(x)
    x = keras.layers.ReLU(name="top_relu")(x)
    return keras.Model(inputs, x, name="tiny_backbone")


if "test_tiny" not in xferclass.list_backbones():
    xferclass.register_backbone(
        "test_tiny",
        tiny_backbone,
        preprocess="unit",
        default_size=SIZE,
        family="test",
        taps=r"stem_relu|block1_relu|block2_add",
    )


def tiny_model(seed: int = 1, **kwargs: object) -> keras.Model:
    keras.utils.set_random_seed(seed)
    options: dict[str, object] = dict(weights=None, input_size=SIZE, head_units=16)
    options.update(kwargs)
    return xferclass.build_classifier("test_tiny", num_classes=CLASSES, **options)


def twin(model: keras.Model) -> keras.Model:
    """An independent copy of ``model`` with the same weights."""
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


# ------------------------------------------------------- exported artifacts, run


def run_saved_model(path: Path, images: np.ndarray) -> np.ndarray:
    serve = tf.saved_model.load(str(path)).signatures["serving_default"]
    return serve(tf.constant(images))["probabilities"].numpy()


def run_litert(path: Path, images: np.ndarray) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    entry = interpreter.get_input_details()[0]["index"]
    interpreter.resize_tensor_input(entry, list(images.shape))
    interpreter.allocate_tensors()
    interpreter.set_tensor(entry, images.astype(np.float32))
    interpreter.invoke()
    return np.array(interpreter.get_tensor(interpreter.get_output_details()[0]["index"]))


def run_onnx(path: Path, images: np.ndarray) -> np.ndarray:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (entry,) = session.get_inputs()
    return session.run(None, {entry.name: images.astype(np.float32)})[0]


def run_openvino(path: Path, images: np.ndarray) -> np.ndarray:
    import openvino

    compiled = openvino.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    return np.asarray(compiled(images.astype(np.float32))[compiled.output(0)])


#: format -> a function (artifact path, float images) -> probabilities, in its own runtime.
RUNNERS = {
    "saved_model": run_saved_model,
    "litert": run_litert,
    "onnx": run_onnx,
    "openvino": run_openvino,
}


def fresh_runtime_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty folder of converted models for one test, with the choices of earlier
    tests forgotten; returns the folder."""
    from xferclass.runtime import _runtime

    folder = tmp_path / "cache"
    monkeypatch.setenv("XFERCLASS_CACHE_DIR", str(folder))
    monkeypatch.setattr(_runtime, "_DECISIONS", {})
    _runtime.open_session.cache_clear()
    return folder
