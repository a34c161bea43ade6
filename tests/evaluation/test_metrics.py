from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

import xferclass
from helpers import tiny_arrays, tiny_dataset, tiny_model
from xferclass.metrics import (
    collect_predictions,
    multilabel_metrics,
    per_class_report,
    regression_metrics,
)


def _sklearn(y, p):
    return {
        "mae": mean_absolute_error(y, p),
        "mse": mean_squared_error(y, p),
        "rmse": np.sqrt(mean_squared_error(y, p)),
        "r2": r2_score(y, p),
        "accuracy": np.mean(y.argmax(1) == p.argmax(1)),
    }


def _random_case(seed, n, k):
    rng = np.random.default_rng(seed)
    y = np.eye(k)[rng.integers(0, k, n)]
    logits = rng.normal(size=(n, k)) * 3
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return y, p


@pytest.mark.parametrize("seed,n,k", [(0, 50, 3), (1, 7, 10), (2, 200, 2)])
def test_matches_scikit_learn(seed, n, k):
    y, p = _random_case(seed, n, k)
    ours = regression_metrics(y, p)
    for key, value in _sklearn(y, p).items():
        assert ours[key] == pytest.approx(value, rel=1e-12, abs=1e-12)
    assert ours["n"] == n


def test_constant_class_column_follows_scikit_learn():
    # Class 2 never occurs: its label column is constant, so scikit-learn scores it 1
    # if predicted exactly (all zeros) and 0 otherwise.
    y = np.array([[1, 0, 0], [0, 1, 0], [1, 0, 0]], float)
    exact = np.array([[0.9, 0.1, 0.0], [0.2, 0.8, 0.0], [0.6, 0.4, 0.0]])
    off = np.array([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.6, 0.3, 0.1]])
    for p in (exact, off):
        assert regression_metrics(y, p)["r2"] == pytest.approx(r2_score(y, p), abs=1e-12)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.integers(2, 40), st.integers(2, 6))
def test_matches_scikit_learn_property(seed, n, k):
    y, p = _random_case(seed, n, k)
    ours = regression_metrics(y, p)
    for key, value in _sklearn(y, p).items():
        assert ours[key] == pytest.approx(value, rel=1e-9, abs=1e-9)


def test_perfect_and_uniform_predictions():
    y = np.eye(4)[[0, 1, 2, 3, 0]]
    perfect = regression_metrics(y, y)
    assert perfect["mae"] == 0 and perfect["r2"] == 1 and perfect["accuracy"] == 1
    uniform = regression_metrics(y, np.full_like(y, 0.25))
    # MSE of a uniform guess: ((0.75)^2 + 3 * 0.25^2) / 4
    assert uniform["mse"] == pytest.approx((0.75**2 + 3 * 0.25**2) / 4)


def test_brier_score_relation():
    y, p = _random_case(5, 30, 5)
    brier = np.mean(np.sum((y - p) ** 2, axis=1))
    assert regression_metrics(y, p)["mse"] * 5 == pytest.approx(brier)


def test_evaluate_regression_style_on_a_model():
    model = tiny_model()
    dataset = tiny_dataset(40, batch_size=16)
    metrics = xferclass.evaluate_regression_style(model, dataset)
    images, labels = tiny_arrays(40)
    reference = _sklearn(labels, model.predict(images, verbose=0).astype(np.float64))
    for key, value in reference.items():
        assert metrics[key] == pytest.approx(value, abs=1e-6)
    assert metrics["n"] == 40


def test_evaluation_refuses_the_model_classes_in_another_order():
    from xferclass.runtime._common import store_class_names

    model = tiny_model()
    store_class_names(model, ["red", "green", "blue"])
    dataset = tiny_dataset(16, batch_size=8)
    dataset.class_names = ["blue", "green", "red"]
    both = r"\['red', 'green', 'blue'\].*\['blue', 'green', 'red'\]"
    with pytest.raises(xferclass.DatasetError, match=f"another order.*{both}"):
        xferclass.evaluate_regression_style(model, dataset)
    with pytest.raises(xferclass.DatasetError, match="another order"):
        collect_predictions(model, dataset)
    dataset.class_names = ["red", "green", "blue"]
    assert xferclass.evaluate_regression_style(model, dataset)["n"] == 16


