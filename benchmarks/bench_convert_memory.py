"""Peak memory of converting a backbone to ONNX, with and without ``_gc.collecting``.

Each conversion runs in a fresh child process (``convert_to_onnx`` into an empty
cache folder) and reports its own peak resident memory (``ru_maxrss``) and its
seconds; the two kinds alternate over ``--repeats`` rounds, in one run.

Run::

    python benchmarks/bench_convert_memory.py --repeats 3              # resnet50, lite0
    python benchmarks/bench_convert_memory.py --backbones xception --size 71
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import _bench

CHILD = r"""
import contextlib, json, resource, sys, tempfile, time
import numpy as np
import xferclass
from xferclass.core import _gc
from xferclass.runtime import _runtime
name, size, step = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
if step:
    _gc.STEP = step * 2**20
else:
    _runtime.collecting = contextlib.nullcontext
model = xferclass.build_classifier(name, num_classes=3, input_size=size, weights=None)
import keras
sub = keras.Model(model.inputs, model.get_layer("pool").output)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
_runtime.convert_to_onnx(sub, directory=tempfile.mkdtemp())
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"before_mb": before / 1024, "peak_mb": peak / 1024, "seconds": seconds}))
"""


def convert(name: str, size: int, step: int) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-c", CHILD, name, str(size), str(step)],
                         capture_output=True, text=True, check=True)  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", nargs="+", default=["resnet50", "efficientnet_lite0"])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument(
        "--steps",
        nargs="+",
        type=int,
        default=[0, 512, 1024],
        help="growth steps in MB between collections; 0 converts plainly",
    )
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    info = _bench.machine()
    rows = []
    for name in args.backbones:
        runs: dict[int, list[dict[str, float]]] = {step: [] for step in args.steps}
        for round_ in range(args.repeats):  # the order turns each round
            turn = round_ % len(args.steps)
            for step in args.steps[turn:] + args.steps[:turn]:
                runs[step].append(convert(name, args.size, step))
                print(name, step or "plain", runs[step][-1], flush=True)
        plain = min(r["peak_mb"] for r in runs[args.steps[0]])
        for step in args.steps:
            peak = min(r["peak_mb"] for r in runs[step])
            rows.append([
                name, f"{step} MB" if step else "plain",
                _bench.fmt(min(r["before_mb"] for r in runs[step])), _bench.fmt(peak),
                f"{plain / peak:.2f}x", _bench.fmt(min(r["seconds"] for r in runs[step])),
            ])  # fmt: skip
    info.finish()
    headers = ["backbone", "collections every", "before MB", "peak MB",
               f"{args.steps[0] or 'plain'} / this", "seconds"]  # fmt: skip
    print(f"\n{args.size} px, weights=None, best of {args.repeats}\n\n{info.markdown()}\n")
    print(_bench.table(headers, rows))


if __name__ == "__main__":
    main()
