"""Frozen forward passes on a faster CPU runtime: ONNX Runtime or OpenVINO.

The frozen part of a model (the feature extractor of :func:`xferclass.fit`,
the bottom of the backbone up to the cut of :func:`xferclass.fine_tune`, or a
whole trained classifier in :func:`xferclass.predict`) is converted to ONNX by
Keras's own ``model.export(path, format="onnx")`` and run by an onnxruntime
``InferenceSession`` or an OpenVINO compiled model on the CPU. Training itself
stays in Keras.

Converted models are cached as ``onnx/<name>.onnx`` under
``$XFERCLASS_CACHE_DIR`` (default ``~/.cache/xferclass``), keyed by the model's
structure, a hash of its weights, its input size and its output layers (the
cut), and written atomically; a second run with the same frozen part loads the
file and pays nothing for conversion.

``engine="auto"`` (see :func:`runtime_forward` and :class:`_Auto`) uses a
runtime only on a CPU, only when one is installed, only when the images left
in the pass pay back the conversion, and only when it measured faster than
Keras on timed batches of the pass itself; otherwise, and whenever conversion
fails, it stays on Keras and says why in one line of the ``xferclass`` logger: a warning when
it falls back because something failed (conversion, loading, a runtime's
answers), so that it shows at ``verbose=0`` too. A runtime's own errors reach
the caller as :class:`~xferclass.ExportError` with the first line of the cause.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np

from ..core._errors import ExportError, InvalidArgumentError, MissingDependencyError, first_line
from ..core._files import atomic_write
from ..core._gc import collecting
from ..core._log import logger

__all__ = [
    "RUNTIMES",
    "RuntimeForward",
    "available_runtimes",
    "convert_to_onnx",
    "onnx_cache_dir",
    "runtime_forward",
]

#: Runtimes other than Keras, in the order ``engine="auto"`` tries them.
RUNTIMES = ("onnxruntime", "openvino")

#: Runtimes in a reduced precision, which ``engine="auto"`` adds to :data:`RUNTIMES`
#: and keeps only where they measured harmless on the pass's own images (see
#: :func:`harmless`): OpenVINO's CPU plugin in bfloat16 where the processor computes
#: it natively (AMX or AVX-512-bf16), and the model quantized to int8 by ONNX Runtime's
#: static quantizer, calibrated on the pass's first images (see :func:`quantize_int8`),
#: run by OpenVINO where its CPU plugin lists ``INT8``.
REDUCED = ("openvino-bf16", "openvino-int8")

#: Images of the pass's first batches that calibrate the int8 quantization (the ranges
#: of the activations), at most.
CALIBRATION_IMAGES = 64

#: Seconds ``"auto"`` assumes quantizing to int8 takes before it has measured one on
#: this machine (EfficientNet-Lite0 at 224 px took 6.4 s on a 2-core Xeon with AMX, 9.5
#: on a busy 2-core EPYC).
QUANTIZE_SECONDS = 10.0

#: Least share of the compared images on which a reduced precision must give
#: float32's top class (a multi-label model's label set).
AGREEMENT = 0.99

#: Images at the start of a pass (and at most :data:`SAMPLE_BYTES` of them) that
#: ``"auto"`` keeps, with Keras's float32 outputs, to judge a reduced precision on.
SAMPLE_IMAGES = 128
SAMPLE_BYTES = 192 * 2**20

#: Ridge penalty of the linear probe that judges reduced-precision features,
#: relative to the mean squared norm of the (standardised) rows.
PROBE_RIDGE = 1.0

#: Folds of the probe's cross-validation.
PROBE_FOLDS = 4

#: Largest difference from Keras, relative to the largest Keras output (and at
#: least absolute), that ``engine="auto"`` accepts on the first batch.
TOLERANCE = 1e-4

#: Batches after the first (which traces Keras's function) that ``"auto"`` times
#: on Keras before it decides whether converting would pay back.
PROBE_BATCHES = 2

#: Rounds of timed batches after conversion: each runs one batch on every
#: engine left, Keras included, timed from its call to the next call.
TIMED_ROUNDS = 2

#: How much faster than Keras the runtime must be on the timed batches for
#: ``"auto"`` to switch: a wrong switch costs more than a missed one.
MIN_SPEEDUP = 1.1

#: Ratio of a runtime's pass speed to Keras's that ``"auto"`` assumes before it
#: has measured one on this machine: below every ratio measured (ONNX Runtime
#: ran Lite0's raw pass 1.5x and MobileNetV2's 1.85x on an AVX-512 CPU, 3x or
#: more on AVX2).
PRIOR_RATIO = 1.4

#: The same where the CPU computes bfloat16 natively and OpenVINO may run in it:
#: below the caching passes measured on a 2-core Xeon with AMX (3.0x Keras when
#: decoding takes its share of the cores; the raw pass ran 4.1x).
PRIOR_RATIO_BF16 = 2.5

#: Seconds ``"auto"`` assumes a conversion takes before it has measured one on
#: this machine (Lite0 and MobileNetV2 took 2.5-2.8 s on 2 cores).
CONVERSION_SECONDS = 3.0

#: Seconds ``"auto"`` assumes loading an already converted model takes.
SESSION_SECONDS = 0.5

#: How many times its cost (conversion and the comparison batch) the expected
#: saving must be for ``"auto"`` to convert.
PAYBACK = 1.2

#: Engine that ``"auto"`` chose for each converted model in this process (also
#: kept on disk per machine, see :func:`_remember`), so a second pass over the
#: same frozen part (the validation split, the next run) is not timed again.
_DECISIONS: dict[Path, str] = {}

#: Whether a reduced precision gave a classifier's head float32's decisions, per
#: converted extractor and head (also kept on disk, see :func:`_keep_verdict`).
_VERDICTS: dict[tuple[Path, str], bool] = {}

_EXTRA = 'pip install "xferclass[export]"'


def onnx_cache_dir() -> Path:
    """Where converted models go: ``$XFERCLASS_CACHE_DIR/onnx`` or ``~/.cache/xferclass/onnx``."""
    from ..backbones._lite_weights import cache_dir

    return cache_dir() / "onnx"


def _installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


#: Values of ``$XFERCLASS_PRECISION``, and the reduced precisions each allows.
PRECISIONS = {"auto": ("bf16", "int8"), "bf16": ("bf16",), "f32": ()}


def precision_setting() -> str:
    """``$XFERCLASS_PRECISION``: ``"auto"`` (the default: bfloat16 or int8 where it
    measures harmless), ``"bf16"`` (bfloat16 but not int8) or ``"f32"``
    (``engine="auto"`` never leaves float32).

    Raises:
        InvalidArgumentError: Another value.
    """
    value = os.environ.get("XFERCLASS_PRECISION", "auto").strip().lower() or "auto"
    if value not in PRECISIONS:
        raise InvalidArgumentError(
            f"XFERCLASS_PRECISION={value!r} must be 'auto', 'bf16' (no int8) or 'f32' "
            "(float32 only)"
        )
    return value


@functools.lru_cache(maxsize=1)
def _openvino_capabilities() -> tuple[str, ...]:
    """OpenVINO's CPU plugin's ``OPTIMIZATION_CAPABILITIES`` (none without OpenVINO)."""
    if not _installed("openvino"):
        return ()
    import openvino

    try:
        return tuple(openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    except Exception:  # no CPU plugin: the runtime will say why when it is asked for
        return ()


def cpu_bf16() -> bool:
    """Whether OpenVINO's CPU plugin computes bfloat16 natively on this processor
    (its ``OPTIMIZATION_CAPABILITIES`` list ``BF16``: AMX or AVX-512-bf16)."""
    return "BF16" in _openvino_capabilities()


def cpu_int8() -> bool:
    """Whether OpenVINO's CPU plugin runs int8 kernels on this processor (its
    ``OPTIMIZATION_CAPABILITIES`` list ``INT8``), and ONNX Runtime's quantizer is there
    to make the int8 model."""
    return _installed("onnxruntime") and "INT8" in _openvino_capabilities()


def reduced_runtimes() -> list[str]:
    """The runtimes of :data:`REDUCED` that ``engine="auto"`` may try on this machine."""
    allowed = PRECISIONS[precision_setting()]
    has = {"bf16": cpu_bf16, "int8": cpu_int8}
    return [name for name in REDUCED
            if name.split("-")[1] in allowed and has[name.split("-")[1]]()
            and _package(name) in available_runtimes()]  # fmt: skip


def available_runtimes() -> list[str]:
    """The runtimes of :data:`RUNTIMES` whose packages (and the ONNX converter) are installed.

    Examples:
        >>> from xferclass.runtime._runtime import available_runtimes
        >>> set(available_runtimes()) <= {"onnxruntime", "openvino"}
        True
    """
    if not (_installed("onnx") and _installed("tf2onnx")):
        return []
    return [name for name in RUNTIMES if _installed(name)]


def _package(engine: str) -> str:
    """The package that runs ``engine`` (``"openvino-bf16"`` is OpenVINO's)."""
    return engine.split("-", 1)[0]


def require_runtime(engine: str) -> None:
    """Raise :class:`MissingDependencyError` when ``engine``'s packages are missing."""
    missing = [m for m in ("onnx", "tf2onnx", _package(engine)) if not _installed(m)]
    if missing:
        raise MissingDependencyError(
            f"engine={engine!r} needs the {', '.join(missing)} package(s): {_EXTRA}"
        )


# ---------------------------------------------------------------- conversion


def _output_names(model: keras.Model) -> list[str]:
    names = []
    for tensor in model.outputs:
        history = getattr(tensor, "_keras_history", None)
        names.append(history[0].name if history is not None else str(tensor.name))
    return names


def _backbone_label(model: keras.Model) -> str:
    """A readable name for the cache file: the nested backbone's name, else the model's."""
    for layer in model.layers:
        inner = getattr(layer, "model", None) or getattr(layer, "layer", None)
        if isinstance(inner, keras.Model):
            return str(inner.name)
        if isinstance(layer, keras.Model):
            return str(layer.name)
    # A sub-model's own name is numbered per process (functional_3): not in the key.
    return "model" if str(model.name).startswith("functional") else str(model.name)


def _structure(model: keras.Model) -> str:
    """The layer types and configurations, without the names Keras makes up.

    Keras numbers unnamed layers per process (``input_layer_3``), so a model
    built twice would get two keys if the names counted; the layer sequence,
    configurations and shapes (with the weights, hashed separately) identify it.
    Class names and metadata are left out: they do not change what the model computes.
    """
    parts = []
    for layer in model._flatten_layers(include_self=False):
        kind = layer.__class__.__name__
        if isinstance(layer, (keras.Model, keras.layers.Wrapper)):
            parts.append(kind)  # their content is in the layers inside
            continue
        try:
            config = dict(layer.get_config())
        except Exception:  # a layer without get_config: its type has to do
            parts.append(kind)
            continue
        config.pop("name", None)
        # What travels with a model without changing its arithmetic (class names, the
        # recipe's report, the record of its training files) does not make a new model.
        for key in ("class_names", "metadata", "threshold", "multi_label"):
            config.pop(key, None)
        parts.append(f"{kind}:{json.dumps(config, sort_keys=True, default=str)}")
    return "\n".join(parts)


def model_key(model: keras.Model) -> str:
    """A file name for ``model``'s conversion: backbone, input size, cut and a digest.

    The digest covers the model's structure (layer configs, with the cut), every
    weight's name and bytes, the input and output shapes, and the versions of
    Keras and the converter, so a model whose weights changed gets a new file.
    """
    digest = hashlib.sha256()
    digest.update(_structure(model).encode())
    for name, value in (("in", model.input_shape), ("out", model.output_shape)):
        digest.update(f"{name}={value}".encode())
    for weight in model.weights:
        array = np.ascontiguousarray(keras.ops.convert_to_numpy(weight))
        digest.update(f"{weight.path}:{array.dtype}:{array.shape}".encode())
        digest.update(array.tobytes())
    import tf2onnx

    # The Keras backend too: it converts (tf2onnx, jax2onnx, torch.onnx) and it is what
    # the runtimes are timed against, so its choice is remembered apart.
    digest.update(
        f"keras={keras.__version__};tf2onnx={tf2onnx.__version__};"
        f"backend={keras.backend.backend()}".encode()
    )
    shape = model.input_shape if isinstance(model.input_shape, tuple) else model.input_shape[0]
    size = "x".join(str(side) for side in shape[1:3]) if len(shape) == 4 else "any"
    cut = "+".join(_output_names(model))
    label = "-".join([_backbone_label(model), size, cut])
    label = "".join(c if c.isalnum() or c in "._+-" else "_" for c in label)
    return f"{label[:120]}-{digest.hexdigest()[:20]}"


def convert_to_onnx(model: keras.Model, *, directory: Path | None = None) -> Path:
    """Convert ``model`` to ONNX with ``model.export(format="onnx")``, cached on disk.

    Args:
        model: A Keras model (the frozen part of a classifier).
        directory: Cache folder; defaults to :func:`onnx_cache_dir`.

    Returns:
        The path of the ``.onnx`` file (reused when it is already cached).

    Raises:
        MissingDependencyError: ``onnx`` or ``tf2onnx`` is not installed.
        ExportError: Keras could not convert the model.

    Examples:
        >>> path = convert_to_onnx(extractor)  # doctest: +SKIP
        >>> path.suffix  # doctest: +SKIP
        '.onnx'
    """
    for module in ("onnx", "tf2onnx"):
        if not _installed(module):
            raise MissingDependencyError(
                f"converting a model to ONNX needs the {module} package: {_EXTRA}"
            )
    folder = Path(directory) if directory is not None else onnx_cache_dir()
    path = folder / f"{model_key(model)}.onnx"
    if path.is_file():
        logger.debug("reusing the converted model %s", path)
        return path
    start = time.perf_counter()
    shape = model.input_shape
    if isinstance(shape, tuple) and all(side is not None for side in shape[1:]):
        model(np.zeros((1, *shape[1:]), dtype=model.inputs[0].dtype))  # builds every layer
    try:
        with collecting():  # tf2onnx's dropped graph copies, freed as they go
            atomic_write(path, lambda name: model.export(name, format="onnx", verbose=False))
    except MemoryError:
        raise
    except Exception as error:
        raise ExportError(
            f"Keras could not convert {model.name!r} to ONNX: {first_line(error)}"
        ) from error
    logger.info(
        "converted %s to ONNX in %.1f s (cached as %s)",
        _backbone_label(model),
        time.perf_counter() - start,
        path,
    )
    return path


def int8_path(path: Path) -> Path:
    """Where the int8 model of the converted model ``path`` is kept."""
    return path.with_suffix(".int8.onnx")


def quantize_int8(path: Path, images: Sequence[np.ndarray]) -> Path:
    """The converted model ``path`` quantized to int8 by ONNX Runtime's static quantizer,
    calibrated on ``images`` (batches of the pass's own images), cached beside it.

    Weights are quantized per channel to int8 and activations to uint8 (QDQ format,
    which OpenVINO fuses into int8 kernels), with the activations' ranges from the
    calibration images. A model already quantized is reused, whatever images
    calibrated it: ``"auto"`` judges it on each pass's own images all the same.

    Raises:
        ExportError: The quantizer failed.
    """
    target = int8_path(path)
    if target.is_file():
        return target
    import onnxruntime
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    rows = np.concatenate([np.asarray(batch, np.float32) for batch in images])[:CALIBRATION_IMAGES]
    start = time.perf_counter()
    try:
        name = onnxruntime.InferenceSession(str(path)).get_inputs()[0].name
        feeds = iter([{name: rows[i : i + 8]} for i in range(0, len(rows), 8)])

        class Reader(CalibrationDataReader):
            def get_next(self) -> Any:
                return next(feeds, None)

        with tempfile.TemporaryDirectory(prefix="xferclass-int8-") as folder:
            prepared = str(Path(folder) / "prepared.onnx")
            quant_pre_process(str(path), prepared)
            atomic_write(target, lambda out: quantize_static(
                prepared, out, Reader(), quant_format=QuantFormat.QDQ,
                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                per_channel=True,
            ))  # fmt: skip
    except MemoryError:
        raise
    except Exception as error:
        raise ExportError(
            f"int8 quantization of {path.name} failed: {first_line(error)}"
        ) from error
    seconds = time.perf_counter() - start
    _update_machine_record(quantize_s=seconds)
    logger.info("quantized %s to int8 on %d images in %.1f s", path.name, len(rows), seconds)
    return target


# ---------------------------------------------------------------- sessions


def _threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


@dataclass
class RuntimeForward:
    """One converted model on one runtime: a batch of images in, a NumPy array out.

    Calling it has the semantics of ``model.predict_on_batch``: the batch (a
    NumPy array or a tensor) goes in whole, in inference mode, and the output
    comes back as a float NumPy array (a list of them for several outputs).

    Attributes:
        engine: ``"onnxruntime"``, ``"openvino"`` or ``"openvino-bf16"``.
        path: The ONNX file it runs.
        precision: ``"f32"`` or ``"bf16"``, what it computes in.
    """

    engine: str
    path: Path
    _run: Callable[[np.ndarray], list[np.ndarray]]
    _dtype: np.dtype
    precision: str = "f32"

    def __call__(self, images: Any) -> Any:
        array = np.asarray(images)
        if array.dtype != self._dtype:
            array = array.astype(self._dtype)
        try:
            outputs = self._run(np.ascontiguousarray(array))
        except MemoryError:
            raise
        except Exception as error:
            raise ExportError(
                f"{self.engine} could not run {self.path.name}: {first_line(error)}"
            ) from error
        return outputs[0] if len(outputs) == 1 else outputs


def _onnxruntime_session(path: Path) -> RuntimeForward:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = _threads()
    options.inter_op_num_threads = 1
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    # Idle threads sleep instead of spinning: the tf.data pipeline decodes the
    # next batch on the same cores while a batch runs.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = onnxruntime.InferenceSession(
        str(path), sess_options=options, providers=["CPUExecutionProvider"]
    )
    (first,) = session.get_inputs()[:1]
    name = first.name
    dtype = np.float16 if first.type == "tensor(float16)" else np.float32

    def run(array: np.ndarray) -> list[np.ndarray]:
        return list(session.run(None, {name: array}))

    return RuntimeForward("onnxruntime", path, run, np.dtype(dtype))


