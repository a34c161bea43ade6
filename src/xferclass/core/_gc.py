"""Full garbage collections while a model converter runs.

tf2onnx deep-copies the whole ONNX graph, weights included, before each of its
graph optimizers (about 24 passes). The copies it drops sit in reference cycles,
which only a full collection frees, and in a process holding TensorFlow's many
long-lived objects Python's rule for full collections (new objects above a quarter
of the long-lived ones) rarely fires during a conversion: converting ResNet50 at
224 px took the process from 0.9 to 7.2 GB. :func:`collecting` runs a full
collection whenever the process has grown by :data:`STEP` from its lowest since the last one, so
the copies are freed as they are dropped: a 3.8 GB peak for ResNet50, for 11 %
more time. A small model (EfficientNet-Lite0, 0.9 GB of growth) never reaches the
step and pays only the last collection, about 0.3 s
(``benchmarks/bench_convert_memory.py``).
"""

from __future__ import annotations

import contextlib
import gc
import os
import threading
from collections.abc import Iterator

__all__ = ["collecting", "resident_bytes"]

#: Growth of the resident memory, in bytes, that triggers a full collection.
STEP = 1024 * 2**20

#: Seconds between two looks at the resident memory, and between two collections
#: where it cannot be read.
POLL, BLIND = 0.05, 1.0


def resident_bytes() -> int | None:
    """This process's resident memory in bytes, from ``/proc/self/statm``; None where
    there is no such file (macOS, Windows)."""
    try:
        with open("/proc/self/statm", "rb") as file:
            return int(file.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError, AttributeError):
        return None


@contextlib.contextmanager
def collecting(step: int | None = None) -> Iterator[None]:
    """Collect garbage in full while the block runs, each time the process's resident
    memory has grown by ``step`` bytes from its lowest since the last collection (once
    a second where it cannot be read); a last collection when the block ends. ``step``
    defaults to :data:`STEP`."""
    step = STEP if step is None else step
    done = threading.Event()

    def watch() -> None:
        low = resident_bytes()
        while not done.wait(POLL if low is not None else BLIND):
            now = resident_bytes()
            if now is None or low is None or now - low >= step:
                gc.collect()
                low = resident_bytes()
            else:  # memory given back lowers the mark the next step counts from
                low = min(low, now)

    thread = threading.Thread(target=watch, name="xferclass-gc", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
        gc.collect()
