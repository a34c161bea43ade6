"""Decisions on findings: the items to decide, the log that keeps each decision, and
what they make of the data (a corrected label table, or moved files with an undo log).

Every decision is one JSON line appended to ``review.jsonl`` with a single write
and an ``fsync``, so a killed process loses no decision it reported as saved. A
last line cut short by a crash is skipped on reading; the last decision on an
item wins, and ``"undo"`` takes an item's decision back.
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core._errors import DatasetError, InvalidArgumentError
from ..core._files import atomic_write
from ._findings import DataSet, Findings, write_json_atomically

__all__ = [
    "ACTIONS",
    "DecisionLog",
    "Item",
    "apply_moves",
    "corrected_rows",
    "items_of",
    "undo_moves",
    "write_table",
]

DECISIONS_FILE = "review.jsonl"
TABLE_FILE = "labels.csv"
#: The actions each kind of item takes ("undo" takes a decision back on any).
ACTIONS = {
    "label": ("accept", "keep", "relabel", "exclude"),
    "duplicate": ("keep_all", "keep_one", "exclude"),
    "outlier": ("keep", "exclude"),
}
#: The columns of the corrected label table.
TABLE_COLUMNS = ("path", "label", "split", "excluded", "review", "original_label")


@dataclass(frozen=True)
class Item:
    """One finding to decide on.

    Attributes:
        id: ``"<kind>:<path>"`` (a duplicate group: its paths joined by ``|``);
            stable while the files stay where they are.
        kind: ``"label"``, ``"duplicate"`` or ``"outlier"``.
        paths: The image (or the group's images), relative to the data's root.
        splits: The split of each of ``paths``.
        labels: The given label of each of ``paths``.
        suggested: The label the heads suggest (label issues), else None.
        score: How suspect it is (label issues and outliers), else None.
        cross_split: Whether a duplicate group crosses splits.
    """

    id: str
    kind: str
    paths: tuple[str, ...]
    splits: tuple[str, ...]
    labels: tuple[str, ...]
    suggested: str | None = None
    score: float | None = None
    cross_split: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "kind": self.kind, "paths": list(self.paths),
            "splits": list(self.splits), "labels": list(self.labels),
            "suggested": self.suggested, "score": self.score, "cross_split": self.cross_split,
        }  # fmt: skip


def items_of(findings: Findings) -> list[Item]:
    """The items of ``findings``: label issues, then duplicate groups, then outliers."""
    label_of = {row["path"]: row["label"] for row in findings.files}
    items = [
        Item(f"label:{row['path']}", "label", (row["path"],), ("train",), (row["given"],),
             row["suggested"], float(row["score"]))
        for row in findings.label_issues
    ]  # fmt: skip
    items += [
        Item("duplicate:" + "|".join(group["paths"]), "duplicate", tuple(group["paths"]),
             tuple(group["splits"]), tuple(label_of.get(p, "") for p in group["paths"]),
             cross_split=bool(group["cross_split"]))
        for group in findings.duplicates
    ]  # fmt: skip
    items += [
        Item(f"outlier:{row['path']}", "outlier", (row["path"],), (row["split"],),
             (label_of.get(row["path"], ""),), score=float(row["score"]))
        for row in findings.outliers
    ]  # fmt: skip
    return items


def check_decision(item: Item, record: dict[str, Any], class_names: list[str]) -> dict[str, Any]:
    """The decision ``record`` on ``item``, checked: ``{"item", "action", ...}``.

    Raises:
        InvalidArgumentError: The action does not apply to the item, a label is
            not a class, or the copy to keep is not in the group.
    """
    action = record.get("action")
    if action == "undo":
        return {"item": item.id, "action": "undo"}
    if action not in ACTIONS[item.kind]:
        raise InvalidArgumentError(
            f"action {action!r} does not apply to a {item.kind} item; use one of "
            f"{list(ACTIONS[item.kind]) + ['undo']}"
        )
    decision: dict[str, Any] = {"item": item.id, "action": action}
    if action == "relabel":
        label = record.get("label")
        if label not in class_names:
            raise InvalidArgumentError(f"label {label!r} is not one of the classes {class_names}")
        decision["label"] = label
    if action == "keep_one":
        keep = record.get("keep")
        if keep not in item.paths:
            raise InvalidArgumentError(f"keep={keep!r} is not one of the group's images")
        decision["keep"] = keep
    return decision


class DecisionLog:
    """The decisions of a review, one JSON line each, appended and synced as made."""

    def __init__(self, path: str) -> None:
        self.path = path

    def append(self, decision: dict[str, Any]) -> None:
        """Append one decision durably: one write of one line, then ``fsync``."""
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        line = json.dumps({**decision, "time": round(time.time(), 3)}, ensure_ascii=False)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.fstat(fd).st_size
            # A line cut short by a crash is left alone; this one starts on its own line.
            lead = b"\n" if size and not _ends_with_newline(self.path, size) else b""
            os.write(fd, lead + line.encode("utf-8") + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)

    def read(self) -> dict[str, dict[str, Any]]:
        """``{item id: its last decision}``; a cut-short or unreadable line is skipped."""
        decisions: dict[str, dict[str, Any]] = {}
        try:
            with open(self.path, encoding="utf-8", errors="replace") as file:
                lines = file.read().splitlines()
        except FileNotFoundError:
            return decisions
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if not isinstance(record, dict) or not isinstance(record.get("item"), str):
                continue
            if record.get("action") == "undo":
                decisions.pop(record["item"], None)
            else:
                decisions[record["item"]] = record
        return decisions


def _ends_with_newline(path: str, size: int) -> bool:
    with open(path, "rb") as file:
        file.seek(size - 1)
        return file.read(1) == b"\n"


def corrected_rows(
    findings: Findings, items: list[Item], decisions: dict[str, dict[str, Any]]
) -> list[dict[str, Any]]:
    """Every image with its label, split, whether it is excluded and what was decided.

    ``accept`` gives a label issue its suggested label and ``relabel`` the label
    chosen; ``exclude`` excludes the image. A duplicate group's ``keep_one``
    excludes every other copy, and ``exclude`` its copies in the training split
    (every copy when none is). An exclusion wins over a relabelling.
    """
    rows = {
        f["path"]: {"path": f["path"], "label": f["label"], "split": f["split"],
                    "excluded": False, "review": "", "original_label": f["label"]}
        for f in findings.files
    }  # fmt: skip

    def mark(path: str, review: str, label: str | None = None) -> None:
        row = rows.get(path)
        if row is None or row["excluded"]:
            return
        if review == "excluded":
            row.update(excluded=True, review="excluded")
        elif label is not None and label != row["original_label"]:
            row.update(label=label, review="relabelled")
        elif not row["review"]:
            row["review"] = "kept"

    for item in items:
        decision = decisions.get(item.id)
        if decision is None:
            continue
        for path, review, label in _effects(item, decision):
            mark(path, review, label)
    return list(rows.values())


def _effects(item: Item, decision: dict[str, Any]) -> list[tuple[str, str, str | None]]:
    """``(path, "kept" | "relabelled" | "excluded", label)`` of one decision."""
    action = decision["action"]
    if action == "accept":
        return [(item.paths[0], "relabelled", item.suggested)]
    if action == "relabel":
        return [(item.paths[0], "relabelled", decision["label"])]
    if action == "keep_one":
        return [(p, "kept" if p == decision["keep"] else "excluded", None) for p in item.paths]
    if action == "exclude" and item.kind == "duplicate":
        trained = [p for p, s in zip(item.paths, item.splits) if s == "train"]
        return [(p, "excluded", None) for p in trained or item.paths]
    if action == "exclude":
        return [(p, "excluded", None) for p in item.paths]
    return [(p, "kept", None) for p in item.paths]  # keep, keep_all


def write_table(dataset: DataSet, rows: list[dict[str, Any]], out: str | None = None) -> str:
    """Write the corrected label table (CSV) to ``out`` and return its path.

    Paths are relative to the table's own folder, so the table and the data
    move together. The default ``out`` is ``labels.csv`` in the review's folder.
    It is written to a temporary file and renamed, so a reader never sees half.
    """
    path = os.path.abspath(out or os.path.join(dataset.state, TABLE_FILE))
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(TABLE_COLUMNS)
    for row in rows:
        relative = os.path.relpath(dataset.absolute(row["path"]), folder).replace(os.sep, "/")
        writer.writerow(
            [relative, row["label"], row["split"], "1" if row["excluded"] else "0", row["review"],
             row["original_label"]]
        )  # fmt: skip
    content = text.getvalue()
    atomic_write(path, lambda name: Path(name).write_text(content, encoding="utf-8", newline=""))
    return path


# --------------------------------------------------------------------------- moves


def _planned_moves(dataset: DataSet, rows: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """``(from, to)`` relative paths: relabelled images into their new class folder of
    the same split, excluded ones under ``<state>/excluded/``."""
    taken: set[str] = set()
    moves = []
    state = dataset.relative(dataset.state)
    for row in rows:
        if row["excluded"]:
            target = f"{state}/excluded/{row['path']}"
        elif row["label"] != row["original_label"]:
            split = dataset.relative(dataset.splits[row["split"]])
            prefix = "" if split == "." else f"{split}/"
            target = f"{prefix}{row['label']}/{row['path'].rsplit('/', 1)[-1]}"
        else:
            continue
        target = _free(dataset, target, taken)
        taken.add(target)
        moves.append((row["path"], target))
    return moves


def _free(dataset: DataSet, target: str, taken: set[str]) -> str:
    """``target``, or ``name-1.ext``, ``name-2.ext``... where a file or a move has it."""
    stem, dot, extension = target.rpartition(".")
    if not dot:
        stem, extension = target, ""
    candidate, n = target, 0
    while candidate in taken or os.path.lexists(dataset.absolute(candidate)):
        n += 1
        candidate = f"{stem}-{n}{dot}{extension}"
    return candidate


def apply_moves(
    dataset: DataSet, rows: list[dict[str, Any]]
) -> tuple[str | None, list[tuple[str, str]]]:
    """Move relabelled and excluded images; return the undo log and the moves made.

    The undo log (``<state>/undo-<n>.json``) is written and synced before any
    file moves; :func:`undo_moves` puts every file back.

    Raises:
        DatasetError: The data is a label table (its corrected table is the
            result; nothing is moved), or a file to move is gone.
    """
    if dataset.table is not None:
        raise DatasetError(
            "review: --apply-moves moves files between class folders, and this data is a label "
            "table: use the corrected table instead (nothing was moved)"
        )
    moves = _planned_moves(dataset, rows)
    if not moves:
        return None, []
    missing = [a for a, _ in moves if not os.path.isfile(dataset.absolute(a))]
    if missing:
        raise DatasetError(
            f"review: {len(missing)} files to move are gone (first: {missing[0]!r}); nothing was "
            "moved. Review the data again to refresh the findings"
        )
    n = 1
    while os.path.exists(os.path.join(dataset.state, f"undo-{n}.json")):
        n += 1
    log = os.path.join(dataset.state, f"undo-{n}.json")
    write_json_atomically(log, {"moves": [{"from": a, "to": b} for a, b in moves]})
    for source, target in moves:
        os.renames(dataset.absolute(source), dataset.absolute(target))
    return log, moves


def undo_moves(dataset: DataSet) -> tuple[str, int]:
    """Put back the files of the latest ``--apply-moves``; return its log and the files moved.

    Every move is checked before any file moves: its file is where it was put
    and its old place is free. The log is then renamed ``undo-<n>.done.json``.

    Raises:
        DatasetError: There is nothing to undo, or a file is not where the log
            says (nothing is moved then).
    """
    logs = sorted(
        (int(name[5:-5]), name)
        for name in _listing(dataset.state)
        if name.startswith("undo-") and name.endswith(".json") and name[5:-5].isdigit()
    )
    if not logs:
        raise DatasetError(f"review: nothing to undo ({dataset.state} holds no undo log)")
    log = os.path.join(dataset.state, logs[-1][1])
    with open(log, encoding="utf-8") as file:
        moves = [(m["from"], m["to"]) for m in json.load(file)["moves"]]
    for source, target in moves:
        if not os.path.isfile(dataset.absolute(target)) or os.path.lexists(
            dataset.absolute(source)
        ):
            raise DatasetError(
                f"review: cannot undo {os.path.basename(log)}: {target!r} should be there and "
                f"{source!r} free; nothing was moved"
            )
    for source, target in reversed(moves):
        os.renames(dataset.absolute(target), dataset.absolute(source))
    os.replace(log, log[: -len(".json")] + ".done.json")
    return log, len(moves)


def _listing(folder: str) -> list[str]:
    try:
        return os.listdir(folder)
    except FileNotFoundError:
        return []
