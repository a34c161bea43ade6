from __future__ import annotations

import os
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import xferclass
from helpers import SIZE, tiny_arrays, tiny_dataset, tiny_model, twin
from xferclass.models import split_classifier
from xferclass.training import _cache


def _plain_fit(model, train, validation, epochs, learning_rate=1e-3):
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss="categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model.fit(train, validation_data=validation, epochs=epochs, verbose=0, shuffle=False)


def _max_weight_difference(a, b):
    return max(float(np.abs(x - y).max()) for x, y in zip(a.get_weights(), b.get_weights()))


def test_fit_compiles_like_the_notebook_and_lowers_the_loss():
    model = tiny_model()
    history = xferclass.fit(model, tiny_dataset(), epochs=4, learning_rate=1e-2, verbose=0)
    assert isinstance(model.optimizer, keras.optimizers.Adam)
    assert float(model.optimizer.learning_rate) == pytest.approx(1e-2)
    assert model.loss == "categorical_crossentropy"
    losses = history.history["loss"]
    assert len(losses) == 4 and losses[-1] < losses[0]
    assert history.model is model


def test_cached_fit_equals_plain_keras_fit():
    train, validation = tiny_dataset(48, seed=0), tiny_dataset(24, seed=1)
    cached = tiny_model()
    plain = twin(cached)
    ours = xferclass.fit(
        cached, train, validation, epochs=3, verbose=0, shuffle=False, restore_best=False
    )
    theirs = _plain_fit(plain, train, validation, epochs=3)
    assert _max_weight_difference(cached, plain) < 1e-5
    images, _ = tiny_arrays(12, seed=3)
    np.testing.assert_allclose(
        cached.predict(images, verbose=0), plain.predict(images, verbose=0), atol=1e-5
    )
    for key in ("loss", "val_loss", "accuracy", "val_accuracy"):
        np.testing.assert_allclose(ours.history[key], theirs.history[key], rtol=1e-4, atol=1e-5)


def test_cache_is_used_only_when_the_backbone_is_frozen(monkeypatch):
    calls = []
    real = _cache.cache_split

    def spy(*args, **kwargs):
        calls.append(kwargs["name"])
        return real(*args, **kwargs)

    monkeypatch.setattr("xferclass.training._engine.cache_split", spy)
    xferclass.fit(tiny_model(), tiny_dataset(), tiny_dataset(), epochs=1, verbose=0)
    assert calls == ["train", "validation"]
    calls.clear()
    xferclass.fit(tiny_model(train_backbone=True), tiny_dataset(), epochs=1, verbose=0)
    assert calls == []
    xferclass.fit(tiny_model(), tiny_dataset(), epochs=1, verbose=0, cache=False)
    assert calls == []
    with pytest.raises(ValueError, match="cache=True.*backbone is trainable"):
        xferclass.fit(tiny_model(train_backbone=True), tiny_dataset(), cache=True, verbose=0)


def test_cache_spills_to_disk_and_cleans_up(tmp_path, monkeypatch):
    seen = []
    real = _cache.cache_split

    def spy(*args, **kwargs):
        split = real(*args, **kwargs)
        seen.append(split.on_disk)
        return split

    monkeypatch.setattr("xferclass.training._engine.cache_split", spy)
    in_memory = tiny_model()
    spilled = twin(in_memory)
    xferclass.fit(in_memory, tiny_dataset(), epochs=2, verbose=0, seed=3)
    with pytest.warns(xferclass.FallbackWarning, match="caching train in float16"):
        xferclass.fit(spilled, tiny_dataset(), epochs=2, verbose=0, seed=3, cache_memory=1000,
                      cache_dir=tmp_path)  # fmt: skip
    assert seen == [False, True]
    assert list(tmp_path.iterdir()) == []  # the spill folder is removed afterwards
    # The rows are bit-identical; what differs is round-off in multi-threaded
    # reductions, which Adam can turn into steps of up to its learning rate
    # (1e-3) where a gradient is nearly zero. Far less than one such step:
    assert _max_weight_difference(in_memory, spilled) < 1e-4


