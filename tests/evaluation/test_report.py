"""The HTML report: its sections, its self-containedness, and a real browser
(headless Chromium) loading every image without a console error."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import xferclass
from helpers import tiny_model
from xferclass.cli import main
from xferclass.inspection import Inspection
from xferclass.report import write_report

pytest.importorskip("matplotlib")

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

# Injected into a copy of the page, for the test only (the report has no script):
# records errors (scripts and failed resources) and, once loaded, each image's width.
_PROBE = """<script>
window.__errors = [];
window.addEventListener("error", function (e) {
  window.__errors.push(String(e.message || (e.target && e.target.src) || "error"));
}, true);
window.addEventListener("load", function () {
  var widths = Array.prototype.map.call(document.images, function (i) { return i.naturalWidth; });
  var out = document.createElement("pre");
  out.id = "probe";
  out.textContent = JSON.stringify({widths: widths, errors: window.__errors});
  document.body.appendChild(out);
});
</script>"""


@pytest.fixture(scope="module")
def report(tiny_dataset_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    model = tiny_model()
    history = {"loss": [1.0, 0.8, 0.7], "accuracy": [0.3, 0.5, 0.6]}
    found = Inspection(
        [{"path": "a/x.png", "given": "circle", "suggested": "square", "score": 0.9}], [], []
    )
    target = tmp_path_factory.mktemp("report") / "report.html"
    return write_report(
        model, tiny_dataset_dir, target, history=history, top_losses=4, inspect=found,
        json_path=target.with_suffix(".json"),
    )  # fmt: skip


def test_the_page_holds_every_section_and_only_inline_images(report: Path) -> None:
    page = report.read_text(encoding="utf-8")
    for heading in ("Metrics", "Per class", "Confusion matrix", "Calibration", "Top losses",
                    "Training history"):  # fmt: skip
        assert heading in page
    assert "Data inspection" in page and "a/x.png" in page
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in page
    for name in ("circle", "square", "triangle"):
        assert f"<td>{name}</td>" in page
    sources = re.findall(r'<img src="([^"]+)"', page)
    # confusion matrix + reliability diagram + history + an image and its heatmap per top loss
    assert len(sources) == 3 + 2 * 4
    assert all(src.startswith("data:image/png;base64,") for src in sources)
    assert "<script" not in page and "http://" not in page and "https://" not in page


def test_a_single_label_report_keeps_its_numbers(report: Path) -> None:
    numbers = json.loads(report.with_suffix(".json").read_text(encoding="utf-8"))
    assert list(numbers) == [
        "title", "page", "metrics", "per_class", "training_overlap", "held_out_estimate"
    ]  # fmt: skip
    assert list(numbers["metrics"]) == ["mae", "mse", "rmse", "r2", "accuracy", "n", "ece",
                                        "brier"]  # fmt: skip
    assert numbers["metrics"]["brier"] == pytest.approx(3 * numbers["metrics"]["mse"])
    assert list(numbers["per_class"]) == [
        "circle", "square", "triangle", "accuracy", "macro avg", "weighted avg"
    ]  # fmt: skip
    page = report.read_text(encoding="utf-8")
    assert "Label decisions" not in page and "subset_accuracy" not in page


def test_arguments_are_checked(tiny_dataset_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(xferclass.InvalidArgumentError):
        write_report(tiny_model(), tiny_dataset_dir, tmp_path / "r.html", top_losses=0)
    with pytest.raises(xferclass.InvalidArgumentTypeError):
        write_report(tiny_model(), tiny_dataset_dir, tmp_path / "r.html", inspect="yes")


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_a_real_browser_loads_every_image_without_errors(report: Path, tmp_path: Path) -> None:
    probed = tmp_path / "probed.html"
    page = report.read_text(encoding="utf-8")
    probed.write_text(page.replace("<head>", "<head>" + _PROBE, 1), encoding="utf-8")
    assert CHROMIUM is not None
    result = subprocess.run(
        [
            CHROMIUM, "--headless", "--disable-gpu", "--no-sandbox", "--no-first-run",
            "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}",
            "--enable-logging=stderr", "--v=0", "--virtual-time-budget=10000",
            "--dump-dom", probed.as_uri(),
        ],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    found = re.search(r'<pre id="probe">(.*?)</pre>', result.stdout, re.S)
    assert found, f"chromium did not render the page: {result.stderr[-2000:]}"
    probe = json.loads(found.group(1).replace("&quot;", '"'))
    assert probe["errors"] == []
    assert len(probe["widths"]) == 11 and all(width > 0 for width in probe["widths"])
    console = [line for line in result.stderr.splitlines() if "CONSOLE" in line]
    assert console == []


def test_the_command_line_writes_overlays_and_a_report(
    tiny_dataset_dir: Path, tmp_path: Path
) -> None:
    model = tiny_model()
    saved = tmp_path / "model.keras"
    model.save(saved)
    images = sorted(str(p) for p in (tiny_dataset_dir / "circle").iterdir())[:2]
    assert main(["explain", str(saved), *images, "--out", str(tmp_path / "cams")]) == 0
    written = sorted((tmp_path / "cams").iterdir())
    assert [p.name for p in written] == [Path(i).stem + "_gradcam.png" for i in images]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in written)
    out = tmp_path / "page" / "report.html"
    assert main(["report", str(saved), str(tiny_dataset_dir), "--out", str(out)]) == 0
    assert "Confusion matrix" in out.read_text(encoding="utf-8")


def test_plot_explanations_draws_a_grid(tmp_path: Path) -> None:
    from xferclass.plots import overlay_heatmap, plot_explanations

    images = np.random.default_rng(0).integers(0, 256, (3, 16, 16, 3))
    maps = np.random.default_rng(1).random((3, 16, 16))
    path = plot_explanations(images, maps, tmp_path / "grid.png", titles=["a", "b", "c"])
    assert path.read_bytes()[:4] == b"\x89PNG"
    blend = overlay_heatmap(images[0], maps[0], alpha=0.0)
    assert np.array_equal(blend, images[0].astype(np.uint8))
    with pytest.raises(xferclass.InvalidArgumentError):
        plot_explanations(images, maps[:2], tmp_path / "bad.png")


# --------------------------------------------------------------------------- multi-label

#: The tags of the multi-label report, in the model's (not alphabetical) order.
TAGS = ["red", "green", "blue"]
#: Images of the multi-label report, and how many of them have no label (the first ones).
TAGGED, UNLABELLED = 24, 4
THRESHOLD = 0.4


@pytest.fixture(scope="module")
def multi_label_report(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[str, dict, np.ndarray, np.ndarray]:
    """A multi-label model's report (page text and JSON) on a label table of image files
    whose first images have no label, with the labels and the model's own probabilities."""
    from PIL import Image

    from xferclass.layers import preprocessing_layer

    folder = tmp_path_factory.mktemp("tagged")
    rng = np.random.default_rng(3)
    labels = rng.uniform(size=(TAGGED, 3)) < 0.5
    labels[:UNLABELLED] = False
    labels[UNLABELLED : UNLABELLED + 3] = np.eye(3, dtype=bool)  # every tag occurs
    labels[UNLABELLED:, 1] |= ~labels[UNLABELLED:].any(axis=1)  # the rest have a label
    pixels = rng.uniform(0, 100, (TAGGED, 32, 32, 3)) + labels[:, None, None, :] * 150.0
    pixels = np.rint(pixels).astype(np.uint8)
    rows = []
    for i, image in enumerate(pixels):
        path = folder / f"image{i:02d}.png"
        Image.fromarray(image).save(path)
        rows.append((str(path), [TAGS[j] for j in np.flatnonzero(labels[i])]))
    model = tiny_model(multi_label=True, threshold=THRESHOLD)
    kernel, bias = model.layers[-1].get_weights()
    model.layers[-1].set_weights([kernel * 40, bias])
    near = np.clip(model.predict(pixels.astype("float32"), verbose=0), 1e-6, 1 - 1e-6)
    logits = np.log(near / (1 - near)).astype(np.float64) - bias
    # Biases that put the unlabelled image of the lowest logits just below the threshold in
    # every class: the model predicts no label for it, and some label for the others.
    lowest = int(np.argmin(logits[:UNLABELLED].sum(axis=1)))
    bias = np.log(THRESHOLD / (1 - THRESHOLD)) - logits[lowest] - 0.1
    model.layers[-1].set_weights([kernel * 40, bias.astype("float32")])
    layer = preprocessing_layer(model)
    assert layer is not None
    layer.class_names = list(TAGS)
    saved = folder / "tagger.keras"
    xferclass.save_model(model, saved)
    probabilities = model.predict(pixels.astype("float32"), verbose=0).astype(np.float64)
    assert np.abs(probabilities - THRESHOLD).min() > 1e-3  # no decision on a knife's edge
    page = write_report(
        str(saved), rows, folder / "report.html", top_losses=4, json_path=folder / "r.json"
    )
    numbers = json.loads((folder / "r.json").read_text(encoding="utf-8"))
    return page.read_text(encoding="utf-8"), numbers, labels.astype(np.float64), probabilities


