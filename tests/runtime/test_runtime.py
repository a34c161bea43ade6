"""Frozen passes on onnxruntime and OpenVINO: same answers as Keras, cached conversion, fallbacks.

Tests that run a runtime skip, with the reason, when its packages (the
``export`` extra) are missing. The per-backbone checks use one built-in
backbone per family at a small input with ``weights=None`` (BatchNorm
statistics randomised so that the features are far from zero), to keep CI fast.
"""

from __future__ import annotations

import importlib.util
import json
import logging
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf

import xferclass
from helpers import CLASSES, fresh_runtime_cache, tiny_arrays, tiny_dataset, tiny_model
from xferclass.models import POOL
from xferclass.runtime import _runtime
from xferclass.runtime._common import forward_function


def _have(*modules: str) -> bool:
    return all(importlib.util.find_spec(m) is not None for m in modules)


needs_ort = pytest.mark.skipif(
    not _have("onnx", "tf2onnx", "onnxruntime"),
    reason="needs onnx, tf2onnx and onnxruntime (pip install 'xferclass[export]')",
)
needs_openvino = pytest.mark.skipif(
    not _have("onnx", "tf2onnx", "openvino"),
    reason="needs onnx, tf2onnx and openvino (pip install 'xferclass[export]')",
)
RUNTIMES = [
    pytest.param("onnxruntime", marks=needs_ort),
    pytest.param("openvino", marks=needs_openvino),
]


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test converts into its own empty cache folder and forgets earlier choices."""
    return fresh_runtime_cache(tmp_path, monkeypatch)


def _close(expected: Any, actual: Any) -> None:
    """Within 1e-4 of Keras, relative to the largest Keras output (at least absolute)."""
    expected = np.asarray(expected, np.float64)
    actual = np.asarray(actual, np.float64)
    assert actual.shape == expected.shape
    scale = max(1.0, float(np.max(np.abs(expected))))
    assert float(np.max(np.abs(actual - expected))) <= 1e-4 * scale


def _extractor(model: keras.Model) -> keras.Model:
    return keras.Model(model.input, model.get_layer(POOL).output)


def _randomise_batch_norm(model: keras.Model, seed: int = 0) -> None:
    """Give every BatchNorm layer random statistics, so random-init features are not ~0."""
    rng = np.random.default_rng(seed)
    for layer in model._flatten_layers(include_self=False):
        if isinstance(layer, keras.layers.BatchNormalization):
            shapes = [w.shape for w in layer.get_weights()]
            gamma, beta, mean, var = (
                rng.uniform(0.5, 1.5, shapes[0]),
                rng.normal(0, 0.2, shapes[1]),
                rng.normal(0, 0.2, shapes[2]),
                rng.uniform(0.5, 1.5, shapes[3]),
            )
            layer.set_weights([a.astype("float32") for a in (gamma, beta, mean, var)])


# ---------------------------------------------------------------- same answers


@pytest.mark.parametrize("engine", RUNTIMES)
def test_tiny_model_matches_keras_whole_front_and_cut(engine: str) -> None:
    model = tiny_model()
    images, _ = tiny_arrays(16)
    front = _extractor(model)
    backbone = model.get_layer("backbone").layer
    cut = keras.Model(backbone.input, backbone.get_layer("block1_relu").output)
    for sub, x in ((model, images), (front, images), (cut, images / 255.0)):
        forward = forward_function(sub, engine=engine)
        assert isinstance(forward, _runtime.RuntimeForward) and forward.engine == engine
        out = forward(tf.constant(x))  # tensors in, as the caching pass passes them
        assert isinstance(out, np.ndarray)
        _close(sub.predict_on_batch(x), out)
    probabilities = forward_function(model, engine=engine)(images)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


#: One built-in backbone per family of the issue's speed table, at its smallest input.
BACKBONES = [
    ("efficientnet_lite0", 32),
    ("mobilenet_v2", 32),
    ("resnet50", 32),
    ("xception", 71),
]


@pytest.mark.slow
@needs_ort
@pytest.mark.parametrize("name,size", BACKBONES)
def test_builtin_backbone_features_match_keras(name: str, size: int) -> None:
    keras.utils.set_random_seed(0)
    model = xferclass.build_classifier(name, num_classes=CLASSES, input_size=size, weights=None)
    _randomise_batch_norm(model)
    sub = _extractor(model)
    images = np.random.default_rng(1).uniform(0, 255, (4, size, size, 3)).astype("float32")
    expected = sub.predict_on_batch(images)
    assert float(np.max(np.abs(expected))) > 1e-2  # features worth comparing
    engines = ["onnxruntime"] + (["openvino"] if _have("openvino") else [])
    for engine in engines:  # one conversion, cached, serves both runtimes
        _close(expected, forward_function(sub, engine=engine)(images))


@needs_ort
def test_predict_and_evaluate_agree_across_engines() -> None:
    model = tiny_model()
    images, labels = tiny_arrays(24)
    dataset = tiny_dataset(24, batch_size=8)
    keras_result = xferclass.predict(model, images, engine="keras")
    keras_metrics = xferclass.evaluate_regression_style(model, dataset, engine="keras")
    engines = ["onnxruntime"] + (["openvino"] if _have("openvino") else [])
    for engine in engines:
        result = xferclass.predict(model, images, engine=engine, batch_size=8)
        _close(keras_result.probabilities, result.probabilities)
        assert result.predicted_names == keras_result.predicted_names
        metrics = xferclass.evaluate_regression_style(model, dataset, engine=engine)
        assert metrics["n"] == keras_metrics["n"] == 24
        for key in ("mae", "mse", "rmse", "r2", "accuracy"):
            assert metrics[key] == pytest.approx(keras_metrics[key], abs=1e-4)
    with pytest.raises(xferclass.InvalidArgumentError, match="engine='tensorrt'"):
        xferclass.predict(model, images, engine="tensorrt")
    with pytest.raises(ValueError, match="engine="):
        xferclass.evaluate_regression_style(model, dataset, engine="fast")


@pytest.mark.parametrize("engine", RUNTIMES)
def test_fit_and_fine_tune_on_a_runtime_train_like_keras(
    engine: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The caches of fit (pooled features) and fine_tune (the cut, then the top) on a runtime."""
    calls = {"runtime": 0}
    real_call = _runtime.RuntimeForward.__call__

    def counted(self: _runtime.RuntimeForward, images: Any) -> Any:
        calls["runtime"] += 1
        return real_call(self, images)

    monkeypatch.setattr(_runtime.RuntimeForward, "__call__", counted)
    trained = {}
    for name in ("keras", engine):
        model = tiny_model()
        history = xferclass.fit(
            model, tiny_dataset(), tiny_dataset(), epochs=2, verbose=0, shuffle=False,
            restore_best=False, engine=name,
        )  # fmt: skip
        tuned = tiny_model()
        tuned_history = xferclass.fine_tune(
            tuned, tiny_dataset(), tiny_dataset(), head_epochs=1, fine_tune_epochs=1, unfreeze=6,
            verbose=0, shuffle=False, restore_best=False, engine=name,
        )  # fmt: skip
        trained[name] = (model, history, tuned, tuned_history)
    # 3 + 3 batches for fit's cache; 3 + 3 to the cut and 3 + 3 from it for fine_tune's.
    assert calls["runtime"] == 18
    (a, ha, ta, tha), (b, hb, tb, thb) = trained["keras"], trained[engine]
    for first, second in ((ha, hb), (tha, thb)):
        assert first.history["val_accuracy"] == second.history["val_accuracy"]
        np.testing.assert_allclose(first.history["loss"], second.history["loss"], atol=1e-4)
    for x, y in zip(a.get_weights() + ta.get_weights(), b.get_weights() + tb.get_weights()):
        np.testing.assert_allclose(x, y, atol=1e-4)


