"""What xferclass knows about a dataset, recovered after the user's ``tf.data`` steps.

:func:`xferclass.load_image_dataset` attaches a :class:`DatasetFacts` to the
dataset it returns: the class names, the files and labels of its rows, whether
it is multi-label, the files it skipped and the image size. ``tf.data``
transformations return new datasets without them; :func:`dataset_facts` finds
them again by walking back through the datasets a dataset was made from
(``Dataset._inputs()``) to the first that carries facts. Every part of
xferclass that needs a fact reads it with :func:`dataset_facts`.

What a transformation keeps:

* ``class_names``, ``multi_label`` and ``skipped`` hold after any
  transformation: the labels still mean the same classes.
* ``image_size`` holds while the dataset's element spec does not show images
  of another size (a ``map`` that resizes drops it).
* ``file_paths`` and ``labels`` describe the rows, as a set: they hold after
  ``map``, ``batch`` (without ``drop_remainder``), ``unbatch``, ``rebatch``,
  ``padded_batch``, ``shuffle``, ``cache``, ``prefetch``, ``with_options`` and
  ``assert_cardinality``, and after ``concatenate`` of datasets that all know
  their rows (the rows of each, in turn). Any other step (``take``, ``skip``,
  ``filter``, ``shard``, ``repeat``, ``zip``, ``ignore_errors``, a batch that
  drops its remainder, ...) makes them ``None``.
* Datasets combined by ``zip`` or ``concatenate`` keep the facts they agree
  on; inputs with different classes, multi-label flag or image size leave no
  facts at all.

Where the lineage can't be followed (a dataset rebuilt from a generator),
:func:`with_facts` attaches facts explicitly; ``with_facts(dataset, None)``
marks a dataset as having none, so the walk stops there.

The attributes ``dataset.class_names``, ``.file_paths``, ``.labels``,
``.multi_label``, ``.skipped`` and ``.image_size`` stay as they were: they are
set with the facts, and a value assigned to one of them is that fact of that
dataset.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

import numpy as np
import tensorflow as tf

from ..core._errors import InvalidArgumentError, InvalidArgumentTypeError

__all__ = [
    "DatasetFacts",
    "attach_facts",
    "class_names_of",
    "dataset_facts",
    "facts_of",
    "with_facts",
]

_STORE = "_xferclass_facts"
_FIELDS = ("class_names", "file_paths", "labels", "multi_label", "skipped", "image_size")
_MISSING: Any = object()

#: Datasets (class names, without a leading underscore) whose rows are their
#: input's rows: each row once, none added. Any other kind drops the row facts.
_SAME_ROWS = frozenset(
    {
        "MapDataset",
        "ParallelMapDataset",
        "BatchDataset",
        "ParallelBatchDataset",
        "UnbatchDataset",
        "RestructuredDataset",
        "RebatchDataset",
        "PaddedBatchDataset",
        "ShuffleDataset",
        "CacheDataset",
        "PrefetchDataset",
        "OptionsDataset",
        "AssertCardinalityDataset",
    }
)


@dataclasses.dataclass(frozen=True, eq=False)
class DatasetFacts:
    """What xferclass knows about a dataset of ``(images, labels)`` batches.

    Attributes:
        class_names: The class of each label index, or None when unknown.
        file_paths: The image file of each row, or None when the rows are not
            known (after ``take``, ``filter``, ...). With ``labels``, they
            describe the rows as a set; in order only where nothing shuffled.
        labels: Each row's class index (int64), or with ``multi_label`` its
            multi-hot row (float32, one column per class), matching
            ``file_paths``; or None.
        multi_label: Whether the labels are multi-hot rows.
        skipped: ``(path, reason)`` of each file left out while loading.
        image_size: ``(height, width)`` of the images, or None when unknown.

    Raises:
        InvalidArgumentError: ``labels`` are not of the shape ``multi_label``
            says, ``labels`` and ``file_paths`` differ in length, or
            ``image_size`` is not two positive sizes.
    """

    class_names: tuple[str, ...] | None = None
    file_paths: tuple[str, ...] | None = None
    labels: np.ndarray | None = None
    multi_label: bool = False
    skipped: tuple[tuple[str, str], ...] = ()
    image_size: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        def put(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        if self.class_names is not None:
            put("class_names", tuple(str(name) for name in self.class_names))
        if self.file_paths is not None:
            put("file_paths", tuple(str(path) for path in self.file_paths))
        if self.labels is not None:
            labels = np.array(self.labels, dtype=np.float32 if self.multi_label else np.int64)
            if labels.ndim != (2 if self.multi_label else 1):
                raise InvalidArgumentError(
                    f"DatasetFacts: labels of shape {labels.shape} must be "
                    + ("multi-hot rows" if self.multi_label else "one class index per file")
                )
            labels.setflags(write=False)
            put("labels", labels)
        put("multi_label", bool(self.multi_label))
        put("skipped", tuple((str(path), str(reason)) for path, reason in self.skipped))
        if self.image_size is not None:
            size = tuple(int(side) for side in self.image_size)
            if len(size) != 2 or min(size) < 1:
                raise InvalidArgumentError(
                    f"DatasetFacts: image_size={self.image_size!r} must be (height, width)"
                )
            put("image_size", size)
        _check_rows(self.file_paths, self.labels, self.class_names, self.multi_label)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DatasetFacts):
            return NotImplemented
        mine, theirs = self._compared(), other._compared()
        return mine == theirs and _same_labels(self.labels, other.labels)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        files = "None" if self.file_paths is None else f"<{len(self.file_paths)} files>"
        labels = "None" if self.labels is None else f"<{len(self.labels)} labels>"
        return (
            f"DatasetFacts(class_names={self.class_names!r}, file_paths={files}, "
            f"labels={labels}, multi_label={self.multi_label}, "
            f"skipped=<{len(self.skipped)} files>, image_size={self.image_size!r})"
        )

    def _compared(self) -> tuple[Any, ...]:
        return (self.class_names, self.file_paths, self.multi_label, self.skipped, self.image_size)

    def without_rows(self) -> DatasetFacts:
        """These facts with ``file_paths`` and ``labels`` unknown."""
        return dataclasses.replace(self, file_paths=None, labels=None)


def _check_rows(
    paths: tuple[str, ...] | None,
    rows: np.ndarray | None,
    names: tuple[str, ...] | None,
    multi_label: bool,
) -> None:
    """Refuse labels that don't match the files or the classes."""
    if rows is None:
        return
    if paths is not None and len(paths) != len(rows):
        raise InvalidArgumentError(
            f"DatasetFacts: {len(rows)} labels for {len(paths)} file_paths; give one label per file"
        )
    if names is None:
        return
    width = rows.shape[1] if multi_label else int(rows.max(initial=-1)) + 1
    if width > len(names) or (multi_label and width != len(names)) or rows.min(initial=0) < 0:
        raise InvalidArgumentError(
            f"DatasetFacts: labels do not fit the {len(names)} class_names {list(names)!r}"
        )


