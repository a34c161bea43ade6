"""Helpers shared by training, evaluation and prediction."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from ..backbones.layers import preprocessing_layer
from ..core._errors import DatasetError, InvalidArgumentError
from ..core._log import logger
from ..data._facts import class_names_of

__all__: list[str] = []


def require_dataset(dataset: Any, argument: str) -> tf.data.Dataset:
    """Check that ``dataset`` is a tf.data.Dataset of ``(images, one-hot labels)``."""
    if not isinstance(dataset, tf.data.Dataset):
        raise DatasetError(
            f"{argument} must be a tf.data.Dataset of (images, labels) batches, such as "
            f"xferclass.load_image_dataset returns; got {type(dataset).__name__}"
        )
    spec = dataset.element_spec
    if not (isinstance(spec, tuple) and len(spec) >= 2):
        raise DatasetError(
            f"{argument} must yield (images, labels) pairs; its elements are {spec!r}"
        )
    return dataset


def label_width(dataset: tf.data.Dataset) -> int | None:
    """Number of classes in a dataset's one-hot labels, when the spec tells it."""
    shape = dataset.element_spec[1].shape
    if shape.rank is None or shape.rank < 1:
        return None
    return shape[-1]


def check_class_count(model: keras.Model, dataset: tf.data.Dataset, argument: str) -> None:
    """Raise when the dataset's class count differs from the model's output size."""
    outputs = model.output_shape[-1]
    width = label_width(dataset)
    names = class_names_of(dataset)
    count = len(names) if names is not None else width
    if count is not None and outputs is not None and count != outputs:
        raise DatasetError(
            f"{argument} has {count} classes but the model outputs {outputs}; build the model "
            f"with num_classes={count} or pin the classes with load_image_dataset(class_names=...)"
        )
    if width is not None and width == 1:
        raise DatasetError(
            f"{argument} yields labels of width 1; xferclass expects one-hot labels "
            "(load_image_dataset makes them)"
        )


def model_class_names(model: keras.Model) -> list[str] | None:
    """The class names stored in a model's Preprocessing layer, if any."""
    layer = preprocessing_layer(model)
    return layer.class_names if layer is not None else None


def compare_class_names(first: Any, second: Any, first_what: str, second_what: str) -> None:
    """Raise when two known lists of class names differ (in order or in names).

    Either side ``None`` (not known) passes.

    Raises:
        DatasetError: The names differ; the message names both orders.
    """
    if first is None or second is None:
        return
    first, second = [str(n) for n in first], [str(n) for n in second]
    if first == second:
        return
    how = "in another order" if sorted(first) == sorted(second) else "different classes"
    raise DatasetError(
        f"{second_what} has {how} than {first_what}: {first_what} has {first}, {second_what} "
        f"has {second}. Label index k must mean the same class in both; load the data with "
        f"load_image_dataset(..., class_names={first!r})"
    )


def check_stored_class_names(model: keras.Model, class_names: Any, argument: str) -> None:
    """Raise when ``class_names`` are the model's stored names in another order.

    Raises:
        DatasetError: The same classes in another order (the message names both).
    """
    stored = model_class_names(model)
    if stored is None or class_names is None:
        return
    names = [str(name) for name in class_names]
    if sorted(names) == sorted(stored) and names != list(stored):
        compare_class_names(stored, names, "the model", argument)


def store_class_names(model: keras.Model, class_names: Any) -> None:
    """Record class names in a model's Preprocessing layer, if it has one.

    Names the model already holds are never reordered: the same classes in
    another order raise. Other names replace them with a warning that names both.

    Raises:
        DatasetError: ``class_names`` are the model's stored names in another order.
    """
    layer = preprocessing_layer(model)
    if class_names is None or layer is None:
        return
    names = [str(name) for name in class_names]
    check_stored_class_names(model, names, "the data")
    stored = layer.class_names
    if stored is not None and list(stored) != names:
        logger.warning("the model's class names %s are replaced by the data's %s", stored, names)
    layer.class_names = names


#: Inference engines a frozen forward pass can run on (``engine=`` arguments).
ENGINES = ("auto", "keras", "onnxruntime", "openvino", "openvino-bf16", "openvino-int8")


def check_engine(engine: Any) -> str:
    """Validate an ``engine=`` argument."""
    if engine not in ENGINES:
        raise InvalidArgumentError(f"engine={engine!r} must be one of {', '.join(ENGINES)}")
    return str(engine)


def forward_function(
    sub: keras.Model,
    strategy: Any = None,
    *,
    engine: str = "keras",
    steps: int | None = None,
    probabilities: bool = False,
    head: Callable[[Any], Any] | None = None,
    head_key: str | None = None,
) -> Callable[[tf.Tensor], Any]:
    """``sub``'s inference on one batch, computed whole by this process.

    ``engine`` names the runtime of the pass (see :data:`ENGINES`); every frozen
    forward pass of xferclass goes through here. ``"keras"`` runs on Keras;
    ``"onnxruntime"`` and ``"openvino"`` convert ``sub`` to ONNX (cached on
    disk) and run it on that runtime's CPU backend; ``"auto"`` picks the faster
    of Keras and an installed runtime on the first batches, and stays on Keras
    on a GPU, under a strategy, or when conversion fails (see
    :mod:`xferclass.runtime._runtime`). Every engine returns NumPy arrays, as
    ``predict_on_batch`` does. ``steps``, the number of batches of the pass
    when it is known, lets ``"auto"`` skip the conversion for a pass too short
    to pay for it. ``"auto"`` also tries ``"openvino-bf16"`` where the CPU
    computes bfloat16 natively and ``"openvino-int8"`` (quantized, calibrated on the
    pass's first images) where OpenVINO runs int8, and keeps either only when it
    measured harmless on
    the pass's first images: by their decisions when ``probabilities`` (``sub``
    is a whole classifier), else by a linear probe on the labels the caller
    passes to the function's ``note_labels`` (see :func:`engine_used` for what ran).

    Without a strategy this is ``predict_on_batch``. Under a strategy it cannot
    be: Keras hands the whole batch to every replica and concatenates their
    outputs (across workers too), so each row would come back once per replica.
    Instead each process runs the batch itself, split among its own devices and
    with no collective communication: every worker caches the whole split, and
    the training on the cache is what gets distributed.
    """
    if check_engine(engine) == "keras":
        return _keras_forward(sub, strategy)
    from ._runtime import runtime_forward

    if strategy is None:
        strategy = getattr(sub, "_distribute_strategy", None)
    return runtime_forward(
        sub,
        _keras_forward(sub, strategy),
        engine=engine,
        strategy=strategy,
        steps=steps,
        probabilities=probabilities,
        head=head,
        head_key=head_key,
    )


