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
import time
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf

import xferclass
from helpers import CLASSES, tiny_arrays, tiny_dataset, tiny_model
from xferclass import _runtime
from xferclass._common import forward_function
from xferclass.models import POOL


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
    folder = tmp_path / "cache"
    monkeypatch.setenv("XFERCLASS_CACHE_DIR", str(folder))
    monkeypatch.setattr(_runtime, "_DECISIONS", {})
    _runtime.open_session.cache_clear()
    return folder


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
        assert result.labels == keras_result.labels
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
            tuned, tiny_dataset(), tiny_dataset(), head_epochs=1, epochs=1, unfreeze=6,
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


@needs_ort
def test_fit_auto_converts_only_for_passes_long_enough(_cache: Path) -> None:
    xferclass.fit(tiny_model(), tiny_dataset(), tiny_dataset(), epochs=1, verbose=0)
    assert not (_cache / "onnx").exists()  # 3 batches: Keras, nothing converted
    images, labels = tiny_arrays(40)
    long = tf.data.Dataset.from_tensor_slices((images, labels)).batch(2)  # 20 batches
    xferclass.fit(tiny_model(), long, epochs=1, verbose=0, engine="auto")
    (converted,) = (_cache / "onnx").glob("*.onnx")
    # Beside it, the engine "auto" chose for this machine.
    assert [p.name for p in (_cache / "onnx").iterdir() if p != converted] == [
        converted.with_suffix(".auto.json").name
    ]


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


def _slow(forward: Any, seconds: float) -> Any:
    def run(images: Any) -> Any:
        time.sleep(seconds)
        return forward(images)

    return run


def _auto_run(sub: keras.Model, keras_forward: Any, batches: list[np.ndarray]) -> tuple[Any, Any]:
    forward = _runtime.runtime_forward(sub, keras_forward, engine="auto")
    return forward, [forward(batch) for batch in batches]


@needs_ort
def test_auto_picks_the_faster_engine_and_keeps_the_answers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sub = _extractor(tiny_model())
    images, _ = tiny_arrays(40)
    batches = np.split(images, 5)
    expected = [sub.predict_on_batch(b) for b in batches]
    with caplog.at_level(logging.INFO, logger="xferclass"):
        forward, outputs = _auto_run(sub, _slow(sub.predict_on_batch, 0.3), batches)
    assert forward.engine in _runtime.available_runtimes()
    assert forward.chosen is forward.runtime and forward.runtime.engine == forward.engine
    for want, got in zip(expected, outputs):
        _close(want, got)
    chose = [r for r in caplog.records if "engine='auto'" in r.getMessage()]
    assert len(chose) == 1 and forward.engine in chose[0].getMessage()
    # The choice is remembered for the next pass over the same frozen part.
    assert forward_function(sub, engine="auto") is forward.runtime


@needs_ort
def test_auto_keeps_its_choice_on_disk_for_the_next_run(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    sub = _extractor(tiny_model())
    images, _ = tiny_arrays(40)
    batches = np.split(images, 5)
    forward, _ = _auto_run(sub, _slow(sub.predict_on_batch, 0.3), batches)
    path = forward.runtime.path
    record = json.loads(path.with_suffix(".auto.json").read_text())
    (machine,) = record
    assert machine == _runtime._machine()
    assert machine.endswith(f" / {_runtime._threads()} threads")
    assert record[machine]["engine"] == forward.engine
    rates = record[machine]["images_per_s"]
    assert set(rates) == {"keras", *_runtime.available_runtimes()}
    # Batches 2 and 3 were timed (16 images); Keras slept 0.3 s per batch on them.
    assert 0 < rates["keras"] <= 16 / 0.6
    assert rates[forward.engine] > rates["keras"]

    # A new run (nothing kept in memory) reads the choice and times nothing.
    monkeypatch.setattr(_runtime, "_DECISIONS", {})
    monkeypatch.setattr(_runtime, "_Auto", None)  # timing again would fail
    with caplog.at_level(logging.INFO, logger="xferclass"):
        again = forward_function(sub, engine="auto")
    assert again is forward.runtime
    lines = [r.getMessage() for r in caplog.records if "engine='auto'" in r.getMessage()]
    assert len(lines) == 1 and "measured on this machine before" in lines[0]
    _close(sub.predict_on_batch(images), again(images))


@needs_ort
@pytest.mark.parametrize("damage", ["corrupt", "another machine", "unknown engine"])
def test_auto_times_again_when_the_kept_choice_does_not_apply(
    damage: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    sub = _extractor(tiny_model())
    path = _runtime.convert_to_onnx(sub)
    record = path.with_suffix(".auto.json")
    machine = _runtime._machine() if damage != "another machine" else "another CPU / 64 threads"
    engine = "tensorrt" if damage == "unknown engine" else "keras"
    record.write_text(
        "{not json" if damage == "corrupt" else json.dumps({machine: {"engine": engine}})
    )
    forward = forward_function(sub, engine="auto")
    assert isinstance(forward, _runtime._Auto)
    # The timing that follows writes a fresh record for this machine.
    images, _ = tiny_arrays(24)
    for batch in np.split(images, 3):
        forward(batch)
    kept = json.loads(record.read_text())
    assert kept[_runtime._machine()]["engine"] == forward.engine
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
def test_auto_stays_on_keras_when_the_runtime_is_slower(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    sub = _extractor(tiny_model())
    real_open = _runtime.open_session.__wrapped__

    def slow_session(path: Path, engine: str) -> Any:
        session = real_open(path, engine)
        monkeypatch.setattr(session, "_run", _slow(session._run, 0.3))
        return session

    monkeypatch.setattr(_runtime, "open_session", slow_session)
    images, _ = tiny_arrays(40)
    batches = np.split(images, 5)
    with caplog.at_level(logging.INFO, logger="xferclass"):
        forward, outputs = _auto_run(sub, sub.predict_on_batch, batches)
    assert forward.engine == "keras"
    for batch, got in zip(batches, outputs):
        np.testing.assert_array_equal(got, sub.predict_on_batch(batch))
    lines = [r.getMessage() for r in caplog.records if "engine='auto'" in r.getMessage()]
    assert len(lines) == 1 and "stays on Keras" in lines[0] and "was not" in lines[0]


@needs_ort
def test_auto_falls_back_when_the_runtime_disagrees(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    sub = _extractor(tiny_model())
    real_open = _runtime.open_session.__wrapped__

    def wrong_session(path: Path, engine: str) -> Any:
        session = real_open(path, engine)
        run = session._run
        monkeypatch.setattr(session, "_run", lambda a: [o + 0.01 for o in run(a)])
        return session

    monkeypatch.setattr(_runtime, "open_session", wrong_session)
    images, _ = tiny_arrays(24)
    with caplog.at_level(logging.INFO, logger="xferclass"):
        forward, outputs = _auto_run(sub, sub.predict_on_batch, np.split(images, 3))
    assert forward.engine == "keras"
    np.testing.assert_array_equal(np.concatenate(outputs), sub.predict_on_batch(images))
    lines = [r.getMessage() for r in caplog.records if "engine='auto'" in r.getMessage()]
    assert len(lines) == 1 and "differs from Keras" in lines[0]


@needs_ort
def test_auto_falls_back_with_one_line_when_conversion_fails(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(self: keras.Model, filepath: str, **kwargs: Any) -> None:
        raise ValueError("Unsupported op: SomeOp")

    monkeypatch.setattr(keras.Model, "export", broken)
    model = tiny_model()
    with caplog.at_level(logging.INFO, logger="xferclass"):
        forward = forward_function(model, engine="auto")
    assert forward == model.predict_on_batch
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
