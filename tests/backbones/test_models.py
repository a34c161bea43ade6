from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

import xferclass
from helpers import SIZE, tiny_arrays, tiny_model
from xferclass.layers import Preprocessing
from xferclass.models import split_classifier


def test_default_reproduces_the_notebook_model():
    model = xferclass.build_classifier(num_classes=10, weights=None)
    parts = split_classifier(model)
    assert parts is not None
    assert model.input_shape == (None, 299, 299, 3)
    assert parts.backbone.name == "xception"
    assert parts.backbone.count_params() == 20_861_480
    assert [layer.name for layer in parts.head] == ["pool", "head_dense", "predictions"]
    dense = model.get_layer("head_dense")
    assert dense.units == 128 and dense.activation.__name__ == "relu"
    out = model.get_layer("predictions")
    assert out.units == 10 and out.activation.__name__ == "softmax"
    # Frozen backbone: only the head trains.
    assert parts.backbone.trainable is False
    assert sum(np.prod(w.shape) for w in model.trainable_weights) == 2048 * 128 + 128 + 1290
    assert model.get_layer("preprocessing").mode == "tf"


def test_dropout_and_train_backbone():
    model = tiny_model(dropout=0.3, train_backbone=True)
    assert model.get_layer("head_dropout").rate == pytest.approx(0.3)
    parts = split_classifier(model)
    assert parts is not None and parts.backbone.trainable
    assert len(model.trainable_weights) > 4


def test_backbone_runs_in_inference_mode_even_when_training():
    model = tiny_model(train_backbone=True)
    x = np.random.default_rng(0).uniform(0, 255, (4, SIZE, SIZE, 3)).astype("float32")
    features = keras.Model(model.input, model.get_layer("pool").output)
    np.testing.assert_allclose(
        features(x, training=True).numpy(), features(x, training=False).numpy(), atol=1e-5
    )


