"""``inspect``: find what is wrong with a labelled image set, on cached features.

Three questions, answered from one frozen pass of a pretrained backbone over
every split (the features are cached as :func:`xferclass.fit` caches them):

* **label issues**: images whose given label is probably wrong, found by
  confident learning (Northcutt, Jiang and Chuang, "Confident Learning:
  Estimating Uncertainty in Dataset Labels", JAIR 2021) on out-of-fold
  probabilities of ``folds`` softmax heads trained on the cached features;
* **duplicates**: the same picture more than once, across all the splits given:
  exact copies by a hash of the file's bytes, near copies (resized,
  recompressed, slightly cropped) by features much more similar to each other
  than to any other image's;
* **outliers**: images unlike the training images, by the mean cosine distance
  to their nearest training neighbours.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..core._errors import DatasetError, InvalidArgumentError, InvalidArgumentTypeError
from ._headcv import stratified_folds

__all__ = [
    "Inspection",
    "inspect",
    "confident_joint",
    "estimate_joint",
    "find_label_issues",
    "out_of_fold_probabilities",
    "NEAR_DUPLICATE_FLOOR",
    "NEAR_DUPLICATE_MARGIN",
]

#: Near copies: two images whose similarity (cosine of whitened features) is at
#: least ``NEAR_DUPLICATE_FLOOR`` and exceeds, by ``NEAR_DUPLICATE_MARGIN`` or
#: more, the background similarity of each of them: for an image with one copy,
#: its similarity to its ``NEAR_DUPLICATE_NEIGHBOUR``-th nearest image (see
#: there for more copies). A copy stands out from an image's ordinary neighbours
#: however crowded its neighbourhood is. Chosen by measurement on clothing with
#: efficientnet_lite0 (see docs/data_quality.md): it finds 98% to 100% of
#: resized (to 50-75%), recompressed (JPEG quality 25-45) and cropped (4-8% a
#: side) copies of 150 validation images, and 81% to 91% of stronger ones.
NEAR_DUPLICATE_MARGIN = 0.20
#: See :data:`NEAR_DUPLICATE_MARGIN`.
NEAR_DUPLICATE_FLOOR = 0.50
#: See :data:`NEAR_DUPLICATE_MARGIN`. An image's background similarity is its
#: similarity to the ``NEAR_DUPLICATE_NEIGHBOUR - 1``-th nearest image after its
#: copies: with one copy, its third nearest image. Its copies are its nearest
#: images down to the first one, of the ``NEAR_DUPLICATE_COPIES`` nearest, that
#: is at least ``NEAR_DUPLICATE_FLOOR`` similar to it and beats, by
#: ``NEAR_DUPLICATE_MARGIN``, the image ``NEAR_DUPLICATE_NEIGHBOUR - 1`` places
#: below it (none when no image does: the background is then the
#: ``NEAR_DUPLICATE_NEIGHBOUR``-th nearest, and no pair passes the margin).
#: Where the nearest image is such a one, this is the plain rule "beat the
#: ``NEAR_DUPLICATE_NEIGHBOUR``-th nearest image"; the rule differs only for an
#: image whose nearest images are several copies, which the plain rule misses.
NEAR_DUPLICATE_NEIGHBOUR = 3
#: See :data:`NEAR_DUPLICATE_NEIGHBOUR`: the most near copies of one picture
#: found as such. More images than this, all much more similar to each other
#: than to the rest, are a crowd of similar pictures (one garment photographed
#: again and again, say), not copies: their background is one of them.
NEAR_DUPLICATE_COPIES = 9
#: The most principal components kept by the whitening of near-copy search
#: (and at most a quarter of the training images).
WHITENED_DIMENSIONS = 512

#: Neighbours averaged in an image's outlier score.
OUTLIER_NEIGHBOURS = 5
#: Percentile of the training images' outlier scores from which an image is
#: listed as an outlier.
OUTLIER_PERCENTILE = 99.0

#: Rows of each section shown in the HTML page (the JSON holds them all).
HTML_ROWS = 200

_SPLITS = ("train", "validation", "test")


# --------------------------------------------------------------------------- result


@dataclass
class Inspection:
    """What :func:`inspect` found.

    Attributes:
        label_issues: ``{"path", "given", "suggested", "score"}`` rows, most
            suspicious first. ``score`` is one minus the out-of-fold
            probability of the given label (1: surely wrong).
        duplicates: ``{"paths", "splits", "cross_split"}`` groups of the same
            picture; ``splits`` names the split of each path, and
            ``cross_split`` flags a group that leaks between splits. Groups
            that cross splits come first, then larger groups.
        outliers: ``{"path", "score"}`` rows, most unusual first; ``score`` is
            the mean cosine distance to the nearest training images.
        class_names: The classes, in label order.
        train_paths: The training images, in the order of ``train_labels``
            and ``out_of_fold``.
        train_labels: The given class index of each training image.
        out_of_fold: Out-of-fold probabilities of the training images,
            shape ``(n, num_classes)``.
        near_duplicate_margin: The margin of the near-copy rule used.
        near_duplicate_floor: The least similarity of the near-copy rule used.
        outlier_threshold: The score from which an image is an outlier.
        paths: Every image of every split, training images first.
        splits: The split of each of ``paths``.
        outlier_scores: The outlier score of each of ``paths`` (to choose
            another cutoff than ``outlier_threshold``).
        labels: The given label (class name) of each of ``paths``.
        decided: What a review decided for an image, by path, read from the
            ``review`` column of a corrected label table (``xferclass review``):
            ``"kept"``, ``"relabelled"`` or ``"excluded"``. Empty for data that
            was not reviewed; otherwise every finding row and duplicate group
            carries a ``"decided"`` entry, empty where nothing was decided.
    """

    label_issues: list[dict[str, Any]]
    duplicates: list[dict[str, Any]]
    outliers: list[dict[str, Any]]
    class_names: list[str] = field(default_factory=list)
    train_paths: list[str] = field(default_factory=list)
    train_labels: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    out_of_fold: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    near_duplicate_margin: float = NEAR_DUPLICATE_MARGIN
    near_duplicate_floor: float = NEAR_DUPLICATE_FLOOR
    outlier_threshold: float = float("nan")
    paths: list[str] = field(default_factory=list)
    splits: list[str] = field(default_factory=list)
    outlier_scores: np.ndarray = field(default_factory=lambda: np.zeros(0))
    labels: list[str] = field(default_factory=list)
    decided: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The findings as the JSON contract: label issues, duplicates, outliers.

        Examples:
            >>> Inspection([], [], []).to_dict()
            {'label_issues': [], 'duplicates': [], 'outliers': []}
        """
        extra = ("decided",) if self.decided else ()
        return {
            "label_issues": [
                {k: row[k] for k in ("path", "given", "suggested", "score", *extra)}
                for row in self.label_issues
            ],
            "duplicates": [
                {k: group[k] for k in ("paths", "splits", "cross_split", *extra)}
                for group in self.duplicates
            ],
            "outliers": [{k: row[k] for k in ("path", "score", *extra)} for row in self.outliers],
        }

    def to_json(self, path: str | os.PathLike[str]) -> None:
        """Write :meth:`to_dict` to ``path`` as JSON (UTF-8, indented).

        Examples:
            >>> Inspection([], [], []).to_json("issues.json")  # doctest: +SKIP
        """
        with open(path, "w", encoding="utf-8") as file:
            json.dump(self.to_dict(), file, indent=2, ensure_ascii=False)
            file.write("\n")

    def html_section(self, *, rows: int = HTML_ROWS) -> str:
        """The findings as an HTML fragment (no ``<html>`` wrapper), thumbnails inlined.

        The fragment carries its own small style sheet, scoped to its class
        ``xferclass-inspection``, so a page can embed it as it is.

        Args:
            rows: The most rows (or groups) shown per section.

        Examples:
            >>> "Label issues" in Inspection([], [], []).html_section()
            True
        """
        return _html_section(self, rows)

    def to_html(self, path: str | os.PathLike[str], *, rows: int = HTML_ROWS) -> None:
        """Write a self-contained HTML page of the findings to ``path``.

        The page needs no network and no JavaScript; thumbnails are inlined
        as base64 JPEG, and the layout fits a phone's screen.

        Examples:
            >>> Inspection([], [], []).to_html("report.html")  # doctest: +SKIP
        """
        page = (
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            "<title>xferclass inspection</title></head>"
            '<body style="margin:0;padding:0.5rem;font-family:system-ui,sans-serif">'
            f"<h1>What is wrong with this data</h1>{self.html_section(rows=rows)}</body></html>\n"
        )
        with open(path, "w", encoding="utf-8") as file:
            file.write(page)


