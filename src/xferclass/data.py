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

Decoding uses TensorFlow ops only, so the same function runs inside the
pipeline (in parallel) and in :func:`read_images` (for prediction on files):
the pixels a model is trained on and the pixels it predicts on are decoded the
same way.

How the unusual formats come out (each checked against Pillow in the tests):

- CMYK and YCCK JPEGs (Adobe, inverted): converted to RGB by TensorFlow's
  decoder, identical to Pillow's ``convert("RGB")``.
- 16-bit PNGs: TensorFlow keeps the high byte (``v >> 8``), within one level of
  the exact ``v / 257``; Pillow itself clips 16-bit gray to 255 instead.
- Palette BMPs (1, 2, 4 and 8 bits per pixel): TensorFlow's ``decode_bmp`` gives
  the palette *indices* of 8-bit BMPs as gray levels and rejects 1- and 4-bit
  ones, so these are decoded here, with TensorFlow ops, through the colour table.
- JPEG uses the accurate integer DCT, which matches Pillow exactly; TensorFlow's
  default fast DCT is up to about 6 levels off.
"""

from __future__ import annotations

import functools
import math
import os
import re
import struct
import threading
import warnings
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import tensorflow as tf

from ._errors import DatasetError
from ._imagesize import DEFAULT_MAX_PIXELS, header_from_file, image_header, resolve_max_pixels
from ._tables import LabelTable, is_label_table, read_label_table

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "image_paths_dataset",
    "IMAGE_EXTENSIONS",
    "SkippedFilesWarning",
    "is_image_file",
    "load_image_dataset",
    "read_images",
]

#: File extensions (lower case) that are read as images; others are ignored.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp")

#: Seed of the training/validation split when no ``seed`` is given, so that two
#: calls (``subset="training"`` then ``subset="validation"``) always agree.
_DEFAULT_SPLIT_SEED = 1337
_SUBSETS = ("training", "validation", "both")
#: How many skipped files a warning or an error message shows by name.
_SHOWN_IN_WARNING = 5
_SHOWN_IN_ERROR = 20
#: Bytes of a JPEG searched for the EXIF APP1 segment.
_EXIF_SEARCH_BYTES = 1 << 16


class SkippedFilesWarning(UserWarning):
    """Some image files in a dataset folder could not be decoded and were left out."""


def is_image_file(path: str | os.PathLike[str]) -> bool:
    """Whether a file name is one that :func:`load_image_dataset` reads.

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


# --------------------------------------------------------------------------------------
# Decoding (TensorFlow ops only; runs inside tf.data and eagerly)
# --------------------------------------------------------------------------------------


def _le_uint(header: tf.Tensor, offset: int, size: int) -> tf.Tensor:
    """Little-endian unsigned integer of ``size`` bytes at ``offset`` of a uint8 vector."""
    value = tf.constant(0, tf.int64)
    for i in range(size):
        value += tf.cast(header[offset + i], tf.int64) * (256**i)
    return value


def _bmp_header(data: tf.Tensor) -> dict[str, tf.Tensor]:
    """Fields of a BMP header (zeros where the data is shorter than the header)."""
    header = tf.io.decode_raw(tf.strings.substr(data + b"\0" * 54, 0, 54), tf.uint8)
    height = _le_uint(header, 22, 4)
    bits = _le_uint(header, 28, 2)
    colours = _le_uint(header, 46, 4)
    return {
        "pixel_offset": _le_uint(header, 10, 4),
        "dib_size": _le_uint(header, 14, 4),
        "width": _le_uint(header, 18, 4),
        "height": tf.where(height >= 2**31, height - 2**32, height),  # < 0: top-down rows
        "bits": bits,
        "compression": _le_uint(header, 30, 4),
        "colours": tf.where(
            colours == 0, tf.bitwise.left_shift(tf.constant(1, tf.int64), bits), colours
        ),
    }


def _is_palette_bmp(data: tf.Tensor) -> tf.Tensor:
    """Whether ``data`` is a plausible uncompressed BMP with 1, 2, 4 or 8 bits per pixel.

    Anything else that starts with ``BM`` goes to TensorFlow's own BMP decoder,
    which rejects what it cannot read.
    """
    h = _bmp_header(data)
    return (
        tf.equal(tf.strings.substr(data, 0, 2), b"BM")
        & (tf.strings.length(data) >= 54)
        & (h["dib_size"] >= 40)
        & tf.reduce_any(tf.equal(h["bits"], tf.constant([1, 2, 4, 8], tf.int64)))
        & (h["compression"] == 0)
        & (h["width"] > 0)
        & (h["width"] < 2**24)
        & (h["height"] != 0)
        & (tf.abs(h["height"]) < 2**24)
        & (h["colours"] <= 256)
    )


def _decode_palette_bmp(data: tf.Tensor) -> tf.Tensor:
    """Decode an uncompressed 1/2/4/8-bit BMP through its colour table.

    TensorFlow's ``decode_bmp`` returns the palette *indices* of an 8-bit BMP as if
    they were gray levels, and rejects 1- and 4-bit BMPs, so these are decoded here.
    No assertion ops are used (they would make the pipeline's functions stateful
    and every file's decoding slower): cut-short pixel data fails the reshape, and
    a pixel whose colour is missing from a cut-short table fails the gather.
    """
    h = _bmp_header(data)
    bits, width = h["bits"], h["width"]
    rows = tf.abs(h["height"])
    stride = (bits * width + 31) // 32 * 4
    table = tf.io.decode_raw(
        tf.strings.substr(data, 14 + h["dib_size"], 4 * h["colours"]), tf.uint8
    )
    table = tf.reverse(tf.reshape(table, [-1, 4])[:, :3], axis=[1])  # B, G, R, 0 -> R, G, B
    packed = tf.io.decode_raw(tf.strings.substr(data, h["pixel_offset"], stride * rows), tf.uint8)
    packed = tf.reshape(packed, tf.stack([rows, stride]))
    per_byte = 8 // bits
    shifts = tf.cast(8 - bits * (tf.range(per_byte) + 1), tf.uint8)
    mask = tf.cast(tf.bitwise.left_shift(tf.constant(1, tf.int64), bits) - 1, tf.uint8)
    indices = tf.bitwise.bitwise_and(tf.bitwise.right_shift(packed[:, :, None], shifts), mask)
    indices = tf.reshape(indices, tf.stack([rows, stride * per_byte]))[:, :width]
    image = tf.gather(table, tf.cast(indices, tf.int32))
    return tf.cond(h["height"] < 0, lambda: image, lambda: tf.reverse(image, axis=[0]))


