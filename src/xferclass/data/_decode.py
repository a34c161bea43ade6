"""One TensorFlow image decode, shared by training, prediction and export.

Decoding, turning upright by the EXIF orientation, the pixel limit and resizing
are TensorFlow ops only, so the same functions run inside the ``tf.data``
pipeline of :func:`xferclass.load_image_dataset` (in parallel), in
:func:`xferclass.read_images` and :func:`xferclass.predict` (on files), and in
the ``serve_bytes`` signature of an exported model (on request bytes): the
pixels a model is trained on and the pixels it predicts on are decoded the
same way.

- JPEG uses the accurate integer DCT, which matches Pillow exactly;
  TensorFlow's default fast DCT is up to about 6 levels off. CMYK and YCCK
  JPEGs are converted to RGB by TensorFlow's decoder.
- 16-bit PNGs keep their high byte (``v >> 8``), within one level of ``v / 257``.
- Palette BMPs (1, 2, 4 and 8 bits per pixel) are decoded here, through the
  colour table: TensorFlow's ``decode_bmp`` gives the palette *indices* of
  8-bit BMPs as gray levels and rejects 1- and 4-bit ones.
- :func:`header_in_graph` reads an image's size from its header, as
  :mod:`xferclass.data._imagesize` does in Python, and :func:`decode_checked`
  refuses to decode an image over the pixel limit, or one whose size no
  header tells.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import tensorflow as tf

from ._exif import EXIF_SEARCH_BYTES

__all__ = [
    "attempt",
    "bytes_loader",
    "decode_checked",
    "decode_image",
    "decoded_shape",
    "header_in_graph",
    "loader",
    "orient",
    "orientation_in_graph",
    "pixels_in_graph",
    "without_autotune",
]


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


def decode_image(data: tf.Tensor) -> tf.Tensor:
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
    """:func:`xferclass.data._imagesize._gif_frame_pixels` in TensorFlow ops."""
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


def header_in_graph(data: tf.Tensor) -> tf.Tensor:
    """``[width, height, pixels]`` of encoded image bytes from the header, in TensorFlow ops.

    The same rules as :func:`xferclass.data._imagesize.image_header` (``pixels`` is
    what decoding costs: for a GIF the larger of the screen and the sum of its
    frames), all zeros when the format is not recognised. A JPEG's frame header
    is found by libjpeg, however far into the file it is.
    """
    padded = data + b"\0" * 32  # every field read below exists, if only as zeros
    head = tf.io.decode_raw(tf.strings.substr(padded, 0, 32), tf.uint8)

    def sized(width: tf.Tensor, height: tf.Tensor, pixels: Any = None) -> tf.Tensor:
        if pixels is None:
            # Each side is clamped to 2**31 (beyond what any format allows) so that the
            # product of two 4-byte sides cannot wrap around int64 to a negative count,
            # which would pass the pixel limit.
            pixels = tf.minimum(width, 2**31) * tf.minimum(height, 2**31)
        return tf.stack([width, height, pixels])

    def png() -> tf.Tensor:
        return sized(_be_uint(head, 16, 4), _be_uint(head, 20, 4))

    def jpeg() -> tf.Tensor:
        shape = tf.cast(tf.io.extract_jpeg_shape(data), tf.int64)
        return sized(shape[1], shape[0])

    def gif() -> tf.Tensor:
        width, height = _le_uint(head, 6, 2), _le_uint(head, 8, 2)
        frames = _gif_frames_in_graph(data, tf.cast(head[10], tf.int64))
        return sized(width, height, tf.maximum(width * height, frames))

    def bmp() -> tf.Tensor:
        core = _le_uint(head, 14, 4) == 12
        width = tf.where(core, _le_uint(head, 18, 2), _le_uint(head, 18, 4))
        height = tf.where(core, _le_uint(head, 20, 2), _le_uint(head, 22, 4))
        width = tf.where(width >= 2**31, 2**32 - width, width)
        height = tf.where(height >= 2**31, 2**32 - height, height)
        return sized(width, height)

    is_gif = tf.reduce_any(tf.equal(tf.strings.substr(padded, 0, 6), [b"GIF87a", b"GIF89a"]))
    is_webp = tf.equal(tf.strings.substr(padded, 0, 4), b"RIFF") & tf.equal(
        tf.strings.substr(padded, 8, 4), b"WEBP"
    )
    return tf.case(
        [
            (tf.equal(tf.strings.substr(padded, 0, 8), b"\x89PNG\r\n\x1a\n"), png),
            (tf.io.is_jpeg(data), jpeg),
            (is_gif, gif),
            (tf.equal(tf.strings.substr(padded, 0, 2), b"BM"), bmp),
            (is_webp, lambda: _webp_size(padded, head)),
        ],
        default=lambda: tf.zeros([3], tf.int64),
        exclusive=False,
    )


def _webp_size(padded: tf.Tensor, head: tf.Tensor) -> tf.Tensor:
    """``[width, height, pixels]`` of a WebP header (VP8X, VP8L or VP8); zeros for others."""
    chunk = tf.strings.substr(padded, 12, 4)
    bits = _le_uint(head, 21, 4)
    mask = tf.constant(0x3FFF, tf.int64)
    sizes = tf.stack(
        [
            [_le_uint(head, 24, 3) + 1, _le_uint(head, 27, 3) + 1],  # VP8X
            [
                tf.bitwise.bitwise_and(bits, mask) + 1,
                tf.bitwise.bitwise_and(tf.bitwise.right_shift(bits, 14), mask) + 1,
            ],  # VP8L
            [
                tf.bitwise.bitwise_and(_le_uint(head, 26, 2), mask),
                tf.bitwise.bitwise_and(_le_uint(head, 28, 2), mask),
            ],  # VP8
            [tf.constant(0, tf.int64), tf.constant(0, tf.int64)],
        ]
    )
    kind = tf.argmax(tf.concat([tf.equal(chunk, [b"VP8X", b"VP8L", b"VP8 "]), [True]], 0))
    width, height = sizes[kind][0], sizes[kind][1]
    return tf.stack([width, height, width * height])


def pixels_in_graph(data: tf.Tensor) -> tf.Tensor:
    """What decoding ``data`` costs in pixels (:func:`header_in_graph`); 0 if unknown."""
    return header_in_graph(data)[2]


def decode_checked(data: tf.Tensor, max_pixels: int) -> tf.Tensor:
    """:func:`decode_image` behind the pixel limit, for graphs.

    An image over ``max_pixels``, or one whose size no header tells (pixels 0),
    fails with an ``InvalidArgumentError`` that gives its pixels, and is never decoded.
    """
    pixels = pixels_in_graph(data)
    check = tf.debugging.Assert(
        (pixels > 0) & (pixels <= max_pixels),
        [
            f"the image has more pixels than max_pixels={max_pixels:,}, or its header "
            "tells no size (pixels, 0 when unknown):",
            pixels,
        ],
    )
    with tf.control_dependencies([check]):
        return decode_image(tf.identity(data))


def orient(image: tf.Tensor, orientation: tf.Tensor) -> tf.Tensor:
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


def _resize(image: tf.Tensor, size: tuple[int, int]) -> tf.Tensor:
    """Bilinear resize to ``size``: float32 (h, w, 3) in [0, 255]."""
    image = tf.image.resize(image, size, method="bilinear")
    image.set_shape([size[0], size[1], 3])
    return image


def load_image(path: tf.Tensor, orientation: tf.Tensor, size: tuple[int, int]) -> tf.Tensor:
    """Read, decode, orient and resize one checked file: float32 (h, w, 3) in [0, 255].

    The file's header was checked against the pixel limit before it comes here.
    """
    return _resize(orient(decode_image(tf.io.read_file(path)), orientation), size)


def bytes_loader(size: tuple[int, int], max_pixels: int) -> Callable[[tf.Tensor], tf.Tensor]:
    """Encoded bytes to float32 (h, w, 3) in [0, 255], for graphs (``serve_bytes``).

    The bytes are decoded behind the pixel limit (:func:`decode_checked`),
    turned upright by the EXIF orientation they carry, and resized, as
    :func:`load_image` does with a checked file.
    """

    def load(data: tf.Tensor) -> tf.Tensor:
        image = orient(decode_checked(data, max_pixels), orientation_in_graph(data))
        return _resize(image, size)

    return load


@functools.lru_cache(maxsize=64)
def loader(size: tuple[int, int]) -> Any:
    """:func:`load_image` for one size, traced once and shared by all pipelines."""

    @tf.function(
        input_signature=[tf.TensorSpec([], tf.string), tf.TensorSpec([], tf.int32)],
        autograph=False,
    )
    def load(path: tf.Tensor, orientation: tf.Tensor) -> tf.Tensor:
        return load_image(path, orientation, size)

    return load


@tf.function(
    input_signature=[tf.TensorSpec([], tf.string), tf.TensorSpec([], tf.int64)],
    autograph=False,
)
def decoded_shape(data: tf.Tensor, max_pixels: tf.Tensor) -> tf.Tensor:
    """Shape of the decoded image (for the reason a file failed), behind the pixel limit.

    Fails with an ``InvalidArgumentError`` rather than decode an image over
    ``max_pixels`` or one whose size no header tells.
    """
    pixels = pixels_in_graph(data)
    check = tf.debugging.Assert(
        (pixels > 0) & (pixels <= max_pixels), ["image size unknown or over max_pixels", pixels]
    )
    with tf.control_dependencies([check]):
        return tf.shape(decode_image(tf.identity(data)))


@tf.function(
    input_signature=[tf.TensorSpec([], tf.int64), tf.TensorSpec([], tf.string)],
    autograph=False,
)
def attempt(index: tf.Tensor, path: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Decode one file of the check pass: returning the shape makes the decode run."""
    return index, tf.shape(decode_image(tf.io.read_file(path)))


def orientation_in_graph(data: tf.Tensor) -> tf.Tensor:
    """:func:`xferclass.data._exif.orientation_from_file` in TensorFlow ops, for graphs (the
    exported ``serve_bytes`` signature): the EXIF orientation (1 to 8) of encoded image bytes,
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
        return tf.equal(tiff, -2) & (position < tf.minimum(size, EXIF_SEARCH_BYTES))

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


def without_autotune(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """``dataset`` with tf.data's autotuning off, for a pass that runs to its end.

    With autotuning on, tf.data (2.21) runs a model thread that sleeps for a period
    doubling from 10 ms to a minute, and deleting an iterator waits for that sleep to
    end. A finished pass then returns only at the next of 20.5, 41, 82 ... s from its
    start: a caching pass whose batches took 22.8 s ended after 41.1 s
    (``benchmarks/bench_engine.py --scaling``). Off, a parallel ``map`` at ``AUTOTUNE``
    runs as many calls as there are cores (up to 16), which decoded as fast or faster.
    """
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.with_options(options)
