"""The caching pass and a fine-tuning epoch on each Keras backend, side by side.

Keras picks its backend once per process, so each backend runs this script in
a child process (``--child BACKEND``), in turn, ``--repeats`` rounds
interleaved; the median of each figure is kept. Each child, on the same images:

- the caching pass of ``fit`` (decode, resize, the frozen backbone, the features
  stored) on Keras, and on ONNX Runtime (``engine="onnxruntime"``, the model
  converted from that backend; the runtime itself does not depend on it);
- one epoch of ``fine_tune``'s second phase (the top 15 % of the backbone and the
  head, trained on activations cached at the cut), timed by an epoch callback,
  after one warm-up epoch that traces (or compiles) the step.

Run (from the project root)::

    python benchmarks/bench_backends.py                       # 400 clothing images
    python benchmarks/bench_backends.py --images 96 --no-docs # quick

Backends that are not installed are listed as such (``pip install "xferclass[jax]"``,
``"xferclass[torch]"``).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import _bench

BACKENDS = ("tensorflow", "jax", "torch")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--no-docs", action="store_true", help="do not update docs/benchmarks.md")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--folder", default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def child(args: argparse.Namespace) -> dict[str, Any]:
    """One backend's figures (runs in a process whose KERAS_BACKEND is that backend)."""
    _bench.quiet_tensorflow()
    import keras

    import xferclass
    from xferclass.models import POOL
    from xferclass.runtime._common import forward_function
    from xferclass.training._cache import CacheDirectory, _Budget, cache_split

    assert keras.backend.backend() == args.child
    dataset = xferclass.load_image_dataset(args.folder, args.size, batch_size=32, shuffle=False)
    model = xferclass.build_classifier(
        args.backbone, num_classes=len(dataset.class_names), input_size=args.size
    )
    frozen = keras.Model(model.input, model.get_layer(POOL).output)  # what fit caches
    found: dict[str, Any] = {"backend": args.child}
    for engine in ("keras", "onnxruntime"):
        forward = forward_function(frozen, engine=engine)
        forward(next(iter(dataset))[0])  # traced or converted before the clock starts
        with CacheDirectory() as folder:
            start = time.perf_counter()
            split = cache_split(
                forward, dataset, name="train", directory=folder, budget=_Budget(2**31), verbose=0
            )
            found[f"cache_{engine}"] = len(split) / (time.perf_counter() - start)
            split.close()
    timer = _bench.epoch_timer()
    xferclass.fine_tune(
        model, dataset, head_epochs=0, fine_tune_epochs=2, unfreeze=0.15, verbose=0,
        callbacks=[timer], seed=0,
    )  # fmt: skip
    found["finetune_epoch"] = len(split) / timer.epoch_seconds()[-1]
    return found


def run_child(backend: str, args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    env = dict(os.environ, KERAS_BACKEND=backend, JAX_PLATFORMS="cpu", CUDA_VISIBLE_DEVICES="")
    command = [
        sys.executable, __file__, "--child", backend, "--folder", str(folder),
        "--backbone", args.backbone, "--size", str(args.size),
    ]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"{backend} failed:\n{done.stderr[-3000:]}")
    return dict(json.loads(lines[-1]))


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    if args.child:
        print(json.dumps(child(args)), flush=True)
        return
    info = _bench.machine()
    folder = _bench.image_folder("train", args.images)
    present = [b for b in BACKENDS if b == "tensorflow" or importlib.util.find_spec(b)]
    figures: dict[str, list[dict[str, Any]]] = {b: [] for b in present}
    try:
        for round_ in range(args.repeats):
            order = present[round_ % len(present) :] + present[: round_ % len(present)]
            for backend in order:
                figures[backend].append(run_child(backend, args, folder.path))
                print(json.dumps(figures[backend][-1]), flush=True)
    finally:
        folder.close()
    keys = ("cache_keras", "cache_onnxruntime", "finetune_epoch")
    rows = []
    for backend in BACKENDS:
        if backend not in figures:
            rows.append([backend, "not installed", "", "", ""])
            continue
        median = {k: statistics.median(f[k] for f in figures[backend]) for k in keys}
        fastest = max(("keras", "onnxruntime"), key=lambda e: median[f"cache_{e}"])
        rows.append([
            backend, _bench.fmt(median["cache_keras"]), _bench.fmt(median["cache_onnxruntime"]),
            fastest, _bench.fmt(median["finetune_epoch"]),
        ])  # fmt: skip
    headers = ["backend", "caching pass, Keras", "caching pass, ONNX Runtime",
               "fastest engine", "fine-tuning epoch"]  # fmt: skip
    body = (
        f"{args.backbone} (ImageNet weights) at {args.size} px on {folder.source}; images/s, "
        f"median of {args.repeats} interleaved rounds (one process per backend and round). "
        "Fine-tuning: the top 15 % of the backbone and the head on activations cached at "
        "the cut, one epoch after a warm-up epoch.\n\n" + _bench.table(headers, rows)
    )
    _bench.section("backends", "Keras backends", info, body, write=not args.no_docs)


if __name__ == "__main__":
    main()
