"""``export``: a trained classifier as a SavedModel, LiteRT, ONNX or OpenVINO file.

Every artifact keeps the contract of the Keras model: raw RGB pixels in
[0, 255], float32, NHWC at the model's input size in; class probabilities out;
the preprocessing is inside. The class names travel inside each artifact, in
the format's own place for metadata:

* SavedModel: ``assets/class_names.txt`` (one name per line), the
  ``class_names`` signature, and a ``class_name`` output of the serving
  signatures;
* LiteRT (``.tflite``): a ``class_names`` entry (JSON) of the flatbuffer's
  metadata, and ``labels.txt`` packed as an associated file (a zip archive at
  the end of the file, which :mod:`zipfile` reads);
* ONNX: ``metadata_props["class_names"]`` (JSON);
* OpenVINO: ``rt_info["xferclass"]["class_names"]`` (JSON) of the ``.xml``.

Conversion goes through Keras's own ``model.export``. After writing, every
artifact is loaded by its own runtime and run on a probe batch; an artifact that
does not load or (unquantized) does not match Keras is not delivered.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from ..core._errors import (
    ExportError,
    InvalidArgumentError,
    InvalidArgumentTypeError,
    MissingDependencyError,
    first_line,
)
from ..core._gc import collecting
from ..core._log import logger
from ..runtime._common import model_class_names

__all__ = ["export", "FORMATS", "QUANTIZATIONS", "read_unknown_threshold"]

#: Formats that :func:`export` writes.
FORMATS = ("saved_model", "litert", "onnx", "openvino")
#: LiteRT quantizations that :func:`export` applies (``quantize=``).
QUANTIZATIONS = ("float16", "dynamic", "int8")
#: Most calibration images read for ``quantize="int8"``.
CALIBRATION_IMAGES = 256
#: The key (or file) under which each format stores the class names.
CLASS_NAMES_KEY = "class_names"
#: Where an artifact keeps the threshold of its unknown score (beside the class names).
UNKNOWN_THRESHOLD_KEY = "unknown_threshold"
SAVED_MODEL_ASSET = "class_names.txt"
LITERT_LABELS_FILE = "labels.txt"
#: Largest difference from Keras that an unquantized artifact may show on the probe batch.
_PROBE_TOLERANCE = 1e-3
#: The Python modules each format needs, and the pip package of each.
_REQUIREMENTS: dict[str, tuple[tuple[str, str], ...]] = {
    "saved_model": (),
    "litert": (),
    "onnx": (("onnx", "onnx"), ("tf2onnx", "tf2onnx"), ("onnxruntime", "onnxruntime")),
    "openvino": (("openvino", "openvino"),),
}


#: Starts the stderr line that carries the error of :mod:`xferclass.deploy._export_child`.
ERROR_PREFIX = "xferclass-export-error: "
#: Formats that Keras writes only from the TensorFlow backend; on another backend
#: :func:`export` writes them from a TensorFlow process (see :func:`_export_in_tensorflow`).
_TENSORFLOW_FORMATS = ("saved_model", "litert")
#: The converter Keras's ONNX export needs on each backend besides TensorFlow, and the
#: extra that installs it.
_ONNX_CONVERTERS = {
    "jax": ("jax2onnx", "jax2onnx", "jax"),
    "torch": ("onnxscript", "onnxscript", "torch"),
}


def _require(module: str, package: str, purpose: str, extra: str = "export") -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingDependencyError(
            f'{purpose} needs {package}, which is not installed; pip install "xferclass[{extra}]"'
        ) from None


def _require_format(format: str) -> None:
    """Raise :class:`MissingDependencyError` when ``format``'s converter or runtime is missing."""
    backend = keras.backend.backend()
    needs = list(_REQUIREMENTS[format])
    if backend != "tensorflow" and format in ("onnx", "openvino"):
        needs = [(m, p) for m, p in needs if m != "tf2onnx"] + [("onnxruntime", "onnxruntime")]
        if format == "openvino":
            needs.append(("onnx", "onnx"))
        if backend in _ONNX_CONVERTERS:
            module, package, extra = _ONNX_CONVERTERS[backend]
            _require(module, package, f"format={format!r} on the {backend} backend", extra)
    for module, package in needs:
        _require(module, package, f"format={format!r}")


