"""Multi-label classification: sigmoid models, their saved flag and threshold, label sets,
metrics against scikit-learn, and training with the feature cache and fine-tuning."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

import xferclass
from helpers import SIZE, tiny_model
from xferclass import Preprocessing, build_classifier
from xferclass.metrics import multilabel_metrics, regression_metrics

TAGS = ["red", "green", "blue"]


def multi_hot_arrays(n: int = 96, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Images whose tags are their bright colour channels: any subset of red, green, blue."""
    rng = np.random.default_rng(seed)
    labels = (rng.uniform(size=(n, 3)) < 0.5).astype("float32")
    images = rng.uniform(0, 100, (n, SIZE, SIZE, 3)).astype("float32")
    images += labels[:, None, None, :] * 150.0
    return images, labels


def multi_hot_dataset(n: int = 96, batch_size: int = 16, seed: int = 0) -> tf.data.Dataset:
    images, labels = multi_hot_arrays(n, seed)
    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(batch_size)
    dataset.class_names = list(TAGS)
    return dataset


def binary_crossentropy(labels: np.ndarray, probabilities: np.ndarray) -> float:
    p = np.clip(probabilities.astype(np.float64), 1e-7, 1 - 1e-7)
    return float(-np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p)))


def preprocessing(model: keras.Model) -> Preprocessing:
    return next(layer for layer in model.layers if isinstance(layer, Preprocessing))


def test_build_multi_label_model() -> None:
    model = tiny_model(multi_label=True, threshold=0.3)
    output = model.layers[-1]
    assert output.activation is keras.activations.sigmoid
    assert output.dtype_policy.compute_dtype == "float32"
    config = preprocessing(model).get_config()
    assert config["multi_label"] is True and config["threshold"] == 0.3
    images, _ = multi_hot_arrays(8)
    probabilities = model.predict(images, verbose=0)
    assert probabilities.dtype == np.float32 and probabilities.shape == (8, 3)
    assert (probabilities > 0).all() and (probabilities < 1).all()
    assert not np.allclose(probabilities.sum(axis=1), 1.0)  # independent per class
    single = tiny_model()
    assert single.layers[-1].activation is keras.activations.softmax
    assert "multi_label" not in preprocessing(single).get_config()  # unchanged configs


@pytest.mark.parametrize(
    "kwargs,error,pattern",
    [
        ({"threshold": 0}, xferclass.InvalidArgumentError, "threshold=0 must be strictly"),
        ({"threshold": 1.0}, xferclass.InvalidArgumentError, "threshold=1.0"),
        ({"threshold": "high"}, xferclass.InvalidArgumentTypeError, "threshold='high'"),
        ({"multi_label": "yes"}, xferclass.InvalidArgumentTypeError, "multi_label='yes'"),
    ],
)
def test_build_rejects_bad_multi_label_options(kwargs, error, pattern) -> None:
    with pytest.raises(error, match=pattern):
        build_classifier("test_tiny", num_classes=3, weights=None, input_size=SIZE, **kwargs)


