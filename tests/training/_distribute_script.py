"""Train a tiny classifier under a tf.distribute strategy and save what came out.

Run by ``tests/training/test_distribute.py`` in subprocesses, because a strategy's
devices (two logical CPUs, or a cluster of worker processes) must be set up
before TensorFlow initialises its runtime, which the pytest process has done.

Usage::

    python tests/training/_distribute_script.py {single,mirrored,multiworker} OUT.npz

``single`` trains on one device, ``mirrored`` under a ``MirroredStrategy`` over
two logical CPUs, ``multiworker`` under a ``MultiWorkerMirroredStrategy`` whose
cluster ``TF_CONFIG`` describes. Each mode trains the same model (same seed,
same initial weights) on the same global batches four times: ``fit`` with the
feature cache, with ``cache=False`` and with the cache shuffled every epoch, and
``fine_tune`` with its cut-point cache. It writes
the trainable weights before and after, the predictions, the losses and what
kind of variables the model and optimizer got to ``OUT.npz``.
"""

from __future__ import annotations

import hashlib
import os
import sys
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

SIZE = 32
CLASSES = 3
TRAIN = 48  # a multiple of BATCH, and BATCH of the replica count: every replica
BATCH = 8  # gets a full share of every global batch, as on one device.
EPOCHS = 2


def arrays(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Images whose class shows in a bright channel, and one-hot labels."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % CLASSES)
    images = rng.uniform(0, 120, (n, SIZE, SIZE, 3)).astype("float32")
    for k in range(CLASSES):
        images[labels == k, :, :, k] += 130.0
    return images, np.eye(CLASSES, dtype="float32")[labels]


def calibrate(model: Any, images: np.ndarray) -> None:
    """Set the random backbone's BatchNorm statistics from ``images``.

    With random weights the activations of a deep network vanish layer after
    layer (MobileNetV2's pooled features come out near 1e-12), and the head
    would learn from nothing but its biases. One pass in training mode with
    momentum 0 makes every BatchNorm layer normalise the data, so the features
    differ from image to image. Deterministic, hence the same in every process.
    """
    import keras

    from xferclass.models import split_classifier

    parts = split_classifier(model)
    assert parts is not None
    for layer in parts.backbone.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.0
    parts.backbone.trainable = True
    parts.backbone(parts.preprocessing(images), training=True)
    parts.backbone.trainable = False


def make_strategy(mode: str) -> Any:
    if mode == "single":
        return None
    if mode == "mirrored":
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2
        )
        return tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    if mode == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise SystemExit(f"unknown mode {mode!r}")


def main(mode: str, out: str) -> None:
    strategy = make_strategy(mode)

    import keras

    import xferclass

    x_train, y_train = arrays(TRAIN, seed=0)
    x_val, y_val = arrays(16, seed=1)
    train = tf.data.Dataset.from_tensor_slices((x_train, y_train)).batch(BATCH)
    validation = tf.data.Dataset.from_tensor_slices((x_val, y_val)).batch(BATCH)

    result: dict[str, Any] = {
        "replicas": strategy.num_replicas_in_sync if strategy else 1,
        "mirrored": isinstance(strategy, tf.distribute.MirroredStrategy),
        "multi_worker": isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy),
    }

    def run(tag: str, model: Any) -> Any:
        """Train ``model`` one way: the cache, plain Keras (``cache=False``), the
        cache shuffled every epoch, or fine_tune with its cut-point cache."""
        if tag == "finetune":
            return xferclass.fine_tune(
                model, train, validation, head_epochs=1, fine_tune_epochs=1, unfreeze=6,
                head_learning_rate=0.01, learning_rate=1e-4, verbose=2, seed=0,
                strategy=strategy,
            )  # fmt: skip
        data = train
        # Several workers shuffle with seed=None: they rely on the fixed order
        # that fit then falls back to (seed 0), the seed the others pass.
        seed = None if tag == "shuffled" and mode == "multiworker" else 0
        cache = tag != "nocache"
        # Validation through the whole model would cost another trace of it. The
        # cached and uncached runs see the batches in the dataset's order and keep
        # their last epoch, so that they must agree; "shuffled" reshuffles the
        # cached rows every epoch.
        return xferclass.fit(
            model, data, validation if cache else None, epochs=EPOCHS, learning_rate=0.01,
            cache=cache, verbose=2, seed=seed, strategy=strategy,
            shuffle=tag == "shuffled", restore_best=False,
        )  # fmt: skip

    for tag in ("cache", "nocache", "shuffled", "finetune"):
        keras.utils.set_random_seed(0)
        model = xferclass.build_classifier(
            "mobilenet_v2", num_classes=CLASSES, weights=None, input_size=SIZE,
            head_units=8, strategy=strategy,
        )  # fmt: skip
        calibrate(model, x_train)
        kinds = {type(w.value).__name__ for w in model.weights}
        initial = b"".join(np.ascontiguousarray(w).tobytes() for w in model.get_weights())
        result[f"{tag}_initial_sha256"] = hashlib.sha256(initial).hexdigest()
        for k, weight in enumerate(model.trainable_weights):
            result[f"{tag}_start_{k}"] = np.asarray(weight.numpy())
        history = run(tag, model)
        kinds |= {type(v.value).__name__ for v in model.optimizer.variables}
        result[f"{tag}_variable_kinds"] = np.array(sorted(kinds))
        # After fine_tune these include the unfrozen top of the backbone.
        for k, weight in enumerate(model.trainable_weights):
            result[f"{tag}_trained_{k}"] = np.asarray(weight.numpy())
            # The copies of a mirrored variable (one per local replica) agree.
            copies = getattr(weight.value, "values", (weight.value,))
            spread = max(float(np.abs(np.asarray(c) - weight.numpy()).max()) for c in copies)
            result[f"{tag}_copies_{k}"] = len(copies)
            result[f"{tag}_copy_spread_{k}"] = spread
        result[f"{tag}_predictions"] = np.asarray(model(x_train, training=False))
        # predict and evaluate_regression_style give one row per image under a strategy.
        result[f"{tag}_predict"] = xferclass.predict(model, x_train, batch_size=BATCH).probabilities
        result[f"{tag}_evaluate_n"] = xferclass.evaluate_regression_style(model, validation)["n"]
        for key in ("loss", "val_loss"):
            if key in history.history:
                result[f"{tag}_{key}"] = np.asarray(history.history[key])
    np.savez(out, **result)
    print(f"wrote {out}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
