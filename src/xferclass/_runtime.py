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

``engine="auto"`` (see :func:`runtime_forward`) uses a runtime only on a CPU,
only when one is installed and only when it measured faster than Keras on the
first batches of the pass; otherwise, and whenever conversion fails, it stays
on Keras and says why in one line of the ``xferclass`` logger: a warning when
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
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np

from ._errors import ExportError, InvalidArgumentError, MissingDependencyError, first_line
from ._files import atomic_write
from ._log import logger

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

#: Largest difference from Keras, relative to the largest Keras output (and at
#: least absolute), that ``engine="auto"`` accepts on the first batch.
TOLERANCE = 1e-4

#: Batches of a pass that ``engine="auto"`` runs on both engines: the first
#: compares the outputs, the others are timed.
TIMED_BATCHES = 3

#: Fewest batches of a pass (when its length is known) for which ``"auto"``
#: converts the model: shorter passes would not win back the conversion and
#: the timing batches.
MIN_AUTO_STEPS = 16

#: How much faster than Keras the runtime must be on the timed batches for
#: ``"auto"`` to switch: timing one or two batches on a busy machine is noisy,
#: and a wrong switch costs more than a missed one.
MIN_SPEEDUP = 1.25

#: Engine that ``"auto"`` chose for each converted model in this process (also
#: kept on disk per machine, see :func:`_remember`), so a second pass over the
#: same frozen part (the validation split, the next run) is not timed again.
_DECISIONS: dict[Path, str] = {}

_EXTRA = 'pip install "xferclass[export]"'


def onnx_cache_dir() -> Path:
    """Where converted models go: ``$XFERCLASS_CACHE_DIR/onnx`` or ``~/.cache/xferclass/onnx``."""
    from ._lite_weights import cache_dir

    return cache_dir() / "onnx"


def _installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def available_runtimes() -> list[str]:
    """The runtimes of :data:`RUNTIMES` whose packages (and the ONNX converter) are installed.

    Examples:
        >>> from xferclass._runtime import available_runtimes
        >>> set(available_runtimes()) <= {"onnxruntime", "openvino"}
        True
    """
    if not (_installed("onnx") and _installed("tf2onnx")):
        return []
    return [name for name in RUNTIMES if _installed(name)]