def _check_arguments(
    model: Any, format: Any, quantize: Any, calibration: Any, overwrite: Any
) -> None:
    if not isinstance(model, keras.Model):
        raise InvalidArgumentTypeError(
            f"model must be a keras.Model (e.g. from build_classifier or load_model); "
            f"got {type(model).__name__}"
        )
    if format not in FORMATS:
        raise InvalidArgumentError(
            f"format={format!r} is not one of {', '.join(repr(f) for f in FORMATS)}"
        )
    if quantize is not None:
        if quantize not in QUANTIZATIONS:
            raise InvalidArgumentError(
                f"quantize={quantize!r} is not one of "
                f"{', '.join(repr(q) for q in QUANTIZATIONS)} (or None)"
            )
        if format != "litert":
            raise InvalidArgumentError(
                f"quantize={quantize!r} applies to format='litert' only, not format={format!r}"
            )
    if quantize == "int8" and calibration is None:
        raise InvalidArgumentError(
            "quantize='int8' needs representative images: pass calibration= a folder of "
            "class subfolders (the training folder is a good choice) or a dataset of images"
        )
    if calibration is not None and quantize != "int8":
        raise InvalidArgumentError(
            f"calibration= is used by quantize='int8' only (quantize={quantize!r})"
        )
    if not isinstance(overwrite, bool):
        raise InvalidArgumentTypeError(f"overwrite={overwrite!r} must be True or False")
    shape = model.input_shape
    if (
        not isinstance(shape, tuple)
        or len(shape) != 4
        or shape[1] is None
        or shape[2] is None
        or shape[3] != 3
    ):
        raise InvalidArgumentError(
            f"model has input shape {shape}; export needs one input of (batch, height, width, 3)"
        )


def _targets(path: Path, format: str) -> list[Path]:
    """The paths that exporting to ``path`` in ``format`` writes."""
    if format == "openvino":
        if path.suffix != ".xml":
            raise InvalidArgumentError(
                f"path={os.fspath(path)!r}: an OpenVINO model is an .xml file (with its .bin "
                "beside it); pass a path ending in .xml"
            )
        return [path, path.with_suffix(".bin")]
    return [path]


def backbone_name(model: keras.Model) -> str:
    """The backbone name of a model from :func:`build_classifier`, else the model's name."""
    name = str(model.name)
    return name[: -len("_classifier")] if name.endswith("_classifier") else name


@contextlib.contextmanager
def portable_constants(model: keras.Model) -> Iterator[None]:
    """Make the constants of ``Normalization`` layers graph constants while exporting.

    An adapted ``keras.layers.Normalization`` (EfficientNet B0 to B7 have one in
    their stem) holds its mean and variance as eager tensors computed from its
    weights. A traced function captures those tensors as extra inputs, and
    tf2onnx turns them into inputs of the ONNX graph, which onnxruntime then
    refuses to run without. For the duration of the export they are NumPy
    arrays of the same values, which tracing embeds as constants; the layers are
    restored afterwards, so the model computes exactly what it did.
    """
    saved: list[tuple[Any, Any, Any]] = []
    try:
        for layer in model._flatten_layers(include_self=False, recursive=True):
            if (
                isinstance(layer, keras.layers.Normalization)
                and getattr(layer, "mean", None) is not None
                and not isinstance(layer.mean, np.ndarray)
            ):
                saved.append((layer, layer.mean, layer.variance))
                layer.mean = np.asarray(keras.ops.convert_to_numpy(layer.mean))
                layer.variance = np.asarray(keras.ops.convert_to_numpy(layer.variance))
        yield
    finally:
        for layer, mean, variance in saved:
            layer.mean, layer.variance = mean, variance


# --------------------------------------------------------------------------------------
# Writers: each writes into a fresh folder and returns the paths it wrote
# --------------------------------------------------------------------------------------


def _decode_for_serving(size: tuple[int, int]) -> Callable[[tf.Tensor], tf.Tensor]:
    """Encoded bytes to float32 (h, w, 3) in [0, 255], as :func:`xferclass.predict` reads files:
    decoded, turned upright by the EXIF orientation of a JPEG, resized.

    An image whose header promises more than the pixel limit (``XFERCLASS_MAX_PIXELS``
    at export time, else 178,956,970) fails the request and is never decoded.
    """
    from ..data._decode import bytes_loader
    from ..data._imagesize import resolve_max_pixels

    return bytes_loader(size, resolve_max_pixels(None, "export"))


