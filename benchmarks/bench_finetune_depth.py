"""What fine-tuning deeper costs: the automatic recipe's two depths side by side.

For each backbone, ``fine_tune(..., cache="auto", head_epochs=0)`` trains the top
``--depths`` of the backbone's layers (fractions; the recipe's ladder measures 0.15,
0.3, 0.6 and 1.0) for ``--epochs`` epochs on the same images, from the same initial
weights, in one process, alternating the depths over ``--repeats`` rounds (the fastest
of each kept). Reported: total wall time (the caching pass at the cut included), the
mean epoch, each depth's ratio to the first, and the ratio of totals projected to 10
epochs (the total plus the mean epoch for each epoch more), from which
``xferclass.auto._finetune.DEPTH_COST`` plans a deeper run's time from a shallower one's.

Run::

    python benchmarks/bench_finetune_depth.py                       # Lite0 and Lite2
    python benchmarks/bench_finetune_depth.py --images 100 --epochs 2 --backbones efficientnet_lite0
"""

from __future__ import annotations

import argparse

import _bench

_bench.quiet_tensorflow()

import keras  # noqa: E402
import numpy as np  # noqa: E402

import xferclass  # noqa: E402


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", nargs="+",
                        default=["efficientnet_lite0", "efficientnet_lite2"])  # fmt: skip
    parser.add_argument("--depths", nargs="+", type=float, default=[0.15, 0.3, 0.6, 1.0])
    parser.add_argument("--images", type=int, default=400, help="training images")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> list[list[str]]:
    args = parse(argv)
    info = _bench.machine()
    folder = _bench.image_folder("train", args.images)
    rows = []
    try:
        for name in args.backbones:
            size = int(xferclass.get_backbone(name).default_size[0])
            train = xferclass.load_image_dataset(
                folder.path, (size, size), batch_size=args.batch_size, shuffle=False
            )
            keras.utils.set_random_seed(0)
            model = xferclass.build_classifier(name, num_classes=len(train.class_names),
                                               input_size=size)  # fmt: skip
            initial = model.get_weights()
            totals: dict[float, list[float]] = {d: [] for d in args.depths}
            epochs: dict[float, list[float]] = {d: [] for d in args.depths}
            for round_ in range(args.repeats):
                order = args.depths if round_ % 2 == 0 else args.depths[::-1]
                for depth in order:
                    model.set_weights(initial)
                    timer = _bench.epoch_timer()
                    with _bench.Stopwatch() as watch:
                        xferclass.fine_tune(model, train, head_epochs=0, epochs=args.epochs,
                                            unfreeze=depth, verbose=0, seed=0,
                                            callbacks=[timer], restore_best=False)  # fmt: skip
                    totals[depth].append(watch.wall)
                    epochs[depth].append(float(np.mean(timer.epoch_seconds())))
                    print(f"{name} {size} px, top {depth:.0%}: {watch.wall:.1f} s", flush=True)
            first = args.depths[0]
            ten = {d: min(totals[d]) + (10 - args.epochs) * min(epochs[d]) for d in args.depths}
            for depth in args.depths:
                total, epoch = min(totals[depth]), min(epochs[depth])
                rows.append([
                    name, f"{size}", f"{depth:.0%}", _bench.fmt(total), _bench.fmt(epoch, 2),
                    f"{total / min(totals[first]):.2f}x", f"{epoch / min(epochs[first]):.2f}x",
                    f"{ten[depth] / ten[first]:.2f}x",
                ])  # fmt: skip
        info.finish()
    finally:
        folder.close()
    headers = ["backbone", "px", "top", "total s", "epoch s", "total / first", "epoch / first",
               "10 epochs / first"]  # fmt: skip
    print(f"\n{len(train.file_paths)} images, {args.epochs} epochs, best of {args.repeats}\n")
    print(info.markdown() + "\n")
    print(_bench.table(headers, rows))
    return rows


if __name__ == "__main__":
    main()
