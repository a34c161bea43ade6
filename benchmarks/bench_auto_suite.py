"""The automatic recipe against its floor, on test images no choice was made on.

For each data set, seed and budget:

- floor: what a user gets from ``fit``'s defaults: ``build_classifier`` on the
  cheapest offline backbone (EfficientNet-Lite0) at its native 224 px, frozen,
  and ``fit(model, train, epochs=10)``;
- auto: ``xferclass.train_auto(train, budget=B)``, evaluated with the test-time
  views it chose.

Both are scored on the data set's ``test`` split (clothing: its ``validation``
folder, which the recipe never sees here), in accuracy and in the metric the
recipe was asked to maximise; next to them, the recipe's own held-out estimate,
so the table shows how far that estimate is from the test score. Test numbers
are reported, never used to choose anything.

Run::

    python benchmarks/make_suite_data.py --out /tmp/suite
    python benchmarks/bench_auto_suite.py --data digits=/tmp/suite/digits \\
        ordinal=/tmp/suite/ordinal clothing=../shared/data/clothing-dataset-small \\
        --budgets 1m 5m 15m --seeds 0 1 2

``--before OLD.json`` compares the runs of ``--out`` with those of the recipe before a change
(floor, before, after, per data set and budget) in the ``--section`` named (``auto_depth``,
features from every depth; ``auto_ladder``, the ladder of fine-tuning depths)::

    python benchmarks/bench_auto_suite.py --data digits=/tmp/suite/digits \
        ordinal=/tmp/suite/ordinal --budgets 5m --seeds 0 1 2 --no-floor \
        --out benchmarks/results/auto_depth_runs.json \
        --before benchmarks/results/auto_suite.json
    python benchmarks/bench_auto_suite.py --data ordinal=/tmp/suite/ordinal --budgets 5m \
        --seeds 0 1 2 --no-floor --out benchmarks/results/auto_ladder_runs.json \
        --before benchmarks/results/auto_depth_runs.json --section auto_ladder

``--precisions f32 auto`` runs the recipe once per setting of ``XFERCLASS_PRECISION``
(float32 only, then bfloat16 where it measures harmless), each from its own empty cache
of converted models, and records how many experiments each budget fitted and what they
scored, in the ``auto_precision`` section::

    python benchmarks/bench_auto_suite.py --data clothing=../shared/data/clothing-dataset-small \
        --budgets 5m --seeds 0 --no-floor --precisions f32 auto \
        --out benchmarks/results/auto_precision_runs.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import _bench

_bench.quiet_tensorflow()


def _test_dir(root: Path) -> Path:
    return root / "test" if (root / "test").is_dir() else root / "validation"


def _scores(model: Any, root: Path, size: int, names: list[str], tta: Any) -> dict[str, float]:
    import numpy as np

    import xferclass
    from xferclass.evaluation._headcv import score
    from xferclass.metrics import collect_predictions

    dataset = xferclass.load_image_dataset(_test_dir(root), size, shuffle=False, class_names=names)
    labels, probabilities = collect_predictions(model, dataset, tta=tta)
    truth = np.asarray(labels).argmax(-1)
    return {
        metric: score(metric, truth, np.asarray(probabilities))
        for metric in ("accuracy", "balanced_accuracy", "macro_f1")
    }


def run_floor(root: Path, seed: int) -> dict[str, Any]:
    import keras

    import xferclass

    started = time.monotonic()
    keras.utils.set_random_seed(seed)
    train = xferclass.load_image_dataset(root / "train", 224, seed=seed)
    model = xferclass.build_classifier(
        "efficientnet_lite0", num_classes=len(train.class_names), input_size=224
    )
    xferclass.fit(model, train, epochs=10, verbose=0, seed=seed)
    wall = time.monotonic() - started
    return {"wall_s": round(wall, 1),
            "test": _scores(model, root, 224, list(train.class_names), False)}  # fmt: skip


#: What each auto run records of its fine-tuning experiment.
FINE_TUNE_KEYS = ("measured", "base", "planned_epochs", "epochs", "score", "frozen_score",
                  "seconds", "trained_seconds", "wins", "unfreeze", "final", "depths",
                  "deeper_reason", "reason")  # fmt: skip


def run_auto(root: Path, seed: int, budget: str, metric: str) -> dict[str, Any]:
    import xferclass

    started = time.monotonic()
    result = xferclass.train_auto(root / "train", budget=budget, seed=seed, metric=metric)
    wall = time.monotonic() - started
    report = result.report
    tta = report["tta"]["choice"]
    return {
        "wall_s": round(wall, 1),
        "choice": report["choice"],
        "beats_floor": report["estimate"]["beats_floor"],
        "estimate": report["estimate"],
        "experiments": len(report["experiments"]),
        "experiment_kinds": [entry["experiment"] for entry in report["experiments"]],
        "experiment_seconds": [
            round(entry.get("caching_s", 0.0) + entry.get("comparison_s", 0.0))
            for entry in report["experiments"]
        ],
        "fine_tuned": bool(report["fine_tune"].get("wins")),
        "engines": report.get("engines", {}),
        "fine_tune": {k: v for k, v in report["fine_tune"].items() if k in FINE_TUNE_KEYS},
        "unfreeze": result.plan.unfreeze,
        "skipped": len(report["skipped"]),
        "test": _scores(
            result.model,
            root,
            result.plan.input_size,
            list(report["data"]["class_names"]),
            False if tta == "no" else tta,
        ),  # fmt: skip
    }


def xferclass_error() -> type[Exception]:
    from xferclass import XferclassError

    return XferclassError


def _mean_sd(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ({statistics.stdev(values):.3f})"


def latest(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each (kind, data, seed, budget, precision)'s last run: a rerun replaces what it
    measures again (runs before bfloat16 existed ran in float32)."""
    kept: dict[tuple[Any, ...], dict[str, Any]] = {}
    for r in results:
        kept[(r["kind"], r["data"], r["seed"], r.get("budget"), r.get("precision", "f32"))] = r
    return list(kept.values())


