"""Keras layers that xferclass puts inside its models.

They are registered as serializable, so a saved ``.keras`` model loads with
Keras's safe mode on once ``xferclass`` is imported; no Lambda layers are used.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from ..core._errors import InvalidArgumentError

__all__ = [
    "PREPROCESS_MODES",
    "InferenceMode",
    "PooledTaps",
    "Preprocessing",
    "Temperature",
    "TestTimeViews",
    "UnknownScore",
    "ViewMean",
    "built_in_views",
    "model_temperature",
    "preprocessing_layer",
    "refuse_unknown",
    "unknown_layer",
    "without_unknown",
]

#: The test-time view modes a model can carry inside it, and the views each stacks.
VIEW_MODES = {
    "flip": ("plain", "hflip"),
    "rotations": ("plain", "hflip", "vflip", "rot90", "rot270"),
    "crops": ("plain", "hflip", "crop_centre", "crop_tl", "crop_tr", "crop_bl", "crop_br"),
}

#: Fraction of each side that a crop view keeps.
CROP_FRACTION = 0.875

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)

#: What each mode does to raw RGB pixels ``x`` in [0, 255].
PREPROCESS_MODES = {
    "tf": "x / 127.5 - 1, to [-1, 1] (Xception, Inception, ResNet v2, MobileNet v2)",
    "torch": "(x / 255 - ImageNet mean) / ImageNet std (DenseNet)",
    "caffe": "RGB to BGR, minus the ImageNet BGR mean (ResNet50, VGG)",
    "unit": "x / 255, to [0, 1]",
    "none": "unchanged; the backbone rescales inside itself (EfficientNet, ConvNeXt)",
}


@keras.saving.register_keras_serializable(package="xferclass")
class Preprocessing(keras.layers.Layer):
    """Turns raw RGB pixels in [0, 255] into what a backbone expects.

    It is the first layer of every model that :func:`xferclass.build_classifier`
    makes, so a saved model is always fed raw pixels.

    Args:
        mode: One of :data:`PREPROCESS_MODES`.
        class_names: The class names of the model's outputs, in order. They do
            not change the computation; they travel with the saved model so
            that :func:`xferclass.predict` and the command line can name the
            predicted classes. :func:`xferclass.fit` fills them in from the
            training data.
        multi_label: Whether the model's outputs are independent per-class
            probabilities (sigmoid) rather than one distribution (softmax).
        threshold: For a multi-label model, the probability from which a
            class counts as present.
        metadata: JSON-ready data about how the model was made (for example
            the report of :func:`xferclass.train_auto`); saved with the model.

    Examples:
        >>> import numpy as np
        >>> from xferclass import Preprocessing
        >>> Preprocessing("tf")(np.array([[0.0, 127.5, 255.0]])).numpy().tolist()
        [[-1.0, 0.0, 1.0]]
    """

    def __init__(
        self,
        mode: str = "tf",
        class_names: list[str] | None = None,
        multi_label: bool = False,
        threshold: float = 0.5,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if mode not in PREPROCESS_MODES:
            raise InvalidArgumentError(
                f"Preprocessing: mode={mode!r} is not one of {sorted(PREPROCESS_MODES)}"
            )
        self.mode = mode
        self.class_names = list(class_names) if class_names is not None else None
        self.multi_label = bool(multi_label)
        self.threshold = float(threshold)
        self.metadata = dict(metadata) if metadata else None

    def call(self, inputs: Any) -> Any:
        x = ops.cast(inputs, self.compute_dtype)
        if self.mode == "tf":
            return x / 127.5 - 1.0
        if self.mode == "unit":
            return x / 255.0
        if self.mode == "torch":
            mean = ops.convert_to_tensor(_IMAGENET_MEAN, dtype=self.compute_dtype)
            std = ops.convert_to_tensor(_IMAGENET_STD, dtype=self.compute_dtype)
            return (x / 255.0 - mean) / std
        if self.mode == "caffe":
            mean = ops.convert_to_tensor(_CAFFE_MEAN_BGR, dtype=self.compute_dtype)
            return ops.flip(x, axis=-1) - mean
        return x

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["mode"] = self.mode
        config["class_names"] = self.class_names
        if self.multi_label:  # single-label configs stay as they were
            config["multi_label"] = True
            config["threshold"] = self.threshold
        if self.metadata:
            config["metadata"] = self.metadata
        return config


def preprocessing_layer(model: Any) -> Preprocessing | None:
    """``model``'s :class:`Preprocessing` layer (which carries its class names,
    multi-label threshold and metadata), or ``None`` when it has none.

    Examples:
        >>> import keras
        >>> inputs = keras.Input((4,))
        >>> model = keras.Model(inputs, Preprocessing("unit", class_names=["a"])(inputs))
        >>> preprocessing_layer(model).class_names
        ['a']
        >>> preprocessing_layer(keras.Sequential([keras.layers.Dense(2)])) is None
        True
    """
    for layer in getattr(model, "layers", []):
        if isinstance(layer, Preprocessing):
            return layer
    return None


@keras.saving.register_keras_serializable(package="xferclass")
class InferenceMode(keras.layers.Wrapper):
    """Runs the wrapped layer (a backbone) in inference mode, always.

    Keras 3 passes the outer ``training`` flag down to nested models, even to a
    call made with ``training=False`` when the graph was built. A backbone's
    BatchNormalization and Dropout layers must not switch to training mode when
    the head trains or when the top of the backbone is fine-tuned, so
    :func:`xferclass.build_classifier` wraps the backbone in this layer, which
    takes no ``training`` argument and calls the backbone with
    ``training=False``. Gradients still flow: the wrapped weights train whenever
    they are trainable.

    Args:
        layer: The layer or model to wrap.
    """

    def call(self, inputs: Any) -> Any:
        return self.layer(inputs, training=False)

    def build(self, input_shape: Any = None) -> None:
        if not self.layer.built:
            self.layer.build(input_shape)
        self.built = True

    def compute_output_shape(self, input_shape: Any) -> Any:
        return self.layer.compute_output_shape(input_shape)


@keras.saving.register_keras_serializable(package="xferclass")
class PooledTaps(keras.layers.Layer):
    """Average-pools each of several feature maps and concatenates the results.

    The pooling of :func:`xferclass.build_classifier`'s ``taps=True``: the backbone
    returns the outputs of its blocks, shallowest first, then its last layer; each is
    averaged over its height and width, and the columns follow in that order, so the
    last layer's features are the last columns.
    """

    def call(self, inputs: Any) -> Any:
        return ops.concatenate([ops.mean(x, axis=(1, 2)) for x in inputs], axis=-1)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return (input_shape[0][0], sum(int(shape[-1]) for shape in input_shape))


def _crop(x: Any, where: str) -> Any:
    """A crop of :data:`CROP_FRACTION` of each side of ``x`` (n, h, w, c), resized back."""
    height, width = int(x.shape[1]), int(x.shape[2])
    crop_h = max(1, round(height * CROP_FRACTION))
    crop_w = max(1, round(width * CROP_FRACTION))
    bottom, right = height - crop_h, width - crop_w
    top, left = {"crop_centre": (bottom // 2, right // 2), "crop_tl": (0, 0),
                 "crop_tr": (0, right), "crop_bl": (bottom, 0),
                 "crop_br": (bottom, right)}[where]  # fmt: skip
    part = x[:, top : top + crop_h, left : left + crop_w, :]
    return ops.image.resize(part, (height, width), interpolation="bilinear")


def _view(x: Any, name: str) -> Any:
    if name == "plain":
        return x
    if name == "hflip":
        return ops.flip(x, axis=2)
    if name == "vflip":
        return ops.flip(x, axis=1)
    if name == "rot90":  # a quarter turn anticlockwise, as tf.image.rot90(k=1)
        return ops.flip(ops.transpose(x, (0, 2, 1, 3)), axis=1)
    if name == "rot270":
        return ops.flip(ops.transpose(x, (0, 2, 1, 3)), axis=2)
    return _crop(x, name)


@keras.saving.register_keras_serializable(package="xferclass")
class TestTimeViews(keras.layers.Layer):
    """Stacks the test-time views of a batch along the batch axis.

    A batch ``(n, h, w, c)`` becomes ``(views * n, h, w, c)``: all the first
    views, then all the second, and so on. The classifier after it runs once on
    the stack, and :class:`ViewMean` averages its probabilities back to ``n``
    rows. The automatic recipe puts the views it measured inside the model it
    returns this way, so ``predict``, the command line and every export format
    average the same views with no flag.

    Args:
        mode: ``"flip"`` (the image and its mirror), ``"rotations"`` (the image,
            both mirrors and both quarter turns; square inputs) or ``"crops"``
            (the image, its mirror and five crops of 87.5 % of each side).

    Examples:
        >>> import numpy as np
        >>> batch = np.arange(4.0).reshape(1, 2, 2, 1)
        >>> views = TestTimeViews("rotations")(batch).numpy()
        >>> views.shape, views[3, :, :, 0].tolist()
        ((5, 2, 2, 1), [[1.0, 3.0], [0.0, 2.0]])
    """

    __test__ = False  # not a pytest test class, whatever its name

    def __init__(self, mode: str = "flip", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if mode not in VIEW_MODES:
            raise InvalidArgumentError(
                f"TestTimeViews: mode={mode!r} is not one of {', '.join(VIEW_MODES)}"
            )
        self.mode = mode

    @property
    def views(self) -> tuple[str, ...]:
        """The names of the views, in the order they are stacked."""
        return VIEW_MODES[self.mode]

    def build(self, input_shape: Any) -> None:
        if self.mode == "rotations" and input_shape[1] != input_shape[2]:
            raise InvalidArgumentError(
                f"TestTimeViews('rotations') needs square images; these are "
                f"{input_shape[1]}x{input_shape[2]}"
            )
        self.built = True

    def call(self, inputs: Any) -> Any:
        return ops.concatenate([_view(inputs, name) for name in self.views], axis=0)

    def compute_output_shape(self, input_shape: Any) -> Any:
        batch = input_shape[0]
        count = len(self.views)
        return (None if batch is None else batch * count, *input_shape[1:])

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "mode": self.mode}


@keras.saving.register_keras_serializable(package="xferclass")
class ViewMean(keras.layers.Layer):
    """The mean over ``views`` stacked blocks of rows: ``(views * n, k)`` to ``(n, k)``.

    Args:
        views: How many views :class:`TestTimeViews` stacked.

    Examples:
        >>> import numpy as np
        >>> ViewMean(2)(np.array([[0.0, 1.0], [0.5, 0.5]])).numpy().tolist()
        [[0.25, 0.75]]
    """

    def __init__(self, views: int = 2, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if isinstance(views, bool) or not isinstance(views, int) or views < 1:
            raise InvalidArgumentError(f"ViewMean: views={views!r} must be a positive int")
        self.views = views

    def call(self, inputs: Any) -> Any:
        rows = ops.reshape(inputs, (self.views, -1, *inputs.shape[1:]))
        return ops.mean(rows, axis=0)

    def compute_output_shape(self, input_shape: Any) -> Any:
        batch = input_shape[0]
        return (None if batch is None else batch // self.views, *input_shape[1:])

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "views": self.views}


@keras.saving.register_keras_serializable(package="xferclass")
class Temperature(keras.layers.Layer):
    """Class probabilities at a temperature: ``softmax(log(p) / temperature)`` per row.

    For a softmax output that is ``softmax(logits / temperature)``: temperature scaling,
    which :func:`xferclass.evaluation.calibration.choose_temperature` fits on images the
    model did not train on. It keeps the order of the classes, so the top class is
    unchanged. Probabilities are floored at 1e-12 before the logarithm.

    Args:
        temperature: A positive number; above 1 softens, below 1 sharpens.

    Examples:
        >>> import numpy as np
        >>> Temperature(2.0)(np.array([[0.9, 0.1]])).numpy().round(4).tolist()
        [[0.75, 0.25]]
    """

    def __init__(self, temperature: float = 1.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if isinstance(temperature, bool) or not float(temperature) > 0:
            raise InvalidArgumentError(
                f"Temperature: temperature={temperature!r} must be a positive number"
            )
        self.temperature = float(temperature)

    def call(self, inputs: Any) -> Any:
        logits = ops.log(ops.maximum(ops.cast(inputs, "float32"), 1e-12))
        return ops.softmax(logits / self.temperature, axis=-1)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "temperature": self.temperature}


def model_temperature(model: Any) -> float | None:
    """The temperature of a model's :class:`Temperature` layer (at its top level), or
    None when it has none.

    Examples:
        >>> import keras
        >>> model_temperature(keras.Sequential([keras.layers.Dense(2)])) is None
        True
    """
    for layer in getattr(model, "layers", []):
        if isinstance(layer, Temperature):
            return layer.temperature
    return None


def built_in_views(model: Any) -> str:
    """The test-time view mode a model averages inside itself (:class:`TestTimeViews`,
    at its top level), or ``"none"``.

    Examples:
        >>> import keras
        >>> built_in_views(keras.Sequential([keras.layers.Dense(2)]))
        'none'
    """
    for layer in getattr(model, "layers", []):
        if isinstance(layer, TestTimeViews):
            return layer.mode
    return "none"


#: The unknown scores :class:`UnknownScore` computes.
UNKNOWN_KINDS = {
    "max_softmax": "1 - the top class probability (Hendrycks and Gimpel, 2017)",
    "knn": "1 - the cosine similarity of the pooled features to their k-th nearest "
    "training image's (Sun et al., 2022)",
}


@keras.saving.register_keras_serializable(package="xferclass")
class UnknownScore(keras.layers.Layer):
    """How unlike the training images an image is: 0 for the most familiar, higher for
    stranger ones; an image is *unknown* when its score is above ``threshold``.

    ``"max_softmax"`` reads the class probabilities: ``1 - max(p)``. ``"knn"`` reads the
    pooled backbone features: each row is scaled to unit length and the score is
    ``1 - `` its cosine similarity to the ``k``-th most similar of ``references``
    (normalized features of training images, stored in the layer's weights and so in the
    saved model and its exports). :func:`xferclass.detect_unknown` chooses the kind, ``k``
    and the threshold on held-out images.

    Args:
        kind: ``"max_softmax"`` or ``"knn"`` (see :data:`UNKNOWN_KINDS`).
        threshold: Scores above it are unknown.
        k: For ``"knn"``: which nearest reference.
        references: For ``"knn"``: how many reference rows the layer holds.
        width: For ``"knn"``: the width of the features.
        measured: What :func:`xferclass.detect_unknown` measured (kept in the config).

    Examples:
        >>> import numpy as np
        >>> UnknownScore("max_softmax", 0.5)(np.array([[0.9, 0.1], [0.4, 0.6]])).numpy().round(3)
        array([0.1, 0.4], dtype=float32)
    """

    def __init__(
        self,
        kind: str = "max_softmax",
        threshold: float = 1.0,
        *,
        k: int = 1,
        references: int = 0,
        width: int = 0,
        measured: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if kind not in UNKNOWN_KINDS:
            raise InvalidArgumentError(
                f"UnknownScore: kind={kind!r} must be one of {', '.join(UNKNOWN_KINDS)}"
            )
        if kind == "knn" and not 1 <= int(k) <= int(references):
            raise InvalidArgumentError(
                f"UnknownScore: k={k!r} must lie in 1..references ({references})"
            )
        self.kind, self.threshold, self.k = kind, float(threshold), int(k)
        self.measured = dict(measured or {})
        self.references = None
        if kind == "knn":
            self.references = self.add_weight(
                shape=(int(references), int(width)), initializer="zeros",
                trainable=False, name="references", dtype="float32",
            )  # fmt: skip

    def call(self, inputs: Any) -> Any:
        x = ops.cast(inputs, "float32")
        if self.kind == "max_softmax":
            return 1.0 - ops.max(x, axis=-1)
        x = x / ops.maximum(ops.sqrt(ops.sum(x * x, axis=-1, keepdims=True)), 1e-12)
        similarity = ops.matmul(x, ops.transpose(self.references))
        nearest, _ = ops.top_k(similarity, self.k)
        return 1.0 - nearest[:, self.k - 1]

    def compute_output_shape(self, input_shape: Any) -> Any:
        return (input_shape[0],)

    def get_config(self) -> dict[str, Any]:
        width = 0 if self.references is None else int(self.references.shape[1])
        return {
            **super().get_config(),
            "kind": self.kind,
            "threshold": self.threshold,
            "k": self.k,
            "references": 0 if self.references is None else int(self.references.shape[0]),
            "width": width,
            "measured": self.measured,
        }


def unknown_layer(model: Any) -> UnknownScore | None:
    """The :class:`UnknownScore` layer of a model from :func:`xferclass.detect_unknown`
    (its second output), or None.

    Examples:
        >>> import keras
        >>> unknown_layer(keras.Sequential([keras.layers.Dense(2)])) is None
        True
    """
    outputs = getattr(model, "outputs", None) or []
    if len(outputs) != 2:
        return None
    for layer in getattr(model, "layers", []):
        if isinstance(layer, UnknownScore):
            return layer
    return None


def refuse_unknown(model: Any, what: str) -> None:
    """Refuse to change a model that carries an unknown score: its references and
    threshold were measured on the classifier as it is.

    Raises:
        InvalidArgumentError: The model has an :class:`UnknownScore`.
    """
    if unknown_layer(model) is not None:
        raise InvalidArgumentError(
            f"the model carries an unknown score, measured on the classifier as it is: "
            f"{what} would leave it stale. Change the classifier "
            "(xferclass.layers.without_unknown(model)), then call xferclass.detect_unknown again"
        )


def without_unknown(model: Any) -> Any:
    """``model`` with class probabilities as its only output: a model from
    :func:`xferclass.detect_unknown` without its unknown score (the same layers and
    weights), any other model as it is."""
    if unknown_layer(model) is None:
        return model
    return keras.Model(model.inputs, model.outputs[0], name=model.name)
