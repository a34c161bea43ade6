"""The check of image files before training: readable or not (and why), size and orientation.

Every file is checked once, with its result remembered while the file is
unchanged. Its header is read first (in Python, through one open that also
reads the EXIF orientation): an image over the pixel limit, or one whose size
no header tells, is skipped without being decoded. The others are decoded in a
parallel ``tf.data`` pass, and the few that fail are looked at again, eagerly,
to say why.
"""

from __future__ import annotations

import os
import re
import struct
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from ..core._errors import DatasetError
from ._decode import attempt, decoded_shape, header_in_graph, without_autotune
from ._exif import orientation_from_file
from ._folders import shown
from ._imagesize import DEFAULT_MAX_PIXELS, header_from_file

__all__ = [
    "CHECK_ROUND",
    "FileCheck",
    "ImageSize",
    "check_files",
    "checked_orientations",
    "clear_check_cache",
    "decode_pass",
    "failure_reason",
    "read_facts",
    "size_problem",
    "too_large",
]

#: ``(width, height, pixels)`` from an image's header.
ImageSize = tuple[int, int, int]

#: Files per round of the check: the headers of the next round are read (in Python)
#: while TensorFlow decodes this round's images (without the interpreter lock).
CHECK_ROUND = 2048


@dataclass(frozen=True)
class FileCheck:
    """What the check found out about one file; ``reason`` is None for a good image."""

    reason: str | None
    orientation: int
    size: ImageSize | None = None  # (width, height, pixels) from the header


#: Results of earlier checks, keyed by path, valid while (size, mtime, inode) are
#: unchanged: loading the training and then the validation subset of one folder
#: checks each file once, not twice.
_CHECK_CACHE: dict[str, tuple[tuple[int, int, int], FileCheck]] = {}
_CHECK_CACHE_LIMIT = 2_000_000
_CHECK_CACHE_LOCK = threading.Lock()

_SIGNATURES = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
)

_graph_header = tf.function(
    header_in_graph, input_signature=[tf.TensorSpec([], tf.string)], autograph=False
)


# --------------------------------------------------------------------------------------
# Headers and orientations, read without decoding
# --------------------------------------------------------------------------------------


def _file_facts(path: str) -> tuple[ImageSize | None, int]:
    """The header size and the EXIF orientation of one file, read through one open.

    When the Python header reader cannot tell the size (a JPEG whose frame header
    comes after its first 16 MiB, say), the whole file is read and TensorFlow's
    header reader asked, which finds a JPEG's frame header wherever it is; still
    nothing is decoded.
    """
    try:
        with open(path, "rb") as file:
            header = header_from_file(file)
            try:
                file.seek(0)
                orientation = orientation_from_file(file)
            except (OSError, struct.error, ValueError):
                orientation = 1
            if header is None:
                file.seek(0)
                found = [int(v) for v in _graph_header(tf.constant(file.read())).numpy()]
                header = (found[0], found[1], found[2]) if found[2] > 0 else None
    except (OSError, tf.errors.OpError):
        return None, 1
    return header, orientation


def read_facts(paths: Sequence[str]) -> list[tuple[ImageSize | None, int]]:
    """``(size, EXIF orientation)`` of each file, without decoding any.

    One thread reads them in turn: the parsing is Python code, and several
    threads would only queue for the interpreter lock.
    """
    return [_file_facts(path) for path in paths]


def too_large(size: ImageSize | None, max_pixels: int) -> str | None:
    """The skip reason of an image whose header promises more than ``max_pixels``."""
    if size is None or size[2] <= max_pixels:
        return None
    width, height, pixels = size
    what = (
        f"{width}x{height} = {pixels:,} pixels"
        if pixels == width * height
        else f"{width}x{height} with frames of {pixels:,} pixels in all"
    )
    return f"image is {what}, over max_pixels={max_pixels:,}; not decoded"