class _ExtractorThenHead:
    """A classifier's pass as its feature extractor's (on any engine) then its head's
    (on Keras): the extractor's conversion is the one ``fit`` made, shared by every head
    trained on that backbone."""

    def __init__(self, extract: Callable[[Any], Any], head: keras.Model) -> None:
        self.extract, self.head = extract, head

    @property
    def engine(self) -> str:
        return engine_used(self.extract)

    def __call__(self, images: Any) -> Any:
        return self.head.predict_on_batch(np.asarray(self.extract(images)))


def classifier_forward(
    model: keras.Model, *, engine: str = "keras", steps: int | None = None
) -> Callable[[tf.Tensor], Any]:
    """A whole classifier's pass, for :func:`xferclass.predict`: on a runtime, a model
    of :func:`~xferclass.build_classifier`'s layout runs as its feature extractor (the
    very model ``fit`` caches from, so converted once per backbone and input size, not
    per trained head) followed by its head on Keras; any other model runs whole."""
    from ..backbones.models import POOL, split_classifier

    parts = split_classifier(model) if check_engine(engine) != "keras" else None
    if parts is None:
        return forward_function(model, engine=engine, steps=steps, probabilities=True)
    extractor = keras.Model(model.input, model.get_layer(POOL).output)
    features = keras.Input(shape=tuple(extractor.output.shape[1:]))
    x = features
    for layer in parts.head[1:]:
        x = layer(x)
    head = keras.Model(features, x)
    digest = hashlib.sha256()
    for weight in head.weights:
        digest.update(np.ascontiguousarray(keras.ops.convert_to_numpy(weight)).tobytes())
    extract = forward_function(
        extractor,
        engine=engine,
        steps=steps,
        head=lambda rows: head.predict_on_batch(rows),
        head_key=digest.hexdigest()[:20],
    )
    return _ExtractorThenHead(extract, head)


def engine_used(forward: Any) -> str:
    """The engine a forward function of :func:`forward_function` ran its pass on:
    ``"keras"``, a runtime, or a runtime in reduced precision (``"openvino-bf16"``,
    ``"openvino-int8"``);
    ``"auto"`` while it has not decided yet."""
    engine = getattr(forward, "engine", None)
    if engine is None:
        return "keras"
    return "auto" if engine == "undecided" else str(engine)


def _keras_forward(sub: keras.Model, strategy: Any) -> Callable[[tf.Tensor], Any]:
    if strategy is None:
        strategy = getattr(sub, "_distribute_strategy", None)
    if strategy is None or strategy.num_replicas_in_sync == 1:
        if keras.backend.backend() == "tensorflow":
            return sub.predict_on_batch
        # JAX and PyTorch take arrays, not the TensorFlow tensors tf.data yields.
        return lambda images: sub.predict_on_batch(np.asarray(images))
    devices = list(getattr(strategy.extended, "worker_devices", ())) or [None]

    @tf.function(reduce_retracing=True)
    def forward(images: tf.Tensor) -> tf.Tensor:
        share = -(-tf.shape(images)[0] // len(devices))
        outputs = []
        for index, device in enumerate(devices):
            with tf.device(device):
                part = images[index * share : (index + 1) * share]
                outputs.append(sub(part, training=False))
        return tf.concat(outputs, axis=0)

    return forward


def check_image_size(model: keras.Model, dataset: tf.data.Dataset, argument: str) -> None:
    """Raise when a dataset's images are not the size of the model's input."""
    wanted = tuple(model.input_shape[1:3]) if len(model.input_shape) == 4 else None
    spec = dataset.element_spec
    shape = (spec[0] if isinstance(spec, tuple) else spec).shape
    given = {4: tuple(shape[1:3]), 3: tuple(shape[0:2])}.get(shape.rank or 0)
    if wanted is None or given is None or None in wanted or None in given:
        return
    if given != wanted:
        raise DatasetError(
            f"{argument} yields images of {given[0]}x{given[1]} pixels but the model takes "
            f"{wanted[0]}x{wanted[1]}; load the images with load_image_dataset(..., size={wanted}) "
            "(or resize them to that size)"
        )


def model_multi_label(model: keras.Model) -> tuple[bool, float]:
    """``(multi_label, threshold)`` of a model: from its Preprocessing layer, else its output.

    A model without a Preprocessing layer is multi-label when its last layer's
    activation is a sigmoid; its threshold is then 0.5.
    """
    layer = preprocessing_layer(model)
    if layer is not None:
        return bool(layer.multi_label), float(layer.threshold)
    activation = getattr(model.layers[-1], "activation", None) if model.layers else None
    return getattr(activation, "__name__", "") == "sigmoid", 0.5