def precision_cache(precision: str) -> str:
    """An empty cache of converted models for one precision setting."""
    return _bench.empty_model_cache(f"xferclass-auto-{precision}-")


def precision_table(results: list[dict[str, Any]], metric: str) -> str:
    """Experiments fitted and test scores per budget and precision setting."""
    rows = []
    runs = [r for r in latest(results) if r["kind"] == "auto" and "precision" in r]
    for r in sorted(runs, key=lambda r: (r["data"], r["budget"], r["seed"], r["precision"])):
        if "refused" in r:
            rows.append([r["data"], r["budget"], r["seed"], r["precision"], "refused", "", "", ""])
            continue
        rows.append([
            r["data"], r["budget"], r["seed"], r["precision"], r["experiments"],
            f"{r['test'][metric]:.3f}", f"{r['estimate']['value']:.3f}", f"{r['wall_s']:.0f}",
        ])  # fmt: skip
    headers = ["data", "budget", "seed", "XFERCLASS_PRECISION", "experiments",
               f"test {metric}", "estimate", "wall s"]  # fmt: skip
    return _bench.table(headers, rows)


def _run_facts() -> dict[str, Any]:
    """The code and the machine's load when a run started."""
    import subprocess

    commit = subprocess.run(
        ["git", "describe", "--always", "--dirty"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return {"commit": commit, "load": [round(x, 2) for x in os.getloadavg()]}


def summarise(results: list[dict[str, Any]], metric: str) -> str:
    rows = []
    results = latest(results)
    keys = sorted({(r["data"], r["budget"]) for r in results if r["kind"] == "auto"})
    for name, budget in keys:
        runs = [
            r for r in results if r["kind"] == "auto" and (r["data"], r["budget"]) == (name, budget)
        ]
        autos = [r for r in runs if "refused" not in r]
        floors = [r for r in results if r["kind"] == "floor" and r["data"] == name]
        gaps = [a["estimate"]["value"] - a["test"][metric] for a in autos]
        rows.append([
            name, budget, f"{len(autos)}" + (f" (+{len(runs) - len(autos)} refused)"
                                              if len(runs) > len(autos) else ""),
            _mean_sd([f["test"][metric] for f in floors]),
            _mean_sd([a["test"][metric] for a in autos]),
            _mean_sd([a["estimate"]["value"] for a in autos]),
            f"{statistics.mean(gaps):+.3f}",
            f"{sum(a['beats_floor'] for a in autos)}/{len(autos)}",
            _mean_sd([f["wall_s"] for f in floors]), _mean_sd([a["wall_s"] for a in autos]),
        ])  # fmt: skip
    headers = ["data", "budget", "seeds", f"floor test {metric}", f"auto test {metric}",
               "auto estimate", "estimate - test", "auto left the floor", "floor wall s",
               "auto wall s"]  # fmt: skip
    return _bench.table(headers, rows)


def _choice_kind(choice: dict[str, Any]) -> str:
    """A returned choice in a few words: its head, and the depth a linear head reads."""
    if "ensemble" in choice:
        return "average of models"
    if choice.get("head") == "linear":
        return "linear, every depth" if choice.get("depth") == "every" else "linear, last layer"
    return "dense" + (f", {choice['heads']} heads" if choice.get("heads", 1) > 1 else "")


def _auto_runs(
    results: list[dict[str, Any]], name: str, budget: str, seeds: set[int] | None = None
) -> list[dict[str, Any]]:
    """The float32 auto runs of ``name`` at ``budget`` that gave a model (of ``seeds``)."""
    return [r for r in results if r["kind"] == "auto" and "refused" not in r
            and (r["data"], r["budget"]) == (name, budget)
            and r.get("precision", "f32") == "f32"
            and (seeds is None or r["seed"] in seeds)]  # fmt: skip


def _tuned(runs: list[dict[str, Any]]) -> str:
    """The depth each run's returned model was fine-tuned to, by seed ("no": frozen)."""
    return ", ".join(f"top {r['unfreeze']:.0%}" if r.get("unfreeze") else "no"
                     for r in sorted(runs, key=lambda r: r["seed"])) or "-"  # fmt: skip


def comparison_table(before: list[dict[str, Any]], after: list[dict[str, Any]], metric: str) -> str:
    """Floor, the recipe before and after a change, per data set and budget, over the seeds
    the runs after it share with those before."""
    before, after = latest(before), latest(after)
    rows = []
    keys = sorted({(r["data"], r["budget"]) for r in after if r["kind"] == "auto"})
    for name, budget in keys:
        new = _auto_runs(after, name, budget)
        seeds = {r["seed"] for r in new}
        old = _auto_runs(before, name, budget, seeds)
        floors = [r for r in before + after if r["kind"] == "floor" and r["data"] == name
                  and r["seed"] in seeds]  # fmt: skip
        kinds: dict[str, int] = {}
        for r in new:
            kinds[_choice_kind(r["choice"])] = kinds.get(_choice_kind(r["choice"]), 0) + 1
        rows.append([
            name, budget, ", ".join(map(str, sorted(seeds))),
            _mean_sd([f["test"][metric] for f in floors]),
            _mean_sd([r["test"][metric] for r in old]),
            f"{statistics.mean(r['experiments'] for r in old):.1f}" if old else "-",
            _mean_sd([r["test"][metric] for r in new]),
            f"{statistics.mean(r['experiments'] for r in new):.1f}",
            "; ".join(f"{k} x{v}" for k, v in sorted(kinds.items())),
            _tuned(old), _tuned(new),
        ])  # fmt: skip
    headers = ["data", "budget", "seeds", f"floor test {metric}", f"before: test {metric}",
               "before: experiments", f"after: test {metric}", "after: experiments",
               "after: returned", "before: fine-tuned", "after: fine-tuned"]  # fmt: skip
    return _bench.table(headers, rows)


#: What each section recorded by ``--before`` compares, by ``--section``.
CHANGES = {
    "auto_depth": "features from every depth and linear heads",
    "auto_ladder": "the ladder of fine-tuning depths",
    "auto_adapt": "adapting to the domain (features from every depth, linear heads, the "
    "ladder of fine-tuning depths)",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", nargs="+", required=True, help="NAME=FOLDER ...")
    parser.add_argument("--budgets", nargs="+", default=["1m", "5m", "15m"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--metric", default="accuracy")
    parser.add_argument("--no-floor", action="store_true", help="skip the floor runs")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/auto_suite.json"))
    parser.add_argument(
        "--precisions", nargs="+", choices=["f32", "auto"], default=None,
        help="run the recipe under each XFERCLASS_PRECISION, from an empty cache each",
    )  # fmt: skip
    parser.add_argument(
        "--before", type=Path, default=None,
        help="runs of the recipe before a change (an earlier --out): record the auto_depth "
        "section, floor, before and after, from them and --out's runs",
    )  # fmt: skip
    parser.add_argument(
        "--section", default="auto_depth",
        help="with --before: the section to record (auto_depth: features from every depth "
        "and linear heads; auto_ladder: the ladder of fine-tuning depths; auto_adapt: all "
        "of them, against the recipe before either)",
    )  # fmt: skip
    parser.add_argument("--no-docs", action="store_true", help="do not record the section")
    parser.add_argument(
        "--summary-only", action="store_true",
        help="run nothing: print (and with --precisions, record) the tables of --out's runs",
    )  # fmt: skip
    args = parser.parse_args()
    info = _bench.machine()
    results: list[dict[str, Any]] = []
    if args.out.exists():  # runs add to what earlier runs measured
        results = json.loads(args.out.read_text())["results"]
    for item in [] if args.summary_only else args.data:
        name, folder = item.split("=", 1)
        root = Path(folder)
        for seed in args.seeds:
            if not args.no_floor:
                facts = _run_facts()
                found = run_floor(root, seed)
                results.append({"kind": "floor", "data": name, "seed": seed, **found, **facts})
                print(json.dumps(results[-1]), flush=True)
            for budget in args.budgets:
                for precision in args.precisions or [None]:
                    tagged = {}
                    if precision is not None:
                        os.environ["XFERCLASS_PRECISION"] = precision
                        os.environ["XFERCLASS_CACHE_DIR"] = precision_cache(precision)
                        tagged = {"precision": precision}
                    facts = _run_facts()
                    try:
                        found = run_auto(root, seed, budget, args.metric)
                    except xferclass_error() as error:  # a refusal is a result too
                        found = {"refused": str(error).splitlines()[0]}
                    results.append({"kind": "auto", "data": name, "seed": seed,
                                    "budget": budget, **tagged, **found, **facts})  # fmt: skip
                    print(json.dumps(results[-1]), flush=True)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps({"machine": info.__dict__, "results": results},
                                           indent=1, default=str))  # fmt: skip
    print(summarise(results, args.metric))
    if args.before is not None:
        info.finish()
        before = json.loads(args.before.read_text())["results"]
        change = CHANGES[args.section]
        body = f"""
The recipe before {change} (runs kept in `{args.before.as_posix()}`, with their commits)
and after it (`{args.out.as_posix()}`), on the same data sets, seeds and budgets; the floor
is `fit`'s defaults. Test scores are on images the recipe never saw; "experiments" is what
the budget fitted; "returned" is the kind of model the runs after the change returned, and
"fine-tuned" the depth each run's model was fine-tuned to, by seed. The runs after it were
made at commit(s)
{", ".join(sorted({str(r.get("commit")) for r in results if r["kind"] == "auto"}))}, each
beside other work on the same 2 cores (load averages in the runs file).

{comparison_table(before, results, args.metric)}
"""
        _bench.section(args.section, f"{change[0].upper()}{change[1:]} "
                       "(`bench_auto_suite.py --before`)", info, body,
                       write=not args.no_docs)  # fmt: skip
    if args.precisions:
        info.finish()
        body = f"""
Each run from an empty cache of converted models (conversions paid in the run), seed and
budget as listed; `f32` keeps every frozen pass in float32, `auto` lets `engine="auto"`
run them in bfloat16 where the CPU has it and a probe finds it harmless. "experiments" is
what the budget fitted; the test score is on images the recipe never saw.

{precision_table(results, args.metric)}
"""
        _bench.section("auto_precision", "The recipe's budget per precision (`bench_auto_suite.py "
                       "--precisions`)", info, body, write=not args.no_docs)  # fmt: skip


if __name__ == "__main__":
    main()
