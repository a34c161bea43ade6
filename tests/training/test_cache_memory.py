"""The feature cache keeps memory bounded when it spills to disk.

Two fresh processes (run side by side) each train with ``xferclass.fit`` on
20,000 synthetic 16x16 images through a tiny registered backbone whose pooled
features have 2048 dimensions, so the cache holds 20,000 x 2048 x 4 = 164 MB in
float32: one with ``cache_memory`` = 2 MB (the features spill to a file, in
float16 when fit's ``cache_dtype="auto"`` picks it: 82 MB), one with no limit
(they stay in memory, in float32).

Both run on the Keras engine: ``engine="auto"`` would, on a first run (no
converted model cached yet), convert the extractor to ONNX and time it against
Keras inside the measured ``fit``, some 10 MB of Python objects that come and go
with the cache folder and the timing, not with the feature cache under test.

Memory is counted with :mod:`tracemalloc`, which traces every allocation made
through Python's allocators, NumPy's array buffers included: the bytes the
program holds, not the RSS, which the C allocator's reuse policy, TensorFlow's
thread pools and the load on the machine move by tens of megabytes from run to
run. Each process runs a small warm-up ``fit`` first, then traces the peak of
the real ``fit``, and records the rows, the row size and the spill file size of
each activation store. The spilled run must stay under a bound derived from what
the code fixes (the budget, the labels, the batches in flight that
``_cache.PREFETCH_BATCHES`` sets, and a fixed allowance for Keras's traced
functions), at least four times smaller than the features in either dtype; the
in-memory run, which holds them all, must exceed them, so the count can see the
cache.

RSS, the number an operator watches, is measured side by side in
``benchmarks/bench_cache_memory.py`` (50,000 images; docs/benchmarks.md).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from xferclass.training._cache import PREFETCH_BATCHES

IMAGES = 20_000
FEATURES = 2048
SIDE = 16
BATCH = 100
CLASSES = 10
BUDGET = 2 * 1024**2
UNLIMITED = 1 << 40
FEATURE_BYTES = IMAGES * FEATURES * 4  # 163,840,000 in float32; half in float16
BATCH_BYTES = BATCH * FEATURES * 4  # 819,200
#: Batches of float32 features held past the budget, as the code fixes them: the
#: read-ahead of the cached split's pipeline (``PREFETCH_BATCHES``), the batch
#: being read (its float16 rows and their float32 copy) and the batch the step
#: trains on; while caching, the batch being extracted, its float16 copy and the
#: bytes written to the file take no more.
IN_FLIGHT = PREFETCH_BATCHES + 3
#: The one-hot labels of the split, twice: the batches and their concatenation.
LABEL_BYTES = 2 * IMAGES * CLASSES * 4
#: What does not grow with the data: Python objects of the functions Keras traces
#: (extraction, training step), the epoch's row order.
FIXED = 4 * 1024**2
#: What the spilled run may hold at its peak: about 12 MB, a seventh of the features
#: even in float16. A cache that kept them in memory would need them all.
BOUND = BUDGET + LABEL_BYTES + IN_FLIGHT * BATCH_BYTES + FIXED

CHILD = textwrap.dedent(
    """
    import gc, json, os, sys, tracemalloc

    import keras
    import tensorflow as tf

    import xferclass
    from xferclass.training import _cache

    images, features, side, batch, classes, budget, folder = json.loads(sys.argv[1])

    spilled = []  # (rows, bytes per row, bytes in its spill file) of each finished store
    finish = _cache.ActivationStore.finish

    def counting_finish(store):
        finish(store)
        size = os.fstat(store._fd).st_size if store.on_disk else 0
        spilled.append([store.count, store.row_bytes, size])

    _cache.ActivationStore.finish = counting_finish

    def tiny(input_shape, weights=None):
        # 16x16 -> 4x4 -> one pixel of `features` channels: the backbone's output is
        # the pooled feature vector, so no larger activations pass through memory.
        inputs = keras.Input(input_shape)
        x = keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu")(inputs)
        x = keras.layers.Conv2D(32, 3, strides=2, padding="same", activation="relu")(x)
        x = keras.layers.Conv2D(features, 4, activation="relu")(x)
        return keras.Model(inputs, x, name="tiny")

    def synthetic(n, seed):
        def make(step):
            start = step * batch
            count = tf.minimum(tf.constant(batch, tf.int64), n - start)
            shape = tf.stack([count, side, side, 3])
            pixels = tf.random.stateless_uniform(shape, seed=tf.stack([seed, step]), maxval=255)
            labels = tf.one_hot(tf.range(start, start + count) % classes, classes)
            return pixels, labels

        return tf.data.Dataset.range(-(-n // batch)).map(make)

    xferclass.register_backbone("memory_test_tiny", tiny, preprocess="unit",
                                default_size=side, min_size=side, overwrite=True)
    keras.utils.set_random_seed(0)
    model = xferclass.build_classifier("memory_test_tiny", num_classes=classes, weights=None)
    xferclass.fit(model, synthetic(4 * batch, 1), epochs=1, verbose=0, cache_memory=budget,
                  engine="keras")

    gc.collect()
    spilled.clear()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    xferclass.fit(model, synthetic(images, 2), epochs=1, verbose=0, cache_memory=budget,
                  cache_dir=folder, engine="keras")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    print(json.dumps({"peak": peak - before, "spilled": spilled}))
    """
)


def _start(budget: int, folder: str) -> subprocess.Popen[str]:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    env.pop("XFERCLASS_CACHE_MEMORY", None)
    argument = json.dumps([IMAGES, FEATURES, SIDE, BATCH, CLASSES, budget, folder])
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, argument],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip


def _result(process: subprocess.Popen[str]) -> dict[str, object]:
    try:
        out, err = process.communicate(timeout=900)  # a guard against a hang, not a timing
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    lines = [line for line in out.splitlines() if line.startswith("{")]
    assert process.returncode == 0 and lines, f"child failed:\n{err[-3000:]}"
    return json.loads(lines[-1])


@pytest.mark.slow
def test_spilled_cache_keeps_memory_bounded(tmp_path):
    (tmp_path / "spilled").mkdir()
    (tmp_path / "memory").mkdir()
    spilling = _start(BUDGET, str(tmp_path / "spilled"))
    keeping = _start(UNLIMITED, str(tmp_path / "memory"))
    spilled, memory = _result(spilling), _result(keeping)
    report = f"spilled {spilled}, in memory {memory}, features {FEATURE_BYTES:,}"
    assert FEATURE_BYTES // 2 >= 4 * BOUND  # far below what no spilling would need

    # The in-memory run holds every feature, and the count sees them; nothing on disk.
    assert memory["peak"] >= FEATURE_BYTES, report
    assert memory["spilled"] and all(size == 0 for *_, size in memory["spilled"]), report
    # The spilled run wrote every feature of the training split to its file, in
    # float32 or float16...
    ((rows, row_bytes, size),) = spilled["spilled"]
    assert rows == IMAGES and row_bytes in (FEATURES * 4, FEATURES * 2), report
    assert size == rows * row_bytes, report
    # ... and held no more than the budget and a few batches at any moment.
    assert spilled["peak"] < BOUND, report
