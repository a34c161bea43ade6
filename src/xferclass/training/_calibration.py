"""The numerical core of calibration: the expected calibration error, temperature
scaling and folding a temperature into a softmax layer.

It lives in ``training`` so that ``fit(..., calibrate=True)`` can use it; its public home,
and the explanation of what it does and why, is :mod:`xferclass.evaluation.calibration`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..core._errors import InvalidArgumentError

__all__ = [
    "BINS",
    "TemperatureChoice",
    "calibrate_on",
    "choose_temperature",
    "held_out_predictions",
    "expected_calibration_error",
    "reliability_bins",
    "fit_temperature",
    "fold_temperature",
    "with_temperature",
]

#: Equal-width bins of the expected calibration error (Guo et al. use 15).
BINS = 15

#: The temperatures searched, as ``log(T)``: from 1/20 to 20.
_LOG_RANGE = (float(np.log(0.05)), float(np.log(20.0)))

#: Smallest probability taken as a logarithm (a zero gives -inf).
_TINY = 1e-12


def _as_arrays(labels: Any, probabilities: Any) -> tuple[np.ndarray, np.ndarray]:
    """Integer labels and ``(n, classes)`` float64 probabilities, checked."""
    p = np.asarray(probabilities, np.float64)
    if p.ndim != 2 or p.shape[0] == 0 or p.shape[1] < 2:
        raise InvalidArgumentError(
            f"probabilities must be (images, classes) with at least one image and two "
            f"classes; got shape {p.shape}"
        )
    y = np.asarray(labels)
    if y.ndim == 2:  # one-hot
        y = np.argmax(y, axis=1)
    if y.shape != (p.shape[0],):
        raise InvalidArgumentError(
            f"labels must give one class per image ({p.shape[0]}); got shape {np.shape(labels)}"
        )
    y = y.astype(np.int64)
    if y.min() < 0 or y.max() >= p.shape[1]:
        raise InvalidArgumentError(f"labels must lie in 0..{p.shape[1] - 1}")
    return y, p


def expected_calibration_error(labels: Any, probabilities: Any, bins: int = BINS) -> float:
    """The expected calibration error of the top class, over ``bins`` equal-width bins.

    Each image falls in the bin of its top probability (bin ``k`` holds
    ``(k/bins, (k+1)/bins]``); the error is the mean, weighted by the images in each
    bin, of ``|accuracy - mean top probability|`` there. 0 is perfectly calibrated.

    Args:
        labels: Integer classes, or one-hot rows.
        probabilities: ``(images, classes)`` predicted probabilities.
        bins: Number of bins.

    Examples:
        >>> p = [[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.3, 0.7]]
        >>> # 0.9: 1 of 2 right (gap 0.4); 0.6 and 0.7: right (gaps 0.4 and 0.3)
        >>> round(expected_calibration_error([0, 1, 0, 1], p), 4)
        0.375
    """
    counts, accuracy, confidence = reliability_bins(labels, probabilities, bins)
    return float(np.sum(counts * np.abs(accuracy - confidence)) / counts.sum())


def reliability_bins(
    labels: Any, probabilities: Any, bins: int = BINS
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What a reliability diagram draws: for each of ``bins`` equal-width bins of the top
    probability (bin ``k`` holds ``(k/bins, (k+1)/bins]``), the number of images, their
    accuracy and their mean top probability (0 where a bin is empty).

    Examples:
        >>> counts, accuracy, confidence = reliability_bins([0, 1], [[0.9, 0.1], [0.8, 0.2]], 2)
        >>> counts.tolist(), accuracy.tolist(), confidence.round(2).tolist()
        ([0, 2], [0.0, 0.5], [0.0, 0.85])
    """
    y, p = _as_arrays(labels, probabilities)
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
        raise InvalidArgumentError(f"bins={bins!r} must be a positive int")
    top = p.max(axis=1)
    right = (p.argmax(axis=1) == y).astype(np.float64)
    index = np.clip(np.ceil(top * bins).astype(np.int64) - 1, 0, bins - 1)
    counts = np.bincount(index, minlength=bins)
    shown = np.maximum(counts, 1)
    accuracy = np.bincount(index, right, bins) / shown
    confidence = np.bincount(index, top, bins) / shown
    return counts, accuracy, confidence