def _openvino_session(path: Path, precision: str = "f32") -> RuntimeForward:
    """``path`` on OpenVINO's CPU plugin in ``precision``: ``"f32"``, ``"bf16"``, or
    ``"int8"`` (the int8 model of :func:`quantize_int8`, its other layers in float32)."""
    import openvino

    if precision == "int8":
        path = int8_path(path)
        if not path.is_file():
            raise ExportError(f"{path.name} is not there: the model was not quantized yet")

    core = openvino.Core()
    # Precision set explicitly: the CPU plugin's default is bf16 where the CPU has
    # it, which moves the outputs by about 1e-2 and is used only once judged harmless.
    compiled = core.compile_model(
        str(path),
        "CPU",
        {
            "INFERENCE_PRECISION_HINT": "f32" if precision == "int8" else precision,
            "INFERENCE_NUM_THREADS": _threads(),
        },
    )
    request = compiled.create_infer_request()
    count = len(compiled.outputs)

    def run(array: np.ndarray) -> list[np.ndarray]:
        results = request.infer([array])
        return [np.array(results[compiled.output(i)]) for i in range(count)]

    engine = "openvino" if precision == "f32" else f"openvino-{precision}"
    return RuntimeForward(engine, path, run, np.dtype(np.float32), precision)


@functools.lru_cache(maxsize=8)
def open_session(path: Path, engine: str) -> RuntimeForward:
    """Load a converted model on ``engine`` (one of :data:`RUNTIMES` or :data:`REDUCED`).

    The last few sessions are kept, so the train and validation passes of one
    run load the model once.
    """
    if engine not in RUNTIMES + REDUCED:
        raise InvalidArgumentError(
            f"engine={engine!r} is not a runtime; use one of {RUNTIMES + REDUCED}"
        )
    require_runtime(engine)
    try:
        if engine == "onnxruntime":
            return _onnxruntime_session(path)
        return _openvino_session(path, "f32" if engine == "openvino" else engine.split("-")[1])
    except MemoryError:
        raise
    except Exception as error:
        raise ExportError(f"{engine} could not load {path.name}: {first_line(error)}") from error


