"""Label tables: a CSV file, a pandas DataFrame or ``(path, label)`` pairs.

:func:`read_label_table` turns any of them into one :class:`LabelTable`: the
image path of each row (made absolute against ``root``), its labels, and the
rows that cannot be used (no file, no label) with the reason.
:func:`xferclass.load_image_dataset` then checks and loads the images exactly as
it does for a folder of class subfolders.

Columns are found by name when not given: the path column is one of
:data:`PATH_COLUMNS`, the label column one of :data:`LABEL_COLUMNS`, the split
column one of :data:`SPLIT_COLUMNS`, the excluded column one of
:data:`EXCLUDED_COLUMNS` (case and spaces ignored). A CSV without a header is
read the way Vertex AI reads its import files: ``path,label`` or
``ML_USE,path,label``. pandas is never imported: a DataFrame is read through its
own ``columns`` and ``tolist``.

A table with a split column is read by role where the library reads it for
training or inspection (:func:`role_split`): the table given as training
data gives its ``train`` rows (and its ``validation`` and ``test`` rows where
no other data is given for those), one given as validation data its
``validation`` rows, one given as test data its ``test`` rows. Test rows never
reach training.

An excluded column (``excluded``: ``1``, ``true``, ``yes``, ``y`` or ``x``; empty,
``0``, ``false``, ``no`` or ``n`` keep the row) marks rows left out without deleting
them, as in a label table a review tool corrected: they are dropped before
anything else, so they are neither unusable rows nor in any split, and their
labels are not classes unless other rows hold them.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..core._errors import DatasetError

__all__ = [
    "EXCLUDED_COLUMNS",
    "LABEL_COLUMNS",
    "LabelTable",
    "PATH_COLUMNS",
    "SPLIT_COLUMNS",
    "SPLIT_VALUES",
    "is_label_table",
    "read_label_table",
    "role_split",
    "split_values",
    "table_has_split",
]

#: Header names (lower case, ``_`` for spaces and dashes) taken as the image path column.
PATH_COLUMNS = (
    "path", "filepath", "file_path", "filename", "file_name", "file", "image", "image_path",
    "imagepath", "image_file", "image_name", "image_id", "img", "gcs_file_path", "uri",
)  # fmt: skip
#: Header names taken as the label column.
LABEL_COLUMNS = (
    "label", "labels", "class", "class_name", "classes", "category", "categories", "target",
    "tag", "tags",
)  # fmt: skip
#: Header names taken as the split column (Vertex AI calls it ``ML_USE``).
SPLIT_COLUMNS = ("split", "ml_use", "subset", "set")
#: Values of the split column, and what they mean.
SPLIT_VALUES = {
    "train": "train", "training": "train",
    "validation": "validation", "valid": "validation", "val": "validation",
    "validate": "validation",
    "test": "test", "testing": "test",
    "unassigned": "unassigned",
}  # fmt: skip
#: Header names taken as the column that marks rows left out (true) or kept (false).
EXCLUDED_COLUMNS = ("excluded", "exclude")
#: Values of the excluded column (case and spaces ignored) that leave a row out.
_EXCLUDED_TRUE = ("1", "true", "yes", "y", "x")
#: Values that keep a row; a missing value (None, NaN) keeps it too.
_EXCLUDED_FALSE = ("", "0", "false", "no", "n")
_TABLE_SUFFIXES = (".csv", ".tsv")
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".gif", ".bmp")


@dataclass(frozen=True)
class LabelTable:
    """The rows of a label table that a split selects, ready to be checked and loaded.

    Attributes:
        source: What the table is, for messages (``'labels.csv'``, ``'a DataFrame'``).
        paths: The image file of each usable row, absolute or relative to the
            working directory.
        labels: The labels of each usable row (one for single-label tables).
        classes: Every label of the whole table, all splits included, in label
            order: numbers numerically, other names alphabetically.
        multi_label: Whether rows hold label lists or separator-joined labels.
        unusable: ``(path, reason)`` of the rows that cannot be used.
        excluded: How many rows the excluded column leaves out, of those the
            split selects (of the whole table without a split). They are in
            neither ``paths`` nor ``unusable``.
    """

    source: str
    paths: list[str]
    labels: list[list[str]]
    classes: list[str]
    multi_label: bool
    unusable: list[tuple[str, str]]
    excluded: int = 0


def _is_dataframe(value: Any) -> bool:
    return type(value).__module__.split(".")[0] == "pandas" and hasattr(value, "columns")


def _is_pair(item: Any) -> bool:
    return (
        isinstance(item, (tuple, list))
        and len(item) == 2
        and isinstance(item[0], (str, os.PathLike))
    )


def is_label_table(value: Any) -> bool:
    """Whether ``value`` is a label table: a ``.csv``/``.tsv`` path, a DataFrame or pairs."""
    if isinstance(value, (str, os.PathLike)):
        name = os.fspath(value)
        return isinstance(name, str) and name.lower().endswith(_TABLE_SUFFIXES)
    if _is_dataframe(value):
        return True
    return isinstance(value, (list, tuple)) and len(value) > 0 and all(map(_is_pair, value))


def _normal(name: Any) -> str:
    return str(name).strip().lower().replace(" ", "_").replace("-", "_")


def _missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and not value.strip()


def _read_csv(path: str) -> tuple[list[str], list[list[str]]]:
    """Column names and rows of a CSV (or TSV) file; Vertex-style when it has no header."""
    delimiter = "\t" if path.lower().endswith(".tsv") else ","
    try:
        with open(path, newline="", encoding="utf-8-sig") as file:
            rows = [row for row in csv.reader(file, delimiter=delimiter) if any(row)]
    except OSError as error:
        raise DatasetError(
            f"load_image_dataset: cannot read the label table {path!r}: {error.strerror or error}"
        ) from None
    except (UnicodeDecodeError, csv.Error) as error:
        raise DatasetError(
            f"load_image_dataset: {path!r} is not a readable CSV file ({error})"
        ) from None
    if not rows:
        raise DatasetError(f"load_image_dataset: the label table {path!r} is empty")
    first = rows[0]
    if any(cell.strip().lower().endswith(_IMAGE_SUFFIXES) for cell in first):
        # No header: Vertex AI's import format, [ML_USE,]path,label.
        width = len(first)
        if width == 2:
            return ["path", "label"], rows
        if width == 3:
            return ["ml_use", "path", "label"], rows
        raise DatasetError(
            f"load_image_dataset: {path!r} has no header row and {width} columns; add a header "
            "(for example path,label) or use the headerless form path,label or ML_USE,path,label"
        )
    return [cell.strip() for cell in first], rows[1:]


def _columns(value: Any, function: str) -> tuple[str, list[str], dict[str, list[Any]], str]:
    """``(source, names, name -> values, default root)`` of any label table."""
    if isinstance(value, (str, os.PathLike)):
        path = os.fspath(value)
        if not os.path.isfile(path):
            raise DatasetError(f"{function}: the label table {path!r} does not exist")
        names, rows = _read_csv(path)
        data = {
            name: [row[j] if j < len(row) else "" for row in rows] for j, name in enumerate(names)
        }
        return repr(path), names, data, os.path.dirname(os.path.abspath(path))
    if _is_dataframe(value):
        names = [str(c) for c in value.columns]
        if len(set(names)) != len(names):
            raise DatasetError(f"{function}: the DataFrame has repeated column names {names}")
        data = {str(c): value[c].tolist() for c in value.columns}
        return "a DataFrame", names, data, os.getcwd()
    items = list(value)
    data = {"path": [os.fspath(p) for p, _ in items], "label": [label for _, label in items]}
    return "the (path, label) pairs", ["path", "label"], data, os.getcwd()


def _pick(
    names: list[str], given: Any, candidates: Sequence[str], argument: str, source: str, what: str,
    remedy: str | None = None,
) -> str | None:  # fmt: skip
    """The column for ``argument``: the one given, or the one whose name is a known one.

    ``remedy`` replaces the advice to pass ``argument=`` when several names match.
    """
    if given is not None:
        if given not in names:
            raise DatasetError(
                f"load_image_dataset: {argument}={given!r} is not a column of {source}; "
                f"its columns are {names}"
            )
        return str(given)
    found = [name for name in names if _normal(name) in candidates]
    if len(found) > 1:
        raise DatasetError(
            f"load_image_dataset: {source} has several columns that could hold {what}: "
            f"{found}; {remedy or f'pass {argument}= to say which'} (its columns are {names})"
        )
    return found[0] if found else None


def _excluded_column(names: list[str], source: str, taken: Sequence[str | None]) -> str | None:
    """The excluded column, found by name; None without one or when it is a column in use."""
    found = _pick(
        names, None, EXCLUDED_COLUMNS, "", source, "the excluded marks",
        remedy="rename or remove all but one",
    )  # fmt: skip
    return None if found in taken else found


def _is_excluded(value: Any, source: str, column: str, row: int) -> bool:
    """Whether one cell of the excluded column leaves its row (1-based) out."""
    if _missing(value) or type(value).__name__ == "NAType":  # pandas.NA: a nullable column
        return False
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # a pandas int column with gaps holds floats
    text = str(value).strip().lower()  # Python and NumPy bools print as True and False
    if text in _EXCLUDED_TRUE:
        return True
    if text in _EXCLUDED_FALSE:
        return False
    raise DatasetError(
        f"load_image_dataset: row {row} of {source} has {value!r} in column {column!r}, "
        f"which is neither true ({', '.join(_EXCLUDED_TRUE)}) nor false "
        f"({', '.join(_EXCLUDED_FALSE[1:])} or an empty cell)"
    )


def _in_split(cell: Any, wanted: str | None) -> bool:
    """Whether a row whose split cell is ``cell`` is one ``wanted`` selects (None: all)."""
    return wanted is None or SPLIT_VALUES.get(_normal(cell)) == wanted


def _drop_excluded(
    data: dict[str, list[Any]], column: str | None, source: str, split_name: str | None,
    wanted: str | None,
) -> tuple[dict[str, list[Any]], int, list[int]]:  # fmt: skip
    """The table without its excluded rows, how many of them ``wanted`` selects, and the
    number (1-based) of each row kept."""
    everything = list(range(1, len(next(iter(data.values()), [])) + 1))
    if column is None:
        return data, 0, everything
    flags = [_is_excluded(v, source, column, row + 1) for row, v in enumerate(data[column])]
    if not any(flags):
        return data, 0, everything
    splits = data[split_name] if split_name is not None else [None] * len(flags)
    selected = sum(flag and _in_split(s, wanted) for flag, s in zip(flags, splits, strict=True))
    kept = {
        name: [v for v, out in zip(values, flags, strict=True) if not out]
        for name, values in data.items()
    }
    numbers = [number for number, out in zip(everything, flags, strict=True) if not out]
    return kept, selected, numbers


def _label_list(value: Any, separator: str | None) -> tuple[list[str], bool]:
    """The labels in one cell, and whether the cell was a list."""
    if isinstance(value, (list, tuple, set, frozenset)) or type(value).__name__ == "ndarray":
        return sorted({str(v).strip() for v in value if not _missing(v)}), True
    if _missing(value):
        return [], False
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # a pandas int column with gaps holds floats
    text = str(value).strip()
    if separator is not None:
        return sorted({part.strip() for part in text.split(separator) if part.strip()}), False
    return [text], False


def _class_order(labels: set[str]) -> list[str]:
    """Numbers in numeric order, other names alphabetically."""
    if labels and all(label.lstrip("-").isdigit() for label in labels):
        return sorted(labels, key=int)
    return sorted(labels)


def _resolve(path: str, root: str) -> tuple[str, bool]:
    """The file of a table row, and whether it exists; an extension is tried when missing."""
    full = os.path.normpath(path if os.path.isabs(path) else os.path.join(root, path))
    if os.path.isfile(full):
        return full, True
    if not os.path.splitext(full)[1]:  # ids without an extension, as in many Kaggle tables
        for suffix in _IMAGE_SUFFIXES + tuple(s.upper() for s in _IMAGE_SUFFIXES):
            if os.path.isfile(full + suffix):
                return full + suffix, True
    return full, False


def read_label_table(
    value: Any,
    *,
    root: str | os.PathLike[str] | None = None,
    path_column: str | None = None,
    label_column: str | None = None,
    split_column: str | None = None,
    split: str | None = None,
    label_separator: str | None = None,
) -> LabelTable:
    """Read a label table; see :func:`xferclass.load_image_dataset` for the arguments.

    Raises:
        DatasetError: A column is missing or ambiguous, ``split`` selects no row,
            ``root`` is not a folder, or the table has no rows.
    """
    function = "load_image_dataset"
    source, names, data, default_root = _columns(value, function)
    if root is not None:
        if not isinstance(root, (str, os.PathLike)) or not os.path.isdir(root):
            raise DatasetError(f"{function}: root={root!r} is not a folder")
        default_root = os.fspath(root)
    if label_separator is not None and not (isinstance(label_separator, str) and label_separator):
        raise DatasetError(
            f"{function}: label_separator={label_separator!r} must be a non-empty string "
            "such as '|'"
        )
    path_name = _pick(names, path_column, PATH_COLUMNS, "path_column", source, "the image paths")
    label_name = _pick(names, label_column, LABEL_COLUMNS, "label_column", source, "the labels")
    for argument, found in (("path_column", path_name), ("label_column", label_name)):
        if found is None:
            what = "image paths" if argument == "path_column" else "labels"
            raise DatasetError(
                f"{function}: cannot tell which column of {source} holds the {what}; pass "
                f"{argument}= (its columns are {names})"
            )
    assert path_name is not None and label_name is not None
    split_name = _pick(names, split_column, SPLIT_COLUMNS, "split_column", source, "the split")
    wanted = _wanted_split(split, split_column, split_name, source, names)
    excluded_name = _excluded_column(names, source, (path_name, label_name, split_name))
    if not data[path_name]:
        raise DatasetError(f"{function}: {source} has no rows")
    data, excluded, numbers = _drop_excluded(data, excluded_name, source, split_name, wanted)
    if not data[path_name]:
        raise DatasetError(f"{function}: every row of {source} is excluded ({excluded_name!r})")
    cells = [_label_list(v, label_separator) for v in data[label_name]]
    multi_label = label_separator is not None or any(is_list for _, is_list in cells)
    classes = _class_order({label for labels, _ in cells for label in labels})
    split_cells = data[split_name] if split_name is not None else None
    rows = _rows(
        data[path_name],
        [labels for labels, _ in cells],
        split_cells,
        wanted,
        multi_label=multi_label,
        root=default_root,
        columns=(path_name, label_name),
        numbers=numbers,
    )
    paths, labels, unusable, selected = rows
    if wanted is not None and not selected:
        assert split_name is not None
        if excluded:
            raise DatasetError(
                f"{function}: split={split!r} selects no row of {source} that is not "
                f"excluded: its {excluded} row(s) are all excluded ({excluded_name!r})"
            )
        values = sorted({str(v) for v in data[split_name]})
        raise DatasetError(
            f"{function}: split={split!r} selects no row of {source}; column {split_name!r} "
            f"holds {values[:10]}"
        )
    return LabelTable(source, paths, labels, classes, multi_label, unusable, excluded)


def _wanted_split(
    split: str | None, split_column: str | None, split_name: str | None, source: str,
    names: list[str],
) -> str | None:  # fmt: skip
    """The split value ``split=`` selects, checked against the table's split column."""
    function = "load_image_dataset"
    if split is None:
        if split_column is not None:
            raise DatasetError(
                f"{function}: split_column={split_column!r} is given but split is not; pass "
                "split='train', 'validation' or 'test' to choose the rows"
            )
        return None
    wanted = SPLIT_VALUES.get(_normal(split))
    if wanted is None or wanted == "unassigned":
        raise DatasetError(f"{function}: split={split!r} must be 'train', 'validation' or 'test'")
    if split_name is None:
        raise DatasetError(
            f"{function}: split={split!r} needs a split column, and {source} has none of "
            f"{list(SPLIT_COLUMNS)}; pass split_column= (its columns are {names})"
        )
    return wanted


