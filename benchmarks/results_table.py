"""The benchmark sections of docs/, built from the results in ``benchmarks/results/``.

Every measured section of ``docs/benchmarks*.md`` (and the exported formats' table in
``docs/deploy.md``) is rendered from a results file and written between
``<!-- BEGIN name -->`` and ``<!-- END name -->`` markers. ``PAGE_OF`` says which pages
show each section. ``tests/test_benchmark_results.py`` renders every section again and
checks that its pages hold it byte for byte, and that every marked section of a
``docs/benchmarks*.md`` page has a results file, so the files and the pages cannot drift
apart.

Run (from the repository root)::

    python benchmarks/results_table.py           # rewrite the sections
    python benchmarks/results_table.py --check   # exit 1 when a page is stale

Results files:

- a *section record*, ``benchmarks/results/<section>.json``: ``{"section": name, "runs":
  [...]}``, oldest run first; the pages show the last. ``_bench.section`` (every
  ``bench_*.py`` script) appends a run each time a script writes its section: its
  ``title``, ``command``, ``commit`` (``git rev-parse --short HEAD``, ``-dirty`` with
  uncommitted changes to tracked files), ``date``, ``machine``, ``load``, ``software``
  and ``body``: the notes as text and the tables as headers and rows (``parse_body``).
  A run may carry a ``summary`` (its row of the summary table in docs/benchmarks.md)
  and ``data`` (the script's raw figures). Runs copied from the pages before results
  were kept as data have the commit ``UNKNOWN_COMMIT``.
- files with a layout of their own (``SPECIAL``):

  - ``auto_suite.json``: the runs of ``benchmarks/bench_auto_suite.py`` (the automatic
    recipe against its floor, on test images no choice was made on). A rerun of the
    same data, seed and budget replaces the earlier run in the tables, as in
    ``bench_auto_suite.latest``.
  - ``engine_scaling.json``: the runs of ``benchmarks/bench_engine.py --scaling``
    (``engine="auto"`` against Keras by the number of images), of
    ``bench_engine_first_run.py`` and of ``bench_epoch_ends.py``, as recorded from the
    docs.
  - ``delivered.json``: the runs of ``benchmarks/bench_delivered.py`` (the saved model,
    by hand and in every export, against the recipe's estimate).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DOCS = ROOT / "docs"

Run = Mapping[str, Any]


# ------------------------------------------------------------------------------ helpers


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A Markdown table (the format of ``_bench.table``)."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def mean_sd(values: Sequence[float], digits: int = 3) -> str:
    """``mean (sd)``, or the value alone for one value, or ``-`` for none."""
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ({statistics.stdev(values):.{digits}f})"


def seconds(budget: str) -> float:
    """``"90s"``, ``"15m"``, ``"1h"`` in seconds (the budgets the suite records)."""
    units = {"s": 1, "m": 60, "h": 3600}
    text = budget.strip().lower()
    if text and text[-1] in units:
        return float(text[:-1]) * units[text[-1]]
    return float(text)


def signed(value: float) -> str:
    """``+0.012``; a value that rounds to zero is ``+0.000``, never ``-0.000``."""
    return f"{0.0 if abs(value) < 0.0005 else value:+.3f}"


def short(backbone: str) -> str:
    """``efficientnet_lite2`` -> ``Lite2``; other names as they are."""
    prefix = "efficientnet_lite"
    return "Lite" + backbone[len(prefix) :] if backbone.startswith(prefix) else backbone


def block(name: str, markdown: str) -> str:
    """A section as ``_bench.write_markers`` writes it, markers included."""
    return f"<!-- BEGIN {name} -->\n{markdown.strip()}\n<!-- END {name} -->"


# ------------------------------------------------------------------------------ auto suite

AUTO_TITLE = "Automatic recipe against its floor (`bench_auto_suite.py`)"

AUTO_INTRO = """\
`benchmarks/bench_auto_suite.py` trains the floor (what `fit`'s defaults give:
EfficientNet-Lite0 at 224 px, frozen, 10 epochs) and `train_auto(train, budget=B)` on
each data set, and scores both on test images that no choice was made on; next to them,
the recipe's own held-out estimate. Every run is in `benchmarks/results/auto_suite.json`
with the commit it ran at (`git describe --always --dirty` at its start: `-dirty` means
uncommitted changes) and the machine's load. The data:

- **ordinal** (`benchmarks/make_suite_data.py`): generated grades of one crack defect,
  grayscale, 4 ordinal classes whose neighbours look alike, labels flipped to the
  neighbouring grade near the boundaries (about 11 %, in test too), 14:1 imbalance,
  900 training and 450 test images;
- **digits**: scikit-learn's 1,797 8x8 scans, upscaled to 64 px, split 60/40;
- **clothing**: `clothing-dataset-small`, trained on `train/` (3,068 images), tested on
  `validation/` (341), which the recipe never sees here.

```bash
python benchmarks/make_suite_data.py --out /tmp/suite
python benchmarks/bench_auto_suite.py --data ordinal=/tmp/suite/ordinal \\
    digits=/tmp/suite/digits clothing=../shared/data/clothing-dataset-small \\
    --budgets 1m 5m 15m --seeds 0 1 2
python benchmarks/results_table.py      # this section, from the results file
```

The runs shared a 2-core AMD EPYC machine (no GPU) with other work, often a run of the
test suite: a budget bought less than it would on an idle machine, and wall times are
rough. The load column is the 1-minute load average when the run started."""

AUTO_NOTES = """\
- *seeds*: runs kept (a rerun of a data set, seed and budget replaces the earlier one);
  "+N refused": runs that refused because the floor alone needed more than the budget.
  The floor's column is the mean (sd) of its own runs.
- *left the floor*: runs that returned something other than the floor, fine-tuning
  included; *averaged heads*: runs whose model is, or has as a member, 5 averaged heads;
  *fine-tuned*: runs that kept a fine-tuning.
- *estimate - test*: the recipe's held-out estimate minus the test score, mean over
  the runs. Test scores are reported, never used to choose anything."""


def latest(results: Iterable[Run]) -> list[Run]:
    """Each (kind, data, seed, budget)'s last run: a rerun replaces what it measures again."""
    kept: dict[tuple[Any, ...], Run] = {}
    for run in results:
        kept[(run["kind"], run["data"], run["seed"], run.get("budget"))] = run
    return list(kept.values())


