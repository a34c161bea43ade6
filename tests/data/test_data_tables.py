"""Label tables (CSV, DataFrame, pairs) as load_image_dataset's input, single- and multi-label."""

from __future__ import annotations

import csv
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from conftest import TINY_CLASSES, TINY_PER_CLASS, make_shape_dataset
from xferclass import DatasetError, SkippedFilesWarning, load_image_dataset, read_images

TOTAL = len(TINY_CLASSES) * TINY_PER_CLASS


def write_csv(path: Path, header: list[str] | None, rows: list[list[object]]) -> Path:
    with open(path, "w", newline="") as file:
        writer = csv.writer(file)
        if header is not None:
            writer.writerow(header)
        writer.writerows(rows)
    return path


def folder_rows(root: Path) -> list[tuple[str, str]]:
    """``(path relative to root, class)`` of every image of a class-folder dataset."""
    return [
        (f"{kind}/{name}", kind)
        for kind in sorted(os.listdir(root))
        if (root / kind).is_dir()
        for name in sorted(os.listdir(root / kind))
    ]


def epoch(dataset: tf.data.Dataset) -> tuple[np.ndarray, np.ndarray]:
    images, labels = zip(*[(x.numpy(), y.numpy()) for x, y in dataset])
    return np.concatenate(images), np.concatenate(labels)


@pytest.fixture
def images(tmp_path: Path) -> Path:
    return make_shape_dataset(tmp_path / "images")


def test_csv_dataframe_and_pairs_equal_the_folder(images: Path, tmp_path: Path) -> None:
    import pandas as pd

    rows = folder_rows(images)
    table = write_csv(images / "labels.csv", ["filename", "label"], [list(r) for r in rows])
    folder = load_image_dataset(images, 32, shuffle=False)
    frame = pd.DataFrame(rows, columns=["image_path", "Class"])
    loaded = [
        load_image_dataset(table, 32, shuffle=False),  # paths relative to the CSV's folder
        load_image_dataset(str(table), 32, shuffle=False, root=images),
        load_image_dataset(frame, 32, shuffle=False, root=images),
        load_image_dataset(rows, 32, shuffle=False, root=str(images)),
        load_image_dataset([(images / p, c) for p, c in rows], 32, shuffle=False),
    ]
    x_folder, y_folder = epoch(folder)
    for dataset in loaded:
        assert dataset.class_names == list(TINY_CLASSES)
        assert [os.path.realpath(p) for p in dataset.file_paths] == [
            os.path.realpath(p) for p in folder.file_paths
        ]
        np.testing.assert_array_equal(dataset.labels, folder.labels)
        assert dataset.skipped == [] and dataset.multi_label is False
        x, y = epoch(dataset)
        np.testing.assert_array_equal(x, x_folder)
        np.testing.assert_array_equal(y, y_folder)