def with_temperature(probabilities: Any, temperature: float) -> np.ndarray:
    """``softmax(log(probabilities) / temperature)`` per row: the probabilities of
    logits divided by ``temperature``."""
    if not temperature > 0:
        raise InvalidArgumentError(f"temperature={temperature!r} must be positive")
    z = np.log(np.maximum(np.asarray(probabilities, np.float64), _TINY)) / temperature
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _nll(log_p: np.ndarray, y: np.ndarray, inverse: float) -> float:
    """Mean negative log-likelihood of the labels at ``1 / temperature = inverse``."""
    z = inverse * log_p
    top = z.max(axis=1)
    lse = top + np.log(np.exp(z - top[:, None]).sum(axis=1))
    return float(np.mean(lse - z[np.arange(len(y)), y]))


def fit_temperature(labels: Any, probabilities: Any) -> float:
    """The temperature between 1/20 and 20 that minimises the negative log-likelihood
    of ``labels`` under :func:`with_temperature` (temperature scaling, Guo et al. 2017).

    The likelihood is convex in ``1 / temperature``; a golden-section search on
    ``log(temperature)`` finds its minimum to a relative 1e-6.

    Examples:
        >>> rng = np.random.default_rng(0)
        >>> logits = rng.normal(0, 1, (2000, 3))
        >>> truth = with_temperature(np.exp(logits), 1.0)  # what the labels follow
        >>> labels = [rng.choice(3, p=row) for row in truth]
        >>> sure = with_temperature(truth, 0.4)  # the model: its logits 2.5x too large
        >>> 2.2 < fit_temperature(labels, sure) < 2.8
        True
    """
    y, p = _as_arrays(labels, probabilities)
    log_p = np.log(np.maximum(p, _TINY))
    low, high = _LOG_RANGE
    ratio = (np.sqrt(5.0) - 1.0) / 2.0

    def cost(log_t: float) -> float:
        return _nll(log_p, y, float(np.exp(-log_t)))

    a, b = low + (1 - ratio) * (high - low), low + ratio * (high - low)
    fa, fb = cost(a), cost(b)
    while high - low > 1e-6:
        if fa <= fb:
            high, b, fb = b, a, fa
            a = low + (1 - ratio) * (high - low)
            fa = cost(a)
        else:
            low, a, fa = a, b, fb
            b = low + ratio * (high - low)
            fb = cost(b)
    return float(np.exp((low + high) / 2.0))


