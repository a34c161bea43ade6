"""The training engine: one loop that runs a sequence of phases.

A :class:`Phase` says what trains (``"head"`` on cached pooled features,
``"top"`` of the backbone on activations cached at a cut, or the ``"whole"``
model on images), for how many epochs and at which learning rate.
:func:`xferclass.fit` is one phase; :func:`xferclass.fine_tune` is two. A
frozen :class:`TrainConfig` carries the options every phase shares.

Whatever is frozen in every phase runs once per split: its output is cached
(:mod:`xferclass.training._cache`) and the trained layers, which are the very layer
objects of the user's model, train on it. The user's compile (optimizer, loss,
metrics, loss weights) is used for every sub-model that trains
(:mod:`xferclass.core._compile`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from ..backbones.layers import InferenceMode
from ..backbones.models import POOL, ClassifierParts
from ..core._args import verbosity
from ..core._backend import check_training_backend
from ..core._checkpoint import (
    BestWeights,
    WriteThrottle,
    read_resume_state,
    restore_resume_state,
    resume_path,
    save_model,
    write_resume_state,
)
from ..core._compile import CompileSpec, phase_optimizer, resolve_class_weight
from ..core._errors import InvalidArgumentError, TrainingError
from ..core._log import logger
from ..data._augment import make_augmentation
from ..data._facts import facts_of
from ..runtime._common import check_engine, engine_used, forward_function
from ._cache import (
    Budget,
    CacheDirectory,
    CachedSplit,
    EpochClock,
    cache_split,
    memory_limit_from_env,
)

__all__ = ["Phase", "TrainConfig", "run_phases"]

CACHE_DTYPES = ("auto", "float32", "float16")
#: The most of the training time that writing the ``.keras`` checkpoint may take
#: (and, apart, writing the resume state).
CHECKPOINT_SHARE = 0.1


def _positive_int(name: str, value: Any, *, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        kind = "positive" if minimum == 1 else "non-negative"
        raise InvalidArgumentError(f"{name}={value!r} must be a {kind} int")


@dataclass(frozen=True)
class TrainConfig:
    """The options shared by every phase of one training run.

    Attributes mirror the keyword arguments of :func:`xferclass.fit`; they are
    validated on construction.
    """

    seed: int | None = None
    shuffle: bool = True
    augment: Any = None
    augment_views: int = 2
    cache: bool | str = "auto"
    cache_dtype: str = "auto"
    cache_memory: int | None = None
    cache_dir: str | None = None
    checkpoint: str | None = None
    resume: bool = False
    early_stopping: int | None = None
    restore_best: bool = True
    class_weight: Any = None
    callbacks: tuple[Any, ...] = ()
    verbose: int = 1
    strategy: Any = None
    jit_compile: Any = False
    engine: str = "auto"
    monitor: str | None = None
    deadline: float | None = None

    def __post_init__(self) -> None:
        if self.cache not in ("auto", True, False):
            raise InvalidArgumentError(f"cache={self.cache!r} must be 'auto', True or False")
        if self.cache_dtype not in CACHE_DTYPES:
            raise InvalidArgumentError(
                f"cache_dtype={self.cache_dtype!r} must be one of {', '.join(CACHE_DTYPES)}"
            )
        _positive_int("augment_views", self.augment_views)
        if self.early_stopping is not None:
            _positive_int("early_stopping", self.early_stopping)
        if self.checkpoint is not None and not str(self.checkpoint).endswith(".keras"):
            raise InvalidArgumentError(
                f"checkpoint={self.checkpoint!r} must be a path ending in .keras"
            )
        if self.resume and self.checkpoint is None:
            raise InvalidArgumentError(
                "resume=True needs checkpoint=PATH: the state is saved next to it"
            )
        if self.deadline is not None and (
            isinstance(self.deadline, bool)
            or not isinstance(self.deadline, (int, float))
            or not math.isfinite(self.deadline)
        ):
            raise InvalidArgumentError(
                f"deadline={self.deadline!r} must be a time.monotonic() value, or None"
            )
        if self.monitor is not None and not isinstance(self.monitor, str):
            raise InvalidArgumentError(f"monitor={self.monitor!r} must be a metric name")
        check_engine(self.engine)
        verbosity(self.verbose)
        if self.seed is not None and (
            isinstance(self.seed, bool)
            or not isinstance(self.seed, (int, np.integer))
            or not 0 <= self.seed < 2**32
        ):
            raise InvalidArgumentError(
                f"seed={self.seed!r} must be an int between 0 and 2**32 - 1, or None"
            )


@dataclass(frozen=True)
class Phase:
    """One stretch of training.

    Attributes:
        name: Shown in messages (``"head"``, ``"fine-tune"``).
        trains: ``"head"`` (the layers after the pooling, on cached pooled
            features), ``"top"`` (the unfrozen top of the backbone and the head,
            on activations cached at the cut below it) or ``"whole"`` (the
            model on images, with whatever is trainable in it).
        epochs: Epochs of this phase.
        learning_rate: ``None`` trains with the optimizer of the compile spec
            itself; a number with a fresh optimizer of the same kind and
            settings at that rate.
        unfreeze_from: For ``"top"`` and ``"whole"``: the index of the first
            backbone layer to unfreeze (BatchNorm stays frozen); ``None``
            leaves the model's trainable flags alone; ``-1`` freezes the backbone.
    """

    name: str
    trains: str
    epochs: int
    learning_rate: float | None = None
    unfreeze_from: int | None = None

    def __post_init__(self) -> None:
        if self.trains not in ("head", "top", "whole"):
            raise InvalidArgumentError(f"trains={self.trains!r} must be head, top or whole")
        _positive_int("epochs", self.epochs, minimum=0)


# --------------------------------------------------------------------------- strategy


def strategy_of(model: keras.Model, strategy: Any) -> Any:
    """The strategy that trains ``model``: ``strategy``, or the one it was built under."""
    check_training_backend(strategy)
    built = getattr(model, "_distribute_strategy", None)
    if strategy is None or (built is None and type(strategy).__name__.startswith("_Default")):
        return built
    if built is not strategy:
        where = "outside any" if built is None else f"under another ({type(built).__name__})"
        raise InvalidArgumentError(
            f"strategy={type(strategy).__name__} was passed, but the model was built {where} "
            "tf.distribute strategy; a model's variables must be created in the scope of the "
            "strategy that trains it: pass the same strategy to "
            "build_classifier(..., strategy=strategy), or build the model inside "
            "`with strategy.scope():`"
        )
    return strategy


def scope(strategy: Any) -> Any:
    """``strategy.scope()``, or a no-op without a strategy."""
    return strategy.scope() if strategy is not None else contextlib.nullcontext()


def _multi_worker(strategy: Any) -> bool:
    """Whether ``strategy`` is a MultiWorkerMirroredStrategy over several workers."""
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and (
        strategy.num_replicas_in_sync > len(strategy.extended.worker_devices)
    )


def _fix_multi_worker_fit(model: keras.Model, dataset: tf.data.Dataset) -> None:
    """Let Keras 3 ``fit`` and ``evaluate`` run ``model`` over several workers.

    Under a MultiWorkerMirroredStrategy with more than one worker, Keras 3's
    TensorFlow trainer fails in two places (keras-team/keras#20585,
    tensorflow/tensorflow#72388): before the first step it reduces the first
    distributed ``(x, y)`` batch with one ``strategy.reduce`` call, which the
    collective ops reject for a tuple; and it averages every step's logs with
    ``strategy.reduce("MEAN", value, axis=0)``, which fails for the scalar loss
    and metrics. So ``model`` (this instance, once) builds its compiled state
    from ``dataset``'s element spec instead of a reduced batch, and its train
    and test steps return their logs with shape ``(1,)``, which that reduction
    averages over the replicas, as it does on one host.
    """
    if getattr(model, "_xferclass_multi_worker", False):
        return
    spec = dataset.element_spec
    build = model._maybe_symbolic_build
    train_step = model.train_step
    test_step = model.test_step

    def rank_one(logs: Any) -> Any:
        return tf.nest.map_structure(
            lambda v: tf.reshape(v, [1]) if tf.is_tensor(v) and v.shape.rank == 0 else v, logs
        )

    def maybe_symbolic_build(iterator: Any = None, data_batch: Any = None) -> Any:
        return build(data_batch=spec if iterator is not None else data_batch)

    model._maybe_symbolic_build = maybe_symbolic_build
    model.train_step = lambda data: rank_one(train_step(data))
    model.test_step = lambda data: rank_one(test_step(data))
    model._xferclass_multi_worker = True


def _order_seed(seed: int | None, strategy: Any) -> int | None:
    """The seed that shuffles the cached rows: fixed when several workers must agree.

    Each worker shuffles its own copy of the cache and takes its share of every
    batch; with different orders some images would be seen twice an epoch and
    others not at all.
    """
    return 0 if seed is None and _multi_worker(strategy) else seed


# --------------------------------------------------------------------------- messages


@contextlib.contextmanager
def console_messages(verbose: int) -> Iterator[None]:
    """Show the ``xferclass`` logger's INFO messages on stdout while ``verbose``.

    Nothing is attached when the logger already has a handler of its own (the
    application then decides where messages go) or when ``verbose`` is 0.
    """
    if not verbose or logger.handlers:
        yield
        return
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("xferclass: %(message)s"))
    level = logger.level
    logger.addHandler(handler)
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


# --------------------------------------------------------------------------- monitor


def choose_monitor(spec: CompileSpec, validation: bool, monitor: str | None) -> tuple[str, str]:
    """The logged value that picks the best epoch, and ``"max"`` or ``"min"``.

    The first accuracy-like metric when there is one, else the loss; on the
    validation split when there is one.
    """
    if monitor is None:
        accuracies = [name for name in spec.metric_names if "acc" in name]
        base = accuracies[0] if accuracies else "loss"
        monitor = f"val_{base}" if validation else base
    return monitor, "min" if monitor.endswith("loss") else "max"


# --------------------------------------------------------------------------- data


class _Sources:
    """The data of each kind of phase, cached once and shared by the phases."""

    def __init__(
        self,
        model: keras.Model,
        parts: ClassifierParts | None,
        train: tf.data.Dataset,
        validation: tf.data.Dataset | None,
        config: TrainConfig,
        strategy: Any,
        folder: CacheDirectory,
    ) -> None:
        self.model, self.parts, self.train, self.validation = model, parts, train, validation
        self.config, self.strategy, self.folder = config, strategy, folder
        self.budget = Budget(memory_limit_from_env(config.cache_memory))
        self.augmentation = make_augmentation(config.augment, config.seed)
        self.views = 1 + (config.augment_views if self.augmentation is not None else 0)
        self.clock = EpochClock()
        self.cached: dict[str, tuple[CachedSplit, CachedSplit | None]] = {}
        #: What each caching pass ran on ("train features": "openvino-bf16", ...).
        self.engines: dict[str, str] = {}

    def forward(self, sub: keras.Model, steps: int | None = None, *, top: bool = False) -> Any:
        """``sub``'s frozen pass on the configured engine; ``steps``: batches, when known.

        ``top``: the small pass from the cut to the pooled features, which
        ``"auto"`` leaves on Keras (converting it costs more than it saves).
        """
        known = steps is not None and steps > 0
        engine = "keras" if top and self.config.engine == "auto" else self.config.engine
        return forward_function(sub, self.strategy, engine=engine, steps=steps if known else None)

    def _cache(self, where: str, extractor: keras.Model) -> tuple[CachedSplit, CachedSplit | None]:
        shape = tuple(extractor.output.shape[1:])
        dtype = self.config.cache_dtype
        logger.info("caching activations at %s %s", where, shape)
        augment = self.augmentation
        steps = int(self.train.cardinality()) * self.views
        forward = self.forward(extractor, steps)
        train = cache_split(
            forward, self.train, name="train", directory=self.folder,
            budget=self.budget, views=self.views, dtype=dtype, verbose=self.config.verbose,
            augment=(lambda x: augment(x, training=True)) if augment is not None else None,
        )  # fmt: skip
        key = "features" if where == "the pooling layer" else where
        self.engines[f"train {key}"] = engine_used(forward)
        self.cached[key] = (train, None)  # closed by close() should the validation fail
        validation = None
        if self.validation is not None:
            steps = int(self.validation.cardinality())
            forward = self.forward(extractor, steps)
            validation = cache_split(
                forward, self.validation, name="validation",
                directory=self.folder, budget=self.budget, dtype=dtype,
                verbose=self.config.verbose,
            )  # fmt: skip
            self.engines[f"validation {key}"] = engine_used(forward)
        self.cached[key] = (train, validation)
        return train, validation

    def at_cut(self, extractor: keras.Model) -> tuple[CachedSplit, CachedSplit | None]:
        return self.cached.get("the cut") or self._cache("the cut", extractor)

    def features(self, pooled: keras.Model | None) -> tuple[CachedSplit, CachedSplit | None]:
        """Pooled features: from the cut cache through ``pooled`` when there is one."""
        if "features" in self.cached:
            return self.cached["features"]
        if "the cut" in self.cached and pooled is not None:
            at_cut, at_cut_validation = self.cached["the cut"]
            batches = -(-len(at_cut) // max(1, at_cut.batch_size)) * len(at_cut.stores)
            forward = self.forward(pooled, batches, top=True)
            train = at_cut.map_views(forward, self.folder, self.budget)
            self.cached["features"] = (train, None)  # closed by close() should the rest fail
            validation = None
            if at_cut_validation is not None:
                validation = at_cut_validation.map_views(forward, self.folder, self.budget)
            self.cached["features"] = (train, validation)
            return train, validation
        extractor = keras.Model(self.model.input, self.model.get_layer(POOL).output)
        return self._cache("the pooling layer", extractor)

    def images(self) -> tuple[tf.data.Dataset, tf.data.Dataset | None]:
        train = self.train
        if self.augmentation is not None:
            augment = self.augmentation
            train = train.map(
                lambda x, y, *rest: (augment(x, training=True), y, *rest),  # sample weights kept
                num_parallel_calls=tf.data.AUTOTUNE,
            ).prefetch(tf.data.AUTOTUNE)
        return train, self.validation

    def batches(self, split: CachedSplit, shuffle: bool) -> tf.data.Dataset:
        seed = _order_seed(self.config.seed, self.strategy)
        return split.dataset(shuffle=shuffle, seed=seed, clock=self.clock)

    def close(self) -> None:
        for train, validation in self.cached.values():
            train.close()
            if validation is not None:
                validation.close()


def training_labels(dataset: tf.data.Dataset) -> np.ndarray:
    """The labels of the training data: those the dataset holds, else one pass over it.

    A dataset of :func:`xferclass.load_image_dataset` knows its labels (class
    indices or multi-hot rows), so no image is decoded to count them.
    """
    known = facts_of(dataset).labels
    if known is not None:
        return known
    labels = dataset.map(lambda x, y, *rest: y)
    return np.concatenate([np.asarray(batch) for batch in labels])


# --------------------------------------------------------------------------- sub-models


def head_model(layers: Sequence[Any], start: Any, strategy: Any, name: str) -> keras.Model:
    """A model from ``start``'s shape through ``layers``, which it shares."""
    with scope(strategy):
        inputs = keras.Input(shape=tuple(start.shape[1:]), name=f"{name}_input")
        x = inputs
        for layer in layers:
            x = layer(x)
        return keras.Model(inputs, x, name=name)


def find_cut(backbone: keras.Model, first: int) -> tuple[Any, keras.Model]:
    """The last single tensor before layer ``first`` that everything above depends on.

    Returns the tensor and the model from it to the backbone's output. Walks back
    from the first unfrozen layer until the graph above a layer's output is a
    model of its own (residual branches that straddle a point rule it out).
    """
    layers = backbone.layers
    for index in range(first - 1, -1, -1):
        tensor = layers[index].output
        if isinstance(tensor, (list, tuple)):
            continue
        try:
            top = keras.Model(tensor, backbone.output, name=f"{backbone.name}_top")
        except ValueError:
            continue
        return tensor, top
    return backbone.input, backbone


def set_trainable(parts: ClassifierParts | None, unfreeze_from: int | None) -> list[str]:
    """Freeze the backbone (``-1``), or unfreeze it from a layer on; BatchNorm stays frozen."""
    if parts is None or unfreeze_from is None:
        return []
    if unfreeze_from < 0:
        parts.wrapper.trainable = False
        return []
    parts.wrapper.trainable = True
    parts.backbone.trainable = True
    unfrozen = []
    for index, layer in enumerate(parts.backbone.layers):
        train = index >= unfreeze_from and not isinstance(layer, keras.layers.BatchNormalization)
        layer.trainable = train
        if train and layer.weights:
            unfrozen.append(layer.name)
    return unfrozen


@dataclass
class _CutModels:
    """The models around a cut inside the backbone."""

    extractor: keras.Model  # images -> activations at the cut (frozen)
    pooled: keras.Model  # activations at the cut -> pooled features (frozen in the head phase)
    trained: keras.Model  # activations at the cut -> predictions (the top phase)


def cut_models(model: keras.Model, parts: ClassifierParts, first: int, strategy: Any) -> _CutModels:
    cut, top = find_cut(parts.backbone, first)
    with scope(strategy):
        inputs = keras.Input(model.input_shape[1:])
        bottom = keras.Model(parts.backbone.input, cut)
        extractor = keras.Model(inputs, InferenceMode(bottom)(parts.preprocessing(inputs)))
        top_input = keras.Input(tuple(cut.shape[1:]), name="cut_input")
        top_output = InferenceMode(top, name="backbone_top")(top_input)
        pooled = keras.Model(top_input, parts.head[0](top_output))
        x = top_output
        for layer in parts.head:
            x = layer(x)
        trained = keras.Model(top_input, x, name="top")
    return _CutModels(extractor, pooled, trained)


# --------------------------------------------------------------------------- the loop


class _Guard(keras.callbacks.Callback):
    """Per-epoch bookkeeping of one phase: history, best epoch, checkpoints, NaN guard,
    and the deadline: no epoch starts that the last one's length says would end past
    it, and an epoch that runs past it stops after its current batch."""

    def __init__(self, run: _Run, fitted: keras.Model) -> None:
        super().__init__()
        self.run, self.fitted = run, fitted
        self.bad_loss: tuple[int, int, float] | None = None
        self._epoch = 0
        self._started = _monotonic()

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._epoch = epoch
        self._started = _monotonic()
        self.run.sources.clock.epoch = epoch

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.bad_loss = (self._epoch, batch, float(loss))
            self.fitted.stop_training = True
        deadline = self.run.config.deadline
        if deadline is not None and _monotonic() > deadline:
            self.run.stopped_for_time = (
                f"epoch {self._epoch + 1} stopped after batch {batch + 1}: the deadline passed"
            )
            self.run.stopped_mid_epoch = True
            self.fitted.stop_training = True

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if self.bad_loss is None:
            self.run.epoch_end(self.fitted, epoch, dict(logs or {}))
        deadline = self.run.config.deadline
        now = _monotonic()
        if deadline is not None and self.run.stopped_for_time is None:
            if now + (now - self._started) > deadline:
                self.run.stopped_for_time = (
                    f"stopped after epoch {epoch + 1}: another of {now - self._started:.0f} s "
                    f"would end past the deadline, {max(0.0, deadline - now):.0f} s away"
                )
                self.fitted.stop_training = True


@dataclass
class _Resume:
    meta: dict[str, Any]
    weights: list[np.ndarray]
    slots: list[np.ndarray]


def _monotonic() -> float:
    return time.monotonic()  # looked up when called, so that a test can set the clock


@dataclass
class _Run:
    """The state of one training run over its phases."""

    model: keras.Model
    parts: ClassifierParts | None
    train: tf.data.Dataset
    validation: tf.data.Dataset | None
    phases: Sequence[Phase]
    config: TrainConfig
    spec: CompileSpec
    strategy: Any = None
    history: dict[str, list[float]] = field(default_factory=dict)
    best: BestWeights = field(default_factory=BestWeights)
    best_value: float | None = None
    best_epoch: int | None = None
    phase_index: int = 0
    class_weight: dict[int, float] | None = None
    wrote_checkpoint: bool = False
    #: The epoch and monitored value of the model in the ``.keras`` checkpoint file.
    written_epoch: int | None = None
    written_value: float | None = None
    #: A better epoch than the file's is held in memory, not yet written.
    pending_write: bool = False
    #: The meta of the last epoch whose resume state waits for a due write.
    _resume_pending: dict[str, Any] | None = None
    #: Why the run stopped before its last epoch for ``config.deadline``, or None.
    stopped_for_time: str | None = None
    #: Whether that stop cut an epoch short (its logs are in the history all the same).
    stopped_mid_epoch: bool = False

    def __post_init__(self) -> None:
        has_validation = self.validation is not None
        self.monitor, self.mode = choose_monitor(self.spec, has_validation, self.config.monitor)
        self.restore = self.config.restore_best and (
            has_validation or bool(self.config.early_stopping)
        )
        self._cut: _CutModels | None = None
        self._head: keras.Model | None = None
        self._monitor_checked = False
        self._checkpoint_writes = WriteThrottle(CHECKPOINT_SHARE, _monotonic)
        self._resume_writes = WriteThrottle(CHECKPOINT_SHARE, _monotonic)

    # ---------------------------------------------------------------- phases

    def run(self) -> keras.callbacks.History:
        with console_messages(self.config.verbose), CacheDirectory(self.config.cache_dir) as f:
            self.sources = _Sources(
                self.model, self.parts, self.train, self.validation, self.config,
                self.strategy, f,
            )  # fmt: skip
            try:
                self._run_phases()
            except KeyboardInterrupt as interrupt:
                self._interrupted(interrupt)
                raise
            finally:
                self.sources.close()
        self._restore_best()
        self._flush_checkpoint()
        return self.history_object()

    def _run_phases(self) -> None:
        resume = self._load_resume()
        done = int(resume.meta["epoch"]) if resume else 0
        start = 0
        for index, phase in enumerate(self.phases):
            end = start + phase.epochs
            if self.stopped_for_time is not None:
                break  # the deadline: no later phase starts
            if phase.epochs and (resume is None or index >= resume.meta["phase"]):
                self.phase_index = index
                fitted, train_data, validation_data = self._setup(phase, index)
                if resume is not None and index == resume.meta["phase"]:
                    restore_resume_state(
                        resume_path(str(self.config.checkpoint)), fitted, fitted.optimizer,
                        resume.weights, resume.slots,
                    )  # fmt: skip
                if max(start, done) < end:
                    self._fit(fitted, train_data, validation_data, max(start, done), end)
            start = end

    def _setup(self, phase: Phase, index: int) -> tuple[keras.Model, Any, Any]:
        """The model that trains in ``phase``, compiled, and its data."""
        unfrozen = set_trainable(self.parts, phase.unfreeze_from)
        if phase.trains == "whole":
            fitted, (train_data, validation_data) = self.model, self.sources.images()
            what = "the whole model on images"
        else:
            assert self.parts is not None
            if self._cut is None and any(p.trains == "top" for p in self.phases):
                first = next(p.unfreeze_from for p in self.phases if p.trains == "top")
                self._cut = cut_models(self.model, self.parts, int(first or 0), self.strategy)
                self.sources.at_cut(self._cut.extractor)
            if phase.trains == "head":
                train_split, validation_split = self.sources.features(
                    self._cut.pooled if self._cut else None
                )
                fitted = self._head_model()
                what = "the head on cached features"
            else:
                assert self._cut is not None
                train_split, validation_split = self.sources.at_cut(self._cut.extractor)
                fitted = self._cut.trained
                what = f"{len(unfrozen)} backbone layers and the head on cached activations"
            train_data = self.sources.batches(train_split, self.config.shuffle)
            validation_data = None
            if validation_split is not None:
                validation_data = self.sources.batches(validation_split, False)
            self._class_weight(train_split.labels)
        self._class_weight(None)
        self._compile(phase, fitted)
        rate = f" at learning rate {phase.learning_rate:g}" if phase.learning_rate else ""
        logger.info(
            "phase %d/%d (%s): training %s for %d epochs%s",
            index + 1, len(self.phases), phase.name, what, phase.epochs, rate,
        )  # fmt: skip
        return fitted, train_data, validation_data

    def _head_model(self) -> keras.Model:
        if self._head is None:
            assert self.parts is not None
            pool = self.model.get_layer(POOL).output
            self._head = head_model(self.parts.head[1:], pool, self.strategy, "head")
        return self._head

    def _class_weight(self, labels: np.ndarray | None) -> None:
        if self.class_weight is not None or self.config.class_weight is None:
            return
        if labels is None and self.config.class_weight == "balanced":
            labels = training_labels(self.train)
        weights = resolve_class_weight(
            self.config.class_weight, int(self.model.output_shape[-1]), lambda: labels
        )
        logger.info("class weights: %s", {k: round(v, 4) for k, v in (weights or {}).items()})
        self.class_weight = weights

    def _compile(self, phase: Phase, fitted: keras.Model) -> None:
        with scope(self.strategy):
            optimizer = self.spec.optimizer
            if phase.learning_rate is not None:
                optimizer = phase_optimizer(self.spec.optimizer, phase.learning_rate)
            self.spec.compile(self.model, optimizer)
            if fitted is not self.model:
                # The full model's optimizer: loss-scaled when the model is mixed precision.
                self.spec.compile(fitted, self.model.optimizer)

    def _fit(self, fitted: keras.Model, train: Any, validation: Any, first: int, end: int) -> None:
        guard = _Guard(self, fitted)
        extra: list[keras.callbacks.Callback] = [guard]
        if self.config.early_stopping:
            extra.append(
                keras.callbacks.EarlyStopping(
                    monitor=self.monitor, mode=self.mode, patience=self.config.early_stopping
                )
            )
        if _multi_worker(strategy_of(fitted, None)):
            _fix_multi_worker_fit(fitted, train)
        self.best.track(fitted.weights)
        start = BestWeights()
        start.take(fitted.weights, None, None)
        fitted.fit(
            train, validation_data=validation, epochs=end, initial_epoch=first,
            callbacks=[*self.config.callbacks, *extra], verbose=self.config.verbose,
            shuffle=False, class_weight=self.class_weight,
        )  # fmt: skip
        if guard.bad_loss is not None:
            self._bad_loss(guard.bad_loss, start)
        self._write_resume(fitted, due=True)  # the phase's last epoch

    # ---------------------------------------------------------------- epochs

    def epoch_end(self, fitted: keras.Model, epoch: int, logs: dict[str, Any]) -> None:
        for key, value in logs.items():
            self.history.setdefault(key, []).append(float(value))
        if len(self.phases) > 1:
            self.history.setdefault("phase", []).append(float(self.phase_index + 1))
        self._check_monitor(logs)
        value = logs.get(self.monitor)
        value = float(value) if value is not None and math.isfinite(float(value)) else None
        if value is not None and (
            self.best_value is None
            or (value > self.best_value if self.mode == "max" else value < self.best_value)
        ):
            self.best_value, self.best_epoch = value, epoch + 1
            if self.restore or self.config.checkpoint is not None:
                self.best.take(fitted.weights, epoch + 1, value)
            if self.config.checkpoint is not None:
                if self._checkpoint_writes.due():
                    self._write_checkpoint()
                else:
                    self.pending_write = True
        if self.config.checkpoint is not None:
            meta = {
                "epoch": epoch + 1, "phase": self.phase_index, "monitor": self.monitor,
                "best": self.best_value, "best_epoch": self.best_epoch, "history": self.history,
                "written_epoch": self.written_epoch, "written_value": self.written_value,
                "weights": len(fitted.weights),
                "optimizer_variables": len(fitted.optimizer.variables) if fitted.optimizer else 0,
            }  # fmt: skip
            self._resume_pending = json.loads(json.dumps(meta))  # as it is now
            self._write_resume(fitted, due=self._resume_writes.due())

    def _write_resume(self, fitted: keras.Model, *, due: bool) -> None:
        """Write the resume state of the epoch just ended, when ``due``.

        Like the ``.keras`` file (:class:`WriteThrottle`), the resume state (in a
        ``whole`` phase the whole backbone and the optimizer's slots) is written
        after an epoch only when that keeps its writes within
        ``CHECKPOINT_SHARE`` of the training time, and after a phase's last epoch.
        """
        if not due or self._resume_pending is None or self.config.checkpoint is None:
            return
        path = resume_path(self.config.checkpoint)
        with self._resume_writes.timed():
            write_resume_state(path, fitted, fitted.optimizer, self._resume_pending)
        self._resume_pending = None

    def _write_checkpoint(self) -> None:
        """Write the best model so far (the model's weights now) to the checkpoint."""
        assert self.config.checkpoint is not None
        with self._checkpoint_writes.timed():
            save_model(self.model, self.config.checkpoint)
        self.wrote_checkpoint, self.pending_write = True, False
        self.written_epoch, self.written_value = self.best_epoch, self.best_value

    def _flush_checkpoint(self) -> None:
        """Write a best epoch still held in memory (or a first file) to the checkpoint."""
        if self.config.checkpoint is None or (self.wrote_checkpoint and not self.pending_write):
            return
        if not self.pending_write or self.best.empty:
            self._write_checkpoint()
            return
        current = BestWeights()
        current.take(self.best.variables(), None, None)
        self.best.restore()
        try:
            self._write_checkpoint()
        finally:
            current.restore()

    def _check_monitor(self, logs: dict[str, Any]) -> None:
        if self._monitor_checked:
            return
        self._monitor_checked = True
        if self.monitor not in logs:
            fallback = "val_loss" if "val_loss" in logs else "loss"
            logger.warning(
                "monitor %r is not among the logged values (%s); using %r",
                self.monitor, ", ".join(sorted(logs)), fallback,
            )  # fmt: skip
            self.monitor, self.mode = fallback, "min"

    def _load_resume(self) -> _Resume | None:
        if not self.config.resume:
            return None
        path = resume_path(str(self.config.checkpoint))
        if not os.path.exists(path):
            logger.info("resume=True but no saved state at %s; starting afresh", path)
            return None
        meta, weights, slots = read_resume_state(path)
        self.history = {key: list(values) for key, values in meta["history"].items()}
        self.best_value, self.best_epoch = meta.get("best"), meta.get("best_epoch")
        if "written_epoch" in meta and meta["written_epoch"] != self.best_epoch:
            # The better epoch was held in memory only: the file's is the best there is.
            self.best_value, self.best_epoch = meta["written_value"], meta["written_epoch"]
        self.written_epoch, self.written_value = self.best_epoch, self.best_value
        self.wrote_checkpoint = self.written_epoch is not None
        self.monitor = meta.get("monitor", self.monitor)
        self.mode = "min" if self.monitor.endswith("loss") else "max"
        logger.info("resuming after epoch %d from %s", meta["epoch"], path)
        return _Resume(meta, weights, slots)

    # ---------------------------------------------------------------- endings

    def _restore_best(self) -> None:
        if not self.restore or self.best_epoch is None:
            return
        if not self.best.empty:
            self.best.restore()
        elif self.config.checkpoint and os.path.exists(self.config.checkpoint):
            # Resumed after the best epoch: its weights are in the checkpoint file.
            saved = keras.models.load_model(self.config.checkpoint)
            self.model.set_weights(saved.get_weights())
        else:
            return
        logger.info(
            "restored the weights of epoch %d (%s %.4f)",
            self.best_epoch, self.monitor, self.best_value,
        )  # fmt: skip

    def _interrupted(self, interrupt: KeyboardInterrupt) -> None:
        self._restore_best()
        where = ""
        if self.config.checkpoint is not None:
            self._flush_checkpoint()
            where = f"; the model is saved in {self.config.checkpoint}"
        epochs = len(next(iter(self.history.values()), []))
        logger.warning("training interrupted after %d epochs%s", epochs, where)
        interrupt.history = self.history_object()  # type: ignore[attr-defined]

    def _bad_loss(self, bad: tuple[int, int, float], start: BestWeights) -> None:
        epoch, batch, loss = bad
        if not self.best.empty:
            self.best.restore()
            self._flush_checkpoint()
            kept = f"the model was reset to the last good weights (epoch {self.best.epoch})"
        else:
            start.restore()
            kept = "the model was reset to the last good weights (before this phase)"
        error = TrainingError(
            f"the training loss became {loss} at epoch {epoch + 1}, batch {batch + 1}; "
            f"training stopped and {kept}. Try a lower learning_rate."
        )
        error.history = self.history_object()  # type: ignore[attr-defined]
        raise error

    def history_object(self) -> keras.callbacks.History:
        history = keras.callbacks.History()
        history.history = {key: list(values) for key, values in self.history.items()}
        history.epoch = list(range(len(next(iter(self.history.values()), []))))
        history.set_model(self.model)
        history.best_epoch = self.best_epoch
        history.monitor = self.monitor
        history.stopped_for_time = self.stopped_for_time
        history.epochs_completed = len(history.epoch) - int(self.stopped_mid_epoch)
        sources = getattr(self, "sources", None)
        history.frozen_engines = dict(sources.engines) if sources is not None else {}
        return history


def run_phases(
    model: keras.Model,
    train: tf.data.Dataset,
    validation: tf.data.Dataset | None,
    phases: Sequence[Phase],
    config: TrainConfig,
    spec: CompileSpec,
    parts: ClassifierParts | None,
) -> keras.callbacks.History:
    """Train ``model`` through ``phases``; returns one History over all of them.

    Raises:
        TrainingError: The loss became NaN or infinite (the model is reset to
            the last good weights).
        KeyboardInterrupt: Ctrl-C, after the best weights are put back into the
            model and the checkpoint is written; ``.history`` holds the epochs done.
    """
    strategy = strategy_of(model, config.strategy)
    run = _Run(model, parts, train, validation, phases, config, spec, strategy=strategy)
    return run.run()
