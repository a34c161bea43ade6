"""tf.distribute: the same training on several devices or processes as on one.

The strategies are set up in subprocesses running ``_distribute_script.py``:
two logical CPU devices must be configured before TensorFlow initialises its
devices, and a multi-worker cluster needs processes of its own, so neither can
happen inside the pytest process. All four runs (one device, MirroredStrategy
over two logical CPUs, two MultiWorkerMirroredStrategy workers on loopback
ports) start together when the first test asks for them, so that they share the
CPU cores; each test then waits for the runs it compares.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf

import xferclass

SCRIPT = Path(__file__).with_name("_distribute_script.py")
# Seconds a run may take before it is killed. An idle 2-core machine needs well under
# 60; this is only a guard against a hung worker, so it leaves room for a loaded one.
TIMEOUT = 900
TAGS = ("cache", "nocache", "shuffled", "finetune")


class Run:
    """One training script in a subprocess, its output in a log file."""

    def __init__(self, name: str, mode: str, folder: Path, tf_config: Any = None) -> None:
        self.name = name
        self.out = folder / f"{name}.npz"
        self.log = folder / f"{name}.log"
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
        env.pop("TF_CONFIG", None)
        if tf_config is not None:
            env["TF_CONFIG"] = json.dumps(tf_config)
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, str(SCRIPT), mode, str(self.out)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=SCRIPT.parent,
            )
        self.deadline = time.monotonic() + TIMEOUT

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def failure(self) -> str:
        lines = self.output().splitlines()
        return f"{self.name} failed (exit {self.process.returncode}):\n" + "\n".join(lines[-40:])

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def wait(*runs: Run) -> list[Any]:
    """Wait for ``runs`` to finish; fail at once when one fails or overruns."""
    while True:
        codes = [run.process.poll() for run in runs]
        broken = [run for run, code in zip(runs, codes, strict=True) if code not in (None, 0)]
        late = [
            run for run in runs if run.process.poll() is None and time.monotonic() > run.deadline
        ]
        if broken or late:
            for run in runs:
                run.kill()  # a worker whose peer died would wait forever
            if late:
                pytest.fail(f"{late[0].name} ran past {TIMEOUT} s:\n{late[0].output()[-3000:]}")
            pytest.fail(broken[0].failure())
        if all(code == 0 for code in codes):
            return [np.load(run.out) for run in runs]
        time.sleep(0.2)


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Run]]:
    folder = tmp_path_factory.mktemp("distribute")
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(2)]}
    started: dict[str, Run] = {}
    try:
        started["single"] = Run("single", "single", folder)
        started["mirrored"] = Run("mirrored", "mirrored", folder)
        for index in range(2):
            task = {"type": "worker", "index": index}
            started[f"worker{index}"] = Run(
                f"worker{index}", "multiworker", folder, {"cluster": cluster, "task": task}
            )
        yield started
    finally:
        for run in started.values():
            run.kill()


def trained(result: Any, tag: str) -> list[np.ndarray]:
    count = sum(key.startswith(f"{tag}_trained_") for key in result.files)
    return [result[f"{tag}_trained_{k}"] for k in range(count)]


#: How closely two runs of the same training agree when only the order of float32
#: summation differs (the batch split across replicas, a different reduction order in
#: multi-threaded kernels). Those differences start at float32's epsilon (1.2e-7) and
#: grow with every step, so single elements of the weights can drift by 1e-4 or more
#: after a dozen steps on one machine and not on another. What the runs must agree on
#: is what they compute: probabilities (in [0, 1]) to 1e-3, each epoch's loss to 1e-3
#: relatively, and all weights together (as one vector) to 1e-3 in relative L2 norm,
#: a thousand times coarser than float32 but far finer than what training changes
#: (``assert_trained_for_real`` checks the weights moved by more than 1e-2).
AGREE = 1e-3
#: One forward pass of the same weights with the batch split another way: oneDNN picks
#: kernels (and so summation orders) by batch shape, and each float32 sum of K terms
#: rounds by up to about K * 2**-24 of its magnitude. Through a few convolutions of
#: some hundred terms each, on activations of order one, that is ~1e-5 per layer, so
#: probabilities may differ by a few 1e-5: 1e-4 bounds it with room.
ONE_PASS = 1e-4


def relative_distance(got: list[np.ndarray], want: list[np.ndarray]) -> float:
    """``||got - want|| / ||want||`` over all the arrays as one vector."""
    assert [g.shape for g in got] == [w.shape for w in want]
    difference = sum(float(np.sum((g.astype(np.float64) - w) ** 2)) for g, w in zip(got, want))
    size = sum(float(np.sum(w.astype(np.float64) ** 2)) for w in want)
    return float(np.sqrt(difference / size))


def assert_same_training(got: Any, want: Any, tag: str) -> None:
    """``got`` trained like ``want``, up to float32 summation order (see ``AGREE``)."""
    assert got[f"{tag}_initial_sha256"] == want[f"{tag}_initial_sha256"]
    distance = relative_distance(trained(got, tag), trained(want, tag))
    assert distance < AGREE, f"{tag}: trained weights differ by {distance:.2e} (relative L2)"
    np.testing.assert_allclose(
        got[f"{tag}_predictions"], want[f"{tag}_predictions"], rtol=0, atol=AGREE
    )
    for key in ("loss", "val_loss"):
        if f"{tag}_{key}" in want.files:
            np.testing.assert_allclose(got[f"{tag}_{key}"], want[f"{tag}_{key}"], rtol=AGREE)


def assert_trained_for_real(result: Any, tag: str) -> None:
    """Training moved the weights far beyond the tolerance of the comparisons."""
    weights = trained(result, tag)
    starts = [result[key] for key in result.files if key.startswith(f"{tag}_start_")]
    if len(starts) == len(weights):  # fine_tune trains more weights than it started with
        moved = max(float(np.abs(a - b).max()) for a, b in zip(weights, starts, strict=True))
        assert moved > 1e-2
    assert result[f"{tag}_loss"][-1] < result[f"{tag}_loss"][0]


def assert_cached(log: str) -> None:
    """The caches were used: fit (twice) and fine_tune ran the backbone once a split."""
    assert log.count("caching backbone activations for train (6 batches)") == 3
    # fit with the cache, shuffled or not, and fine_tune's head phase:
    assert log.count("training the head on cached features") == 3
    assert log.count("training the whole model on images") == 1  # cache=False
    assert log.count("caching activations at the cut") == 1  # fine_tune


@pytest.mark.slow
def test_mirrored_strategy_over_two_devices_matches_one_device(runs: dict[str, Run]) -> None:
    mirrored, single = wait(runs["mirrored"], runs["single"])
    assert bool(mirrored["mirrored"]) and int(mirrored["replicas"]) == 2
    assert_cached(runs["mirrored"].output())
    for tag in TAGS:
        # Model and optimizer variables were made in the strategy's scope.
        assert list(mirrored[f"{tag}_variable_kinds"]) == ["MirroredVariable"]
        assert "MirroredVariable" not in list(single[f"{tag}_variable_kinds"])
        for k in range(len(trained(mirrored, tag))):
            assert int(mirrored[f"{tag}_copies_{k}"]) == 2
            assert float(mirrored[f"{tag}_copy_spread_{k}"]) == 0.0
        assert_trained_for_real(single, tag)
        # The same weights, batched differently: one forward pass of float32 rounding.
        np.testing.assert_allclose(
            mirrored[f"{tag}_predict"], mirrored[f"{tag}_predictions"], rtol=0, atol=ONE_PASS
        )
        assert int(mirrored[f"{tag}_evaluate_n"]) == 16
        if tag != "shuffled":
            assert_same_training(mirrored, single, tag)
    # Under a strategy, Keras's fit draws one batch from a fresh iterator before
    # training (to build the model symbolically), which advances a dataset that
    # reshuffles every iteration by one epoch: each epoch is shuffled, but not
    # in the order the same seed gives on one device. So that run is only
    # checked for training; the multi-worker test compares it exactly (there
    # xferclass builds the model from the dataset's spec instead).
    assert_trained_for_real(mirrored, "shuffled")
    # Under the strategy the cache gives what training through the backbone gives.
    distance = relative_distance(trained(mirrored, "cache"), trained(mirrored, "nocache"))
    assert distance < AGREE, f"cache and nocache differ by {distance:.2e} (relative L2)"
    np.testing.assert_allclose(
        mirrored["cache_predictions"], mirrored["nocache_predictions"], rtol=0, atol=AGREE
    )


@pytest.mark.slow
def test_multi_worker_strategy_over_two_processes_matches_one_process(
    runs: dict[str, Run],
) -> None:
    worker0, worker1, single = wait(runs["worker0"], runs["worker1"], runs["single"])
    for index, worker in enumerate((worker0, worker1)):
        assert bool(worker["multi_worker"])
        assert int(worker["replicas"]) == 2
        assert_cached(runs[f"worker{index}"].output())
    for tag in TAGS:
        assert list(worker0[f"{tag}_variable_kinds"]) == ["MirroredVariable"]
        # The workers hold the same model: both apply the same all-reduced gradients.
        for a, b in zip(trained(worker0, tag), trained(worker1, tag), strict=True):
            np.testing.assert_array_equal(a, b)
        # Their forward passes may sum in another order (threads): float32 rounding only.
        np.testing.assert_allclose(
            worker0[f"{tag}_predictions"], worker1[f"{tag}_predictions"], rtol=0, atol=ONE_PASS
        )
        # ... the one a single process trains on the same global batches.
        assert_trained_for_real(single, tag)
        assert_same_training(worker0, single, tag)


def test_fit_needs_the_strategy_the_model_was_built_under() -> None:
    images = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    labels = np.eye(3, dtype="float32")[[0, 1, 2, 0]]
    train = tf.data.Dataset.from_tensor_slices((images, labels)).batch(2)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    options: dict[str, Any] = dict(num_classes=3, weights=None, input_size=32, head_units=4)

    outside = xferclass.build_classifier("mobilenet_v2", **options)
    with pytest.raises(ValueError, match=r"built outside any tf\.distribute strategy") as caught:
        xferclass.fit(outside, train, epochs=1, verbose=0, strategy=strategy)
    assert "build_classifier(..., strategy=strategy)" in str(caught.value)
    assert not outside.compiled  # rejected before anything was done to it

    other = tf.distribute.MirroredStrategy(["/cpu:0"])
    inside = xferclass.build_classifier("mobilenet_v2", strategy=other, **options)
    with pytest.raises(ValueError, match="built under another"):
        xferclass.fit(inside, train, epochs=1, verbose=0, strategy=strategy)
    with pytest.raises(ValueError, match="built under another"):
        xferclass.fine_tune(inside, train, fine_tune_epochs=1, verbose=0, strategy=strategy)

    # The default strategy (tf.distribute.get_strategy() outside any scope) means none.
    keras.utils.set_random_seed(0)
    history = xferclass.fit(
        outside, train, epochs=1, verbose=0, strategy=tf.distribute.get_strategy()
    )
    assert len(history.epoch) == 1

    # Left out, the strategy is the one the model was built under.
    history = xferclass.fit(inside, train, epochs=1, verbose=0)
    assert len(history.epoch) == 1
    assert type(inside.optimizer.variables[0].value).__name__ == "MirroredVariable"
