"""The EXIF orientation of a JPEG, read in Python from the start of the file.

Phones and cameras store photos sideways and record how to turn them in the
EXIF Orientation tag; every viewer applies it, so the labeller saw the turned
picture. Only the segment headers before the image data and the start of the
EXIF segment are read (usually one read of 4 KB), never the thumbnail.
:func:`xferclass.data._decode.orientation_in_graph` reads the same tag in
TensorFlow ops, for graphs.
"""

from __future__ import annotations

import struct
from typing import Any, BinaryIO

__all__ = ["EXIF_SEARCH_BYTES", "exif_orientation", "orientation_from_file"]

#: Bytes of a JPEG searched for the EXIF APP1 segment.
EXIF_SEARCH_BYTES = 1 << 16


def exif_orientation(path: str) -> int:
    """The EXIF orientation (1 to 8) of a JPEG file; 1 when absent, unreadable or not JPEG.

    Only the segment headers before the image data and the start of the EXIF
    segment are read: usually one read of 4 KB.
    """
    try:
        with open(path, "rb") as file:
            return orientation_from_file(file)
    except (OSError, struct.error, ValueError):
        return 1


def orientation_from_file(file: BinaryIO) -> int:
    """:func:`exif_orientation` of an open binary file positioned at its start."""
    head = file.read(4096)
    if head[:2] != b"\xff\xd8":
        return 1

    def window(start: int, length: int) -> bytes:
        """``length`` bytes at ``start``, read from the file past what ``head`` holds."""
        nonlocal head
        if start + length > len(head) and start + length <= EXIF_SEARCH_BYTES:
            file.seek(len(head))
            head += file.read(start + length - len(head))
        return head[start : start + length]

    position = 2
    while position < EXIF_SEARCH_BYTES:
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