# ---------------------------------------------------------------- choosing


def _on_gpu() -> bool:
    import tensorflow as tf

    return bool(tf.config.list_logical_devices("GPU"))


def _mixed_precision(model: keras.Model) -> bool:
    for layer in model._flatten_layers(include_self=False):
        policy = getattr(layer, "dtype_policy", None)
        if policy is not None and getattr(policy, "compute_dtype", "float32") != "float32":
            return True
    return False


def _max_difference(expected: Any, actual: Any) -> tuple[float, float]:
    pairs = zip(expected, actual) if isinstance(expected, (list, tuple)) else [(expected, actual)]
    worst, scale = 0.0, 1.0
    for a, b in pairs:
        a = np.asarray(a, np.float64)
        b = np.asarray(b, np.float64)
        if a.shape != b.shape:
            return float("inf"), scale
        if a.size:
            worst = max(worst, float(np.max(np.abs(a - b))))
            scale = max(scale, float(np.max(np.abs(a))))
    return worst, scale


def _agreement(expected: np.ndarray, actual: np.ndarray) -> float:
    """Share of rows whose decision is the same: the top class where the rows sum to 1
    (softmax), else the set of outputs at or above 0.5 (sigmoid, multi-label)."""
    if np.allclose(expected.sum(axis=1), 1.0, atol=1e-3):
        return float(np.mean(expected.argmax(axis=1) == actual.argmax(axis=1)))
    return float(np.mean(np.all((expected >= 0.5) == (actual >= 0.5), axis=1)))