def _unknown_size_reason(path: str) -> str:
    """Why a file whose size no header tells is not decoded."""
    try:
        with open(path, "rb") as file:
            start = file.read(12)
    except OSError as exc:
        return f"cannot be read: {exc.strerror or exc}"
    if not start:
        return "empty file (0 bytes)"
    kind = next((name for magic, name in _SIGNATURES if start.startswith(magic)), None)
    if kind is None:
        return f"not an image in a known format (starts with {start!r})"
    return f"corrupt or truncated {kind}: its header tells no image size; not decoded"


def size_problem(path: str, size: ImageSize | None, max_pixels: int) -> str | None:
    """Why a file must not be decoded: its size is over ``max_pixels`` or unknown."""
    return _unknown_size_reason(path) if size is None else too_large(size, max_pixels)


# --------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------


def _clean_tf_message(message: str) -> str:
    """The one informative line of a TensorFlow error message."""
    lines = []
    for line in message.splitlines():
        line = re.sub(r"\[Op:[^\]]*\]|\[\[.*?\]\]|\{\{[^}]*\}\}", "", line).strip()
        if line and not line.startswith(("File ", "Graph execution error", "Detected at node")):
            lines.append(line)
    return lines[-1] if lines else "decoding failed"


def _palette_bmp_problem(data: bytes) -> str | None:
    """What is wrong with a palette BMP that the in-graph decoder rejected, if it is one."""
    if len(data) < 54:
        return None
    offset, dib_size, width, height, _, bits, compression = struct.unpack_from("<IIiiHHI", data, 10)
    (colours,) = struct.unpack_from("<I", data, 46)
    if dib_size < 40 or bits not in (1, 2, 4, 8) or compression != 0:
        return None
    table_end = 14 + dib_size + 4 * (colours or 1 << bits)
    pixels_end = offset + (bits * width + 31) // 32 * 4 * abs(height)
    if pixels_end > len(data) or table_end > len(data):
        return (
            f"file cut short: {len(data)} bytes, the header promises {max(pixels_end, table_end)}"
        )
    return "a pixel refers to a colour missing from the colour table"


