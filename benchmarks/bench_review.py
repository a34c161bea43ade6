"""``xferclass review`` on clothing with faults injected: does training on the corrected
table beat training on the faulty data, on held-out images?

The faults are those of ``bench_inspect.py``, in a temporary copy of clothing's
``train/`` and ``validation/``: 5% of the training labels flipped (seeded), and 10
exact and 20 near copies of validation images added to ``train/`` (a leak).

A :class:`xferclass.review.Review` of the copy (the real ``inspect`` on
efficientnet_lite0) gives the items, and a simulated reviewer decides them the way a
person who knows the true labels would, through ``Review.decide`` as the web page does:

- a label issue: **accept** the suggestion when it is the true label, **another
  label** (the true one) when the given label is wrong and the suggestion too, else
  **keep**;
- a duplicate group that holds an injected copy: **exclude from training** (its
  training copies); other groups: **keep all** (genuine re-shoots and false groups
  cannot be told from the files alone);
- an outlier: **keep**.

The reviewer does not see any image ``inspect`` did not flag: flips it missed stay.
``Review.write_table`` then writes the corrected table, and ``fit`` (the defaults:
frozen backbone, Dense(128), 10 epochs, no validation split to choose an epoch from)
trains the same model on the faulty ``train/`` and on the corrected table's train
rows, for each training seed. Both are scored on ``validation/``, which neither
trained on, whole and without the 30 images whose copies leaked into the faulty
training data.

Run (from the repository root)::

    python benchmarks/bench_review.py              # about 15 minutes on 2 cores
    python benchmarks/bench_review.py --seeds 0    # one training seed
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import _bench

_bench.quiet_tensorflow()

import keras  # noqa: E402
import numpy as np  # noqa: E402
from bench_inspect import prepare  # noqa: E402

import xferclass  # noqa: E402
from xferclass.review import Review  # noqa: E402


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0, help="seed of the injected faults")
    parser.add_argument("--flip", type=float, default=0.05, help="fraction of labels flipped")
    parser.add_argument("--exact", type=int, default=10, help="exact copies injected")
    parser.add_argument("--near", type=int, default=20, help="near copies injected")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--no-record", action="store_true", help="print only")
    return parser.parse_args(argv)


def simulated_reviewer(review: Review, prepared: dict[str, Any]) -> dict[str, int]:
    """Decide every item as a person who knows the injected faults would; count each."""
    was = {review.dataset.relative(p): label for p, label in prepared["was"].items()}
    copies = {review.dataset.relative(c["copy"]) for c in prepared["copies"]}
    counts: dict[str, int] = {}
    for item in review.items:
        if item.kind == "label":
            given, true = item.labels[0], was.get(item.paths[0], item.labels[0])
            if item.suggested == true:
                action, label = "accept", None
            elif given != true:
                action, label = "relabel", true
            else:
                action, label = "keep", None
        elif item.kind == "duplicate":
            action, label = ("exclude" if copies & set(item.paths) else "keep_all"), None
        else:
            action, label = "keep", None
        review.decide(item.id, action, label=label)
        counts[f"{item.kind} {action}"] = counts.get(f"{item.kind} {action}", 0) + 1
    return counts


def train_and_score(train: Any, held_out: Any, leaked: np.ndarray, seed: int, args: Any) -> dict:
    keras.utils.set_random_seed(seed)
    model = xferclass.build_classifier(args.backbone, num_classes=len(train.class_names))
    xferclass.fit(model, train, epochs=args.epochs, verbose=0)
    probabilities = model.predict(held_out, verbose=0)
    labels = np.concatenate([y for _, y in held_out]).argmax(-1)
    right = probabilities.argmax(-1) == labels
    return {"accuracy": float(right.mean()), "accuracy_unleaked": float(right[~leaked].mean())}


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    info = _bench.machine()
    with tempfile.TemporaryDirectory(prefix="bench-review-") as folder:
        work = Path(folder)
        prepared = prepare(work, args)
        start = time.perf_counter()
        review = Review(work, backbone=args.backbone, seed=args.seed, verbose=1)
        inspect_seconds = time.perf_counter() - start
        decisions = simulated_reviewer(review, prepared)
        table = review.write_table()
        rows = review.corrected_rows()
        size = xferclass.get_backbone(args.backbone).default_size
        faulty = xferclass.load_image_dataset(work / "train", size, seed=0)
        corrected = xferclass.load_image_dataset(table, size, split="train", seed=0)
        held_out = xferclass.load_image_dataset(
            work / "validation", size, shuffle=False, class_names=faulty.class_names
        )
        sources = {str(Path(c["source"])) for c in prepared["copies"]}
        leaked = np.array([str(Path(p)) in sources for p in held_out.file_paths])
        runs = []
        for seed in args.seeds:
            runs.append({
                "seed": seed,
                "faulty": train_and_score(faulty, held_out, leaked, seed, args),
                "corrected": train_and_score(corrected, held_out, leaked, seed, args),
            })  # fmt: skip
            print(runs[-1], flush=True)
        flipped = {review.dataset.relative(p): w for p, w in prepared["was"].items()}
        fixed = sum(1 for r in rows if r["path"] in flipped and r["label"] == flipped[r["path"]])
        measured = {
            "train_images": prepared["train"] + len(prepared["copies"]),
            "flipped": len(flipped),
            "flips_fixed": fixed,
            "copies": len(prepared["copies"]),
            "copies_excluded": sum(
                1
                for r in rows
                if r["excluded"]
                and r["path"] in {review.dataset.relative(c["copy"]) for c in prepared["copies"]}
            ),  # fmt: skip
            "excluded": sum(1 for r in rows if r["excluded"]),
            "relabelled": sum(1 for r in rows if r["review"] == "relabelled"),
            "items": len(review.items),
            "decisions": decisions,
            "inspect_seconds": round(inspect_seconds, 1),
            "held_out": len(held_out.file_paths),
            "leaked_sources": int(leaked.sum()),
            "runs": runs,
        }
    info.finish()
    report(args, info, measured)


def _mean(runs: list[dict], which: str, key: str) -> tuple[float, float]:
    values = np.array([run[which][key] for run in runs])
    spread = values.std(ddof=1) / np.sqrt(len(values)) if len(values) > 1 else float("nan")
    return float(values.mean()), float(spread)


def report(args: argparse.Namespace, info: Any, measured: dict[str, Any]) -> None:
    runs = measured["runs"]
    rows = []
    for which in ("faulty", "corrected"):
        whole, whole_se = _mean(runs, which, "accuracy")
        clean, clean_se = _mean(runs, which, "accuracy_unleaked")
        rows.append([
            "faulty train/" if which == "faulty" else "the review's corrected table",
            f"{whole:.3f} ± {whole_se:.3f}", f"{clean:.3f} ± {clean_se:.3f}",
            " / ".join(f"{run[which]['accuracy']:.3f}" for run in runs),
        ])  # fmt: skip
    gain = np.array([r["corrected"]["accuracy"] - r["faulty"]["accuracy"] for r in runs])
    body = (
        f"{measured['train_images']} training images with {measured['flipped']} labels flipped "
        f"and {measured['copies']} copies of validation images added; {measured['items']} "
        f"findings, each decided by a simulated reviewer who knows the injected faults "
        f"(`inspect` and its cache: {measured['inspect_seconds']:.0f} s). The corrected table "
        f"relabels {measured['relabelled']} images ({measured['flips_fixed']} of the "
        f"{measured['flipped']} flips put right) and excludes {measured['excluded']} "
        f"({measured['copies_excluded']} of the {measured['copies']} injected copies).\n\n"
        f"Decisions: {', '.join(f'{k}: {v}' for k, v in sorted(measured['decisions'].items()))}."
        f"\n\n`fit` defaults ({args.backbone}, Dense(128), {args.epochs} epochs), training "
        f"seeds {', '.join(str(s) for s in args.seeds)}; accuracy on the "
        f"{measured['held_out']} validation images (mean ± standard error over seeds), and on "
        f"them without the {measured['leaked_sources']} whose copies leaked into the faulty "
        "training data:\n\n"
        + _bench.table(
            ["trained on", "held-out accuracy", "without the leaked ones", "per seed"], rows
        )  # fmt: skip
        + f"\n\nGain of the corrected table, paired by seed: {gain.mean():+.3f} "
        f"({', '.join(f'{g:+.3f}' for g in gain)})."
    )
    summary = {
        "benchmark": "review: training on the corrected table (clothing, faults injected)",
        "result": f"{gain.mean():+.3f} held-out accuracy over the faulty data",
        "target": "higher than the faulty data",
    }
    _bench.section(
        "review", "Review: the corrected table against the faulty data", info, body,
        write=not args.no_record, summary=summary, data=measured,
    )  # fmt: skip


if __name__ == "__main__":
    main()
