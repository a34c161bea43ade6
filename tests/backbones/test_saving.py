from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest

import xferclass
from helpers import tiny_arrays, tiny_dataset, tiny_model


def test_save_and_load_in_a_fresh_process_gives_the_same_predictions(tmp_path):
    model = tiny_model(dropout=0.2)
    xferclass.fit(model, tiny_dataset(), epochs=2, verbose=0)
    path = tmp_path / "m.keras"
    model.save(path)
    images, _ = tiny_arrays(6, seed=4)
    np.save(tmp_path / "images.npy", images)
    expected = model.predict(images, verbose=0)
    script = textwrap.dedent(
        f"""
        import json, numpy as np, keras
        import xferclass
        model = keras.models.load_model({str(path)!r})  # safe_mode is on by default
        p = model.predict(np.load({str(tmp_path / "images.npy")!r}), verbose=0)
        np.save({str(tmp_path / "out.npy")!r}, p)
        print(json.dumps([layer.__class__.__name__ for layer in model.layers]))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stderr[-2000:]
    layers = json.loads(done.stdout.strip().splitlines()[-1])
    assert "Lambda" not in layers and "Preprocessing" in layers and "InferenceMode" in layers
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), expected, atol=1e-6)


def test_atomic_save_leaves_no_temporary_files(tmp_path):
    model = tiny_model()
    xferclass.save_model(model, tmp_path / "a.keras")
    xferclass.save_model(model, tmp_path / "a.keras")
    assert [p.name for p in tmp_path.iterdir()] == ["a.keras"]
    with pytest.raises(ValueError, match="must end in .keras"):
        xferclass.save_model(model, tmp_path / "a.h5")


def test_load_model_errors(tmp_path):
    with pytest.raises(xferclass.ModelFileError, match="no such file"):
        xferclass.load_model(tmp_path / "missing.keras")
    with pytest.raises(xferclass.ModelFileError, match="is a folder"):
        xferclass.load_model(tmp_path)
    legacy = tmp_path / "old.h5"
    legacy.write_bytes(b"\x89HDF\r\n\x1a\n")
    with pytest.raises(xferclass.ModelFileError, match="can run code"):
        xferclass.load_model(legacy)
    text = tmp_path / "notes.keras"
    text.write_text("hello")
    with pytest.raises(xferclass.ModelFileError, match="not a Keras model file"):
        xferclass.load_model(text)
    other_zip = tmp_path / "other.keras"
    with zipfile.ZipFile(other_zip, "w") as archive:
        archive.writestr("readme.txt", "not a model")
    with pytest.raises(xferclass.ModelFileError, match="zip file but not a Keras model"):
        xferclass.load_model(other_zip)
    good = tmp_path / "good.keras"
    tiny_model().save(good)
    data = good.read_bytes()
    truncated = tmp_path / "truncated.keras"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(xferclass.ModelFileError):
        xferclass.load_model(truncated)


def test_lambda_layers_are_refused_by_safe_mode(tmp_path):
    import keras

    inputs = keras.Input((4,))
    outputs = keras.layers.Lambda(lambda x: x * 2)(inputs)
    path = tmp_path / "lambda.keras"
    keras.Model(inputs, outputs).save(path)
    with pytest.raises(xferclass.ModelFileError, match="could not be loaded"):
        xferclass.load_model(path)


@pytest.mark.parametrize("error", [MemoryError(), RecursionError("too deep"), KeyboardInterrupt()])
def test_load_model_lets_errors_that_are_not_the_files_through(tmp_path, monkeypatch, error):
    import keras

    good = tmp_path / "good.keras"
    tiny_model().save(good)

    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(keras.models, "load_model", fail)
    with pytest.raises(type(error)):
        xferclass.load_model(good)


def test_load_model_names_the_first_line_of_a_file_error(tmp_path):
    good = tmp_path / "good.keras"
    tiny_model().save(good)
    with zipfile.ZipFile(good) as archive:
        entries = {name: archive.read(name) for name in archive.namelist()}
    entries["config.json"] = b"{not json\nat all"
    broken = tmp_path / "broken.keras"
    with zipfile.ZipFile(broken, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    with pytest.raises(xferclass.ModelFileError, match="could not be loaded: ") as caught:
        xferclass.load_model(broken)
    assert "\n" not in str(caught.value) and caught.value.__cause__ is not None


def test_class_names_threshold_and_report_travel_in_the_preprocessing_layer(tmp_path):
    import keras

    from xferclass.evaluation._auto_report import read_report, store_report
    from xferclass.layers import preprocessing_layer
    from xferclass.runtime._common import model_class_names, model_multi_label, store_class_names

    model = tiny_model()
    store_class_names(model, ["circle", "square", "triangle"])
    assert store_report(model, {"plan": {"backbone": "test_tiny"}})
    preprocessing_layer(model).threshold = 0.3
    path = tmp_path / "m.keras"
    xferclass.save_model(model, path)
    loaded = xferclass.load_model(path)
    assert model_class_names(loaded) == ["circle", "square", "triangle"]
    assert model_multi_label(loaded) == (False, 0.5)  # single-label: the threshold is not kept
    assert read_report(path) == {"plan": {"backbone": "test_tiny"}}
    plain = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, activation="sigmoid")])
    assert preprocessing_layer(plain) is None and model_class_names(plain) is None
    store_class_names(plain, ["a", "b"])  # nothing to store them in: no error
    assert not store_report(plain, {}) and read_report(plain) is None
    assert model_multi_label(plain) == (True, 0.5)


def test_a_model_saved_by_release_0_3_loads_and_predicts_as_it_did() -> None:
    # fixtures/make_saved_models.py wrote it with the code of release 0.3: an average
    # of two tiny classifiers (one with averaged heads) with rotations inside, class names
    # and a report. Every registered layer it holds must still load, with safe mode on.
    from xferclass.auto import read_report
    from xferclass.layers import built_in_views

    fixtures = Path(__file__).resolve().parent / "fixtures"
    saved = np.load(fixtures / "saved_0.3.npz")
    model = xferclass.load_model(fixtures / "saved_0.3.keras")
    found = model.predict(saved["images"], verbose=0)
    np.testing.assert_allclose(found, saved["probabilities"], rtol=0, atol=1e-5)
    assert built_in_views(model) == "rotations"
    assert read_report(model)["plan"]["tta"] == "rotations"
    predicted = xferclass.predict(model, saved["images"])
    assert predicted.class_names == ["circle", "square", "triangle"]
