"""Fixing a data set in a browser: ``xferclass review DATA``.

``inspect``'s findings (label issues, duplicates, outliers; cached in
``DATA/.xferclass/inspection.json``) become items a person decides on, in a
local web application (``_app``, behind the ``review`` extra). Each decision is
appended to ``DATA/.xferclass/review.jsonl`` as it is made (``_decisions``), so
a killed server loses nothing and a restart resumes. Applying the decisions
writes a corrected label table; files move only on request, after an undo log.

It may import every subpackage before it: ``core``, ``data`` and ``evaluation``.
"""

from __future__ import annotations

from ._app import DEFAULT_PORT, create_app, serve
from ._decisions import ACTIONS, TABLE_COLUMNS, Item
from ._findings import STATE_FOLDER, DataSet, Findings, locate
from ._session import Review, UnknownItemError, undo

__all__ = [
    "ACTIONS",
    "DEFAULT_PORT",
    "DataSet",
    "Findings",
    "Item",
    "Review",
    "STATE_FOLDER",
    "TABLE_COLUMNS",
    "UnknownItemError",
    "create_app",
    "locate",
    "serve",
    "undo",
]
