"""EfficientNet-Lite0, Lite1 and Lite2 on clothing: frozen-pass throughput and head accuracy.

For each variant at its native size (224, 240, 260 px) the script measures:

- the multiply-adds per image of the frozen pass, counted from the layer
  shapes (``bench_flops.count_flops``);
- the images/s of the frozen pass (the backbone and pooling that
  ``xferclass.fit`` runs once per image to cache features), on in-memory
  batches of validation images, at the variant's native size and at 224 px
  (which tells the cost of the size from that of the architecture), in rounds
  that alternate the runs so that a change in the machine's load hits all of
  them alike; the best round counts;
- the validation accuracy of a head trained on the frozen features
  (``xferclass.fit``, same seed and settings for every variant), best and last
  epoch, and the wall time of that training (its caching pass included).

These are the figures an automatic recipe needs to trade accuracy against
time. The script records them, with its section of the docs, in
``benchmarks/results/bench_lite.json`` (each run's ``data``).

Run::

    python benchmarks/bench_lite.py                                  # full clothing, 8 epochs
    python benchmarks/bench_lite.py --images 300 --epochs 2 --no-docs  # quick look
"""

from __future__ import annotations

import argparse

import _bench

_bench.quiet_tensorflow()

import keras  # noqa: E402
import numpy as np  # noqa: E402
from bench_flops import count_flops  # noqa: E402

import xferclass  # noqa: E402

VARIANTS = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=0, help="training images (0: all)")
    parser.add_argument("--val-images", type=int, default=0, help="validation images (0: all)")
    parser.add_argument("--epochs", type=int, default=8, help="head epochs")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--rate-batches", type=int, default=4, help="batches per timing round")
    parser.add_argument("--rounds", type=int, default=3, help="timing rounds per variant")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-docs", action="store_true", help="do not update docs/benchmarks.md")
    return parser.parse_args(argv)


def _feature_extractor(variant: str, size: int) -> keras.Model:
    """The frozen pass that feature caching runs: preprocessing, backbone, pooling."""
    model = xferclass.build_classifier(variant, num_classes=2, input_size=size)
    return keras.Model(model.input, model.get_layer("pool").output)


def _throughput(args: argparse.Namespace, runs: list[tuple[str, int]], files: list[str]) -> dict:
    """GMACs per image, and images per wall second and per CPU second of each run.

    The runs (variant, size) alternate within each round; the best round counts.
    CPU seconds (of this process, all threads) depend less than wall seconds on
    the other jobs of a shared machine.
    """
    files = files[: args.rate_batches * args.batch_size]
    extractors = {run: _feature_extractor(*run) for run in runs}
    batches = {}
    for run in runs:
        images = xferclass.read_images(files, run[1])
        batches[run] = [
            images[i : i + args.batch_size] for i in range(0, len(images), args.batch_size)
        ]
        for batch in batches[run][:2]:  # warm-up: tracing, allocator, thread pools
            np.asarray(extractors[run].predict_on_batch(batch))
    wall: dict[tuple[str, int], list[float]] = {run: [] for run in runs}
    cpu: dict[tuple[str, int], list[float]] = {run: [] for run in runs}
    for round_index in range(args.rounds):
        for run in runs:
            with _bench.Stopwatch() as clock:
                for batch in batches[run]:
                    np.asarray(extractors[run].predict_on_batch(batch))
            count = len(files)
            wall[run].append(count / clock.wall)
            cpu[run].append(count / clock.cpu)
            print(
                f"  round {round_index + 1} {run[0]} at {run[1]} px: "
                f"{wall[run][-1]:.1f} images/s, {cpu[run][-1]:.1f} images per CPU-s",
                flush=True,
            )
    return {
        run: {
            "gmacs": count_flops(extractors[run])["macs"] / 1e9,
            "wall": max(wall[run]),
            "cpu": max(cpu[run]),
        }
        for run in runs
    }


