"""Evaluation of a classifier with regression-style error measures.

For ``n`` samples and ``k`` classes, let ``Y`` be the one-hot labels and ``P``
the predicted class probabilities, both ``n x k``:

* ``mae  = mean(|Y - P|)`` over all ``n * k`` entries;
* ``mse  = mean((Y - P) ** 2)``; ``k * mse`` is the multi-class Brier score;
* ``rmse = sqrt(mse)``;
* ``r2   = mean over classes j of 1 - sum_i (Y_ij - P_ij)^2 / sum_i (Y_ij - mean_i Y_ij)^2``.

These equal scikit-learn's ``mean_absolute_error(Y, P)``,
``mean_squared_error(Y, P)``, its square root and ``r2_score(Y, P)`` with their
default (uniform) averaging, including scikit-learn's rule for a class whose
labels are constant: it scores 1 when predicted exactly, else 0.

They hold unchanged for multi-hot labels (multi-label models, whose sigmoid
outputs are one probability per class). For those, :func:`multilabel_metrics`
adds micro- and macro-averaged F1 at a threshold and the mean average
precision, equal to scikit-learn's ``f1_score(average="micro"/"macro")`` and
``average_precision_score(average="macro")``. :func:`per_class_report` gives
precision, recall, F1 and support per class, the same dict as scikit-learn's
``classification_report(output_dict=True)``. Where scikit-learn warns about a
division by zero (a class never predicted, or without examples), the value is 0,
as scikit-learn returns then.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf

from ..backbones.layers import without_unknown
from ..core._args import verbosity
from ..core._errors import InvalidArgumentError
from ..data._decode import without_autotune
from ..data._facts import class_names_of
from ..runtime._common import (
    check_class_count,
    check_image_size,
    check_stored_class_names,
    classifier_forward,
    model_class_names,
    model_multi_label,
    require_dataset,
)
from ._tta import resolve_tta, tta_probabilities

__all__ = [
    "calibration_metrics",
    "evaluate_regression_style",
    "collect_predictions",
    "multilabel_metrics",
    "per_class_report",
    "regression_metrics",
]


def collect_predictions(
    model: keras.Model,
    dataset: tf.data.Dataset,
    *,
    verbose: int | str = 0,
    tta: bool | str = False,
    engine: str = "auto",
) -> tuple[np.ndarray, np.ndarray]:
    """Run ``model`` over every batch of ``dataset`` once.

    Labels and predictions come from the same pass, so a dataset that reshuffles
    every epoch still pairs each prediction with its own label. ``tta``
    averages each batch's probabilities over its mirrored (and cropped) views,
    as in :func:`xferclass.predict`.

    Returns:
        ``(labels, probabilities)``, two float arrays of shape ``(n, k)``.

    Raises:
        DatasetError: The dataset's class count differs from the model's, or its
            class names are the model's stored ones in another order (the
            message names both orders).
    """
    model = without_unknown(model)
    tta_mode = resolve_tta(model, tta)
    dataset = require_dataset(dataset, "dataset")
    check_class_count(model, dataset, "dataset")
    check_stored_class_names(model, class_names_of(dataset), "dataset")
    check_image_size(model, dataset, "dataset")
    labels: list[np.ndarray] = []
    probabilities: list[np.ndarray] = []
    steps = int(dataset.cardinality())
    forward = classifier_forward(model, engine=engine, steps=steps if steps > 0 else None)
    progress = keras.utils.Progbar(steps if steps > 0 else None, verbose=verbosity(verbose))
    batches = without_autotune(dataset.map(lambda x, y, *rest: (x, y)).prefetch(tf.data.AUTOTUNE))
    for step, (x, y) in enumerate(batches, start=1):
        probabilities.append(tta_probabilities(forward, x, tta_mode))
        labels.append(np.asarray(y, dtype=np.float64))
        progress.update(step)
    if not labels:
        from ..core._errors import DatasetError

        raise DatasetError("dataset is empty: there is nothing to evaluate")
    return np.concatenate(labels), np.concatenate(probabilities)


def regression_metrics(labels: Any, probabilities: Any) -> dict[str, float]:
    """MAE, MSE, RMSE, R² and accuracy between one-hot labels and probabilities.

    Args:
        labels: One-hot labels, shape ``(n, k)``.
        probabilities: Predicted probabilities, shape ``(n, k)``.

    Returns:
        A dict with ``mae``, ``mse``, ``rmse``, ``r2``, ``accuracy`` and ``n``.

    Examples:
        >>> import numpy as np
        >>> from xferclass.metrics import regression_metrics
        >>> y = np.array([[1, 0], [0, 1]])
        >>> p = np.array([[0.8, 0.2], [0.4, 0.6]])
        >>> {k: round(v, 3) for k, v in regression_metrics(y, p).items()}
        {'mae': 0.3, 'mse': 0.1, 'rmse': 0.316, 'r2': 0.6, 'accuracy': 1.0, 'n': 2}
    """
    y, p = _pair(labels, probabilities)
    error = y - p
    mse = float(np.mean(error**2))
    residual = np.sum(error**2, axis=0)
    total = np.sum((y - y.mean(axis=0)) ** 2, axis=0)
    constant = total == 0
    per_class = np.where(
        constant,
        np.where(residual == 0, 1.0, 0.0),
        1.0 - residual / np.where(constant, 1.0, total),
    )
    return {
        "mae": float(np.mean(np.abs(error))),
        "mse": mse,
        "rmse": float(np.sqrt(mse)),
        "r2": float(np.mean(per_class)),
        "accuracy": float(np.mean(np.argmax(y, axis=1) == np.argmax(p, axis=1))),
        "n": int(y.shape[0]),
    }


def _pair(labels: Any, probabilities: Any) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels, dtype=np.float64)
    p = np.asarray(probabilities, dtype=np.float64)
    if y.shape != p.shape or y.ndim != 2:
        raise InvalidArgumentError(
            f"labels {y.shape} and probabilities {p.shape} must both be (n, k) arrays"
        )
    return y, p


def check_threshold(threshold: Any) -> float:
    """Validate a multi-label decision threshold: a number strictly between 0 and 1."""
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.floating)):
        raise InvalidArgumentError(f"threshold={threshold!r} must be a float in (0, 1)")
    if not 0.0 < float(threshold) < 1.0:
        raise InvalidArgumentError(f"threshold={threshold!r} must be strictly between 0 and 1")
    return float(threshold)


def _divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """``numerator / denominator``, 0 where the denominator is 0 (scikit-learn's default)."""
    numerator = np.asarray(numerator, np.float64)
    denominator = np.asarray(denominator, np.float64)
    safe = np.where(denominator == 0, 1.0, denominator)
    return np.where(denominator == 0, 0.0, numerator / safe)


def _counts(truth: np.ndarray, predicted: np.ndarray) -> tuple[np.ndarray, ...]:
    """True positives, predicted positives and real positives per class (0/1 matrices)."""
    return (truth * predicted).sum(axis=0), predicted.sum(axis=0), truth.sum(axis=0)


def _f1(tp: np.ndarray, predicted: np.ndarray, real: np.ndarray) -> np.ndarray:
    return _divide(2 * tp, predicted + real)


def _average_precision(truth: np.ndarray, scores: np.ndarray) -> float:
    """Area under the precision-recall steps of one class, as scikit-learn computes it."""
    order = np.argsort(-scores, kind="mergesort")
    scores, truth = scores[order], truth[order]
    last = np.r_[np.flatnonzero(np.diff(scores)), len(scores) - 1]  # end of each tie
    tps = np.cumsum(truth)[last]
    if tps[-1] == 0:
        return 0.0  # no positive example: recall is undefined, scikit-learn gives 0
    precision = tps / (last + 1)
    recall = tps / tps[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def multilabel_metrics(
    labels: Any, probabilities: Any, *, threshold: float = 0.5
) -> dict[str, float]:
    """Micro- and macro-averaged F1 at a threshold, and the mean average precision.

    A class counts as predicted where its probability is at least ``threshold``.
    Micro-F1 pools every (image, class) decision, so frequent classes weigh
    more; macro-F1 averages the F1 of each class. The mean average precision
    (mAP) averages, over classes, the area under each class's precision-recall
    steps; it uses the probabilities, not the threshold.

    Args:
        labels: Multi-hot labels, shape ``(n, k)``.
        probabilities: Predicted per-class probabilities, shape ``(n, k)``.
        threshold: Probability from which a class counts as present.

    Returns:
        ``{"f1_micro", "f1_macro", "mean_average_precision", "threshold"}``,
        equal to scikit-learn's ``f1_score(labels, probabilities >= threshold,
        average="micro")``, the same with ``average="macro"``, and
        ``average_precision_score(labels, probabilities, average="macro")``
        (a class without positive examples scores 0 there, as in scikit-learn).

    Examples:
        >>> import numpy as np
        >>> from xferclass.metrics import multilabel_metrics
        >>> y = np.array([[1, 0, 1], [0, 1, 1]])
        >>> p = np.array([[0.9, 0.2, 0.4], [0.3, 0.8, 0.7]])
        >>> {k: round(v, 3) for k, v in multilabel_metrics(y, p).items()}
        {'f1_micro': 0.857, 'f1_macro': 0.889, 'mean_average_precision': 1.0, 'threshold': 0.5}
    """
    y, p = _pair(labels, probabilities)
    cut = check_threshold(threshold)
    truth = (y > 0.5).astype(np.float64)
    tp, predicted, real = _counts(truth, (p >= cut).astype(np.float64))
    f1_micro = float(_f1(tp.sum(), predicted.sum(), real.sum()))
    ap = [_average_precision(truth[:, j], p[:, j]) for j in range(y.shape[1])]
    return {
        "f1_micro": f1_micro,
        "f1_macro": float(np.mean(_f1(tp, predicted, real))),
        "mean_average_precision": float(np.mean(ap)),
        "threshold": cut,
    }


def _row(precision: Any, recall: Any, f1: Any, support: Any) -> dict[str, Any]:
    return {
        "precision": float(precision),
        "recall": float(recall),
        "f1-score": float(f1),
        "support": int(support),
    }


def per_class_report(
    labels: Any,
    probabilities: Any,
    class_names: Any = None,
    *,
    multi_label: bool = False,
    threshold: float = 0.5,
) -> dict[str, Any]:
    """Precision, recall, F1 and support of every class, and their averages.

    Single-label: the predicted class of each image is its most probable one.
    Multi-label: every class whose probability is at least ``threshold``.

    Args:
        labels: One-hot (or multi-hot) labels, shape ``(n, k)``.
        probabilities: Predicted probabilities, shape ``(n, k)``.
        class_names: ``k`` names; by default ``"0"``, ``"1"``, ...
        multi_label: Compare thresholded probabilities, not the top class.
        threshold: The threshold of ``multi_label``.

    Returns:
        The dict of scikit-learn's ``classification_report(output_dict=True)``
        (with ``labels=range(k)`` and ``target_names=class_names``): one
        ``{"precision", "recall", "f1-score", "support"}`` per class name, then
        ``"accuracy"`` (single-label) or ``"micro avg"`` and ``"samples avg"``
        (multi-label), ``"macro avg"`` and ``"weighted avg"``.

    Examples:
        >>> import numpy as np
        >>> from xferclass.metrics import per_class_report
        >>> y = np.eye(2)[[0, 0, 1, 1]]
        >>> p = np.array([[0.9, 0.1], [0.4, 0.6], [0.2, 0.8], [0.3, 0.7]])
        >>> per_class_report(y, p, ["cat", "dog"])["cat"]
        {'precision': 1.0, 'recall': 0.5, 'f1-score': 0.6666666666666666, 'support': 2}
    """
    y, p = _pair(labels, probabilities)
    k = y.shape[1]
    names = [str(i) for i in range(k)] if class_names is None else [str(n) for n in class_names]
    if len(names) != k:
        raise InvalidArgumentError(
            f"class_names has {len(names)} names for {k} classes; pass one name per class"
        )
    if multi_label:
        truth = (y > 0.5).astype(np.float64)
        predicted = (p >= check_threshold(threshold)).astype(np.float64)
    else:
        truth = np.eye(k)[np.argmax(y, axis=1)]
        predicted = np.eye(k)[np.argmax(p, axis=1)]
    tp, n_predicted, real = _counts(truth, predicted)
    precision, recall, f1 = _divide(tp, n_predicted), _divide(tp, real), _f1(tp, n_predicted, real)
    report: dict[str, Any] = {
        name: _row(precision[j], recall[j], f1[j], real[j]) for j, name in enumerate(names)
    }
    total = real.sum()
    micro = (
        _divide(tp.sum(), n_predicted.sum()),
        _divide(tp.sum(), total),
        _f1(tp.sum(), n_predicted.sum(), total),
    )
    if multi_label:
        report["micro avg"] = _row(*micro, total)
    else:
        report["accuracy"] = float(micro[1])
    report["macro avg"] = _row(precision.mean(), recall.mean(), f1.mean(), total)
    weights = _divide(real, total)
    report["weighted avg"] = _row(
        (precision * weights).sum(), (recall * weights).sum(), (f1 * weights).sum(), total
    )
    if multi_label:
        hits = (truth * predicted).sum(axis=1)
        size_true, size_predicted = truth.sum(axis=1), predicted.sum(axis=1)
        report["samples avg"] = _row(
            _divide(hits, size_predicted).mean(),
            _divide(hits, size_true).mean(),
            _f1(hits, size_predicted, size_true).mean(),
            total,
        )
    return report


def evaluate_regression_style(
    model: keras.Model,
    dataset: tf.data.Dataset,
    *,
    verbose: int = 0,
    per_class: bool = False,
    threshold: float | None = None,
    tta: bool | str = False,
    engine: str = "auto",
) -> dict[str, Any]:
    """Evaluate a classifier by MAE, MSE, RMSE and R² as well as accuracy.

    The numbers compare the one-hot labels ``Y`` with the predicted class
    probabilities ``P`` over every sample (see the module docs for the
    formulas). Lower MAE/MSE/RMSE and higher R² mean probabilities that are both
    right and confident; accuracy only looks at the top class.

    A multi-label model (``build_classifier(..., multi_label=True)``) is
    evaluated on multi-hot labels the same way, and the result also holds
    :func:`multilabel_metrics`: micro- and macro-F1 at the model's threshold
    and the mean average precision.

    Args:
        model: A trained classifier with a softmax (or, multi-label, sigmoid) output.
        dataset: ``(images, one-hot labels)`` batches, e.g. from
            :func:`xferclass.load_image_dataset`.
        verbose: 0 (the default) is silent; 1, 2 or ``"auto"`` show a progress
            bar. The same values as :func:`xferclass.fit`'s ``verbose``.
        per_class: Also return ``"per_class"``: :func:`per_class_report` with
            the dataset's (or the model's) class names; and for a single-label model
            the calibration error and Brier score (:func:`calibration_metrics`).
        threshold: For a multi-label model, the threshold of F1 and of the
            per-class report; by default the one stored in the model.
        tta: Test-time augmentation, as in :func:`xferclass.predict`.
        engine: The runtime, as in :func:`xferclass.predict`.

    Returns:
        ``{"mae", "mse", "rmse", "r2", "accuracy", "n"}``, plus ``"f1_micro"``,
        ``"f1_macro"``, ``"mean_average_precision"`` and ``"threshold"`` for a
        multi-label model, plus ``"per_class"`` when asked for, and with it, for a
        single-label model, ``"ece"`` and ``"brier"`` (:func:`calibration_metrics`).

    Raises:
        DatasetError: The dataset's class count differs from the model's
            output size, its class names are the model's stored ones in another
            order (the message names both orders), or the dataset is empty.
        MissingDependencyError: ``engine`` names a runtime that is not installed.

    Examples:
        >>> metrics = evaluate_regression_style(model, test)  # doctest: +SKIP
        >>> sorted(metrics)  # doctest: +SKIP
        ['accuracy', 'mae', 'mse', 'n', 'r2', 'rmse']
        >>> result = evaluate_regression_style(model, test, per_class=True)  # doctest: +SKIP
        >>> result["per_class"]["hat"]["recall"]  # doctest: +SKIP
        0.83
    """
    multi_label, stored = model_multi_label(model)
    cut = stored if threshold is None else check_threshold(threshold)
    labels, probabilities = collect_predictions(
        model, dataset, verbose=verbose, tta=tta, engine=engine
    )
    result: dict[str, Any] = dict(regression_metrics(labels, probabilities))
    if multi_label:
        result.update(multilabel_metrics(labels, probabilities, threshold=cut))
    if per_class:
        names = class_names_of(dataset) or model_class_names(model)
        result["per_class"] = per_class_report(
            labels, probabilities, names, multi_label=multi_label, threshold=cut
        )
        if not multi_label:
            result.update(calibration_metrics(labels, probabilities))
    return result


def calibration_metrics(labels: Any, probabilities: Any) -> dict[str, float]:
    """How well the top probability of a single-label classifier matches how often it is
    right: ``"ece"``, the expected calibration error over 15 equal-width bins
    (:func:`xferclass.evaluation.calibration.expected_calibration_error`), and
    ``"brier"``, the Brier score summed over the classes (the number of classes times
    the MSE of :func:`regression_metrics`).

    Examples:
        >>> found = calibration_metrics([[1, 0], [0, 1]], [[0.8, 0.2], [0.4, 0.6]])
        >>> {key: round(value, 4) for key, value in found.items()}
        {'ece': 0.3, 'brier': 0.2}
    """
    from ..training._calibration import expected_calibration_error

    y = np.asarray(labels, np.float64)
    p = np.asarray(probabilities, np.float64)
    onehot = y if y.ndim == 2 else np.eye(p.shape[1])[y.astype(np.int64)]
    return {
        "ece": expected_calibration_error(np.argmax(onehot, axis=1), p),
        "brier": float(np.mean(np.sum((p - onehot) ** 2, axis=1))),
    }