@dataclass(frozen=True)
class TemperatureChoice:
    """What :func:`choose_temperature` measured.

    Attributes:
        temperature: The temperature kept: fitted on every image given, or 1.0 when
            it did not lower the cross-validated calibration error.
        fitted: The temperature fitted on every image given (kept or not).
        ece_before: Cross-validated expected calibration error at temperature 1.
        ece_after: The same with each fold scaled by the temperature fitted on the
            other folds.
        images: Images the choice was made on.
    """

    temperature: float
    fitted: float
    ece_before: float
    ece_after: float
    images: int

    @property
    def kept(self) -> bool:
        """Whether a temperature other than 1 is kept."""
        return self.temperature != 1.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready data for reports."""
        return {"temperature": round(self.temperature, 4), "fitted": round(self.fitted, 4),
                "ece_before": round(self.ece_before, 4), "ece_after": round(self.ece_after, 4),
                "images": self.images, "kept": self.kept}  # fmt: skip


def choose_temperature(
    labels: Any, probabilities: Any, *, folds: int = 5, seed: int = 0, bins: int = BINS
) -> TemperatureChoice:
    """A temperature for probabilities of images the model did not train on, kept only
    when it lowers the expected calibration error on images it was not fitted on.

    The images are dealt into ``folds`` folds; each fold is scaled by the temperature
    fitted on the others, and the calibration error of all of them so scaled is
    compared with the error unscaled. The temperature fitted on every image is kept
    when it is lower; otherwise the temperature is 1.0 (the probabilities as they are).

    Args:
        labels: Integer classes, or one-hot rows.
        probabilities: ``(images, classes)`` probabilities from images the model did not
            train on (a validation split, or out-of-fold predictions).
        folds: Folds of the cross-validation (fewer when there are fewer images).
        seed: Seed of the dealing.
        bins: Bins of the calibration error.

    Examples:
        >>> # 0.99 sure of class 0, and right 70 times in 100: far too sure
        >>> choice = choose_temperature([0] * 70 + [1] * 30, [[0.99, 0.01]] * 100)
        >>> choice.kept, round(choice.fitted, 2), choice.ece_after < choice.ece_before
        (True, 5.42, True)
        >>> round(float(with_temperature([[0.99, 0.01]], choice.temperature)[0, 0]), 3)
        0.7
    """
    y, p = _as_arrays(labels, probabilities)
    n = len(y)
    k = max(2, min(int(folds), n // 2))
    if n < 4:
        raise InvalidArgumentError(f"calibration needs at least 4 images; got {n}")
    fold = np.random.default_rng(seed).permutation(np.arange(n) % k)
    scaled = np.empty_like(p)
    for j in range(k):
        held = fold == j
        scaled[held] = with_temperature(p[held], fit_temperature(y[~held], p[~held]))
    before = expected_calibration_error(y, p, bins)
    after = expected_calibration_error(y, scaled, bins)
    fitted = fit_temperature(y, p)
    return TemperatureChoice(temperature=fitted if after < before else 1.0, fitted=fitted,
                             ece_before=before, ece_after=after, images=n)  # fmt: skip


def _softmax_layer(model: Any) -> Any:
    """The Dense softmax layer whose output is ``model``'s output, or an error saying
    why the temperature cannot be folded into ``model``."""
    import keras

    from ..runtime._common import model_multi_label

    if model_multi_label(model)[0]:
        raise InvalidArgumentError(
            "calibration scales the softmax of a single-label classifier; this model is "
            "multi-label (one sigmoid per class)"
        )
    last = model.layers[-1] if getattr(model, "layers", None) else None
    activation = getattr(getattr(last, "activation", None), "__name__", "")
    if not isinstance(last, keras.layers.Dense) or activation != "softmax":
        raise InvalidArgumentError(
            "calibrate needs a model whose output is a Dense softmax layer (as "
            "build_classifier makes it); this one ends in "
            f"{type(last).__name__ if last is not None else 'nothing'} "
            "(a model that averages test-time views inside it is calibrated by the "
            "automatic recipe, which measures the views and the temperature together)"
        )
    return last


def fold_temperature(model: Any, temperature: float) -> None:
    """Divide the kernel and bias of ``model``'s output softmax layer by ``temperature``,
    in place: its probabilities become :func:`with_temperature`'s of what they were.

    Raises:
        InvalidArgumentError: ``model`` is multi-label, or its output is not a Dense
            softmax layer, or ``temperature`` is not positive.
    """
    if not temperature > 0:
        raise InvalidArgumentError(f"temperature={temperature!r} must be positive")
    layer = _softmax_layer(model)
    layer.set_weights([w / temperature for w in layer.get_weights()])


def calibrate_on(
    model: Any, labels: Any, probabilities: Any, *, seed: int = 0
) -> TemperatureChoice:
    """Choose a temperature from ``model``'s ``probabilities`` of held-out images
    (:func:`choose_temperature`), fold it into its softmax layer when kept
    (:func:`fold_temperature`) and record the choice in its metadata (``"calibration"``)."""
    from ..backbones.layers import preprocessing_layer

    _softmax_layer(model)
    choice = choose_temperature(labels, probabilities, seed=seed)
    if choice.kept:
        fold_temperature(model, choice.temperature)
    found = preprocessing_layer(model)
    if found is not None:
        found.metadata = {**(found.metadata or {}), "calibration": choice.to_dict()}
    return choice


def held_out_predictions(model: Any, dataset: Any, *, engine: str = "auto") -> tuple[Any, Any]:
    """``(labels, probabilities)`` of ``model`` over every batch of ``dataset`` (``(images,
    labels, ...)`` batches), run on ``engine``."""
    from ..runtime._common import classifier_forward

    forward = classifier_forward(model, engine=engine)
    labels, probabilities = [], []
    for batch in dataset:
        probabilities.append(np.asarray(forward(batch[0]), np.float64))
        labels.append(np.asarray(batch[1], np.float64))
    return np.concatenate(labels), np.concatenate(probabilities)
