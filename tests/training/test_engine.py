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

import logging
import re
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf
from sklearn.utils.class_weight import compute_class_weight

import xferclass
from conftest import make_shape_dataset
from helpers import SIZE, tiny_arrays, tiny_dataset, tiny_model, twin
from xferclass.core._compile import balanced_class_weight, default_objective
from xferclass.training._cache import epoch_plan

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
            # From a dataset of its own: the labels of a load_image_dataset are
            # known without a pass, which would move the reference's shuffles on.
            weights = sklearn_balanced(one_pass(make_source(source, imbalanced_dir))[1])
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


# --------------------------------------------------------------------------- compile


def test_balanced_class_weight_matches_scikit_learn():
    rng = np.random.default_rng(0)
    labels = rng.choice(4, size=101, p=[0.6, 0.25, 0.1, 0.05])
    ours = balanced_class_weight(np.eye(4)[labels], 4)
    theirs = compute_class_weight("balanced", classes=np.arange(4), y=labels)
    np.testing.assert_allclose([ours[k] for k in range(4)], theirs, rtol=1e-12)
    with pytest.raises(xferclass.DatasetError, match=r"classes \[3\] have no image"):
        balanced_class_weight(np.array([0, 1, 2, 1]), 4)


def test_bad_class_weight_arguments():
    for bad, kind in (("uniform", ValueError), ({0: 1.0, 5: 2.0}, ValueError), ([1, 2], TypeError)):
        with pytest.raises(kind, match="class_weight"):
            xferclass.fit(tiny_model(), tiny_dataset(), class_weight=bad, verbose=0)


def test_a_compiled_model_keeps_its_compile_and_learning_rate_is_applied(caplog):
    model = tiny_model()
    optimizer = keras.optimizers.SGD(learning_rate=0.1, momentum=0.5)
    loss = keras.losses.CategoricalFocalCrossentropy()
    model.compile(optimizer=optimizer, loss=loss, metrics=[keras.metrics.AUC(name="auc")])
    validation = tiny_dataset(24, seed=1)
    with caplog.at_level(logging.INFO, logger="xferclass"):
        history = xferclass.fit(model, tiny_dataset(), validation, epochs=2, learning_rate=0.01,
                                verbose=0)  # fmt: skip
    assert model.optimizer is optimizer and model.loss is loss
    assert float(optimizer.learning_rate) == pytest.approx(0.01)
    assert "applying learning_rate=0.01" in caplog.text
    # No accuracy metric: the best epoch is the one of lowest validation loss.
    assert {"auc", "val_auc"} <= set(history.history) and history.monitor == "val_loss"
    # The head trained with the focal loss: evaluating it again gives the logged value.
    logged = history.history["val_loss"][history.best_epoch - 1]
    assert model.evaluate(validation, verbose=0, return_dict=True)["loss"] == pytest.approx(
        logged, rel=1e-4
    )


def test_keyword_overrides_and_label_smoothing():
    model = tiny_model()
    xferclass.fit(model, tiny_dataset(), epochs=1, optimizer="sgd", label_smoothing=0.2,
                  metrics=["categorical_accuracy"], verbose=0)  # fmt: skip
    assert isinstance(model.optimizer, keras.optimizers.SGD)
    assert isinstance(model.loss, keras.losses.CategoricalCrossentropy)
    assert model.loss.get_config()["label_smoothing"] == pytest.approx(0.2)
    with pytest.raises(xferclass.InvalidArgumentError, match="label_smoothing=0.1 applies"):
        xferclass.fit(tiny_model(), tiny_dataset(), loss="mse", label_smoothing=0.1, verbose=0)
    with pytest.raises(xferclass.InvalidArgumentError, match="optimizer='sgdx'"):
        xferclass.fit(tiny_model(), tiny_dataset(), optimizer="sgdx", verbose=0)


def test_a_sigmoid_output_trains_multi_label_on_the_cache():
    model = tiny_model()
    model.get_layer("predictions").activation = keras.activations.sigmoid
    assert default_objective(model) == ("binary_crossentropy", ["binary_accuracy"])
    images, labels = tiny_arrays(24)
    labels[:, 0] = 1.0  # multi-hot: every image also has class 0
    data = tf.data.Dataset.from_tensor_slices((images, labels)).batch(8)
    history = xferclass.fit(model, data, data, epochs=3, learning_rate=0.01, verbose=0)
    assert model.loss == "binary_crossentropy"
    assert history.monitor == "val_binary_accuracy"
    assert history.history["loss"][-1] < history.history["loss"][0]
    probabilities = model.predict(images, verbose=0)
    assert probabilities[:, 0].min() > 0.5  # independent probabilities, not a softmax


