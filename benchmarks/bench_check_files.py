"""How fast does load_image_dataset check a folder's files?

Generates ``--n`` small JPEG files (32x32 by default) in two class folders under
a temporary directory, then times ``load_image_dataset`` on it: listing, the
one-time decode check of every file, EXIF orientation reads and building the
pipeline. ``--bad-fraction`` mixes in bad files (truncated JPEGs, empty files,
HTML saved as .jpg, random bytes), which are skipped with a warning.

Run::

    python benchmarks/bench_check_files.py              # 100,000 files
    python benchmarks/bench_check_files.py --n 20000 --bad-fraction 0.05

The generated files are deleted afterwards (unless ``--keep``).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import tempfile
import time
import warnings

import numpy as np
import tensorflow as tf

from xferclass import data
from xferclass.data import _filecheck, _folders


def _jpeg_variants(size: int, count: int = 64) -> list[bytes]:
    rng = np.random.default_rng(0)
    variants = []
    for _ in range(count):
        pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        variants.append(tf.io.encode_jpeg(pixels, quality=90).numpy())
    return variants


def _bad_file(kind: int, good: bytes, rng: np.random.Generator) -> bytes:
    if kind == 0:
        return good[: len(good) // 2]  # truncated JPEG
    if kind == 1:
        return b""  # empty
    if kind == 2:
        return b"<!DOCTYPE html><html><body>404 Not Found</body></html>"
    return rng.integers(0, 256, 300, dtype=np.uint8).tobytes()  # random bytes


def generate(root: str, n: int, size: int, bad_fraction: float) -> int:
    """Write ``n`` files to ``root/a`` and ``root/b``; return how many are bad."""
    rng = np.random.default_rng(1)
    variants = _jpeg_variants(size)
    for name in ("a", "b"):
        os.makedirs(os.path.join(root, name), exist_ok=True)
    bad = 0
    for i in range(n):
        content = variants[i % len(variants)]
        if rng.random() < bad_fraction:
            content = _bad_file(bad % 4, content, rng)
            bad += 1
        with open(os.path.join(root, "ab"[i % 2], f"img_{i:07d}.jpg"), "wb") as file:
            file.write(content)
    return bad


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def breakdown(root: str) -> None:
    """Time the parts of the check separately (private functions; cache cleared)."""
    _filecheck.clear_check_cache()
    start = time.perf_counter()
    files = [f for c in "ab" for f in _folders.image_files(os.path.join(root, c))[0]]
    listed = time.perf_counter()
    _filecheck.read_facts(files)
    oriented = time.perf_counter()
    ok = _filecheck.decode_pass(files)
    decoded = time.perf_counter()
    print(
        f"  listing {listed - start:.2f} s, header and EXIF reads {oriented - listed:.2f} s "
        "(overlapped "
        f"with decoding in the real check), decode pass {decoded - oriented:.2f} s "
        f"({len(files) / (decoded - oriented):,.0f} files/s, {int((~ok).sum())} failed)"
    )


def main() -> None:
    """Generate a folder and time the check."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="number of files")
    parser.add_argument("--size", type=int, default=32, help="image side in pixels")
    parser.add_argument("--bad-fraction", type=float, default=0.0, help="share of bad files")
    parser.add_argument("--mixed", action="store_true", help="shorthand for --bad-fraction 0.05")
    parser.add_argument("--keep", action="store_true", help="keep the generated folder")
    args = parser.parse_args()
    bad_fraction = 0.05 if args.mixed and not args.bad_fraction else args.bad_fraction

    root = tempfile.mkdtemp(prefix="xferclass_bench_")
    try:
        start = time.perf_counter()
        bad = generate(root, args.n, args.size, bad_fraction)
        print(f"generated {args.n} files ({bad} bad) in {time.perf_counter() - start:.1f} s")

        _filecheck.clear_check_cache()
        start, cpu = time.perf_counter(), _cpu_seconds()
        with warnings.catch_warnings(record=True):
            warnings.simplefilter("always")
            dataset = data.load_image_dataset(root, args.size, batch_size=256, seed=0)
        first, cpu = time.perf_counter() - start, _cpu_seconds() - cpu
        assert len(dataset.skipped) == bad, (len(dataset.skipped), bad)
        print(
            f"load_image_dataset (listing + check + pipeline): {args.n} files in {first:.2f} s "
            f"= {args.n / first:,.0f} files/s; {cpu:.1f} CPU-seconds = "
            f"{args.n / cpu:,.0f} files per CPU-second "
            f"({len(dataset.file_paths)} kept, {len(dataset.skipped)} skipped; "
            f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f})"
        )

        start = time.perf_counter()
        with warnings.catch_warnings(record=True):
            warnings.simplefilter("always")
            data.load_image_dataset(root, args.size, batch_size=256, seed=0)
        again = time.perf_counter() - start
        print(f"second load of the same folder (cached checks): {again:.2f} s")
        breakdown(root)
    finally:
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
