"""The ``tf.data`` pipelines of checked image files, and the checks of their arguments.

:func:`build_dataset` turns checked files and their labels into batches of
``(images, labels)`` for training; :func:`paths_pipeline` turns files into
batches of images for prediction, decoding each file once. Both decode with
:func:`xferclass.data._decode.loader`.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from ..core._errors import DatasetError, InvalidArgumentError
from ._decode import loader, without_autotune
from ._facts import DatasetFacts, attach_facts
from ._filecheck import failure_reason
from ._folders import shown
from ._imagesize import resolve_max_pixels
from ._tables import LabelTable

__all__ = [
    "build_dataset",
    "check_arguments",
    "check_class_names",
    "paths_pipeline",
    "strata",
    "table_classes",
    "undecodable_error",
    "validation_mask",
]

_SUBSETS = ("training", "validation", "both")


def check_class_names(class_names: Any, *, folders: bool = True) -> list[str] | None:
    if class_names is None:
        return None
    if isinstance(class_names, (str, bytes)) or not isinstance(class_names, Iterable):
        raise DatasetError(
            f"load_image_dataset: class_names={class_names!r} must be a list of folder names"
        )
    names = list(class_names)
    bad = [
        n
        for n in names
        if not isinstance(n, str) or not n or (folders and (os.sep in n or n[0] == "."))
    ]
    if bad:
        raise DatasetError(
            f"load_image_dataset: class_names={names!r} has entries that are not folder "
            f"names: {bad!r}"
        )
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise DatasetError(
            f"load_image_dataset: class_names={names!r} lists {duplicates} more than once"
        )
    if len(names) < 2:
        raise DatasetError(
            f"load_image_dataset: class_names={names!r} has fewer than two classes; "
            "a classifier needs at least two"
        )
    return names


def check_arguments(batch_size: Any, validation_split: Any, subset: Any, seed: Any) -> float | None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)):
        raise DatasetError(f"load_image_dataset: batch_size={batch_size!r} must be an int >= 1")
    if batch_size < 1:
        raise DatasetError(f"load_image_dataset: batch_size={batch_size!r} must be >= 1")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))):
        raise DatasetError(f"load_image_dataset: seed={seed!r} must be an int or None")
    if seed is not None and not 0 <= seed < 2**32:
        raise InvalidArgumentError(
            f"load_image_dataset: seed={seed!r} must be between 0 and 2**32 - 1 (or None)"
        )
    if validation_split is not None:
        if isinstance(validation_split, bool) or not isinstance(
            validation_split, (int, float, np.floating, np.integer)
        ):
            raise DatasetError(
                f"load_image_dataset: validation_split={validation_split!r} must be a float "
                "strictly between 0 and 1"
            )
        if not 0 < float(validation_split) < 1:
            raise DatasetError(
                f"load_image_dataset: validation_split={validation_split!r} must be strictly "
                "between 0 and 1 (for example 0.2)"
            )
    if subset is not None and subset not in _SUBSETS:
        raise DatasetError(
            f"load_image_dataset: subset={subset!r} must be one of {list(_SUBSETS)} or None"
        )
    if (subset is None) != (validation_split is None):
        given, missing = (
            ("subset", "validation_split") if subset is not None else ("validation_split", "subset")
        )
        raise DatasetError(
            f"load_image_dataset: {given} is set (subset={subset!r}, validation_split="
            f"{validation_split!r}) but {missing} is not; pass both or neither"
        )
    return None if validation_split is None else float(validation_split)


def validation_mask(labels: np.ndarray, num_classes: int, fraction: float, seed: int) -> np.ndarray:
    """Which files go to validation: a seeded random ``fraction`` of each class.

    Each class keeps at least one training image. Splitting per class (stratified)
    means every class with enough images shows up in both subsets.
    """
    rng = np.random.RandomState(seed)
    mask = np.zeros(len(labels), bool)
    for label in range(num_classes):
        members = np.flatnonzero(labels == label)
        count = min(math.floor(fraction * len(members) + 0.5), max(len(members) - 1, 0))
        if count:
            mask[rng.permutation(members)[:count]] = True
    return mask


def build_dataset(
    paths: list[str],
    labels: np.ndarray,
    orientations: np.ndarray,
    *,
    class_names: list[str],
    size: tuple[int, int],
    batch_size: int,
    shuffle: bool,
    seed: int | None,
    skipped: list[tuple[str, str]],
) -> tf.data.Dataset:
    """Batches of ``(images, labels)`` of checked files, with the dataset's facts attached.

    Labels are class indices (one-hot in the batches) or multi-hot rows. With
    ``shuffle``, the files are put in a seeded order once and reshuffled every
    epoch; ``dataset.unshuffled()`` gives the same files in a fixed order.
    """

    def unshuffled() -> tf.data.Dataset:
        return build_dataset(
            paths, labels, orientations, class_names=class_names, size=size,
            batch_size=batch_size, shuffle=False, seed=seed, skipped=skipped,
        )  # fmt: skip

    if shuffle:
        order = np.random.RandomState(seed).permutation(len(paths))
        paths = [paths[i] for i in order]
        labels = labels[order]
        orientations = orientations[order]
    num_classes = len(class_names)
    multi_hot = labels.ndim == 2
    dataset = tf.data.Dataset.from_tensor_slices(
        (
            tf.constant([os.fsencode(p) for p in paths], tf.string),
            tf.constant(labels, tf.float32 if multi_hot else tf.int32),
            tf.constant(orientations, tf.int32),
        )
    )
    if shuffle:
        dataset = dataset.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)

    decode = loader(size)

    @tf.autograph.experimental.do_not_convert
    def load(path: tf.Tensor, label: tf.Tensor, orientation: tf.Tensor) -> Any:
        return decode(path, orientation), label if multi_hot else tf.one_hot(label, num_classes)

    dataset = dataset.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    dataset = without_autotune(dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE))
    facts = DatasetFacts(tuple(class_names), tuple(paths), labels, multi_hot, tuple(skipped), size)
    attach_facts(dataset, facts)  # also dataset.class_names, .file_paths, ...
    dataset.batch_size = batch_size
    dataset.shuffled = bool(shuffle)
    # The same files in a fixed order: xferclass.fit runs a frozen backbone over
    # them once and reshuffles the cached features every epoch instead.
    dataset.unshuffled = unshuffled
    return dataset


def table_classes(table: LabelTable, names: list[str] | None, pinned: bool) -> list[str]:
    """The class names of a label table: pinned ones (checked) or those of the whole table."""
    if pinned and names is not None:
        unknown = sorted(set(table.classes) - set(names))
        if unknown:
            raise DatasetError(
                f"load_image_dataset: {table.source} has labels {unknown[:20]} that are not in "
                f"class_names={names!r}; add them to class_names or remove those rows"
            )
        return names
    if len(table.classes) < 2:
        raise DatasetError(
            f"load_image_dataset: {table.source} has {len(table.classes)} distinct label(s) "
            f"{table.classes}; a classifier needs at least two classes"
        )
    return table.classes


def strata(labels: np.ndarray) -> np.ndarray:
    """The group each file is split in: its class, or for multi-hot labels its rarest label.

    Files of a multi-label table without any label form one more group.
    """
    if labels.ndim == 1:
        return labels
    counts = labels.sum(axis=0)
    rarity = np.where(labels > 0, counts[None, :], np.inf)
    return np.where(labels.any(axis=1), np.argmin(rarity, axis=1), labels.shape[1])


#: Marks the error of a file that fails to decode in :func:`paths_pipeline`.
UNDECODABLE = "xferclass: cannot decode file number"


def paths_pipeline(
    files: Sequence[str], orientations: np.ndarray, size: tuple[int, int], batch_size: int
) -> tf.data.Dataset:
    """Batches of images of ``files``, in order, each file decoded once.

    Decoding runs in parallel. A file that fails to decode stops the iteration
    with an ``InvalidArgumentError`` that names it and its number, after the
    :data:`UNDECODABLE` mark (see :func:`undecodable_file`): failures are
    dropped by ``ignore_errors`` and a scan notices the number that is missing.
    """
    count = len(files)
    names = tf.constant([os.fsencode(f) for f in files], tf.string)
    load = loader(size)
    dataset = tf.data.Dataset.from_tensor_slices(
        (tf.range(count, dtype=tf.int64), names, tf.constant(orientations, tf.int32))
    )
    dataset = dataset.map(
        lambda i, path, orientation: (i, load(path, orientation)),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    ).ignore_errors()
    end = tf.data.Dataset.from_tensors(
        (tf.constant(count, tf.int64), tf.zeros([size[0], size[1], 3], tf.float32))
    )

    def check(expected: tf.Tensor, element: Any) -> tuple[tf.Tensor, Any]:
        index, image = element
        missing = tf.minimum(expected, count - 1)
        ok = tf.debugging.Assert(
            tf.equal(index, expected), [UNDECODABLE, missing, tf.gather(names, missing)]
        )
        with tf.control_dependencies([ok]):
            return expected + 1, (tf.identity(index), image)

    dataset = dataset.concatenate(end).scan(tf.constant(0, tf.int64), check)
    # Two lambdas on one line would make AutoGraph warn that it cannot tell them apart.
    dataset = dataset.filter(lambda index, _: index < count)
    dataset = dataset.map(lambda _, image: image)
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(count))
    return without_autotune(dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE))


def undecodable_error(
    error: BaseException, files: Sequence[str], max_pixels: int | None = None
) -> DatasetError | None:
    """The :class:`DatasetError` for an error of :func:`paths_pipeline` about one file.

    Args:
        error: An error raised while iterating over the pipeline.
        files: The paths the pipeline was made from.
        max_pixels: The limit it was made with (None: the default limit in force).

    Returns:
        An error that names the file and says why it cannot be decoded, or None
        when ``error`` is not about a file that failed to decode.
    """
    if not isinstance(error, tf.errors.InvalidArgumentError):
        return None
    found = re.search(re.escape(UNDECODABLE) + r"\D*(\d+)", str(error.message))
    if found is None or not 0 <= int(found.group(1)) < len(files):
        return None
    path = files[int(found.group(1))]
    reason = failure_reason(path, resolve_max_pixels(max_pixels, "images")) or "decoding failed"
    return DatasetError(f"images: cannot decode {shown(path)!r}: {reason}")
