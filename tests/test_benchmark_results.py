"""docs/benchmarks.md holds the tables built from benchmarks/results/, byte for byte.

``benchmarks/results_table.py`` renders a section of the page from each results file
it knows (the automatic recipe's suite: ``benchmarks/results/auto_suite.json``). These
tests render every section again and compare it with the page, so a new run recorded
in a results file, or a hand edit of a generated table, fails here until
``python benchmarks/results_table.py`` is run. Nothing here imports TensorFlow.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "results_table.py"
PAGE = ROOT / "docs" / "benchmarks.md"


@pytest.fixture(scope="module")
def results_table() -> Any:
    spec = importlib.util.spec_from_file_location("results_table", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


def test_the_page_holds_every_generated_section(results_table: Any) -> None:
    text = PAGE.read_text(encoding="utf-8")
    assert results_table.SECTIONS, "no generated section"
    for name in results_table.SECTIONS:
        expected = results_table.block(name, results_table.render(name))
        assert expected in text, (
            f"docs/benchmarks.md's {name} section differs from what "
            f"{results_table.SECTIONS[name][0].relative_to(ROOT)} gives; "
            "run python benchmarks/results_table.py"
        )
        assert text.count(f"<!-- BEGIN {name} -->") == 1


def test_writing_the_sections_leaves_a_current_page_as_it_is(
    results_table: Any, tmp_path: Path
) -> None:
    """The script writes through ``_bench.write_section``, the mechanism of every benchmark:
    on a current page it changes no byte, so the two agree on the sections' format."""
    copy = tmp_path / "benchmarks.md"
    shutil.copyfile(PAGE, copy)
    results_table.write(copy)
    assert copy.read_bytes() == PAGE.read_bytes()


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
