"""The benchmark pages of docs/ hold the sections built from benchmarks/results/, byte for byte.

``benchmarks/results_table.py`` renders every measured section of ``docs/benchmarks*.md``
(and the exported formats' table of ``docs/deploy.md``) from its results file: the runs
that ``_bench.section`` records for every ``bench_*.py`` script, and the files with a
layout of their own (the automatic recipe's suite, the engine scaling, the delivered
model). These tests render every section again and compare it with its pages, so a new
run recorded in a results file, or a hand edit of a generated table, fails here until
``python benchmarks/results_table.py`` is run; and they check that every marked section
of a benchmark page has a results file. Nothing here imports TensorFlow.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"
DOCS = ROOT / "docs"


def _load(name: str) -> Iterator[Any]:
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # what ``import results_table`` in _bench finds
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


@pytest.fixture(scope="module")
def results_table() -> Iterator[Any]:
    yield from _load("results_table")


@pytest.fixture(scope="module")
def bench(results_table: Any) -> Iterator[Any]:
    yield from _load("_bench")


def test_every_section_is_on_its_pages_as_it_renders(results_table: Any) -> None:
    names = results_table.names()
    assert {"summary", "auto_suite", "engine_scaling", "bench_fit", "bench_export"} <= set(names)
    for name in names:
        expected = results_table.block(name, results_table.render(name))
        for page in results_table.pages(name):
            text = page.read_text(encoding="utf-8")
            assert expected in text, (
                f"docs/{page.name}'s {name} section differs from what its results file in "
                "benchmarks/results/ gives; run python benchmarks/results_table.py"
            )
            assert text.count(f"<!-- BEGIN {name} -->") == 1


def test_every_marked_section_of_a_benchmark_page_has_a_results_file(results_table: Any) -> None:
    """No hand-copied tables: each section between markers comes from a results file."""
    owned = sorted(DOCS.glob(results_table.OWNED))
    assert len(owned) >= 2
    for page in owned:
        assert results_table.markers(page), f"docs/{page.name} has no generated section"
    assert results_table.stale() == []


def test_every_measured_run_says_where_it_came_from(results_table: Any) -> None:
    """A recorded run names its command, its commit (or says it is unknown) and its date
    or machine; the runs copied from the pages say honestly that their commit is unknown."""
    for name, data in results_table.records().items():
        for run in data["runs"]:
            assert run.get("command") and run.get("commit"), name
            assert run.get("date") or run.get("machine"), name
            assert run["title"] and run["body"], name
            for block in run["body"]:
                assert set(block) in ({"text"}, {"headers", "rows"}), name


def test_writing_the_sections_leaves_current_pages_as_they_are(
    results_table: Any, tmp_path: Path
) -> None:
    """The script writes through ``_bench.write_markers``, the mechanism of every benchmark:
    on current pages it changes no byte, so the two agree on the sections' format."""
    copy = tmp_path / "docs"
    shutil.copytree(DOCS, copy, ignore=shutil.ignore_patterns("_ext", "api"))
    results_table.write(docs=copy)
    for page in sorted(copy.glob("*.md")):
        assert page.read_bytes() == (DOCS / page.name).read_bytes(), page.name


def test_tables_and_notes_round_trip(results_table: Any) -> None:
    body = (
        "Data: a line\nand its continuation.\n\n"
        "|  | a | max |feature| |\n|---|---|---|\n| x |  | 1.0 |\n| **y** | — | 2 |\n\n"
        "**Ratio: 2x**.\n- a note"
    )
    blocks = results_table.parse_body(body)
    assert blocks == [
        {"text": "Data: a line\nand its continuation."},
        {"headers": ["", "a", "max |feature|"], "rows": [["x", "", "1.0"], ["**y**", "—", "2"]]},
        {"text": "**Ratio: 2x**.\n- a note"},
    ]
    assert results_table.render_body(blocks) == body
    assert json.loads(results_table.dumps(blocks)) == blocks


class _Info:
    """What ``_bench.machine()`` gives a report, without TensorFlow's versions."""

    def __init__(self, commit: str = "abc1234") -> None:
        self.commit = commit

    def fields(self) -> dict[str, str]:
        return {"command": "python benchmarks/bench_toy.py", "commit": self.commit,
                "date": "2026-12-08 10:00 UTC", "machine": "Toy CPU, 2 cores",
                "load": "0.10 / 0.20 / 0.30 at the start, 0.40 / 0.50 / 0.60 at the end",
                "software": "Python 3.11"}  # fmt: skip