def _probe_scores(features: np.ndarray, labels: np.ndarray, folds: np.ndarray) -> np.ndarray:
    """Per-row correctness of a ridge linear probe, each row scored by the probe fitted
    on the other folds: one-vs-rest least squares with an intercept on standardised
    features (scikit-learn's ``RidgeClassifier`` up to the ±1 coding of its targets),
    solved in the dual form because the rows are few."""
    correct = np.zeros(len(labels), dtype=bool)
    classes = int(labels.max()) + 1
    for fold in np.unique(folds):
        train, test = folds != fold, folds == fold
        mean = features[train].mean(axis=0)
        scale = features[train].std(axis=0) + 1e-6
        x = (features[train] - mean) / scale
        targets = np.eye(classes)[labels[train]]
        gram = x @ x.T
        ridge = PROBE_RIDGE * float(np.trace(gram)) / max(len(x), 1)
        prior = targets.mean(axis=0)  # the intercept: features are centred
        dual = np.linalg.solve(gram + ridge * np.eye(len(x)), targets - prior)
        scores = ((features[test] - mean) / scale) @ (x.T @ dual) + prior
        correct[test] = scores.argmax(axis=1) == labels[test]
    return correct


def harmless(
    expected: np.ndarray, actual: np.ndarray, labels: np.ndarray | None, *, probabilities: bool
) -> tuple[bool, str]:
    """Whether a reduced precision's outputs may stand for float32's, and why.

    Args:
        expected: Float32 (Keras) outputs of the sample, one row per image.
        actual: The reduced precision's outputs of the same images.
        labels: The images' class indices when known (a ``fit`` caching pass).
        probabilities: Whether the rows are a classifier's probabilities.

    Probabilities: the decision (top class, or a multi-label model's set) must
    agree on at least :data:`AGREEMENT` of the images. Features: a ridge linear
    probe is cross-validated (:data:`PROBE_FOLDS` folds, stratified) on each
    precision's features with the same folds, and the reduced precision's
    accuracy must be within one standard error of float32's. Features without
    labels are not judged: float32 stays.
    """
    expected = np.asarray(expected, np.float64).reshape(len(expected), -1)
    actual = np.asarray(actual, np.float64).reshape(len(actual), -1)
    if expected.shape != actual.shape or not np.all(np.isfinite(actual)):
        return False, "its outputs are not float32's shape or not finite"
    if probabilities:
        share = _agreement(expected, actual)
        verdict = share >= AGREEMENT
        return verdict, f"the same decision as float32 on {share:.1%} of {len(expected)} images"
    if labels is None or len(labels) != len(expected):
        return False, "features without labels are not judged"
    labels = np.asarray(labels)
    labels = labels.argmax(axis=1) if labels.ndim == 2 else labels.astype(int)
    counts = np.bincount(labels)
    if np.count_nonzero(counts >= PROBE_FOLDS) < 2:
        return False, f"{len(labels)} images hold too few of each class to judge features"
    # Stratified folds: each class's images dealt in turn.
    order = np.argsort(labels, kind="stable")
    folds = np.empty(len(labels), dtype=int)
    folds[order] = np.arange(len(labels)) % PROBE_FOLDS
    full = float(_probe_scores(expected, labels, folds).mean())
    reduced = float(_probe_scores(actual, labels, folds).mean())
    error = max(np.sqrt(full * (1 - full) / len(labels)), 1 / len(labels))
    verdict = reduced >= full - error
    return verdict, (
        f"a linear probe's cross-validated accuracy {reduced:.3f} against float32's "
        f"{full:.3f} (standard error {error:.3f}) on {len(labels)} images"
    )


