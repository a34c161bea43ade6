"""Unknowns: the unknown score, its threshold, the model's second output and its exports."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

import xferclass
from helpers import CLASSES, RUNNERS, tiny_arrays, tiny_model
from xferclass import InvalidArgumentError
from xferclass.evaluation.unknown import area_under_roc, generated_foreign
from xferclass.layers import UnknownScore, unknown_layer, without_unknown


@pytest.fixture(scope="module")
def trained() -> keras.Model:
    """A tiny classifier trained on colour-coded noise (see ``tiny_arrays``)."""
    images, labels = tiny_arrays(120, seed=1)
    model = tiny_model()
    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(16)
    xferclass.fit(model, dataset, epochs=3, verbose=0, seed=0)
    return model


@pytest.fixture(scope="module")
def scored(trained: keras.Model) -> keras.Model:
    known, _ = tiny_arrays(120, seed=1)
    held, _ = tiny_arrays(200, seed=2)
    return xferclass.detect_unknown(trained, known, held_out=held)


def _brute_auroc(inside: np.ndarray, outside: np.ndarray) -> float:
    pairs = [(o > i) + 0.5 * (o == i) for i in inside for o in outside]
    return float(np.mean(pairs))


def test_the_area_under_roc_counts_the_pairs_the_score_orders() -> None:
    rng = np.random.default_rng(0)
    inside = rng.normal(0, 1, 60).round(1)  # rounded: ties are counted half
    outside = rng.normal(1, 1, 40).round(1)
    assert area_under_roc(inside, outside) == pytest.approx(_brute_auroc(inside, outside))
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    truth = np.r_[np.zeros(60), np.ones(40)]
    expected = sklearn_metrics.roc_auc_score(truth, np.r_[inside, outside])
    assert area_under_roc(inside, outside) == pytest.approx(expected)
    with pytest.raises(InvalidArgumentError, match="at least one"):
        area_under_roc([], [0.1])


def test_the_knn_score_layer_computes_what_numpy_does_and_saves(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    references = rng.normal(0, 1, (30, 8))
    references /= np.linalg.norm(references, axis=1, keepdims=True)
    rows = rng.normal(0, 1, (12, 8)).astype("float32")
    layer = UnknownScore("knn", 0.3, k=3, references=30, width=8)
    layer.references.assign(references.astype("float32"))
    similarity = (rows / np.linalg.norm(rows, axis=1, keepdims=True)) @ references.T
    expected = 1.0 - np.sort(similarity, axis=1)[:, -3]
    np.testing.assert_allclose(layer(rows).numpy(), expected, atol=1e-5)
    inputs = keras.Input((8,))
    model = keras.Model(inputs, layer(inputs))
    model.save(tmp_path / "score.keras")
    again = keras.models.load_model(tmp_path / "score.keras")
    np.testing.assert_allclose(again.predict(rows, verbose=0), expected, atol=1e-5)
    probabilities = np.array([[0.7, 0.2, 0.1], [0.4, 0.35, 0.25]], "float32")
    np.testing.assert_allclose(
        UnknownScore("max_softmax", 0.5)(probabilities).numpy(), [0.3, 0.6], atol=1e-6
    )
    with pytest.raises(InvalidArgumentError, match="kind="):
        UnknownScore("energy", 0.5)
    with pytest.raises(InvalidArgumentError, match="k=4"):
        UnknownScore("knn", 0.5, k=4, references=3, width=8)


def test_detect_unknown_keeps_the_classifier_and_adds_its_score(
    trained: keras.Model, scored: keras.Model
) -> None:
    images, _ = tiny_arrays(40, seed=3)
    plain = xferclass.predict(trained, images, engine="keras")
    again = xferclass.predict(scored, images, engine="keras")
    # The classifier is untouched: the same probabilities, and no unknowns unless asked.
    np.testing.assert_allclose(again.probabilities, plain.probabilities, atol=1e-6)
    assert again.unknown is None and again.unknown_scores is None
    asked = xferclass.predict(scored, images, unknown=True)
    np.testing.assert_allclose(asked.probabilities, plain.probabilities, atol=1e-6)
    layer = unknown_layer(scored)
    assert layer is not None
    assert asked.unknown_scores is not None and asked.unknown is not None
    np.testing.assert_array_equal(asked.unknown, asked.unknown_scores > layer.threshold)
    for name, out, index in zip(asked.predicted_names, asked.unknown, asked.indices):
        assert (name is None) if out else (name == plain.class_names[index])
    assert without_unknown(scored).outputs[0] is scored.outputs[0]
    assert without_unknown(trained) is trained


def test_the_candidates_are_measured_and_the_best_is_kept(scored: keras.Model) -> None:
    measured = unknown_layer(scored).measured  # type: ignore[union-attr]
    names = [(c["score"], c["k"]) for c in measured["candidates"]]
    assert names == [("max_softmax", None), ("knn", 10), ("knn", 5), ("knn", 1)]
    best = max(c["auroc"] for c in measured["candidates"])
    assert measured["auroc"] == best
    assert measured["held_out"] == "200 held-out images"
    assert measured["foreign"] == "96 generated foreign images"
    # Generated foreign images are far from the training images: the kept score tells
    # them apart, and the threshold rejects most of them.
    assert measured["auroc"] > 0.9 and measured["foreign_rejected"] > 0.5


def test_the_threshold_rejects_the_target_share_of_new_held_out_images(
    trained: keras.Model, scored: keras.Model
) -> None:
    """Within sampling error: the threshold is a quantile of 200 held-out scores, and the
    rate is read on 600 other images of the same kind."""
    measured = unknown_layer(scored).measured  # type: ignore[union-attr]
    assert 0.05 - 1 / 200 <= measured["held_out_rejected"] <= 0.05
    fresh, _ = tiny_arrays(600, seed=9)
    rate = float(np.mean(xferclass.predict(scored, fresh, unknown=True).unknown))
    spread = np.sqrt(0.05 * 0.95 * (1 / 200 + 1 / 600))
    assert abs(rate - 0.05) < 4 * spread


def test_a_looser_rejection_rejects_more(trained: keras.Model) -> None:
    known, _ = tiny_arrays(120, seed=1)
    held, _ = tiny_arrays(200, seed=2)
    loose = xferclass.detect_unknown(trained, known, held_out=held, rejection=0.2)
    strict = unknown_layer(xferclass.detect_unknown(trained, known, held_out=held))
    layer = unknown_layer(loose)
    assert layer.measured["score"] == strict.measured["score"]  # type: ignore[union-attr]
    assert layer.threshold < strict.threshold  # type: ignore[union-attr]
    assert 0.2 - 1 / 200 <= layer.measured["held_out_rejected"] <= 0.2  # type: ignore[union-attr]


def test_without_held_out_images_each_training_image_is_scored_against_the_others(
    trained: keras.Model,
) -> None:
    known, _ = tiny_arrays(60, seed=1)
    model = xferclass.detect_unknown(trained, known, max_references=40, rejection=0.1)
    measured = unknown_layer(model).measured  # type: ignore[union-attr]
    assert {c["score"] for c in measured["candidates"]} == {"knn"}
    assert measured["held_out"] == "60 training images, each against the others"
    layer = unknown_layer(model)
    assert layer.references.shape[0] == 40  # type: ignore[union-attr]
    scores = xferclass.predict(model, known, unknown=True).unknown_scores
    assert scores is not None and scores.shape == (60,)


def test_leave_one_out_scores_leave_each_reference_out() -> None:
    from xferclass.evaluation.unknown import _candidate_scores

    rng = np.random.default_rng(3)
    features = rng.normal(0, 1, (50, 6))
    outside = rng.normal(0, 1, (7, 6)) + 3.0
    inside, foreign, references = _candidate_scores(
        None, features, (np.full((7, 3), 1 / 3), outside), max_references=20, seed=0
    )
    assert references is not None and references.shape == (20, 6)
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    # Which training image each reference is: the one it equals.
    which = [int(np.argmin(np.linalg.norm(unit - row, axis=1))) for row in references]
    assert len(set(which)) == 20
    for k in (1, 5, 10):
        expected = []
        for i, row in enumerate(unit):
            similarity = [row @ references[j] for j in range(20) if which[j] != i]
            expected.append(1.0 - sorted(similarity)[-k])
        np.testing.assert_allclose(inside[("knn", k)], expected, atol=1e-9)
        out_unit = outside / np.linalg.norm(outside, axis=1, keepdims=True)
        np.testing.assert_allclose(
            foreign[("knn", k)], 1.0 - np.sort(out_unit @ references.T, axis=1)[:, -k], atol=1e-9
        )
    assert ("max_softmax", 0) not in inside  # no held-out probabilities: not scored


def test_the_scored_model_saves_and_loads(scored: keras.Model, tmp_path: Path) -> None:
    images = generated_foreign((32, 32), 12, seed=4)
    xferclass.save_model(scored, tmp_path / "scored.keras")
    again = xferclass.load_model(tmp_path / "scored.keras")
    first = xferclass.predict(scored, images, unknown=True)
    second = xferclass.predict(again, images, unknown=True)
    assert first.unknown_scores is not None and second.unknown_scores is not None
    np.testing.assert_allclose(second.unknown_scores, first.unknown_scores, atol=1e-6)
    assert unknown_layer(again).measured == unknown_layer(scored).measured  # type: ignore[union-attr]


@pytest.mark.parametrize("format", ["saved_model", "onnx", "openvino", "litert"])
def test_every_export_gives_the_unknown_decisions_of_predict(
    scored: keras.Model, tmp_path: Path, format: str
) -> None:
    from xferclass.deploy.export import _runner, read_unknown_threshold

    module = {"saved_model": "tensorflow", "onnx": "onnxruntime", "openvino": "openvino",
              "litert": "ai_edge_litert"}[format]  # fmt: skip
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed (pip install 'xferclass[export]')")
    out = tmp_path / {"saved_model": "sm", "onnx": "m.onnx", "openvino": "m.xml",
                      "litert": "m.tflite"}[format]  # fmt: skip
    xferclass.export(scored, out, format=format)
    known, _ = tiny_arrays(20, seed=7)
    images = np.concatenate([known, generated_foreign((32, 32), 12, seed=5)])
    expected = xferclass.predict(scored, images, unknown=True)
    threshold = read_unknown_threshold(out, format=format)
    layer = unknown_layer(scored)
    assert threshold == pytest.approx(layer.threshold, rel=1e-6)  # type: ignore[union-attr]
    probabilities, scores = _runner(format, out)(images)
    np.testing.assert_allclose(probabilities, expected.probabilities, atol=1e-4)
    np.testing.assert_allclose(scores.ravel(), expected.unknown_scores, atol=1e-4)
    clear = np.abs(expected.unknown_scores - layer.threshold) > 1e-4  # type: ignore[operator, union-attr]
    np.testing.assert_array_equal((scores.ravel() > threshold)[clear], expected.unknown[clear])
    if format == "litert":
        # The interpreter's output tensors come in no set order; the serving signature
        # names them: output_0 the probabilities, output_1 the unknown score.
        from ai_edge_litert.interpreter import Interpreter

        runner = Interpreter(model_path=str(out)).get_signature_runner()
        named = runner(image=images.astype(np.float32))
        np.testing.assert_allclose(named["output_0"], expected.probabilities, atol=1e-4)
        np.testing.assert_allclose(named["output_1"], expected.unknown_scores, atol=1e-4)
    elif format != "saved_model":
        assert RUNNERS[format](out, images).shape == (len(images), CLASSES)
    if format == "saved_model":
        served = tf.saved_model.load(str(out)).signatures["serving_default"](tf.constant(images))
        np.testing.assert_array_equal(served["unknown"].numpy()[clear], expected.unknown[clear])


def test_evaluation_and_explanations_read_the_classifier(
    trained: keras.Model, scored: keras.Model, tmp_path: Path
) -> None:
    images, labels = tiny_arrays(30, seed=6)
    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(10)
    from xferclass.evaluation.metrics import collect_predictions

    _, plain = collect_predictions(trained, dataset, engine="keras")
    _, again = collect_predictions(scored, dataset, engine="keras")
    np.testing.assert_allclose(again, plain, atol=1e-6)
    maps = xferclass.explain(scored, images[:2])
    np.testing.assert_allclose(maps, xferclass.explain(trained, images[:2]), atol=1e-5)
    if importlib.util.find_spec("matplotlib") is not None:
        from xferclass.plots import plot_predictions, plot_top_losses

        _, worst = plot_top_losses(scored, dataset, tmp_path / "losses.png", n=3)
        _, plain_worst = plot_top_losses(trained, dataset, tmp_path / "plain.png", n=3)
        assert [w.index for w in worst] == [w.index for w in plain_worst]
        assert plot_predictions(scored, dataset, tmp_path / "p.png", n=4).stat().st_size > 0


def test_unknowns_refuse_what_they_cannot_answer(trained: keras.Model, scored: keras.Model) -> None:
    images, labels = tiny_arrays(16, seed=3)
    with pytest.raises(InvalidArgumentError, match="detect_unknown"):
        xferclass.predict(trained, images, unknown=True)
    with pytest.raises(InvalidArgumentError, match="takes no tta"):
        xferclass.predict(scored, images, unknown=True, tta="flip")
    with pytest.raises(InvalidArgumentError, match="runs on Keras"):
        xferclass.predict(scored, images, unknown=True, engine="onnxruntime")
    with pytest.raises(InvalidArgumentError, match="True or False"):
        xferclass.predict(scored, images, unknown="yes")
    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(8)
    with pytest.raises(InvalidArgumentError, match="stale"):
        xferclass.fit(scored, dataset, epochs=1, verbose=0)
    with pytest.raises(InvalidArgumentError, match="stale"):
        xferclass.calibrate(scored, dataset)
    for rejection in (0, 1, 1.5, True, "0.1"):
        with pytest.raises(InvalidArgumentError, match="rejection"):
            xferclass.detect_unknown(trained, images, rejection=rejection)
    with pytest.raises(InvalidArgumentError, match="max_references"):
        xferclass.detect_unknown(trained, images, max_references=1)
    with pytest.raises(InvalidArgumentError, match="single-label"):
        xferclass.detect_unknown(tiny_model(multi_label=True), images)
    # A model without pooled features at its top level: only the top probability can be
    # scored, and that needs held-out images.
    inputs = keras.Input((32, 32, 3))
    flat = keras.layers.GlobalAveragePooling2D()(inputs)
    bare = keras.Model(inputs, keras.layers.Dense(CLASSES, activation="softmax")(flat))
    with pytest.raises(InvalidArgumentError, match="nothing to score"):
        xferclass.detect_unknown(bare, images)
    only = xferclass.detect_unknown(bare, images, held_out=images)
    assert unknown_layer(only).measured["score"] == "max_softmax"  # type: ignore[union-attr]
    with pytest.raises(xferclass.DatasetError, match="empty"):
        xferclass.detect_unknown(trained, [])


def _write_images(folder: Path, images: np.ndarray) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, image in enumerate(images):
        path = folder / f"image_{i:02d}.png"
        path.write_bytes(tf.io.encode_png(np.clip(image, 0, 255).astype("uint8")).numpy())
        paths.append(str(path))
    return paths


def test_the_command_line_detects_and_answers_unknown(
    tiny_dataset_dir: Path, tmp_path: Path
) -> None:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "xferclass", *args], capture_output=True,
                              text=True, timeout=900, env=env)  # fmt: skip

    model = tmp_path / "model.keras"
    done = run("train", str(tiny_dataset_dir), "--backbone", "mobilenet_v2", "--weights", "none",
               "--size", "32", "--epochs", "2", "--seed", "0", "--out", str(model))  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    foreign = tmp_path / "foreign"
    _write_images(foreign, generated_foreign((32, 32), 12, seed=3))
    scored = tmp_path / "scored.keras"
    done = run("detect-unknown", str(model), str(tiny_dataset_dir), "--foreign", str(foreign),
               "--rejection", "0.1", "--out", str(scored), "--quiet", "--json")  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    measured = json.loads(done.stdout)
    assert measured["foreign"] == "12 given foreign images" and measured["rejection"] == 0.1
    done = run("detect-unknown", str(model), str(tiny_dataset_dir), "--out", str(scored))
    assert done.returncode == 1 and "already exists" in done.stderr
    images = sorted(str(p) for p in foreign.iterdir())[:4]
    images += sorted(str(p) for p in (tiny_dataset_dir / "circle").iterdir())[:2]
    done = run("predict", str(scored), *images, "--unknown", "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json.loads(done.stdout)
    threshold = measured["threshold"]
    for row in rows:
        unknown = row["unknown_score"] > threshold
        assert row["predicted"] == ("unknown" if unknown else row["top"][0]["class"])
    done = run("predict", str(scored), *images, "--unknown")
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    for line, row in zip(lines, rows):
        assert ("unknown (score" in line) == (row["predicted"] == "unknown")
    done = run("predict", str(model), *images, "--unknown")
    assert done.returncode == 1 and "detect_unknown" in done.stderr
    # train --unknown: the score measured on the validation images, in the saved model.
    both = tmp_path / "both.keras"
    done = run("train", str(tiny_dataset_dir), "--backbone", "mobilenet_v2", "--weights", "none",
               "--size", "32", "--epochs", "1", "--seed", "0", "--validation-split", "0.25",
               "--unknown", "--quiet", "--out", str(both))  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "unknown score:" in done.stdout and "6 held-out images" in done.stdout
    layer = unknown_layer(xferclass.load_model(both))
    assert layer is not None and layer.measured["held_out"] == "6 held-out images"


def test_a_model_averaging_views_scores_its_features_averaged_over_them(
    trained: keras.Model, tmp_path: Path
) -> None:
    """The recipe's models carry their views, and a temperature after them."""
    from xferclass.evaluation._tta import with_views
    from xferclass.layers import Temperature

    views = with_views(trained, "flip")
    model = keras.Model(views.input, Temperature(1.5, name="temperature")(views.output))
    known, _ = tiny_arrays(80, seed=1)
    scored = xferclass.detect_unknown(model, known, max_references=50)
    layer = unknown_layer(scored)
    assert layer is not None and layer.measured["score"] == "knn"
    images = np.concatenate([tiny_arrays(10, seed=8)[0], generated_foreign((32, 32), 6)])
    found = xferclass.predict(scored, images, unknown=True)
    expected = xferclass.predict(model, images).probabilities
    np.testing.assert_allclose(found.probabilities, expected, atol=1e-6)
    # The features are the mean of the image's and its mirror's pooled features.
    pool = keras.Model(trained.input, trained.get_layer("pool").output)
    mirrored = images[:, :, ::-1, :]
    features = (pool.predict(images, verbose=0) + pool.predict(mirrored, verbose=0)) / 2
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    references = layer.references.numpy()  # type: ignore[union-attr]
    k = layer.k
    expected_scores = 1.0 - np.sort(unit @ references.T, axis=1)[:, -k]
    np.testing.assert_allclose(found.unknown_scores, expected_scores, atol=1e-5)
    xferclass.save_model(scored, tmp_path / "views.keras")
    again = xferclass.predict(xferclass.load_model(tmp_path / "views.keras"), images, unknown=True)
    np.testing.assert_allclose(again.unknown_scores, found.unknown_scores, atol=1e-6)
    assert xferclass.explain(scored, images[:2]).shape == (2, 32, 32)


