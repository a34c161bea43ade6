"""Heads on cached features, compared by stratified k-fold cross-validation.

The automatic recipe's choices that act on the head (class weights, augmented
views, epochs, test-time views) cost a caching pass at most once: every choice
is then a head trained on the same cached features. This module trains all the
heads of one comparison (every choice times every fold) at once, as one stack
of independent heads: each head has its own weights and its own Adam slots
(Adam works elementwise, so a stack of heads is exactly the heads side by
side), and sees only its own training rows (a per-row weight of 0 leaves the
others out). The heads have the layers of :func:`xferclass.build_classifier`'s
head: Dense(units, relu), then a softmax Dense.

The out-of-fold probabilities of every choice after every epoch are recorded,
and :func:`select` turns them into a choice and an honest estimate: the score
of fold ``j`` comes from the choice made on the other folds alone, so no image
is scored by a choice that looked at it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np

from ..core._errors import InvalidArgumentError
from ..data._decode import without_autotune

__all__ = [
    "METRICS",
    "Selection",
    "class_weight_vector",
    "linear_weights",
    "paired_se",
    "score",
    "select",
    "stratified_folds",
    "train_stacked_heads",
]

#: The metrics the automatic recipe can optimise, for single-label data.
METRICS = ("accuracy", "balanced_accuracy", "macro_f1")

#: Class-weight choices, from none to inverse frequency (the kinds of
#: :func:`xferclass.core._compile.balanced_class_weights`, in this order).
CLASS_WEIGHTS = ("none", "sqrt", "balanced")


def stratified_folds(labels: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """The fold (0 to ``folds - 1``) of each row, stratified by class and seeded.

    Each class is shuffled and dealt round-robin over the folds, starting at a
    seeded offset, so every fold holds ``count // folds`` or one more of each class.

    Examples:
        >>> import numpy as np
        >>> fold = stratified_folds(np.array([0] * 6 + [1] * 4), 2, seed=0)
        >>> [int((fold[:6] == f).sum()) for f in (0, 1)]
        [3, 3]
    """
    if folds < 2:
        raise InvalidArgumentError(f"folds={folds!r} must be at least 2")
    rng = np.random.default_rng(seed)
    fold = np.empty(len(labels), dtype=np.int64)
    offset = 0
    for k in np.unique(labels):
        rows = np.flatnonzero(labels == k)
        rows = rows[rng.permutation(len(rows))]
        fold[rows] = (np.arange(len(rows)) + offset) % folds
        offset += len(rows)
    return fold


def class_weight_vector(labels: np.ndarray, classes: int, kind: str) -> np.ndarray:
    """Per-class loss weights: ``"none"`` (1), ``"balanced"`` (n / (k * count)) or ``"sqrt"``.

    ``"sqrt"`` is the square root of the balanced weights, rescaled so the mean
    weight over the rows is 1: halfway, on a log scale, between none and balanced.

    Examples:
        >>> import numpy as np
        >>> class_weight_vector(np.array([0, 0, 0, 1]), 2, "balanced").tolist()
        [0.6666666666666666, 2.0]
    """
    if kind not in CLASS_WEIGHTS:
        raise InvalidArgumentError(f"class weight {kind!r} must be one of {CLASS_WEIGHTS}")
    from ..core._compile import balanced_class_weights  # one computation for fit and auto

    weights = balanced_class_weights(np.bincount(labels, minlength=classes), kind)
    return np.array([weights[k] for k in range(classes)])


def score(metric: str, labels: np.ndarray, probabilities: np.ndarray) -> float:
    """``metric`` of the argmax of ``probabilities`` against integer ``labels``.

    ``balanced_accuracy`` is the mean recall over the classes present in
    ``labels``; ``macro_f1`` the mean F1 over the classes that are present or
    predicted (scikit-learn's definitions; a class present but never predicted
    counts 0, as with ``zero_division=0``).
    """
    predicted = np.argmax(probabilities, axis=-1)
    if metric == "accuracy":
        return float(np.mean(predicted == labels))
    classes = probabilities.shape[-1]
    true = np.bincount(labels, minlength=classes).astype(np.float64)
    hits = np.bincount(labels[predicted == labels], minlength=classes).astype(np.float64)
    if metric == "balanced_accuracy":
        present = true > 0
        return float(np.mean(hits[present] / true[present]))
    if metric == "macro_f1":
        guessed = np.bincount(predicted, minlength=classes).astype(np.float64)
        seen = np.flatnonzero((true + guessed) > 0)
        return float(np.mean(2 * hits[seen] / (true[seen] + guessed[seen])))
    raise InvalidArgumentError(f"metric={metric!r} must be one of {', '.join(METRICS)}")


#: Resamples of the paired bootstrap behind :func:`paired_se` for metrics other than
#: accuracy (a standard error from 400 draws is itself within about 4 % of its value).
BOOTSTRAP_DRAWS = 400


def paired_se(
    metric: str, labels: np.ndarray, first: np.ndarray | None, second: np.ndarray,
    *, seed: int = 0,
) -> float:  # fmt: skip
    """Standard error of ``metric(first) - metric(second)`` on the same images.

    For accuracy it is the standard error of the mean per-image difference in
    correctness. Balanced accuracy and macro-F1 are not means over images (one image
    of a rare class can move them by several points), so theirs comes from a paired
    bootstrap: the images are resampled with replacement within each class (the
    class counts, which both metrics condition on, stay as they are), both
    predictions are scored on each resample, and the spread of the differences is
    the standard error.

    Args:
        metric: One of :data:`METRICS`.
        labels: Integer labels.
        first: Probabilities ``(images, classes)``; None gives 0.
        second: Probabilities of the other prediction on the same images.
        seed: Seed of the resampling.

    Examples:
        >>> import numpy as np
        >>> labels = np.array([0, 0, 1, 1])
        >>> right, wrong = np.eye(2)[labels], np.eye(2)[1 - labels]
        >>> round(paired_se("accuracy", labels, right, wrong), 6)
        0.0
    """
    if first is None or len(labels) < 2:
        return 0.0
    if metric == "accuracy":
        difference = (np.argmax(first, 1) == labels).astype(float) - (
            np.argmax(second, 1) == labels
        ).astype(float)
        return float(np.std(difference, ddof=1) / math.sqrt(len(labels)))
    rng = np.random.default_rng(seed)
    groups = [np.flatnonzero(labels == k) for k in np.unique(labels)]
    differences = []
    for _ in range(BOOTSTRAP_DRAWS):
        rows = np.concatenate([rng.choice(g, len(g)) for g in groups])
        differences.append(score(metric, labels[rows], first[rows])
                           - score(metric, labels[rows], second[rows]))  # fmt: skip
    return float(np.std(differences, ddof=1))


# --------------------------------------------------------------------------- training


def _stacked_model(
    heads: int, dim: int, units: int, classes: int, seed: int, l2: np.ndarray | None = None
) -> Any:
    """The stack: Dense(units, relu) when ``units``, then the softmax Dense, per head;
    ``l2`` (one strength per head) adds ``l2[h] * sum(kernel[h] ** 2)`` of the softmax
    Dense to the loss (a linear head's ridge penalty)."""
    import keras

    class StackedDense(keras.layers.Layer):
        """``heads`` independent Dense layers applied to one input (or one per head)."""

        def __init__(
            self, heads: int, units: int, activation: str, seed: int,
            l2: np.ndarray | None = None, **kw: Any,
        ) -> None:  # fmt: skip
            super().__init__(**kw)
            self.heads, self.units = heads, units
            self.activation = keras.activations.get(activation)
            self.seed = seed
            self.l2 = None if l2 is None else np.asarray(l2, np.float32).reshape(heads, 1, 1)

        def build(self, shape: Any) -> None:
            fan_in = int(shape[-1])
            # Glorot uniform per head, as keras.layers.Dense draws it: GlorotUniform on
            # the (heads, fan_in, units) tensor would count the heads as a receptive
            # field and shrink every head's weights by sqrt(heads).
            limit = math.sqrt(6.0 / (fan_in + self.units))
            # A penalized linear head starts at 0, its optimum's neighbourhood, as
            # scikit-learn's solvers do: random starts would need steps to shrink.
            start = (
                keras.initializers.Zeros() if self.l2 is not None
                else keras.initializers.RandomUniform(-limit, limit, seed=self.seed)
            )  # fmt: skip
            self.kernel = self.add_weight(
                shape=(self.heads, fan_in, self.units), initializer=start, name="kernel"
            )
            self.bias = self.add_weight(shape=(self.heads, self.units), initializer="zeros",
                                        name="bias")  # fmt: skip

        def call(self, x: Any) -> Any:
            ops = keras.ops
            if len(x.shape) == 2:  # one input for every head
                y = ops.einsum("nd,hdu->nhu", x, self.kernel)
            else:
                y = ops.einsum("nhd,hdu->nhu", x, self.kernel)
            if self.l2 is not None:
                self.add_loss(ops.sum(ops.square(self.kernel) * self.l2))
            return self.activation(y + self.bias)

    inputs = keras.Input((dim,))
    x = inputs
    if units:
        x = StackedDense(heads, units, "relu", seed)(x)
    outputs = StackedDense(heads, classes, "softmax", seed + 1, l2=l2)(x)
    return keras.Model(inputs, outputs)


def _predict(model: Any, features: np.ndarray, rows: int = 4096) -> np.ndarray:
    """The stack's probabilities ``(images, heads, classes)``, in large batches."""
    parts = [
        keras.ops.convert_to_numpy(model(features[i : i + rows], training=False))
        for i in range(0, len(features), rows)
    ]
    return np.concatenate(parts).astype(np.float64)


def _epochs(x: np.ndarray, y: np.ndarray, batch_size: int, seed: int) -> Any:
    """``(x, y)`` in batches, every row once per epoch in a new seeded order.

    What ``fit(x, y, shuffle=True)`` gives, as a tf.data pipeline with autotuning
    off: Keras's own pipeline for arrays autotunes, and an epoch then ends only at
    the autotuning thread's next waking, up to twice the epoch's work
    (:func:`xferclass.data._decode.without_autotune`).
    """
    import tensorflow as tf

    rows, targets = tf.constant(x), tf.constant(y)
    order = tf.data.Dataset.range(len(x)).shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    batches = order.batch(batch_size).map(lambda i: (tf.gather(rows, i), tf.gather(targets, i)))
    return without_autotune(batches.prefetch(2))


def _stacked_loss(y_true: Any, y_pred: Any) -> Any:
    """Cross-entropy summed over the heads; ``y_true`` is one-hot times the row's weight."""
    import keras

    ops = keras.ops
    clipped = ops.clip(y_pred, 1e-7, 1.0)
    return -ops.sum(y_true * ops.log(clipped), axis=(1, 2))


@dataclass
class StackedResult:
    """What :func:`train_stacked_heads` returns.

    Attributes:
        probabilities: ``probabilities[e][h]``: head ``h``'s probabilities for
            every image after epoch ``e`` (one of those asked to be recorded):
            a dict from view-set name to an array ``(images, classes)``, the
            average of that set's views.
        weights: The stacked weights at the end, for :func:`head_weights`.
    """

    probabilities: dict[int, list[dict[str, np.ndarray]]]
    weights: list[np.ndarray]
    #: ``(mean, scale)`` of the features when standardized, else None.
    scaling: tuple[np.ndarray, np.ndarray] | None = None


def head_weights(weights: Sequence[np.ndarray], head: int) -> list[np.ndarray]:
    """Head ``head``'s weights in the order of a Dense(units) then Dense(classes) head."""
    return [np.asarray(w[head]) for w in weights]


def linear_weights(result: StackedResult, head: int) -> list[np.ndarray]:
    """A linear head's ``[kernel, bias]`` for a softmax Dense on the raw features: the
    standardization it was trained behind folded into the weights."""
    kernel, bias = (np.asarray(w[head], np.float64) for w in result.weights)
    if result.scaling is not None:
        mean, scale = (np.asarray(v, np.float64) for v in result.scaling)
        kernel = kernel / scale[:, None]
        bias = bias - mean @ kernel
    return [kernel.astype(np.float32), bias.astype(np.float32)]


def standardization(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each column's mean and standard deviation over ``rows`` (1 where a column is
    constant): what :func:`train_stacked_heads` standardizes by."""
    mean = rows.mean(axis=0, dtype=np.float64)
    scale = rows.std(axis=0, dtype=np.float64)
    return mean.astype(np.float32), np.where(scale > 1e-6, scale, 1.0).astype(np.float32)


def train_stacked_heads(
    views: Mapping[str, np.ndarray],
    labels: np.ndarray,
    row_weights: np.ndarray,
    *,
    train_views: Sequence[str],
    eval_sets: Mapping[str, Sequence[str]],
    classes: int,
    epochs: int,
    units: int = 128,
    learning_rate: float = 1e-3,
    batch_size: int = 32,
    seed: int = 0,
    record_epochs: Sequence[int] | None = None,
    on_epoch: Callable[[int], None] | None = None,
    inverse_l2: Sequence[float] | None = None,
    standardize: bool = False,
) -> StackedResult:
    """Train one stack of heads on cached features and record their probabilities.

    Args:
        views: Features per view name, each ``(images, dim)``, rows aligned.
        labels: Integer labels ``(images,)``.
        row_weights: ``(heads, images)``: each head's loss weight of each image
            (0 leaves the image out of that head's training).
        train_views: The views each head trains on: every epoch shows every
            image once in each of these views, in a seeded shuffled order.
        eval_sets: Named sets of views whose averaged probabilities are
            recorded after every epoch (e.g. ``{"none": ["plain"]}``).
        classes: Number of classes.
        epochs: Epochs.
        units: Hidden units of the head (0: none).
        learning_rate: Adam's learning rate.
        batch_size: Rows per step.
        seed: Seed of the initial weights and of the order.
        record_epochs: Epochs (from 1) after which to record the probabilities;
            None: every epoch.
        on_epoch: Called with the epoch number after each epoch.
        inverse_l2: One ``C`` per head: the softmax Dense's kernel is penalized by
            ``sum(kernel ** 2) / (2 * C * rows)``, ``rows`` being the rows of an epoch,
            which is scikit-learn's ``LogisticRegression(C=C)`` objective on those rows
            (divided by ``C * rows``). None: no penalty.
        standardize: Train on the features minus their mean over the training views'
            rows, divided by their standard deviation (see :func:`linear_weights`).
    """
    import keras

    heads, count = row_weights.shape
    dim = int(next(iter(views.values())).shape[1])
    x = np.concatenate([views[name] for name in train_views]).astype(np.float32)
    scaling = standardization(x) if standardize else None
    if scaling is not None:
        mean, scale = scaling
        x = (x - mean) / scale
        views = {name: (values - mean) / scale for name, values in views.items()}
    l2 = None
    if inverse_l2 is not None:
        if len(inverse_l2) != heads or min(inverse_l2) <= 0:
            raise InvalidArgumentError(
                f"inverse_l2 needs one positive C per head ({heads}), got {list(inverse_l2)}"
            )
        l2 = 1.0 / (2.0 * np.asarray(inverse_l2, np.float64) * len(x))
    keras.utils.set_random_seed(seed)
    model = _stacked_model(heads, dim, units, classes, seed, l2=l2)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=_stacked_loss)
    onehot = np.eye(classes, dtype=np.float32)[labels]
    targets = onehot[:, None, :] * row_weights.T[:, :, None].astype(np.float32)
    y = np.concatenate([targets] * len(train_views))
    recorded: dict[int, list[dict[str, np.ndarray]]] = {}
    needed = sorted({name for names in eval_sets.values() for name in names})
    wanted = set(range(1, epochs + 1) if record_epochs is None else record_epochs)

    def record(epoch: int, logs: Any = None) -> None:
        if on_epoch is not None:
            on_epoch(epoch + 1)
        if epoch + 1 not in wanted or not needed:
            return
        outputs = {name: _predict(model, views[name]) for name in needed}
        recorded[epoch + 1] = [
            {
                key: np.mean([outputs[n][:, h] for n in names], axis=0)
                for key, names in eval_sets.items()
            }
            for h in range(heads)
        ]  # fmt: skip

    callback = keras.callbacks.LambdaCallback(on_epoch_end=record)
    model.fit(_epochs(x, y, batch_size, seed), epochs=epochs, shuffle=False, verbose=0,
              callbacks=[callback])  # fmt: skip
    weights = [np.asarray(w) for w in model.get_weights()]
    return StackedResult(probabilities=recorded, weights=weights, scaling=scaling)


# --------------------------------------------------------------------------- selection


@dataclass(frozen=True)
class Selection:
    """A choice among candidates from out-of-fold probabilities, with an honest estimate.

    Attributes:
        chosen: The key of the candidate with the best cross-validated score.
        scores: Each candidate's cross-validated score over all images.
        estimate: Mean over folds of the score on fold ``j`` of the candidate
            chosen on the other folds: an estimate no choice was made on.
        standard_error: Standard error of ``estimate`` over the folds.
        fold_scores: The per-fold scores behind ``estimate``.
        fold_choices: The candidate chosen on the other folds, per fold.
        held_out: Each image's probabilities from the candidate chosen without its
            fold: what ``estimate`` scores.
    """

    chosen: Any
    scores: dict[Any, float]
    estimate: float
    standard_error: float
    fold_scores: tuple[float, ...]
    fold_choices: tuple[Any, ...] = ()
    held_out: np.ndarray | None = field(default=None, compare=False, repr=False)


def select(
    candidates: Mapping[Any, np.ndarray],
    labels: np.ndarray,
    fold: np.ndarray,
    metric: str,
    *,
    prefer: Sequence[Any] = (),
    derived: Callable[[np.ndarray], Mapping[Any, np.ndarray]] | None = None,
) -> Selection:
    """Choose among out-of-fold probabilities, and estimate the choice honestly.

    Args:
        candidates: Out-of-fold probabilities ``(images, classes)`` per candidate key.
        labels: Integer labels.
        fold: The fold of each image.
        metric: One of :data:`METRICS`.
        prefer: Keys that win ties, first first (the simpler candidates).
        derived: Candidates built from ``candidates`` by their scores on the rows
            given (an average of the best ones): for each fold's estimate they are
            rebuilt on the other folds' rows, so that fold's labels choose nothing.

    Returns:
        The :class:`Selection`. Ties go to the first of ``prefer``, then to the
        first candidate given.
    """

    def pool(rows: np.ndarray) -> dict[Any, np.ndarray]:
        return {**candidates, **(derived(rows) if derived is not None else {})}

    def best(found: Mapping[Any, np.ndarray], rows: np.ndarray) -> Any:
        keys = list(found)
        rank = {key: (prefer.index(key) if key in prefer else len(prefer) + i)
                for i, key in enumerate(keys)}  # fmt: skip
        values = {key: score(metric, labels[rows], found[key][rows]) for key in keys}
        top = max(values.values())
        return min((key for key in keys if values[key] >= top - 1e-12), key=rank.__getitem__)

    everything = np.arange(len(labels))
    full = pool(everything)
    scores = {key: score(metric, labels, probabilities) for key, probabilities in full.items()}
    per_fold, choices = [], []
    held_out = np.zeros_like(next(iter(candidates.values())), dtype=np.float64)
    for j in np.unique(fold):
        held = fold == j
        found = pool(everything[~held])
        chosen = best(found, everything[~held])
        choices.append(chosen)
        held_out[held] = found[chosen][held]
        per_fold.append(score(metric, labels[held], found[chosen][held]))
    k = len(per_fold)
    spread = float(np.std(per_fold, ddof=1)) if k > 1 else math.nan
    return Selection(
        chosen=best(full, everything),
        scores=scores,
        estimate=float(np.mean(per_fold)),
        standard_error=spread / math.sqrt(k) if k > 1 else math.nan,
        fold_scores=tuple(float(s) for s in per_fold),
        fold_choices=tuple(choices),
        held_out=held_out,
    )