def _same_labels(first: np.ndarray | None, second: np.ndarray | None) -> bool:
    if first is None or second is None:
        return first is second
    return first.shape == second.shape and bool(np.array_equal(first, second))


def dataset_facts(dataset: Any) -> DatasetFacts | None:
    """The facts of ``dataset``, or of the dataset it was made from.

    Looks on ``dataset`` itself, then back through the ``tf.data`` datasets it
    was made from, and adjusts what it finds to the steps in between (see the
    module documentation for which steps keep which facts).

    Args:
        dataset: A ``tf.data.Dataset``, usually one of
            :func:`xferclass.load_image_dataset` or made from one; any other
            object gives the facts set on it, if any.

    Returns:
        The :class:`DatasetFacts`, or None when nothing is known.

    Example:
        >>> import tensorflow as tf
        >>> base = tf.data.Dataset.from_tensor_slices(([[0.0]], [[1.0]])).batch(1)
        >>> base = xferclass.with_facts(base, xferclass.DatasetFacts(class_names=("cat",)))
        >>> xferclass.dataset_facts(base.map(lambda x, y: (x * 2, y))).class_names
        ('cat',)
    """
    found = _lookup(dataset)
    if found is _MISSING or found is None:
        return None
    return _fit_image_size(found, dataset)


def _lookup(dataset: Any) -> Any:
    """The facts found at or below ``dataset``: facts, None (explicitly none) or _MISSING."""
    own = _own_facts(dataset)
    if own is not _MISSING or not isinstance(dataset, tf.data.Dataset):
        return own
    try:
        inputs = list(dataset._inputs())
    except Exception:  # noqa: BLE001 - a dataset kind without a readable lineage
        return _MISSING
    found = [_lookup(source) for source in inputs]
    known = [facts for facts in found if facts is not _MISSING and facts is not None]
    if not known:
        return None if None in found else _MISSING
    if len(inputs) == 1:
        return known[0] if _keeps_rows(dataset) else known[0].without_rows()
    return _combined(dataset, known, all_known=len(known) == len(inputs))


def _own_facts(dataset: Any) -> Any:
    """The facts set on ``dataset`` itself, its public attributes overriding them."""
    try:
        attributes = vars(dataset)
    except TypeError:
        return _MISSING
    stored = attributes.get(_STORE, _MISSING)
    given = {name: attributes[name] for name in _FIELDS if name in attributes}
    if not given:
        return stored
    base = stored if isinstance(stored, DatasetFacts) else DatasetFacts()
    if given.get("skipped") is None:
        given.pop("skipped", None)
    if given.get("multi_label") is None:
        given.pop("multi_label", None)
    return dataclasses.replace(base, **given)


