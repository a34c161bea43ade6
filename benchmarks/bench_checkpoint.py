"""The cost of ``checkpoint=`` against a head-phase epoch of ``xferclass.fit``.

Two runs of ``xferclass.fit`` on the same cached features, one without and one
with ``checkpoint=``, side by side in one process. The checkpointing run also
times its two kinds of writes: the small resume state after every epoch (head
weights and optimizer variables, one ``.npz``) and the whole ``.keras`` model,
written only when the validation accuracy improves. Reported: the mean epoch
time of each run, the seconds spent writing, and the overhead as a share of
the epoch time without checkpoints. The target (at most 10% of an epoch) is for
the per-epoch cost, the resume state; the whole model is written only on
improvements, no more often than keeps those writes within 10% of the training time.

Run::

    python benchmarks/bench_checkpoint.py                  # all clothing images, 224 px
    python benchmarks/bench_checkpoint.py --images 600 --epochs 5 --no-docs  # quick
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import _bench

_bench.quiet_tensorflow()

import keras  # noqa: E402
import numpy as np  # noqa: E402

import xferclass  # noqa: E402
from xferclass.training import _engine  # noqa: E402


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=0, help="training images (0: all)")
    parser.add_argument("--size", type=int, default=224, help="image side in pixels")
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-docs", action="store_true", help="do not update docs/benchmarks.md")
    return parser.parse_args(argv)


class Timed:
    """Wraps a function of ``_engine`` and adds up the seconds spent in it."""

    def __init__(self, name: str) -> None:
        self.name, self.real = name, getattr(_engine, name)
        self.seconds: list[float] = []

    def __call__(self, *args: object) -> None:
        start = time.perf_counter()
        self.real(*args)
        self.seconds.append(time.perf_counter() - start)

    def __enter__(self) -> Timed:
        setattr(_engine, self.name, self)
        return self

    def __exit__(self, *exc: object) -> None:
        setattr(_engine, self.name, self.real)


def run(model: keras.Model, train: object, val: object, args: argparse.Namespace, **extra: object):
    timer = _bench.epoch_timer()
    xferclass.fit(
        model, train, val, epochs=args.epochs, seed=args.seed, verbose=0, callbacks=[timer],
        **extra,
    )  # fmt: skip
    return timer.epoch_seconds()


def main(argv: list[str] | None = None) -> dict[str, float]:
    args = parse(argv)
    info = _bench.machine()
    train_folder = _bench.image_folder("train", args.images)
    val_folder = _bench.image_folder("validation", 0)
    try:
        train, val = _bench.load_splits(
            train_folder, val_folder, args.size, batch_size=args.batch_size, shuffle=True,
            seed=args.seed,
        )  # fmt: skip
        n_train = len(train.file_paths)
        keras.utils.set_random_seed(args.seed)
        classes = len(train.class_names)
        model = xferclass.build_classifier(args.backbone, num_classes=classes, input_size=args.size)
        initial = model.get_weights()
        print("without checkpoint ...", flush=True)
        plain_epochs = run(model, train, val, args)
        model.set_weights(initial)
        print("with checkpoint ...", flush=True)
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "best.keras"
            with Timed("save_model") as saves, Timed("write_resume_state") as states:
                ckpt_epochs = run(model, train, val, args, checkpoint=path)
            model_bytes = path.stat().st_size
            state_bytes = path.with_suffix(".resume.npz").stat().st_size
        info.finish()
    finally:
        train_folder.close()
        val_folder.close()

    # The first epoch of each run includes tracing the training step; compare the rest.
    epoch = float(np.mean(plain_epochs[1:]))
    written = sum(saves.seconds) + sum(states.seconds)
    overhead = written / (epoch * args.epochs)
    state_share = float(np.mean(states.seconds)) / epoch
    side_by_side = float(np.mean(ckpt_epochs[1:])) / epoch - 1
    rows = [
        ["mean head epoch, no checkpoint", _bench.fmt(epoch, 3)],
        ["mean head epoch, checkpoint=", _bench.fmt(float(np.mean(ckpt_epochs[1:])), 3)],
        [
            f"resume state ({state_bytes / 1e6:.2f} MB), per epoch",
            _bench.fmt(float(np.mean(states.seconds)), 4),
        ],
        [
            f"best `.keras` ({model_bytes / 1e6:.1f} MB), {len(saves.seconds)} writes in "
            f"{args.epochs} epochs",
            _bench.fmt(float(np.mean(saves.seconds)), 3) + " each",
        ],
    ]
    body = f"""
Data: {train_folder.source} for training ({n_train} images), {val_folder.source} for
validation, {args.size}x{args.size} px, batches of {args.batch_size}, {args.epochs} epochs of
the head on cached features (`build_classifier("{args.backbone}")`, frozen backbone).

{_bench.table(["", "seconds"], rows)}

**Per-epoch checkpoint cost (the resume state): {state_share:.1%} of a head-phase
epoch** (target: at most 10%). The whole `.keras` model is written at an improvement of
the validation accuracy only when the training time since its last write is at least ten
times what that write took (so in-run writes stay within 10% of the training time), and
once at the end when a better epoch is still waiting in memory: {len(saves.seconds)}
writes in {args.epochs} epochs here. One such write costs
{float(np.mean(saves.seconds)) / epoch:.1f} epochs, most of it Keras's own `model.save` of
the whole network, frozen backbone included. Over this short run, all writes together
(the final one included) add {overhead:.1%} to the epochs' time, and side by side the
mean epoch (first excluded: tracing) is {side_by_side:+.1%} longer with `checkpoint=`.
Without `checkpoint=`, the best epoch's weights are still kept in memory and restored
(`restore_best=True`) at no file cost: save the model once at the end.
"""
    title = "Checkpoints: `fit(checkpoint=...)` against a head-phase epoch"
    _bench.section("bench_checkpoint", title, info, body, write=not args.no_docs)
    return {"overhead": overhead, "state_share": state_share, "side_by_side": side_by_side}


if __name__ == "__main__":
    main()
