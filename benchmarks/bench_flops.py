"""How close does the backbone's forward pass get to the machine's peak FLOP/s?

1. FLOPs per image, counted analytically from the Keras model's layer shapes:
   multiply-adds of every Conv2D (``H_out * W_out * C_out * k_h * k_w * C_in /
   groups``), DepthwiseConv2D (``H_out * W_out * C_out * k_h * k_w``) and Dense
   layer (``inputs * units``), FLOPs = 2 x multiply-adds; the element-wise work
   (BatchNorm, ReLU, residual adds, biases) is counted apart. Cross-checked with
   TensorFlow's profiler (``tf.compat.v1.profiler`` on the frozen graph of a
   concrete function, batch 1).
2. Peak FLOP/s: a float32 ``tf.linalg.matmul`` of two ``n x n`` matrices,
   ``2 n^3 / time``, best of ``--matmul-repeats`` for each ``n``.
3. Forward images/s of the frozen feature extractor (preprocessing, backbone,
   pooling; batch ``--batch-size``; ``predict_on_batch`` on batches in memory).

Fraction of peak = images/s x FLOPs/image / peak FLOP/s.

Run::

    python benchmarks/bench_flops.py                  # efficientnet_lite0, 224 px
    python benchmarks/bench_flops.py --size 160 --forward-batches 3 --no-docs   # quick
"""

from __future__ import annotations

import argparse
import math
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import _bench

_bench.quiet_tensorflow()

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import xferclass  # noqa: E402
from xferclass.models import POOL  # noqa: E402


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224, help="image side in pixels")
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--forward-batches", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2, help="timed forward passes, best kept")
    parser.add_argument("--matmul-sizes", type=int, nargs="+", default=[2048, 4096])
    parser.add_argument("--matmul-repeats", type=int, default=5)
    parser.add_argument("--no-docs", action="store_true", help="do not update docs/benchmarks.md")
    return parser.parse_args(argv)


# ------------------------------------------------------------------------ counting


def _walk(layer: Any) -> Iterator[Any]:
    """Every leaf layer inside ``layer``: through nested models and wrappers."""
    if isinstance(layer, keras.layers.Wrapper):
        yield from _walk(layer.layer)
    elif isinstance(layer, keras.Model) or hasattr(layer, "layers"):
        for inner in layer.layers:
            yield from _walk(inner)
    else:
        yield layer


def _elements(shape: Any) -> int:
    return math.prod(int(d) for d in shape[1:])


def count_flops(model: keras.Model) -> dict[str, int]:
    """Multiply-adds per image by layer type, and element-wise FLOPs, from layer shapes.

    Returns a dict with ``"Conv2D"``, ``"DepthwiseConv2D"`` and ``"Dense"``
    multiply-adds, ``"macs"`` (their sum), ``"flops"`` (2 x macs) and
    ``"elementwise"`` (BatchNorm at inference as a multiply and an add per
    element, activations, residual adds and biases as one FLOP per element).
    """
    counts: Counter[str] = Counter()
    seen: set[int] = set()
    for layer in _walk(model):
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        if isinstance(layer, keras.layers.InputLayer):
            continue
        out_shape = layer.output.shape
        out = _elements(out_shape)
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            kh, kw = layer.kernel_size
            counts["DepthwiseConv2D"] += out * kh * kw
        elif isinstance(layer, keras.layers.Conv2D):
            kh, kw = layer.kernel_size
            channels_in = int(layer.input.shape[-1])
            counts["Conv2D"] += out * kh * kw * channels_in // layer.groups
        elif isinstance(layer, keras.layers.Dense):
            counts["Dense"] += out * int(layer.input.shape[-1])
        elif isinstance(layer, keras.layers.BatchNormalization):
            counts["elementwise"] += 2 * out
        elif isinstance(layer, (keras.layers.ReLU, keras.layers.Activation, keras.layers.Add)):
            counts["elementwise"] += out
        elif isinstance(layer, keras.layers.GlobalAveragePooling2D):
            counts["elementwise"] += _elements(layer.input.shape)
        if getattr(layer, "use_bias", False) and getattr(layer, "bias", None) is not None:
            counts["elementwise"] += out
    counts["macs"] = counts["Conv2D"] + counts["DepthwiseConv2D"] + counts["Dense"]
    counts["flops"] = 2 * counts["macs"]
    return dict(counts)


