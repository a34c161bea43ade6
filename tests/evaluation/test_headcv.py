"""Cross-validation of heads on cached features: folds, class weights and metrics against
scikit-learn, the stack of heads (independent, and equal to the classifier's own head),
and the selection with its held-out estimate and the floor rule."""

from __future__ import annotations

import dataclasses
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score
from sklearn.utils.class_weight import compute_class_weight

import xferclass
from helpers import tiny_arrays
from xferclass.auto import _decide
from xferclass.auto._features import FeatureSet
from xferclass.auto._search import Choice, Search, train_final_head
from xferclass.core._errors import InvalidArgumentError
from xferclass.evaluation import _headcv

# --------------------------------------------------------------------------- folds and weights


def test_folds_are_stratified_seeded_and_cover_every_row() -> None:
    labels = np.repeat([0, 1, 2], [50, 13, 7])
    fold = _headcv.stratified_folds(labels, 5, seed=3)
    assert sorted(np.unique(fold)) == [0, 1, 2, 3, 4]
    for k, count in zip((0, 1, 2), (50, 13, 7)):
        per_fold = np.bincount(fold[labels == k], minlength=5)
        assert per_fold.sum() == count and per_fold.max() - per_fold.min() <= 1
    np.testing.assert_array_equal(fold, _headcv.stratified_folds(labels, 5, seed=3))
    assert not np.array_equal(fold, _headcv.stratified_folds(labels, 5, seed=4))
    with pytest.raises(xferclass.InvalidArgumentError, match="folds"):
        _headcv.stratified_folds(labels, 1, seed=0)


def test_class_weights_match_scikit_learn_and_the_square_root_is_halfway() -> None:
    labels = np.repeat([0, 1, 2], [80, 15, 5])
    balanced = _headcv.class_weight_vector(labels, 3, "balanced")
    np.testing.assert_allclose(
        balanced, compute_class_weight("balanced", classes=np.arange(3), y=labels)
    )
    root = _headcv.class_weight_vector(labels, 3, "sqrt")
    assert np.mean(root[labels]) == pytest.approx(1.0)  # the loss keeps its scale
    np.testing.assert_allclose(root / root[0], np.sqrt(balanced / balanced[0]))
    np.testing.assert_array_equal(_headcv.class_weight_vector(labels, 3, "none"), np.ones(3))
    with pytest.raises(xferclass.InvalidArgumentError, match="class weight"):
        _headcv.class_weight_vector(labels, 3, "inverse")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_match_scikit_learn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, 200)
    probabilities = rng.dirichlet(np.ones(5), 200)  # class 4 is predicted but never true
    probabilities[:, 3] *= 0.01  # class 3 is true but rarely predicted
    predicted = probabilities.argmax(1)
    assert _headcv.score("accuracy", labels, probabilities) == pytest.approx(
        accuracy_score(labels, predicted)
    )
    with warnings.catch_warnings():  # scikit-learn warns of the class never true
        warnings.simplefilter("ignore", UserWarning)
        reference = balanced_accuracy_score(labels, predicted)
    assert _headcv.score("balanced_accuracy", labels, probabilities) == pytest.approx(reference)
    present = np.union1d(labels, predicted)
    assert _headcv.score("macro_f1", labels, probabilities) == pytest.approx(
        f1_score(labels, predicted, average="macro", labels=present, zero_division=0)
    )
    with pytest.raises(xferclass.InvalidArgumentError, match="metric"):
        _headcv.score("auc", labels, probabilities)


# --------------------------------------------------------------------------- the stack


def _blobs(n: int = 120, dim: int = 8, classes: int = 3, seed: int = 0) -> tuple:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    centres = rng.normal(0.0, 3.0, (classes, dim))
    return (centres[labels] + rng.normal(0.0, 1.0, (n, dim))).astype(np.float32), labels