# --------------------------------------------------------------------------- confident learning


def _check_probabilities(labels: Any, probabilities: Any) -> tuple[np.ndarray, np.ndarray]:
    probs = np.asarray(probabilities, dtype=np.float64)
    given = np.asarray(labels)
    if probs.ndim != 2 or given.ndim != 1 or len(given) != len(probs):
        raise InvalidArgumentError(
            f"labels of shape {given.shape} and probabilities of shape {probs.shape} do not "
            "match: expected (n,) and (n, num_classes)"
        )
    if len(given) and (given.min() < 0 or given.max() >= probs.shape[1]):
        raise InvalidArgumentError(f"labels must be class indices in [0, {probs.shape[1]})")
    return given.astype(np.int64), probs


def confident_joint(labels: Any, probabilities: Any) -> tuple[np.ndarray, np.ndarray]:
    """The confident joint ``C[given, true]`` and the per-class thresholds.

    The threshold of class ``j`` is the mean probability of ``j`` over the
    images labelled ``j`` (its mean self-confidence). An image counts in
    ``C[i, j]`` when it is labelled ``i`` and ``j`` is, of the classes whose
    probability reaches their threshold, the most probable; an image with no
    class above threshold is not counted.

    Args:
        labels: Given class index of each image, shape ``(n,)``.
        probabilities: Out-of-fold probabilities, shape ``(n, num_classes)``.

    Returns:
        ``(C, thresholds)``: counts of shape ``(k, k)`` and thresholds of shape
        ``(k,)`` (infinite for a class without images).

    Examples:
        >>> C, t = confident_joint([0, 0, 1], [[0.9, 0.1], [0.2, 0.8], [0.3, 0.7]])
        >>> C.tolist(), t.tolist()
        ([[1, 1], [0, 1]], [0.55, 0.7])
    """
    given, probs = _check_probabilities(labels, probabilities)
    k = probs.shape[1]
    counts = np.bincount(given, minlength=k)
    sums = np.bincount(given, weights=probs[np.arange(len(given)), given], minlength=k)
    thresholds = np.full(k, np.inf)
    thresholds[counts > 0] = sums[counts > 0] / counts[counts > 0]
    above = probs >= thresholds - 1e-12
    confident = above.any(axis=1)
    true = np.where(above, probs, -np.inf).argmax(axis=1)
    joint = np.zeros((k, k), np.int64)
    np.add.at(joint, (given[confident], true[confident]), 1)
    return joint, thresholds