def test_csv_reading_never_imports_pandas(images: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    table = write_csv(images / "labels.csv", ["path", "label"], folder_rows(images))
    monkeypatch.setitem(sys.modules, "pandas", None)  # any `import pandas` now fails
    assert len(load_image_dataset(table, 32).file_paths) == TOTAL


def test_columns_found_by_name_or_given(images: Path) -> None:
    rows = [[p, "x", c, 1] for p, c in folder_rows(images)]
    header = ["File Name", "notes", "CATEGORY", "count"]
    table = write_csv(images / "found.csv", header, rows)
    assert load_image_dataset(table, 32).class_names == list(TINY_CLASSES)
    odd_rows = [[p, c, "z"] for p, c in folder_rows(images)]
    odd = write_csv(images / "odd.csv", ["where", "what", "other"], odd_rows)
    dataset = load_image_dataset(odd, 32, path_column="where", label_column="what")
    assert dataset.class_names == list(TINY_CLASSES)
    with pytest.raises(DatasetError, match=r"image paths; pass path_column= .*\['where', 'what'"):
        load_image_dataset(odd, 32)
    with pytest.raises(DatasetError, match=r"labels; pass label_column= .*'other'\]"):
        load_image_dataset(odd, 32, path_column="where")
    with pytest.raises(DatasetError, match=r"label_column='nope' is not a column .*\['where'"):
        load_image_dataset(odd, 32, path_column="where", label_column="nope")
    both_rows = [[p, p, c] for p, c in folder_rows(images)]
    both = write_csv(images / "both.csv", ["image", "file", "label"], both_rows)
    with pytest.raises(
        DatasetError, match=r"several columns .*\['image', 'file'\]; pass path_column="
    ):
        load_image_dataset(both, 32)
    assert len(load_image_dataset(both, 32, path_column="file").file_paths) == TOTAL


def test_vertex_style_headerless_csv_with_splits(images: Path) -> None:
    rows = folder_rows(images)
    uses = ["TRAIN", "training", "VALIDATION", "test"]
    table = write_csv(
        images / "vertex.csv", None, [[uses[i % 4], p, c] for i, (p, c) in enumerate(rows)]
    )
    train = load_image_dataset(table, 32, split="train", shuffle=False)
    validation = load_image_dataset(table, 32, split="validation", shuffle=False)
    test = load_image_dataset(table, 32, split="test", shuffle=False)
    assert len(train.file_paths) == TOTAL // 2
    assert len(validation.file_paths) == len(test.file_paths) == TOTAL // 4
    assert train.class_names == validation.class_names == test.class_names == list(TINY_CLASSES)
    assert not set(train.file_paths) & set(validation.file_paths)
    expected = [str(images / p) for i, (p, _) in enumerate(rows) if i % 4 == 3]
    assert test.file_paths == expected
    everything = load_image_dataset(table, 32)
    assert len(everything.file_paths) == TOTAL
    two = write_csv(images / "two.csv", None, rows)  # path,label
    assert load_image_dataset(two, 32).class_names == list(TINY_CLASSES)
    with pytest.raises(DatasetError, match="split='nope' must be"):
        load_image_dataset(table, 32, split="nope")
    plain = write_csv(images / "plain.csv", ["path", "label"], rows)
    with pytest.raises(DatasetError, match=r"needs a split column.*pass split_column="):
        load_image_dataset(plain, 32, split="train")
    with pytest.raises(DatasetError, match="split_column='ml_use' is given but split is not"):
        load_image_dataset(table, 32, split_column="ml_use")
    train_rows = [[p, c, "train"] for p, c in rows]
    only_train = write_csv(images / "only.csv", ["path", "label", "split"], train_rows)
    with pytest.raises(DatasetError, match=r"split='test' selects no row.*\['train'\]"):
        load_image_dataset(only_train, 32, split="test")


def test_missing_unlabelled_and_broken_rows_are_skipped(images: Path) -> None:
    rows = folder_rows(images)
    (images / "circle" / "circle_00.png").write_bytes(b"<html>not a png</html>")
    extra = [["circle/gone.png", "circle"], ["square/square_00.png", ""]]
    table = write_csv(images / "labels.csv", ["path", "label"], [list(r) for r in rows] + extra)
    with pytest.warns(SkippedFilesWarning, match=f"Skipped 3 of {TOTAL + 2} image files"):
        dataset = load_image_dataset(table, 32)
    reasons = {os.path.basename(p): r for p, r in dataset.skipped}
    assert reasons["gone.png"] == "file does not exist"
    assert reasons["square_00.png"] == "no label in column 'label'"
    assert reasons["circle_00.png"].startswith("not an image in a known format")
    assert len(dataset.file_paths) == TOTAL - 1  # square_00 is listed twice, once unlabelled
    with pytest.raises(DatasetError, match=r"3 of 26 image files of '.*labels.csv' cannot be used"):
        load_image_dataset(table, 32, strict=True)


def test_class_names_pinning_and_numeric_labels(images: Path) -> None:
    rows = folder_rows(images)
    table = write_csv(images / "labels.csv", ["path", "label"], rows)
    pinned = ["triangle", "square", "circle", "hexagon"]  # hexagon has no rows
    dataset = load_image_dataset(table, 32, class_names=pinned, shuffle=False)
    assert dataset.class_names == pinned
    names = [pinned[i] for i in dataset.labels]
    assert names == [c for _, c in rows]
    with pytest.raises(DatasetError, match=r"labels \['triangle'\] that are not in class_names"):
        load_image_dataset(table, 32, class_names=["circle", "square"])
    numbered = [(p, str([2, 10, 1][TINY_CLASSES.index(c)])) for p, c in rows]
    dataset = load_image_dataset(numbered, 32, root=images)
    assert dataset.class_names == ["1", "2", "10"]  # numbers in numeric order
    with pytest.raises(DatasetError, match="1 distinct label"):
        load_image_dataset([(p, "same") for p, _ in rows], 32, root=images)


def test_ids_without_extension_and_bad_arguments(images: Path, tmp_path: Path) -> None:
    rows = [(os.path.splitext(p)[0], c) for p, c in folder_rows(images)]  # as Kaggle lists ids
    dataset = load_image_dataset(rows, 32, root=images)
    assert len(dataset.file_paths) == TOTAL and not dataset.skipped
    with pytest.raises(DatasetError, match="root=.* is not a folder"):
        load_image_dataset(rows, 32, root=tmp_path / "nowhere")
    with pytest.raises(DatasetError, match="the label table .* does not exist"):
        load_image_dataset(tmp_path / "nowhere.csv", 32)
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(DatasetError, match="is empty"):
        load_image_dataset(empty, 32)
    with pytest.raises(DatasetError, match="apply to label tables .* not to the folder"):
        load_image_dataset(images, 32, root=images, split="train")
    with pytest.raises(DatasetError, match="label_separator='' must be a non-empty string"):
        load_image_dataset(rows, 32, root=images, label_separator="")
    with pytest.raises(DatasetError, match="must be a folder path, a .csv file, a DataFrame"):
        load_image_dataset(42, 32)


def test_stratified_seeded_validation_split(images: Path) -> None:
    table = write_csv(images / "labels.csv", ["path", "label"], folder_rows(images))
    train, validation = load_image_dataset(table, 32, validation_split=0.25, subset="both", seed=3)
    folder_train, folder_validation = load_image_dataset(
        images, 32, validation_split=0.25, subset="both", seed=3
    )
    assert sorted(train.file_paths) == sorted(folder_train.file_paths)
    assert sorted(validation.file_paths) == sorted(folder_validation.file_paths)
    assert np.bincount(validation.labels).tolist() == [2, 2, 2]


# ------------------------------------------------------------------------------------
# the excluded column
# ------------------------------------------------------------------------------------

#: Marks of the excluded column, true and false, as a review tool or a person writes them.
EXCLUDE_YES = ("1", "TRUE", " yes ", "y", "X")
EXCLUDE_NO = ("", "0", "false", "No", "n")


def test_excluded_rows_are_left_out_of_every_split(images: Path) -> None:
    from xferclass.data._tables import read_label_table, split_values

    rows = folder_rows(images)
    uses = ["train", "train", "validation", "test"]
    marks = [EXCLUDE_YES[i % 5] if i % 3 == 0 else EXCLUDE_NO[i % 5] for i in range(len(rows))]
    table_rows = [[p, c, uses[i % 4], marks[i]] for i, (p, c) in enumerate(rows)]
    table_rows.append([rows[0][0], "hexagon", "train", "x"])  # a class only excluded rows hold
    table_rows.append(["", "circle", "train", "no"])  # row 26: no path
    header = ["path", "label", "split", "Excluded"]
    table = write_csv(images / "reviewed.csv", header, table_rows)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SkippedFilesWarning)
        for split in ("train", "validation", "test"):
            kept = [(p, c) for i, (p, c) in enumerate(rows) if uses[i % 4] == split and i % 3 != 0]
            if split == "train":
                with pytest.warns(SkippedFilesWarning, match="Skipped 1 of"):
                    dataset = load_image_dataset(table, 32, split=split, shuffle=False)
                assert dataset.skipped == [("<row 26>", "no path in column 'path'")]
            else:
                dataset = load_image_dataset(table, 32, split=split, shuffle=False)
                assert dataset.skipped == []
            assert dataset.class_names == list(TINY_CLASSES)  # no 'hexagon'
            assert dataset.file_paths == [str(images / p) for p, _ in kept]
            assert dataset.labels.tolist() == [TINY_CLASSES.index(c) for _, c in kept]
            selected = sum(uses[i % 4] == split and i % 3 == 0 for i in range(len(rows)))
            expected = selected + (split == "train")  # and the hexagon row
            assert read_label_table(table, split=split).excluded == expected
    whole = read_label_table(table)  # 8 of the 24 images and the hexagon row excluded
    assert whole.excluded == 9 and len(whole.paths) == 16 and len(whole.unusable) == 1
    assert whole.classes == list(TINY_CLASSES)
    plain = write_csv(images / "plain.csv", ["path", "label"], rows)
    assert read_label_table(plain).excluded == 0
    # a split whose every row is excluded selects nothing, and is not named
    hidden = [[p, c, uses[i % 4], uses[i % 4] == "test"] for i, (p, c) in enumerate(rows)]
    no_test = write_csv(images / "no_test.csv", ["path", "label", "split", "exclude"], hidden)
    with pytest.raises(DatasetError, match=r"split='test' selects no row .* are all excluded"):
        load_image_dataset(no_test, 32, split="test")
    assert split_values(no_test) == {"train", "validation"}
    everything = [[p, c, "1"] for p, c in rows]
    gone = write_csv(images / "gone.csv", ["path", "label", "excluded"], everything)
    with pytest.raises(DatasetError, match="every row of .*gone.csv' is excluded"):
        load_image_dataset(gone, 32)


