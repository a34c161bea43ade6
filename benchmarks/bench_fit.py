"""``xferclass.fit`` (frozen-feature cache) against plain Keras ``model.fit``.

Both train the same frozen classifier (same initial weights, same optimizer and
learning rate) on the same batches for ``--epochs`` epochs with validation after
every epoch. Plain ``model.fit`` runs the frozen backbone over every training
and validation image every epoch; ``xferclass.fit`` runs it once per split and
trains the head on the cached pooled features. Reported: wall and CPU time of
each, the caching pass and the mean epoch time, the ratio of wall times (target:
plain takes at least 5x longer), and both final validation accuracies, which
should be equal when the data is not shuffled (``--shuffle`` shuffles both, and
then they differ a little: the batches differ).

To keep plain fit's epochs affordable on a CPU, the training set is a
stratified subset of the clothing train split (``--images``, default 600); the
validation split is used whole (``--val-images 0``).

Run::

    python benchmarks/bench_fit.py                      # 600 images, 224 px, 10 epochs
    python benchmarks/bench_fit.py --images 200 --size 160 --epochs 3 --no-docs  # quick
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
    parser.add_argument("--images", type=int, default=600, help="training images (0: all)")
    parser.add_argument("--val-images", type=int, default=0, help="validation images (0: all)")
    parser.add_argument("--size", type=int, default=224, help="image side in pixels")
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--shuffle", action="store_true", help="shuffle the training data")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-docs", action="store_true", help="do not update docs/benchmarks.md")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, float]:
    args = parse(argv)
    info = _bench.machine()
    train_folder = _bench.image_folder("train", args.images)
    val_folder = _bench.image_folder("validation", args.val_images)
    try:
        train, val = _bench.load_splits(
            train_folder, val_folder, args.size, batch_size=args.batch_size,
            shuffle=args.shuffle, seed=args.seed,
        )  # fmt: skip
        n_train, n_val = len(train.file_paths), len(val.file_paths)

        keras.utils.set_random_seed(args.seed)
        classes = len(train.class_names)
        ours = xferclass.build_classifier(args.backbone, num_classes=classes, input_size=args.size)
        plain = xferclass.build_classifier(args.backbone, num_classes=classes, input_size=args.size)
        initial = ours.get_weights()
        plain.set_weights(initial)

        print(f"xferclass.fit: {args.epochs} epochs ...", flush=True)
        ours_timer = _bench.epoch_timer()
        with _bench.Stopwatch() as ours_time:
            ours_history = xferclass.fit(
                ours, train, val, epochs=args.epochs, learning_rate=args.learning_rate,
                verbose=0, seed=args.seed, callbacks=[ours_timer],
                # Like for like: the cached rows in the dataset's order unless --shuffle,
                # and the last epoch's weights, as plain model.fit ends with.
                shuffle=args.shuffle, restore_best=False,
            )  # fmt: skip
        print(f"  {ours_time.wall:.1f} s", flush=True)

        print(f"plain model.fit: {args.epochs} epochs ...", flush=True)
        plain.compile(
            optimizer=keras.optimizers.Adam(learning_rate=args.learning_rate),
            loss="categorical_crossentropy",
            metrics=["accuracy"],
        )
        plain_timer = _bench.epoch_timer()
        with _bench.Stopwatch() as plain_time:
            plain_history = plain.fit(
                train, validation_data=val, epochs=args.epochs, shuffle=False, verbose=0,
                callbacks=[plain_timer],
            )  # fmt: skip
        print(f"  {plain_time.wall:.1f} s", flush=True)
        info.finish()
    finally:
        train_folder.close()
        val_folder.close()

    ratio = plain_time.wall / ours_time.wall
    cpu_ratio = plain_time.cpu / ours_time.cpu
    ours_acc = ours_history.history["val_accuracy"][-1]
    plain_acc = plain_history.history["val_accuracy"][-1]
    ours_loss = ours_history.history["val_loss"][-1]
    plain_loss = plain_history.history["val_loss"][-1]
    weight_gap = max(
        float(np.abs(a - b).max()) for a, b in zip(ours.get_weights(), plain.get_weights())
    )
    moved = max(float(np.abs(a - b).max()) for a, b in zip(ours.get_weights(), initial))
    ours_epochs = ours_timer.epoch_seconds()
    plain_epochs = plain_timer.epoch_seconds()
    caching = ours_time.wall - sum(ours_epochs)
    forward_passes = (n_train + n_val) * args.epochs
    rows = [
        [
            "plain `model.fit`", _bench.fmt(plain_time.wall), _bench.fmt(plain_time.cpu), "—",
            _bench.fmt(np.mean(plain_epochs), 2), f"{forward_passes:,}", f"{plain_acc:.4f}",
            f"{plain_loss:.4f}",
        ],
        [
            "`xferclass.fit`", _bench.fmt(ours_time.wall), _bench.fmt(ours_time.cpu),
            _bench.fmt(caching), _bench.fmt(np.mean(ours_epochs), 2), f"{n_train + n_val:,}",
            f"{ours_acc:.4f}", f"{ours_loss:.4f}",
        ],
    ]  # fmt: skip
    headers = [
        "", "wall s", "CPU s", "caching pass s", "mean epoch s", "backbone forward passes",
        "final val accuracy", "final val loss",
    ]  # fmt: skip
    shuffled = f"shuffled (seed {args.seed})" if args.shuffle else "not shuffled"
    same = (
        "equal"
        if abs(ours_acc - plain_acc) < 1e-9
        else f"differ by {abs(ours_acc - plain_acc):.4f}"
    )
    order = ""
    if args.shuffle:
        order = (
            "The training data is shuffled: plain `model.fit` gets a new order from the dataset "
            "every epoch, while `xferclass.fit` caches the features in one order and shuffles "
            "the cached rows every epoch with its own seed, so the two see different batches. "
        )
    body = f"""
