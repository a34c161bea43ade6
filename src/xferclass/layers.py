"""Keras layers that xferclass puts inside its models.

They are registered as serializable, so a saved ``.keras`` model loads with
Keras's safe mode on once ``xferclass`` is imported; no Lambda layers are used.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from ._errors import InvalidArgumentError

__all__ = ["Preprocessing", "InferenceMode", "PREPROCESS_MODES", "preprocessing_layer"]

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
