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
        model, tiny_dataset_dir, target, history=history, top_losses=4, inspect=found
    )


def test_the_page_holds_every_section_and_only_inline_images(report: Path) -> None:
    page = report.read_text(encoding="utf-8")
    for heading in ("Metrics", "Per class", "Confusion matrix", "Top losses", "Training history"):
        assert heading in page
    assert "Data inspection" in page and "a/x.png" in page
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in page
    for name in ("circle", "square", "triangle"):
        assert f"<td>{name}</td>" in page
    sources = re.findall(r'<img src="([^"]+)"', page)
    # confusion matrix + history + an image and its heatmap per top loss
    assert len(sources) == 2 + 2 * 4
    assert all(src.startswith("data:image/png;base64,") for src in sources)
    assert "<script" not in page and "http://" not in page and "https://" not in page


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
    assert len(probe["widths"]) == 10 and all(width > 0 for width in probe["widths"])
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
