"""Is the input pipeline fast enough to keep the backbone busy?

Measures, in one process and alternating (``--repeats`` rounds, best of each):

- the data pipeline alone: images/s of iterating ``load_image_dataset(...)``
  over the clothing train split (read, decode, EXIF orientation, resize to
  ``--size``, batch), no model; a few batches of warm-up first;
- the frozen backbone alone: images/s of ``predict_on_batch`` of the feature
  extractor that ``xferclass.fit`` runs (preprocessing, backbone, pooling) on
  batches of ``--batch-size`` already in memory, after a warm-up.

The ratio pipeline / backbone should be at least 3: the pipeline then never
starves the backbone, even with the cores shared between the two.

Run::

    python benchmarks/bench_pipeline.py                       # whole train split, 224 px
    python benchmarks/bench_pipeline.py --images 320 --size 160 --no-docs   # quick
"""

from __future__ import annotations

import argparse
import time

import _bench

_bench.quiet_tensorflow()

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

import xferclass  # noqa: E402
from xferclass.data import load_image_dataset  # noqa: E402
from xferclass.models import POOL  # noqa: E402


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=0, help="train images to read (0: all)")
    parser.add_argument("--size", type=int, default=224, help="image side in pixels")
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--forward-batches", type=int, default=10, help="batches per timed backbone pass"
    )
    parser.add_argument("--warmup-batches", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2, help="alternating rounds, best kept")
    parser.add_argument("--no-docs", action="store_true", help="do not update docs/benchmarks.md")
    return parser.parse_args(argv)


def extractor(backbone: str, size: int) -> keras.Model:
    """What ``xferclass.fit`` runs once per image: preprocessing, backbone, pooling."""
    model = xferclass.build_classifier(backbone, num_classes=10, input_size=size)
    return keras.Model(model.input, model.get_layer(POOL).output)


def pipeline_pass(dataset: tf.data.Dataset, warmup: int) -> tuple[float, int]:
    """Images/s of one full pass over ``dataset`` after ``warmup`` batches of another."""
    for step, _ in enumerate(dataset):
        if step + 1 >= warmup:
            break
    count = 0
    start = time.perf_counter()
    for images, _labels in dataset:
        count += int(images.shape[0])
    return count / (time.perf_counter() - start), count


def main(argv: list[str] | None = None) -> dict[str, float]:
    args = parse(argv)
    info = _bench.machine()
    folder = _bench.image_folder("train", args.images)
    try:
        start = time.perf_counter()
        dataset = load_image_dataset(
            folder.path, args.size, batch_size=args.batch_size, shuffle=False
        )
        check_seconds = time.perf_counter() - start
        n = len(dataset.file_paths)
        print(f"{folder.source}: load_image_dataset checked {n} files in {check_seconds:.1f} s")
        batches = [images for images, _ in dataset.take(args.forward_batches)]
        model = extractor(args.backbone, args.size)
        pipeline_rates, forward_rates = [], []
        for round_ in range(1, args.repeats + 1):
            rate, count = pipeline_pass(dataset, args.warmup_batches)
            pipeline_rates.append(rate)
            print(f"round {round_}: pipeline {rate:.1f} images/s over {count} images", flush=True)
            best, _ = _bench.forward_rate(
                model.predict_on_batch, batches, warmup=args.warmup_batches
            )
            forward_rates.append(best)
            print(f"round {round_}: backbone {best:.1f} images/s", flush=True)
        info.finish()
    finally:
        folder.close()

    pipeline, forward = max(pipeline_rates), max(forward_rates)
    ratio = pipeline / forward
    forward_images = sum(int(b.shape[0]) for b in batches)
    rows = [
        ["data pipeline alone (`load_image_dataset`, decode + resize)", _bench.fmt(pipeline),
         ", ".join(_bench.fmt(r) for r in pipeline_rates), f"{n} per pass"],
        [f"frozen {args.backbone} forward (`predict_on_batch`, batch {args.batch_size})",
         _bench.fmt(forward), ", ".join(_bench.fmt(r) for r in forward_rates),
         f"{forward_images} per pass"],
    ]  # fmt: skip
    body = f"""
Data: {folder.source}, {args.size}x{args.size} px, batches of {args.batch_size}, not shuffled.
`load_image_dataset` checked (decoded once) the {n} files in {check_seconds:.1f} s before the
pipeline was built; that one-time check is not part of the rate. Each round times one full
pass of the pipeline (after {args.warmup_batches} warm-up batches) and then the backbone on
{len(batches)} batches already in memory (after {args.warmup_batches} warm-up batches); the best
of {args.repeats} rounds is kept.

{_bench.table(["", "best images/s", "each round", "images"], rows)}

**Pipeline / backbone throughput: {ratio:.2f}x** (target: at least 3x).

Both measurements use all the cores. With a ratio of 3, decoding and resizing a batch takes
a third of the time the backbone takes on it, so the prefetching pipeline keeps up even when
it has to share the cores with the model (the caching pass of `xferclass.fit` and plain
`model.fit` run both at once).
"""
    _bench.section(
        "bench_pipeline",
        "Input pipeline vs backbone throughput",
        info,
        body,
        write=not args.no_docs,
    )
    return {"pipeline": pipeline, "forward": forward, "ratio": ratio}


if __name__ == "__main__":
    main()
