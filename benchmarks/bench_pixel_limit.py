"""What do decompression bombs cost load_image_dataset, and what does the header check cost?

Part 1, memory: a folder of ``--photos`` generated photos (256x256 JPEGs) is loaded
in a fresh process per variant, and the peak RSS (``resource.getrusage``) and the
wall time of ``load_image_dataset`` plus one epoch are reported:

- ``clean``: the photos alone;
- ``bombs, limit on``: plus a valid 20000x20000 PNG (about 400 KB) and a JPEG whose
  header claims 60000x60000, at the default ``max_pixels``;
- ``png bomb, limit off``: the photos plus the PNG with ``max_pixels`` raised above
  400 million, so the PNG is decoded as before the limit existed (the JPEG is left
  out of this variant: it would ask for 10.8 GB).

Part 2, speed: the check of ``--n`` small JPEGs with and without the header reads,
alternating ``--repeats`` times in this one process (the check cache is cleared
before each run; "without" replaces the header parser by one that knows nothing,
so the files are still opened once each for their EXIF orientation).

Run::

    python benchmarks/bench_pixel_limit.py
    python benchmarks/bench_pixel_limit.py --photos 20 --n 20000 --repeats 3
    python benchmarks/bench_pixel_limit.py --part speed --n 20000 --repeats 5
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import textwrap
import time
import warnings
import zlib

import numpy as np
import tensorflow as tf

_MEASURE = textwrap.dedent(
    """
    import json, resource, sys, time, warnings
    import xferclass
    warnings.simplefilter("ignore")
    start = time.perf_counter()
    dataset = xferclass.load_image_dataset(sys.argv[1], 224, batch_size=8,
                                           max_pixels=int(sys.argv[2]))
    batches = sum(1 for _ in dataset)
    seconds = time.perf_counter() - start
    print(json.dumps({"kept": len(dataset.file_paths), "skipped": len(dataset.skipped),
                      "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "seconds": seconds}))
    """
)


def _chunk(kind: bytes, payload: bytes) -> bytes:
    crc = struct.pack(">I", zlib.crc32(kind + payload))
    return struct.pack(">I", len(payload)) + kind + payload + crc


def png_bomb(path: str, side: int = 20000) -> None:
    """A valid all-black grayscale PNG of ``side`` x ``side`` pixels, written by hand."""
    compressor = zlib.compressobj(9)
    row = b"\0" * (side + 1)
    parts = [compressor.compress(row * 1000) for _ in range(side // 1000)]
    parts += [compressor.compress(row * (side % 1000)), compressor.flush()]
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    with open(path, "wb") as file:
        file.write(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header))
        file.write(_chunk(b"IDAT", b"".join(parts)) + _chunk(b"IEND", b""))


def jpeg_claiming(path: str, side: int = 60000) -> None:
    """A small JPEG whose SOF marker claims ``side`` x ``side`` pixels."""
    data = bytearray(tf.io.encode_jpeg(tf.zeros([16, 16, 3], tf.uint8)).numpy())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", side, side)
    with open(path, "wb") as file:
        file.write(bytes(data))


def photos(root: str, count: int) -> None:
    rng = np.random.default_rng(0)
    for i in range(count):
        folder = os.path.join(root, "ab"[i % 2])
        os.makedirs(folder, exist_ok=True)
        pixels = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)
        with open(os.path.join(folder, f"photo_{i:03d}.jpg"), "wb") as file:
            file.write(tf.io.encode_jpeg(pixels, quality=90).numpy())


def measure(folder: str, max_pixels: int) -> dict:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    env.pop("XFERCLASS_MAX_PIXELS", None)
    done = subprocess.run(
        [sys.executable, "-c", _MEASURE, folder, str(max_pixels)],
        capture_output=True, text=True, env=env, check=True,
    )  # fmt: skip
    return json.loads(done.stdout.strip().splitlines()[-1])


def memory(work: str, count: int) -> None:
    from xferclass.data import DEFAULT_MAX_PIXELS

    variants = {}
    for name in ("clean", "bombs", "png"):
        root = os.path.join(work, name)
        photos(root, count)
        if name != "clean":
            png_bomb(os.path.join(root, "a", "huge.png"))
        if name == "bombs":
            jpeg_claiming(os.path.join(root, "b", "claims.jpg"))
        variants[name] = root
    print(f"part 1: {count} photos of 256x256, load_image_dataset(size=224) + one epoch")
    print(f"  {'variant':<24}{'kept':>6}{'skipped':>9}{'peak RSS':>12}{'time':>9}")
    results = {}
    for label, name, limit in (
        ("clean", "clean", DEFAULT_MAX_PIXELS),
        ("bombs, limit on", "bombs", DEFAULT_MAX_PIXELS),
        ("png bomb, limit off", "png", 500_000_000),
    ):
        result = measure(variants[name], limit)
        results[label] = result
        print(
            f"  {label:<24}{result['kept']:>6}{result['skipped']:>9}"
            f"{result['peak_mb']:>9,.0f} MB{result['seconds']:>8.1f}s"
        )
    clean = results["clean"]["peak_mb"]
    print(
        f"  peak RSS over clean: limit on {results['bombs, limit on']['peak_mb'] - clean:+,.0f} "
        f"MB, limit off {results['png bomb, limit off']['peak_mb'] - clean:+,.0f} MB"
    )


def speed(work: str, n: int, repeats: int) -> None:
    from xferclass import data
    from xferclass.data import _filecheck

    root = os.path.join(work, "many")
    variants = [
        tf.io.encode_jpeg(
            np.random.default_rng(i).integers(0, 256, (32, 32, 3), dtype=np.uint8)
        ).numpy()
        for i in range(16)
    ]
    for i in range(n):
        folder = os.path.join(root, "ab"[i % 2])
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, f"img_{i:07d}.jpg"), "wb") as file:
            file.write(variants[i % len(variants)])
    with_headers = _filecheck.header_from_file

    def without_headers(file: object) -> None:
        return None

    times: dict[str, list[float]] = {"with header reads": [], "without": []}
    for _ in range(repeats):
        for label, reader in (("with header reads", with_headers), ("without", without_headers)):
            _filecheck.header_from_file = reader  # type: ignore[assignment]
            _filecheck.clear_check_cache()
            start = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                data.load_image_dataset(root, 32, batch_size=256)
            times[label].append(time.perf_counter() - start)
    _filecheck.header_from_file = with_headers
    print(f"part 2: check of {n:,} JPEGs of 32x32, best of {repeats} alternating runs")
    for label, values in times.items():
        print(f"  {label:<20}{min(values):>7.2f} s  (all: {', '.join(f'{v:.2f}' for v in values)})")
    ratio = min(times["with header reads"]) / min(times["without"])
    print(f"  ratio with/without: {ratio:.2f} (load average {os.getloadavg()[0]:.1f})")


def main() -> None:
    """Run both parts."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=20, help="photos in the memory folders")
    parser.add_argument("--n", type=int, default=20_000, help="files of the speed part")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each speed variant")
    parser.add_argument("--part", choices=["memory", "speed", "both"], default="both")
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="xferclass_bench_pixels_")
    try:
        if args.part in ("memory", "both"):
            memory(work, args.photos)
        if args.part in ("speed", "both"):
            speed(work, args.n, args.repeats)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
