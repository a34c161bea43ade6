"""Listing a folder of class subfolders: which files are images, of which class.

Each visible subfolder is a class, searched recursively for image files by
their extension; hidden files and folders are ignored. A folder that cannot be
listed is reported with its reason, never dropped without a word.
"""

from __future__ import annotations

import os
from typing import Any

from ..core._errors import DatasetError

__all__ = [
    "IMAGE_EXTENSIONS",
    "class_folders",
    "folder_candidates",
    "image_files",
    "is_image_file",
    "shown",
]

#: File extensions (lower case) that are read as images; others are ignored.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp")


def is_image_file(path: str | os.PathLike[str]) -> bool:
    """Whether a file name is one that :func:`~xferclass.load_image_dataset` reads.

    It looks at the name only: the file is not opened. Hidden files (names that
    start with ``.``) are not image files; extensions are compared case-insensitively.

    Args:
        path: A file path or name.

    Returns:
        True for a visible ``.jpg``, ``.jpeg``, ``.png``, ``.gif`` or ``.bmp`` file.

    Examples:
        >>> is_image_file("cats/IMG_001.JPG")
        True
        >>> is_image_file("cats/.DS_Store"), is_image_file("cats/notes.txt")
        (False, False)
    """
    name = os.path.basename(os.fspath(path))
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def shown(path: str) -> str:
    """A path as text that can always be printed (undecodable bytes replaced)."""
    return os.fsencode(path).decode("utf-8", "replace")


def _visible_entries(folder: str) -> list[os.DirEntry[str]]:
    with os.scandir(folder) as entries:
        return [entry for entry in entries if not entry.name.startswith(".")]


def image_files(folder: str) -> tuple[list[str], list[tuple[str, str]]]:
    """Image files under a class folder, recursively, sorted; hidden entries skipped.

    Returns:
        ``(files, problems)``: the image files, and a ``(path, reason)`` pair for
        each folder or entry that could not be listed or looked at.
    """
    found: list[str] = []
    problems: list[tuple[str, str]] = []
    pending = [folder]
    while pending:
        current = pending.pop()
        try:
            entries = _visible_entries(current)
        except OSError as exc:
            problems.append((current, f"folder cannot be listed: {exc.strerror or exc}"))
            continue
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    pending.append(entry.path)
                elif entry.is_file() and is_image_file(entry.name):
                    found.append(entry.path)
            except OSError as exc:
                problems.append((entry.path, f"cannot be looked at: {exc.strerror or exc}"))
    return sorted(found), sorted(problems)


def class_folders(root: str, class_names: list[str] | None) -> tuple[list[str], dict[str, str]]:
    """Class names in label order, and the folder of each class that has one."""
    try:
        folders = {
            entry.name: entry.path
            for entry in _visible_entries(root)
            if entry.is_dir(follow_symlinks=True)
        }
    except OSError as exc:
        raise DatasetError(
            f"load_image_dataset: path={shown(root)!r} cannot be listed: {exc.strerror or exc}"
        ) from None
    if class_names is None:
        if not folders:
            loose = sum(1 for e in _visible_entries(root) if e.is_file() and is_image_file(e.name))
            hint = (
                f" (it holds {loose} image files directly; put each class's images in a "
                "subfolder named after the class)"
                if loose
                else ""
            )
            raise DatasetError(
                f"load_image_dataset: path={shown(root)!r} has no class subfolders{hint}"
            )
        return sorted(folders), folders
    unknown = sorted(set(folders) - set(class_names))
    if unknown:
        raise DatasetError(
            f"load_image_dataset: path={shown(root)!r} has class folders {unknown} that are "
            f"not in class_names={class_names!r}; add them to class_names or move them out"
        )
    return list(class_names), folders


def folder_candidates(
    path: Any, names: list[str] | None
) -> tuple[str, list[str], list[str], list[int], list[tuple[str, str]]]:
    """The image files of a folder of class subfolders.

    Returns:
        ``(source, class names, image files, their labels, problems)``; problems
        are ``(path, reason)`` pairs of what could not be listed.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise DatasetError(
            f"load_image_dataset: path={path!r} must be a folder path, a .csv file, a "
            "DataFrame or a list of (path, label) pairs"
        )
    root = os.fspath(path)
    if not os.path.exists(root):
        raise DatasetError(f"load_image_dataset: path={shown(root)!r} does not exist")
    if not os.path.isdir(root):
        raise DatasetError(
            f"load_image_dataset: path={shown(root)!r} is a file, not a folder of class "
            "subfolders nor a label table (.csv or .tsv)"
        )
    names, folders = class_folders(root, names)
    if len(names) < 2:
        raise DatasetError(
            f"load_image_dataset: path={shown(root)!r} has only one class folder "
            f"({names[0]!r}); a classifier needs at least two classes"
        )
    candidates: list[str] = []
    candidate_labels: list[int] = []
    problems: list[tuple[str, str]] = []
    for label, name in enumerate(names):
        files, found = image_files(folders[name]) if name in folders else ([], [])
        candidates += files
        candidate_labels += [label] * len(files)
        problems += found
    return f"path={shown(root)!r}", names, candidates, candidate_labels, problems