class _Auto:
    """``engine="auto"`` on a first run: Keras first, a runtime only where it pays back.

    The pass starts on Keras. Batch 1 traces Keras's function and is not timed;
    batches 2 to 1 + :data:`PROBE_BATCHES` are timed. From their rate and the
    batches still to come (``steps``), the model is converted only when the
    expected saving, at the ratio last measured on this machine (else
    :data:`PRIOR_RATIO`), is :data:`PAYBACK` times the cost of converting and
    of the comparison batch (see :func:`_conversion_seconds`); otherwise the pass stays on Keras
    and nothing is remembered. With ``steps`` unknown it converts once the time
    already spent on Keras, at that ratio, would have paid for it.

    After conversion the next batch runs on Keras and on every runtime, and a
    float32 runtime that differs from Keras by more than :data:`TOLERANCE` drops
    out. A reduced-precision runtime (:data:`REDUCED`) runs again the images
    Keras has run so far (up to :data:`SAMPLE_IMAGES`, kept with Keras's
    outputs) and drops out unless :func:`harmless` accepts it, judging
    ``probabilities`` by their decisions and features by a linear probe on the
    labels that :meth:`note_labels` passed in.
    Then :data:`TIMED_ROUNDS` rounds run one batch on each engine left, in
    turn, each timed from its call to the next call: the pass as it runs, with
    the pipeline's decoding, not the forward pass alone. Every batch's output
    is returned (none is computed twice except the comparison batch). The pass
    goes on with the fastest engine when it beat Keras by :data:`MIN_SPEEDUP`,
    else with Keras, and the choice is remembered (see :func:`_remember`).
    """

    def __init__(
        self,
        model: keras.Model,
        keras_forward: Callable[[Any], Any],
        runtimes: list[str],
        steps: int | None,
        *,
        reduced: list[str] | None = None,
        probabilities: bool = False,
        head: Callable[[Any], Any] | None = None,
    ) -> None:
        self.model = model
        self.head = head
        self.keras_forward = keras_forward
        self.names = list(runtimes) + list(reduced or [])
        self.reduced = set(reduced or [])
        self.probabilities = probabilities or head is not None
        #: Batches Keras ran before the runtimes were judged: (images, outputs, labels).
        self.sample: list[tuple[np.ndarray, Any, Any]] = []
        self.labels: Any = None  # of the batch about to run, from note_labels
        self.judged: dict[str, str] = {}  # reduced runtime -> the verdict's reason
        self.runtimes: list[RuntimeForward] = []
        self.steps = steps
        self.chosen: Callable[[Any], Any] | None = None
        self.runtime: RuntimeForward | None = None  # the winner, once chosen
        self.path: Path | None = None
        self.engine = "undecided"
        self.calls = 0
        self.batch = 1
        self.plan: list[str] = []  # engines of the timed batches still to run
        self.last: tuple[str, float] | None = None  # engine and start of a timed batch
        self.seconds: dict[str, list[float]] = {"keras": []}
        self.dropped = ""
        self.estimates: tuple[float, float, float] | None = None  # see _estimates
        #: Whether int8 was left out because this pass could not pay for quantizing.
        self.int8_deferred = False

    def note_labels(self, labels: Any) -> None:
        """The labels of the batch the next call runs (one call per view of it)."""
        self.labels = labels

    def _keep(self, images: Any, output: Any) -> None:
        """Keep a batch Keras ran, to judge a reduced precision on (see the class)."""
        if not self.reduced or isinstance(output, (list, tuple)):
            return
        array = np.asarray(images)
        rows = sum(len(kept[0]) for kept in self.sample)
        size = sum(kept[0].nbytes for kept in self.sample) + array.nbytes
        if rows < SAMPLE_IMAGES and size <= SAMPLE_BYTES:
            labels = None if self.labels is None else np.asarray(self.labels)
            self.sample.append((array, np.asarray(output), labels))

    def __call__(self, images: Any) -> Any:
        if self.chosen is not None:
            return self.chosen(images)
        now = _clock()
        if self.last is not None:
            self.seconds.setdefault(self.last[0], []).append(now - self.last[1])
            self.last = None
        self.calls += 1
        if self.runtimes:
            if self.plan:
                return self._timed(self.plan.pop(0), images, now)
            self._decide()
            return self(images)
        probed = self.calls > 1 + PROBE_BATCHES
        if probed and self._pays_back():
            return self._convert_and_compare(images)
        if probed and self.steps is not None:
            self.chosen, self.engine = self.keras_forward, "keras"
            logger.debug("engine='auto' stays on Keras: the rest of the pass would not pay back")
            return self.keras_forward(images)
        output = self.keras_forward(images)
        self._keep(images, output)
        if self.calls > 1:
            self.last = ("keras", now)
        return output

    def _pays_back(self) -> bool:
        """Whether converting now is expected to win back its cost (see the class).

        A first int8 quantization must pay back too; when it would not and the
        conversion alone would, the pass converts without trying int8."""
        keras_times = self.seconds["keras"]
        per_batch = sum(keras_times) / max(len(keras_times), 1)
        if self.estimates is None:  # read once: the record and the model's digest
            self.estimates = self._estimates()
        gain, conversion, quantize = self.estimates
        if gain <= 0:
            return False

        def pays(cost: float) -> bool:
            if self.steps is None:  # spend on Keras what converting would cost, then convert
                return sum(keras_times) * gain >= cost
            # Batches left that could run on a runtime: not the comparison batch nor
            # Keras's timed ones (the runtimes' timed batches already save).
            remaining = self.steps - self.calls - TIMED_ROUNDS
            return remaining * per_batch * gain >= PAYBACK * cost

        cost = conversion + per_batch * len(self.names)  # the comparison batch's extra runs
        if not quantize or pays(cost + quantize):
            return pays(cost)
        if self.steps is not None and pays(cost - per_batch):
            self.names.remove("openvino-int8")
            self.int8_deferred = True
            self.judged["openvino-int8"] = "the pass is too short to pay for a first quantization"
            logger.debug("engine='auto' converts without int8: %s", self.judged["openvino-int8"])
            return True
        return False

    def _estimates(self) -> tuple[float, float, float]:
        """The expected gain (a share of Keras's time), and the seconds of converting and
        of a first int8 quantization (0 when none is needed)."""
        prior = PRIOR_RATIO_BF16 if self.reduced else PRIOR_RATIO
        ratio = _machine_record().get("ratio", prior)
        quantize = 0.0
        stated = "XFERCLASS_CONVERSION_SECONDS" in os.environ  # the whole cost, stated
        if "openvino-int8" in self.names and not stated and not _int8_cached(self.model):
            quantize = _machine_record().get("quantize_s", QUANTIZE_SECONDS)
        return 1.0 - 1.0 / max(ratio, 1e-9), _conversion_seconds(self.model), quantize

    def _convert_and_compare(self, images: Any) -> Any:
        cached = _cached_path(self.model) is not None
        start = _clock()
        try:
            self.path = convert_to_onnx(self.model)
        except Exception as error:
            self._choose_keras(first_line(error), logging.WARNING)
            return self.keras_forward(images)
        if not cached:
            _update_machine_record(conversion_s=_clock() - start)
        for name in self.names:
            try:
                if name == "openvino-int8":
                    if not self._quantized():
                        continue
                self.runtimes.append(open_session(self.path, name))
            except Exception as error:
                self.dropped = "; ".join(filter(None, [self.dropped, first_line(error)]))
        expected = self.keras_forward(images)
        self._keep(images, expected)
        for runtime in list(self.runtimes):
            if runtime.engine in self.reduced:
                self._judge(runtime)
                continue
            try:
                actual = runtime(images)
            except Exception as error:
                self._drop(runtime, first_line(error))
                continue
            worst, scale = _max_difference(expected, actual)
            if not worst <= TOLERANCE * scale:
                self._drop(runtime, f"{runtime.engine} differs from Keras by {worst:.2e}")
        self.sample = []
        if not self.runtimes:
            if self.dropped or not self.judged:
                self._choose_keras(self.dropped or "no runtime loaded the model", logging.WARNING)
            else:  # a measured verdict, not a failure
                self._choose_keras("; ".join(self.judged.values()), logging.INFO)
            return expected
        self.seconds = {"keras": []}
        self.plan = ([r.engine for r in self.runtimes] + ["keras"]) * TIMED_ROUNDS
        return expected

    def _quantized(self) -> bool:
        """Whether the int8 model is there, quantized now on the kept images if need be
        (a failure is logged, and the pass goes on without int8)."""
        assert self.path is not None
        if int8_path(self.path).is_file():
            return True
        if not self.sample:
            self.judged["openvino-int8"] = "no images to calibrate it on"
            return False
        try:
            quantize_int8(self.path, [images for images, _, _ in self.sample])
        except ExportError as error:
            logger.info("engine='auto' goes on without int8: %s", first_line(error))
            self.judged["openvino-int8"] = first_line(error)
            return False
        return True

    def _judge(self, runtime: RuntimeForward) -> None:
        """Keep a reduced-precision runtime only if :func:`harmless` accepts its outputs
        on the sample; the verdict is logged either way."""
        if not self.sample:
            self._drop(runtime, f"{runtime.engine}: no sample to judge it on", quiet=True)
            return
        try:
            actual = np.concatenate([np.asarray(runtime(images)) for images, _, _ in self.sample])
        except Exception as error:
            self._drop(runtime, first_line(error))
            return
        expected = np.concatenate([output for _, output, _ in self.sample])
        if self.head is not None:  # features judged by the classifier's own decisions
            expected, actual = np.asarray(self.head(expected)), np.asarray(self.head(actual))
        labels = [kept[2] for kept in self.sample]
        known = None if any(label is None for label in labels) else np.concatenate(labels)
        accepted, reason = harmless(expected, actual, known, probabilities=self.probabilities)
        self.judged[runtime.engine] = reason
        logger.info(
            "engine='auto' %s %s: %s",
            "may use" if accepted else "keeps float32 over",
            runtime.engine,
            reason,
        )
        if not accepted:
            self._drop(runtime, f"{runtime.engine} was not harmless: {reason}", quiet=True)

    def _timed(self, engine: str, images: Any, now: float) -> Any:
        self.batch = len(np.asarray(images))
        if engine != "keras":
            runtime = next(r for r in self.runtimes if r.engine == engine)
            try:
                output = runtime(images)
            except Exception as error:
                self._drop(runtime, first_line(error))
                self.plan = [e for e in self.plan if e != engine]
                if not self.runtimes:
                    self._choose_keras(self.dropped, logging.WARNING)
                return self.keras_forward(images)
        else:
            output = self.keras_forward(images)
        self.last = (engine, now)
        return output

    def _drop(self, runtime: RuntimeForward, reason: str, *, quiet: bool = False) -> None:
        """Stop trying ``runtime``; ``quiet`` for a measured verdict, which is not a
        failure to report when Keras is left alone."""
        self.runtimes.remove(runtime)
        self.seconds.pop(runtime.engine, None)
        if not quiet:
            self.dropped = "; ".join(filter(None, [self.dropped, reason]))

    def _decide(self) -> None:
        """Commit to the engine whose timed batches ran fastest, and remember it."""
        means = {name: sum(t) / len(t) for name, t in self.seconds.items() if t}
        rates = {name: round(self.batch / max(t, 1e-9), 1) for name, t in means.items()}
        keras_time = means.get("keras", float("inf"))
        left = [r for r in self.runtimes if r.engine in means]
        if not left or self.path is None:
            self._choose_keras(self.dropped or "no runtime was timed", logging.WARNING)
            return
        fastest = min(left, key=lambda r: means[r.engine])
        runtime_time = means[fastest.engine]
        _update_machine_record(ratio=keras_time / max(runtime_time, 1e-9))
        if runtime_time * MIN_SPEEDUP < keras_time:
            self.chosen, self.engine, self.runtime = fastest, fastest.engine, fastest
            logger.info(
                "engine='auto' runs the frozen pass on %s (%.2fx Keras's speed on the pass)",
                fastest.engine,
                keras_time / max(runtime_time, 1e-9),
            )
        else:
            self._choose_keras(
                f"{fastest.engine} was not {MIN_SPEEDUP}x faster on the pass "
                f"({runtime_time:.3f} s vs {keras_time:.3f} s a batch)",
                logging.INFO,
            )
        _remember(self.path, self.engine, rates)
        if self.int8_deferred:  # a longer pass may pay for the quantization: it measures again
            _update_record(self.path, int8_deferred=True, keras_batch_s=round(keras_time, 4))

    def _choose_keras(self, reason: str, level: int) -> None:
        """Go on with Keras: a measured choice (INFO) or a fallback (WARNING)."""
        self.chosen, self.engine = self.keras_forward, "keras"
        logger.log(level, "engine='auto' stays on Keras: %s", reason)