def test_preprocessing_modes_match_keras_applications():
    x = np.random.default_rng(0).uniform(0, 255, (2, 8, 8, 3)).astype("float32")
    apps = keras.applications
    pairs = {
        "tf": apps.xception.preprocess_input,
        "caffe": apps.resnet50.preprocess_input,
        "torch": apps.densenet.preprocess_input,
    }
    for mode, reference in pairs.items():
        ours = Preprocessing(mode)(x).numpy()
        np.testing.assert_allclose(ours, reference(x.copy()), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(Preprocessing("unit")(x).numpy(), x / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(Preprocessing("none")(x).numpy(), x)


@pytest.mark.parametrize(
    "name",
    ["mobilenet_v3_small", "efficientnet_b0", "efficientnet_v2_b0", "resnet50", "densenet121"],
)
def test_builtin_backbones_build(name):
    model = xferclass.build_classifier(name, num_classes=4, weights=None, input_size=32)
    assert model.output_shape == (None, 4)


def test_registry_lists_the_families():
    names = xferclass.list_backbones()
    for expected in [
        "xception", "inception_v3", "resnet50", "resnet50_v2", "mobilenet_v2",
        "mobilenet_v3_small", "mobilenet_v3_large", "efficientnet_b0", "efficientnet_b7",
        "efficientnet_v2_s", "convnext_tiny", "densenet121", "vgg16", "efficientnet_lite0",
    ]:  # fmt: skip
        assert expected in names
    assert xferclass.list_backbones("resnet*") == ["resnet50", "resnet50_v2"]
    assert xferclass.get_backbone("EfficientNet-B3").default_size == (300, 300)
    assert xferclass.get_backbone("inception_v3").min_size == 75


def test_register_custom_backbone_and_use_it_by_name():
    def builder(input_shape, weights=None):
        inputs = keras.Input(input_shape)
        x = keras.layers.Conv2D(4, 3, strides=2, activation="relu")(inputs)
        return keras.Model(inputs, x, name="tiny_conv")

    xferclass.register_backbone("tiny_test", builder, preprocess="unit", default_size=24)
    try:
        model = xferclass.build_classifier("tiny_test", num_classes=2, weights=None)
        assert model.input_shape == (None, 24, 24, 3)
        assert split_classifier(model).backbone.name == "tiny_conv"
        with pytest.raises(ValueError, match="already registered"):
            xferclass.register_backbone("tiny_test", builder, preprocess="unit", default_size=24)
        with pytest.raises(ValueError, match="preprocess='bogus'"):
            xferclass.register_backbone("tiny2", builder, preprocess="bogus", default_size=24)
    finally:
        from xferclass.backbones._registry import _REGISTRY

        _REGISTRY.pop("tiny_test", None)


def test_unknown_backbone_lists_close_matches():
    with pytest.raises(xferclass.BackboneNotFoundError, match="did you mean xception"):
        xferclass.build_classifier("xcepton", num_classes=3)
    with pytest.raises(KeyError):
        xferclass.get_backbone("no_such_thing")


@pytest.mark.parametrize("bad", [1, 0, -3, 2.5, True, "3"])
def test_num_classes_must_be_at_least_two(bad):
    with pytest.raises(ValueError, match=f"num_classes={bad!r}"):
        xferclass.build_classifier("mobilenet_v2", num_classes=bad, weights=None, input_size=32)


def test_input_size_too_small_names_the_minimum():
    with pytest.raises(ValueError, match=r"input_size=70 .* at least 71x71"):
        xferclass.build_classifier(num_classes=3, weights=None, input_size=70)
    with pytest.raises(ValueError, match="input_size='big'"):
        xferclass.build_classifier(num_classes=3, weights=None, input_size="big")


def test_other_bad_arguments():
    with pytest.raises(ValueError, match="dropout=1.5"):
        tiny_model(dropout=1.5)
    with pytest.raises(ValueError, match="head_units=-1"):
        tiny_model(head_units=-1)
    with pytest.raises(ValueError, match="weights=3"):
        tiny_model(weights=3)
    with pytest.raises(xferclass.WeightsUnavailableError, match="no such file"):
        tiny_model(weights="/nonexistent/weights.h5")


def test_offline_download_failure_names_the_options(monkeypatch):
    import keras.src.utils.file_utils as file_utils

    def offline(fname, origin=None, **kwargs):
        # What keras.utils.get_file raises when the host cannot be resolved.
        raise Exception(f"URL fetch failure on {origin}: None -- [Errno -3] name resolution")

    monkeypatch.setattr(file_utils, "get_file", offline)
    monkeypatch.setattr(keras.utils, "get_file", offline)
    with pytest.raises(xferclass.WeightsUnavailableError) as info:
        xferclass.build_classifier("mobilenet_v2", num_classes=3, input_size=96)
    message = str(info.value)
    assert "offline" in message and "efficientnet_lite0" in message
    assert "weights=None" in message and "weights='/path/to/weights.h5'" in message


def test_local_weights_file_round_trip(tmp_path):
    source = xferclass.build_classifier("mobilenet_v2", num_classes=3, weights=None, input_size=32)
    path = tmp_path / "backbone.weights.h5"
    split_classifier(source).backbone.save_weights(path)
    loaded = xferclass.build_classifier(
        "mobilenet_v2", num_classes=3, weights=str(path), input_size=32
    )
    for a, b in zip(
        split_classifier(source).backbone.get_weights(),
        split_classifier(loaded).backbone.get_weights(),
    ):
        np.testing.assert_array_equal(a, b)
    broken = tmp_path / "broken.h5"
    broken.write_bytes(b"not an h5 file")
    with pytest.raises(xferclass.WeightsUnavailableError, match="could not be loaded"):
        xferclass.build_classifier("mobilenet_v2", num_classes=3, weights=broken, input_size=32)


# --------------------------------------------------------------------------- taps


def test_taps_pool_every_block_output_then_the_last_layer_in_order() -> None:
    from xferclass.backbones.models import BACKBONE, POOL, tap_widths

    images, _ = tiny_arrays(6)
    model = tiny_model(taps=True, head_units=0)
    plain = tiny_model(head_units=0)
    plain.get_layer(BACKBONE).set_weights(model.get_layer(BACKBONE).get_weights())
    # stem_relu (8), block1_relu (16), block2_add (16), then the last layer (32).
    assert tap_widths(model) == (8, 16, 16, 32) and tap_widths(plain) is None
    pooled = keras.Model(model.input, model.get_layer(POOL).output).predict(images, verbose=0)
    # The reference: each tap's feature map, averaged over height and width by NumPy.
    inner = model.get_layer(BACKBONE).layer
    names = ["stem_relu", "block1_relu", "block2_add", "top_relu"]
    maps = keras.Model(inner.input, [inner.get_layer(n).output for n in names])
    unit = images / 255.0  # test_tiny's preprocessing ("unit")
    expected = np.concatenate([np.asarray(m).mean(axis=(1, 2)) for m in maps(unit)], axis=1)
    np.testing.assert_allclose(pooled, expected, atol=1e-5)
    # The last layer's columns are what the model without taps pools.
    last = keras.Model(plain.input, plain.get_layer(POOL).output).predict(images, verbose=0)
    np.testing.assert_allclose(pooled[:, -32:], last, atol=1e-5)


def test_a_model_with_taps_fits_saves_and_exports_the_same_probabilities(
    tmp_path: Path,
) -> None:
    from helpers import RUNNERS

    images, onehot = tiny_arrays(24)
    model = tiny_model(taps=True)
    xferclass.fit(model, tf.data.Dataset.from_tensor_slices((images, onehot)).batch(8),
                  epochs=2, verbose=0)  # fmt: skip
    expected = model.predict(images, verbose=0)
    model.save(tmp_path / "taps.keras")
    again = keras.saving.load_model(tmp_path / "taps.keras")
    np.testing.assert_allclose(again.predict(images, verbose=0), expected, atol=1e-5)
    for format in ("onnx", "saved_model"):
        (artifact, *_) = xferclass.export(model, tmp_path / format, format=format)
        np.testing.assert_allclose(RUNNERS[format](artifact, images), expected, atol=1e-4)


def test_taps_are_refused_where_they_cannot_work() -> None:
    with pytest.raises(xferclass.InvalidArgumentError, match="has no block outputs"):
        xferclass.build_classifier("mobilenet_v2", num_classes=3, weights=None, taps=True)
    with pytest.raises(xferclass.InvalidArgumentTypeError, match="taps="):
        tiny_model(taps="yes")
    images, onehot = tiny_arrays(8)
    dataset = tf.data.Dataset.from_tensor_slices((images, onehot)).batch(8)
    with pytest.raises(xferclass.InvalidArgumentError, match="fine_tune takes a model"):
        xferclass.fine_tune(tiny_model(taps=True), dataset, fine_tune_epochs=1, verbose=0)