def test_fine_tune_derives_each_phase_optimizer_from_the_users():
    seen = []

    class Record(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            optimizer = self.model.optimizer
            seen.append((type(optimizer).__name__, float(optimizer.learning_rate),
                         optimizer.get_config()["nesterov"]))  # fmt: skip

    model = tiny_model()
    model.compile(optimizer=keras.optimizers.SGD(0.5, momentum=0.9, nesterov=True),
                  loss="categorical_crossentropy", metrics=["accuracy"])  # fmt: skip
    xferclass.fine_tune(model, tiny_dataset(), head_epochs=1, fine_tune_epochs=1, unfreeze=3,
                        head_learning_rate=0.02, learning_rate=0.003, callbacks=[Record()],
                        verbose=0)  # fmt: skip
    assert seen == [("SGD", pytest.approx(0.02), True), ("SGD", pytest.approx(0.003), True)]
    assert model.optimizer.get_config()["momentum"] == pytest.approx(0.9)


# --------------------------------------------------------------------------- shuffling


def test_cached_rows_are_reshuffled_every_epoch_whatever_the_source():
    model = tiny_model()
    batches = []

    class Record(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            batches.append(batch)

    source = tiny_dataset().map(lambda x, y: (x, y))  # a mapped dataset, no attributes
    plans = [epoch_plan(48, 1, seed=5, epoch=e, shuffle=True)[0] for e in range(3)]
    assert not np.array_equal(plans[0], plans[1]) and not np.array_equal(plans[1], plans[2])
    history = xferclass.fit(model, source, epochs=3, seed=5, verbose=0, callbacks=[Record()])
    assert len(history.history["loss"]) == 3 and len(batches) == 9
    # The same seed gives the same plan in any process; another seed another one.
    np.testing.assert_array_equal(plans[0], epoch_plan(48, 1, seed=5, epoch=0, shuffle=True)[0])
    assert not np.array_equal(plans[0], epoch_plan(48, 1, seed=6, epoch=0, shuffle=True)[0])
    order, views = epoch_plan(10, 3, seed=1, epoch=0, shuffle=False)
    np.testing.assert_array_equal(order, np.arange(10))
    assert set(views.tolist()) <= {0, 1, 2}


# --------------------------------------------------------------------------- checkpoints


def test_restore_best_puts_back_the_best_epoch(tmp_path):
    model = tiny_model()
    validation = tiny_dataset(24, seed=1)
    history = xferclass.fit(model, tiny_dataset(), validation, epochs=4, learning_rate=0.05,
                            seed=0, verbose=0)  # fmt: skip
    values = history.history["val_accuracy"]
    assert history.best_epoch == values.index(max(values)) + 1
    accuracy = xferclass.evaluate_regression_style(model, validation)["accuracy"]
    assert accuracy == pytest.approx(max(values), abs=1e-6)


def test_best_model_is_written_only_on_improvement(tmp_path, monkeypatch):
    from xferclass.training import _engine

    writes = []
    real = _engine.save_model
    monkeypatch.setattr(_engine, "save_model", lambda m, p: (writes.append(p), real(m, p)))
    monkeypatch.setattr(_engine, "CHECKPOINT_SHARE", 1e9)  # every write is due
    path = tmp_path / "best.keras"
    history = xferclass.fit(tiny_model(), tiny_dataset(), tiny_dataset(24, seed=1), epochs=4,
                            checkpoint=path, learning_rate=0.05, seed=0, verbose=0)  # fmt: skip
    values = history.history["val_accuracy"]
    improvements = sum(v > max(values[:k], default=-1) for k, v in enumerate(values))
    assert len(writes) == improvements and path.exists()
    state = tmp_path / "best.resume.npz"
    assert state.stat().st_size < 0.2 * path.stat().st_size  # head weights only


@pytest.mark.parametrize("restore_best", [True, False])
def test_checkpoint_writes_stay_within_their_share_and_the_file_holds_the_best_epoch(
    tmp_path, monkeypatch, restore_best
):
    """A write that costs more than the epochs since the last one waits; none is lost."""
    from xferclass.training import _engine

    class Clock:  # training takes no time, each write 10 s: only the first is due
        now = 0.0

        def monotonic(self):
            return self.now

    clock = Clock()
    writes = []
    real = _engine.save_model

    def slow_save(model, path):
        writes.append(path)
        clock.now += 10.0
        real(model, path)

    monkeypatch.setattr(_engine, "time", clock)
    monkeypatch.setattr(_engine, "save_model", slow_save)
    model, path = tiny_model(), tmp_path / "best.keras"
    validation = tiny_dataset(24, seed=1)
    history = xferclass.fit(model, tiny_dataset(), validation, epochs=6, checkpoint=path,
                            learning_rate=0.05, seed=0, verbose=0,
                            restore_best=restore_best)  # fmt: skip
    values = history.history["val_accuracy"]
    best = values.index(max(values)) + 1
    assert history.best_epoch == best
    assert len(writes) == (1 if best == 1 else 2)  # the first improvement, then the best
    saved = xferclass.evaluate_regression_style(xferclass.load_model(path), validation)
    assert saved["accuracy"] == pytest.approx(max(values), abs=1e-6)
    in_memory = xferclass.evaluate_regression_style(model, validation)["accuracy"]
    assert in_memory == pytest.approx(max(values) if restore_best else values[-1], abs=1e-6)


@pytest.mark.parametrize("stop_after", [2, 3])
def test_fine_tune_resumes_across_phases_as_if_never_interrupted(tmp_path, stop_after):
    class Interrupt(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch + 1 == stop_after + 1:  # before the engine records that epoch
                raise KeyboardInterrupt

    options = dict(
        head_epochs=2, fine_tune_epochs=2, unfreeze=3, seed=0, verbose=0, restore_best=False
    )
    straight = tiny_model()
    interrupted, resumed = twin(straight), twin(straight)
    path = tmp_path / f"run{stop_after}.keras"
    expected = xferclass.fine_tune(straight, tiny_dataset(), **options)
    with pytest.raises(KeyboardInterrupt):
        xferclass.fine_tune(interrupted, tiny_dataset(), checkpoint=path,
                            callbacks=[Interrupt()], **options)  # fmt: skip
    # ``resumed`` is the model as built, as a new process would rebuild it.
    history = xferclass.fine_tune(resumed, tiny_dataset(), checkpoint=path, resume=True,
                                  **options)  # fmt: skip
    assert history.history["phase"] == [1.0, 1.0, 2.0, 2.0]
    np.testing.assert_allclose(history.history["loss"], expected.history["loss"], rtol=1e-5)
    probe, _ = tiny_arrays(8, seed=5)
    np.testing.assert_allclose(
        resumed.predict(probe, verbose=0), straight.predict(probe, verbose=0), atol=1e-4
    )


# --------------------------------------------------------------------------- messages, sizes


def test_messages_go_through_the_xferclass_logger(caplog, capsys):
    with caplog.at_level(logging.INFO, logger="xferclass"):
        xferclass.fit(tiny_model(), tiny_dataset(), epochs=1, verbose=0)
    assert "phase 1/1 (train): training the head on cached features" in caplog.text
    assert all(record.name.startswith("xferclass") for record in caplog.records)
    assert capsys.readouterr().out == ""  # verbose=0: nothing on stdout
    xferclass.fit(tiny_model(), tiny_dataset(), epochs=1, verbose=2)
    out = capsys.readouterr().out
    assert "xferclass: phase 1/1 (train)" in out and "1/1" in out


def test_images_of_the_wrong_size_are_refused_with_both_sizes():
    images, labels = tiny_arrays(8, size=40)
    data = tf.data.Dataset.from_tensor_slices((images, labels)).batch(4)
    message = "yields images of 40x40 pixels but the model takes 32x32"
    with pytest.raises(xferclass.DatasetError, match=message):
        xferclass.fit(tiny_model(), data, verbose=0)
    with pytest.raises(xferclass.DatasetError, match=message):
        xferclass.evaluate_regression_style(tiny_model(), data)
    with pytest.raises(xferclass.DatasetError, match=message):
        xferclass.predict(tiny_model(), data)
    assert xferclass.predict(tiny_model(), images).probabilities.shape == (8, 3)  # resized


def test_bad_engine_options_are_refused_before_any_work():
    cases = [
        (dict(engine="tpu"), "engine='tpu' must be one of"),
        (dict(cache_dtype="int8"), "cache_dtype='int8' must be one of auto"),
        (dict(augment_views=0), "augment_views=0 must be a positive int"),
        (dict(verbose=3), "verbose=3 must be 0, 1, 2 or 'auto'"),
        (dict(early_stopping=0), "early_stopping=0 must be a positive int"),
    ]
    for options, message in cases:
        with pytest.raises(xferclass.InvalidArgumentError, match=re.escape(message)):
            xferclass.fit(tiny_model(), tiny_dataset(), **options)
    with pytest.raises(xferclass.InvalidArgumentError, match="fine_tune needs a model made by"):
        plain = keras.Sequential([keras.Input((SIZE, SIZE, 3)), keras.layers.Flatten(),
                                  keras.layers.Dense(CLASSES, activation="softmax")])  # fmt: skip
        xferclass.fine_tune(plain, tiny_dataset(), verbose=0)
