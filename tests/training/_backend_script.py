"""Run xferclass on one Keras backend and save what came out.

Run by ``tests/training/test_backends.py`` in subprocesses, because Keras picks its
backend (``KERAS_BACKEND``) once, when it is first imported.

Usage::

    KERAS_BACKEND=jax python tests/training/_backend_script.py INITIAL.keras WIDE.keras OUT.npz \
        [--devices 2]

Each run loads the same initial model (``INITIAL.keras``, written once by the
test on TensorFlow; ``WIDE.keras`` is another at a larger input, whose last
feature map is wider than one pixel, for ``explain``) and, on the same batches
in the same order, trains it with ``fit`` on the feature cache, with
``fit(cache=False)`` and with ``fine_tune`` and its cut-point cache; then runs
``predict`` (with and without TTA), ``evaluate_regression_style``, ``explain``,
and ``export`` to ONNX read back by onnxruntime. ``--devices 2`` trains under
``keras.distribution.DataParallel`` over two CPU devices (JAX only; ``XLA_FLAGS``
must ask for them before JAX starts, which the test does). It writes the
weights, probabilities, losses and heatmaps to ``OUT.npz``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

# The same images, labels and batches as the tf.distribute tests.
from _distribute_script import BATCH, EPOCHS, TRAIN, arrays  # noqa: E402


def main(initial: str, wide: str, out: str, devices: int) -> None:
    import keras
    import tensorflow as tf

    if devices > 1:
        import jax

        found = jax.devices("cpu")
        assert len(found) == devices, f"asked for {devices} CPU devices, JAX has {len(found)}"
        keras.distribution.set_distribution(keras.distribution.DataParallel(devices=found))

    import xferclass

    x_train, y_train = arrays(TRAIN, seed=0)
    x_val, y_val = arrays(16, seed=1)
    train = tf.data.Dataset.from_tensor_slices((x_train, y_train)).batch(BATCH)
    validation = tf.data.Dataset.from_tensor_slices((x_val, y_val)).batch(BATCH)
    result: dict[str, Any] = {"backend": keras.backend.backend(), "devices": devices}

    for tag in ("cache", "nocache", "finetune"):
        model = xferclass.load_model(initial)
        if tag == "finetune":
            history = xferclass.fine_tune(
                model, train, validation, head_epochs=1, fine_tune_epochs=1, unfreeze=6,
                head_learning_rate=0.01, learning_rate=1e-4, verbose=0, seed=0,
            )  # fmt: skip
        else:
            history = xferclass.fit(
                model, train, validation if tag == "cache" else None, epochs=EPOCHS,
                learning_rate=0.01, cache=tag == "cache", verbose=0, seed=0,
                restore_best=False,
            )  # fmt: skip
        for k, weight in enumerate(model.trainable_weights):
            result[f"{tag}_trained_{k}"] = keras.ops.convert_to_numpy(weight.value)
        sharding = getattr(model.trainable_weights[0].value, "sharding", None)
        result[f"{tag}_weight_devices"] = len(sharding.device_set) if sharding else 1
        result[f"{tag}_predictions"] = keras.ops.convert_to_numpy(model(x_train, training=False))
        for key in ("loss", "val_loss"):
            if key in history.history:
                result[f"{tag}_{key}"] = np.asarray(history.history[key])

    model = xferclass.load_model(initial)
    xferclass.fit(model, train, epochs=EPOCHS, learning_rate=0.01, verbose=0, seed=0)
    result["predict"] = xferclass.predict(model, x_train, batch_size=BATCH).probabilities
    result["predict_flip"] = xferclass.predict(
        model, x_train, batch_size=BATCH, tta="flip"
    ).probabilities
    scores = xferclass.evaluate_regression_style(model, validation)
    result["evaluate"] = np.array([scores[k] for k in ("mae", "mse", "rmse", "r2")])
    result["heatmaps"] = xferclass.explain(xferclass.load_model(wide), x_train[:4])
    with tempfile.TemporaryDirectory() as folder:
        file = Path(folder) / "model.onnx"
        xferclass.export(model, file, format="onnx")
        import onnxruntime

        session = onnxruntime.InferenceSession(str(file), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        result["onnx"] = session.run(None, {name: x_train[:8]})[0]
        # The other formats: SavedModel and LiteRT are written by a TensorFlow process
        # off TensorFlow, OpenVINO from the ONNX file; export checks each against the
        # model in this process before it delivers it.
        written = []
        for format, target in (("saved_model", "saved"), ("litert", "model.tflite"),
                               ("openvino", "model.xml")):  # fmt: skip
            paths = xferclass.export(model, Path(folder) / target, format=format)
            written.append(f"{format}:{len(paths)}:{all(p.exists() for p in paths)}")
        result["formats"] = np.array(written)
        # The command line, on this backend: predict --json on image files.
        import contextlib
        import io
        import json

        from PIL import Image

        from xferclass.cli import main as cli

        saved = Path(folder) / "model.keras"
        xferclass.save_model(model, saved)
        files = []
        for i, pixels in enumerate(x_train[:3]):
            files.append(str(Path(folder) / f"image{i}.png"))
            Image.fromarray(pixels.round().clip(0, 255).astype("uint8")).save(files[-1])
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            assert cli(["predict", str(saved), *files, "--top", "3", "--json"]) == 0
        rows = json.loads(printed.getvalue())
        result["cli_probabilities"] = np.array(
            [[dict((t["class"], t["probability"]) for t in row["top"])[c] for c in "012"]
             for row in rows]
        )  # fmt: skip
        result["cli_reference"] = xferclass.predict(model, files).probabilities
        # The automatic recipe on a small folder, with the tests' tiny backbone.
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' helpers
        import helpers  # noqa: F401 (registers the "test_tiny" backbone)
        from conftest import make_shape_dataset

        root = make_shape_dataset(Path(folder) / "shapes", per_class=10)
        auto = xferclass.train_auto(root, budget="40s", backbone="test_tiny", weights=None, seed=0)
        result["auto_floor"] = json.dumps(auto.report["floor"])
        result["auto_predict"] = xferclass.predict(
            auto.model, sorted(str(f) for f in root.rglob("*.png"))
        ).probabilities
    np.savez(out, **result)
    print(f"wrote {out}", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("initial")
    parser.add_argument("wide")
    parser.add_argument("out")
    parser.add_argument("--devices", type=int, default=1)
    args = parser.parse_args()
    main(args.initial, args.wide, args.out, args.devices)
    sys.exit(0)
