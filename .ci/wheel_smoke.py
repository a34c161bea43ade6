"""The installed wheel works on its own: run from a folder outside the repository.

``.ci/run`` installs the built wheel (not the source tree) into a new virtual
environment and runs this script with that environment's Python, from an empty
temporary folder, so ``import xferclass`` can only find the installed package.
It checks that:

- the package is the installed one (under the environment's site-packages);
- its package data is inside it: the 1000 ImageNet class names and ``py.typed``;
- a tiny classifier trains, evaluates, predicts, saves and loads on generated
  images, with nothing but the wheel's own dependencies (no Pillow, no pytest).

Exits 0 when all hold; any failure raises (exit status 1, with a traceback).
"""

from __future__ import annotations

import importlib.metadata
import os
import sys
import sysconfig
import tempfile
from importlib import resources
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import xferclass  # noqa: E402

SIZE = 32
CLASSES = ("blue", "green", "red")
PER_CLASS = 6


def check_installed() -> None:
    where = Path(xferclass.__file__).resolve()
    site = Path(sysconfig.get_paths()["purelib"]).resolve()
    assert where.is_relative_to(site), f"xferclass imported from {where}, not from {site}"
    version = importlib.metadata.version("xferclass")
    assert version == xferclass.__version__, (version, xferclass.__version__)
    print(f"xferclass {version} imported from {where.parent}")


def check_package_data() -> None:
    package = resources.files("xferclass")
    assert package.joinpath("py.typed").is_file(), "py.typed is missing from the wheel"
    text = (
        resources.files("xferclass.backbones").joinpath("imagenet_classes.txt").read_text("utf-8")
    )
    names = [line.strip() for line in text.splitlines() if line.strip()]
    assert len(names) == 1000 and names[0] == "tench", (len(names), names[:1])
    print("package data: py.typed and the 1000 ImageNet class names are installed")


def write_images(root: Path) -> list[Path]:
    """PNG files, one folder per class, whose class shows in one bright channel."""
    rng = np.random.default_rng(0)
    paths = []
    for channel, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True)
        for k in range(PER_CLASS):
            pixels = rng.uniform(0, 90, (SIZE, SIZE, 3))
            pixels[..., channel] += 160
            path = root / name / f"{name}_{k}.png"
            path.write_bytes(tf.io.encode_png(pixels.astype(np.uint8)).numpy())
            paths.append(path)
    return paths


def train_evaluate_predict(folder: Path) -> None:
    paths = write_images(folder / "images")
    train, validation = xferclass.load_image_dataset(
        folder / "images", SIZE, batch_size=6, seed=0, validation_split=1 / 3, subset="both"
    )
    assert list(train.class_names) == list(CLASSES), train.class_names
    model = xferclass.build_classifier(
        "mobilenet_v2", num_classes=len(CLASSES), weights=None, input_size=SIZE, head_units=8
    )
    history = xferclass.fit(model, train, validation, epochs=2, verbose=0, seed=0)
    assert len(history.history["loss"]) == 2, history.history
    metrics = xferclass.evaluate_regression_style(model, validation)
    assert metrics["n"] == len(paths) // 3, metrics
    assert 0.0 <= metrics["accuracy"] <= 1.0 and metrics["mse"] >= 0.0, metrics
    saved = folder / "model.keras"
    xferclass.save_model(model, saved)
    loaded = xferclass.load_model(saved)
    result = xferclass.predict(loaded, [str(paths[0]), str(paths[-1])])
    assert result.probabilities.shape == (2, len(CLASSES)), result.probabilities.shape
    np.testing.assert_allclose(result.probabilities.sum(axis=1), 1.0, rtol=1e-5)
    assert set(result.predicted_names) <= set(CLASSES), result.predicted_names
    direct = xferclass.predict(model, [str(paths[0]), str(paths[-1])]).probabilities
    np.testing.assert_allclose(result.probabilities, direct, rtol=0, atol=1e-5)
    print(f"train/evaluate/predict on generated images: {metrics}, {result.predicted_names}")


def main() -> int:
    check_installed()
    check_package_data()
    with tempfile.TemporaryDirectory(prefix="xferclass-wheel-") as folder:
        train_evaluate_predict(Path(folder))
    print("wheel smoke test passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