def _members(choice: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return list(choice.get("ensemble", [choice]))


def averaged_heads(run: Run) -> bool:
    """Whether the returned model is, or has as a member, averaged heads."""
    return any(int(m.get("heads", 1)) > 1 for m in _members(run.get("choice", {})))


def fine_tuned(run: Run) -> bool:
    return bool(run.get("fine_tuned"))


def returned(run: Run) -> str:
    """What a run returned, in a few words."""
    if "refused" in run:
        return "refused: " + str(run["refused"]).split(":")[0]
    if not run["beats_floor"]:
        return "the floor's recipe"
    choice = run["choice"]
    members = _members(choice)
    names = " + ".join(
        f"{short(m['backbone'])} {m['size']}" + (" (5 heads)" if m.get("heads", 1) > 1 else "")
        for m in members
    )
    views = sorted({str(m["train_views"]) for m in members})
    tta = str(choice.get("tta", members[0].get("tta", "none")))
    text = f"{names}; views {', '.join(views)}; TTA {tta}"
    if fine_tuned(run):
        top = float(run.get("unfreeze") or 0.15)
        text += f"; top {top:.0%} fine-tuned"
    return text


def fine_tuning(run: Run) -> str:
    """The fine-tuning experiment of a run: kept or not, and its epochs."""
    found = run.get("fine_tune")
    if found is None:  # recorded before the suite kept the experiment's details
        return "kept" if fine_tuned(run) else "-"
    if not found.get("measured"):
        return "not measured"
    planned = found.get("planned_epochs", found["epochs"])
    epochs = f"{found['epochs']}" + (f" of {planned}" if planned != found["epochs"] else "")
    unit = "epoch" if found["epochs"] == 1 and planned == 1 else "epochs"
    text = f"{'kept' if found['wins'] else 'not kept'}, {epochs} {unit}"
    deeper = found.get("deeper") or {}  # runs recorded before the ladder of depths
    if deeper.get("measured"):
        text += f"; top 30 % {'kept' if deeper['wins'] else 'not kept'}"
    depths = found.get("depths") or []
    if len(depths) > 1:
        text += "; top " + ", ".join(f"{d['unfreeze']:.0%}" for d in depths) + " measured"
        if found["wins"]:
            text += f", top {found['unfreeze']:.0%} kept"
    return text


def _order(run: Run) -> tuple[Any, ...]:
    budget = run.get("budget")
    return (run["data"], seconds(budget) if budget else 0.0, run["seed"])


def _summary(runs: Sequence[Run], metric: str) -> str:
    autos = [r for r in runs if r["kind"] == "auto"]
    keys = sorted({(r["data"], r["budget"]) for r in autos}, key=lambda k: (k[0], seconds(k[1])))
    rows = []
    for name, budget in keys:
        group = [r for r in autos if (r["data"], r["budget"]) == (name, budget)]
        done = [r for r in group if "refused" not in r]
        floors = [r["test"][metric] for r in runs if r["kind"] == "floor" and r["data"] == name]
        refused = len(group) - len(done)
        gaps = [r["estimate"]["value"] - r["test"][metric] for r in done]
        rows.append([
            name, budget, f"{len(done)}" + (f" (+{refused} refused)" if refused else ""),
            mean_sd(floors), mean_sd([r["test"][metric] for r in done]),
            mean_sd([r["estimate"]["value"] for r in done]),
            signed(statistics.mean(gaps)) if gaps else "-",
            f"{sum(bool(r['beats_floor']) for r in done)}/{len(done)}",
            f"{sum(averaged_heads(r) for r in done)}/{len(done)}",
            f"{sum(fine_tuned(r) for r in done)}/{len(done)}",
            mean_sd([r["wall_s"] for r in done], 1),
        ])  # fmt: skip
    headers = ["data", "budget", "seeds", f"floor test {metric}", f"auto test {metric}",
               "auto estimate", "estimate - test", "left the floor", "averaged heads",
               "fine-tuned", "auto wall s"]  # fmt: skip
    return table(headers, rows)


def _each_run(runs: Sequence[Run], metric: str) -> str:
    rows = []
    for run in sorted(runs, key=_order):
        done = "refused" not in run
        estimate = run.get("estimate")
        rows.append([
            run["data"], run.get("budget") or "floor", run["seed"],
            f"{run['test'][metric]:.3f}" if done else "-",
            f"{estimate['value']:.3f} ± {estimate['standard_error']:.3f}" if estimate else "-",
            signed(estimate["value"] - run["test"][metric]) if estimate and done else "-",
            "`fit`'s defaults" if run["kind"] == "floor" else returned(run),
            fine_tuning(run) if run["kind"] == "auto" and done else "-",
            f"{run['wall_s']:.0f}" if run.get("wall_s") is not None else "-",
            f"{run['load'][0]:.1f}" if run.get("load") else "-",
            f"`{run['commit']}`" if run.get("commit") else "not recorded",
        ])  # fmt: skip
    headers = ["data", "budget", "seed", f"test {metric}", "estimate ± se", "estimate - test",
               "returned", "fine-tuning", "wall s", "load", "commit"]  # fmt: skip
    return table(headers, rows)


def _kind(run: Run) -> str:
    if not run["beats_floor"]:
        return "the floor"
    if fine_tuned(run):
        return "fine-tuned"
    if "ensemble" in run["choice"]:
        return "an average of models"
    return "averaged heads" if averaged_heads(run) else "one head"


def _calibration(runs: Sequence[Run], metric: str) -> str:
    done = [r for r in runs if r["kind"] == "auto" and "refused" not in r]
    kinds = ["the floor", "one head", "averaged heads", "an average of models", "fine-tuned"]
    rows = []
    for kind in kinds:
        gaps = [r["estimate"]["value"] - r["test"][metric] for r in done if _kind(r) == kind]
        if gaps:
            spread = f"{signed(min(gaps))} to {signed(max(gaps))}"
            rows.append([kind, len(gaps), signed(statistics.mean(gaps)), spread])
    return table(["returned", "runs", "estimate - test, mean", "range"], rows)


def auto_suite(data: Mapping[str, Any]) -> str:
    """The section of ``auto_suite.json``: summary, calibration and every run kept."""
    runs = latest(data["results"])
    metrics = {r["estimate"]["metric"] for r in runs if r.get("estimate")}
    metric = metrics.pop() if len(metrics) == 1 else "accuracy"
    return "\n\n".join([
        f"## {AUTO_TITLE}", AUTO_INTRO, _summary(runs, metric), AUTO_NOTES,
        "How far the held-out estimate was from the test score, by what the run returned:",
        _calibration(runs, metric),
        "Each run kept (budget *floor*: the floor's own run):", _each_run(runs, metric),
    ])  # fmt: skip


# ------------------------------------------------------------------------------ engine scaling

ENGINE_TITLE = '`engine="auto"` against Keras by the size of the pass (`bench_engine.py --scaling`)'

ENGINE_INTRO = """\
Images/s of `fit`'s caching pass (EfficientNet-Lite0, ImageNet weights, 224 px, batches of
32, clothing images) on Keras, on `engine="auto"` on a first run (an empty cache: nothing
converted, no ratio measured on this machine) and on the remembered run that follows it,
each the median of interleaved rounds, each round from an empty cache; "raw ORT / Keras"
is the forward pass alone on 4 preloaded batches, and "share of raw gain" is
`(auto / keras - 1) / (raw - 1)`. Machine: {machine}, shared with other work (the load
column). "recorded in" is the commit that recorded the figures; "code" says which code
they measured. The runs are in `benchmarks/results/engine_scaling.json`. Before the tf.data
fix (3db2449), every pass ended only when tf.data's autotuning thread next woke, which
made passes of the same code differ by up to 1.8x."""


def _figures(values: Sequence[float]) -> str:
    return ", ".join(f"{v:g}" for v in values)


def _ratio(value: float, base: float) -> str:
    return f"{value / base:.2f}x"


def _share(ratio: float, raw: float) -> str:
    """``(ratio - 1) / (raw - 1)``: the share of the raw forward-pass gain a pass kept."""
    return f"{(ratio - 1) / (raw - 1):.0%}" if raw != 1 else "-"


def engine_scaling(data: Mapping[str, Any]) -> str:
    """The section of ``engine_scaling.json``: every scaling run, the first-run timing and
    the epoch ends, oldest first."""
    rows = []
    for run in data["runs"]:
        for row in run["rows"]:
            raw, keras = row["raw_ort_over_keras"], row["keras"]
            first, remembered = row["auto_first"], row["auto_remembered"]
            rows.append([
                run["date"], run["code"], run["load"], row["images"], f"{raw:.2f}x",
                f"{keras:.1f}", f"{first:.1f} ({row['auto_first_chose']})",
                _ratio(first, keras), _share(first / keras, raw), f"{remembered:.1f}",
                _ratio(remembered, keras), _share(remembered / keras, raw),
                f"`{run['recorded_in']}`",
            ])  # fmt: skip
    headers = ["date", "code", "load", "images", "raw ORT / Keras", "cache: keras",
               "auto, first run (chose)", "first / keras", "share of raw gain",
               "auto, remembered", "remembered / keras", "share of raw gain",
               "recorded in"]  # fmt: skip
    rounds = [
        [run["code"], *(_figures(run["rounds"][key]) for key in
                        ("keras", "auto_first", "auto_remembered", "raw_ort_over_keras"))]
        for run in data["runs"] if "rounds" in run
    ]  # fmt: skip
    first = data["first_run"]
    first_rows = [[r["when"], _figures(r["keras"]), _figures(r["auto_first"]),
                   " s, ".join(_figures([s]) for s in r["slowest_batch_s"]) + " s",
                   _figures(r["auto_remembered"])] for r in first["rows"]]  # fmt: skip
    ends = data["epoch_ends"]
    end_rows = [[r["loop"], _figures(r["on"]), _figures(r["off"]),
                 f"{statistics.median(r['on']) / statistics.median(r['off']):.2f}x"]
                for r in ends["rows"]]  # fmt: skip
    commands = sorted({run["command"] for run in data["runs"]}, key=len)
    return "\n\n".join([
        f"## {ENGINE_TITLE}", ENGINE_INTRO.format(machine=data["machine"]),
        "Commands: " + "; ".join(f"`{c}`" for c in commands) + ".",
        table(headers, rows),
        "Each round's figures, where recorded (images/s; the last column is the raw ratio):",
        table(["code", "Keras", "auto, first run", "auto, remembered", "raw ORT / Keras"],
              rounds),
        f"The first run batch by batch: `{first['command']}` ({first['date']}, "
        f"{first['code']}, recorded in `{first['recorded_in']}`); {first['about']}:",
        table(["when", "Keras", "auto, first run", "its slowest batch", "auto, remembered"],
              first_rows),
        f"Training epochs and tf.data's autotuning: `{ends['command']}` ({ends['date']}, "
        f"load {ends['load']}, recorded in `{ends['recorded_in']}`); {ends['about']}; "
        "the ratio is of the medians:",
        table(["loop", "autotuning on (s)", "off (s)", "on / off"], end_rows),
    ])  # fmt: skip


# ------------------------------------------------------------------------------ delivered

DELIVERED_TITLE = "The model delivered against the model measured (`bench_delivered.py`)"

DELIVERED_INTRO = """\
`benchmarks/bench_delivered.py` runs `train_auto` on `DATA/train` and scores, on held-out
images the recipe never saw: the saved model through `xferclass evaluate` with no flags,
the same model with the recipe's test-time views applied by hand (the classifier inside
it, averaged over the views by `predict(tta=...)`), and every exported format run by
its own runtime on the pixels `read_images` decodes. Next to them, the recipe's own
held-out estimate. Every run is in `benchmarks/results/delivered.json`.

```bash
python benchmarks/make_suite_data.py --out /tmp/suite
python benchmarks/bench_delivered.py --data /tmp/suite/ordinal --held-out test --budget 10m
python benchmarks/bench_delivered.py --budget 5m    # clothing: train/, scored on validation/
```"""

DELIVERED_COLUMNS = (
    ("estimate", "estimate"), ("evaluate, no flags", "xferclass evaluate"),
    ("by hand", "by hand"), ("SavedModel", "export saved_model"), ("ONNX", "export onnx"),
    ("OpenVINO", "export openvino"), ("LiteRT", "export litert,"),
    ("LiteRT int8", "export litert int8"),
)  # fmt: skip


def delivered(runs: Sequence[Run]) -> str:
    """The section of ``delivered.json``: one row per run."""
    rows = []
    for run in runs:
        scores = run["accuracy"]
        found = [next((f"{v:.4f}" for k, v in scores.items() if k.startswith(prefix)), "-")
                 for _, prefix in DELIVERED_COLUMNS]  # fmt: skip
        data = Path(run.get("data") or "clothing").name
        plan = run["returned"]
        rows.append([
            f"{data} ({run.get('held_out', 'validation')})", run["budget"], run["seed"],
            f"`{run['commit']}`", f"{plan['backbone']} {plan['input_size']} px",
            run["tta"], f"{run['trained_s']:.0f} s", *found,
        ])  # fmt: skip
    headers = ["data (scored on)", "budget", "seed", "commit", "returned", "views inside",
               "took", *[name for name, _ in DELIVERED_COLUMNS]]  # fmt: skip
    machines = sorted({run["machine"] for run in runs})
    return "\n\n".join([
        f"## {DELIVERED_TITLE}", DELIVERED_INTRO, table(headers, rows),
        "Machines: " + "; ".join(machines) + ". Accuracy on the held-out images; int8 "
        "LiteRT is calibrated on about 64 of them (pixels only, no labels).",
    ])  # fmt: skip


# ------------------------------------------------------------------------------ sections as data

#: The commit of a run recorded before the scripts kept their results as data.
UNKNOWN_COMMIT = "unknown (before results were kept as data)"

_SEPARATOR = re.compile(r"^\|(---\|)+$")
_HASH = re.compile(r"^[0-9a-f]{7,40}(-dirty)?$")


def _table_block(lines: Sequence[str]) -> dict[str, Any] | None:
    """``{"headers", "rows"}`` of a table as ``table`` writes it; None for anything else."""
    if len(lines) < 2 or not _SEPARATOR.match(lines[1]):
        return None
    if not all(line.startswith("| ") and line.endswith(" |") for line in [lines[0], *lines[2:]]):
        return None
    headers, *rows = [line[2:-2].split(" | ") for line in [lines[0], *lines[2:]]]
    if table(headers, rows) != "\n".join(lines):  # only what renders back as it was
        return None
    return {"headers": headers, "rows": rows}


def parse_body(markdown: str) -> list[dict[str, Any]]:
    """A section's markdown as data: ``{"text": ...}`` and ``{"headers", "rows"}`` blocks.

    Paragraphs (anything between blank lines) are kept as they are written; a table is
    kept as its header and its rows of cells. ``render_body`` gives the markdown back.
    """
    blocks: list[dict[str, Any]] = []
    for chunk in re.split(r"\n[ \t]*\n", markdown.strip("\n")):
        groups: list[tuple[bool, list[str]]] = []
        for line in chunk.strip("\n").splitlines():
            is_table = line.startswith("|")
            if groups and groups[-1][0] == is_table:
                groups[-1][1].append(line)
            else:
                groups.append((is_table, [line]))
        for is_table, lines in groups:
            found = _table_block(lines) if is_table else None
            blocks.append(found if found is not None else {"text": "\n".join(lines)})
    return blocks


def render_body(blocks: Sequence[Mapping[str, Any]]) -> str:
    return "\n\n".join(
        table(b["headers"], b["rows"]) if "headers" in b else str(b["text"]) for b in blocks
    )


def provenance(run: Run) -> str:
    """One line: the command, the commit, the date and the machine of a run."""
    command = run.get("command")
    commands = [command] if isinstance(command, str) else list(command or [])
    commit = str(run.get("commit") or UNKNOWN_COMMIT)
    parts = ["Run: " + " and ".join(f"`{c}`" for c in commands)] if commands else []
    parts.append(f"commit `{commit}`" if _HASH.match(commit) else f"commit {commit}")
    parts += [str(run[key]) for key in ("date", "machine") if run.get(key)]
    if run.get("load"):
        parts.append(f"load average {run['load']}")
    if run.get("software"):
        parts.append(str(run["software"]))
    return "; ".join(parts) + "."


def render_run(run: Run) -> str:
    """A run's section: its title, where and when it ran, its tables and notes."""
    return "\n\n".join([f"## {run['title']}", provenance(run), render_body(run["body"])])


def is_record(data: Any) -> bool:
    """Whether ``data`` is a section record: ``{"section": name, "runs": [...]}``."""
    return isinstance(data, dict) and "section" in data and isinstance(data.get("runs"), list)


def dumps(data: Any) -> str:
    """JSON as the results files keep it: indented, with a list of plain values (a row of
    a table, the headers) on one line."""

    def encode(value: Any, level: int) -> str:
        pad, close = " " * (level + 1), " " * level
        if isinstance(value, dict) and value:
            items = [f"{pad}{json.dumps(k)}: {encode(v, level + 1)}" for k, v in value.items()]
            return "{\n" + ",\n".join(items) + "\n" + close + "}"
        if isinstance(value, list) and any(isinstance(v, (dict, list)) for v in value):
            items = [pad + encode(v, level + 1) for v in value]
            return "[\n" + ",\n".join(items) + "\n" + close + "]"
        return json.dumps(value, ensure_ascii=False)

    return encode(data, 0) + "\n"


def record(name: str, run: Run, results: Path | None = None) -> Path:
    """Append ``run`` to ``results/<name>.json`` (a run equal to the last one is not repeated)."""
    path = (results or RESULTS) / f"{name}.json"
    data: dict[str, Any] = {"section": name, "runs": []}
    if path.exists():
        data = json.loads(path.read_text(encoding="utf-8"))
        if not is_record(data) or data["section"] != name:
            raise ValueError(f"{path} is not the results file of section {name!r}; not changed")
    if not data["runs"] or data["runs"][-1] != run:
        data["runs"].append(dict(run))
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".json.tmp")
    temporary.write_text(dumps(data), encoding="utf-8")
    temporary.replace(path)
    return path


