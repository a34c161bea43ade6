"""Image dimensions read from a file's header, before anything is decoded.

A 20000 x 20000 PNG of one colour is a few hundred kilobytes on disk and 1.2 GB
once decoded; TensorFlow's decoders have no limit. Reading the width and height
from the header costs one small read, so every decode path of xferclass looks
here first and refuses images over ``max_pixels`` without decoding them. The
default is where Pillow refuses them: 178,956,970 pixels, twice
``PIL.Image.MAX_IMAGE_PIXELS`` (Pillow warns from that value and raises
``DecompressionBombError`` from twice it).

Formats: PNG (IHDR), JPEG (the SOF marker, found by walking the segments the
way libjpeg does), GIF, BMP (BITMAPCOREHEADER and later) and WebP (VP8, VP8L,
VP8X). Anything else gives ``None``: the decoder then fails on it as before.

GIF needs more than its header: TensorFlow's decoder (giflib's ``DGifSlurp``)
reads every frame into a buffer of the frame's own size, whatever the logical
screen says, so a GIF with a 10x10 screen can hold a 60000x60000 frame. The
blocks of a GIF are walked (its pixel data is skipped, not decoded) and what it
costs to decode is the larger of the screen and the sum of its frames' areas.
"""

from __future__ import annotations

import io
import os
import struct
from typing import Any, BinaryIO

from ..core._errors import InvalidArgumentError

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "MAX_PIXELS_ENV",
    "header_from_file",
    "image_dimensions",
    "image_header",
    "resolve_max_pixels",
]

#: Where Pillow refuses to open an image (``DecompressionBombError``): twice its
#: ``Image.MAX_IMAGE_PIXELS`` (89,478,485, where it only warns).
DEFAULT_MAX_PIXELS = 178_956_970
#: Environment variable that replaces :data:`DEFAULT_MAX_PIXELS` when set.
MAX_PIXELS_ENV = "XFERCLASS_MAX_PIXELS"

#: SOF markers carry the frame size; C4 (DHT), C8 (JPG) and CC (DAC) do not.
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
#: Markers that stand alone, without a length field.
_STANDALONE = frozenset([0x01, *range(0xD0, 0xD8)])
#: How far into a JPEG the SOF marker is looked for (EXIF and ICC segments come first).
_JPEG_SEARCH_BYTES = 16 << 20


def resolve_max_pixels(max_pixels: Any, function: str) -> int:
    """The pixel limit in force: ``max_pixels``, else the environment variable, else Pillow's.

    Raises:
        InvalidArgumentError: ``max_pixels`` (or the environment variable) is not
            a positive int.
    """
    source = f"max_pixels={max_pixels!r}"
    if max_pixels is None:
        text = os.environ.get(MAX_PIXELS_ENV, "").strip()
        if not text:
            return DEFAULT_MAX_PIXELS
        source = f"{MAX_PIXELS_ENV}={text!r}"
        try:
            max_pixels = int(text.replace("_", ""))
        except ValueError:
            max_pixels = None
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 1:
        raise InvalidArgumentError(
            f"{function}: {source} must be a positive int, the largest number of pixels "
            f"(width x height) an image may have; the default is {DEFAULT_MAX_PIXELS:,}"
        )
    return int(max_pixels)


def image_header(source: str | os.PathLike[str] | bytes) -> tuple[int, int, int] | None:
    """``(width, height, pixels)`` of an image file or of encoded bytes, without decoding.

    ``pixels`` is what decoding costs: ``width * height``, or for a GIF the
    larger of that and the sum of its frames' areas. None when the format is not
    recognised or the header is cut short or unreadable.
    """
    if isinstance(source, bytes):
        return header_from_file(io.BytesIO(source))
    try:
        with open(source, "rb") as file:
            return header_from_file(file)
    except OSError:
        return None


def header_from_file(file: BinaryIO) -> tuple[int, int, int] | None:
    """:func:`image_header` of an open binary file, read from its start."""
    try:
        file.seek(0)
        return _header(file)
    except (OSError, struct.error, ValueError):
        return None


def image_dimensions(source: str | os.PathLike[str] | bytes) -> tuple[int, int] | None:
    """``(width, height)`` from the header of an image file or of encoded bytes.

    Returns None when the format is not recognised or the header is cut short
    or unreadable; the file is never decoded.
    """
    found = image_header(source)
    return None if found is None else (found[0], found[1])


