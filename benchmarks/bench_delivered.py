"""The model delivered against the model measured: ``train_auto``'s estimate, the saved model
scored by ``xferclass evaluate`` with no flags, the same model with its recipe's choices
applied by hand, and every exported format run by its own runtime, on images the recipe
never saw.

The recipe trains on ``DATA/train`` only; every score is on ``DATA/validation`` (or the
subfolder ``--held-out`` names). "By hand"
is the classifier inside the returned model (``without_views``) with the recipe's
test-time views averaged outside it by ``predict(tta=...)``: what a user had to do before
the views went inside the model. The exported files run in their runtimes (TensorFlow's
SavedModel loader, ONNX Runtime, OpenVINO, LiteRT) on the pixels ``read_images`` decodes,
with no xferclass code in the forward pass.

Writes ``benchmarks/results/delivered.json`` (one entry per run, with the command and
commit) and prints the table.

    python benchmarks/bench_delivered.py --budget 5m --seed 0
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from _bench import CLOTHING, ROOT, cores, cpu_model, load_average, quiet_tensorflow

RESULTS = ROOT / "benchmarks" / "results" / "delivered.json"
FORMATS = {
    "saved_model": ("sm", None),
    "onnx": ("m.onnx", None),
    "openvino": ("m.xml", None),
    "litert": ("m.tflite", None),
    "litert int8": ("m-int8.tflite", "int8"),
}


def _run_artifact(fmt: str, path: Path, images: np.ndarray) -> np.ndarray:
    if fmt == "saved_model":
        import tensorflow as tf

        serve = tf.saved_model.load(str(path)).signatures["serving_default"]
        return np.concatenate([serve(tf.constant(images[i : i + 32]))["probabilities"].numpy()
                               for i in range(0, len(images), 32)])  # fmt: skip
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return np.concatenate([session.run(None, {name: images[i : i + 32]})[0]
                               for i in range(0, len(images), 32)])  # fmt: skip
    if fmt == "openvino":
        import openvino

        compiled = openvino.Core().compile_model(str(path), "CPU",
                                                 {"INFERENCE_PRECISION_HINT": "f32"})  # fmt: skip
        return np.concatenate([np.asarray(compiled(images[i : i + 32])[compiled.output(0)])
                               for i in range(0, len(images), 32)])  # fmt: skip
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    entry = interpreter.get_input_details()[0]["index"]
    out = []
    for i in range(0, len(images), 32):
        batch = images[i : i + 32]
        interpreter.resize_tensor_input(entry, list(batch.shape))
        interpreter.allocate_tensors()
        interpreter.set_tensor(entry, batch)
        interpreter.invoke()
        out.append(np.array(interpreter.get_tensor(interpreter.get_output_details()[0]["index"])))
    return np.concatenate(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=CLOTHING, help="DATA with train/, validation/")
    parser.add_argument(
        "--held-out", default="validation", help="the subfolder of DATA scored (never trained on)"
    )
    parser.add_argument("--budget", default="5m")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-record", action="store_true", help="do not write the results file")
    args = parser.parse_args()
    quiet_tensorflow()
    import xferclass
    from xferclass.evaluation._tta import without_views

    load_start = load_average()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip()  # fmt: skip
    work = Path(tempfile.mkdtemp(prefix="xferclass-delivered-"))
    out = work / "model.keras"
    started = time.monotonic()
    result = xferclass.train_auto(args.data / "train", budget=args.budget, seed=args.seed,
                                  out=out)  # fmt: skip
    trained_s = time.monotonic() - started
    report = result.report
    validation = xferclass.load_image_dataset(
        args.data / args.held_out, result.plan.input_size, shuffle=False,
        class_names=report["data"]["class_names"],
    )  # fmt: skip
    paths = [str(p) for p in validation.file_paths]
    labels = np.asarray(validation.labels)
    images = xferclass.read_images(paths, result.plan.input_size).astype(np.float32)

    def accuracy(probabilities: np.ndarray) -> float:
        return float(np.mean(np.argmax(probabilities, 1) == labels))

    cli = subprocess.run(
        [sys.executable, "-m", "xferclass", "evaluate", str(out), str(args.data / args.held_out),
         "--json"], capture_output=True, text=True, check=True,
    )  # fmt: skip
    evaluated = json.loads(cli.stdout)
    loaded = xferclass.load_model(out)
    delivered = xferclass.predict(loaded, paths).probabilities
    by_hand = xferclass.predict(without_views(loaded), paths, tta=result.plan.tta).probabilities
    scores: dict[str, Any] = {
        "estimate (cross-validated on train/)": report["estimate"]["value"],
        f"xferclass evaluate MODEL {args.held_out}/ (no flags)": evaluated["accuracy"],
        "predict(model) (no flags)": accuracy(delivered),
        "by hand: inner model + predict(tta=the recipe's views)": accuracy(by_hand),
    }
    calibration = images[:: max(1, len(images) // 64)]
    for fmt, (name, quantize) in FORMATS.items():
        base = fmt.split()[0]
        (written, *_) = xferclass.export(loaded, work / name, format=base, quantize=quantize,
                                         calibration=calibration if quantize else None)  # fmt: skip
        probabilities = _run_artifact(base, written, images)
        scores[f"export {fmt}, run in its runtime"] = accuracy(probabilities)
    entry = {
        "command": "python benchmarks/bench_delivered.py " + " ".join(sys.argv[1:]),
        "commit": commit,
        "machine": f"{cpu_model()}, {cores()} cores; load average {load_start} at the start, "
        f"{load_average()} at the end",
        "date": time.strftime("%Y-%m-%d"),
        "budget": args.budget, "seed": args.seed, "trained_s": round(trained_s, 1),
        "data": str(args.data), "held_out": args.held_out, "held_out_images": len(paths),
        "returned": report["plan"], "tta": result.plan.tta,
        "overlap_reported_by_evaluate": evaluated.get("training_overlap"),
        "accuracy": {k: round(float(v), 4) for k, v in scores.items()},
        "max_probability_difference_by_hand": float(np.abs(delivered - by_hand).max()),
    }  # fmt: skip
    for what, value in entry["accuracy"].items():
        print(f"{value:.4f}  {what}")
    print(f"returned: {report['plan']['backbone']} {report['plan']['input_size']} px, "
          f"TTA {result.plan.tta}; trained in {trained_s:.0f} s of {args.budget}")  # fmt: skip
    if not args.no_record:
        runs = json.loads(RESULTS.read_text()) if RESULTS.exists() else []
        runs.append(entry)
        RESULTS.write_text(json.dumps(runs, indent=1) + "\n")
        print(f"recorded in {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