def _decode_generic(data: tf.Tensor) -> tf.Tensor:
    image = tf.io.decode_image(data, channels=3, dtype=tf.uint8, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


# A separate, never-inlined function: when the branches of a ``tf.cond`` are
# inlined, every op of the branch not taken still passes through the executor, and
# the palette-BMP ops made each JPEG's and PNG's decode several times slower.
@tf.function(
    input_signature=[tf.TensorSpec([], tf.string)],
    autograph=False,
    experimental_attributes={"_noinline": True},
)
def _decode_bmp(data: tf.Tensor) -> tf.Tensor:
    return tf.cond(
        _is_palette_bmp(data), lambda: _decode_palette_bmp(data), lambda: _decode_generic(data)
    )


def _decode(data: tf.Tensor) -> tf.Tensor:
    """Decode encoded image bytes to a uint8 RGB image of shape (h, w, 3).

    The format is taken from the bytes, never from a file name. JPEG uses the
    accurate integer DCT (as Pillow and libjpeg's default do) rather than
    TensorFlow's faster default, which differs by a few levels per pixel; CMYK
    and YCCK JPEGs are converted to RGB by TensorFlow. Palette BMPs are decoded
    by :func:`_decode_palette_bmp`. PNG, GIF (first frame), other BMPs (and WebP)
    go through ``tf.io.decode_image``: 16-bit PNGs keep their high byte, alpha is
    dropped, gray and palette images are expanded to RGB.
    """

    def not_jpeg() -> tf.Tensor:
        return tf.cond(
            tf.equal(tf.strings.substr(data, 0, 2), b"BM"),
            lambda: _decode_bmp(data),
            lambda: _decode_generic(data),
        )

    image = tf.cond(
        tf.io.is_jpeg(data),
        lambda: tf.io.decode_jpeg(data, channels=3, dct_method="INTEGER_ACCURATE"),
        not_jpeg,
    )
    image.set_shape([None, None, 3])
    return image


def _be_uint(header: tf.Tensor, offset: int, size: int) -> tf.Tensor:
    """Big-endian unsigned integer of ``size`` bytes at ``offset`` of a uint8 vector."""
    value = tf.constant(0, tf.int64)
    for i in range(size):
        value = value * 256 + tf.cast(header[offset + i], tf.int64)
    return value


def _byte_at(data: tf.Tensor, position: tf.Tensor) -> tf.Tensor:
    """The byte at ``position`` of a string tensor, -1 past its end."""
    size = tf.cast(tf.strings.length(data), tf.int64)
    piece = tf.strings.substr(data + b"\0", tf.clip_by_value(position, 0, size), 1)
    value = tf.cast(tf.io.decode_raw(piece, tf.uint8)[0], tf.int64)
    return tf.where((position >= 0) & (position < size), value, tf.constant(-1, tf.int64))


def _gif_table_size(flags: tf.Tensor) -> tf.Tensor:
    """Bytes of the colour table that a GIF's screen or image descriptor flags announce."""
    entries = tf.bitwise.left_shift(tf.constant(2, tf.int64), tf.bitwise.bitwise_and(flags, 7))
    return tf.where(tf.bitwise.bitwise_and(flags, 0x80) > 0, 3 * entries, 0)


def _gif_frames_in_graph(data: tf.Tensor, flags: tf.Tensor) -> tf.Tensor:
    """:func:`xferclass._imagesize._gif_frame_pixels` in TensorFlow ops."""
    table = _gif_table_size(flags)
    size = tf.cast(tf.strings.length(data), tf.int64)

    def skip_sub_blocks(position: tf.Tensor) -> tf.Tensor:
        def step(p: tf.Tensor) -> tf.Tensor:
            return p + _byte_at(data, p) + 1

        def going(p: tf.Tensor) -> tf.Tensor:
            return (p < size) & (_byte_at(data, p) > 0)

        end = tf.while_loop(going, step, [position])[0]
        return end + 1  # the zero-length terminator

    def going(position: tf.Tensor, total: tf.Tensor) -> tf.Tensor:
        block = _byte_at(data, position)
        return (position < size) & ((block == 0x21) | (block == 0x2C))

    def step(position: tf.Tensor, total: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        block = _byte_at(data, position)

        def extension() -> tuple[tf.Tensor, tf.Tensor]:
            return skip_sub_blocks(position + 2), total

        def image() -> tuple[tf.Tensor, tf.Tensor]:
            descriptor = tf.io.decode_raw(
                tf.strings.substr(data + b"\0" * 10, tf.minimum(position + 1, size), 9), tf.uint8
            )
            area = _le_uint(descriptor, 4, 2) * _le_uint(descriptor, 6, 2)
            table = _gif_table_size(tf.cast(descriptor[8], tf.int64))
            return skip_sub_blocks(position + 10 + table + 1), total + area

        return tf.cond(block == 0x21, extension, image)

    start = tf.constant(13, tf.int64) + table
    return tf.while_loop(going, step, [start, tf.constant(0, tf.int64)])[1]


def _pixels_in_graph(data: tf.Tensor) -> tf.Tensor:
    """What decoding ``data`` costs in pixels, from its header, in TensorFlow ops; 0 if unknown.

    The same rules as :func:`xferclass._imagesize.image_header`, for the decode
    paths that run inside a graph (the exported ``serve_bytes`` signature).
    """
    padded = data + b"\0" * 32  # every field read below exists, if only as zeros
    head = tf.io.decode_raw(tf.strings.substr(padded, 0, 32), tf.uint8)
    start = tf.strings.substr(padded, 0, 8)

    def png() -> tf.Tensor:
        return _be_uint(head, 16, 4) * _be_uint(head, 20, 4)

    def jpeg() -> tf.Tensor:
        shape = tf.cast(tf.io.extract_jpeg_shape(data), tf.int64)
        return shape[0] * shape[1]

    def gif() -> tf.Tensor:
        screen = _le_uint(head, 6, 2) * _le_uint(head, 8, 2)
        return tf.maximum(screen, _gif_frames_in_graph(data, tf.cast(head[10], tf.int64)))

    def bmp() -> tf.Tensor:
        core = _le_uint(head, 14, 4) == 12
        width = tf.where(core, _le_uint(head, 18, 2), _le_uint(head, 18, 4))
        height = tf.where(core, _le_uint(head, 20, 2), _le_uint(head, 22, 4))
        width = tf.where(width >= 2**31, 2**32 - width, width)
        height = tf.where(height >= 2**31, 2**32 - height, height)
        return width * height

    def webp() -> tf.Tensor:
        chunk = tf.strings.substr(padded, 12, 4)
        vp8x = (_le_uint(head, 24, 3) + 1) * (_le_uint(head, 27, 3) + 1)
        bits = _le_uint(head, 21, 4)
        vp8l = (tf.bitwise.bitwise_and(bits, 0x3FFF) + 1) * (
            tf.bitwise.bitwise_and(tf.bitwise.right_shift(bits, 14), 0x3FFF) + 1
        )
        vp8 = tf.bitwise.bitwise_and(_le_uint(head, 26, 2), 0x3FFF) * tf.bitwise.bitwise_and(
            _le_uint(head, 28, 2), 0x3FFF
        )
        return tf.where(
            tf.equal(chunk, b"VP8X"),
            vp8x,
            tf.where(tf.equal(chunk, b"VP8L"), vp8l, tf.where(tf.equal(chunk, b"VP8 "), vp8, 0)),
        )

    six = tf.strings.substr(padded, 0, 6)
    is_gif = tf.equal(six, b"GIF87a") | tf.equal(six, b"GIF89a")
    is_webp = tf.equal(tf.strings.substr(padded, 0, 4), b"RIFF") & tf.equal(
        tf.strings.substr(padded, 8, 4), b"WEBP"
    )
    return tf.case(
        [
            (tf.equal(start, b"\x89PNG\r\n\x1a\n"), png),
            (tf.io.is_jpeg(data), jpeg),
            (is_gif, gif),
            (tf.equal(tf.strings.substr(padded, 0, 2), b"BM"), bmp),
            (is_webp, webp),
        ],
        default=lambda: tf.constant(0, tf.int64),
        exclusive=False,
    )


def _decode_checked(data: tf.Tensor, max_pixels: int) -> tf.Tensor:
    """:func:`_decode` behind the pixel limit, for graphs: an image over ``max_pixels``
    fails with an ``InvalidArgumentError`` naming its size, and is never decoded."""
    pixels = _pixels_in_graph(data)
    check = tf.debugging.assert_less_equal(
        pixels,
        tf.constant(max_pixels, tf.int64),
        message=f"the image has more pixels than max_pixels={max_pixels:,} (pixels, limit):",
    )
    with tf.control_dependencies([check]):
        return _decode(tf.identity(data))


def _orient(image: tf.Tensor, orientation: tf.Tensor) -> tf.Tensor:
    """Apply an EXIF orientation (1 to 8) so the image shows upright.

    Orientations 5 to 8 are stored on their side: transposed first. Then, with
    ``r = (orientation - 1) % 4``: 0 as is, 1 mirror left-right, 2 turn half way
    (mirror both ways), 3 mirror top-bottom. So 6 (shown turned 90 degrees
    clockwise) is transpose + mirror left-right, 8 is transpose + mirror top-bottom.
    """
    orientation = tf.clip_by_value(tf.cast(orientation, tf.int32), 1, 8)
    image = tf.cond(orientation >= 5, lambda: tf.transpose(image, [1, 0, 2]), lambda: image)
    r = (orientation - 1) % 4
    axes = tf.boolean_mask(tf.constant([0, 1]), tf.stack([r >= 2, (r == 1) | (r == 2)]))
    return tf.reverse(image, axes)


def _load_image(path: tf.Tensor, orientation: tf.Tensor, size: tuple[int, int]) -> tf.Tensor:
    """Read, decode, orient and resize one file: float32 (h, w, 3) in [0, 255]."""
    image = _orient(_decode(tf.io.read_file(path)), orientation)
    image = tf.image.resize(image, size, method="bilinear")
    image.set_shape([size[0], size[1], 3])
    return image


@functools.lru_cache(maxsize=64)
def _loader(size: tuple[int, int]) -> Any:
    """:func:`_load_image` for one size, traced once and shared by all pipelines."""

    @tf.function(
        input_signature=[tf.TensorSpec([], tf.string), tf.TensorSpec([], tf.int32)],
        autograph=False,
    )
    def load(path: tf.Tensor, orientation: tf.Tensor) -> tf.Tensor:
        return _load_image(path, orientation, size)

    return load


@tf.function(input_signature=[tf.TensorSpec([], tf.string)], autograph=False)
def _decode_once(data: tf.Tensor) -> tf.Tensor:
    """Shape of the decoded image (for the reason a file failed)."""
    return tf.shape(_decode(data))


@tf.function(
    input_signature=[tf.TensorSpec([], tf.int64), tf.TensorSpec([], tf.string)],
    autograph=False,
)
def _attempt(index: tf.Tensor, path: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Decode one file of the check pass: returning the shape makes the decode run."""
    return index, tf.shape(_decode(tf.io.read_file(path)))


# --------------------------------------------------------------------------------------
# EXIF orientation (pure Python, reads only the start of a JPEG)
# --------------------------------------------------------------------------------------


def _exif_orientation(path: str) -> int:
    """The EXIF orientation (1 to 8) of a JPEG file; 1 when absent, unreadable or not JPEG.

    Only the segment headers before the image data and the start of the EXIF
    segment are read: usually one read of 4 KB.
    """
    try:
        with open(path, "rb") as file:
            return _orientation_from_file(file)
    except (OSError, struct.error, ValueError):
        return 1


def _orientation_from_file(file: Any) -> int:
    head = file.read(4096)
    if head[:2] != b"\xff\xd8":
        return 1

    def window(start: int, length: int) -> bytes:
        """``length`` bytes at ``start``, read from the file past what ``head`` holds."""
        nonlocal head
        if start + length > len(head) and start + length <= _EXIF_SEARCH_BYTES:
            file.seek(len(head))
            head += file.read(start + length - len(head))
        return head[start : start + length]

    position = 2
    while position < _EXIF_SEARCH_BYTES:
        marker = window(position, 4)
        if len(marker) < 4 or marker[0] != 0xFF:
            return 1
        if marker[1] == 0xFF:  # fill byte
            position += 1
            continue
        if marker[1] in (0xDA, 0xD9):  # start of scan / end of image: no EXIF before
            return 1
        (length,) = struct.unpack(">H", marker[2:4])
        if length < 2:
            return 1
        if marker[1] == 0xE1 and window(position + 4, 6) == b"Exif\x00\x00":
            tiff, size = position + 10, length - 8

            def read(start: int, count: int, tiff: int = tiff, size: int = size) -> bytes:
                return window(tiff + start, max(0, min(count, size - start)))

            return _orientation_from_tiff(read, size)
        position += 2 + length
    return 1


def _orientation_from_tiff(read: Any, size: int) -> int:
    """The Orientation tag of IFD0 of the TIFF data in an EXIF segment.

    ``read(start, length)`` returns bytes of the TIFF data, which is ``size`` long;
    only the header and IFD0's entries are read, never the thumbnail.
    """
    header = read(0, 8)
    if len(header) < 8:
        return 1
    if header[:4] == b"II*\x00":
        order = "<"
    elif header[:4] == b"MM\x00*":
        order = ">"
    else:
        return 1
    (ifd,) = struct.unpack(order + "I", header[4:8])
    if ifd + 2 > size:
        return 1
    count_bytes = read(ifd, 2)
    if len(count_bytes) < 2:
        return 1
    (count,) = struct.unpack(order + "H", count_bytes)
    count = min(count, (size - ifd - 2) // 12)
    entries = read(ifd + 2, 12 * count)
    for i in range(0, len(entries) - 11, 12):
        tag, kind = struct.unpack(order + "HH", entries[i : i + 4])
        if tag != 0x0112:
            continue
        if kind == 3:  # SHORT
            (value,) = struct.unpack(order + "H", entries[i + 8 : i + 10])
        elif kind == 4:  # LONG
            (value,) = struct.unpack(order + "I", entries[i + 8 : i + 12])
        elif kind == 1:  # BYTE
            value = entries[i + 8]
        else:
            return 1
        return value if 1 <= value <= 8 else 1
    return 1


def _orientation_in_graph(data: tf.Tensor) -> tf.Tensor:
    """:func:`_orientation_from_file` in TensorFlow ops, for graphs (the exported
    ``serve_bytes`` signature): the EXIF orientation (1 to 8) of encoded image bytes,
    1 when absent, unreadable or not a JPEG."""
    size = tf.cast(tf.strings.length(data), tf.int64)
    padded = data + b"\0" * 16

    def uint(position: tf.Tensor, count: int, little: tf.Tensor | bool) -> tf.Tensor:
        big = small = tf.constant(0, tf.int64)
        for i in range(count):
            big = big * 256 + tf.maximum(_byte_at(data, position + i), 0)
            small = small * 256 + tf.maximum(_byte_at(data, position + count - 1 - i), 0)
        return tf.where(little, small, big)

    # Walk the segments before the image data to an APP1 "Exif" one: (position, TIFF
    # start and size), TIFF start -2 while looking and -1 when there is none.
    def looking(position: tf.Tensor, tiff: tf.Tensor, tiff_size: tf.Tensor) -> tf.Tensor:
        return tf.equal(tiff, -2) & (position < tf.minimum(size, _EXIF_SEARCH_BYTES))

    def segment(
        position: tf.Tensor, tiff: tf.Tensor, tiff_size: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        first, code = _byte_at(data, position), _byte_at(data, position + 1)
        length = uint(position + 2, 2, False)
        bad = (first != 0xFF) | (_byte_at(data, position + 3) < 0)
        fill = code == 0xFF
        stop = (code == 0xDA) | (code == 0xD9) | (length < 2)
        name = tf.strings.substr(padded, tf.minimum(position + 4, size), 6)
        exif = (code == 0xE1) & tf.equal(name, b"Exif\x00\x00")
        found = tf.where(exif, position + 10, tf.constant(-2, tf.int64))
        tiff = tf.where(
            bad | (~fill & stop), tf.constant(-1, tf.int64), tf.where(fill, tiff, found)
        )
        return tf.where(fill, position + 1, position + 2 + length), tiff, length - 8

    start = tf.constant(2, tf.int64)
    none = tf.constant(-1, tf.int64)
    tiff = tf.where(tf.io.is_jpeg(data), tf.constant(-2, tf.int64), none)
    _, tiff, tiff_size = tf.while_loop(looking, segment, [start, tiff, tf.constant(0, tf.int64)])

    def from_tiff() -> tf.Tensor:
        order = tf.strings.substr(padded, tf.clip_by_value(tiff, 0, size), 4)
        little = tf.equal(order, b"II*\x00")
        ifd = uint(tiff + 4, 4, little)
        valid = (little | tf.equal(order, b"MM\x00*")) & (ifd + 2 <= tiff_size)
        count = tf.where(
            valid, tf.minimum(uint(tiff + ifd, 2, little), (tiff_size - ifd - 2) // 12), 0
        )

        def going(k: tf.Tensor, value: tf.Tensor) -> tf.Tensor:
            return (k < count) & tf.equal(value, 0)

        def entry(k: tf.Tensor, value: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            at = tiff + ifd + 2 + 12 * k
            kind = uint(at + 2, 2, little)
            number = tf.where(
                tf.equal(kind, 3),
                uint(at + 8, 2, little),
                tf.where(
                    tf.equal(kind, 4),
                    uint(at + 8, 4, little),
                    tf.where(tf.equal(kind, 1), tf.maximum(_byte_at(data, at + 8), 0), 1),
                ),
            )
            number = tf.where((number >= 1) & (number <= 8), number, 1)
            return k + 1, tf.where(tf.equal(uint(at, 2, little), 0x0112), number, 0)

        zero = tf.constant(0, tf.int64)
        value = tf.while_loop(going, entry, [zero, zero])[1]
        return tf.where(value > 0, value, 1)

    return tf.cond(tiff >= 0, from_tiff, lambda: tf.constant(1, tf.int64))


def _orientations(paths: Sequence[str]) -> np.ndarray:
    """EXIF orientations of many files, read by a few threads."""
    result = np.ones(len(paths), np.int32)
    if not paths:
        return result
    chunk = 512

    def work(start: int) -> None:
        for i in range(start, min(start + chunk, len(paths))):
            result[i] = _exif_orientation(paths[i])

    with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 1) + 2)) as pool:
        list(pool.map(work, range(0, len(paths), chunk)))
    return result


# --------------------------------------------------------------------------------------
# Checking files
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _FileCheck:
    """What the check found out about one file; ``reason`` is None for a good image."""

    reason: str | None
    orientation: int
    size: tuple[int, int, int] | None = None  # (width, height, pixels) from the header


#: Results of earlier checks, keyed by path, valid while (size, mtime, inode) are
#: unchanged: loading the training and then the validation subset of one folder
#: checks each file once, not twice.
_CHECK_CACHE: dict[str, tuple[tuple[int, int, int], _FileCheck]] = {}
_CHECK_CACHE_LIMIT = 2_000_000
_CHECK_CACHE_LOCK = threading.Lock()

_SIGNATURES = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
)


def _stat_key(path: str) -> tuple[int, int, int] | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return (stat.st_size, stat.st_mtime_ns, stat.st_ino)


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


def _failure_reason(path: str) -> str | None:
    """Why a file cannot be used as an image, or None when it decodes after all."""
    try:
        with open(path, "rb") as file:
            data = file.read()
    except OSError as exc:
        return f"cannot be read: {exc.strerror or exc}"
    if not data:
        return "empty file (0 bytes)"
    kind = next((name for magic, name in _SIGNATURES if data.startswith(magic)), None)
    try:
        shape = _decode_once(tf.constant(data)).numpy()
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


def _decode_pass(paths: Sequence[str]) -> np.ndarray:
    """Decode every file once in a parallel tf.data pass; True where decoding worked."""
    ok = np.zeros(len(paths), bool)
    if not paths:
        return ok
    encoded = [os.fsencode(p) for p in paths]

    dataset = tf.data.Dataset.from_tensor_slices((np.arange(len(paths), dtype=np.int64), encoded))
    dataset = dataset.map(_attempt, num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
    dataset = dataset.ignore_errors().batch(4096)
    for indices, shapes in dataset.as_numpy_iterator():
        ok[indices] = shapes.all(axis=1)  # a 0 x 0 image would fail later, in resize
    return ok


def _too_large(size: tuple[int, int, int] | None, max_pixels: int) -> str | None:
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


def _header_sizes(paths: Sequence[str]) -> list[tuple[int, int, int] | None]:
    """``(width, height, pixels)`` from the header of each file.

    One thread reads them in turn: the parsing is Python code, and several
    threads would only queue for the interpreter lock.
    """
    return [image_header(path) for path in paths]


def _file_facts(path: str) -> tuple[tuple[int, int, int] | None, int]:
    """The header size and the EXIF orientation of one file, read through one open."""
    try:
        with open(path, "rb") as file:
            header = header_from_file(file)
            try:
                file.seek(0)
                orientation = _orientation_from_file(file)
            except (OSError, struct.error, ValueError):
                orientation = 1
    except OSError:
        return None, 1
    return header, orientation


def _read_facts(paths: Sequence[str]) -> list[tuple[tuple[int, int, int] | None, int]]:
    return [_file_facts(path) for path in paths]


#: Files per round of the check: the headers of the next round are read (in Python)
#: while TensorFlow decodes this round's images (without the interpreter lock).
_CHECK_ROUND = 2048


def _check_pass(
    paths: Sequence[str], max_pixels: int
) -> tuple[list[tuple[int, int, int] | None], np.ndarray, dict[int, str], np.ndarray]:
    """Headers, orientations, too-large reasons and decode results of many files."""
    sizes: list[tuple[int, int, int] | None] = [None] * len(paths)
    orientations = np.ones(len(paths), np.int32)
    too_large: dict[int, str] = {}
    ok = np.zeros(len(paths), bool)
    starts = list(range(0, len(paths), _CHECK_ROUND))
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(_read_facts, paths[:_CHECK_ROUND]) if starts else None
        for start in starts:
            assert pending is not None
            facts = pending.result()
            end = start + _CHECK_ROUND
            if end < len(paths):
                pending = pool.submit(_read_facts, paths[end : end + _CHECK_ROUND])
            decode = []
            for i, (size, orientation) in enumerate(facts, start=start):
                sizes[i], orientations[i] = size, orientation
                reason = _too_large(size, max_pixels)
                if reason is None:
                    decode.append(i)
                else:
                    too_large[i] = reason
            ok[decode] = _decode_pass([paths[i] for i in decode])
    return sizes, orientations, too_large, ok


def _check_files(paths: Sequence[str], max_pixels: int = DEFAULT_MAX_PIXELS) -> list[_FileCheck]:
    """Check every file once: decodable or not (and why), and its EXIF orientation.

    The dimensions in each header are read first: an image over ``max_pixels``
    is reported and never decoded (nor remembered, so that a larger limit later
    takes it in).
    """
    keys = [_stat_key(p) for p in paths]
    results: list[_FileCheck | None] = [None] * len(paths)
    todo: list[int] = []
    for i, (path, key) in enumerate(zip(paths, keys, strict=True)):
        cached = _CHECK_CACHE.get(path)
        if key is not None and cached is not None and cached[0] == key:
            over = _too_large(cached[1].size, max_pixels)
            results[i] = cached[1] if over is None else _FileCheck(over, 1, cached[1].size)
        else:
            todo.append(i)
    todo_paths = [paths[i] for i in todo]
    sizes, orientations, too_large, ok = _check_pass(todo_paths, max_pixels)
    failed = [j for j in range(len(todo)) if j not in too_large and not ok[j]]
    reasons: dict[int, str | None] = dict(too_large)
    if failed:  # a second, eager look at the failures only, to say why
        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
            found = pool.map(_failure_reason, [todo_paths[j] for j in failed])
            reasons.update(zip(failed, found, strict=True))
    for j, i in enumerate(todo):
        reason = reasons.get(j)
        orientation = int(orientations[j]) if reason is None else 1
        results[i] = _FileCheck(reason, orientation, sizes[j])
    with _CHECK_CACHE_LOCK:
        if len(_CHECK_CACHE) + len(todo) > _CHECK_CACHE_LIMIT:
            _CHECK_CACHE.clear()
        for j, i in enumerate(todo):
            key = keys[i]
            result = results[i]
            if key is not None and result is not None and j not in too_large:
                _CHECK_CACHE[paths[i]] = (key, result)
    return [r for r in results if r is not None]


def _clear_check_cache() -> None:
    """Forget earlier checks (for benchmarks and tests)."""
    with _CHECK_CACHE_LOCK:
        _CHECK_CACHE.clear()


# --------------------------------------------------------------------------------------
# Listing a folder
# --------------------------------------------------------------------------------------


def _shown(path: str) -> str:
    """A path as text that can always be printed (undecodable bytes replaced)."""
    return os.fsencode(path).decode("utf-8", "replace")


def _visible_entries(folder: str) -> list[os.DirEntry[str]]:
    with os.scandir(folder) as entries:
        return [entry for entry in entries if not entry.name.startswith(".")]


def _image_files(folder: str) -> list[str]:
    """Image files under a class folder, recursively, sorted; hidden entries skipped."""
    found: list[str] = []
    pending = [folder]
    while pending:
        current = pending.pop()
        try:
            entries = _visible_entries(current)
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    pending.append(entry.path)
                elif entry.is_file() and is_image_file(entry.name):
                    found.append(entry.path)
            except OSError:
                continue
    return sorted(found)


def _class_folders(root: str, class_names: list[str] | None) -> tuple[list[str], dict[str, str]]:
    """Class names in label order, and the folder of each class that has one."""
    folders = {
        entry.name: entry.path
        for entry in _visible_entries(root)
        if entry.is_dir(follow_symlinks=True)
    }
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
                f"load_image_dataset: path={_shown(root)!r} has no class subfolders{hint}"
            )
        return sorted(folders), folders
    unknown = sorted(set(folders) - set(class_names))
    if unknown:
        raise DatasetError(
            f"load_image_dataset: path={_shown(root)!r} has class folders {unknown} that are "
            f"not in class_names={class_names!r}; add them to class_names or move them out"
        )
    return list(class_names), folders


# --------------------------------------------------------------------------------------
# Argument checks
# --------------------------------------------------------------------------------------


def _as_size(size: Any, function: str) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        pair: tuple[Any, ...] = (int(size), int(size))
    elif isinstance(size, Sequence) and not isinstance(size, (str, bytes)) and len(size) == 2:
        pair = tuple(size)
    else:
        pair = ()
    if len(pair) != 2 or not all(
        isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 1 for v in pair
    ):
        raise DatasetError(
            f"{function}: size={size!r} is not an image size; pass a positive int or a "
            "(height, width) pair of positive ints"
        )
    return (int(pair[0]), int(pair[1]))


def _check_class_names(class_names: Any, *, folders: bool = True) -> list[str] | None:
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


def _check_arguments(
    batch_size: Any, validation_split: Any, subset: Any, seed: Any
) -> float | None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)):
        raise DatasetError(f"load_image_dataset: batch_size={batch_size!r} must be an int >= 1")
    if batch_size < 1:
        raise DatasetError(f"load_image_dataset: batch_size={batch_size!r} must be >= 1")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))):
        raise DatasetError(f"load_image_dataset: seed={seed!r} must be an int or None")
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


# --------------------------------------------------------------------------------------
# Building the pipeline
# --------------------------------------------------------------------------------------


def _validation_mask(
    labels: np.ndarray, num_classes: int, fraction: float, seed: int
) -> np.ndarray:
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


def _build(
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
    def unshuffled() -> tf.data.Dataset:
        return _build(
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

    loader = _loader(size)

    @tf.autograph.experimental.do_not_convert
    def load(path: tf.Tensor, label: tf.Tensor, orientation: tf.Tensor) -> Any:
        return loader(path, orientation), label if multi_hot else tf.one_hot(label, num_classes)

    dataset = dataset.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    dataset = dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)
    dataset.class_names = list(class_names)
    dataset.file_paths = list(paths)
    dataset.labels = np.asarray(labels, dtype=np.float32 if multi_hot else np.int64)
    dataset.multi_label = multi_hot
    dataset.skipped = list(skipped)
    dataset.image_size = size
    dataset.batch_size = batch_size
    dataset.shuffled = bool(shuffle)
    # The same files in a fixed order: xferclass.fit runs a frozen backbone over
    # them once and reshuffles the cached features every epoch instead.
    dataset.unshuffled = unshuffled
    return dataset


def _raise_strict(source: str, skipped: list[tuple[str, str]], total: int) -> None:
    if not skipped:
        return
    listed = "\n".join(f"  {_shown(p)}: {reason}" for p, reason in skipped[:_SHOWN_IN_ERROR])
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
    shown = "; ".join(
        f"{os.path.basename(_shown(p))} ({reason})" for p, reason in skipped[:_SHOWN_IN_WARNING]
    )
    more = len(skipped) - _SHOWN_IN_WARNING
    warnings.warn(
        f"Skipped {len(skipped)} of {total} image files of {source} that cannot be "
        f"used: {shown}" + (f"; and {more} more" if more > 0 else "") + ". The full list "
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
        ``batch_size`` and ``shuffled``.

    Raises:
        DatasetError: When ``path`` is missing, not a folder, has no class
            subfolders, only one class, or a class without readable images; when
            ``class_names`` does not match the folders or the table's labels; when
            a table column is missing or ambiguous (the message lists the
            columns); when an argument is out of
            range; with ``strict=True`` when some file cannot be decoded.

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
    image_size = _as_size(size, "load_image_dataset")
    fraction = _check_arguments(batch_size, validation_split, subset, seed)
    limit = resolve_max_pixels(max_pixels, "load_image_dataset")
    table_options = {
        "root": root, "path_column": path_column, "label_column": label_column,
        "split_column": split_column, "split": split, "label_separator": label_separator,
    }  # fmt: skip
    multi_label = False
    if is_label_table(path):
        names = _check_class_names(class_names, folders=False)
        table = read_label_table(path, **table_options)  # type: ignore[arg-type]
        source, multi_label = table.source, table.multi_label
        names = _table_classes(table, names, class_names is not None)
        candidates = table.paths
        index = {name: j for j, name in enumerate(names)}
        candidate_labels: Any = (
            np.array([[name in row for name in names] for row in table.labels], np.float32).reshape(
                len(candidates), len(names)
            )
            if multi_label
            else [index[row[0]] for row in table.labels]
        )
        unusable = table.unusable
    else:
        given = sorted(k for k, v in table_options.items() if v is not None)
        if given:
            raise DatasetError(
                f"load_image_dataset: {', '.join(given)} apply to label tables (a .csv file, "
                f"a DataFrame or (path, label) pairs), not to the folder path={path!r}"
            )
        names = _check_class_names(class_names)
        source, names, candidates, candidate_labels = _folder_candidates(path, names)
        unusable = []
    checks = _check_files(candidates, limit)
    skipped = unusable + [
        (p, c.reason) for p, c in zip(candidates, checks, strict=True) if c.reason is not None
    ]
    if strict:
        _raise_strict(source, skipped, len(candidates) + len(unusable))

    keep = [i for i, c in enumerate(checks) if c.reason is None]
    paths = [candidates[i] for i in keep]
    if multi_label:
        labels = np.asarray(candidate_labels, np.float32)[keep].reshape(len(keep), len(names))
        counts = labels.sum(axis=0)
    else:
        labels = np.array([candidate_labels[i] for i in keep], dtype=np.int64)
        counts = np.bincount(labels, minlength=len(names))
    if class_names is None:
        empty = [name for name, count in zip(names, counts, strict=True) if count == 0]
        if empty:
            given_labels = np.asarray(candidate_labels)
            columns = [names.index(n) for n in empty]
            members = (
                given_labels[:, columns].any(axis=1)
                if multi_label
                else np.isin(given_labels, columns)
            )
            bad = int(np.sum(members))
            detail = f" ({bad} image files in them cannot be used)" if bad else ""
            kind = "classes" if multi_label or unusable or is_label_table(path) else "class folders"
            raise DatasetError(
                f"load_image_dataset: {kind} {empty} of {source} hold no readable images "
                f"(.jpg, .jpeg, .png, .gif, .bmp){detail}; add images, remove them, or pin "
                "class_names to allow empty classes"
            )
    if not paths:
        raise DatasetError(
            f"load_image_dataset: {source} holds no readable images in the folders of "
            f"class_names={names!r}"
        )
    _warn_skipped(source, skipped, len(candidates) + len(unusable))

    def build(indices: np.ndarray) -> tf.data.Dataset:
        return _build(
            [paths[i] for i in indices],
            labels[indices],
            np.array([checks[keep[i]].orientation for i in indices], dtype=np.int32),
            class_names=names,
            size=image_size,
            batch_size=int(batch_size),
            shuffle=bool(shuffle),
            seed=None if seed is None else int(seed),
            skipped=skipped,
        )

    if fraction is None:
        return build(np.arange(len(paths)))
    split_seed = _DEFAULT_SPLIT_SEED if seed is None else int(seed)
    validation = _validation_mask(_strata(labels), len(names) + 1, fraction, split_seed)
    if not validation.any():
        raise DatasetError(
            f"load_image_dataset: validation_split={validation_split!r} leaves no image for "
            f"validation out of {len(paths)}; use a larger fraction or more images"
        )
    training_set = build(np.flatnonzero(~validation))
    validation_set = build(np.flatnonzero(validation))
    if subset == "training":
        return training_set
    if subset == "validation":
        return validation_set
    return training_set, validation_set


def _folder_candidates(
    path: Any, names: list[str] | None
) -> tuple[str, list[str], list[str], list[int]]:
    """``(source, class names, image files, their labels)`` of a folder of class subfolders."""
    if not isinstance(path, (str, os.PathLike)):
        raise DatasetError(
            f"load_image_dataset: path={path!r} must be a folder path, a .csv file, a "
            "DataFrame or a list of (path, label) pairs"
        )
    root = os.fspath(path)
    if not os.path.exists(root):
        raise DatasetError(f"load_image_dataset: path={_shown(root)!r} does not exist")
    if not os.path.isdir(root):
        raise DatasetError(
            f"load_image_dataset: path={_shown(root)!r} is a file, not a folder of class "
            "subfolders nor a label table (.csv or .tsv)"
        )
    names, folders = _class_folders(root, names)
    if len(names) < 2:
        raise DatasetError(
            f"load_image_dataset: path={_shown(root)!r} has only one class folder "
            f"({names[0]!r}); a classifier needs at least two classes"
        )
    candidates: list[str] = []
    candidate_labels: list[int] = []
    for label, name in enumerate(names):
        files = _image_files(folders[name]) if name in folders else []
        candidates += files
        candidate_labels += [label] * len(files)
    return f"path={_shown(root)!r}", names, candidates, candidate_labels


def _table_classes(table: LabelTable, names: list[str] | None, pinned: bool) -> list[str]:
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


def _strata(labels: np.ndarray) -> np.ndarray:
    """The group each file is split in: its class, or for multi-hot labels its rarest label.

    Files of a multi-label table without any label form one more group.
    """
    if labels.ndim == 1:
        return labels
    counts = labels.sum(axis=0)
    rarity = np.where(labels > 0, counts[None, :], np.inf)
    return np.where(labels.any(axis=1), np.argmin(rarity, axis=1), labels.shape[1])


def image_paths_dataset(
    paths: Sequence[str | os.PathLike[str]],
    size: int | tuple[int, int],
    *,
    batch_size: int = 32,
    max_pixels: int | None = None,
) -> tf.data.Dataset:
    """A tf.data pipeline of image batches read from ``paths``, for prediction.

    Every file is checked first (the same check as :func:`load_image_dataset`),
    so a bad file is reported by name before any work starts. Decoding, EXIF
    orientation and resizing are the training pipeline's, in parallel and
    prefetched, in the order of ``paths``.

    An image whose header promises more than ``max_pixels`` pixels (see
    :func:`load_image_dataset`) is an error, and nothing is decoded.

    Raises:
        DatasetError: A file is missing, cannot be decoded or is over
            ``max_pixels``; all such files are named, with the reason.

    Examples:
        >>> batches = image_paths_dataset(["cat.jpg", "dog.png"], 224)  # doctest: +SKIP
    """
    image_size = _as_size(size, "image_paths_dataset")
    limit = resolve_max_pixels(max_pixels, "images")
    files = [os.fspath(p) for p in paths]
    missing = [f for f in files if not os.path.isfile(f)]
    if missing:
        raise DatasetError(
            f"images: {len(missing)} path(s) do not exist or are not files: "
            + ", ".join(repr(_shown(f)) for f in missing[:5])
        )
    checks = _check_files(files, limit)
    bad = [(f, c.reason) for f, c in zip(files, checks) if c.reason is not None]
    if bad:
        large = sum(1 for f, c in zip(files, checks) if _too_large(c.size, limit))
        what = "are too large or cannot be decoded" if large else "cannot be decoded"
        raise DatasetError(
            f"images: {len(bad)} file(s) {what}: "
            + "; ".join(f"{_shown(f)!r} ({reason})" for f, reason in bad[:5])
            + (f"; raise max_pixels (now {limit:,}) to read larger images" if large else "")
        )
    orientations = np.array([c.orientation for c in checks], dtype=np.int32)
    loader = _loader(image_size)
    dataset = tf.data.Dataset.from_tensor_slices(
        (tf.constant([os.fsencode(f) for f in files], tf.string), tf.constant(orientations))
    )
    dataset = dataset.map(loader, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


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
            ``max_pixels`` (naming it and its size), or ``size`` is invalid.

    Examples:
        >>> images = read_images(["cat.jpg", "dog.png"], 224)  # doctest: +SKIP
        >>> images.shape  # doctest: +SKIP
        (2, 224, 224, 3)
    """
    image_size = _as_size(size, "read_images")
    limit = resolve_max_pixels(max_pixels, "read_images")
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    if isinstance(paths, bytes) or not isinstance(paths, Iterable):
        raise DatasetError(f"read_images: paths={paths!r} must be a path or a list of paths")
    files = [os.fspath(p) for p in paths]
    for file in files:
        if not os.path.isfile(file):
            raise DatasetError(f"read_images: {_shown(file)!r} does not exist or is not a file")
    if not files:
        return np.zeros((0, *image_size, 3), np.float32)
    for file, dimensions in zip(files, _header_sizes(files), strict=True):
        over = _too_large(dimensions, limit)
        if over is not None:
            raise DatasetError(
                f"read_images: {_shown(file)!r}: {over}; pass a larger max_pixels to read it"
            )
    load = _loader(image_size)
    orientations = _orientations(files)

    def one(i: int) -> np.ndarray:
        try:
            return load(tf.constant(os.fsencode(files[i])), tf.constant(orientations[i])).numpy()
        except tf.errors.OpError:
            reason = _failure_reason(files[i]) or "decoding failed"
            raise DatasetError(
                f"read_images: cannot decode {_shown(files[i])!r}: {reason}"
            ) from None

    # Each call runs the traced pipeline function; TensorFlow releases the GIL, so a
    # few threads decode in parallel, and a failure names its file.
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1, len(files))) as pool:
        return np.stack(list(pool.map(one, range(len(files))))).astype(np.float32, copy=False)
