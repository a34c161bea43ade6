"""``fit`` and ``fine_tune``: training that runs a frozen backbone only once.

With a frozen backbone nearly all of an epoch's cost is the backbone's forward
pass, and it gives the same answer every epoch. ``fit`` therefore runs the
frozen part once per split, keeps the activations (in memory, spilling to disk
past a budget) and trains the rest on them. The trained layers are the very
layer objects of the full model, so the returned model is ready to save and use.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from ._cache import CacheDirectory, CachedSplit, _Budget, cache_split, memory_limit_from_env
from ._common import check_class_count, forward_function, require_dataset, store_class_names
from ._errors import ModelFileError, TrainingError
from .layers import InferenceMode
from .models import POOL, split_classifier

__all__ = ["fit", "fine_tune", "make_augmentation", "save_model"]

AUGMENTATION_PRESETS = ("flip", "light", "strong")


# --------------------------------------------------------------------------- helpers


def make_augmentation(augment: Any, seed: int | None = None) -> keras.Sequential | None:
    """Turn an ``augment=`` argument into a Keras preprocessing-layer pipeline.

    Args:
        augment: ``None``/``False`` (none), ``True`` or ``"flip"`` (horizontal
            flips), ``"light"`` (flip, rotation 0.05, zoom 0.1, translation
            0.1), ``"strong"`` (flip, rotation 0.1, zoom 0.2, translation 0.2,
            contrast 0.2), a Keras layer, or a list of layers.
        seed: Seed of the random layers.

    Returns:
        A ``keras.Sequential`` of random layers, or ``None``.

    Examples:
        >>> from xferclass import make_augmentation
        >>> [layer.name for layer in make_augmentation("light").layers]
        ['flip', 'rotation', 'zoom', 'translation']
    """
    layers = keras.layers
    if augment is None or augment is False:
        return None
    if augment is True:
        augment = "flip"
    if isinstance(augment, str):
        if augment not in AUGMENTATION_PRESETS:
            raise ValueError(
                f"augment={augment!r} is not one of {AUGMENTATION_PRESETS}, True, None, "
                "a Keras layer or a list of layers"
            )
        stack = [layers.RandomFlip("horizontal", seed=seed, name="flip")]
        if augment in ("light", "strong"):
            strength = 1.0 if augment == "light" else 2.0
            stack += [
                layers.RandomRotation(0.05 * strength, seed=seed, name="rotation"),
                layers.RandomZoom(0.1 * strength, seed=seed, name="zoom"),
                layers.RandomTranslation(
                    0.1 * strength, 0.1 * strength, seed=seed, name="translation"
                ),
            ]
        if augment == "strong":
            stack.append(layers.RandomContrast(0.2, seed=seed, name="contrast"))
        return keras.Sequential(stack, name=f"augment_{augment}")
    if isinstance(augment, keras.layers.Layer):
        return augment if isinstance(augment, keras.Sequential) else keras.Sequential([augment])
    if isinstance(augment, (list, tuple)) and all(
        isinstance(a, keras.layers.Layer) for a in augment
    ):
        return keras.Sequential(list(augment), name="augment")
    raise ValueError(f"augment={augment!r} is not a preset name, a Keras layer or a list of layers")


def save_model(model: keras.Model, path: str | os.PathLike[str]) -> None:
    """Save ``model`` to a ``.keras`` file atomically.

    The model is written to a temporary file in the same folder and renamed over
    ``path``, so a crash at any instant leaves either the old file or the new
    one, never a half-written one.
    """
    path = os.fspath(path)
    if not path.endswith(".keras"):
        raise ValueError(f"path={path!r} must end in .keras")
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    handle, temporary = tempfile.mkstemp(
        prefix=f".{os.path.basename(path)}.", suffix=".tmp.keras", dir=folder
    )
    os.close(handle)
    try:
        model.save(temporary)
        with open(temporary, "rb") as written:
            os.fsync(written.fileno())
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def _state_paths(checkpoint: str) -> tuple[str, str]:
    stem = checkpoint[: -len(".keras")]
    return f"{stem}.last.keras", f"{stem}.state.json"


def _write_json_atomic(path: str, data: dict[str, Any]) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(prefix=".state.", suffix=".json", dir=folder)
    with os.fdopen(handle, "w") as out:
        json.dump(data, out)
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, path)


def _verbosity(verbose: Any) -> int:
    if verbose == "auto":
        return 1
    return int(verbose)


def _say(verbose: int, message: str) -> None:
    if verbose:
        print(f"xferclass: {message}", flush=True)


class _Training(keras.callbacks.Callback):
    """Checkpoints, resume state and the non-finite-loss guard of one run.

    It saves ``full_model`` (not the possibly smaller model being fitted) so
    that a checkpoint is always a complete, loadable classifier.
    """

    def __init__(
        self,
        full_model: keras.Model,
        *,
        checkpoint: str | None,
        monitor: str,
        best: float | None,
        history: dict[str, list[float]],
        epoch_offset: int = 0,
    ) -> None:
        super().__init__()
        self.full_model = full_model
        self.checkpoint = checkpoint
        self.monitor = monitor
        self.best = best
        self.past = history
        self.epoch_offset = epoch_offset
        self.bad_loss: tuple[int, int, float] | None = None
        self._epoch = 0

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._epoch = epoch

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.bad_loss = (self._epoch + self.epoch_offset, batch, float(loss))
            self.model.stop_training = True

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = dict(logs or {})
        if self.bad_loss is not None:
            return
        for key, value in logs.items():
            self.past.setdefault(key, []).append(float(value))
        if self.checkpoint is None:
            return
        value = logs.get(self.monitor)
        if value is not None and (self.best is None or float(value) > self.best):
            self.best = float(value)
            save_model(self.full_model, self.checkpoint)
        last, state = _state_paths(self.checkpoint)
        save_model(self.full_model, last)
        _write_json_atomic(
            state,
            {
                "epoch": epoch + 1 + self.epoch_offset,
                "monitor": self.monitor,
                "best": self.best,
                "history": self.past,
            },
        )


def _compile(
    model: keras.Model, learning_rate: float, jit_compile: Any, optimizer: Any = None
) -> None:
    model.compile(
        optimizer=optimizer or keras.optimizers.Adam(learning_rate=learning_rate),
        loss="categorical_crossentropy",
        metrics=["accuracy"],
        jit_compile=jit_compile,
    )


def _restore(model: keras.Model, checkpoint: str, verbose: int) -> tuple[int, float | None, dict]:
    last, state_path = _state_paths(checkpoint)
    if not (os.path.exists(last) and os.path.exists(state_path)):
        _say(verbose, f"resume=True but no saved state next to {checkpoint}; starting afresh")
        return 0, None, {}
    try:
        saved = keras.models.load_model(last)
        with open(state_path) as handle:
            state = json.load(handle)
    except Exception as error:
        raise ModelFileError(f"cannot resume from {last}: {error}") from error
    model.set_weights(saved.get_weights())
    if saved.optimizer is not None and saved.optimizer.built:
        model.optimizer.build(model.trainable_variables)
        for target, source in zip(model.optimizer.variables, saved.optimizer.variables):
            target.assign(source)
    _say(verbose, f"resuming after epoch {state['epoch']} from {last}")
    return int(state["epoch"]), state.get("best"), dict(state.get("history", {}))


def _frozen(layer: keras.layers.Layer) -> bool:
    return not layer.trainable_weights


def _strategy_of(model: keras.Model, strategy: Any) -> Any:
    """The strategy that trains ``model``: ``strategy``, or the one it was built under."""
    built = getattr(model, "_distribute_strategy", None)
    if strategy is None or (built is None and type(strategy).__name__.startswith("_Default")):
        return built
    if built is not strategy:
        where = "outside any" if built is None else f"under another ({type(built).__name__})"
        raise ValueError(
            f"strategy={type(strategy).__name__} was passed, but the model was built {where} "
            "tf.distribute strategy; a model's variables must be created in the scope of the "
            "strategy that trains it: pass the same strategy to "
            "build_classifier(..., strategy=strategy), or build the model inside "
            "`with strategy.scope():`"
        )
    return strategy


def _scope(strategy: Any) -> Any:
    return strategy.scope() if strategy is not None else contextlib.nullcontext()


def _extractor(model: keras.Model, output: Any, strategy: Any) -> Callable[[tf.Tensor], Any]:
    return forward_function(keras.Model(model.input, output), strategy)


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


def _shuffled(dataset: tf.data.Dataset) -> bool:
    return bool(getattr(dataset, "shuffled", False))


def _ordered(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """The same images in a fixed order, when the dataset can give them."""
    unshuffled = getattr(dataset, "unshuffled", None)
    return unshuffled() if callable(unshuffled) else dataset


def _run_fit(
    fitted: keras.Model,
    full_model: keras.Model,
    train: tf.data.Dataset,
    validation: tf.data.Dataset | None,
    *,
    epochs: int,
    callbacks: Sequence[keras.callbacks.Callback] | None,
    checkpoint: str | None,
    early_stopping: int | None,
    verbose: int,
    resume_state: tuple[int, float | None, dict],
) -> keras.callbacks.History:
    initial_epoch, best, past = resume_state
    monitor = "val_accuracy" if validation is not None else "accuracy"
    guard = _Training(full_model, checkpoint=checkpoint, monitor=monitor, best=best, history=past)
    history = keras.callbacks.History()
    extra: list[keras.callbacks.Callback] = [guard, history]
    if early_stopping:
        extra.append(
            keras.callbacks.EarlyStopping(
                monitor=monitor, mode="max", patience=int(early_stopping), restore_best_weights=True
            )
        )
    if _multi_worker(_strategy_of(fitted, None)):
        _fix_multi_worker_fit(fitted, train)
    interrupted = False
    try:
        fitted.fit(
            train,
            validation_data=validation,
            epochs=epochs,
            initial_epoch=initial_epoch,
            callbacks=[*(callbacks or []), *extra],
            verbose=verbose,
            shuffle=False,
        )
    except KeyboardInterrupt:
        interrupted = True
        where = f"; the best model so far is in {checkpoint}" if checkpoint else ""
        print(f"\nxferclass: training interrupted{where}", file=sys.stderr, flush=True)
    history.history = {key: list(values) for key, values in guard.past.items()}
    history.epoch = list(range(len(next(iter(history.history.values()), []))))
    history.set_model(full_model)
    history.interrupted = interrupted
    if guard.bad_loss is not None:
        epoch, batch, loss = guard.bad_loss
        kept = ""
        if checkpoint and os.path.exists(checkpoint):
            saved = keras.models.load_model(checkpoint)
            full_model.set_weights(saved.get_weights())
            kept = f"; the model was reset to the last good checkpoint {checkpoint}"
        error = TrainingError(
            f"the training loss became {loss} at epoch {epoch + 1}, batch {batch + 1}; "
            f"training stopped{kept}. Try a lower learning_rate."
        )
        error.history = history  # type: ignore[attr-defined]
        raise error
    return history


def _validate_common(
    model: Any, train: Any, validation: Any, epochs: Any, learning_rate: Any
) -> None:
    if not isinstance(model, keras.Model):
        raise TypeError(f"model must be a keras.Model; got {type(model).__name__}")
    require_dataset(train, "train")
    check_class_count(model, train, "train")
    if validation is not None:
        require_dataset(validation, "validation")
        check_class_count(model, validation, "validation")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
        raise ValueError(f"epochs={epochs!r} must be a non-negative int")
    if not (isinstance(learning_rate, (int, float)) and learning_rate > 0):
        raise ValueError(f"learning_rate={learning_rate!r} must be a positive number")


def _checkpoint_path(checkpoint: Any) -> str | None:
    if checkpoint is None:
        return None
    path = os.fspath(checkpoint)
    if not path.endswith(".keras"):
        raise ValueError(f"checkpoint={path!r} must be a path ending in .keras")
    return path


def _head_model(layers: Sequence[Any], start_output: Any, strategy: Any, name: str) -> keras.Model:
    """A model from ``start_output``'s shape through ``layers``, which it shares."""
    with _scope(strategy):
        inputs = keras.Input(shape=tuple(start_output.shape[1:]), name=f"{name}_input")
        x = inputs
        for layer in layers:
            x = layer(x)
        return keras.Model(inputs, x, name=name)


