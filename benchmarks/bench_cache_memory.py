"""Peak memory of ``xferclass.fit``'s feature cache: spilled to disk vs kept in memory.

A synthetic training set of ``--images`` small images (``--size`` px, drawn
batch by batch from a seeded ``tf.random.stateless_uniform`` inside a
``tf.data`` pipeline: no files) goes through ``xferclass.fit`` with a tiny
registered conv backbone whose pooled features have ``--features`` dimensions,
so the whole cache holds ``images x features x 4`` bytes (50,000 x 1024 x 4 =
205 MB by default). Each configuration runs in its own process:

- ``cache_memory=--budget`` (16 MiB): the features spill to a file past it;
- ``cache_memory`` unlimited: all features stay in memory.

In each process a small warm-up ``fit`` runs first (TensorFlow's runtime, the
traced functions and thread pools then count in the baseline), then the RSS is
read and the measured ``fit`` runs while a thread samples the RSS and the size
of the spill folder every 20 ms. The peak RSS of the measured ``fit`` is the
kernel's high-water mark (``getrusage`` maxrss) when the fit raised it, else
the sampled peak. Expected: the spilled run grows by the budget plus a fixed
cost (batches in flight, TensorFlow's runtime, the C allocator's reuse: tens of
MiB, varying from run to run), the in-memory run by at least the feature bytes.

Run::

    python benchmarks/bench_cache_memory.py                    # 50,000 images, 1024-d
    python benchmarks/bench_cache_memory.py --images 5000 --no-docs      # quick
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import _bench

MIB = 1024**2
UNLIMITED = 1 << 40


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=50_000)
    parser.add_argument("--size", type=int, default=32, help="image side in pixels")
    parser.add_argument("--features", type=int, default=1024, help="pooled feature dimensions")
    parser.add_argument("--budget", type=float, default=16, help="cache_memory in MiB (spilled)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument(
        "--backbone", default="bench_tiny", help="name under which the tiny backbone is registered"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--no-docs", action="store_true", help="do not update docs/benchmarks.md")
    return parser.parse_args(argv)


# ------------------------------------------------------------------------------ child


def child(config: dict) -> dict:
    """One measured ``fit`` in this process; returns its figures."""
    import resource
    import shutil
    import tempfile
    import threading
    import time

    import psutil

    _bench.quiet_tensorflow()
    import keras
    import tensorflow as tf

    import xferclass

    side, features, classes = config["size"], config["features"], 10

    def tiny(input_shape: tuple[int, int, int], weights: object = None) -> keras.Model:
        inputs = keras.Input(input_shape)
        x = keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu")(inputs)
        x = keras.layers.Conv2D(32, 3, strides=2, padding="same", activation="relu")(x)
        x = keras.layers.Conv2D(64, 3, strides=2, padding="same", activation="relu")(x)
        x = keras.layers.Conv2D(features, 1, activation="relu")(x)
        return keras.Model(inputs, x, name="tiny")

    def synthetic(n: int, batch: int, seed: int) -> tf.data.Dataset:
        def make(step: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            start = step * batch
            count = tf.minimum(tf.constant(batch, tf.int64), n - start)
            shape = tf.stack([count, side, side, 3])
            images = tf.random.stateless_uniform(shape, seed=tf.stack([seed, step]), maxval=255)
            labels = tf.one_hot(tf.range(start, start + count) % classes, classes)
            return images, labels

        return tf.data.Dataset.range(-(-n // batch)).map(make)

    xferclass.register_backbone(
        config["backbone"],
        tiny,
        preprocess="unit",
        default_size=side,
        min_size=side,
        overwrite=True,
    )
    keras.utils.set_random_seed(0)
    model = xferclass.build_classifier(config["backbone"], num_classes=classes, weights=None)
    budget = config["budget"]
    xferclass.fit(
        model,
        synthetic(config["warmup"], config["batch"], 1),
        epochs=1,
        verbose=0,
        cache_memory=budget,
    )

    process = psutil.Process()
    folder = tempfile.mkdtemp(prefix="bench-cache-")
    peaks = {"rss": 0, "disk": 0}
    done = threading.Event()

    def disk_bytes() -> int:
        total = 0
        for root, _dirs, files in os.walk(folder):
            for name in files:
                try:
                    total += os.path.getsize(os.path.join(root, name))
                except OSError:
                    pass
        return total

    def sample() -> None:
        while not done.is_set():
            peaks["rss"] = max(peaks["rss"], process.memory_info().rss)
            peaks["disk"] = max(peaks["disk"], disk_bytes())
            done.wait(0.02)

    import gc

    gc.collect()
    before = process.memory_info().rss
    high_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    history = xferclass.fit(
        model,
        synthetic(config["images"], config["batch"], 2),
        epochs=config["epochs"],
        verbose=0,
        cache_memory=budget,
        cache_dir=folder,
    )
    wall = time.perf_counter() - start
    done.set()
    sampler.join()
    high_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    shutil.rmtree(folder, ignore_errors=True)
    peak = high_after if high_after > high_before else peaks["rss"]
    return {
        "rss_before": before,
        "peak": peak,
        "peak_source": "maxrss" if high_after > high_before else "sampled",
        "sampled_peak": peaks["rss"],
        "growth": peak - before,
        "disk_peak": peaks["disk"],
        "wall": wall,
        "feature_bytes": config["images"] * features * 4,
        "loss": float(history.history["loss"][-1]),
    }


def run_child(config: dict) -> dict:
    """``child(config)`` in a fresh Python process."""
    result = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--child", json.dumps(config)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if result.returncode != 0 or not lines:
        raise RuntimeError(f"child failed ({result.returncode}):\n{result.stderr[-4000:]}")
    return json.loads(lines[-1])


# ------------------------------------------------------------------------------ parent


def main(argv: list[str] | None = None) -> dict[str, dict]:
    args = parse(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))), flush=True)
        return {}
    info = _bench.machine()
    base = {
        "images": args.images, "size": args.size, "features": args.features,
        "epochs": args.epochs, "batch": args.batch_size, "backbone": args.backbone,
        "warmup": min(args.images, 4 * args.batch_size),
    }  # fmt: skip
    budget = int(args.budget * MIB)
    results = {}
    for name, limit in (("spilled", budget), ("in memory", UNLIMITED)):
        print(f"{name}: cache_memory={limit:,} bytes ...", flush=True)
        results[name] = run_child({**base, "budget": limit})
        r = results[name]
        print(
            f"  RSS {r['rss_before'] / MIB:.0f} MiB -> peak {r['peak'] / MIB:.0f} MiB "
            f"(+{r['growth'] / MIB:.0f} MiB), spill file peak {r['disk_peak'] / MIB:.0f} MiB, "
            f"{r['wall']:.1f} s",
            flush=True,
        )
    info.finish()

    features = results["spilled"]["feature_bytes"]
    rows = []
    for name, limit in (("spilled", budget), ("in memory", UNLIMITED)):
        r = results[name]
        rows.append([
            f"`cache_memory={limit if limit != UNLIMITED else 'unlimited'}`"
            + (f" ({args.budget:g} MiB)" if limit == budget else ""),
            f"{r['rss_before'] / MIB:,.0f}", f"{r['peak'] / MIB:,.0f} ({r['peak_source']})",
            f"**{r['growth'] / MIB:,.0f}**", f"{r['disk_peak'] / MIB:,.0f}",
            _bench.fmt(r["wall"]),
        ])  # fmt: skip
    spilled, memory = results["spilled"]["growth"], results["in memory"]["growth"]
    headers = [
        "run",
        "RSS before fit MiB",
        "peak RSS during fit MiB",
        "growth MiB",
        "spill file peak MiB",
        "fit wall s",
    ]
    body = f"""
