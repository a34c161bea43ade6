"""Tests of xferclass.plots: files written, numbers right, matplotlib optional."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf

pytest.importorskip("matplotlib")
import matplotlib.image  # noqa: E402

import xferclass  # noqa: E402
from xferclass import plots  # noqa: E402
from xferclass.metrics import collect_predictions  # noqa: E402

CLASS_NAMES = ["cat", "dog", "a rather long class name"]
SAMPLES = 20


@pytest.fixture(scope="module")
def model() -> keras.Model:
    """A model whose probabilities follow each image's dominant colour channel.

    A randomly initialised backbone is no use here: the features of a
    weights=None MobileNetV2 vanish (about 1e-13), so every image would get
    exactly 1/3 per class and every loss would tie. This model keeps the
    xferclass Preprocessing layer, so class names can travel with it.
    """
    inputs = keras.Input((32, 32, 3))
    x = xferclass.Preprocessing("unit", name="preprocessing")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(3, activation="softmax", name="predictions")(x)
    built = keras.Model(inputs, outputs)
    built.get_layer("predictions").set_weights([6.0 * np.eye(3), np.zeros(3)])
    return built


@pytest.fixture(scope="module")
def arrays() -> tuple[np.ndarray, np.ndarray]:
    """Images of one random colour each, with some noise, and random labels."""
    rng = np.random.default_rng(0)
    colours = rng.uniform(0, 255, size=(SAMPLES, 1, 1, 3))
    noise = rng.normal(0, 20, size=(SAMPLES, 32, 32, 3))
    images = np.clip(colours + noise, 0, 255).astype(np.float32)
    onehot = np.eye(3, dtype=np.float32)[rng.integers(0, 3, size=SAMPLES)]
    return images, onehot


@pytest.fixture()
def dataset(arrays: tuple[np.ndarray, np.ndarray]) -> tf.data.Dataset:
    data = tf.data.Dataset.from_tensor_slices(arrays).batch(8)
    data.class_names = list(CLASS_NAMES)
    return data


def _read_png(path: Path) -> np.ndarray:
    assert path.is_file()
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 5_000
    pixels = matplotlib.image.imread(path)
    assert pixels.ndim == 3 and pixels.shape[2] in (3, 4)
    assert pixels.shape[0] > 200 and pixels.shape[1] > 200
    assert pixels.std() > 0.01  # not a blank canvas
    return pixels


def _losses(
    model: keras.Model, dataset: tf.data.Dataset
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    labels, probabilities = collect_predictions(model, dataset)
    loss = -np.sum(labels * np.log(np.clip(probabilities, np.finfo(np.float32).tiny, 1.0)), axis=1)
    return labels, probabilities, loss


FINE_TUNE_HISTORY = {
    "loss": [1.2, 0.9, 0.7, 0.6, 0.5],
    "accuracy": [0.4, 0.6, 0.7, 0.75, 0.8],
    "val_loss": [1.3, 1.0, 0.9, 0.85, 0.8],
    "val_accuracy": [0.35, 0.5, 0.6, 0.65, 0.7],
    "phase": [1.0, 1.0, 2.0, 2.0, 2.0],
}


def test_plot_history_with_phases(tmp_path: Path) -> None:
    target = tmp_path / "nested" / "history.png"
    assert plots.plot_history(FINE_TUNE_HISTORY, target) == target
    _read_png(target)


def test_plot_history_marks_phase_two(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from matplotlib.axes import Axes

    lines: list[float] = []
    original = Axes.axvline

    def spy(self: Axes, x: float = 0, *args: object, **kwargs: object) -> object:
        lines.append(x)
        return original(self, x, *args, **kwargs)

    monkeypatch.setattr(Axes, "axvline", spy)
    plots.plot_history(FINE_TUNE_HISTORY, tmp_path / "a.png")
    assert lines == [2.5, 2.5]  # one per panel, between epochs 2 and 3
    lines.clear()
    no_phase = {k: v for k, v in FINE_TUNE_HISTORY.items() if k != "phase"}
    plots.plot_history(no_phase, tmp_path / "b.png")
    assert lines == []


def test_plot_history_accepts_a_keras_history(tmp_path: Path) -> None:
    history = keras.callbacks.History()
    history.history = {"loss": [1.0], "accuracy": [0.5]}  # one epoch, no validation
    _read_png(plots.plot_history(history, tmp_path / "one.png"))


def test_plot_history_rejects_bad_input(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no 'loss'"):
        plots.plot_history({"accuracy": [0.5]}, tmp_path / "x.png")
    with pytest.raises(TypeError, match="History"):
        plots.plot_history([1.0, 2.0], tmp_path / "x.png")
    with pytest.raises(ValueError, match="extension"):
        plots.plot_history(FINE_TUNE_HISTORY, tmp_path / "history")
    with pytest.raises(ValueError, match="'.docx'"):
        plots.plot_history(FINE_TUNE_HISTORY, tmp_path / "history.docx")


def test_plot_history_writes_other_formats(tmp_path: Path) -> None:
    target = plots.plot_history(FINE_TUNE_HISTORY, str(tmp_path / "history.svg"))
    assert target.read_text().lstrip().startswith("<?xml")


def test_confusion_matrix_matches_sklearn() -> None:
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(1)
    true = rng.integers(0, 4, size=200)
    labels = np.eye(4)[true]
    probabilities = rng.dirichlet(np.ones(4), size=200)
    expected = sklearn_metrics.confusion_matrix(
        true, probabilities.argmax(axis=1), labels=list(range(4))
    )
    ours = plots.confusion_matrix(labels, probabilities)
    np.testing.assert_array_equal(ours, expected)
    assert ours.dtype == np.int64
    # Index vectors work too, and num_classes sizes the matrix for unseen classes.
    np.testing.assert_array_equal(
        plots.confusion_matrix(true, probabilities.argmax(axis=1), num_classes=4), expected
    )
    assert plots.confusion_matrix([0, 1], [1, 1], num_classes=5).shape == (5, 5)


def test_confusion_matrix_rejects_mismatches() -> None:
    with pytest.raises(ValueError, match="samples"):
        plots.confusion_matrix(np.eye(3), np.eye(3)[:2])
    with pytest.raises(ValueError, match="class counts disagree"):
        plots.confusion_matrix(np.eye(3), np.eye(4)[:3])
    with pytest.raises(ValueError, match="out of range"):
        plots.confusion_matrix([0, 3], [0, 1], num_classes=3)


def test_plot_confusion_matrix_from_model_and_from_predictions(
    model: keras.Model, dataset: tf.data.Dataset, tmp_path: Path
) -> None:
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    target = plots.plot_confusion_matrix(model, dataset, tmp_path / "cm.png")
    assert target == tmp_path / "cm.png"
    _read_png(target)

    labels, probabilities = collect_predictions(model, dataset)
    expected = sklearn_metrics.confusion_matrix(
        labels.argmax(axis=1), probabilities.argmax(axis=1), labels=[0, 1, 2]
    )
    np.testing.assert_array_equal(plots.confusion_matrix(labels, probabilities), expected)
    normalized = plots.plot_confusion_matrix(
        (labels, probabilities), None, tmp_path / "cm_norm.png", normalize=True
    )
    _read_png(normalized)


def test_plot_confusion_matrix_checks_class_names(
    model: keras.Model, dataset: tf.data.Dataset, tmp_path: Path
) -> None:
    pair = (np.eye(3), np.eye(3))
    with pytest.raises(xferclass.DatasetError, match="class_names has 2 names"):
        plots.plot_confusion_matrix(pair, None, tmp_path / "x.png", class_names=["a", "b"])
    with pytest.raises(TypeError, match="keras.Model"):
        plots.plot_confusion_matrix("model", dataset, tmp_path / "x.png")
    with pytest.raises(xferclass.DatasetError, match="dataset is None"):
        plots.plot_confusion_matrix(model, None, tmp_path / "x.png")


def test_plot_predictions(model: keras.Model, dataset: tf.data.Dataset, tmp_path: Path) -> None:
    target = plots.plot_predictions(model, dataset, tmp_path / "predictions.png", n=10)
    assert target == tmp_path / "predictions.png"
    _read_png(target)
    # More than the dataset holds: shows what there is.
    _read_png(plots.plot_predictions(model, dataset, tmp_path / "all.png", n=50))
    # Images without labels: predictions only.
    unlabelled = dataset.map(lambda x, y: x)
    _read_png(plots.plot_predictions(model, unlabelled, tmp_path / "unlabelled.png", n=4))
    with pytest.raises(ValueError, match="n=0"):
        plots.plot_predictions(model, dataset, tmp_path / "x.png", n=0)


def test_plot_predictions_checks_class_count(
    model: keras.Model, arrays: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    images, onehot = arrays
    four = tf.data.Dataset.from_tensor_slices((images, np.eye(4)[onehot.argmax(1)])).batch(8)
    with pytest.raises(xferclass.DatasetError, match="4 classes"):
        plots.plot_predictions(model, four, tmp_path / "x.png")


def test_plot_top_losses_picks_the_largest_losses(
    model: keras.Model, dataset: tf.data.Dataset, tmp_path: Path
) -> None:
    labels, probabilities, loss = _losses(model, dataset)
    assert np.ptp(loss) > 0.5 and len(np.unique(loss.round(6))) == SAMPLES  # no ties to hide behind
    wrong = labels.argmax(axis=1) != probabilities.argmax(axis=1)
    assert 9 < wrong.sum() < SAMPLES  # the top 9 are all wrong; some images are right
    target, worst = plots.plot_top_losses(model, dataset, tmp_path / "top.png", n=9)
    assert target == tmp_path / "top.png"
    _read_png(target)

    assert len(worst) == 9
    assert all(item.true != item.predicted for item in worst)
    indices = [item.index for item in worst]
    expected = np.argsort(-loss, kind="stable")[:9]
    assert indices == expected.tolist()
    np.testing.assert_allclose([item.loss for item in worst], loss[expected], rtol=1e-5)
    assert [item.loss for item in worst] == sorted((item.loss for item in worst), reverse=True)
    for item in worst:
        assert item.true == CLASS_NAMES[int(labels[item.index].argmax())]
        assert item.predicted == CLASS_NAMES[int(probabilities[item.index].argmax())]
        index, value, true, predicted = item  # a plain 4-tuple too
        assert (index, value, true, predicted) == tuple(item)


def test_plot_top_losses_with_n_above_the_dataset_size(
    model: keras.Model, dataset: tf.data.Dataset, tmp_path: Path
) -> None:
    _, worst = plots.plot_top_losses(model, dataset, tmp_path / "top.png", n=100)
    assert sorted(item.index for item in worst) == list(range(SAMPLES))


def test_class_names_fall_back_to_model_then_indices(
    model: keras.Model, arrays: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    plain = tf.data.Dataset.from_tensor_slices(arrays).batch(8)  # no class_names attribute
    _, worst = plots.plot_top_losses(model, plain, tmp_path / "a.png", n=3)
    assert {item.true for item in worst} <= {"0", "1", "2"}

    _, worst = plots.plot_top_losses(
        model, plain, tmp_path / "b.png", n=3, class_names=["x", "y", "z"]
    )
    assert {item.true for item in worst} <= {"x", "y", "z"}

    layer = model.get_layer("preprocessing")
    layer.class_names = ["red", "green", "blue"]
    try:
        _, worst = plots.plot_top_losses(model, plain, tmp_path / "c.png", n=3)
    finally:
        layer.class_names = None
    assert {item.true for item in worst} <= {"red", "green", "blue"}


def test_with_a_build_classifier_model(dataset: tf.data.Dataset, tmp_path: Path) -> None:
    tiny = xferclass.build_classifier(
        "mobilenet_v2", num_classes=3, weights=None, input_size=32, head_units=8
    )
    _read_png(plots.plot_confusion_matrix(tiny, dataset, tmp_path / "cm.png"))
    _read_png(plots.plot_predictions(tiny, dataset, tmp_path / "predictions.png", n=4))
    _, worst = plots.plot_top_losses(tiny, dataset, tmp_path / "top.png", n=4)
    assert len(worst) == 4


def test_missing_matplotlib_says_how_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in list(sys.modules):
        if name == "matplotlib" or name.startswith("matplotlib."):
            monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=r'pip install "xferclass\[plots\]"'):
        plots.plot_history(FINE_TUNE_HISTORY, tmp_path / "history.png")
    with pytest.raises(ImportError, match="matplotlib"):
        plots.plot_confusion_matrix((np.eye(2), np.eye(2)), None, tmp_path / "cm.png")
    assert not (tmp_path / "history.png").exists()
    # Pure numpy parts still work.
    assert plots.confusion_matrix([0, 1], [0, 1]).tolist() == [[1, 0], [0, 1]]


def test_all_is_the_public_api() -> None:
    public = {
        name
        for name, value in vars(plots).items()
        if not name.startswith("_") and getattr(value, "__module__", None) == plots.__name__
    }
    assert set(plots.__all__) == public


def test_plot_predictions_spreads_over_the_classes(
    model: keras.Model, tiny_dataset_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Read class by class (no shuffle): the first 6 images are all circles.
    folder = xferclass.load_image_dataset(tiny_dataset_dir, (32, 32), batch_size=5, shuffle=False)
    first = np.concatenate([y for _, y in folder.take(2)]).argmax(1)[:6]
    assert set(first.tolist()) == {0}
    shown: list[list[str]] = []
    real = plots._image_grid

    def recording(images: Any, titles: Sequence[str], *args: Any) -> Path:
        shown.append(list(titles))
        return real(images, titles, *args)

    monkeypatch.setattr(plots, "_image_grid", recording)
    _read_png(plots.plot_predictions(model, folder, tmp_path / "spread.png", n=6))
    truths = [title.split("true: ")[1] for title in shown[0]]
    # Taken in turn from each class: two of each of the three.
    assert truths == ["circle", "square", "triangle"] * 2
    # The images are those of the folder: the first two files of each class.
    pixels = np.concatenate([x for x, _ in folder])
    labels = np.concatenate([y for _, y in folder]).argmax(1)
    want = np.stack([pixels[labels == k][turn] for turn in range(2) for k in range(3)])
    (got, _), *rest = plots._spread_over_classes(plots._labelled_batches(folder), 6)
    assert not rest
    np.testing.assert_array_equal(got, want)
    # More images than the classes can fill in turns: the larger classes fill the rest.
    uneven = tf.data.Dataset.from_tensor_slices(
        (pixels[:10], np.eye(3, dtype="float32")[[0] * 8 + [1, 2]])
    ).batch(4)
    (_, y), *_ = plots._spread_over_classes(plots._labelled_batches(uneven), 7)
    assert y.argmax(1).tolist() == [0, 1, 2, 0, 0, 0, 0]
