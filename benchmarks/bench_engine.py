"""Frozen forward pass on each engine: Keras, onnxruntime, OpenVINO and "auto".

For each backbone, in one process and interleaved (``--repeats`` rounds, best
of each kept, so that load from other processes hits every engine alike):

- the raw forward pass on in-memory arrays (the limit): Keras
  ``predict_on_batch``, the onnxruntime session and the OpenVINO compiled model
  of the feature extractor that ``xferclass.fit`` caches (preprocessing,
  backbone, pooling), on ``--forward-batches`` batches already decoded;
- the caching pass that ``fit`` runs (``load_image_dataset`` decoding and
  resizing the clothing images, ``cache_split`` storing the features) with
  ``forward_function(..., engine=e)`` for each engine, ``"auto"`` included;
- the data pipeline alone (decode + resize, no model), so that its rate can be
  compared with the fastest engine's;
- the one-time ONNX conversion (into an empty cache folder) and its reuse.

Run::

    python benchmarks/bench_engine.py                                 # lite0 + mobilenet_v2
    python benchmarks/bench_engine.py --backbones resnet50 xception --images 128
    python benchmarks/bench_engine.py --images 96 --no-docs          # quick
    python benchmarks/bench_engine.py --scaling 100 800 3000        # auto vs keras by size

``--scaling N ...`` measures, for each count of images, on the first backbone
only: the caching pass on Keras, ``"auto"`` on a first run (an empty cache: no
converted file, no choice and no ratio measured on this machine), ``"auto"`` on
a remembered run, and the raw runtime/Keras ratio (preloaded batches) in the
same run; it prints the table of docs/performance.md.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from typing import Any

import _bench

_bench.quiet_tensorflow()

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import xferclass  # noqa: E402
from xferclass.data import load_image_dataset  # noqa: E402
from xferclass.models import POOL  # noqa: E402
from xferclass.runtime import _runtime  # noqa: E402
from xferclass.runtime._common import forward_function  # noqa: E402
from xferclass.training._cache import CacheDirectory, _Budget, cache_split  # noqa: E402

ENGINES = ("keras", "onnxruntime", "openvino", "auto")
#: The caching passes measured: each engine, and "auto" twice: on its first run
#: (it times the engines on the first batches) and on a later run, which reads
#: the choice it wrote beside the ONNX file.
PASSES = ("keras", "onnxruntime", "openvino", "auto", "auto (remembered)")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", nargs="+", default=["efficientnet_lite0", "mobilenet_v2"])
    parser.add_argument("--images", type=int, default=320, help="train images per caching pass")
    parser.add_argument("--size", type=int, default=224, help="image side in pixels")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--forward-batches", type=int, default=4, help="batches per raw pass")
    parser.add_argument("--repeats", type=int, default=2, help="interleaved rounds, best kept")
    parser.add_argument(
        "--fit-images",
        type=int,
        default=0,
        help="also run xferclass.fit per engine on this many training images (bench_fit's "
        "subset is 600) and compare validation accuracy and wall time (0: skip)",
    )
    parser.add_argument("--fit-epochs", type=int, default=10)
    parser.add_argument("--no-docs", action="store_true", help="do not update docs/benchmarks.md")
    parser.add_argument(
        "--scaling",
        type=int,
        nargs="+",
        default=[],
        help="image counts: auto (first and remembered run) against Keras per count",
    )
    return parser.parse_args(argv)


def fit_with_engine(engine: str, train: Any, val: Any, args: argparse.Namespace) -> Any:
    """``xferclass.fit`` whose caching passes run on ``engine``.

    Passes ``engine=`` when ``fit`` takes it; otherwise routes the caching passes
    (which go through ``forward_function``) to the engine.
    """
    import functools
    import inspect

    from xferclass import training

    keras.utils.set_random_seed(0)
    model = xferclass.build_classifier(
        args.backbones[0], num_classes=len(train.class_names), input_size=args.size
    )
    options: dict[str, Any] = dict(epochs=args.fit_epochs, verbose=0, seed=0)
    if "engine" in inspect.signature(xferclass.fit).parameters:
        options["engine"] = engine
        return xferclass.fit(model, train, val, **options)
    original = training.forward_function
    training.forward_function = functools.partial(original, engine=engine)
    try:
        return xferclass.fit(model, train, val, **options)
    finally:
        training.forward_function = original


def bench_fit(args: argparse.Namespace) -> list[list[str]]:
    """Validation accuracy and wall time of ``fit`` per engine, same seed and data."""
    train_folder = _bench.image_folder("train", args.fit_images)
    val_folder = _bench.image_folder("validation", 0)
    rows = []
    try:
        train, val = _bench.load_splits(
            train_folder, val_folder, args.size, batch_size=args.batch_size, shuffle=True, seed=0
        )
        for engine in ("keras", "auto", "keras", "auto"):  # interleaved, twice
            _runtime._DECISIONS.clear()
            start = time.perf_counter()
            history = fit_with_engine(engine, train, val, args)
            seconds = time.perf_counter() - start
            accuracy = history.history["val_accuracy"][-1]
            print(f"fit, engine={engine}: {seconds:.1f} s, val_accuracy {accuracy:.4f}", flush=True)
            rows.append([f"`{engine}`", f"{seconds:.1f} s", f"{accuracy:.4f}"])
    finally:
        train_folder.close()
        val_folder.close()
    return rows


def extractor(backbone: str, size: int) -> tuple[keras.Model, str]:
    """What ``xferclass.fit`` caches: preprocessing, backbone, pooling (ImageNet if offline)."""
    try:
        model = xferclass.build_classifier(backbone, num_classes=10, input_size=size)
        weights = "imagenet"
    except Exception:  # weights not downloadable here: the speed does not depend on them
        model = xferclass.build_classifier(backbone, num_classes=10, input_size=size, weights=None)
        weights = "random"
    return keras.Model(model.input, model.get_layer(POOL).output), weights


def caching_rate(forward: Any, dataset: tf.data.Dataset) -> tuple[float, np.ndarray]:
    """Images/s of one caching pass (as in ``fit``) and the cached features."""
    with CacheDirectory() as folder:
        start = time.perf_counter()
        split = cache_split(
            forward, dataset, name="train", directory=folder, budget=_Budget(2**31), verbose=0
        )
        seconds = time.perf_counter() - start
        features = split.stores[0].take(np.arange(len(split)))
        split.close()
    return len(features) / seconds, features


def pipeline_rate(dataset: tf.data.Dataset) -> float:
    count = 0
    start = time.perf_counter()
    for images, _labels in dataset:
        count += int(images.shape[0])
    return count / (time.perf_counter() - start)


def bench_backbone(args: argparse.Namespace, backbone: str, dataset: Any) -> dict[str, Any]:
    sub, weights = extractor(backbone, args.size)
    batches = [images.numpy() for images, _ in dataset.take(args.forward_batches)]
    with tempfile.TemporaryDirectory() as empty:
        start = time.perf_counter()
        _runtime.convert_to_onnx(sub, directory=_runtime.Path(empty))
        first = time.perf_counter() - start
        start = time.perf_counter()
        path = _runtime.convert_to_onnx(sub, directory=_runtime.Path(empty))
        again = time.perf_counter() - start
        size_mb = path.stat().st_size / 1e6
    _runtime.convert_to_onnx(sub)  # into the real cache, used by forward_function below
    raw = {
        "keras": sub.predict_on_batch,
        "onnxruntime": _runtime.open_session(_runtime.convert_to_onnx(sub), "onnxruntime"),
        "openvino": _runtime.open_session(_runtime.convert_to_onnx(sub), "openvino"),
    }
    raw_rates: dict[str, list[float]] = {name: [] for name in raw}
    cache_rates: dict[str, list[float]] = {name: [] for name in PASSES}
    pipe_rates: list[float] = []
    features: dict[str, np.ndarray] = {}
    chosen = ""
    pipeline_rate(dataset.take(2))  # warm the file cache and the pipeline
    for round_ in range(1, args.repeats + 1):
        for name, forward in raw.items():
            best, _ = _bench.forward_rate(forward, batches, warmup=1)
            raw_rates[name].append(best)
        pipe_rates.append(pipeline_rate(dataset))
        for name in PASSES:
            engine = name.split()[0]
            _runtime._DECISIONS.clear()
            if name == "auto":  # a first run: forget the choice kept on disk too
                for record in _runtime.onnx_cache_dir().glob("*.auto.json"):
                    record.unlink()
            forward = forward_function(sub, engine=engine, steps=int(dataset.cardinality()))
            rate, features[name] = caching_rate(forward, dataset)
            cache_rates[name].append(rate)
            if name == "auto":
                chosen = getattr(forward, "engine", "keras")
        print(
            f"{backbone} round {round_}: raw "
            + ", ".join(f"{k} {v[-1]:.1f}" for k, v in raw_rates.items())
            + f"; pipeline {pipe_rates[-1]:.1f}; caching "
            + ", ".join(f"{k} {v[-1]:.1f}" for k, v in cache_rates.items())
            + f" images/s; auto chose {chosen}",
            flush=True,
        )
    diffs = {name: float(np.max(np.abs(features[name] - features["keras"]))) for name in PASSES}
    return {
        "backbone": backbone,
        "weights": weights,
        "raw": {k: max(v) for k, v in raw_rates.items()},
        "cache": {k: max(v) for k, v in cache_rates.items()},
        "pipeline": max(pipe_rates),
        "diffs": diffs,
        "scale": float(np.max(np.abs(features["keras"]))),
        "convert": first,
        "reuse": again,
        "onnx_mb": size_mb,
        "chosen": chosen,
    }


def _shared_cores(forward_rate: float, pipeline_rate: float) -> float:
    """Images/s of a pass whose forward and decoding each use every core, one after the other.

    Both the runtime and the tf.data pipeline use all the cores when they run
    alone, so on a machine with nothing else to give, a caching pass can at best
    spend ``1 / forward_rate + 1 / pipeline_rate`` seconds per image.
    """
    return 1.0 / (1.0 / forward_rate + 1.0 / pipeline_rate)


def _fresh_cache() -> str:
    """An empty ``XFERCLASS_CACHE_DIR`` and nothing remembered in this process."""
    folder = tempfile.mkdtemp(prefix="xferclass-bench-auto-")
    os.environ["XFERCLASS_CACHE_DIR"] = folder
    _runtime._DECISIONS.clear()
    _runtime.open_session.cache_clear()
    return folder


def scaling_row(args: argparse.Namespace, sub: keras.Model, count: int) -> list[str]:
    """One count of images: Keras, auto first run, auto remembered, raw ratio.

    ``--repeats`` rounds, interleaved, in a rotating order; the median of each
    kept. Each round's first run starts from an empty cache (nothing converted,
    no choice or ratio remembered); its remembered run follows in that cache.
    """
    import shutil
    import statistics

    folder = _bench.image_folder("train", count)
    rates: dict[str, list[float]] = {"keras": [], "first": [], "again": [], "raw": []}
    chose: list[str] = []
    try:
        dataset = load_image_dataset(
            folder.path, args.size, batch_size=args.batch_size, shuffle=False
        )
        steps = int(dataset.cardinality())
        batches = [images.numpy() for images, _ in dataset.take(args.forward_batches)]
        pipeline_rate(dataset)  # the files in the page cache for every pass alike
        for round_ in range(args.repeats):
            cache = _fresh_cache()
            try:
                session = _runtime.open_session(_runtime.convert_to_onnx(sub), "onnxruntime")
                raw_keras, _ = _bench.forward_rate(sub.predict_on_batch, batches, warmup=1)
                raw_ort, _ = _bench.forward_rate(session, batches, warmup=1)
                rates["raw"].append(raw_ort / raw_keras)
            finally:
                shutil.rmtree(cache, ignore_errors=True)
            cache = _fresh_cache()  # a first run: nothing converted or measured here
            try:
                passes = ["keras", "auto"]
                for name in passes[round_ % 2 :] + passes[: round_ % 2]:
                    if name == "keras":
                        forward = forward_function(sub, engine="keras", steps=steps)
                        rates["keras"].append(caching_rate(forward, dataset)[0])
                        continue
                    first = forward_function(sub, engine="auto", steps=steps)
                    rates["first"].append(caching_rate(first, dataset)[0])
                    chose.append(getattr(first, "engine", "keras"))
                    _runtime._DECISIONS.clear()
                    again = forward_function(sub, engine="auto", steps=steps)
                    rates["again"].append(caching_rate(again, dataset)[0])
            finally:
                shutil.rmtree(cache, ignore_errors=True)
    finally:
        folder.close()
    for name, values in rates.items():  # each round's figure: the noise behind the medians
        print(f"{folder.count} images, {name}: " + ", ".join(f"{v:.2f}" for v in values))
    median = {name: statistics.median(values) for name, values in rates.items()}
    raw, keras_rate = median["raw"], median["keras"]
    row = [f"{folder.count}", f"{raw:.2f}x", _bench.fmt(keras_rate)]
    for name in ("first", "again"):
        ratio = median[name] / keras_rate
        share = f"{(ratio - 1) / (raw - 1):.0%}" if raw > 1.1 else "-"  # else noise
        row += [_bench.fmt(median[name]), f"{ratio:.2f}x", share]
    row[3] += f" ({'/'.join(sorted(set(chose)))})"
    print(" | ".join(row), flush=True)
    return row


def bench_scaling(args: argparse.Namespace) -> None:
    """``"auto"`` against Keras at each of ``--scaling``'s image counts (first backbone)."""
    sub, weights = extractor(args.backbones[0], args.size)
    sub.predict_on_batch(np.zeros((2, args.size, args.size, 3), "float32"))  # trace once
    rows = [scaling_row(args, sub, count) for count in args.scaling]
    headers = [
        "images",
        "raw ORT / Keras",
        "cache: keras",
        "auto, first run (chose)",
        "first / keras",
        "share of raw gain",
        "auto, remembered",
        "remembered / keras",
        "share of raw gain",
    ]
    print(
        f"\n{args.backbones[0]} ({weights} weights), {args.size} px, batches of "
        f"{args.batch_size}, images/s:\n"
    )
    print(_bench.table(headers, rows))


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = parse(argv)
    if args.scaling:
        bench_scaling(args)
        return []
    info = _bench.machine()
    folder = _bench.image_folder("train", args.images)
    cache = tempfile.mkdtemp(prefix="xferclass-bench-engine-")
    os.environ["XFERCLASS_CACHE_DIR"] = cache
    try:
        dataset = load_image_dataset(
            folder.path, args.size, batch_size=args.batch_size, shuffle=False
        )
        n = len(dataset.file_paths)
        results = [bench_backbone(args, backbone, dataset) for backbone in args.backbones]
        fit_rows = bench_fit(args) if args.fit_images else []
        info.finish()
    finally:
        folder.close()
        import shutil

        shutil.rmtree(cache, ignore_errors=True)
    rows = []
    for r in results:
        raw, cache_ = r["raw"], r["cache"]
        rows.append(
            [
                f"{r['backbone']} ({r['weights']} weights)",
                _bench.fmt(raw["keras"]),
                _bench.fmt(raw["onnxruntime"]),
                _bench.fmt(raw["openvino"]),
                _bench.fmt(r["pipeline"]),
                _bench.fmt(cache_["keras"]),
                _bench.fmt(cache_["onnxruntime"]),
                _bench.fmt(cache_["openvino"]),
                f"{_bench.fmt(cache_['auto'])} ({r['chosen']})",
                _bench.fmt(cache_["auto (remembered)"]),
                f"{cache_['auto (remembered)'] / raw['onnxruntime']:.0%}",
                f"{_shared_cores(raw['onnxruntime'], r['pipeline']) / raw['onnxruntime']:.0%}",
                f"{cache_['auto (remembered)'] / cache_['keras']:.2f}x",
            ]
        )
    headers = [
        "backbone",
        "raw Keras",
        "raw ORT",
        "raw OpenVINO",
        "pipeline alone",
        "cache: keras",
        "cache: onnxruntime",
        "cache: openvino",
        'cache: "auto", first run (chose)',
        'cache: "auto", remembered',
        "remembered / raw ORT",
        "in turn / raw ORT",
        "remembered / Keras",
    ]
    conversions = [
        [
            r["backbone"],
            f"{r['convert']:.1f} s",
            f"{r['reuse'] * 1000:.0f} ms",
            f"{r['onnx_mb']:.1f} MB",
            ", ".join(f"{k} {v:.1e}" for k, v in r["diffs"].items() if k != "keras"),
            f"{r['scale']:.2g}",
        ]
        for r in results
    ]
    body = f"""
Data: {folder.source}, {n} images at {args.size}x{args.size} px, batches of {args.batch_size}.
Images/s, best of {args.repeats} interleaved rounds. "raw" is the forward pass of the feature
extractor that `fit` caches (preprocessing, backbone, pooling) on {args.forward_batches}
batches already in memory: the limit of each engine. "pipeline alone" iterates
`load_image_dataset` (decode + resize) with no model. "cache: e" is the whole caching pass of
`fit` (pipeline + `forward_function(engine=e)` + storing the features). `"auto"`, first run,
pays its choice (Keras on its first {1 + _runtime.PROBE_BATCHES} batches, then, when the
pass pays back a conversion, one batch per engine for {_runtime.TIMED_ROUNDS} rounds); "remembered" is a later run, which reads the choice kept
beside the ONNX file for this machine and runs the chosen engine from the first batch.

{_bench.table(headers, rows)}

Targets: `"auto"` caching pass at least 90% of the raw onnxruntime rate, and at least 2.5x
Keras's on Lite0 and MobileNetV2. "in turn" is the rate of a caching pass whose decoding
and forward pass each took every core, one after the other: `1 / (1 / raw ORT + 1 /
pipeline)`. The pipeline's share of the CPU is what separates a caching pass from the raw
rate on a 2-core machine; prefetching overlaps a little of it (decoding also waits on the
disk), so a pass can end slightly above this estimate, but not near the raw rate.

One-time conversion (`model.export(format="onnx")`, into an empty cache folder), its reuse
from the cache, and the largest difference of the cached features from Keras's:

{_bench.table(["backbone", "conversion", "cached reuse", "ONNX file", "max abs diff", "max |feature|"], conversions)}
"""  # noqa: E501
    if fit_rows:
        body += f"""
`xferclass.fit` of {args.backbones[0]} ({args.fit_images} training images, the whole
validation split, {args.fit_epochs} epochs, seed 0, shuffled), run per engine, interleaved;
the wall time includes the conversion (cached after the first `"auto"` run):

{_bench.table(["engine", "wall time", "final val_accuracy"], fit_rows)}
"""
    _bench.section(
        "bench_engine",
        "Frozen pass per engine: Keras, onnxruntime, OpenVINO, auto",
        info,
        body,
        write=not args.no_docs,
    )
    return results


if __name__ == "__main__":
    main()
