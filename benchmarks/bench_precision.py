"""The frozen pass in each precision this CPU offers, raw and through ``fit`` and ``predict``.

In one process, on EfficientNet-Lite0 (ImageNet weights when they are installed):

- the CPU flags that decide what ``engine="auto"`` may try, and OpenVINO's view of them;
- raw images/s of the feature extractor on preloaded batches of clothing training
  images, for Keras float32, onnxruntime float32, OpenVINO float32 and bfloat16, and
  int8 (onnxruntime's static quantizer, QDQ, calibrated on 64 other training images,
  run by onnxruntime and by OpenVINO, the second as ``engine="auto"`` may run it), best
  of ``--repeats`` interleaved rounds, with
  the largest difference from Keras's features and their mean cosine similarity;
- ``xferclass.fit`` (``--images`` training images, 200 validation images, 10 epochs) and
  ``xferclass.predict`` (``--predict`` files of the validation split) with
  ``engine="keras"`` and ``engine="auto"``, warmed (the conversion and the choice
  already made on this machine, as for every run after the first), interleaved: wall
  time, validation accuracy, which engine each pass ran on, and the share of predicted
  classes that ``"auto"`` and Keras agree on for the same trained model.

Run::

    python benchmarks/bench_precision.py                  # 800 images, 372 files
    python benchmarks/bench_precision.py --images 320 --no-docs
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

import _bench

_bench.quiet_tensorflow()

import keras  # noqa: E402
import numpy as np  # noqa: E402

import xferclass  # noqa: E402
from xferclass.models import POOL  # noqa: E402
from xferclass.runtime import _runtime  # noqa: E402

FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=800, help="training images for fit")
    parser.add_argument("--predict", type=int, default=372, help="files for predict")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds, best kept")
    parser.add_argument("--no-docs", action="store_true", help="do not record the run")
    return parser.parse_args(argv)


def cpu_flags() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown (no /proc/cpuinfo)"
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines()
                  if line.startswith("flags")), [])  # fmt: skip
    return ", ".join(f for f in FLAGS if f in flags) or "none of " + ", ".join(FLAGS)


def quantized(path: Path, calibration: list[np.ndarray]) -> tuple[Path, float]:
    """``path`` quantized to int8 as ``engine="auto"`` quantizes it, and the seconds it took."""
    start = time.perf_counter()
    int8 = _runtime.quantize_int8(path, calibration)
    return int8, time.perf_counter() - start


def raw_table(size: int, repeats: int) -> tuple[list[list[str]], dict[str, float], float]:
    model = xferclass.build_classifier("efficientnet_lite0", num_classes=10, input_size=size)
    sub = keras.Model(model.input, model.get_layer(POOL).output)
    path = _runtime.convert_to_onnx(sub)
    folder = _bench.image_folder("train", 192)
    try:
        dataset = xferclass.load_image_dataset(folder.path, size, batch_size=32, seed=0)
        loaded = [images.numpy() for images, _ in dataset.take(6)]
    finally:
        folder.close()
    calibration, batches = loaded[:2], loaded[2:]
    engines: dict[str, Any] = {"keras (f32)": sub.predict_on_batch}
    for name in ("onnxruntime", "openvino", "openvino-bf16"):
        engines[f"{name} ({'bf16' if 'bf16' in name else 'f32'})"] = _runtime.open_session(
            path, name
        )
    int8, quantize_s = quantized(path, calibration)
    engines["onnxruntime (int8)"] = _runtime._onnxruntime_session(int8)
    engines["openvino (int8)"] = _runtime.open_session(path, "openvino-int8")
    rates: dict[str, list[float]] = {name: [] for name in engines}
    for _ in range(repeats):
        for name, forward in engines.items():
            best, _ = _bench.forward_rate(forward, batches, warmup=1)
            rates[name].append(best)
    expected = np.concatenate([sub.predict_on_batch(b) for b in batches])
    keras_rate = max(rates["keras (f32)"])
    rows = []
    for name, forward in engines.items():
        got = np.concatenate([np.asarray(forward(b)) for b in batches])
        diff = float(np.max(np.abs(got - expected)))
        norms = np.linalg.norm(got, axis=1) * np.linalg.norm(expected, axis=1)
        cosine = float(np.mean(np.sum(got * expected, axis=1) / np.maximum(norms, 1e-12)))
        rate = max(rates[name])
        rows.append([name, _bench.fmt(rate), f"{rate / keras_rate:.2f}x", f"{diff:.2g}",
                     f"{cosine:.5f}"])  # fmt: skip
    return rows, {name: max(v) for name, v in rates.items()}, quantize_s


def end_to_end(args: argparse.Namespace) -> tuple[list[list[str]], dict[str, Any]]:
    folder = _bench.image_folder("train", args.images)
    validation = _bench.image_folder("validation", 200)
    files = _bench.image_folder("validation", args.predict)
    try:
        train = xferclass.load_image_dataset(folder.path, args.size, seed=0)
        val = xferclass.load_image_dataset(validation.path, args.size, shuffle=False)
        paths = sorted(str(p) for p in Path(files.path).rglob("*") if p.is_file())
        classes = len(train.class_names)
        # Warm: the conversion and the choice made once, as on every run after the first.
        warm = xferclass.build_classifier("efficientnet_lite0", num_classes=classes,
                                          input_size=args.size)  # fmt: skip
        xferclass.fit(warm, train, val, epochs=1, engine="auto", verbose=0)
        xferclass.predict(warm, paths, engine="auto", verbose=0)
        times: dict[str, dict[str, list[float]]] = {}
        facts: dict[str, Any] = {}
        for round_ in range(args.repeats):
            for engine in ("keras", "auto"):
                model = xferclass.build_classifier("efficientnet_lite0", num_classes=classes,
                                                   input_size=args.size)  # fmt: skip
                start = time.perf_counter()
                history = xferclass.fit(model, train, val, epochs=10, engine=engine, verbose=0)
                fit_s = time.perf_counter() - start
                predicted = {}
                for on in ("keras", engine):
                    start = time.perf_counter()
                    predicted[on] = xferclass.predict(model, paths, engine=on, verbose=0)
                    predict_s = time.perf_counter() - start
                entry = times.setdefault(engine, {"fit": [], "predict": []})
                entry["fit"].append(fit_s)
                entry["predict"].append(predict_s)
                agreement = float(np.mean(predicted["keras"].indices == predicted[engine].indices))
                facts[engine] = {
                    "val_accuracy": max(history.history["val_accuracy"]),
                    "fit_engines": history.frozen_engines,
                    "predict_engine": predicted[engine].engine,
                    "agreement": agreement,
                }
                print(f"round {round_ + 1} {engine}: fit {fit_s:.2f} s, predict {predict_s:.2f} s,"
                      f" {facts[engine]}", flush=True)  # fmt: skip
    finally:
        for f in (folder, validation, files):
            f.close()
    best = {e: {k: min(v) for k, v in t.items()} for e, t in times.items()}
    rows = []
    for engine in ("keras", "auto"):
        f = facts[engine]
        engines = sorted(set(f["fit_engines"].values()))
        rows.append([
            engine, f"{best[engine]['fit']:.2f} s",
            f"{best['keras']['fit'] / best[engine]['fit']:.2f}x",
            f"{f['val_accuracy']:.3f}", ", ".join(engines),
            f"{best[engine]['predict']:.2f} s",
            f"{best['keras']['predict'] / best[engine]['predict']:.2f}x",
            f["predict_engine"], f"{f['agreement']:.3f}",
        ])  # fmt: skip
    return rows, {"times": best, "facts": facts, "files": len(paths)}


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    info = _bench.machine()
    os.environ["XFERCLASS_CACHE_DIR"] = _bench.empty_model_cache("xferclass-bench-precision-")
    os.environ["XFERCLASS_PRECISION"] = "auto"
    flags = cpu_flags()
    bf16 = _runtime.cpu_bf16()
    int8 = _runtime.cpu_int8()
    raw_rows, raw, quantize_s = raw_table(args.size, args.repeats)
    e2e_rows, e2e = end_to_end(args)
    info.finish()
    # What "auto" may run: float32 runtimes, bfloat16 and OpenVINO's int8 where offered.
    allowed = [k for k in raw if ("bf16" not in k or bf16) and ("int8" not in k or int8)
               and k != "onnxruntime (int8)"]  # fmt: skip
    best_gain = max(raw[k] for k in allowed) / raw["keras (f32)"]
    body = f"""
