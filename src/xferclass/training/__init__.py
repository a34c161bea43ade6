"""``fit`` and ``fine_tune``: training that runs a frozen backbone only once.

With a frozen backbone nearly all of an epoch's cost is the backbone's forward
pass, and it gives the same answer every epoch. ``fit`` therefore runs the
frozen part once per split, keeps the activations (in memory, spilling to disk
past a budget) and trains the rest on them. The trained layers are the very
layer objects of the full model, so the returned model is ready to save and use.

Both functions are front doors over one engine (:mod:`xferclass.training._engine`):
they check their arguments, decide the phases, and run them.

As a package, ``xferclass.training`` owns training: ``fit`` and ``fine_tune``, their
engine and caches, and the record of the files a model trained on (``_provenance``). It
may import ``core``, ``data``, ``backbones`` and ``runtime``.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from typing import Any

import keras
import tensorflow as tf

from ..backbones.layers import refuse_unknown
from ..backbones.models import ClassifierParts, split_classifier, tap_widths
from ..core._checkpoint import save_model
from ..core._compile import multi_label_class_weight_error, resolve_compile
from ..core._errors import InvalidArgumentError, InvalidArgumentTypeError
from ..data._augment import make_augmentation
from ..data._facts import class_names_of, facts_of
from ..runtime._common import (
    check_class_count,
    check_image_size,
    check_stored_class_names,
    compare_class_names,
    model_multi_label,
    require_dataset,
    store_class_names,
)
from ._calibration import _softmax_layer, calibrate_on, held_out_predictions
from ._engine import Phase, TrainConfig, run_phases, scope, strategy_of, verbosity
from ._provenance import record_training_files

__all__ = ["fit", "fine_tune", "make_augmentation", "save_model"]

_CONFIG_FIELDS = set(TrainConfig.__dataclass_fields__)


def _config(options: dict[str, Any]) -> TrainConfig:
    """A TrainConfig from a front door's keyword arguments."""
    values = {key: value for key, value in options.items() if key in _CONFIG_FIELDS}
    if values.get("checkpoint") is not None:
        values["checkpoint"] = os.fspath(values["checkpoint"])
    values["callbacks"] = tuple(values.get("callbacks") or ())
    values["verbose"] = verbosity(values.get("verbose", "auto"))
    return TrainConfig(**values)


def _renamed_epochs(epochs: int | None, fine_tune_epochs: int) -> int:
    """``fine_tune``'s phase-2 epochs, from ``epochs=`` (deprecated) when given."""
    if epochs is None:
        return fine_tune_epochs
    warnings.warn(
        "fine_tune's epochs= is deprecated: it is phase 2's epochs, now called "
        "fine_tune_epochs= (as in xferclass train --fine-tune-epochs)",
        DeprecationWarning,
        stacklevel=3,
    )
    return epochs


def _check_inputs(
    model: Any,
    train: Any,
    validation: Any,
    epochs: Any,
    rates: dict,
    class_weight: Any,
    *,
    epochs_name: str = "epochs",
) -> None:
    if not isinstance(model, keras.Model):
        raise InvalidArgumentTypeError(f"model must be a keras.Model; got {type(model).__name__}")
    refuse_unknown(model, "training it")
    for name, dataset in (("train", train), ("validation", validation)):
        if dataset is not None or name == "train":
            require_dataset(dataset, name)
            check_class_count(model, dataset, name)
            check_image_size(model, dataset, name)
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
        raise InvalidArgumentError(f"{epochs_name}={epochs!r} must be a non-negative int")
    for name, rate in rates.items():
        if rate is not None and not (
            isinstance(rate, (int, float)) and not isinstance(rate, bool) and rate > 0
        ):
            raise InvalidArgumentError(f"{name}={rate!r} must be a positive number")
    _check_class_weight(model, train, class_weight)
    _check_class_names(model, train, validation)


def _check_class_weight(model: keras.Model, train: tf.data.Dataset, class_weight: Any) -> None:
    """Refuse a ``class_weight`` that Keras would apply wrongly or not at all."""
    if class_weight is None:
        return
    if len(train.element_spec) > 2:
        raise InvalidArgumentError(
            f"class_weight={class_weight!r} was given, but train yields sample weights too "
            "((images, labels, weights) batches); Keras takes one or the other. Multiply "
            "the class weights into the sample weights instead"
        )
    if model_multi_label(model)[0] or facts_of(train).multi_label:
        raise multi_label_class_weight_error(class_weight)


