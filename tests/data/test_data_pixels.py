"""The pixel limit: image sizes read from headers, and images too large to decode."""

from __future__ import annotations

import functools
import io
import json
import os
import struct
import subprocess
import sys
import textwrap
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

import xferclass
from conftest import make_shape_dataset
from xferclass import DatasetError, SkippedFilesWarning, load_image_dataset, read_images
from xferclass.data._imagesize import (
    DEFAULT_MAX_PIXELS,
    MAX_PIXELS_ENV,
    image_dimensions,
    image_header,
    resolve_max_pixels,
)

# ------------------------------------------------------------------------------------
# bombs: small files that promise a huge image
# ------------------------------------------------------------------------------------


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(path: Path, side: int = 20000) -> Path:
    """A valid all-black grayscale PNG of ``side`` x ``side``: about 400 KB for 20000."""
    compressor = zlib.compressobj(9)
    row = b"\0" * (side + 1)  # filter byte 0, then the pixels
    parts = [compressor.compress(row * 1000) for _ in range(side // 1000)]
    parts += [compressor.compress(row * (side % 1000)), compressor.flush()]
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", b"".join(parts))
        + _chunk(b"IEND", b"")
    )
    return path


def jpeg_claiming(path: Path, width: int, height: int) -> Path:
    """A small real JPEG whose SOF marker is patched to claim ``width`` x ``height``."""
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 30, 30)).save(buffer, "JPEG")
    data = bytearray(buffer.getvalue())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    path.write_bytes(bytes(data))
    return path