def estimate_joint(labels: Any, probabilities: Any) -> np.ndarray:
    """The calibrated joint distribution ``Q[given, true]`` of given and true labels.

    Each row of the confident joint is rescaled to the number of images
    with that given label, then the whole matrix to sum to 1.

    Examples:
        >>> Q = estimate_joint([0, 0, 1], [[0.9, 0.1], [0.2, 0.8], [0.3, 0.7]])
        >>> (Q * 3).round(6).tolist()
        [[1.0, 1.0], [0.0, 1.0]]
    """
    given, probs = _check_probabilities(labels, probabilities)
    joint, _ = confident_joint(given, probs)
    counts = np.bincount(given, minlength=probs.shape[1]).astype(np.float64)
    rows = joint.sum(axis=1, keepdims=True).astype(np.float64)
    calibrated = np.divide(joint * counts[:, None], rows, out=np.zeros(joint.shape), where=rows > 0)
    total = calibrated.sum()
    return calibrated / total if total > 0 else calibrated


def find_label_issues(labels: Any, probabilities: Any, *, min_per_class: int = 1) -> np.ndarray:
    """Indices of the images whose given label is probably wrong, most suspicious first.

    Confident learning's pruning by noise rate: for every pair of given class
    ``i`` and true class ``j != i``, ``round(n * Q[i, j])`` images labelled
    ``i`` are flagged, those with the largest margin ``p_j - p_i``. At least
    ``min_per_class`` images of each class stay unflagged, and an image whose
    most probable class is its given label is never flagged. The result is
    sorted by self-confidence, lowest first.

    Args:
        labels: Given class index of each image, shape ``(n,)``.
        probabilities: Out-of-fold probabilities, shape ``(n, num_classes)``.
        min_per_class: Images of each given class never flagged.

    Returns:
        int64 indices into ``labels``.

    Examples:
        >>> import numpy as np
        >>> p = np.array([[0.9, 0.1]] * 4 + [[0.2, 0.8]] * 4 + [[0.95, 0.05]])
        >>> find_label_issues([0, 0, 0, 0, 1, 1, 1, 1, 1], p).tolist()
        [8]
    """
    given, probs = _check_probabilities(labels, probabilities)
    n, k = probs.shape
    counts = np.bincount(given, minlength=k)
    prune = np.rint(estimate_joint(given, probs) * n).astype(np.int64)
    np.fill_diagonal(prune, 0)
    for i in range(k):  # keep at least min_per_class images of each class
        room = max(0, int(counts[i]) - int(min_per_class))
        if prune[i].sum() > room:
            prune[i] = np.floor(prune[i] * room / prune[i].sum()).astype(np.int64)
    flagged = np.zeros(n, bool)
    for i in range(k):
        members = np.flatnonzero(given == i)
        for j in np.flatnonzero(prune[i]):
            margin = probs[members, j] - probs[members, i]
            top = np.argsort(-margin, kind="stable")[: prune[i, j]]
            flagged[members[top]] = True
    flagged &= probs.argmax(axis=1) != given
    issues = np.flatnonzero(flagged)
    return issues[np.argsort(probs[issues, given[issues]], kind="stable")]


# --------------------------------------------------------------------------- heads


def _softmax(logits: np.ndarray) -> np.ndarray:
    logits = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(logits)
    return exp / exp.sum(axis=1, keepdims=True)


def _fit_softmax(
    x: np.ndarray,
    y: np.ndarray,
    k: int,
    l2: float,
    iterations: int,
    tolerance: float = 1e-7,
    start: np.ndarray | None = None,
) -> np.ndarray:
    """Multinomial logistic regression with an L2 penalty, by accelerated gradient.

    ``x`` ends with a column of ones (the bias, not penalised). Minimises the
    mean cross-entropy plus ``l2 / 2 * ||W||^2`` with Nesterov's method at
    step ``1 / L``, where ``L`` bounds the Hessian (half the largest
    eigenvalue of ``x^T x / n``, found by power iteration, plus ``l2``), and
    restarts the momentum whenever the loss rises (O'Donoghue and Candes, 2015).
    Stops after ``iterations`` steps, or when a step lowers the loss by less
    than ``tolerance`` times the loss. ``start``: the weights to start from
    (zeros when None). Computes in the dtype of ``x``.
    """
    n, d = x.shape
    onehot = np.eye(k, dtype=x.dtype)[y]
    vector = np.full(d, 1.0 / np.sqrt(d), dtype=x.dtype)
    largest = 1.0
    for _ in range(30):
        vector = x.T @ (x @ vector) / n
        largest = float(np.linalg.norm(vector))
        vector /= largest
    step = 1.0 / (0.5 * largest + l2)
    penalty = np.ones((d, 1), dtype=x.dtype)
    penalty[-1] = 0.0
    w = w_prev = np.zeros((d, k), dtype=x.dtype) if start is None else start.astype(x.dtype)
    momentum, previous = 1.0, np.inf
    for _ in range(iterations):
        t_next = (1 + np.sqrt(1 + 4 * momentum**2)) / 2
        ahead = w + (momentum - 1) / t_next * (w - w_prev)
        p = _softmax(x @ ahead)
        loss = -np.mean(np.log(p[np.arange(n), y] + 1e-12)) + 0.5 * l2 * np.sum(penalty * ahead**2)
        if loss > previous:  # restart: drop the momentum
            momentum, w_prev, previous = 1.0, w, np.inf
            continue
        if previous - loss < tolerance * loss:
            break
        w_prev = w
        w = ahead - x.dtype.type(step) * (x.T @ ((p - onehot) / n) + l2 * penalty * ahead)
        momentum, previous = t_next, loss
    return w


