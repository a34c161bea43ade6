"""Averaged models of the automatic recipe: which averages are candidates, and the averaged
model as an ordinary classifier (predictions, saving, TTA, the report, export)."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

import xferclass
from helpers import tiny_arrays
from xferclass import auto
from xferclass.auto._ensemble import Ensemble, build_ensemble, ensemble_candidates
from xferclass.auto._search import Choice
from xferclass.evaluation._auto_report import store_report

NAMES = ["circle", "square", "triangle"]


def _probabilities(rng: np.random.Generator, labels: np.ndarray, right: float) -> np.ndarray:
    found = rng.dirichlet(np.ones(3), len(labels))
    hit = rng.uniform(size=len(labels)) < right
    found[hit, labels[hit]] += 2.0
    return found / found.sum(1, keepdims=True)


def test_averages_of_the_best_pair_of_each_backbone_of_one_size_are_candidates() -> None:
    rng = np.random.default_rng(0)
    labels = np.arange(300) % 3
    a = Choice("a", 288, "plain", "none", 10, "none")
    a_worse = Choice("a", 288, "plain", "balanced", 10, "none")
    b = Choice("b", 288, "flip", "sqrt", 5, "none")
    c = Choice("c", 288, "plain", "none", 15, "none")
    c_flip = Choice("c", 288, "flip", "none", 15, "flip")
    # The best of all, at another size: no average takes it (its members share one size).
    d = Choice("d", 224, "plain", "none", 10, "none")
    rights = {a: 0.9, a_worse: 0.5, b: 0.8, c: 0.7, c_flip: 0.7, d: 0.95}
    oof = {choice: _probabilities(rng, labels, right) for choice, right in rights.items()}
    found = ensemble_candidates(oof, labels, "accuracy")
    # Per TTA and size: the best of each pair, ranked; averages of the best 2 and 3. "flip"
    # has one pair, and 224 px one pair.
    assert set(found) == {Ensemble((a, b)), Ensemble((a, b, c))}
    np.testing.assert_allclose(found[Ensemble((a, b, c))], (oof[a] + oof[b] + oof[c]) / 3)
    assert Ensemble((a, b)).tta == "none" and "average of" in Ensemble((a, b)).label()


def test_the_members_of_an_average_are_chosen_on_the_rows_given() -> None:
    labels = np.arange(200) % 2
    first = np.arange(200) < 100
    # Two recipes of backbone "a": one right on the first half only, one on the second.
    a_first = Choice("a", 224, "plain", "none", 10, "none")
    a_second = Choice("a", 224, "plain", "sqrt", 10, "none")
    b = Choice("b", 224, "plain", "none", 10, "none")
    right = {a_first: first, a_second: ~first, b: np.arange(200) % 4 != 0}
    oof = {}
    for choice, hit in right.items():
        guess = np.where(hit, labels, 1 - labels)
        oof[choice] = np.eye(2)[guess] * 0.8 + 0.1
    on_first = ensemble_candidates(oof, labels, "accuracy", np.flatnonzero(first))
    on_second = ensemble_candidates(oof, labels, "accuracy", np.flatnonzero(~first))
    # The pairs ranked on those rows too: "a" beats "b" on either half, where one of its
    # recipes is always right.
    assert list(on_first) == [Ensemble((a_first, b))]
    assert list(on_second) == [Ensemble((a_second, b))]
    np.testing.assert_allclose(on_second[Ensemble((a_second, b))], (oof[a_second] + oof[b]) / 2)
    # Every row by default: the two recipes of "a" tie at 0.5, "b" (0.75) ranks first.
    assert list(ensemble_candidates(oof, labels, "accuracy")) == [Ensemble((b, a_first))]


def _member(seed: int, size: int) -> keras.Model:
    keras.utils.set_random_seed(seed)
    return xferclass.build_classifier("test_tiny", num_classes=3, weights=None, input_size=size)


def test_the_averaged_model_predicts_the_mean_and_works_like_any_classifier(
    tmp_path: Path,
) -> None:
    first, second, third = _member(1, 48), _member(2, 48), _member(3, 48)
    model = build_ensemble([first, second, third], NAMES)
    assert model.input_shape == (None, 48, 48, 3) and model.output_shape == (None, 3)
    images, _ = tiny_arrays(6, size=48)
    # Each member gets the very pixels given (no resizing inside the average).
    expected = (first.predict(images, verbose=0) + second.predict(images, verbose=0)
                + third.predict(images, verbose=0)) / 3  # fmt: skip
    np.testing.assert_allclose(model.predict(images, verbose=0), expected, atol=1e-5)
    # Class names and the report travel with it, through a saved file.
    assert store_report(model, {"plan": {"backbone": "test_tiny + test_tiny"}})
    path = tmp_path / "average.keras"
    xferclass.save_model(model, path)
    loaded = xferclass.load_model(path)
    np.testing.assert_allclose(loaded.predict(images, verbose=0), expected, atol=1e-5)
    assert auto.read_report(path) == {"plan": {"backbone": "test_tiny + test_tiny"}}
    predictions = xferclass.predict(loaded, images)
    assert list(predictions.class_names) == NAMES
    flipped = xferclass.predict(loaded, images, tta="flip")
    mirror = model.predict(images[:, :, ::-1], verbose=0)
    np.testing.assert_allclose(flipped.probabilities, (expected + mirror) / 2, atol=1e-5)


def test_members_of_different_sizes_are_refused() -> None:
    # A member at 32 px inside a 48 px model would see the image resized twice (to 48 px,
    # then to 32 px): pixels that no measurement saw.
    with pytest.raises(xferclass.InvalidArgumentError, match="resized twice"):
        build_ensemble([_member(1, 48), _member(2, 32)], NAMES)


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["saved_model", "onnx", "openvino", "litert"])
def test_the_averaged_model_exports_and_its_artifacts_verify(tmp_path: Path, fmt: str) -> None:
    model = build_ensemble([_member(1, 32), _member(2, 32)], NAMES)
    target = {"saved_model": "sm", "onnx": "m.onnx", "openvino": "m.xml", "litert": "m.tflite"}
    written = xferclass.export(model, tmp_path / target[fmt], format=fmt)
    assert written and all(Path(p).exists() for p in written)


def _heads_average() -> keras.Model:
    from xferclass.auto._ensemble import build_head_average

    classifier = _member(4, 32)
    rng = np.random.default_rng(0)
    dim = int(classifier.get_layer("pool").output.shape[-1])
    heads = [
        [rng.normal(size=(dim, 8)) * 0.3, rng.normal(size=8) * 0.1,
         rng.normal(size=(8, 3)) * 0.3, rng.normal(size=3) * 0.1]
        for _ in range(3)
    ]  # fmt: skip
    return build_head_average(classifier, heads)


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["saved_model", "onnx", "openvino", "litert"])
def test_averaged_heads_export_and_their_artifacts_verify(tmp_path: Path, fmt: str) -> None:
    model = _heads_average()
    target = {"saved_model": "sm", "onnx": "m.onnx", "openvino": "m.xml", "litert": "m.tflite"}
    written = xferclass.export(model, tmp_path / target[fmt], format=fmt)
    assert written and all(Path(p).exists() for p in written)