def test_an_average_of_models_scores_the_mean_similarity_of_its_members(
    trained: keras.Model, tmp_path: Path
) -> None:
    """The recipe's ensembles: each member's features at unit length, side by side."""
    from xferclass.auto._ensemble import build_ensemble
    from xferclass.deploy.export import _runner
    from xferclass.layers import Temperature

    other = tiny_model(seed=7)
    images, labels = tiny_arrays(60, seed=1)
    other.compile(optimizer="adam", loss="categorical_crossentropy")
    other.fit(images, labels, epochs=1, verbose=0)
    ensemble = build_ensemble([trained, other], ["red", "green", "blue"])
    model = keras.Model(ensemble.input, Temperature(0.8, name="temperature")(ensemble.output))
    scored = xferclass.detect_unknown(model, images, max_references=30)
    layer = unknown_layer(scored)
    assert layer is not None and layer.measured["score"] == "knn"
    probe = np.concatenate([tiny_arrays(8, seed=4)[0], generated_foreign((32, 32), 4)])
    found = xferclass.predict(scored, probe, unknown=True)
    np.testing.assert_allclose(
        found.probabilities, xferclass.predict(model, probe).probabilities, atol=1e-6
    )
    units = []
    for member in (trained, other):
        features = keras.Model(member.input, member.get_layer("pool").output).predict(
            probe, verbose=0
        )
        units.append(features / np.linalg.norm(features, axis=1, keepdims=True))
    # Each reference is two unit vectors side by side, scaled by 1/sqrt(2) to unit length.
    references = layer.references.numpy() * np.sqrt(2)  # type: ignore[union-attr]
    halves = references[:, : units[0].shape[1]], references[:, units[0].shape[1] :]
    np.testing.assert_allclose(np.linalg.norm(halves[1], axis=1), 1.0, atol=1e-5)
    # Their cosine similarity: the mean of the members' similarities.
    similarity = (units[0] @ halves[0].T + units[1] @ halves[1].T) / 2
    expected = 1.0 - np.sort(similarity, axis=1)[:, -layer.k]
    np.testing.assert_allclose(found.unknown_scores, expected, atol=1e-5)
    xferclass.save_model(scored, tmp_path / "ensemble.keras")
    again = xferclass.load_model(tmp_path / "ensemble.keras")
    np.testing.assert_allclose(
        xferclass.predict(again, probe, unknown=True).unknown_scores,
        found.unknown_scores, atol=1e-6,
    )  # fmt: skip
    if importlib.util.find_spec("onnxruntime") is not None:
        xferclass.export(scored, tmp_path / "e.onnx", format="onnx")
        _, scores = _runner("onnx", tmp_path / "e.onnx")(probe)
        np.testing.assert_allclose(scores.ravel(), found.unknown_scores, atol=1e-4)


def test_train_refuses_an_unknown_score_for_multi_label_data_before_training() -> None:
    import argparse

    from xferclass.cli import _refuse_unknown_for_multi_label

    with pytest.raises(InvalidArgumentError, match="single-label"):
        _refuse_unknown_for_multi_label(argparse.Namespace(unknown=True), True)
    _refuse_unknown_for_multi_label(argparse.Namespace(unknown=True), False)
    _refuse_unknown_for_multi_label(argparse.Namespace(unknown=False), True)
