"""Fine-tuning steps per precision on this CPU: TensorFlow float32 against ``mixed_bfloat16``
(and XLA), and PyTorch with bfloat16 autocast when the ``torch`` backend is installed.

Each configuration trains EfficientNet-Lite0 (224 px, the whole backbone trainable,
Adam, batch 32) in its own subprocess, so that a Keras backend or dtype policy never
leaks into the next:

- the rate of full training steps on one preloaded batch (median of ``--steps`` after
  two warm-up steps), the cost of a fine-tuning epoch without the cut cache;
- with ``--images N``, ``xferclass.fine_tune`` on N clothing training images (1 head
  epoch, 2 fine-tuning epochs of the top 30 %) and its validation accuracy on 200 images,
  so that a faster precision is adopted only with the same accuracy.

Run::

    python benchmarks/bench_train_precision.py                 # step rates
    python benchmarks/bench_train_precision.py --images 400    # and fine_tune's accuracy
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import _bench

CONFIGS = {
    "tensorflow f32": ("tensorflow", "float32", False),
    "tensorflow mixed_bfloat16": ("tensorflow", "mixed_bfloat16", False),
    "tensorflow f32, XLA": ("tensorflow", "float32", True),
    "torch f32": ("torch", "float32", False),
    "torch bf16 autocast": ("torch", "autocast", False),
}

CHILD = textwrap.dedent(
    """
    import json, statistics, sys, time
    sys.path.insert(0, {benchmarks!r})
    import _bench
    _bench.quiet_tensorflow()
    import contextlib
    import keras, numpy as np
    import xferclass
    backend, policy, xla, images = {backend!r}, {policy!r}, {xla!r}, {images!r}
    autocast = contextlib.nullcontext()
    if policy == "autocast":
        import torch
        autocast = torch.autocast("cpu", dtype=torch.bfloat16)
    elif policy != "float32":
        keras.mixed_precision.set_global_policy(policy)
    model = xferclass.build_classifier("efficientnet_lite0", num_classes=10, input_size=224)
    model.trainable = True
    model.compile(optimizer=keras.optimizers.Adam(1e-4), loss="categorical_crossentropy",
                  jit_compile=xla)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (32, 224, 224, 3)).astype("float32")
    y = np.eye(10, dtype="float32")[rng.integers(0, 10, 32)]
    seconds = []
    with autocast:
        for step in range({steps} + 2):
            start = time.perf_counter()
            model.train_on_batch(x, y)
            seconds.append(time.perf_counter() - start)
    result = {{"images_per_s": 32 / statistics.median(seconds[2:])}}
    if images:
        train = xferclass.load_image_dataset({train!r}, 224, seed=0)
        val = xferclass.load_image_dataset({val!r}, 224, shuffle=False)
        if policy not in ("float32", "autocast"):
            kwargs = dict(mixed_precision=policy)
        else:
            kwargs = {{}}
        tuned = xferclass.build_classifier("efficientnet_lite0", input_size=224,
                                           num_classes=len(train.class_names), **kwargs)
        start = time.perf_counter()
        with autocast:
            history = xferclass.fine_tune(tuned, train, val, head_epochs=1,
                                          fine_tune_epochs=2, unfreeze=0.3, verbose=0,
                                          jit_compile=xla)
        result["fine_tune_s"] = time.perf_counter() - start
        result["val_accuracy"] = float(history.history["val_accuracy"][-1])
    print("RESULT " + json.dumps(result))
    """
)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6, help="timed training steps")
    parser.add_argument("--images", type=int, default=0, help="also fine_tune on N images")
    parser.add_argument("--no-docs", action="store_true", help="do not record the run")
    return parser.parse_args(argv)


def run(name: str, args: argparse.Namespace, train: str, val: str) -> dict | str:
    backend, policy, xla = CONFIGS[name]
    if backend == "torch" and importlib.util.find_spec("torch") is None:
        return "not run: torch is not installed (pip install 'xferclass[torch]')"
    code = CHILD.format(
        benchmarks=os.path.dirname(os.path.abspath(__file__)), backend=backend, policy=policy,
        xla=xla, images=args.images, steps=args.steps, train=train, val=val,
    )  # fmt: skip
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    return "failed: " + (done.stderr.strip().splitlines() or ["no output"])[-1][:160]


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    info = _bench.machine()
    train = _bench.image_folder("train", args.images or 10)
    val = _bench.image_folder("validation", 200)
    try:
        results = {name: run(name, args, str(train.path), str(val.path)) for name in CONFIGS}
    finally:
        train.close()
        val.close()
    info.finish()
    base = results["tensorflow f32"]
    base_rate = base["images_per_s"] if isinstance(base, dict) else float("nan")
    rows = []
    for name, result in results.items():
        if not isinstance(result, dict):
            rows.append([name, result, "", "", ""])
            continue
        rate = result["images_per_s"]
        rows.append([
            name, _bench.fmt(rate), f"{rate / base_rate:.2f}x",
            f"{result['fine_tune_s']:.1f} s" if "fine_tune_s" in result else "-",
            f"{result['val_accuracy']:.3f}" if "val_accuracy" in result else "-",
        ])  # fmt: skip
        print(name, result, flush=True)
    fine = f"`fine_tune` on {train.source}" if args.images else "`fine_tune` not run"
    body = f"""
Full training steps of EfficientNet-Lite0 (224 px, whole backbone trainable, Adam, batch
32, one preloaded batch, median of {args.steps} steps), each configuration in its own
process; {fine} (1 head epoch, 2 epochs of the top 30 %, validation accuracy on 200
images). A precision is adopted only when at least 1.5x faster with the same accuracy.

{_bench.table(["configuration", "images/s", "x TF f32", "fine_tune", "val accuracy"], rows)}
"""
    _bench.section(
        "bench_train_precision",
        "Fine-tuning per precision (`bench_train_precision.py`)",
        info,
        body,
        write=not args.no_docs,
        data=results,
    )


if __name__ == "__main__":
    main()
