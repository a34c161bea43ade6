"""The automatic recipe's search: the floor first, then every choice measured by cross-validation.

Each *experiment* caches the pooled features of every labelled image for one
(backbone, size) and some symmetry views, then cross-validates every head
choice on them in one stack of heads (:mod:`xferclass.evaluation._headcv`). Experiments
run cheapest first, the floor (the cheapest backbone at its native size, with
``fit``'s defaults) before anything else, and only while the time they are
estimated to take, from what the earlier ones measured, is left in the budget.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..core._log import logger
from ..evaluation import _headcv
from ..evaluation._tta import VIEWS
from ._features import FeatureSet, Images, extract

__all__ = ["HEADS", "LINEAR_C", "Choice", "Experiment", "Search", "VIEW_SETS"]

#: Views each training-view choice shows the head, and each TTA choice averages.
VIEW_SETS: dict[str, tuple[str, ...]] = {
    "plain": ("plain",),
    "flip": ("plain", "hflip"),
    "rotations": VIEWS,
}

#: The TTA choice that averages the same views as a training-view choice.
TTA_OF = {"plain": "none", "flip": "flip", "rotations": "rotations"}

#: Passes over the images a head may train for; ``fit``'s default (10) among them.
PASSES = (5, 10, 15)

#: Heads, each drawn from its own initial weights, whose probabilities an averaged-heads
#: choice averages. On cached features one head's score moves by several points with
#: its seed alone; the mean of a few heads' probabilities moves much less.
HEADS = 5

#: Seconds per (head x row x pass x feature) of the stacked heads before the
#: first comparison measures it: 3.5e-8 was measured on 2 cores.
CV_COST_PRIOR = 4e-8

#: Inverse L2 strengths (scikit-learn's ``C``) of the linear heads compared: from
#: strongly regularized to nearly free. On standardized pooled features the best one
#: ranged from 0.001 (generated defect grades) to 1 (digits).
LINEAR_C = (0.001, 0.01, 0.1)

#: Passes over the images (epochs times training views) of a linear head, its batch, and
#: Adam's learning rate, decayed to 0 along a cosine over them. The convex problem settles
#: near its optimum in a few hundred steps of large batches (on the pooled features of
#: digits and of generated defect grades, the test accuracy of each ``C`` within a point of
#: scikit-learn's optimum), and a step's fixed cost, not its arithmetic, is what a head
#: this small spends its time on: 32 images a step took 8 times longer for the same score.
LINEAR_PASSES = 20
LINEAR_BATCH = 128
LINEAR_RATE = 1e-2

#: Fewest optimizer steps of a linear head (on a few hundred images, 20 passes are too few
#: steps), and most epochs: each costs a fixed overhead.
LINEAR_MIN_STEPS = 400
LINEAR_MAX_EPOCHS = 200

#: Seconds per row shown to one comparison's linear heads before one measures it
#: (1.1e-4 was measured on 2 cores for 4 heads on 1,078 rows).
LINEAR_COST_PRIOR = 2e-4


@dataclass(frozen=True, order=True)
class Choice:
    """One trained head's recipe: what the cross-validation compares.

    Attributes:
        backbone: Registry name.
        size: Input side in pixels.
        train_views: ``"plain"``, ``"flip"`` or ``"rotations"`` (see :data:`VIEW_SETS`).
        class_weight: ``"none"``, ``"sqrt"`` or ``"balanced"``.
        epochs: Epochs of the head; an epoch shows every image once in each
            of its training views.
        tta: ``"none"``, ``"flip"`` or ``"rotations"``.
        heads: Heads trained alike from different initial weights whose
            probabilities are averaged (1: one head).
        head: ``"dense"`` (Dense(units, relu) then the softmax Dense, as
            :func:`xferclass.build_classifier` makes it) or ``"linear"`` (the softmax
            Dense alone, trained on standardized features with an L2 penalty).
        inverse_l2: A linear head's ``C`` (see :data:`LINEAR_C`); 0 for a dense head.
        depth: What a linear head reads: ``"last"`` (the last layer's pooled output) or
            ``"every"`` (every block's and the last layer's: ``taps=True``).
    """

    backbone: str
    size: int
    train_views: str
    class_weight: str
    epochs: int
    tta: str
    heads: int = 1
    head: str = "dense"
    inverse_l2: float = 0.0
    depth: str = "last"

    def label(self) -> str:
        """One line: backbone, size, head, training views, class weights, epochs, TTA and
        heads."""
        heads = f", {self.heads} heads averaged" if self.heads > 1 else ""
        kind = ""
        if self.head == "linear":
            where = " on every block's output" if self.depth == "every" else ""
            kind = f", linear head{where} (C={self.inverse_l2:g})"
        return (
            f"{self.backbone} {self.size} px{kind}, train views {self.train_views}, class "
            f"weights {self.class_weight}, {self.epochs} epochs, TTA {self.tta}{heads}"
        )

    def single(self) -> Choice:
        """The same choice with one head."""
        return dataclasses.replace(self, heads=1)

    def recipe(self) -> tuple[str, int, str, str, str, float, str]:
        """What its heads are trained on and with (every epoch and TTA share it)."""
        return (self.backbone, self.size, self.train_views, self.class_weight, self.head,
                self.inverse_l2, self.depth)  # fmt: skip


@dataclass(frozen=True)
class Experiment:
    """A caching pass and the comparison on it.

    Attributes:
        kind: ``"floor"``, ``"views"``, ``"backbone"`` or ``"heads"`` (more heads of one
            training recipe, on features already cached: no pass).
        backbone: Registry name.
        size: Input side.
        views: Views to cache (those already cached are reused).
        train_views: Training-view choices to compare on them.
        class_weights: Class-weight choices to compare.
    """

    kind: str
    backbone: str
    size: int
    views: tuple[str, ...]
    train_views: tuple[str, ...]
    class_weights: tuple[str, ...]


@dataclass
class Search:
    """The state of one search: features, out-of-fold probabilities, and the clock.

    Attributes:
        images: The labelled images.
        fold: Each image's fold.
        metric: What the comparisons maximise.
        extractor: ``(backbone, size) -> model up to the pooled features``.
        clock: Seconds.
        deadline: When the search must end (the final model's time kept aside).
        seed: Seed of the heads.
        units: Head units.
        learning_rate: Adam's learning rate of the heads.
        passes: Passes over the images (epochs times training views) the heads may stop at.
        fixed_epochs: Epochs set by the caller instead (the floor keeps its 10).
        batch_size: Images per batch.
        verbose: 1 shows a progress bar for each caching pass.
        latest: When the run must end at the very latest (the budget with its allowed
            overrun, less the time to save): the floor, which must run, may run until then.
        linear: Compare linear heads (:data:`LINEAR_C`) beside the dense ones.
    """

    images: Images
    fold: np.ndarray
    metric: str
    extractor: Callable[[str, int], Any]
    clock: Callable[[], float]
    deadline: float
    seed: int = 0
    units: int = 128
    learning_rate: float = 1e-3
    passes: tuple[int, ...] = PASSES
    fixed_epochs: int | None = None
    batch_size: int = 32
    verbose: int = 0
    latest: float = math.inf
    linear: bool = True
    features: dict[tuple[str, int], FeatureSet] = field(default_factory=dict)
    oof: dict[Choice, np.ndarray] = field(default_factory=dict)
    seconds: dict[Choice, float] = field(default_factory=dict)
    log: list[dict[str, Any]] = field(default_factory=list)
    cv_cost: float = CV_COST_PRIOR
    linear_cost: float = LINEAR_COST_PRIOR
    pass_cost: dict[tuple[str, int], float] = field(default_factory=dict)
    done: set[Experiment] = field(default_factory=set)
    averaged: set[tuple[str, int, str, str, str, float, str]] = field(default_factory=set)

    # ----------------------------------------------------------------- estimates

    def cv_seconds(self, experiment: Experiment, dim: int) -> float:
        """Estimated seconds of the comparison of ``experiment`` on ``dim`` features."""
        return self.dense_seconds(experiment, dim) + self.linear_seconds(experiment)

    def dense_seconds(self, experiment: Experiment, dim: int) -> float:
        """Estimated seconds of the dense heads of ``experiment``'s comparison."""
        heads = len(experiment.class_weights) * int(self.fold.max() + 1)
        rows = len(self.images.paths)
        total = 0.0
        for name in experiment.train_views:
            views = len(VIEW_SETS[name])
            total += heads * rows * views * max(self.epoch_choices(views)) * dim
        return total * self.cv_cost

    def linear_seconds(self, experiment: Experiment) -> float:
        """Estimated seconds of the linear heads of ``experiment``'s comparison (its rows
        times :attr:`linear_cost`, the seconds per row of every depth compared)."""
        if not self.linear:
            return 0.0
        rows = len(self.images.paths)
        return (
            sum(
                rows * len(VIEW_SETS[name]) * linear_epochs(len(VIEW_SETS[name]), rows)
                for name in experiment.train_views
            )
            * self.linear_cost
        )

    def heads_seconds(self, choice: Choice, dim: int) -> float:
        """Estimated seconds to train :data:`HEADS` - 1 more heads of ``choice`` per fold."""
        heads = (HEADS - 1) * int(self.fold.max() + 1)
        views = len(VIEW_SETS[choice.train_views])
        passes = max(self.epoch_choices(views))
        return heads * len(self.images.paths) * views * passes * dim * self.cv_cost

    def epoch_choices(self, views: int) -> tuple[int, ...]:
        """Epochs compared for heads trained on ``views`` views (the floor's 10 on plain)."""
        if self.fixed_epochs is not None:
            found = {self.fixed_epochs} | ({10} if views == 1 else set())
        else:
            found = {max(1, round(p / views)) for p in self.passes}
        return tuple(sorted(found))

    def seconds_needed(self, experiment: Experiment, per_image: float, dim: int) -> float:
        """Estimated seconds of ``experiment``: its new views' passes and its comparison."""
        cached = self.features.get((experiment.backbone, experiment.size))
        new = [v for v in experiment.views if cached is None or v not in cached.views]
        passes = len(new) * len(self.images.paths) * per_image
        return passes + self.cv_seconds(experiment, dim)

    # ----------------------------------------------------------------- running

    def run(self, experiment: Experiment, note: str) -> None:
        """Cache ``experiment``'s views and compare its choices; log what it found."""
        start = self.clock()
        key = (experiment.backbone, experiment.size)
        features = self.features.setdefault(key, FeatureSet(*key))
        extract(
            features, self.images, experiment.views, extractor=self.extractor(*key),
            batch_size=self.batch_size, clock=self.clock, verbose=self.verbose,
        )  # fmt: skip
        self.pass_cost[key] = features.seconds_per_image
        cached = self.clock()
        found: dict[Choice, np.ndarray] = {}
        for name in experiment.train_views:
            found.update(self._compare(features, name, experiment.class_weights))
        dense = self.clock() - cached
        if self.linear:
            for name in experiment.train_views:
                found.update(self._compare_linear(features, name, experiment.class_weights))
            linear = self.clock() - cached - dense
            if linear > 0.5:
                self.linear_cost *= linear / self.linear_seconds(experiment)
        self.oof.update(found)
        spent = self.clock() - cached
        dim = int(next(iter(features.views.values())).shape[1])
        measured = self.dense_seconds(experiment, dim) / self.cv_cost
        if measured > 0 and dense > 0.5:
            self.cv_cost = dense / measured
        best = max(found, key=lambda c: _headcv.score(self.metric, self.images.labels,
                                                      found[c]))  # fmt: skip
        entry = {
            "experiment": experiment.kind, "backbone": experiment.backbone,
            "size": experiment.size, "views_cached": sorted(features.views),
            "caching_s": round(cached - start, 1), "comparison_s": round(spent, 1),
            "choices_compared": len(found), "best": best.label(),
            "best_score": round(_headcv.score(self.metric, self.images.labels, found[best]), 4),
            "why": note,
        }  # fmt: skip
        self.log.append(entry)
        for choice in found:
            self.seconds[choice] = round(self.clock() - start, 1)
        logger.info(
            "%s: %s (caching %.0f s, %d choices compared in %.0f s): best %s = %.4f",
            experiment.kind, note, cached - start, len(found), spent, self.metric,
            entry["best_score"],
        )  # fmt: skip

    def average_heads(self, choice: Choice) -> None:
        """Train :data:`HEADS` - 1 more heads of ``choice``'s recipe per fold, each from
        its own initial weights, and add the averaged-heads choices: for every epoch and
        TTA compared, the mean of the out-of-fold probabilities of the one head already
        measured and of the new ones."""
        start = self.clock()
        features = self.features[(choice.backbone, choice.size)]
        labels, fold = self.images.labels, self.fold
        classes = len(self.images.class_names)
        folds = int(fold.max() + 1)
        rows = _fold_weights(labels, fold, classes, choice.class_weight) * (HEADS - 1)
        views = VIEW_SETS[choice.train_views]
        tta = _tta_sets(features)
        choices = self.epoch_choices(len(views))
        result = _headcv.train_stacked_heads(
            features.views, labels, np.stack(rows), train_views=views, eval_sets=tta,
            classes=classes, epochs=max(choices), units=self.units,
            learning_rate=self.learning_rate, batch_size=self.batch_size,
            seed=self.seed + 1, record_epochs=choices,
        )  # fmt: skip
        found: dict[Choice, np.ndarray] = {}
        for epoch in choices:
            for name in tta:
                one = dataclasses.replace(choice, epochs=epoch, tta=name, heads=1)
                if one not in self.oof:
                    continue
                heads = [_out_of_fold(result.probabilities[epoch], h * folds, name, fold)
                         for h in range(HEADS - 1)]  # fmt: skip
                found[dataclasses.replace(one, heads=HEADS)] = (self.oof[one] + sum(heads)) / HEADS
        self.oof.update(found)
        self.averaged.add(choice.recipe())
        spent = self.clock() - start
        for averaged in found:
            self.seconds[averaged] = round(self.seconds.get(averaged.single(), 0.0) + spent, 1)
        best = max(found, key=lambda c: _headcv.score(self.metric, labels, found[c]))
        entry = {
            "experiment": "heads", "backbone": choice.backbone, "size": choice.size,
            "views_cached": sorted(features.views), "caching_s": 0.0,
            "comparison_s": round(spent, 1), "choices_compared": len(found),
            "best": best.label(),
            "best_score": round(_headcv.score(self.metric, labels, found[best]), 4),
            "why": f"{HEADS} heads of {choice.single().label()}, averaged",
        }  # fmt: skip
        self.log.append(entry)
        logger.info("heads: %s (%d choices compared in %.0f s): best %s = %.4f", entry["why"],
                    len(found), spent, self.metric, entry["best_score"])  # fmt: skip

    def _compare(
        self, features: FeatureSet, train_views: str, class_weights: Sequence[str]
    ) -> dict[Choice, np.ndarray]:
        """Out-of-fold probabilities of every (class weight, epochs, TTA) on ``train_views``."""
        labels, fold = self.images.labels, self.fold
        classes = len(self.images.class_names)
        folds = int(fold.max() + 1)
        rows = [row for kind in class_weights for row in _fold_weights(labels, fold, classes, kind)]
        views = VIEW_SETS[train_views]
        tta = _tta_sets(features)
        choices = self.epoch_choices(len(views))
        epochs = max(choices)
        result = _headcv.train_stacked_heads(
            features.views, labels, np.stack(rows), train_views=views, eval_sets=tta,
            classes=classes, epochs=epochs, units=self.units,
            learning_rate=self.learning_rate, batch_size=self.batch_size, seed=self.seed,
            record_epochs=choices,
        )  # fmt: skip
        found: dict[Choice, np.ndarray] = {}
        for epoch in choices:
            for c, kind in enumerate(class_weights):
                for name in tta:
                    choice = Choice(features.backbone, features.size, train_views, kind,
                                    epoch, name)  # fmt: skip
                    found[choice] = _out_of_fold(result.probabilities[epoch], c * folds, name, fold)
        return found

    def _compare_linear(
        self, features: FeatureSet, train_views: str, class_weights: Sequence[str]
    ) -> dict[Choice, np.ndarray]:
        """Out-of-fold probabilities of a linear head per (depth, class weight, ``C``, TTA)
        on ``train_views``: one stack of every class weight, ``C`` and fold per depth (the
        last layer, and every block's output when they were cached)."""
        labels, fold = self.images.labels, self.fold
        classes = len(self.images.class_names)
        folds = int(fold.max() + 1)
        recipes = [(kind, c) for kind in class_weights for c in LINEAR_C]
        rows = [row for kind, _ in recipes for row in _fold_weights(labels, fold, classes, kind)]
        views = VIEW_SETS[train_views]
        tta = _tta_sets(features)
        epochs = linear_epochs(len(views), len(labels))
        found: dict[Choice, np.ndarray] = {}
        needed = sorted({*views, *(name for names in tta.values() for name in names)})
        for depth, columns in depths(features, needed).items():
            result = _headcv.train_stacked_heads(
                columns, labels, np.stack(rows), train_views=views, eval_sets=tta,
                classes=classes, epochs=epochs, units=0,
                learning_rate=linear_rate(epochs, len(labels) * len(views)),
                batch_size=LINEAR_BATCH, seed=self.seed, record_epochs=[epochs],
                inverse_l2=[c for _, c in recipes for _ in range(folds)], standardize=True,
            )  # fmt: skip
            for r, (kind, c) in enumerate(recipes):
                for name in tta:
                    choice = Choice(features.backbone, features.size, train_views, kind,
                                    epochs, name, head="linear", inverse_l2=c,
                                    depth=depth)  # fmt: skip
                    found[choice] = _out_of_fold(result.probabilities[epochs], r * folds,
                                                 name, fold)  # fmt: skip
        return found

    def selection(self, prefer: Sequence[Choice]) -> _headcv.Selection:
        """The best choice measured so far, with its honest estimate."""
        return _headcv.select(self.oof, self.images.labels, self.fold, self.metric, prefer=prefer)


def depths(
    features: FeatureSet, names: Sequence[str] | None = None
) -> dict[str, dict[str, np.ndarray]]:
    """The features a linear head can read, per depth: ``"last"`` always, ``"every"``
    when every block's output was cached too (joined for the views ``names`` only, all by
    default: the copy is the size of the cache)."""
    found = {"last": features.views}
    if features.taps:
        found["every"] = features.every_depth(names)
    return found


def linear_epochs(views: int, images: int) -> int:
    """Epochs of a linear head trained on ``images`` images in ``views`` views:
    :data:`LINEAR_PASSES` passes, or more for :data:`LINEAR_MIN_STEPS` steps of
    :data:`LINEAR_BATCH` rows."""
    steps = -(-images * views // LINEAR_BATCH)
    wanted = max(round(LINEAR_PASSES / views), -(-LINEAR_MIN_STEPS // steps))
    return max(1, min(LINEAR_MAX_EPOCHS, wanted))


def linear_rate(epochs: int, rows: int) -> Any:
    """A linear head's learning rate: :data:`LINEAR_RATE`, decayed to 0 along a cosine
    over ``epochs`` epochs of ``rows`` rows in batches of :data:`LINEAR_BATCH`."""
    import keras

    steps = epochs * -(-rows // LINEAR_BATCH)
    return keras.optimizers.schedules.CosineDecay(LINEAR_RATE, decay_steps=steps)


def _fold_weights(
    labels: np.ndarray, fold: np.ndarray, classes: int, kind: str
) -> list[np.ndarray]:  # fmt: skip
    """One row of sample weights per fold: ``kind``'s class weights, computed from the other
    folds' labels, on the other folds' images, and 0 on the fold's own."""
    rows = []
    for j in range(int(fold.max() + 1)):
        train = fold != j
        weights = _headcv.class_weight_vector(labels[train], classes, kind)
        rows.append(np.where(train, weights[labels], 0.0))
    return rows


def _out_of_fold(
    probabilities: Sequence[Mapping[str, np.ndarray]], first: int, tta: str, fold: np.ndarray
) -> np.ndarray:  # fmt: skip
    """Out-of-fold probabilities: each image's from the head trained without its fold,
    where the heads of folds 0, 1, ... are ``probabilities[first]``, ``[first + 1]``, ..."""
    out = np.zeros_like(probabilities[first][tta])
    for j in range(int(fold.max() + 1)):
        held = fold == j
        out[held] = probabilities[first + j][tta][held]
    return out


def _tta_sets(features: FeatureSet) -> dict[str, tuple[str, ...]]:
    """The TTA choices whose views are all cached in ``features``, with their views."""
    return {name: VIEW_SETS[source] for source, name in TTA_OF.items()
            if all(v in features.views for v in VIEW_SETS[source])}  # fmt: skip


def train_final_head(
    features: FeatureSet,
    labels: np.ndarray,
    classes: int,
    choice: Choice,
    *,
    units: int,
    learning_rate: float,
    batch_size: int,
    seed: int,
) -> list[list[np.ndarray]]:
    """The ``choice.heads`` heads of ``choice`` trained on every image, as the comparison
    trained each fold's (one stack, each head from its own initial weights). A linear
    head comes as the ``[kernel, bias]`` of a softmax Dense on the raw features."""
    views = VIEW_SETS[choice.train_views]
    weights = _headcv.class_weight_vector(labels, classes, choice.class_weight)[labels]
    if choice.head == "linear":
        result = _headcv.train_stacked_heads(
            depths(features, views)[choice.depth], labels, weights[None], train_views=views,
            eval_sets={},
            classes=classes, epochs=choice.epochs, units=0,
            learning_rate=linear_rate(choice.epochs, len(labels) * len(views)),
            batch_size=LINEAR_BATCH, seed=seed, inverse_l2=[choice.inverse_l2],
            standardize=True,
        )  # fmt: skip
        return [_headcv.linear_weights(result, 0)]
    result = _headcv.train_stacked_heads(
        features.views, labels, np.tile(weights, (choice.heads, 1)), train_views=views,
        eval_sets={}, classes=classes, epochs=choice.epochs, units=units,
        learning_rate=learning_rate, batch_size=batch_size, seed=seed,
    )  # fmt: skip
    return [_headcv.head_weights(result.weights, h) for h in range(choice.heads)]


def choice_table(
    search: Search,
    pool: Mapping[Any, np.ndarray],
    selection: _headcv.Selection,
    returned: Any,
    floor: Choice,
    *,
    fine: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """The candidates for the report: the best of each (backbone, size, train views), the
    floor, the one returned and, when measured, its fine-tuned version (scored on fold
    0 only); score, seconds, chosen or not."""
    tuned = bool(fine and fine.get("wins"))
    best: dict[Any, Any] = {}
    for choice, value in selection.scores.items():
        key = (
            (choice.backbone, choice.size, choice.train_views, choice.heads)
            if isinstance(choice, Choice)
            else "average"
        )
        if key not in best or value > selection.scores[best[key]]:
            best[key] = choice
    shown = sorted({*best.values(), floor, returned}, key=lambda c: -selection.scores[c])
    folds = int(search.fold.max() + 1)
    rows = []
    for choice in shown:
        per_fold = [
            _headcv.score(search.metric, search.images.labels[search.fold == j],
                          pool[choice][search.fold == j])
            for j in range(folds)
        ]  # fmt: skip
        rows.append(
            {
                "candidate": choice.label(),
                "score": round(selection.scores[choice], 4),
                "se": round(float(np.std(per_fold, ddof=1) / math.sqrt(folds)), 4),
                "seconds": search.seconds.get(choice),
                "floor": choice == floor,
                "chosen": choice == returned and not tuned,
            }  # fmt: skip
        )
    if fine and fine.get("measured"):
        for k, depth in enumerate(fine.get("depths", [])):
            against = (f"; {fine['frozen_score']:.4f} there without" if k == 0 else
                       f"; {depth['against_score']:.4f} there for what it was measured "
                       "against")  # fmt: skip
            rows.append(
                {
                    "candidate": f"{fine['base']}, top {depth['unfreeze']:.0%} fine-tuned "
                    f"for {depth['epochs']} epochs (fold 0 only{against})",
                    "score": depth["score"],
                    "se": depth["standard_error"],
                    "seconds": depth["seconds"],
                    "floor": False,
                    "chosen": tuned and depth["unfreeze"] == fine["unfreeze"],
                }  # fmt: skip
            )
    return rows


def as_mapping(choice: Choice) -> Mapping[str, Any]:
    """``choice`` as JSON-ready data."""
    return {
        "backbone": choice.backbone, "size": choice.size, "train_views": choice.train_views,
        "class_weight": choice.class_weight, "epochs": choice.epochs, "tta": choice.tta,
        "heads": choice.heads, "head": choice.head, "inverse_l2": choice.inverse_l2,
        "depth": choice.depth,
    }  # fmt: skip
