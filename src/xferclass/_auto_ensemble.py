"""Averages of the automatic recipe's best models, measured like any other candidate.

The out-of-fold probabilities of the best head of each backbone and size are
already there, so the average of the best two or three is one more candidate
that costs nothing to cross-validate. When it wins on the held-out estimate, it
is returned as one Keras model, image in, class probabilities out: a
``Preprocessing`` layer that carries the class names and the report (and leaves
the pixels as they are), each member at its own input size, and the mean of
their probabilities. ``save_model``, ``predict``, TTA and ``export`` take it as
they take any classifier.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import _headcv
from ._auto_search import Choice, as_mapping

__all__ = ["MAX_MEMBERS", "Ensemble", "build_ensemble", "ensemble_candidates"]

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
                f"[{m.backbone} {m.size} px, views {m.train_views}, weights {m.class_weight}, "
                f"{m.epochs} epochs]"
                for m in self.members
            )
            + f", TTA {self.tta}"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready data."""
        return {"ensemble": [dict(as_mapping(m)) for m in self.members], "tta": self.tta}


def ensemble_candidates(
    oof: Mapping[Choice, np.ndarray], labels: np.ndarray, metric: str
) -> dict[Ensemble, np.ndarray]:
    """Averages of the best 2 to :data:`MAX_MEMBERS` (backbone, size) pairs, per TTA."""
    found: dict[Ensemble, np.ndarray] = {}
    for tta in sorted({c.tta for c in oof}):
        best: dict[tuple[str, int], tuple[float, Choice]] = {}
        for choice, probabilities in oof.items():
            if choice.tta != tta:
                continue
            value = _headcv.score(metric, labels, probabilities)
            pair = (choice.backbone, choice.size)
            if pair not in best or value > best[pair][0]:
                best[pair] = (value, choice)
        ranked = [c for _, c in sorted(best.values(), key=lambda item: (-item[0], item[1]))]
        for count in range(2, min(MAX_MEMBERS, len(ranked)) + 1):
            members = tuple(ranked[:count])
            found[Ensemble(members)] = np.mean([oof[m] for m in members], axis=0)
    return found


def build_ensemble(models: Sequence[Any], class_names: Sequence[str]) -> Any:
    """One model averaging ``models``' probabilities, at the largest of their input sizes."""
    import keras

    from .layers import Preprocessing

    size = max(int(m.input_shape[1]) for m in models)
    inputs = keras.Input((size, size, 3), name="image")
    x = Preprocessing("none", class_names=list(class_names), name="preprocessing")(inputs)
    outputs = []
    for i, model in enumerate(models):
        side = int(model.input_shape[1])
        member = keras.Model(model.input, model.output, name=f"member_{i}")
        y = x if side == size else keras.layers.Resizing(side, side, name=f"resize_{i}")(x)
        outputs.append(member(y))
    average = keras.layers.Average(name="average", dtype="float32")(outputs)
    return keras.Model(inputs, average, name="ensemble_classifier")
