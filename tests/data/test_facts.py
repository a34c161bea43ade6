"""Dataset facts survive the user's tf.data steps, as documented in ``xferclass.data._facts``."""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

import xferclass
from helpers import tiny_dataset, tiny_model
from xferclass import DatasetFacts, dataset_facts, with_facts
from xferclass.runtime._common import model_class_names
from xferclass.training._engine import training_labels

Transform = Callable[[tf.data.Dataset], tf.data.Dataset]


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory, tiny_dataset_dir: Path) -> Path:
    """The tiny shape folder plus one damaged file, so that ``skipped`` is not empty."""
    root = tmp_path_factory.mktemp("facts") / "shapes"
    shutil.copytree(tiny_dataset_dir, root)
    (root / "circle" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return root


@pytest.fixture()
def loaded(folder: Path) -> tf.data.Dataset:
    with pytest.warns(xferclass.SkippedFilesWarning):
        return xferclass.load_image_dataset(folder, 32, batch_size=8, shuffle=False)


def _identity(x: tf.Tensor, y: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    return x / 1.0, y


SAME_ROWS: dict[str, Transform] = {
    "map": lambda d: d.map(_identity),
    "parallel map": lambda d: d.map(_identity, num_parallel_calls=2),
    "cache": lambda d: d.cache(),
    "prefetch": lambda d: d.prefetch(1),
    "shuffle": lambda d: d.shuffle(4, seed=0),
    "unbatch": lambda d: d.unbatch(),
    "unbatch and batch": lambda d: d.unbatch().batch(5),
    "padded batch": lambda d: d.unbatch().padded_batch(3),
    "rebatch": lambda d: d.rebatch(4),
    "with_options": lambda d: d.with_options(tf.data.Options()),
    "several steps": lambda d: d.map(_identity).cache().shuffle(3).prefetch(2),
}

OTHER_ROWS: dict[str, Transform] = {
    "take": lambda d: d.take(1),
    "skip": lambda d: d.skip(1),
    "filter": lambda d: d.filter(lambda x, y: tf.reduce_sum(y) > 0),
    "shard": lambda d: d.shard(2, 0),
    "repeat": lambda d: d.repeat(2),
    "batch dropping its remainder": lambda d: d.unbatch().batch(5, drop_remainder=True),
    "zip with sample weights": lambda d: tf.data.Dataset.zip(
        (d, tf.data.Dataset.from_tensors(tf.ones(8)).repeat())
    ).map(lambda xy, w: (xy[0], xy[1], w)),
    "concatenate with unknown rows": lambda d: d.concatenate(d.take(1)),
    "ignore_errors": lambda d: d.ignore_errors(),
    "map after take": lambda d: d.take(2).map(_identity).prefetch(1),
}


# --------------------------------------------------------------------------- load_image_dataset


def test_a_loaded_dataset_carries_its_facts_and_its_attributes(loaded: tf.data.Dataset) -> None:
    facts = dataset_facts(loaded)
    assert isinstance(facts, DatasetFacts)
    assert facts.class_names == ("circle", "square", "triangle")
    assert len(facts.file_paths or ()) == 24 and facts.labels is not None
    assert facts.labels.dtype == np.int64 and list(np.bincount(facts.labels)) == [8, 8, 8]
    assert facts.multi_label is False and facts.image_size == (32, 32)
    assert [Path(path).name for path, _ in facts.skipped] == ["broken.png"]
    # The old attributes stay: they are public API.
    assert loaded.class_names == ["circle", "square", "triangle"]
    assert loaded.file_paths == list(facts.file_paths or ())
    np.testing.assert_array_equal(loaded.labels, facts.labels)
    assert loaded.multi_label is False and loaded.image_size == (32, 32)
    assert loaded.skipped == list(facts.skipped)


@pytest.mark.parametrize("transform", SAME_ROWS.values(), ids=SAME_ROWS.keys())
def test_every_fact_survives_a_step_that_keeps_the_rows(
    loaded: tf.data.Dataset, transform: Transform
) -> None:
    assert dataset_facts(transform(loaded)) == dataset_facts(loaded)


@pytest.mark.parametrize("transform", OTHER_ROWS.values(), ids=OTHER_ROWS.keys())
def test_a_step_that_changes_the_rows_drops_only_files_and_labels(
    loaded: tf.data.Dataset, transform: Transform
) -> None:
    before = dataset_facts(loaded)
    after = dataset_facts(transform(loaded))
    assert before is not None and after is not None
    assert after.file_paths is None and after.labels is None
    assert after.class_names == before.class_names
    assert after.multi_label == before.multi_label and after.image_size == before.image_size
    assert after.skipped == before.skipped


def test_concatenated_datasets_that_know_their_rows_keep_them_in_turn(folder: Path) -> None:
    with pytest.warns(xferclass.SkippedFilesWarning):
        first, second = xferclass.load_image_dataset(
            folder, 32, batch_size=4, validation_split=0.25, subset="both", seed=3
        )
    a, b = dataset_facts(first), dataset_facts(second)
    both = dataset_facts(first.concatenate(second.map(_identity)))
    assert a is not None and b is not None and both is not None
    assert both.file_paths == (a.file_paths or ()) + (b.file_paths or ())
    assert a.labels is not None and b.labels is not None
    np.testing.assert_array_equal(both.labels, np.concatenate([a.labels, b.labels]))
    assert both.skipped == a.skipped  # the same skipped file, listed once


def test_datasets_of_other_classes_combined_have_no_facts(loaded: tf.data.Dataset) -> None:
    other = with_facts(loaded, DatasetFacts(class_names=("a", "b", "c"), image_size=(32, 32)))
    assert dataset_facts(loaded.concatenate(other)) is None
    assert dataset_facts(tf.data.Dataset.zip((loaded, other))) is None
    multi = with_facts(loaded, DatasetFacts(class_names=("circle", "square", "triangle"),
                                            multi_label=True))  # fmt: skip
    assert dataset_facts(loaded.concatenate(multi)) is None


def test_a_map_that_resizes_the_images_drops_the_image_size(loaded: tf.data.Dataset) -> None:
    resized = dataset_facts(loaded.map(lambda x, y: (tf.image.resize(x, (16, 16)), y)))
    assert resized is not None and resized.image_size is None
    assert resized.class_names == ("circle", "square", "triangle")
    assert resized.file_paths is not None  # same rows, other pixels
    unknown = loaded.map(lambda x, y: (tf.numpy_function(lambda a: a, [x], tf.float32), y))
    assert (dataset_facts(unknown) or DatasetFacts()).image_size == (32, 32)


# --------------------------------------------------------------------------- other datasets


def test_a_dataset_with_no_facts_gives_none() -> None:
    plain = tf.data.Dataset.from_tensor_slices(np.zeros((4, 2))).batch(2)
    assert dataset_facts(plain) is None
    assert dataset_facts(plain.map(lambda x: x).take(1)) is None
    assert dataset_facts(np.zeros(3)) is None
    assert dataset_facts(None) is None


def test_attributes_set_by_hand_are_facts_and_survive_a_map() -> None:
    dataset = tiny_dataset(16)  # a plain dataset with ``class_names`` set on it
    facts = dataset_facts(dataset.map(_identity).prefetch(1))
    assert facts == DatasetFacts(class_names=("red", "green", "blue"))


def test_an_attribute_assigned_on_a_loaded_dataset_changes_that_fact(
    loaded: tf.data.Dataset,
) -> None:
    loaded.class_names = ["triangle", "square", "circle"]
    mapped = dataset_facts(loaded.map(_identity))
    assert mapped is not None and mapped.class_names == ("triangle", "square", "circle")
    assert mapped.file_paths is not None  # the other facts are as loaded


# --------------------------------------------------------------------------- with_facts


def test_with_facts_attaches_facts_to_a_new_dataset(loaded: tf.data.Dataset) -> None:
    rows = np.arange(24).reshape(24, 1).astype("float32")
    plain = tf.data.Dataset.from_tensor_slices((rows, tf.one_hot(np.arange(24) % 3, 3))).batch(8)
    facts = dataset_facts(loaded)
    assert facts is not None
    given = with_facts(plain, facts)
    assert given is not plain and dataset_facts(plain) is None  # the input is left as it was
    assert dataset_facts(given) == facts
    assert given.class_names == list(facts.class_names or ())
    assert dataset_facts(given.map(_identity)) == facts
    assert [row[0] for batch, _ in given for row in batch.numpy()] == list(range(24))


def test_with_facts_none_stops_the_walk(loaded: tf.data.Dataset) -> None:
    relabelled = with_facts(loaded.map(lambda x, y: (x, y[:, ::-1])), None)
    assert dataset_facts(relabelled) is None
    assert dataset_facts(relabelled.prefetch(1)) is None
    assert not hasattr(relabelled, "class_names")


def test_with_facts_refuses_what_is_not_a_dataset_or_facts(loaded: tf.data.Dataset) -> None:
    facts = dataset_facts(loaded)
    with pytest.raises(xferclass.InvalidArgumentTypeError, match="tf.data.Dataset.*ndarray"):
        with_facts(np.zeros(3), facts)  # type: ignore[arg-type,unused-ignore]
    with pytest.raises(xferclass.InvalidArgumentTypeError, match="DatasetFacts.*dict"):
        with_facts(loaded, {"class_names": ["a"]})  # type: ignore[arg-type]


# --------------------------------------------------------------------------- DatasetFacts


def test_facts_are_frozen_typed_and_compared_by_value() -> None:
    # Lists are taken and stored as tuples and a read-only array.
    given: dict = dict(class_names=["a", "b"], file_paths=["x.png", "y.png"], labels=[1, 0],
                       skipped=[("z.png", "bad")], image_size=[4, 5])  # fmt: skip
    facts = DatasetFacts(**given)
    assert facts.class_names == ("a", "b") and facts.file_paths == ("x.png", "y.png")
    assert facts.skipped == (("z.png", "bad"),) and facts.image_size == (4, 5)
    assert facts.labels is not None and facts.labels.dtype == np.int64
    assert not facts.labels.flags.writeable
    with pytest.raises(dataclasses.FrozenInstanceError):
        facts.class_names = ("b", "a")  # type: ignore[misc]
    same = DatasetFacts(("a", "b"), ("x.png", "y.png"), np.array([1, 0]), False,
                        (("z.png", "bad"),), (4, 5))  # fmt: skip
    assert facts == same and facts != dataclasses.replace(same, labels=np.array([0, 1]))
    assert facts != "facts" and facts.without_rows().labels is None
    assert repr(facts) == (
        "DatasetFacts(class_names=('a', 'b'), file_paths=<2 files>, labels=<2 labels>, "
        "multi_label=False, skipped=<1 files>, image_size=(4, 5))"
    )
    multi = DatasetFacts(("a", "b"), labels=np.array([[1, 1], [0, 1]]), multi_label=True)
    assert multi.labels is not None and multi.labels.dtype == np.float32


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"file_paths": ["x.png"], "labels": [0, 1]}, "2 labels for 1 file_paths"),
        ({"labels": [[0, 1]]}, "one class index per file"),
        ({"labels": [0, 1], "multi_label": True}, "multi-hot rows"),
        ({"class_names": ["a"], "labels": [0, 1]}, "do not fit the 1 class_names"),
        ({"class_names": ["a", "b"], "labels": [-1]}, "do not fit"),
        ({"class_names": ["a"], "labels": [[1, 0]], "multi_label": True}, "do not fit"),
        ({"image_size": (0, 4)}, r"image_size=\(0, 4\)"),
        ({"image_size": (4, 4, 3)}, "image_size"),
    ],
)
def test_inconsistent_facts_are_refused(options: dict, message: str) -> None:
    with pytest.raises(xferclass.InvalidArgumentError, match=message):
        DatasetFacts(**options)