def test_float16_cache_is_close(monkeypatch):
    # What float16 bounds is the cached features, not the trained weights: Adam divides
    # each gradient coordinate by its own running size, so a rounding-level change of a
    # gradient near zero can turn a step of about the learning rate (1e-3) around. Over
    # the 6 steps here (48 images in batches of 16, 2 epochs) two runs' weights may
    # differ by up to 2 x 6 x 1e-3 = 1.2e-2 (a loaded machine gave 1.01e-2) whatever the
    # cached features are, broken ones included. So the cached rows are compared.
    cached = []
    real = _cache.cache_split

    def spy(*args, **kwargs):
        split = real(*args, **kwargs)
        store = split.stores[0]
        cached.append((store.dtype, store.take(np.arange(len(split)))))
        return split

    monkeypatch.setattr("xferclass.training._engine.cache_split", spy)
    a = tiny_model()
    b = twin(a)
    xferclass.fit(a, tiny_dataset(), epochs=2, verbose=0, cache_dtype="float32")
    xferclass.fit(b, tiny_dataset(), epochs=2, verbose=0, cache_dtype="float16")
    (dtype32, exact), (dtype16, rounded) = cached
    assert (dtype32, dtype16) == (np.float32, np.float16) and exact.shape == rounded.shape
    np.testing.assert_array_equal(rounded, rounded.astype(np.float16))  # stored as float16
    # Round to nearest float16: a relative error of at most 2**-11 (half its 10-bit
    # mantissa's step), at most 2**-25 below 2**-14 (float16's subnormals); and the
    # float32 features of two forward passes may differ by multi-threaded round-off.
    scale = float(np.abs(exact).max())
    bound = 2.0**-11 * np.abs(exact) + 2.0**-25 + 1e-6 * scale
    assert np.all(np.abs(rounded - exact) <= bound)
    assert scale > 0 and np.any(rounded != exact)  # features that float16 does round


def test_float16_fallback_for_a_short_memory_budget_is_a_warning(monkeypatch):
    dtypes = []
    real = _cache.cache_split

    def spy(*args, **kwargs):
        split = real(*args, **kwargs)
        dtypes.append(split.stores[0].dtype)
        return split

    monkeypatch.setattr("xferclass.training._engine.cache_split", spy)
    with pytest.warns(xferclass.FallbackWarning, match='cache_dtype="float32"'):
        xferclass.fit(tiny_model(), tiny_dataset(), epochs=1, verbose=0, cache_memory=1000)
    with warnings.catch_warnings():
        warnings.simplefilter("error", xferclass.FallbackWarning)  # explicit or fitting: quiet
        xferclass.fit(tiny_model(), tiny_dataset(), epochs=1, verbose=0, cache_memory=1000,
                      cache_dtype="float32")  # fmt: skip
        xferclass.fit(tiny_model(), tiny_dataset(), epochs=1, verbose=0)
    assert dtypes == [np.float16, np.float32, np.float32]


def test_augmented_views_are_cached_and_training_runs(capsys):
    model = tiny_model()
    history = xferclass.fit(
        model, tiny_dataset(), epochs=2, augment="light", augment_views=2, seed=0
    )
    out = capsys.readouterr().out
    assert "2 augmented views" in out
    assert len(history.history["loss"]) == 2
    with pytest.raises(ValueError, match="augment='sideways'"):
        xferclass.fit(tiny_model(), tiny_dataset(), augment="sideways", verbose=0)


def test_augmentation_presets():
    assert xferclass.make_augmentation(None) is None
    flip = xferclass.make_augmentation(True)
    assert [layer.name for layer in flip.layers] == ["flip"]
    strong = xferclass.make_augmentation("strong")
    assert len(strong.layers) == 5
    custom = xferclass.make_augmentation([keras.layers.RandomFlip()])
    assert len(custom.layers) == 1
    image = np.random.default_rng(0).uniform(0, 255, (2, SIZE, SIZE, 3)).astype("float32")
    out = strong(image, training=True).numpy()
    assert out.shape == image.shape and not np.allclose(out, image)
    np.testing.assert_array_equal(strong(image, training=False).numpy(), image)


def test_fine_tune_cut_cache_equals_plain_fine_tuning():
    a = tiny_model()
    b = twin(a)
    ha = xferclass.fine_tune(
        a, tiny_dataset(), tiny_dataset(), head_epochs=1, fine_tune_epochs=2, unfreeze=6, verbose=0,
        shuffle=False, restore_best=False,
    )  # fmt: skip
    hb = xferclass.fine_tune(
        b,
        tiny_dataset(),
        tiny_dataset(),
        head_epochs=1,
        epochs=2,
        unfreeze=6,
        verbose=0,
        cache=False,
        restore_best=False,
    )
    assert ha.history["phase"] == [1.0, 2.0, 2.0]
    assert _max_weight_difference(a, b) < 1e-5
    np.testing.assert_allclose(ha.history["loss"], hb.history["loss"], rtol=1e-4)
    parts = split_classifier(a)
    trainable = [layer for layer in parts.backbone.layers if layer.trainable_weights]
    assert trainable and not any(
        isinstance(layer, keras.layers.BatchNormalization) for layer in trainable
    )
    # unfreeze=6 starts inside the residual block, so the cut falls before it.
    assert [layer.name for layer in trainable] == ["block2_conv_b", "top_conv"]