def test_verbose_takes_fits_values_everywhere(capsys):
    model = tiny_model()
    images, _ = tiny_arrays(4)
    dataset = tiny_dataset(8, batch_size=4)
    xferclass.predict(model, images)
    xferclass.evaluate_regression_style(model, dataset)
    assert capsys.readouterr().out == ""  # one-pass functions are silent by default
    xferclass.predict(model, images, verbose="auto")  # "auto" is 1, as in fit: a bar
    assert "1/1" in capsys.readouterr().out
    collect_predictions(model, dataset, verbose="auto")
    assert "2/2" in capsys.readouterr().out
    for bad in (True, 3, "loud"):
        with pytest.raises(xferclass.InvalidArgumentError, match="must be 0, 1, 2 or 'auto'"):
            xferclass.predict(model, images, verbose=bad)
        with pytest.raises(xferclass.InvalidArgumentError, match="must be 0, 1, 2 or 'auto'"):
            xferclass.evaluate_regression_style(model, dataset, verbose=bad)
        with pytest.raises(xferclass.InvalidArgumentError, match="must be 0, 1, 2 or 'auto'"):
            xferclass.fit(model, dataset, epochs=1, verbose=bad)


def test_reshuffling_dataset_pairs_labels_with_their_own_predictions():
    model = tiny_model()
    images, labels = tiny_arrays(40)
    shuffled = (
        tf.data.Dataset.from_tensor_slices((images, labels))
        .shuffle(40, reshuffle_each_iteration=True)
        .batch(8)
    )
    y, p = collect_predictions(model, shuffled)
    order = np.lexsort(y.T)
    reference = model.predict(images, verbose=0)
    expected = regression_metrics(labels, reference)
    got = regression_metrics(y[order], p[order])
    assert got["mse"] == pytest.approx(expected["mse"], abs=1e-6)


def test_bad_inputs():
    with pytest.raises(ValueError, match=r"must both be \(n, k\)"):
        regression_metrics(np.eye(3), np.eye(2))
    empty = tf.data.Dataset.from_tensor_slices(
        (np.zeros((0, 32, 32, 3), "float32"), np.zeros((0, 3), "float32"))
    ).batch(4)
    with pytest.raises(xferclass.DatasetError, match="empty"):
        xferclass.evaluate_regression_style(tiny_model(), empty)
    with pytest.raises(xferclass.DatasetError, match="tf.data.Dataset"):
        xferclass.evaluate_regression_style(tiny_model(), [1, 2, 3])


# --------------------------------------------------------------------------------------
# Multi-label metrics and the per-class report, against scikit-learn
# --------------------------------------------------------------------------------------


def _multilabel_case(seed, n, k, empty_class=False):
    rng = np.random.default_rng(seed)
    y = (rng.uniform(size=(n, k)) < 0.4).astype(float)
    if empty_class:
        y[:, -1] = 0  # a class without any positive example
    p = 1 / (1 + np.exp(-(rng.normal(size=(n, k)) * 2 + (y - 0.5) * 2)))
    p[rng.uniform(size=(n, k)) < 0.2] = 0.5  # ties, and values at the threshold
    return y, p


