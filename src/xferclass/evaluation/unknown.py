""" "I don't know": a score of how unlike the training images an image is, inside the model.

A classifier names one of its classes for every image, a solar cell shown to a clothing
model included. :func:`detect_unknown` gives a trained classifier a second output, the
*unknown score* (:class:`xferclass.layers.UnknownScore`), and a threshold above which
:func:`xferclass.predict` with ``unknown=True`` (``--unknown`` on the command line)
answers *unknown* instead of a class.

The score is measured, not assumed. The candidates:

- ``max_softmax``: ``1 - `` the top class probability. It needs no reference images, but
  a classifier can be sure of itself on images it never saw the like of.
- ``knn``: ``1 - `` the cosine similarity of the image's pooled backbone features to
  those of its ``k``-th nearest training image (k = 1, 5 or 10). The references, at
  most ``max_references`` training images, are stored in the model's weights, so the
  saved model and every export compute it. It reads a model of
  :func:`xferclass.build_classifier`'s layout, one averaging test-time views, and an
  average of models (the automatic recipe's); see :func:`_with_features`.

Each is scored on in-distribution images the model did not train on (``held_out``; for
``knn`` without them, each training image against the others, leave-one-out) against
``foreign`` images, known not to belong to any class; without them, against generated
images (noise, flat colours, gradients, stripes and shapes), which stand only for the
most obvious foreigners. The candidate with the largest area under the ROC curve is
kept, and its threshold is set on the in-distribution images so that ``rejection`` of
them (5 % by default) score above it. What was measured is in
``unknown_layer(model).measured``.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import keras
import numpy as np

from ..backbones.layers import UnknownScore, unknown_layer, without_unknown
from ..core._args import verbosity
from ..core._errors import DatasetError, InvalidArgumentError

__all__ = [
    "CANDIDATE_K",
    "area_under_roc",
    "detect_unknown",
    "generated_foreign",
    "unknown_layer",
    "without_unknown",
]

logger = logging.getLogger("xferclass")

#: The nearest reference each ``knn`` candidate reads; among candidates that tell the
#: images apart equally well, the first is kept: the one that averages over more
#: neighbours, whose threshold a single near copy moves least.
CANDIDATE_K = (10, 5, 1)

#: Generated foreign images scored when no foreign images are given.
GENERATED = 96

#: Rows whose nearest references are found at once.
_BLOCK = 2048


def area_under_roc(inside: Any, outside: Any) -> float:
    """The probability that an ``outside`` score is above an ``inside`` one (ties count
    half): the area under the ROC curve of telling them apart by the score.

    Examples:
        >>> area_under_roc([0.1, 0.2, 0.3], [0.25, 0.9])
        0.8333333333333334
    """
    a = np.asarray(inside, np.float64).ravel()
    b = np.asarray(outside, np.float64).ravel()
    if a.size == 0 or b.size == 0:
        raise InvalidArgumentError("area_under_roc needs at least one score on each side")
    values = np.concatenate([a, b])
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(values.size, np.float64)
    ranks[order] = np.arange(1, values.size + 1)
    for value in np.unique(values[np.r_[False, np.diff(values[order]) == 0]]):
        tied = values == value
        ranks[tied] = ranks[tied].mean()
    return float((ranks[a.size :].sum() - b.size * (b.size + 1) / 2) / (a.size * b.size))


def generated_foreign(
    size: tuple[int, int], count: int = GENERATED, *, seed: int = 0
) -> np.ndarray:
    """``count`` images no classifier of photographs was trained on, RGB in [0, 255]:
    uniform noise, blurred noise, flat colours, gradients, stripes and random shapes, in
    turn. They stand for the most obvious foreign images only.

    Examples:
        >>> generated_foreign((32, 32), 6).shape
        (6, 32, 32, 3)
    """
    rng = np.random.default_rng(seed)
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    images = np.empty((count, h, w, 3), np.float32)
    for i in range(count):
        kind = i % 6
        image: np.ndarray
        if kind == 0:
            image = rng.uniform(0, 255, (h, w, 3))
        elif kind == 1:
            coarse = rng.uniform(0, 255, (max(2, h // 16), max(2, w // 16), 3))
            image = np.kron(coarse, np.ones((16, 16, 1)))[:h, :w]
            image = np.pad(image, ((0, h - image.shape[0]), (0, w - image.shape[1]), (0, 0)),
                           mode="edge")  # fmt: skip
        elif kind == 2:
            image = np.broadcast_to(rng.uniform(0, 255, 3), (h, w, 3))
        elif kind == 3:
            angle = rng.uniform(0, np.pi)
            ramp = (np.cos(angle) * xx / w + np.sin(angle) * yy / h + 1) / 2
            ends = rng.uniform(0, 255, (2, 3))
            image = ends[0] + ramp[..., None] * (ends[1] - ends[0])
        elif kind == 4:
            period = rng.uniform(3, max(4, min(h, w) / 3))
            wave = np.sin(2 * np.pi * (xx if rng.random() < 0.5 else yy) / period) > 0
            colours = rng.uniform(0, 255, (2, 3))
            image = np.where(wave[..., None], colours[0], colours[1])
        else:
            image = np.broadcast_to(rng.uniform(0, 255, 3), (h, w, 3)).copy()
            for _ in range(rng.integers(2, 6)):
                cy, cx = rng.uniform(0, h), rng.uniform(0, w)
                r = rng.uniform(min(h, w) / 10, min(h, w) / 3)
                image[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.uniform(0, 255, 3)
        images[i] = image
    return images


def _pool_output(model: keras.Model) -> Any:
    """The pooled backbone features at ``model``'s top level, or None."""
    from ..backbones.models import POOL

    try:
        return model.get_layer(POOL).output
    except ValueError:
        return None


