"""Training must never give a silently wrong answer.

Each test here pins one defect a code read found: sample weights dropped by the
cache or the augmentation, class orders compared only by count, the user's
``jit_compile``/``run_eagerly`` lost, ``class_weight="balanced"`` on multi-hot
rows, and file descriptors or spill files left behind.
"""

from __future__ import annotations

import logging
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from sklearn.utils.class_weight import compute_class_weight

import xferclass
from helpers import CLASSES, tiny_arrays, tiny_dataset, tiny_model, twin
from xferclass.core._compile import balanced_class_weights, resolve_class_weight, resolve_compile
from xferclass.core._errors import DatasetError, InvalidArgumentError
from xferclass.evaluation import _headcv
from xferclass.runtime._common import model_class_names, store_class_names
from xferclass.training import _cache

BATCH = 8


def weighted_dataset(n: int, seed: int, weights: np.ndarray | None = None) -> tf.data.Dataset:
    """``(images, labels, weights)`` batches; by default weights that differ a lot by row."""
    images, labels = tiny_arrays(n, seed=seed)
    if weights is None:
        weights = np.random.default_rng(seed).uniform(0.0, 3.0, n).astype("float32")
        weights[labels[:, 1] == 1] *= 4.0
    dataset = tf.data.Dataset.from_tensor_slices((images, labels, weights.astype("float32")))
    dataset = dataset.batch(BATCH)
    dataset.class_names = ["red", "green", "blue"]
    return dataset


def notebook_compile(model: keras.Model) -> None:
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2), loss="categorical_crossentropy", metrics=["accuracy"]
    )


# --------------------------------------------------------------------------- sample weights


@pytest.mark.parametrize("cache", [True, False])
def test_sample_weights_train_as_in_plain_keras(cache):
    train, validation = weighted_dataset(32, seed=0), weighted_dataset(16, seed=1)
    plain = tiny_model()
    notebook_compile(plain)
    ours = twin(plain)
    history = xferclass.fit(
        ours, train, validation, epochs=2, learning_rate=1e-2, cache=cache, shuffle=False,
        restore_best=False, verbose=0,
    )  # fmt: skip
    theirs = plain.fit(train, validation_data=validation, epochs=2, shuffle=False, verbose=0)
    for key in ("loss", "val_loss"):
        np.testing.assert_allclose(history.history[key], theirs.history[key], rtol=1e-4)
    probe, _ = tiny_arrays(8, seed=5)
    np.testing.assert_allclose(
        ours.predict(probe, verbose=0), plain.predict(probe, verbose=0), atol=1e-4
    )


@pytest.mark.parametrize("cache", [True, False])
def test_zero_sample_weights_stop_augmented_training(cache):
    # Every row weighs 0: the loss is 0 and Adam moves no weight, with the
    # augmented views cached or augmentation run afresh every step.
    model = tiny_model()
    before = [w.copy() for w in model.get_weights()]
    train = weighted_dataset(16, seed=0, weights=np.zeros(16))
    history = xferclass.fit(
        model, train, epochs=2, augment="flip", augment_views=1, cache=cache, seed=3, verbose=0
    )
    assert history.history["loss"] == [0.0, 0.0]
    for old, new in zip(before, model.get_weights()):
        np.testing.assert_array_equal(old, new)


def test_zero_sample_weights_stop_both_phases_of_fine_tune():
    # The top phase trains on activations cached at a cut, then pooled through
    # map_views: the weights must ride along on both caches.
    model = tiny_model()
    before = [w.copy() for w in model.get_weights()]
    train = weighted_dataset(16, seed=0, weights=np.zeros(16))
    history = xferclass.fine_tune(
        model, train, train, head_epochs=1, fine_tune_epochs=1, unfreeze=2, seed=3, verbose=0
    )
    assert history.history["loss"] == [0.0, 0.0] and history.history["val_loss"] == [0.0, 0.0]
    for old, new in zip(before, model.get_weights()):
        np.testing.assert_array_equal(old, new)


def test_class_weight_and_sample_weights_together_are_refused():
    with pytest.raises(InvalidArgumentError, match="class_weight.*sample weights"):
        xferclass.fit(tiny_model(), weighted_dataset(16, 0), class_weight="balanced", verbose=0)


# --------------------------------------------------------------------------- class order


def test_validation_classes_in_another_order_are_refused():
    validation = tiny_dataset(16, seed=1)
    validation.class_names = ["blue", "green", "red"]
    model = tiny_model()
    with pytest.raises(DatasetError) as caught:
        xferclass.fit(model, tiny_dataset(), validation, epochs=1, verbose=0)
    message = str(caught.value)
    assert "['red', 'green', 'blue']" in message and "['blue', 'green', 'red']" in message
    assert model_class_names(model) is None  # nothing stored on refusal


def test_model_classes_in_another_order_are_refused_and_kept():
    model = tiny_model()
    xferclass.fit(model, tiny_dataset(), epochs=1, verbose=0)
    assert model_class_names(model) == ["red", "green", "blue"]
    reordered = tiny_dataset()
    reordered.class_names = ["green", "red", "blue"]
    with pytest.raises(
        DatasetError, match=r"\['red', 'green', 'blue'\].*\['green', 'red', 'blue'\]"
    ):
        xferclass.fit(model, reordered, epochs=1, verbose=0)
    with pytest.raises(DatasetError, match="order"):
        store_class_names(model, ["green", "red", "blue"])
    assert model_class_names(model) == ["red", "green", "blue"]


def test_other_class_names_replace_the_model_s_with_a_warning(caplog):
    model = tiny_model()
    store_class_names(model, ["red", "green", "blue"])
    with caplog.at_level(logging.WARNING, logger="xferclass"):
        store_class_names(model, ["cat", "dog", "fox"])
    assert model_class_names(model) == ["cat", "dog", "fox"]
    assert "['red', 'green', 'blue']" in caplog.text and "['cat', 'dog', 'fox']" in caplog.text