def _quiet(function, *args, **kwargs):
    """A scikit-learn call with its zero-division warnings silenced."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return function(*args, **kwargs)


@pytest.mark.parametrize(
    "seed,n,k,threshold,empty",
    [(0, 60, 4, 0.5, False), (1, 9, 7, 0.3, True), (2, 200, 2, 0.7, False), (3, 5, 3, 0.5, True)],
)
def test_multilabel_metrics_match_scikit_learn(seed, n, k, threshold, empty):
    from sklearn.metrics import average_precision_score, f1_score

    y, p = _multilabel_case(seed, n, k, empty)
    ours = multilabel_metrics(y, p, threshold=threshold)
    predicted = p >= threshold
    assert ours["f1_micro"] == pytest.approx(
        _quiet(f1_score, y, predicted, average="micro"), abs=1e-12
    )
    assert ours["f1_macro"] == pytest.approx(
        _quiet(f1_score, y, predicted, average="macro"), abs=1e-12
    )
    assert ours["mean_average_precision"] == pytest.approx(
        _quiet(average_precision_score, y, p, average="macro"), abs=1e-12
    )
    assert ours["threshold"] == threshold


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 30), st.integers(2, 6), st.floats(0.05, 0.95))
def test_multilabel_metrics_match_scikit_learn_property(seed, n, k, threshold):
    from sklearn.metrics import average_precision_score, f1_score

    y, p = _multilabel_case(seed, n, k, empty_class=seed % 3 == 0)
    p = np.round(p, 1)  # many ties
    ours = multilabel_metrics(y, p, threshold=threshold)
    for average in ("micro", "macro"):
        expected = _quiet(f1_score, y, p >= threshold, average=average)
        assert ours[f"f1_{average}"] == pytest.approx(expected, abs=1e-12)
    expected = _quiet(average_precision_score, y, p, average="macro")
    assert ours["mean_average_precision"] == pytest.approx(expected, abs=1e-12)


def _assert_same_report(ours, reference):
    assert list(ours) == list(reference)
    for key, value in reference.items():
        if isinstance(value, dict):
            assert ours[key]["support"] == value["support"], key
            for field in ("precision", "recall", "f1-score"):
                assert ours[key][field] == pytest.approx(value[field], abs=1e-12), (key, field)
        else:
            assert ours[key] == pytest.approx(value, abs=1e-12), key


@pytest.mark.parametrize("seed,n,k", [(0, 50, 3), (1, 7, 10), (2, 200, 2), (3, 30, 5)])
def test_per_class_report_matches_classification_report(seed, n, k):
    from sklearn.metrics import classification_report

    y, p = _random_case(seed, n, k)
    names = [f"class_{j}" for j in range(k)]
    reference = _quiet(
        classification_report, y.argmax(1), p.argmax(1), labels=list(range(k)),
        target_names=names, output_dict=True,
    )  # fmt: skip
    _assert_same_report(per_class_report(y, p, names), reference)


@pytest.mark.parametrize("seed,n,k,threshold", [(0, 60, 4, 0.5), (1, 9, 7, 0.3), (3, 5, 3, 0.6)])
def test_per_class_report_multilabel_matches_classification_report(seed, n, k, threshold):
    from sklearn.metrics import classification_report

    y, p = _multilabel_case(seed, n, k, empty_class=True)
    reference = _quiet(
        classification_report, y, (p >= threshold).astype(int), labels=list(range(k)),
        output_dict=True,
    )  # fmt: skip
    ours = per_class_report(y, p, multi_label=True, threshold=threshold)
    _assert_same_report(ours, reference)


def test_evaluate_per_class_on_a_model():
    from sklearn.metrics import classification_report

    model = tiny_model()
    dataset = tiny_dataset(40, batch_size=16)
    metrics = xferclass.evaluate_regression_style(model, dataset, per_class=True)
    images, labels = tiny_arrays(40)
    predicted = model.predict(images, verbose=0).argmax(1)
    reference = _quiet(
        classification_report, labels.argmax(1), predicted, labels=[0, 1, 2],
        target_names=["red", "green", "blue"], output_dict=True,
    )  # fmt: skip
    _assert_same_report(metrics["per_class"], reference)
    assert "f1_micro" not in metrics  # single-label models get no multi-label metrics
    # Calibration beside the Brier score: scikit-learn's multi-class Brier score (the
    # mean over images of the squared distance to the one-hot label) and the ECE.
    from sklearn.metrics import brier_score_loss

    p = model.predict(images, verbose=0).astype(np.float64)
    brier = np.mean([brier_score_loss(labels[:, k], p[:, k]) for k in range(3)]) * 3
    assert metrics["brier"] == pytest.approx(brier, abs=1e-6)
    confidence, right = p.max(1), p.argmax(1) == labels.argmax(1)
    edges = np.linspace(0, 1, 16)
    ece = sum(abs(right[m].mean() - confidence[m].mean()) * m.sum()
              for m in ((confidence > lo) & (confidence <= hi) for lo, hi in zip(edges, edges[1:]))
              if m.any()) / len(p)  # fmt: skip
    assert metrics["ece"] == pytest.approx(ece, abs=1e-6)


def test_multilabel_and_report_bad_inputs():
    y, p = _multilabel_case(0, 10, 3)
    for threshold in (0, 1, 1.5, True, "0.5"):
        with pytest.raises(xferclass.InvalidArgumentError, match="threshold"):
            multilabel_metrics(y, p, threshold=threshold)
    with pytest.raises(xferclass.InvalidArgumentError, match=r"must both be \(n, k\)"):
        multilabel_metrics(y, p[:, :2])
    with pytest.raises(xferclass.InvalidArgumentError, match="class_names has 2 names for 3"):
        per_class_report(y, p, ["a", "b"])