def _graph(model: keras.Model) -> tuple[Any, Any, Any]:
    """``model``'s inputs, its probabilities and its pooled features (None when it has
    none to read), as tensors of one graph (see :func:`_with_features`)."""
    pool = _pool_output(model)
    if pool is not None:
        return model.inputs, model.output, pool
    both = _with_features(model)
    if both is None:
        return model.inputs, model.output, None
    return both.inputs, both.outputs[0], both.outputs[1]


def _with_features(model: keras.Model) -> keras.Model | None:
    """``model`` rebuilt from its own layers with a second output, its pooled features;
    None for a model whose features cannot be read.

    - A model of ``build_classifier``'s layout: the features at its top level.
    - One averaging test-time views (:func:`xferclass.evaluation._tta.with_views`): its
      classifier's features, averaged over the views as its probabilities are.
    - An average of models (the automatic recipe's ensembles): each member's features
      scaled to unit length, side by side, so that their cosine similarity is the mean
      of the members'.

    Layers after the average (a temperature) are kept.
    """
    from ..backbones.layers import ViewMean

    pool = _pool_output(model)
    if pool is not None:
        return keras.Model(model.inputs, [model.output, pool], name=model.name)
    layers = model.layers
    kinds = [type(layer).__name__ for layer in layers]
    nested = [i for i, layer in enumerate(layers) if isinstance(layer, keras.Model)]
    if not nested or kinds[1] != "Preprocessing":
        return None
    inputs = keras.Input(tuple(model.input_shape[1:]), name="image")
    x = layers[1](inputs)
    if kinds[2] == "TestTimeViews" and nested == [3] and kinds[4] == "ViewMean":
        inner = _with_features(layers[3])
        if inner is None:
            return None
        probabilities, features = inner(layers[2](x))
        probabilities = layers[4](probabilities)
        features = ViewMean(layers[4].views, name="view_mean_features", dtype="float32")(features)
        rest = layers[5:]
    elif nested == list(range(2, 2 + len(nested))) and kinds[2 + len(nested)] == "Average":
        members = [_with_features(layers[i]) for i in nested]
        if any(member is None for member in members):
            return None
        pairs = [member(x) for member in members]  # type: ignore[misc]
        probabilities = layers[2 + len(nested)]([p for p, _ in pairs])
        units = [keras.layers.UnitNormalization(name=f"unit_features_{i}")(f)
                 for i, (_, f) in enumerate(pairs)]  # fmt: skip
        features = keras.layers.Concatenate(name="member_features")(units)
        rest = layers[3 + len(nested) :]
    else:
        return None
    for layer in rest:  # e.g. the temperature
        probabilities = layer(probabilities)
    return keras.Model(inputs, [probabilities, features], name=model.name)


def _image_files(folder: str) -> list[str]:
    from ..data._folders import image_files

    files, problems = image_files(folder)
    if problems:
        raise DatasetError(f"{problems[0][0]}: {problems[0][1]}")
    if not files:
        raise DatasetError(f"{folder} holds no image files")
    return files


def _batches(images: Any, size: tuple[int, int], batch_size: int, what: str) -> Any:
    from .inference import _image_batches

    if isinstance(images, (str, os.PathLike)) and os.path.isdir(images):
        images = _image_files(os.fspath(images))
    try:
        dataset, _ = _image_batches(images, size, batch_size)
    except DatasetError as error:
        raise DatasetError(f"{what}: {error}") from None
    return dataset


