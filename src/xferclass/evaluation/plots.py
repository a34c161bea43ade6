"""Pictures of training and of a model's predictions, saved as image files.

Every function draws one figure with matplotlib's object-oriented API on the
non-interactive Agg canvas (no pyplot, no global backend switch, no windows),
writes it to ``path`` (PNG, or any other format matplotlib knows by the file
extension, such as ``.pdf`` or ``.svg``), creating missing parent folders, and
returns the path.

matplotlib is an optional dependency: ``pip install "xferclass[plots]"``.

Examples:
    >>> from xferclass.plots import plot_history, plot_confusion_matrix
    >>> history = xferclass.fine_tune(model, train, validation)  # doctest: +SKIP
    >>> plot_history(history, "runs/history.png")  # doctest: +SKIP
    PosixPath('runs/history.png')
    >>> plot_confusion_matrix(model, test, "runs/confusion.png")  # doctest: +SKIP
    PosixPath('runs/confusion.png')
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import keras
import numpy as np
import tensorflow as tf

from ..backbones.layers import without_unknown
from ..core._errors import (
    DatasetError,
    InvalidArgumentError,
    InvalidArgumentTypeError,
    MissingDependencyError,
)
from ..data._facts import class_names_of
from ..runtime._common import check_class_count, model_class_names, require_dataset

__all__ = [
    "TopLoss",
    "confusion_matrix",
    "overlay_heatmap",
    "plot_confusion_matrix",
    "plot_explanations",
    "plot_history",
    "plot_predictions",
    "plot_reliability",
    "plot_top_losses",
]

_INSTALL_HINT = 'pip install "xferclass[plots]"'
_RIGHT = "#1a7f37"  # green
_WRONG = "#cf222e"  # red
# Probabilities are clipped here before the log. Keras clips at 1e-7, which caps
# every loss at 16.1 and ties the most confident mistakes; float32's smallest
# normal number keeps them apart (up to a loss of about 87.3).
_EPSILON = float(np.finfo(np.float32).tiny)
_NAME_WIDTH = 18  # longer class names are shortened in image grids


class TopLoss(NamedTuple):
    """One image picked by :func:`plot_top_losses`.

    Attributes:
        index: Position of the image in the order the dataset yielded it in
            that pass (0 is the first image of the first batch).
        loss: Its categorical cross-entropy, ``-log(p[true])``, with ``p``
            clipped at float32's smallest normal number (~1.2e-38) rather than
            Keras's 1e-7, so the most confident mistakes do not all tie at 16.1.
        true: Its true class name.
        predicted: The class name the model gave the highest probability.
    """

    index: int  # type: ignore[assignment]  # shadows tuple.index, as intended
    loss: float
    true: str
    predicted: str


def _matplotlib() -> tuple[Any, Any]:
    """Import matplotlib's ``Figure`` and Agg canvas, or explain how to install them."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as error:
        raise MissingDependencyError(
            f"xferclass.plots needs matplotlib, an optional dependency: {_INSTALL_HINT}"
        ) from error
    return Figure, FigureCanvasAgg


def _output_path(path: str | os.PathLike[str], canvas: Any) -> Path:
    """Check that matplotlib can write ``path``'s format before any work is done."""
    target = Path(os.fspath(path))
    suffix = target.suffix.lower().lstrip(".")
    formats = canvas.get_supported_filetypes()
    if suffix not in formats:
        what = f"extension {target.suffix!r}" if suffix else "no file extension"
        raise InvalidArgumentError(
            f"path={os.fspath(path)!r} has {what}; end it in .png or another format "
            f"matplotlib writes: {', '.join(sorted(formats))}"
        )
    return target


def _new_figure(width: float, height: float) -> Any:
    figure_class, canvas_class = _matplotlib()
    figure = figure_class(figsize=(width, height), layout="constrained")
    canvas_class(figure)  # attaches itself as figure.canvas
    return figure


