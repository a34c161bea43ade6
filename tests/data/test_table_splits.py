"""A label table's split column: training and inspection never read its test rows, and
``xferclass evaluate`` scores them (and says so) when no ``--split`` is given."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from test_data_tables import folder_rows, write_csv

import helpers  # noqa: F401  (registers the test_tiny backbone)
import xferclass
from conftest import TINY_CLASSES, make_shape_dataset
from xferclass import auto
from xferclass.cli import main
from xferclass.runtime._common import store_class_names

#: The split of row ``i`` of each class: half train, a quarter validation, a quarter test.
USES = ("train", "train", "validation", "test")


class _Stop(Exception):
    """Raised by a spy to end ``train_auto`` once its data is read."""


def _table(images: Path, uses: tuple[str, ...] = USES) -> tuple[Path, dict[str, set[str]]]:
    """``images/labels.csv`` with a split column, and the files of each split."""
    rows = folder_rows(images)
    table = write_csv(
        images / "labels.csv",
        ["path", "label", "split"],
        [[p, c, uses[i % len(uses)]] for i, (p, c) in enumerate(rows)],
    )
    files: dict[str, set[str]] = {}
    for i, (p, _) in enumerate(rows):
        files.setdefault(uses[i % len(uses)], set()).add(str(images / p))
    return table, files


@pytest.fixture
def images(tmp_path: Path) -> Path:
    return make_shape_dataset(tmp_path / "images")


def _gathered(monkeypatch: pytest.MonkeyPatch, *args: Any) -> tuple[Any, Any]:
    """The images and data summary ``train_auto(*args)`` trains on (it stops right after)."""
    seen: dict[str, Any] = {}
    real = auto._gather

    def spy(train: Any, validation: Any) -> Any:
        seen["images"], seen["data"], _ = real(train, validation)
        raise _Stop

    monkeypatch.setattr(auto, "_gather", spy)
    with pytest.raises(_Stop):
        xferclass.train_auto(*args, backbone="test_tiny", weights=None, budget=60)
    return seen["images"], seen["data"]


def test_train_auto_on_a_table_reads_train_and_validation_rows_never_test(
    images: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    table, files = _table(images)
    found, data = _gathered(monkeypatch, table)
    by_split = dict(zip(found.paths, found.given_split, strict=True))
    assert {p for p, s in by_split.items() if s == "train"} == files["train"]
    assert {p for p, s in by_split.items() if s == "validation"} == files["validation"]
    assert not set(found.paths) & files["test"]
    assert data.validation_images == len(files["validation"]) and data.validation_given
    assert list(found.class_names) == list(TINY_CLASSES)


def test_train_auto_reads_a_validation_tables_validation_rows(
    images: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # The train table has no validation rows; the one given as validation holds all three.
    train, files = _table(images, ("train", "train", "test"))
    other = tmp_path / "other"
    shutil.copytree(images, other)
    validation, other_files = _table(other)
    found, data = _gathered(monkeypatch, train, validation)
    assert set(found.paths) == files["train"] | other_files["validation"]
    assert data.validation_images == len(other_files["validation"])


def test_train_auto_on_a_table_without_a_split_column_reads_every_row(
    images: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = folder_rows(images)
    table = write_csv(images / "plain.csv", ["path", "label"], [list(r) for r in rows])
    found, data = _gathered(monkeypatch, table)
    assert set(found.paths) == {str(images / p) for p, _ in rows}
    assert data.validation_images == 0 and not data.validation_given


def test_inspect_splits_a_table_and_flags_a_train_test_duplicate(images: Path) -> None:
    table, files = _table(images)
    rows = folder_rows(images)
    source, label = rows[0]  # a train row
    shutil.copy(images / source, images / "copy.png")
    with open(table, "a", newline="") as file:
        file.write(f"copy.png,{label},test\n")
    found = xferclass.inspect(table, backbone="test_tiny", weights=None, input_size=32, folds=3)
    assert set(found.train_paths) == files["train"]
    split_of = dict(zip(found.paths, found.splits, strict=True))
    assert {p for p, s in split_of.items() if s == "test"} == files["test"] | {
        str(images / "copy.png")
    }
    assert {p for p, s in split_of.items() if s == "validation"} == files["validation"]
    # The exact copy and its source are one group, a leak (near copies of random
    # features may join it: only these two are checked).
    group = next(g for g in found.duplicates if str(images / "copy.png") in g["paths"])
    where = dict(zip(group["paths"], group["splits"], strict=True))
    assert where[str(images / source)] == "train" and where[str(images / "copy.png")] == "test"
    assert group["cross_split"]


# --------------------------------------------------------------------------- evaluate


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    model = helpers.tiny_model()
    store_class_names(model, list(TINY_CLASSES))
    path = tmp_path / "model.keras"
    xferclass.save_model(model, path)
    return path


def test_evaluate_scores_the_test_rows_of_a_table_and_says_so(
    images: Path, saved: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    table, files = _table(images)
    assert main(["evaluate", str(saved), str(table), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["n"] == len(files["test"]) and metrics["split"] == "test"
    assert main(["evaluate", str(saved), str(table)]) == 0
    printed = capsys.readouterr().out
    assert f"the test rows of {table}" in printed and f"({len(files['test'])} images)" in printed
    assert main(["evaluate", str(saved), str(table), "--split", "validation", "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["n"] == len(files["validation"]) and metrics["split"] == "validation"


def test_evaluate_refuses_a_table_without_test_rows(
    images: Path, saved: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    table, _ = _table(images, ("train", "validation"))
    assert main(["evaluate", str(saved), str(table)]) == 1
    error = capsys.readouterr().err
    assert "no test rows" in error and "['train', 'validation']" in error and "--split" in error


def test_evaluate_scores_every_row_of_a_table_without_a_split_column(
    images: Path, saved: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = folder_rows(images)
    table = write_csv(images / "plain.csv", ["path", "label"], [list(r) for r in rows])
    assert main(["evaluate", str(saved), str(table), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["n"] == len(rows) and metrics["split"] == "all"


def test_train_auto_on_folders_reads_both_folders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    train = make_shape_dataset(tmp_path / "train", per_class=4)
    validation = make_shape_dataset(tmp_path / "validation", per_class=2, seed=1)
    found, data = _gathered(monkeypatch, train, validation)
    assert found.given_split == ("train",) * 12 + ("validation",) * 6
    assert data.validation_images == 6 and data.validation_given