def _unknown_threshold(model: keras.Model) -> float | None:
    """The threshold of the model's unknown score, or None when it has none."""
    from ..backbones.layers import unknown_layer

    layer = unknown_layer(model)
    return None if layer is None else float(layer.threshold)


def _write_saved_model(model: keras.Model, directory: Path, names: list[str] | None) -> None:
    height, width = int(model.input_shape[1]), int(model.input_shape[2])
    classes = int(model.outputs[0].shape[-1])
    labels = names if names is not None else [str(i) for i in range(classes)]
    decode = _decode_for_serving((height, width))
    threshold = _unknown_threshold(model)

    def outputs(found: Any) -> dict[str, tf.Tensor]:
        probabilities = found[0] if isinstance(found, (list, tuple)) else found
        index = tf.argmax(probabilities, axis=-1, output_type=tf.int32)
        out = {
            "probabilities": probabilities,
            "class_index": index,
            "class_name": tf.gather(tf.constant(labels), index),
        }
        if threshold is not None:
            out["unknown_score"] = found[1]
            out["unknown"] = found[1] > threshold
        return out

    def serve(image: tf.Tensor) -> dict[str, tf.Tensor]:
        return outputs(model(image, training=False))

    def serve_bytes(image_bytes: tf.Tensor) -> dict[str, tf.Tensor]:
        images = tf.map_fn(
            decode,
            image_bytes,
            fn_output_signature=tf.TensorSpec([height, width, 3], tf.float32),
        )
        return outputs(model(images, training=False))

    def class_names() -> dict[str, tf.Tensor]:
        return {CLASS_NAMES_KEY: tf.constant(labels)}

    def unknown_threshold() -> dict[str, tf.Tensor]:
        return {UNKNOWN_THRESHOLD_KEY: tf.constant(threshold, tf.float32)}

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        "serve", serve, input_signature=[tf.TensorSpec([None, height, width, 3], tf.float32)]
    )
    archive.add_endpoint(
        "serve_bytes", serve_bytes, input_signature=[tf.TensorSpec([None], tf.string)]
    )
    archive.add_endpoint(CLASS_NAMES_KEY, class_names, input_signature=[])
    if threshold is not None:
        archive.add_endpoint(UNKNOWN_THRESHOLD_KEY, unknown_threshold, input_signature=[])
    with tempfile.TemporaryDirectory() as scratch:
        if names is not None:
            asset = Path(scratch) / SAVED_MODEL_ASSET
            asset.write_text("".join(f"{name}\n" for name in names), encoding="utf-8")
            archive._tf_trackable.class_names_file = tf.saved_model.Asset(str(asset))
        archive.write_out(str(directory), verbose=False)


def _calibration_images(calibration: Any, size: tuple[int, int]) -> np.ndarray:
    """Up to :data:`CALIBRATION_IMAGES` float32 images of ``size`` from ``calibration``."""
    if isinstance(calibration, (str, os.PathLike)):
        from ..data import load_image_dataset

        if not os.path.isdir(calibration):
            raise InvalidArgumentError(
                f"calibration={os.fspath(calibration)!r} is not a folder; pass a folder of "
                "class subfolders of images or a dataset of images"
            )
        calibration = load_image_dataset(calibration, size, batch_size=32, seed=0)
    if isinstance(calibration, tf.data.Dataset):
        chunks: list[np.ndarray] = []
        count = 0
        for element in calibration:
            batch = element[0] if isinstance(element, (tuple, list)) else element
            batch = np.asarray(batch, dtype=np.float32)
            if batch.ndim == 3:
                batch = batch[None]
            chunks.append(batch)
            count += len(batch)
            if count >= CALIBRATION_IMAGES:
                break
        if not chunks:
            raise InvalidArgumentError("calibration= holds no images")
        images = np.concatenate(chunks)[:CALIBRATION_IMAGES]
    elif isinstance(calibration, np.ndarray):
        images = calibration.astype(np.float32)[:CALIBRATION_IMAGES]
    else:
        raise InvalidArgumentTypeError(
            f"calibration= must be a folder, a tf.data.Dataset of images or a NumPy array; "
            f"got {type(calibration).__name__}"
        )
    if images.ndim != 4 or images.shape[-1] != 3 or len(images) == 0:
        raise InvalidArgumentError(
            f"calibration images have shape {images.shape}; expected (n, height, width, 3)"
        )
    if tuple(images.shape[1:3]) != size:
        images = tf.image.resize(images, size, method="bilinear").numpy()
    return images