def profiler_flops(model: keras.Model, size: int) -> dict[str, int] | str:
    """FLOPs per image from TensorFlow's profiler (batch 1): ``"total"`` and per op type.

    The total is ``tf.compat.v1.profiler.profile``'s on the frozen graph of a
    concrete function; the per-type split sums the same per-node statistics
    (``ops.get_stats_for_node_def(..., "flops")``) that the profiler adds up.
    """
    try:
        from tensorflow.python.framework import ops
        from tensorflow.python.framework.convert_to_constants import (
            convert_variables_to_constants_v2,
        )

        function = tf.function(lambda x: model(x, training=False))
        concrete = function.get_concrete_function(tf.TensorSpec([1, size, size, 3], tf.float32))
        graph = convert_variables_to_constants_v2(concrete).graph
        options = (
            tf.compat.v1.profiler.ProfileOptionBuilder(
                tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
            )
            .with_empty_output()
            .build()
        )
        profile = tf.compat.v1.profiler.profile(
            graph=graph, run_meta=tf.compat.v1.RunMetadata(), cmd="op", options=options
        )
        result: Counter[str] = Counter()
        for op in graph.get_operations():
            try:
                stats = ops.get_stats_for_node_def(graph, op.node_def, "flops")
            except ValueError:  # no FLOP count registered for this op type
                continue
            if stats.value:
                result[op.type] += int(stats.value)
        return {"total": int(profile.total_float_ops), **result}
    except Exception as error:  # the profiler is a compat API: report, do not fail
        return f"profiler failed: {type(error).__name__}: {error}"


# ------------------------------------------------------------------------ timing


def one_by_one(model: keras.Model) -> int:
    """Multiply-adds per image of the 1x1 Conv2D layers."""
    total = 0
    for layer in _walk(model):
        if isinstance(layer, keras.layers.Conv2D) and tuple(layer.kernel_size) == (1, 1):
            total += _elements(layer.output.shape) * int(layer.input.shape[-1])
    return total


def matmul_peak(sizes: list[int], repeats: int) -> dict[int, float]:
    """Best FLOP/s of a float32 n x n matmul for each n."""
    best = {}
    for n in sizes:
        a = tf.random.normal([n, n], seed=1)
        b = tf.random.normal([n, n], seed=2)
        tf.linalg.matmul(a, b).numpy()  # warm-up
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            c = tf.linalg.matmul(a, b)
            c[0, 0].numpy()
            times.append(time.perf_counter() - start)
        best[n] = 2 * n**3 / min(times)
        print(f"matmul {n}x{n}: {best[n] / 1e9:.1f} GFLOP/s (best of {repeats})", flush=True)
    return best