# --------------------------------------------------------------------------- readers


def test_fit_on_a_mapped_dataset_stores_the_class_names(loaded: tf.data.Dataset) -> None:
    model = tiny_model()
    xferclass.fit(model, loaded.map(_identity).prefetch(1), epochs=1, verbose=0)
    assert model_class_names(model) == ["circle", "square", "triangle"]
    images = np.zeros((1, 32, 32, 3), np.float32)
    assert xferclass.predict(model, images, verbose=0).class_names == [
        "circle", "square", "triangle",
    ]  # fmt: skip


def test_validation_in_another_class_order_is_refused_after_a_map(
    loaded: tf.data.Dataset, folder: Path
) -> None:
    with pytest.warns(xferclass.SkippedFilesWarning):
        reordered = xferclass.load_image_dataset(
            folder, 32, batch_size=8, shuffle=False,
            class_names=["triangle", "square", "circle"],
        )  # fmt: skip
    model = tiny_model()
    with pytest.raises(
        xferclass.DatasetError,
        match=r"validation has .*\['circle', 'square', 'triangle'\].*"
        r"\['triangle', 'square', 'circle'\]",
    ):
        xferclass.fit(model, loaded, reordered.map(_identity), epochs=1, verbose=0)
    assert model_class_names(model) is None


def test_the_class_weights_read_the_labels_after_a_map_and_count_after_a_take(
    loaded: tf.data.Dataset,
) -> None:
    known = training_labels(loaded.map(_identity).prefetch(1))
    np.testing.assert_array_equal(known, loaded.labels)
    counted = training_labels(loaded.take(1))  # rows changed: read from the data
    assert counted.shape == (8, 3) and counted.sum() == 8