# --------------------------------------------------------------------------- fit


def fit(
    model: keras.Model,
    train: tf.data.Dataset,
    validation: tf.data.Dataset | None = None,
    *,
    epochs: int = 10,
    learning_rate: float = 1e-3,
    callbacks: Sequence[keras.callbacks.Callback] | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    early_stopping: int | None = None,
    verbose: int | str = "auto",
    resume: bool = False,
    cache: bool | str = "auto",
    augment: Any = None,
    augment_views: int = 2,
    cache_dtype: str = "float32",
    cache_memory: int | None = None,
    cache_dir: str | None = None,
    seed: int | None = None,
    strategy: Any = None,
    jit_compile: bool | str = False,
) -> keras.callbacks.History:
    """Train a classifier, caching the frozen backbone's features when it can.

    An uncompiled model is compiled as in the original notebook: Adam at
    ``learning_rate``, categorical crossentropy, accuracy.

    **Feature cache.** When the model comes from :func:`build_classifier`, its
    backbone is frozen and ``cache`` is ``"auto"`` or ``True``, the backbone runs
    once per split and the head trains on the pooled features: an epoch then
    costs a fraction of a second instead of a full forward pass. The result is
    the same as plain ``model.fit`` on the same batches (the tests check it).
    Features beyond ``cache_memory`` bytes spill to a temporary folder that is
    removed afterwards.

    **Augmentation.** ``augment`` turns on Keras random preprocessing layers.
    With the cache, ``augment_views`` augmented copies of the training set are
    run through the backbone once each, and every epoch draws each image from
    one of the plain or augmented copies at random. With ``cache=False`` the
    augmentation runs afresh every step, through the whole model.

    Args:
        model: A classifier, usually from :func:`build_classifier`.
        train: ``(images, one-hot labels)`` batches.
        validation: Optional validation batches, evaluated after every epoch.
        epochs: Number of epochs.
        learning_rate: Adam's learning rate, for a model not yet compiled.
        callbacks: Extra Keras callbacks. With the cache they are attached to
            the head model being trained, which shares its layers with ``model``.
        checkpoint: A ``.keras`` path; the best model by validation accuracy (or
            training accuracy without validation) is saved there atomically,
            and the latest state next to it for ``resume``.
        early_stopping: Stop after this many epochs without improvement and
            restore the best weights.
        verbose: ``"auto"``/1 shows a progress bar per epoch and a line per
            phase; 0 is silent; 2 prints one line per epoch.
        resume: Continue from the state saved next to ``checkpoint`` by an
            earlier, interrupted run: its weights, optimizer and epoch count.
        cache: ``"auto"`` (cache when possible), ``True`` (require it) or ``False``.
        augment: ``None``, ``True``/``"flip"``, ``"light"``, ``"strong"``, or
            Keras layers; see :func:`make_augmentation`.
        augment_views: Augmented copies cached per training image.
        cache_dtype: ``"float32"`` or ``"float16"`` (half the memory).
        cache_memory: Bytes of features kept in memory before spilling to disk
            (default 2 GiB, or ``$XFERCLASS_CACHE_MEMORY``).
        cache_dir: Parent folder of the temporary spill folder.
        seed: Seed of the cached-feature shuffling and of the augmentation.
        strategy: A ``tf.distribute.Strategy``; the model is compiled in its scope.
        jit_compile: XLA-compile the training step (``True``, ``False`` or ``"auto"``).

    Returns:
        The ``keras.callbacks.History``, ``.model`` set to ``model`` and
        ``.interrupted`` true when Ctrl-C stopped training (the history so far
        is returned instead of an exception).

    Raises:
        DatasetError: A dataset is not ``(images, one-hot labels)`` batches or
            has a different number of classes from the model.
        TrainingError: The loss became NaN or infinite; the model is reset to
            the last good checkpoint when there is one.

    Examples:
        >>> import xferclass
        >>> train = xferclass.load_image_dataset("data/train")  # doctest: +SKIP
        >>> model = xferclass.build_classifier(num_classes=len(train.class_names))  # doctest: +SKIP
        >>> history = xferclass.fit(model, train, epochs=10)  # doctest: +SKIP
    """
    _validate_common(model, train, validation, epochs, learning_rate)
    if cache not in ("auto", True, False):
        raise ValueError(f"cache={cache!r} must be 'auto', True or False")
    if isinstance(augment_views, bool) or not isinstance(augment_views, int) or augment_views < 1:
        raise ValueError(f"augment_views={augment_views!r} must be a positive int")
    if cache_dtype not in ("float32", "float16"):
        raise ValueError(f"cache_dtype={cache_dtype!r} must be 'float32' or 'float16'")
    checkpoint_path = _checkpoint_path(checkpoint)
    if resume and checkpoint_path is None:
        raise ValueError("resume=True needs checkpoint=PATH: the state is saved next to it")
    loud = _verbosity(verbose)
    strategy = _strategy_of(model, strategy)
    augmentation = make_augmentation(augment, seed)
    store_class_names(model, getattr(train, "class_names", None))

    parts = split_classifier(model)
    reasons = []
    if parts is None:
        reasons.append("the model was not made by build_classifier")
    elif not (_frozen(parts.wrapper) and _frozen(parts.preprocessing)):
        reasons.append("the backbone is trainable")
    use_cache = cache is not False and not reasons
    if cache is True and reasons:
        raise ValueError(f"cache=True, but the features cannot be cached: {reasons[0]}")

    with _scope(strategy):
        if not model.compiled:
            _compile(model, learning_rate, jit_compile)
    resume_state: tuple[int, float | None, dict] = (0, None, {})
    if resume and checkpoint_path is not None:
        resume_state = _restore(model, checkpoint_path, loud)

    if not use_cache:
        _say(loud, "training the whole model on images" + (f" ({reasons[0]})" if reasons else ""))
        source = train
        if augmentation is not None:
            source = train.map(
                lambda x, y, *rest: (augmentation(x, training=True), y),
                num_parallel_calls=tf.data.AUTOTUNE,
            ).prefetch(tf.data.AUTOTUNE)
        return _run_fit(
            model,
            model,
            source,
            validation,
            epochs=epochs,
            callbacks=callbacks,
            checkpoint=checkpoint_path,
            early_stopping=early_stopping,
            verbose=loud,
            resume_state=resume_state,
        )

    assert parts is not None
    pool_output = model.get_layer(POOL).output
    with CacheDirectory(cache_dir) as folder:
        budget = _Budget(memory_limit_from_env(cache_memory))
        extract = _extractor(model, pool_output, strategy)
        views = 1 + (augment_views if augmentation is not None else 0)
        augment_fn = (lambda x: augmentation(x, training=True)) if augmentation else None
        cached_train = cache_split(
            extract, _ordered(train), name="train", directory=folder, budget=budget,
            augment=augment_fn, views=views, dtype=cache_dtype, verbose=loud,
        )  # fmt: skip
        cached_validation = None
        if validation is not None:
            cached_validation = cache_split(
                extract, validation, name="validation", directory=folder, budget=budget,
                dtype=cache_dtype, verbose=loud,
            )  # fmt: skip
        head = _head_model(parts.head[1:], pool_output, strategy, "head")
        with _scope(strategy):
            head.compile(
                optimizer=model.optimizer,
                loss="categorical_crossentropy",
                metrics=["accuracy"],
                jit_compile=jit_compile,
            )
        _say(loud, f"training the head on cached features for {epochs} epochs")
        try:
            return _run_fit(
                head,
                model,
                cached_train.dataset(
                    shuffle=_shuffled(train) or views > 1, seed=_order_seed(seed, strategy)
                ),
                cached_validation.dataset(shuffle=False, seed=None) if cached_validation else None,
                epochs=epochs,
                callbacks=callbacks,
                checkpoint=checkpoint_path,
                early_stopping=early_stopping,
                verbose=loud,
                resume_state=resume_state,
            )
        finally:
            cached_train.close()
            if cached_validation is not None:
                cached_validation.close()


