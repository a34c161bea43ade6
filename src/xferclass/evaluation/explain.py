"""Grad-CAM heatmaps: which part of an image a classifier looked at.

Grad-CAM (Selvaraju et al., 2017) weights the channels of the last spatial
feature map by the mean gradient of the chosen class's probability, keeps the
positive part of their sum and scales it to the image.

The spatial layer is found from the model's graph, not from a table of layer
names: the last layer of the model whose output has four dimensions (for a
model made by :func:`xferclass.build_classifier`, the backbone's output). Where
the model holds nested models that end in a vector (the average of several
classifiers made by the automatic recipe), each is searched the same way and
their heatmaps are averaged.

Examples:
    >>> import numpy as np, xferclass
    >>> model = xferclass.build_classifier("mobilenet_v2", num_classes=2,
    ...                                    weights=None, input_size=32)
    >>> heatmaps = xferclass.explain(model, np.zeros((2, 32, 32, 3), "uint8"))
    >>> heatmaps.shape
    (2, 32, 32)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from ..backbones.layers import built_in_views, without_unknown
from ..core._errors import InvalidArgumentError, InvalidArgumentTypeError, UnsupportedBackendError
from ._tta import without_views

__all__ = ["explain", "spatial_layers"]


def _rank(layer: Any) -> int | None:
    """The number of dimensions of ``layer``'s (single) output, or None."""
    try:
        output = layer.output
    except (AttributeError, ValueError):
        return None
    if isinstance(output, (list, tuple)):
        return None
    return len(output.shape)


def _graph_layers(model: Any) -> list[Any]:
    """``model``'s layers in the order of its graph (a Sequential's inner graph)."""
    inner = getattr(model, "_functional", None)  # a built Sequential
    return list((inner or model).layers)


def spatial_layers(model: keras.Model) -> list[tuple[keras.Model, Any]]:
    """Where Grad-CAM reads its feature maps: ``(graph, layer)`` pairs.

    Nested functional models whose output is not spatial (an averaged
    member, a classifier used as a layer) are searched first; otherwise the
    last layer of ``model``'s graph with a four-dimensional output is taken.

    Raises:
        InvalidArgumentError: The model has no spatial layer after its input.

    Examples:
        >>> import xferclass
        >>> model = xferclass.build_classifier("mobilenet_v2", num_classes=2,
        ...                                    weights=None, input_size=32)
        >>> [layer.name for _, layer in spatial_layers(model)]
        ['backbone']
    """
    found: list[tuple[keras.Model, Any]] = []
    last = None
    for layer in _graph_layers(model):
        rank = _rank(layer)
        if isinstance(layer, keras.Model) and rank != 4:
            try:
                found.extend(spatial_layers(layer))
            except InvalidArgumentError:
                pass
        elif rank == 4 and not isinstance(layer, keras.layers.InputLayer):
            last = layer
    if found:
        return found
    if last is None:
        raise InvalidArgumentError(
            f"model {model.name!r} has no layer with a spatial (4-D) output to explain"
        )
    return [(model, last)]


def _run(model: Any, inputs: Any, targets: dict[int, Any], on_target: Callable[..., Any]) -> Any:
    """Run ``model``'s graph eagerly; each target layer's output is ``on_target(op, args, kwargs)``.

    ``on_target`` computes (and keeps) the output, or substitutes one: what the
    gradients of each backend need.
    """
    graph = getattr(model, "_functional", None) or model

    def operation(op: Any) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            if id(op) in targets:
                return on_target(op, args, kwargs)
            if isinstance(op, keras.Model) and _contains(op, targets):
                return _run(op, args[0], targets, on_target)
            return op(*args, **kwargs)

        return call

    # Keras has no public way to run a graph and keep an inner tensor that is
    # differentiable towards the output; Functional.call runs the same loop.
    return graph._run_through_graph(inputs, operation_fn=operation)


def _contains(model: Any, targets: dict[int, Any]) -> bool:
    return any(id(layer) in targets or (
        isinstance(layer, keras.Model) and _contains(layer, targets)
    ) for layer in _graph_layers(model))  # fmt: skip


