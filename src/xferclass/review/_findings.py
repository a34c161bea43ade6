"""What a review reviews: the data set's files and ``inspect``'s findings, cached beside it.

The findings are kept in ``<state>/inspection.json`` with the options that made
them and the size and modification time of every file they cover. A later
review of the same data with the same options reads them back instead of
running the frozen pass again; any added, removed or changed file, or another
option, computes them anew.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core._errors import DatasetError, InvalidArgumentTypeError

__all__ = [
    "DataSet", "Findings", "STATE_FOLDER", "from_inspection", "locate", "load_findings",
]  # fmt: skip

#: The hidden folder beside the data that holds the review's files (the loaders skip it).
STATE_FOLDER = ".xferclass"
FINDINGS_FILE = "inspection.json"
#: The version of ``inspection.json``'s layout; another one is computed anew.
FORMAT = 1
_VALIDATION_NAMES = ("validation", "val", "valid")


@dataclass(frozen=True)
class DataSet:
    """Where a data set's images are, and where its review keeps its files.

    Attributes:
        root: The folder every path of the review is relative to: the data
            folder, or the folder of the label table (the folder above it for a
            table in a review's ``.xferclass`` folder).
        table: The label table, when the data is one; None for folders.
        splits: ``{split: folder}`` of a folder data set (``train`` and, where
            present, ``validation`` and ``test``); empty for a table.
        state: The folder of the review's own files (``inspection.json``,
            ``review.jsonl``, the corrected table, undo logs).
    """

    root: str
    table: str | None
    splits: dict[str, str]
    state: str

    def relative(self, path: str) -> str:
        """``path`` relative to :attr:`root`, with ``/`` separators."""
        return os.path.relpath(os.path.abspath(path), self.root).replace(os.sep, "/")

    def absolute(self, relative: str) -> str:
        """The file a path relative to :attr:`root` names."""
        return os.path.normpath(os.path.join(self.root, *relative.split("/")))


def locate(data: str | os.PathLike[str]) -> DataSet:
    """The :class:`DataSet` of a folder (with ``train/`` inside, or of class subfolders) or table.

    Raises:
        DatasetError: ``data`` is neither a folder nor a ``.csv``/``.tsv`` file.
    """
    from ..data._tables import is_label_table

    path = os.path.abspath(os.fspath(data))
    if is_label_table(path):
        if not os.path.isfile(path):
            raise DatasetError(f"review: the label table {os.fspath(data)!r} does not exist")
        root = os.path.dirname(path)
        if os.path.basename(root) == STATE_FOLDER:
            root = os.path.dirname(root)  # a table a review wrote: its data is the folder above
        stem = os.path.splitext(os.path.basename(path))[0]
        return DataSet(root, path, {}, os.path.join(root, STATE_FOLDER, f"review-{stem}"))
    if not os.path.isdir(path):
        raise DatasetError(
            f"review: DATA={os.fspath(data)!r} is neither a folder of images nor a .csv label table"
        )
    splits = {"train": path}
    if os.path.isdir(os.path.join(path, "train")):
        splits = {"train": os.path.join(path, "train")}
        for name in _VALIDATION_NAMES:
            if os.path.isdir(os.path.join(path, name)):
                splits["validation"] = os.path.join(path, name)
                break
        if os.path.isdir(os.path.join(path, "test")):
            splits["test"] = os.path.join(path, "test")
    return DataSet(path, None, splits, os.path.join(path, STATE_FOLDER))


@dataclass
class Findings:
    """``inspect``'s findings on a data set, with every path relative to its root.

    Attributes:
        class_names: The classes, in label order.
        files: ``{"path", "split", "label"}`` of every image of every split.
        label_issues: ``{"path", "given", "suggested", "score"}`` rows.
        duplicates: ``{"paths", "splits", "cross_split"}`` groups.
        outliers: ``{"path", "split", "score"}`` rows.
    """

    class_names: list[str]
    files: list[dict[str, str]]
    label_issues: list[dict[str, Any]]
    duplicates: list[dict[str, Any]]
    outliers: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        return {
            "class_names": self.class_names,
            "files": self.files,
            "label_issues": self.label_issues,
            "duplicates": self.duplicates,
            "outliers": self.outliers,
        }


def _stamp(dataset: DataSet, paths: Sequence[str]) -> str:
    """A digest of the table (if any) and each file's path, size and modification time."""
    digest = hashlib.sha256()
    files = ([dataset.table] if dataset.table else []) + [dataset.absolute(p) for p in paths]
    for path in files:
        try:
            stat = os.stat(path)
            digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        except OSError:
            digest.update(f"{path}\0missing\n".encode())
    return digest.hexdigest()


def _current_files(dataset: DataSet) -> list[str] | None:
    """The image files of a folder data set now, relative to its root; None for a table."""
    from ..data._folders import is_image_file

    if dataset.table is not None:
        return None
    found = []
    for folder in dataset.splits.values():
        for parent, folders, names in os.walk(folder):
            folders[:] = sorted(f for f in folders if not f.startswith("."))
            if parent == folder:
                continue  # images of a split are in class subfolders
            found += [dataset.relative(os.path.join(parent, n)) for n in names if is_image_file(n)]
    return sorted(found)