def test_stacked_heads_are_independent_and_record_every_epoch() -> None:
    features, labels = _blobs()
    weights = np.ones((3, len(labels)))
    weights[1] = 0.0  # head 1 sees no row: no gradient, so Adam never moves it
    weights[2, labels == 2] = 0.0  # head 2 never sees class 2
    result = _headcv.train_stacked_heads(
        {"plain": features, "other": features[::-1].copy()}, labels, weights,
        train_views=["plain"], eval_sets={"none": ["plain"], "both": ["plain", "other"]},
        classes=3, epochs=5, units=16, learning_rate=0.01, batch_size=8, seed=1,
    )  # fmt: skip
    assert sorted(result.probabilities) == [1, 2, 3, 4, 5]
    first, last = result.probabilities[1], result.probabilities[5]
    assert all(p["none"].shape == (120, 3) for p in last)
    np.testing.assert_allclose(last[0]["none"].sum(1), 1.0, rtol=1e-5)
    # The view average is the mean of the views' probabilities.
    other = last[0]["both"] * 2 - last[0]["none"]
    assert other.shape == (120, 3) and np.all(other > -1e-6)
    assert _headcv.score("accuracy", labels, last[0]["none"]) > 0.9
    np.testing.assert_allclose(first[1]["none"], last[1]["none"], atol=1e-6)
    assert not np.allclose(first[0]["none"], last[0]["none"])
    assert np.mean(last[2]["none"].argmax(1) == 2) < 0.2
    assert [w.shape for w in _headcv.head_weights(result.weights, 2)] == [
        (8, 16), (16,), (16, 3), (3,)
    ]  # fmt: skip


def test_each_epoch_shows_every_row_once_in_a_new_seeded_order_without_autotuning() -> None:
    # Row i is (2i, 2i + 1) and its target is i, so pairs can be checked after shuffling.
    x = np.arange(40, dtype=np.float32).reshape(20, 2)
    y = np.arange(20, dtype=np.float32)[:, None]

    def orders(seed: int) -> list[np.ndarray]:
        dataset = _headcv._epochs(x, y, 6, seed)
        assert dataset.options().autotune.enabled is False
        found = []
        for _ in range(3):  # what fit does: a new iterator every epoch
            batches = [(np.asarray(a), np.asarray(b)) for a, b in dataset]
            assert [len(a) for a, _ in batches] == [6, 6, 6, 2]
            rows = np.concatenate([a for a, _ in batches])
            targets = np.concatenate([b for _, b in batches])[:, 0]
            np.testing.assert_array_equal(rows[:, 0], 2 * targets)  # rows keep their targets
            np.testing.assert_array_equal(np.sort(targets), y[:, 0])  # every row, once
            found.append(targets)
        return found

    first = orders(3)
    assert not np.array_equal(first[0], first[1]) and not np.array_equal(first[1], first[2])
    for mine, again in zip(first, orders(3)):
        np.testing.assert_array_equal(mine, again)  # seeded
    assert not np.array_equal(first[0], orders(4)[0])


def test_the_final_head_inside_the_classifier_predicts_what_was_measured() -> None:
    import keras

    from xferclass.models import HEAD_DENSE, POOL, PREDICTIONS

    images, onehot = tiny_arrays(30)
    labels = onehot.argmax(1)
    model = xferclass.build_classifier("test_tiny", num_classes=3, weights=None, input_size=32)
    pooled = keras.Model(model.input, model.get_layer(POOL).output)
    features = FeatureSet("test_tiny", 32, {"plain": np.asarray(pooled.predict(images, verbose=0))})
    choice = Choice("test_tiny", 32, "plain", "balanced", 3, "none")
    (head,) = train_final_head(features, labels, 3, choice, units=128, learning_rate=1e-3,
                               batch_size=8, seed=0)  # fmt: skip
    model.get_layer(HEAD_DENSE).set_weights(head[:2])
    model.get_layer(PREDICTIONS).set_weights(head[2:])
    hidden = np.maximum(features.views["plain"] @ head[0] + head[1], 0.0)
    logits = hidden @ head[2] + head[3]
    expected = np.exp(logits - logits.max(1, keepdims=True))
    expected /= expected.sum(1, keepdims=True)
    np.testing.assert_allclose(model.predict(images, verbose=0), expected, atol=1e-4)


