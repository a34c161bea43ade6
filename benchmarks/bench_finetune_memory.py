"""Peak memory of the automatic recipe's fine-tuning with training views, by depth.

The recipe fine-tunes with the training views its frozen search chose: every image
in each of them, every epoch (``"rotations"``: five). Two ways of feeding them to
``xferclass.fine_tune`` are measured side by side, each configuration in its own
process, on ``--images`` random images for one epoch:

- ``stacked`` (the recipe before this benchmark): each batch of ``--batch-size``
  images becomes one batch of the images in every view, five times the size;
- ``per view`` (``xferclass.auto._finetune.with_training_views`` now): one batch per
  view, and Adam's ``gradient_accumulation_steps`` averaging the views' gradients
  before each update, which gives the stacked batch's update.

Reported: the process's peak RSS (``getrusage`` maxrss) after building the model and
after the epoch, and the epoch's wall time. Weights are random (``weights=None``):
memory does not depend on them.

Run::

    python benchmarks/bench_finetune_memory.py
    python benchmarks/bench_finetune_memory.py --depths 1.0 --sizes 224 --no-docs   # quick
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import _bench

GB = 1e9


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--sizes", nargs="+", type=int, default=[224, 288])
    parser.add_argument("--depths", nargs="+", type=float, default=[0.15, 0.6, 1.0])
    parser.add_argument("--images", type=int, default=192)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--views", default="rotations", help="a training-view choice")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--no-docs", action="store_true", help="do not update docs/")
    return parser.parse_args(argv)


def child(config: dict) -> dict:
    """One epoch of fine-tuning in this process; returns its figures."""
    import resource
    import time

    _bench.quiet_tensorflow()
    import keras
    import numpy as np
    import tensorflow as tf

    import xferclass
    from xferclass.auto import _finetune
    from xferclass.auto._search import VIEW_SETS
    from xferclass.evaluation._tta import view

    size, n, batch = config["size"], config["images"], config["batch"]
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (n, size, size, 3)).astype("float32")
    y = keras.utils.to_categorical(np.arange(n) % 4, 4)
    images = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch)
    views = VIEW_SETS[config["views"]]
    if config["mode"] == "stacked":
        dataset = images.map(
            lambda a, b: (
                tf.concat([view(a, name) for name in views], 0),
                tf.tile(b, [len(views), 1]),
            )
        )
        optimizer = keras.optimizers.Adam(_finetune.LEARNING_RATE)
    else:
        dataset = _finetune.with_training_views(images, config["views"])
        optimizer = _finetune.optimizer_for(config["views"])
    keras.utils.set_random_seed(0)
    model = xferclass.build_classifier(
        config["backbone"], num_classes=4, weights=None, input_size=size
    )
    built = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    start = time.perf_counter()
    xferclass.fine_tune(
        model,
        dataset,
        None,
        head_epochs=0,
        fine_tune_epochs=1,
        unfreeze=config["depth"],
        optimizer=optimizer,
        verbose=0,
        seed=0,
    )
    wall = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"built": built, "peak": peak, "wall": wall}


def run_child(config: dict) -> dict:
    """``child(config)`` in a fresh Python process."""
    result = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--child", json.dumps(config)],
        capture_output=True,
        text=True,
        check=False,
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if result.returncode != 0 or not lines:
        raise RuntimeError(f"child failed ({result.returncode}):\n{result.stderr[-4000:]}")
    return json.loads(lines[-1])


def _growth(run: dict) -> int:
    return run["peak"] - run["built"]


def main(argv: list[str] | None = None) -> list[list[str]]:
    args = parse(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))), flush=True)
        return []
    info = _bench.machine()
    base = {
        "backbone": args.backbone,
        "images": args.images,
        "batch": args.batch_size,
        "views": args.views,
    }
    rows, data = [], []
    for size in args.sizes:
        for depth in args.depths:
            got = {}
            for mode in ("stacked", "per view"):
                got[mode] = run_child({**base, "size": size, "depth": depth, "mode": mode})
                r = got[mode]
                data.append({"size": size, "depth": depth, "mode": mode, **r})
                print(
                    f"{size} px, top {depth:.0%}, {mode}: peak {r['peak'] / GB:.2f} GB "
                    f"(model built: {r['built'] / GB:.2f}), {r['wall']:.0f} s",
                    flush=True,
                )
            stacked, per_view = got["stacked"], got["per view"]
            rows.append(
                [
                    f"{size}",
                    f"top {depth:.0%}",
                    f"{stacked['peak'] / GB:.2f}",
                    f"**{per_view['peak'] / GB:.2f}**",
                    f"{_growth(stacked) / max(1, _growth(per_view)):.1f}x",
                    f"{stacked['wall']:.0f}",
                    f"{per_view['wall']:.0f}",
                ]
            )
    info.finish()
    headers = [
        "px",
        "fine-tuned",
        "stacked: peak RSS GB",
        "per view: peak RSS GB",
        "growth, stacked / per view",
        "stacked: epoch s",
        "per view: epoch s",
    ]
    views = len(__import__("xferclass.auto._search", fromlist=["VIEW_SETS"]).VIEW_SETS[args.views])
    body = f"""
{args.backbone} with random weights, {args.images} random images in batches of
{args.batch_size}, one epoch of `fine_tune` in the {views} `{args.views}` training views,
each configuration in its own process. "Stacked": a batch of {args.batch_size * views} (every
image in every view); "per view": batches of {args.batch_size}, Adam averaging the
{views} views' gradients before each update (`gradient_accumulation_steps={views}`). Peak RSS is
the process's high-water mark; "growth" is the peak less the RSS once the model was built.

{_bench.table(headers, rows)}
"""
    _bench.section(
        "bench_finetune_memory",
        "Fine-tuning memory with training views",
        info,
        body,
        write=not args.no_docs,
        data=data,
    )
    return rows


if __name__ == "__main__":
    main()