def _keeps_rows(dataset: tf.data.Dataset) -> bool:
    """Whether ``dataset``'s rows are its single input's rows, each once."""
    if type(dataset).__name__.lstrip("_") not in _SAME_ROWS:
        return False
    drop = getattr(dataset, "_drop_remainder", False)
    if isinstance(drop, tf.Tensor):
        drop = tf.get_static_value(drop)
    return drop is not None and not bool(drop)


def _combined(
    dataset: tf.data.Dataset, known: list[DatasetFacts], *, all_known: bool
) -> DatasetFacts | None:
    """The facts of a dataset of several inputs: what they agree on, or None."""
    first = known[0]
    for other in known[1:]:
        shared = (other.class_names, other.multi_label, other.image_size)
        if shared != (first.class_names, first.multi_label, first.image_size):
            return None
    skipped = tuple(dict.fromkeys(pair for facts in known for pair in facts.skipped))
    combined = dataclasses.replace(first.without_rows(), skipped=skipped)
    concatenated = type(dataset).__name__.lstrip("_") == "ConcatenateDataset"
    if concatenated and all_known and all(facts.labels is not None for facts in known):
        return dataclasses.replace(
            combined,
            file_paths=tuple(path for facts in known for path in facts.file_paths or ()),
            labels=np.concatenate([facts.labels for facts in known]),
        )
    return combined


def _fit_image_size(facts: DatasetFacts, dataset: Any) -> DatasetFacts:
    """``facts`` without an image size that ``dataset``'s images no longer have."""
    if facts.image_size is None or not isinstance(dataset, tf.data.Dataset):
        return facts
    spec = dataset.element_spec
    if isinstance(spec, (tuple, list)) and spec:
        spec = spec[0]
    if not isinstance(spec, tf.TensorSpec) or spec.shape.rank not in (3, 4):
        return facts
    height, width = spec.shape[-3], spec.shape[-2]
    if height is None or width is None or (height, width) == facts.image_size:
        return facts
    return dataclasses.replace(facts, image_size=None)


def with_facts(dataset: tf.data.Dataset, facts: DatasetFacts | None) -> tf.data.Dataset:
    """``dataset`` as a new dataset carrying ``facts``; ``dataset`` is left as it was.

    For datasets whose lineage doesn't lead back to a
    :func:`xferclass.load_image_dataset` result, such as one rebuilt from a
    generator. The new dataset yields the same elements and also has the
    attributes ``class_names``, ``file_paths``, ``labels``, ``multi_label``,
    ``skipped`` and ``image_size``.

    Args:
        dataset: The ``tf.data.Dataset``.
        facts: Its :class:`DatasetFacts`, or None for "no facts": the lookup
            then stops here instead of reading the datasets it came from.

    Returns:
        A ``tf.data.Dataset`` with the same elements, carrying ``facts``.

    Raises:
        InvalidArgumentTypeError: ``dataset`` is not a ``tf.data.Dataset``, or
            ``facts`` is neither a :class:`DatasetFacts` nor None.
    """
    if not isinstance(dataset, tf.data.Dataset):
        raise InvalidArgumentTypeError(
            f"with_facts: dataset must be a tf.data.Dataset; got {type(dataset).__name__}"
        )
    if facts is not None and not isinstance(facts, DatasetFacts):
        raise InvalidArgumentTypeError(
            "with_facts: facts must be a xferclass.DatasetFacts (or None); got "
            f"{type(facts).__name__}; build one with DatasetFacts(class_names=...)"
        )
    carrier = dataset.with_options(tf.data.Options())
    return attach_facts(carrier, facts)


def attach_facts(dataset: tf.data.Dataset, facts: DatasetFacts | None) -> tf.data.Dataset:
    """Set ``facts`` and the matching public attributes on ``dataset`` itself; return it."""
    setattr(dataset, _STORE, facts)
    if facts is None:
        for name in _FIELDS:
            vars(dataset).pop(name, None)
        return dataset
    dataset.class_names = _as_list(facts.class_names)
    dataset.file_paths = _as_list(facts.file_paths)
    dataset.labels = None if facts.labels is None else np.array(facts.labels)
    dataset.multi_label = facts.multi_label
    dataset.skipped = list(facts.skipped)
    dataset.image_size = facts.image_size
    return dataset


def _as_list(values: Iterable[str] | None) -> list[str] | None:
    return None if values is None else list(values)


def facts_of(dataset: Any) -> DatasetFacts:
    """:func:`dataset_facts`, with empty facts (nothing known) instead of None."""
    return dataset_facts(dataset) or DatasetFacts()


def class_names_of(dataset: Any) -> list[str] | None:
    """The class names :func:`dataset_facts` finds for ``dataset``, as a list, or None."""
    names = facts_of(dataset).class_names
    return None if names is None else list(names)