def _design(x: np.ndarray, mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Standardised features with a column of ones."""
    return np.hstack([(x - mean) / scale, np.ones((len(x), 1))])


def out_of_fold_probabilities(
    features: Any,
    labels: Any,
    num_classes: int,
    *,
    folds: int = 5,
    seed: int = 0,
    l2: float = 0.1,
    iterations: int = 300,
    tolerance: float = 1e-5,
) -> np.ndarray:
    """Probabilities of each image from a softmax head that never saw it.

    The images are split into ``folds`` stratified folds (seeded); for each
    fold a multinomial logistic regression is trained on the standardised
    features of the other folds and predicts that fold.

    Args:
        features: Shape ``(n, d)``.
        labels: Class index of each row, shape ``(n,)``.
        num_classes: Number of classes.
        folds: Number of folds, at least 2 and at most the images of the rarest class.
        seed: Seed of the fold assignment.
        l2: L2 penalty of the heads' weights.
        iterations: The most gradient steps of each head.
        tolerance: A head stops when a step lowers its loss by less than this
            fraction of the loss.

    Returns:
        float32 probabilities of shape ``(n, num_classes)``.

    Raises:
        InvalidArgumentError: ``folds`` is below 2.
        DatasetError: A class has fewer images than ``folds``.

    Examples:
        >>> import numpy as np
        >>> x = np.array([[0.0], [0.1], [0.2], [1.0], [1.1], [1.2]])
        >>> p = out_of_fold_probabilities(x, [0, 0, 0, 1, 1, 1], 2, folds=3)
        >>> p.argmax(axis=1).tolist()
        [0, 0, 0, 1, 1, 1]
    """
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    counts = np.bincount(y, minlength=num_classes)
    _check_folds(folds, counts)
    fold = stratified_folds(y, folds, seed)
    out = np.zeros((len(y), num_classes), np.float32)
    # Standardised once on every image: the statistics use no label, so no fold
    # learns anything about another's labels from them.
    design = _design(x, x.mean(axis=0), x.std(axis=0) + 1e-6)
    for f in range(folds):
        held = fold == f
        # Each head starts from zeros. Not from the last fold's head: that one
        # trained on this fold's images, and what it learnt of their labels would
        # carry over (the penalty and a tolerance-stopped descent do not erase it).
        w = _fit_softmax(design[~held], y[~held], num_classes, l2, iterations, tolerance)
        out[held] = _softmax(design[held] @ w)
    return out


def _check_folds(
    folds: Any, counts: np.ndarray | None, class_names: Sequence[str] | None = None
) -> None:
    """Refuse ``folds`` that is not an int of at least 2, or above a class's image count."""
    if isinstance(folds, bool) or not isinstance(folds, (int, np.integer)):
        raise InvalidArgumentTypeError(f"folds={folds!r} must be an int of at least 2")
    if folds < 2:
        raise InvalidArgumentError(f"folds={folds!r} must be at least 2")
    if counts is None:
        return
    present = np.flatnonzero(counts)
    rarest = present[np.argmin(counts[present])]
    if counts[rarest] < folds:
        name = class_names[rarest] if class_names is not None else str(rarest)
        raise DatasetError(
            f"folds={folds} needs at least {folds} images of every class, but class "
            f"{name!r} has {counts[rarest]}; add images or pass a smaller folds"
        )


# --------------------------------------------------------------------------- duplicates, outliers


def _file_hash(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _unit_rows(features: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """Features minus ``centre``, scaled to unit length (for cosine similarity)."""
    rows = np.asarray(features, np.float32) - centre.astype(np.float32)
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return rows / np.maximum(norms, 1e-12)


def _whitened_units(features: np.ndarray, train: np.ndarray) -> np.ndarray:
    """Features PCA-whitened on the training images, scaled to unit length.

    Whitening gives every direction of the training features the same
    variance, so that the directions in which all photos of a class agree
    count less than the rare ones that tell one photo from another: the
    similarity of near copies stands out more from that of similar photos.
    """
    x = np.asarray(features, np.float64)
    reference = x[train]
    mean = reference.mean(axis=0)
    centred = reference - mean
    values, vectors = np.linalg.eigh(centred.T @ centred / max(1, len(reference)))
    keep = max(1, min(WHITENED_DIMENSIONS, len(reference) // 4, x.shape[1]))
    values, vectors = values[::-1][:keep], vectors[:, ::-1][:, :keep]
    projection = vectors / np.sqrt(np.maximum(values, 0) + 1e-10 * max(float(values[0]), 1e-12))
    return _unit_rows((x - mean) @ projection, np.zeros(keep))


def _near_pairs(
    units: np.ndarray,
    floor: float,
    margin: float,
    k: int = NEAR_DUPLICATE_NEIGHBOUR,
    block: int = 1024,
    copies: int = NEAR_DUPLICATE_COPIES,
) -> list[tuple[int, int]]:
    """Pairs ``(i, j)``, ``i < j``, of the near-copy rule (see :data:`NEAR_DUPLICATE_MARGIN`,
    :data:`NEAR_DUPLICATE_NEIGHBOUR`, here ``k``, and :data:`NEAR_DUPLICATE_COPIES`).

    Works on blocks of rows, so memory stays at ``block`` times the number of images.
    """
    n = len(units)
    if n < 2:
        return []
    k = min(k, n - 1)
    background = np.empty(n)
    candidates: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for start in range(0, n, block):
        sims = units[start : start + block] @ units.T
        rows = np.arange(len(sims))
        sims[rows, rows + start] = -np.inf  # not itself
        background[start : start + len(sims)] = _backgrounds(sims, floor, margin, k, copies)
        r, c = np.nonzero(sims >= floor)
        keep = r + start < c
        candidates.append((r[keep] + start, c[keep], sims[r[keep], c[keep]]))
    pairs: list[tuple[int, int]] = []
    for first, second, value in candidates:
        near = value - np.maximum(background[first], background[second]) >= margin
        pairs += list(zip(first[near].tolist(), second[near].tolist()))
    return pairs


def _backgrounds(sims: np.ndarray, floor: float, margin: float, k: int, most: int) -> np.ndarray:
    """The background similarity of each row of ``sims`` (see :data:`NEAR_DUPLICATE_NEIGHBOUR`).

    ``sims``: similarities of some images to every image, ``-inf`` to themselves;
    ``k``: at most the number of other images; ``most``: the most copies looked for.
    Only the ``most + k - 1`` nearest images of each row are sorted.
    """
    others, after = sims.shape[1] - 1, k - 1
    depth = min(others, max(k, most + after))
    nearest = -np.sort(np.partition(-sims, depth - 1, axis=1)[:, :depth], axis=1)
    copies = np.zeros(len(sims), np.int64)
    if 0 < after < depth:
        # ends[i, c - 1]: the c nearest images of row i pass the floor and beat, by the
        # margin, the image ``after`` places below the c-th; copies: the first such c.
        lead = nearest[:, : min(most, depth - after)]
        ends = (lead >= floor) & (lead - nearest[:, after : after + lead.shape[1]] >= margin)
        copies = np.where(ends.any(axis=1), np.argmax(ends, axis=1) + 1, 0)
    return nearest[np.arange(len(sims)), np.maximum(copies, 1) + after - 1]


def _outlier_scores(units: np.ndarray, train: np.ndarray, k: int, block: int = 1024) -> np.ndarray:
    """Each row's mean cosine distance to its ``k`` nearest training rows, itself left out."""
    n = len(units)
    train_index = np.flatnonzero(train)
    k = max(1, min(k, len(train_index) - 1))
    scores = np.zeros(n, np.float64)
    for start in range(0, n, block):
        own = np.arange(start, min(n, start + block))
        to_train = units[own] @ units[train_index].T
        position = np.searchsorted(train_index, own)
        inside = (position < len(train_index)) & (
            train_index[np.minimum(position, len(train_index) - 1)] == own
        )
        to_train[np.flatnonzero(inside), position[inside]] = -np.inf  # not itself
        nearest = -np.partition(-to_train, k - 1, axis=1)[:, :k]
        scores[own] = 1.0 - nearest.mean(axis=1)
    return scores


def _groups(n: int, pairs: Sequence[tuple[int, int]]) -> list[list[int]]:
    """Connected components of ``pairs`` with two or more members (union-find)."""
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b in pairs:
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    members: dict[int, list[int]] = {}
    for i in range(n):
        members.setdefault(root(i), []).append(i)
    return [group for group in members.values() if len(group) > 1]


def _duplicate_groups(
    paths: Sequence[str], splits: Sequence[str], pairs: list[tuple[int, int]]
) -> list[dict[str, Any]]:
    """Groups of exact (same bytes) and near (``pairs``) copies, leaks first."""
    by_hash: dict[str, int] = {}
    exact = []
    for i, path in enumerate(paths):
        first = by_hash.setdefault(_file_hash(path), i)
        if first != i:
            exact.append((first, i))
    found: list[dict[str, Any]] = []
    for group in _groups(len(paths), exact + pairs):
        names = [splits[i] for i in group]
        found.append(
            {
                "paths": [paths[i] for i in group],
                "splits": names,
                "cross_split": len(set(names)) > 1,
            }
        )
    found.sort(key=lambda g: (not g["cross_split"], -len(g["paths"])))
    return found


def _outlier_rows(
    paths: Sequence[str], scores: np.ndarray, train: np.ndarray
) -> tuple[list[dict[str, Any]], float]:
    """Images whose score passes the ``OUTLIER_PERCENTILE``-th percentile of the training scores."""
    cutoff = float(np.percentile(scores[train], OUTLIER_PERCENTILE))
    chosen = np.flatnonzero(scores > cutoff)
    chosen = chosen[np.argsort(-scores[chosen], kind="stable")]
    return [{"path": paths[int(i)], "score": float(scores[i])} for i in chosen], cutoff


# --------------------------------------------------------------------------- data and features


def _load(
    data: Any, size: tuple[int, int], batch_size: int, names: Any, argument: str, split: str
) -> Any:
    """``data`` as an unshuffled dataset of ``size`` images, with ``file_paths`` and ``labels``.

    A label table with a split column gives its ``split`` rows.
    """
    import tensorflow as tf

    from ..data import load_image_dataset
    from ..data._facts import facts_of
    from ..data._tables import role_split

    if isinstance(data, tf.data.Dataset):
        facts = facts_of(data)
        paths, labels, classes = facts.file_paths, facts.labels, facts.class_names
        if paths is None or labels is None or classes is None:
            raise DatasetError(
                f"inspect: {argument} is a tf.data.Dataset without file_paths, labels and "
                "class_names; pass a folder, a label table, or a load_image_dataset result"
            )
        if facts.multi_label:
            raise _multi_label(argument)
        same_classes = names is None or list(classes) == list(names)
        if same_classes and facts.image_size == tuple(size):
            # Already checked and at the right size: its files in a fixed order.
            if not getattr(data, "shuffled", True):
                return data
            if callable(getattr(data, "unshuffled", None)):
                return data.unshuffled()
        rows = [(p, classes[int(label)]) for p, label in zip(paths, np.asarray(labels))]
        dataset = load_image_dataset(
            rows, size, batch_size=batch_size, shuffle=False, class_names=names or list(classes)
        )
        if len(facts_of(dataset).file_paths or ()) != len(paths):
            raise DatasetError(f"inspect: some files of {argument} can no longer be read")
        dataset.file_paths = list(paths)
    else:
        dataset = load_image_dataset(
            data, size, batch_size=batch_size, shuffle=False, class_names=names,
            split=role_split(data, split),
        )  # fmt: skip
    if facts_of(dataset).multi_label:
        raise _multi_label(argument)
    return dataset


def _multi_label(argument: str) -> DatasetError:
    return DatasetError(
        f"inspect: {argument} is multi-label; inspect finds the label issues of "
        "single-label data (one class per image)"
    )


def _features(
    datasets: Sequence[tuple[str, Any]], extractor: Any, engine: str, verbose: int
) -> list[np.ndarray]:
    """Pooled features of each split, from one cached frozen pass (as ``fit`` caches them)."""
    from ..runtime._common import forward_function
    from ..training._cache import CacheDirectory, _Budget, cache_split, memory_limit_from_env

    steps = sum(max(0, int(dataset.cardinality())) for _, dataset in datasets)
    forward = forward_function(extractor, engine=engine, steps=steps or None)
    budget = _Budget(memory_limit_from_env(None))
    out = []
    with CacheDirectory() as folder:
        for name, dataset in datasets:
            cached = cache_split(
                forward, dataset, name=name, directory=folder, budget=budget,
                dtype=np.float32, verbose=verbose,
            )  # fmt: skip
            try:
                out.append(cached.stores[0].take(np.arange(len(cached))))
            finally:
                cached.close()
    return out


def _extractor(backbone: str, weights: Any, input_size: Any) -> Any:
    import keras

    from ..backbones.models import POOL, build_classifier

    model = build_classifier(
        backbone, num_classes=2, head_units=0, weights=weights, input_size=input_size
    )
    return keras.Model(model.input, model.get_layer(POOL).output)


def inspect(
    data: Any,
    validation: Any = None,
    test: Any = None,
    *,
    backbone: str = "efficientnet_lite0",
    folds: int = 5,
    seed: int = 0,
    weights: Any = "imagenet",
    input_size: int | tuple[int, int] | None = None,
    batch_size: int = 32,
    near_duplicate_margin: float = NEAR_DUPLICATE_MARGIN,
    near_duplicate_floor: float = NEAR_DUPLICATE_FLOOR,
    engine: str = "auto",
    verbose: int = 0,
) -> Inspection:
    """Find label issues, duplicates and outliers in labelled images.

    The frozen ``backbone`` runs once over every split; its pooled features are cached.

    * Label issues (in ``data`` only): ``folds`` softmax heads on the cached
      features give each training image probabilities from a head that never
      saw it; confident learning (Northcutt et al., JAIR 2021) flags the
      images whose given label disagrees (per-class thresholds, the calibrated
      confident joint, pruning by the estimated noise rate).
    * Duplicates, across all splits: files with the same bytes, and near
      copies: a cosine similarity of whitened features of at least
      ``near_duplicate_floor`` that beats by ``near_duplicate_margin`` each
      image's similarity to its second nearest image after its copies (the third
      nearest for an image with one copy; up to :data:`NEAR_DUPLICATE_COPIES`
      copies of a picture are found). A group across splits is a leak.
    * Outliers: the images whose mean cosine distance to their 5 nearest
      training images passes the 99th percentile of the training images'.

    Args:
        data: The training images: anything :func:`load_image_dataset` takes
            (a folder of class subfolders, a ``.csv`` label table, a
            DataFrame, ``(path, label)`` pairs), or a dataset it returned. A
            table with a split column gives its ``train`` rows here, and its
            ``validation`` and ``test`` rows as ``validation`` and ``test``
            when those are None.
        validation: Validation images in the same forms, or None; a table with
            a split column gives its ``validation`` rows.
        test: Test images in the same forms, or None; a table with a split
            column gives its ``test`` rows.
        backbone: The backbone whose features are compared.
        folds: Folds of the out-of-fold probabilities, at least 2 and at most
            the number of images of the rarest class.
        seed: Seed of the fold assignment.
        weights: The backbone's weights (``"imagenet"``, None, or a file).
        input_size: Input side or ``(height, width)``; the backbone's default when None.
        batch_size: Images per batch of the frozen pass.
        near_duplicate_margin: How much more similar than their ordinary
            neighbours (the second nearest after their copies) two near copies
            must be, in (0, 2].
        near_duplicate_floor: The least cosine similarity of near copies, in [-1, 1].
        engine: Runtime of the frozen pass, as in :func:`fit`.
        verbose: 1 shows a progress bar per split.

    Returns:
        An :class:`Inspection`.

    Raises:
        InvalidArgumentError: ``folds`` is below 2, or ``near_duplicate_margin``
            or ``near_duplicate_floor`` is out of range.
        DatasetError: A class of ``data`` has fewer images than ``folds``; the
            data is multi-label; or it cannot be loaded.

    Examples:
        >>> import xferclass
        >>> found = xferclass.inspect("clothes/train", "clothes/validation")  # doctest: +SKIP
        >>> found.label_issues[0]  # doctest: +SKIP
        {'path': 'clothes/train/shoes/1f3a.jpg', 'given': 'shoes', 'suggested': 'hat', ...}
        >>> found.to_html("inspection.html")  # doctest: +SKIP
    """
    from ..backbones._registry import get_backbone
    from ..core._args import as_size
    from ..data._facts import facts_of

    _check_folds(folds, None)
    rule = _check_rule(near_duplicate_floor, near_duplicate_margin)
    spec = get_backbone(backbone)
    size = spec.default_size if input_size is None else as_size(input_size, "input_size")
    splits = _load_splits(data, validation, test, size, batch_size)
    known = facts_of(splits[0][1])
    names = list(known.class_names or ())
    labels = np.asarray(known.labels, np.int64)
    _check_folds(folds, np.bincount(labels, minlength=len(names)), names)
    features = _features(splits, _extractor(backbone, weights, size), engine, verbose)
    found = _findings(splits, features, labels, names, folds, seed, rule)
    return _mark_decided(found, reviewed_rows(data))


def _check_rule(floor: Any, margin: Any) -> tuple[float, float]:
    """``(floor, margin)`` of the near-copy rule, checked."""
    if not 0.0 < float(margin) <= 2.0:
        raise InvalidArgumentError(f"near_duplicate_margin={margin!r} must be in (0, 2]")
    if not -1.0 <= float(floor) <= 1.0:
        raise InvalidArgumentError(f"near_duplicate_floor={floor!r} must be in [-1, 1]")
    return float(floor), float(margin)


def _load_splits(
    data: Any, validation: Any, test: Any, size: tuple[int, int], batch_size: int
) -> list[tuple[str, Any]]:
    """``[(split name, dataset)]``, training first; the others in its class order.

    A label table with a split column gives the rows of its argument's split: ``data``
    its train rows, and its validation and test rows where ``validation`` and ``test``
    are None.
    """
    from ..data._facts import class_names_of
    from ..data._tables import table_has_split

    train = _load(data, size, batch_size, None, "data", "train")
    splits = [("train", train)]
    for name, given in (("validation", validation), ("test", test)):
        if given is None and table_has_split(data, name):
            given = data
        if given is not None:
            names = class_names_of(train)
            splits.append((name, _load(given, size, batch_size, names, name, name)))
    return splits


def _findings(
    splits: Sequence[tuple[str, Any]],
    features: Sequence[np.ndarray],
    labels: np.ndarray,
    names: list[str],
    folds: int,
    seed: int,
    rule: tuple[float, float],
) -> Inspection:
    """The :class:`Inspection` of cached features (``features[0]``: the training split)."""
    from ..data._facts import facts_of

    probs = out_of_fold_probabilities(features[0], labels, len(names), folds=folds, seed=seed)
    files = [list(facts_of(dataset).file_paths or ()) for _, dataset in splits]
    train_paths = files[0]
    issues = [
        {
            "path": train_paths[i],
            "given": names[labels[i]],
            "suggested": names[int(np.argmax(probs[i]))],
            "score": float(1.0 - probs[i, labels[i]]),
        }
        for i in find_label_issues(labels, probs)
    ]
    paths = [p for split in files for p in split]
    given = [
        names[int(label)]
        for _, dataset in splits
        for label in np.asarray(facts_of(dataset).labels).reshape(-1)
    ]
    split_of = [name for (name, _), split in zip(splits, files) for _ in split]
    train = np.array([s == "train" for s in split_of])
    every = np.concatenate(features)
    pairs = _near_pairs(_whitened_units(every, train), *rule)
    scores = _outlier_scores(_unit_rows(every, features[0].mean(axis=0)), train, OUTLIER_NEIGHBOURS)
    outliers, fence = _outlier_rows(paths, scores, train)
    return Inspection(
        label_issues=issues,
        duplicates=_duplicate_groups(paths, split_of, pairs),
        outliers=outliers,
        class_names=names,
        train_paths=train_paths,
        train_labels=labels,
        out_of_fold=probs,
        near_duplicate_floor=rule[0],
        near_duplicate_margin=rule[1],
        outlier_threshold=fence,
        paths=paths,
        splits=split_of,
        outlier_scores=scores,
        labels=given,
    )


#: The column of a corrected label table that says what a review decided.
REVIEW_COLUMN = "review"
#: What the review column may hold (empty: not decided).
REVIEW_VALUES = ("", "kept", "relabelled", "excluded")


def reviewed_rows(data: Any) -> dict[str, str]:
    """``{absolute path: decision}`` from the review column of a label table file.

    Empty for anything but a ``.csv`` table with a ``review`` column (as
    ``xferclass review`` writes), and for rows with nothing decided.
    """
    import csv

    from ..data._tables import is_label_table

    if not isinstance(data, (str, os.PathLike)) or not is_label_table(data):
        return {}
    path = os.fspath(data)
    with open(path, newline="", encoding="utf-8-sig") as file:
        rows = list(csv.DictReader(file))
    if not rows or REVIEW_COLUMN not in rows[0] or "path" not in rows[0]:
        return {}
    root = os.path.dirname(os.path.abspath(path))
    return {
        os.path.normpath(os.path.join(root, row["path"])): row[REVIEW_COLUMN]
        for row in rows
        if row.get(REVIEW_COLUMN)
    }


def _mark_decided(found: Inspection, decided: dict[str, str]) -> Inspection:
    """``found`` with each finding's ``"decided"`` entry, when a review decided anything."""
    if not decided:
        return found

    def of(path: str) -> str:
        return decided.get(os.path.normpath(os.path.abspath(path)), "")

    found.decided = {os.path.normpath(os.path.abspath(p)): d for p, d in decided.items()}
    for row in [*found.label_issues, *found.outliers]:
        row["decided"] = of(row["path"])
    for group in found.duplicates:
        marks = {of(path) for path in group["paths"]}
        group["decided"] = "" if "" in marks else ", ".join(sorted(marks))
    return found


# --------------------------------------------------------------------------- HTML

_STYLE = """
.xferclass-inspection{font-family:system-ui,sans-serif;line-height:1.4;max-width:72rem}
.xferclass-inspection .xi-cards{display:grid;gap:.5rem;
grid-template-columns:repeat(auto-fill,minmax(9.5rem,1fr))}
.xferclass-inspection figure{margin:0;padding:.4rem;border:1px solid #ccc;border-radius:.4rem;
overflow-wrap:anywhere;font-size:.8rem}
.xferclass-inspection img{display:block;max-width:100%;height:auto;margin:0 auto .3rem}
.xferclass-inspection .xi-group{border:1px solid #ccc;border-radius:.4rem;padding:.4rem;
margin:.5rem 0}
.xferclass-inspection .xi-leak{border-color:#b00020;background:#fff4f4}
.xferclass-inspection .xi-badge{color:#b00020;font-weight:bold}
.xferclass-inspection .xi-note{color:#555}
.xferclass-inspection .xi-decided{color:#1b5e20;font-weight:bold}
"""


def _thumbnail(path: str, side: int = 128) -> str | None:
    """A JPEG thumbnail of ``path`` as a data URL, or None when it cannot be read."""
    import tensorflow as tf

    try:
        image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
        image = tf.image.resize(image, (side, side), preserve_aspect_ratio=True)
        data = tf.io.encode_jpeg(tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8))
    except (tf.errors.OpError, OSError, ValueError):
        return None
    return "data:image/jpeg;base64," + base64.b64encode(data.numpy()).decode("ascii")


def _figure(path: str, lines: Sequence[str], thumbnails: dict[str, str | None]) -> str:
    if path not in thumbnails:
        thumbnails[path] = _thumbnail(path)
    src = thumbnails[path]
    shown = html.escape(path)
    image = f'<img src="{src}" alt="{shown}">' if src else "<p>(no preview)</p>"
    caption = "<br>".join([f"<code>{shown}</code>", *lines])
    return f"<figure>{image}<figcaption>{caption}</figcaption></figure>"


def _more(total: int, rows: int) -> str:
    if total > rows:
        return f'<p class="xi-note">… and {total - rows} more in the JSON file.</p>'
    return ""


def _decided_line(row: dict[str, Any]) -> list[str]:
    """``["decided: kept"]`` for a finding a review decided, else nothing."""
    decided = row.get("decided")
    return [f'<span class="xi-decided">decided: {html.escape(decided)}</span>'] if decided else []


def _cards(figures: Sequence[str]) -> str:
    return f'<div class="xi-cards">{"".join(figures)}</div>' if figures else "<p>None found.</p>"


def _label_part(found: Inspection, rows: int, thumbnails: dict[str, str | None]) -> list[str]:
    figures = [
        _figure(
            row["path"],
            [
                f"given <b>{html.escape(row['given'])}</b>",
                f"suggested <b>{html.escape(row['suggested'])}</b>",
                f"score {row['score']:.3f}",
                *_decided_line(row),
            ],
            thumbnails,
        )
        for row in found.label_issues[:rows]
    ]
    return [
        '<h3 id="label-issues">Label issues</h3>',
        '<p class="xi-note">Images whose given label the out-of-fold heads doubt (confident '
        "learning); score: 1 minus the probability of the given label.</p>",
        _cards(figures),
        _more(len(found.label_issues), rows),
    ]


def _duplicate_part(found: Inspection, rows: int, thumbnails: dict[str, str | None]) -> list[str]:
    parts = [
        '<h3 id="duplicates">Duplicates</h3>',
        '<p class="xi-note">Exact copies (same bytes) and near copies (features much more '
        "similar to each other than to any other image). A group across splits leaks test or "
        "validation images into training.</p>",
    ]
    for group in found.duplicates[:rows]:
        leak = group["cross_split"]
        badge = '<p class="xi-badge">Leak across splits</p>' if leak else ""
        badge += "".join(f"<p>{line}</p>" for line in _decided_line(group))
        figures = [
            _figure(path, [html.escape(split)], thumbnails)
            for path, split in zip(group["paths"], group["splits"])
        ]
        css = "xi-group xi-leak" if leak else "xi-group"
        parts.append(f'<div class="{css}">{badge}{_cards(figures)}</div>')
    if not found.duplicates:
        parts.append("<p>None found.</p>")
    parts.append(_more(len(found.duplicates), rows))
    return parts


def _outlier_part(found: Inspection, rows: int, thumbnails: dict[str, str | None]) -> list[str]:
    figures = [
        _figure(row["path"], [f"score {row['score']:.3f}", *_decided_line(row)], thumbnails)
        for row in found.outliers[:rows]
    ]
    return [
        '<h3 id="outliers">Outliers</h3>',
        '<p class="xi-note">Images unlike the training images: mean cosine distance to their '
        f"{OUTLIER_NEIGHBOURS} nearest training images, above {found.outlier_threshold:.3f} (the "
        f"{OUTLIER_PERCENTILE:g}th percentile of the training images).</p>",
        _cards(figures),
        _more(len(found.outliers), rows),
    ]


def _html_section(found: Inspection, rows: int) -> str:
    thumbnails: dict[str, str | None] = {}
    leaks = sum(1 for group in found.duplicates if group["cross_split"])
    parts = [
        f'<section class="xferclass-inspection"><style>{_STYLE}</style>',
        "<h2>Data inspection</h2>",
        f"<p>Label issues: {len(found.label_issues)}. Groups of duplicates: "
        f"{len(found.duplicates)} ({leaks} across splits). Outliers: {len(found.outliers)}.</p>",
        *_label_part(found, rows, thumbnails),
        *_duplicate_part(found, rows, thumbnails),
        *_outlier_part(found, rows, thumbnails),
        "</section>",
    ]
    return "\n".join(part for part in parts if part)