CPU flags: {flags}. OpenVINO computes bfloat16 natively: {"yes" if bf16 else "no"}, runs
int8: {"yes" if int8 else "no"}, so `engine="auto"` may try
{", ".join(_runtime.reduced_runtimes()) or "no reduced precision"}.

Raw forward pass of the Lite0 feature extractor at {args.size} px, 4 preloaded batches of
32 clothing images, best of {args.repeats} interleaved rounds; max abs diff and mean
cosine similarity against Keras's features (largest value about 5). int8: quantized by
onnxruntime (QDQ, per channel) on 64 other images in {quantize_s:.1f} s, as `"auto"`
quantizes for `openvino-int8` (it calibrates on the pass's first images).

{
        _bench.table(
            ["runtime (precision)", "images/s", "x Keras", "max abs diff", "mean cosine"], raw_rows
        )
    }

Through the library, warmed, best of {args.repeats} interleaved rounds: `fit`
({args.images} training images, 200 validation images, 10 epochs) and `predict`
({e2e["files"]} validation files) of the model it trained. "agrees" is the share of
files whose predicted class is the one `engine="keras"` gives the same model.

{
        _bench.table(
            [
                "engine",
                "fit",
                "x Keras",
                "val accuracy",
                "fit's passes ran on",
                "predict",
                "x Keras",
                "predict ran on",
                "agrees",
            ],
            e2e_rows,
        )
    }

The best raw gain among what `"auto"` may run is {best_gain:.2f}x Keras; the target for
`fit` and `predict` is three quarters of it, {0.75 * best_gain:.2f}x.
"""  # noqa: E501
    auto = e2e["times"]["auto"]
    keras_times = e2e["times"]["keras"]
    _bench.section(
        "bench_precision",
        "Frozen passes in reduced precision (`bench_precision.py`)",
        info,
        body,
        write=not args.no_docs,
        summary={
            "benchmark": '`engine="auto"` with bfloat16 and int8, warmed: fit / predict vs Keras',
            "result": f"{keras_times['fit'] / auto['fit']:.2f}x / "
            f"{keras_times['predict'] / auto['predict']:.2f}x (raw best {best_gain:.2f}x)",
            "target": f"{0.75 * best_gain:.2f}x",
        },
        data={"raw": raw, **e2e},
    )


if __name__ == "__main__":
    main()