def nominal_peak() -> str:
    """A paper peak from the clock, when the CPU says enough (informational only)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            text = handle.read()
    except OSError:
        return "n/a"
    mhz = [float(line.split(":")[1]) for line in text.splitlines() if line.startswith("cpu MHz")]
    if not mhz or " fma" not in text:
        return "n/a"
    per_cycle = 32  # two 256-bit FMA pipes: 2 x 8 lanes x 2 FLOPs (AVX2/AVX-512 on Zen)
    value = len(mhz) * mhz[0] * 1e6 * per_cycle
    cores, clock = len(mhz), mhz[0]
    return f"{value / 1e9:.0f} GFLOP/s ({cores} cores x {clock:.0f} MHz x {per_cycle} FLOP/cycle)"


def main(argv: list[str] | None = None) -> dict[str, float]:
    args = parse(argv)
    info = _bench.machine()
    model = xferclass.build_classifier(args.backbone, num_classes=10, input_size=args.size)
    extractor = keras.Model(model.input, model.get_layer(POOL).output)
    counts = count_flops(extractor)
    print(
        f"analytic: {counts['macs'] / 1e6:.1f} M multiply-adds per image "
        f"({counts['flops'] / 1e9:.3f} GFLOPs) + {counts['elementwise'] / 1e6:.1f} M "
        "element-wise FLOPs",
        flush=True,
    )
    profiled = profiler_flops(extractor, args.size)
    print(f"profiler: {profiled}", flush=True)

    rng = np.random.default_rng(0)
    batches = [
        tf.constant(rng.uniform(0, 255, (args.batch_size, args.size, args.size, 3)), tf.float32)
        for _ in range(args.forward_batches)
    ]
    forward, _ = _bench.forward_rate(extractor.predict_on_batch, batches, repeats=args.repeats)
    print(f"forward: {forward:.1f} images/s", flush=True)
    peaks = matmul_peak(args.matmul_sizes, args.matmul_repeats)
    peak = max(peaks.values())
    # Once more after the matmuls, in case the load changed meanwhile; keep the best.
    again, _ = _bench.forward_rate(extractor.predict_on_batch, batches, warmup=0, repeats=1)
    forward = max(forward, again)
    info.finish()

    achieved = forward * counts["flops"]
    share_dw = counts.get("DepthwiseConv2D", 0) / counts["macs"]
    share_1x1 = one_by_one(extractor) / counts["macs"]
    fraction = achieved / peak
    rows = [
        [name, f"{counts.get(name, 0) / 1e6:,.1f}", f"{2 * counts.get(name, 0) / 1e6:,.1f}"]
        for name in ("Conv2D", "DepthwiseConv2D", "Dense")
    ]
    rows.append(
        [
            "**total (conv + dense)**",
            f"**{counts['macs'] / 1e6:,.1f}**",
            f"**{counts['flops'] / 1e6:,.1f}**",
        ]
    )
    rows.append(
        [
            "element-wise (BN, ReLU6, adds, pooling)",
            "—",
            f"{counts.get('elementwise', 0) / 1e6:,.1f}",
        ]
    )
    flop_table = _bench.table(["layers", "M multiply-adds / image", "MFLOPs / image"], rows)
    if isinstance(profiled, dict):
        conv = profiled.get("Conv2D", 0)
        depthwise = profiled.get("DepthwiseConv2dNative", 0)
        matmul = profiled.get("MatMul", 0)
        rest = profiled["total"] - conv - depthwise - matmul
        agree = "agrees exactly" if conv + depthwise + matmul == counts["flops"] else "compare"
        profiler_text = (
            f"Cross-check: TensorFlow's profiler counts {profiled['total'] / 1e6:,.1f} MFLOPs "
            f"per image in the frozen graph: Conv2D {conv / 1e6:,.1f}, DepthwiseConv2dNative "
            f"{depthwise / 1e6:,.1f}, MatMul {matmul / 1e6:,.1f} (with the analytic count: "
            f"{agree}) and {rest / 1e6:,.1f} of element-wise ops (Mul, AddV2, ... of BatchNorm "
            "and the preprocessing)."
        )
    else:
        profiler_text = f"TensorFlow's profiler cross-check was not available: {profiled}."
    peak_rows = [[f"{n} x {n}", f"{v / 1e9:,.1f}"] for n, v in peaks.items()]
    result_rows = [
        ["forward images/s (best pass)", _bench.fmt(forward)],
        ["GFLOP/s reached by the forward pass (conv + dense)", _bench.fmt(achieved / 1e9)],
        ["peak GFLOP/s (best matmul)", _bench.fmt(peak / 1e9)],
        ["**fraction of peak**", f"**{fraction:.1%}**"],
    ]
    body = f"""
Model: the feature extractor of `build_classifier("{args.backbone}", num_classes=10)` at
{args.size}x{args.size} px (preprocessing, backbone, global average pooling: what the caching
pass runs), float32, batch {args.batch_size}.

{flop_table}

{profiler_text}

Peak: float32 `tf.linalg.matmul`, 2n³ / time, best of {args.matmul_repeats}:

{_bench.table(["matmul", "GFLOP/s"], peak_rows)}

(Nominal peak from the clock, for reference: {nominal_peak()}.)

{_bench.table(["", ""], result_rows)}

A large matmul is the best case for a CPU: every value loaded is reused n times. A mobile
network like EfficientNet-Lite0 is made of 1x1 convolutions (matmuls with a few dozen to a
thousand channels, {share_1x1:.0%} of its multiply-adds) and depthwise convolutions
({share_dw:.0%} of them), which reuse each input value only k² times; with BatchNorm, ReLU6
and residual adds between them, more of its time goes to memory traffic and per-op overhead
than a matmul's does, so it reaches a fraction of the matmul peak, not all of it. On a shared
machine both figures are lowered by the other processes (see the load average); their ratio is
less affected. Whatever the fraction, the cached `fit` needs only one such pass per image.
"""
    _bench.section(
        "bench_flops",
        "Forward pass vs the machine's peak FLOP/s",
        info,
        body,
        write=not args.no_docs,
    )
    return {
        "flops_per_image": counts["flops"],
        "forward": forward,
        "peak": peak,
        "fraction": fraction,
    }


if __name__ == "__main__":
    main()
