"""Reduced precision: when ``engine="auto"`` may run a frozen pass in bfloat16, how it
judges the outputs against float32 on the pass's own images, and what the caller is told.

The judging functions are checked on generated outputs against NumPy and scikit-learn.
The choice itself runs OpenVINO (the ``export`` extra) with a fake clock; on a CPU
without bfloat16 OpenVINO computes the "bf16" session in float32, so the tests also
replace its outputs where they need a harmful precision.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.linear_model import RidgeClassifier

import xferclass
from helpers import fresh_runtime_cache, tiny_arrays, tiny_dataset, tiny_model
from xferclass.models import POOL
from xferclass.runtime import _runtime
from xferclass.runtime._common import check_engine, engine_used, forward_function

needs_openvino = pytest.mark.skipif(
    not all(importlib.util.find_spec(m) for m in ("onnx", "tf2onnx", "openvino")),
    reason="needs onnx, tf2onnx and openvino (pip install 'xferclass[export]')",
)


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test converts into its own empty cache folder and forgets earlier choices."""
    return fresh_runtime_cache(tmp_path, monkeypatch)


@pytest.fixture
def _bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    """A CPU that computes bfloat16 (and no int8), with reduced precision allowed."""
    monkeypatch.setenv("XFERCLASS_PRECISION", "auto")
    monkeypatch.setattr(_runtime, "cpu_bf16", lambda: True)
    monkeypatch.setattr(_runtime, "cpu_int8", lambda: False)
    monkeypatch.setenv("XFERCLASS_CONVERSION_SECONDS", "0")


# ---------------------------------------------------------------- the setting


@pytest.mark.parametrize(
    "value,expected", [("", "auto"), ("auto", "auto"), (" F32 ", "f32"), ("bf16", "bf16")]
)
def test_the_precision_setting(monkeypatch: pytest.MonkeyPatch, value: str, expected: str) -> None:
    monkeypatch.setenv("XFERCLASS_PRECISION", value)
    assert _runtime.precision_setting() == expected


def test_an_unknown_precision_setting_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XFERCLASS_PRECISION", "int4")
    with pytest.raises(xferclass.InvalidArgumentError, match="XFERCLASS_PRECISION='int4'"):
        _runtime.precision_setting()


@needs_openvino
def test_reduced_precision_is_offered_only_where_the_cpu_has_it_and_it_is_allowed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("XFERCLASS_PRECISION", "auto")
    monkeypatch.setattr(_runtime, "cpu_bf16", lambda: True)
    monkeypatch.setattr(_runtime, "cpu_int8", lambda: False)
    assert _runtime.reduced_runtimes() == ["openvino-bf16"]
    monkeypatch.setattr(_runtime, "cpu_int8", lambda: True)
    assert _runtime.reduced_runtimes() == ["openvino-bf16", "openvino-int8"]
    monkeypatch.setattr(_runtime, "cpu_bf16", lambda: False)
    assert _runtime.reduced_runtimes() == ["openvino-int8"]
    monkeypatch.setenv("XFERCLASS_PRECISION", "bf16")  # bfloat16 at most: no int8
    assert _runtime.reduced_runtimes() == []
    monkeypatch.setattr(_runtime, "cpu_bf16", lambda: True)
    assert _runtime.reduced_runtimes() == ["openvino-bf16"]
    monkeypatch.setenv("XFERCLASS_PRECISION", "f32")
    assert _runtime.reduced_runtimes() == []
    assert check_engine("openvino-bf16") == "openvino-bf16"
    assert check_engine("openvino-int8") == "openvino-int8"


# ---------------------------------------------------------------- judging


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def _with_top_class_moved(probabilities: np.ndarray, rows: int) -> np.ndarray:
    """The first ``rows`` rows with their two highest probabilities swapped."""
    moved = probabilities.copy()
    for row in range(rows):
        first, second = np.argsort(moved[row])[[-1, -2]]
        moved[row, [first, second]] = moved[row, [second, first]]
    return moved