def test_the_multi_label_report_matches_scikit_learn(multi_label_report) -> None:
    import warnings

    from sklearn.metrics import (
        accuracy_score,
        average_precision_score,
        classification_report,
        f1_score,
        mean_absolute_error,
        r2_score,
    )

    page, numbers, labels, p = multi_label_report
    predicted = (p >= THRESHOLD).astype(int)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zero-division warnings of scikit-learn
        expected = {
            "subset_accuracy": accuracy_score(labels, predicted),
            "f1_micro": f1_score(labels, predicted, average="micro"),
            "f1_macro": f1_score(labels, predicted, average="macro"),
            "mean_average_precision": average_precision_score(labels, p, average="macro"),
            "label_cardinality": labels.sum(axis=1).mean(),
            "predicted_label_cardinality": predicted.sum(axis=1).mean(),
            "mae": mean_absolute_error(labels, p),
            "r2": r2_score(labels, p),
        }
        report = classification_report(labels, predicted, target_names=TAGS, output_dict=True)
        per_class_ap = average_precision_score(labels, p, average=None)
    metrics = numbers["metrics"]
    assert numbers["multi_label"] is True and metrics["threshold"] == THRESHOLD
    assert "accuracy" not in metrics  # the top class means nothing for label sets
    assert metrics["n"] == TAGGED and metrics["images_without_labels"] == UNLABELLED
    for key, value in expected.items():
        assert metrics[key] == pytest.approx(value, abs=1e-5), key
        assert f"{key}: <b>{metrics[key]:.3f}</b>" in page, key
    for name in [*TAGS, "micro avg", "macro avg", "weighted avg", "samples avg"]:
        for field in ("precision", "recall", "f1-score", "support"):
            assert numbers["per_class"][name][field] == pytest.approx(report[name][field])
    for j, name in enumerate(TAGS):
        assert numbers["average_precision"][name] == pytest.approx(per_class_ap[j], abs=1e-5)
    # label sets, not the top class: no confusion matrix, each class's decisions instead
    assert "Confusion matrix" not in page and "Label decisions" in page
    for j, name in enumerate(TAGS):
        truth, chosen = labels[:, j] > 0.5, predicted[:, j] > 0
        counts = [truth.sum(), chosen.sum(), (truth & chosen).sum(), (~truth & chosen).sum()]
        counts += [(truth & ~chosen).sum(), (~truth & ~chosen).sum()]
        assert "<tr><td>" + "</td><td>".join([name, *map(str, counts)]) + "</td></tr>" in page
    sources = re.findall(r'<img src="([^"]+)"', page)
    assert len(sources) == 2 * 4 and all(s.startswith("data:image/png;base64,") for s in sources)


