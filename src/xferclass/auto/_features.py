"""Pooled features of every labelled image, per backbone, input size and symmetry view.

The automatic recipe caches the frozen backbone's pooled features of all the
images once per (backbone, size, view) and then compares choices on them with
:mod:`xferclass.evaluation._headcv`. The views are those of :data:`xferclass.evaluation._tta.VIEWS`,
made from the batch at the model's input size exactly as test-time
augmentation makes them, so a view that was measured is the view predict uses.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["FeatureSet", "Images", "extract"]


@dataclass(frozen=True)
class Images:
    """The labelled images the recipe works on, in one fixed order.

    Attributes:
        paths: Image files.
        labels: Integer class of each file.
        class_names: Class names in label order.
        given_split: ``"train"`` or ``"validation"``: the folder each image came from.
    """

    paths: tuple[str, ...]
    labels: np.ndarray
    class_names: tuple[str, ...]
    given_split: tuple[str, ...]

    def dataset(self, size: int, batch_size: int, *, shuffle: bool = False, seed: int = 0) -> Any:
        """The images at ``size`` px, in this order unless shuffled, as ``(images, one-hot)``
        batches."""
        from ..data import load_image_dataset

        pairs = [(path, self.class_names[k]) for path, k in zip(self.paths, self.labels)]
        return load_image_dataset(
            pairs, (size, size), batch_size=batch_size, shuffle=shuffle, seed=seed,
            class_names=list(self.class_names),
        )  # fmt: skip


@dataclass
class FeatureSet:
    """Pooled features of every image for one (backbone, size), per view.

    Attributes:
        backbone: Registry name.
        size: Input side in pixels.
        views: Features ``(images, dim)`` per view name.
        seconds: Seconds each view's pass took.
        engines: The engine each view's pass ran on.
    """

    backbone: str
    size: int
    views: dict[str, np.ndarray] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    #: What each view's pass ran on (``"keras"``, ``"openvino-bf16"``, ...).
    engines: dict[str, str] = field(default_factory=dict)
    #: The pooled outputs of the backbone's blocks per view, ``(images, columns)``, when
    #: the extractor pools them (``build_classifier(..., taps=True)``); ``views`` holds
    #: the last layer's either way. Stored as float16 where every value fits
    #: (:func:`_compact`).
    taps: dict[str, np.ndarray] = field(default_factory=dict)

    def every_depth(self, names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Per view (of ``names``, every cached one by default), the pooled outputs of every
        block then of the last layer, as a model built with ``taps=True`` pools them; empty
        when no taps were cached."""
        wanted = self.views if names is None else names
        return {name: np.concatenate([self.taps[name], self.views[name]], axis=1,
                                     dtype=np.float32)
                for name in wanted if name in self.taps}  # fmt: skip

    @property
    def seconds_per_image(self) -> float:
        """Measured seconds per image and view, over the passes made so far."""
        rows = sum(len(v) for v in self.views.values())
        return sum(self.seconds.values()) / max(1, rows)


def extract(
    features: FeatureSet,
    images: Images,
    views: Sequence[str],
    *,
    extractor: Any,
    batch_size: int,
    clock: Callable[[], float],
    engine: str = "auto",
    verbose: int = 0,
) -> None:
    """Add the pooled features of ``views`` (those not cached yet) to ``features``.

    One pass over the files serves every view asked for: each batch is decoded
    once and each of its views runs through ``extractor`` (the classifier up to
    its pooling layer) on ``engine``; ``verbose`` 1 shows a progress bar. An
    extractor that pools its blocks' outputs too (``taps=True``) fills ``features.taps``
    in the same pass.
    """
    import keras

    from ..backbones.models import tap_widths
    from ..evaluation._tta import view
    from ..runtime._common import engine_used, forward_function

    wanted = [name for name in views if name not in features.views]
    if not wanted:
        return
    dataset = images.dataset(features.size, batch_size)
    steps = -(-len(images.paths) // batch_size) * len(wanted)
    forward = forward_function(extractor, engine=engine, steps=steps)
    rows: dict[str, list[np.ndarray]] = {name: [] for name in wanted}
    progress = keras.utils.Progbar(steps // len(wanted), verbose=verbose)
    # The labels let engine="auto" judge a reduced precision by a probe (see harmless).
    note_labels = getattr(forward, "note_labels", None)
    start = clock()  # the whole pass, decoding included: what a later pass will cost
    for step, (batch, labels) in enumerate(dataset, start=1):
        if note_labels is not None:
            note_labels(labels)
        for name in wanted:
            rows[name].append(np.asarray(forward(view(batch, name)), np.float32))
        progress.update(step)
    spent = (clock() - start) / len(wanted)
    widths = tap_widths(extractor)
    for name in wanted:
        found = np.concatenate(rows[name])
        if widths is not None:  # every block's columns, then the last layer's
            features.taps[name] = _compact(found[:, : -widths[-1]])
            found = found[:, -widths[-1] :]
        features.views[name] = found
        features.seconds[name] = spent
        features.engines[name] = engine_used(forward)


def _compact(columns: np.ndarray) -> np.ndarray:
    """``columns`` as float16 when every value is finite there, else as they are.

    The blocks' pooled outputs are 1.4x the last layer's columns on EfficientNet-Lite0
    and stay in memory for the whole search, once per view. A float16 copy halves them
    and costs nothing measurable: logistic regression on Lite0's every-depth features
    of the suite's digits and ordinal sets gave the same cross-validated accuracy
    (within 0.001) and test accuracy (within 0.003) from float16 as from float32. Its
    relative rounding, 2^-11, is far below what standardizing and an L2 penalty
    resolve. The heads compute in float32 (:meth:`FeatureSet.every_depth` promotes).
    """
    if columns.size and float(np.max(np.abs(columns))) >= float(np.finfo(np.float16).max):
        return columns
    return columns.astype(np.float16)
