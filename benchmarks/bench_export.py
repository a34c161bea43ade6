"""Exported artifacts of the clothing Lite0 model against Keras, side by side in one run.

For Keras (``predict_on_batch``) and each artifact of :func:`xferclass.export`
(SavedModel; LiteRT float32, float16, dynamic-range and int8; ONNX; OpenVINO),
each run by its own runtime as a deployment would (TensorFlow, the
``ai-edge-litert`` interpreter, onnxruntime, OpenVINO on the CPU at float32
precision):

- file size on disk;
- batch-1 and batch-32 latency, as medians over rounds in which every engine runs
  in turn (so the machine's load changes hit them all alike), and the speed-up
  over Keras at batch 32;
- validation accuracy and top-1 agreement with Keras on every validation image,
  and the largest probability difference.

Targets: float artifacts agree with Keras on >= 99.5% of the validation images;
int8 LiteRT loses <= 1 point of accuracy at <= 1/3 of the float32 LiteRT size;
the fastest CPU format is >= 2x Keras at batch 32.

The model is the one ``examples/clothing.py --backbone efficientnet_lite0`` writes
(``runs/clothing/model.keras``; ``--model`` names another; ``--train`` trains a quick
one first: Lite0 at 224 px, 5 epochs of the head on the frozen backbone). The int8 calibration
images are the training split. Run::

    python examples/clothing.py --backbone efficientnet_lite0      # once: the model
    python benchmarks/bench_export.py --model runs/clothing/model.keras
    python benchmarks/bench_export.py --model runs/lite0-224.keras --train   # or train one
    python benchmarks/bench_export.py --model M --rounds 3 --no-docs   # quicker
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import _bench

_bench.quiet_tensorflow()

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import xferclass  # noqa: E402

#: (label, format, quantize, file name)
VARIANTS = [
    ("SavedModel", "saved_model", None, "saved_model"),
    ("LiteRT float32", "litert", None, "float32.tflite"),
    ("LiteRT float16", "litert", "float16", "float16.tflite"),
    ("LiteRT dynamic", "litert", "dynamic", "dynamic.tflite"),
    ("LiteRT int8", "litert", "int8", "int8.tflite"),
    ("ONNX (onnxruntime)", "onnx", None, "model.onnx"),
    ("OpenVINO", "openvino", None, "model.xml"),
]
Runner = Callable[[np.ndarray], np.ndarray]


def runner(format: str, path: Path) -> Runner:
    """Run an artifact with its own runtime, as a deployment without xferclass would."""
    threads = len(os.sched_getaffinity(0))
    if format == "saved_model":
        serve = tf.saved_model.load(str(path)).signatures["serving_default"]
        return lambda batch: serve(tf.constant(batch))["probabilities"].numpy()
    if format == "litert":
        from ai_edge_litert.interpreter import Interpreter

        interpreters: dict[int, Interpreter] = {}

        def run(batch: np.ndarray) -> np.ndarray:
            n = len(batch)
            if n not in interpreters:
                interpreter = Interpreter(model_path=str(path), num_threads=threads)
                index = interpreter.get_input_details()[0]["index"]
                interpreter.resize_tensor_input(index, list(batch.shape))
                interpreter.allocate_tensors()
                interpreters[n] = interpreter
            interpreter = interpreters[n]
            interpreter.set_tensor(interpreter.get_input_details()[0]["index"], batch)
            interpreter.invoke()
            return np.array(interpreter.get_tensor(interpreter.get_output_details()[0]["index"]))

        return run
    if format == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return lambda batch: session.run(None, {name: batch})[0]
    import openvino

    compiled = openvino.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    return lambda batch: np.asarray(compiled(batch)[compiled.output(0)])


def size_of(path: Path) -> int:
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    if path.suffix == ".xml":
        return path.stat().st_size + path.with_suffix(".bin").stat().st_size
    return path.stat().st_size


def predict_all(run: Runner, images: np.ndarray, batch: int = 32) -> np.ndarray:
    return np.concatenate([run(images[i : i + batch]) for i in range(0, len(images), batch)])


def timed(run: Runner, batch: np.ndarray) -> float:
    started = time.perf_counter()
    run(batch)
    return time.perf_counter() - started


def train_model(path: str, size: int, epochs: int) -> None:
    """A quick clothing model: Lite0 (ImageNet), the head trained on the frozen backbone."""
    import keras

    keras.utils.set_random_seed(0)
    train = xferclass.load_image_dataset(_bench.CLOTHING / "train", size, seed=0)
    model = xferclass.build_classifier(
        "efficientnet_lite0", num_classes=len(train.class_names), input_size=size
    )
    started = time.perf_counter()
    xferclass.fit(model, train, epochs=epochs, verbose=0)
    print(f"trained {path} in {time.perf_counter() - started:.0f} s", flush=True)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    xferclass.save_model(model, path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(_bench.ROOT / "runs/clothing/model.keras"))
    parser.add_argument(
        "--train",
        action="store_true",
        help="when --model does not exist, train it: Lite0, --epochs of the head at --size",
    )
    parser.add_argument("--size", type=int, default=224, help="input side for --train")
    parser.add_argument("--epochs", type=int, default=5, help="head epochs for --train")
    parser.add_argument("--rounds", type=int, default=5, help="timing rounds (default: 5)")
    parser.add_argument("--single", type=int, default=5, help="batch-1 runs per round")
    parser.add_argument("--no-docs", action="store_true", help="leave the docs alone")
    args = parser.parse_args()
    info = _bench.machine()
    if not os.path.isfile(args.model):
        if not args.train:
            sys.exit(
                f"bench_export.py: {args.model} does not exist; make it with "
                "python examples/clothing.py --backbone efficientnet_lite0, or pass --train"
            )
        train_model(args.model, args.size, args.epochs)
    model = xferclass.load_model(args.model)
    size = tuple(int(s) for s in model.input_shape[1:3])
    validation = xferclass.load_image_dataset(
        _bench.CLOTHING / "validation", size, shuffle=False, batch_size=32,
        class_names=model.get_layer("preprocessing").class_names,
    )  # fmt: skip
    images = np.concatenate([x.numpy() for x, _ in validation]).astype(np.float32)
    labels = np.concatenate([y.numpy() for _, y in validation]).argmax(1)
    print(f"{args.model}: {size[0]}x{size[1]}, {len(images)} validation images", flush=True)

    engines: dict[str, Runner] = {"Keras": lambda batch: np.asarray(model.predict_on_batch(batch))}
    sizes: dict[str, int] = {}
    export_s: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as folder:
        keras_file = Path(folder) / "model.keras"
        xferclass.save_model(model, keras_file)
        sizes["Keras"] = keras_file.stat().st_size
        for label, format, quantize, name in VARIANTS:
            started = time.perf_counter()
            calibration = _bench.CLOTHING / "train" if quantize == "int8" else None
            (path, *_) = xferclass.export(
                model, Path(folder) / name, format=format, quantize=quantize,
                calibration=calibration,
            )  # fmt: skip
            export_s[label] = time.perf_counter() - started
            sizes[label] = size_of(path)
            engines[label] = runner(format, path)
            print(f"exported {label} in {export_s[label]:.0f} s", flush=True)

        probabilities = {}
        for label, run in engines.items():
            probabilities[label] = predict_all(run, images)
        single = images[:1]
        batch32 = images[:32]
        for run in engines.values():  # warm up both shapes
            run(single), run(batch32)
        one: dict[str, list[float]] = {label: [] for label in engines}
        many: dict[str, list[float]] = {label: [] for label in engines}
        for round_index in range(args.rounds):
            order = list(engines) if round_index % 2 == 0 else list(reversed(engines))
            for label in order:
                one[label] += [timed(engines[label], single) for _ in range(args.single)]
                many[label].append(timed(engines[label], batch32))
            print(f"round {round_index + 1}/{args.rounds}", flush=True)
    info.finish()

    reference = probabilities["Keras"]
    keras_top = reference.argmax(1)
    keras_accuracy = float((keras_top == labels).mean())
    keras_32 = statistics.median(many["Keras"])
    rows = []
    for label in engines:
        top = probabilities[label].argmax(1)
        b1 = statistics.median(one[label]) * 1000
        b32 = statistics.median(many[label]) * 1000
        rows.append(
            [
                label,
                f"{sizes[label] / 2**20:.1f}",
                f"{b1:.1f}",
                f"{b32:.0f}",
                f"{keras_32 * 1000 / b32:.2f}x",
                f"{(top == labels).mean():.4f}",
                f"{(top == keras_top).mean():.4f}",
                f"{np.abs(probabilities[label] - reference).max():.1e}",
            ]
        )
    table = _bench.table(
        ["engine", "size MiB", "batch 1 ms", "batch 32 ms", "vs Keras (b32)",
         "val accuracy", "top-1 = Keras", "max prob diff"],
        rows,
    )  # fmt: skip
    float_labels = ["SavedModel", "LiteRT float32", "ONNX (onnxruntime)", "OpenVINO"]
    agreement = min(
        float((probabilities[label].argmax(1) == keras_top).mean()) for label in float_labels
    )
    int8_loss = keras_accuracy - float((probabilities["LiteRT int8"].argmax(1) == labels).mean())
    int8_ratio = sizes["LiteRT int8"] / sizes["LiteRT float32"]
    fastest = max(
        (label for label in engines if label != "Keras"),
        key=lambda label: -statistics.median(many[label]),
    )
    speedup = keras_32 / statistics.median(many[fastest])
    checks = "\n".join(
        [
            f"- Float formats agree with Keras on at least **{agreement:.2%}** of the "
            f"{len(images)} validation images (target ≥ 99.5%: "
            f"{'met' if agreement >= 0.995 else 'NOT met'}).",
            f"- int8 LiteRT: validation accuracy {keras_accuracy - int8_loss:.4f} vs Keras "
            f"{keras_accuracy:.4f} ({-int8_loss * 100:+.1f} points; target: at most 1 point "
            f"lost: {'met' if int8_loss <= 0.01 else 'NOT met'}) at "
            f"**{int8_ratio:.2f}** of the float32 LiteRT size (target ≤ 1/3: "
            f"{'met' if int8_ratio <= 1 / 3 else 'NOT met'}).",
            f"- Fastest at batch 32: **{fastest}**, **{speedup:.2f}x** Keras "
            f"(target ≥ 2x: {'met' if speedup >= 2 else 'NOT met'}).",
            "- Export times: " + ", ".join(f"{k} {v:.0f} s" for k, v in export_s.items()) + ".",
        ]
    )
    body = (
        f"Model: `{os.path.relpath(args.model, _bench.ROOT)}` (`efficientnet_lite0`, "
        f"{size[0]}x{size[1]}, {model.output_shape[-1]} classes); {len(images)} validation "
        f"images; latencies are medians of {args.rounds} rounds ({args.single} batch-1 runs "
        "per round), every engine in turn within a round.\n\n"
        f"{table}\n\n{checks}\n"
    )
    # Recorded in benchmarks/results/bench_export.json; shown in docs/benchmarks_inference.md
    # and docs/deploy.md (results_table.PAGE_OF).
    _bench.section(
        "bench_export", "Exported formats vs Keras (`bench_export.py`)", info, body,
        write=not args.no_docs,
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
