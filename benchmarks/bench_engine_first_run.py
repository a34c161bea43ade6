"""Where a first ``engine="auto"`` caching pass spends its time, batch by batch.

One process, the clothing images (or generated ones), EfficientNet-Lite0 at
224 px: for each round, from an empty cache (nothing converted, nothing
remembered), the caching pass of ``fit`` on Keras, then ``"auto"`` on a first
run, then ``"auto"`` on the remembered run. Each pass prints its images/s and
its slowest batches, so that the conversion and the timed batches of the first
run show up on their own.

Run::

    python benchmarks/bench_engine_first_run.py --images 3000 --rounds 2
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import _bench
import numpy as np
from bench_engine import _fresh_cache, extractor, pipeline_rate

from xferclass import load_image_dataset
from xferclass.runtime import _runtime
from xferclass.runtime._common import forward_function
from xferclass.training._cache import CacheDirectory, _Budget, cache_split


class _Timed:
    """A forward function that keeps the seconds from each call to the next."""

    def __init__(self, forward: Any) -> None:
        self.forward, self.seconds, self.last = forward, [], time.perf_counter()

    def __call__(self, images: Any) -> Any:
        output = self.forward(images)
        now = time.perf_counter()
        self.seconds.append(now - self.last)
        self.last = now
        return output


def timed_pass(forward: Any, dataset: Any) -> tuple[float, list[float]]:
    timed = _Timed(forward)
    with CacheDirectory() as folder:
        start = timed.last = time.perf_counter()
        split = cache_split(timed, dataset, name="train", directory=folder,
                            budget=_Budget(2**31), verbose=0)  # fmt: skip
        seconds = time.perf_counter() - start
        count = len(split)
        split.close()
    return count / seconds, timed.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    info = _bench.machine()
    sub, weights = extractor("efficientnet_lite0", 224)
    sub.predict_on_batch(np.zeros((2, 224, 224, 3), "float32"))  # trace once
    folder = _bench.image_folder("train", args.images)
    rows = []
    try:
        dataset = load_image_dataset(folder.path, 224, batch_size=32, shuffle=False)
        steps = int(dataset.cardinality())
        pipeline_rate(dataset)  # the files in the page cache for every pass alike
        for round_ in range(args.rounds):
            _fresh_cache()
            for name in ("keras", "auto, first run", "auto, remembered"):
                _runtime._DECISIONS.clear()
                engine = "keras" if name == "keras" else "auto"
                forward = forward_function(sub, engine=engine, steps=steps)
                rate, seconds = timed_pass(forward, dataset)
                slowest = sorted(range(len(seconds)), key=lambda i: -seconds[i])[:3]
                rows.append([
                    str(round_), name, _bench.fmt(rate), _bench.fmt(float(np.median(seconds)), 3),
                    ", ".join(f"#{i}: {seconds[i]:.2f} s" for i in slowest),
                ])  # fmt: skip
                print(" | ".join(rows[-1]), flush=True)
    finally:
        folder.close()
    info.finish()
    print(f"\n{folder.count} images, efficientnet_lite0 ({weights} weights), 224 px, "
          f"batches of 32\n\n{info.markdown()}\n")  # fmt: skip
    print(_bench.table(["round", "pass", "images/s", "median batch s", "slowest batches"], rows))


if __name__ == "__main__":
    main()