def _check_class_names(model: keras.Model, train: Any, validation: Any) -> None:
    """Label index k must mean one class for the model, train and validation.

    Names are compared wherever both sides know them; the model's names are
    then set from the training data's (never reordered).
    """
    names = class_names_of(train)
    if validation is not None:
        other = class_names_of(validation)
        compare_class_names(names, other, "train", "validation")
        check_stored_class_names(model, other, "validation")
    check_stored_class_names(model, names, "train")
    store_class_names(model, names)


def _record_training_files(model: keras.Model, train: Any) -> None:
    """Record ``train``'s files in ``model`` when the dataset knows them (see _provenance).

    Done before training, so that every checkpoint written carries the record.
    """
    paths = facts_of(train).file_paths
    if paths:
        record_training_files(model, paths)


def _cache_refusal(parts: ClassifierParts | None) -> str | None:
    """Why the features cannot be cached, or ``None`` when they can."""
    if parts is None:
        return "the model was not made by build_classifier"
    if parts.wrapper.trainable_weights or parts.preprocessing.trainable_weights:
        return "the backbone is trainable"
    return None


# --------------------------------------------------------------------------- fit


def fit(
    model: keras.Model,
    train: tf.data.Dataset,
    validation: tf.data.Dataset | None = None,
    *,
    epochs: int = 10,
    learning_rate: float | None = None,
    optimizer: Any = None,
    loss: Any = None,
    metrics: Sequence[Any] | None = None,
    label_smoothing: float | None = None,
    class_weight: dict[int, float] | str | None = None,
    shuffle: bool = True,
    callbacks: Sequence[keras.callbacks.Callback] | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    early_stopping: int | None = None,
    restore_best: bool = True,
    monitor: str | None = None,
    verbose: int | str = "auto",
    resume: bool = False,
    cache: bool | str = "auto",
    augment: Any = None,
    augment_views: int = 2,
    cache_dtype: str = "auto",
    cache_memory: int | None = None,
    cache_dir: str | None = None,
    seed: int | None = None,
    strategy: Any = None,
    jit_compile: bool | str | None = None,
    engine: str = "auto",
    deadline: float | None = None,
    calibrate: bool = False,
) -> keras.callbacks.History:
    """Train a classifier, caching the frozen backbone's features when it can.

    **What it trains with.** A compiled model keeps its own optimizer, loss,
    metrics and loss weights, cached or not; ``optimizer``, ``loss``,
    ``metrics`` and ``label_smoothing`` override single parts of it. A model
    that is not compiled gets Adam at ``learning_rate`` (default 1e-3) and the
    loss and metrics that suit its output layer: categorical crossentropy and
    accuracy for a softmax output, binary crossentropy and binary accuracy for
    a sigmoid (multi-label) one. ``learning_rate`` given for a compiled model
    is applied to its optimizer (and logged).

    **Feature cache.** When the model comes from :func:`build_classifier`, its
    backbone is frozen and ``cache`` is ``"auto"`` or ``True``, the backbone runs
    once per split and the head trains on the pooled features: an epoch then
    costs a fraction of a second instead of a full forward pass. The result is
    the same as plain ``model.fit`` on the same batches (the tests check it).
    With ``shuffle=True`` the cached rows are reshuffled every epoch, in an
    order drawn from ``seed`` and the epoch number, whatever dataset came in.
    Features beyond ``cache_memory`` bytes spill to a temporary folder that is
    removed afterwards.

    **Augmentation.** ``augment`` turns on Keras random preprocessing layers.
    With the cache, ``augment_views`` augmented copies of every training image
    are run through the backbone once, and every epoch reads each image from
    one of the plain or augmented copies at random. With ``cache=False`` the
    augmentation runs afresh every step, through the whole model.

    **What it trained on.** When ``train`` knows its files (a dataset of
    :func:`load_image_dataset`, or made from one by steps that keep its rows),
    their content digests are recorded in the model's metadata before training
    (a Bloom filter: about 19 bits per image, 2.4 MB for a million), so that
    ``xferclass evaluate`` and ``xferclass report`` can say how many of the
    images they score the model trained on. The weights are not affected.

    **Best epoch and checkpoints.** With validation data (or
    ``early_stopping``) the weights of the best epoch by ``monitor`` are kept in
    memory and put back at the end (``restore_best``). ``checkpoint`` writes the
    whole model there, atomically, whenever the monitored value improves, and a
    small resume state (``<name>.resume.npz``) after every epoch.

    Args:
        model: A classifier, usually from :func:`build_classifier`.
        train: ``(images, labels)`` batches, labels one-hot (or multi-hot).
        validation: Optional validation batches, evaluated after every epoch.
        epochs: Number of epochs.
        learning_rate: Learning rate of the optimizer.
        optimizer: A Keras optimizer or its name, instead of Adam or the
            compiled optimizer.
        loss: A Keras loss or its name, instead of the default or compiled one.
        metrics: Keras metrics, instead of the default or compiled ones.
        label_smoothing: Label smoothing of the (categorical or binary)
            crossentropy loss.
        class_weight: A dict from class index to weight, or ``"balanced"``:
            ``n_samples / (n_classes * count)`` from the training labels, as
            scikit-learn's ``compute_class_weight`` does.
        shuffle: Reshuffle the cached training rows every epoch. (Without the
            cache the dataset's own order is used, as in ``model.fit``.)
        callbacks: Extra Keras callbacks. With the cache they are attached to
            the head model being trained, which shares its layers with ``model``.
        checkpoint: A ``.keras`` path for the best model and the resume state.
        early_stopping: Stop after this many epochs without improvement.
        restore_best: Put back the best epoch's weights at the end.
        monitor: The logged value that picks the best epoch (default: the
            first accuracy metric on the validation data, else the loss;
            minimised when its name ends in ``loss``, maximised otherwise).
        verbose: ``"auto"``/1 shows a progress bar per epoch and a line per
            phase; 0 is silent; 2 prints one line per epoch. The functions
            that make one pass (:func:`predict`, :func:`evaluate_regression_style`)
            take the same values and default to 0. Messages go
            through the ``xferclass`` logger, shown on stdout unless that
            logger has handlers of its own.
        resume: Continue from the state saved next to ``checkpoint`` by an
            earlier, interrupted run: its weights, optimizer and epoch count.
        cache: ``"auto"`` (cache when possible), ``True`` (require it) or ``False``.
        augment: ``None``, ``True``/``"flip"``, ``"light"``, ``"strong"``, or
            Keras layers; see :func:`make_augmentation`.
        augment_views: Augmented copies cached per training image.
        cache_dtype: ``"auto"`` (float32 when the cache fits ``cache_memory``,
            else float16, with a :class:`FallbackWarning`), ``"float32"`` or
            ``"float16"``.
        cache_memory: Bytes of activations kept in memory before spilling to
            disk (default 2 GiB, or ``$XFERCLASS_CACHE_MEMORY``).
        cache_dir: Parent folder of the temporary spill folder.
        seed: Seed of the cached-row shuffling and of the augmentation.
        strategy: A ``tf.distribute.Strategy``; the model is compiled in its scope.
        jit_compile: XLA-compile the training step (``True``, ``False`` or
            ``"auto"``). ``None``: a compiled model's own setting, else ``False``.
            A compiled model's ``run_eagerly`` is kept too.
        engine: Runtime of the frozen forward passes that fill the cache
            (``"auto"``, ``"keras"``, ``"onnxruntime"``, ``"openvino"``,
            ``"openvino-bf16"``, ``"openvino-int8"``). ``"auto"`` runs each pass on
            the fastest it measured, and in bfloat16 or int8 only where a linear probe
            on the first images' features scored within one standard error of
            float32's.
        deadline: A ``time.monotonic()`` value to finish by: no epoch starts that
            the last one's length says would end after it, an epoch running past
            it stops after its current batch, and the best epoch's weights are
            restored as usual. ``history.stopped_for_time`` says why it stopped
            early, or is None; ``history.epochs_completed`` leaves out an epoch
            cut short.
        calibrate: After training, fit a temperature on ``validation``'s predictions and
            fold it into the softmax layer when it lowers their cross-validated
            calibration error (:func:`xferclass.calibrate`; needs ``validation`` and a
            single-label model). The validation split also chose the best epoch, so
            a separate held-out split measures the result more honestly.

    Returns:
        The ``keras.callbacks.History`` with ``.model`` set to ``model``,
        ``.best_epoch`` (1-based, or ``None``), ``.monitor``, ``.stopped_for_time``
        and ``.frozen_engines``: what each caching pass ran on, as
        ``{"train features": "openvino-bf16", "validation features": ...}``; with
        ``calibrate=True``, ``.calibration``: the
        :class:`~xferclass.evaluation.calibration.TemperatureChoice` measured.

    Raises:
        DatasetError: A dataset is not ``(images, labels)`` batches, has a
            different number of classes from the model, or images of another size;
            or one of ``train``'s files cannot be read to record it.
        TrainingError: The loss became NaN or infinite; the model is reset to
            the last good weights.
        KeyboardInterrupt: Ctrl-C stopped training; the best weights are in the
            model, the checkpoint is written, and ``.history`` holds the epochs done.

    Examples:
        >>> import xferclass
        >>> train = xferclass.load_image_dataset("data/train")  # doctest: +SKIP
        >>> model = xferclass.build_classifier(num_classes=len(train.class_names))  # doctest: +SKIP
        >>> history = xferclass.fit(model, train, epochs=10)  # doctest: +SKIP
    """
    rates = {"learning_rate": learning_rate}
    _check_inputs(model, train, validation, epochs, rates, class_weight)
    config = _config(locals())
    parts = split_classifier(model)
    refusal = _cache_refusal(parts)
    if cache is True and refusal:
        raise InvalidArgumentError(f"cache=True, but the features cannot be cached: {refusal}")
    trains = "head" if cache is not False and refusal is None else "whole"
    with scope(strategy_of(model, strategy)):  # optimizers belong to the model's strategy
        spec = resolve_compile(
            model, optimizer=optimizer, loss=loss, metrics=metrics,
            label_smoothing=label_smoothing, learning_rate=learning_rate, jit_compile=jit_compile,
        )  # fmt: skip
    if calibrate:
        if validation is None:
            raise InvalidArgumentError(
                "calibrate=True fits a temperature on the validation split: pass validation"
            )
        _softmax_layer(model)  # refuse before training what cannot be calibrated after it
    _record_training_files(model, train)
    phase = Phase("train", trains, epochs)
    history = run_phases(model, train, validation, [phase], config, spec, parts)
    if calibrate:
        labels, probabilities = held_out_predictions(model, validation, engine=engine)
        history.calibration = calibrate_on(model, labels, probabilities,
                                           seed=0 if seed is None else seed)  # fmt: skip
    return history