def _tflite_with_class_names(
    flatbuffer: bytes, names: list[str] | None, threshold: float | None = None
) -> bytes:
    """Add a ``class_names`` metadata entry and a packed ``labels.txt`` to a .tflite, and
    an ``unknown_threshold`` entry for a model with an unknown score."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    tree = flatbuffer_utils.convert_bytearray_to_object(bytearray(flatbuffer))
    entries = {CLASS_NAMES_KEY: names, UNKNOWN_THRESHOLD_KEY: threshold}
    for key, value in entries.items():
        if value is None:
            continue
        buffer = schema.BufferT()
        buffer.data = np.frombuffer(json.dumps(value).encode("utf-8"), dtype=np.uint8)
        tree.buffers.append(buffer)
        entry = schema.MetadataT()
        entry.name = key
        entry.buffer = len(tree.buffers) - 1
        tree.metadata = list(tree.metadata or []) + [entry]
    data = bytes(flatbuffer_utils.convert_object_to_bytearray(tree))
    if names is None:
        return data
    # Associated files travel as a zip archive appended to the flatbuffer, as the
    # TFLite metadata tools pack them; interpreters ignore the bytes after the model.
    import io

    packed = io.BytesIO()
    with zipfile.ZipFile(packed, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr(LITERT_LABELS_FILE, "".join(f"{name}\n" for name in names))
    return data + packed.getvalue()


def _write_litert(
    model: keras.Model,
    file: Path,
    names: list[str] | None,
    quantize: str | None,
    calibration: Any,
) -> None:
    options: dict[str, Any] = {}
    if quantize is not None:
        options["optimizations"] = [tf.lite.Optimize.DEFAULT]
    if quantize == "float16":
        options["target_spec"] = {"supported_types": [tf.float16]}
    if quantize == "int8":
        size = (int(model.input_shape[1]), int(model.input_shape[2]))
        images = _calibration_images(calibration, size)
        logger.info("int8 calibration on %d images", len(images))

        def representative() -> Iterator[list[np.ndarray]]:
            for image in images:
                yield [image[None]]

        options["representative_dataset"] = representative
    model.export(str(file), format="litert", verbose=False, **options)
    threshold = _unknown_threshold(model)
    if names is not None or threshold is not None:
        file.write_bytes(_tflite_with_class_names(file.read_bytes(), names, threshold))


def _write_onnx(model: keras.Model, file: Path, names: list[str] | None) -> None:
    onnx = _require("onnx", "onnx", "format='onnx'")
    with collecting():  # tf2onnx's dropped graph copies, freed as they go
        model.export(str(file), format="onnx", verbose=False)
    # Some exporters (JAX's, PyTorch's) put the weights in a file beside the graph;
    # loading reads them in, and saving writes one self-contained file.
    proto = onnx.load(str(file))
    if names is not None:
        entry = proto.metadata_props.add()
        entry.key, entry.value = CLASS_NAMES_KEY, json.dumps(names)
    threshold = _unknown_threshold(model)
    if threshold is not None:
        entry = proto.metadata_props.add()
        entry.key, entry.value = UNKNOWN_THRESHOLD_KEY, json.dumps(threshold)
    for beside in file.parent.iterdir():
        if beside != file and beside.name.startswith(file.name):
            beside.unlink()
    onnx.save(proto, str(file))


def _write_openvino(model: keras.Model, file: Path, names: list[str] | None) -> None:
    ov = _require("openvino", "openvino", "format='openvino'")
    model.export(str(file), format="openvino", verbose=False)
    threshold = _unknown_threshold(model)
    if names is not None or threshold is not None:
        network = ov.Core().read_model(str(file))
        _openvino_info(network, names, threshold)
        final = file.with_name("with_names.xml")
        ov.serialize(network, str(final), str(final.with_suffix(".bin")))
        del network
        os.replace(final, file)
        os.replace(final.with_suffix(".bin"), file.with_suffix(".bin"))


def _openvino_info(network: Any, names: list[str] | None, threshold: float | None) -> None:
    """Class names and the unknown threshold in an OpenVINO model's runtime information."""
    if names is not None:
        network.set_rt_info(json.dumps(names), ["xferclass", CLASS_NAMES_KEY])
    if threshold is not None:
        network.set_rt_info(json.dumps(threshold), ["xferclass", UNKNOWN_THRESHOLD_KEY])


