"""Test-time augmentation in predict, evaluate_regression_style and the command line.

Every TTA result is checked against the model's own outputs on views made
independently with NumPy (mirror by slicing, crops by slicing and a NumPy
bilinear resize), averaged by hand.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from sklearn.metrics import mean_absolute_error, mean_squared_error

import xferclass
from helpers import tiny_arrays, tiny_dataset, tiny_model
from xferclass.cli import main
from xferclass.evaluation._tta import check_tta, resolve_tta, tta_views, with_views
from xferclass.layers import TestTimeViews, ViewMean, built_in_views
from xferclass.metrics import regression_metrics

# float32 probabilities through a small conv net: agreement to ~1e-6; allow
# for threaded reductions summing in another order.
ATOL = 1e-5


def _np_resize(images: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize with half-pixel centres and clamped edges, in NumPy."""

    def axis(size_in: int, size_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        source = (np.arange(size_out) + 0.5) * size_in / size_out - 0.5
        source = np.clip(source, 0, size_in - 1)
        low = np.floor(source).astype(int)
        high = np.minimum(low + 1, size_in - 1)
        return low, high, (source - low)

    y0, y1, fy = axis(images.shape[1], height)
    x0, x1, fx = axis(images.shape[2], width)
    rows = images[:, y0] * (1 - fy)[None, :, None, None] + images[:, y1] * fy[None, :, None, None]
    return rows[:, :, x0] * (1 - fx)[None, None, :, None] + rows[:, :, x1] * fx[None, None, :, None]


def _np_views(images: np.ndarray, mode: str) -> list[np.ndarray]:
    """The views of ``mode``, made with NumPy."""
    images = images.astype(np.float64)
    views = [images]
    if mode == "rotations":  # np.rot90 turns anticlockwise, as tf.image.rot90
        return views + [images[:, :, ::-1], images[:, ::-1], np.rot90(images, 1, axes=(1, 2)),
                        np.rot90(images, 3, axes=(1, 2))]  # fmt: skip
    if mode in ("flip", "crops"):
        views.append(images[:, :, ::-1])
    if mode == "crops":
        height, width = images.shape[1:3]
        crop_h, crop_w = round(height * 0.875), round(width * 0.875)
        dy, dx = height - crop_h, width - crop_w
        for top, left in ((dy // 2, dx // 2), (0, 0), (0, dx), (dy, 0), (dy, dx)):
            crop = images[:, top : top + crop_h, left : left + crop_w]
            views.append(_np_resize(crop, height, width))
    return views


def _manual(model: object, images: np.ndarray, mode: str) -> np.ndarray:
    """The model's probabilities on each NumPy view, averaged by hand."""
    outputs = [
        model.predict(view.astype(np.float32), verbose=0)  # type: ignore[attr-defined]
        for view in _np_views(images, mode)
    ]
    return np.mean(outputs, axis=0)


@pytest.fixture(scope="module")
def model() -> object:
    return tiny_model(seed=3)


def test_check_tta_modes_and_errors() -> None:
    assert [check_tta(v) for v in (False, None, "none", True, "flip", "FLIP", "crops")] == [
        "none", "none", "none", "flip", "flip", "flip", "crops",
    ]  # fmt: skip
    with pytest.raises(xferclass.InvalidArgumentError, match="tta='rotate'.*'flip'"):
        check_tta("rotate")
    with pytest.raises(xferclass.InvalidArgumentTypeError, match="tta=3"):
        check_tta(3)


@pytest.mark.parametrize("mode, count", [("none", 1), ("flip", 2), ("crops", 7)])
def test_views_match_numpy(mode: str, count: int) -> None:
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (2, 32, 24, 3)).astype(np.float32)  # not square
    views = tta_views(images, mode)
    expected = _np_views(images, mode)
    assert len(views) == len(expected) == count
    for view, reference in zip(views, expected, strict=True):
        assert view.shape == images.shape and view.dtype == tf.float32
        # Pixels up to 255 in float32: rounding near 1e-4.
        np.testing.assert_allclose(view.numpy(), reference, rtol=0, atol=1e-3)
    if mode != "none":
        assert not np.allclose(views[1].numpy(), images)  # the mirror is another image


@pytest.mark.parametrize("mode", ["flip", "crops"])
def test_predict_arrays_average_the_views(model: object, mode: str) -> None:
    images, _ = tiny_arrays(10, seed=4)
    plain = model.predict(images, verbose=0)  # type: ignore[attr-defined]
    expected = _manual(model, images, mode)
    assert np.abs(expected - plain).max() > 1e-3  # TTA changes the answer of this model
    result = xferclass.predict(model, images, batch_size=4, tta=mode)  # 4 + 4 + 2
    np.testing.assert_allclose(result.probabilities, expected, rtol=0, atol=ATOL)
    np.testing.assert_allclose(result.probabilities.sum(axis=1), 1.0, atol=ATOL)
    np.testing.assert_array_equal(result.indices, expected.argmax(axis=1))
    if mode == "flip":
        assert xferclass.predict(model, images, tta=True).probabilities == pytest.approx(
            result.probabilities, abs=ATOL
        )
    untouched = xferclass.predict(model, images, tta=False)
    np.testing.assert_allclose(untouched.probabilities, plain, rtol=0, atol=ATOL)


def test_predict_files_and_datasets_get_the_same_views(
    model: object, tiny_dataset_dir: Path
) -> None:
    paths = sorted(str(p) for p in tiny_dataset_dir.rglob("*_0[0-2].*"))
    images = xferclass.read_images(paths, 32)
    expected = _manual(model, images, "crops")
    from_files = xferclass.predict(model, paths, tta="crops", batch_size=4)
    np.testing.assert_allclose(from_files.probabilities, expected, rtol=0, atol=ATOL)
    assert from_files.sources == paths
    labels = np.eye(3, dtype=np.float32)[np.arange(len(paths)) % 3]
    batched = tf.data.Dataset.from_tensor_slices((images, labels)).batch(5)
    unbatched = tf.data.Dataset.from_tensor_slices(images)
    for dataset in (batched, unbatched):
        result = xferclass.predict(model, dataset, tta="crops")
        np.testing.assert_allclose(result.probabilities, expected, rtol=0, atol=ATOL)


@pytest.mark.parametrize("mode", ["flip", "crops"])
def test_evaluate_averages_the_views(model: object, mode: str) -> None:
    dataset = tiny_dataset(n=24, batch_size=8, seed=5)
    images, labels = tiny_arrays(24, seed=5)
    averaged = _manual(model, images, mode)
    metrics = xferclass.evaluate_regression_style(model, dataset, tta=mode)
    assert metrics["n"] == 24
    assert metrics["mse"] == pytest.approx(mean_squared_error(labels, averaged), abs=ATOL)
    assert metrics["mae"] == pytest.approx(mean_absolute_error(labels, averaged), abs=ATOL)
    assert metrics["accuracy"] == np.mean(labels.argmax(1) == averaged.argmax(1))
    plain = xferclass.evaluate_regression_style(model, dataset)
    assert plain == pytest.approx(
        regression_metrics(labels, model.predict(images, verbose=0)),  # type: ignore[attr-defined]
        abs=ATOL,
    )
    assert plain["mse"] != pytest.approx(metrics["mse"], abs=1e-6)


def test_bad_tta_fails_before_any_work(model: object) -> None:
    images, _ = tiny_arrays(2)
    with pytest.raises(xferclass.InvalidArgumentError, match="tta='mirror'"):
        xferclass.predict(model, images, tta="mirror")
    with pytest.raises(xferclass.InvalidArgumentTypeError, match="tta=2"):
        xferclass.evaluate_regression_style(model, tiny_dataset(), tta=2)  # type: ignore[arg-type]


def test_command_line_tta(
    model: object, tiny_dataset_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "model.keras"
    xferclass.save_model(model, path)  # type: ignore[arg-type]
    loaded = xferclass.load_model(path)
    files = sorted(str(p) for p in (tiny_dataset_dir / "square").iterdir())[:3]
    expected = _manual(loaded, xferclass.read_images(files, 32), "flip")

    assert main(["predict", str(path), *files, "--top", "3", "--json", "--tta"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [row["image"] for row in rows] == files
    for row, probabilities in zip(rows, expected, strict=True):
        shown = {int(entry["class"]): entry["probability"] for entry in row["top"]}
        assert shown == pytest.approx(dict(enumerate(probabilities)), abs=ATOL)

    assert main(["evaluate", str(path), str(tiny_dataset_dir), "--json", "--tta", "crops"]) == 0
    printed = json.loads(capsys.readouterr().out)
    dataset = xferclass.load_image_dataset(tiny_dataset_dir, 32, shuffle=False)
    reference = xferclass.evaluate_regression_style(loaded, dataset, tta="crops")
    assert {k: printed[k] for k in reference} == pytest.approx(reference, abs=ATOL)
    assert main(["evaluate", str(path), str(tiny_dataset_dir), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["mse"] != pytest.approx(printed["mse"], abs=1e-7)

    with pytest.raises(SystemExit) as exit_info:
        main(["predict", str(path), files[0], "--tta", "rotate"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'rotate'" in capsys.readouterr().err


# ------------------------------------------------------------ views inside the model


@pytest.mark.parametrize("mode", ["flip", "crops", "rotations"])
def test_views_inside_the_model_give_the_manual_average(model: object, mode: str) -> None:
    images, _ = tiny_arrays(10, seed=4)
    inside = with_views(model, mode)
    assert built_in_views(inside) == mode and built_in_views(model) == "none"
    expected = _manual(model, images, mode)
    assert np.abs(expected - model.predict(images, verbose=0)).max() > 1e-3  # type: ignore[attr-defined]
    np.testing.assert_allclose(inside.predict(images, verbose=0), expected, rtol=0, atol=ATOL)
    # predict and evaluate average the views with no flag, and never twice.
    result = xferclass.predict(inside, images, batch_size=4)
    np.testing.assert_allclose(result.probabilities, expected, rtol=0, atol=ATOL)
    same = xferclass.predict(inside, images, tta=mode)
    np.testing.assert_allclose(same.probabilities, expected, rtol=0, atol=ATOL)
    labels = np.eye(3)[np.arange(10) % 3]
    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(4)
    metrics = xferclass.evaluate_regression_style(inside, dataset)
    assert metrics["mse"] == pytest.approx(mean_squared_error(labels, expected), abs=ATOL)


def test_the_views_layers_match_numpy_and_refuse_what_they_cannot_do() -> None:
    rng = np.random.default_rng(1)
    images = rng.uniform(0, 255, (3, 8, 8, 2)).astype(np.float32)
    stacked = TestTimeViews("rotations")(images).numpy()
    np.testing.assert_array_equal(stacked, np.concatenate(_np_views(images, "rotations")))
    crops = TestTimeViews("crops")(images).numpy()
    np.testing.assert_allclose(crops, np.concatenate(_np_views(images, "crops")), atol=1e-3)
    rows = rng.uniform(size=(6, 4))
    np.testing.assert_allclose(ViewMean(3)(rows).numpy(), rows.reshape(3, 2, 4).mean(0), atol=1e-6)
    with pytest.raises(xferclass.InvalidArgumentError, match="square"):
        TestTimeViews("rotations")(np.zeros((1, 4, 6, 3), np.float32))
    with pytest.raises(xferclass.InvalidArgumentError, match="mode='spin'"):
        TestTimeViews("spin")
    with pytest.raises(xferclass.InvalidArgumentError, match="views=0"):
        ViewMean(0)


def test_a_model_with_views_keeps_its_names_saves_loads_and_refuses_other_views(
    model: object, tmp_path: Path
) -> None:
    inside = with_views(model, "rotations")
    assert inside.get_layer("preprocessing").class_names is None  # none in the tiny model
    with pytest.raises(xferclass.InvalidArgumentError, match="not applied twice"):
        with_views(inside, "flip")
    assert with_views(model, "none") is model
    path = tmp_path / "views.keras"
    xferclass.save_model(inside, path)
    loaded = xferclass.load_model(path)
    images, _ = tiny_arrays(5, seed=9)
    np.testing.assert_allclose(loaded.predict(images, verbose=0), _manual(model, images,
                               "rotations"), rtol=0, atol=ATOL)  # fmt: skip
    assert resolve_tta(loaded, False) == resolve_tta(loaded, "rotations") == "none"
    assert resolve_tta(model, "rotations") == "rotations"
    with pytest.raises(xferclass.InvalidArgumentError, match="already averages its 'rotations'"):
        xferclass.predict(loaded, images, tta="flip")


def test_the_command_line_runs_the_views_inside_a_model_with_no_flag(
    model: object, tiny_dataset_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "views.keras"
    xferclass.save_model(with_views(model, "flip"), path)
    dataset = xferclass.load_image_dataset(tiny_dataset_dir, 32, shuffle=False)
    reference = xferclass.evaluate_regression_style(model, dataset, tta="flip")
    assert main(["evaluate", str(path), str(tiny_dataset_dir), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert {k: printed[k] for k in reference} == pytest.approx(reference, abs=ATOL)
    assert main(["evaluate", str(path), str(tiny_dataset_dir), "--tta", "crops"]) == 1
    assert "already averages its 'flip' views" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["saved_model", "onnx", "openvino", "litert"])
def test_the_views_inside_travel_into_every_export(model: object, tmp_path: Path, fmt: str) -> None:
    from helpers import RUNNERS

    inside = with_views(model, "rotations")
    target = {"saved_model": "sm", "onnx": "m.onnx", "openvino": "m.xml", "litert": "m.tflite"}
    (written, *_) = xferclass.export(inside, tmp_path / target[fmt], format=fmt)
    images, _ = tiny_arrays(6, seed=2)
    expected = _manual(model, images, "rotations")
    # float32 runtimes that fuse and reorder the network's sums: 1e-4 on probabilities.
    np.testing.assert_allclose(RUNNERS[fmt](written, images), expected, rtol=0, atol=1e-4)