Data: {args.images:,} synthetic {args.size}x{args.size} images (seeded
`tf.random.stateless_uniform`, made batch by batch in a `tf.data` pipeline, batches of
{args.batch_size}), 10 classes. Model: `build_classifier` on a tiny registered backbone (three
strided 3x3 convolutions, then a 1x1 convolution to {args.features} channels), so the cached
features are {args.images:,} x {args.features} float32 = **{features / MIB:,.0f} MiB**.
`xferclass.fit(..., epochs={args.epochs})`; each run in its own process, after a warm-up fit of
{base["warmup"]} images.

{_bench.table(headers, rows)}

With a budget of {args.budget:g} MiB the RSS grows by {spilled / MIB:,.0f} MiB while the
features go to a spill file of {results["spilled"]["disk_peak"] / MIB:,.0f} MiB: the budget, the
batches in flight (with their activations before pooling) and what TensorFlow's runtime and the
C allocator keep, which varies by tens of MiB from run to run and with the load, but not the
features. Kept in memory, the
RSS grows by {memory / MIB:,.0f} MiB = {memory / features:.1f}x the feature bytes: the features
themselves, kept as the per-batch chunks they were computed in, plus what TensorFlow's runtime and
the allocator add while training. (`tests/training/test_cache_memory.py` checks the same bound
without RSS noise, counting the bytes the process allocates with `tracemalloc`.)
"""
    _bench.section(
        "bench_cache_memory",
        "Feature-cache memory: spilled vs in memory",
        info,
        body,
        write=not args.no_docs,
    )
    return results


if __name__ == "__main__":
    main()
