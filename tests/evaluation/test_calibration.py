"""Calibration: the expected calibration error, temperature scaling and its layer."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest

from helpers import run_onnx, run_saved_model, tiny_arrays, tiny_model
from xferclass import InvalidArgumentError
from xferclass.evaluation.calibration import (
    choose_temperature,
    expected_calibration_error,
    fit_temperature,
    with_temperature,
)
from xferclass.layers import Temperature, model_temperature
from xferclass.metrics import calibration_metrics


def _reference_ece(labels: np.ndarray, probabilities: np.ndarray, bins: int) -> float:
    """The textbook definition, one image and one bin at a time."""
    total = 0.0
    for k in range(bins):
        low, high = k / bins, (k + 1) / bins
        inside = [i for i, row in enumerate(probabilities)
                  if low < row.max() <= high or (k == 0 and row.max() == 0.0)]  # fmt: skip
        if inside:
            accuracy = np.mean([probabilities[i].argmax() == labels[i] for i in inside])
            confidence = np.mean([probabilities[i].max() for i in inside])
            total += len(inside) * abs(accuracy - confidence)
    return total / len(labels)


def _overconfident(n: int, seed: int, sharpness: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from softmax(logits), and the softmax of ``sharpness`` times them."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 1.5, (n, 4))
    truth = with_temperature(np.exp(logits), 1.0)
    labels = np.array([rng.choice(4, p=row) for row in truth])
    return labels, with_temperature(truth, 1.0 / sharpness)


@pytest.mark.parametrize("bins", [1, 10, 15])
def test_the_calibration_error_matches_its_definition(bins: int) -> None:
    labels, probabilities = _overconfident(300, seed=bins)
    # Ties at bin edges are where the two could part: put some there.
    probabilities[:20] = [[0.6, 0.2, 0.1, 0.1]] * 20
    expected = _reference_ece(labels, probabilities, bins)
    assert expected_calibration_error(labels, probabilities, bins) == pytest.approx(expected)
    onehot = np.eye(4)[labels]
    assert expected_calibration_error(onehot, probabilities, bins) == pytest.approx(expected)


def test_calibration_metrics_agree_with_scikit_learn_brier_score() -> None:
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    positive = rng.random(200)
    labels = (rng.random(200) < positive).astype(int)
    probabilities = np.stack([1 - positive, positive], axis=1)
    found = calibration_metrics(labels, probabilities)
    # Two classes: the sum over both classes is twice the binary Brier score.
    assert found["brier"] == pytest.approx(2 * sklearn_metrics.brier_score_loss(labels, positive))
    assert found["ece"] == pytest.approx(_reference_ece(labels, probabilities, 15))


def test_the_fitted_temperature_minimises_the_likelihood_as_scipy_finds_it() -> None:
    optimize = pytest.importorskip("scipy.optimize")
    labels, probabilities = _overconfident(1000, seed=1)

    def nll(temperature: float) -> float:
        scaled = with_temperature(probabilities, temperature)
        return float(-np.mean(np.log(scaled[np.arange(len(labels)), labels])))

    found = fit_temperature(labels, probabilities)
    reference = optimize.minimize_scalar(nll, bounds=(0.05, 20.0), method="bounded",
                                         options={"xatol": 1e-8}).x  # fmt: skip
    assert found == pytest.approx(reference, rel=1e-3)
    assert 2.0 < found < 4.0  # the model's logits were 3x too large


def test_a_temperature_is_kept_only_when_it_lowers_the_held_out_calibration_error() -> None:
    labels, probabilities = _overconfident(600, seed=2)
    choice = choose_temperature(labels, probabilities, seed=0)
    assert choice.kept and choice.temperature == choice.fitted > 1.5
    assert choice.ece_after < choice.ece_before
    scaled = with_temperature(probabilities, choice.temperature)
    # The calibrated probabilities are better calibrated on the same images too, and the
    # top class never moves.
    assert expected_calibration_error(labels, scaled) < expected_calibration_error(
        labels, probabilities
    )
    np.testing.assert_array_equal(scaled.argmax(1), probabilities.argmax(1))
    # Already calibrated: 0.7 sure, and right on exactly 70 % of them. Any temperature
    # fitted on part of the images makes the rest worse: none is kept.
    labels = np.array([0] * 70 + [1] * 30)
    calibrated = np.array([[0.7, 0.3]] * 100)
    choice = choose_temperature(labels, calibrated, seed=0)
    assert choice.ece_before == pytest.approx(0.0, abs=1e-12)
    assert not choice.kept and choice.temperature == 1.0
    assert choice.to_dict()["kept"] is False


@pytest.mark.parametrize(
    "labels, probabilities, message",
    [
        ([0, 1], [[0.5, 0.5]], "one class per image"),
        ([0], [[1.0]], "two classes"),
        ([0, 3], [[0.5, 0.5], [0.5, 0.5]], "labels must lie in 0..1"),
        ([0, 1, 0], [[0.5, 0.5]] * 3, "at least 4 images"),
    ],
)
def test_bad_calibration_inputs_are_refused(
    labels: list[int], probabilities: list[list[float]], message: str
) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        choose_temperature(labels, probabilities)


def test_the_temperature_layer_computes_what_numpy_does_and_saves(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    probabilities = with_temperature(np.exp(rng.normal(0, 2, (64, 5))), 1.0).astype("float32")
    probabilities[0] = [1.0, 0.0, 0.0, 0.0, 0.0]  # a zero is floored, not -inf
    inputs = keras.Input((5,))
    model = keras.Model(inputs, Temperature(2.5, name="temperature")(inputs))
    got = model.predict(probabilities, verbose=0)
    expected = with_temperature(probabilities, 2.5)
    np.testing.assert_allclose(got, expected, atol=1e-6)
    np.testing.assert_array_equal(got.argmax(1), probabilities.argmax(1))
    np.testing.assert_allclose(got.sum(1), 1.0, atol=1e-6)
    model.save(tmp_path / "t.keras")
    again = keras.saving.load_model(tmp_path / "t.keras")
    assert model_temperature(again) == 2.5
    np.testing.assert_allclose(again.predict(probabilities, verbose=0), got, atol=1e-7)
    with pytest.raises(InvalidArgumentError, match="must be a positive number"):
        Temperature(0.0)
    with pytest.raises(InvalidArgumentError, match="must be positive"):
        with_temperature(probabilities, -1.0)


def _noisy_dataset(n: int, seed: int) -> Any:
    """Tiny images whose labels are wrong for a third of them: no model can be sure."""
    import tensorflow as tf

    images, labels = tiny_arrays(n, seed=seed)
    rng = np.random.default_rng(seed)
    flip = rng.random(n) < 1 / 3
    classes = labels.argmax(1)
    classes[flip] = (classes[flip] + 1) % labels.shape[1]
    dataset = tf.data.Dataset.from_tensor_slices((images, np.eye(labels.shape[1])[classes]))
    return dataset.batch(16)


def _probabilities(model: Any, dataset: Any) -> np.ndarray:
    return np.concatenate([model.predict_on_batch(x) for x, _ in dataset])


def test_calibrate_folds_the_temperature_into_the_softmax_layer(tmp_path: Path) -> None:
    import xferclass
    from xferclass.backbones.layers import preprocessing_layer
    from xferclass.models import PREDICTIONS

    model = tiny_model()
    held = _noisy_dataset(96, seed=5)
    xferclass.fit(model, _noisy_dataset(96, seed=4), epochs=3, verbose=0, seed=0)
    layer = model.get_layer(PREDICTIONS)
    # Far too sure of itself: its logits ten times what training left.
    layer.set_weights([w * 10.0 for w in layer.get_weights()])
    before = _probabilities(model, held)
    choice = xferclass.calibrate(model, held, engine="keras")
    after = _probabilities(model, held)
    labels = np.concatenate([y for _, y in held]).argmax(1)
    assert choice.kept and choice.temperature > 2.0 and choice.images == 96
    # What the model now gives is numpy's temperature scaling of what it gave, with the
    # same top class on every image.
    np.testing.assert_allclose(after, with_temperature(before, choice.temperature), atol=1e-5)
    np.testing.assert_array_equal(after.argmax(1), before.argmax(1))
    assert expected_calibration_error(labels, after) < expected_calibration_error(labels, before)
    metadata = preprocessing_layer(model).metadata
    assert metadata["calibration"] == choice.to_dict()
    model.save(tmp_path / "calibrated.keras")
    again = xferclass.load_model(tmp_path / "calibrated.keras")
    np.testing.assert_allclose(_probabilities(again, held), after, atol=1e-6)


def test_fit_calibrates_on_the_validation_split_when_asked(tmp_path: Path) -> None:
    import xferclass

    model = tiny_model()
    train, validation = _noisy_dataset(64, seed=6), _noisy_dataset(48, seed=7)
    history = xferclass.fit(model, train, validation, epochs=4, verbose=0, seed=0,
                            calibrate=True)  # fmt: skip
    choice = history.calibration
    assert choice.images == 48
    labels = np.concatenate([y for _, y in validation]).argmax(1)
    refit = choose_temperature(labels, with_temperature(_probabilities(model, validation),
                                                        1.0 / choice.temperature))  # fmt: skip
    # The temperature recorded is the one the validation predictions (before it was
    # folded in) give.
    assert refit.fitted == pytest.approx(choice.fitted, rel=1e-3)


def test_calibration_refuses_what_it_cannot_calibrate_before_training() -> None:
    import xferclass
    from xferclass.evaluation._tta import with_views

    model = tiny_model()
    weights = [w.copy() for w in model.get_weights()]
    train = _noisy_dataset(32, seed=8)
    with pytest.raises(InvalidArgumentError, match="pass validation"):
        xferclass.fit(model, train, epochs=1, verbose=0, calibrate=True)
    for before, after in zip(weights, model.get_weights()):
        np.testing.assert_array_equal(before, after)  # nothing trained
    with pytest.raises(InvalidArgumentError, match="multi-label"):
        xferclass.fit(tiny_model(multi_label=True), train, train, epochs=1, verbose=0,
                      calibrate=True)  # fmt: skip
    with pytest.raises(InvalidArgumentError, match="Dense softmax layer"):
        xferclass.calibrate(with_views(model, "flip"), train)


@pytest.mark.parametrize("views", ["none", "flip"])
def test_the_recipe_calibrates_inside_the_model_and_every_export(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, views: str
) -> None:
    """A plain classifier gets the temperature in its softmax layer (it stays one that
    ``split_classifier`` takes apart); one averaging views gets a Temperature layer."""
    import xferclass
    from xferclass import auto
    from xferclass.evaluation import calibration
    from xferclass.evaluation._tta import with_views
    from xferclass.models import split_classifier

    model = with_views(tiny_model(), views)
    images, _ = tiny_arrays(24, seed=9)
    before = model.predict_on_batch(images)
    labels = np.arange(24) % 3
    forced = calibration.TemperatureChoice(2.0, 2.0, 0.2, 0.1, 24)
    monkeypatch.setattr(calibration, "choose_temperature", lambda *args, **kwargs: forced)
    calibrated, entry = auto._calibrated(model, labels, before, seed=0, fine_tuned=False)
    assert entry["kept"] is True and entry["temperature"] == 2.0
    assert entry["held_out"] == "out-of-fold predictions of every image"
    assert (split_classifier(calibrated) is not None) is (views == "none")
    expected = with_temperature(before, 2.0)
    np.testing.assert_allclose(calibrated.predict_on_batch(images), expected, atol=1e-5)
    np.testing.assert_allclose(
        xferclass.predict(calibrated, images, engine="keras").probabilities, expected, atol=1e-5
    )
    (saved,) = xferclass.export(calibrated, tmp_path / "sm", format="saved_model")
    np.testing.assert_allclose(run_saved_model(saved, images), expected, atol=1e-4)
    if all(importlib.util.find_spec(m) for m in ("onnx", "tf2onnx", "onnxruntime")):
        (onnx,) = xferclass.export(calibrated, tmp_path / "m.onnx", format="onnx")
        np.testing.assert_allclose(run_onnx(onnx, images), expected, atol=1e-4)
    # Not kept: the model is returned as it was.
    kept_not = calibration.TemperatureChoice(1.0, 1.3, 0.1, 0.2, 24)
    monkeypatch.setattr(calibration, "choose_temperature", lambda *args, **kwargs: kept_not)
    same, entry = auto._calibrated(model, labels, before, seed=0, fine_tuned=True)
    assert same is model and entry["kept"] is False
    assert entry["held_out"] == "the fine-tuned model's predictions on fold 0"


def test_the_recipe_reports_its_calibration_and_returns_the_calibrated_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import xferclass
    from conftest import make_shape_dataset
    from xferclass import auto

    root = make_shape_dataset(tmp_path / "data", per_class=10)
    files = sorted(str(p) for p in root.rglob("*") if p.is_file())
    seen: dict[str, Any] = {}
    original = auto._calibrated

    def spy(model: Any, labels: Any, probabilities: Any, **kwargs: Any) -> Any:
        seen["before"] = xferclass.predict(model, files, engine="keras").probabilities
        seen["held_out"] = probabilities
        return original(model, labels, probabilities, **kwargs)

    monkeypatch.setattr(auto, "_calibrated", spy)
    result = xferclass.train_auto(root, budget=60, backbone="test_tiny", weights=None,
                                  overrides={"fine_tune_epochs": 0})  # fmt: skip
    entry = result.report["calibration"]
    assert entry["images"] == len(files) == len(seen["held_out"])
    after = xferclass.predict(result.model, files, engine="keras").probabilities
    temperature = entry["temperature"]  # 1.0 when not kept
    assert entry["kept"] is (temperature != 1.0)
    np.testing.assert_allclose(after, with_temperature(seen["before"], temperature), atol=1e-5)
    text = auto.format_report(result.report)
    assert f"calibration: temperature {entry['fitted']:.3f} fitted on out-of-fold" in text
    assert any(item.startswith("calibration temperature") for item in result.report["measured"])


def test_the_reliability_bins_are_what_the_calibration_error_averages(tmp_path: Path) -> None:
    from xferclass.evaluation.calibration import reliability_bins

    labels, probabilities = _overconfident(400, seed=11)
    counts, accuracy, confidence = reliability_bins(labels, probabilities, 10)
    top, right = probabilities.max(1), probabilities.argmax(1) == labels
    for k in range(10):
        inside = (top > k / 10) & (top <= (k + 1) / 10)
        assert counts[k] == inside.sum()
        if inside.any():
            assert accuracy[k] == pytest.approx(right[inside].mean())
            assert confidence[k] == pytest.approx(top[inside].mean())
    gap = np.sum(counts * np.abs(accuracy - confidence)) / counts.sum()
    assert gap == pytest.approx(expected_calibration_error(labels, probabilities, 10))
    if importlib.util.find_spec("matplotlib") is None:
        pytest.skip('matplotlib is not installed (pip install "xferclass[plots]")')
    from PIL import Image

    from xferclass.plots import plot_reliability

    path = plot_reliability(labels, probabilities, tmp_path / "reliability.png")
    with Image.open(path) as picture:
        assert picture.size == (500, 550)
    with pytest.raises(InvalidArgumentError, match="bins"):
        plot_reliability(labels, probabilities, tmp_path / "r.png", bins=0)
    with pytest.raises(InvalidArgumentError, match="png"):
        plot_reliability(labels, probabilities, tmp_path / "reliability")