# --------------------------------------------------------------------------- fine_tune


def _first_unfrozen(layers: list[Any], unfreeze: Any) -> int:
    count = len(layers)
    if isinstance(unfreeze, bool):
        raise InvalidArgumentError(
            f"unfreeze={unfreeze!r} must be a layer count, a fraction or a layer name"
        )
    if isinstance(unfreeze, int):
        if not 1 <= unfreeze <= count:
            raise InvalidArgumentError(
                f"unfreeze={unfreeze!r} must be between 1 and {count} (backbone layers)"
            )
        return count - unfreeze
    if isinstance(unfreeze, float):
        if not 0.0 < unfreeze <= 1.0:
            raise InvalidArgumentError(f"unfreeze={unfreeze!r} must be a fraction in (0, 1]")
        return count - max(1, math.ceil(unfreeze * count))
    if isinstance(unfreeze, str):
        names = [layer.name for layer in layers]
        if unfreeze not in names:
            import difflib

            close = difflib.get_close_matches(unfreeze, names, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise InvalidArgumentError(
                f"unfreeze={unfreeze!r} is not a layer of the backbone{hint}"
            )
        return names.index(unfreeze)
    raise InvalidArgumentError(
        f"unfreeze={unfreeze!r} must be a layer count, a fraction or a layer name"
    )


def fine_tune(
    model: keras.Model,
    train: tf.data.Dataset,
    validation: tf.data.Dataset | None = None,
    *,
    head_epochs: int = 5,
    fine_tune_epochs: int = 5,
    unfreeze: int | float | str = 0.2,
    learning_rate: float = 1e-4,
    head_learning_rate: float = 1e-3,
    optimizer: Any = None,
    loss: Any = None,
    metrics: Sequence[Any] | None = None,
    label_smoothing: float | None = None,
    class_weight: dict[int, float] | str | None = None,
    shuffle: bool = True,
    callbacks: Sequence[keras.callbacks.Callback] | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    early_stopping: int | None = None,
    restore_best: bool = True,
    monitor: str | None = None,
    verbose: int | str = "auto",
    resume: bool = False,
    cache: bool | str = "auto",
    augment: Any = None,
    augment_views: int = 2,
    cache_dtype: str = "auto",
    cache_memory: int | None = None,
    cache_dir: str | None = None,
    seed: int | None = None,
    strategy: Any = None,
    jit_compile: bool | str | None = None,
    engine: str = "auto",
    deadline: float | None = None,
    epochs: int | None = None,
) -> keras.callbacks.History:
    """Two-phase transfer learning: train the head, then the top of the backbone.

    Phase 1 trains the head with the backbone frozen, at ``head_learning_rate``.
    Phase 2 unfreezes the top of the backbone (BatchNorm layers stay frozen and
    in inference mode) and trains at ``learning_rate``. Each phase gets a fresh
    optimizer of the user's kind and settings (``optimizer``, or the compiled
    model's, else Adam) at its own learning rate; the loss and metrics are the
    compiled model's, or chosen as in :func:`fit`.

    **Cut-point cache.** The layers below the first unfrozen one give the same
    answer every epoch of both phases. With ``cache="auto"`` their output (the
    activations at the cut: the last tensor below the unfrozen layers that the
    rest of the network hangs from) is computed once; phase 1 trains the head
    on the pooled features computed from it, and phase 2 trains the top of the
    backbone and the head on it, so an epoch costs only the top's share of the
    compute. ``cache=False`` trains through the whole network, as plain Keras
    fine-tuning does.

    Like :func:`fit`, it records the content digests of ``train``'s files in
    the model's metadata when the dataset knows them.

    Args:
        model: A classifier from :func:`build_classifier`.
        train: ``(images, labels)`` batches.
        validation: Optional validation batches.
        head_epochs: Epochs of phase 1 (0 skips it).
        fine_tune_epochs: Epochs of phase 2 (``xferclass train --fine-tune-epochs``).
        unfreeze: What to unfreeze: the last N backbone layers (an int), that
            fraction of its layers (a float), or every layer from one named
            layer on (a str).
        learning_rate: Learning rate of phase 2.
        head_learning_rate: Learning rate of phase 1.
        optimizer: The kind and settings of both phases' optimizers (a Keras
            optimizer or its name); its learning rate is replaced by each
            phase's.
        loss: As in :func:`fit`.
        metrics: As in :func:`fit`.
        label_smoothing: As in :func:`fit`.
        class_weight: As in :func:`fit`.
        shuffle: As in :func:`fit`.
        callbacks: Extra Keras callbacks for both phases.
        checkpoint: As in :func:`fit`, across both phases.
        early_stopping: Patience, in epochs, within each phase.
        restore_best: Put back the best epoch's weights (of either phase) at the end.
        monitor: As in :func:`fit`.
        verbose: As in :func:`fit`.
        resume: Continue an interrupted run from the state next to
            ``checkpoint``, in whichever phase it stopped.
        cache: ``"auto"``, ``True`` or ``False``, for both phases.
        augment: As in :func:`fit`; cached as ``augment_views`` extra views.
        augment_views: Augmented copies cached per training image.
        cache_dtype: As in :func:`fit`.
        cache_memory: Memory budget in bytes before spilling to disk.
        cache_dir: Parent folder of the temporary spill folder.
        seed: Seed of shuffling and augmentation.
        strategy: A ``tf.distribute.Strategy``.
        jit_compile: XLA-compile the training steps; as in :func:`fit`.
        engine: As in :func:`fit`.
        deadline: As in :func:`fit`; no phase starts after it stopped one.
        epochs: Deprecated spelling of ``fine_tune_epochs``.

    Returns:
        One ``History`` covering both phases; ``history.history["phase"]``
        tells which phase each epoch belongs to.

    Examples:
        >>> history = xferclass.fine_tune(model, train, val, head_epochs=5,
        ...                               fine_tune_epochs=3, unfreeze=0.2)  # doctest: +SKIP
    """
    fine_tune_epochs = _renamed_epochs(epochs, fine_tune_epochs)
    rates = {"learning_rate": learning_rate, "head_learning_rate": head_learning_rate}
    _check_inputs(model, train, validation, fine_tune_epochs, rates, class_weight,
                  epochs_name="fine_tune_epochs")  # fmt: skip
    parts = split_classifier(model)
    if parts is None:
        raise InvalidArgumentError(
            "fine_tune needs a model made by build_classifier (it finds the backbone); "
            "use fit for other models"
        )
    if tap_widths(model) is not None:
        raise InvalidArgumentError(
            "fine_tune takes a model built with taps=False: one built with taps=True pools "
            "every block's output, and trains its head only (use fit)"
        )
    if isinstance(head_epochs, bool) or not isinstance(head_epochs, int) or head_epochs < 0:
        raise InvalidArgumentError(f"head_epochs={head_epochs!r} must be a non-negative int")
    first = _first_unfrozen(parts.backbone.layers, unfreeze)
    config = _config(locals())
    with scope(strategy_of(model, strategy)):
        spec = resolve_compile(
            model, optimizer=optimizer, loss=loss, metrics=metrics,
            label_smoothing=label_smoothing, jit_compile=jit_compile,
        )  # fmt: skip
    _record_training_files(model, train)
    cached = cache is not False
    phases = [
        Phase("head", "head" if cached else "whole", head_epochs, head_learning_rate, -1),
        Phase("fine-tune", "top" if cached else "whole", fine_tune_epochs, learning_rate, first),
    ]
    return run_phases(model, train, validation, phases, config, spec, parts)
