"""One self-contained HTML page about a trained classifier on labelled images.

The page holds the metrics and the per-class table, the confusion matrix, the
images with the largest losses next to their Grad-CAM heatmaps, the training
history (when given or stored in the model), the automatic recipe's report
(when the model was made by :func:`xferclass.train_auto`) and, on request, the
findings of :func:`xferclass.inspect`. When the model records the files it
trained on, a banner at the top says how many of the scored images those were:
such scores are not held out. For a multi-label model (sigmoid outputs) the
numbers are those of label sets at the model's threshold: micro- and macro-F1,
mean average precision, exact-match accuracy, a per-class table of label
presence, the decisions per class in place of the confusion matrix, and top
losses by binary cross-entropy; an image with no label counts as "no label
present" for every class. Every image is inlined as a base64
``data:`` URI: the page needs no other file, no network and no JavaScript, and
its CSS reflows for a phone's screen.

matplotlib is needed: ``pip install "xferclass[plots]"``.

Examples:
    >>> from xferclass.report import write_report
    >>> write_report("model.keras", "clothes/test", "report.html")  # doctest: +SKIP
    PosixPath('report.html')
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..core._errors import InvalidArgumentError, InvalidArgumentTypeError

__all__ = ["write_explanations", "write_report"]

_EPSILON = float(np.finfo(np.float32).tiny)
#: Keras' clip of probabilities in its binary cross-entropy.
_BCE_EPSILON = 1e-7

_STYLE = """
*{box-sizing:border-box}
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;
max-width:60rem;padding:1rem;line-height:1.45;color:#1f2328;background:#fff}
h1{font-size:1.6rem;margin:.2rem 0 1rem}h2{font-size:1.25rem;margin-top:2rem;
border-bottom:1px solid #d0d7de;padding-bottom:.2rem}
img{max-width:100%;height:auto}
.plot{display:block;max-width:min(100%,44rem)}
.scroll{overflow-x:auto}
table{border-collapse:collapse;font-size:.9rem;min-width:18rem}
th,td{border:1px solid #d0d7de;padding:.25rem .5rem;text-align:right}
th:first-child,td:first-child{text-align:left}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(15rem,1fr));gap:.8rem}
.card{border:1px solid #d0d7de;border-radius:6px;padding:.5rem;font-size:.85rem}
.pair{display:grid;grid-template-columns:1fr 1fr;gap:.3rem}
.pair img{width:100%;image-rendering:auto}
.wrong{color:#cf222e}.right{color:#1a7f37}
pre{white-space:pre-wrap;font-size:.8rem;background:#f6f8fa;padding:.5rem;border-radius:6px}
.metrics{display:flex;flex-wrap:wrap;gap:.5rem}
.metric{border:1px solid #d0d7de;border-radius:6px;padding:.3rem .6rem}
.banner{border:2px solid #cf222e;background:#ffebe9;border-radius:6px;padding:.6rem .8rem;
margin:0 0 1rem}
.headline{font-size:1.15rem;border:1px solid #1a7f37;background:#dafbe1;border-radius:6px;
padding:.5rem .8rem;margin:0 0 1rem}
.held-out{color:#1a7f37}
"""


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _png_of_array(pixels: np.ndarray) -> str:
    """An RGB uint8 array as a PNG data URI."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.asarray(pixels, dtype=np.uint8)).save(buffer, format="PNG")
    return _data_uri(buffer.getvalue())


def _png_of_plot(draw: Any) -> str:
    """Run ``draw(path)`` (a plots function writing a PNG) and inline the file."""
    with tempfile.TemporaryDirectory() as folder:
        target = Path(folder) / "figure.png"
        draw(target)
        return _data_uri(target.read_bytes())


def _img(uri: str, alt: str, css: str = "") -> str:
    extra = f' class="{css}"' if css else ""
    return f'<img src="{uri}" alt="{html.escape(alt)}"{extra}>'


def _table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_cell(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f'<div class="scroll"><table><tr>{head}</tr>{body}</table></div>'


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def _metrics_section(
    metrics: Mapping[str, Any], per_class: Mapping[str, Any], heading: str = "Metrics"
) -> str:
    shown = [
        f'<span class="metric">{html.escape(k)}: <b>{_cell(v)}</b></span>'
        for k, v in metrics.items()
        if isinstance(v, (int, float))
    ]
    rows = [
        [name, row["precision"], row["recall"], row["f1-score"], int(row["support"])]
        for name, row in per_class.items()
        if isinstance(row, Mapping)
    ]
    table = _table(["class", "precision", "recall", "F1", "support"], rows)
    return (
        f'<h2>{html.escape(heading)}</h2><div class="metrics">{"".join(shown)}</div>'
        f"<h3>Per class</h3>{table}"
    )


def _top_loss_images(dataset: Any, indices: np.ndarray) -> np.ndarray:
    """The images at ``indices`` (in reading order) of a second pass over ``dataset``."""
    wanted = {int(i): k for k, i in enumerate(indices)}
    found: list[Any] = [None] * len(indices)
    seen = 0
    for batch in dataset:
        images = np.asarray(batch[0])
        for j in range(len(images)):
            if seen + j in wanted:
                found[wanted[seen + j]] = images[j]
        seen += len(images)
        if all(image is not None for image in found):
            break
    return np.stack(found)


def _top_losses_section(
    model: Any,
    dataset: Any,
    labels: np.ndarray,
    probabilities: np.ndarray,
    names: list[str],
    n: int,
) -> str:
    from .explain import explain
    from .plots import overlay_heatmap

    truth, guess = labels.argmax(axis=1), probabilities.argmax(axis=1)
    losses = -np.log(np.clip(probabilities[np.arange(len(truth)), truth], _EPSILON, 1.0))
    order = np.lexsort((np.arange(len(losses)), -losses))[:n]
    images = _top_loss_images(dataset, order)
    heatmaps = explain(model, images, class_index=guess[order])
    cards = []
    for k, i in enumerate(order):
        state = "right" if guess[i] == truth[i] else "wrong"
        original = _img(_png_of_array(np.clip(np.rint(images[k]), 0, 255)), f"image {i}")
        overlay = _img(_png_of_array(overlay_heatmap(images[k], heatmaps[k])), f"Grad-CAM {i}")
        cards.append(
            f'<div class="card"><div class="pair">{original}{overlay}</div>'
            f'<div class="{state}">predicted {html.escape(names[guess[i]])} '
            f"({probabilities[i, guess[i]]:.2f})</div>"
            f"<div>true {html.escape(names[truth[i]])} ({probabilities[i, truth[i]]:.2f}), "
            f"loss {losses[i]:.2f}</div></div>"
        )
    return (
        "<h2>Top losses</h2><p>The images the model got most confidently wrong, each beside "
        "its Grad-CAM heatmap for the predicted class.</p>"
        f'<div class="cards">{"".join(cards)}</div>'
    )


def _multilabel_numbers(
    labels: np.ndarray, probabilities: np.ndarray, names: list[str], threshold: float
) -> tuple[dict[str, Any], dict[str, Any], dict[str, float]]:
    """The metrics, per-class report and per-class average precision of label sets.

    A class is present where its label is 1 and predicted where its probability is
    at least ``threshold``; an image with no label is "no label present" for every
    class, as in scikit-learn's multi-label metrics. The top-class accuracy of
    :func:`~xferclass.metrics.regression_metrics` is left out: it would count an
    unlabelled image as class 0.
    """
    from .metrics import (
        _average_precision,
        multilabel_metrics,
        per_class_report,
        regression_metrics,
    )

    truth, predicted = labels > 0.5, probabilities >= threshold
    regression: dict[str, Any] = dict(regression_metrics(labels, probabilities))
    del regression["accuracy"]
    metrics: dict[str, Any] = {
        "subset_accuracy": float(np.mean(np.all(truth == predicted, axis=1))),
        **multilabel_metrics(labels, probabilities, threshold=threshold),
        "label_cardinality": float(truth.sum(axis=1).mean()),
        "predicted_label_cardinality": float(predicted.sum(axis=1).mean()),
        "images_without_labels": int(np.sum(~truth.any(axis=1))),
        **regression,
    }
    per_class = per_class_report(
        labels, probabilities, names, multi_label=True, threshold=threshold
    )
    precision = {
        name: _average_precision(truth[:, j].astype(np.float64), probabilities[:, j])
        for j, name in enumerate(names)
    }
    return metrics, per_class, precision


def _multilabel_metrics_section(
    metrics: Mapping[str, Any],
    per_class: Mapping[str, Any],
    precision: Mapping[str, float],
    heading: str,
) -> str:
    shown = [
        f'<span class="metric">{html.escape(k)}: <b>{_cell(v)}</b></span>'
        for k, v in metrics.items()
        if isinstance(v, (int, float))
    ]
    averages = {"macro avg": metrics["mean_average_precision"]}
    rows = [
        [
            name, row["precision"], row["recall"], row["f1-score"],
            precision.get(name, averages.get(name, "")), int(row["support"]),
        ]
        for name, row in per_class.items()
        if isinstance(row, Mapping)
    ]  # fmt: skip
    table = _table(["class", "precision", "recall", "F1", "AP", "support"], rows)
    note = (
        f"<p>Multi-label: a class counts as predicted where its probability is at least "
        f"{metrics['threshold']:g}. subset_accuracy is the share of images whose predicted "
        "label set is exactly their label set. An image with no label counts as "
        '"no label present" for every class (a match when nothing is predicted for it); '
        f"{metrics['images_without_labels']} of the {metrics['n']} images have none. "
        "AP is the area under a class's precision-recall curve (0 for a class without "
        "labelled images); mean_average_precision is its mean over the classes.</p>"
    )
    return (
        f'<h2>{html.escape(heading)}</h2>{note}<div class="metrics">{"".join(shown)}</div>'
        f"<h3>Per class</h3><p>Support: the images labelled with the class.</p>{table}"
    )


def _decisions_section(
    labels: np.ndarray, probabilities: np.ndarray, names: list[str], threshold: float
) -> str:
    """The multi-label page's stand-in for the confusion matrix: each class's decisions."""
    truth, predicted = labels > 0.5, probabilities >= threshold
    rows = []
    for j, name in enumerate(names):
        positive, chosen = truth[:, j], predicted[:, j]
        rows.append([
            name, int(positive.sum()), int(chosen.sum()), int(np.sum(positive & chosen)),
            int(np.sum(~positive & chosen)), int(np.sum(positive & ~chosen)),
            int(np.sum(~positive & ~chosen)),
        ])  # fmt: skip
    header = [
        "class",
        "labelled",
        "predicted",
        "true pos.",
        "false pos.",
        "false neg.",
        "true neg.",
    ]
    unlabelled, silent = ~truth.any(axis=1), ~predicted.any(axis=1)
    return (
        "<h2>Label decisions</h2><p>A multi-label model has no confusion matrix: each class "
        f"is a yes-or-no decision (probability at least {threshold:g}), counted here over "
        f"all {len(labels)} images. {int(unlabelled.sum())} images have no label; the model "
        f"predicts no label for {int(silent.sum())} images, {int(np.sum(unlabelled & silent))} "
        f"of them among those without a label.</p>{_table(header, rows)}"
    )


def _label_list(names: list[str], probabilities: np.ndarray, chosen: np.ndarray, empty: str) -> str:
    found = [f"{names[j]} ({probabilities[j]:.2f})" for j in np.flatnonzero(chosen)]
    return html.escape(", ".join(found) if found else empty)


def _multilabel_top_losses_section(
    model: Any,
    dataset: Any,
    labels: np.ndarray,
    probabilities: np.ndarray,
    names: list[str],
    threshold: float,
    n: int,
) -> str:
    from .explain import explain
    from .plots import overlay_heatmap

    truth, predicted = labels > 0.5, probabilities >= threshold
    p = np.clip(probabilities.astype(np.float64), _BCE_EPSILON, 1.0 - _BCE_EPSILON)
    terms = -np.where(truth, np.log(p), np.log1p(-p))
    losses = terms.mean(axis=1)
    worst = terms.argmax(axis=1)
    order = np.lexsort((np.arange(len(losses)), -losses))[:n]
    images = _top_loss_images(dataset, order)
    heatmaps = explain(model, images, class_index=worst[order])
    cards = []
    for k, i in enumerate(order):
        state = "right" if np.array_equal(truth[i], predicted[i]) else "wrong"
        original = _img(_png_of_array(np.clip(np.rint(images[k]), 0, 255)), f"image {i}")
        overlay = _img(_png_of_array(overlay_heatmap(images[k], heatmaps[k])), f"Grad-CAM {i}")
        explained = "labelled" if truth[i, worst[i]] else "not labelled"
        cards.append(
            f'<div class="card"><div class="pair">{original}{overlay}</div>'
            f'<div class="{state}">predicted '
            f"{_label_list(names, probabilities[i], predicted[i], 'no label')}</div>"
            f"<div>true {_label_list(names, probabilities[i], truth[i], 'no label')}, "
            f"loss {losses[i]:.2f}</div>"
            f"<div>heatmap: {html.escape(names[worst[i]])} ({explained})</div></div>"
        )
    return (
        "<h2>Top losses</h2><p>The images with the largest binary cross-entropy (the mean "
        "over the classes), each beside its Grad-CAM heatmap for the class that adds most "
        "to that loss. Each class is shown with its probability.</p>"
        f'<div class="cards">{"".join(cards)}</div>'
    )


def _stored_history(model: Any) -> Any:
    from ..backbones.layers import preprocessing_layer

    layer = preprocessing_layer(model)
    return (getattr(layer, "metadata", None) or {}).get("history") if layer is not None else None


def _history_section(history: Any) -> str:
    from .plots import plot_history

    if history is None:
        return "<h2>Training history</h2><p>No training history was given or stored.</p>"
    uri = _png_of_plot(lambda path: plot_history(history, path))
    return f"<h2>Training history</h2>{_img(uri, 'training history', 'plot')}"


def _overlap_section(overlap: Mapping[str, Any] | None, estimate: Any) -> str:
    """The top of the page: the held-out headline and the banner when training images are
    scored; a quiet line when none is; nothing when the model records no training files."""
    from ..training._provenance import estimate_text, overlap_sentence

    if overlap is None:
        return ""
    sentence = html.escape(overlap_sentence(overlap))
    how = html.escape(str(overlap.get("how", "")))
    if not overlap["seen_in_training"]:
        return f'<p class="held-out">{sentence[:1].upper()}{sentence[1:]}. Checked by {how}.</p>'
    headline = ""
    if estimate is not None:
        headline = (
            f'<p class="headline">Held-out estimate: <b>{html.escape(estimate_text(estimate))}'
            "</b>, from the automatic recipe's cross-validation: the score to expect on new "
            "images.</p>"
        )
    return (
        f'{headline}<div class="banner" role="alert"><b>{sentence}.</b> The metrics below '
        "include images the model trained on; score it on images it did not train on for a "
        f"held-out measure. Checked by {how}.</div>"
    )


def _auto_section(model: Any) -> str:
    from ._auto_report import format_report, read_report

    found = read_report(model)
    if not found:
        return ""
    try:
        text = format_report(found)
    except (KeyError, TypeError, ValueError):
        text = repr(found)
    return f"<h2>Automatic recipe</h2><pre>{html.escape(text)}</pre>"


def _inspection_section(inspect: Any, data: Any, options: Mapping[str, Any]) -> str:
    if inspect is False or inspect is None:
        return ""
    found = inspect
    if inspect is True:
        from .inspection import inspect as run_inspection

        found = run_inspection(data, **dict(options))
    section = getattr(found, "html_section", None)
    if section is None:
        raise InvalidArgumentTypeError("inspect must be True, False or an xferclass.Inspection")
    return f"<h2>Data inspection</h2>{section()}"


def _load(model: Any, data: Any, batch_size: int) -> tuple[Any, Any]:
    import tensorflow as tf

    from ..backbones.layers import without_unknown
    from ..backbones.saving import load_model
    from ..data import load_image_dataset
    from ..runtime._common import model_class_names, model_multi_label

    if isinstance(model, (str, os.PathLike)):
        model = load_model(model)
    model = without_unknown(model)
    if isinstance(data, tf.data.Dataset):
        return model, data
    size = (int(model.input_shape[1]), int(model.input_shape[2]))
    options: dict[str, Any] = {}
    if model_multi_label(model)[0] and (stored := model_class_names(model)):
        # A table's classes are its labels in sorted order, and a test table may lack one.
        options["class_names"] = stored
    return model, load_image_dataset(data, size, batch_size=batch_size, shuffle=False, **options)


def _page(title: str, sections: list[str]) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body><h1>{html.escape(title)}</h1>{''.join(sections)}</body></html>\n"
    )


def write_report(
    model: Any,
    data: Any,
    path: str | os.PathLike[str],
    *,
    inspect: Any = False,
    inspect_options: Mapping[str, Any] | None = None,
    history: Any = None,
    top_losses: int = 12,
    batch_size: int = 32,
    title: str | None = None,
    json_path: str | os.PathLike[str] | None = None,
) -> Path:
    """Write one self-contained HTML page about ``model`` on ``data``.

    When the model records the files it trained on (models trained by
    :func:`xferclass.fit`, :func:`xferclass.fine_tune` or
    :func:`xferclass.train_auto`) and ``data``'s files are known, the page says
    how many of the scored images it trained on. If any, a banner at the top
    says that the scores are not held out, and the automatic recipe's held-out
    estimate, when the model has one, comes first as the headline.

    For a multi-label model (``build_classifier(..., multi_label=True)``) the
    page scores label sets at the model's threshold: the metrics are
    ``subset_accuracy`` (the share of images whose predicted label set is
    exactly their label set), :func:`xferclass.metrics.multilabel_metrics`
    (micro- and macro-F1, mean average precision), the mean numbers of true
    and predicted labels per image, the count of images without a label, and
    MAE, MSE, RMSE and R² (not the top-class accuracy). The per-class table
    counts label presence, with each class's average precision; a table of
    each class's decisions replaces the confusion matrix; the top losses are
    by binary cross-entropy, each with the heatmap of the class adding most to
    it. An image with no label is "no label present" for every class, as in
    scikit-learn's multi-label metrics. Data read from a table is read with the
    model's stored class names, in their order.

    Args:
        model: A classifier (``keras.Model``) or the path of a saved one.
        data: Labelled images: a folder of class subfolders (or anything
            :func:`xferclass.load_image_dataset` takes), read at the model's
            input size without shuffling, or a ``tf.data.Dataset`` of
            ``(images, one-hot labels)`` batches that reads the same order twice.
        path: Where to write the page.
        inspect: ``True`` runs :func:`xferclass.inspect` on ``data`` (with
            ``inspect_options``) and adds its findings; an
            :class:`xferclass.Inspection` already made is shown as it is.
        inspect_options: Keyword arguments of :func:`xferclass.inspect`.
        history: A Keras ``History`` or its ``.history`` dict; default the
            history stored in the model's metadata, if any.
        top_losses: How many of the worst images to show with their heatmaps.
        batch_size: Batch size when ``data`` is read from files.
        title: The page's title; default names the model.
        json_path: Also write the numbers as JSON there: ``metrics``,
            ``per_class``, ``training_overlap`` (``{"scored": n,
            "seen_in_training": k, ...}``, or null when the model records no
            training files) and ``held_out_estimate`` (the recipe's estimate when
            training images were scored, else null); for a multi-label model
            also ``"multi_label": true`` and ``average_precision`` (per class).

    Returns:
        The ``pathlib.Path`` written.

    Raises:
        ImportError: matplotlib is not installed.
        DatasetError: ``data`` is empty, unlabelled or has other classes, or
            one of its files cannot be read.
        ValueError: ``top_losses`` is not a positive int.

    Examples:
        >>> from xferclass.report import write_report
        >>> write_report(model, "clothes/test", "report.html")  # doctest: +SKIP
        PosixPath('report.html')
    """
    from ..data._facts import facts_of
    from ..runtime._common import model_multi_label
    from ..training._provenance import held_out_estimate, overlap_summary
    from .metrics import (
        calibration_metrics,
        collect_predictions,
        per_class_report,
        regression_metrics,
    )
    from .plots import _matplotlib, _resolve_class_names, plot_confusion_matrix, plot_reliability

    _matplotlib()
    if isinstance(top_losses, bool) or not isinstance(top_losses, int) or top_losses < 1:
        raise InvalidArgumentError(f"top_losses={top_losses!r} must be a positive int")
    model, dataset = _load(model, data, batch_size)
    overlap = overlap_summary(model, paths) if (paths := facts_of(dataset).file_paths) else None
    seen = int(overlap["seen_in_training"]) if overlap else 0
    estimate = held_out_estimate(model) if seen else None
    labels, probabilities = collect_predictions(model, dataset)
    names = _resolve_class_names(int(probabilities.shape[1]), None, dataset, model)
    heading = f"Metrics (including {seen} images used in training)" if seen else "Metrics"
    multi_label, threshold = model_multi_label(model)
    extra: dict[str, Any] = {}
    if multi_label:
        metrics, per_class, precision = _multilabel_numbers(labels, probabilities, names, threshold)
        extra = {"multi_label": True, "average_precision": precision}
        evaluation = [
            _multilabel_metrics_section(metrics, per_class, precision, heading),
            _decisions_section(labels, probabilities, names, threshold),
            _multilabel_top_losses_section(
                model, dataset, labels, probabilities, names, threshold, top_losses
            ),
        ]
    else:
        metrics = regression_metrics(labels, probabilities)
        per_class = per_class_report(labels, probabilities, names)
        confusion = _png_of_plot(
            lambda p: plot_confusion_matrix((labels, probabilities), None, p, class_names=names)
        )
        metrics = {**metrics, **calibration_metrics(labels, probabilities)}
        reliability = _png_of_plot(lambda p: plot_reliability(labels, probabilities, p))
        evaluation = [
            _metrics_section(metrics, per_class, heading),
            f"<h2>Confusion matrix</h2>{_img(confusion, 'confusion matrix', 'plot')}",
            "<h2>Calibration</h2><p>The accuracy of the images in each bin of the top "
            "probability, against the diagonal of a calibrated model (ece: the weighted "
            "mean gap).</p>" + _img(reliability, "reliability diagram", "plot"),
            _top_losses_section(model, dataset, labels, probabilities, names, top_losses),
        ]
    sections = [
        _overlap_section(overlap, estimate),
        *evaluation,
        _history_section(history if history is not None else _stored_history(model)),
        _auto_section(model),
        _inspection_section(inspect, data, inspect_options or {}),
    ]
    target = Path(os.fspath(path))
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(_page(title or f"Report: {model.name}", sections), encoding="utf-8")
    if json_path is not None:
        summary = {
            "title": title or f"Report: {model.name}", "page": str(target),
            "metrics": metrics, "per_class": per_class, "training_overlap": overlap,
            "held_out_estimate": estimate, **extra,
        }  # fmt: skip
        _write_json(Path(os.fspath(json_path)), summary)
    return target


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    def plain(value: Any) -> Any:
        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, np.ndarray):
            return value.tolist()
        raise InvalidArgumentTypeError(f"{type(value).__name__} is not JSON data")

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=plain) + "\n", encoding="utf-8")


def write_explanations(
    model: Any,
    images: Any,
    out: str | os.PathLike[str],
    *,
    class_name: str | None = None,
    alpha: float = 0.45,
) -> list[Path]:
    """Write ``out/<image name>_gradcam.png`` for each image file: the image
    (at the model's input size) with its Grad-CAM heatmap laid over it.

    Args:
        model: A classifier (``keras.Model``) or the path of a saved one.
        images: Image file paths.
        out: The folder to write into (created if missing).
        class_name: The class to explain; default each image's predicted class.
        alpha: Weight of the heatmap in the blend.

    Returns:
        The paths written, in the order of ``images``.

    Raises:
        ImportError: matplotlib is not installed.
        DatasetError: An image cannot be read.
        InvalidArgumentError: ``class_name`` is not one of the model's classes.

    Examples:
        >>> from xferclass.report import write_explanations
        >>> write_explanations("model.keras", ["cat.jpg"], "cams")  # doctest: +SKIP
        [PosixPath('cams/cat_gradcam.png')]
    """
    from ..backbones.layers import without_unknown
    from ..backbones.saving import load_model
    from ..data import read_images
    from ..runtime._common import model_class_names
    from .explain import explain
    from .plots import _matplotlib, overlay_heatmap

    _matplotlib()
    if isinstance(model, (str, os.PathLike)):
        model = load_model(model)
    model = without_unknown(model)
    paths = [images] if isinstance(images, (str, os.PathLike)) else list(images)
    index = None
    if class_name is not None:
        names = model_class_names(model) or [str(i) for i in range(model.output_shape[-1])]
        if class_name not in names:
            raise InvalidArgumentError(f"class {class_name!r} is not one of {names}")
        index = names.index(class_name)
    pixels = read_images(paths, (int(model.input_shape[1]), int(model.input_shape[2])))
    heatmaps = explain(model, pixels, class_index=index)
    folder = Path(os.fspath(out))
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for source, image, heatmap in zip(paths, pixels, heatmaps):
        from PIL import Image

        target = folder / f"{Path(os.fspath(source)).stem}_gradcam.png"
        Image.fromarray(overlay_heatmap(image, heatmap, alpha=alpha)).save(target)
        written.append(target)
    return written
