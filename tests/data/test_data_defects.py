"""Defects of the data side: the pixel limit, files that vanish, decoding twice, late checks."""

from __future__ import annotations

import io
import os
import shutil
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import xferclass
from conftest import make_shape_dataset
from xferclass import DatasetError, InvalidArgumentError, load_image_dataset, read_images
from xferclass.data import SkippedFilesWarning, image_paths_dataset

# ------------------------------------------------------------------------------------
# the pixel limit when the header reader cannot tell the size
# ------------------------------------------------------------------------------------

#: How far into a JPEG the Python header reader looks for the frame header.
_SEARCH = 16 << 20


def late_frame_jpeg(path: Path, size: tuple[int, int] = (40, 30)) -> tuple[Path, np.ndarray]:
    """A valid JPEG whose frame header comes after 16 MiB of APP9 segments.

    Returns the path and the pixels Pillow decodes from it.
    """
    buffer = io.BytesIO()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), np.uint8)).save(buffer, "JPEG")
    data = buffer.getvalue()
    payload = b"\0" * 65533
    segment = b"\xff\xe9" + struct.pack(">H", len(payload) + 2) + payload
    padding = segment * (_SEARCH // len(segment) + 1)
    path.write_bytes(data[:2] + padding + data[2:])
    with Image.open(path) as image:
        return path, np.asarray(image.convert("RGB"))


@pytest.fixture(scope="module")
def late_jpeg(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    return late_frame_jpeg(tmp_path_factory.mktemp("late") / "late.jpg")


def test_late_frame_header_is_beyond_the_python_reader(late_jpeg: tuple[Path, np.ndarray]) -> None:
    from xferclass.data._imagesize import image_header

    assert image_header(late_jpeg[0]) is None  # the case the bound must still cover


def test_late_frame_jpeg_is_bounded_in_a_folder(
    tmp_path: Path, late_jpeg: tuple[Path, np.ndarray]
) -> None:
    root = make_shape_dataset(tmp_path / "photos", per_class=2, size=8)  # 64 pixels each
    os.link(late_jpeg[0], root / "circle" / "late.jpg")  # 40 x 30 = 1,200 pixels
    with pytest.warns(SkippedFilesWarning, match="Skipped 1 of 7"):
        small = load_image_dataset(root, 8, max_pixels=1199, shuffle=False)
    [(path, reason)] = small.skipped
    assert Path(path).name == "late.jpg"
    assert "40x30 = 1,200 pixels, over max_pixels=1,199" in reason
    kept = load_image_dataset(root, 40, max_pixels=1200, shuffle=False)
    assert not kept.skipped and len(kept.file_paths) == 7
    index = [Path(p).name for p in kept.file_paths].index("late.jpg")
    images = np.concatenate([x.numpy() for x, _ in kept])
    expected = tf.image.resize(late_jpeg[1], (40, 40)).numpy()
    assert np.abs(images[index] - expected).max() <= 2  # TF and Pillow share libjpeg


def test_late_frame_jpeg_is_bounded_in_read_images_and_predict(
    late_jpeg: tuple[Path, np.ndarray],
) -> None:
    from helpers import tiny_model

    path = late_jpeg[0]
    with pytest.raises(DatasetError, match=r"late.jpg.*40x30 = 1,200 pixels.*max_pixels"):
        read_images(path, 8, max_pixels=1199)
    with pytest.raises(DatasetError, match=r"late.jpg.*40x30 = 1,200 pixels"):
        image_paths_dataset([path], 8, max_pixels=1199)
    with pytest.raises(DatasetError, match=r"late.jpg.*40x30"):
        xferclass.predict(tiny_model(), path, max_pixels=1199)
    image = read_images(path, (30, 40), max_pixels=1200)[0]
    assert np.abs(image - late_jpeg[1]).max() <= 2


def test_file_whose_size_no_header_tells_is_skipped_with_a_reason(tmp_path: Path) -> None:
    root = make_shape_dataset(tmp_path / "photos", per_class=2, size=8)
    # A PNG signature, then no IHDR: neither header reader can tell its size.
    (root / "square" / "headless.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    with pytest.warns(SkippedFilesWarning, match="Skipped 1 of 7"):
        dataset = load_image_dataset(root, 8)
    [(path, reason)] = dataset.skipped
    assert Path(path).name == "headless.png" and "PNG" in reason


# ------------------------------------------------------------------------------------
# images that vanish, and images decoded twice
# ------------------------------------------------------------------------------------


@pytest.fixture
def unlistable(monkeypatch: pytest.MonkeyPatch) -> Iterator[set[str]]:
    """Folders (paths added to the set) that ``os.scandir`` refuses to list."""
    refused: set[str] = set()
    real = os.scandir

    def scandir(path: Any = ".") -> Any:
        if os.fspath(path) in refused:
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    yield refused


def test_unlistable_subfolder_is_reported_in_skipped(tmp_path: Path, unlistable: set[str]) -> None:
    root = make_shape_dataset(tmp_path / "photos", per_class=2, size=8)
    hidden = make_shape_dataset(root / "circle" / "more", per_class=1, size=8, classes=("circle",))
    unlistable.add(str(hidden / "circle"))
    with pytest.warns(SkippedFilesWarning, match="Skipped 1 of 7"):
        dataset = load_image_dataset(root, 8)
    assert len(dataset.file_paths) == 6
    [(path, reason)] = dataset.skipped
    assert path == str(hidden / "circle")
    assert reason.startswith("folder cannot be listed") and "Permission denied" in reason
    with pytest.raises(DatasetError, match=r"more.circle: folder cannot be listed"):
        load_image_dataset(root, 8, strict=True)


def test_image_paths_dataset_decodes_each_file_once(
    tiny_dataset_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from xferclass.data import _filecheck

    paths = sorted(str(p) for p in (tiny_dataset_dir / "square").iterdir())
    decoded: list[str] = []
    real = _filecheck.decode_pass

    def spy(files: list[str]) -> np.ndarray:
        decoded.extend(files)
        return real(files)

    monkeypatch.setattr(_filecheck, "decode_pass", spy)
    _filecheck.clear_check_cache()
    images = np.concatenate([x.numpy() for x in image_paths_dataset(paths, 16, batch_size=3)])
    assert decoded == []  # the pipeline is the only decode
    np.testing.assert_array_equal(images, read_images(paths, 16))


def test_image_paths_dataset_names_a_file_that_fails_to_decode(
    tiny_dataset_dir: Path, tmp_path: Path
) -> None:
    from helpers import tiny_model

    good = sorted(str(p) for p in (tiny_dataset_dir / "circle").iterdir())[:3]
    cut = tmp_path / "cut.png"
    cut.write_bytes(Path(good[0]).read_bytes()[:60])  # the header is whole, the pixels not
    for files in ([good[0], str(cut), good[1]], [*good, str(cut)]):
        dataset = image_paths_dataset(files, 16, batch_size=2)
        with pytest.raises(tf.errors.InvalidArgumentError, match="cut.png"):
            list(dataset)
        with pytest.raises(DatasetError, match=r"cannot decode .*cut.png.*corrupt or truncated"):
            xferclass.predict(tiny_model(), files)


def test_training_labels_reads_the_labels_without_decoding(
    tiny_dataset_dir: Path, tmp_path: Path
) -> None:
    from xferclass.training._engine import training_labels

    folder = tmp_path / "copy"
    shutil.copytree(tiny_dataset_dir, folder)
    dataset = load_image_dataset(folder, 8, seed=3)
    shutil.rmtree(folder)  # decoding now fails
    labels = training_labels(dataset)
    np.testing.assert_array_equal(labels, dataset.labels)
    assert np.bincount(labels).tolist() == [8, 8, 8]


def test_training_labels_of_a_plain_dataset() -> None:
    from xferclass.training._engine import training_labels

    rows = np.eye(3, dtype=np.float32)[[0, 2, 2, 1]]
    dataset = tf.data.Dataset.from_tensor_slices((np.zeros((4, 2, 2, 3)), rows)).batch(3)
    np.testing.assert_array_equal(training_labels(dataset), rows)


# ------------------------------------------------------------------------------------
# arguments checked up front
# ------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [-1, 2**32])
def test_out_of_range_seed_fails_up_front(tiny_dataset_dir: Path, seed: int) -> None:
    with pytest.raises(InvalidArgumentError, match=f"seed={seed}"):
        load_image_dataset(tiny_dataset_dir, 8, seed=seed)
    with pytest.raises(InvalidArgumentError, match=f"seed={seed}"):
        load_image_dataset(tiny_dataset_dir, 8, seed=seed, shuffle=False)


def test_negative_training_seed_fails_up_front() -> None:
    from xferclass.training._engine import TrainConfig

    with pytest.raises(InvalidArgumentError, match="seed=-5"):
        TrainConfig(seed=-5)
    assert TrainConfig(seed=0).seed == 0


def test_cache_memory_variable_is_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    from xferclass.training._cache import DEFAULT_MEMORY_LIMIT, memory_limit_from_env

    monkeypatch.delenv("XFERCLASS_CACHE_MEMORY", raising=False)
    assert memory_limit_from_env(None) == DEFAULT_MEMORY_LIMIT
    assert memory_limit_from_env(123) == 123
    monkeypatch.setenv("XFERCLASS_CACHE_MEMORY", " 1_000_000 ")
    assert memory_limit_from_env(None) == 1_000_000
    for bad in ("lots", "2GB", "-1", "1.5"):
        monkeypatch.setenv("XFERCLASS_CACHE_MEMORY", bad)
        with pytest.raises(InvalidArgumentError, match=f"XFERCLASS_CACHE_MEMORY={bad!r}"):
            memory_limit_from_env(None)
