"""Fine-tuning, measured like every other choice of the automatic recipe.

Fine-tuning the top of the backbone costs a pass over the images per few epochs,
so it cannot be cross-validated fold by fold in a budget. It is measured on one
fold instead: the frozen choice the search returned is fine-tuned on the other
folds (its head first trained on their cached features, as the search trained
it), then scored on fold 0, which neither its training nor its epochs saw, next to
the frozen choice's own out-of-fold score on the same images (whose head was
trained on the same other folds). Fine-tuning is kept only when it wins there by
more than the standard error of the paired difference; the model returned is
then fine-tuned again on every image, for the same epochs, when the time that
the experiment measured says it fits, and is the experiment's model otherwise.
``fine_tune``'s ``deadline=`` stops either run rather than let it end past the budget.

How deep to fine-tune is measured the same way, down a ladder: after the top
:data:`UNFREEZE` of the layers, the top 30 %, 60 % and all of them (:data:`DEEPER`) are
each fine-tuned for the same epochs from the same head, while the time left fits the
run on the other folds and again on every image (:func:`deeper_seconds`). Each is
scored on fold 0 against the depth kept so far (the frozen choice before any is kept)
and kept only when it wins by more than the standard error of that paired difference.
The ladder goes on past a depth that did not win but did not score below what it was
measured against: on data unlike ImageNet a shallow depth can tie with strong frozen
features while a deeper one wins (the suite's ordinal grades: about 0.79, 0.80 and
0.82 validation accuracy for the top 15 %, 30 % and 60 % after 10 epochs, against 0.77
for the frozen head). It stops at the first depth that scores below it by more than the
standard error of the paired difference.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..core._log import logger
from ..evaluation import _headcv
from ._features import FeatureSet, Images
from ._search import Choice, Search, train_final_head

__all__ = [
    "DEEPER",
    "DEPTH_COST",
    "FINE_TUNE_EPOCH_RATIO",
    "UNFREEZE",
    "FineTuned",
    "deeper_seconds",
    "fine_tune_seconds",
    "plan_epochs",
    "run_fine_tune",
    "optimizer_for",
    "with_training_views",
]

#: Measured ratio of one fine-tuning epoch of the top of the backbone (forward and
#: backward through about the last 15 % of the layers, from activations cached at
#: the cut) to one frozen forward pass of the whole network over the same images in
#: Keras: 17 s against 57 s for EfficientNet-Lite0 at 288 px on 2 cores; 0.32 and 0.34
#: for Lite0 at 224 px and Lite2 at 260 px (600 images, idle). Against the same pass
#: on ONNX Runtime it was 0.56: the epochs always train in Keras.
FINE_TUNE_EPOCH_RATIO = 0.33

#: Fraction of the backbone's layers fine-tuning trains (BatchNorm stays frozen).
UNFREEZE = 0.15

#: The deeper fractions measured after :data:`UNFREEZE`, shallowest first.
DEEPER = (0.3, 0.6, 1.0)

#: Planned seconds of fine-tuning each fraction for 10 epochs, the pass that caches the
#: cut included, relative to the top 15 %'s. Measured (``python
#: benchmarks/bench_finetune_depth.py --backbones efficientnet_lite0 efficientnet_lite2
#: --images 400 --epochs 3 --repeats 2``, projected to 10 epochs): top 30 %, 60 % and
#: all took 1.59x, 2.97x and 6.17x the top 15 % on Lite0 at 224 px, 1.79x, 3.33x and
#: 6.75x on Lite2 at 260 px; an epoch of all of them 8.1x and 8.7x. Rounded up: a run
#: planned short ends past the budget, one planned long only runs a depth less.
DEPTH_COST = {UNFREEZE: 1.0, 0.3: 2.0, 0.6: 3.5, 1.0: 7.0}

#: Adam's learning rate while fine-tuning.
LEARNING_RATE = 1e-4

#: Fewest and most epochs of fine-tuning worth planning.
MIN_EPOCHS, MAX_EPOCHS = 3, 10


@dataclass
class FineTuned:
    """What the fine-tuning experiment measured.

    Attributes:
        epochs: Epochs of fine-tuning.
        score: The fine-tuned model's score on the held-out fold.
        frozen_score: The score on the same images of what it was measured against:
            the frozen choice's out-of-fold probabilities, or for a deeper run, the
            shallower run's.
        standard_error: Standard error of the paired difference of the metric
            (:func:`xferclass.evaluation._headcv.paired_se`).
        images: Images in the held-out fold.
        seconds: Seconds the experiment took.
        wins: Whether fine-tuning (at this depth) is kept.
        unfreeze: Fraction of the backbone's layers fine-tuned.
        trained_seconds: Seconds of those spent training on the other folds.
        probabilities: The fine-tuned model's probabilities on the held-out fold (not
            in the report).
    """

    epochs: int
    score: float
    frozen_score: float
    standard_error: float
    images: int
    seconds: float
    wins: bool
    unfreeze: float = UNFREEZE
    trained_seconds: float = 0.0
    probabilities: np.ndarray | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready data for the report."""
        return {key: (round(value, 4) if isinstance(value, float) else value)
                for key, value in self.__dict__.items() if key != "probabilities"}  # fmt: skip