def _softmax_head(x: np.ndarray, head: list[np.ndarray]) -> np.ndarray:
    logits = np.maximum(x @ head[0] + head[1], 0.0) @ head[2] + head[3]
    found = np.exp(logits - logits.max(1, keepdims=True))
    return found / found.sum(1, keepdims=True)


def test_averaged_heads_run_the_backbone_once_and_predict_the_mean_of_their_heads(
    tmp_path: Path,
) -> None:
    import keras

    from xferclass.auto._ensemble import build_head_average
    from xferclass.models import POOL

    images, onehot = tiny_arrays(30)
    labels = onehot.argmax(1)
    model = xferclass.build_classifier("test_tiny", num_classes=3, weights=None, input_size=32)
    pooled = keras.Model(model.input, model.get_layer(POOL).output)
    x = np.asarray(pooled.predict(images, verbose=0))
    features = FeatureSet("test_tiny", 32, {"plain": x})
    choice = Choice("test_tiny", 32, "plain", "none", 3, "none", heads=4)
    heads = train_final_head(features, labels, 3, choice, units=16, learning_rate=1e-2,
                             batch_size=8, seed=0)  # fmt: skip
    assert len(heads) == 4 and not np.allclose(heads[0][0], heads[1][0])
    average = build_head_average(model, heads)
    expected = np.mean([_softmax_head(x, head) for head in heads], axis=0)
    np.testing.assert_allclose(average.predict(images, verbose=0), expected, atol=1e-4)
    backbones = [layer for layer in average.layers if layer.name == "backbone"]
    assert len(backbones) == 1 and average.output_shape == (None, 3)
    xferclass.save_model(average, tmp_path / "heads.keras")
    loaded = xferclass.load_model(tmp_path / "heads.keras")
    np.testing.assert_allclose(loaded.predict(images, verbose=0), expected, atol=1e-4)


def _random_search(rows: int, seed: int) -> tuple[Search, FeatureSet]:
    """A search over features and labels that are pure noise: nothing can be learnt."""
    from xferclass.auto._features import Images

    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, rows)
    images = Images(tuple(f"{i}.png" for i in range(rows)), labels, ("a", "b", "c"),
                    ("train",) * rows)  # fmt: skip
    fold = _headcv.stratified_folds(labels, 3, seed)
    search = Search(images, fold, "accuracy", extractor=lambda n, s: None, clock=lambda: 0.0,
                    deadline=1e9, units=64, learning_rate=1e-2, passes=(20,))  # fmt: skip
    features = FeatureSet("b0", 32, {"plain": rng.normal(size=(rows, 32)).astype(np.float32)})
    search.features[("b0", 32)] = features
    return search, features


def test_averaged_heads_are_scored_only_on_images_none_of_their_heads_trained_on() -> None:
    search, features = _random_search(180, seed=1)
    labels = search.images.labels
    search.oof.update(search._compare(features, "plain", ("none",)))
    single = Choice("b0", 32, "plain", "none", 20, "none")
    search.average_heads(single)
    averaged = dataclasses.replace(single, heads=5)
    assert set(search.oof) == {single, averaged}
    assert search.log[-1]["experiment"] == "heads" and search.log[-1]["caching_s"] == 0.0
    probabilities = search.oof[averaged]
    np.testing.assert_allclose(probabilities.sum(1), 1.0, atol=1e-5)
    assert not np.allclose(probabilities, search.oof[single])
    # The new heads memorise their training rows (so a leak would show) ...
    (head, *_) = train_final_head(features, labels, 3, single, units=64, learning_rate=1e-2,
                                  batch_size=32, seed=0)  # fmt: skip
    assert _headcv.score("accuracy", labels, _softmax_head(features.views["plain"], head)) > 0.8
    # ... yet out of fold they are at chance (1/3; sd of 180 guesses is 0.035): every head
    # of every fold saw only the other folds.
    assert _headcv.score("accuracy", labels, probabilities) < 0.5