def test_excluded_column_of_a_dataframe(images: Path) -> None:
    import pandas as pd

    rows = folder_rows(images)
    out = [i % 4 == 1 for i in range(len(rows))]
    kept = [str(images / p) for (p, _), o in zip(rows, out, strict=True) if not o]
    paths, labels = [p for p, _ in rows], [c for _, c in rows]
    frames = [
        pd.DataFrame({"path": paths, "label": labels, "excluded": out}),  # bool
        pd.DataFrame({"path": paths, "label": labels, "exclude": [int(o) for o in out]}),
        # floats: 1.0 and NaN; a nullable boolean column: True and pandas.NA
        pd.DataFrame({"path": paths, "label": labels, "excluded": [1 if o else None for o in out]}),
        pd.DataFrame({"path": paths, "label": labels, "excluded": pd.array(
            [True if o else pd.NA for o in out], dtype="boolean")}),
    ]  # fmt: skip
    for frame in frames:
        dataset = load_image_dataset(frame, 32, root=images, shuffle=False)
        assert dataset.file_paths == kept and dataset.skipped == []


def test_bad_or_ambiguous_excluded_column(images: Path) -> None:
    rows = [[p, c, "maybe" if i == 2 else "no"] for i, (p, c) in enumerate(folder_rows(images))]
    bad = write_csv(images / "bad.csv", ["path", "label", "excluded"], rows)
    with pytest.raises(
        DatasetError,
        match=r"row 3 of '.*bad.csv' has 'maybe' in column 'excluded', which is neither "
        r"true \(1, true, yes, y, x\) nor false \(0, false, no, n or an empty cell\)",
    ):
        load_image_dataset(bad, 32)
    both_rows = [[p, c, "", ""] for p, c in folder_rows(images)]
    both = write_csv(images / "both.csv", ["path", "label", "exclude", "EXCLUDED"], both_rows)
    with pytest.raises(DatasetError, match=r"excluded marks: \['exclude', 'EXCLUDED'\]; rename"):
        load_image_dataset(both, 32)