def plan_epochs(
    seconds_left: float, images: int, folds: int, pass_seconds: float, keras_seconds: float = 0.0,
    views: int = 1, tta_views: int = 1,
) -> int:  # fmt: skip
    """Epochs of fine-tuning that fit twice (on the other folds, then on every image)
    in ``seconds_left``, with the passes that cache the cut and score the held-out
    fold; 0 when fewer than :data:`MIN_EPOCHS` fit. The arguments are as in
    :func:`fine_tune_seconds`.

    Examples:
        >>> plan_epochs(600, 1000, 5, 0.01), plan_epochs(20, 1000, 5, 0.01)
        (10, 0)
    """
    fixed = fine_tune_seconds(0, images, folds, pass_seconds, keras_seconds, views, tta_views)
    per_epoch = (fine_tune_seconds(1, images, folds, pass_seconds, keras_seconds, views,
                                   tta_views) - fixed)  # fmt: skip
    epochs = int((seconds_left - fixed) // max(per_epoch, 1e-9))
    return min(MAX_EPOCHS, epochs) if epochs >= MIN_EPOCHS else 0


def fine_tune_seconds(
    epochs: int, images: int, folds: int, pass_seconds: float, keras_seconds: float = 0.0,
    views: int = 1, tta_views: int = 1,
) -> float:  # fmt: skip
    """Estimated seconds of fine-tuning for ``epochs`` epochs on the other folds, then
    again on every image, with the passes that cache the cut and score the held-out fold.

    ``views`` is the number of training views of each image (every epoch shows each
    image in each of them, as the frozen search's heads saw them), ``tta_views`` the
    number of test-time views the held-out fold is scored with.

    ``pass_seconds`` is the frozen pass's measured seconds per image, on the engine that
    will also cache the cut. ``keras_seconds`` is the Keras forward pass's, per image:
    the epochs train in Keras, so they are planned from the slower of the two (a pass
    on ONNX Runtime ran about 1.7x faster than Keras here).

    Examples:
        >>> round(fine_tune_seconds(10, 1000, 5, 0.01))
        89
        >>> round(fine_tune_seconds(10, 1000, 5, 0.01, keras_seconds=0.02))
        149
    """
    share = (folds - 1) / folds
    fixed = pass_seconds * images * (views * (share + 1.0) + tta_views / folds) + 10.0
    epoch = (
        FINE_TUNE_EPOCH_RATIO * max(pass_seconds, keras_seconds) * images * views * (share + 1.0)
    )
    return fixed + epochs * epoch


def deeper_seconds(previous: FineTuned, folds: int, unfreeze: float) -> float:
    """Estimated seconds of fine-tuning the top ``unfreeze`` of the layers after
    ``previous`` (a shallower run) took its time: on the other folds, scored on fold 0,
    then again on every image.

    Examples:
        >>> shallow = FineTuned(5, 0.9, 0.8, 0.01, 100, seconds=60.0, wins=True,
        ...                     trained_seconds=50.0)
        >>> deeper_seconds(shallow, 5, 0.3)
        235.0
    """
    share = (folds - 1) / folds
    scoring = previous.seconds - previous.trained_seconds
    ratio = DEPTH_COST[unfreeze] / DEPTH_COST[previous.unfreeze]
    return ratio * previous.trained_seconds * (1.0 + 1.0 / share) + scoring


def _subset(images: Images, rows: np.ndarray) -> Images:
    return Images(tuple(np.asarray(images.paths)[rows]), images.labels[rows],
                  images.class_names, tuple(np.asarray(images.given_split)[rows]))  # fmt: skip


def _fine_tuned_model(
    build: Callable[[], Any], features: FeatureSet, images: Images, choice: Choice,
    epochs: int, *, search: Search, rows: np.ndarray, deadline: float, unfreeze: float,
) -> tuple[Any, int]:  # fmt: skip
    """``choice``'s classifier, its head trained on ``rows``' features, then its top
    ``unfreeze`` of the layers fine-tuned on them until ``deadline`` at most; returns it
    and the epochs completed."""
    from .. import training
    from ..backbones.models import HEAD_DENSE, PREDICTIONS

    classes = len(images.class_names)
    labels = images.labels[rows]
    part = FeatureSet(features.backbone, features.size,
                      {view: values[rows] for view, values in features.views.items()})  # fmt: skip
    (head,) = train_final_head(part, labels, classes, choice.single(), units=128,
                               learning_rate=search.learning_rate,
                               batch_size=search.batch_size, seed=search.seed)  # fmt: skip
    model = build()
    model.get_layer(HEAD_DENSE).set_weights(head[:2])
    model.get_layer(PREDICTIONS).set_weights(head[2:])
    weights = _headcv.class_weight_vector(labels, classes, choice.class_weight)
    dataset = with_training_views(
        _subset(images, rows).dataset(choice.size, search.batch_size, shuffle=True,
                                      seed=search.seed), choice.train_views,
    )  # fmt: skip
    history = training.fine_tune(
        model, dataset, None, head_epochs=0, fine_tune_epochs=epochs, unfreeze=unfreeze,
        learning_rate=LEARNING_RATE, optimizer=optimizer_for(choice.train_views),
        class_weight=None if choice.class_weight == "none" else dict(enumerate(weights)),
        verbose=0, seed=search.seed, deadline=_monotonic_deadline(search, deadline),
    )  # fmt: skip
    return model, int(history.epochs_completed)


def with_training_views(dataset: Any, train_views: str) -> Any:
    """``dataset``'s ``(images, labels)`` batches with every image in each view of
    ``train_views`` (see :data:`xferclass.auto._search.VIEW_SETS`), as the frozen search
    trained its heads: each batch is followed by the same images in each further view,
    one batch per view, so a batch stays the size asked for.

    Stacking the views into one batch instead made a batch of 32 images in five views
    a step of 160 through the backbone: a peak of 7.3 GB for EfficientNet-Lite0 at 224
    px fine-tuned whole, against 3.6 GB for batches of 32 (``python
    benchmarks/bench_finetune_memory.py``). :func:`optimizer_for` averages the
    views' gradients before each update, which gives the stacked batch's update.
    """
    from ..evaluation._tta import view
    from ._search import VIEW_SETS

    views = VIEW_SETS[train_views]
    if len(views) == 1:
        return dataset
    import tensorflow as tf

    def stack(x: Any, y: Any) -> tuple[Any, Any]:
        return tf.stack([view(x, name) for name in views]), tf.stack([y] * len(views))

    batches = dataset.map(stack).unbatch()
    known = int(dataset.cardinality())
    if known >= 0:
        batches = batches.apply(tf.data.experimental.assert_cardinality(known * len(views)))
    return batches


def optimizer_for(train_views: str) -> Any:
    """Adam at :data:`LEARNING_RATE`, updating once per batch of images in all of
    ``train_views`` (the mean of their gradients; see :func:`with_training_views`)."""
    import keras

    from ._search import VIEW_SETS

    steps = len(VIEW_SETS[train_views])
    return keras.optimizers.Adam(
        LEARNING_RATE, gradient_accumulation_steps=steps if steps > 1 else None
    )


def _monotonic_deadline(search: Search, deadline: float) -> float:
    """``deadline`` on the search's clock, as a ``time.monotonic()`` value for the engine."""
    import time

    return time.monotonic() + (deadline - search.clock())


def run_fine_tune(
    search: Search, choice: Choice, epochs: int, build: Callable[[], Any], end: float,
    *, against: np.ndarray | None = None, unfreeze: float = UNFREEZE,
    against_name: str = "frozen",
) -> tuple[FineTuned, Callable[[], tuple[Any, str]]]:  # fmt: skip
    """Measure fine-tuning the top ``unfreeze`` of ``choice``'s backbone on fold 0, in its
    share of the time left before ``end``, against the probabilities ``against`` on fold
    0 of what would be returned without it (``choice``'s own out-of-fold ones by
    default; ``against_name`` names it in the log); returns the result and a function
    that gives the final model and a note (fine-tuned again on every image when that
    fits before ``end``)."""
    from ..evaluation.metrics import collect_predictions

    start = search.clock()
    images, fold = search.images, search.fold
    held = fold == 0
    share = float(np.mean(~held))
    features = search.features[(choice.backbone, choice.size)]
    model, completed = _fine_tuned_model(
        build, features, images, choice, epochs, search=search, rows=np.flatnonzero(~held),
        deadline=start + (end - start) * share / (share + 1.0), unfreeze=unfreeze,
    )  # fmt: skip
    trained = search.clock() - start
    test = _subset(images, np.flatnonzero(held)).dataset(choice.size, search.batch_size)
    tta = False if choice.tta == "none" else choice.tta
    _, probabilities = collect_predictions(model, test, tta=tta)
    frozen = search.oof[choice][held] if against is None else against
    result = _compare(search, choice, held, probabilities, frozen, completed,
                      search.clock() - start, unfreeze, against_name)  # fmt: skip
    result.trained_seconds = trained

    def final() -> tuple[Any, str]:
        need = trained / share
        left = end - search.clock()
        if need > left:
            return model, (f"fine-tuned on the other folds only: again on every image would "
                           f"need about {need:.0f} s, {left:.0f} s were left")  # fmt: skip
        every, done = _fine_tuned_model(
            build, features, images, choice, completed, search=search,
            rows=np.arange(len(images.paths)), deadline=end, unfreeze=unfreeze,
        )  # fmt: skip
        if done < completed:
            return model, (f"fine-tuned on the other folds only: again on every image "
                           f"stopped for time after {done} of {completed} epochs")  # fmt: skip
        return every, (f"top {unfreeze:.0%} fine-tuned again on every image for "
                       f"{completed} epochs")  # fmt: skip

    return result, final


def _compare(
    search: Search, choice: Choice, held: np.ndarray, probabilities: np.ndarray,
    frozen: np.ndarray, epochs: int, seconds: float, unfreeze: float, against_name: str,
) -> FineTuned:  # fmt: skip
    """The fine-tuned model against what it is measured against on the held-out fold."""
    labels = search.images.labels[held]
    se = _headcv.paired_se(search.metric, labels, probabilities, frozen, seed=search.seed)
    score = _headcv.score(search.metric, labels, probabilities)
    frozen_score = _headcv.score(search.metric, labels, frozen)
    result = FineTuned(epochs=epochs, score=score, frozen_score=frozen_score,
                       standard_error=se, images=int(held.sum()), seconds=seconds,
                       wins=epochs > 0 and score - frozen_score > max(se, 0.005),
                       unfreeze=unfreeze, probabilities=probabilities)  # fmt: skip
    logger.info(
        "fine-tune: %s top %.0f%%, %d epochs: %s %.4f on fold 0 (%d images) against %.4f "
        "%s (se of the difference %.4f): %s", choice.backbone, unfreeze * 100, epochs,
        search.metric, score, result.images, frozen_score,
        against_name, se,
        "kept" if result.wins else "not kept",
    )  # fmt: skip
    return result