def require_runtime(engine: str) -> None:
    """Raise :class:`MissingDependencyError` when ``engine``'s packages are missing."""
    missing = [m for m in ("onnx", "tf2onnx", engine) if not _installed(m)]
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

    digest.update(f"keras={keras.__version__};tf2onnx={tf2onnx.__version__}".encode())
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
        engine: ``"onnxruntime"`` or ``"openvino"``.
        path: The ONNX file it runs.
    """

    engine: str
    path: Path
    _run: Callable[[np.ndarray], list[np.ndarray]]
    _dtype: np.dtype

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


def _openvino_session(path: Path) -> RuntimeForward:
    import openvino

    core = openvino.Core()
    # f32: the CPU plugin otherwise computes in bf16 where the CPU has it,
    # which moves the outputs by about 1e-3.
    compiled = core.compile_model(
        str(path),
        "CPU",
        {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": _threads()},
    )
    request = compiled.create_infer_request()
    count = len(compiled.outputs)

    def run(array: np.ndarray) -> list[np.ndarray]:
        results = request.infer([array])
        return [np.array(results[compiled.output(i)]) for i in range(count)]

    return RuntimeForward("openvino", path, run, np.dtype(np.float32))


@functools.lru_cache(maxsize=8)
def open_session(path: Path, engine: str) -> RuntimeForward:
    """Load a converted model on ``engine`` (``"onnxruntime"`` or ``"openvino"``).

    The last few sessions are kept, so the train and validation passes of one
    run load the model once.
    """
    require_runtime(engine)
    if engine not in RUNTIMES:
        raise InvalidArgumentError(f"engine={engine!r} is not a runtime; use one of {RUNTIMES}")
    try:
        return _onnxruntime_session(path) if engine == "onnxruntime" else _openvino_session(path)
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


class _Auto:
    """``engine="auto"``: times Keras and each runtime on the first batches, keeps the fastest.

    Batch 1 runs on every engine (Keras's first call also traces its function,
    so it is not timed) and the outputs are compared: a runtime that differs
    from Keras by more than :data:`TOLERANCE` drops out. Batches 2 to
    :data:`TIMED_BATCHES` run on every engine left and are timed; the pass then
    goes on with the fastest runtime when it beat Keras by :data:`MIN_SPEEDUP`,
    else with Keras. Until the choice is made the Keras outputs are returned,
    so the answers are Keras's whichever engine wins. The choice is kept for the
    rest of the process and written beside the ONNX file for this machine (see
    :func:`_remember`), so the next run over the same frozen part skips the timing.
    """

    def __init__(self, keras_forward: Callable[[Any], Any], runtimes: list[RuntimeForward]) -> None:
        self.keras_forward = keras_forward
        self.runtimes = list(runtimes)
        self.runtime = self.runtimes[0]  # the winner once one is chosen
        self.path = self.runtime.path
        self.chosen: Callable[[Any], Any] | None = None
        self.engine = "undecided"
        self.calls = 0
        self.seconds = {"keras": 0.0, **{r.engine: 0.0 for r in self.runtimes}}
        self.images = 0
        self.dropped = ""

    def __call__(self, images: Any) -> Any:
        if self.chosen is not None:
            return self.chosen(images)
        self.calls += 1
        start = time.perf_counter()
        expected = self.keras_forward(images)
        keras_seconds = time.perf_counter() - start
        timed = {"keras": keras_seconds}
        for runtime in list(self.runtimes):
            start = time.perf_counter()
            try:
                actual = runtime(images)
            except Exception as error:
                self._drop(runtime, first_line(error))
                continue
            timed[runtime.engine] = time.perf_counter() - start
            if self.calls == 1:
                worst, scale = _max_difference(expected, actual)
                if not worst <= TOLERANCE * scale:
                    self._drop(
                        runtime,
                        f"{runtime.engine} differs from Keras by {worst:.2e} on the first batch",
                    )
        if not self.runtimes:
            return self._choose_keras(self.dropped, expected, logging.WARNING)
        if self.calls == 1:
            return expected
        self.images += len(np.asarray(images))
        for name, seconds in timed.items():
            self.seconds[name] += seconds
        if self.calls >= TIMED_BATCHES:
            self._decide()
        return expected

    def _drop(self, runtime: RuntimeForward, reason: str) -> None:
        self.runtimes.remove(runtime)
        self.seconds.pop(runtime.engine, None)
        self.dropped = "; ".join(filter(None, [self.dropped, reason]))

    def _decide(self) -> None:
        keras_time = self.seconds["keras"]
        fastest = min(self.runtimes, key=lambda r: self.seconds[r.engine])
        runtime_time = self.seconds[fastest.engine]
        rates = {
            name: round(self.images / max(seconds, 1e-9), 1)
            for name, seconds in self.seconds.items()
        }
        if runtime_time * MIN_SPEEDUP < keras_time:
            self.chosen, self.engine, self.runtime = fastest, fastest.engine, fastest
            logger.info(
                "engine='auto' runs the frozen pass on %s (%.1fx Keras's speed on the first "
                "batches)",
                fastest.engine,
                keras_time / max(runtime_time, 1e-9),
            )
        else:
            self._choose_keras(
                f"{fastest.engine} was not {MIN_SPEEDUP}x faster on the first batches "
                f"({runtime_time:.3f} s vs {keras_time:.3f} s)",
                None,
                logging.INFO,
            )
        _remember(self.path, self.engine, rates)

    def _choose_keras(self, reason: str, expected: Any, level: int) -> Any:
        """Go on with Keras: a measured choice (INFO) or a fallback (WARNING)."""
        self.chosen, self.engine = self.keras_forward, "keras"
        logger.log(level, "engine='auto' stays on Keras: %s", reason)
        return expected


def _machine() -> str:
    """What the speed of a frozen pass depends on besides the model: CPU model and threads."""
    import platform

    name = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    return f"{name} / {_threads()} threads"


def _record_path(path: Path) -> Path:
    return path.with_suffix(".auto.json")


def _remember(path: Path, engine: str, rates: dict[str, float]) -> None:
    """Keep ``"auto"``'s choice for ``path``: in this process and, per machine, on disk.

    The file beside the ONNX model maps a machine (:func:`_machine`) to the
    engine chosen and the images/s each engine ran at; it is written atomically,
    and a failure to write it only costs the next run a timing.
    """
    _DECISIONS[path] = engine
    record_path = _record_path(path)
    try:
        record = json.loads(record_path.read_text()) if record_path.is_file() else {}
    except (OSError, ValueError):
        record = {}
    record[_machine()] = {"engine": engine, "images_per_s": rates}
    text = json.dumps(record, indent=1, sort_keys=True)
    try:
        atomic_write(record_path, lambda name: Path(name).write_text(text))
    except OSError as error:
        logger.debug("could not keep the engine choice in %s: %s", record_path, error)


def _recalled(path: Path) -> tuple[str, dict[str, float]] | None:
    """The choice remembered for ``path`` on this machine, if any."""
    if path in _DECISIONS:
        return _DECISIONS[path], {}
    try:
        entry = json.loads(_record_path(path).read_text())[_machine()]
        engine, rates = str(entry["engine"]), dict(entry.get("images_per_s", {}))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    if engine != "keras" and engine not in RUNTIMES:
        return None
    _DECISIONS[path] = engine
    return engine, rates


def runtime_forward(
    model: keras.Model,
    keras_forward: Callable[[Any], Any],
    *,
    engine: str,
    strategy: Any = None,
    steps: int | None = None,
) -> Callable[[Any], Any]:
    """``model``'s forward pass on ``engine``, for :func:`xferclass._common.forward_function`.

    Args:
        model: The frozen (sub)model.
        keras_forward: Its Keras forward pass (``predict_on_batch`` or the
            strategy-aware function), used by ``"auto"`` to compare and as the
            fallback.
        engine: ``"auto"``, ``"onnxruntime"`` or ``"openvino"``.
        strategy: The tf.distribute strategy, if any; ``"auto"`` stays on Keras
            under one.
        steps: Batches in the pass, when known: ``"auto"`` stays on Keras for
            fewer than :data:`MIN_AUTO_STEPS`.

    Returns:
        A callable mapping a batch of images to a NumPy array.

    Raises:
        MissingDependencyError: An explicit runtime is not installed.
        ExportError: An explicit runtime was asked for and the model does not convert.
    """
    if engine in RUNTIMES:
        require_runtime(engine)
        return open_session(convert_to_onnx(model), engine)
    if strategy is not None:
        logger.debug("engine='auto' stays on Keras under a tf.distribute strategy")
        return keras_forward
    if steps is not None and 0 < steps < MIN_AUTO_STEPS:
        logger.debug("engine='auto' stays on Keras: %d batches do not pay for a conversion", steps)
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
    try:
        path = convert_to_onnx(model)
    except Exception as error:
        logger.warning("engine='auto' stays on Keras: %s", first_line(error))
        return keras_forward
    recalled = _recalled(path)
    if recalled is not None:
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
        if engine in runtimes:
            try:
                return open_session(path, engine)
            except Exception as error:
                logger.warning("engine='auto' stays on Keras: %s", first_line(error))
                return keras_forward
    sessions = []
    for engine in runtimes:
        try:
            sessions.append(open_session(path, engine))
        except Exception as error:
            logger.warning(
                "engine='auto' cannot load the model on %s: %s", engine, first_line(error)
            )
    if not sessions:
        logger.warning("engine='auto' stays on Keras: no runtime could load the converted model")
        return keras_forward
    return _Auto(keras_forward, sessions)