# ------------------------------------------------------------------------------------
# multi-label tables
# ------------------------------------------------------------------------------------

TAGS = {"circle": ["round", "red"], "square": ["green"], "triangle": []}


def test_multi_label_from_separated_strings_and_lists(images: Path) -> None:
    import pandas as pd

    rows = folder_rows(images)
    joined = [(p, "|".join(TAGS[c] + ["shape"])) for p, c in rows]
    table = write_csv(images / "tags.csv", ["path", "tags"], joined)
    from_csv = load_image_dataset(table, 32, label_separator="|", shuffle=False)
    frame = pd.DataFrame(
        {"file": [p for p, _ in rows], "labels": [TAGS[c] + ["shape"] for _, c in rows]}
    )
    from_frame = load_image_dataset(frame, 32, root=images, shuffle=False)
    from_pairs = load_image_dataset(
        [(p, TAGS[c] + ["shape"]) for p, c in rows], 32, root=images, shuffle=False
    )
    names = ["green", "red", "round", "shape"]
    expected = np.array([[t in TAGS[c] + ["shape"] for t in names] for _, c in rows], np.float32)
    for dataset in (from_csv, from_frame, from_pairs):
        assert dataset.multi_label is True
        assert dataset.class_names == names
        np.testing.assert_array_equal(dataset.labels, expected)
        x, y = epoch(dataset)
        np.testing.assert_array_equal(y, expected)
        np.testing.assert_array_equal(x, read_images(dataset.file_paths, 32))