def test_averaged_heads_that_do_not_fit_are_listed_as_skipped() -> None:
    from xferclass.auto import _average_heads, _Builder

    search, features = _random_search(60, seed=2)
    search.oof.update(search._compare(features, "plain", ("none",)))
    floor = Choice("b0", 32, "plain", "none", 20, "none")
    search.deadline, search.cv_cost = 1.0, 1.0  # hours of work, one second left
    skipped: list[str] = []
    builder = _Builder(3, None, 64)
    for _ in range(2):
        _average_heads(search, builder, floor, {}, skipped, after_floor=True)
    assert (
        len(skipped) == 1 and "5 heads of b0 32 px" in skipped[0] and "1 s were left" in skipped[0]
    )
    assert all(c.heads == 1 for c in search.oof)


# --------------------------------------------------------------------------- selection


def _candidates(labels: np.ndarray, right: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Probabilities that put 0.9 on the true class where ``right`` is True, else on the next."""
    found = {}
    for key, mask in right.items():
        guess = np.where(mask, labels, (labels + 1) % 3)
        found[key] = np.full((len(labels), 3), 0.05)
        found[key][np.arange(len(labels)), guess] = 0.9
    return found


def test_selection_scores_each_fold_with_the_choice_made_on_the_others() -> None:
    labels = np.arange(100) % 3
    fold = np.arange(100) % 4
    # "lucky" is perfect on fold 0 and poor elsewhere; "steady" is good everywhere.
    lucky = fold == 0
    steady = np.arange(100) % 5 != 0
    found = _candidates(labels, {"steady": steady, "lucky": lucky})
    selection = _headcv.select(found, labels, fold, "accuracy")
    assert selection.chosen == "steady"
    assert selection.scores["steady"] == pytest.approx(0.8)
    # Fold 0 is scored by "steady" (chosen on folds 1-3), not by the lucky candidate.
    expected = [np.mean(steady[fold == j]) for j in range(4)]
    assert selection.fold_scores == pytest.approx(expected)
    assert selection.estimate == pytest.approx(np.mean(expected))
    assert selection.standard_error == pytest.approx(np.std(expected, ddof=1) / math.sqrt(4))
    # Ties go to the preferred (simpler) candidate.
    tied = _candidates(labels, {"fancy": steady, "floor": steady})
    assert _headcv.select(tied, labels, fold, "accuracy", prefer=["floor"]).chosen == "floor"


def test_derived_candidates_are_rebuilt_without_the_fold_they_are_scored_on() -> None:
    labels = np.arange(100) % 3
    fold = np.arange(100) % 4
    steady = np.arange(100) % 5 != 0
    found = _candidates(labels, {"steady": steady})
    calls: list[np.ndarray] = []

    def fitted(rows: np.ndarray) -> dict[str, np.ndarray]:
        """A rule that learns its rows by heart: right on them, wrong everywhere else."""
        calls.append(rows)
        return _candidates(labels, {"fitted": np.isin(np.arange(100), rows)})

    selection = _headcv.select(found, labels, fold, "accuracy", derived=fitted)
    # Built on every image, it is right everywhere and chosen, but each fold is scored
    # by the rule rebuilt on the other folds, which that fold's labels did not shape.
    assert selection.chosen == "fitted" and selection.scores["fitted"] == 1.0
    assert [sorted(rows) for rows in calls] == [list(range(100))] + [
        list(np.flatnonzero(fold != j)) for j in range(4)
    ]
    assert selection.fold_choices == ("fitted",) * 4
    assert selection.fold_scores == (0.0,) * 4 and selection.estimate == 0.0
    # Built once on every image and given as a plain candidate, it fooled the estimate.
    leaky = {**found, **fitted(np.arange(100))}
    assert _headcv.select(leaky, labels, fold, "accuracy").estimate == 1.0


def _search(labels: np.ndarray, fold: np.ndarray, oof: dict[Choice, np.ndarray]) -> Search:
    from xferclass.auto._features import Images

    images = Images(tuple(f"{i}.png" for i in range(len(labels))), labels, ("a", "b", "c"),
                    ("train",) * len(labels))  # fmt: skip
    search = Search(images, fold, "accuracy", extractor=lambda n, s: None, clock=lambda: 0.0,
                    deadline=1.0)  # fmt: skip
    search.oof.update(oof)
    _cache(search)
    return search


def _cache(search: Search) -> None:
    """Mark the features of every pair of the search's choices as cached."""
    for choice in search.oof:
        search.features.setdefault((choice.backbone, choice.size),
                                   FeatureSet(choice.backbone, choice.size))  # fmt: skip


def test_the_floor_is_returned_unless_a_choice_beats_it_on_folds_it_was_not_chosen_on() -> None:
    labels = np.arange(240) % 3
    fold = np.arange(240) % 4
    place = np.arange(240) // 4  # each image's place within its fold, 0 to 59
    floor = Choice("b0", 224, "plain", "none", 10, "none")
    lucky = Choice("b0", 224, "plain", "balanced", 10, "none")
    better = Choice("b2", 260, "flip", "sqrt", 10, "flip")
    floor_right = place % 10 != 0  # 54 of 60 in every fold: 0.9
    # The lucky choice beats the floor over all images only through fold 0, where it is
    # perfect (53 of 60 elsewhere): chosen on the other folds each time, it is chosen for
    # folds 1-3 (scoring 0.883 there) and not for fold 0, so its estimate is below the floor.
    lucky_right = (fold == 0) | ~np.isin(place, [0, 9, 18, 27, 36, 45, 54])
    found = _candidates(labels, {"floor": floor_right, "lucky": lucky_right})
    search = _search(labels, fold, {floor: found["floor"], lucky: found["lucky"]})
    assert _headcv.score("accuracy", labels, found["lucky"]) > 0.9
    chosen, decision = _decide(search, floor, {})
    assert chosen == floor and not decision["estimate"]["beats_floor"]
    assert decision["estimate"]["value"] == pytest.approx(0.9)
    assert "nothing beat the floor" in decision["why"]
    # A choice better on every fold is returned, with its held-out estimate.
    found = _candidates(labels, {"better": place % 20 != 0})
    search.oof[better] = found["better"]
    # Not while its features are gone: it could not be trained on every image.
    chosen, _ = _decide(search, floor, {})
    assert chosen == floor
    _cache(search)
    chosen, decision = _decide(search, floor, {})
    assert chosen == better and decision["estimate"]["beats_floor"]
    assert decision["estimate"]["value"] == pytest.approx(0.95)
    # A choice the caller ruled out is never returned.
    chosen, _ = _decide(search, floor, {"augment": None})
    assert chosen != better


def test_the_margin_is_the_standard_error_of_the_paired_difference() -> None:
    labels = np.arange(200) % 2
    floor = np.eye(2)[labels]
    better = floor.copy()
    floor[:10] = floor[:10, ::-1]  # the floor misses 10 images, the choice 4 others
    better[150:154] = better[150:154, ::-1]
    difference = np.r_[np.ones(10), np.zeros(140), -np.ones(4), np.zeros(46)]
    expected = np.std(difference, ddof=1) / math.sqrt(200)
    assert _headcv.paired_se("accuracy", labels, better, floor) == pytest.approx(expected)
    assert _headcv.paired_se("accuracy", labels, floor, floor) == 0.0
    assert _headcv.paired_se("balanced_accuracy", labels, floor, floor) == 0.0


@pytest.mark.parametrize("metric", ["balanced_accuracy", "macro_f1"])
def test_the_margin_of_a_metric_not_over_images_is_in_its_own_terms(metric: str) -> None:
    # A rare class of 4 images in 300: one of them moves balanced accuracy by 1/12 (8
    # points over 3 classes), one common image by 0.2. Two predictions that differ on the
    # rare class: the spread of their difference in the metric, over many data sets drawn
    # alike, is the standard error the margin must estimate.
    counts = (148, 148, 4)
    labels = np.repeat(np.arange(3), counts)
    right_first = np.array([0.9, 0.9, 0.5])  # chance of being right, per class
    right_second = np.array([0.9, 0.9, 0.75])
    rng = np.random.default_rng(0)

    def draw() -> tuple[np.ndarray, np.ndarray]:
        found = []
        for right in (right_first, right_second):
            hit = rng.uniform(size=len(labels)) < right[labels]
            guess = np.where(hit, labels, (labels + 1 + (labels == 0)) % 3)
            found.append(np.eye(3)[guess])
        return found[0], found[1]

    differences = []
    for _ in range(1000):
        first, second = draw()
        differences.append(_headcv.score(metric, labels, first)
                           - _headcv.score(metric, labels, second))  # fmt: skip
    truth = float(np.std(differences))
    estimates, by_images = [], []
    for seed in range(8):
        first, second = draw()
        estimates.append(_headcv.paired_se(metric, labels, first, second, seed=seed))
        by_images.append(_headcv.paired_se("accuracy", labels, first, second))
    # The bootstrap's standard error is the spread's own, within the noise of 8 draws
    # of 4 rare images each. For balanced accuracy the per-image accuracy rule is
    # several times too small (macro-F1 mixes in the common classes' precision, which
    # per-image differences do track).
    assert 0.5 * truth < np.mean(estimates) < 1.5 * truth
    if metric == "balanced_accuracy":
        assert np.mean(by_images) < 0.4 * truth


def _masks(fractions: dict[str, tuple[float, ...]], fold: np.ndarray) -> dict[str, np.ndarray]:
    """Per name, the images it gets right: the first share ``fractions[j]`` of fold j."""
    place = np.zeros(len(fold), int)
    for j in np.unique(fold):
        place[fold == j] = np.arange(np.sum(fold == j))
    size = np.bincount(fold)[fold]
    return {name: place < np.asarray(share)[fold] * size for name, share in fractions.items()}


def test_pairs_are_kept_when_any_fold_could_choose_them_and_only_for_allowed_choices() -> None:
    from types import SimpleNamespace

    from xferclass.auto import _forget

    labels = np.arange(240) % 3
    fold = np.arange(240) % 4
    right = _masks({
        "a": (0.9,) * 4, "b": (0.85,) * 4, "g": (0.5, 0.95, 0.95, 0.95), "c": (0.78,) * 4,
        # Fourth over every image (0.7875), but the best without fold 1 (0.95).
        "h": (0.95, 0.3, 0.95, 0.95),
        "d": (1.0, 0.5, 0.5, 0.5),  # never among the best three
        "x": (1.0,) * 4,  # perfect, but with class weights the caller ruled out
        "floor": (0.6,) * 4, "big": (0.7,) * 4,
    }, fold)  # fmt: skip
    found = _candidates(labels, right)
    choices = {name: Choice(name, 224, "plain", "none", 10, "none") for name in right}
    choices["x"] = Choice("x", 224, "plain", "balanced", 10, "none")
    choices["big"] = Choice("big", 288, "plain", "none", 10, "none")  # alone at its size
    search = _search(labels, fold, {choices[n]: found[n] for n in right})
    builder = SimpleNamespace(models={pair: object() for pair in search.features})
    _forget(search, builder, choices["floor"], {"class_weight": "none"})  # type: ignore[arg-type]
    kept = {name for name, _ in search.features}
    assert kept == {"floor", "a", "b", "g", "h", "big"}
    assert set(builder.models) == set(search.features)
    # The choice returned is always one whose features are still there.
    chosen, _ = _decide(search, choices["floor"], {"class_weight": "none"})
    assert (chosen.backbone, chosen.size) in search.features or all(
        (m.backbone, m.size) in search.features for m in chosen.members
    )


@pytest.mark.parametrize("heads", [1, 30])
def test_each_stacked_head_starts_as_a_dense_layer_would(heads: int) -> None:
    """Glorot uniform per head, whatever the size of the stack: limit sqrt(6 / (in + out))."""
    import keras

    model = _headcv._stacked_model(heads, dim=64, units=8, classes=3, seed=0)
    first = keras.ops.convert_to_numpy(model.layers[1].kernel)
    assert first.shape == (heads, 64, 8)
    limit = math.sqrt(6.0 / (64 + 8))
    dense = keras.layers.Dense(8)
    dense.build((None, 64))
    reference = keras.ops.convert_to_numpy(dense.kernel)
    assert np.abs(first).max() <= limit and np.abs(reference).max() <= limit
    # A uniform on [-limit, limit] has sd limit / sqrt(3); over 512 or more draws the
    # sample sd is within 10 % of it with overwhelming probability (its relative sd is
    # about 1 / sqrt(2.5 n), under 2 % here).
    for weights in (first, reference):
        assert abs(weights.std() / (limit / math.sqrt(3)) - 1) < 0.1


def _scaled_blobs(n: int = 150, dim: int = 6, classes: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Overlapping classes (no perfect separation, so the penalty matters) whose
    features have scales from 0.5 to 20 and offsets: standardization matters too."""
    rng = np.random.default_rng(0)
    labels = np.arange(n) % classes
    x = rng.normal(0, 0.7, (classes, dim))[labels] + rng.normal(0, 1.0, (n, dim))
    return (x * rng.uniform(0.5, 20, dim) + rng.normal(0, 5, dim)).astype(np.float32), labels


def test_linear_heads_reach_scikit_learns_penalized_logistic_regression() -> None:
    import keras
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    x, labels = _scaled_blobs()
    strengths, epochs = [0.01, 0.3], 100
    steps = epochs * -(-len(x) // 16)
    result = _headcv.train_stacked_heads(
        {"plain": x}, labels, np.ones((2, len(x))), train_views=["plain"],
        eval_sets={"none": ["plain"]}, classes=3, epochs=epochs, units=0, batch_size=16,
        learning_rate=keras.optimizers.schedules.CosineDecay(0.05, steps), seed=0,
        record_epochs=[epochs], inverse_l2=strengths, standardize=True,
    )  # fmt: skip
    scaled = StandardScaler().fit_transform(x)
    norms = []
    for h, c in enumerate(strengths):
        reference = LogisticRegression(C=c, max_iter=5000, tol=1e-10).fit(scaled, labels)
        got = result.probabilities[epochs][h]["none"]
        # Adam on minibatches ends within about 0.015 of the optimum here.
        np.testing.assert_allclose(got, reference.predict_proba(scaled), atol=0.05)
        # The standardization folded into the weights: a softmax Dense on raw features.
        kernel, bias = _headcv.linear_weights(result, h)
        assert kernel.shape == (6, 3) and bias.shape == (3,)
        logits = x.astype(np.float64) @ kernel + bias
        raw = np.exp(logits - logits.max(1, keepdims=True))
        np.testing.assert_allclose(raw / raw.sum(1, keepdims=True), got, atol=1e-4)
        norms.append(float(np.sum(np.asarray(result.weights[0][h]) ** 2)))
    assert norms[0] < norms[1]  # the stronger penalty, the smaller weights


def test_standardization_is_by_the_training_views_and_a_constant_column_is_kept() -> None:
    rows = np.array([[1.0, 5.0], [3.0, 5.0]], np.float32)
    mean, scale = _headcv.standardization(rows)
    np.testing.assert_allclose(mean, [2.0, 5.0])
    np.testing.assert_allclose(scale, [1.0, 1.0])  # std 1, and 1 for the constant column


def test_inverse_l2_needs_one_positive_strength_per_head() -> None:
    x, labels = _scaled_blobs(30)
    for bad in ([0.1], [0.1, 0.0]):
        with pytest.raises(InvalidArgumentError, match="one positive C per head"):
            _headcv.train_stacked_heads(
                {"plain": x}, labels, np.ones((2, len(x))), train_views=["plain"],
                eval_sets={}, classes=3, epochs=1, units=0, inverse_l2=bad,
            )  # fmt: skip


def test_linear_choices_are_scored_out_of_fold_beside_the_dense_ones() -> None:
    from xferclass.auto._search import LINEAR_C, linear_epochs

    search, features = _random_search(180, seed=2)
    found = search._compare_linear(features, "plain", ("none", "balanced"))
    assert len(found) == 2 * len(LINEAR_C)  # per class weight and C; one TTA (plain)
    epochs = linear_epochs(1, 180)
    assert {(c.head, c.epochs, c.tta) for c in found} == {("linear", epochs, "none")}
    assert {c.inverse_l2 for c in found} == set(LINEAR_C)
    # Noise: a head that had seen the images it is scored on would score far above chance.
    scores = [_headcv.score("accuracy", search.images.labels, p) for p in found.values()]
    assert max(scores) < 0.5
    # Learnable features: the same heads find the classes on images they did not train on.
    x, labels = _blobs()
    search.images = dataclasses.replace(search.images, labels=labels,
                                        paths=tuple(map(str, range(len(labels)))))  # fmt: skip
    search.fold = _headcv.stratified_folds(labels, 3, 0)
    features.views["plain"] = x
    found = search._compare_linear(features, "plain", ("none",))
    assert min(_headcv.score("accuracy", labels, p) for p in found.values()) > 0.9


@pytest.mark.parametrize("depth", ["last", "every"])
def test_the_final_linear_head_is_a_softmax_on_the_raw_features_and_saves(
    tmp_path: Path, depth: str
) -> None:
    from conftest import make_shape_dataset
    from xferclass.auto import _Builder, _final_model
    from xferclass.auto._features import Images, extract
    from xferclass.models import HEAD_DENSE
    from xferclass.saving import load_model

    root = make_shape_dataset(tmp_path / "data", per_class=10)
    files = sorted(root.rglob("*.png"))
    names = sorted({p.parent.name for p in files})
    labels = np.array([names.index(p.parent.name) for p in files])
    images = Images(tuple(map(str, files)), labels, tuple(names), ("train",) * len(files))
    builder = _Builder(3, None, 128)
    features = FeatureSet("test_tiny", 32)
    extract(features, images, ["plain"], extractor=builder.extractor("test_tiny", 32),
            batch_size=8, clock=lambda: 0.0, engine="keras")  # fmt: skip
    # One pass cached the last layer's columns and every block's (test_tiny has taps).
    assert features.views["plain"].shape == (len(files), 32)
    assert features.every_depth()["plain"].shape == (len(files), 8 + 16 + 16 + 32)
    search, _ = _random_search(len(files), seed=0)
    search.images = images
    search.features = {("test_tiny", 32): features}
    choice = Choice("test_tiny", 32, "plain", "none", 40, "none", head="linear",
                    inverse_l2=0.1, depth=depth)  # fmt: skip
    model = _final_model(search, builder, choice, seed=0, batch_size=8)
    assert HEAD_DENSE not in [layer.name for layer in model.layers]
    (head,) = train_final_head(features, labels, 3, choice, units=128, learning_rate=1e-3,
                               batch_size=8, seed=0)  # fmt: skip
    # The blocks' columns are kept as float16; the model computes them in float32.
    assert features.taps["plain"].dtype == np.float16
    exact = builder.extractor("test_tiny", 32).predict(
        images.dataset(32, 8).map(lambda x, y: x), verbose=0
    )
    every = features.every_depth()["plain"]
    assert every.dtype == np.float32
    np.testing.assert_allclose(every, exact, rtol=2**-10, atol=1e-6)
    columns = exact if depth == "every" else exact[:, -32:]
    logits = columns.astype(np.float64) @ head[0] + head[1]
    expected = np.exp(logits - logits.max(1, keepdims=True))
    expected /= expected.sum(1, keepdims=True)
    got = xferclass.predict(model, [str(p) for p in files]).probabilities
    np.testing.assert_allclose(got, expected, atol=1e-4)
    model.save(tmp_path / "linear.keras")
    again = xferclass.predict(load_model(tmp_path / "linear.keras"), [str(p) for p in files])
    np.testing.assert_allclose(again.probabilities, expected, atol=1e-4)


def test_block_columns_are_kept_as_float16_only_where_every_value_fits() -> None:
    from xferclass.auto._features import _compact

    rng = np.random.default_rng(0)
    small = rng.normal(0.0, 3.0, (20, 7)).astype(np.float32)
    kept = _compact(small)
    assert kept.dtype == np.float16
    np.testing.assert_allclose(kept, small, rtol=2**-11, atol=2**-24)
    large = small.copy()
    large[3, 2] = 1e5  # past float16's largest finite value: kept as it is
    assert _compact(large).dtype == np.float32
    np.testing.assert_array_equal(_compact(large), large)