def records(results: Path | None = None) -> dict[str, dict[str, Any]]:
    """Every section record in ``results``, by section name (the file's name)."""
    found = {}
    for path in sorted((results or RESULTS).glob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        if is_record(data):
            if data["section"] != path.stem:
                raise ValueError(f"{path} holds section {data['section']!r}, not {path.stem!r}")
            found[path.stem] = data
    return found


def slug(title: str) -> str:
    """The anchor MkDocs gives a heading (Python-Markdown's ``toc`` slugify)."""
    text = unicodedata.normalize("NFKD", re.sub(r"[`*]", "", title))
    text = re.sub(r"[^\w\s-]", "", text.encode("ascii", "ignore").decode("ascii"))
    return re.sub(r"[-\s]+", "-", text.strip().lower())


# ------------------------------------------------------------------------------ summary

#: The sections of the summary table, in its order.
SUMMARY = ("bench_fit", "bench_fit_shuffle", "bench_finetune", "bench_pipeline", "bench_flops",
           "bench_predict", "bench_export", "bench_cache_memory", "bench_checkpoint",
           "bench_lite", "bench_tta")  # fmt: skip


def summary(found: Mapping[str, Mapping[str, Any]]) -> str:
    """One row per benchmark: the headline of its latest run, linked to its section.

    A run recorded without a ``summary`` gets a row that sends the reader to its section,
    so a rerun never leaves an earlier run's figures in this table.
    """
    rows = []
    for name in SUMMARY:
        if name not in found:
            continue
        run = found[name]["runs"][-1]
        link = f"{PAGE_OF[name][0]}#{slug(run['title'])}"
        if run.get("summary"):
            headline = run["summary"]
            rows.append([f"[{headline['benchmark']}]({link})", headline["result"],
                         headline.get("target") or "—"])  # fmt: skip
        else:
            rows.append([f"[{run['title']}]({link})", "see the section", "—"])
    return table(["benchmark (default settings)", "result", "target"], rows)


# ------------------------------------------------------------------------------ sections

#: Section -> its results file (in ``RESULTS``) and renderer, for the files with a layout
#: of their own.
SPECIAL: dict[str, tuple[str, Callable[[Any], str]]] = {
    "auto_suite": ("auto_suite.json", auto_suite),
    "engine_scaling": ("engine_scaling.json", engine_scaling),
    "delivered": ("delivered.json", delivered),
}

#: Section -> the pages under docs/ that show it, its home page first, in page order.
#: A section recorded by a script and not listed here goes to ``DEFAULT_PAGE``.
PAGE_OF: dict[str, tuple[str, ...]] = {
    "summary": ("benchmarks.md",),
    "bench_fit": ("benchmarks_training.md",),
    "bench_fit_shuffle": ("benchmarks_training.md",),
    "bench_finetune": ("benchmarks_training.md",),
    "bench_train_precision": ("benchmarks_training.md",),
    "bench_cache_memory": ("benchmarks_training.md",),
    "bench_checkpoint": ("benchmarks_training.md",),
    "backends": ("benchmarks_training.md",),
    "recipes": ("benchmarks_training.md",),  # bench_recipes.py, when it is run
    "bench_lite": ("benchmarks_backbones.md",),
    "bench_flops": ("benchmarks_backbones.md",),
    "bench_pipeline": ("benchmarks_backbones.md",),
    "bench_pixel_limit": ("benchmarks_backbones.md",),
    "bench_tta": ("benchmarks_backbones.md",),
    "bench_predict": ("benchmarks_inference.md",),
    "bench_engine": ("benchmarks_inference.md",),
    "bench_precision": ("benchmarks_inference.md",),
    "engine_end_to_end": ("benchmarks_inference.md",),
    "engine_scaling": ("benchmarks_inference.md",),
    "bench_convert_memory": ("benchmarks_inference.md",),
    "bench_export": ("benchmarks_inference.md", "deploy.md"),
    "auto_suite": ("benchmarks_auto.md",),
    "delivered": ("benchmarks_auto.md",),
    "auto_precision": ("benchmarks_auto.md",),
    "auto_depth": ("benchmarks_auto.md",),
    "auto_ladder": ("benchmarks_auto.md",),
    "auto_adapt": ("benchmarks_auto.md",),
    "bench_finetune_memory": ("benchmarks_auto.md",),
}
DEFAULT_PAGE = "benchmarks.md"
#: The pages this script writes whole: every marked section on them is one of ours.
OWNED = "benchmarks*.md"


def names(results: Path | None = None) -> list[str]:
    """Every section there is data for, in the order of ``PAGE_OF``, then the others."""
    special = {n for n, (file, _) in SPECIAL.items() if ((results or RESULTS) / file).exists()}
    found = set(records(results)) | special
    return [n for n in PAGE_OF if n in found or n == "summary"] + sorted(found - set(PAGE_OF))


def pages(name: str, docs: Path | None = None) -> list[Path]:
    """The pages that show section ``name``, its home page first."""
    return [(docs or DOCS) / page for page in PAGE_OF.get(name, (DEFAULT_PAGE,))]


def render(name: str, results: Path | None = None) -> str:
    """Section ``name`` as markdown, from its results file (without the markers)."""
    if name in SPECIAL:
        file, renderer = SPECIAL[name]
        return renderer(json.loads(((results or RESULTS) / file).read_text(encoding="utf-8")))
    found = records(results)
    if name == "summary":
        return summary(found)
    return render_run(found[name]["runs"][-1])


def markers(page: Path) -> list[str]:
    """The names of the marked sections of ``page``."""
    return re.findall(r"^<!-- BEGIN (\S+) -->$", page.read_text(encoding="utf-8"), re.M)


def stale(docs: Path | None = None, results: Path | None = None) -> list[str]:
    """What is out of date: ``section (page)`` for each section a page does not hold as it
    renders now, and, on the pages of ours, each marked section that nothing renders
    there (no results file, or not that page's)."""
    known = names(results)
    found = []
    for name in known:
        expected = block(name, render(name, results))
        for page in pages(name, docs):
            if not page.exists() or expected not in page.read_text(encoding="utf-8"):
                found.append(f"{name} ({page.name})")
    for page in sorted((docs or DOCS).glob(OWNED)):
        for name in markers(page):
            if name not in known:
                found.append(f"{name} ({page.name}): no results file")
            elif page not in pages(name, docs):
                found.append(f"{name} ({page.name}): its page is {pages(name, docs)[0].name}")
    return found


def write(docs: Path | None = None, results: Path | None = None) -> None:
    """Write every section into its pages (``_bench.write_markers``)."""
    here = str(Path(__file__).resolve().parent)
    if here not in sys.path:
        sys.path.insert(0, here)
    import _bench

    for name in names(results):
        markdown = render(name, results)
        for page in pages(name, docs):
            _bench.write_markers(name, markdown, page)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when a page is stale")
    args = parser.parse_args()
    if args.check:
        found = stale()
        if found:
            sys.exit(f"stale sections: {', '.join(found)}; run python benchmarks/results_table.py")
        print("the benchmark sections of docs/ are current")
        return
    write()


if __name__ == "__main__":
    main()
