"""Full garbage collections while a converter runs (xferclass.core._gc)."""

from __future__ import annotations

import contextlib
import gc
import importlib
import time
import weakref
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from xferclass.core import _gc


class _Cycle:
    """An object in a reference cycle: only a full collection frees it."""

    def __init__(self) -> None:
        self.me = self


@pytest.fixture
def no_automatic_collection() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _dropped_cycle() -> weakref.ref:
    return weakref.ref(_Cycle())


def _freed_within(ref: weakref.ref, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while ref() is not None and time.monotonic() < deadline:
        time.sleep(0.01)
    return ref() is None


def test_resident_bytes_reads_this_process() -> None:
    size = _gc.resident_bytes()
    if size is None:
        pytest.skip("no /proc/self/statm on this system")
    grown = np.ones(256 * 2**20, np.uint8)  # every page touched
    after = _gc.resident_bytes()
    # Other threads may give memory back meanwhile: half the growth is plenty.
    assert after is not None and after - size > 128 * 2**20
    del grown


def test_a_full_collection_runs_each_time_the_process_has_grown_by_a_step(
    no_automatic_collection: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The resident size is a number the test sets, so nothing else in the process (other
    threads, the allocator) can make it grow or shrink under the test."""
    mib = 2**20
    size = [1000 * mib]
    reads = [0]
    collected: list[tuple[int, int]] = []  # (size in MiB, reads so far) at each collection
    collect = gc.collect

    def resident() -> int:
        reads[0] += 1
        return size[0]

    def counting(*args: int) -> int:
        collected.append((size[0] // mib, reads[0]))
        return collect(*args)

    monkeypatch.setattr(_gc, "resident_bytes", resident)
    monkeypatch.setattr(gc, "collect", counting)

    def settle() -> None:  # more than a few looks of the watcher
        time.sleep(5 * _gc.POLL)

    def read_since(count: int) -> bool:  # the watcher has read the size since then
        deadline = time.monotonic() + 5.0
        while reads[0] <= count and time.monotonic() < deadline:
            time.sleep(0.01)
        return reads[0] > count

    def measured_again() -> bool:  # the watcher has read the size after its collection
        return read_since(collected[-1][1])

    ref = _dropped_cycle()
    with _gc.collecting(step=100 * mib):
        size[0] += 99 * mib  # under a step since the block opened
        settle()
        assert collected == [] and ref() is not None
        size[0] += 1 * mib  # a step
        assert _freed_within(ref, 5.0) and measured_again()
        assert [mb for mb, _ in collected] == [1100]
        ref = _dropped_cycle()
        size[0] += 60 * mib  # the step counts from the size after the last collection
        settle()
        assert len(collected) == 1 and ref() is not None
        size[0] += 40 * mib
        assert _freed_within(ref, 5.0) and measured_again()
        assert [mb for mb, _ in collected] == [1100, 1200]
        ref = _dropped_cycle()
        size[0] -= 300 * mib  # memory given back: the next step counts from here
        assert read_since(reads[0])
        size[0] += 100 * mib
        assert _freed_within(ref, 5.0)
        assert [mb for mb, _ in collected] == [1100, 1200, 1000]
    assert [mb for mb, _ in collected] == [1100, 1200, 1000, 1000]  # and one at the end


def test_where_memory_cannot_be_read_it_collects_on_a_clock(
    no_automatic_collection: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_gc, "resident_bytes", lambda: None)
    monkeypatch.setattr(_gc, "BLIND", 0.05)
    with _gc.collecting():
        ref = _dropped_cycle()
        assert _freed_within(ref, 5.0)


def test_the_block_ends_with_a_collection_and_its_errors_pass_through(
    no_automatic_collection: None,
) -> None:
    with pytest.raises(KeyError, match="inside"), _gc.collecting(step=2**40):
        ref = _dropped_cycle()
        raise KeyError("inside")
    assert ref() is None
    assert not any(t.name == "xferclass-gc" for t in __import__("threading").enumerate())


@pytest.mark.parametrize("route", ["engine", "export"])
def test_both_onnx_conversions_run_inside_collecting(
    route: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The engine's conversion and ``export(format="onnx")`` each write their file inside
    the block: none before it opens, one when it closes."""
    pytest.importorskip("onnx")
    pytest.importorskip("tf2onnx")
    import keras

    import xferclass
    from xferclass.runtime import _runtime

    export_module = importlib.import_module("xferclass.export")

    seen: list[list[str]] = []

    @contextlib.contextmanager
    def recording(step: int | None = None) -> Iterator[None]:
        seen.append(sorted(p.name for p in tmp_path.rglob("*.onnx")))
        yield
        seen.append(sorted(p.name for p in tmp_path.rglob("*.onnx")))

    monkeypatch.setattr(_runtime, "collecting", recording)
    monkeypatch.setattr(export_module, "collecting", recording)
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(4, 3, strides=4)(inputs)
    outputs = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, outputs)
    if route == "engine":
        path = _runtime.convert_to_onnx(model, directory=tmp_path)
    else:
        (path,) = xferclass.export(model, tmp_path / "model.onnx", format="onnx")
    assert len(seen) == 2 and seen[0] == [] and seen[1] == [path.name]