# --------------------------------------------------------------------------- compile


def test_compiled_jit_compile_and_run_eagerly_are_kept():
    model = tiny_model()
    model.compile(
        optimizer="adam", loss="categorical_crossentropy", run_eagerly=True, jit_compile=False
    )
    spec = resolve_compile(model)
    assert spec.run_eagerly is True and spec.jit_compile is False
    assert resolve_compile(model, jit_compile=True).jit_compile is True
    xferclass.fit(model, tiny_dataset(16), epochs=1, cache=False, verbose=0)
    assert model.run_eagerly is True


def test_fit_jit_compile_argument_reaches_a_compiled_model():
    model = tiny_model()
    model.compile(optimizer="adam", loss="categorical_crossentropy", jit_compile=False)
    xferclass.fit(model, tiny_dataset(16), epochs=1, cache=False, jit_compile=True, verbose=0)
    assert model.jit_compile is True


# --------------------------------------------------------------------------- class weights


def test_balanced_class_weights_match_scikit_learn_and_sqrt_has_mean_one():
    labels = np.array([0] * 7 + [1] * 2 + [2] * 11 + [3])
    counts = np.bincount(labels)
    ours = balanced_class_weights(counts)
    theirs = compute_class_weight("balanced", classes=np.arange(4), y=labels)
    np.testing.assert_allclose([ours[k] for k in range(4)], theirs)
    root = balanced_class_weights(counts, kind="sqrt")
    values = np.array([root[k] for k in range(4)])
    np.testing.assert_allclose(values / values[0], np.sqrt(theirs / theirs[0]))
    assert float(values[labels].mean()) == pytest.approx(1.0)
    np.testing.assert_allclose(
        _headcv.class_weight_vector(labels, 4, "sqrt"), values
    )  # one computation for both
    with pytest.raises(InvalidArgumentError, match="kind"):
        balanced_class_weights(counts, kind="inverse")


def test_balanced_class_weight_on_multi_hot_rows_is_refused_clearly():
    # Class 2 only appears with class 0: an argmax would count it 0 times.
    rows = np.array([[1, 0, 1], [1, 0, 1], [0, 1, 0], [1, 0, 0]], np.float32)
    with pytest.raises(InvalidArgumentError, match="multi-label"):
        resolve_class_weight("balanced", CLASSES, lambda: rows)
    soft = np.array([[0.3, 0.7, 0.0], [0.9, 0.1, 0.0], [0.8, 0.2, 0.0], [0.1, 0.2, 0.7]])
    weights = resolve_class_weight("balanced", CLASSES, lambda: soft.astype(np.float32))
    expected = compute_class_weight("balanced", classes=np.arange(3), y=soft.argmax(axis=1))
    np.testing.assert_allclose([weights[k] for k in range(3)], expected)  # rows of one class
    sigmoid = tiny_model(multi_label=True)
    images, _ = tiny_arrays(8)
    dataset = tf.data.Dataset.from_tensor_slices((images, rows[np.arange(8) % 4])).batch(4)
    for weight in ("balanced", {0: 1.0, 1: 2.0, 2: 1.0}):
        with pytest.raises(InvalidArgumentError, match="multi-label"):
            xferclass.fit(sigmoid, dataset, class_weight=weight, epochs=1, verbose=0)


# --------------------------------------------------------------------------- files


def _open_spill_files() -> list[str]:
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if "activations-" in target:
            found.append(target)
    return found


def test_failed_validation_caching_leaves_no_open_file():
    assert _open_spill_files() == []
    empty = tiny_dataset(16).take(0)
    with pytest.raises(DatasetError, match="validation is empty"):
        xferclass.fit(tiny_model(), tiny_dataset(), empty, epochs=1, cache_memory=0,
                      cache_dtype="float32", verbose=0)  # fmt: skip
    assert _open_spill_files() == []


def test_an_extraction_that_fails_midway_leaves_no_open_file():
    calls = []

    def extract(images):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("the runtime died")
        return np.ones((len(images), 4), np.float32)

    with _cache.CacheDirectory() as folder:
        try:
            _cache.cache_split(
                extract, tiny_dataset(32), name="train", directory=folder,
                budget=_cache.Budget(0), verbose=0,
            )  # fmt: skip
        except RuntimeError as error:
            # The traceback keeps the failed call's frame alive, and with it any
            # store it left open: nothing but an explicit close releases it.
            assert "runtime died" in str(error)
            assert _open_spill_files() == []
        else:
            pytest.fail("cache_split did not raise")


def test_closing_an_unfinished_store_closes_its_file(tmp_path):
    store = _cache.ActivationStore((4,), np.float32, _cache.Budget(0), str(tmp_path))
    store.append(np.ones((3, 4), np.float32))
    assert store.on_disk and len(_open_spill_files()) == 1
    store.close()
    assert _open_spill_files() == []


def test_a_spill_folder_that_cannot_be_removed_is_named_in_a_warning(monkeypatch, caplog):
    folder = _cache.CacheDirectory()
    with open(os.path.join(folder.path, "activations-x.bin"), "wb") as handle:
        handle.write(b"rows")

    def refuse(*args, **kwargs):
        raise PermissionError("read-only")

    with monkeypatch.context() as patch, caplog.at_level(logging.WARNING, logger="xferclass"):
        patch.setattr(os, "unlink", refuse)
        folder.close()
    assert folder.path in caplog.text and "activations-x.bin" in caplog.text
    folder.close()  # removable now: no warning, nothing left
    assert not os.path.exists(folder.path)
