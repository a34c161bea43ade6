"""The ``xferclass`` logger that every module reports through."""

from __future__ import annotations

import logging

__all__ = ["logger"]

#: Messages of xferclass (phases, caching, fallbacks). Keras's progress bars are separate.
logger = logging.getLogger("xferclass")