def test_fine_tune_changes_only_the_unfrozen_layers():
    model = tiny_model()
    parts = split_classifier(model)
    before = {
        layer.name: [w.copy() for w in layer.get_weights()] for layer in parts.backbone.layers
    }
    xferclass.fine_tune(model, tiny_dataset(), head_epochs=0, fine_tune_epochs=1, unfreeze=0.3,
                        verbose=0, learning_rate=1e-2)  # fmt: skip
    changed = {
        layer.name
        for layer in parts.backbone.layers
        if any(not np.array_equal(x, y) for x, y in zip(before[layer.name], layer.get_weights()))
    }
    names = [layer.name for layer in parts.backbone.layers]
    first = len(names) - int(np.ceil(0.3 * len(names)))
    assert changed and all(names.index(name) >= first for name in changed)
    assert not any("BN" in name or "bn" in name for name in changed)


def test_fine_tune_bad_unfreeze():
    with pytest.raises(ValueError, match="unfreeze=0"):
        xferclass.fine_tune(tiny_model(), tiny_dataset(), unfreeze=0, verbose=0)
    with pytest.raises(ValueError, match="unfreeze=1.5"):
        xferclass.fine_tune(tiny_model(), tiny_dataset(), unfreeze=1.5, verbose=0)
    with pytest.raises(ValueError, match="did you mean"):
        xferclass.fine_tune(tiny_model(), tiny_dataset(), unfreeze="block2_conv", verbose=0)


def test_fine_tune_epochs_is_phase_two_and_old_epochs_still_works():
    history = xferclass.fine_tune(tiny_model(), tiny_dataset(), head_epochs=1,
                                  fine_tune_epochs=2, unfreeze=3, verbose=0)  # fmt: skip
    assert history.history["phase"] == [1.0, 2.0, 2.0]
    with pytest.warns(DeprecationWarning, match="fine_tune_epochs"):
        old = xferclass.fine_tune(tiny_model(), tiny_dataset(), head_epochs=0, epochs=2,
                                  unfreeze=3, verbose=0)  # fmt: skip
    assert old.history["phase"] == [2.0, 2.0]
    with pytest.raises(ValueError, match="fine_tune_epochs=-1"):
        xferclass.fine_tune(tiny_model(), tiny_dataset(), fine_tune_epochs=-1, verbose=0)


def test_checkpoint_keeps_the_best_model(tmp_path):
    path = tmp_path / "best.keras"
    model = tiny_model()
    history = xferclass.fit(model, tiny_dataset(), tiny_dataset(), epochs=3, checkpoint=path,
                            learning_rate=1e-2, verbose=0)  # fmt: skip
    assert path.exists()
    best = xferclass.load_model(path)
    accuracy = xferclass.evaluate_regression_style(best, tiny_dataset())["accuracy"]
    assert accuracy == pytest.approx(max(history.history["val_accuracy"]), abs=1e-6)
    assert (tmp_path / "best.resume.npz").exists()
    assert not [p for p in tmp_path.iterdir() if "tmp" in p.name]


def test_resume_continues_the_epoch_count_and_optimizer(tmp_path):
    path = tmp_path / "run.keras"
    straight = tiny_model()
    resumed = twin(straight)
    xferclass.fit(straight, tiny_dataset(), epochs=4, verbose=0, cache=False)
    xferclass.fit(resumed, tiny_dataset(), epochs=2, verbose=0, cache=False, checkpoint=path)
    fresh = tiny_model(seed=99)  # different weights: all must come from the checkpoint
    history = xferclass.fit(fresh, tiny_dataset(), epochs=4, verbose=0, cache=False,
                            checkpoint=path, resume=True)  # fmt: skip
    assert len(history.history["loss"]) == 4
    assert int(fresh.optimizer.iterations) == int(straight.optimizer.iterations)
    assert _max_weight_difference(fresh, straight) < 1e-5


def test_nan_loss_stops_with_a_clear_error_and_keeps_the_checkpoint(tmp_path):
    path = tmp_path / "best.keras"
    model = tiny_model()
    xferclass.fit(model, tiny_dataset(), tiny_dataset(), epochs=1, checkpoint=path, verbose=0)
    good = [w.copy() for w in model.get_weights()]
    images, labels = tiny_arrays(16)
    labels[0, 0] = np.nan
    poisoned = tf.data.Dataset.from_tensor_slices((images, labels)).batch(8)
    with pytest.raises(
        xferclass.TrainingError, match="loss became nan.*reset to the last good weights"
    ) as info:
        xferclass.fit(model, poisoned, tiny_dataset(), epochs=3, checkpoint=path, verbose=0,
                      cache=False)  # fmt: skip
    assert info.value.history is not None
    for w, g in zip(model.get_weights(), good):
        np.testing.assert_array_equal(w, g)
    xferclass.load_model(path)  # still loadable