def failure_reason(path: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> str | None:
    """Why a file cannot be used as an image, or None when it decodes after all.

    The file is decoded only when its header tells a size within ``max_pixels``.
    """
    try:
        with open(path, "rb") as file:
            data = file.read()
    except OSError as exc:
        return f"cannot be read: {exc.strerror or exc}"
    if not data:
        return "empty file (0 bytes)"
    kind = next((name for magic, name in _SIGNATURES if data.startswith(magic)), None)
    try:
        shape = decoded_shape(tf.constant(data), tf.constant(max_pixels, tf.int64)).numpy()
    except (tf.errors.OpError, ValueError) as exc:  # ValueError: message not UTF-8
        if kind is None:
            return f"not an image in a known format (starts with {data[:12]!r})"
        detail = (kind == "BMP" and _palette_bmp_problem(data)) or _clean_tf_message(
            getattr(exc, "message", "")
        )
        return f"corrupt or truncated {kind}: {detail}"
    if not shape.all():
        return f"image has no pixels (decoded shape {tuple(int(v) for v in shape)})"
    return None


def decode_pass(paths: Sequence[str]) -> np.ndarray:
    """Decode every file once in a parallel tf.data pass; True where decoding worked.

    Only files whose header size is within the pixel limit may come here.
    """
    ok = np.zeros(len(paths), bool)
    if not paths:
        return ok
    encoded = [os.fsencode(p) for p in paths]

    dataset = tf.data.Dataset.from_tensor_slices((np.arange(len(paths), dtype=np.int64), encoded))
    dataset = dataset.map(attempt, num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
    dataset = without_autotune(dataset.ignore_errors().batch(4096))
    for indices, shapes in dataset.as_numpy_iterator():
        ok[indices] = shapes.all(axis=1)  # a 0 x 0 image would fail later, in resize
    return ok


# --------------------------------------------------------------------------------------
# The check, and what it remembers
# --------------------------------------------------------------------------------------


def _check_pass(paths: Sequence[str], max_pixels: int) -> list[FileCheck]:
    """Check files in rounds: headers of the next round are read while this one decodes."""
    results: list[FileCheck] = []
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(read_facts, paths[:CHECK_ROUND])
        for start in range(0, len(paths), CHECK_ROUND):
            facts = pending.result()
            end = start + CHECK_ROUND
            pending = pool.submit(read_facts, paths[end : end + CHECK_ROUND])
            reasons = [
                size_problem(path, size, max_pixels)
                for path, (size, _) in zip(paths[start:end], facts, strict=True)
            ]
            decode = [j for j, reason in enumerate(reasons) if reason is None]
            ok = decode_pass([paths[start + j] for j in decode])
            failed = [start + j for j, worked in zip(decode, ok, strict=True) if not worked]
            if failed:  # a second, eager look at the failures only, to say why
                with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as eager:
                    found = eager.map(failure_reason, [paths[i] for i in failed])
                    for i, reason in zip(failed, found, strict=True):
                        reasons[i - start] = reason
            results += [
                FileCheck(reason, orientation if reason is None else 1, size)
                for reason, (size, orientation) in zip(reasons, facts, strict=True)
            ]
    return results


def _stat_key(path: str) -> tuple[int, int, int] | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return (stat.st_size, stat.st_mtime_ns, stat.st_ino)


def check_files(paths: Sequence[str], max_pixels: int = DEFAULT_MAX_PIXELS) -> list[FileCheck]:
    """Check every file once: decodable or not (and why), its size and EXIF orientation.

    The dimensions in each header are read first: an image over ``max_pixels``
    is reported and never decoded (nor remembered, so that a larger limit later
    takes it in); so is one whose size no header tells.
    """
    keys = [_stat_key(p) for p in paths]
    results: list[FileCheck | None] = [None] * len(paths)
    todo: list[int] = []
    for i, (path, key) in enumerate(zip(paths, keys, strict=True)):
        cached = _CHECK_CACHE.get(path)
        if key is not None and cached is not None and cached[0] == key:
            over = too_large(cached[1].size, max_pixels)
            results[i] = cached[1] if over is None else FileCheck(over, 1, cached[1].size)
        else:
            todo.append(i)
    checked = _check_pass([paths[i] for i in todo], max_pixels)
    with _CHECK_CACHE_LOCK:
        if len(_CHECK_CACHE) + len(todo) > _CHECK_CACHE_LIMIT:
            _CHECK_CACHE.clear()
        for i, result in zip(todo, checked, strict=True):
            results[i] = result
            over = too_large(result.size, max_pixels)
            if keys[i] is not None and over is None:
                _CHECK_CACHE[paths[i]] = (keys[i], result)  # type: ignore[assignment]
    return [r for r in results if r is not None]


def clear_check_cache() -> None:
    """Forget earlier checks (for benchmarks and tests)."""
    with _CHECK_CACHE_LOCK:
        _CHECK_CACHE.clear()


def checked_orientations(files: list[str], max_pixels: int, function: str) -> np.ndarray:
    """The EXIF orientation of each file, after checking its header (nothing is decoded).

    Raises:
        DatasetError: Some files are over ``max_pixels``, or their size cannot be
            read from their header (not an image, or a damaged one); all are
            named, with the reason.
    """
    facts = read_facts(files)
    bad = [
        (file, reason)
        for file, (dimensions, _) in zip(files, facts, strict=True)
        if (reason := size_problem(file, dimensions, max_pixels)) is not None
    ]
    if bad:
        large = any(too_large(dimensions, max_pixels) for dimensions, _ in facts)
        what = "are too large or cannot be decoded" if large else "cannot be decoded"
        raise DatasetError(
            f"{function}: {len(bad)} file(s) {what}: "
            + "; ".join(f"{shown(f)!r} ({reason})" for f, reason in bad[:5])
            + (f"; raise max_pixels (now {max_pixels:,}) to read larger images" if large else "")
        )
    return np.array([orientation for _, orientation in facts], dtype=np.int32)
