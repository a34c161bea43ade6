"""``xferclass.predict(model, file_paths)`` against a plain Keras ``model.predict``.

Both classify the same image files with the same model:

- xferclass: ``xferclass.predict(model, paths, batch_size=...)`` (decoding,
  EXIF orientation and resizing by the training pipeline's function, then the
  model batch by batch, class names and probabilities out);
- plain: a ``tf.data`` pipeline of ``tf.io.read_file`` + ``tf.io.decode_jpeg``
  + ``tf.image.resize`` (parallel map, batched, prefetched) fed to
  ``model.predict``.

The files are read once beforehand (warm page cache) and each method is warmed
up on two batches; then both run in each of ``--repeats`` rounds, in alternating
order. The headline is the median of the per-round throughput ratios over
rounds 2 and up (repeat calls; on a shared machine a paired ratio is steadier
than the best of each), with the process CPU-time ratio beside it. Round 1
starts with xferclass's first call on the files (it checks each file once,
decoding it, before predicting; later calls reuse the check), reported apart.
Target: xferclass / plain >= 0.95. Also reported: how
often the two agree on the predicted class and the largest probability gap.

Run::

    python benchmarks/bench_predict.py                  # 640 clothing images, 224 px
    python benchmarks/bench_predict.py --images 128 --size 160 --no-docs    # quick
"""

from __future__ import annotations

import argparse

import _bench

_bench.quiet_tensorflow()

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import xferclass  # noqa: E402
import xferclass.data  # noqa: E402


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=640, help="clothing images (0: all)")
    parser.add_argument("--size", type=int, default=224, help="image side in pixels")
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5, help="rounds of both methods")
    parser.add_argument("--no-docs", action="store_true", help="do not update docs/benchmarks.md")
    return parser.parse_args(argv)


def plain_dataset(paths: list[str], size: int, batch_size: int) -> tf.data.Dataset:
    """The usual hand-written pipeline: read, decode, resize, batch, prefetch."""

    def load(path: tf.Tensor) -> tf.Tensor:
        image = tf.io.decode_jpeg(tf.io.read_file(path), channels=3)
        return tf.image.resize(image, (size, size))

    dataset = tf.data.Dataset.from_tensor_slices(paths)
    dataset = dataset.map(load, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def plain_predict(model: keras.Model, paths: list[str], size: int, batch_size: int) -> np.ndarray:
    return model.predict(plain_dataset(paths, size, batch_size), verbose=0)


def ours_predict(model: keras.Model, paths: list[str], batch_size: int) -> np.ndarray:
    return xferclass.predict(model, paths, batch_size=batch_size).probabilities


def main(argv: list[str] | None = None) -> dict[str, float]:
    args = parse(argv)
    info = _bench.machine()
    folder = _bench.image_folder("train", args.images)
    try:
        paths = folder.files()
        for path in paths:  # the page cache holds every file before the first timing
            with open(path, "rb") as handle:
                handle.read()
        keras.utils.set_random_seed(0)
        model = xferclass.build_classifier(args.backbone, num_classes=10, input_size=args.size)
        warm = paths[: 2 * args.batch_size]
        plain_predict(model, warm, args.size, args.batch_size)
        ours_predict(model, warm, args.batch_size)
        clear = getattr(xferclass.data, "_clear_check_cache", None)
        if callable(clear):  # round 1 starts with a first call: no file checked yet
            clear()
        runs: dict[str, list[tuple[float, float]]] = {"plain": [], "ours": []}
        outputs: dict[str, np.ndarray] = {}
        calls = {
            "plain": lambda: plain_predict(model, paths, args.size, args.batch_size),
            "ours": lambda: ours_predict(model, paths, args.batch_size),
        }
        for round_ in range(1, args.repeats + 1):
            # xferclass first in odd rounds, plain first in even ones: drift cancels out.
            for name in ("ours", "plain") if round_ % 2 else ("plain", "ours"):
                with _bench.Stopwatch() as watch:
                    outputs[name] = calls[name]()
                runs[name].append((watch.wall, watch.cpu))
            print(
                f"round {round_}: plain {len(paths) / runs['plain'][-1][0]:.1f} images/s, "
                f"xferclass {len(paths) / runs['ours'][-1][0]:.1f} images/s",
                flush=True,
            )
        info.finish()
    finally:
        folder.close()

    n = len(paths)
    later = slice(1, None) if args.repeats > 1 else slice(0, None)
    paired = [p[0] / o[0] for p, o in zip(runs["plain"][later], runs["ours"][later])]
    ratio = float(np.median(paired))
    cpu_ratio = sum(p[1] for p in runs["plain"][later]) / sum(o[1] for o in runs["ours"][later])
    first_ratio = runs["plain"][0][0] / runs["ours"][0][0]
    first_cpu_ratio = runs["plain"][0][1] / runs["ours"][0][1]
    plain_out, ours_out = outputs["plain"], outputs["ours"]
    agree = float(np.mean(np.argmax(plain_out, 1) == np.argmax(ours_out, 1)))
    gap = float(np.abs(plain_out - ours_out).max())

    def row(label: str, name: str) -> list[str]:
        rates = [n / wall for wall, _ in runs[name]]
        cpu = [1000 * c / n for _, c in runs[name][later]]
        return [
            label,
            ", ".join(_bench.fmt(r) for r in rates),
            _bench.fmt(float(np.median(rates[later]))),
            _bench.fmt(float(np.mean(cpu))),
        ]

    rows = [
        row("plain: `tf.io` decode + resize, `model.predict`", "plain"),
        row("`xferclass.predict(model, paths)`", "ours"),
    ]
    headers = ["", "images/s, rounds 1, 2, ...", "median, rounds 2+", "CPU ms / image, 2+"]
    body = f"""
Data: {folder.source} ({n} JPEG files), {args.size}x{args.size} px, batches of
{args.batch_size}. Model: `build_classifier("{args.backbone}", num_classes=10)` (ImageNet
backbone, untrained head: the speed does not depend on the head's weights). Files read once
before timing; each method warmed up on {len(warm)} images; then {args.repeats} rounds, each
running both methods over all the files, xferclass first in odd rounds and plain first in
even ones. Round 1 starts with `xferclass.predict`'s first call on these files (its cache of
checked files is cleared before it: the first call decodes every file once to check it);
rounds 2 and up are repeat calls.

{_bench.table(headers, rows)}

**xferclass / plain throughput: {ratio:.3f}** (median of the per-round ratios, rounds 2 and
up; target: at least 0.95); in process CPU time: {cpu_ratio:.3f}. First call (round 1):
{first_ratio:.3f} in wall time, {first_cpu_ratio:.3f} in CPU time.

The two agree on the predicted class for {agree:.1%} of the images; the largest difference in
a probability is {gap:.2e}: xferclass decodes JPEGs with the accurate integer DCT and applies
the EXIF orientation, as in training, which the plain pipeline does not. Nearly all the time
is the model's forward pass, which both run on the same batches; decoding runs in parallel
with it but shares the same cores, so a costlier decode shows up in the ratio.
"""
    _bench.section(
        "bench_predict",
        "Prediction: `xferclass.predict` vs plain `model.predict`",
        info,
        body,
        write=not args.no_docs,
    )
    return {"ratio": ratio, "cpu_ratio": cpu_ratio, "first_ratio": first_ratio}


if __name__ == "__main__":
    main()
