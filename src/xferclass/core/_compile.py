"""What a model is trained with: optimizer, loss, metrics and class weights.

The user's ``compile`` wins: a compiled model keeps its optimizer, loss,
metrics and loss weights on every path (cached or not) and in every phase.
Keyword arguments of :func:`xferclass.fit` override single parts of it. A model
that is not compiled gets a loss and metrics that suit its output layer
(:func:`default_objective`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import keras
import numpy as np

from ._errors import DatasetError, InvalidArgumentError, InvalidArgumentTypeError
from ._log import logger

__all__ = [
    "CompileSpec",
    "CLASS_WEIGHT_KINDS",
    "balanced_class_weight",
    "balanced_class_weights",
    "default_objective",
    "phase_optimizer",
    "resolve_class_weight",
    "resolve_compile",
]

#: Learning rate of the optimizer made for a model that is not compiled.
DEFAULT_LEARNING_RATE = 1e-3


def default_objective(model: keras.Model) -> tuple[Any, list[str]]:
    """The loss and metrics that suit ``model``'s output layer.

    A sigmoid output (one independent probability per class: multi-label)
    trains with binary crossentropy and reports binary accuracy; a softmax
    output with categorical crossentropy and accuracy; a linear output (logits)
    with categorical crossentropy ``from_logits=True``.
    """
    activation = getattr(model.layers[-1], "activation", None)
    name = getattr(activation, "__name__", "")
    if name == "sigmoid":
        return "binary_crossentropy", ["binary_accuracy"]
    if name == "linear":
        return keras.losses.CategoricalCrossentropy(from_logits=True), ["accuracy"]
    return "categorical_crossentropy", ["accuracy"]


@dataclass(frozen=True)
class CompileSpec:
    """The arguments of ``compile`` that every trained (sub-)model receives."""

    optimizer: Any
    loss: Any
    metrics: Any
    loss_weights: Any = None
    weighted_metrics: Any = None
    jit_compile: Any = False
    steps_per_execution: int = 1
    run_eagerly: bool = False

    def compile(self, model: keras.Model, optimizer: Any = None) -> None:
        """Compile ``model`` with this spec (and ``optimizer`` instead of its own)."""
        model.compile(
            optimizer=optimizer if optimizer is not None else self.optimizer,
            loss=self.loss,
            metrics=self.metrics,
            loss_weights=self.loss_weights,
            weighted_metrics=self.weighted_metrics,
            jit_compile=self.jit_compile,
            steps_per_execution=self.steps_per_execution,
            run_eagerly=self.run_eagerly,
        )

    @property
    def metric_names(self) -> list[str]:
        """Names of the metrics as Keras logs them (strings and metric objects)."""
        names = []
        for metric in self.metrics or []:
            names.append(metric if isinstance(metric, str) else getattr(metric, "name", ""))
        return names


def _smoothed(loss: Any, label_smoothing: float) -> Any:
    """``loss`` with ``label_smoothing``, for the crossentropies that take it."""
    kinds = {
        "categorical_crossentropy": keras.losses.CategoricalCrossentropy,
        "binary_crossentropy": keras.losses.BinaryCrossentropy,
    }
    if isinstance(loss, str) and loss in kinds:
        return kinds[loss](label_smoothing=label_smoothing)
    if isinstance(loss, (keras.losses.CategoricalCrossentropy, keras.losses.BinaryCrossentropy)):
        return type(loss).from_config({**loss.get_config(), "label_smoothing": label_smoothing})
    raise InvalidArgumentError(
        f"label_smoothing={label_smoothing!r} applies to categorical or binary crossentropy, "
        f"but the loss is {loss!r}; set the smoothing on your own loss instead"
    )


def _make_optimizer(optimizer: Any, learning_rate: float | None) -> keras.optimizers.Optimizer:
    if optimizer is None:
        optimizer = keras.optimizers.Adam(learning_rate=learning_rate or DEFAULT_LEARNING_RATE)
        return optimizer
    if isinstance(optimizer, str):
        try:
            optimizer = keras.optimizers.get(optimizer)
        except ValueError as error:
            raise InvalidArgumentError(
                f"optimizer={optimizer!r} is not a Keras optimizer name ({error})"
            ) from error
    if not isinstance(optimizer, keras.optimizers.Optimizer):
        raise InvalidArgumentTypeError(
            f"optimizer must be a keras optimizer or its name; got {type(optimizer).__name__}"
        )
    if learning_rate is not None:
        _set_learning_rate(optimizer, learning_rate)
    return optimizer


def _set_learning_rate(optimizer: keras.optimizers.Optimizer, learning_rate: float) -> None:
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    if isinstance(inner._learning_rate, keras.optimizers.schedules.LearningRateSchedule):
        logger.warning(
            "learning_rate=%g is ignored: the optimizer follows a learning-rate schedule",
            learning_rate,
        )
        return
    inner.learning_rate = learning_rate


def resolve_compile(
    model: keras.Model,
    *,
    optimizer: Any = None,
    loss: Any = None,
    metrics: Any = None,
    label_smoothing: float | None = None,
    learning_rate: float | None = None,
    jit_compile: Any = None,
) -> CompileSpec:
    """What ``model`` trains with: its own compile, overridden by the keywords given.

    ``learning_rate`` on a compiled model is applied to its optimizer (and
    logged), never ignored silently. A compiled model keeps its own
    ``jit_compile`` and ``run_eagerly`` (as they are now on the model, set by
    ``compile`` or afterwards); ``jit_compile`` given here overrides the former.
    A model that is not compiled gets ``jit_compile`` (``None``: ``False``).
    """
    if label_smoothing is not None and not 0.0 <= float(label_smoothing) < 1.0:
        raise InvalidArgumentError(f"label_smoothing={label_smoothing!r} must be in [0, 1)")
    if model.compiled and model.optimizer is not None:
        config = dict(model._compile_config.config)
        spec = CompileSpec(
            optimizer=model.optimizer,
            loss=config.get("loss"),
            metrics=config.get("metrics"),
            loss_weights=config.get("loss_weights"),
            weighted_metrics=config.get("weighted_metrics"),
            jit_compile=model.jit_compile if jit_compile is None else jit_compile,
            steps_per_execution=config.get("steps_per_execution") or 1,
            run_eagerly=bool(model.run_eagerly),
        )
        if spec.loss is None:
            spec = replace(spec, loss=default_objective(model)[0])
        if optimizer is not None:
            spec = replace(spec, optimizer=_make_optimizer(optimizer, learning_rate))
        elif learning_rate is not None:
            logger.info(
                "applying learning_rate=%g to the model's compiled %s optimizer",
                learning_rate,
                type(model.optimizer).__name__,
            )
            _set_learning_rate(model.optimizer, learning_rate)
    else:
        default_loss, default_metrics = default_objective(model)
        spec = CompileSpec(
            optimizer=_make_optimizer(optimizer, learning_rate),
            loss=default_loss,
            metrics=default_metrics,
            jit_compile=False if jit_compile is None else jit_compile,
        )
    if loss is not None:
        spec = replace(spec, loss=loss)
    if metrics is not None:
        spec = replace(spec, metrics=list(metrics) if isinstance(metrics, tuple) else metrics)
    if label_smoothing:
        spec = replace(spec, loss=_smoothed(spec.loss, float(label_smoothing)))
    return spec


def phase_optimizer(base: keras.optimizers.Optimizer, learning_rate: float) -> Any:
    """A fresh optimizer configured like ``base``, at ``learning_rate``.

    Each phase of :func:`xferclass.fine_tune` trains different variables, so it
    gets its own optimizer (with fresh slot variables) of the user's kind and
    settings.
    """
    inner = getattr(base, "inner_optimizer", base)
    config = {**inner.get_config(), "learning_rate": float(learning_rate)}
    config.pop("name", None)
    return type(inner).from_config(config)


#: Kinds of :func:`balanced_class_weights`.
CLASS_WEIGHT_KINDS = ("none", "balanced", "sqrt")


def balanced_class_weights(counts: Any, kind: str = "balanced") -> dict[int, float]:
    """Per-class loss weights from the number of samples of each class.

    ``"balanced"`` is scikit-learn's ``compute_class_weight("balanced")``:
    ``n / (k * count)`` for ``n`` samples of ``k`` classes, whose mean over the
    samples is 1. ``"sqrt"`` is its square root, rescaled so that the mean
    weight over the samples is 1 again: halfway, on a log scale, between
    ``"none"`` (every weight 1) and ``"balanced"``. A class with no sample gets
    the weight of a class with one (its weight is never used in training;
    callers that need every class check the counts themselves).

    Args:
        counts: Samples per class (for multi-label data: positive samples per
            label), a sequence of ``k`` non-negative numbers.
        kind: ``"balanced"``, ``"sqrt"`` or ``"none"``.

    Returns:
        A dict from class index to weight, as Keras's ``class_weight`` takes it.

    Raises:
        InvalidArgumentError: ``kind`` is unknown, or the counts are not ``k``
            non-negative numbers with at least one sample.

    Examples:
        >>> balanced_class_weights([3, 1])
        {0: 0.6666666666666666, 1: 2.0}
    """
    if kind not in CLASS_WEIGHT_KINDS:
        raise InvalidArgumentError(
            f"class weight kind={kind!r} must be one of {CLASS_WEIGHT_KINDS}"
        )
    values = np.asarray(counts, dtype=np.float64)
    if values.ndim != 1 or not len(values) or (values < 0).any() or not values.sum() > 0:
        raise InvalidArgumentError(
            f"counts={counts!r} must be one non-negative count per class, not all 0"
        )
    n, k = float(values.sum()), len(values)
    if kind == "none":
        weights = np.ones(k)
    else:
        weights = n / (k * np.maximum(values, 1.0))
    if kind == "sqrt":
        weights = np.sqrt(weights)
        weights *= n / float(np.sum(values * weights))
    return {index: float(weight) for index, weight in enumerate(weights)}


def is_multi_hot(labels: Any) -> bool:
    """Whether label rows are multi-hot: some row does not sum to 1 (one class each)."""
    labels = np.asarray(labels, dtype=np.float64)
    return labels.ndim == 2 and not bool(np.isclose(labels.sum(axis=1), 1.0).all())


def multi_label_class_weight_error(class_weight: Any) -> InvalidArgumentError:
    """The error for a ``class_weight`` given with multi-label data."""
    return InvalidArgumentError(
        f"class_weight={class_weight!r} applies to single-label data, but the data or "
        "model is multi-label: Keras would weight each multi-hot row by its first "
        "positive label only. Weight the rows yourself instead: pass (images, labels, "
        "weights) batches"
    )


def balanced_class_weight(labels: np.ndarray, num_classes: int) -> dict[int, float]:
    """Class weights ``n_samples / (n_classes * count)``, as scikit-learn's ``"balanced"``.

    Args:
        labels: Integer labels, or one-hot rows.
        num_classes: Number of classes.

    Raises:
        DatasetError: A class has no training image (its weight would be infinite).
        InvalidArgumentError: The rows are multi-hot (multi-label data).
    """
    labels = np.asarray(labels)
    if is_multi_hot(labels):
        raise multi_label_class_weight_error("balanced")
    if labels.ndim == 2:
        labels = labels.argmax(axis=1)
    counts = np.bincount(labels.astype(np.int64), minlength=num_classes)
    missing = np.flatnonzero(counts == 0)
    if len(missing):
        raise DatasetError(
            f"class_weight='balanced' needs every class in the training data; classes "
            f"{missing.tolist()} have no image. Pass class_weight as a dict instead"
        )
    return balanced_class_weights(counts)


def resolve_class_weight(
    class_weight: Any, num_classes: int, labels: Any
) -> dict[int, float] | None:
    """A ``class_weight=`` argument as Keras takes it.

    Args:
        class_weight: ``None``, ``"balanced"``, or a dict from class index to weight.
        num_classes: Number of classes.
        labels: A function that returns the training labels (called for ``"balanced"``).
    """
    if class_weight is None:
        return None
    if isinstance(class_weight, str):
        if class_weight != "balanced":
            raise InvalidArgumentError(
                f"class_weight={class_weight!r} must be 'balanced', a dict or None"
            )
        return balanced_class_weight(labels(), num_classes)
    if not isinstance(class_weight, dict):
        raise InvalidArgumentTypeError(
            f"class_weight must be 'balanced', a dict of class index to weight, or None; "
            f"got {type(class_weight).__name__}"
        )
    wrong = [key for key in class_weight if not (isinstance(key, (int, np.integer)))]
    wrong += [key for key in class_weight if key not in wrong and not 0 <= key < num_classes]
    if wrong:
        raise InvalidArgumentError(
            f"class_weight has keys {wrong!r}; its keys must be class indices 0..{num_classes - 1}"
        )
    return {int(k): float(v) for k, v in class_weight.items()}
