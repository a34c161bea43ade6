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
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf

from ._common import check_class_count, check_image_size, forward_function, require_dataset
from ._errors import InvalidArgumentError

__all__ = ["evaluate_regression_style", "collect_predictions", "regression_metrics"]


def collect_predictions(
    model: keras.Model, dataset: tf.data.Dataset, *, verbose: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Run ``model`` over every batch of ``dataset`` once.

    Labels and predictions come from the same pass, so a dataset that reshuffles
    every epoch still pairs each prediction with its own label.

    Returns:
        ``(labels, probabilities)``, two float arrays of shape ``(n, k)``.
    """
    dataset = require_dataset(dataset, "dataset")
    check_class_count(model, dataset, "dataset")
    check_image_size(model, dataset, "dataset")
    labels: list[np.ndarray] = []
    probabilities: list[np.ndarray] = []
    steps = int(dataset.cardinality())
    forward = forward_function(model)
    progress = keras.utils.Progbar(steps if steps > 0 else None, verbose=verbose)
    batches = dataset.map(lambda x, y, *rest: (x, y)).prefetch(tf.data.AUTOTUNE)
    for step, (x, y) in enumerate(batches, start=1):
        probabilities.append(np.asarray(forward(x), dtype=np.float64))
        labels.append(np.asarray(y, dtype=np.float64))
        progress.update(step)
    if not labels:
        from ._errors import DatasetError

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
    y = np.asarray(labels, dtype=np.float64)
    p = np.asarray(probabilities, dtype=np.float64)
    if y.shape != p.shape or y.ndim != 2:
        raise InvalidArgumentError(
            f"labels {y.shape} and probabilities {p.shape} must both be (n, k) arrays"
        )
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


def evaluate_regression_style(
    model: keras.Model, dataset: tf.data.Dataset, *, verbose: int = 0
) -> dict[str, float]:
    """Evaluate a classifier by MAE, MSE, RMSE and R² as well as accuracy.

    The numbers compare the one-hot labels ``Y`` with the predicted class
    probabilities ``P`` over every sample (see the module docs for the
    formulas). Lower MAE/MSE/RMSE and higher R² mean probabilities that are both
    right and confident; accuracy only looks at the top class.

    Args:
        model: A trained classifier with a softmax output.
        dataset: ``(images, one-hot labels)`` batches, e.g. from
            :func:`xferclass.load_image_dataset`.
        verbose: 1 shows a progress bar.

    Returns:
        ``{"mae", "mse", "rmse", "r2", "accuracy", "n"}``.

    Raises:
        DatasetError: The dataset's class count differs from the model's
            output size, or the dataset is empty.

    Examples:
        >>> metrics = evaluate_regression_style(model, test)  # doctest: +SKIP
        >>> sorted(metrics)  # doctest: +SKIP
        ['accuracy', 'mae', 'mse', 'n', 'r2', 'rmse']
    """
    labels, probabilities = collect_predictions(model, dataset, verbose=verbose)
    return regression_metrics(labels, probabilities)
