"""The feature cache keeps memory bounded when it spills to disk.

Two fresh processes (run side by side) each train with ``xferclass.fit`` on
5,000 synthetic 16x16 images through a tiny registered backbone whose pooled
features have 2048 dimensions, so the cache holds 5,000 x 2048 x 4 = 41 MB:
one with ``cache_memory`` = 2 MB (the features spill to a file), one with no
limit (they stay in memory). Each process runs a small warm-up ``fit`` first, so
that TensorFlow's runtime and traced functions are part of its baseline RSS,
then measures the peak RSS of the real ``fit`` (the kernel's high-water mark
when the fit raised it, else a 20 ms sampler's peak) and the peak size of the
spill folder. The spilled run must grow by far less than the in-memory one.

``benchmarks/bench_cache_memory.py`` is the full-size version (50,000 images).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

IMAGES = 5_000
FEATURES = 2048
SIDE = 16
BUDGET = 2 * 1024**2
UNLIMITED = 1 << 40
FEATURE_BYTES = IMAGES * FEATURES * 4

CHILD = textwrap.dedent(
    """
    import gc, json, os, resource, sys, tempfile, threading

    import keras
    import psutil
    import tensorflow as tf

    import xferclass

    images, features, side, budget, folder = json.loads(sys.argv[1])
    classes, batch = 10, 250

    def tiny(input_shape, weights=None):
        inputs = keras.Input(input_shape)
        x = keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu")(inputs)
        x = keras.layers.Conv2D(32, 3, strides=2, padding="same", activation="relu")(x)
        x = keras.layers.Conv2D(features, 1, activation="relu")(x)
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
    xferclass.fit(model, synthetic(4 * batch, 1), epochs=1, verbose=0, cache_memory=budget)

    process = psutil.Process()
    peaks = {"rss": 0, "disk": 0}
    done = threading.Event()

    def disk():
        total = 0
        for root, _, files in os.walk(folder):
            for name in files:
                try:
                    total += os.path.getsize(os.path.join(root, name))
                except OSError:
                    pass
        return total

    def sample():
        while not done.is_set():
            peaks["rss"] = max(peaks["rss"], process.memory_info().rss)
            peaks["disk"] = max(peaks["disk"], disk())
            done.wait(0.02)

    gc.collect()
    before = process.memory_info().rss
    high_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    xferclass.fit(model, synthetic(images, 2), epochs=1, verbose=0, cache_memory=budget,
                  cache_dir=folder)
    done.set()
    sampler.join()
    high_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    peak = high_after if high_after > high_before else peaks["rss"]
    print(json.dumps({"growth": peak - before, "disk": peaks["disk"]}))
    """
)


def _start(budget: int, folder: str) -> subprocess.Popen[str]:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    env.pop("XFERCLASS_CACHE_MEMORY", None)
    argument = json.dumps([IMAGES, FEATURES, SIDE, budget, folder])
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, argument],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip


def _result(process: subprocess.Popen[str]) -> dict[str, int]:
    try:
        out, err = process.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    lines = [line for line in out.splitlines() if line.startswith("{")]
    assert process.returncode == 0 and lines, f"child failed:\n{err[-3000:]}"
    return json.loads(lines[-1])


@pytest.mark.slow
def test_spilled_cache_keeps_rss_bounded(tmp_path):
    pytest.importorskip("psutil")
    (tmp_path / "spilled").mkdir()
    (tmp_path / "memory").mkdir()
    spilling = _start(BUDGET, str(tmp_path / "spilled"))
    keeping = _start(UNLIMITED, str(tmp_path / "memory"))
    spilled, memory = _result(spilling), _result(keeping)
    report = f"spilled {spilled}, in memory {memory}, features {FEATURE_BYTES}"

    # The in-memory run holds the features: the measurement sees them.
    assert memory["growth"] > 0.6 * FEATURE_BYTES, report
    assert memory["disk"] == 0, report
    # The spilled run wrote them to disk and its memory grew far less.
    assert spilled["disk"] >= 0.9 * FEATURE_BYTES, report
    assert spilled["growth"] < 0.5 * memory["growth"], report
    assert spilled["growth"] < BUDGET + 0.4 * FEATURE_BYTES, report
