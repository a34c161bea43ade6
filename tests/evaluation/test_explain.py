"""Grad-CAM: shapes and range, the layer found from the graph, the randomization
test (Adebayo et al., 2018) and localization on images decided by one patch."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import xferclass
from helpers import tiny_model
from xferclass.auto._ensemble import build_ensemble
from xferclass.explain import spatial_layers

PATCH = 8
SIDE = 32


def patch_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Grey noise with one coloured square; its colour (red or blue) is the class."""
    rng = np.random.default_rng(seed)
    images = rng.integers(60, 140, (n, SIDE, SIDE, 3)).astype("uint8")
    labels = np.arange(n) % 2
    corners = rng.integers(0, SIDE - PATCH + 1, (n, 2))
    for i, (top, left) in enumerate(corners):
        colour = (250, 20, 20) if labels[i] == 0 else (20, 20, 250)
        images[i, top : top + PATCH, left : left + PATCH] = colour
    return images, labels, corners


def _patch_backbone(input_shape: tuple[int, int, int], weights: object) -> keras.Model:
    inputs = keras.Input(input_shape)
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(inputs)
    x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(x)
    return keras.Model(inputs, x, name="patch_backbone")


if "explain_patch" not in xferclass.list_backbones():
    xferclass.register_backbone(
        "explain_patch", _patch_backbone, preprocess="unit", default_size=SIDE, family="test"
    )


@pytest.fixture(scope="module")
def patch_model() -> keras.Model:
    keras.utils.set_random_seed(0)
    model = xferclass.build_classifier(
        "explain_patch", num_classes=2, weights=None, head_units=16, train_backbone=True
    )
    images, labels, _ = patch_images(256, seed=1)
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy")
    model.fit(images, labels, epochs=8, batch_size=32, verbose=0)
    return model


def test_heatmaps_have_the_images_shape_and_lie_in_unit_range() -> None:
    model = tiny_model()
    images = np.random.default_rng(0).integers(0, 256, (5, 32, 32, 3)).astype("uint8")
    maps = xferclass.explain(model, images)
    assert maps.shape == (5, 32, 32) and maps.dtype == np.float32
    assert maps.min() >= 0.0 and maps.max() <= 1.0
    assert maps.max() == pytest.approx(1.0)
    bigger = xferclass.explain(model, np.zeros((2, 48, 40, 3), "float32"), class_index=[0, 2])
    assert bigger.shape == (2, 48, 40)
    one = xferclass.explain(model, images[0], class_index=1)
    assert one.shape == (1, 32, 32)


def test_class_index_is_checked() -> None:
    model = tiny_model()
    images = np.zeros((2, 32, 32, 3), "uint8")
    with pytest.raises(xferclass.InvalidArgumentError):
        xferclass.explain(model, images, class_index=3)
    with pytest.raises(xferclass.InvalidArgumentError):
        xferclass.explain(model, images, class_index=[0])
    with pytest.raises(xferclass.InvalidArgumentTypeError):
        xferclass.explain(model, images, class_index="cat")
    with pytest.raises(xferclass.InvalidArgumentError):
        xferclass.explain(model, np.zeros((2, 32, 32)))


def test_the_spatial_layer_comes_from_the_graph() -> None:
    model = tiny_model()
    assert [layer.name for _, layer in spatial_layers(model)] == ["backbone"]
    # The same network flattened into one graph: the last 4-D layer is found by shape.
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(4, 3, name="first")(inputs)
    x = keras.layers.Conv2D(4, 3, name="unusual_name")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    plain = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(x))
    assert [layer.name for _, layer in spatial_layers(plain)] == ["unusual_name"]
    flat = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(inputs)))
    with pytest.raises(xferclass.InvalidArgumentError, match="spatial"):
        spatial_layers(flat)


def test_an_averaged_model_with_nested_members_is_explained() -> None:
    first, second = tiny_model(seed=1, input_size=40), tiny_model(seed=2, input_size=40)
    average = build_ensemble([first, second], ["a", "b", "c"])
    assert len(spatial_layers(average)) == 2
    maps = xferclass.explain(average, np.random.default_rng(0).integers(0, 256, (3, 40, 40, 3)))
    assert maps.shape == (3, 40, 40) and 0.0 <= maps.min() and maps.max() <= 1.0


