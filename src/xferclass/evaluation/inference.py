"""``predict``: images in, class names and probabilities out."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Union

import keras
import numpy as np
import tensorflow as tf

from ..backbones.layers import unknown_layer, without_unknown
from ..core._args import verbosity
from ..core._errors import DatasetError, InvalidArgumentError
from ..data._decode import without_autotune
from ..data._pipeline import undecodable_error
from ..runtime._common import (
    check_image_size,
    classifier_forward,
    engine_used,
    model_class_names,
    model_multi_label,
)
from ._tta import resolve_tta, tta_probabilities
from .metrics import check_threshold

__all__ = ["predict", "Predictions"]

ImageInput = Union[str, "os.PathLike[str]", Sequence[Any], np.ndarray, tf.Tensor, tf.data.Dataset]


@dataclass(frozen=True)
class Predictions:
    """What :func:`predict` returns, one entry per image.

    Attributes:
        predicted_names: The predicted class name of each image (the class index
            as a string when no class names are known). ``labels`` is its
            deprecated spelling: on a dataset, ``labels`` are class indices.
        indices: The predicted class index of each image.
        confidences: The probability of the predicted class.
        probabilities: All class probabilities, shape ``(n, num_classes)``.
        class_names: The class names, in the model's output order.
        sources: The file paths, when the images were given as paths.
        label_sets: For a multi-label model, the classes of each image whose
            probability is at least ``threshold`` (possibly none), in class
            order; None for a single-label model.
        threshold: The threshold of ``label_sets``; None for a single-label model.
        engine: What computed the probabilities: ``"keras"``, ``"onnxruntime"``,
            ``"openvino"`` (float32), ``"openvino-bf16"`` (bfloat16) or
            ``"openvino-int8"`` (int8), which ``engine="auto"`` picks only where they
            gave float32's decisions on at least 99% of the first images.
        unknown_scores: With ``unknown=True``: each image's unknown score (higher
            is less like the training images); else None.
        unknown: With ``unknown=True``: whether each image's score is above the
            model's threshold; such an image's predicted name is None. Else None.
    """

    predicted_names: list[str | None]
    indices: np.ndarray
    confidences: np.ndarray
    probabilities: np.ndarray
    class_names: list[str]
    sources: list[str] | None = None
    label_sets: list[list[str]] | None = None
    threshold: float | None = None
    engine: str = "keras"
    unknown_scores: np.ndarray | None = None
    unknown: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.predicted_names)

    def __iter__(self) -> Iterator[tuple[str | None, float]]:
        return iter(zip(self.predicted_names, self.confidences.tolist()))

    @property
    def labels(self) -> list[str | None]:
        """Deprecated: ``predicted_names`` (a dataset's ``labels`` are class indices)."""
        warnings.warn(
            "Predictions.labels is deprecated: use Predictions.predicted_names (the "
            "predicted class name of each image)",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.predicted_names

    def top(self, k: int = 3) -> list[list[tuple[str, float]]]:
        """The ``k`` most probable classes of each image, with their probabilities."""
        order = np.argsort(-self.probabilities, axis=1)[:, :k]
        return [
            [(self.class_names[j], float(row[j])) for j in idx]
            for idx, row in zip(order, self.probabilities)
        ]


def _input_size(model: keras.Model) -> tuple[int, int]:
    shape = model.input_shape
    if len(shape) != 4 or shape[1] is None or shape[2] is None:
        raise InvalidArgumentError(f"model input shape {shape} is not (batch, height, width, 3)")
    return int(shape[1]), int(shape[2])


def _is_path(value: Any) -> bool:
    return isinstance(value, (str, os.PathLike))


def _image_batches(
    images: Any, size: tuple[int, int], batch_size: int, max_pixels: int | None = None
) -> tuple[tf.data.Dataset, list[str] | None]:
    from ..data import image_paths_dataset

    if isinstance(images, tf.data.Dataset):
        spec = images.element_spec
        dataset = images.map(lambda x, *rest: x) if isinstance(spec, tuple) else images
        if dataset.element_spec.shape.rank == 3:
            dataset = dataset.batch(batch_size)
        dataset = dataset.map(lambda x: tf.image.resize(tf.cast(x, tf.float32), size))
        return dataset, None
    if _is_path(images):
        images = [images]
    if isinstance(images, (list, tuple)) and images and all(_is_path(p) for p in images):
        paths = [os.fspath(p) for p in images]
        dataset = image_paths_dataset(paths, size, batch_size=batch_size, max_pixels=max_pixels)
        return dataset, paths
    if isinstance(images, (list, tuple)) and not images:
        raise DatasetError("images is empty: pass file paths, an array or a dataset")
    array = np.asarray(images)
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4 or array.shape[-1] not in (1, 3, 4):
        raise DatasetError(
            f"images has shape {array.shape}; pass (height, width, 3) for one image or "
            "(n, height, width, 3) for a batch, or file paths"
        )
    tensor = tf.convert_to_tensor(array)
    if array.shape[-1] == 1:
        tensor = tf.image.grayscale_to_rgb(tensor)
    elif array.shape[-1] == 4:
        tensor = tensor[..., :3]
    dataset = tf.data.Dataset.from_tensor_slices(tf.cast(tensor, tf.float32)).batch(batch_size)
    if tuple(array.shape[1:3]) != size:
        dataset = dataset.map(
            lambda x: tf.image.resize(x, size), num_parallel_calls=tf.data.AUTOTUNE
        )
    return dataset, None


def predict(
    model: keras.Model,
    images: ImageInput,
    class_names: Sequence[str] | None = None,
    *,
    batch_size: int = 32,
    verbose: int | str = 0,
    threshold: float | None = None,
    max_pixels: int | None = None,
    tta: bool | str = False,
    engine: str = "auto",
    unknown: bool = False,
) -> Predictions:
    """Classify images with a trained model.

    Images go through exactly the same steps as in training: files are decoded,
    converted to RGB and resized by the same function that
    :func:`xferclass.load_image_dataset` uses, and the model's own
    preprocessing layer does the rest. Arrays are taken as RGB pixels in
    [0, 255] and resized to the model's input size when they differ.

    Args:
        model: A classifier, e.g. from :func:`build_classifier` or
            ``keras.models.load_model``.
        images: A file path, a list of paths, one image array ``(h, w, 3)``, a
            batch ``(n, h, w, 3)``, or a tf.data.Dataset of images or of
            ``(images, labels)`` batches.
        class_names: Names of the model's classes; defaults to the names
            stored in the model by :func:`xferclass.fit`.
        batch_size: Images per forward pass.
        verbose: 0 (the default) is silent; 1, 2 or ``"auto"`` show a progress
            bar. The same values as :func:`xferclass.fit`'s ``verbose``.
        threshold: For a multi-label model, the probability from which a class
            is in an image's ``label_sets``; by default the one stored in the
            model (0.5 unless it was built with another).
        max_pixels: The most pixels (width x height) an image file may have. Its
            header is read first and a larger image is an error, never decoded,
            so that one small file claiming 40000 x 40000 pixels cannot exhaust
            memory. None: ``XFERCLASS_MAX_PIXELS`` when set, else Pillow's
            limit (178,956,970).
        tta: Test-time augmentation: ``True`` or ``"flip"`` averages the
            probabilities of each image and its horizontal mirror;
            ``"crops"`` adds the centre and four corner crops (87.5% of each
            side, resized back); ``"rotations"`` averages the image, its two
            mirrors and its two quarter turns (square inputs only); ``False``
            (the default) predicts each image once. Costs one forward pass per
            view (2, 7 or 5).
        engine: Runtime of the forward pass: ``"auto"`` (the faster of Keras
            and an installed ONNX runtime, measured on the first batches; Keras
            for a few batches, on a GPU or when the model does not convert),
            ``"keras"``, ``"onnxruntime"`` or ``"openvino"`` (see the
            Performance page). The probabilities agree within 1e-4.
        unknown: Mark images unlike the training images as unknown, with a model
            from :func:`xferclass.detect_unknown`: their predicted name is None and
            every image gets an unknown score. The pass runs on Keras, without
            ``tta`` (the threshold was measured without outside views).

    Returns:
        A :class:`Predictions` with predicted_names, indices, confidences and
        probabilities, for a multi-label model the ``label_sets``, and with
        ``unknown`` the unknown scores and decisions.

    Raises:
        DatasetError: An image cannot be read or is larger than ``max_pixels``
            (the message names the file and its size), or the number of class
            names differs from the model's output size.
        InvalidArgumentError: ``tta`` is not a known mode; or ``unknown`` is set for
            a model without an unknown score, with ``tta`` or with a runtime engine.
        MissingDependencyError: ``engine`` names a runtime that is not installed.

    Examples:
        >>> result = predict(model, ["shoe.jpg", "hat.png"])  # doctest: +SKIP
        >>> result.predicted_names  # doctest: +SKIP
        ['shoes', 'hat']
        >>> predict(tagger, ["outfit.jpg"]).label_sets  # doctest: +SKIP
        [['blue', 'shirt']]
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidArgumentError(f"batch_size={batch_size!r} must be a positive int")
    scorer = _unknown_scorer(model, unknown, tta, engine)
    model = without_unknown(model)
    tta_mode = resolve_tta(model, tta)
    outputs = int(model.output_shape[-1])
    names = list(class_names) if class_names is not None else model_class_names(model)
    if names is None:
        names = [str(i) for i in range(outputs)]
    if len(names) != outputs:
        raise DatasetError(
            f"class_names has {len(names)} names but the model outputs {outputs} classes"
        )
    if isinstance(images, tf.data.Dataset):
        check_image_size(model, images, "images")  # arrays and files are resized, not datasets
    multi_label, stored = model_multi_label(model)
    cut = stored if threshold is None else check_threshold(threshold)
    dataset, sources = _image_batches(images, _input_size(model), batch_size, max_pixels)
    steps = int(dataset.cardinality())
    if scorer is None:
        forward = classifier_forward(model, engine=engine, steps=steps if steps > 0 else None)
    else:
        forward = _ScoredForward(scorer)
    progress = keras.utils.Progbar(steps if steps > 0 else None, verbose=verbosity(verbose))
    chunks = []
    try:
        batches = without_autotune(dataset.prefetch(tf.data.AUTOTUNE))
        for step, batch in enumerate(batches, start=1):
            chunks.append(tta_probabilities(forward, batch, tta_mode).astype(np.float32))
            progress.update(step)
    except tf.errors.InvalidArgumentError as error:
        found = None if sources is None else undecodable_error(error, sources, max_pixels)
        if found is None:
            raise
        raise found from None
    if not chunks:
        raise DatasetError("images is empty: there is nothing to predict")
    probabilities = np.concatenate(chunks)
    indices = np.argmax(probabilities, axis=1)
    scores = rejected = None
    predicted: list[str | None] = [names[i] for i in indices]
    if isinstance(forward, _ScoredForward):
        scores = np.concatenate(forward.scores).astype(np.float32)
        rejected = scores > forward.threshold
        predicted = [None if out else name for name, out in zip(predicted, rejected)]
    return Predictions(
        predicted_names=predicted,
        indices=indices,
        confidences=probabilities[np.arange(len(indices)), indices],
        probabilities=probabilities,
        class_names=names,
        sources=sources,
        label_sets=(
            [[names[j] for j in np.flatnonzero(row >= cut)] for row in probabilities]
            if multi_label
            else None
        ),
        threshold=cut if multi_label else None,
        engine=engine_used(forward),
        unknown_scores=scores,
        unknown=rejected,
    )


class _ScoredForward:
    """A two-output model's pass on Keras: probabilities returned, scores kept."""

    engine = "keras"

    def __init__(self, model: keras.Model) -> None:
        self.model = model
        self.scores: list[np.ndarray] = []
        self.threshold = float(unknown_layer(model).threshold)  # type: ignore[union-attr]

    def __call__(self, images: Any) -> np.ndarray:
        probabilities, scores = self.model.predict_on_batch(np.asarray(images))
        self.scores.append(np.asarray(scores).reshape(-1))
        return np.asarray(probabilities)


def _unknown_scorer(model: keras.Model, unknown: Any, tta: Any, engine: str) -> keras.Model | None:
    """The two-output model to run when ``unknown`` asks for scores, else None."""
    if not isinstance(unknown, bool):
        raise InvalidArgumentError(f"unknown={unknown!r} must be True or False")
    if not unknown:
        return None
    if unknown_layer(model) is None:
        raise InvalidArgumentError(
            "unknown=True needs a model with an unknown score: make one with "
            "xferclass.detect_unknown(model, training_images, held_out=validation_images)"
        )
    if tta not in (False, None, "none"):
        raise InvalidArgumentError(
            f"unknown=True takes no tta (got {tta!r}): the unknown threshold was measured "
            "on the model's own outputs, without outside views"
        )
    if engine not in ("auto", "keras"):
        raise InvalidArgumentError(
            f"unknown=True runs on Keras: engine={engine!r} is not supported with it"
        )
    return model
