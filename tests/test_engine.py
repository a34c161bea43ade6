"""The engine against plain Keras: same batches in, same weights out.

The grid covers: compiled by the user or not; cached or not; an xferclass
dataset, a ``keras.utils.image_dataset_from_directory`` one, or a mapped
``tf.data`` one; shuffled with a fixed seed; with and without class weights.
Six cases cover every pair of those choices (a pairwise design) so the grid
stays fast.

Tolerances: both sides run the same float32 operations on the same batches;
what differs is the order of multi-threaded reductions (round-off of a few
ulps, ~1e-7 relative per operation). Through two epochs of a few steps that
stays below 1e-5 relative on the losses; predictions are probabilities, so an
absolute 1e-4 bounds them with room to spare while a wrong batch order, a
dropped class weight or a different loss moves them by 1e-3 or more.
"""

from __future__ import annotations

import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf
from sklearn.utils.class_weight import compute_class_weight

import xferclass
from conftest import make_shape_dataset
from helpers import SIZE, tiny_arrays, tiny_model, twin
from xferclass._cache import epoch_plan

SEED = 7
BATCH = 8
EPOCHS = 2
CLASSES = 3


@pytest.fixture(scope="module")
def imbalanced_dir(tmp_path_factory: pytest.TempPathFactory):
    """Shapes with 8 circles, 4 squares and 8 triangles (class weights matter)."""
    root = make_shape_dataset(tmp_path_factory.mktemp("imbalanced"), per_class=8, seed=3)
    for path in sorted((root / "square").iterdir())[:4]:
        path.unlink()
    yield root
    shutil.rmtree(root, ignore_errors=True)


def make_source(kind: str, folder) -> tf.data.Dataset:
    """A fresh dataset of ``kind``; two calls give the same batches, epoch by epoch."""
    if kind == "xferclass":
        return xferclass.load_image_dataset(folder, SIZE, batch_size=BATCH, seed=SEED)
    if kind == "keras":
        return keras.utils.image_dataset_from_directory(
            folder, image_size=(SIZE, SIZE), batch_size=BATCH, label_mode="categorical",
            shuffle=True, seed=SEED, verbose=False,
        )  # fmt: skip
    images, labels = tiny_arrays(30, seed=4)
    kept = (
        np.flatnonzero(labels[:, 1] == 0)[:16].tolist() + np.flatnonzero(labels[:, 1])[:4].tolist()
    )
    dataset = tf.data.Dataset.from_tensor_slices((images[kept], labels[kept]))
    dataset = dataset.shuffle(len(kept), seed=SEED).batch(BATCH)
    return dataset.map(lambda x, y: (tf.image.flip_left_right(x), y))


def user_compile(model: keras.Model) -> None:
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=0.05, momentum=0.9),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=0.1),
        metrics=[keras.metrics.CategoricalAccuracy(name="acc")],
    )


def notebook_compile(model: keras.Model) -> None:
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy",
        metrics=["accuracy"],
    )  # fmt: skip


def one_pass(dataset: tf.data.Dataset) -> tuple[np.ndarray, np.ndarray]:
    pairs = [(np.asarray(x), np.asarray(y)) for x, y in dataset]
    return np.concatenate([x for x, _ in pairs]), np.concatenate([y for _, y in pairs])


def sklearn_balanced(labels: np.ndarray) -> dict[int, float]:
    y = labels.argmax(axis=1)
    weights = compute_class_weight("balanced", classes=np.arange(CLASSES), y=y)
    return dict(enumerate(weights.tolist()))


CASES = [
    # compiled, cache, source, class_weight
    (False, True, "xferclass", None),
    (True, True, "keras", "balanced"),
    (False, True, "mapped", {0: 1.0, 1: 2.5, 2: 0.5}),
    (True, False, "xferclass", "balanced"),
    (False, False, "keras", {0: 0.5, 1: 2.0, 2: 1.0}),
    (True, False, "mapped", None),
]


@pytest.mark.parametrize(("compiled", "cache", "source", "class_weight"), CASES)
def test_fit_equals_plain_keras_on_the_same_batches(
    imbalanced_dir, compiled, cache, source, class_weight
):
    ours = tiny_model()
    plain = twin(ours)
    for model in (ours, plain):
        (user_compile if compiled else notebook_compile)(model)
    if not compiled:
        ours = twin(plain)  # xferclass compiles it itself
    history = xferclass.fit(
        ours, make_source(source, imbalanced_dir), epochs=EPOCHS, cache=cache, seed=SEED,
        class_weight=class_weight, verbose=0,
    )  # fmt: skip

    reference = make_source(source, imbalanced_dir)
    weights = class_weight
    losses = []
    if cache:
        # The cache holds one pass of the dataset; each epoch reads it in the
        # order epoch_plan draws from the seed and the epoch number.
        images, labels = one_pass(reference)
        if weights == "balanced":
            weights = sklearn_balanced(labels)
        for epoch in range(EPOCHS):
            order, _ = epoch_plan(len(images), 1, seed=SEED, epoch=epoch, shuffle=True)
            step = plain.fit(
                images[order], labels[order], batch_size=BATCH, epochs=epoch + 1,
                initial_epoch=epoch, shuffle=False, class_weight=weights, verbose=0,
            )  # fmt: skip
            losses += step.history["loss"]
    else:
        if weights == "balanced":
            weights = sklearn_balanced(one_pass(reference)[1])
        losses = plain.fit(
            reference, epochs=EPOCHS, class_weight=weights, verbose=0, shuffle=False
        ).history["loss"]

    np.testing.assert_allclose(history.history["loss"], losses, rtol=1e-5)
    probe, _ = tiny_arrays(8, seed=5)
    np.testing.assert_allclose(
        ours.predict(probe, verbose=0), plain.predict(probe, verbose=0), atol=1e-4
    )
    if compiled:
        assert isinstance(ours.optimizer, keras.optimizers.SGD)
        assert "acc" in history.history and "accuracy" not in history.history