@pytest.fixture(scope="module")
def bomb_png(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return png_bomb(tmp_path_factory.mktemp("bomb") / "huge.png")


# ------------------------------------------------------------------------------------
# header sizes, against Pillow
# ------------------------------------------------------------------------------------


def _encoded(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


CASES = [
    ("PNG", "RGB", {}), ("PNG", "L", {}), ("PNG", "P", {}), ("PNG", "RGBA", {}),
    ("PNG", "I;16", {}), ("JPEG", "RGB", {}), ("JPEG", "L", {}),
    ("JPEG", "RGB", {"progressive": True}), ("JPEG", "CMYK", {}),
    ("JPEG", "RGB", {"exif": b"Exif\x00\x00" + b"MM\x00*\x00\x00\x00\x08" + b"\x00" * 6000}),
    ("GIF", "P", {}), ("BMP", "RGB", {}), ("BMP", "P", {}), ("BMP", "1", {}),
    ("WEBP", "RGB", {}), ("WEBP", "RGB", {"lossless": True}), ("WEBP", "RGBA", {}),
]  # fmt: skip


@pytest.mark.parametrize("fmt,mode,options", CASES)
@pytest.mark.parametrize("size", [(1, 1), (37, 5), (300, 211)])
def test_header_sizes_match_pillow(fmt: str, mode: str, options: dict, size: tuple) -> None:
    data = _encoded(Image.new(mode, size), fmt, **options)
    with Image.open(io.BytesIO(data)) as reference:
        assert image_dimensions(data) == reference.size


def test_header_size_of_files_and_odd_jpegs(tmp_path: Path) -> None:
    data = _encoded(Image.new("RGB", (123, 45)), "JPEG")
    path = tmp_path / "photo.jpg"
    path.write_bytes(data)
    assert image_dimensions(path) == image_dimensions(str(path)) == (123, 45)
    # Junk and fill bytes between segments, which libjpeg skips, do not hide the frame.
    app0_end = 4 + struct.unpack(">H", data[4:6])[0]
    junk = data[:app0_end] + b"\x00\x13\x37" + b"\xff\xff" + data[app0_end:]
    with Image.open(io.BytesIO(junk)) as reference:
        assert image_dimensions(junk) == reference.size == (123, 45)
    assert image_dimensions(tmp_path / "missing.png") is None
    assert image_dimensions(b"") is None
    assert image_dimensions(b"<html>not an image</html>") is None
    assert image_dimensions(data[:20]) is None  # cut before the frame header


def gif_with_frame(screen: tuple[int, int], frame: tuple[int, int]) -> bytes:
    """A GIF whose logical screen is ``screen`` and whose one frame claims ``frame``."""
    descriptor = struct.pack("<HHHHB", 0, 0, *frame, 0x80)  # with a 2-colour local table
    return (
        b"GIF89a" + struct.pack("<HHBBB", *screen, 0, 0, 0)
        + b"\x2c" + descriptor + b"\x00\x00\x00\xff\xff\xff"
        + b"\x02\x02\x44\x01\x00"  # LZW code size 2, one sub-block, terminator
        + b"\x3b"
    )  # fmt: skip


def test_gif_frames_count_as_well_as_the_screen(tmp_path: Path) -> None:
    frames = [Image.new("P", (40, 30), 0)]
    for i in range(3):
        frame = Image.new("P", (40, 30), 0)
        frame.paste(i + 1, (i * 5, i * 3, i * 5 + 10, i * 3 + 8))
        frames.append(frame)
    data = _encoded(frames[0], "GIF", save_all=True, append_images=frames[1:])
    with Image.open(io.BytesIO(data)) as reference:
        areas = []
        for k in range(reference.n_frames):
            reference.seek(k)
            left, top, right, bottom = reference.dispose_extent
            areas.append((right - left) * (bottom - top))
    assert len(areas) == 4 and sum(areas) > 40 * 30  # the later frames are cropped
    assert image_header(data) == (40, 30, sum(areas))
    # A small screen does not hide a huge frame: the decoder allocates the frame's size.
    hidden = gif_with_frame((10, 10), (20000, 20000))
    assert image_dimensions(hidden) == (10, 10)
    assert image_header(hidden) == (10, 10, 400_000_000)
    root = make_shape_dataset(tmp_path / "photos", per_class=2, size=32)
    (root / "circle" / "hidden.gif").write_bytes(hidden)
    with pytest.warns(SkippedFilesWarning, match="Skipped 1 of 7"):
        dataset = load_image_dataset(root, 32)
    assert dataset.skipped == [
        (
            str(root / "circle" / "hidden.gif"),
            "image is 10x10 with frames of 400,000,000 pixels in all, over "
            "max_pixels=178,956,970; not decoded",
        )
    ]


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from([b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF89a", b"BM", b"RIFF", b""]),
    st.binary(),
)
def test_header_parser_never_fails(magic: bytes, rest: bytes) -> None:
    found = image_header(magic + rest)
    assert found is None or (len(found) == 3 and found[2] >= found[0] * found[1] >= 0)


def test_default_limit_is_where_pillow_refuses(monkeypatch: pytest.MonkeyPatch) -> None:
    assert DEFAULT_MAX_PIXELS == 2 * Image.MAX_IMAGE_PIXELS
    assert xferclass.data.DEFAULT_MAX_PIXELS == DEFAULT_MAX_PIXELS
    monkeypatch.delenv(MAX_PIXELS_ENV, raising=False)
    assert resolve_max_pixels(None, "f") == DEFAULT_MAX_PIXELS
    assert resolve_max_pixels(1000, "f") == 1000
    monkeypatch.setenv(MAX_PIXELS_ENV, "5_000")
    assert resolve_max_pixels(None, "f") == 5000
    assert resolve_max_pixels(7, "f") == 7  # the argument wins
    monkeypatch.setenv(MAX_PIXELS_ENV, "lots")
    with pytest.raises(xferclass.InvalidArgumentError, match="XFERCLASS_MAX_PIXELS='lots'"):
        resolve_max_pixels(None, "f")
    for bad in (0, -1, 2.5, True, "100"):
        with pytest.raises(xferclass.InvalidArgumentError, match="max_pixels"):
            resolve_max_pixels(bad, "f")


# ------------------------------------------------------------------------------------
# the limit on every decode path
# ------------------------------------------------------------------------------------


@pytest.fixture
def bomb_folder(tmp_path: Path, bomb_png: Path) -> Path:
    root = make_shape_dataset(tmp_path / "photos", per_class=4, size=48)
    os.link(bomb_png, root / "circle" / "huge.png")
    jpeg_claiming(root / "square" / "claims.jpg", 60000, 60000)
    return root


def test_bombs_are_skipped_and_never_decoded(bomb_folder: Path) -> None:
    with pytest.warns(SkippedFilesWarning, match="Skipped 2 of 14") as record:
        dataset = load_image_dataset(bomb_folder, 32, shuffle=False)
    assert "20000x20000" in str(record[0].message)
    assert len(dataset.file_paths) == 12  # every good image is kept
    reasons = {Path(p).name: reason for p, reason in dataset.skipped}
    assert set(reasons) == {"huge.png", "claims.jpg"}
    assert reasons["huge.png"].startswith("image is 20000x20000 = 400,000,000 pixels")
    assert (
        "60000x60000 = 3,600,000,000 pixels, over max_pixels=178,956,970" in (reasons["claims.jpg"])
    )
    images = np.concatenate([x.numpy() for x, _ in dataset])
    assert images.shape == (12, 32, 32, 3)
    with pytest.raises(DatasetError, match=r"huge.png: image is 20000x20000"):
        load_image_dataset(bomb_folder, 32, strict=True)


def test_limit_is_exact_configurable_and_rechecked(tmp_path: Path, monkeypatch) -> None:
    root = make_shape_dataset(tmp_path / "photos", per_class=2, size=32)  # 1024 pixels each
    (root / "circle" / "wide.gif").write_bytes(_encoded(Image.new("P", (40, 26)), "GIF"))
    (root / "square" / "wide.bmp").write_bytes(_encoded(Image.new("RGB", (26, 40)), "BMP"))
    everything = load_image_dataset(root, 32, max_pixels=1040)  # 40 x 26 = 1040: kept
    assert len(everything.file_paths) == 8 and not everything.skipped
    with pytest.warns(SkippedFilesWarning, match="Skipped 2 of 8"):
        small = load_image_dataset(root, 32, max_pixels=1039)
    assert sorted(Path(p).name for p, _ in small.skipped) == ["wide.bmp", "wide.gif"]
    assert all("40x26" in r or "26x40" in r for _, r in small.skipped)
    # Earlier checks are remembered, but the limit applies to them every time.
    monkeypatch.setenv(MAX_PIXELS_ENV, "1000")
    with pytest.raises(DatasetError, match=r"no readable images.*\(8 image files in them"):
        load_image_dataset(root, 32)
    monkeypatch.delenv(MAX_PIXELS_ENV)
    assert len(load_image_dataset(root, 32).file_paths) == 8
    with pytest.raises(xferclass.InvalidArgumentError, match="max_pixels=0"):
        load_image_dataset(root, 32, max_pixels=0)


def test_predict_and_read_images_refuse_bombs(bomb_folder: Path) -> None:
    from helpers import tiny_model

    model = tiny_model()
    good = str(bomb_folder / "circle" / "circle_00.png")
    huge = str(bomb_folder / "circle" / "huge.png")
    claims = str(bomb_folder / "square" / "claims.jpg")
    pattern = r"huge.png' \(image is 20000x20000 = 400,000,000 pixels.*raise max_pixels"
    with pytest.raises(DatasetError, match=pattern):
        xferclass.predict(model, [good, huge])
    with pytest.raises(DatasetError, match=r"claims.jpg' \(image is 60000x60000"):
        xferclass.predict(model, claims)
    with pytest.raises(DatasetError, match=r"read_images: .*huge.png.*20000x20000"):
        read_images([good, huge], 32)
    assert len(xferclass.predict(model, good)) == 1
    with pytest.raises(DatasetError, match=r"circle_00.png' \(image is 48x48 = 2,304 pixels"):
        xferclass.predict(model, good, max_pixels=2303)
    with pytest.raises(DatasetError, match="48x48"):
        read_images(good, 32, max_pixels=100)


_MEASURE = textwrap.dedent(
    """
    import json, resource, sys, warnings
    import xferclass
    warnings.simplefilter("ignore")
    dataset = xferclass.load_image_dataset(sys.argv[1], 64, batch_size=8)
    batches = sum(1 for _ in dataset)
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"kept": len(dataset.file_paths), "skipped": len(dataset.skipped),
                      "peak_mb": peak_kb / 1024, "batches": batches}))
    """
)


def _peak(folder: Path) -> dict:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    env.pop(MAX_PIXELS_ENV, None)
    done = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(folder)],
        capture_output=True, text=True, timeout=300, env=env, check=True,
    )  # fmt: skip
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_bombs_cost_no_memory(tmp_path: Path, bomb_png: Path) -> None:
    """Peak RSS of a load with both bombs stays within 300 MB of the load without them.

    Decoded, the PNG alone would take 1.2 GB and the JPEG 10.8 GB. Each variant
    runs in a fresh process (peak RSS only grows); the bound is far above the
    noise of two TensorFlow imports (tens of MB) and far below one decoded bomb.
    """
    clean = make_shape_dataset(tmp_path / "clean", per_class=7, size=256)
    bombed = make_shape_dataset(tmp_path / "bombed", per_class=7, size=256)
    os.link(bomb_png, bombed / "circle" / "huge.png")
    jpeg_claiming(bombed / "square" / "claims.jpg", 60000, 60000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        without = _peak(clean)
        with_bombs = _peak(bombed)
    assert without["kept"] == with_bombs["kept"] == 21
    assert (without["skipped"], with_bombs["skipped"]) == (0, 2)
    assert with_bombs["peak_mb"] - without["peak_mb"] < 300, (without, with_bombs)


@pytest.mark.parametrize("files_per_round", [1, 3, 5, 2048])
def test_check_in_rounds_gives_the_same_result(
    bomb_folder: Path, files_per_round: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Headers are read a round ahead of the decoding; any round size gives one answer."""
    from xferclass.data import _filecheck

    monkeypatch.setattr(_filecheck, "CHECK_ROUND", files_per_round)
    _filecheck.clear_check_cache()
    (bomb_folder / "triangle" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    with pytest.warns(SkippedFilesWarning, match="Skipped 3 of 15"):
        dataset = load_image_dataset(bomb_folder, 32, shuffle=False)
    reasons = {Path(p).name: r.split(",")[0].split(":")[0] for p, r in dataset.skipped}
    assert reasons == {
        "huge.png": "image is 20000x20000 = 400",
        "claims.jpg": "image is 60000x60000 = 3",
        "broken.png": "corrupt or truncated PNG",
    }
    assert len(dataset.file_paths) == 12
    np.testing.assert_array_equal(
        np.concatenate([x.numpy() for x, _ in dataset]), read_images(dataset.file_paths, 32)
    )


# ------------------------------------------------------------------------------------
# the limit inside graphs: the exported serve_bytes signature
# ------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _graph_pixels() -> object:
    """The in-graph header reader, traced once for the whole module."""
    import tensorflow as tf

    from xferclass.data import _decode

    return tf.function(_decode.pixels_in_graph, input_signature=[tf.TensorSpec([], tf.string)])


@functools.lru_cache(maxsize=1)
def _graph_header() -> object:
    """The in-graph ``(width, height, pixels)`` reader, traced once for the whole module."""
    import tensorflow as tf

    from xferclass.data import _decode

    return tf.function(_decode.header_in_graph, input_signature=[tf.TensorSpec([], tf.string)])


def test_graph_header_reader_matches_the_python_one(bomb_png: Path) -> None:
    pixels = _graph_pixels()
    samples = [
        _encoded(Image.new(mode, size), fmt, **options)
        for fmt, mode, options in CASES
        for size in ((1, 1), (37, 5), (300, 211))
    ]
    frames = [Image.new("P", (40, 30), 0), Image.new("P", (40, 30), 1).crop((0, 0, 40, 30))]
    samples.append(_encoded(frames[0], "GIF", save_all=True, append_images=frames[1:]))
    samples.append(gif_with_frame((10, 10), (20000, 20000)))
    samples.append(bomb_png.read_bytes())
    samples.append(jpeg_claiming(bomb_png.parent / "claims.jpg", 60000, 60000).read_bytes())
    header = _graph_header()
    for sample in samples:
        expected = image_header(sample)
        assert expected is not None
        assert int(pixels(sample)) == expected[2]
        assert tuple(int(v) for v in header(sample)) == expected
    for unknown in (b"", b"hello", b"GIF89a", b"BM"):
        assert int(pixels(unknown)) == (image_header(unknown) or (0, 0, 0))[2] == 0


@settings(max_examples=40, deadline=None)
@given(st.sampled_from([b"GIF89a", b"BM", b"RIFF", b"\x89PNG\r\n\x1a\n", b""]), st.binary())
def test_graph_header_reader_never_fails(magic: bytes, rest: bytes) -> None:
    assert int(_graph_pixels()(magic + rest)) >= 0


def test_graph_header_reader_does_not_wrap_huge_sides_to_a_negative_count() -> None:
    """A PNG whose two 4-byte sides multiply past int64 (found by the test above) must
    count as too large, as the Python reader says, not wrap to a negative count."""
    sides = (0xA80A80A9, 0xC3000000)
    header = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR" + b"".join(n.to_bytes(4, "big") for n in sides)
    python = image_header(header)
    assert python is not None and python[2] > 2**63  # beyond int64: it would wrap
    assert int(_graph_pixels()(header)) >= 2**62 > 178_956_970
    assert int(_graph_pixels()(header[:21])) >= 2**62  # cut short, as hypothesis found it


def test_serve_bytes_decoding_refuses_bombs(
    bomb_png: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib

    import tensorflow as tf

    export = importlib.import_module("xferclass.export")  # the module, not the function
    good = tmp_path / "good.png"
    good.write_bytes(_encoded(Image.new("RGB", (48, 40), (10, 200, 30)), "PNG"))
    monkeypatch.delenv(MAX_PIXELS_ENV, raising=False)
    decode = tf.function(
        export._decode_for_serving((32, 32)), input_signature=[tf.TensorSpec([], tf.string)]
    )
    np.testing.assert_array_equal(decode(good.read_bytes()).numpy(), read_images(good, 32)[0])
    bombs = {
        "400000000": bomb_png.read_bytes(),
        "3600000000": jpeg_claiming(tmp_path / "claims.jpg", 60000, 60000).read_bytes(),
        "400000000 ": gif_with_frame((10, 10), (20000, 20000)),
    }
    for count, bomb in bombs.items():
        with pytest.raises(tf.errors.InvalidArgumentError, match="max_pixels=178,956,970") as info:
            decode(bomb)
        assert f"[{count.strip()}]" in info.value.message
    monkeypatch.setenv(MAX_PIXELS_ENV, "1000")  # read when the signature is made
    strict = tf.function(
        export._decode_for_serving((32, 32)), input_signature=[tf.TensorSpec([], tf.string)]
    )
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"max_pixels=1,000.*\[1920\]"):
        strict(good.read_bytes())