def test_multi_label_rows_without_labels_are_kept(images: Path) -> None:
    rows = [(p, "|".join(TAGS[c])) for p, c in folder_rows(images)]  # triangles: no tag
    table = write_csv(images / "tags.csv", ["path", "tags"], rows)
    dataset = load_image_dataset(table, 32, label_separator="|")
    assert len(dataset.file_paths) == TOTAL and not dataset.skipped
    triangles = ["triangle" in p for p in dataset.file_paths]
    assert not dataset.labels[triangles].any()
    assert dataset.labels[np.logical_not(triangles)].any(axis=1).all()
    train, validation = load_image_dataset(
        table, 32, label_separator="|", validation_split=0.25, subset="both", seed=0
    )
    assert sorted(train.file_paths + validation.file_paths) == sorted(dataset.file_paths)
    assert not set(train.file_paths) & set(validation.file_paths)
    # each group (circle: rarest tag, square, untagged) gives 2 of its 8 to validation
    assert len(validation.file_paths) == 6
    assert validation.labels.sum(axis=0).tolist() == [2, 2, 2]  # green, red, round


def test_multi_label_empty_class_reported(images: Path) -> None:
    rows = [[p, "|".join(TAGS[c])] for p, c in folder_rows(images)]
    for kind in ("circle",):
        for name in os.listdir(images / kind):
            (images / kind / name).write_bytes(b"")
    table = write_csv(images / "tags.csv", ["path", "tags"], rows)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SkippedFilesWarning)
        with pytest.raises(DatasetError, match=r"classes \['red', 'round'\] .*8 image files"):
            load_image_dataset(table, 32, label_separator="|")


# ------------------------------------------------------------------------------------
# the command line
# ------------------------------------------------------------------------------------


def test_cli_trains_and_evaluates_on_a_label_table(
    images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    import helpers  # noqa: F401  (registers the tiny test backbone)
    import xferclass
    from xferclass.cli import main
    from xferclass.runtime._common import model_class_names, model_multi_label

    rows = folder_rows(images)
    uses = ["train", "train", "validation", "test"]
    tags = write_csv(
        tmp_path / "tags.csv",
        ["path", "tags", "ml_use"],
        [[p, "|".join(TAGS[c] + ["shape"]), uses[i % 4]] for i, (p, c) in enumerate(rows)],
    )
    out = tmp_path / "tagger.keras"
    common = ["--backbone", "test_tiny", "--weights", "none", "--size", "32", "--quiet"]
    code = main(
        ["train", str(tags), "--root", str(images), "--label-separator", "|", "--epochs", "1"]
        + common + ["--out", str(out)]
    )  # fmt: skip
    assert code == 0
    model = xferclass.load_model(out)
    assert model_multi_label(model) == (True, 0.5)
    assert model_class_names(model) == ["green", "red", "round", "shape"]
    capsys.readouterr()
    code = main(
        ["evaluate", str(out), str(tags), "--root", str(images), "--label-separator", "|"]
        + ["--split", "test", "--json", "--per-class"]
    )  # fmt: skip
    assert code == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["n"] == TOTAL // 4
    assert {"f1_micro", "f1_macro", "mean_average_precision", "per_class"} <= set(metrics)
    assert metrics["per_class"]["shape"]["support"] == TOTAL // 4
    photo = str(images / rows[0][0])
    assert main(["predict", str(out), photo, "--json"]) == 0
    predicted = json.loads(capsys.readouterr().out)
    assert predicted[0]["labels"] == xferclass.predict(model, photo).label_sets[0]
    assert main(["predict", str(out), photo]) == 0
    assert "labels: " in capsys.readouterr().out

    labels = write_csv(tmp_path / "labels.csv", ["path", "label"], rows)
    out = tmp_path / "single.keras"
    arguments = ["train", str(labels), "--root", str(images), "--epochs", "1", "--out", str(out)]
    assert main(arguments + common) == 0
    assert model_multi_label(xferclass.load_model(out)) == (False, 0.5)
    capsys.readouterr()
    assert main(["evaluate", str(out), str(labels), "--root", str(images)]) == 0
    printed = capsys.readouterr().out
    table = printed[printed.index("per class (worst F1 first):") :].splitlines()[2:]
    f1 = [float(line.split()[3]) for line in table]
    assert len(table) == 3 and f1 == sorted(f1)
    assert main(["train", str(images), "--root", str(images)] + common) == 1
    assert "--root apply to a .csv label table" in capsys.readouterr().err