def _class_indices(class_index: Any, predicted: np.ndarray, classes: int) -> np.ndarray:
    n = len(predicted)
    if class_index is None:
        return predicted
    if isinstance(class_index, (bool, np.bool_)):
        raise InvalidArgumentTypeError(f"class_index={class_index!r} must be an int or ints")
    if isinstance(class_index, (int, np.integer)):
        chosen = np.full(n, int(class_index))
    elif isinstance(class_index, (Sequence, np.ndarray)) and not isinstance(class_index, str):
        chosen = np.asarray(class_index)
        if chosen.shape != (n,) or not np.issubdtype(chosen.dtype, np.integer):
            raise InvalidArgumentError(
                f"class_index must hold one int per image ({n}), got {class_index!r}"
            )
    else:
        raise InvalidArgumentTypeError(f"class_index={class_index!r} must be an int or ints")
    if chosen.size and (chosen.min() < 0 or chosen.max() >= classes):
        raise InvalidArgumentError(f"class_index must be in [0, {classes}), got {class_index!r}")
    return chosen.astype(np.int64)


def _as_images(images: Any) -> np.ndarray:
    array = np.asarray(images)
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4 or array.shape[-1] != 3 or array.shape[0] == 0:
        raise InvalidArgumentError(
            f"images must be RGB pixel arrays of shape (n, height, width, 3), got {array.shape}"
        )
    if not (np.issubdtype(array.dtype, np.number) and not np.issubdtype(array.dtype, np.bool_)):
        raise InvalidArgumentTypeError(f"images must be numeric pixels, got {array.dtype}")
    return array.astype(np.float32)


def _cam(features: Any, gradients: Any, size: tuple[int, int]) -> tf.Tensor:
    """Grad-CAM of one feature map, resized to ``size`` and scaled to [0, 1] per image."""
    features = tf.cast(features, tf.float32)
    weights = tf.reduce_mean(tf.cast(gradients, tf.float32), axis=(1, 2), keepdims=True)
    cam = tf.nn.relu(tf.reduce_sum(weights * features, axis=-1, keepdims=True))
    cam = tf.image.resize(cam, size, method="bilinear")[..., 0]
    peak = tf.reduce_max(cam, axis=(1, 2), keepdims=True)
    return tf.math.divide_no_nan(cam, peak)


def _first(outputs: Any) -> Any:
    return outputs[0] if isinstance(outputs, (list, tuple)) else outputs


def _score(probabilities: Any, chosen: np.ndarray) -> Any:
    """The sum over the batch of each image's probability of its chosen class."""
    picked = keras.ops.take_along_axis(
        keras.ops.cast(probabilities, "float32"), keras.ops.convert_to_tensor(chosen[:, None]), 1
    )
    return keras.ops.sum(picked)


def _gradients(
    model: keras.Model, inputs: np.ndarray, targets: dict[int, Any], class_index: Any
) -> tuple[list[np.ndarray], list[Any]]:
    """The targets' outputs and the gradients of the chosen classes' probabilities
    towards them, on this process's Keras backend (``None`` where a target does not
    reach the output)."""
    backend = keras.backend.backend()
    captured: list[Any] = []

    def keep(op: Any, args: Any, kwargs: Any) -> Any:
        out = op(*args, **kwargs)
        if backend == "tensorflow":
            tape.watch(out)
        captured.append(out)
        return out

    def choose(outputs: Any) -> np.ndarray:
        probabilities = keras.ops.convert_to_numpy(_first(outputs))
        return _class_indices(
            class_index, np.argmax(probabilities, axis=-1), int(probabilities.shape[-1])
        )

    if backend == "tensorflow":
        with tf.GradientTape(persistent=False) as tape:
            outputs = _run(model, tf.constant(inputs), targets, keep)
            score = _score(_first(outputs), choose(outputs))
        gradients = tape.gradient(score, captured)
        return [np.asarray(c) for c in captured], [
            None if g is None else np.asarray(g) for g in gradients
        ]
    outputs = _run(model, keras.ops.convert_to_tensor(inputs), targets, keep)
    chosen = choose(outputs)

    def replaced(values: list[Any]) -> Any:
        given = iter(values)
        out = _run(model, keras.ops.convert_to_tensor(inputs), targets, lambda *_: next(given))
        return _score(_first(out), chosen)

    values = [keras.ops.convert_to_numpy(c) for c in captured]
    if backend == "jax":
        import jax

        gradients = jax.grad(replaced)([jax.numpy.asarray(v) for v in values])
        return values, [np.asarray(g) for g in gradients]
    if backend == "torch":
        import torch

        leaves = [torch.tensor(v, requires_grad=True) for v in values]
        found = torch.autograd.grad(replaced(leaves), leaves, allow_unused=True)
        return values, [None if g is None else g.detach().cpu().numpy() for g in found]
    raise UnsupportedBackendError(
        f"explain does not run on the {backend!r} Keras backend; use tensorflow, jax or torch"
    )


