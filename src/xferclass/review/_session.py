"""A review of one data set: its findings, the decisions made so far, and what they make."""

from __future__ import annotations

import os
import threading
from collections import Counter
from typing import Any

from ..core._errors import InvalidArgumentError
from ._decisions import (
    DECISIONS_FILE,
    DecisionLog,
    Item,
    apply_moves,
    check_decision,
    corrected_rows,
    items_of,
    undo_moves,
    write_table,
)
from ._findings import DataSet, Findings, from_inspection, load_findings, locate

__all__ = ["Review", "UnknownItemError", "undo"]


class UnknownItemError(InvalidArgumentError, KeyError):
    """A decision names an item this review does not have."""


class Review:
    """The review of a data set: ``inspect``'s findings as items to decide on.

    Decisions are saved as they are made (:meth:`decide`) to ``review.jsonl`` in
    the review's folder (``DATA/.xferclass/``); a new ``Review`` of the same data
    resumes from them. :meth:`write_table` writes the corrected label table;
    :meth:`apply_moves` moves files only when asked, after writing an undo log.

    Args:
        data: A folder (``train/`` and ``validation/`` inside, or class
            subfolders) or a ``.csv`` label table with a split column.
        inspection: An :class:`~xferclass.Inspection` of this data already made
            (by :func:`xferclass.inspect`) to review instead of inspecting it.
        refresh: Inspect anew even when the cached findings still hold.
        verbose: 1 prints progress.
        **options: :func:`xferclass.inspect`'s options (``backbone``,
            ``weights``, ``input_size``, ``folds``, ``seed``, ``batch_size``,
            ``engine``).

    Examples:
        >>> from xferclass.review import Review
        >>> review = Review("clothes/")  # doctest: +SKIP
        >>> review.decide(review.items[0].id, "accept")  # doctest: +SKIP
        >>> review.write_table()  # doctest: +SKIP
        'clothes/.xferclass/labels.csv'
    """

    def __init__(
        self, data: str | os.PathLike[str], *, inspection: Any = None, refresh: bool = False,
        verbose: int = 0, **options: Any,
    ) -> None:  # fmt: skip
        self.dataset: DataSet = locate(data)
        self.findings: Findings = (
            from_inspection(self.dataset, inspection)
            if inspection is not None
            else load_findings(self.dataset, refresh=refresh, verbose=verbose, **options)
        )
        self.items: list[Item] = items_of(self.findings)
        self._by_id = {item.id: item for item in self.items}
        self._files = {row["path"] for row in self.findings.files}
        self.log = DecisionLog(os.path.join(self.dataset.state, DECISIONS_FILE))
        self._decisions = {k: v for k, v in self.log.read().items() if k in self._by_id}
        self._lock = threading.Lock()

    @property
    def decisions(self) -> dict[str, dict[str, Any]]:
        """``{item id: decision}`` of the items decided so far."""
        return dict(self._decisions)

    def progress(self) -> tuple[int, int]:
        """``(decided, total)`` items."""
        return len(self._decisions), len(self.items)

    def decide(
        self, item: str, action: str, *, label: str | None = None, keep: str | None = None
    ) -> dict[str, Any]:
        """Decide on one item, and save the decision before returning it.

        Args:
            item: The item's id.
            action: One of ``ACTIONS[item.kind]``, or ``"undo"`` to take the
                item's decision back.
            label: The new label of a ``"relabel"``.
            keep: The image a duplicate group's ``"keep_one"`` keeps.

        Raises:
            UnknownItemError: No item has that id.
            InvalidArgumentError: The action, label or image does not fit the item.
        """
        found = self._by_id.get(item) if isinstance(item, str) else None
        if found is None:
            raise UnknownItemError(f"no item {item!r} in this review")
        record = {"action": action, "label": label, "keep": keep}
        decision = check_decision(found, record, self.findings.class_names)
        with self._lock:
            self.log.append(decision)
            if action == "undo":
                self._decisions.pop(found.id, None)
            else:
                self._decisions[found.id] = decision
        return decision

    def corrected_rows(self) -> list[dict[str, Any]]:
        """Every image with its label, split and exclusion after the decisions."""
        return corrected_rows(self.findings, self.items, self._decisions)

    def write_table(self, out: str | os.PathLike[str] | None = None) -> str:
        """Write the corrected label table (``path,label,split,excluded,review,original_label``).

        ``load_image_dataset``, ``fit``, ``train`` and ``inspect`` read it as any
        label table; excluded rows are left out. Returns its path.
        """
        with self._lock:
            return write_table(self.dataset, self.corrected_rows(), _path(out))

    def summary(self) -> dict[str, int]:
        """How many images the decisions relabel, exclude and keep."""
        counts = Counter(row["review"] for row in self.corrected_rows())
        return {k: counts.get(k, 0) for k in ("relabelled", "excluded", "kept")}

    def apply_moves(self, out: str | os.PathLike[str] | None = None) -> tuple[str | None, int, str]:
        """Move relabelled images to their class folders and excluded ones under
        ``DATA/.xferclass/excluded/``, after writing an undo log; see :func:`undo`.

        Then write the corrected table of the moved files (as :meth:`write_table`).
        Returns the undo log (None when nothing moved), the files moved and the table.
        """
        with self._lock:
            rows = self.corrected_rows()
            log, moves = apply_moves(self.dataset, rows)
            moved = dict(moves)
            rows = [{**row, "path": moved.get(row["path"], row["path"])} for row in rows]
            return log, len(moves), write_table(self.dataset, rows, _path(out))

    def image_file(self, relative: Any) -> str:
        """The file of an image of this review, from its path relative to the data's root.

        Raises:
            InvalidArgumentError: The path is not relative, climbs out with
                ``..``, is not an image of this review, or resolves (through a
                link) outside the data's root.
        """
        if not isinstance(relative, str) or not relative or "\\" in relative or "\0" in relative:
            raise InvalidArgumentError(f"path {relative!r} is not an image of this review")
        parts = relative.split("/")
        if relative.startswith("/") or ".." in parts or (":" in parts[0]):
            raise InvalidArgumentError(f"path {relative!r} must be relative, without '..'")
        if relative not in self._files:
            raise InvalidArgumentError(f"path {relative!r} is not an image of this review")
        root = os.path.realpath(self.dataset.root)
        real = os.path.realpath(self.dataset.absolute(relative))
        if os.path.commonpath([root, real]) != root or not os.path.isfile(real):
            raise InvalidArgumentError(f"path {relative!r} leads outside the data's folder")
        return real


def _path(out: str | os.PathLike[str] | None) -> str | None:
    return None if out is None else os.fspath(out)


def undo(data: str | os.PathLike[str]) -> tuple[str, int]:
    """Put back the files the latest :meth:`Review.apply_moves` of ``data`` moved.

    Returns the undo log used and how many files moved back.
    """
    return undo_moves(locate(data))