_RELOAD = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import xferclass
    from xferclass import Preprocessing
    model = xferclass.load_model(sys.argv[1])
    layer = next(l for l in model.layers if isinstance(l, Preprocessing))
    images = np.load(sys.argv[2])
    result = xferclass.predict(model, images)
    print(json.dumps({"multi_label": layer.multi_label, "threshold": layer.threshold,
                      "class_names": layer.class_names, "label_sets": result.label_sets,
                      "probabilities": result.probabilities.tolist()}))
    """
)


def test_saved_model_keeps_flag_and_threshold_in_a_fresh_process(tmp_path: Path) -> None:
    model = tiny_model(multi_label=True, threshold=0.45)
    preprocessing(model).class_names = list(TAGS)
    path = tmp_path / "tagger.keras"
    xferclass.save_model(model, path)
    images, _ = multi_hot_arrays(6)
    np.save(tmp_path / "images.npy", images)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    done = subprocess.run(
        [sys.executable, "-c", _RELOAD, str(path), str(tmp_path / "images.npy")],
        capture_output=True, text=True, timeout=300, env=env, check=True,
    )  # fmt: skip
    reloaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert reloaded["multi_label"] is True and reloaded["threshold"] == 0.45
    assert reloaded["class_names"] == TAGS
    expected = model.predict(images, verbose=0)
    got = np.array(reloaded["probabilities"])
    np.testing.assert_allclose(got, expected, atol=1e-5)
    near = np.abs(expected - 0.45) < 1e-4  # too close to the threshold to compare sets
    if not near.any():
        assert reloaded["label_sets"] == [
            [TAGS[j] for j in range(3) if row[j] >= 0.45] for row in expected
        ]


def test_predict_label_sets() -> None:
    model = tiny_model(multi_label=True, threshold=0.5)
    preprocessing(model).class_names = list(TAGS)
    images, _ = multi_hot_arrays(24)
    probabilities = model.predict(images, verbose=0)
    result = xferclass.predict(model, images)
    np.testing.assert_allclose(result.probabilities, probabilities, atol=1e-6)
    sizes = set()
    # The stored threshold, and cuts inside the spread of this model's probabilities.
    for threshold in (None, *np.quantile(result.probabilities, [0.25, 0.5, 0.75]).tolist()):
        cut = 0.5 if threshold is None else threshold
        sets = xferclass.predict(model, images, threshold=threshold).label_sets
        assert sets is not None
        expected = [[TAGS[j] for j in range(3) if p[j] >= cut] for p in result.probabilities]
        assert sets == expected
        sizes |= {len(s) for s in sets}
    assert len(sizes) >= 2  # images with different numbers of labels occur
    assert result.threshold == 0.5
    # the single-label view is still there: the top class
    assert result.predicted_names == [TAGS[j] for j in probabilities.argmax(axis=1)]
    single = xferclass.predict(tiny_model(), images)
    assert single.label_sets is None and single.threshold is None
    with pytest.raises(xferclass.InvalidArgumentError, match="threshold=1.5"):
        xferclass.predict(model, images, threshold=1.5)


def test_evaluate_multi_label_matches_scikit_learn() -> None:
    from sklearn.metrics import (
        average_precision_score,
        classification_report,
        f1_score,
        mean_absolute_error,
        mean_squared_error,
        r2_score,
    )

    model = tiny_model(multi_label=True, threshold=0.4)
    kernel, _ = model.layers[-1].get_weights()
    model.layers[-1].set_weights([kernel * 40, np.array([0.5, -0.5, 0.0], "float32")])
    images, labels = multi_hot_arrays(40)
    p = model.predict(images, verbose=0).astype(np.float64)
    metrics = xferclass.evaluate_regression_style(model, multi_hot_dataset(40), per_class=True)
    assert "ece" not in metrics  # the top-class calibration error is for single-label models
    assert metrics["mae"] == pytest.approx(mean_absolute_error(labels, p), abs=1e-6)
    assert metrics["mse"] == pytest.approx(mean_squared_error(labels, p), abs=1e-6)
    assert metrics["r2"] == pytest.approx(r2_score(labels, p), abs=1e-5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zero-division warnings of scikit-learn
        micro = f1_score(labels, p >= 0.4, average="micro")
        macro = f1_score(labels, p >= 0.4, average="macro")
        average_precision = average_precision_score(labels, p, average="macro")
        report = classification_report(
            labels, (p >= 0.4).astype(int), target_names=TAGS, output_dict=True
        )
    assert metrics["threshold"] == 0.4
    assert metrics["f1_micro"] == pytest.approx(micro, abs=1e-9)
    assert metrics["f1_macro"] == pytest.approx(macro, abs=1e-9)
    assert metrics["mean_average_precision"] == pytest.approx(average_precision, abs=1e-6)
    for name in TAGS:
        for field in ("precision", "recall", "f1-score", "support"):
            assert metrics["per_class"][name][field] == pytest.approx(report[name][field])
    other = xferclass.evaluate_regression_style(model, multi_hot_dataset(40), threshold=0.6)
    assert other["f1_micro"] == pytest.approx(
        multilabel_metrics(labels, p, threshold=0.6)["f1_micro"], abs=1e-9
    )


def _trained_quality(model: keras.Model) -> tuple[float, float]:
    images, labels = multi_hot_arrays(96, seed=1)
    p = model.predict(images, verbose=0)
    return binary_crossentropy(labels, p), multilabel_metrics(labels, p)["f1_micro"]


def test_fit_on_cached_features_and_fine_tune_learn_multi_label() -> None:
    train = multi_hot_dataset(96, seed=0)
    model = tiny_model(multi_label=True)
    before, _ = _trained_quality(model)
    # What a model that learned nothing scores: every tag on every image (F1 2/3 at the
    # data's density of one half). Trained models score about 0.8 here; the margin
    # below leaves room for thread-order differences between machines.
    _, labels = multi_hot_arrays(96, seed=1)
    chance = multilabel_metrics(labels, np.ones_like(labels))["f1_micro"]
    xferclass.fit(model, train, epochs=30, learning_rate=1e-2, cache=True, verbose=0)
    after_fit, f1_fit = _trained_quality(model)
    assert model.layers[-1].activation is keras.activations.sigmoid
    assert after_fit < 0.8 * before and f1_fit > chance + 0.05, (before, after_fit, f1_fit)
    xferclass.fine_tune(
        model, train, head_epochs=0, fine_tune_epochs=3, unfreeze=0.5, learning_rate=1e-3, verbose=0
    )
    after_tune, f1_tune = _trained_quality(model)
    assert after_tune < before and f1_tune > chance + 0.05, (before, after_tune, f1_tune)
    metrics = xferclass.evaluate_regression_style(model, train)
    assert metrics["f1_micro"] == pytest.approx(
        multilabel_metrics(*_reference(model, train))["f1_micro"], abs=1e-9
    )
    assert regression_metrics(*_reference(model, train))["n"] == 96


def _reference(model: keras.Model, dataset: tf.data.Dataset) -> tuple[np.ndarray, np.ndarray]:
    labels, probabilities = [], []
    for x, y in dataset:
        labels.append(y.numpy())
        probabilities.append(model.predict_on_batch(x))
    return np.concatenate(labels), np.concatenate(probabilities).astype(np.float64)