def _save(figure: Any, target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        figure.savefig(target, dpi=100)
    finally:
        figure.clear()  # frees the artists now; no pyplot figure manager holds it
    return target


def _resolve_class_names(
    count: int,
    class_names: Sequence[str] | None,
    dataset: Any = None,
    model: keras.Model | None = None,
) -> list[str]:
    """Class names from the argument, the dataset, the model, or else the indices."""
    if class_names is not None:
        names, source = [str(name) for name in class_names], "class_names"
    elif (known := class_names_of(dataset)) is not None:
        names, source = known, "dataset.class_names"
    elif model is not None and (stored := model_class_names(model)) is not None:
        names, source = list(stored), "the model's class names"
    else:
        return [str(i) for i in range(count)]
    if len(names) != count:
        raise DatasetError(f"{source} has {len(names)} names but there are {count} classes")
    return names


def _as_indices(values: Any, argument: str) -> tuple[np.ndarray, int | None]:
    """Class indices from one-hot/probability rows ``(n, k)`` or from indices ``(n,)``."""
    array = np.asarray(values)
    if array.ndim == 2:
        if array.shape[1] < 1:
            raise InvalidArgumentError(
                f"{argument} has shape {array.shape}; it needs at least one class"
            )
        return np.argmax(array, axis=1), int(array.shape[1])
    if array.ndim == 1:
        if array.size and (
            not np.issubdtype(array.dtype, np.number)
            or not np.all(np.mod(array, 1) == 0)
            or array.min() < 0
        ):
            raise InvalidArgumentError(
                f"{argument} given as a vector must hold class indices (ints >= 0)"
            )
        return array.astype(np.int64), None
    raise InvalidArgumentError(
        f"{argument} has shape {array.shape}; pass (n, classes) one-hot labels or "
        "probabilities, or (n,) class indices"
    )


def confusion_matrix(
    labels: Any, probabilities: Any, *, num_classes: int | None = None
) -> np.ndarray:
    """Count how often each true class was predicted as each class.

    Args:
        labels: True classes: one-hot rows ``(n, k)`` or indices ``(n,)``.
        probabilities: Predictions: probability rows ``(n, k)`` (the top class
            counts) or predicted indices ``(n,)``.
        num_classes: ``k``; needed only when both arguments are index vectors
            and some class never occurs (it defaults to the largest index + 1).

    Returns:
        An int64 array ``(k, k)``; row ``i``, column ``j`` counts the samples of
        true class ``i`` predicted as ``j`` (scikit-learn's layout).

    Raises:
        ValueError: The shapes disagree or an index is out of range.

    Examples:
        >>> import numpy as np
        >>> from xferclass.plots import confusion_matrix
        >>> labels = np.eye(3)[[0, 0, 1, 2]]
        >>> probabilities = np.array(
        ...     [[0.9, 0.1, 0.0], [0.2, 0.7, 0.1], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4]]
        ... )
        >>> confusion_matrix(labels, probabilities)
        array([[1, 1, 0],
               [0, 1, 0],
               [0, 0, 1]])
    """
    true, true_width = _as_indices(labels, "labels")
    predicted, predicted_width = _as_indices(probabilities, "probabilities")
    if true.shape != predicted.shape:
        raise InvalidArgumentError(
            f"labels has {true.shape[0]} samples but probabilities has {predicted.shape[0]}"
        )
    widths = {w for w in (true_width, predicted_width, num_classes) if w is not None}
    if len(widths) > 1:
        raise InvalidArgumentError(
            f"the class counts disagree: labels {true_width}, probabilities "
            f"{predicted_width}, num_classes {num_classes}"
        )
    if widths:
        count = widths.pop()
    else:
        count = int(max(true.max(initial=-1), predicted.max(initial=-1))) + 1
    if count < 1:
        raise InvalidArgumentError("there are no samples and no num_classes to size the matrix")
    if true.size and max(true.max(), predicted.max()) >= count:
        raise InvalidArgumentError(f"a class index is out of range for {count} classes")
    flat = np.bincount(true * count + predicted, minlength=count * count)
    return flat.reshape(count, count).astype(np.int64)


def _history_dict(history: Any) -> dict[str, list[float]]:
    record = getattr(history, "history", history)
    if not isinstance(record, Mapping):
        raise InvalidArgumentTypeError(
            f"history must be a keras History or its .history dict; got {type(history).__name__}"
        )
    if not record.get("loss"):
        raise InvalidArgumentError(
            f"history has no 'loss' values to plot (its keys are {sorted(record)}); "
            "pass what fit or fine_tune returned"
        )
    return {str(key): [float(v) for v in values] for key, values in record.items()}


def _accuracy_key(record: Mapping[str, Any]) -> str | None:
    for key in ("accuracy", "categorical_accuracy", "acc"):
        if key in record:
            return key
    others = [
        key
        for key in record
        if not key.startswith("val_") and key not in ("loss", "phase", "learning_rate", "lr")
    ]
    return others[0] if others else None


def plot_reliability(
    labels: Any, probabilities: Any, path: str | os.PathLike[str], *, bins: int = 15
) -> Path:
    """Draw a reliability diagram: for each bin of the top probability, the accuracy of
    its images (bars) against the diagonal a calibrated model would reach, and below,
    how many images fall in each bin. The title gives the expected calibration error.

    Args:
        labels: Integer classes, or one-hot rows, of a single-label classifier's images.
        probabilities: Its ``(images, classes)`` probabilities.
        path: Where to write the picture; its extension picks the format.
        bins: Equal-width bins of the top probability.

    Returns:
        ``path``, as a ``pathlib.Path``.

    Raises:
        ImportError: matplotlib is not installed.
        InvalidArgumentError: The shapes do not match, or ``bins`` is not positive.

    Examples:
        >>> from xferclass.plots import plot_reliability
        >>> plot_reliability(labels, probabilities, "reliability.png")  # doctest: +SKIP
        PosixPath('reliability.png')
    """
    from ..training._calibration import expected_calibration_error, reliability_bins

    counts, accuracy, confidence = reliability_bins(labels, probabilities, bins)
    ece = expected_calibration_error(labels, probabilities, bins)
    figure = _new_figure(5.0, 5.5)
    target = _output_path(path, figure.canvas)
    top, bottom = figure.subplots(2, 1, height_ratios=[3, 1], sharex=True)
    edges = np.linspace(0.0, 1.0, bins + 1)
    width = 1.0 / bins
    filled = counts > 0
    top.bar(edges[:-1][filled], accuracy[filled], width=width, align="edge",
            color="#4c72b0", edgecolor="white", label="accuracy")  # fmt: skip
    top.plot(edges[:-1][filled] + width / 2, confidence[filled], "o", color="#dd8452",
             markersize=4, label="mean top probability")  # fmt: skip
    top.plot([0, 1], [0, 1], "--", color="gray", linewidth=1, label="calibrated")
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.set_ylabel("accuracy")
    top.set_title(f"Reliability: ECE {ece:.3f} ({int(counts.sum())} images, {bins} bins)")
    top.legend(loc="upper left", fontsize=8)
    bottom.bar(edges[:-1], counts, width=width, align="edge", color="#8c8c8c")
    bottom.set_xlabel("top probability")
    bottom.set_ylabel("images")
    return _save(figure, target)


def plot_history(history: Any, path: str | os.PathLike[str]) -> Path:
    """Draw the training curves: loss and accuracy, training and validation.

    Args:
        history: The ``keras.callbacks.History`` that :func:`xferclass.fit` or
            :func:`xferclass.fine_tune` returns, or its ``.history`` dict. When
            the dict has a ``"phase"`` entry (as fine_tune's has), a dashed
            line marks the epoch where phase 2 (fine-tuning) starts.
        path: Where to write the picture; its extension picks the format.

    Returns:
        ``path``, as a ``pathlib.Path``.

    Raises:
        ImportError: matplotlib is not installed.
        ValueError: The history has no ``"loss"``, or ``path`` has an
            extension matplotlib cannot write.

    Examples:
        >>> from xferclass.plots import plot_history
        >>> history = {"loss": [1.0, 0.6, 0.4], "val_loss": [1.1, 0.8, 0.7],
        ...            "accuracy": [0.5, 0.7, 0.8], "val_accuracy": [0.4, 0.6, 0.7],
        ...            "phase": [1.0, 2.0, 2.0]}
        >>> plot_history(history, "history.png")  # doctest: +SKIP
        PosixPath('history.png')
    """
    _, canvas = _matplotlib()
    target = _output_path(path, canvas)
    record = _history_dict(history)
    epochs = np.arange(1, len(record["loss"]) + 1)
    phases = record.get("phase", [])
    second = [i for i, phase in enumerate(phases) if phase >= 2]
    phase_two = second[0] if second and second[0] > 0 else None
    accuracy = _accuracy_key(record)

    figure = _new_figure(11, 4.2)
    loss_axes, accuracy_axes = figure.subplots(1, 2)
    panels = [(loss_axes, "loss", "Loss"), (accuracy_axes, accuracy, "Accuracy")]
    for axes, key, title in panels:
        if key is None:
            axes.text(
                0.5, 0.5, "no accuracy recorded", ha="center", va="center", transform=axes.transAxes
            )
            axes.set_axis_off()
            continue
        axes.plot(epochs, record[key][: len(epochs)], "o-", markersize=3, label="training")
        if f"val_{key}" in record:
            values = record[f"val_{key}"][: len(epochs)]
            axes.plot(epochs[: len(values)], values, "o-", markersize=3, label="validation")
        if phase_two is not None:
            axes.axvline(
                phase_two + 0.5,
                color="0.4",
                linestyle="--",
                linewidth=1,
                label="fine-tuning starts",
            )
        axes.set_title(title if key in ("loss", "accuracy") else key)
        axes.set_xlabel("epoch")
        axes.grid(alpha=0.3)
        axes.xaxis.get_major_locator().set_params(integer=True)
        axes.legend()
    return _save(figure, target)


def _shorten(name: str, width: int = _NAME_WIDTH) -> str:
    return name if len(name) <= width else name[: width - 1] + "\u2026"


def plot_confusion_matrix(
    model_or_predictions: keras.Model | tuple[Any, Any],
    dataset: tf.data.Dataset | None,
    path: str | os.PathLike[str],
    *,
    class_names: Sequence[str] | None = None,
    normalize: bool = False,
) -> Path:
    """Draw the confusion matrix, with the counts in its cells.

    Rows are the true classes, columns the predicted ones; the title gives the
    accuracy.

    Args:
        model_or_predictions: A classifier, run once over ``dataset`` (through
            :func:`xferclass.metrics.collect_predictions`), or precomputed
            ``(labels, probabilities)``, e.g. what ``collect_predictions``
            returns; see :func:`confusion_matrix` for the shapes accepted.
        dataset: ``(images, one-hot labels)`` batches; may be ``None`` when
            predictions are given (it then only supplies class names).
        path: Where to write the picture; its extension picks the format.
        class_names: Names for the axes; default ``dataset.class_names``, then
            the names stored in the model, then the class indices.
        normalize: Show each row as fractions of its true class (per-class
            recall) instead of counts.

    Returns:
        ``path``, as a ``pathlib.Path``.

    Raises:
        ImportError: matplotlib is not installed.
        DatasetError: The number of class names differs from the number of
            classes, or the dataset is empty.
        ValueError: ``path`` has an extension matplotlib cannot write.

    Examples:
        >>> from xferclass.plots import plot_confusion_matrix
        >>> plot_confusion_matrix(model, test, "confusion.png")  # doctest: +SKIP
        PosixPath('confusion.png')
        >>> from xferclass.metrics import collect_predictions
        >>> labels, probabilities = collect_predictions(model, test)  # doctest: +SKIP
        >>> plot_confusion_matrix((labels, probabilities), test, "confusion.pdf",
        ...                       normalize=True)  # doctest: +SKIP
        PosixPath('confusion.pdf')
    """
    from .metrics import collect_predictions

    _, canvas = _matplotlib()
    target = _output_path(path, canvas)
    model: keras.Model | None = None
    if isinstance(model_or_predictions, keras.Model):
        model = model_or_predictions
        if dataset is None:
            raise DatasetError("dataset is None; pass the dataset to run the model over")
        labels, probabilities = collect_predictions(model, dataset)
    elif isinstance(model_or_predictions, (tuple, list)) and len(model_or_predictions) == 2:
        labels, probabilities = model_or_predictions
    else:
        raise InvalidArgumentTypeError(
            "model_or_predictions must be a keras.Model or a (labels, probabilities) pair; "
            f"got {type(model_or_predictions).__name__}"
        )
    known = class_names if class_names is not None else class_names_of(dataset)
    both_indices = np.ndim(labels) == 1 and np.ndim(probabilities) == 1
    count = len(known) if both_indices and known is not None else None
    matrix = confusion_matrix(labels, probabilities, num_classes=count)
    count = matrix.shape[0]
    names = [_shorten(n, 24) for n in _resolve_class_names(count, class_names, dataset, model)]
    total = int(matrix.sum())
    accuracy = float(np.trace(matrix)) / total if total else float("nan")
    if normalize:
        rows = matrix.sum(axis=1, keepdims=True)
        shown = np.divide(matrix, rows, out=np.zeros(matrix.shape), where=rows > 0)
    else:
        shown = matrix.astype(np.float64)

    side = min(max(5.0, 0.55 * count + 3.0), 30.0)
    figure = _new_figure(side + 1.0, side)
    axes = figure.subplots()
    image = axes.imshow(shown, cmap="Blues", vmin=0, vmax=1 if normalize else None)
    colorbar = figure.colorbar(image, ax=axes, fraction=0.046, pad=0.02)
    if not normalize:
        from matplotlib.ticker import MaxNLocator

        colorbar.locator = MaxNLocator(integer=True)  # counts: no 2.5 ticks
    ticks = np.arange(count)
    slanted = count > 2
    axes.set_xticks(
        ticks,
        names,
        rotation=45 if slanted else 0,
        ha="right" if slanted else "center",
        rotation_mode="anchor",
    )
    axes.set_yticks(ticks, names)
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    kind = "rows normalized, " if normalize else ""
    axes.set_title(f"Confusion matrix ({kind}n={total}): accuracy {accuracy:.1%}")
    if count <= 40:
        size = 10 if count <= 10 else 8 if count <= 20 else 6
        threshold = image.norm.vmax / 2  # white on the darker half of the colour scale
        for i in range(count):
            for j in range(count):
                text = f"{shown[i, j]:.2f}" if normalize else f"{matrix[i, j]:d}"
                colour = "white" if shown[i, j] > threshold else "black"
                colour = colour if matrix[i, j] else "0.6"  # empty cells recede
                axes.text(j, i, text, ha="center", va="center", color=colour, fontsize=size)
    return _save(figure, target)


def _labelled_batches(dataset: Any) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    """Yield ``(images, one-hot labels or None)`` as numpy arrays, batch by batch."""
    if not isinstance(dataset, tf.data.Dataset):
        require_dataset(dataset, "dataset")  # raises with the usual message
    spec = dataset.element_spec
    labelled = isinstance(spec, tuple) and len(spec) >= 2
    image_spec = spec[0] if isinstance(spec, tuple) else spec
    if image_spec.shape.rank == 3:  # single images, not batches
        dataset = dataset.batch(32)
    for element in dataset:
        images = element[0] if isinstance(element, tuple) else element
        yield np.asarray(images), np.asarray(element[1]) if labelled else None


def _spread_over_classes(
    batches: Iterator[tuple[np.ndarray, np.ndarray | None]], n: int
) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    """Up to ``n`` images with their labels, taken in turn from each class.

    One pass over ``batches``. Round ``r`` of the selection takes the ``r``-th
    image of every class (in class order) that has one, until ``n`` are taken.
    With ``k`` classes seen, no class can give more than ``n - k + 1`` images to
    such a selection, so only that many are kept per class (and no more than
    ``n`` classes), which bounds memory by about ``n * n / 4`` images. Unlabelled
    batches give their first ``n`` images, batch by batch.
    """
    kept: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {}
    for x, y in batches:
        if y is None:  # no classes to spread over: the first n images
            taken = 0
            for first, _ in itertools.chain([(x, y)], batches):
                first = first[: n - taken]
                taken += len(first)
                yield first, None
                if taken >= n:
                    return
            return
        for image, label in zip(x, y):
            cls = int(np.argmax(label))
            if cls not in kept:
                if len(kept) >= n:
                    continue  # the grid is full with one image of each class kept
                kept[cls] = []
                quota = n - len(kept) + 1
                for rows in kept.values():
                    del rows[quota:]
            if len(kept[cls]) < n - len(kept) + 1:
                kept[cls].append((image.copy(), label.copy()))  # not a view of x
    chosen: list[tuple[np.ndarray, np.ndarray]] = []
    for turn in itertools.count():
        row = [kept[cls][turn] for cls in sorted(kept) if turn < len(kept[cls])]
        if not row:
            break
        chosen.extend(row[: n - len(chosen)])
        if len(chosen) >= n:
            break
    if chosen:
        yield np.stack([image for image, _ in chosen]), np.stack([label for _, label in chosen])


def _displayable(image: np.ndarray) -> tuple[np.ndarray, str | None]:
    """An image in [0, 255] as uint8 for imshow, with a grey colormap for one channel."""
    pixels = np.clip(np.rint(np.asarray(image, dtype=np.float64)), 0, 255).astype(np.uint8)
    if pixels.ndim == 3 and pixels.shape[-1] == 1:
        return pixels[..., 0], "gray"
    if pixels.ndim == 3 and pixels.shape[-1] == 4:
        return pixels[..., :3], None
    return pixels, None


def _image_grid(
    images: Sequence[np.ndarray],
    titles: Sequence[str],
    colours: Sequence[str],
    suptitle: str,
    target: Path,
    *,
    cell_height: float = 2.6,
) -> Path:
    count = len(images)
    columns = max(1, min(count, math.ceil(math.sqrt(count))))
    rows = max(1, math.ceil(count / columns))
    figure = _new_figure(max(2.4 * columns, 4.0), cell_height * rows + 0.5)
    grid = np.atleast_1d(figure.subplots(rows, columns, squeeze=False)).ravel()
    for axes in grid:
        axes.set_axis_off()
    for axes, image, title, colour in zip(grid[:count], images, titles, colours, strict=True):
        pixels, cmap = _displayable(image)
        axes.imshow(pixels, cmap=cmap, vmin=0, vmax=255)
        axes.set_title(title, color=colour, fontsize=9)
    figure.suptitle(suptitle)
    return _save(figure, target)


def _probability(value: float) -> str:
    """Two decimals, or a power of ten when that would round to 0.00."""
    return f"{value:.2f}" if value >= 0.005 else f"{value:.0e}"


def _check_count(n: int, argument: str = "n") -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InvalidArgumentError(f"{argument}={n!r} must be a positive int")
    return n


def plot_predictions(
    model: keras.Model,
    dataset: tf.data.Dataset,
    path: str | os.PathLike[str],
    n: int = 16,
    *,
    class_names: Sequence[str] | None = None,
) -> Path:
    """Draw ``n`` images, spread over the classes, with the model's prediction for each.

    Each image is titled with the predicted class and its probability, and the
    true class below, in green when the prediction is right and red when wrong.
    The images of a labelled dataset are taken in turn from each class (the
    first images of each, in class order), so a split read class by class, as
    ``load_image_dataset(..., shuffle=False)`` reads it, still shows every class
    while ``n`` allows. A dataset of images alone (no labels) gives its first
    ``n`` images, with titles without a true class.

    Args:
        model: A classifier with a softmax output.
        dataset: ``(images, one-hot labels)`` batches with pixels in [0, 255],
            e.g. from :func:`xferclass.load_image_dataset`. A labelled dataset is
            read once, whole, keeping at most about ``n * n / 4`` images in memory;
            of an unlabelled one only the batches holding the first ``n`` images.
        path: Where to write the picture; its extension picks the format.
        n: How many images to show.
        class_names: Names of the classes; default ``dataset.class_names``,
            then the names stored in the model, then the class indices.

    Returns:
        ``path``, as a ``pathlib.Path``.

    Raises:
        ImportError: matplotlib is not installed.
        DatasetError: The dataset is empty, is not ``(images, labels)``
            batches, or its classes do not match the model's outputs.
        ValueError: ``n`` is not positive, or ``path`` has an extension
            matplotlib cannot write.

    Examples:
        >>> from xferclass.plots import plot_predictions
        >>> plot_predictions(model, test, "predictions.png", n=9)  # doctest: +SKIP
        PosixPath('predictions.png')
    """
    _, canvas = _matplotlib()
    target = _output_path(path, canvas)
    _check_count(n)
    model = without_unknown(model)
    if isinstance(getattr(dataset, "element_spec", None), tuple):
        require_dataset(dataset, "dataset")
        check_class_count(model, dataset, "dataset")
    names = _resolve_class_names(int(model.output_shape[-1]), class_names, dataset, model)
    images: list[np.ndarray] = []
    titles: list[str] = []
    colours: list[str] = []
    right = 0
    for x, y in _spread_over_classes(_labelled_batches(dataset), n):
        probabilities = np.asarray(model.predict_on_batch(np.asarray(x)), dtype=np.float64)
        predicted = np.argmax(probabilities, axis=1)
        for row, image in enumerate(x):
            guess = int(predicted[row])
            title = f"{_shorten(names[guess])} ({probabilities[row, guess]:.0%})"
            colour = "black"
            if y is not None:
                true = int(np.argmax(y[row]))
                title += f"\ntrue: {_shorten(names[true])}"
                colour = _RIGHT if guess == true else _WRONG
                right += guess == true
            images.append(image)
            titles.append(title)
            colours.append(colour)
        if len(images) >= n:
            break
    if not images:
        raise DatasetError("dataset is empty: there is nothing to predict")
    labelled = any(colour != "black" for colour in colours)
    summary = f"{right} of {len(images)} right" if labelled else f"{len(images)} images"
    return _image_grid(images, titles, colours, f"Predictions: {summary}", target)


def plot_top_losses(
    model: keras.Model,
    dataset: tf.data.Dataset,
    path: str | os.PathLike[str],
    n: int = 9,
    *,
    class_names: Sequence[str] | None = None,
) -> tuple[Path, list[TopLoss]]:
    """Draw the ``n`` images the model got most confidently wrong.

    The model runs once over the whole dataset; the images with the largest
    categorical cross-entropy, ``-log(p[true class])``, are shown, largest
    first, each with the predicted class and probability, the true class and
    the probability given to it, and the loss. Only the current top ``n``
    images are kept in memory. When fewer than ``n`` images are wrong, the
    least confident right ones fill the grid (shown in green).

    Args:
        model: A classifier with a softmax output.
        dataset: ``(images, one-hot labels)`` batches with pixels in [0, 255].
        path: Where to write the picture; its extension picks the format.
        n: How many images to show.
        class_names: Names of the classes; default ``dataset.class_names``,
            then the names stored in the model, then the class indices.

    Returns:
        ``(path, top_losses)``: the ``pathlib.Path`` written and a list of
        :class:`TopLoss` ``(index, loss, true, predicted)``, largest loss
        first; ``index`` counts images in the order this pass read them (with
        a dataset that reshuffles every epoch, another pass orders them
        differently). Ties go to the earlier image.

    Raises:
        ImportError: matplotlib is not installed.
        DatasetError: The dataset is empty, is not ``(images, labels)``
            batches, or its classes do not match the model's outputs.
        ValueError: ``n`` is not positive, or ``path`` has an extension
            matplotlib cannot write.

    Examples:
        >>> from xferclass.plots import plot_top_losses
        >>> path, worst = plot_top_losses(model, test, "top_losses.png")  # doctest: +SKIP
        >>> worst[0]  # doctest: +SKIP
        TopLoss(index=41, loss=5.37, true='pants', predicted='shorts')
    """
    _, canvas = _matplotlib()
    target = _output_path(path, canvas)
    _check_count(n)
    model = without_unknown(model)
    require_dataset(dataset, "dataset")
    check_class_count(model, dataset, "dataset")
    names = _resolve_class_names(int(model.output_shape[-1]), class_names, dataset, model)
    kept_index = np.zeros(0, dtype=np.int64)
    kept_loss = np.zeros(0, dtype=np.float64)
    kept_probabilities: np.ndarray | None = None
    kept_labels: np.ndarray | None = None
    kept_images: np.ndarray | None = None
    seen = wrong = 0
    for x, y in _labelled_batches(dataset):
        assert y is not None
        probabilities = np.asarray(model.predict_on_batch(np.asarray(x)), dtype=np.float64)
        labels = np.asarray(y, dtype=np.float64)
        loss = -np.sum(labels * np.log(np.clip(probabilities, _EPSILON, 1.0)), axis=1)
        index = np.arange(seen, seen + len(loss))
        wrong += int(np.sum(np.argmax(labels, axis=1) != np.argmax(probabilities, axis=1)))
        seen += len(loss)
        if kept_images is None:
            kept_probabilities, kept_labels, kept_images = probabilities[:0], labels[:0], x[:0]
        assert kept_probabilities is not None and kept_labels is not None
        all_index = np.concatenate([kept_index, index])
        all_loss = np.concatenate([kept_loss, loss])
        order = np.lexsort((all_index, -all_loss))[:n]  # largest loss, then earliest
        kept_index, kept_loss = all_index[order], all_loss[order]
        kept_probabilities = np.concatenate([kept_probabilities, probabilities])[order]
        kept_labels = np.concatenate([kept_labels, labels])[order]
        kept_images = np.concatenate([kept_images, x])[order]
    if kept_images is None or seen == 0:
        raise DatasetError("dataset is empty: there is nothing to evaluate")
    assert kept_probabilities is not None and kept_labels is not None

    worst: list[TopLoss] = []
    titles: list[str] = []
    colours: list[str] = []
    for i in range(len(kept_index)):
        true = int(np.argmax(kept_labels[i]))
        guess = int(np.argmax(kept_probabilities[i]))
        worst.append(TopLoss(int(kept_index[i]), float(kept_loss[i]), names[true], names[guess]))
        titles.append(
            f"pred: {_shorten(names[guess])} ({_probability(kept_probabilities[i, guess])})\n"
            f"true: {_shorten(names[true])} ({_probability(kept_probabilities[i, true])})\n"
            f"loss {kept_loss[i]:.2f}"
        )
        colours.append(_RIGHT if guess == true else _WRONG)
    suptitle = f"Top {len(worst)} losses: {wrong} of {seen} images are wrong"
    path_written = _image_grid(
        list(kept_images), titles, colours, suptitle, target, cell_height=2.9
    )
    return path_written, worst


def overlay_heatmap(
    image: Any, heatmap: Any, *, alpha: float = 0.45, cmap: str = "jet"
) -> np.ndarray:
    """Blend a heatmap in [0, 1] over an RGB image in [0, 255].

    Args:
        image: ``(height, width, 3)`` pixels in [0, 255] (or one channel).
        heatmap: ``(height, width)`` values in [0, 1], e.g. from
            :func:`xferclass.explain`.
        alpha: Weight of the coloured heatmap, in [0, 1].
        cmap: A matplotlib colormap name.

    Returns:
        The blend as a uint8 ``(height, width, 3)`` array.

    Raises:
        ImportError: matplotlib is not installed.
        ValueError: The shapes disagree or ``alpha`` is outside [0, 1].

    Examples:
        >>> import numpy as np
        >>> overlay_heatmap(np.zeros((4, 4, 3)), np.ones((4, 4))).shape
        (4, 4, 3)
    """
    _matplotlib()
    from matplotlib import colormaps

    if not 0.0 <= float(alpha) <= 1.0:
        raise InvalidArgumentError(f"alpha={alpha!r} must be in [0, 1]")
    pixels = np.asarray(image, dtype=np.float64)
    if pixels.ndim == 2 or (pixels.ndim == 3 and pixels.shape[-1] == 1):
        pixels = np.repeat(pixels.reshape(*pixels.shape[:2], 1), 3, axis=-1)
    heat = np.clip(np.asarray(heatmap, dtype=np.float64), 0.0, 1.0)
    if pixels.ndim != 3 or pixels.shape[:2] != heat.shape:
        raise InvalidArgumentError(
            f"image {pixels.shape} and heatmap {heat.shape} must share height and width"
        )
    colours = colormaps[cmap](heat)[..., :3] * 255.0
    blend = (1.0 - alpha) * np.clip(pixels[..., :3], 0, 255) + alpha * colours
    return np.clip(np.rint(blend), 0, 255).astype(np.uint8)


def plot_explanations(
    images: Any,
    heatmaps: Any,
    path: str | os.PathLike[str],
    *,
    titles: Sequence[str] | None = None,
    alpha: float = 0.45,
    suptitle: str = "Grad-CAM",
) -> Path:
    """Draw each image with its heatmap laid over it, in a grid.

    Args:
        images: ``(n, height, width, 3)`` pixels in [0, 255].
        heatmaps: ``(n, height, width)`` in [0, 1], from :func:`xferclass.explain`.
        path: Where to write the picture; its extension picks the format.
        titles: One title per image (default none).
        alpha: Weight of the heatmap in the blend.
        suptitle: The figure's title.

    Returns:
        The ``pathlib.Path`` written.

    Raises:
        ImportError: matplotlib is not installed.
        ValueError: The counts or shapes disagree, or ``path`` has an
            extension matplotlib cannot write.

    Examples:
        >>> import xferclass
        >>> from xferclass.plots import plot_explanations
        >>> maps = xferclass.explain(model, images)  # doctest: +SKIP
        >>> plot_explanations(images, maps, "gradcam.png")  # doctest: +SKIP
        PosixPath('gradcam.png')
    """
    _, canvas = _matplotlib()
    target = _output_path(path, canvas)
    pixels, heat = np.asarray(images), np.asarray(heatmaps)
    if pixels.ndim == 3 and heat.ndim == 2:
        pixels, heat = pixels[None], heat[None]
    if len(pixels) != len(heat) or len(pixels) == 0:
        raise InvalidArgumentError(
            f"images ({len(pixels)}) and heatmaps ({len(heat)}) must be as many, at least one"
        )
    names = [""] * len(pixels) if titles is None else [str(t) for t in titles]
    if len(names) != len(pixels):
        raise InvalidArgumentError(f"titles has {len(names)} entries for {len(pixels)} images")
    blends = [overlay_heatmap(p, h, alpha=alpha) for p, h in zip(pixels, heat)]
    return _image_grid(blends, names, ["black"] * len(blends), suptitle, target)
