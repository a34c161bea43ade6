"""``fit``'s and ``fine_tune``'s ``deadline=``: the engine stops before an epoch that would
end past it, cuts an epoch that runs past it, starts no later phase, and says so."""

from __future__ import annotations

import keras
import pytest

import xferclass
from helpers import tiny_dataset, tiny_model
from xferclass.training import _engine


class _Tick(keras.callbacks.Callback):
    """Each training batch takes one second of the fake clock."""

    def __init__(self, now: list[float]) -> None:
        super().__init__()
        self.now = now

    def on_train_batch_begin(self, batch: int, logs: object = None) -> None:
        self.now[0] += 1.0


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    now = [0.0]
    monkeypatch.setattr(_engine, "_monotonic", lambda: now[0])
    return now


def test_no_epoch_starts_that_would_end_past_the_deadline(clock: list[float]) -> None:
    model = tiny_model()
    # 48 images in batches of 16: 3 s an epoch. After epoch 2 (6 s) a third would end at 9 s.
    history = xferclass.fit(model, tiny_dataset(), epochs=10, verbose=0, seed=0,
                            callbacks=[_Tick(clock)], deadline=8.5)  # fmt: skip
    assert len(history.history["loss"]) == 2 and history.epochs_completed == 2
    assert "stopped after epoch 2" in history.stopped_for_time
    free = xferclass.fit(tiny_model(), tiny_dataset(), epochs=2, verbose=0, seed=0)
    assert free.stopped_for_time is None and free.epochs_completed == 2


def test_an_epoch_running_past_the_deadline_stops_after_its_batch(clock: list[float]) -> None:
    history = xferclass.fit(tiny_model(), tiny_dataset(), epochs=10, verbose=0, seed=0,
                            callbacks=[_Tick(clock)], deadline=1.5)  # fmt: skip
    assert clock[0] == 2.0  # the second batch crossed it; the third never ran
    assert history.epochs_completed == 0 and len(history.history["loss"]) == 1
    assert history.stopped_for_time.startswith("epoch 1 stopped after batch 2")


def test_no_phase_starts_after_the_deadline_stopped_one(clock: list[float]) -> None:
    history = xferclass.fine_tune(
        tiny_model(), tiny_dataset(), head_epochs=5, fine_tune_epochs=5, unfreeze=0.5, verbose=0,
        seed=0, callbacks=[_Tick(clock)], deadline=7.0,
    )  # fmt: skip
    assert set(history.history["phase"]) == {1.0} and history.epochs_completed == 2


@pytest.mark.parametrize("deadline", ["soon", float("nan"), True])
def test_a_deadline_that_is_not_a_time_is_refused(deadline: object) -> None:
    with pytest.raises(xferclass.InvalidArgumentError, match="deadline="):
        xferclass.fit(tiny_model(), tiny_dataset(), epochs=1, verbose=0,
                      deadline=deadline)  # type: ignore[arg-type]  # fmt: skip