@pytest.mark.parametrize("moved,accepted", [(0, True), (1, True), (2, False), (10, False)])
def test_probabilities_are_judged_by_their_decisions(moved: int, accepted: bool) -> None:
    rng = np.random.default_rng(0)
    expected = _softmax(rng.normal(0, 3, (100, 5)))
    actual = _with_top_class_moved(expected, moved)
    verdict, reason = _runtime.harmless(expected, actual, None, probabilities=True)
    assert verdict is accepted
    agreement = np.mean(expected.argmax(1) == actual.argmax(1))
    assert agreement == pytest.approx(1 - moved / 100)
    assert f"{agreement:.1%} of 100 images" in reason


def test_multi_label_probabilities_are_judged_by_their_label_sets() -> None:
    rng = np.random.default_rng(1)
    expected = rng.uniform(0, 1, (200, 4))  # sigmoid outputs: rows do not sum to 1
    actual = expected.copy()
    assert _runtime.harmless(expected, actual, None, probabilities=True)[0]
    actual[:2, 0] = 1 - actual[:2, 0]  # two rows of 200 change their label set: 99%
    assert _runtime.harmless(expected, actual, None, probabilities=True)[0]
    actual[2, 0] = 1 - actual[2, 0]  # three: 98.5%
    changed = np.any((expected >= 0.5) != (actual >= 0.5), axis=1).mean()
    assert changed == pytest.approx(3 / 200)
    assert not _runtime.harmless(expected, actual, None, probabilities=True)[0]


