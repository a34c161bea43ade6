"""The automatic recipe against the frozen-head default, at equal wall time.

For each seed, on one folder with ``train/``, ``validation/`` and optionally
``test/``:

- default: what ``xferclass train DIR --backbone efficientnet_lite0 --epochs 10``
  did before the automatic recipe: the frozen backbone at its native size, 10
  epochs of the head, the model of the last epoch. Its wall time ``T`` (loading,
  building, training) is measured;
- auto at ``T``: ``xferclass.train_auto`` with ``budget=T``, the same wall time;
- auto at ``--budget`` (when given): a longer budget.

Every model is then evaluated on validation and, when there is one, on test
(test numbers are reported, never used to choose anything). The automatic recipe
chooses its epoch on validation, so its validation number is optimistic; test is
the fair comparison.

Run::

    python benchmarks/make_hard_data.py --out /tmp/hard-textures
    python benchmarks/bench_auto.py --data /tmp/hard-textures --seeds 0 1 2
    python benchmarks/bench_auto.py --data ../shared/data/clothing-dataset-small --seeds 1 \\
        --budget 15m --no-default
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import _bench

_bench.quiet_tensorflow()


def evaluate(model: Any, root: Path, size: int, class_names: list[str], tta: bool) -> dict:
    import inspect

    import xferclass

    scores = {}
    for split in ("validation", "test"):
        if not (root / split).is_dir():
            continue
        dataset = xferclass.load_image_dataset(
            root / split, size, shuffle=False, class_names=class_names
        )
        options = {}
        if tta and "tta" in inspect.signature(xferclass.evaluate_regression_style).parameters:
            options["tta"] = True
        scores[split] = xferclass.evaluate_regression_style(model, dataset, **options)["accuracy"]
    return scores


def run_default(root: Path, seed: int) -> tuple[float, dict]:
    import keras

    import xferclass

    keras.utils.set_random_seed(seed)
    start = time.perf_counter()
    spec = xferclass.get_backbone("efficientnet_lite0")
    train = xferclass.load_image_dataset(root / "train", spec.default_size, seed=seed)
    validation = xferclass.load_image_dataset(
        root / "validation", spec.default_size, shuffle=False, class_names=train.class_names
    )
    model = xferclass.build_classifier(spec.name, num_classes=len(train.class_names))
    xferclass.fit(model, train, validation, epochs=10, verbose=0, seed=seed)
    wall = time.perf_counter() - start
    scores = evaluate(model, root, spec.default_size[0], list(train.class_names), tta=False)
    return wall, scores


def run_auto(root: Path, seed: int, budget: float | str) -> tuple[float, dict, dict]:
    import keras

    import xferclass

    keras.backend.clear_session()
    start = time.perf_counter()
    result = xferclass.train_auto(
        root / "train", root / "validation", budget=budget, seed=seed, verbose=0
    )
    wall = time.perf_counter() - start
    report = result.report
    tta = report["tta"].get("choice") == "flip"
    scores = evaluate(result.model, root, result.plan.size, report["data"]["class_names"], tta=tta)
    return wall, scores, report


def summary(report: dict) -> str:
    plan = report["plan"]
    parts = [f"{plan['backbone'].replace('efficientnet_', '')} {plan['size']}px"]
    parts.append(f"ft {plan['fine_tune_epochs']}" if plan["fine_tune_epochs"] else "head only")
    if plan["augment"]:
        parts.append(f"{plan['augment']} x{plan['augment_views']}")
    if plan["class_weight"]:
        parts.append("class weights")
    if report["tta"].get("choice") == "flip":
        parts.append("TTA")
    return ", ".join(parts)


def main() -> None:
    import logging

    import xferclass

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="folder with train/ and validation/")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--budget", default=None, help="also run auto at this budget")
    parser.add_argument("--no-default", action="store_true", help="skip the default recipe")
    parser.add_argument("--equal-budget", type=float, default=None,
                        help="budget of 'auto at T' when --no-default (seconds)")  # fmt: skip
    parser.add_argument("--json", default=None, help="also write the rows to this file")
    parser.add_argument("--no-docs", action="store_true", help="do not write docs/benchmarks.md")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    root = Path(args.data)
    info = _bench.machine()
    rows: list[dict[str, Any]] = []
    for seed in args.seeds:
        equal = args.equal_budget
        if not args.no_default:
            wall, scores = run_default(root, seed)
            rows.append(
                {"recipe": "default (frozen Lite0, 10 ep)", "seed": seed, "wall_s": wall,
                 **scores, "choices": "lite0 224px, head only"}
            )  # fmt: skip
            print(rows[-1], flush=True)
            equal = wall
        runs = [("auto at T", equal)] if equal else []
        if args.budget:
            runs.append((f"auto at {args.budget}", args.budget))
        for name, budget in runs:
            try:
                wall, scores, report = run_auto(root, seed, budget)
            except xferclass.XferclassError as refused:  # budget too small: say so
                rows.append({"recipe": name, "seed": seed, "wall_s": 0.0, "budget": budget,
                             "choices": f"refused: {str(refused)[:90]}"})  # fmt: skip
                print(rows[-1], flush=True)
                continue
            rows.append({"recipe": name, "seed": seed, "wall_s": wall, "budget": budget,
                         **scores, "choices": summary(report)})  # fmt: skip
            print(rows[-1], flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2, default=str))
    body = _bench.table(
        ["recipe", "seed", "choices", "wall s", "validation", "test"],
        [
            [r["recipe"], r["seed"], r["choices"], f"{r['wall_s']:.0f}",
             f"{r.get('validation', float('nan')):.3f}", f"{r.get('test', float('nan')):.3f}"]
            for r in rows
        ],
    )  # fmt: skip
    means = []
    for recipe in dict.fromkeys(r["recipe"] for r in rows):
        chosen = [r for r in rows if r["recipe"] == recipe]
        for split in ("validation", "test"):
            values = [r[split] for r in chosen if split in r]
            if values:
                spread = statistics.pstdev(values) if len(values) > 1 else 0.0
                means.append(f"- {recipe}, {split}: mean {statistics.mean(values):.3f} "
                             f"(sd {spread:.3f}, n={len(values)})")  # fmt: skip
        walls = [r["wall_s"] for r in chosen if r["wall_s"]]
        if walls:
            means.append(f"- {recipe}: mean wall {statistics.mean(walls):.0f} s")
    body += "\n\n" + "\n".join(means)
    _bench.section(
        f"auto-{root.name}", f"Automatic recipe against the frozen-head default: {root.name}",
        info, body, write=not args.no_docs,
    )  # fmt: skip


if __name__ == "__main__":
    main()