def _write(
    model: keras.Model,
    file: Path,
    format: str,
    names: list[str] | None,
    quantize: str | None,
    calibration: Any,
) -> None:
    """Write ``format`` with Keras's own exporter, on this process's backend."""
    with portable_constants(model):
        if format == "saved_model":
            _write_saved_model(model, file, names)
        elif format == "litert":
            _write_litert(model, file, names, quantize, calibration)
        elif format == "onnx":
            _write_onnx(model, file, names)
        else:
            _write_openvino(model, file, names)


def _write_openvino_from_onnx(
    model: keras.Model, file: Path, names: list[str] | None, scratch: Path
) -> None:
    """OpenVINO IR by way of the ONNX file, which OpenVINO reads: Keras's OpenVINO
    exporter does not convert every backbone from JAX or PyTorch."""
    ov = _require("openvino", "openvino", "format='openvino'")
    onnx_file = scratch / "via.onnx"
    _write_onnx(model, onnx_file, None)
    network = ov.convert_model(str(onnx_file))
    _openvino_info(network, names, _unknown_threshold(model))
    ov.save_model(network, str(file), compress_to_fp16=False)
    del network
    onnx_file.unlink()


def _export_in_tensorflow(
    model: keras.Model,
    file: Path,
    format: str,
    quantize: str | None,
    calibration: Any,
    scratch: Path,
) -> None:
    """Write a TensorFlow-only ``format`` from a model on another backend.

    The model is saved (the ``.keras`` format is the same on every backend) and
    exported by a child process on the TensorFlow backend, which TensorFlow, a
    dependency of xferclass, always provides. Calibration images are read here
    and handed over as an array.
    """
    import subprocess
    import sys

    from ..core._backend import STARTING_ENVIRONMENT
    from ..core._checkpoint import save_model

    saved = scratch / "model.keras"
    save_model(model, saved)
    arguments = [str(saved), str(file), format, quantize or ""]
    if quantize == "int8":
        size = (int(model.input_shape[1]), int(model.input_shape[2]))
        images = scratch / "calibration.npy"
        np.save(images, _calibration_images(calibration, size))
        arguments.append(str(images))
    logger.info(
        "format=%r is written by Keras from TensorFlow: exporting in a child process", format
    )
    done = subprocess.run(
        [sys.executable, "-m", "xferclass.deploy._export_child", *arguments],
        env={**STARTING_ENVIRONMENT, "KERAS_BACKEND": "tensorflow"},
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        said = [line for line in done.stderr.splitlines() if line.startswith(ERROR_PREFIX)]
        raise ExportError(
            said[-1][len(ERROR_PREFIX) :]
            if said
            else f"the TensorFlow process exited with status {done.returncode}: "
            + " | ".join(done.stderr.strip().splitlines()[-3:])
        )


# --------------------------------------------------------------------------------------
# Runners: load an artifact with its own runtime and classify a batch
# --------------------------------------------------------------------------------------


def _by_rank(outputs: Sequence[Any]) -> list[np.ndarray]:
    """An artifact's outputs in the model's order: probabilities (rank 2), then the
    unknown score (rank 1) when there is one. Runtimes need not keep the order."""
    return sorted((np.asarray(o) for o in outputs), key=lambda a: -a.ndim)


def _runner(format: str, path: Path) -> Callable[[np.ndarray], list[np.ndarray]]:
    """A function that runs the exported artifact on a float32 NHWC batch: its
    probabilities, then its unknown score when it has one."""
    if format == "saved_model":
        loaded = tf.saved_model.load(str(path))
        serve = loaded.signatures["serving_default"]

        def run_saved(batch: np.ndarray) -> list[np.ndarray]:
            found = serve(tf.constant(batch, tf.float32))
            keys = ["probabilities"] + (["unknown_score"] if "unknown_score" in found else [])
            return [found[key].numpy() for key in keys]

        return run_saved
    if format == "litert":
        return _litert_runner(path)
    if format == "onnx":
        ort = _require("onnxruntime", "onnxruntime", "running an ONNX model")
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        inputs = session.get_inputs()
        if len(inputs) != 1:
            raise ExportError(
                f"the ONNX graph has {len(inputs)} inputs ({', '.join(i.name for i in inputs)}); "
                "some constants became graph inputs"
            )
        name = inputs[0].name
        return lambda batch: _by_rank(session.run(None, {name: batch.astype(np.float32)}))
    ov = _require("openvino", "openvino", "running an OpenVINO model")
    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    return lambda batch: _by_rank(list(compiled(batch.astype(np.float32)).values()))


def _litert_runner(path: Path) -> Callable[[np.ndarray], list[np.ndarray]]:
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        Interpreter = tf.lite.Interpreter  # noqa: N806
    interpreter = Interpreter(model_path=str(path))
    input_index = interpreter.get_input_details()[0]["index"]
    output_indices = [d["index"] for d in interpreter.get_output_details()]
    shape: list[tuple[int, ...]] = [()]

    def run(batch: np.ndarray) -> list[np.ndarray]:
        if tuple(batch.shape) != shape[0]:
            interpreter.resize_tensor_input(input_index, list(batch.shape))
            interpreter.allocate_tensors()
            shape[0] = tuple(batch.shape)
        interpreter.set_tensor(input_index, batch.astype(np.float32))
        interpreter.invoke()
        return _by_rank([np.array(interpreter.get_tensor(i)) for i in output_indices])

    return run


def _check_artifact(
    format: str, path: Path, probe: np.ndarray, expected: Sequence[np.ndarray], quantized: bool
) -> None:
    found = _runner(format, path)(probe)
    if len(found) != len(expected):
        raise ExportError(f"it has {len(found)} outputs for {len(expected)} expected")
    for got, wanted, what in zip(found, expected, ("probabilities", "unknown scores")):
        got = got.reshape(wanted.shape) if got.size == wanted.size else got
        if got.shape != wanted.shape or not np.all(np.isfinite(got)):
            raise ExportError(f"it returns {got.shape} values for {wanted.shape} expected")
        if not quantized:
            worst = float(np.max(np.abs(got - wanted)))
            if worst > _PROBE_TOLERANCE:
                raise ExportError(f"its {what} differ from Keras's by up to {worst:.2g}")


# --------------------------------------------------------------------------------------
# The public function
# --------------------------------------------------------------------------------------


def _place(written: Sequence[Path], targets: Sequence[Path]) -> None:
    """Move freshly written paths over their targets."""
    for source, target in zip(written, targets):
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists() or target.is_symlink():
            target.unlink()
        os.replace(source, target)


def export(
    model: keras.Model,
    path: str | os.PathLike[str],
    *,
    format: str,
    quantize: str | None = None,
    calibration: Any = None,
    overwrite: bool = False,
) -> list[Path]:
    """Export a classifier for use without xferclass or Keras.

    The artifact takes raw RGB pixels in [0, 255], float32, shape
    ``(batch, height, width, 3)`` at the model's input size, and returns class
    probabilities; the preprocessing is inside. The class names travel inside
    it (see the module docs and docs/deploy.md for where). After writing, the
    artifact is loaded by its own runtime (TensorFlow, the LiteRT interpreter,
    onnxruntime, OpenVINO) and run on a probe batch; unquantized artifacts must
    match Keras to 1e-3.

    A SavedModel has three signatures: ``serving_default`` (pixels in;
    ``probabilities``, ``class_index`` and ``class_name`` out),
    ``serve_bytes`` (a batch of encoded JPEG/PNG/GIF/BMP files as strings in,
    decoded and resized as :func:`xferclass.predict` reads files; same
    outputs) and ``class_names``.

    Args:
        model: A Keras classifier, e.g. from :func:`build_classifier` or
            :func:`load_model`. A model without stored class names exports too
            (with a warning) and its artifacts carry no names.
        path: Where to write: a folder for ``"saved_model"``; a file for
            ``"litert"`` (``.tflite``) and ``"onnx"`` (``.onnx``); an ``.xml``
            file for ``"openvino"`` (its ``.bin`` goes beside it).
        format: ``"saved_model"``, ``"litert"``, ``"onnx"`` or ``"openvino"``.
        quantize: LiteRT only: ``"float16"`` (half-size weights),
            ``"dynamic"`` (int8 weights, float activations) or ``"int8"``
            (int8 weights and activations, calibrated on ``calibration``);
            ``None`` keeps float32.
        calibration: For ``quantize="int8"``: a folder of class subfolders (the
            training folder is a good choice), a ``tf.data.Dataset`` of images
            or ``(images, labels)`` batches, or an array of images in [0, 255].
            At most :data:`CALIBRATION_IMAGES` images are used.
        overwrite: Replace what is already at ``path``.

    Returns:
        The paths written (the ``.xml`` and ``.bin`` for OpenVINO).

    Raises:
        InvalidArgumentError: An unknown ``format`` or ``quantize``,
            ``quantize="int8"`` without ``calibration``, or ``path`` exists and
            ``overwrite`` is False.
        MissingDependencyError: The format's converter or runtime is not
            installed (``pip install "xferclass[export]"``).
        ExportError: The model (named by its backbone) cannot be converted to
            ``format``, or the artifact does not run or match Keras.

    Examples:
        >>> import xferclass
        >>> model = xferclass.build_classifier("mobilenet_v2", num_classes=3,
        ...                                    weights=None, input_size=32)
        >>> paths = xferclass.export(model, "model.onnx", format="onnx")  # doctest: +SKIP
        >>> [p.name for p in paths]  # doctest: +SKIP
        ['model.onnx']
    """
    _check_arguments(model, format, quantize, calibration, overwrite)
    _require_format(format)
    targets = _targets(Path(os.fspath(path)), format)
    existing = [t for t in targets if t.exists() or t.is_symlink()]
    if existing and not overwrite:
        raise InvalidArgumentError(
            f"path={os.fspath(existing[0])!r} already exists; pass overwrite=True to replace it"
        )
    names = model_class_names(model)
    if names is None:
        logger.warning(
            "model %r has no class names (xferclass.fit stores them in models from "
            "build_classifier); the %s artifact carries none and names classes by index",
            model.name,
            format,
        )
    size = (int(model.input_shape[1]), int(model.input_shape[2]))
    probe = np.random.default_rng(0).uniform(0, 255, (2, *size, 3)).astype(np.float32)
    # Also calls the model once, which ONNX export needs.
    found = model(keras.ops.convert_to_tensor(probe), training=False)
    outputs = found if isinstance(found, (list, tuple)) else [found]
    expected = [keras.ops.convert_to_numpy(o) for o in outputs]
    parent = targets[0].parent
    parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".xferclass-export-", dir=parent))
    written = [scratch / t.name for t in targets]
    what = f"backbone {backbone_name(model)!r} to format={format!r}"
    if quantize is not None:
        what += f" (quantize={quantize!r})"
    try:
        try:
            backend = keras.backend.backend()
            if backend != "tensorflow" and format in _TENSORFLOW_FORMATS:
                _export_in_tensorflow(model, written[0], format, quantize, calibration, scratch)
            elif backend != "tensorflow" and format == "openvino":
                _write_openvino_from_onnx(model, written[0], names, scratch)
            else:
                _write(model, written[0], format, names, quantize, calibration)
        except (MissingDependencyError, InvalidArgumentError, InvalidArgumentTypeError):
            raise
        except Exception as error:
            raise ExportError(f"cannot export {what}: {first_line(error)}") from error
        try:
            _check_artifact(format, written[0], probe, expected, quantize is not None)
        except MissingDependencyError:
            raise
        except Exception as error:
            raise ExportError(
                f"exported {what}, but the artifact fails its check: {first_line(error)}"
            ) from error
        _place(written, targets)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    logger.info("exported %s: %s", what, ", ".join(os.fspath(t) for t in targets))
    return targets