# ---------------------------------------------------------------- conversion cache


@needs_ort
def test_conversion_is_cached_atomically_and_keyed_by_weights(
    _cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = tiny_model()
    sub = _extractor(model)
    path = _runtime.convert_to_onnx(sub)
    assert path.parent == _cache / "onnx" and path.suffix == ".onnx"
    assert "tiny_backbone" in path.name and "32x32" in path.name and POOL in path.name
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary left
    stamp = path.stat().st_mtime_ns

    def no_export(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a cached model was converted again")

    monkeypatch.setattr(keras.Model, "export", no_export)
    assert _runtime.convert_to_onnx(_extractor(model)) == path  # a new sub-model, same key
    # The same model built again (Keras numbers its unnamed layers anew): same key.
    assert _runtime.convert_to_onnx(_extractor(tiny_model())) == path
    # Class names and metadata (the recipe's report, the record of the training files)
    # do not change what the model computes: same key.
    named = tiny_model()
    layer = named.get_layer("preprocessing")
    layer.class_names, layer.metadata = ["a", "b", "c"], {"trained_on": "x" * 1000}
    assert _runtime.model_key(_extractor(named)) == _runtime.model_key(sub)
    assert path.stat().st_mtime_ns == stamp
    monkeypatch.undo()
    monkeypatch.setenv("XFERCLASS_CACHE_DIR", str(_cache))
    # Another cut of the same model and changed weights each get their own file.
    cut = keras.Model(model.input, model.get_layer("backbone").output)
    assert _runtime.convert_to_onnx(cut) != path
    weights = sub.get_layer("backbone").get_weights()
    sub.get_layer("backbone").set_weights([w + 0.01 for w in weights])
    changed = _runtime.convert_to_onnx(sub)
    assert changed != path and changed.is_file()
    images, _ = tiny_arrays(4)
    _close(sub.predict_on_batch(images), _runtime.open_session(changed, "onnxruntime")(images))


@needs_ort
def test_failed_conversion_leaves_no_file(_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(self: keras.Model, filepath: str, **kwargs: Any) -> None:
        Path(filepath).write_bytes(b"half")
        raise RuntimeError("op not supported\nsecond line")

    monkeypatch.setattr(keras.Model, "export", broken)
    with pytest.raises(xferclass.ExportError, match="op not supported") as caught:
        forward_function(tiny_model(), engine="onnxruntime")
    assert isinstance(caught.value, RuntimeError)
    assert list((_cache / "onnx").iterdir()) == []


# ---------------------------------------------------------------- dependencies


def test_missing_runtime_names_the_export_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    real = _runtime._installed
    monkeypatch.setattr(_runtime, "_installed", lambda m: m != "onnxruntime" and real(m))
    model = tiny_model()
    with pytest.raises(xferclass.MissingDependencyError, match=r"xferclass\[export\]") as caught:
        forward_function(model, engine="onnxruntime")
    assert isinstance(caught.value, ImportError) and "onnxruntime" in str(caught.value)
    with pytest.raises(ImportError, match="onnxruntime"):
        xferclass.predict(model, tiny_arrays(2)[0], engine="onnxruntime")


def test_auto_without_any_runtime_is_keras(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(_runtime, "_installed", lambda module: False)
    model = tiny_model()
    with caplog.at_level(logging.INFO, logger="xferclass"):
        assert forward_function(model, engine="auto") == model.predict_on_batch
    assert not caplog.records  # nothing to say at INFO: this is the plain install
    images, _ = tiny_arrays(6)
    result = xferclass.predict(model, images)
    np.testing.assert_array_equal(result.probabilities, model.predict_on_batch(images))


# ---------------------------------------------------------------- how "auto" chooses


class _Clock:
    """A fake clock for ``"auto"``'s timing: engines and decoding advance it by set amounts."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.now = 0.0
        self.last = "keras"
        monkeypatch.setattr(_runtime, "_clock", lambda: self.now)

    def costing(self, forward: Any, seconds: float, name: str) -> Any:
        def run(images: Any) -> Any:
            self.now += seconds
            self.last = name
            return forward(images)

        return run


def _runtime_costing(monkeypatch: pytest.MonkeyPatch, clock: _Clock, seconds: float) -> None:
    """Every runtime session advances ``clock`` by ``seconds`` a batch."""
    real_open = _runtime.open_session.__wrapped__

    def timed_session(path: Path, engine: str) -> Any:
        session = real_open(path, engine)
        monkeypatch.setattr(session, "_run", clock.costing(session._run, seconds, engine))
        return session

    monkeypatch.setattr(_runtime, "open_session", timed_session)


def _pass(forward: Any, batches: list[np.ndarray], clock: _Clock, decode: Any = None) -> list:
    """Run a pass; ``decode(last_engine)`` is the decoding time charged before each batch."""
    outputs = []
    for batch in batches:
        clock.now += decode(clock.last) if decode else 0.01
        outputs.append(forward(batch))
    return outputs


@pytest.fixture
def _cheap_conversion(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XFERCLASS_CONVERSION_SECONDS", "0")


def _batches(count: int) -> list[np.ndarray]:
    images, _ = tiny_arrays(2 * count)
    return np.split(images, count)


@needs_ort
def test_auto_converts_only_when_the_images_left_pay_back(
    _cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = _Clock(monkeypatch)
    sub = _extractor(tiny_model())
    keras_forward = clock.costing(sub.predict_on_batch, 0.1, "keras")
    # 12 batches at 0.1 s on Keras cannot win back the assumed 3 s conversion.
    few = _batches(12)
    forward = _runtime.runtime_forward(sub, keras_forward, engine="auto", steps=len(few))
    outputs = _pass(forward, few, clock)
    assert forward.engine == "keras" and not (_cache / "onnx").exists()
    np.testing.assert_array_equal(
        np.concatenate(outputs), sub.predict_on_batch(np.concatenate(few))
    )
    # 600 would: about 594 * 0.11 * (1 - 1 / 1.4) = 19 s saved against 1.2 * 3.2 s.
    _runtime_costing(monkeypatch, clock, 0.05)
    many = _batches(40)
    forward = _runtime.runtime_forward(sub, keras_forward, engine="auto", steps=600)
    _pass(forward, many, clock)
    assert forward.engine in _runtime.available_runtimes()
    assert list((_cache / "onnx").glob("*.onnx"))
    # Too short to even time: plain Keras, no wrapper, unless the choice was made before.
    other = _extractor(tiny_model(seed=2))
    assert _runtime.runtime_forward(other, other.predict_on_batch, engine="auto", steps=5) == (
        other.predict_on_batch
    )
    remembered = _runtime.runtime_forward(sub, sub.predict_on_batch, engine="auto", steps=5)
    assert remembered.engine == forward.engine


@needs_ort
def test_auto_with_an_unknown_length_converts_once_keras_time_would_have_paid(
    _cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XFERCLASS_CONVERSION_SECONDS", "1")
    clock = _Clock(monkeypatch)
    sub = _extractor(tiny_model())
    _runtime_costing(monkeypatch, clock, 0.05)
    forward = _runtime.runtime_forward(
        sub, clock.costing(sub.predict_on_batch, 0.1, "keras"), engine="auto"
    )
    # Cost 1 + 2 * 0.11 s; Keras time pays it at (1 - 1 / 1.4) a second: after ~40 batches.
    _pass(forward, _batches(30), clock)
    assert forward.engine == "undecided" and not (_cache / "onnx").exists()
    _pass(forward, _batches(25), clock)
    assert forward.engine in forward.names


@needs_ort
def test_auto_chooses_on_the_timed_pass_with_its_decoding(
    _cheap_conversion: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    clock = _Clock(monkeypatch)
    sub = _extractor(tiny_model())
    _runtime_costing(monkeypatch, clock, 0.1)
    batches = _batches(48)

    # The runtime's batch is faster (0.1 s vs 0.3 s), but decoding after it is
    # slower (its threads hold the cores): the pass is 0.7 s a batch against 0.35 s.
    def decode(last: str) -> float:
        return 0.05 if last == "keras" else 0.6

    forward = _runtime.runtime_forward(
        sub, clock.costing(sub.predict_on_batch, 0.3, "keras"), engine="auto", steps=48
    )
    with caplog.at_level(logging.INFO, logger="xferclass"):
        outputs = _pass(forward, batches, clock, decode)
    assert forward.engine == "keras"
    lines = [r.getMessage() for r in caplog.records if "engine='auto'" in r.getMessage()]
    assert len(lines) == 1 and "stays on Keras" in lines[0] and "was not" in lines[0]
    for batch, got in zip(batches, outputs):
        _close(sub.predict_on_batch(batch), got)
    record = json.loads(forward.path.with_suffix(".auto.json").read_text())
    rates = record[_runtime._machine()]["images_per_s"]
    assert rates["keras"] == pytest.approx(2 / 0.35, abs=0.05)  # 2 images a batch, the pass's rate
    assert all(rates[name] == pytest.approx(2 / 0.7, abs=0.05) for name in forward.names)


@needs_ort
def test_auto_picks_the_faster_pass_and_wastes_no_batch(
    _cheap_conversion: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    clock = _Clock(monkeypatch)
    sub = _extractor(tiny_model())
    _runtime_costing(monkeypatch, clock, 0.1)
    calls = {"keras": 0}

    def keras_forward(images: Any) -> Any:
        calls["keras"] += 1
        return sub.predict_on_batch(images)

    batches = _batches(48)
    forward = _runtime.runtime_forward(
        sub, clock.costing(keras_forward, 0.3, "keras"), engine="auto", steps=48
    )
    with caplog.at_level(logging.INFO, logger="xferclass"):
        outputs = _pass(forward, batches, clock)
    assert forward.engine in forward.names
    assert forward.chosen is forward.runtime and forward.runtime.engine == forward.engine
    for batch, got in zip(batches, outputs):
        _close(sub.predict_on_batch(batch), got)
    # Keras ran the probe (3 batches), the comparison batch and its timed batches only.
    assert calls["keras"] == 1 + _runtime.PROBE_BATCHES + 1 + _runtime.TIMED_ROUNDS
    chose = [r for r in caplog.records if "engine='auto'" in r.getMessage()]
    assert len(chose) == 1 and forward.engine in chose[0].getMessage()
    machine = json.loads(_runtime._machine_record_path().read_text())[_runtime._machine()]
    assert machine["ratio"] == pytest.approx(0.31 / 0.11, rel=1e-3)
    # The choice is remembered for the next pass over the same frozen part.
    again = forward_function(sub, engine="auto")
    assert (again.engine, again.path) == (forward.engine, forward.runtime.path)


@needs_ort
def test_auto_keeps_its_choice_on_disk_for_the_next_run(
    _cheap_conversion: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    clock = _Clock(monkeypatch)
    sub = _extractor(tiny_model())
    _runtime_costing(monkeypatch, clock, 0.1)
    forward = _runtime.runtime_forward(
        sub, clock.costing(sub.predict_on_batch, 0.3, "keras"), engine="auto", steps=48
    )
    _pass(forward, _batches(48), clock)
    path = forward.runtime.path
    record = json.loads(path.with_suffix(".auto.json").read_text())
    (machine,) = record
    assert machine == _runtime._machine()
    assert machine.endswith(f" / {_runtime._threads()} threads / {keras.backend.backend()}")
    assert record[machine]["engine"] == forward.engine
    rates = record[machine]["images_per_s"]
    assert set(rates) == {"keras", *_runtime.available_runtimes()}
    assert rates["keras"] == pytest.approx(2 / 0.31, abs=0.05)
    assert rates[forward.engine] == pytest.approx(2 / 0.11, abs=0.05)

    # A new run (nothing kept in memory) reads the choice and times nothing.
    monkeypatch.setattr(_runtime, "_DECISIONS", {})
    monkeypatch.setattr(_runtime, "_Auto", None)  # timing again would fail
    with caplog.at_level(logging.INFO, logger="xferclass"):
        again = forward_function(sub, engine="auto")
    assert again.engine == forward.engine and again.path == path
    lines = [r.getMessage() for r in caplog.records if "engine='auto'" in r.getMessage()]
    assert len(lines) == 1 and "measured on this machine before" in lines[0]
    images = np.concatenate(_batches(3))
    _close(sub.predict_on_batch(images), again(images))


@needs_ort
@pytest.mark.parametrize("damage", ["corrupt", "another machine", "unknown engine"])
def test_auto_times_again_when_the_kept_choice_does_not_apply(
    damage: str, _cheap_conversion: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = _Clock(monkeypatch)
    sub = _extractor(tiny_model())
    path = _runtime.convert_to_onnx(sub)
    record = path.with_suffix(".auto.json")
    other = "another CPU / 64 threads / tensorflow"
    machine = _runtime._machine() if damage != "another machine" else other
    engine = "tensorrt" if damage == "unknown engine" else "keras"
    record.write_text(
        "{not json" if damage == "corrupt" else json.dumps({machine: {"engine": engine}})
    )
    forward = _runtime.runtime_forward(
        sub, clock.costing(sub.predict_on_batch, 0.3, "keras"), engine="auto", steps=48
    )
    assert isinstance(forward, _runtime._Auto)
    # The timing that follows writes a fresh record for this machine.
    _pass(forward, _batches(48), clock)
    kept = json.loads(record.read_text())
    assert kept[_runtime._machine()]["engine"] == forward.engine != "undecided"
    if damage == "another machine":
        assert kept[machine] == {"engine": "keras"}  # other machines' choices are kept


@needs_ort
def test_auto_remembers_keras_too(monkeypatch: pytest.MonkeyPatch) -> None:
    sub = _extractor(tiny_model())
    path = _runtime.convert_to_onnx(sub)
    path.with_suffix(".auto.json").write_text(
        json.dumps({_runtime._machine(): {"engine": "keras", "images_per_s": {"keras": 9.0}}})
    )
    assert forward_function(sub, engine="auto") == sub.predict_on_batch


@needs_ort
def test_auto_uses_the_ratio_measured_on_this_machine(
    _cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = _Clock(monkeypatch)
    sub = _extractor(tiny_model())
    keras_forward = clock.costing(sub.predict_on_batch, 0.1, "keras")
    # 600 batches pay back at the prior ratio, not where no runtime was faster here.
    _runtime._update_machine_record(ratio=1.0)
    forward = _runtime.runtime_forward(sub, keras_forward, engine="auto", steps=600)
    _pass(forward, _batches(10), clock)
    assert forward.engine == "keras" and not list((_cache / "onnx").glob("*.onnx"))
    # A measured 3x and a measured 1 s conversion make 100 batches pay back.
    _runtime._update_machine_record(ratio=3.0, conversion_s=1.0)
    _runtime_costing(monkeypatch, clock, 0.03)
    forward = _runtime.runtime_forward(sub, keras_forward, engine="auto", steps=100)
    _pass(forward, _batches(20), clock)
    assert forward.engine in forward.names


@needs_ort
def test_auto_falls_back_when_the_runtime_disagrees(
    _cheap_conversion: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    clock = _Clock(monkeypatch)
    sub = _extractor(tiny_model())
    real_open = _runtime.open_session.__wrapped__

    def wrong_session(path: Path, engine: str) -> Any:
        session = real_open(path, engine)
        run = session._run
        monkeypatch.setattr(session, "_run", lambda a: [o + 0.01 for o in run(a)])
        return session

    monkeypatch.setattr(_runtime, "open_session", wrong_session)
    batches = _batches(48)
    forward = _runtime.runtime_forward(
        sub, clock.costing(sub.predict_on_batch, 0.3, "keras"), engine="auto", steps=48
    )
    with caplog.at_level(logging.INFO, logger="xferclass"):
        outputs = _pass(forward, batches, clock)
    assert forward.engine == "keras"
    np.testing.assert_array_equal(
        np.concatenate(outputs), sub.predict_on_batch(np.concatenate(batches))
    )
    lines = [r.getMessage() for r in caplog.records if "engine='auto'" in r.getMessage()]
    assert len(lines) == 1 and "differs from Keras" in lines[0]


@needs_ort
def test_auto_falls_back_with_one_line_when_conversion_fails(
    _cheap_conversion: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(self: keras.Model, filepath: str, **kwargs: Any) -> None:
        raise ValueError("Unsupported op: SomeOp")

    monkeypatch.setattr(keras.Model, "export", broken)
    model = tiny_model()
    batches = _batches(48)
    with caplog.at_level(logging.INFO, logger="xferclass"):
        forward = forward_function(model, engine="auto", steps=48)
        outputs = [forward(batch) for batch in batches]
    np.testing.assert_array_equal(
        np.concatenate(outputs), model.predict_on_batch(np.concatenate(batches))
    )
    lines = [r.getMessage() for r in caplog.records if r.name == "xferclass"]
    assert len(lines) == 1
    assert "stays on Keras" in lines[0] and "Unsupported op: SomeOp" in lines[0]


@needs_ort
def test_auto_stays_on_keras_on_a_gpu_under_a_strategy_and_for_short_passes(
    _cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = tiny_model()
    assert forward_function(model, engine="auto", steps=2) == model.predict_on_batch
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    assert forward_function(model, strategy, engine="auto") == model.predict_on_batch
    real = tf.config.list_logical_devices
    fake_gpu = [tf.config.LogicalDevice("/device:GPU:0", "GPU")]
    monkeypatch.setattr(
        tf.config, "list_logical_devices", lambda kind=None: fake_gpu if kind == "GPU" else real()
    )
    assert forward_function(model, engine="auto") == model.predict_on_batch
    assert not (_cache / "onnx").exists()  # none of them converted anything
    # An explicit engine is honoured everywhere.
    assert isinstance(forward_function(model, engine="onnxruntime"), _runtime.RuntimeForward)


def test_unknown_engine_is_refused() -> None:
    with pytest.raises(xferclass.InvalidArgumentError, match="must be one of auto, keras"):
        forward_function(tiny_model(), engine="tflite")


# ---------------------------------------------------------------- command line


@needs_ort
def test_cli_engine_option(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from conftest import make_shape_dataset
    from xferclass.cli import main

    folder = make_shape_dataset(tmp_path / "data", per_class=2)
    model = tiny_model()
    xferclass.save_model(model, tmp_path / "model.keras")
    images = sorted(str(p) for p in (folder / "circle").iterdir())
    printed = {}
    for engine in ("keras", "onnxruntime"):
        argv = ["predict", str(tmp_path / "model.keras"), *images, "--json", "--top", "3"]
        assert main([*argv, "--engine", engine]) == 0
        printed[engine] = capsys.readouterr().out
    import json

    rows = {engine: json.loads(text) for engine, text in printed.items()}
    for a, b in zip(rows["keras"], rows["onnxruntime"]):
        assert [t["class"] for t in a["top"]] == [t["class"] for t in b["top"]]
        for x, y in zip(a["top"], b["top"]):
            assert x["probability"] == pytest.approx(y["probability"], abs=1e-4)
    argv = ["evaluate", str(tmp_path / "model.keras"), str(folder), "--json"]
    assert main([*argv, "--engine", "onnxruntime"]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == 6
    with pytest.raises(SystemExit):
        main([*argv, "--engine", "tensorrt"])
