"""Generate an image folder that is hard in the ways clothing is not.

Grayscale, fine texture, 10:1 class imbalance and few images: five classes of
texture patches that differ only in the scale of their fine structure (gratings with
a period of 4 or 5 pixels; noise grain of 1.0 or 1.4 pixels; small dots), under low
contrast, random orientation, brightness, illumination and strong sensor noise, so
that no single global statistic separates them. Counts per class in ``train`` run
from 200 down to 20 (10:1); ``validation`` and ``test`` are balanced (balanced
accuracy is then plain accuracy), and ``test`` is only for reporting, never for
choosing anything.

Run::

    python benchmarks/make_hard_data.py --out /tmp/hard-textures --seed 0

Writes ``OUT/{train,validation,test}/<class>/<class>_NNNN.png`` (128x128, grayscale
stored as RGB, as a scanner or a microscope would give it).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

CLASSES = ("grating_4px", "grating_5px", "grain_fine", "grain_coarse", "dots")
#: Training images per class: 10:1 from the largest class to the smallest.
TRAIN_COUNTS = (200, 100, 60, 40, 20)
VALIDATION_PER_CLASS = 30
TEST_PER_CLASS = 60
SIZE = 128


def _grating(rng: np.random.Generator, period: float, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    angle = rng.uniform(0, np.pi)
    phase = rng.uniform(0, 2 * np.pi)
    return np.sin(2 * np.pi * (x * np.cos(angle) + y * np.sin(angle)) / period + phase)


def _blur(image: np.ndarray, sigma: float) -> np.ndarray:
    radius = max(1, int(3 * sigma))
    t = np.arange(-radius, radius + 1)
    kernel = np.exp(-(t**2) / (2 * sigma**2))
    kernel /= kernel.sum()
    image = np.apply_along_axis(lambda r: np.convolve(r, kernel, "same"), 0, image)
    return np.apply_along_axis(lambda r: np.convolve(r, kernel, "same"), 1, image)


def texture(kind: str, rng: np.random.Generator, size: int = SIZE) -> np.ndarray:
    """One grayscale patch of class ``kind``, uint8 of shape (size, size).

    The pairs differ only in scale: gratings with a period of 4 or 5 pixels, noise
    grain of correlation length 1.0 or 1.4 pixels; dots sit between the two grains.
    Contrast is low and sensor noise high, so the fine structure is all there is.
    """
    y, x = np.mgrid[0:size, 0:size].astype("float64")
    if kind in ("grating_4px", "grating_5px"):
        period = rng.normal(4.0 if kind == "grating_4px" else 5.0, 0.15)
        base = _grating(rng, period, y, x)
    elif kind in ("grain_fine", "grain_coarse"):
        sigma = rng.normal(1.0 if kind == "grain_fine" else 1.4, 0.05)
        base = _blur(rng.normal(0, 1, (size, size)), sigma)
        base /= base.std()
    elif kind == "dots":
        base = np.zeros((size, size))
        count = int(rng.integers(300, 500))
        for cy, cx in rng.uniform(0, size, (count, 2)):
            radius = rng.uniform(0.8, 1.5)
            base[(y - cy) ** 2 + (x - cx) ** 2 <= radius**2] = rng.choice((-1.0, 1.0))
        base = _blur(base, 0.7)
        base /= base.std() + 1e-9
    else:
        raise ValueError(f"unknown texture {kind!r}")
    # Slow illumination change, random contrast and brightness, then sensor noise.
    light = _grating(rng, rng.uniform(60, 200), y, x) * rng.uniform(0.0, 30.0)
    image = 128 + rng.uniform(8, 30) * np.clip(base, -2.5, 2.5) + light
    image += rng.uniform(-40, 40)
    image += rng.normal(0, rng.uniform(10, 25), (size, size))
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
