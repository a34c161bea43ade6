"""What test-time augmentation adds: validation accuracy and time, without and with TTA.

Trains one classifier (default: ``efficientnet_lite0`` at 224 px, frozen
ImageNet backbone, ``--epochs`` head epochs with ``xferclass.fit``) on the
clothing train split, then scores the validation split three times with the
same model: ``tta=False`` (one pass per image), ``tta="flip"`` (the image and
its mirror) and ``tta="crops"`` (those two and five 87.5% crops). Reported per
mode: accuracy, MSE, wall time of the scoring (decoding included) and its ratio
to the plain pass. All modes score the same images with the same weights, so
the differences are TTA's alone.

Run::

    python benchmarks/bench_tta.py                          # full clothing, 8 head epochs
    python benchmarks/bench_tta.py --images 300 --epochs 2 --no-docs   # quick look
"""

from __future__ import annotations

import argparse

import _bench

_bench.quiet_tensorflow()

import keras  # noqa: E402

import xferclass  # noqa: E402
from xferclass.metrics import collect_predictions, regression_metrics  # noqa: E402

MODES = (("none", False), ("flip", "flip"), ("crops", "crops"))


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=0, help="training images (0: all)")
    parser.add_argument("--val-images", type=int, default=0, help="validation images (0: all)")
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--size", type=int, default=0, help="image side (0: the backbone's)")
    parser.add_argument("--epochs", type=int, default=8, help="head epochs")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-docs", action="store_true", help="do not update docs/benchmarks.md")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    args = parse(argv)
    info = _bench.machine()
    size = args.size or xferclass.get_backbone(args.backbone).default_size[0]
    train_folder = _bench.image_folder("train", args.images)
    val_folder = _bench.image_folder("validation", args.val_images)
    results: dict[str, dict[str, float]] = {}
    try:
        train, val = _bench.load_splits(
            train_folder, val_folder, size, batch_size=args.batch_size, shuffle=True,
            seed=args.seed,
        )  # fmt: skip
        n_train, n_val = len(train.file_paths), len(val.file_paths)
        keras.utils.set_random_seed(args.seed)
        model = xferclass.build_classifier(
            args.backbone, num_classes=len(train.class_names), input_size=size
        )
        print(f"training the head: {args.epochs} epochs ...", flush=True)
        with _bench.Stopwatch() as train_time:
            xferclass.fit(
                model, train, val, epochs=args.epochs, learning_rate=args.learning_rate,
                verbose=0, seed=args.seed,
            )  # fmt: skip
        print(f"  {train_time.wall:.1f} s", flush=True)
        collect_predictions(model, val.take(1), tta="crops")  # warm-up: tracing, thread pools
        for name, tta in MODES:
            with _bench.Stopwatch() as clock:
                labels, probabilities = collect_predictions(model, val, tta=tta)
            metrics = regression_metrics(labels, probabilities)
            results[name] = {**metrics, "wall": clock.wall, "cpu": clock.cpu}
            print(f"  tta={name}: {results[name]}", flush=True)
        info.finish()
    finally:
        train_folder.close()
        val_folder.close()

    plain = results["none"]
    rows = []
    for name, tta in MODES:
        r = results[name]
        rows.append([
            f"`tta={tta!r}`", f"{r['accuracy']:.4f}", f"{r['accuracy'] - plain['accuracy']:+.4f}",
            f"{r['mse']:.4f}", _bench.fmt(r["cpu"]), f"{r['cpu'] / plain['cpu']:.2f}x",
            _bench.fmt(r["wall"]), f"{r['wall'] / plain['wall']:.2f}x",
        ])  # fmt: skip
    headers = [
        "scoring", "val accuracy", "vs no TTA", "val MSE", "CPU s", "CPU vs no TTA", "wall s",
        "wall vs no TTA",
    ]  # fmt: skip
    answers = {
        name: int(round((results[name]["accuracy"] - plain["accuracy"]) * n_val))
        for name in ("flip", "crops")
    }
    body = f"""
Data: {train_folder.source} ({n_train} images) for training, {val_folder.source}
({n_val} images) for validation, {size}x{size} px. Model: `build_classifier("{args.backbone}")`
(ImageNet weights, frozen backbone, 128-unit head), `xferclass.fit` for {args.epochs} epochs,
Adam at {args.learning_rate:g}, seed {args.seed}, no augmentation; training took
{train_time.wall:.0f} s. The same trained model then scores the validation split in each mode
(`evaluate_regression_style(model, val, tta=...)`; wall time includes decoding the images).

{_bench.table(headers, rows)}

Net change in correct validation answers: {answers["flip"]:+d} of {n_val} with the mirror,
{answers["crops"]:+d} with the mirror and crops. The views cost 2 and 7 forward passes per
image; each image is decoded once. CPU seconds are this process's (all threads); wall seconds
also follow the other jobs on a shared machine. One seed on one split of this size moves
accuracy by about a point.
"""
    _bench.section(
        "bench_tta", "Test-time augmentation: accuracy and cost", info, body,
        write=not args.no_docs,
    )  # fmt: skip
    return results


if __name__ == "__main__":
    main()
