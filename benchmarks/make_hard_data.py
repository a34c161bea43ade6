"""Generate an image folder that is hard in the ways clothing is not.

Grayscale, fine texture, 10:1 class imbalance and few images: five classes of
texture patches whose classes differ only in the fine structure (the period of a
grating, a checkerboard against a grating, small dots against fine noise), with
random orientation, contrast, brightness, blur and noise, so that no single global
statistic separates them. Counts per class in ``train`` run from 200 down to 20
(10:1); ``validation`` and ``test`` are balanced (balanced accuracy is then plain
accuracy), and ``test`` is only for reporting, never for choosing anything.

Run::

    python benchmarks/make_hard_data.py --out /tmp/hard-textures --seed 0

Writes ``OUT/{train,validation,test}/<class>/<class>_NNNN.png`` (128x128, grayscale
stored as RGB, as a scanner or a microscope would give it).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

CLASSES = ("grating_fine", "grating_medium", "checker", "dots", "noise")
#: Training images per class: 10:1 from the largest class to the smallest.
TRAIN_COUNTS = (200, 120, 70, 40, 20)
VALIDATION_PER_CLASS = 30
TEST_PER_CLASS = 60
SIZE = 128


def _grating(rng: np.random.Generator, period: float, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    angle = rng.uniform(0, np.pi)
    phase = rng.uniform(0, 2 * np.pi)
    return np.sin(2 * np.pi * (x * np.cos(angle) + y * np.sin(angle)) / period + phase)


def texture(kind: str, rng: np.random.Generator, size: int = SIZE) -> np.ndarray:
    """One grayscale patch of class ``kind``, uint8 of shape (size, size)."""
    y, x = np.mgrid[0:size, 0:size].astype("float64")
    if kind == "grating_fine":
        base = _grating(rng, rng.uniform(3.6, 4.4), y, x)
    elif kind == "grating_medium":
        base = _grating(rng, rng.uniform(5.0, 6.0), y, x)
    elif kind == "checker":
        period = rng.uniform(4.0, 6.0)
        base = _grating(rng, period, y, x) * _grating(rng, period, y, x)
        base = base * 2.0
    elif kind == "dots":
        base = -np.ones((size, size))
        count = int(rng.integers(120, 220))
        for cy, cx in rng.uniform(0, size, (count, 2)):
            radius = rng.uniform(1.0, 1.8)
            base[(y - cy) ** 2 + (x - cx) ** 2 <= radius**2] = 1.0
    elif kind == "noise":
        base = rng.normal(0, 1, (size, size))
        kernel = np.ones(2) / 2  # a little correlation, as fine grain
        base = np.apply_along_axis(lambda r: np.convolve(r, kernel, "same"), 1, base)
    else:
        raise ValueError(f"unknown texture {kind!r}")
    # Slow illumination change, random contrast and brightness, then sensor noise.
    light = _grating(rng, rng.uniform(60, 200), y, x) * rng.uniform(0.0, 0.4)
    image = 128 + rng.uniform(25, 70) * np.clip(base, -1.5, 1.5) + 40 * light
    image += rng.uniform(-30, 30)
    image += rng.normal(0, rng.uniform(8, 25), (size, size))
    return np.clip(image, 0, 255).astype(np.uint8)


def write(root: Path, seed: int = 0) -> dict[str, dict[str, int]]:
    """Write the three splits under ``root``; returns the image counts."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    counts: dict[str, dict[str, int]] = {}
    plan = {
        "train": dict(zip(CLASSES, TRAIN_COUNTS)),
        "validation": dict.fromkeys(CLASSES, VALIDATION_PER_CLASS),
        "test": dict.fromkeys(CLASSES, TEST_PER_CLASS),
    }
    for split, per_class in plan.items():
        counts[split] = {}
        for kind, count in per_class.items():
            folder = root / split / kind
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                gray = texture(kind, rng)
                Image.fromarray(np.stack([gray] * 3, axis=-1)).save(folder / f"{kind}_{i:04d}.png")
            counts[split][kind] = count
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="/tmp/hard-textures", help="output folder")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    args = parser.parse_args()
    counts = write(Path(args.out), args.seed)
    for split, per_class in counts.items():
        print(f"{split}: {per_class}")


if __name__ == "__main__":
    main()