def _clock() -> float:
    """The clock ``"auto"`` times with (a function, so tests can replace it)."""
    return time.perf_counter()


def _cached_path(model: keras.Model) -> Path | None:
    """The converted file of ``model`` when it is already in the cache."""
    try:
        path = onnx_cache_dir() / f"{model_key(model)}.onnx"
    except Exception:  # the converter is not installed: converting will say why
        return None
    return path if path.is_file() else None


def _int8_cached(model: keras.Model) -> bool:
    """Whether ``model``'s int8 model is already in the cache."""
    path = _cached_path(model)
    return path is not None and int8_path(path).is_file()


def _conversion_seconds(model: keras.Model) -> float:
    """What ``"auto"`` expects converting ``model`` (or loading it from the cache) to cost.

    ``$XFERCLASS_CONVERSION_SECONDS`` when set; :data:`SESSION_SECONDS` when
    the converted file is cached; else the last conversion measured on this
    machine, or :data:`CONVERSION_SECONDS`.
    """
    with contextlib.suppress(KeyError, ValueError):
        return float(os.environ["XFERCLASS_CONVERSION_SECONDS"])
    if _cached_path(model) is not None:
        return SESSION_SECONDS
    return _machine_record().get("conversion_s", CONVERSION_SECONDS)


def _machine_record_path() -> Path:
    return onnx_cache_dir() / "auto-machine.json"