def _rows(
    raw_paths: list[Any], cells: list[list[str]], split_cells: list[Any] | None,
    wanted: str | None, *, multi_label: bool, root: str, columns: tuple[str, str],
    numbers: list[int],
) -> tuple[list[str], list[list[str]], list[tuple[str, str]], int]:  # fmt: skip
    """The usable rows of the selected split: paths, labels, the unusable ones and why,
    and how many rows the split selected. ``numbers``: each row's number in the table."""
    path_name, label_name = columns
    paths: list[str] = []
    labels: list[list[str]] = []
    unusable: list[tuple[str, str]] = []
    selected = 0
    for row, (raw_path, row_labels) in enumerate(zip(raw_paths, cells, strict=True)):
        if split_cells is not None and not _in_split(split_cells[row], wanted):
            continue
        selected += 1
        if _missing(raw_path):
            unusable.append((f"<row {numbers[row]}>", f"no path in column {path_name!r}"))
            continue
        full, exists = _resolve(os.fspath(str(raw_path)).strip(), root)
        if not multi_label and not row_labels:
            unusable.append((full, f"no label in column {label_name!r}"))
        elif not exists:
            unusable.append((full, "file does not exist"))
        else:
            paths.append(full)
            labels.append(row_labels)
    return paths, labels, unusable, selected