def _artifact(path: str | os.PathLike[str], format: str) -> Path:
    """An exported artifact's path, checked: a known ``format`` and a path that exists."""
    if format not in FORMATS:
        raise InvalidArgumentError(
            f"format={format!r} is not one of {', '.join(repr(f) for f in FORMATS)}"
        )
    location = Path(os.fspath(path))
    if not location.exists():
        raise InvalidArgumentError(f"path={os.fspath(path)!r} does not exist")
    return location


def read_class_names(path: str | os.PathLike[str], *, format: str) -> list[str] | None:
    """The class names stored in an exported artifact, or ``None`` when it has none.

    Each format keeps them in its own place (see :func:`export`); this reads
    that place with the format's own library.

    Args:
        path: The SavedModel folder, ``.tflite``, ``.onnx`` or OpenVINO ``.xml``.
        format: ``"saved_model"``, ``"litert"``, ``"onnx"`` or ``"openvino"``.

    Raises:
        InvalidArgumentError: ``format`` is unknown or ``path`` does not exist.
        ExportError: The ONNX or OpenVINO file cannot be read (corrupt or truncated).

    Examples:
        >>> read_class_names("model.onnx", format="onnx")  # doctest: +SKIP
        ['hat', 'pants', 'shoes']
    """
    location = _artifact(path, format)
    if format == "saved_model":
        asset = location / "assets" / SAVED_MODEL_ASSET
        return asset.read_text(encoding="utf-8").splitlines() if asset.is_file() else None
    if format == "litert":
        if not zipfile.is_zipfile(location):
            return None
        with zipfile.ZipFile(location) as archive:
            if LITERT_LABELS_FILE not in archive.namelist():
                return None
            return archive.read(LITERT_LABELS_FILE).decode("utf-8").splitlines()
    if format == "onnx":
        onnx = _require("onnx", "onnx", "reading an ONNX model")
        from google.protobuf.message import Error as ProtobufError

        try:
            proto = onnx.load(str(location), load_external_data=False)
        except ProtobufError as error:
            raise ExportError(
                f"{os.fspath(path)!r} is not a readable ONNX model: {first_line(error)}"
            ) from error
        props = {p.key: p.value for p in proto.metadata_props}
        return json.loads(props[CLASS_NAMES_KEY]) if CLASS_NAMES_KEY in props else None
    ov = _require("openvino", "openvino", "reading an OpenVINO model")
    try:
        network = ov.Core().read_model(str(location))
    except RuntimeError as error:  # OpenVINO's parse errors
        raise ExportError(f"{os.fspath(path)!r} is not a readable OpenVINO model") from error
    if not network.has_rt_info(["xferclass", CLASS_NAMES_KEY]):
        return None
    return list(json.loads(network.get_rt_info(["xferclass", CLASS_NAMES_KEY]).astype(str)))