def _pass(
    network: keras.Model,
    images: Any,
    size: tuple[int, int],
    batch_size: int,
    what: str,
    verbose: int,
) -> tuple[np.ndarray, np.ndarray | None]:
    """``network``'s probabilities and pooled features (None without them) on ``images``."""
    dataset = _batches(images, size, batch_size, what)
    steps = int(dataset.cardinality())
    progress = keras.utils.Progbar(steps if steps > 0 else None, verbose=verbose)
    probabilities, features = [], []
    for step, batch in enumerate(dataset, start=1):
        out = network.predict_on_batch(batch)
        if isinstance(out, (list, tuple)):
            probabilities.append(np.asarray(out[0], np.float64))
            features.append(np.asarray(out[1], np.float32))
        else:
            probabilities.append(np.asarray(out, np.float64))
        progress.update(step)
    if not probabilities:
        raise DatasetError(f"{what} is empty")
    return np.concatenate(probabilities), (np.concatenate(features) if features else None)


def _unit(rows: np.ndarray) -> np.ndarray:
    rows = np.asarray(rows, np.float64)
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)


def _knn_scores(
    rows: np.ndarray, references: np.ndarray, k: int, self_index: Any = None
) -> np.ndarray:
    """``1 -`` each row's cosine similarity to its ``k``-th nearest reference; a row that
    is itself reference ``self_index[i]`` (>= 0) is not its own neighbour. Computed
    :data:`_BLOCK` rows at a time, so memory stays bounded on large sets."""
    found = []
    for start in range(0, len(rows), _BLOCK):
        similarity = _unit(rows[start : start + _BLOCK]) @ references.T
        if self_index is not None:
            block = np.asarray(self_index[start : start + _BLOCK])
            own = np.flatnonzero(block >= 0)
            similarity[own, block[own]] = -np.inf
        found.append(1.0 - np.partition(similarity, -k, axis=1)[:, -k])
    return np.concatenate(found) if found else np.zeros(0)


Scores = dict[tuple[str, int], np.ndarray]


def _candidate_scores(
    held: tuple[np.ndarray, np.ndarray | None] | None,
    known_features: np.ndarray | None,
    outside: tuple[np.ndarray, np.ndarray | None],
    *,
    max_references: int,
    seed: int,
) -> tuple[Scores, Scores, np.ndarray | None]:
    """Every candidate's scores of the in-distribution and the foreign images, keyed
    ``(kind, k)``, and the ``knn`` references (None without pooled features)."""
    inside: Scores = {}
    foreign: Scores = {}
    if held is not None:
        inside[("max_softmax", 0)] = 1.0 - held[0].max(axis=1)
        foreign[("max_softmax", 0)] = 1.0 - outside[0].max(axis=1)
    if known_features is None or len(known_features) < 2:
        return inside, foreign, None
    count = min(max_references, len(known_features))
    picked = np.sort(np.random.default_rng(seed).choice(len(known_features), count, replace=False))
    references = _unit(known_features[picked])
    self_index = np.full(len(known_features), -1)
    self_index[picked] = np.arange(count)
    for k in CANDIDATE_K:
        if k > count or (held is None and k >= count):  # leave-one-out: count - 1 neighbours
            continue
        if held is not None:
            assert held[1] is not None
            inside[("knn", k)] = _knn_scores(held[1], references, k)
        else:
            inside[("knn", k)] = _knn_scores(known_features, references, k, self_index)
        assert outside[1] is not None
        foreign[("knn", k)] = _knn_scores(outside[1], references, k)
    return inside, foreign, references


def _measure(inside: Scores, outside: Scores, rejection: float) -> dict[str, Any]:
    """Each candidate's AUROC and rejection rates at its threshold; the best of them
    (the first of equals: ``max_softmax``, then ``knn`` from the largest ``k``) with every
    candidate under ``"candidates"``."""
    if not inside:
        raise InvalidArgumentError(
            "nothing to score: without held_out images only knn can be measured, and it "
            "needs a model whose pooled features are at its top level (one of "
            "build_classifier's layout) and at least 2 known images"
        )
    candidates: list[dict[str, Any]] = []
    for (kind, k), scores in inside.items():
        threshold = float(np.quantile(scores, 1.0 - rejection))
        candidates.append({
            "score": kind, "k": k or None,
            "auroc": area_under_roc(scores, outside[(kind, k)]),
            "held_out_rejected": float(np.mean(scores > threshold)),
            "foreign_rejected": float(np.mean(outside[(kind, k)] > threshold)),
            "threshold": threshold,
        })  # fmt: skip
    best = max(candidates, key=lambda c: float(c["auroc"]))
    return {**best, "rejection": rejection, "candidates": candidates}