def _explain_batch(
    model: keras.Model, batch: np.ndarray, targets: dict[int, Any], class_index: Any
) -> np.ndarray:
    size = (int(batch.shape[1]), int(batch.shape[2]))
    model_size = model.input_shape[1:3]
    inputs = batch
    if None not in model_size and tuple(model_size) != size:
        inputs = tf.image.resize(inputs, model_size).numpy()
    captured, gradients = _gradients(model, inputs, targets, class_index)
    cams = [_cam(f, g, size) for f, g in zip(captured, gradients) if g is not None]
    if not cams:
        return np.zeros((len(batch), *size), np.float32)
    mean = tf.add_n(cams) / len(cams)
    peak = tf.reduce_max(mean, axis=(1, 2), keepdims=True)
    return np.clip(tf.math.divide_no_nan(mean, peak).numpy(), 0.0, 1.0).astype(np.float32)


def explain(
    model: keras.Model, images: Any, *, class_index: Any = None, batch_size: int = 32
) -> np.ndarray:
    """Grad-CAM heatmaps of ``model`` on ``images``.

    Args:
        model: A classifier: one made by :func:`xferclass.build_classifier`
            (trained, fine-tuned or loaded), an average made by the automatic
            recipe, or any functional Keras model with a spatial layer. For a
            model that averages test-time views inside it, the maps are of the
            image as given (the first view), for the class the averaged views
            predict.
        images: RGB pixels, ``(n, height, width, 3)`` or one ``(height,
            width, 3)`` image, uint8 or float in [0, 255], as
            :func:`xferclass.predict` takes them; resized to the model's input
            size when it differs (the heatmaps keep the images' size).
        class_index: The class to explain: ``None`` for each image's
            predicted class, one int for all images, or one int per image.
        batch_size: Images per forward and backward pass.

    Returns:
        float32 heatmaps of shape ``(n, height, width)`` in [0, 1]; each is
        scaled so its peak is 1 (all zeros where no part of the image raises
        the class's probability).

    Raises:
        InvalidArgumentError: ``images`` is not a batch of RGB images, a
            ``class_index`` is out of range, or the model has no spatial layer.
        InvalidArgumentTypeError: ``class_index`` or ``images`` has the wrong type.

    Examples:
        >>> import numpy as np, xferclass
        >>> model = xferclass.build_classifier("mobilenet_v2", num_classes=3,
        ...                                    weights=None, input_size=32)
        >>> images = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3))
        >>> maps = xferclass.explain(model, images, class_index=[0, 1, 2, 0])
        >>> maps.shape, bool(maps.min() >= 0.0), bool(maps.max() <= 1.0)
        ((4, 32, 32), True, True)
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidArgumentError(f"batch_size={batch_size!r} must be a positive int")
    array = _as_images(images)
    model = without_unknown(model)
    if built_in_views(model) != "none":
        # The maps are of the image as given; the class is the one the model's averaged
        # views predict, unless one is asked for.
        if class_index is None:
            size = tuple(int(side) for side in model.input_shape[1:3])
            batch = tf.image.resize(tf.convert_to_tensor(array, tf.float32), size)
            class_index = np.argmax(model.predict(batch, verbose=0), axis=1).tolist()
        model = without_views(model)
    targets = {id(layer): layer for _, layer in spatial_layers(model)}
    chosen = class_index
    pieces = []
    for start in range(0, len(array), batch_size):
        part = chosen
        if chosen is not None and not isinstance(chosen, (int, np.integer, bool, np.bool_)):
            part = list(chosen)[start : start + batch_size] if len(chosen) == len(array) else chosen
        pieces.append(_explain_batch(model, array[start : start + batch_size], targets, part))
    return np.concatenate(pieces, axis=0)
