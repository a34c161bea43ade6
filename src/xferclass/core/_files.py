"""Writing a file atomically and durably: to a temporary name, fsynced, renamed over.

A reader (or a process started after a crash or a power cut) finds either the
old file or the complete new one, never a half-written one.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable
from pathlib import Path

__all__ = ["atomic_write"]


def atomic_write(
    path: str | os.PathLike[str], write: Callable[[str], object], *, suffix: str | None = None
) -> None:
    """Call ``write(temporary)`` and put the file it wrote at ``path`` atomically.

    The temporary file is in ``path``'s folder (so the rename is atomic) and
    ends in ``suffix`` (default: ``path``'s last suffix), for writers that
    insist on one (``.keras``, ``.weights.h5``, ``.npz``). Its content is
    fsynced before the rename, and the folder after it, so the new file
    survives a power cut once this returns. On any error the temporary file is
    removed and ``path`` is left as it was.

    Examples:
        >>> import tempfile
        >>> folder = tempfile.mkdtemp()
        >>> target = os.path.join(folder, "note.txt")
        >>> atomic_write(target, lambda name: Path(name).write_text("hello"))
        >>> open(target).read(), os.listdir(folder)
        ('hello', ['note.txt'])
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    ending = target.suffix if suffix is None else suffix
    temporary = target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex}{ending}")
    try:
        write(str(temporary))
        _fsync(temporary, os.O_RDONLY)
        os.replace(temporary, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(temporary)
    with contextlib.suppress(OSError):  # not every system can open a folder
        _fsync(target.parent, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))


def _fsync(path: Path, flags: int) -> None:
    handle = os.open(path, flags)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)