def _header(file: BinaryIO) -> tuple[int, int, int] | None:
    head = file.read(32)
    if head[:6] in (b"GIF87a", b"GIF89a") and len(head) >= 13:
        width, height = struct.unpack("<HH", head[6:10])
        frames = _gif_frame_pixels(file, head[10])
        return width, height, max(width * height, frames)
    size = _dimensions(file, head)
    return None if size is None else (size[0], size[1], size[0] * size[1])


def _skip_sub_blocks(file: BinaryIO) -> bool:
    """Skip a chain of GIF data sub-blocks; False when the file ends first."""
    while True:
        length = file.read(1)
        if not length:
            return False
        if length[0] == 0:
            return True
        file.seek(length[0], os.SEEK_CUR)


def _gif_frame_pixels(file: BinaryIO, flags: int) -> int:
    """The sum of the areas of a GIF's frames, read from their image descriptors."""
    position = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
    file.seek(position)
    total = 0
    while True:
        block = file.read(1)
        if block == b"\x21":  # extension: label, then sub-blocks
            if not file.read(1) or not _skip_sub_blocks(file):
                return total
        elif block == b"\x2c":  # image descriptor
            descriptor = file.read(9)
            if len(descriptor) < 9:
                return total
            _, _, width, height, local = struct.unpack("<HHHHB", descriptor)
            total += width * height
            if local & 0x80:
                file.seek(3 << ((local & 7) + 1), os.SEEK_CUR)
            if not file.read(1) or not _skip_sub_blocks(file):  # LZW code size, then data
                return total
        else:  # trailer, end of file or junk: giflib stops here too
            return total


def _dimensions(file: BinaryIO, head: bytes) -> tuple[int, int] | None:
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        if head[12:16] != b"IHDR":
            return None
        width, height = struct.unpack(">II", head[16:24])
        return width, height
    if head[:2] == b"BM":
        head += file.read(26 - len(head)) if len(head) < 26 else b""
        (dib_size,) = struct.unpack("<I", head[14:18])
        if dib_size == 12:  # OS/2 BITMAPCOREHEADER
            width, height = struct.unpack("<HH", head[18:22])
        else:
            width, height = struct.unpack("<ii", head[18:26])
        return abs(width), abs(height)
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return _webp_dimensions(head)
    if head[:3] == b"\xff\xd8\xff":
        file.seek(2)
        return _jpeg_dimensions(file)
    return None


def _webp_dimensions(head: bytes) -> tuple[int, int] | None:
    chunk = head[12:16]
    if chunk == b"VP8X":
        width = int.from_bytes(head[24:27], "little") + 1
        height = int.from_bytes(head[27:30], "little") + 1
        return width, height
    if chunk == b"VP8L":
        (bits,) = struct.unpack("<I", head[21:25])
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8 ":
        width, height = struct.unpack("<HH", head[26:30])
        return width & 0x3FFF, height & 0x3FFF
    return None


def _jpeg_dimensions(file: BinaryIO) -> tuple[int, int] | None:
    """Walk the JPEG segments to the first SOF marker, skipping bytes as libjpeg does.

    libjpeg tolerates junk between segments (it scans for the next ``0xFF``), so
    this does too: a header it would read is never missed here.
    """
    position = 2
    while position < _JPEG_SEARCH_BYTES:
        file.seek(position)
        byte = file.read(1)
        if not byte:
            return None
        if byte != b"\xff":  # junk between segments: look for the next marker
            position += 1
            continue
        marker = file.read(1)
        if not marker:
            return None
        code = marker[0]
        if code in (0xFF, 0x00):  # fill byte, or a stuffed zero
            position += 1
            continue
        if code in _STANDALONE:
            position += 2
            continue
        if code in (0xD9, 0xDA):  # end of image, start of scan: no frame header before
            return None
        length_bytes = file.read(2)
        if len(length_bytes) < 2:
            return None
        (length,) = struct.unpack(">H", length_bytes)
        if code in _SOF_MARKERS:
            frame = file.read(5)
            if len(frame) < 5:
                return None
            height, width = struct.unpack(">HH", frame[1:5])
            return width, height
        if length < 2:
            return None
        position += 2 + length
    return None