# --------------------------------------------------------------------------- fine_tune


def _first_unfrozen(layers: list[Any], unfreeze: Any) -> int:
    count = len(layers)
    if isinstance(unfreeze, bool):
        raise ValueError(f"unfreeze={unfreeze!r} must be a layer count, a fraction or a layer name")
    if isinstance(unfreeze, int):
        if not 1 <= unfreeze <= count:
            raise ValueError(
                f"unfreeze={unfreeze!r} must be between 1 and {count} (backbone layers)"
            )
        return count - unfreeze
    if isinstance(unfreeze, float):
        if not 0.0 < unfreeze <= 1.0:
            raise ValueError(f"unfreeze={unfreeze!r} must be a fraction in (0, 1]")
        return count - max(1, math.ceil(unfreeze * count))
    if isinstance(unfreeze, str):
        names = [layer.name for layer in layers]
        if unfreeze not in names:
            import difflib

            close = difflib.get_close_matches(unfreeze, names, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ValueError(f"unfreeze={unfreeze!r} is not a layer of the backbone{hint}")
        return names.index(unfreeze)
    raise ValueError(f"unfreeze={unfreeze!r} must be a layer count, a fraction or a layer name")


def _find_cut(backbone: keras.Model, first: int) -> tuple[Any, keras.Model]:
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


def _unfreeze(wrapper: keras.layers.Layer, backbone: keras.Model, first: int) -> list[str]:
    """Make layers from ``first`` on trainable, except BatchNormalization."""
    wrapper.trainable = True
    backbone.trainable = True
    unfrozen = []
    for index, layer in enumerate(backbone.layers):
        train = index >= first and not isinstance(layer, keras.layers.BatchNormalization)
        layer.trainable = train
        if train and layer.weights:
            unfrozen.append(layer.name)
    return unfrozen


def fine_tune(
    model: keras.Model,
    train: tf.data.Dataset,
    validation: tf.data.Dataset | None = None,
    *,
    head_epochs: int = 5,
    epochs: int = 5,
    unfreeze: int | float | str = 0.2,
    learning_rate: float = 1e-4,
    head_learning_rate: float = 1e-3,
    callbacks: Sequence[keras.callbacks.Callback] | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    early_stopping: int | None = None,
    verbose: int | str = "auto",
    cache: bool | str = "auto",
    augment: Any = None,
    augment_views: int = 1,
    cache_dtype: str = "auto",
    cache_memory: int | None = None,
    cache_dir: str | None = None,
    seed: int | None = None,
    strategy: Any = None,
    jit_compile: bool | str = False,
) -> keras.callbacks.History:
    """Two-phase transfer learning: train the head, then the top of the backbone.

    Phase 1 is :func:`fit` with the backbone frozen, on cached features.
    Phase 2 unfreezes the top of the backbone (BatchNorm layers stay frozen and
    in inference mode) and trains at a low learning rate.

    **Cut-point cache.** In phase 2 the layers below the first unfrozen one
    still give the same answer every epoch. With ``cache="auto"`` their output
    (the activations at the cut: the last tensor below the unfrozen layers that
    the rest of the network hangs from) is computed once and phase 2 trains only
    the top of the backbone and the head on it, so an epoch costs only the top's
    share of the compute. Activations are stored in float16 when they would not
    fit ``cache_memory`` otherwise (``cache_dtype="auto"``). Augmented views
    (``augment``) are cached at the cut the same way. ``cache=False`` trains
    through the whole network, as plain Keras fine-tuning does.

    Args:
        model: A classifier from :func:`build_classifier`.
        train: ``(images, one-hot labels)`` batches.
        validation: Optional validation batches.
        head_epochs: Epochs of phase 1 (0 skips it).
        epochs: Epochs of phase 2.
        unfreeze: What to unfreeze: the last N backbone layers (an int), that
            fraction of its layers (a float), or every layer from one named
            layer on (a str).
        learning_rate: Adam's learning rate in phase 2.
        head_learning_rate: Adam's learning rate in phase 1.
        callbacks: Extra Keras callbacks for both phases.
        checkpoint: ``.keras`` path for the best model of both phases.
        early_stopping: Patience, in epochs, within each phase.
        verbose: As in :func:`fit`.
        cache: ``"auto"``, ``True`` or ``False``, for both phases.
        augment: As in :func:`fit`; cached as ``augment_views`` extra views.
        augment_views: Augmented copies cached per training image.
        cache_dtype: ``"auto"``, ``"float32"`` or ``"float16"`` for phase 2.
        cache_memory: Memory budget in bytes before spilling to disk.
        cache_dir: Parent folder of the temporary spill folder.
        seed: Seed of shuffling and augmentation.
        strategy: A ``tf.distribute.Strategy``.
        jit_compile: XLA-compile the training steps.

    Returns:
        One ``History`` covering both phases; ``history.history["phase"]``
        tells which phase each epoch belongs to.

    Examples:
        >>> history = xferclass.fine_tune(model, train, val, head_epochs=5,
        ...                               epochs=3, unfreeze=0.2)  # doctest: +SKIP
    """
    _validate_common(model, train, validation, epochs, learning_rate)
    parts = split_classifier(model)
    if parts is None:
        raise ValueError("fine_tune needs a model made by build_classifier (it finds the backbone)")
    if isinstance(head_epochs, bool) or not isinstance(head_epochs, int) or head_epochs < 0:
        raise ValueError(f"head_epochs={head_epochs!r} must be a non-negative int")
    if cache_dtype not in ("auto", "float32", "float16"):
        raise ValueError(f"cache_dtype={cache_dtype!r} must be 'auto', 'float32' or 'float16'")
    if cache not in ("auto", True, False):
        raise ValueError(f"cache={cache!r} must be 'auto', True or False")
    if isinstance(augment_views, bool) or not isinstance(augment_views, int) or augment_views < 1:
        raise ValueError(f"augment_views={augment_views!r} must be a positive int")
    backbone = parts.backbone
    first = _first_unfrozen(backbone.layers, unfreeze)
    checkpoint_path = _checkpoint_path(checkpoint)
    loud = _verbosity(verbose)
    strategy = _strategy_of(model, strategy)
    augmentation = make_augmentation(augment, seed)
    store_class_names(model, getattr(train, "class_names", None))
    monitor = "val_accuracy" if validation is not None else "accuracy"

    if cache is False:
        return _fine_tune_uncached(
            model, parts, train, validation, first=first, head_epochs=head_epochs,
            epochs=epochs, learning_rate=learning_rate, head_learning_rate=head_learning_rate,
            augmentation=augmentation, callbacks=callbacks, checkpoint=checkpoint_path,
            early_stopping=early_stopping, verbose=loud, strategy=strategy,
            jit_compile=jit_compile, monitor=monitor,
        )  # fmt: skip

    # Everything below the cut is frozen in both phases: run it once.
    parts.wrapper.trainable = False
    cut, top = _find_cut(backbone, first)
    with _scope(strategy):
        inputs = keras.Input(model.input_shape[1:])
        bottom = keras.Model(backbone.input, cut)
        extractor = keras.Model(inputs, InferenceMode(bottom)(parts.preprocessing(inputs)))
        top_input = keras.Input(tuple(cut.shape[1:]), name="cut_input")
        top_output = InferenceMode(top, name="backbone_top")(top_input)
        pooled = keras.Model(top_input, parts.head[0](top_output))
        x = top_output
        for layer in parts.head:
            x = layer(x)
        trained = keras.Model(top_input, x, name="top")
        head = _head_model(parts.head[1:], pooled.output, strategy, "head")
    budget = _Budget(memory_limit_from_env(cache_memory))
    views = 1 + (augment_views if augmentation is not None else 0)
    dtype = cache_dtype
    if dtype == "auto":
        images = len(getattr(train, "file_paths", [])) or None
        row_bytes = 4 * int(np.prod(cut.shape[1:]))
        fits = images is None or images * views * row_bytes <= budget.left
        dtype = "float32" if fits else "float16"
    _say(loud, f"caching activations at the cut {tuple(cut.shape[1:])} in {dtype}")
    augment_fn = (lambda x: augmentation(x, training=True)) if augmentation else None
    shuffle = _shuffled(train) or views > 1
    order_seed = _order_seed(seed, strategy)
    past: dict[str, list[float]] = {}
    best: float | None = None
    with CacheDirectory(cache_dir) as folder:
        at_cut = cache_split(
            forward_function(extractor, strategy), _ordered(train), name="train", directory=folder,
            budget=budget, augment=augment_fn, views=views, dtype=dtype, verbose=loud,
        )  # fmt: skip
        at_cut_validation: CachedSplit | None = None
        if validation is not None:
            at_cut_validation = cache_split(
                forward_function(extractor, strategy), validation, name="validation",
                directory=folder, budget=budget, dtype=dtype, verbose=loud,
            )  # fmt: skip
        splits = [at_cut, at_cut_validation]
        try:
            if head_epochs:
                _say(loud, f"phase 1: training the head for {head_epochs} epochs, backbone frozen")
                features = at_cut.map_views(forward_function(pooled, strategy), folder, budget)
                splits.append(features)
                features_validation = None
                if at_cut_validation is not None:
                    features_validation = at_cut_validation.map_views(
                        forward_function(pooled, strategy), folder, budget
                    )
                    splits.append(features_validation)
                with _scope(strategy):
                    _compile(model, head_learning_rate, jit_compile)
                    _compile(head, head_learning_rate, jit_compile, optimizer=model.optimizer)
                phase1 = _run_fit(
                    head, model, features.dataset(shuffle=shuffle, seed=order_seed),
                    features_validation.dataset(shuffle=False, seed=None)
                    if features_validation else None,
                    epochs=head_epochs, callbacks=callbacks, checkpoint=checkpoint_path,
                    early_stopping=early_stopping, verbose=loud, resume_state=(0, None, {}),
                )  # fmt: skip
                past = {key: list(values) for key, values in phase1.history.items()}
                if getattr(phase1, "interrupted", False):
                    phase1.history["phase"] = [1.0] * len(phase1.epoch)
                    return phase1
                best = max(past[monitor]) if past.get(monitor) else None
            done = len(next(iter(past.values()), []))
            unfrozen = _unfreeze(parts.wrapper, backbone, first)
            _say(
                loud,
                f"phase 2: fine-tuning {len(unfrozen)} backbone layers from "
                f"{backbone.layers[first].name!r} on, for {epochs} epochs at learning rate "
                f"{learning_rate:g}, on the cached activations",
            )
            with _scope(strategy):
                optimizer = keras.optimizers.Adam(learning_rate=learning_rate)
                _compile(model, learning_rate, jit_compile, optimizer=optimizer)
                _compile(trained, learning_rate, jit_compile, optimizer=optimizer)
            history = _run_fit(
                trained, model, at_cut.dataset(shuffle=shuffle, seed=order_seed),
                at_cut_validation.dataset(shuffle=False, seed=None) if at_cut_validation else None,
                epochs=done + epochs, callbacks=callbacks, checkpoint=checkpoint_path,
                early_stopping=early_stopping, verbose=loud, resume_state=(done, best, past),
            )  # fmt: skip
        finally:
            for split in splits:
                if split is not None:
                    split.close()
    history.history["phase"] = [1.0] * done + [2.0] * (len(history.epoch) - done)
    return history


def _fine_tune_uncached(
    model: keras.Model,
    parts: Any,
    train: tf.data.Dataset,
    validation: tf.data.Dataset | None,
    *,
    first: int,
    head_epochs: int,
    epochs: int,
    learning_rate: float,
    head_learning_rate: float,
    augmentation: keras.Sequential | None,
    callbacks: Sequence[keras.callbacks.Callback] | None,
    checkpoint: str | None,
    early_stopping: int | None,
    verbose: int,
    strategy: Any,
    jit_compile: Any,
    monitor: str,
) -> keras.callbacks.History:
    """Both phases through the whole network, as plain Keras fine-tuning does."""
    source = train
    if augmentation is not None:
        source = train.map(
            lambda x, y, *rest: (augmentation(x, training=True), y),
            num_parallel_calls=tf.data.AUTOTUNE,
        ).prefetch(tf.data.AUTOTUNE)
    run = dict(
        callbacks=callbacks, checkpoint=checkpoint, early_stopping=early_stopping,
        verbose=verbose,
    )  # fmt: skip
    past: dict[str, list[float]] = {}
    best = None
    if head_epochs:
        _say(verbose, f"phase 1: training the head for {head_epochs} epochs, backbone frozen")
        parts.wrapper.trainable = False
        with _scope(strategy):
            _compile(model, head_learning_rate, jit_compile)
        phase1 = _run_fit(model, model, source, validation, epochs=head_epochs,
                          resume_state=(0, None, {}), **run)  # type: ignore[arg-type]  # fmt: skip
        past = {key: list(values) for key, values in phase1.history.items()}
        if getattr(phase1, "interrupted", False):
            phase1.history["phase"] = [1.0] * len(phase1.epoch)
            return phase1
        best = max(past[monitor]) if past.get(monitor) else None
    done = len(next(iter(past.values()), []))
    unfrozen = _unfreeze(parts.wrapper, parts.backbone, first)
    _say(verbose, f"phase 2: fine-tuning {len(unfrozen)} backbone layers for {epochs} epochs")
    with _scope(strategy):
        _compile(model, learning_rate, jit_compile)
    history = _run_fit(model, model, source, validation, epochs=done + epochs,
                       resume_state=(done, best, past), **run)  # type: ignore[arg-type]  # fmt: skip
    history.history["phase"] = [1.0] * done + [2.0] * (len(history.epoch) - done)
    return history
