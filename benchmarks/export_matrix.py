"""Which built-in backbones export to which format: the table of docs/deploy.md.

One representative per architecture is built with ``weights=None`` at its
smallest input size and exported with :func:`xferclass.export` to every format.
Each export is checked by the format's own runtime against Keras (that check is
part of ``export``), so a cell says "yes" only when the artifact loads, runs and
matches; otherwise it names the :class:`xferclass.ExportError`.

One representative per architecture is enough: the members of each group are
built by one ``keras.applications`` function (or one xferclass builder) that
varies only depth, width and input size, so they contain the same layer types
and the same TensorFlow ops, which is what a converter sees. Pretrained weights
change values, not the graph; EfficientNet B0-B7 with ImageNet weights add one
``Rescaling`` layer, whose constant converts like any other.

Run::

    python benchmarks/export_matrix.py            # print the table
    python benchmarks/export_matrix.py --write    # and rewrite it in docs/deploy.md

``tests/deploy/test_export.py`` rebuilds a few cells and fails when the table differs.
"""

from __future__ import annotations

import argparse
import gc
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import logging  # noqa: E402

import xferclass  # noqa: E402
from xferclass.export import FORMATS  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "docs" / "deploy.md"
BEGIN, END = "<!-- BEGIN export-matrix -->", "<!-- END export-matrix -->"

#: One backbone per architecture, and the registered backbones each stands for.
REPRESENTATIVES: dict[str, tuple[str, ...]] = {
    "xception": ("xception",),
    "inception_v3": ("inception_v3",),
    "resnet50": ("resnet50",),
    "resnet50_v2": ("resnet50_v2",),
    "mobilenet_v2": ("mobilenet_v2",),
    "mobilenet_v3_small": ("mobilenet_v3_small", "mobilenet_v3_large"),
    "densenet121": ("densenet121", "densenet169", "densenet201"),
    "vgg16": ("vgg16",),
    "convnext_tiny": tuple(f"convnext_{s}" for s in ("tiny", "small", "base", "large", "xlarge")),
    "efficientnet_b0": tuple(f"efficientnet_b{i}" for i in range(8)),
    "efficientnet_v2_b0": tuple(
        f"efficientnet_v2_{v}" for v in ("b0", "b1", "b2", "b3", "s", "m", "l")
    ),
    "efficientnet_lite0": ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"),
}


def representative(backbone: str) -> Any:
    """The classifier built for ``backbone``'s row: random weights, smallest input size."""
    spec = xferclass.get_backbone(backbone)
    return xferclass.build_classifier(
        backbone, num_classes=3, weights=None, input_size=spec.min_size, head_units=8
    )


def cell(backbone: str, format: str, folder: str | os.PathLike[str], model: Any = None) -> str:
    """``"yes"``, or the reason :func:`xferclass.export` gave for refusing."""
    model = representative(backbone) if model is None else model
    suffix = {"saved_model": "", "litert": ".tflite", "onnx": ".onnx", "openvino": ".xml"}[format]
    target = Path(folder) / f"{backbone}-{format}{suffix}"
    try:
        xferclass.export(model, target, format=format, overwrite=True)
    except xferclass.ExportError as error:
        return short_reason(str(error))
    return "yes"


def short_reason(message: str) -> str:
    """A table cell for an ExportError: its first line without file paths, shortened."""
    text = re.sub(r"/\S+", "...", message.splitlines()[0]).replace("|", "/")
    return "no: " + (text if len(text) <= 200 else text[:197] + "...")


def table(rows: dict[str, dict[str, str]]) -> str:
    """The Markdown table of ``rows[backbone][format]``."""
    formats = list(FORMATS)
    lines = [
        "| backbone (stands for) | " + " | ".join(f"`{f}`" for f in formats) + " |",
        "|---|" + "---|" * len(formats),
    ]
    for backbone, cells in rows.items():
        members = ", ".join(REPRESENTATIVES[backbone])
        lines.append(
            f"| `{backbone}` ({members}) | " + " | ".join(cells[f] for f in formats) + " |"
        )
    return "\n".join(lines)


def documented_cells(text: str | None = None) -> dict[str, dict[str, str]]:
    """The cells of the table in docs/deploy.md, ``{backbone: {format: cell}}``."""
    text = DEPLOY.read_text(encoding="utf-8") if text is None else text
    start, end = text.index(BEGIN), text.index(END)
    formats = list(FORMATS)
    cells: dict[str, dict[str, str]] = {}
    for line in text[start:end].splitlines():
        match = re.match(r"\| `([a-z0-9_]+)` \(", line)
        if match:
            values = [c.strip() for c in line.strip().strip("|").split("|")[1:]]
            cells[match.group(1)] = dict(zip(formats, values))
    return cells


def write(rows: dict[str, dict[str, str]]) -> None:
    """Put ``rows`` into the table of docs/deploy.md; rows not run keep their cells."""
    text = DEPLOY.read_text(encoding="utf-8")
    merged = {name: {f: "not checked" for f in FORMATS} for name in REPRESENTATIVES}
    merged.update({k: v for k, v in documented_cells(text).items() if k in merged})
    merged.update(rows)
    start, end = text.index(BEGIN), text.index(END)
    DEPLOY.write_text(text[: start + len(BEGIN)] + "\n" + table(merged) + "\n" + text[end:])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="rewrite the table in docs/deploy.md")
    parser.add_argument(
        "--only", nargs="*", default=None, help="these representatives only, in this order"
    )
    args = parser.parse_args()
    logging.getLogger("xferclass").setLevel(logging.ERROR)  # no "no class names" warnings
    formats = list(FORMATS)
    rows: dict[str, dict[str, str]] = {}
    with tempfile.TemporaryDirectory() as folder:
        for backbone in args.only or REPRESENTATIVES:
            rows[backbone] = {}
            model = representative(backbone)
            for format in formats:
                started = time.perf_counter()
                rows[backbone][format] = cell(backbone, format, folder, model)
                print(
                    f"{backbone:<22}{format:<12}{rows[backbone][format]} "
                    f"({time.perf_counter() - started:.0f} s)",
                    file=sys.stderr,
                    flush=True,
                )
            del model
            gc.collect()
            if args.write:
                write({backbone: rows[backbone]})  # row by row: a long run keeps what it did
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