def test_keyboard_interrupt_keeps_the_best_weights_saves_and_reraises(tmp_path, capsys):
    class Interrupt(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 2:
                raise KeyboardInterrupt

    path = tmp_path / "best.keras"
    model = tiny_model()
    with pytest.raises(KeyboardInterrupt) as info:
        xferclass.fit(model, tiny_dataset(), tiny_dataset(), epochs=5, checkpoint=path,
                      callbacks=[Interrupt()], learning_rate=0.05, verbose=1)  # fmt: skip
    history = info.value.history
    # The interrupt comes before the third epoch's own bookkeeping.
    assert len(history.history["loss"]) == 2
    best = history.history["val_accuracy"].index(max(history.history["val_accuracy"])) + 1
    assert history.best_epoch == best
    saved = xferclass.load_model(path)
    for a, b in zip(saved.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)  # the model holds the best weights, as saved
    assert f"interrupted after 2 epochs; the model is saved in {path}" in capsys.readouterr().out


def test_class_count_mismatch_is_a_clear_error():
    model = xferclass.build_classifier("test_tiny", num_classes=4, weights=None)
    with pytest.raises(xferclass.DatasetError, match="train has 3 classes but the model outputs 4"):
        xferclass.fit(model, tiny_dataset(), verbose=0)
    with pytest.raises(xferclass.DatasetError, match="dataset has 3 classes"):
        xferclass.evaluate_regression_style(model, tiny_dataset())


def test_bad_fit_arguments():
    with pytest.raises(xferclass.DatasetError, match="train must be a tf.data.Dataset"):
        xferclass.fit(tiny_model(), np.zeros((4, SIZE, SIZE, 3)), verbose=0)
    with pytest.raises(ValueError, match="epochs=-1"):
        xferclass.fit(tiny_model(), tiny_dataset(), epochs=-1, verbose=0)
    with pytest.raises(ValueError, match="learning_rate=0"):
        xferclass.fit(tiny_model(), tiny_dataset(), learning_rate=0, verbose=0)
    with pytest.raises(ValueError, match="checkpoint='best.h5'"):
        xferclass.fit(tiny_model(), tiny_dataset(), checkpoint="best.h5", verbose=0)
    with pytest.raises(ValueError, match="resume=True needs checkpoint"):
        xferclass.fit(tiny_model(), tiny_dataset(), resume=True, verbose=0)


def test_fit_stores_class_names_in_the_model(tmp_path):
    model = tiny_model()
    xferclass.fit(model, tiny_dataset(), epochs=1, verbose=0)
    model.save(tmp_path / "m.keras")
    loaded = xferclass.load_model(tmp_path / "m.keras")
    images, _ = tiny_arrays(3)
    assert xferclass.predict(loaded, images).class_names == ["red", "green", "blue"]


def test_predictions_name_each_image_by_predicted_names_and_labels_is_deprecated():
    images, _ = tiny_arrays(4)
    result = xferclass.predict(tiny_model(), images, class_names=["red", "green", "blue"])
    expected = [["red", "green", "blue"][i] for i in result.probabilities.argmax(axis=1)]
    assert result.predicted_names == expected
    assert [name for name, _ in result] == expected
    with pytest.warns(DeprecationWarning, match="predicted_names"):
        assert result.labels == expected


def test_progress_output_names_each_phase(capsys):
    xferclass.fit(tiny_model(), tiny_dataset(), tiny_dataset(), epochs=1)
    out = capsys.readouterr().out
    assert "caching backbone activations for train" in out
    assert "caching backbone activations for validation" in out
    assert "training the head on cached features" in out
    assert os.linesep in out


def test_mixed_precision_and_jit_compile_options():
    model = tiny_model(mixed_precision=True)
    assert model.get_layer("head_dense").compute_dtype == "float16"
    assert model.get_layer("predictions").compute_dtype == "float32"  # softmax stays float32
    assert keras.config.dtype_policy().name == "float32"  # the global policy is restored
    history = xferclass.fit(model, tiny_dataset(), epochs=2, verbose=0, jit_compile=True)
    assert all(np.isfinite(history.history["loss"]))
    assert model.predict(tiny_arrays(4)[0], verbose=0).dtype == np.float32
    with pytest.raises(ValueError, match="mixed_precision='float8'"):
        tiny_model(mixed_precision="float8")
