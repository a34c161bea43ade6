"""``xferclass.fine_tune`` phase 2: cut-point cache against plain Keras fine-tuning.

Both fine-tune the same layers of the same classifier (same initial weights)
from ``--unfreeze`` on (a layer name, a fraction like ``0.1`` or a layer count)
for ``--epochs`` epochs, with validation after every epoch, and no head phase
(``head_epochs=0``), so that only phase 2 is compared:

- cached: ``fine_tune(...)`` runs the frozen layers below the cut once per
  split (the caching pass) and trains the unfrozen top of the backbone and the
  head on the activations at the cut;
- plain: ``fine_tune(..., cache=False)`` trains through the whole network
  every epoch, as plain Keras fine-tuning does.

Reported: total wall time (including the caching pass), the caching pass, the
mean epoch time, the ratios, and each final validation accuracy (equal up to
floating-point noise when the data is not shuffled).

Run::

    python benchmarks/bench_finetune.py                 # 400 images, 224 px, 3 epochs
    python benchmarks/bench_finetune.py --images 100 --size 160 --epochs 2 --no-docs   # quick
"""

from __future__ import annotations

import argparse

import _bench

_bench.quiet_tensorflow()

import keras  # noqa: E402
import numpy as np  # noqa: E402

import xferclass  # noqa: E402


def unfreeze_argument(text: str) -> int | float | str:
    """``"12"`` -> 12 layers, ``"0.1"`` -> a fraction, anything else a layer name."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=400, help="training images (0: all)")
    parser.add_argument("--val-images", type=int, default=0, help="validation images (0: all)")
    parser.add_argument("--size", type=int, default=224, help="image side in pixels")
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument(
        "--unfreeze",
        type=unfreeze_argument,
        default="block14_expand_conv",
        help="first unfrozen layer's name, a fraction or a layer count",
    )
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=1e-4)
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
        cached = xferclass.build_classifier(
            args.backbone, num_classes=classes, input_size=args.size
        )
        plain = xferclass.build_classifier(args.backbone, num_classes=classes, input_size=args.size)
        initial = cached.get_weights()
        plain.set_weights(initial)
        common = dict(
            head_epochs=0, epochs=args.epochs, unfreeze=args.unfreeze,
            learning_rate=args.learning_rate, verbose=0, seed=args.seed,
            # Like for like: the cached rows in the dataset's order unless --shuffle,
            # and the last epoch's weights, as plain Keras fine-tuning ends with.
            shuffle=args.shuffle, restore_best=False,
        )  # fmt: skip

        runs = {}
        for name, model, cache in (("cached", cached, "auto"), ("plain", plain, False)):
            print(f"fine_tune(cache={cache!r}): {args.epochs} epochs ...", flush=True)
            timer = _bench.epoch_timer()
            with _bench.Stopwatch() as watch:
                history = xferclass.fine_tune(
                    model, train, val, cache=cache, callbacks=[timer], **common
                )
            runs[name] = (watch, timer.epoch_seconds(), history.history)
            print(f"  {watch.wall:.1f} s", flush=True)
        backbone = xferclass.models.split_classifier(cached).backbone
        trainable = sum(int(np.prod(w.shape)) for w in backbone.trainable_weights)
        info.finish()
    finally:
        train_folder.close()
        val_folder.close()

    rows = []
    for name, label in (
        ("plain", "plain: `fine_tune(..., cache=False)`"),
        ("cached", "cut-point cache: `fine_tune(...)`"),
    ):
        watch, epochs, history = runs[name]
        before = watch.wall - sum(epochs)
        rows.append([
            label, _bench.fmt(watch.wall), _bench.fmt(watch.cpu), _bench.fmt(before),
            _bench.fmt(epochs[0], 2), _bench.fmt(float(np.mean(epochs[1:] or epochs)), 2),
            f"{history['val_accuracy'][-1]:.4f}",
            f"{history['val_loss'][-1]:.4f}",
        ])  # fmt: skip
    plain_total, cached_total = runs["plain"][0].wall, runs["cached"][0].wall
    plain_epoch, cached_epoch = (np.mean(runs[k][1][1:] or runs[k][1]) for k in ("plain", "cached"))
    total_ratio = plain_total / cached_total
    epoch_ratio = plain_epoch / cached_epoch
    gap = max(float(np.abs(a - b).max()) for a, b in zip(cached.get_weights(), plain.get_weights()))
    moved = max(float(np.abs(a - b).max()) for a, b in zip(cached.get_weights(), initial))
    acc_plain = runs["plain"][2]["val_accuracy"][-1]
    acc_cached = runs["cached"][2]["val_accuracy"][-1]
    shuffled = f"shuffled (seed {args.seed})" if args.shuffle else "not shuffled"
    headers = [
        "",
        "total wall s",
        "CPU s",
        "before epoch 1 s",
        "epoch 1 s",
        "later epochs, mean s",
        "final val accuracy",
        "final val loss",
    ]
    body = f"""
Data: {train_folder.source} for training ({n_train} images), {val_folder.source} for
validation ({n_val} images), {args.size}x{args.size} px, batches of {args.batch_size},
training data {shuffled}. Model: `build_classifier("{args.backbone}", num_classes={classes})`
(ImageNet weights), both from the same initial weights; `unfreeze={args.unfreeze!r}`
({trainable:,} trainable backbone weights; BatchNorm stays frozen), `head_epochs=0`,
{args.epochs} epochs of phase 2 at learning rate {args.learning_rate:g}.

{_bench.table(headers, rows)}

**Per epoch (after the first, which also traces the training step): {epoch_ratio:.1f}x
less wall time with the cut-point cache; in total, including
its caching pass: {total_ratio:.2f}x.**

Final validation accuracies: {acc_cached:.4f} (cached) and {acc_plain:.4f} (plain); largest
difference between the two fine-tuned models' weights: {gap:.2e} (the largest change of a
weight during the fine-tuning: {moved:.2e}). "Before epoch 1" is, for
the cached run, the pass of the frozen layers below the cut over the training and
validation images; for the plain run, compiling and building the training step. A cached epoch
runs only the unfrozen top of the backbone (forward and backward) and the head on the stored
activations; a plain epoch also decodes every image and runs the frozen bottom of the network
forward, for the training and the validation images alike, every epoch. The longer the
fine-tuning, the closer the total ratio gets to the per-epoch one.
"""
    _bench.section(
        "bench_finetune",
        "Fine-tuning: cut-point cache vs plain (`cache=False`)",
        info,
        body,
        write=not args.no_docs,
    )
    return {
        "epoch_ratio": epoch_ratio,
        "total_ratio": total_ratio,
        "cached_val_accuracy": acc_cached,
        "plain_val_accuracy": acc_plain,
    }


if __name__ == "__main__":
    main()
