"""Which files a model trained on, recorded inside the model, small at any scale.

A score on images the model trained on says little about new images, and a user
who evaluates on a folder the training pooled (``xferclass train DATA`` reads
``DATA/train`` and ``DATA/validation``) gets a perfect score that looks held
out. So the model remembers its training files, and ``xferclass evaluate``,
``xferclass report`` and the example say how many of the scored images it saw.

**What is recorded.** Each training file's content digest (BLAKE2b of its bytes,
16 bytes: :data:`DIGEST`), so a copy under another name or folder counts as seen,
and a re-encoded or edited image does not. The digests go into a Bloom filter
sized for a false-positive rate of about :data:`FALSE_POSITIVE_RATE` (1e-4):
about 19.2 bits per file, 7 KB for 3,000 images and 2.4 MB for a million. A file
the model trained on is always reported as seen (no false negatives); a file it
did not see is reported as seen with that small probability.

**Where.** Under ``"trained_on"`` in the metadata of the model's
:class:`~xferclass.Preprocessing` layer, which is saved in the ``.keras`` file::

    {"version": 1,
     "filters": [{"digest": "blake2b-128", "bits": m, "hashes": k, "count": n,
                  "filter": "<base64 of ceil(m / 8) bytes>"}, ...]}

Bit ``j`` of a filter is bit ``j % 8`` (least significant first) of byte
``j // 8``. A digest sets bits ``(a + i * b) % m`` for ``i`` in ``0 .. k - 1``,
where ``a`` is its first 8 bytes and ``b`` is ``1 +`` its last 8 bytes modulo
``m - 1`` (little-endian integers): double hashing of one digest. Training on
more files later (another :func:`xferclass.fit`, then the automatic recipe's
files) adds a filter for the files not already seen; a file is seen when any
filter holds it.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from ..core._errors import DatasetError, InvalidArgumentError, ModelFileError

__all__ = [
    "DIGEST",
    "FALSE_POSITIVE_RATE",
    "HOW",
    "METADATA_KEY",
    "BloomFilter",
    "digests",
    "estimate_text",
    "file_digest",
    "held_out_estimate",
    "overlap_sentence",
    "overlap_summary",
    "record_training_files",
    "trained_on",
]

#: The content digest of a file: BLAKE2b of its bytes, 16 bytes long.
DIGEST = "blake2b-128"
#: Bytes of a digest.
DIGEST_SIZE = 16
#: The false-positive rate each filter is sized for.
FALSE_POSITIVE_RATE = 1e-4
#: Key of the record in the Preprocessing layer's metadata.
METADATA_KEY = "trained_on"
#: Version of the record's layout (the module documentation describes it).
VERSION = 1
#: How the overlap is found, for people reading a summary.
HOW = "content digests of the files (a Bloom filter, false-positive rate about 1e-4)"

_CHUNK = 1 << 20  # bytes read at a time
_KEYS_PER_STEP = 1 << 16  # digests hashed into positions at a time (bounds memory)
_FILES_PER_TASK = 64  # files one worker thread digests per task
_THREADED_FROM = 32  # fewer files are digested in the calling thread


def file_digest(path: str | os.PathLike[str]) -> bytes:
    """The content digest of one file: BLAKE2b (16 bytes) of its bytes, read in chunks.

    Args:
        path: The file.

    Returns:
        16 bytes; files with the same bytes have the same digest, whatever their names.

    Raises:
        DatasetError: The file cannot be read (missing, a folder, no permission);
            the message names it.

    Examples:
        >>> import tempfile, pathlib
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> (folder / "a.jpg").write_bytes(b"pixels")
        6
        >>> (folder / "copy.jpg").write_bytes(b"pixels")
        6
        >>> file_digest(folder / "a.jpg") == file_digest(folder / "copy.jpg")
        True
    """
    digest = hashlib.blake2b(digest_size=DIGEST_SIZE)
    try:
        with open(path, "rb") as file:
            while chunk := file.read(_CHUNK):
                digest.update(chunk)
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise DatasetError(
            f"cannot read {os.fspath(path)!s} to take its content digest ({reason}); the files "
            "a model trained on are recognised by their bytes"
        ) from error
    return digest.digest()


def _digest_block(paths: Sequence[str]) -> list[bytes]:
    return [file_digest(path) for path in paths]


def digests(paths: Iterable[str | os.PathLike[str]]) -> np.ndarray:
    """The content digests of ``paths``, one row of 16 bytes per path, in order.

    Files are read in chunks by a few threads (hashing releases the GIL), so a
    large folder costs about one read of its bytes.

    Args:
        paths: File paths (a single path is taken as one file).

    Returns:
        A ``uint8`` array of shape ``(len(paths), 16)``.

    Raises:
        DatasetError: A file cannot be read; the message names it.
    """
    if isinstance(paths, (str, bytes, os.PathLike)):
        paths = [paths]
    items = [os.fsdecode(path) for path in paths]
    found = np.zeros((len(items), DIGEST_SIZE), dtype=np.uint8)
    if len(items) < _THREADED_FROM:
        rows = _digest_block(items)
    else:
        blocks = [items[i : i + _FILES_PER_TASK] for i in range(0, len(items), _FILES_PER_TASK)]
        workers = min(8, os.cpu_count() or 1, len(blocks))
        with ThreadPoolExecutor(workers, thread_name_prefix="xferclass-digest") as pool:
            rows = [row for block in pool.map(_digest_block, blocks) for row in block]
    if rows:
        found[:] = np.frombuffer(b"".join(rows), dtype=np.uint8).reshape(len(rows), DIGEST_SIZE)
    return found


def _as_keys(keys: Any) -> np.ndarray:
    """Digests as a C-contiguous ``(n, 16)`` uint8 array (from an array or a list of bytes)."""
    if isinstance(keys, np.ndarray):
        array = np.ascontiguousarray(keys, dtype=np.uint8)
    else:
        rows = list(keys)
        if any(len(bytes(row)) != DIGEST_SIZE for row in rows):
            raise InvalidArgumentError(f"every digest must be {DIGEST_SIZE} bytes")
        joined = b"".join(bytes(row) for row in rows)
        array = np.frombuffer(joined, dtype=np.uint8).reshape(len(rows), DIGEST_SIZE)
    if array.ndim != 2 or array.shape[1] != DIGEST_SIZE:
        raise InvalidArgumentError(
            f"digests must be of shape (n, {DIGEST_SIZE}); got {array.shape}"
        )
    return np.ascontiguousarray(array)


@dataclasses.dataclass(eq=False)
class BloomFilter:
    """A set of content digests that answers "maybe seen" or "certainly not seen".

    Args:
        bits: Length of the bit array.
        hashes: Bits set per digest.
        count: Digests added so far.
        packed: The bit array, ``ceil(bits / 8)`` bytes (bit ``j`` is bit
            ``j % 8`` of byte ``j // 8``); default all zero.
        digest: Name of the digest the keys are (:data:`DIGEST`).

    Examples:
        >>> keys = np.arange(64, dtype=np.uint8).reshape(4, 16)
        >>> found = BloomFilter.sized_for(2)
        >>> found.add(keys[:2])
        >>> found.contains(keys).tolist()
        [True, True, False, False]
    """

    bits: int
    hashes: int
    count: int = 0
    packed: np.ndarray | None = None
    digest: str = DIGEST

    def __post_init__(self) -> None:
        if self.bits < 1 or self.hashes < 1 or self.count < 0:
            raise InvalidArgumentError(
                f"BloomFilter: bits={self.bits}, hashes={self.hashes} and count={self.count} "
                "must be positive (count: not negative)"
            )
        size = (self.bits + 7) // 8
        if self.packed is None:
            self.packed = np.zeros(size, dtype=np.uint8)
        self.packed = np.ascontiguousarray(self.packed, dtype=np.uint8)
        if self.packed.shape != (size,):
            raise InvalidArgumentError(
                f"BloomFilter: {self.packed.size} bytes for {self.bits} bits; expected {size}"
            )

    @classmethod
    def sized_for(cls, count: int, rate: float = FALSE_POSITIVE_RATE) -> BloomFilter:
        """An empty filter for ``count`` digests at false-positive rate ``rate``.

        ``bits = ceil(-count ln(rate) / ln(2)^2)`` (at least 64) and
        ``hashes = round(-log2(rate))``: 19.2 bits per digest and 13 hashes at 1e-4.
        """
        if not 0.0 < rate < 1.0:
            raise InvalidArgumentError(f"rate={rate!r} must be between 0 and 1")
        count = max(int(count), 1)
        bits = max(64, math.ceil(-count * math.log(rate) / math.log(2) ** 2))
        return cls(bits=bits, hashes=max(1, round(-math.log2(rate))))

    @property
    def nbytes(self) -> int:
        """Bytes of the bit array."""
        return (self.bits + 7) // 8

    @property
    def false_positive_rate(self) -> float:
        """The expected rate for a digest not added: ``(1 - exp(-hashes count / bits))^hashes``."""
        return float((1.0 - math.exp(-self.hashes * self.count / self.bits)) ** self.hashes)

    def _positions(self, keys: np.ndarray) -> np.ndarray:
        """The bit positions of each digest: ``(n, hashes)`` uint64."""
        halves = keys.view("<u8")  # (n, 2): two little-endian 64-bit integers per digest
        size = np.uint64(self.bits)
        first = halves[:, 0] % size
        step = halves[:, 1] % np.uint64(max(self.bits - 1, 1)) + np.uint64(1)
        rounds = np.arange(self.hashes, dtype=np.uint64)
        return (first[:, None] + rounds[None, :] * step[:, None]) % size

    def add(self, keys: Any) -> None:
        """Add digests (an ``(n, 16)`` uint8 array or a list of 16-byte strings)."""
        keys = _as_keys(keys)
        if not len(keys):
            return
        assert self.packed is not None
        flags = np.unpackbits(self.packed, count=self.bits, bitorder="little").astype(bool)
        for start in range(0, len(keys), _KEYS_PER_STEP):
            flags[self._positions(keys[start : start + _KEYS_PER_STEP]).ravel()] = True
        self.packed = np.packbits(flags, bitorder="little")
        self.count += len(keys)

    def contains(self, keys: Any) -> np.ndarray:
        """Whether each digest may have been added (``False``: it certainly was not)."""
        keys = _as_keys(keys)
        assert self.packed is not None
        found = np.zeros(len(keys), dtype=bool)
        for start in range(0, len(keys), _KEYS_PER_STEP):
            positions = self._positions(keys[start : start + _KEYS_PER_STEP])
            set_bits = (self.packed[positions >> np.uint64(3)] >> (positions & np.uint64(7))) & 1
            found[start : start + len(positions)] = set_bits.astype(bool).all(axis=1)
        return found

    def to_json(self) -> dict[str, Any]:
        """The filter as JSON data: its parameters and the bit array in base64."""
        assert self.packed is not None
        return {
            "digest": self.digest,
            "bits": int(self.bits),
            "hashes": int(self.hashes),
            "count": int(self.count),
            "filter": base64.b64encode(self.packed.tobytes()).decode("ascii"),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> BloomFilter:
        """The filter :meth:`to_json` wrote.

        Raises:
            ValueError: ``data`` is not such a filter (missing fields, bad base64,
                a bit array of the wrong length).
        """
        try:
            packed = np.frombuffer(base64.b64decode(data["filter"], validate=True), np.uint8)
            return cls(
                bits=int(data["bits"]), hashes=int(data["hashes"]), count=int(data["count"]),
                packed=packed.copy(), digest=str(data["digest"]),
            )  # fmt: skip
        except (KeyError, TypeError, binascii.Error) as error:
            raise ModelFileError(f"not a Bloom filter record: {error!r}") from error


# --------------------------------------------------------------------------- in a model


def _layer(model: Any) -> Any:
    from ..backbones.layers import preprocessing_layer

    if isinstance(model, (str, os.PathLike)):
        from ..backbones.saving import load_model

        model = load_model(model)
    return preprocessing_layer(model)


def _stored(layer: Any) -> list[BloomFilter] | None:
    """The filters recorded in ``layer``'s metadata, or None when it records none."""
    if layer is None:
        return None
    record = (getattr(layer, "metadata", None) or {}).get(METADATA_KEY)
    if not record:
        return None
    try:
        if int(record.get("version", 0)) != VERSION:
            return None  # a layout this version does not read
        filters = [BloomFilter.from_json(entry) for entry in record["filters"]]
    except (AttributeError, KeyError, TypeError, ValueError) as error:
        raise ModelFileError(
            f"the model's record of the files it trained on is damaged ({error}); "
            "train it again to record them"
        ) from error
    usable = [found for found in filters if found.digest == DIGEST]
    return usable or None


def _member(filters: Sequence[BloomFilter], keys: np.ndarray) -> np.ndarray:
    seen = np.zeros(len(keys), dtype=bool)
    for found in filters:
        seen |= found.contains(keys)
    return seen


def record_training_files(model: Any, paths: Iterable[str | os.PathLike[str]]) -> bool:
    """Record in ``model`` that it trained on the files ``paths``.

    The content digests of the files not already recorded go into a new Bloom
    filter in the metadata of the model's Preprocessing layer (saved with the
    model); files recorded before stay recorded. The weights are not touched.
    :func:`xferclass.fit` and :func:`xferclass.fine_tune` call it with their
    training files; :func:`xferclass.train_auto` with all the images it pooled.

    Args:
        model: A ``keras.Model`` made by xferclass.
        paths: The files it trained on.

    Returns:
        ``False`` when the model has no Preprocessing layer (nothing recorded),
        else ``True``.

    Raises:
        DatasetError: A file cannot be read; the message names it.

    Examples:
        >>> record_training_files(model, train.file_paths)  # doctest: +SKIP
        True
    """
    layer = _layer(model)
    if layer is None:
        return False
    keys = digests(paths)
    filters = _stored(layer) or []
    if filters:
        keys = keys[~_member(filters, keys)]
    if len(keys):
        keys = np.unique(keys, axis=0)  # a file twice (or two copies) counts once
        added = BloomFilter.sized_for(len(keys))
        added.add(keys)
        filters.append(added)
        record = {"version": VERSION, "filters": [found.to_json() for found in filters]}
        layer.metadata = {**(layer.metadata or {}), METADATA_KEY: record}
    return True


def trained_on(model: Any, paths: Iterable[str | os.PathLike[str]]) -> np.ndarray | None:
    """Whether ``model`` trained on each file of ``paths`` (by the files' bytes).

    Args:
        model: A ``keras.Model``, or the path of a saved ``.keras`` file.
        paths: Image files.

    Returns:
        A bool array, one entry per path (``True``: trained on it, or, with a
        probability of about 1e-4, a file it did not see), or ``None`` when the
        model records no training files (models of older versions of
        xferclass, models made elsewhere); the files are then not read.

    Raises:
        DatasetError: A file cannot be read; the message names it.
        ModelFileError: The model's record is damaged.
    """
    filters = _stored(_layer(model))
    if filters is None:
        return None
    return _member(filters, digests(paths))


def overlap_summary(model: Any, paths: Iterable[str | os.PathLike[str]]) -> dict[str, Any] | None:
    """How many of the files ``paths`` the model trained on, as JSON data.

    Args:
        model: A ``keras.Model``, or the path of a saved ``.keras`` file.
        paths: The files scored (one entry per scored image).

    Returns:
        ``{"scored": n, "seen_in_training": k, "how": ..., "false_positive_rate": p}``
        (``p``: the chance that a file the model did not see is counted), or
        ``None`` when the model records no training files.

    Examples:
        >>> overlap_summary("model.keras", validation.file_paths)  # doctest: +SKIP
        {'scored': 341, 'seen_in_training': 341, 'how': 'content digests of the files (a Bloom
        filter, false-positive rate about 1e-4)', 'false_positive_rate': 9.9e-05}
    """
    layer = _layer(model)
    filters = _stored(layer)
    if filters is None:
        return None
    seen = _member(filters, digests(paths))
    rate = 1.0 - math.prod(1.0 - found.false_positive_rate for found in filters)
    return {
        "scored": int(len(seen)),
        "seen_in_training": int(seen.sum()),
        "how": HOW,
        "false_positive_rate": float(f"{rate:.2g}"),
    }


def overlap_sentence(summary: Mapping[str, Any]) -> str:
    """One sentence about an :func:`overlap_summary`.

    Examples:
        >>> overlap_sentence({"scored": 9, "seen_in_training": 9})
        '9 of 9 images scored here were used in training: these scores are not held out'
        >>> overlap_sentence({"scored": 9, "seen_in_training": 0})
        'none of the 9 images scored here was used in training'
    """
    seen, scored = int(summary["seen_in_training"]), int(summary["scored"])
    if not seen:
        return f"none of the {scored} images scored here was used in training"
    return (
        f"{seen} of {scored} images scored here were used in training: "
        "these scores are not held out"
    )


def estimate_text(estimate: Mapping[str, Any]) -> str:
    """``"accuracy 0.8640 ± 0.0120"`` from the automatic recipe's ``report["estimate"]``."""
    return (
        f"{estimate.get('metric', 'accuracy')} {float(estimate['value']):.4f} ± "
        f"{float(estimate['standard_error']):.4f}"
    )


def held_out_estimate(model: Any) -> dict[str, Any] | None:
    """The automatic recipe's held-out estimate stored in ``model``, or None."""
    layer = _layer(model)  # the report is in the metadata, beside the record of files
    report = ((layer.metadata or {}) if layer is not None else {}).get("auto_report")
    estimate = (report or {}).get("estimate")
    if not isinstance(estimate, Mapping) or "value" not in estimate:
        return None
    if "standard_error" not in estimate:
        return None
    return dict(estimate)