def _check_rejection(rejection: Any) -> float:
    if (
        isinstance(rejection, bool)
        or not isinstance(rejection, (int, float))
        or not (0 < float(rejection) < 1)
    ):
        raise InvalidArgumentError(f"rejection={rejection!r} must be a number between 0 and 1")
    return float(rejection)


def detect_unknown(
    model: keras.Model,
    known: Any,
    *,
    held_out: Any = None,
    foreign: Any = None,
    rejection: float = 0.05,
    max_references: int = 2000,
    batch_size: int = 32,
    seed: int = 0,
    verbose: int | str = 0,
) -> keras.Model:
    """``model`` with a second output, its unknown score, measured and thresholded on
    held-out images (see the module's docs).

    Args:
        model: A trained single-label classifier (one from :func:`detect_unknown` gets
            its score replaced).
        known: The training images: a dataset of ``(images, labels)`` or of images, a
            folder (every image under it), file paths or an array.
        held_out: In-distribution images the model did not train on (the validation
            split), in any form ``known`` takes. Without them, only ``knn`` is scored,
            each training image against the others.
        foreign: Images that belong to no class, in any form ``known`` takes; by
            default :func:`generated_foreign`'s.
        rejection: The share of in-distribution images the threshold rejects.
        max_references: The most training images ``knn`` keeps as references (a random
            sample of them): ``references x feature width`` float32 numbers in the model.
        batch_size: Images per forward pass.
        seed: Seed of the references' sample and of the generated foreign images.
        verbose: Progress bars of the passes when 1.

    Returns:
        A model whose outputs are ``[probabilities, unknown score]``; what was measured
        is in ``xferclass.layers.unknown_layer(model).measured``.

    Raises:
        InvalidArgumentError: The model is multi-label, ``rejection`` is not in (0, 1),
            or ``max_references`` is below 2.
        DatasetError: A set of images is empty or cannot be read.

    Examples:
        >>> model = xferclass.detect_unknown(model, train, held_out=validation)  # doctest: +SKIP
        >>> xferclass.predict(model, ["cell.png"], unknown=True).predicted_names  # doctest: +SKIP
        [None]
    """
    from ..runtime._common import model_multi_label
    from .inference import _input_size

    rejection = _check_rejection(rejection)
    if (
        isinstance(max_references, bool)
        or not isinstance(max_references, int)
        or max_references < 2
    ):
        raise InvalidArgumentError(f"max_references={max_references!r} must be an int >= 2")
    base = without_unknown(model)
    if model_multi_label(base)[0]:
        raise InvalidArgumentError(
            "detect_unknown needs a single-label classifier: a multi-label model may "
            "rightly find none of its classes in an image"
        )
    shown = verbosity(verbose)
    size = _input_size(base)
    inputs, output, pool = _graph(base)
    network = keras.Model(inputs, output if pool is None else [output, pool])
    _, known_features = _pass(network, known, size, batch_size, "known", shown)
    known_count = 0 if known_features is None else len(known_features)
    held = None
    if held_out is not None:
        held = _pass(network, held_out, size, batch_size, "held_out", shown)
    if foreign is None:
        foreign_images, foreign_what = generated_foreign(size, seed=seed), "generated"
    else:
        foreign_images, foreign_what = foreign, "given"
    outside = _pass(network, foreign_images, size, batch_size, "foreign", shown)

    inside, outside_scores, references = _candidate_scores(
        held, known_features, outside, max_references=max_references, seed=seed
    )
    measured = _measure(inside, outside_scores, rejection)
    measured["held_out"] = (
        f"{len(held[0])} held-out images" if held is not None
        else f"{known_count} training images, each against the others"
    )  # fmt: skip
    measured["foreign"] = f"{len(outside[0])} {foreign_what} foreign images"
    logger.info(
        "unknown score: %s%s (AUROC %.3f against %s); rejects %.1f%% of %s and %.1f%% "
        "of the foreign ones", measured["score"], f", k={measured['k']}" if measured["k"] else "",
        measured["auroc"], measured["foreign"], 100 * measured["held_out_rejected"],
        measured["held_out"], 100 * measured["foreign_rejected"],
    )  # fmt: skip
    if measured["score"] == "knn":
        assert references is not None
        layer = UnknownScore("knn", measured["threshold"], k=measured["k"],
                             references=len(references), width=references.shape[1],
                             measured=measured, name="unknown_score")  # fmt: skip
        layer.references.assign(references.astype(np.float32))  # type: ignore[union-attr]
        score = layer(pool)
    else:
        layer = UnknownScore("max_softmax", measured["threshold"], measured=measured,
                             name="unknown_score")  # fmt: skip
        score = layer(output)
    return keras.Model(inputs, [output, score], name=base.name)