@pytest.fixture
def scratch(results_table: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Empty results and docs folders in place of the repository's."""
    monkeypatch.setattr(results_table, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(results_table, "DOCS", tmp_path / "docs")
    return tmp_path


def test_a_bench_run_is_recorded_as_data_and_its_page_built_from_it(
    bench: Any, results_table: Any, scratch: Path
) -> None:
    body = "Notes.\n\n| engine | images/s |\n|---|---|\n| keras | 1.0 |\n\nMore notes."
    markdown = bench.section("bench_toy", "Toy benchmark", _Info(), body, data={"raw": [1.0]})
    saved = json.loads((scratch / "results" / "bench_toy.json").read_text(encoding="utf-8"))
    assert saved["section"] == "bench_toy" and len(saved["runs"]) == 1
    run = saved["runs"][0]
    assert run["command"] == "python benchmarks/bench_toy.py" and run["commit"] == "abc1234"
    assert run["body"][1] == {"headers": ["engine", "images/s"], "rows": [["keras", "1.0"]]}
    assert run["data"] == {"raw": [1.0]}
    page = (scratch / "docs" / results_table.DEFAULT_PAGE).read_text(encoding="utf-8")
    assert results_table.block("bench_toy", markdown) in page
    assert "commit `abc1234`" in markdown and "| keras | 1.0 |" in markdown

    bench.section("bench_toy", "Toy benchmark", _Info(), body, data={"raw": [1.0]})
    saved = json.loads((scratch / "results" / "bench_toy.json").read_text(encoding="utf-8"))
    assert len(saved["runs"]) == 1  # the same run again is not repeated

    bench.section("bench_toy", "Toy benchmark", _Info("def5678-dirty"), body.replace("1.0", "2.0"))
    saved = json.loads((scratch / "results" / "bench_toy.json").read_text(encoding="utf-8"))
    assert len(saved["runs"]) == 2  # the earlier run stays in the file
    page = (scratch / "docs" / results_table.DEFAULT_PAGE).read_text(encoding="utf-8")
    assert "| keras | 2.0 |" in page and "| keras | 1.0 |" not in page
    assert "commit `def5678-dirty`" in page
    results_table.write()
    assert results_table.stale() == []

    bench.section("bench_toy", "Toy benchmark", _Info(), "No table.", write=False)
    assert len(json.loads((scratch / "results" / "bench_toy.json").read_text())["runs"]) == 2


def test_write_section_keeps_working_for_markdown_sections(
    bench: Any, results_table: Any, scratch: Path
) -> None:
    """``write_section(name, markdown)`` as the scripts called it: the section's machine
    bullets and body become a recorded run; a guide page of its own gets the markdown."""
    markdown = (
        "## Old style\n\n- Command: `python benchmarks/bench_old.py --quick`\n"
        "- Date: 2026-12-08 10:00 UTC\n- CPU: Toy CPU, 2 cores\n"
        "- Load average (1 / 5 / 15 min): 0.10 / 0.20 / 0.30 at the start, "
        "0.40 / 0.50 / 0.60 at the end\n- Software: Python 3.11\n\n"
        "| a | b |\n|---|---|\n| 1 | 2 |\n"
    )
    bench.write_section("bench_old", markdown)
    run = results_table.records()["bench_old"]["runs"][-1]
    assert run["title"] == "Old style"
    assert run["command"] == "python benchmarks/bench_old.py --quick"
    assert run["machine"] == "Toy CPU, 2 cores" and run["commit"]
    assert run["body"] == [{"headers": ["a", "b"], "rows": [["1", "2"]]}]

    guide = scratch / "guide.md"
    guide.write_text("# Guide\n", encoding="utf-8")
    bench.write_section("bench_guide", markdown, guide)
    assert "<!-- BEGIN bench_guide -->\n## Old style" in guide.read_text(encoding="utf-8")
    assert "bench_guide" not in results_table.records()


def test_a_rerun_without_a_headline_leaves_no_stale_figures_in_the_summary(
    results_table: Any,
) -> None:
    old = {"title": "Fit", "summary": {"benchmark": "fit", "result": "**6.4x**", "target": "5x"}}
    found = {"bench_fit": {"runs": [old]}}
    assert "**6.4x**" in results_table.summary(found)
    found["bench_fit"]["runs"].append({"title": "Fit"})
    table = results_table.summary(found)
    assert "**6.4x**" not in table and "see the section" in table
    assert "(benchmarks_training.md#fit)" in table


def test_a_results_file_of_another_layout_is_never_overwritten(
    results_table: Any, scratch: Path
) -> None:
    (scratch / "results").mkdir()
    (scratch / "results" / "auto_suite.json").write_text('{"results": []}', encoding="utf-8")
    with pytest.raises(ValueError, match="not the results file"):
        results_table.record("auto_suite", {"title": "x", "body": []})


def _run(kind: str, data: str, seed: int, budget: str | None = None, **extra: Any) -> dict:
    run: dict[str, Any] = {"kind": kind, "data": data, "seed": seed, "wall_s": 10.0}
    if budget is not None:
        run["budget"] = budget
    run.update(extra)
    return run


def _auto(seed: int, test: float, value: float, **extra: Any) -> dict:
    choice = {"backbone": "efficientnet_lite0", "size": 224, "train_views": "plain",
              "class_weight": "none", "epochs": 10, "tta": "none", "heads": 1}  # fmt: skip
    return _run("auto", "toy", seed, "15m", test={"accuracy": test}, choice=choice,
                beats_floor=False, estimate={"metric": "accuracy", "value": value,
                                             "standard_error": 0.01}, **extra)  # fmt: skip


def test_the_summary_keeps_each_runs_latest_and_counts_refusals(results_table: Any) -> None:
    data = {
        "machine": {},
        "results": [
            _run("floor", "toy", 0, test={"accuracy": 0.70}),
            _auto(0, 0.50, 0.90),  # replaced by the rerun below
            _auto(0, 0.80, 0.82, commit="abc1234"),
            _auto(1, 0.78, 0.77),
            _run("auto", "toy", 2, "15m", refused="budget too small: ...", wall_s=None),
        ],
    }
    section = results_table.auto_suite(data)
    summary = next(line for line in section.splitlines() if line.startswith("| toy | 15m |"))
    cells = [cell.strip() for cell in summary.strip("|").split("|")]
    assert cells[2] == "2 (+1 refused)"
    assert cells[3] == "0.700"  # the floor
    assert cells[4] == "0.790 (0.014)"  # 0.80 and 0.78: the first run of seed 0 is replaced
    assert cells[6] == "+0.005"  # (0.02 - 0.01) / 2
    assert "`abc1234`" in section and "not recorded" in section
    assert json.loads(json.dumps(data)) == data  # the renderer does not change its input
