"""What the automatic recipe will try, in which order: a pure function of the data and timings.

The plan is a queue of experiments, never a verdict: every choice on it is
measured by cross-validation before it is kept (see :mod:`xferclass.auto._search`).
What the plan decides is only the order, cheapest and most informative first,
so that whatever the budget cuts off is what was least likely to help:

1. the floor: the cheapest backbone at its native size, plain images;
2. mirrored views of the floor's images (one pass);
3. the other symmetry views (vertical mirror, quarter turns; three passes),
   which only pictures with no "up" can use, and the comparison finds out;
4. the other backbones and sizes, most accurate backbone first at each scale.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..evaluation._headcv import CLASS_WEIGHTS
from ..evaluation._tta import VIEWS
from ._search import TTA_OF, VIEW_SETS, Choice, Experiment

__all__ = [
    "PREFERENCE", "SCALES", "backbone_queue", "class_weights", "floor_of", "view_experiments",
]  # fmt: skip

#: Backbones the recipe may pick by itself, most accurate first.
PREFERENCE = ("efficientnet_lite2", "efficientnet_lite1", "efficientnet_lite0")

#: Input scales tried per backbone, relative to its native size. A network
#: trained at resolution R often classifies best when tested somewhat above R
#: (Touvron et al. 2019); the comparison decides whether it does here.
SCALES = (1.0, 1.15, 1.3)


def round32(value: float) -> int:
    """``value`` rounded to a multiple of 32, at least 32."""
    return max(32, int(round(value / 32.0)) * 32)


def floor_of(
    seconds_per_image: Mapping[str, float],
    native: Mapping[str, int],
    fixed: Mapping[str, Any],
    cost: Mapping[str, float] | None = None,
) -> tuple[str, int]:
    """The floor's backbone and size: the cheapest backbone at its native size.

    Among the EfficientNet-Lite family the cost is known (Lite0 < Lite1 < Lite2).
    Other backbones are ranked by ``cost`` when given (a measure that does not depend
    on the machine's load, such as parameters times input pixels), else by their
    timing. Either way the floor does not hang on one timed batch, which a busy
    machine can invert.
    """
    known = [name for name in reversed(PREFERENCE) if name in seconds_per_image]
    if known:
        name = known[0]
    elif cost is not None:
        name = min(seconds_per_image, key=lambda n: (cost[n], n))
    else:
        name = min(seconds_per_image, key=lambda n: (seconds_per_image[n], n))
    return name, int(fixed.get("size", native[name]))


def class_weights(fixed: Mapping[str, Any]) -> tuple[str, ...]:
    """The class weightings to compare: the caller's when fixed, all of them otherwise."""
    if "class_weight" not in fixed:
        return CLASS_WEIGHTS
    value = fixed["class_weight"]
    if value is True:
        return ("balanced",)
    if value is False or value is None:
        return ("none",)
    return (str(value),)


def view_experiments(floor: tuple[str, int], fixed: Mapping[str, Any]) -> list[Experiment]:
    """The floor and the experiments on its views, in order.

    The floor's experiment always compares the floor itself (no class weights),
    whatever the caller fixed: the floor is always a candidate.
    """
    weights = class_weights(fixed)
    with_floor = tuple(dict.fromkeys(("none", *weights)))
    if "augment" in fixed:  # the caller's training views: cached with the floor
        train = str(fixed["augment"] or "plain")
        views = tuple(dict.fromkeys(VIEW_SETS["plain"] + VIEW_SETS[train]))
        trains = tuple(dict.fromkeys(("plain", train)))
        queue = [Experiment("floor", *floor, views, trains, with_floor)]
        # Test-time views are not training views: they are measured whatever trains.
        for source in ("flip", "rotations"):
            more = tuple(dict.fromkeys(views + VIEW_SETS[source]))
            if more != views:
                queue.append(Experiment("views", *floor, more, (train,), weights))
                views = more
        return queue
    return [
        Experiment("floor", *floor, ("plain",), ("plain",), with_floor),
        Experiment("views", *floor, VIEW_SETS["flip"], ("flip",), weights),
        Experiment("views", *floor, VIEWS, ("rotations",), weights),
    ]


def backbone_queue(
    seconds_per_image: Mapping[str, float],
    native: Mapping[str, int],
    floor: tuple[str, int],
    fixed: Mapping[str, Any],
) -> list[tuple[str, int]]:
    """The other (backbone, size) pairs to try, in order: by scale, then by preference."""
    rank = {name: i for i, name in enumerate(PREFERENCE)}
    names = sorted(seconds_per_image, key=lambda n: (rank.get(n, len(rank)),
                                                      -seconds_per_image[n]))  # fmt: skip
    pairs: list[tuple[str, int]] = []
    for scale in (1.0,) if "size" in fixed else SCALES:
        for name in names:
            size = int(fixed["size"]) if "size" in fixed else round32(native[name] * scale)
            if scale == 1.0 and "size" not in fixed:
                size = native[name]
            if (name, size) != floor and (name, size) not in pairs:
                pairs.append((name, size))
    return pairs


def backbone_experiment(
    pair: tuple[str, int], best: Choice, fixed: Mapping[str, Any]
) -> Experiment:
    """An experiment on another backbone or size, with the views the best choice uses."""
    source = next(s for s, t in TTA_OF.items() if t == best.tta)
    views = tuple(dict.fromkeys(VIEW_SETS[best.train_views] + VIEW_SETS[source]))
    return Experiment("backbone", *pair, views, (best.train_views,), class_weights(fixed))


def check_overrides(fixed: Mapping[str, Any], allowed: Sequence[str]) -> list[str]:
    """Unknown override names, sorted."""
    return sorted(set(fixed) - set(allowed))