def _cached(dataset: DataSet, options: dict[str, Any]) -> Findings | None:
    """The cached findings, when they are of these options and every file is unchanged."""
    path = os.path.join(dataset.state, FINDINGS_FILE)
    try:
        with open(path, encoding="utf-8") as file:
            saved = json.load(file)
    except (OSError, ValueError):
        return None
    if not isinstance(saved, dict) or saved.get("format") != FORMAT:
        return None
    if saved.get("options") != options:
        return None
    try:
        findings = Findings(**saved["findings"])
    except (KeyError, TypeError):
        return None
    return findings if saved.get("stamp") == _stamp(dataset, _covered(dataset, findings)) else None


def _covered(dataset: DataSet, findings: Findings) -> list[str]:
    """The files whose change makes the findings stale: every image file of a
    folder data set (found or not), or the files a table's findings cover."""
    current = _current_files(dataset)
    return current if current is not None else [row["path"] for row in findings.files]


def write_json_atomically(path: str, value: Any) -> None:
    """Write ``value`` as JSON to ``path`` through :func:`~xferclass.core._files.atomic_write`."""
    from ..core._files import atomic_write

    text = json.dumps(value, indent=1, ensure_ascii=False) + "\n"
    atomic_write(path, lambda name: Path(name).write_text(text, encoding="utf-8"))


def from_inspection(dataset: DataSet, found: Any) -> Findings:
    """:class:`Findings` of an :class:`~xferclass.Inspection`, paths made relative.

    Raises:
        InvalidArgumentTypeError: ``found`` is not an ``Inspection``.
        DatasetError: An image of ``found`` is outside the data's folder.
    """
    from ..evaluation.inspection import Inspection

    if not isinstance(found, Inspection):
        raise InvalidArgumentTypeError(
            f"inspection= must be an Inspection (xferclass.inspect's result), got "
            f"{type(found).__name__}"
        )
    outside = [p for p in found.paths if dataset.relative(p).startswith("../")]
    if outside:
        raise DatasetError(
            f"review: {len(outside)} images of the inspection are outside the data's folder "
            f"{dataset.root!r} (first: {outside[0]!r}); inspect this data"
        )
    split_of = dict(zip(found.paths, found.splits, strict=True))
    return Findings(
        class_names=list(found.class_names),
        files=[
            {"path": dataset.relative(p), "split": s, "label": label}
            for p, s, label in zip(found.paths, found.splits, found.labels, strict=True)
        ],
        label_issues=[
            {
                **{k: row[k] for k in ("given", "suggested")},
                "path": dataset.relative(row["path"]),
                "score": round(float(row["score"]), 6),
            }
            for row in found.label_issues
        ],  # fmt: skip
        duplicates=[
            {
                "paths": [dataset.relative(p) for p in group["paths"]],
                "splits": list(group["splits"]),
                "cross_split": bool(group["cross_split"]),
            }
            for group in found.duplicates
        ],  # fmt: skip
        outliers=[
            {
                "path": dataset.relative(row["path"]),
                "split": split_of[row["path"]],
                "score": round(float(row["score"]), 6),
            }
            for row in found.outliers
        ],  # fmt: skip
    )


def load_findings(
    dataset: DataSet, *, refresh: bool = False, verbose: int = 0, **options: Any
) -> Findings:
    """The findings of ``inspect`` on ``dataset``, from the cache when it still holds.

    Args:
        dataset: Where the data is.
        refresh: Compute them anew even when the cache holds.
        verbose: 1 prints where the findings come from and shows inspect's progress.
        **options: ``inspect``'s options (``backbone``, ``weights``, ``input_size``,
            ``folds``, ``seed``, ``batch_size``, ``engine``); the cache is of these.
    """
    from ..evaluation.inspection import inspect

    key = _options_key(inspect, options)
    if not refresh:
        cached = _cached(dataset, key)
        if cached is not None:
            if verbose:
                print(f"review: the findings of {os.path.join(dataset.state, FINDINGS_FILE)}")
            return cached
    if verbose:
        print("review: inspecting the data (label issues, duplicates, outliers)")
    if dataset.table is not None:
        found = inspect(dataset.table, verbose=verbose, **options)
    else:
        splits = dataset.splits
        found = inspect(
            splits["train"], splits.get("validation"), splits.get("test"), verbose=verbose,
            **options,
        )  # fmt: skip
    findings = from_inspection(dataset, found)
    stamp = _stamp(dataset, _covered(dataset, findings))
    saved = {"format": FORMAT, "options": key, "stamp": stamp}
    write_json_atomically(
        os.path.join(dataset.state, FINDINGS_FILE), {**saved, "findings": findings.to_dict()}
    )
    return findings


def _options_key(function: Any, options: dict[str, Any]) -> dict[str, Any]:
    """``inspect``'s options that change its findings, its defaults filled in.

    Raises:
        InvalidArgumentTypeError: An option is not one of ``inspect``'s.
    """
    import inspect as python

    parameters = python.signature(function).parameters
    unknown = sorted(set(options) - set(parameters) | set(options) & {"data", "validation"})
    if unknown:
        raise InvalidArgumentTypeError(f"review: {unknown} are not options of xferclass.inspect")
    chosen = {
        name: _plain(options.get(name, parameter.default))
        for name, parameter in parameters.items()
        if parameter.kind is parameter.KEYWORD_ONLY
    }
    return {k: v for k, v in sorted(chosen.items()) if k not in ("batch_size", "engine", "verbose")}


def _plain(value: Any) -> Any:
    """An option as JSON holds it (a tuple as a list, a path as a string)."""
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value
