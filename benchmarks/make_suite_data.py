"""Write the data sets of the automatic-recipe suite that are not clothing.

- ``digits``: scikit-learn's 1,797 handwritten digits (real 8x8 grayscale scans,
  shipped with scikit-learn), upscaled to 64 px and split 60/40 into ``train`` and
  ``test``, stratified, with a fixed seed. Orientation matters (6 and 9), so
  rotated views should lose here, and the recipe has to find that out.
- ``ordinal``: generated grades of one defect, hard in the ways real inspection
  data is: grayscale, four *ordinal* grades of a crack on a textured surface whose
  length and contrast grow with a hidden severity, so neighbouring grades look
  alike; labels near a grade boundary are flipped to the neighbouring grade with a
  probability that falls off with the distance to the boundary (annotators
  disagree there), in train and test alike, since both are labelled the same
  way; 14:1 imbalance (560, 200, 100, 40 training images; the test split has the
  same ratios). The crack has any orientation, so the picture has no "up".

Run::

    python benchmarks/make_suite_data.py --out /tmp/suite

Writes ``OUT/{digits,ordinal}/{train,test}/<class>/NNNN.png``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

ORDINAL_TRAIN = (560, 200, 100, 40)
ORDINAL_TEST = (280, 100, 50, 20)
ORDINAL_SIZE = 160


def write_digits(root: Path, seed: int = 0) -> dict[str, int]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(seed)
    counts = {"train": 0, "test": 0}
    for k in range(10):
        rows = rng.permutation(np.flatnonzero(digits.target == k))
        cut = int(round(0.6 * len(rows)))
        for split, chosen in (("train", rows[:cut]), ("test", rows[cut:])):
            folder = root / split / f"digit_{k}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in chosen:
                pixels = (digits.images[i] * (255.0 / 16.0)).astype(np.uint8)
                image = Image.fromarray(255 - pixels).resize((64, 64), Image.BILINEAR)
                image.convert("RGB").save(folder / f"{i:04d}.png")
                counts[split] += 1
    return counts


def _surface(rng: np.random.Generator, size: int) -> np.ndarray:
    noise = rng.normal(0.0, 1.0, (size // 8, size // 8))
    small = Image.fromarray(noise.astype(np.float32))
    coarse = np.asarray(small.resize((size, size), Image.BICUBIC))
    grain = rng.normal(0.0, 1.0, (size, size))
    return 150.0 + 18.0 * coarse + 10.0 * grain


def defect_image(severity: float, rng: np.random.Generator, size: int = ORDINAL_SIZE) -> np.ndarray:
    """A grayscale surface with a crack whose length and contrast grow with ``severity`` (0-4)."""
    image = _surface(rng, size)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    angle = rng.uniform(0, np.pi)
    cy, cx = rng.uniform(0.35, 0.65, 2) * size
    length = (0.08 + 0.14 * severity) * size
    along = (xx - cx) * np.cos(angle) + (yy - cy) * np.sin(angle)
    across = -(xx - cx) * np.sin(angle) + (yy - cy) * np.cos(angle)
    wiggle = 1.5 * np.sin(along / rng.uniform(4, 9) + rng.uniform(0, 6))
    width = 1.0 + 0.35 * severity
    crack = np.exp(-(((across - wiggle) / width) ** 2)) * (np.abs(along) < length / 2)
    image -= (25.0 + 12.0 * severity) * crack
    image *= rng.uniform(0.8, 1.2)  # exposure
    return np.clip(image, 0, 255).astype(np.uint8)


def _severities(counts: tuple[int, ...], rng: np.random.Generator) -> list[tuple[float, int]]:
    found = []
    for grade, count in enumerate(counts):
        for severity in grade + rng.uniform(0.0, 1.0, count):
            found.append((float(severity), grade))
    return found


def noisy_grade(severity: float, grade: int, rng: np.random.Generator) -> int:
    """``grade``, flipped to the neighbour across the nearer boundary with probability
    0.4 at the boundary, falling off with the distance to it."""
    low, high = severity - grade, grade + 1 - severity
    distance, neighbour = (low, grade - 1) if low < high else (high, grade + 1)
    if 0 <= neighbour < len(ORDINAL_TRAIN) and rng.uniform() < 0.4 * np.exp(-distance / 0.15):
        return neighbour
    return grade


def write_ordinal(root: Path, seed: int = 0) -> dict[str, int]:
    rng = np.random.default_rng(seed + 1)
    counts = {"train": 0, "test": 0}
    flipped = 0
    for split, per_grade in (("train", ORDINAL_TRAIN), ("test", ORDINAL_TEST)):
        for severity, grade in _severities(per_grade, rng):
            label = noisy_grade(severity, grade, rng)
            flipped += label != grade
            folder = root / split / f"grade_{label}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(defect_image(severity, rng)).convert("RGB").save(
                folder / f"{counts[split]:04d}.png"
            )
            counts[split] += 1
    counts["labels_flipped"] = flipped
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print("digits", write_digits(args.out / "digits", args.seed))
    print("ordinal", write_ordinal(args.out / "ordinal", args.seed))


if __name__ == "__main__":
    main()