def _machine_record() -> dict[str, float]:
    """What ``"auto"`` measured last on this machine: ``ratio`` (Keras's time over the
    fastest runtime's, on a pass) and ``conversion_s``."""
    try:
        entry = json.loads(_machine_record_path().read_text())[_machine()]
        return {str(k): float(v) for k, v in entry.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def _update_machine_record(**values: float) -> None:
    path = _machine_record_path()
    try:
        record = json.loads(path.read_text()) if path.is_file() else {}
        if not isinstance(record, dict):
            record = {}
    except (OSError, ValueError):
        record = {}
    entry = record.get(_machine())
    entry = entry if isinstance(entry, dict) else {}
    record[_machine()] = {**entry, **{k: round(v, 4) for k, v in values.items()}}
    text = json.dumps(record, indent=1, sort_keys=True)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda name: Path(name).write_text(text))
    except OSError as error:
        logger.debug("could not keep the machine's timings in %s: %s", path, error)


def _machine() -> str:
    """What the speed of a frozen pass depends on besides the model: CPU model, threads and
    the Keras backend (XLA's CPU kernels for depthwise convolutions, for one, are far
    slower than TensorFlow's)."""
    import platform

    name = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    return f"{name} / {_threads()} threads / {keras.backend.backend()}"


def _record_path(path: Path) -> Path:
    return path.with_suffix(".auto.json")


def _remember(path: Path, engine: str, rates: dict[str, float]) -> None:
    """Keep ``"auto"``'s choice for ``path``: in this process and, per machine, on disk.

    The file beside the ONNX model maps a machine (:func:`_machine`) to the
    engine chosen and the images/s each engine ran at; it is written atomically,
    and a failure to write it only costs the next run a timing.
    """
    _DECISIONS[path] = engine
    _update_record(path, engine=engine, images_per_s=rates)


def _read_record(path: Path) -> dict[str, Any]:
    """This machine's entry in the record beside ``path`` (empty when there is none)."""
    try:
        entry = json.loads(_record_path(path).read_text())[_machine()]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    return entry if isinstance(entry, dict) else {}


def _update_record(path: Path, **values: Any) -> None:
    """Merge ``values`` into this machine's entry beside ``path``, written atomically; a
    failure to write only costs the next run a measurement."""
    record_path = _record_path(path)
    try:
        record = json.loads(record_path.read_text()) if record_path.is_file() else {}
        if not isinstance(record, dict):
            record = {}
    except (OSError, ValueError):
        record = {}
    entry = record.get(_machine())
    record[_machine()] = {**(entry if isinstance(entry, dict) else {}), **values}
    text = json.dumps(record, indent=1, sort_keys=True)
    try:
        atomic_write(record_path, lambda name: Path(name).write_text(text))
    except OSError as error:
        logger.debug("could not keep the engine choice in %s: %s", record_path, error)


def _verdict(path: Path, head_key: str) -> bool | None:
    """Whether a reduced precision gave this head float32's decisions, when judged."""
    if (path, head_key) in _VERDICTS:
        return _VERDICTS[(path, head_key)]
    found = _read_record(path).get("decisions", {})
    verdict = found.get(head_key) if isinstance(found, dict) else None
    return verdict if isinstance(verdict, bool) else None


def _keep_verdict(path: Path, head_key: str, accepted: bool) -> None:
    _VERDICTS[(path, head_key)] = accepted
    found = _read_record(path).get("decisions", {})
    decisions = dict(found) if isinstance(found, dict) else {}
    decisions[head_key] = accepted
    _update_record(path, decisions=decisions)


def _fastest_float32(path: Path, runtimes: list[str]) -> str:
    """The float32 engine that ran ``path`` fastest on this machine (by its kept rates),
    when it beat Keras by :data:`MIN_SPEEDUP`; else ``"keras"``."""
    rates = _read_record(path).get("images_per_s", {})
    rates = rates if isinstance(rates, dict) else {}
    keras_rate = float(rates.get("keras", 0) or 0)
    measured = [(float(rates[name]), name) for name in runtimes if name in rates]
    if not measured:  # nothing kept: the float32 runtime of the bf16 one
        return "openvino" if "openvino" in runtimes else "keras"
    rate, name = max(measured)
    return name if rate > MIN_SPEEDUP * keras_rate else "keras"


class _Judging:
    """A classifier's pass while a reduced precision is judged by its head's decisions.

    The first :data:`SAMPLE_IMAGES` images run on a float32 engine (whose outputs are
    returned) and on the reduced-precision runtime; the head maps both to
    probabilities, and :func:`harmless` decides. The rest of the pass runs on the
    reduced precision when it was accepted, else on the float32 engine; the verdict
    is kept for this head (``head_key``) beside the converted model.
    """

    def __init__(
        self,
        reference: Callable[[Any], Any],
        reduced: RuntimeForward,
        head: Callable[[Any], Any],
        path: Path,
        head_key: str,
    ) -> None:
        self.reference, self.reduced, self.head = reference, reduced, head
        self.path, self.head_key = path, head_key
        self.expected: list[np.ndarray] = []
        self.actual: list[np.ndarray] = []
        self.chosen: Callable[[Any], Any] | None = None
        self.engine = getattr(reference, "engine", "keras")

    def __call__(self, images: Any) -> Any:
        if self.chosen is not None:
            return self.chosen(images)
        expected = self.reference(images)
        try:
            actual = self.reduced(images)
        except Exception as error:
            self._decide(False, first_line(error))
            return expected
        self.expected.append(np.asarray(self.head(np.asarray(expected))))
        self.actual.append(np.asarray(self.head(np.asarray(actual))))
        if sum(len(rows) for rows in self.expected) >= SAMPLE_IMAGES:
            accepted, reason = harmless(
                np.concatenate(self.expected),
                np.concatenate(self.actual),
                None,
                probabilities=True,
            )
            self._decide(accepted, reason)
        return expected

    def _decide(self, accepted: bool, reason: str) -> None:
        self.chosen = self.reduced if accepted else self.reference
        self.engine = self.reduced.engine if accepted else self.engine
        self.expected, self.actual = [], []
        _keep_verdict(self.path, self.head_key, accepted)
        logger.info(
            "engine='auto' %s %s for this classifier: %s",
            "runs" if accepted else "keeps float32 over",
            self.reduced.engine,
            reason,
        )