def _clusters(rows: int, classes: int, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Features of overlapping class clusters (a probe scores well, not perfectly)."""
    rng = np.random.default_rng(seed)
    labels = np.arange(rows) % classes
    centres = rng.normal(0, 1, (classes, dim))
    features = np.maximum(centres[labels] + rng.normal(0, 1.5, (rows, dim)), 0)  # ReLU-like
    return features, labels


def test_the_probe_is_scikit_learn_ridge_classifier_on_standardised_features() -> None:
    features, labels = _clusters(128, 4, 40, seed=2)
    folds = (np.arange(len(labels)) // 4) % _runtime.PROBE_FOLDS  # each class in each fold
    got = _runtime._probe_scores(features, labels, folds)
    expected = np.zeros(len(labels), dtype=bool)
    for fold in range(_runtime.PROBE_FOLDS):
        train, test = folds != fold, folds == fold
        mean, scale = features[train].mean(0), features[train].std(0) + 1e-6
        x = (features[train] - mean) / scale
        alpha = _runtime.PROBE_RIDGE * float(np.sum(x * x)) / len(x)
        probe = RidgeClassifier(alpha=alpha).fit(x, labels[train])
        expected[test] = probe.predict((features[test] - mean) / scale) == labels[test]
    np.testing.assert_array_equal(got, expected)
    assert 0.4 < got.mean() < 1.0  # a probe that learns something, not everything


def test_features_are_judged_by_a_probe_on_the_labels() -> None:
    features, labels = _clusters(128, 4, 40, seed=3)
    rng = np.random.default_rng(4)
    # bfloat16's rounding (8 bits of mantissa: relative error up to 2^-9) leaves the probe.
    rounded = features * (1 + rng.uniform(-(2.0**-9), 2.0**-9, features.shape))
    verdict, reason = _runtime.harmless(features, rounded, labels, probabilities=False)
    assert verdict, reason
    assert "standard error" in reason and "128 images" in reason
    # Features that lost what told the classes apart do not.
    lost = rng.normal(features.mean(), features.std(), features.shape)
    verdict, reason = _runtime.harmless(features, lost, labels, probabilities=False)
    assert not verdict, reason
    # One-hot labels are read as class indices.
    one_hot = np.eye(4)[labels]
    assert _runtime.harmless(features, rounded, one_hot, probabilities=False)[0]


@pytest.mark.parametrize(
    "labels,reason",
    [
        (None, "features without labels are not judged"),
        (np.zeros(64, dtype=int), "too few of each class"),
        (np.arange(64) % 40, "too few of each class"),
    ],
)
def test_features_without_enough_labels_keep_float32(labels: Any, reason: str) -> None:
    features, _ = _clusters(64, 4, 8, seed=5)
    verdict, why = _runtime.harmless(features, features, labels, probabilities=False)
    assert not verdict and reason in why


def test_outputs_of_another_shape_or_not_finite_are_refused() -> None:
    features, labels = _clusters(64, 4, 8, seed=6)
    broken = features.copy()
    broken[3, 2] = np.nan
    assert not _runtime.harmless(features, broken, labels, probabilities=False)[0]
    assert not _runtime.harmless(features, features[:, :4], labels, probabilities=False)[0]


# ---------------------------------------------------------------- the choice


class _Clock:
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.now = 0.0
        monkeypatch.setattr(_runtime, "_clock", lambda: self.now)

    def costing(self, forward: Any, seconds: float) -> Any:
        def run(images: Any) -> Any:
            self.now += seconds
            return forward(images)

        return run


def _sessions(
    monkeypatch: pytest.MonkeyPatch, clock: _Clock, costs: dict[str, float], damage: Any = None
) -> None:
    """Sessions that cost ``costs[engine]`` seconds a batch; ``damage`` rewrites the
    reduced-precision session's outputs."""
    real_open = _runtime.open_session.__wrapped__

    def timed(path: Path, engine: str) -> Any:
        session = real_open(path, engine)
        run = session._run
        if damage is not None and engine in _runtime.REDUCED:
            run = (lambda inner: lambda a: [damage(o) for o in inner(a)])(run)
        monkeypatch.setattr(session, "_run", clock.costing(run, costs[engine]))
        return session

    monkeypatch.setattr(_runtime, "open_session", timed)


def _labelled_pass(forward: Any, batches: int, clock: _Clock) -> tuple[np.ndarray, np.ndarray]:
    images, labels = tiny_arrays(16 * batches, seed=8)
    outputs = []
    for start in range(0, len(images), 16):
        clock.now += 0.01
        forward.note_labels(labels[start : start + 16])
        outputs.append(np.asarray(forward(images[start : start + 16])))
    return images, np.concatenate(outputs)


COSTS = {"keras": 0.3, "onnxruntime": 0.1, "openvino": 0.1, "openvino-bf16": 0.05}


@needs_openvino
def test_auto_runs_in_bfloat16_once_a_probe_finds_it_harmless(
    _bf16: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    clock = _Clock(monkeypatch)
    _sessions(monkeypatch, clock, COSTS)
    sub = _runtime_extractor()
    forward = _runtime.runtime_forward(
        sub, clock.costing(sub.predict_on_batch, COSTS["keras"]), engine="auto", steps=40
    )
    assert "openvino-bf16" in forward.names
    with caplog.at_level(logging.INFO, logger="xferclass"):
        images, outputs = _labelled_pass(forward, 40, clock)
    assert forward.engine == "openvino-bf16" and engine_used(forward) == "openvino-bf16"
    verdict = [r.getMessage() for r in caplog.records if "may use openvino-bf16" in r.getMessage()]
    assert len(verdict) == 1 and "linear probe" in verdict[0]
    # Features near float32's (bfloat16 keeps about 3 significant digits).
    expected = sub.predict_on_batch(images)
    np.testing.assert_allclose(outputs, expected, atol=0.05 * np.abs(expected).max())
    # The choice is remembered for the next pass over the same backbone.
    again = forward_function(sub, engine="auto")
    assert engine_used(again) == "openvino-bf16"
    assert getattr(again, "precision", None) == "bf16"


@needs_openvino
def test_auto_keeps_float32_when_bfloat16_loses_what_the_labels_need(
    _bf16: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    clock = _Clock(monkeypatch)
    rng = np.random.default_rng(9)
    _sessions(monkeypatch, clock, COSTS, damage=lambda o: rng.permutation(o))  # rows mixed up
    sub = _runtime_extractor()
    forward = _runtime.runtime_forward(
        sub, clock.costing(sub.predict_on_batch, COSTS["keras"]), engine="auto", steps=40
    )
    with caplog.at_level(logging.INFO, logger="xferclass"):
        images, outputs = _labelled_pass(forward, 40, clock)
    assert forward.engine in ("onnxruntime", "openvino")
    assert any("keeps float32 over openvino-bf16" in r.getMessage() for r in caplog.records)
    assert not any(r.levelno >= logging.WARNING for r in caplog.records)
    expected = sub.predict_on_batch(images)
    np.testing.assert_allclose(outputs, expected, atol=1e-4 * max(1.0, np.abs(expected).max()))


@needs_openvino
def test_auto_without_labels_keeps_features_in_float32(
    _bf16: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = _Clock(monkeypatch)
    _sessions(monkeypatch, clock, COSTS)
    sub = _runtime_extractor()
    forward = _runtime.runtime_forward(
        sub, clock.costing(sub.predict_on_batch, COSTS["keras"]), engine="auto", steps=40
    )
    images, _ = tiny_arrays(16 * 40, seed=8)
    for batch in np.split(images, 40):
        clock.now += 0.01
        forward(batch)
    assert forward.engine in ("onnxruntime", "openvino")
    assert "not judged" in forward.judged["openvino-bf16"]


# ---------------------------------------------------------------- int8

needs_int8 = pytest.mark.skipif(
    not all(importlib.util.find_spec(m) for m in ("onnx", "tf2onnx", "openvino", "onnxruntime")),
    reason="needs onnx, tf2onnx, onnxruntime and openvino (pip install 'xferclass[export]')",
)


@pytest.fixture
def _int8(monkeypatch: pytest.MonkeyPatch) -> None:
    """A CPU that runs int8 (and no bfloat16), with reduced precision allowed."""
    monkeypatch.setenv("XFERCLASS_PRECISION", "auto")
    monkeypatch.setattr(_runtime, "cpu_bf16", lambda: False)
    monkeypatch.setattr(_runtime, "cpu_int8", lambda: True)
    monkeypatch.setenv("XFERCLASS_CONVERSION_SECONDS", "0")


INT8_COSTS = {**COSTS, "openvino-int8": 0.03}


@needs_int8
def test_auto_quantizes_on_the_pass_images_and_runs_int8_once_a_probe_finds_it_harmless(
    _int8: None, _cache: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    clock = _Clock(monkeypatch)
    _sessions(monkeypatch, clock, INT8_COSTS)
    sub = _runtime_extractor()
    forward = _runtime.runtime_forward(
        sub, clock.costing(sub.predict_on_batch, COSTS["keras"]), engine="auto", steps=40
    )
    assert "openvino-int8" in forward.names
    with caplog.at_level(logging.INFO, logger="xferclass"):
        images, outputs = _labelled_pass(forward, 40, clock)
    assert forward.engine == "openvino-int8" and engine_used(forward) == "openvino-int8"
    messages = [r.getMessage() for r in caplog.records]
    # Calibrated on the three batches Keras ran before converting; judged on those and
    # the comparison batch.
    assert any("to int8 on 48 images" in m for m in messages)
    verdict = [m for m in messages if "may use openvino-int8" in m]
    assert len(verdict) == 1 and "linear probe" in verdict[0]
    # Features near float32's: uint8 activations keep about 1/255 of each range.
    expected = sub.predict_on_batch(images)
    np.testing.assert_allclose(outputs, expected, atol=0.05 * np.abs(expected).max())
    (quantized,) = (_cache / "onnx").glob("*.int8.onnx")
    written = quantized.stat().st_mtime_ns
    # Remembered with its int8 model: the next pass runs it without quantizing again.
    again = forward_function(sub, engine="auto")
    assert engine_used(again) == "openvino-int8" and getattr(again, "precision", None) == "int8"
    np.testing.assert_allclose(np.asarray(again(images[-16:])), outputs[-16:], atol=1e-5)
    assert quantized.stat().st_mtime_ns == written


@needs_int8
def test_auto_keeps_float32_when_int8_loses_what_the_labels_need(
    _int8: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    clock = _Clock(monkeypatch)
    rng = np.random.default_rng(9)
    _sessions(monkeypatch, clock, INT8_COSTS, damage=lambda o: rng.permutation(o))
    sub = _runtime_extractor()
    forward = _runtime.runtime_forward(
        sub, clock.costing(sub.predict_on_batch, COSTS["keras"]), engine="auto", steps=40
    )
    with caplog.at_level(logging.INFO, logger="xferclass"):
        _labelled_pass(forward, 40, clock)
    assert forward.engine in ("onnxruntime", "openvino")
    assert any("keeps float32 over openvino-int8" in r.getMessage() for r in caplog.records)
    assert not any(r.levelno >= logging.WARNING for r in caplog.records)


@needs_int8
def test_a_failed_quantization_leaves_the_pass_on_float32(
    _int8: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def fail(path: Path, images: Any) -> Path:
        raise xferclass.ExportError(f"int8 quantization of {path.name} failed: no kernel")

    monkeypatch.setattr(_runtime, "quantize_int8", fail)
    clock = _Clock(monkeypatch)
    _sessions(monkeypatch, clock, INT8_COSTS)
    sub = _runtime_extractor()
    forward = _runtime.runtime_forward(
        sub, clock.costing(sub.predict_on_batch, COSTS["keras"]), engine="auto", steps=40
    )
    with caplog.at_level(logging.INFO, logger="xferclass"):
        _labelled_pass(forward, 40, clock)
    assert forward.engine in ("onnxruntime", "openvino")
    assert "no kernel" in forward.judged["openvino-int8"]
    assert not any(r.levelno >= logging.WARNING for r in caplog.records)


@needs_int8
def test_a_first_quantization_must_pay_back_like_the_conversion(
    _int8: None, _cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """40 batches at 0.3 s on Keras save about 6 s at the prior ratio: enough for a
    conversion of 1 s, not for a quantization of 10 s more, so the pass converts
    without int8; 200 batches pay for it, so a pass that long tries int8 too."""
    monkeypatch.delenv("XFERCLASS_CONVERSION_SECONDS")
    _runtime._update_machine_record(conversion_s=1.0, quantize_s=10.0)
    clock = _Clock(monkeypatch)
    _sessions(monkeypatch, clock, INT8_COSTS)
    sub = _runtime_extractor()
    keras_forward = clock.costing(sub.predict_on_batch, COSTS["keras"])
    forward = _runtime.runtime_forward(sub, keras_forward, engine="auto", steps=40)
    _labelled_pass(forward, 40, clock)
    assert forward.engine in ("onnxruntime", "openvino")
    assert "too short to pay for a first quantization" in forward.judged["openvino-int8"]
    assert not list((_cache / "onnx").glob("*.int8.onnx"))
    # Too short even for the conversion: Keras.
    other = _runtime_extractor(seed=5)  # not converted yet
    short = clock.costing(other.predict_on_batch, COSTS["keras"])
    forward = _runtime.runtime_forward(other, short, engine="auto", steps=9)
    _labelled_pass(forward, 9, clock)
    assert forward.engine == "keras"
    # The choice made without int8 is remembered for passes as short; a pass long enough
    # to pay for the quantization measures again, and runs int8.
    again = _runtime.runtime_forward(sub, keras_forward, engine="auto", steps=40)
    assert engine_used(again) in ("onnxruntime", "openvino")
    forward = _runtime.runtime_forward(sub, keras_forward, engine="auto", steps=200)
    _labelled_pass(forward, 200, clock)
    assert forward.engine == "openvino-int8"


@needs_int8
def test_an_explicit_int8_engine_calibrates_on_its_first_batch(_cache: Path) -> None:
    model = tiny_model()
    images, _ = tiny_arrays(40, seed=6)
    result = xferclass.predict(model, images, engine="openvino-int8")
    assert result.engine == "openvino-int8"
    assert len(list((_cache / "onnx").glob("*.int8.onnx"))) == 1
    np.testing.assert_allclose(result.probabilities.sum(axis=1), 1.0, atol=1e-4)
    np.testing.assert_allclose(result.probabilities, model.predict_on_batch(images), atol=0.05)


def _runtime_extractor(seed: int = 1) -> Any:
    import keras

    model = tiny_model(seed)
    return keras.Model(model.input, model.get_layer(POOL).output)


# ---------------------------------------------------------------- what the caller is told


@needs_openvino
def test_fit_and_predict_say_what_ran_and_predict_reuses_fits_conversion(_cache: Path) -> None:
    model = tiny_model()
    history = xferclass.fit(model, tiny_dataset(), tiny_dataset(), epochs=1, engine="openvino")
    assert history.frozen_engines == {
        "train features": "openvino",
        "validation features": "openvino",
    }
    converted = sorted((_cache / "onnx").glob("*.onnx"))
    assert len(converted) == 1 and "-pool-" in converted[0].name
    images, _ = tiny_arrays(20, seed=5)
    on_runtime = xferclass.predict(model, images, engine="openvino")
    # The head runs on Keras after the backbone's conversion that fit made: no new file.
    assert sorted((_cache / "onnx").glob("*.onnx")) == converted
    assert on_runtime.engine == "openvino"
    expected = model.predict_on_batch(images)
    np.testing.assert_allclose(on_runtime.probabilities, expected, atol=1e-4)
    on_keras = xferclass.predict(model, images, engine="keras")
    assert on_keras.engine == "keras"
    np.testing.assert_allclose(on_keras.probabilities, expected, atol=1e-6)
    history = xferclass.fit(model, tiny_dataset(), epochs=1, engine="keras", verbose=0)
    assert history.frozen_engines == {"train features": "keras"}


@needs_openvino
def test_an_explicit_bfloat16_engine_runs_and_says_so() -> None:
    model = tiny_model()
    images, _ = tiny_arrays(20, seed=6)
    result = xferclass.predict(model, images, engine="openvino-bf16")
    assert result.engine == "openvino-bf16"
    assert result.probabilities.shape == (20, 3)
    np.testing.assert_allclose(result.probabilities.sum(axis=1), 1.0, atol=1e-2)
    np.testing.assert_allclose(result.probabilities, model.predict_on_batch(images), atol=0.05)


# ---------------------------------------------------------------- a classifier's decisions


def _classifier_with_bf16_features(monkeypatch: pytest.MonkeyPatch, damage: Any = None) -> Any:
    """A tiny classifier whose extractor ``fit`` chose to run in bfloat16 on this machine
    (onnxruntime measured the fastest float32 runtime); ``damage`` rewrites the bf16
    session's features."""
    import keras

    model = tiny_model()
    extractor = keras.Model(model.input, model.get_layer(POOL).output)
    path = _runtime.convert_to_onnx(extractor)
    rates = {"keras": 10.0, "onnxruntime": 30.0, "openvino": 25.0, "openvino-bf16": 60.0}
    _runtime._remember(path, "openvino-bf16", rates)
    if damage is not None:
        _sessions(monkeypatch, _Clock(monkeypatch), dict.fromkeys(rates, 0.0), damage=damage)
    return model, path


def _classify(model: Any, batches: int) -> tuple[Any, np.ndarray, np.ndarray]:
    from xferclass.runtime._common import classifier_forward

    forward = classifier_forward(model, engine="auto")
    images, _ = tiny_arrays(32 * batches, seed=12)
    outputs = np.concatenate([forward(batch) for batch in np.split(images, batches)])
    return forward, images, outputs


@needs_openvino
def test_a_classifier_runs_in_bfloat16_once_its_head_gave_float32s_decisions(
    _bf16: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    model, path = _classifier_with_bf16_features(monkeypatch)
    with caplog.at_level(logging.INFO, logger="xferclass"):
        forward, images, outputs = _classify(model, 6)
    # The first 128 images ran on onnxruntime (float32) while bfloat16 was judged.
    assert isinstance(forward.extract, _runtime._Judging)
    assert forward.engine == "openvino-bf16"
    assert any("runs openvino-bf16 for this classifier" in r.getMessage() for r in caplog.records)
    expected = model.predict_on_batch(images)
    np.testing.assert_allclose(outputs[:128], expected[:128], atol=1e-4)
    np.testing.assert_allclose(outputs, expected, atol=0.05)
    # Kept beside the converted model: the next pass with this head runs bf16 at once.
    monkeypatch.setattr(_runtime, "_VERDICTS", {})
    again, _, _ = _classify(model, 1)
    assert isinstance(again.extract, _runtime.RuntimeForward)
    assert again.engine == "openvino-bf16"
    # Another head on the same backbone is judged again.
    other = tiny_model(seed=4)
    other.set_weights(model.get_weights()[:-2] + other.get_weights()[-2:])
    assert isinstance(_classify(other, 1)[0].extract, _runtime._Judging)


@needs_openvino
def test_a_classifier_stays_in_float32_when_bfloat16_changes_its_decisions(
    _bf16: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    rng = np.random.default_rng(13)

    def noise(features: np.ndarray) -> np.ndarray:  # features that tell nothing
        scale = 10 * (np.abs(features).max() + 1)
        return rng.normal(0, scale, features.shape).astype(features.dtype)

    model, path = _classifier_with_bf16_features(monkeypatch, damage=noise)
    with caplog.at_level(logging.INFO, logger="xferclass"):
        forward, images, outputs = _classify(model, 6)
    assert forward.engine == "onnxruntime"
    assert any("keeps float32 over openvino-bf16" in r.getMessage() for r in caplog.records)
    np.testing.assert_allclose(outputs, model.predict_on_batch(images), atol=1e-4)
    monkeypatch.setattr(_runtime, "_VERDICTS", {})
    again, _, _ = _classify(model, 1)
    assert again.engine == "onnxruntime" and isinstance(again.extract, _runtime.RuntimeForward)


def test_the_recipes_passes_hand_their_labels_to_the_engine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """So that ``engine="auto"`` can judge bfloat16 features in ``train_auto`` too."""
    from conftest import make_shape_dataset
    from xferclass.auto import _features

    root = make_shape_dataset(tmp_path / "data", per_class=5)
    paths = sorted(str(p) for p in root.rglob("*.*"))
    names = ("circle", "square", "triangle")
    labels = np.array([names.index(Path(p).parent.name) for p in paths])
    images = _features.Images(tuple(paths), labels, names, ("train",) * len(paths))
    noted: list[np.ndarray] = []

    class Forward:
        engine = "openvino-bf16"

        def note_labels(self, batch: Any) -> None:
            noted.append(np.asarray(batch).argmax(axis=1))

        def __call__(self, batch: Any) -> np.ndarray:
            return np.zeros((len(batch), 4), np.float32)

    monkeypatch.setattr("xferclass.runtime._common.forward_function", lambda *a, **k: Forward())
    features = _features.FeatureSet("test_tiny", 32)
    _features.extract(features, images, ["plain", "hflip"], extractor=None, batch_size=4,
                      clock=lambda: 0.0)  # fmt: skip
    np.testing.assert_array_equal(np.concatenate(noted), labels)
    assert features.engines == {"plain": "openvino-bf16", "hflip": "openvino-bf16"}