def test_the_multi_label_report_counts_unlabelled_images_as_no_label(
    multi_label_report,
) -> None:
    page, numbers, labels, p = multi_label_report
    # The old page took each image's top label: an image with no label became class 0.
    for j, name in enumerate(TAGS):
        assert numbers["per_class"][name]["support"] == int(labels[:, j].sum())
    unlabelled, silent = ~labels.any(axis=1), ~(p >= THRESHOLD).any(axis=1)
    assert f"{UNLABELLED} images have no label" in page
    assert f"{int(np.sum(unlabelled & silent))} of them among those without a label" in page
    # An unlabelled image with nothing predicted is an exact match, else a miss.
    matches = np.all((labels > 0.5) == (p >= THRESHOLD), axis=1)
    assert matches[unlabelled].any() and not matches[unlabelled].all()  # both occur here
    assert numbers["metrics"]["subset_accuracy"] == pytest.approx(matches.mean())


def test_the_multi_label_top_losses_are_by_binary_cross_entropy(multi_label_report) -> None:
    page, _, labels, p = multi_label_report
    clipped = np.clip(p, 1e-7, 1 - 1e-7)
    losses = -np.mean(labels * np.log(clipped) + (1 - labels) * np.log(1 - clipped), axis=1)
    shown = [float(x) for x in re.findall(r", loss (\d+\.\d\d)</div>", page)]
    assert shown == pytest.approx(sorted(losses, reverse=True)[:4], abs=0.006)
    assert "binary cross-entropy" in page and "heatmap: " in page
