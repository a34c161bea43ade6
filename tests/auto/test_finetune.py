"""The automatic recipe's fine-tuning in its training views: batches and updates."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

import xferclass
from helpers import tiny_arrays, tiny_model
from xferclass.auto import _finetune
from xferclass.evaluation._tta import VIEWS

#: NumPy's versions of the views, for reference.
REFERENCE = {
    "plain": lambda a: a,
    "hflip": lambda a: a[:, :, ::-1],
    "vflip": lambda a: a[:, ::-1],
    "rot90": lambda a: np.rot90(a, 1, axes=(1, 2)),
    "rot270": lambda a: np.rot90(a, 3, axes=(1, 2)),
}

#: The same views in TensorFlow, for the stacked batch.
REFERENCE_TF = {
    "plain": lambda a: a,
    "hflip": lambda a: tf.reverse(a, [2]),
    "vflip": lambda a: tf.reverse(a, [1]),
    "rot90": lambda a: tf.image.rot90(a, 1),
    "rot270": lambda a: tf.image.rot90(a, 3),
}


def _batches(n: int, batch_size: int) -> tuple[tf.data.Dataset, np.ndarray, np.ndarray]:
    images, labels = tiny_arrays(n)
    return tf.data.Dataset.from_tensor_slices((images, labels)).batch(batch_size), images, labels


def test_each_batch_of_images_is_followed_by_its_other_views_at_the_same_size() -> None:
    dataset, images, labels = _batches(10, 4)  # batches of 4, 4 and 2
    views = _finetune.with_training_views(dataset, "rotations")
    assert int(views.cardinality()) == 3 * len(VIEWS)
    got = list(views.as_numpy_iterator())
    assert len(got) == 3 * len(VIEWS)
    for k, (x, y) in enumerate(got):
        rows = slice(4 * (k // len(VIEWS)), 4 * (k // len(VIEWS)) + 4)
        np.testing.assert_array_equal(x, REFERENCE[VIEWS[k % len(VIEWS)]](images[rows]))
        np.testing.assert_array_equal(y, labels[rows])
    flips = list(_finetune.with_training_views(dataset, "flip").as_numpy_iterator())
    assert [len(x) for x, _ in flips] == [4, 4, 4, 4, 2, 2]
    np.testing.assert_array_equal(flips[1][0], images[:4, :, ::-1])
    assert _finetune.with_training_views(dataset, "plain") is dataset


@pytest.mark.parametrize("batches, moves", [(len(VIEWS) - 1, False), (len(VIEWS), True)])
def test_fine_tuning_updates_once_per_batch_of_images_in_every_view(
    batches: int, moves: bool
) -> None:
    dataset, _, _ = _batches(4 * batches, 4)
    model = tiny_model()
    before = model.get_weights()
    xferclass.fine_tune(
        model,
        dataset,
        head_epochs=0,
        fine_tune_epochs=1,
        unfreeze=1.0,
        optimizer=_finetune.optimizer_for("rotations"),
        verbose=0,
        seed=0,
    )
    changed = [not np.array_equal(a, b) for a, b in zip(before, model.get_weights())]
    assert any(changed) is moves


def test_an_update_over_the_views_batch_by_batch_is_the_stacked_batchs_update() -> None:
    """The views one batch at a time with the gradients averaged over them (what the
    recipe does) move the weights as one batch of every image in every view would."""
    dataset, _, _ = _batches(8, 8)
    stacked = dataset.map(
        lambda x, y: (
            tf.concat([REFERENCE_TF[name](x) for name in VIEWS], 0),
            tf.tile(y, [len(VIEWS), 1]),
        )
    )
    runs = {}
    for name, data, steps in (
        ("stacked", stacked, None),
        ("per view", _finetune.with_training_views(dataset, "rotations"), len(VIEWS)),
    ):
        model = tiny_model()
        start = model.get_weights()
        optimizer = keras.optimizers.SGD(0.5, gradient_accumulation_steps=steps)
        xferclass.fine_tune(
            model,
            data,
            head_epochs=0,
            fine_tune_epochs=1,
            unfreeze=1.0,
            optimizer=optimizer,
            verbose=0,
            seed=0,
            cache=False,
        )
        runs[name] = [after - first for first, after in zip(start, model.get_weights())]
    scale = max(float(np.abs(d).max()) for d in runs["stacked"])
    assert scale > 0
    for a, b in zip(runs["per view"], runs["stacked"]):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4 * scale)


def test_the_optimizer_averages_over_the_views_of_its_choice() -> None:
    assert _finetune.optimizer_for("plain").gradient_accumulation_steps is None
    assert _finetune.optimizer_for("flip").gradient_accumulation_steps == 2
    adam = _finetune.optimizer_for("rotations")
    assert adam.gradient_accumulation_steps == len(VIEWS)
    assert float(adam.learning_rate) == pytest.approx(_finetune.LEARNING_RATE)
