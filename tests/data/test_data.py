"""Tests of xferclass.data: folder of images -> tf.data, on tidy and on messy folders."""

from __future__ import annotations

import io
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import TINY_CLASSES, TINY_PER_CLASS, make_shape_dataset
from xferclass import DatasetError, InvalidArgumentError
from xferclass import data as data_module
from xferclass.data import (
    IMAGE_EXTENSIONS,
    SkippedFilesWarning,
    _decode,
    _exif,
    image_paths_dataset,
    is_image_file,
    load_image_dataset,
    read_images,
)

TINY_TOTAL = len(TINY_CLASSES) * TINY_PER_CLASS


# ------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------


def epoch(dataset: tf.data.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """All images and labels of one pass over a dataset."""
    images, labels = [], []
    for x, y in dataset:
        images.append(x.numpy())
        labels.append(y.numpy())
    return np.concatenate(images), np.concatenate(labels)


def file_indices(dataset: tf.data.Dataset, images: np.ndarray) -> list[int]:
    """For each image, the index in ``dataset.file_paths`` of the file it came from."""
    references = read_images(dataset.file_paths, dataset.image_size)
    lookup: dict[bytes, int] = {}
    for i, reference in enumerate(references):
        assert reference.tobytes() not in lookup, "test data must not repeat an image"
        lookup[reference.tobytes()] = i
    return [lookup[image.tobytes()] for image in images]


def assert_each_file_once(dataset: tf.data.Dataset) -> list[int]:
    """One epoch yields every file exactly once, with its own label; returns the order."""
    images, labels = epoch(dataset)
    order = file_indices(dataset, images)
    assert sorted(order) == list(range(len(dataset.file_paths)))
    np.testing.assert_array_equal(labels.argmax(axis=1), dataset.labels[order])
    return order


def load_quietly(path: Path | str, *args: object, **kwargs: object) -> tf.data.Dataset:
    """load_image_dataset, ignoring the skipped-files warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SkippedFilesWarning)
        return load_image_dataset(path, *args, **kwargs)


def copy_tree(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


# ------------------------------------------------------------------------------------
# a tidy folder
# ------------------------------------------------------------------------------------


def test_shapes_dtypes_and_value_range(tiny_dataset_dir: Path) -> None:
    dataset = load_image_dataset(tiny_dataset_dir, (20, 24), batch_size=5, shuffle=False)
    assert dataset.class_names == list(TINY_CLASSES)
    assert dataset.image_size == (20, 24)
    assert dataset.batch_size == 5
    assert dataset.shuffled is False
    assert dataset.skipped == []
    assert dataset.element_spec[0].shape.as_list() == [None, 20, 24, 3]
    assert dataset.element_spec[1].shape.as_list() == [None, 3]
    sizes = []
    for images, labels in dataset:
        assert images.dtype == tf.float32 and labels.dtype == tf.float32
        sizes.append(images.shape[0])
        assert 0.0 <= float(tf.reduce_min(images)) and float(tf.reduce_max(images)) <= 255.0
        np.testing.assert_array_equal(tf.reduce_sum(labels, axis=1), np.ones(images.shape[0]))
    assert sizes == [5, 5, 5, 5, 4]
    assert float(tf.reduce_max(images)) > 150  # real pixels, not rescaled to [0, 1]


def test_int_size_and_labels_follow_folders(tiny_dataset_dir: Path) -> None:
    dataset = load_image_dataset(tiny_dataset_dir, 16, batch_size=7, shuffle=False)
    assert dataset.image_size == (16, 16)
    assert len(dataset.file_paths) == TINY_TOTAL
    folders = [Path(p).parent.name for p in dataset.file_paths]
    assert folders == [dataset.class_names[i] for i in dataset.labels]
    assert dataset.file_paths == sorted(dataset.file_paths)  # unshuffled: class by class
    _, labels = epoch(dataset)
    np.testing.assert_array_equal(labels.argmax(axis=1), dataset.labels)


@pytest.mark.parametrize("shuffle", [False, True])
def test_each_image_once_per_epoch(tiny_dataset_dir: Path, shuffle: bool) -> None:
    dataset = load_image_dataset(tiny_dataset_dir, 16, batch_size=5, shuffle=shuffle, seed=4)
    assert dataset.shuffled is shuffle
    first = assert_each_file_once(dataset)
    second = assert_each_file_once(dataset)
    if shuffle:
        assert first != second  # a new order every epoch
        assert sorted(Path(p).parent.name for p in dataset.file_paths) == sorted(
            Path(p).parent.name for p in load_image_dataset(tiny_dataset_dir, 8).file_paths
        )
    else:
        assert first == second == list(range(TINY_TOTAL))


def test_seed_makes_order_reproducible(tiny_dataset_dir: Path) -> None:
    one = load_image_dataset(tiny_dataset_dir, 8, batch_size=4, seed=11)
    two = load_image_dataset(tiny_dataset_dir, 8, batch_size=4, seed=11)
    assert one.file_paths == two.file_paths
    assert one.file_paths != sorted(one.file_paths)  # seeded shuffle of the file list
    for _ in range(2):
        np.testing.assert_array_equal(epoch(one)[0], epoch(two)[0])


def test_validation_split(tiny_dataset_dir: Path) -> None:
    kwargs = dict(size=8, batch_size=4, validation_split=0.25, seed=3)
    training = load_image_dataset(tiny_dataset_dir, subset="training", **kwargs)
    validation = load_image_dataset(tiny_dataset_dir, subset="validation", **kwargs)
    both = load_image_dataset(tiny_dataset_dir, subset="both", **kwargs)
    assert isinstance(both, tuple) and len(both) == 2
    assert set(both[0].file_paths) == set(training.file_paths)
    assert set(both[1].file_paths) == set(validation.file_paths)
    assert not set(training.file_paths) & set(validation.file_paths)
    assert len(training.file_paths) + len(validation.file_paths) == TINY_TOTAL
    # stratified: 2 of the 8 images of each class
    assert np.bincount(validation.labels).tolist() == [2, 2, 2]
    assert_each_file_once(training)
    assert_each_file_once(validation)
    other = load_image_dataset(tiny_dataset_dir, 8, validation_split=0.25, subset="validation")
    assert len(other.file_paths) == 6  # no seed: a fixed default split, the same every call
    again = load_image_dataset(tiny_dataset_dir, 8, validation_split=0.25, subset="validation")
    assert set(other.file_paths) == set(again.file_paths)
    unshuffled = load_image_dataset(
        tiny_dataset_dir, 8, validation_split=0.25, subset="validation", shuffle=False, seed=3
    )
    assert set(unshuffled.file_paths) == set(validation.file_paths)


def test_class_names_pinned_across_splits(tiny_dataset_dir: Path, tmp_path: Path) -> None:
    test_dir = tmp_path / "test"
    for name in ("square", "circle"):  # no triangle folder in this split
        shutil.copytree(tiny_dataset_dir / name, test_dir / name)
    (test_dir / "triangle_but_empty").mkdir()
    pinned = ["triangle", "circle", "square", "triangle_but_empty"]
    dataset = load_image_dataset(test_dir, 8, shuffle=False, class_names=pinned)
    assert dataset.class_names == pinned
    assert dataset.element_spec[1].shape.as_list() == [None, 4]
    assert sorted(set(dataset.labels.tolist())) == [1, 2]
    folders = [Path(p).parent.name for p in dataset.file_paths]
    assert folders == [pinned[i] for i in dataset.labels]
    _, labels = epoch(dataset)
    np.testing.assert_array_equal(labels.argmax(axis=1), dataset.labels)
    assert labels[:, 0].sum() == 0 and labels[:, 3].sum() == 0
    with pytest.raises(DatasetError, match="triangle_but_empty.*class_names"):
        load_image_dataset(test_dir, 8, class_names=["circle", "square"])


def test_is_image_file() -> None:
    assert IMAGE_EXTENSIONS == (".jpg", ".jpeg", ".png", ".gif", ".bmp")
    assert is_image_file("a/b/IMG.JPEG") and is_image_file(Path("x.Png"))
    assert not is_image_file("a/.hidden.jpg") and not is_image_file("notes.txt")
    assert not is_image_file("photo.webp")


def test_all_is_the_public_api() -> None:
    assert sorted(data_module.__all__) == sorted(
        ["DEFAULT_MAX_PIXELS", "IMAGE_EXTENSIONS", "SkippedFilesWarning", "is_image_file"]
        + ["load_image_dataset"]
        + ["read_images", "image_paths_dataset"]
    )


def test_read_images(tiny_dataset_dir: Path, tmp_path: Path) -> None:
    dataset = load_image_dataset(tiny_dataset_dir, (12, 10), batch_size=50, shuffle=False)
    images = read_images(dataset.file_paths, (12, 10))
    assert images.shape == (TINY_TOTAL, 12, 10, 3) and images.dtype == np.float32
    np.testing.assert_array_equal(images, epoch(dataset)[0])  # same decode, same pixels
    single = read_images(Path(dataset.file_paths[3]), (12, 10))
    np.testing.assert_array_equal(single[0], images[3])
    assert read_images([], 7).shape == (0, 7, 7, 3)
    (tmp_path / "page.jpg").write_text("<html>not an image</html>")
    with pytest.raises(DatasetError, match="page.jpg"):
        read_images([dataset.file_paths[0], tmp_path / "page.jpg"], 8)
    with pytest.raises(DatasetError, match="missing.png"):
        read_images([tmp_path / "missing.png"], 8)
    with pytest.raises(InvalidArgumentError, match="size"):
        read_images(dataset.file_paths[:1], 0)


def test_changed_file_is_checked_again(tiny_dataset_dir: Path, tmp_path: Path) -> None:
    folder = copy_tree(tiny_dataset_dir, tmp_path / "copy")
    assert load_image_dataset(folder, 8).skipped == []
    victim = folder / "square" / "square_01.jpg"
    victim.write_bytes(victim.read_bytes()[:100])  # truncated after the first check
    with pytest.warns(SkippedFilesWarning, match="Skipped 1 of 24"):
        dataset = load_image_dataset(folder, 8)
    assert [p for p, _ in dataset.skipped] == [str(victim)]


# ------------------------------------------------------------------------------------
# a messy folder
# ------------------------------------------------------------------------------------

#: Kept files of the messy folder, with how closely their pixels must match Pillow's.
KEPT_A = {
    "cmyk.jpg": 2,
    "rgb16.png": 1,
    "gray16.png": 1,
    "palette.png": 0,
    "gray.png": 0,
    "rgba.png": 0,
    "animated.gif": 0,
    "rgb.bmp": 0,
    "palette8.bmp": 0,
    "palette4.bmp": 0,
    "mono.bmp": 0,
    "really_png.jpg": 0,
    "UPPER.JPG": 2,
    "küche_衣服.jpg": 2,
    "one_pixel.png": 0,
    "panorama.jpg": 2,
    "exif_rotated.jpg": 2,
    "gray.jpg": 2,
    "progressive.jpeg": 2,
}
KEPT_B = {"good.png": 0, "good.jpg": 2, os.path.join("nested", "deeper.png"): 0}
SKIPPED = {
    os.path.join("a", "truncated.jpg"): "truncated JPEG",
    os.path.join("a", "empty.jpg"): "empty file",
    os.path.join("a", "page.jpg"): "not an image",
    os.path.join("a", "noise.png"): "not an image",
    os.path.join("b", "truncated.png"): "truncated PNG",
    os.path.join("b", "cut_short.bmp"): "truncated BMP",
}
MESSY_CANDIDATES = len(KEPT_A) + len(KEPT_B) + len(SKIPPED)


@pytest.fixture(scope="module")
def messy_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, np.ndarray]]:
    """A folder with every kind of odd file, and the expected upright RGB pixels of each."""
    image_module = pytest.importorskip("PIL.Image")
    from PIL import ImageOps

    root = tmp_path_factory.mktemp("messy")
    a, b = root / "a", root / "b"
    for folder in (a, b, a / ".hidden_folder", b / "nested", root / ".git" / "objects"):
        folder.mkdir(parents=True)
    rng = np.random.default_rng(7)

    def picture(height: int, width: int) -> np.ndarray:
        """Smooth random colour blocks (JPEG-friendly), unique per call."""
        blocks = rng.integers(0, 256, (max(height // 4, 1), max(width // 4, 1), 3))
        big = np.repeat(np.repeat(blocks, 4, axis=0), 4, axis=1)
        return np.ascontiguousarray(big[:height, :width]).astype(np.uint8)

    def pillow(image: object, fmt: str, **options: object) -> bytes:
        buffer = io.BytesIO()
        image.save(buffer, fmt, **options)  # type: ignore[attr-defined]
        return buffer.getvalue()

    rgb = lambda h=24, w=32: image_module.fromarray(picture(h, w))  # noqa: E731
    expected: dict[str, np.ndarray] = {}

    def write(path: Path, content: bytes, truth: np.ndarray | None = None) -> None:
        path.write_bytes(content)
        if truth is None:  # Pillow's decoding, upright, as RGB
            with image_module.open(path) as opened:
                truth = np.asarray(ImageOps.exif_transpose(opened).convert("RGB"))
        expected[str(path)] = truth

    write(a / "cmyk.jpg", pillow(rgb().convert("CMYK"), "JPEG", quality=95))
    sixteen = rng.integers(0, 65536, (20, 30, 3), dtype=np.uint16)
    write(a / "rgb16.png", tf.io.encode_png(sixteen).numpy(), (sixteen / 257).round())
    gray16 = rng.integers(0, 65536, (20, 30), dtype=np.uint16)
    # Pillow clips 16-bit gray to 255 when converting to RGB: compare with v / 257.
    write(
        a / "gray16.png",
        pillow(image_module.fromarray(gray16), "PNG"),
        np.repeat((gray16 / 257).round()[..., None], 3, axis=2),
    )
    with image_module.open(a / "gray16.png") as opened:
        assert opened.mode.startswith("I")
    write(a / "palette.png", pillow(rgb().convert("P"), "PNG"))
    write(a / "gray.png", pillow(rgb().convert("L"), "PNG"))
    rgba = np.dstack([picture(24, 32), rng.integers(0, 256, (24, 32), dtype=np.uint8)])
    write(a / "rgba.png", pillow(image_module.fromarray(rgba, "RGBA"), "PNG"))
    first, second = rgb().convert("P"), rgb().convert("P")
    write(a / "animated.gif", pillow(first, "GIF", save_all=True, append_images=[second]))
    write(a / "rgb.bmp", pillow(rgb(), "BMP"))
    write(a / "palette8.bmp", pillow(rgb().convert("P"), "BMP"))
    write(
        a / "palette4.bmp",
        pillow(rgb(24, 30).quantize(colors=16).convert("P"), "BMP", bits=4),
    )
    write(a / "mono.bmp", pillow(rgb(24, 29).convert("1"), "BMP"))
    write(a / "really_png.jpg", pillow(rgb(), "PNG"))
    write(a / "UPPER.JPG", pillow(rgb(), "JPEG", quality=95))
    write(a / "küche_衣服.jpg", pillow(rgb(), "JPEG", quality=95))
    write(a / "one_pixel.png", pillow(rgb(1, 1), "PNG"))
    write(a / "panorama.jpg", pillow(rgb(64, 10000), "JPEG", quality=90))
    exif = image_module.Exif()
    exif[0x0112] = 6  # stored sideways: rotate 90 degrees clockwise to view
    write(a / "exif_rotated.jpg", pillow(rgb(24, 40), "JPEG", quality=95, exif=exif.tobytes()))
    write(a / "gray.jpg", pillow(rgb().convert("L"), "JPEG", quality=95))
    write(a / "progressive.jpeg", pillow(rgb(), "JPEG", quality=90, progressive=True))
    assert sorted(expected) == sorted(str(a / name) for name in KEPT_A)

    write(b / "good.png", pillow(rgb(), "PNG"))
    write(b / "good.jpg", pillow(rgb(), "JPEG", quality=95))
    write(b / "nested" / "deeper.png", pillow(rgb(), "PNG"))

    # Bad files: skipped and reported.
    good_jpeg = pillow(rgb(64, 64), "JPEG", quality=90)
    (a / "truncated.jpg").write_bytes(good_jpeg[: len(good_jpeg) // 2])
    (a / "empty.jpg").write_bytes(b"")
    (a / "page.jpg").write_text("<!DOCTYPE html><html><body>Access denied</body></html>")
    (a / "noise.png").write_bytes(rng.integers(0, 256, 500, dtype=np.uint8).tobytes())
    good_png = pillow(rgb(64, 64), "PNG")
    (b / "truncated.png").write_bytes(good_png[: len(good_png) - 200])
    good_bmp = pillow(rgb(16, 16).convert("P"), "BMP")
    (b / "cut_short.bmp").write_bytes(good_bmp[:-10])

    # Ignored without a word: hidden files and folders, other extensions.
    (a / ".DS_Store").write_bytes(rng.integers(0, 256, 100, dtype=np.uint8).tobytes())
    (a / "._UPPER.JPG").write_bytes(b"\x00\x05\x16\x07AppleDouble junk")
    (a / ".hidden_folder" / "visible_name.jpg").write_bytes(good_jpeg)
    (a / "notes.txt").write_text("not an image")
    (a / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
    (a / "photo.webp").write_bytes(b"RIFF0000WEBPVP8 ")
    (root / ".git" / "objects" / "x.jpg").write_bytes(good_jpeg)
    (root / "README.txt").write_text("a dataset")
    return root, expected


def test_messy_folder_counts_and_reasons(messy_dir: tuple[Path, dict[str, np.ndarray]]) -> None:
    root, _ = messy_dir
    with pytest.warns(SkippedFilesWarning) as record:
        dataset = load_image_dataset(root, (16, 16), batch_size=4, shuffle=False)
    assert len(record) == 1
    message = str(record[0].message)
    assert f"Skipped {len(SKIPPED)} of {MESSY_CANDIDATES} image files" in message
    assert "dataset.skipped" in message and "strict=True" in message
    assert dataset.class_names == ["a", "b"]
    kept = sorted(os.path.relpath(p, root) for p in dataset.file_paths)
    expected_kept = sorted(
        [os.path.join("a", n) for n in KEPT_A] + [os.path.join("b", n) for n in KEPT_B]
    )
    assert kept == expected_kept
    assert len(dataset.skipped) == len(SKIPPED)
    reasons = {os.path.relpath(p, root): reason for p, reason in dataset.skipped}
    assert sorted(reasons) == sorted(SKIPPED)
    assert "empty file" in reasons[os.path.join("a", "empty.jpg")]
    assert "starts with b'<!DOCTYPE" in reasons[os.path.join("a", "page.jpg")]
    assert "not an image" in reasons[os.path.join("a", "noise.png")]
    assert "JPEG" in reasons[os.path.join("a", "truncated.jpg")]
    assert "PNG" in reasons[os.path.join("b", "truncated.png")]
    assert "cut short" in reasons[os.path.join("b", "cut_short.bmp")]


@pytest.mark.parametrize("shuffle", [False, True])
def test_messy_folder_each_kept_file_once(
    messy_dir: tuple[Path, dict[str, np.ndarray]], shuffle: bool
) -> None:
    root, _ = messy_dir
    with pytest.warns(SkippedFilesWarning, match=f"Skipped {len(SKIPPED)} of"):
        dataset = load_image_dataset(root, (16, 16), batch_size=4, shuffle=shuffle, seed=1)
    assert len(dataset.file_paths) == len(KEPT_A) + len(KEPT_B)
    assert_each_file_once(dataset)


def test_messy_folder_pixels_match_pillow(messy_dir: tuple[Path, dict[str, np.ndarray]]) -> None:
    root, expected = messy_dir
    tolerance = {str(root / "a" / n): t for n, t in KEPT_A.items()}
    tolerance |= {str(root / "b" / n): t for n, t in KEPT_B.items()}
    for path, truth in expected.items():
        height, width = truth.shape[:2]
        (decoded,) = read_images([path], (height, width))  # native size: no resampling
        difference = np.abs(decoded - truth.astype(np.float32))
        assert difference.max() <= tolerance[path], (path, difference.max())
    rotated = read_images([root / "a" / "exif_rotated.jpg"], (40, 24))
    assert rotated.shape == (1, 40, 24, 3)  # stored 24 x 40, shown upright 40 x 24
    panorama = read_images([root / "a" / "panorama.jpg"], (32, 32))
    assert panorama.shape == (1, 32, 32, 3)


def test_exif_orientations_all_match_pillow(tmp_path: Path) -> None:
    image_module = pytest.importorskip("PIL.Image")
    from PIL import ImageOps

    pixels = np.repeat(np.repeat(np.arange(12).reshape(3, 4), 8, 0), 8, 1) * 20
    picture = image_module.fromarray(np.dstack([pixels, 255 - pixels, pixels // 2]).astype("u1"))
    for orientation in range(1, 9):
        exif = image_module.Exif()
        exif[0x0112] = orientation
        path = tmp_path / f"o{orientation}.jpg"
        picture.save(path, "JPEG", quality=95, exif=exif.tobytes())
        with image_module.open(path) as opened:
            truth = np.asarray(ImageOps.exif_transpose(opened).convert("RGB"))
        assert _exif.exif_orientation(str(path)) == orientation
        (decoded,) = read_images([path], truth.shape[:2])
        assert np.abs(decoded - truth).max() <= 2, orientation


def _jpeg_with_exif(tiff: bytes, pixels: np.ndarray) -> bytes:
    """A JPEG whose EXIF segment (after the JFIF one) holds ``tiff``."""
    jpeg = tf.io.encode_jpeg(pixels, quality=90).numpy()
    assert jpeg[2:4] == b"\xff\xe0"
    app0_end = 4 + int.from_bytes(jpeg[4:6], "big")
    payload = b"Exif\x00\x00" + tiff
    app1 = b"\xff\xe1" + (len(payload) + 2).to_bytes(2, "big") + payload
    return jpeg[:app0_end] + app1 + jpeg[app0_end:]


def _tiff(order: str, orientation: int, thumbnail: int = 0) -> bytes:
    """TIFF data with IFD0 = (ImageWidth, Orientation), then ``thumbnail`` filler bytes."""
    import struct

    head = (b"II*\x00" if order == "<" else b"MM\x00*") + struct.pack(order + "I", 8)
    entries = struct.pack(order + "HHIHH", 0x0100, 3, 1, 64, 0)
    entries += struct.pack(order + "HHIHH", 0x0112, 3, 1, orientation, 0)
    return head + struct.pack(order + "H", 2) + entries + bytes(4) + bytes(thumbnail)


@pytest.mark.parametrize("order", ["<", ">"])
def test_exif_big_and_little_endian_after_jfif(tmp_path: Path, order: str) -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (16, 24, 3), dtype=np.uint8)
    path = tmp_path / "photo.jpg"
    path.write_bytes(_jpeg_with_exif(_tiff(order, 6, thumbnail=40_000), pixels))
    assert _exif.exif_orientation(str(path)) == 6
    upright = read_images([path], (24, 16))  # stored 16 x 24, shown 24 high, 16 wide
    stored = tf.io.decode_jpeg(path.read_bytes(), dct_method="INTEGER_ACCURATE").numpy()
    np.testing.assert_array_equal(upright[0], np.rot90(stored, k=-1))  # 90 degrees clockwise


_ORIENTATION_IN_GRAPH = tf.function(
    _decode.orientation_in_graph, input_signature=[tf.TensorSpec([], tf.string)]
)


@settings(max_examples=200, deadline=None, database=None)
@given(tiff=st.binary(max_size=120), cut=st.integers(0, 200))
def test_exif_parser_never_fails(tiff: bytes, cut: int) -> None:
    """The file reader and the graph reader (exported models) agree on any bytes."""
    pixels = np.zeros((2, 2, 3), np.uint8)
    for content in (
        _jpeg_with_exif(tiff, pixels),
        _jpeg_with_exif(b"MM\x00*" + tiff, pixels),
        _jpeg_with_exif(b"II*\x00" + tiff, pixels)[:cut],
    ):
        orientation = _exif.orientation_from_file(io.BytesIO(content))
        assert 1 <= orientation <= 8
        assert int(_ORIENTATION_IN_GRAPH(tf.constant(content))) == orientation


@pytest.mark.parametrize("order", ["<", ">"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_in_graph_matches_the_file_reader(order: str, orientation: int) -> None:
    pixels = np.zeros((8, 8, 3), np.uint8)
    content = _jpeg_with_exif(_tiff(order, orientation, thumbnail=300), pixels)
    assert _exif.orientation_from_file(io.BytesIO(content)) == orientation
    assert int(_ORIENTATION_IN_GRAPH(tf.constant(content))) == orientation
    png = tf.io.encode_png(pixels).numpy()
    assert int(_ORIENTATION_IN_GRAPH(tf.constant(png))) == 1


def test_strict_raises_listing_bad_files(messy_dir: tuple[Path, dict[str, np.ndarray]]) -> None:
    root, _ = messy_dir
    with pytest.raises(DatasetError, match=f"{len(SKIPPED)} of {MESSY_CANDIDATES}") as info:
        load_image_dataset(root, 8, strict=True)
    message = str(info.value)
    for name in SKIPPED:
        assert name in message
    assert "strict" in message


# ------------------------------------------------------------------------------------
# errors
# ------------------------------------------------------------------------------------


def test_folder_errors(tiny_dataset_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="path=.*does not exist"):
        load_image_dataset(tmp_path / "nowhere")
    a_file = tmp_path / "file.jpg"
    a_file.write_bytes(b"x")
    with pytest.raises(DatasetError, match="path=.*is a file"):
        load_image_dataset(a_file)
    empty = tmp_path / "empty"
    (empty / ".hidden_class").mkdir(parents=True)
    with pytest.raises(DatasetError, match="no class subfolders"):
        load_image_dataset(empty)
    loose = tmp_path / "loose"
    loose.mkdir()
    shutil.copy(next((tiny_dataset_dir / "circle").iterdir()), loose / "x.png")
    with pytest.raises(DatasetError, match="no class subfolders.*1 image files directly"):
        load_image_dataset(loose)
    one = tmp_path / "one"
    shutil.copytree(tiny_dataset_dir / "circle", one / "circle")
    with pytest.raises(DatasetError, match="only one class.*'circle'"):
        load_image_dataset(one)
    with pytest.raises(DatasetError, match="path=.*must be a folder path"):
        load_image_dataset(42)  # type: ignore[arg-type]


def test_class_without_images(tiny_dataset_dir: Path, tmp_path: Path) -> None:
    root = tmp_path / "data"
    shutil.copytree(tiny_dataset_dir / "circle", root / "circle")
    (root / "dog").mkdir()
    (root / "dog" / "notes.txt").write_text("no images here")
    with pytest.raises(DatasetError, match=r"\['dog'\].*no readable images"):
        load_image_dataset(root)
    (root / "dog" / "bad.jpg").write_bytes(b"<html></html>")
    with pytest.raises(DatasetError, match=r"\['dog'\].*1 image files in them cannot be"):
        load_image_dataset(root)
    # Pinned classes may be empty.
    with pytest.warns(SkippedFilesWarning, match="Skipped 1 of 9"):
        dataset = load_image_dataset(root, 8, class_names=["circle", "dog"])
    assert np.bincount(dataset.labels).tolist() == [8]
    shutil.rmtree(root / "circle")
    with pytest.raises(DatasetError, match="no readable images in the folders of class_names"):
        load_image_dataset(root, 8, class_names=["dog", "cat"])


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        (dict(validation_split=0.0, subset="training"), "validation_split=0.0"),
        (dict(validation_split=1.0, subset="training"), "validation_split=1.0"),
        (dict(validation_split=-0.2, subset="training"), "validation_split=-0.2"),
        (dict(validation_split=True, subset="training"), "validation_split=True"),
        (dict(validation_split="0.2", subset="training"), "validation_split='0.2'"),
        (dict(validation_split=0.2, subset="train"), "subset='train'"),
        (dict(validation_split=0.2), "validation_split.*subset"),
        (dict(subset="training"), "subset.*validation_split"),
        (dict(batch_size=0), "batch_size=0"),
        (dict(batch_size=2.5), "batch_size=2.5"),
        (dict(batch_size=True), "batch_size=True"),
        (dict(seed="x"), "seed='x'"),
        (dict(class_names="circle"), "class_names='circle'"),
        (dict(class_names=["circle"]), "fewer than two"),
        (dict(class_names=["circle", "square", "circle"]), r"\['circle'\] more than once"),
        (dict(class_names=["circle", ""]), "not folder names"),
        (dict(class_names=["circle", "square"]), r"\['triangle'\].*not in class_names"),
    ],
)
def test_argument_errors(tiny_dataset_dir: Path, kwargs: dict[str, object], pattern: str) -> None:
    with pytest.raises(DatasetError, match=pattern):
        load_image_dataset(tiny_dataset_dir, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("size", "pattern"),
    [
        (0, "size=0"),
        (-3, "size=-3"),
        ((10,), r"size=\(10,\)"),
        ((10, 0), r"size=\(10, 0\)"),
        (1.5, "size=1.5"),
        ("big", "size='big'"),
        (True, "size=True"),
    ],
)
def test_size_errors(tiny_dataset_dir: Path, size: object, pattern: str) -> None:
    """One check of image sizes for every function: an InvalidArgumentError naming it."""
    with pytest.raises(InvalidArgumentError, match=f"{pattern} is not an image size"):
        load_image_dataset(tiny_dataset_dir, size)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match=pattern):
        read_images([], size)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match=pattern):
        image_paths_dataset([], size)  # type: ignore[arg-type]


def test_split_too_small_for_validation(tmp_path: Path) -> None:
    make_shape_dataset(tmp_path, per_class=2, size=8)
    with pytest.raises(DatasetError, match="validation_split=0.1 leaves no image"):
        load_image_dataset(tmp_path, 8, validation_split=0.1, subset="validation")


# ------------------------------------------------------------------------------------
# fuzzing: random and damaged files never crash loading, and are never lost
# ------------------------------------------------------------------------------------


def _valid_samples() -> dict[str, bytes]:
    pixels = np.random.default_rng(3).integers(0, 256, (6, 7, 3), dtype=np.uint8)
    gif = (
        b"GIF89a\x01\x00\x01\x00\x80\x00\x00\xff\x00\x00\x00\x00\x00!\xf9\x04\x00\x00\x00\x00"
        b"\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
    )
    header = b"BM" + (62 + 4 * 2).to_bytes(4, "little") + bytes(4) + (62).to_bytes(4, "little")
    info = (40).to_bytes(4, "little") + (2).to_bytes(4, "little") + (2).to_bytes(4, "little")
    info += (1).to_bytes(2, "little") + (1).to_bytes(2, "little") + bytes(24)
    mono_bmp = header + info + b"\x00\x00\x00\x00\xff\xff\xff\x00" + b"\x80\x00\x00\x00" * 2
    return {
        "jpg": tf.io.encode_jpeg(pixels, quality=80).numpy(),
        "png": tf.io.encode_png(pixels).numpy(),
        "gif": gif,
        "bmp": mono_bmp,
    }


VALID = _valid_samples()


@st.composite
def damaged_file(draw: st.DrawFn) -> tuple[str, bytes]:
    """An (extension, content) pair: random bytes, or a truncated or bit-flipped image."""
    kind = draw(st.sampled_from(sorted(VALID)))
    extension = draw(st.sampled_from([kind, kind.upper(), "jpg", "png"]))
    how = draw(st.sampled_from(["random", "truncate", "flip", "truncate+flip"]))
    if how == "random":
        prefix = draw(st.sampled_from([b"", VALID[kind][:4]]))
        return extension, prefix + draw(st.binary(max_size=200))
    content = bytearray(VALID[kind])
    if "truncate" in how:
        content = content[: draw(st.integers(0, len(content) - 1))]
    if "flip" in how and content:
        for bit in draw(st.lists(st.integers(0, 8 * len(content) - 1), min_size=1, max_size=6)):
            content[bit // 8] ^= 1 << (bit % 8)
    return extension, bytes(content)


@settings(
    max_examples=30,
    deadline=None,  # a slow example on a loaded machine is not a failure
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(files=st.lists(damaged_file(), min_size=1, max_size=4))
def test_fuzz_damaged_files_are_loaded_or_skipped(files: list[tuple[str, bytes]]) -> None:
    with tempfile.TemporaryDirectory() as root:
        for name in ("a", "b"):
            os.mkdir(os.path.join(root, name))
            Path(root, name, "good.png").write_bytes(VALID["png"])
        written = [os.path.join(root, "b", "good.png"), os.path.join(root, "a", "good.png")]
        for i, (extension, content) in enumerate(files):
            path = os.path.join(root, "a", f"fuzz_{i}.{extension}")
            Path(path).write_bytes(content)
            written.append(path)
        dataset = load_quietly(root, (8, 8), batch_size=3, shuffle=False)
        kept, skipped = set(dataset.file_paths), {p for p, _ in dataset.skipped}
        assert not kept & skipped
        assert kept | skipped == set(written)
        assert all(reason for _, reason in dataset.skipped)
        images, labels = epoch(dataset)  # every kept file really loads
        assert images.shape == (len(kept), 8, 8, 3) and labels.shape == (len(kept), 2)
        assert np.isfinite(images).all() and images.min() >= 0 and images.max() <= 255


def test_passes_over_files_and_over_a_callers_dataset_run_without_autotuning(
    tiny_dataset_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With tf.data's autotuning on, a finished pass waits for its model thread's sleep
    # (see _decode.without_autotune); every pipeline of files has it off.
    from xferclass.data._decode import without_autotune
    from xferclass.training import _cache

    paths = sorted(str(p) for p in tiny_dataset_dir.rglob("*") if p.is_file())
    built = [
        load_image_dataset(tiny_dataset_dir, 32, batch_size=4),
        load_image_dataset(tiny_dataset_dir, 32, batch_size=4, shuffle=True).unshuffled(),
        image_paths_dataset(paths, (32, 32), batch_size=4),
    ]
    for dataset in built:
        assert dataset.options().autotune.enabled is False
    assert built[0].class_names == list(TINY_CLASSES)  # the facts survive the options
    # The same elements, in the same order, with autotuning off.
    plain = tf.data.Dataset.range(10).map(lambda i: i * 2, num_parallel_calls=tf.data.AUTOTUNE)
    assert list(without_autotune(plain).as_numpy_iterator()) == list(range(0, 20, 2))
    # A caller's dataset keeps its options; the caching pass over it turns them off.
    images = tf.random.uniform((6, 8, 8, 3))
    theirs = tf.data.Dataset.from_tensor_slices((images, tf.one_hot([0, 1, 2] * 2, 3))).batch(4)
    passes: list[tf.data.Dataset] = []

    def spy(dataset: tf.data.Dataset) -> tf.data.Dataset:
        passes.append(without_autotune(dataset))
        return passes[-1]

    monkeypatch.setattr(_cache, "without_autotune", spy)
    directory = _cache.CacheDirectory()
    try:
        split = _cache.cache_split(lambda x: tf.reduce_mean(x, axis=(1, 2)), theirs,
                                   name="train", directory=directory,
                                   budget=_cache._Budget(2**24), verbose=0)  # fmt: skip
        np.testing.assert_allclose(split.stores[0].take(np.arange(6)),
                                   tf.reduce_mean(images, axis=(1, 2)), rtol=1e-6)  # fmt: skip
        assert len(passes) == 1 and passes[0].options().autotune.enabled is False
        # The epochs that fit and fine-tuning train over the cache run without it too.
        epochs = split.dataset(shuffle=True, seed=0)
        assert len(passes) == 2 and epochs.options().autotune.enabled is False
        np.testing.assert_allclose(np.sort(np.concatenate([y for _, y in epochs]), axis=0),
                                   np.sort(split.labels, axis=0))  # fmt: skip
        split.close()
    finally:
        directory.close()
    assert theirs.options().autotune.enabled is not False
    # So does the pass that checks every file decodes.
    from xferclass.data import _filecheck

    monkeypatch.setattr(_filecheck, "without_autotune", spy)
    assert _filecheck.decode_pass(paths).all()
    assert len(passes) == 3 and passes[2].options().autotune.enabled is False
    # And the evaluation pass over a caller's dataset.
    import keras

    from xferclass import metrics

    monkeypatch.setattr(metrics, "without_autotune", spy)
    model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Flatten(),
                              keras.layers.Dense(3, activation="softmax")])  # fmt: skip
    labels, probabilities = metrics.collect_predictions(model, theirs, engine="keras")
    assert len(passes) == 4 and passes[3].options().autotune.enabled is False
    np.testing.assert_array_equal(labels, tf.one_hot([0, 1, 2] * 2, 3))
    np.testing.assert_allclose(probabilities, model.predict_on_batch(images), rtol=1e-5, atol=1e-6)
    assert theirs.options().autotune.enabled is not False