Data: {train_folder.source} for training ({n_train} images), {val_folder.source} for
validation ({n_val} images), {args.size}x{args.size} px, batches of {args.batch_size},
training data {shuffled}. Model: `build_classifier("{args.backbone}", num_classes={classes})`
(ImageNet weights, frozen backbone), Adam at {args.learning_rate:g}, {args.epochs} epochs, both
from the same initial weights.

{_bench.table(headers, rows)}

**Wall-time ratio plain / xferclass: {ratio:.2f}x** (target: at least 5x). Process CPU-time
ratio: {cpu_ratio:.2f}x (less sensitive to the other load on a shared machine).

{order}Final validation accuracies {same} ({ours_acc:.4f} vs {plain_acc:.4f}); largest difference
between the two trained models' weights: {weight_gap:.2e} (the largest change of a weight
during training: {moved:.2e}). "Caching pass" is the time before
the first epoch of the head's training (building the extractor, one backbone pass over the
train and validation images); the epochs of `xferclass.fit` train a dense head on cached
1280-d features and take a fraction of a second. Plain `model.fit` decodes and runs the frozen
backbone over all {n_train + n_val} images in every epoch, so its cost grows with the epoch
count while xferclass's stays at about one pass: the ratio approaches the number of epochs as
the head's own cost vanishes.
"""
    name, title = "bench_fit", "Training: `xferclass.fit` vs plain `model.fit`"
    if args.shuffle:  # its own section, next to the unshuffled one
        name, title = "bench_fit_shuffle", title + ", shuffled training data"
    _bench.section(name, title, info, body, write=not args.no_docs)
    return {
        "ratio": ratio,
        "cpu_ratio": cpu_ratio,
        "ours_val_accuracy": ours_acc,
        "plain_val_accuracy": plain_acc,
    }


if __name__ == "__main__":
    main()