def test_a_model_with_views_inside_is_explained_on_the_image_as_given() -> None:
    from xferclass.evaluation._tta import with_views

    plain = tiny_model(seed=1)
    inside = with_views(plain, "rotations")
    images = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3))
    chosen = np.argmax(inside.predict(images.astype(np.float32), verbose=0), axis=1)
    maps = xferclass.explain(inside, images)
    np.testing.assert_allclose(maps, xferclass.explain(plain, images, class_index=chosen.tolist()),
                               atol=1e-5)  # fmt: skip
    assert maps.shape == (3, 32, 32)


@pytest.mark.parametrize("backbone", ["mobilenet_v2", "resnet50", "efficientnet_lite0"])
def test_built_in_backbones_fine_tuned_or_not(backbone: str) -> None:
    model = xferclass.build_classifier(
        backbone, num_classes=2, weights=None, input_size=64, train_backbone=True
    )
    maps = xferclass.explain(model, np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3)))
    assert maps.shape == (2, 64, 64) and np.isfinite(maps).all()
    assert 0.0 <= maps.min() and maps.max() <= 1.0


@pytest.mark.slow
def test_one_backbone_of_every_built_in_family() -> None:
    """Every family in the registry (its smallest native size): about a minute on CPU."""
    families: dict[str, str] = {}
    for name in xferclass.list_backbones():
        spec = xferclass.get_backbone(name)
        if spec.family in ("test", "custom"):
            continue
        best = families.get(spec.family)
        if best is None or spec.default_size < xferclass.get_backbone(best).default_size:
            families[spec.family] = name
    assert len(families) >= 8
    for name in families.values():
        side = max(xferclass.get_backbone(name).min_size, 32)
        model = xferclass.build_classifier(name, num_classes=2, weights=None, input_size=side)
        maps = xferclass.explain(model, np.full((1, side, side, 3), 128, "uint8"))
        assert maps.shape == (1, side, side) and np.isfinite(maps).all(), name
        keras.backend.clear_session()


def test_the_patch_decides_and_the_heatmap_finds_it(patch_model: keras.Model) -> None:
    images, labels, corners = patch_images(60, seed=7)
    predicted = patch_model.predict(images, verbose=0).argmax(axis=1)
    assert (predicted == labels).mean() >= 0.9
    maps = xferclass.explain(patch_model, images)
    hits = 0
    for heatmap, (top, left) in zip(maps, corners):
        row, column = np.unravel_index(np.argmax(heatmap), heatmap.shape)
        hits += top <= row < top + PATCH and left <= column < left + PATCH
    assert hits / len(images) >= 0.9


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks with ties sharing their mean rank (as Spearman's coefficient needs)."""
    unique, inverse, counts = np.unique(values.ravel(), return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    return ((ends - (counts - 1) / 2.0) - 1.0)[inverse]


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    ranks_a, ranks_b = _average_ranks(a), _average_ranks(b)
    if ranks_a.std() == 0 or ranks_b.std() == 0:
        return 0.0
    return float(np.corrcoef(ranks_a, ranks_b)[0, 1])


def test_spearman_of_known_orders() -> None:
    assert _spearman(np.array([1.0, 2, 3, 4]), np.array([10.0, 20, 30, 40])) == pytest.approx(1)
    assert _spearman(np.array([1.0, 2, 3, 4]), np.array([4.0, 3, 2, 1])) == pytest.approx(-1)
    assert _spearman(np.array([0.0, 0, 1, 2]), np.array([0.0, 0, 2, 1])) == pytest.approx(7 / 9)


def test_redrawing_the_head_changes_the_heatmaps(patch_model: keras.Model) -> None:
    """The model randomization test: Grad-CAM must depend on the learned head."""
    images, labels, _ = patch_images(40, seed=11)
    before = xferclass.explain(patch_model, images, class_index=labels)
    randomized = keras.models.clone_model(patch_model)
    randomized.set_weights(patch_model.get_weights())
    rng = np.random.default_rng(5)
    for layer in randomized.layers:
        if isinstance(layer, keras.layers.Dense):
            kernel, bias = layer.get_weights()
            scale = np.sqrt(2.0 / kernel.shape[0])
            layer.set_weights([rng.normal(0, scale, kernel.shape), np.zeros_like(bias)])
    after = xferclass.explain(randomized, images, class_index=labels)
    correlations = [_spearman(a, b) for a, b in zip(before, after)]
    assert np.mean(correlations) < 0.5
