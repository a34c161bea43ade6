"""Test-time augmentation: average a model's probabilities over views of each image.

``predict`` and ``evaluate_regression_style`` take ``tta=``:

* ``False``/``None``/``"none"``: the image alone (one forward pass);
* ``True``/``"flip"``: the image and its horizontal mirror (two passes);
* ``"crops"``: those two plus five crops covering 87.5% of each side (the
  centre and the four corners), each resized back to the input size with
  bilinear interpolation (seven passes);
* ``"rotations"``: the image, its horizontal and vertical mirrors and its
  quarter turns either way (five passes), for square inputs of pictures that
  have no "up" (textures, micrographs, aerial and medical images). The
  automatic recipe chooses it only when it measured that it helps.

The views are made from the batch at the model's input size, so every input
path (files, arrays, datasets) gets the same views.

A model can also carry its views inside it (:func:`with_views`, as the
automatic recipe returns them): it then averages them on every call, in
``predict``, on the command line and in every exported format, and ``tta=``
leaves it as it is (:func:`resolve_tta`), so views are never applied twice.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow as tf

from ..backbones.layers import CROP_FRACTION
from ..core._errors import InvalidArgumentError, InvalidArgumentTypeError

__all__ = [
    "CROP_FRACTION",
    "TTA_MODES",
    "VIEWS",
    "check_tta",
    "resolve_tta",
    "tta_probabilities",
    "tta_views",
    "view",
    "with_views",
    "without_views",
]

#: The ``tta=`` modes, cheapest first.
TTA_MODES = ("none", "flip", "crops", "rotations")

#: The symmetry views of an image, by name; ``"rotations"`` averages over all of them.
VIEWS = ("plain", "hflip", "vflip", "rot90", "rot270")


def check_tta(tta: Any) -> str:
    """Validate a ``tta=`` argument and return its mode (one of :data:`TTA_MODES`).

    Examples:
        >>> check_tta(True), check_tta(None), check_tta("crops")
        ('flip', 'none', 'crops')
    """
    if tta is None or tta is False:
        return "none"
    if tta is True:
        return "flip"
    if not isinstance(tta, str):
        raise InvalidArgumentTypeError(
            f"tta={tta!r} must be a bool or one of {', '.join(map(repr, TTA_MODES))}"
        )
    mode = tta.strip().lower()
    if mode not in TTA_MODES:
        raise InvalidArgumentError(
            f"tta={tta!r} is not a test-time augmentation; use one of "
            f"{', '.join(map(repr, TTA_MODES))} (or True for 'flip')"
        )
    return mode


def resolve_tta(model: Any, tta: Any) -> str:
    """The views to average outside ``model``: ``tta``'s mode for a model without views
    inside it; ``"none"`` for one that carries its own (:func:`with_views`), whose views
    run on every call.

    Raises:
        InvalidArgumentError: ``tta`` asks for other views than those the model carries.
    """
    from ..backbones.layers import built_in_views

    mode = check_tta(tta)
    inside = built_in_views(model)
    if inside == "none":
        return mode
    if mode in ("none", inside):
        return "none"
    raise InvalidArgumentError(
        f"tta={tta!r}: this model already averages its {inside!r} views inside it (they run "
        "on every prediction); leave tta unset, or predict with the model it wraps"
    )


def with_views(model: Any, mode: Any) -> Any:
    """``model`` with the test-time views of ``mode`` inside it: one Keras model, raw
    pixels in, the mean of ``model``'s probabilities over the views out.

    The views are stacked on the batch axis (:class:`xferclass.layers.TestTimeViews`),
    ``model`` runs once on the stack and :class:`xferclass.layers.ViewMean` averages
    them, so the model saves, loads and exports like any classifier and gives what
    ``predict(model, ..., tta=mode)`` gives. The class names, multi-label threshold
    and metadata of ``model``'s preprocessing layer are copied to the new model's
    first layer. ``mode`` ``"none"`` (or False) returns ``model`` itself.

    Raises:
        InvalidArgumentError: ``model`` already carries views, or ``mode`` is unknown.

    Examples:
        >>> import keras
        >>> from xferclass import Preprocessing
        >>> inputs = keras.Input((8, 8, 3))
        >>> x = Preprocessing("unit", class_names=["a", "b"])(inputs)
        >>> x = keras.layers.GlobalAveragePooling2D()(x)
        >>> model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(x))
        >>> wrapped = with_views(model, "flip")
        >>> wrapped.output_shape, [layer.name for layer in wrapped.layers][1:3]
        ((None, 2), ['preprocessing', 'test_time_views'])
    """
    import keras

    from ..backbones.layers import Preprocessing, TestTimeViews, ViewMean, built_in_views
    from ..backbones.layers import preprocessing_layer as find_preprocessing

    chosen = check_tta(mode)
    if chosen == "none":
        return model
    inside = built_in_views(model)
    if inside != "none":
        raise InvalidArgumentError(
            f"this model already averages its {inside!r} views; views are not applied twice"
        )
    first = find_preprocessing(model)
    inputs = keras.Input(tuple(model.input_shape[1:]), name="image")
    x = Preprocessing(
        "none", class_names=None if first is None else first.class_names,
        multi_label=False if first is None else first.multi_label,
        threshold=0.5 if first is None else first.threshold,
        metadata=None if first is None else first.metadata, name="preprocessing",
    )(inputs)  # fmt: skip
    views = TestTimeViews(chosen, name="test_time_views")
    probabilities = model(views(x))
    mean = ViewMean(len(views.views), name="view_mean", dtype="float32")(probabilities)
    return keras.Model(inputs, mean, name=f"{model.name}_{chosen}_views")


def without_views(model: Any) -> Any:
    """The classifier that a model made by :func:`with_views` runs on its views (the
    model itself when it carries none)."""
    import keras

    from ..backbones.layers import built_in_views

    if built_in_views(model) == "none":
        return model
    (inner,) = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    if len(inner.outputs) > 1:  # also gives its features to an unknown score
        return keras.Model(inner.inputs, inner.outputs[0], name=inner.name)
    return inner


def _crop_boxes(height: int, width: int) -> list[tuple[int, int, int, int]]:
    """``(top, left, crop height, crop width)`` of the centre and the four corner crops."""
    crop_h = max(1, round(height * CROP_FRACTION))
    crop_w = max(1, round(width * CROP_FRACTION))
    bottom, right = height - crop_h, width - crop_w
    corners = [(0, 0), (0, right), (bottom, 0), (bottom, right)]
    return [(bottom // 2, right // 2, crop_h, crop_w)] + [
        (top, left, crop_h, crop_w) for top, left in corners
    ]


def view(batch: tf.Tensor, name: str) -> tf.Tensor:
    """One of :data:`VIEWS` of a batch ``(n, height, width, channels)``.

    Examples:
        >>> import numpy as np
        >>> batch = np.arange(4.0).reshape(1, 2, 2, 1)
        >>> view(batch, "rot90")[0, :, :, 0].numpy().tolist()
        [[1.0, 3.0], [0.0, 2.0]]
    """
    batch = tf.convert_to_tensor(batch)
    if name == "plain":
        return batch
    if name == "hflip":
        return tf.reverse(batch, axis=[2])
    if name == "vflip":
        return tf.reverse(batch, axis=[1])
    if name in ("rot90", "rot270"):
        if batch.shape[1] != batch.shape[2]:
            raise InvalidArgumentError(
                f"a quarter turn needs square images; these are {batch.shape[1]}x{batch.shape[2]}"
            )
        return tf.image.rot90(batch, k=1 if name == "rot90" else 3)
    raise InvalidArgumentError(f"view {name!r} must be one of {', '.join(VIEWS)}")


def tta_views(images: Any, mode: str) -> list[tf.Tensor]:
    """The views of a batch that ``mode`` averages over, first the batch itself.

    Args:
        images: A batch ``(n, height, width, channels)`` at the model's input size.
        mode: One of :data:`TTA_MODES` (see :func:`check_tta`).

    Returns:
        A list of float32 batches of the same shape as ``images``.

    Examples:
        >>> import numpy as np
        >>> views = tta_views(np.zeros((2, 32, 32, 3)), "crops")
        >>> len(views), tuple(views[-1].shape)
        (7, (2, 32, 32, 3))
    """
    batch = tf.cast(tf.convert_to_tensor(images), tf.float32)
    views = [batch]
    if mode == "none":
        return views
    if mode == "rotations":
        return [view(batch, name) for name in VIEWS]
    views.append(view(batch, "hflip"))
    if mode == "crops":
        height, width = int(batch.shape[1]), int(batch.shape[2])
        for top, left, crop_h, crop_w in _crop_boxes(height, width):
            crop = batch[:, top : top + crop_h, left : left + crop_w]
            views.append(tf.image.resize(crop, (height, width), method="bilinear"))
    return views


def tta_probabilities(forward: Callable[[Any], Any], images: Any, mode: str) -> np.ndarray:
    """``forward``'s outputs on the views of ``images``, averaged (float64).

    Args:
        forward: One batch in, one batch of probabilities out.
        images: A batch at the model's input size.
        mode: One of :data:`TTA_MODES`.
    """
    if mode == "none":
        return np.asarray(forward(images), dtype=np.float64)
    outputs = [np.asarray(forward(view), dtype=np.float64) for view in tta_views(images, mode)]
    return np.mean(outputs, axis=0)
