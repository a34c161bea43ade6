"""Cached activations: run the frozen part of a model once, train the rest many times.

An :class:`ActivationStore` keeps rows (pooled features, or the activations at a
cut inside the backbone) in memory up to a byte budget and spills everything to
a file in a temporary folder past it. Reading back a batch from the file uses
``os.pread`` on the rows asked for, so memory stays bounded by the budget plus
a few batches however large the split is.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from ..core._errors import DatasetError, FallbackWarning, InvalidArgumentError
from ..core._log import logger
from ..data._decode import without_autotune

__all__ = [
    "ActivationStore",
    "Budget",
    "CachedSplit",
    "EpochClock",
    "cache_split",
    "epoch_plan",
    "DEFAULT_MEMORY_LIMIT",
]

#: Bytes of activations kept in memory before spilling to disk (all stores of
#: one training run together). ``XFERCLASS_CACHE_MEMORY`` overrides it.
DEFAULT_MEMORY_LIMIT = 2 * 1024**3

#: Batches that tf.data reads ahead of the training step (and the images read
#: ahead of the extraction): a number fixed here, not left to tf.data's
#: autotuner, which grows its buffers when the machine is busy, so the memory
#: past the budget is a known number of batches.
PREFETCH_BATCHES = 2


def memory_limit_from_env(value: int | None) -> int:
    """The cache's memory budget in bytes: ``value``, else ``$XFERCLASS_CACHE_MEMORY``, else 2 GiB.

    Raises:
        InvalidArgumentError: The environment variable is not a non-negative
            int of bytes (``_`` may group digits).
    """
    if value is not None:
        return int(value)
    env = os.environ.get("XFERCLASS_CACHE_MEMORY", "").strip()
    if not env:
        return DEFAULT_MEMORY_LIMIT
    digits = env.replace("_", "")
    if not digits.isdigit() or not digits.isascii():
        raise InvalidArgumentError(
            f"XFERCLASS_CACHE_MEMORY={env!r} must be a non-negative int: the bytes of cached "
            f"features kept in memory before spilling to disk (default {DEFAULT_MEMORY_LIMIT})"
        )
    return int(digits)


class EpochClock:
    """The epoch being trained; the training loop sets ``epoch`` as epochs begin."""

    def __init__(self, epoch: int = 0) -> None:
        self.epoch = int(epoch)


def epoch_plan(
    n: int, views: int, *, seed: int, epoch: int, shuffle: bool
) -> tuple[np.ndarray, np.ndarray]:
    """The row order and the view of every position, for one epoch.

    Both are drawn from ``numpy.random.default_rng([seed, epoch])``: the same
    seed and epoch give the same batches on any machine, in any process, and
    after a resume.

    Returns:
        ``(order, views)``: ``order[k]`` is the row read at position ``k``, and
        ``views[k]`` the view it is read from.
    """
    rng = np.random.default_rng([int(seed), int(epoch)])
    order = rng.permutation(n) if shuffle else np.arange(n)
    picks = rng.integers(views, size=n) if views > 1 else np.zeros(n, np.int64)
    return order.astype(np.int64), picks.astype(np.int64)


class Budget:
    """Bytes of memory left to all stores of one run."""

    def __init__(self, limit: int) -> None:
        self.left = int(limit)


_Budget = Budget


class ActivationStore:
    """Rows of one fixed shape and dtype, in memory or spilled to a file.

    Args:
        row_shape: Shape of one row (one image's activations).
        dtype: Storage dtype (float32, or float16 to halve the footprint).
        budget: Shared memory budget; past it the store spills to ``directory``.
        directory: Folder for the spill file.
    """

    def __init__(self, row_shape: Sequence[int], dtype: Any, budget: _Budget, directory: str):
        self.row_shape = tuple(int(d) for d in row_shape)
        self.dtype = np.dtype(dtype)
        self.row_bytes = int(np.prod(self.row_shape)) * self.dtype.itemsize
        self._budget = budget
        self._directory = directory
        self._chunks: list[np.ndarray] = []
        self._starts: np.ndarray | None = None  # first row of each in-memory chunk
        self._file: Any = None
        self._fd: int | None = None
        self.count = 0

    @property
    def on_disk(self) -> bool:
        return self._file is not None

    def append(self, rows: np.ndarray) -> None:
        rows = np.ascontiguousarray(rows, dtype=self.dtype)
        if rows.shape[1:] != self.row_shape:
            raise InvalidArgumentError(
                f"rows of shape {rows.shape[1:]} do not fit the store's {self.row_shape}"
            )
        if self._file is None and rows.nbytes <= self._budget.left:
            self._budget.left -= rows.nbytes
            # A copy the store owns: ``rows`` may be a view of a runtime's output
            # buffer (TensorFlow's, onnxruntime's), which it would keep alive whole.
            self._chunks.append(np.array(rows, copy=True))
        else:
            if self._file is None:
                self._spill()
            self._file.write(rows.tobytes())
        self.count += len(rows)

    def _spill(self) -> None:
        handle = tempfile.NamedTemporaryFile(
            dir=self._directory, prefix="activations-", suffix=".bin", delete=False
        )
        for chunk in self._chunks:
            handle.write(chunk.tobytes())
            self._budget.left += chunk.nbytes
        self._chunks = []
        self._file = handle

    def finish(self) -> None:
        """Stop appending; make the rows readable."""
        if self._file is not None:
            self._file.flush()
            self._file.close()
            self._fd = os.open(self._file.name, os.O_RDONLY)
        else:
            # The chunks stay as they are: concatenating them would need twice
            # the memory for a moment, and freed heap is not always given back.
            sizes = [len(chunk) for chunk in self._chunks]
            self._starts = np.cumsum([0, *sizes[:-1]]).astype(np.int64)

    def take(self, indices: np.ndarray) -> np.ndarray:
        """Rows at ``indices``, as float32."""
        if self._starts is not None:
            indices = np.asarray(indices, dtype=np.int64)
            chunk_of = np.searchsorted(self._starts, indices, side="right") - 1
            out = np.empty((len(indices), *self.row_shape), np.float32)
            for chunk in np.unique(chunk_of):
                mask = chunk_of == chunk
                out[mask] = self._chunks[chunk][indices[mask] - self._starts[chunk]]
            return out
        assert self._fd is not None
        out = np.empty((len(indices), *self.row_shape), self.dtype)
        flat = out.reshape(len(indices), -1).view(np.uint8)
        for k, i in enumerate(indices):
            data = os.pread(self._fd, self.row_bytes, int(i) * self.row_bytes)
            flat[k] = np.frombuffer(data, np.uint8)
        return out.astype(np.float32, copy=False)

    def close(self) -> None:
        """Release the rows: the read descriptor, and a spill file still being written."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._file is not None and not self._file.closed:
            self._file.close()
        for chunk in self._chunks:
            self._budget.left += chunk.nbytes
        self._chunks = []
        self._starts = None


@contextlib.contextmanager
def _closed_on_error(stores: list[ActivationStore]) -> Iterator[None]:
    """Close ``stores`` (their files and descriptors) when the block raises."""
    try:
        yield
    except BaseException:
        for store in stores:
            store.close()
        raise


class CachedSplit:
    """The cached activations of one split: one store and one label array per view.

    View 0 holds the plain images; further views hold augmented copies of the
    same images, row for row (they are computed in one pass over the source).
    Each epoch, every row is read from one view picked at random, so each
    image is seen once per epoch.
    """

    def __init__(
        self,
        stores: list[ActivationStore],
        labels: list[np.ndarray],
        batch_size: int,
        weights: np.ndarray | None = None,
    ):
        self.stores = stores
        self.view_labels = labels
        self.labels = labels[0]
        self.batch_size = batch_size
        #: The source's sample weights, row for row (the same in every view), or None.
        self.weights = weights

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def on_disk(self) -> bool:
        return any(store.on_disk for store in self.stores)

    def dataset(
        self, *, shuffle: bool, seed: int | None, clock: EpochClock | None = None
    ) -> tf.data.Dataset:
        """A tf.data pipeline of ``(activations, labels)`` batches.

        With sample weights the batches are ``(activations, labels, weights)``.

        Each epoch reads the rows in the order :func:`epoch_plan` gives for
        ``seed`` and the epoch that ``clock`` shows (set by the training loop
        at the start of every epoch), so the order depends on neither the
        source dataset nor how often the pipeline was iterated.
        """
        n = len(self.labels)
        views = len(self.stores)
        seed = int(np.random.default_rng().integers(2**31)) if seed is None else int(seed)
        clock = clock or EpochClock()
        plans: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        lock = threading.Lock()

        def plan() -> tuple[np.ndarray, np.ndarray]:
            epoch = clock.epoch
            with lock:
                if epoch not in plans:
                    plans.clear()
                    plans[epoch] = epoch_plan(n, views, seed=seed, epoch=epoch, shuffle=shuffle)
                return plans[epoch]

        def rows_at(positions: np.ndarray, indices: np.ndarray) -> np.ndarray:
            if views == 1:
                return self.stores[0].take(indices)
            chosen = plan()[1][positions]
            rows = np.empty((len(indices), *self.stores[0].row_shape), np.float32)
            for view in range(views):
                mask = chosen == view
                if mask.any():
                    rows[mask] = self.stores[view].take(indices[mask])
            return rows

        weights = self.weights

        def gather(positions: np.ndarray) -> tuple[np.ndarray, ...]:
            positions = np.asarray(positions, dtype=np.int64)
            indices = plan()[0][positions]
            batch = (rows_at(positions, indices), self.labels[indices])
            return batch if weights is None else (*batch, weights[indices])

        shapes = [(None, *self.stores[0].row_shape), (None, *self.labels.shape[1:])]
        shapes += [] if weights is None else [(None, *weights.shape[1:])]

        def load(positions: tf.Tensor) -> tuple[tf.Tensor, ...]:
            batch = tf.numpy_function(gather, [positions], [tf.float32] * len(shapes))
            for tensor, shape in zip(batch, shapes):
                tensor.set_shape(shape)
            return tuple(batch)

        # Under a multi-worker strategy every worker holds the whole cache, and
        # DATA sharding hands each worker its share of every global batch: the
        # same batches as on one device. (AUTO would try FILE sharding first.)
        options = tf.data.Options()
        policy = tf.data.experimental.AutoShardPolicy.DATA
        options.experimental_distribute.auto_shard_policy = policy
        positions = tf.data.Dataset.range(n).batch(self.batch_size)
        # Nothing here is left to autotuning (one loader, a fixed prefetch), and with
        # it on an epoch could end only at its model thread's next waking.
        batches = positions.map(load).prefetch(PREFETCH_BATCHES).with_options(options)
        return without_autotune(batches)

    def map_views(
        self, function: Callable[[Any], Any], directory: CacheDirectory, budget: _Budget
    ) -> CachedSplit:
        """Apply ``function`` to every row of every view, batch by batch, in order.

        This turns activations cached at a cut inside the backbone into the
        pooled features of the head without running the backbone again.
        """
        stores: list[ActivationStore] = []
        n = len(self.labels)
        with _closed_on_error(stores):
            for store in self.stores:
                out: ActivationStore | None = None
                for start in range(0, n, self.batch_size):
                    rows = np.asarray(
                        function(store.take(np.arange(start, min(n, start + self.batch_size))))
                    )
                    if out is None:
                        out = ActivationStore(rows.shape[1:], np.float32, budget, directory.path)
                        stores.append(out)
                    out.append(rows)
                assert out is not None
                out.finish()
        return CachedSplit(stores, self.view_labels, self.batch_size, self.weights)

    def close(self) -> None:
        for store in self.stores:
            store.close()


class CacheDirectory:
    """A temporary folder for spilled activations, removed on close."""

    def __init__(self, parent: str | None = None) -> None:
        self.path = tempfile.mkdtemp(prefix="xferclass-cache-", dir=parent)
        self.budget: _Budget | None = None

    def close(self) -> None:
        """Remove the folder; what cannot be removed is named in a warning."""
        failed: list[str] = []

        def note(function: Any, path: str, error: Any) -> None:
            # onexc (Python 3.12+) passes the exception, onerror its exc_info.
            failed.append(f"{path} ({error[1] if isinstance(error, tuple) else error})")

        if os.path.exists(self.path):
            if sys.version_info >= (3, 12):
                shutil.rmtree(self.path, onexc=note)
            else:
                shutil.rmtree(self.path, onerror=note)
        if failed:
            logger.warning(
                "could not remove the feature cache's spill folder %s: %s; remove it by hand",
                self.path, "; ".join(failed),
            )  # fmt: skip

    def __enter__(self) -> CacheDirectory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _storage_dtype(dtype: Any, rows: np.ndarray, batches: int, budget: _Budget, name: str) -> Any:
    """``dtype``, or for ``"auto"`` float32 when the split's estimated size fits the budget."""
    if dtype != "auto":
        return dtype
    estimate = rows.nbytes * max(batches, 1) * (4 // rows.dtype.itemsize or 1)
    if estimate <= budget.left:
        logger.info(
            "storing %s in float32 (about %.1f MiB; %.1f MiB of memory budget left)",
            name, estimate / 2**20, budget.left / 2**20,
        )  # fmt: skip
        return "float32"
    warnings.warn(
        f"caching {name} in float16, which rounds the features: in float32 they need about "
        f"{estimate / 2**20:.1f} MiB and {budget.left / 2**20:.1f} MiB of the memory budget is "
        'left; pass cache_dtype="float32" (spills to disk) or a larger cache_memory',
        FallbackWarning,
        stacklevel=2,
    )
    return "float16"


def cache_split(
    extract: Callable[[tf.Tensor], Any],
    dataset: tf.data.Dataset,
    *,
    name: str,
    directory: CacheDirectory,
    budget: _Budget,
    augment: Callable[[tf.Tensor], tf.Tensor] | None = None,
    views: int = 1,
    dtype: Any = np.float32,
    verbose: int = 1,
) -> CachedSplit:
    """Run ``extract`` over every batch of ``dataset`` and keep the results.

    Args:
        extract: Maps a batch of images to a batch of activations.
        dataset: ``(images, labels)`` batches.
        name: The split's name, for progress output.
        directory: Where spilled activations go.
        budget: The run's shared memory budget.
        augment: Applied to the images of views 1 and up.
        views: 1 for the plain images only; ``1 + k`` adds ``k`` augmented copies.
        dtype: Storage dtype, or ``"auto"``: float32 when the split's size
            (estimated from its first batch) fits the budget, else float16.
        verbose: 0 silent, 1 progress bar.
    """
    steps = int(dataset.cardinality())
    stores: list[ActivationStore] = []
    labels: list[np.ndarray] = []
    weights: list[np.ndarray] = []
    batch_size = 0
    # Sample weights, the third element of (images, labels, weights) batches, are kept.
    source = without_autotune(
        dataset.map(lambda x, y, *rest: (x, y, *rest[:1])).prefetch(PREFETCH_BATCHES)
    )
    notes = [f"{steps} batches"] if steps > 0 else []
    notes += [f"{views - 1} augmented views"] if views > 1 else []
    logger.info(
        "caching backbone activations for %s%s", name, f" ({', '.join(notes)})" if notes else ""
    )
    progress = keras.utils.Progbar(steps if steps > 0 else None, verbose=verbose)
    # All views of a batch are computed together, so row i is the same image
    # in every view whatever order the source yields its images in.
    note_labels = getattr(extract, "note_labels", None)  # engine="auto" judges bf16 by them
    with _closed_on_error(stores):
        for step, (images, batch_labels, *batch_weights) in enumerate(source, start=1):
            if note_labels is not None:
                note_labels(batch_labels)
            for view in range(views):
                shown = augment(images) if view > 0 and augment is not None else images
                rows = np.asarray(extract(shown))
                if not stores:
                    dtype = _storage_dtype(dtype, rows, steps * views, budget, name)
                if len(stores) == view:
                    stores.append(ActivationStore(rows.shape[1:], dtype, budget, directory.path))
                stores[view].append(rows)
            labels.append(np.asarray(batch_labels, np.float32))
            weights += [np.asarray(w, np.float32) for w in batch_weights]
            batch_size = max(batch_size, len(labels[-1]))
            progress.update(step)
        if not stores:
            raise DatasetError(f"{name} is empty: it yielded no batches")
        for store in stores:
            store.finish()
    merged = np.concatenate(labels)
    return CachedSplit(stores, [merged] * views, batch_size, _merged(weights))


def _merged(weights: list[np.ndarray]) -> np.ndarray | None:
    """The sample weights of all batches in one array, or ``None`` when there are none."""
    return np.concatenate(weights) if weights else None