def main(argv: list[str] | None = None) -> dict:
    args = parse(argv)
    info = _bench.machine()
    sizes = {v: xferclass.get_backbone(v).default_size[0] for v in VARIANTS}
    train_folder = _bench.image_folder("train", args.images)
    val_folder = _bench.image_folder("validation", args.val_images)
    results: dict[str, dict] = {}
    try:
        print("frozen-pass throughput ...", flush=True)
        runs = [(v, sizes[v]) for v in VARIANTS]
        runs += [(v, 224) for v in VARIANTS if sizes[v] != 224]
        rates = _throughput(args, runs, val_folder.files())
        for variant in VARIANTS:
            size = sizes[variant]
            train, val = _bench.load_splits(
                train_folder, val_folder, size, batch_size=args.batch_size, shuffle=True,
                seed=args.seed,
            )  # fmt: skip
            keras.utils.set_random_seed(args.seed)
            model = xferclass.build_classifier(
                variant, num_classes=len(train.class_names), input_size=size
            )
            print(f"{variant} at {size} px: {args.epochs} head epochs ...", flush=True)
            with _bench.Stopwatch() as clock:
                history = xferclass.fit(
                    model, train, val, epochs=args.epochs, learning_rate=args.learning_rate,
                    verbose=0, seed=args.seed,
                )  # fmt: skip
            accuracies = history.history["val_accuracy"]
            results[variant] = {
                "size": size,
                "params": int(model.count_params()),
                "frozen_gmacs": round(rates[(variant, size)]["gmacs"], 3),
                "frozen_images_per_s": round(rates[(variant, size)]["wall"], 2),
                "frozen_images_per_cpu_s": round(rates[(variant, size)]["cpu"], 2),
                "frozen_gmacs_at_224": round(rates[(variant, 224)]["gmacs"], 3),
                "frozen_images_per_s_at_224": round(rates[(variant, 224)]["wall"], 2),
                "frozen_images_per_cpu_s_at_224": round(rates[(variant, 224)]["cpu"], 2),
                "head_epochs": args.epochs,
                "val_accuracy_best": round(float(max(accuracies)), 4),
                "val_accuracy_best_epoch": int(np.argmax(accuracies)) + 1,
                "val_accuracy_last": round(float(accuracies[-1]), 4),
                "fit_wall_s": round(clock.wall, 1),
                "fit_cpu_s": round(clock.cpu, 1),
                "train_images": len(train.file_paths),
                "val_images": len(val.file_paths),
            }
            print(f"  {results[variant]}", flush=True)
        info.finish()
    finally:
        train_folder.close()
        val_folder.close()

    base = results[VARIANTS[0]]
    rows = []
    for variant in VARIANTS:
        r = results[variant]
        rows.append([
            f"`{variant}`", f"{r['size']}", f"{r['params'] / 1e6:.2f} M",
            f"{r['frozen_gmacs']:.2f}", _bench.fmt(r["frozen_images_per_cpu_s"]),
            f"{r['frozen_images_per_cpu_s'] / base['frozen_images_per_cpu_s']:.2f}x",
            f"{base['frozen_gmacs'] / r['frozen_gmacs']:.2f}x",
            _bench.fmt(r["frozen_images_per_s"]),
            _bench.fmt(r["frozen_images_per_cpu_s_at_224"]),
            f"{r['val_accuracy_best']:.4f} (epoch {r['val_accuracy_best_epoch']})",
            f"{r['val_accuracy_last']:.4f}", _bench.fmt(r["fit_wall_s"]),
            _bench.fmt(r["fit_cpu_s"]),
            f"{r['fit_cpu_s'] / base['fit_cpu_s']:.2f}x",
        ])  # fmt: skip
    headers = [
        "backbone", "px", "params", "GMACs/image", "frozen pass images/CPU-s", "vs Lite0",
        "Lite0 / its GMACs", "images/s (wall)", "images/CPU-s at 224 px",
        f"val accuracy, best of {args.epochs} epochs", "last epoch", "fit wall s", "fit CPU s",
        "fit CPU vs Lite0",
    ]  # fmt: skip
    n_train, n_val = base["train_images"], base["val_images"]
    body = f"""
Data: {train_folder.source} ({n_train} images) for training, {val_folder.source}
({n_val} images) for validation. Each variant at its native size, ImageNet weights, frozen
backbone, `build_classifier` defaults (128-unit head), `xferclass.fit` for {args.epochs} epochs,
Adam at {args.learning_rate:g}, batches of {args.batch_size}, seed {args.seed}, no augmentation.
Throughput: the frozen pass (preprocessing, backbone, pooling) on {args.rate_batches} in-memory
batches of {args.batch_size} validation images, best of {args.rounds} rounds that alternate the
runs, at the native size and at 224 px, in images per second of this process's CPU time (all
threads; on an idle 2-core machine the wall rate is up to about twice that) and of wall time
(which follows the other jobs on a shared machine). GMACs: multiply-adds per image of the
frozen pass at the native size, counted from the layer shapes; "Lite0 / its GMACs" is the
speed ratio that the arithmetic alone would predict. "fit wall s" and "fit CPU s" cover the
whole `xferclass.fit` call: the caching pass over the {n_train + n_val} train and validation
images (nearly all of it) and the {args.epochs} head epochs.

{_bench.table(headers, rows)}

The same figures are in `benchmarks/results/bench_lite.json`. Accuracies are of one seed on
one split; on the 341 clothing validation images a seed moves them by about one point.
"""
    _bench.section(  # the figures go to benchmarks/results/bench_lite.json as the run's data
        "bench_lite",
        "EfficientNet-Lite0/1/2: frozen-pass throughput and head accuracy",
        info,
        body,
        write=not args.no_docs,
        data=results,
    )
    return results


if __name__ == "__main__":
    main()