class _CalibratedOnFirstBatch:
    """``engine="openvino-int8"`` asked for before the model was quantized: the first
    batch calibrates the quantization (:func:`quantize_int8`), then every batch runs
    in int8."""

    engine = "openvino-int8"
    precision = "int8"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.session: RuntimeForward | None = None

    def __call__(self, images: Any) -> Any:
        if self.session is None:
            quantize_int8(self.path, [np.asarray(images)])
            self.session = open_session(self.path, self.engine)
        return self.session(images)


def _recalled(path: Path) -> tuple[str, dict[str, float]] | None:
    """The choice remembered for ``path`` on this machine, if any."""
    if path in _DECISIONS:
        return _DECISIONS[path], {}
    try:
        entry = json.loads(_record_path(path).read_text())[_machine()]
        engine, rates = str(entry["engine"]), dict(entry.get("images_per_s", {}))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    if engine != "keras" and engine not in RUNTIMES + REDUCED:
        return None
    _DECISIONS[path] = engine
    return engine, rates


def _int8_would_pay_back(path: Path, steps: int | None) -> bool:
    """Whether a pass of ``steps`` batches would pay for the int8 quantization that an
    earlier, shorter pass over ``path`` left out (see :meth:`_Auto._pays_back`), at the
    Keras time a batch took then and the ratio measured on this machine."""
    entry = _read_record(path)
    if steps is None or not entry.get("int8_deferred") or int8_path(path).is_file():
        return False
    record = _machine_record()
    gain = 1.0 - 1.0 / max(record.get("ratio", PRIOR_RATIO_BF16), 1e-9)
    saving = steps * float(entry.get("keras_batch_s", 0.0)) * gain
    return saving >= PAYBACK * record.get("quantize_s", QUANTIZE_SECONDS)


def _under_head(
    path: Path,
    engine: str,
    runtimes: list[str],
    keras_forward: Callable[[Any], Any],
    head: Callable[[Any], Any],
    head_key: str,
) -> Callable[[Any], Any]:
    """The pass of a classifier whose extractor was chosen to run in reduced precision:
    in it when this head's verdict accepted it, in float32 when it refused it, and
    judged on the way (:class:`_Judging`) when there is no verdict yet."""
    verdict = _verdict(path, head_key)
    fallback = _fastest_float32(path, runtimes)
    try:
        reference = keras_forward if fallback == "keras" else open_session(path, fallback)
        if verdict is False:
            return reference
        reduced = open_session(path, engine)
    except Exception as error:
        logger.warning("engine='auto' stays on Keras: %s", first_line(error))
        return keras_forward
    return reduced if verdict else _Judging(reference, reduced, head, path, head_key)


def runtime_forward(
    model: keras.Model,
    keras_forward: Callable[[Any], Any],
    *,
    engine: str,
    strategy: Any = None,
    steps: int | None = None,
    probabilities: bool = False,
    head: Callable[[Any], Any] | None = None,
    head_key: str | None = None,
) -> Callable[[Any], Any]:
    """``model``'s forward pass on ``engine``, for
    :func:`xferclass.runtime._common.forward_function`.

    Args:
        model: The frozen (sub)model.
        keras_forward: Its Keras forward pass (``predict_on_batch`` or the
            strategy-aware function), used by ``"auto"`` to compare and as the
            fallback.
        engine: ``"auto"``, or one of :data:`RUNTIMES` and :data:`REDUCED`.
        strategy: The tf.distribute strategy, if any; ``"auto"`` stays on Keras
            under one.
        steps: Batches in the pass, when known: ``"auto"`` converts only when
            the batches left would pay the conversion back (see :class:`_Auto`).
        probabilities: Whether ``model`` outputs a classifier's probabilities, by
            which ``"auto"`` judges a reduced precision (see :func:`harmless`).
        head: The rest of the classifier when ``model`` is its feature extractor:
            ``"auto"`` judges a reduced precision by the probabilities it maps
            each precision's features to.
        head_key: A digest of ``head``'s weights: a reduced precision chosen for
            ``model``'s features (by ``fit``) runs under this head only once it gave
            float32's decisions (see :class:`_Judging`), a verdict kept per head.

    Returns:
        A callable mapping a batch of images to a NumPy array.

    Raises:
        MissingDependencyError: An explicit runtime is not installed.
        ExportError: An explicit runtime was asked for and the model does not convert.
    """
    if engine in RUNTIMES + REDUCED:
        require_runtime(engine)
        converted = convert_to_onnx(model)
        if engine == "openvino-int8" and not int8_path(converted).is_file():
            return _CalibratedOnFirstBatch(converted)
        return open_session(converted, engine)
    if strategy is not None:
        logger.debug("engine='auto' stays on Keras under a tf.distribute strategy")
        return keras_forward
    runtimes = available_runtimes()
    if not runtimes:
        logger.debug("engine='auto' stays on Keras: no runtime installed (%s)", _EXTRA)
        return keras_forward
    if _on_gpu():
        logger.debug("engine='auto' stays on Keras: a GPU is visible")
        return keras_forward
    if _mixed_precision(model):
        logger.info("engine='auto' stays on Keras: the model computes in mixed precision")
        return keras_forward
    reduced = reduced_runtimes()
    path = _cached_path(model)
    recalled = _recalled(path) if path is not None else None

    def measure() -> Callable[[Any], Any]:
        shortest = 2 + PROBE_BATCHES + TIMED_ROUNDS * 2
        if steps is not None and 0 < steps < shortest:
            logger.debug("engine='auto' stays on Keras: %d batches do not pay for a measure", steps)
            return keras_forward
        return _Auto(
            model,
            keras_forward,
            runtimes,
            steps,
            reduced=reduced,
            probabilities=probabilities,
            head=head,
        )

    if path is None or recalled is None:
        return measure()
    engine, rates = recalled
    if rates:
        logger.info(
            "engine='auto' runs the frozen pass on %s, as measured on this machine before "
            "(images/s: %s)",
            "Keras" if engine == "keras" else engine,
            ", ".join(f"{name} {rate:g}" for name, rate in sorted(rates.items())),
        )
    if engine == "keras":
        return keras_forward
    if engine not in runtimes + reduced:  # or float32 only was asked for since
        return measure()
    if "openvino-int8" in reduced and _int8_would_pay_back(path, steps):
        return measure()
    if engine in REDUCED and head is not None and head_key is not None:
        return _under_head(path, engine, runtimes, keras_forward, head, head_key)
    try:
        return open_session(path, engine)
    except Exception as error:
        logger.warning("engine='auto' stays on Keras: %s", first_line(error))
        return keras_forward
