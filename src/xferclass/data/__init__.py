"""A folder of labelled images in, a ``tf.data`` pipeline of ``(images, labels)`` out.

:func:`load_image_dataset` reads a folder with one subfolder per class, the way
``keras.utils.image_dataset_from_directory`` does, but is made for the messy
folders people really have:

- every image file is checked once, before training, by decoding it in a
  parallel ``tf.data`` pass; files that cannot be decoded (empty, truncated,
  an HTML page saved as ``.jpg``, ...) are left out with one warning and listed
  in ``dataset.skipped``, instead of crashing training halfway through epoch 3;
- the format is sniffed from the bytes, so a PNG named ``.jpg`` is kept;
- grayscale, palette, RGBA, 16-bit, CMYK and palette-BMP images all come out as
  8-bit RGB, and the EXIF orientation of phone photos is applied;
- hidden files (``.DS_Store``, ``._IMG_1.jpg``) and other extensions
  (``notes.txt``) are ignored.

Decoding is one set of TensorFlow ops (:mod:`xferclass.data._decode`), so the same
function runs inside the pipeline (in parallel), in :func:`read_images` and
:func:`image_paths_dataset` (for prediction on files) and in an exported
model: the pixels a model is trained on and the pixels it predicts on are
decoded the same way. How the unusual formats come out is described there.

The parts: :mod:`xferclass.data._folders` lists the folder,
:mod:`xferclass.data._filecheck` checks the files (with the header reader of
:mod:`xferclass.data._imagesize` and the EXIF reader of :mod:`xferclass.data._exif`),
and :mod:`xferclass.data._pipeline` builds the ``tf.data`` pipelines.

As a package, ``xferclass.data`` owns everything between a folder (or a label table)
and batches of pixels: listing, label tables, checking, decoding and resizing files, and
their facts. It may import ``core``.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import tensorflow as tf

from ..core._args import as_size
from ..core._errors import DatasetError
from ._decode import loader
from ._filecheck import check_files, checked_orientations, failure_reason
from ._folders import IMAGE_EXTENSIONS, folder_candidates, is_image_file, shown
from ._imagesize import DEFAULT_MAX_PIXELS, resolve_max_pixels
from ._pipeline import (
    build_dataset,
    check_arguments,
    check_class_names,
    paths_pipeline,
    strata,
    table_classes,
    validation_mask,
)
from ._tables import is_label_table, read_label_table

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "image_paths_dataset",
    "IMAGE_EXTENSIONS",
    "SkippedFilesWarning",
    "is_image_file",
    "load_image_dataset",
    "read_images",
]

#: Seed of the training/validation split when no ``seed`` is given, so that two
#: calls (``subset="training"`` then ``subset="validation"``) always agree.
_DEFAULT_SPLIT_SEED = 1337
#: How many skipped files a warning or an error message shows by name.
_SHOWN_IN_WARNING = 5
_SHOWN_IN_ERROR = 20


class SkippedFilesWarning(UserWarning):
    """Some image files in a dataset folder could not be decoded and were left out."""


def _raise_strict(source: str, skipped: list[tuple[str, str]], total: int) -> None:
    if not skipped:
        return
    listed = "\n".join(f"  {shown(p)}: {reason}" for p, reason in skipped[:_SHOWN_IN_ERROR])
    more = len(skipped) - _SHOWN_IN_ERROR
    raise DatasetError(
        f"load_image_dataset: {len(skipped)} of {total} image files of {source} cannot be "
        f"used (strict=True):\n{listed}"
        + (f"\n  ... and {more} more" if more > 0 else "")
        + "\nFix or remove them, or pass strict=False to leave them out with a warning."
    )


def _warn_skipped(source: str, skipped: list[tuple[str, str]], total: int) -> None:
    if not skipped:
        return
    names = "; ".join(
        f"{os.path.basename(shown(p))} ({reason})" for p, reason in skipped[:_SHOWN_IN_WARNING]
    )
    more = len(skipped) - _SHOWN_IN_WARNING
    warnings.warn(
        f"Skipped {len(skipped)} of {total} image files of {source} that cannot be "
        f"used: {names}" + (f"; and {more} more" if more > 0 else "") + ". The full list "
        "is in dataset.skipped; pass strict=True to raise instead.",
        SkippedFilesWarning,
        stacklevel=3,
    )


def load_image_dataset(
    path: str | os.PathLike[str] | Sequence[tuple[Any, Any]] | Any,
    size: int | tuple[int, int] = (299, 299),
    *,
    batch_size: int = 32,
    shuffle: bool = True,
    seed: int | None = None,
    validation_split: float | None = None,
    subset: Literal["training", "validation", "both"] | None = None,
    class_names: Sequence[str] | None = None,
    strict: bool = False,
    root: str | os.PathLike[str] | None = None,
    path_column: str | None = None,
    label_column: str | None = None,
    split_column: str | None = None,
    split: str | None = None,
    label_separator: str | None = None,
    max_pixels: int | None = None,
) -> Any:
    """Load labelled images (a folder of class subfolders, or a label table) as tf.data.

    The folder looks like ``path/cat/*.jpg``, ``path/dog/*.png``: each visible
    subfolder is a class, searched recursively for ``.jpg``, ``.jpeg``, ``.png``,
    ``.gif`` and ``.bmp`` files (any case). Hidden files and folders (``.DS_Store``,
    ``.git``) and other extensions are ignored without a word.

    Every image file is decoded once before the pipeline is built, in a parallel
    ``tf.data`` pass. Files that cannot be decoded are left out with one
    :class:`SkippedFilesWarning` and listed in ``dataset.skipped``; ``strict=True``
    raises instead. Formats are recognised from the bytes, not the extension.

    Images come out upright: JPEG files carry an EXIF orientation tag when a phone
    or camera stored them sideways, and every viewer rotates them on display, so
    the labeller saw the rotated picture. Training on the unrotated pixels would
    teach the model sideways images that it will never see from other sources,
    so the tag is read (from the first 64 KB of each JPEG, once, during the check)
    and applied in the pipeline. The same holds in :func:`read_images`.

    A label table is read instead of a folder when ``path`` is a ``.csv`` (or
    ``.tsv``) file, a pandas DataFrame, or a list of ``(path, label)`` pairs.
    Each row names one image file (relative paths are taken from ``root``) and
    its label. The path and label columns are found by their names (``path``,
    ``filename``, ``image``, ... and ``label``, ``class``, ``tags``, ...) unless
    ``path_column`` and ``label_column`` say which; a CSV without a header is
    read as ``path,label`` or ``ML_USE,path,label`` (Vertex AI's import
    format). A row whose file does not exist or that has no label goes to
    ``skipped`` like a file that cannot be decoded. The classes are the labels of
    the whole table, all splits included, so ``split="train"`` and
    ``split="validation"`` of one table share one label order.

    A label cell that holds a list (in a DataFrame or pairs), or a string split by
    ``label_separator`` (``"shirt|blue"`` with ``label_separator="|"``), makes the
    table multi-label: labels come out multi-hot (an image may have several or
    no labels) and the dataset's ``multi_label`` is True. Build the model with
    ``build_classifier(..., multi_label=True)``.

    Images larger than ``max_pixels`` (width x height, read from the file's
    header: PNG, JPEG, GIF, BMP, WebP) are never decoded: a small file can
    claim 20000 x 20000 pixels and take gigabytes of memory once decoded. They go
    to ``skipped`` with their size.

    Files are split between ``"training"`` and ``"validation"`` per class by a
    seeded random draw (``seed``, or a fixed default seed when None), so two calls
    with the same folder, ``validation_split`` and ``seed`` get complementary
    subsets whether or not they shuffle. Each class with at least two images keeps
    at least one in training (for multi-hot labels: per rarest label of each file).

    Args:
        path: Folder with one subfolder per class; or a label table: the path of a
            ``.csv``/``.tsv`` file, a pandas DataFrame, or a list of
            ``(path, label)`` pairs (a label may be a list of labels).
        size: Size that images are resized to (bilinear): an int for square images,
            or ``(height, width)``.
        batch_size: Images per batch (the last batch may be smaller).
        shuffle: Shuffle the files, with a new order every epoch.
        seed: Seed of the shuffles and of the training/validation split.
        validation_split: Fraction of each class held out for validation, in (0, 1);
            requires ``subset``.
        subset: ``"training"``, ``"validation"``, or ``"both"`` for a
            ``(training, validation)`` pair; requires ``validation_split``.
        class_names: The classes, in label order. Pin them to make several folders
            (train, validation, test) share one label order: a listed class may have
            no folder or no images; a folder not listed is an error. By default the
            subfolders, in alphabetical order.
        strict: Raise :class:`~xferclass.DatasetError` when any image file cannot be
            decoded, instead of leaving it out with a warning.
        root: Folder that relative paths of a label table are taken from; by
            default the CSV file's folder, or the working directory for a
            DataFrame or pairs.
        path_column: The table column of image paths (found by name when None).
        label_column: The table column of labels (found by name when None).
        split_column: The table column that assigns rows to ``train``,
            ``validation`` or ``test`` (as Vertex AI's ``ML_USE``; ``training``,
            ``val``, ``valid`` are also understood); found by name (``split``,
            ``ml_use``, ``subset``, ``set``) when ``split`` is given.
        split: Keep only the rows whose split column says ``"train"``,
            ``"validation"`` or ``"test"``; None keeps every row.
        label_separator: Split each label cell on this string (for example
            ``"|"``) into several labels, which makes the table multi-label.
        max_pixels: The most pixels (width x height) an image may have; larger
            ones are skipped without being decoded. None means the environment
            variable ``XFERCLASS_MAX_PIXELS`` when set, else Pillow's limit
            (:data:`~xferclass.data.DEFAULT_MAX_PIXELS`, 178,956,970).

    Returns:
        A ``tf.data.Dataset`` of ``(images, labels)`` batches, images float32 of
        shape ``(batch, height, width, 3)`` with values in [0, 255], labels one-hot
        (multi-hot for a multi-label table) float32 of shape
        ``(batch, num_classes)``; or a pair of them for ``subset="both"``. Each
        has the attributes ``class_names``, ``file_paths`` and ``labels`` (int
        class of each file, or its multi-hot row, aligned with ``file_paths``),
        ``multi_label``, ``skipped`` (``(path, reason)`` pairs), ``image_size``,
        ``batch_size`` and ``shuffled``. The same facts are one
        :class:`xferclass.DatasetFacts`, which :func:`xferclass.dataset_facts`
        still finds after the user's ``map``, ``cache``, ``prefetch`` and other
        ``tf.data`` steps.

    Raises:
        DatasetError: When ``path`` is missing, not a folder, has no class
            subfolders, only one class, or a class without readable images; when
            ``class_names`` does not match the folders or the table's labels; when
            a table column is missing or ambiguous (the message lists the
            columns); when an argument is out of
            range; with ``strict=True`` when some file cannot be decoded.
        InvalidArgumentError: ``size`` is not a positive int or pair of them.

    Examples:
        >>> train, val = load_image_dataset(  # doctest: +SKIP
        ...     "photos/", 224, validation_split=0.2, subset="both", seed=42
        ... )
        >>> train.class_names  # doctest: +SKIP
        ['cat', 'dog']
        >>> test = load_image_dataset(  # doctest: +SKIP
        ...     "photos_test/", 224, shuffle=False, class_names=train.class_names
        ... )
        >>> tagged = load_image_dataset(  # doctest: +SKIP
        ...     "labels.csv", 224, root="images/", split="train", label_separator="|"
        ... )
    """
    image_size = as_size(size, "size")
    fraction = check_arguments(batch_size, validation_split, subset, seed)
    limit = resolve_max_pixels(max_pixels, "load_image_dataset")
    table_options = {
        "root": root, "path_column": path_column, "label_column": label_column,
        "split_column": split_column, "split": split, "label_separator": label_separator,
    }  # fmt: skip
    found = _candidates(path, class_names, table_options)
    checks = check_files(found.paths, limit)
    skipped = found.unusable + [
        (p, c.reason) for p, c in zip(found.paths, checks, strict=True) if c.reason is not None
    ]
    total = len(found.paths) + len(found.unusable)
    if strict:
        _raise_strict(found.source, skipped, total)
    keep = [i for i, c in enumerate(checks) if c.reason is None]
    labels = _kept_labels(found, keep)
    if class_names is None:
        _check_no_empty_class(found, labels)
    if not keep:
        raise DatasetError(
            f"load_image_dataset: {found.source} holds no readable images in the folders of "
            f"class_names={found.names!r}"
        )
    _warn_skipped(found.source, skipped, total)
    paths = [found.paths[i] for i in keep]
    orientations = np.array([checks[i].orientation for i in keep], dtype=np.int32)

    def build(indices: np.ndarray) -> tf.data.Dataset:
        return build_dataset(
            [paths[i] for i in indices], labels[indices], orientations[indices],
            class_names=found.names, size=image_size, batch_size=int(batch_size),
            shuffle=bool(shuffle), seed=None if seed is None else int(seed), skipped=skipped,
        )  # fmt: skip

    if fraction is None:
        return build(np.arange(len(paths)))
    return _split(build, labels, len(found.names), fraction, seed, subset)


@dataclass
class _Candidates:
    """The image files a folder or a label table names, before they are checked."""

    source: str  # how messages name the folder or table
    names: list[str]  # the class names, in label order
    paths: list[str]
    labels: Any  # class index of each path, or its multi-hot row
    unusable: list[tuple[str, str]]  # (path, reason) of what cannot even be checked
    multi_label: bool
    from_table: bool


def _candidates(path: Any, class_names: Any, table_options: dict[str, Any]) -> _Candidates:
    """The files and labels of a folder of class subfolders or of a label table."""
    if is_label_table(path):
        names = check_class_names(class_names, folders=False)
        table = read_label_table(path, **table_options)
        names = table_classes(table, names, class_names is not None)
        index = {name: j for j, name in enumerate(names)}
        labels: Any = (
            np.array([[name in row for name in names] for row in table.labels], np.float32).reshape(
                len(table.paths), len(names)
            )
            if table.multi_label
            else [index[row[0]] for row in table.labels]
        )
        return _Candidates(
            table.source, names, table.paths, labels, table.unusable, table.multi_label, True
        )
    given = sorted(k for k, v in table_options.items() if v is not None)
    if given:
        raise DatasetError(
            f"load_image_dataset: {', '.join(given)} apply to label tables (a .csv file, "
            f"a DataFrame or (path, label) pairs), not to the folder path={path!r}"
        )
    source, names, paths, labels, problems = folder_candidates(path, check_class_names(class_names))
    return _Candidates(source, names, paths, labels, problems, False, False)


def _kept_labels(found: _Candidates, keep: list[int]) -> np.ndarray:
    """The labels of the files that passed the check: int64 indices or float32 rows."""
    if found.multi_label:
        rows = np.asarray(found.labels, np.float32)[keep]
        return rows.reshape(len(keep), len(found.names))
    return np.array([found.labels[i] for i in keep], dtype=np.int64)


def _check_no_empty_class(found: _Candidates, labels: np.ndarray) -> None:
    """Raise when a class found in the folders or the table has no readable image."""
    if found.multi_label:
        counts = labels.sum(axis=0)
    else:
        counts = np.bincount(labels, minlength=len(found.names))
    empty = [name for name, count in zip(found.names, counts, strict=True) if count == 0]
    if not empty:
        return
    given = np.asarray(found.labels)
    columns = [found.names.index(n) for n in empty]
    members = given[:, columns].any(axis=1) if found.multi_label else np.isin(given, columns)
    bad = int(np.sum(members))
    detail = f" ({bad} image files in them cannot be used)" if bad else ""
    kind = "classes" if found.multi_label or found.from_table else "class folders"
    raise DatasetError(
        f"load_image_dataset: {kind} {empty} of {found.source} hold no readable images "
        f"(.jpg, .jpeg, .png, .gif, .bmp){detail}; add images, remove them, or pin "
        "class_names to allow empty classes"
    )


def _split(
    build: Callable[[np.ndarray], tf.data.Dataset],
    labels: np.ndarray,
    num_classes: int,
    fraction: float,
    seed: int | None,
    subset: str | None,
) -> Any:
    """The training subset, the validation subset, or both, of a seeded stratified split."""
    split_seed = _DEFAULT_SPLIT_SEED if seed is None else int(seed)
    validation = validation_mask(strata(labels), num_classes + 1, fraction, split_seed)
    if not validation.any():
        raise DatasetError(
            f"load_image_dataset: validation_split={fraction!r} leaves no image for "
            f"validation out of {len(labels)}; use a larger fraction or more images"
        )
    if subset == "training":
        return build(np.flatnonzero(~validation))
    if subset == "validation":
        return build(np.flatnonzero(validation))
    return build(np.flatnonzero(~validation)), build(np.flatnonzero(validation))


def image_paths_dataset(
    paths: Sequence[str | os.PathLike[str]],
    size: int | tuple[int, int],
    *,
    batch_size: int = 32,
    max_pixels: int | None = None,
) -> tf.data.Dataset:
    """A tf.data pipeline of image batches read from ``paths``, for prediction.

    The header of every file is read first, without decoding it: a file that
    is not an image, or whose header promises more than ``max_pixels`` pixels
    (see :func:`load_image_dataset`), is reported by name before any work
    starts. Each file is then decoded once, in the pipeline: decoding, EXIF
    orientation and resizing are the training pipeline's, in parallel and
    prefetched, in the order of ``paths``. A file that fails to decode there
    (cut short, say) stops the iteration with an ``InvalidArgumentError`` that
    names it; :func:`xferclass.predict` reports it as a ``DatasetError``.

    An image whose header promises more than ``max_pixels`` pixels (see
    :func:`load_image_dataset`) is an error, and nothing is decoded.

    Raises:
        DatasetError: A file is missing, is not an image, or is over
            ``max_pixels``; all such files are named, with the reason.
        InvalidArgumentError: ``size`` is not a positive int or pair of them.

    Examples:
        >>> batches = image_paths_dataset(["cat.jpg", "dog.png"], 224)  # doctest: +SKIP
    """
    image_size = as_size(size, "size")
    limit = resolve_max_pixels(max_pixels, "images")
    files = [os.fspath(p) for p in paths]
    missing = [f for f in files if not os.path.isfile(f)]
    if missing:
        raise DatasetError(
            f"images: {len(missing)} path(s) do not exist or are not files: "
            + ", ".join(repr(shown(f)) for f in missing[:5])
        )
    orientations = checked_orientations(files, limit, "images")
    return paths_pipeline(files, orientations, image_size, batch_size)


def read_images(
    paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    size: int | tuple[int, int] = (299, 299),
    *,
    max_pixels: int | None = None,
) -> np.ndarray:
    """Read image files the way :func:`load_image_dataset` does, for prediction.

    Decoding, EXIF orientation and resizing are the same function as in the
    training pipeline, run in parallel.

    Args:
        paths: One image path or a sequence of them.
        size: Size that images are resized to (bilinear): an int or ``(height, width)``.
        max_pixels: The most pixels (width x height) an image may have; the
            header is read first and a larger image is an error, never decoded.
            None: as in :func:`load_image_dataset`.

    Returns:
        float32 array of shape ``(len(paths), height, width, 3)`` with values in [0, 255].

    Raises:
        DatasetError: When a file is missing, cannot be decoded or is larger than
            ``max_pixels`` (naming it and its size).
        InvalidArgumentError: ``size`` is not a positive int or pair of them.

    Examples:
        >>> images = read_images(["cat.jpg", "dog.png"], 224)  # doctest: +SKIP
        >>> images.shape  # doctest: +SKIP
        (2, 224, 224, 3)
    """
    image_size = as_size(size, "size")
    limit = resolve_max_pixels(max_pixels, "read_images")
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    if isinstance(paths, bytes) or not isinstance(paths, Iterable):
        raise DatasetError(f"read_images: paths={paths!r} must be a path or a list of paths")
    files = [os.fspath(p) for p in paths]
    for file in files:
        if not os.path.isfile(file):
            raise DatasetError(f"read_images: {shown(file)!r} does not exist or is not a file")
    if not files:
        return np.zeros((0, *image_size, 3), np.float32)
    orientations = checked_orientations(files, limit, "read_images")
    load = loader(image_size)

    def one(i: int) -> np.ndarray:
        try:
            return load(tf.constant(os.fsencode(files[i])), tf.constant(orientations[i])).numpy()
        except tf.errors.OpError:
            reason = failure_reason(files[i], limit) or "decoding failed"
            raise DatasetError(
                f"read_images: cannot decode {shown(files[i])!r}: {reason}"
            ) from None

    # Each call runs the traced pipeline function; TensorFlow releases the GIL, so a
    # few threads decode in parallel, and a failure names its file.
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1, len(files))) as pool:
        return np.stack(list(pool.map(one, range(len(files))))).astype(np.float32, copy=False)