def split_values(value: Any, *, path_column: str | None = None) -> set[str] | None:
    """The splits (``train``, ``validation``, ...) a table's split column names; None without one.

    Excluded rows do not count: a split whose rows are all excluded is not named.

    Raises:
        DatasetError: The table cannot be read, several columns could be the split
            column or the excluded column, or an excluded cell is not a yes/no value.
    """
    source, names, data, _ = _columns(value, "load_image_dataset")
    column = _pick(names, None, SPLIT_COLUMNS, "split_column", source, "the split")
    if column is None or column == path_column:
        return None
    excluded_name = _excluded_column(names, source, (column, path_column))
    data, _, _ = _drop_excluded(data, excluded_name, source, None, None)
    return {SPLIT_VALUES.get(_normal(v), str(v)) for v in data[column]}


def role_split(value: Any, split: str) -> str | None:
    """``split`` when ``value`` is a label table with a split column, else None.

    The ``split`` argument of :func:`xferclass.load_image_dataset` that reads the
    rows of one role (``"train"``, ``"validation"`` or ``"test"``) from training,
    validation or test data: a folder, a dataset or a table without a split column
    is read whole.

    Raises:
        DatasetError: The table cannot be read, or several columns could be the split column.
    """
    return split if table_has_split(value, None) else None


def table_has_split(value: Any, split: str | None) -> bool:
    """Whether ``value`` is a label table with a split column that has ``split`` rows.

    ``split=None``: whether it has a split column at all.

    Raises:
        DatasetError: The table cannot be read, or several columns could be the split column.
    """
    if not is_label_table(value):
        return False
    values = split_values(value)
    return values is not None and (split is None or split in values)
