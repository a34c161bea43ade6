"""``xferclass.export``: every format and quantization against Keras, labels inside,
artifacts that run without xferclass or Keras, the bytes-in signature against
``xferclass.predict``, the backbone support table and every error path.

The artifacts of one small trained model are exported once per module and shared.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import logging
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import xferclass
from helpers import (
    CLASSES,
    RUNNERS,
    SIZE,
    run_litert,
    run_onnx,
    tiny_arrays,
    tiny_model,
)
from xferclass.runtime._common import store_class_names

export_module = importlib.import_module("xferclass.export")

NAMES = ["red", "green", "blue"]
ROOT = Path(__file__).resolve().parents[2]
#: (format, quantize) -> the file name written for it.
ARTIFACTS = {
    ("saved_model", None): "saved_model",
    ("litert", None): "float32.tflite",
    ("litert", "float16"): "float16.tflite",
    ("litert", "dynamic"): "dynamic.tflite",
    ("litert", "int8"): "int8.tflite",
    ("onnx", None): "model.onnx",
    ("openvino", None): "model.xml",
}
#: Quantized LiteRT must still agree with Keras on the top class this often.
AGREEMENT_FLOOR = 0.8


@pytest.fixture(scope="module")
def trained() -> keras.Model:
    """A tiny classifier trained for a few epochs, so its predictions are confident."""
    model = tiny_model(seed=3)
    images, labels = tiny_arrays(96, seed=1)
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="categorical_crossentropy")
    model.fit(images, labels, epochs=8, batch_size=16, verbose=0)
    store_class_names(model, NAMES)
    return model


@pytest.fixture(scope="module")
def probe() -> np.ndarray:
    """Images the model has not seen, from the same distribution."""
    return tiny_arrays(60, seed=7)[0]


def _write_folder(root: Path, images: np.ndarray, labels: np.ndarray) -> Path:
    for index, (image, label) in enumerate(zip(images, labels.argmax(1))):
        folder = root / NAMES[label]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image.clip(0, 255).astype(np.uint8)).save(folder / f"{index:03d}.png")
    return root


@pytest.fixture(scope="module")
def calibration_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    images, labels = tiny_arrays(48, seed=11)
    return _write_folder(tmp_path_factory.mktemp("calibration"), images, labels)


@pytest.fixture(scope="module")
def artifacts(
    trained: keras.Model, calibration_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[tuple[str, str | None], Path]:
    folder = tmp_path_factory.mktemp("artifacts")
    written = {}
    for (format, quantize), name in ARTIFACTS.items():
        calibration = calibration_dir if quantize == "int8" else None
        paths = xferclass.export(
            trained, folder / name, format=format, quantize=quantize, calibration=calibration
        )
        assert paths[0] == folder / name
        assert all(p.exists() for p in paths)
        written[(format, quantize)] = paths[0]
    return written


# ------------------------------------------------------------------------- parity


@pytest.mark.parametrize("format", ["saved_model", "litert", "onnx", "openvino"])
def test_float32_matches_keras(
    format: str, artifacts: dict, trained: keras.Model, probe: np.ndarray
) -> None:
    expected = trained.predict_on_batch(probe)
    got = RUNNERS[format](artifacts[(format, None)], probe)
    assert got.shape == (len(probe), CLASSES)
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)


def test_float16_within_1e_2(artifacts: dict, trained: keras.Model, probe: np.ndarray) -> None:
    expected = trained.predict_on_batch(probe)
    got = run_litert(artifacts[("litert", "float16")], probe)
    np.testing.assert_allclose(got, expected, atol=1e-2, rtol=0)
    assert (got.argmax(1) == expected.argmax(1)).mean() >= 0.95


@pytest.mark.parametrize("quantize", ["dynamic", "int8"])
def test_quantized_top1_agreement(
    quantize: str,
    artifacts: dict,
    trained: keras.Model,
    probe: np.ndarray,
    record_property: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    expected = trained.predict_on_batch(probe)
    got = run_litert(artifacts[("litert", quantize)], probe)
    assert got.shape == expected.shape and np.all(np.isfinite(got))
    agreement = float((got.argmax(1) == expected.argmax(1)).mean())
    record_property(f"{quantize}_top1_agreement", agreement)
    with capsys.disabled():
        print(f"\n{quantize} LiteRT top-1 agreement with Keras: {agreement:.3f} on {len(probe)}")
    assert agreement >= AGREEMENT_FLOOR, f"{quantize}: top-1 agreement {agreement:.3f}"


def test_quantized_files_are_smaller(artifacts: dict) -> None:
    float32 = artifacts[("litert", None)].stat().st_size
    for quantize in ("float16", "dynamic", "int8"):
        assert artifacts[("litert", quantize)].stat().st_size < float32, quantize


# -------------------------------------------------------------------- class names


def test_class_names_travel_in_each_format(artifacts: dict) -> None:
    # SavedModel: an asset file and a signature.
    folder = artifacts[("saved_model", None)]
    assert (folder / "assets" / "class_names.txt").read_text().splitlines() == NAMES
    loaded = tf.saved_model.load(str(folder))
    stored = loaded.signatures["class_names"]()["class_names"].numpy()
    assert [name.decode() for name in stored] == NAMES
    # LiteRT: a flatbuffer metadata entry and a packed labels.txt.
    from tensorflow.lite.tools import flatbuffer_utils

    for quantize in (None, "float16", "dynamic", "int8"):
        path = artifacts[("litert", quantize)]
        with zipfile.ZipFile(path) as packed:
            assert packed.read("labels.txt").decode().splitlines() == NAMES
        tree = flatbuffer_utils.read_model(str(path))
        entries = {m.name.decode(): m.buffer for m in tree.metadata}
        assert json.loads(bytes(tree.buffers[entries["class_names"]].data)) == NAMES
    # ONNX: metadata_props, as onnxruntime shows them.
    import onnxruntime

    session = onnxruntime.InferenceSession(str(artifacts[("onnx", None)]))
    assert json.loads(session.get_modelmeta().custom_metadata_map["class_names"]) == NAMES
    # OpenVINO: rt_info.
    import openvino

    network = openvino.Core().read_model(str(artifacts[("openvino", None)]))
    assert json.loads(network.get_rt_info(["xferclass", "class_names"]).astype(str)) == NAMES
    # The reader of xferclass agrees.
    for (format, _), path in artifacts.items():
        assert export_module.read_class_names(path, format=format) == NAMES


def test_serving_signature_names_the_top_class(
    artifacts: dict, trained: keras.Model, probe: np.ndarray
) -> None:
    serve = tf.saved_model.load(str(artifacts[("saved_model", None)])).signatures["serving_default"]
    outputs = serve(tf.constant(probe[:8]))
    top = trained.predict_on_batch(probe[:8]).argmax(1)
    np.testing.assert_array_equal(outputs["class_index"].numpy(), top)
    assert [n.decode() for n in outputs["class_name"].numpy()] == [NAMES[i] for i in top]


# -------------------------------------------------------- encoded bytes and predict


@pytest.fixture(scope="module")
def image_files(tmp_path_factory: pytest.TempPathFactory, probe: np.ndarray) -> list[Path]:
    """The probe images as JPEG, PNG, GIF, 24-bit and palette BMP, at other sizes than 32."""
    folder = tmp_path_factory.mktemp("encoded")
    files = []
    shapes = [(40, 52), (32, 32), (24, 30), (64, 48), (33, 35)]
    kinds = [("jpg", "RGB", "JPEG"), ("png", "RGB", "PNG"), ("gif", "P", "GIF"),
             ("bmp", "RGB", "BMP"), ("bmp", "P", "BMP")]  # fmt: skip
    for index, ((suffix, mode, codec), (height, width)) in enumerate(zip(kinds * 2, shapes * 2)):
        pixels = probe[index].clip(0, 255).astype(np.uint8)
        image = Image.fromarray(pixels).resize((width, height))
        if mode == "P":
            image = image.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
        path = folder / f"{index:02d}_{mode}.{suffix}"
        image.save(path, codec)
        files.append(path)
    # Phone photos: JPEGs stored turned, with the EXIF orientation that puts them upright.
    for orientation in range(2, 9):
        pixels = probe[orientation].clip(0, 255).astype(np.uint8)
        exif = Image.Exif()
        exif[0x0112] = orientation
        path = folder / f"exif_{orientation}.jpg"
        Image.fromarray(pixels).resize((44, 28)).save(path, "JPEG", quality=95, exif=exif)
        files.append(path)
    return files


def test_bytes_signature_matches_predict(
    artifacts: dict, trained: keras.Model, image_files: list[Path]
) -> None:
    expected = xferclass.predict(trained, image_files)
    loaded = tf.saved_model.load(str(artifacts[("saved_model", None)]))
    outputs = loaded.signatures["serve_bytes"](
        tf.constant([path.read_bytes() for path in image_files])
    )
    np.testing.assert_allclose(
        outputs["probabilities"].numpy(), expected.probabilities, atol=1e-4, rtol=0
    )
    assert [name.decode() for name in outputs["class_name"].numpy()] == expected.predicted_names


# ------------------------------------------------------------- without xferclass


STANDALONE = textwrap.dedent(
    """
    import importlib.abc, json, sys

    # As if neither were installed: importing them fails, and importlib.util.find_spec
    # (which TensorFlow uses to look for Keras) answers None.
    BLOCKED = ("xferclass", "keras")

    class Blocked(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"{name} is not available here", name=name)
            return None

    sys.meta_path.insert(0, Blocked())
    for name in BLOCKED:
        sys.modules[name] = None
    for name in ("xferclass", "keras"):
        try:
            __import__(name)
        except ImportError:
            pass
        else:
            raise SystemExit(f"{name} could be imported")

    import numpy as np
    job = json.loads(sys.argv[1])
    images = np.load(job["images"])
    out = {}

    import onnxruntime
    session = onnxruntime.InferenceSession(job["onnx"], providers=["CPUExecutionProvider"])
    (entry,) = session.get_inputs()
    out["onnx"] = session.run(None, {entry.name: images})[0].tolist()
    out["onnx_names"] = json.loads(session.get_modelmeta().custom_metadata_map["class_names"])

    import openvino
    core = openvino.Core()
    network = core.read_model(job["openvino"])
    stored = network.get_rt_info(["xferclass", "class_names"]).astype(str)
    out["openvino_names"] = json.loads(stored)
    compiled = core.compile_model(network, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    out["openvino"] = np.asarray(compiled(images)[compiled.output(0)]).tolist()

    import zipfile
    from ai_edge_litert.interpreter import Interpreter
    interpreter = Interpreter(model_path=job["litert"])
    index = interpreter.get_input_details()[0]["index"]
    interpreter.resize_tensor_input(index, list(images.shape))
    interpreter.allocate_tensors()
    interpreter.set_tensor(index, images)
    interpreter.invoke()
    out["litert"] = interpreter.get_tensor(interpreter.get_output_details()[0]["index"]).tolist()
    out["litert_names"] = zipfile.ZipFile(job["litert"]).read("labels.txt").decode().split()

    import tensorflow as tf
    loaded = tf.saved_model.load(job["saved_model"])
    result = loaded.signatures["serving_default"](tf.constant(images))
    out["saved_model"] = result["probabilities"].numpy().tolist()
    files = [open(path, "rb").read() for path in job["files"]]
    result = loaded.signatures["serve_bytes"](tf.constant(files))
    out["bytes"] = result["probabilities"].numpy().tolist()
    out["bytes_names"] = [n.decode() for n in result["class_name"].numpy()]
    out["saved_model_names"] = [
        n.decode() for n in loaded.signatures["class_names"]()["class_names"].numpy()
    ]

    out["modules"] = sorted(
        n for n, m in sys.modules.items() if n.split(".")[0] in BLOCKED and m is not None
    )
    print("RESULT" + json.dumps(out))
    """
)


def test_artifacts_run_without_xferclass_or_keras(
    artifacts: dict,
    trained: keras.Model,
    probe: np.ndarray,
    image_files: list[Path],
    tmp_path: Path,
) -> None:
    np.save(tmp_path / "images.npy", probe[:16])
    job = {format: str(artifacts[(format, None)]) for format in RUNNERS}
    job.update(images=str(tmp_path / "images.npy"), files=[str(p) for p in image_files])
    environment = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    environment["TF_CPP_MIN_LOG_LEVEL"] = "2"
    done = subprocess.run(
        [sys.executable, "-I", "-c", STANDALONE, json.dumps(job)],
        capture_output=True, text=True, timeout=300, env=environment, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    (line,) = [line for line in done.stdout.splitlines() if line.startswith("RESULT")]
    out = json.loads(line[len("RESULT") :])
    assert out["modules"] == []
    expected = trained.predict_on_batch(probe[:16])
    for format in RUNNERS:
        np.testing.assert_allclose(np.array(out[format]), expected, atol=1e-4, err_msg=format)
        assert out[f"{format}_names"] == NAMES, format
    reference = xferclass.predict(trained, image_files)
    np.testing.assert_allclose(np.array(out["bytes"]), reference.probabilities, atol=1e-4)
    assert out["bytes_names"] == reference.predicted_names


# ------------------------------------------------------------ other models, errors


def test_model_without_class_names_exports_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, probe: np.ndarray
) -> None:
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(4, 3, strides=4)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(CLASSES, activation="softmax")(x)
    plain = keras.Model(inputs, outputs, name="plain")
    with caplog.at_level(logging.WARNING, logger="xferclass"):
        (path,) = xferclass.export(plain, tmp_path / "plain.onnx", format="onnx")
    assert any("no class names" in r.getMessage() for r in caplog.records)
    assert export_module.read_class_names(path, format="onnx") is None
    np.testing.assert_allclose(
        run_onnx(path, probe[:4]), plain.predict_on_batch(probe[:4]), atol=1e-4
    )
    (folder,) = xferclass.export(plain, tmp_path / "plain_sm", format="saved_model")
    assert export_module.read_class_names(folder, format="saved_model") is None
    names = tf.saved_model.load(str(folder)).signatures["serving_default"](tf.constant(probe[:2]))[
        "class_name"
    ]
    assert all(name.decode() in ("0", "1", "2") for name in names.numpy())


def test_unknown_format(trained: keras.Model, tmp_path: Path) -> None:
    with pytest.raises(xferclass.InvalidArgumentError, match="format='coreml'.*'onnx'"):
        xferclass.export(trained, tmp_path / "m", format="coreml")
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(format="litert", quantize="int4"), "quantize='int4' is not one of"),
        (dict(format="onnx", quantize="float16"), "applies to format='litert' only"),
        (dict(format="litert", quantize="int8"), "quantize='int8' needs representative images"),
        (dict(format="litert", calibration=np.zeros((1, 32, 32, 3))), "used by quantize='int8'"),
        (dict(format="openvino"), "pass a path ending in .xml"),
    ],
)
def test_bad_options(trained: keras.Model, tmp_path: Path, options: dict, message: str) -> None:
    with pytest.raises(xferclass.InvalidArgumentError, match=message):
        xferclass.export(trained, tmp_path / "m.out", **options)


def test_bad_model_and_calibration_types(trained: keras.Model, tmp_path: Path) -> None:
    with pytest.raises(xferclass.InvalidArgumentTypeError, match="keras.Model"):
        xferclass.export("model.keras", tmp_path / "m.onnx", format="onnx")
    with pytest.raises(xferclass.InvalidArgumentTypeError, match="calibration="):
        xferclass.export(
            trained, tmp_path / "m.tflite", format="litert", quantize="int8", calibration=[1, 2]
        )
    with pytest.raises(xferclass.InvalidArgumentError, match="is not a folder"):
        xferclass.export(
            trained, tmp_path / "m.tflite", format="litert", quantize="int8",
            calibration=tmp_path / "missing",
        )  # fmt: skip


def test_existing_path_needs_overwrite(trained: keras.Model, tmp_path: Path) -> None:
    target = tmp_path / "m.onnx"
    target.write_bytes(b"an older file")
    with pytest.raises(xferclass.InvalidArgumentError, match="already exists.*overwrite=True"):
        xferclass.export(trained, target, format="onnx")
    assert target.read_bytes() == b"an older file"
    assert xferclass.export(trained, target, format="onnx", overwrite=True) == [target]
    assert export_module.read_class_names(target, format="onnx") == NAMES
    # A folder (SavedModel) is replaced whole; nothing is left beside it.
    folder = tmp_path / "sm"
    (folder / "stale").mkdir(parents=True)
    xferclass.export(trained, folder, format="saved_model", overwrite=True)
    assert not (folder / "stale").exists() and (folder / "saved_model.pb").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "sm"]


def test_int8_calibration_from_a_dataset(
    trained: keras.Model, tmp_path: Path, probe: np.ndarray
) -> None:
    images, labels = tiny_arrays(32, seed=12)
    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(8)
    (path,) = xferclass.export(
        trained, tmp_path / "i8.tflite", format="litert", quantize="int8", calibration=dataset
    )
    got = run_litert(path, probe)
    assert (got.argmax(1) == trained.predict_on_batch(probe).argmax(1)).mean() >= AGREEMENT_FLOOR


@pytest.mark.parametrize("module", ["tf2onnx", "onnx", "onnxruntime"])
def test_missing_extra_is_one_line(
    trained: keras.Model, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, module: str
) -> None:
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(xferclass.MissingDependencyError) as raised:
        xferclass.export(trained, tmp_path / "m.onnx", format="onnx")
    text = str(raised.value)
    assert "\n" not in text and 'pip install "xferclass[export]"' in text and module in text
    assert not (tmp_path / "m.onnx").exists()


def test_missing_openvino(
    trained: keras.Model, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)
    with pytest.raises(xferclass.MissingDependencyError, match=r"openvino.*xferclass\[export\]"):
        xferclass.export(trained, tmp_path / "m.xml", format="openvino")


def test_conversion_failure_names_backbone_and_format(
    trained: keras.Model, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unsupported(*args: object, **kwargs: object) -> None:
        raise NotImplementedError("op FancyOp is not supported\nmore detail")

    monkeypatch.setattr(trained, "export", unsupported)
    with pytest.raises(xferclass.ExportError) as raised:
        xferclass.export(trained, tmp_path / "m.onnx", format="onnx")
    assert str(raised.value) == (
        "cannot export backbone 'test_tiny' to format='onnx': op FancyOp is not supported"
    )
    assert list(tmp_path.iterdir()) == []  # the scratch folder is gone


def test_an_artifact_that_differs_from_keras_is_refused(
    trained: keras.Model, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = export_module._runner
    monkeypatch.setattr(  # the probabilities come back with their classes reversed
        export_module, "_runner", lambda f, p: lambda batch: [real(f, p)(batch)[0][:, ::-1]]
    )
    with pytest.raises(xferclass.ExportError, match="fails its check.*differ from Keras"):
        xferclass.export(trained, tmp_path / "m.onnx", format="onnx")
    assert not (tmp_path / "m.onnx").exists()


# ----------------------------------------------------------- backbones and the docs


def _matrix_script() -> Any:
    spec = importlib.util.spec_from_file_location(
        "export_matrix", ROOT / "benchmarks" / "export_matrix.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_portable_constants_restores_the_model() -> None:
    keras.utils.set_random_seed(0)
    model = xferclass.build_classifier(
        "efficientnet_b0", num_classes=3, weights=None, input_size=32, head_units=8
    )
    (layer,) = [
        lay
        for lay in model._flatten_layers(include_self=False)
        if isinstance(lay, keras.layers.Normalization)
    ]
    before = layer.mean
    with export_module.portable_constants(model):
        assert isinstance(layer.mean, np.ndarray)
        np.testing.assert_array_equal(layer.mean, keras.ops.convert_to_numpy(before))
    assert layer.mean is before


@pytest.mark.slow
def test_support_table_in_the_docs_is_current(tmp_path: Path) -> None:
    """Rebuild a few cells of the backbone table and compare them with docs/deploy.md.

    The whole table takes minutes (``python benchmarks/export_matrix.py --write``
    regenerates it); this checks a subset: the ONNX export that needed the fix,
    and a small backbone's LiteRT export (every format and quantization is tested
    on the tiny model above).
    """
    matrix = _matrix_script()
    documented = matrix.documented_cells()
    assert set(documented) == set(matrix.REPRESENTATIVES)
    represented = [name for names in matrix.REPRESENTATIVES.values() for name in names]
    from xferclass.backbones._backbones import _KERAS_APPLICATIONS
    from xferclass.backbones._lite_arch import VARIANTS

    builtin = [row[0] for row in _KERAS_APPLICATIONS] + list(VARIANTS)
    assert sorted(represented) == sorted(builtin), "every built-in backbone is represented once"
    cells = [("efficientnet_b0", "onnx"), ("mobilenet_v2", "litert")]
    for backbone, format in cells:
        assert matrix.cell(backbone, format, tmp_path) == documented[backbone][format], (
            f"docs/deploy.md is stale for {backbone}/{format}; "
            "run python benchmarks/export_matrix.py --write"
        )


# ------------------------------------------------------------------ command line


def test_command_line_export(
    trained: keras.Model, tmp_path: Path, capsys: pytest.CaptureFixture[str], probe: np.ndarray
) -> None:
    from xferclass.cli import main

    saved = tmp_path / "model.keras"
    xferclass.save_model(trained, saved)
    out = tmp_path / "model.onnx"
    assert main(["export", str(saved), str(out), "--format", "onnx"]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {out}"
    assert export_module.read_class_names(out, format="onnx") == NAMES
    np.testing.assert_allclose(
        run_onnx(out, probe[:8]), trained.predict_on_batch(probe[:8]), atol=1e-4
    )
    # Again without --overwrite, and int8 without --calibration: one line each, status 1.
    assert main(["export", str(saved), str(out), "--format", "onnx"]) == 1
    assert capsys.readouterr().err.strip().splitlines() == [
        f"xferclass: error: path={str(out)!r} already exists; pass overwrite=True to replace it"
    ]
    arguments = ["export", str(saved), str(tmp_path / "m.tflite"), "--format", "litert"]
    assert main([*arguments, "--quantize", "int8"]) == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("xferclass: error: quantize='int8' needs representative images")


@pytest.mark.parametrize(("format", "name"), [("onnx", "model.onnx"), ("openvino", "model.xml")])
def test_read_class_names_of_a_corrupt_file_is_an_export_error(tmp_path, format, name):
    pytest.importorskip("onnx" if format == "onnx" else "openvino")
    path = tmp_path / name
    path.write_bytes(b"<net>\x00\xff\x12\x34 truncated")
    with pytest.raises(xferclass.ExportError, match="is not a readable") as raised:
        export_module.read_class_names(path, format=format)
    assert "model." + name.split(".")[1] in str(raised.value)
    assert "\n" not in str(raised.value)
