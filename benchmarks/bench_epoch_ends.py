"""Training epochs with tf.data's autotuning on and off, side by side in one process.

With autotuning on, an epoch over a tf.data pipeline ends only at the next waking of
the autotuning thread, whose sleep doubles from 10 ms (it wakes 0.31, 0.63, 1.27,
2.55, 5.11, 10.2, 20.5 ... s after the epoch's iterator was made). Two training loops
of xferclass are timed, each both ways, in interleaved rounds:

- ``heads``: the automatic recipe's stack of heads on cached features
  (``_headcv.train_stacked_heads``), fitted through Keras's own pipeline for arrays,
  ``fit(x, y, shuffle=True)`` (autotuning on: what xferclass did before), and through
  ``_headcv._epochs`` (autotuning off: what it does now);
- ``cached``: a fit over activations cached at a cut (``CachedSplit.dataset``, what
  ``fit`` and fine-tuning train on), as xferclass builds it (autotuning off) and with
  autotuning switched back on.

The features are random numbers of the shapes the recipe trains on, so only the
timing means anything. Reported: each round's seconds, the medians and their ratio.

Run::

    python benchmarks/bench_epoch_ends.py
    python benchmarks/bench_epoch_ends.py --rows 1797 --heads 15 --epochs 10 --rounds 3
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import _bench

_bench.quiet_tensorflow()

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from xferclass.evaluation import _headcv  # noqa: E402
from xferclass.training import _cache  # noqa: E402


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1797, help="images (digits has 1,797)")
    parser.add_argument("--views", type=int, default=2, help="training views (plain, mirror)")
    parser.add_argument("--dim", type=int, default=1280, help="feature width (Lite0: 1280)")
    parser.add_argument("--heads", type=int, default=15, help="3 class weightings x 5 folds")
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--cut-shape", type=int, nargs=3, default=[7, 7, 192],
                        help="activations at the cut, per image")  # fmt: skip
    parser.add_argument("--rounds", type=int, default=3)
    return parser.parse_args(argv)


def heads_seconds(args: argparse.Namespace, autotune: bool) -> float:
    """Seconds of one stack of heads' training, ``fit`` on arrays or on ``_epochs``."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.rows * args.views, args.dim)).astype(np.float32)
    labels = rng.integers(0, args.classes, args.rows * args.views)
    y = np.repeat(np.eye(args.classes, dtype=np.float32)[labels][:, None], args.heads, axis=1)
    keras.utils.set_random_seed(0)
    model = _headcv._stacked_model(args.heads, args.dim, 128, args.classes, 0)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=_headcv._stacked_loss)
    start = time.perf_counter()
    if autotune:
        model.fit(x, y, batch_size=32, epochs=args.epochs, shuffle=True, verbose=0)
    else:
        model.fit(_headcv._epochs(x, y, 32, 0), epochs=args.epochs, shuffle=False, verbose=0)
    return time.perf_counter() - start


def cached_seconds(args: argparse.Namespace, autotune: bool, folder: str) -> float:
    """Seconds of ``--epochs`` epochs of a small conv top over cached cut activations."""
    rng = np.random.default_rng(0)
    budget = _cache.Budget(2 * 1024**3)
    store = _cache.ActivationStore(args.cut_shape, np.float32, budget, folder)
    store.append(rng.normal(size=(args.rows, *args.cut_shape)).astype(np.float32))
    store.finish()
    labels = np.eye(args.classes, dtype=np.float32)[rng.integers(0, args.classes, args.rows)]
    split = _cache.CachedSplit([store], [labels], 32)
    dataset = split.dataset(shuffle=True, seed=0)
    if autotune:
        options = tf.data.Options()
        options.autotune.enabled = True
        dataset = dataset.with_options(options)
    assert dataset.options().autotune.enabled is autotune
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input(tuple(args.cut_shape)),
        keras.layers.Conv2D(320, 1, activation="relu"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(args.classes, activation="softmax"),
    ])  # fmt: skip
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    start = time.perf_counter()
    model.fit(dataset, epochs=args.epochs, shuffle=False, verbose=0)
    seconds = time.perf_counter() - start
    split.close()
    return seconds


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    print(_bench.machine())
    print(f"{args.rows} images x {args.views} views, {args.heads} heads of {args.dim} features, "
          f"{args.epochs} epochs; cut {tuple(args.cut_shape)}")  # fmt: skip
    times: dict[tuple[str, bool], list[float]] = {}
    with tempfile.TemporaryDirectory() as folder:
        for round_ in range(args.rounds):
            order = [False, True] if round_ % 2 == 0 else [True, False]
            for loop in ("heads", "cached"):
                for autotune in order:
                    if loop == "heads":
                        seconds = heads_seconds(args, autotune)
                    else:
                        seconds = cached_seconds(args, autotune, folder)
                    times.setdefault((loop, autotune), []).append(seconds)
                    print(f"round {round_ + 1}, {loop}, autotuning {'on' if autotune else 'off'}:"
                          f" {seconds:.2f} s", flush=True)  # fmt: skip
    print("\n| loop | autotuning on (s) | off (s) | on / off |\n|---|---|---|---|")
    for loop in ("heads", "cached"):
        on = statistics.median(times[(loop, True)])
        off = statistics.median(times[(loop, False)])
        rounds = ", ".join(f"{t:.2f}" for t in times[(loop, True)])
        rounds_off = ", ".join(f"{t:.2f}" for t in times[(loop, False)])
        print(f"| {loop} | {on:.2f} ({rounds}) | {off:.2f} ({rounds_off}) | {on / off:.2f}x |")


if __name__ == "__main__":
    main()
