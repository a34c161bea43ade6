"""Averages of the automatic recipe's best models, measured like any other candidate.

The out-of-fold probabilities of the best head of each backbone and size are
already there, so the average of the best two or three is one more candidate
that costs nothing to cross-validate. When it wins on the held-out estimate, it
is returned as one Keras model, image in, class probabilities out: a
``Preprocessing`` layer that carries the class names and the report (and leaves
the pixels as they are), the members, which share one input size and so see the
pixels they were measured on, and the mean of their probabilities.
``save_model``, ``predict`` and ``export`` take it as they take any classifier.

An averaged-heads choice is cheaper still: several heads of one training recipe,
each from its own initial weights, on one backbone. Its model
(:func:`build_head_average`) runs the backbone once and averages the heads'
probabilities.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..evaluation import _headcv
from ._search import Choice, as_mapping

__all__ = [
    "MAX_MEMBERS",
    "Ensemble",
    "build_ensemble",
    "build_head_average",
    "ensemble_candidates",
    "ranked_pairs",
]

#: Most models averaged.
MAX_MEMBERS = 3


@dataclass(frozen=True)
class Ensemble:
    """The average of the probabilities of several choices (each its own backbone and size).

    Attributes:
        members: The averaged choices, best first; they share one TTA.
    """

    members: tuple[Choice, ...]

    @property
    def tta(self) -> str:
        """The test-time views every member predicts with."""
        return self.members[0].tta

    def label(self) -> str:
        """One line naming the members."""
        return (
            "average of "
            + " + ".join(
                f"[{m.backbone} {m.size} px, "
                + (
                    f"linear head{' on every block' if m.depth == 'every' else ''} "
                    f"(C={m.inverse_l2:g}), "
                    if m.head == "linear"
                    else ""
                )
                + f"views {m.train_views}, weights {m.class_weight}, {m.epochs} epochs]"
                for m in self.members
            )
            + f", TTA {self.tta}"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready data."""
        return {"ensemble": [dict(as_mapping(m)) for m in self.members], "tta": self.tta}


def ensemble_candidates(
    oof: Mapping[Choice, np.ndarray], labels: np.ndarray, metric: str,
    rows: np.ndarray | None = None,
) -> dict[Ensemble, np.ndarray]:  # fmt: skip
    """Averages of the best 2 to :data:`MAX_MEMBERS` (backbone, size) pairs of one input
    size, per TTA.

    The members of an average share one input size, so the returned model feeds each
    member the very pixels it was measured on: every image decoded and resized once to
    that size. (Members of different sizes would each get the image resized twice, to
    the largest size and then to their own, which no measurement saw.)

    Each pair's member, and the pairs' order, are chosen by their scores on ``rows``
    only (every image by default): the nested estimate rebuilds the averages without
    the fold it scores them on, since choosing the members is itself a choice.
    """
    found: dict[Ensemble, np.ndarray] = {}
    for tta in sorted({c.tta for c in oof}):
        ranked = ranked_pairs({c: p for c, p in oof.items() if c.tta == tta}, labels, metric,
                              rows)  # fmt: skip
        for size in sorted({c.size for c in ranked}):
            same = [c for c in ranked if c.size == size]
            for count in range(2, min(MAX_MEMBERS, len(same)) + 1):
                members = tuple(same[:count])
                found[Ensemble(members)] = np.mean([oof[m] for m in members], axis=0)
    return found


def ranked_pairs(
    oof: Mapping[Choice, np.ndarray], labels: np.ndarray, metric: str,
    rows: np.ndarray | None = None,
) -> list[Choice]:  # fmt: skip
    """The best choice of each (backbone, size) pair by its score on ``rows`` (every
    image by default), the best pair first."""
    rows = np.arange(len(labels)) if rows is None else rows
    best: dict[tuple[str, int], tuple[float, Choice]] = {}
    for choice, probabilities in oof.items():
        value = _headcv.score(metric, labels[rows], probabilities[rows])
        pair = (choice.backbone, choice.size)
        if pair not in best or value > best[pair][0]:
            best[pair] = (value, choice)
    return [c for _, c in sorted(best.values(), key=lambda item: (-item[0], item[1]))]


def build_ensemble(models: Sequence[Any], class_names: Sequence[str]) -> Any:
    """One model averaging ``models``' probabilities; they share one input size.

    Raises:
        InvalidArgumentError: The models' input sizes differ.
    """
    import keras

    from ..backbones.layers import Preprocessing
    from ..core._errors import InvalidArgumentError

    shapes = {tuple(m.input_shape[1:]) for m in models}
    if len(shapes) != 1:
        raise InvalidArgumentError(
            f"the averaged models take inputs of different shapes {sorted(shapes)}: each "
            "would see the image resized twice, which it was not measured on"
        )
    inputs = keras.Input(shapes.pop(), name="image")
    x = Preprocessing("none", class_names=list(class_names), name="preprocessing")(inputs)
    outputs = [keras.Model(m.input, m.output, name=f"member_{i}")(x)
               for i, m in enumerate(models)]  # fmt: skip
    average = keras.layers.Average(name="average", dtype="float32")(outputs)
    return keras.Model(inputs, average, name="ensemble_classifier")


def build_head_average(classifier: Any, heads: Sequence[Sequence[np.ndarray]]) -> Any:
    """``classifier`` (from ``build_classifier``) with ``heads`` on its pooled features, each
    given as a head's weights (Dense(units, relu) then the softmax Dense, or the softmax
    Dense alone), and the mean of their probabilities as its output. The backbone runs once.
    """
    import keras

    from ..backbones.models import POOL

    pool = classifier.get_layer(POOL).output
    outputs, layers = [], []
    for i, weights in enumerate(heads):
        x = pool
        if len(weights) == 4:
            hidden = keras.layers.Dense(int(weights[0].shape[1]), activation="relu",
                                        name=f"head_dense_{i}")  # fmt: skip
            x = hidden(x)
            layers.append((hidden, weights[:2]))
        out = keras.layers.Dense(int(weights[-1].shape[0]), activation="softmax",
                                 dtype="float32", name=f"predictions_{i}")  # fmt: skip
        outputs.append(out(x))
        layers.append((out, weights[-2:]))
    for layer, values in layers:
        layer.set_weights(list(values))
    average = keras.layers.Average(name="average", dtype="float32")(outputs)
    return keras.Model(classifier.input, average,
                       name=f"{classifier.name}_{len(heads)}_heads")  # fmt: skip