def read_unknown_threshold(path: str | os.PathLike[str], *, format: str) -> float | None:
    """The threshold of an exported artifact's unknown score (its second output, from a
    model of :func:`xferclass.detect_unknown`), or ``None`` when it has none: images
    whose score is above it are unknown. It is kept where the class names are.

    Examples:
        >>> read_unknown_threshold("model.onnx", format="onnx")  # doctest: +SKIP
        0.21
    """
    location = _artifact(path, format)
    if format == "saved_model":
        loaded = tf.saved_model.load(str(location))
        if not hasattr(loaded, UNKNOWN_THRESHOLD_KEY):
            return None
        return float(getattr(loaded, UNKNOWN_THRESHOLD_KEY)()[UNKNOWN_THRESHOLD_KEY].numpy())
    if format == "litert":
        from tensorflow.lite.tools import flatbuffer_utils

        tree = flatbuffer_utils.read_model_with_mutable_tensors(str(location))
        for entry in tree.metadata or []:
            name = entry.name.decode() if isinstance(entry.name, bytes) else entry.name
            if name == UNKNOWN_THRESHOLD_KEY:
                return float(json.loads(bytes(tree.buffers[entry.buffer].data).decode("utf-8")))
        return None
    if format == "onnx":
        onnx = _require("onnx", "onnx", "reading an ONNX model")
        proto = onnx.load(str(location), load_external_data=False)
        props = {p.key: p.value for p in proto.metadata_props}
        if UNKNOWN_THRESHOLD_KEY not in props:
            return None
        return float(json.loads(props[UNKNOWN_THRESHOLD_KEY]))
    ov = _require("openvino", "openvino", "reading an OpenVINO model")
    network = ov.Core().read_model(str(location))
    if not network.has_rt_info(["xferclass", UNKNOWN_THRESHOLD_KEY]):
        return None
    return float(json.loads(network.get_rt_info(["xferclass", UNKNOWN_THRESHOLD_KEY]).astype(str)))
