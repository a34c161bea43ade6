"""How optimistic the automatic recipe's held-out estimate is when an average's members
are chosen on every fold, against rebuilding the averages without the fold scored.

An average (``ensemble_candidates``) takes the best recipe of each (backbone, size) pair
and the best pairs, by their scores. Built once on every image, those choices saw the
labels of the fold that the nested estimate then scores the average on: the estimate
is the best of many recipes' in-sample luck. ``_headcv.select(..., derived=...)``
rebuilds the averages for each fold from the other folds' scores only.

The candidates are simulated out-of-fold probabilities: each pair shares a signal
(what its backbone sees), each recipe adds its own noise (what its head, weights and
views add), and a second set of the same kind, on new labels, stands for the test
images. Reported: each estimate minus the chosen candidate's test score, averaged over
the seeds.

Run::

    python benchmarks/bench_nested_averages.py
    python benchmarks/bench_nested_averages.py --seeds 20 --images 900 --recipes 40
"""

from __future__ import annotations

import argparse

import _bench

_bench.quiet_tensorflow()

import numpy as np  # noqa: E402

from xferclass.auto._ensemble import Ensemble, ensemble_candidates  # noqa: E402
from xferclass.auto._search import Choice  # noqa: E402
from xferclass.evaluation import _headcv  # noqa: E402

WEIGHTS = ("none", "sqrt", "balanced")


def one_run(seed: int, images: int, classes: int, pairs: int, recipes: int) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, images)
    test_labels = rng.integers(0, classes, images)
    fold = rng.permutation(np.arange(images) % 5)
    oof: dict[Choice, np.ndarray] = {}
    test: dict[Choice, np.ndarray] = {}

    def probabilities(truth: np.ndarray, shared: np.ndarray) -> np.ndarray:
        logits = shared + rng.normal(size=(images, classes))
        logits[np.arange(images), truth] += 1.2
        e = np.exp(logits)
        return e / e.sum(1, keepdims=True)

    for p in range(pairs):
        shared, test_shared = rng.normal(size=(2, images, classes))
        for r in range(recipes):
            choice = Choice(f"backbone{p}", 224, "plain", WEIGHTS[r % 3], r + 1, "none")
            oof[choice] = probabilities(labels, shared)
            test[choice] = probabilities(test_labels, test_shared)

    def test_score(key: object) -> float:
        members = key.members if isinstance(key, Ensemble) else (key,)
        mean = np.mean([test[m] for m in members], axis=0)
        return float(np.mean(np.argmax(mean, 1) == test_labels))

    leaky = {**oof, **ensemble_candidates(oof, labels, "accuracy")}
    before = _headcv.select(leaky, labels, fold, "accuracy")

    def averages(rows: np.ndarray) -> dict:
        return dict(ensemble_candidates(oof, labels, "accuracy", rows))

    now = _headcv.select(oof, labels, fold, "accuracy", derived=averages)
    assert before.chosen == now.chosen  # the same model is returned either way
    truth = test_score(now.chosen)
    return {"before": before.estimate - truth, "now": now.estimate - truth,
            "average": float(isinstance(now.chosen, Ensemble))}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--images", type=int, default=900)
    parser.add_argument("--classes", type=int, default=4)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--recipes", type=int, default=40, help="recipes per pair")
    args = parser.parse_args()
    runs = [one_run(s, args.images, args.classes, args.pairs, args.recipes)
            for s in range(args.seeds)]  # fmt: skip
    print(f"{args.seeds} seeds, {args.images} images, {args.classes} classes, "
          f"{args.pairs} pairs x {args.recipes} recipes; an average returned in "
          f"{sum(r['average'] for r in runs):.0f}")  # fmt: skip
    for key, name in (("before", "members chosen on every fold"),
                      ("now", "averages rebuilt without the fold")):  # fmt: skip
        values = np.array([r[key] for r in runs])
        print(
            f"estimate - test, {name}: {values.mean():+.4f} "
            f"(sd {values.std(ddof=1):.4f}, se {values.std(ddof=1) / np.sqrt(len(values)):.4f})"
        )


if __name__ == "__main__":
    main()
