"""A kill at any instant leaves the previous best checkpoint loadable.

Training runs in subprocesses that save the resume state (throttled, and at the end of
each phase) and the best model at improvements (tiny epochs, so much of the time is spent
saving). Each is killed with SIGKILL at a random
moment after its first checkpoint exists; the checkpoint must then load.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import xferclass
from xferclass.core._checkpoint import read_resume_state

SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np
    import tensorflow as tf
    sys.path.insert(0, {tests!r})
    from helpers import tiny_dataset, tiny_model
    import xferclass

    model = tiny_model()
    # Validation on shuffled labels makes "best" change often, so saves are frequent.
    xferclass.fit(model, tiny_dataset(32), tiny_dataset(16, seed=7), epochs=10_000,
                  checkpoint={path!r}, verbose=0, learning_rate=0.05,
                  cache_dir={folder!r})
    """
)


@pytest.mark.slow
def test_sigkill_at_random_moments_never_corrupts_the_checkpoint(tmp_path: Path) -> None:
    tests = str(Path(__file__).parents[1])
    rng = random.Random(1234)
    runs = []
    for k in range(3):
        path = tmp_path / f"run{k}" / "best.keras"
        path.parent.mkdir()
        process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                SCRIPT.format(tests=tests, path=str(path), folder=str(path.parent)),
            ],
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        runs.append((process, path, rng.uniform(0.2, 3.0)))
    try:
        for process, path, delay in runs:
            # A guard against a hang, not a timing: generous for a loaded machine.
            deadline = time.monotonic() + 900
            while not path.exists():
                assert process.poll() is None, process.communicate()[1].decode()[-2000:]
                assert time.monotonic() < deadline, "no checkpoint within 900 s"
                time.sleep(0.05)
            time.sleep(delay)
            last_state = path.parent / "best.resume.npz"
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=30)
            assert process.returncode == -signal.SIGKILL
            model = xferclass.load_model(path)
            assert model.output_shape == (None, 3)
            if last_state.exists():
                meta, weights, _ = read_resume_state(str(last_state))
                assert meta["epoch"] >= 1 and "val_accuracy" in meta["history"]
                assert len(weights) == meta["weights"] > 0
    finally:
        for process, _, _ in runs:
            if process.poll() is None:
                process.kill()
                process.wait()
            assert process.stderr is not None
            process.stderr.close()


class _Clock:
    """A clock that moves only when told: training takes no time unless a test says so."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now


@pytest.mark.parametrize("epoch_seconds", [0.0, 1000.0])
def test_resume_state_writes_stay_within_their_share_and_are_fsynced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, epoch_seconds: float
) -> None:
    """Each resume write costs 10 s: with instant epochs only the first and the phase's
    last are written; with long epochs every one is. Every write reaches the disk."""
    import keras

    from helpers import tiny_dataset, tiny_model
    from xferclass.core import _files
    from xferclass.training import _engine

    clock = _Clock()
    written: list[int] = []
    real = _engine.write_resume_state

    def slow_write(path: str, model: object, optimizer: object, meta: dict) -> None:
        written.append(meta["epoch"])
        clock.now += 10.0
        real(path, model, optimizer, meta)

    class Elapse(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: object = None) -> None:
            clock.now += epoch_seconds

    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(_files.os, "fsync", fsync)
    monkeypatch.setattr(_engine, "time", clock)
    monkeypatch.setattr(_engine, "write_resume_state", slow_write)
    path = tmp_path / "best.keras"
    xferclass.fit(tiny_model(), tiny_dataset(), epochs=5, checkpoint=path, verbose=0,
                  callbacks=[Elapse()])  # fmt: skip
    assert written == ([1, 5] if epoch_seconds == 0 else [1, 2, 3, 4, 5])
    meta, weights, _ = read_resume_state(str(tmp_path / "best.resume.npz"))
    assert meta["epoch"] == 5 and len(meta["history"]["loss"]) == 5
    assert len(weights) == meta["weights"] > 0
    # The temporary file is fsynced before it is renamed over the state.
    assert any(".resume.npz" in name for name in synced)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.keras", "best.resume.npz"]
