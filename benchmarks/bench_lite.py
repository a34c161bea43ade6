"""EfficientNet-Lite0, Lite1 and Lite2 on clothing: frozen-pass throughput and head accuracy.

For each variant at its native size (224, 240, 260 px) the script measures:

- the images/s of the frozen pass (the backbone and pooling that
  ``xferclass.fit`` runs once per image to cache features), on in-memory
  batches of validation images, in rounds that alternate the variants so that
  a change in the machine's load hits all of them alike; the best round counts;
- the validation accuracy of a head trained on the frozen features
  (``xferclass.fit``, same seed and settings for every variant), best and last
  epoch, and the wall time of that training (its caching pass included).

These are the figures an automatic recipe needs to trade accuracy against
time. Besides its section of ``docs/benchmarks.md``, the script writes them as
JSON to ``benchmarks/results/bench_lite.json``.

Run::

    python benchmarks/bench_lite.py                                  # full clothing, 8 epochs
    python benchmarks/bench_lite.py --images 300 --epochs 2 --no-docs  # quick look
"""

from __future__ import annotations

import argparse
import json

import _bench

_bench.quiet_tensorflow()

import keras  # noqa: E402
import numpy as np  # noqa: E402

import xferclass  # noqa: E402

VARIANTS = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
RESULTS = _bench.ROOT / "benchmarks" / "results" / "bench_lite.json"


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


def _throughput(args: argparse.Namespace, sizes: dict[str, int], files: list[str]) -> dict:
    """Best and mean images/s of each variant's frozen pass, rounds interleaved."""
    count = args.rate_batches * args.batch_size
    files = files[:count]
    rates: dict[str, list[float]] = {v: [] for v in VARIANTS}
    extractors = {v: _feature_extractor(v, sizes[v]) for v in VARIANTS}
    batches = {}
    for variant in VARIANTS:
        images = xferclass.read_images(files, sizes[variant])
        batches[variant] = [
            images[i : i + args.batch_size] for i in range(0, len(images), args.batch_size)
        ]
    for round_index in range(args.rounds):
        for variant in VARIANTS:
            best, _ = _bench.forward_rate(
                extractors[variant].predict_on_batch,
                batches[variant],
                warmup=2 if round_index == 0 else 0,
            )
            rates[variant].append(best)
            print(f"  round {round_index + 1} {variant}: {best:.1f} images/s", flush=True)
    return {v: (max(r), float(np.mean(r))) for v, r in rates.items()}


def main(argv: list[str] | None = None) -> dict:
    args = parse(argv)
    info = _bench.machine()
    sizes = {v: xferclass.get_backbone(v).default_size[0] for v in VARIANTS}
    train_folder = _bench.image_folder("train", args.images)
    val_folder = _bench.image_folder("validation", args.val_images)
    results: dict[str, dict] = {}
    try:
        print("frozen-pass throughput ...", flush=True)
        rates = _throughput(args, sizes, val_folder.files())
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
                "frozen_images_per_s": round(rates[variant][0], 2),
                "frozen_images_per_s_mean": round(rates[variant][1], 2),
                "head_epochs": args.epochs,
                "val_accuracy_best": round(float(max(accuracies)), 4),
                "val_accuracy_best_epoch": int(np.argmax(accuracies)) + 1,
                "val_accuracy_last": round(float(accuracies[-1]), 4),
                "fit_wall_s": round(clock.wall, 1),
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
            _bench.fmt(r["frozen_images_per_s"]),
            f"{r['frozen_images_per_s'] / base['frozen_images_per_s']:.2f}x",
            f"{r['val_accuracy_best']:.4f} (epoch {r['val_accuracy_best_epoch']})",
            f"{r['val_accuracy_last']:.4f}", _bench.fmt(r["fit_wall_s"]),
        ])  # fmt: skip
    headers = [
        "backbone", "px", "params", "frozen pass images/s", "vs Lite0",
        f"val accuracy, best of {args.epochs} epochs", "last epoch", "fit wall s",
    ]  # fmt: skip
    n_train, n_val = base["train_images"], base["val_images"]
    body = f"""
Data: {train_folder.source} ({n_train} images) for training, {val_folder.source}
({n_val} images) for validation. Each variant at its native size, ImageNet weights, frozen
backbone, `build_classifier` defaults (128-unit head), `xferclass.fit` for {args.epochs} epochs,
Adam at {args.learning_rate:g}, batches of {args.batch_size}, seed {args.seed}, no augmentation.
Throughput: the frozen pass (preprocessing, backbone, pooling) on {args.rate_batches} in-memory
batches of {args.batch_size} validation images, best of {args.rounds} rounds that alternate the
variants. "fit wall s" includes the caching pass over train and validation.

{_bench.table(headers, rows)}

The same figures are in `benchmarks/results/bench_lite.json`. Accuracies are of one seed on
one split; on the 341 clothing validation images a seed moves them by about one point.
"""
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    payload = {"command": info.command, "date": f"{info.started:%Y-%m-%d}", "results": results}
    if not args.no_docs:
        RESULTS.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    _bench.section(
        "bench_lite",
        "EfficientNet-Lite0/1/2: frozen-pass throughput and head accuracy",
        info,
        body,
        write=not args.no_docs,
    )
    return results


if __name__ == "__main__":
    main()
