"""Helpers shared by the ``bench_*.py`` scripts (not a benchmark itself).

- :func:`machine` describes the machine and software (CPU model, cores, load
  average, versions, date) for the report;
- :func:`image_folder` gives a folder of labelled images: the real clothing
  data (or a stratified subset of it, as symbolic links), else generated JPEGs;
- :func:`forward_rate` measures a model's forward images/s on prefetched batches;
- :func:`section` records a run's report as data in ``benchmarks/results/<name>.json``
  (command, commit, date, machine, tables and notes) and renders its section of the
  docs from that file (``results_table.py``), between ``<!-- BEGIN name -->`` and
  ``<!-- END name -->`` markers.
"""

from __future__ import annotations

import datetime as _datetime
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CLOTHING = Path(
    os.environ.get(
        "XFERCLASS_CLOTHING_DIR", str(ROOT.parent / "shared/data/clothing-dataset-small")
    )
)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")

HEADER = """# Benchmarks

<!-- Sections between BEGIN/END markers are rewritten by the scripts in benchmarks/. -->
"""


def quiet_tensorflow() -> None:
    """Silence TensorFlow's C++ start-up chatter (call before importing it)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


# ------------------------------------------------------------------------------ machine


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cores() -> str:
    logical = os.cpu_count() or 0
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = logical
    return f"{usable}" if usable == logical else f"{usable} usable of {logical}"


def load_average() -> str:
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return "n/a"
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f}"


def versions() -> dict[str, str]:
    import keras
    import tensorflow as tf

    import xferclass

    return {
        "Python": platform.python_version(),
        "TensorFlow": tf.__version__,
        "Keras": keras.__version__,
        "xferclass": xferclass.__version__,
    }


def command() -> str:
    script = os.path.relpath(os.path.abspath(sys.argv[0]), ROOT)
    return shlex.join(["python", script, *sys.argv[1:]])


def git_commit() -> str:
    """``git rev-parse --short HEAD``, with ``-dirty`` when tracked files have uncommitted
    changes; ``unknown`` outside a git checkout."""

    def git(*arguments: str) -> str:
        found = subprocess.run(["git", *arguments], cwd=ROOT, capture_output=True, text=True,
                               check=True, timeout=30)  # fmt: skip
        return found.stdout.strip()

    try:
        head = git("rev-parse", "--short", "HEAD")
        changes = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (head + ("-dirty" if changes else "")) if head else "unknown"


class Machine:
    """What the report says about where and when it ran; ``finish()`` at the end."""

    def __init__(self) -> None:
        self.started = _datetime.datetime.now().astimezone()
        self.load_start = load_average()
        self.load_end = ""
        self.command = command()
        self.commit = git_commit()

    def finish(self) -> None:
        self.load_end = load_average()

    def markdown(self) -> str:
        info = versions()
        software = ", ".join(f"{name} {version}" for name, version in info.items())
        return "\n".join(
            [
                f"- Command: `{self.command}`",
                f"- Date: {self.started:%Y-%m-%d %H:%M %Z}",
                f"- CPU: {cpu_model()}, {cores()} cores",
                f"- Load average (1 / 5 / 15 min): {self.load_start} at the start, "
                f"{self.load_end or load_average()} at the end",
                f"- Software: {software}",
            ]
        )

    def fields(self) -> dict[str, str]:
        """What a results file records about the run (``results_table.provenance``)."""
        software = ", ".join(f"{name} {version}" for name, version in versions().items())
        load = f"{self.load_start} at the start, {self.load_end or load_average()} at the end"
        return {
            "command": self.command,
            "commit": self.commit,
            "date": f"{self.started:%Y-%m-%d %H:%M %Z}",
            "machine": f"{cpu_model()}, {cores()} cores",
            "load": f"{load} (1 / 5 / 15 min)",
            "software": software,
        }


def machine() -> Machine:
    return Machine()


# ------------------------------------------------------------------------------ data


def _class_files(root: Path) -> dict[str, list[Path]]:
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    return {
        name: sorted(f for f in (root / name).iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        for name in classes
    }


def _stratified(files: dict[str, list[Path]], count: int) -> dict[str, list[Path]]:
    """About ``count`` files, the same fraction of every class, the first ones by name."""
    total = sum(len(v) for v in files.values())
    if count <= 0 or count >= total:
        return files
    picked = {name: v[: max(1, round(count * len(v) / total))] for name, v in files.items()}
    # Rounding can miss the count by a few; fix up on the largest classes.
    while (have := sum(len(v) for v in picked.values())) != count:
        step = 1 if have < count else -1
        name = max(files, key=lambda n: len(files[n]) - len(picked[n]) * (1 if step > 0 else -1))
        size = len(picked[name]) + step
        if not 1 <= size <= len(files[name]):
            break
        picked[name] = files[name][:size]
    return picked


def _generate(root: Path, count: int, classes: int = 10, side: int = 256) -> None:
    """``count`` JPEGs of coloured blobs in ``classes`` folders (no real data here)."""
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:side, 0:side].astype(np.float32)
    for index in range(count):
        label = index % classes
        folder = root / f"class_{label:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        colour = np.array([(label * 67) % 256, (label * 131) % 256, (label * 199) % 256])
        cy, cx = rng.uniform(side * 0.3, side * 0.7, 2)
        mask = (y - cy) ** 2 + (x - cx) ** 2 < (side * rng.uniform(0.15, 0.3)) ** 2
        image = rng.normal(128, 30, (side, side, 3))
        image[mask] = colour + rng.normal(0, 10, (int(mask.sum()), 3))
        data = tf.io.encode_jpeg(np.clip(image, 0, 255).astype(np.uint8), quality=90)
        (folder / f"{index:06d}.jpg").write_bytes(data.numpy())


class ImageFolder:
    """A folder of class subfolders; ``close()`` removes it when it is temporary."""

    def __init__(self, path: Path, source: str, count: int, temporary: str | None) -> None:
        self.path = path
        self.source = source
        self.count = count
        self._temporary = temporary

    def files(self) -> list[str]:
        return [str(f) for v in _class_files(self.path).values() for f in v]

    def close(self) -> None:
        if self._temporary is not None:
            import shutil

            shutil.rmtree(self._temporary, ignore_errors=True)
            self._temporary = None


def image_folder(split: str, count: int = 0, *, generate_if_missing: int = 600) -> ImageFolder:
    """The clothing ``split`` (``train``/``validation``), ``count`` images of it (0: all).

    A subset is the first files by name of every class, in proportion, linked
    into a temporary folder. Without the clothing data, ``count`` (or
    ``generate_if_missing``) JPEGs are generated instead.
    """
    source = CLOTHING / split
    if source.is_dir():
        files = _class_files(source)
        total = sum(len(v) for v in files.values())
        if count <= 0 or count >= total:
            return ImageFolder(source, f"clothing-dataset-small/{split} (all)", total, None)
        temporary = tempfile.mkdtemp(prefix=f"bench-{split}-")
        picked = _stratified(files, count)
        for name, chosen in picked.items():
            (Path(temporary) / name).mkdir()
            for file in chosen:
                os.symlink(file, Path(temporary) / name / file.name)
        have = sum(len(v) for v in picked.values())
        label = f"clothing-dataset-small/{split}, stratified subset of {have} of {total}"
        return ImageFolder(Path(temporary), label, have, temporary)
    temporary = tempfile.mkdtemp(prefix=f"bench-generated-{split}-")
    n = count if count > 0 else generate_if_missing
    _generate(Path(temporary), n)
    return ImageFolder(
        Path(temporary), f"{n} generated JPEGs (no clothing data found)", n, temporary
    )


# ------------------------------------------------------------------------------ timing


def load_splits(
    train_folder: ImageFolder,
    val_folder: ImageFolder,
    size: int,
    *,
    batch_size: int,
    shuffle: bool,
    seed: int,
) -> tuple[Any, Any]:
    """The training and validation datasets of a benchmark, in one class order."""
    from xferclass import load_image_dataset

    train = load_image_dataset(
        train_folder.path, size, batch_size=batch_size, shuffle=shuffle, seed=seed
    )
    val = load_image_dataset(
        val_folder.path, size, batch_size=batch_size, shuffle=False,
        class_names=train.class_names,
    )  # fmt: skip
    print(f"train: {train_folder.source}; validation: {val_folder.source}")
    return train, val


def forward_rate(
    forward: Callable[[Any], Any], batches: Sequence[Any], *, warmup: int = 2, repeats: int = 1
) -> tuple[float, float]:
    """Images/s of ``forward`` over in-memory ``batches``: (best pass, mean of passes).

    ``warmup`` batches run first (tracing, allocator, thread pools).
    """
    import numpy as np

    for batch in list(batches)[:warmup]:
        np.asarray(forward(batch))
    images = sum(int(b.shape[0]) for b in batches)
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for batch in batches:
            np.asarray(forward(batch))
        rates.append(images / (time.perf_counter() - start))
    return max(rates), sum(rates) / len(rates)


class Stopwatch:
    """Wall and process CPU seconds of a ``with`` block."""

    def __enter__(self) -> Stopwatch:
        self._wall = time.perf_counter()
        self._cpu = time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self._wall
        self.cpu = time.process_time() - self._cpu


def epoch_timer() -> Any:
    """A Keras callback recording when training began and when each epoch ended."""
    import keras

    class EpochTimer(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.begin: float | None = None
            self.ends: list[float] = []

        def on_train_begin(self, logs: Any = None) -> None:
            self.begin = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            self.ends.append(time.perf_counter())

        def epoch_seconds(self) -> list[float]:
            marks = [self.begin or 0.0, *self.ends]
            return [b - a for a, b in zip(marks, marks[1:])]

    return EpochTimer()


# ------------------------------------------------------------------------------ report


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table (also readable as plain text)."""
    cells = [[str(c) for c in row] for row in rows]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join(lines)


def write_markers(name: str, markdown: str, path: Path) -> None:
    """Replace (or append) the section ``name`` of the page ``path``, between its markers."""
    begin, end = f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"
    text = path.read_text(encoding="utf-8") if path.exists() else HEADER
    block = f"{begin}\n{markdown.strip()}\n{end}"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        text = head + block + tail
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".md.tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)
    print(f"wrote the {name} section of {os.path.relpath(path, ROOT)}")


def _results_table() -> Any:
    here = str(Path(__file__).resolve().parent)
    if here not in sys.path:
        sys.path.insert(0, here)
    import results_table  # beside this file

    return results_table


def record_section(name: str, run: dict[str, Any]) -> None:
    """Append ``run`` to ``benchmarks/results/<name>.json`` and render its pages from it."""
    tables = _results_table()
    path = tables.record(name, run)
    print(f"recorded the {name} run in {os.path.relpath(path, ROOT)}")
    markdown = tables.render(name)
    for page in tables.pages(name):
        write_markers(name, markdown, page)
    if name in tables.SUMMARY:
        for page in tables.pages("summary"):
            write_markers("summary", tables.render("summary"), page)


_BULLETS = {
    "Command": "command",
    "Date": "date",
    "CPU": "machine",
    "Load average (1 / 5 / 15 min)": "load",
    "Software": "software",
}


def parse_section(markdown: str) -> dict[str, Any]:
    """A run from a section's markdown as :meth:`Machine.markdown` heads it (``## title``,
    then ``- Command: ...``, ``- Date: ...`` bullets), for :func:`write_section`."""
    lines = markdown.strip("\n").splitlines()
    run: dict[str, Any] = {"title": ""}
    if lines and lines[0].startswith("## "):
        run["title"] = lines.pop(0)[3:].strip()
    while lines and not lines[0].strip():
        lines.pop(0)
    while lines and lines[0].startswith("- ") and lines[0][2:].split(": ", 1)[0] in _BULLETS:
        label, value = lines.pop(0)[2:].split(": ", 1)
        value = value.strip()
        if label == "Command":
            value = value.strip("`")
        elif label.startswith("Load average"):
            value += " (1 / 5 / 15 min)"
        run[_BULLETS[label]] = value
    run.setdefault("commit", git_commit())
    run["body"] = _results_table().parse_body("\n".join(lines))
    return run


def write_section(name: str, markdown: str, path: Path | None = None) -> None:
    """Record section ``name`` as data and write it into its pages, from the markdown of a
    section (as :func:`section` used to pass it: title, machine bullets, body).

    With ``path``, a page that ``results_table.PAGE_OF`` does not give the section (a guide
    page with a section of its own, such as docs/data_quality.md), the markdown is
    written there as it is, between the markers, and nothing is recorded.
    """
    tables = _results_table()
    if path is not None and Path(path).resolve() not in [p.resolve() for p in tables.pages(name)]:
        write_markers(name, markdown, Path(path))
        return
    record_section(name, parse_section(markdown))


def section(
    name: str,
    title: str,
    info: Machine,
    body: str,
    *,
    write: bool = True,
    summary: dict[str, str] | None = None,
    data: Any = None,
) -> str:
    """Print a run's section and, when ``write``, record it as data and render its pages.

    The run goes to ``benchmarks/results/<name>.json`` (see ``results_table``): the
    command, commit, date and machine from ``info``, and ``body`` as notes and tables.
    ``summary`` (``benchmark``, ``result``, ``target``) is the run's row of the summary
    table in docs/benchmarks.md; ``data``, the script's raw figures, is kept with the run.
    """
    tables = _results_table()
    run: dict[str, Any] = {"title": title, **info.fields(), "body": tables.parse_body(body)}
    if summary is not None:
        run["summary"] = dict(summary)
    if data is not None:
        run["data"] = data
    markdown = tables.render_run(run) + "\n"
    print()
    print(markdown)
    if write:
        record_section(name, run)
    return markdown


def fmt(value: float, digits: int = 1) -> str:
    return f"{value:,.{digits}f}"


def empty_model_cache(prefix: str) -> str:
    """A new, empty folder for ``XFERCLASS_CACHE_DIR`` (converted models and remembered
    engine choices), sharing the EfficientNet-Lite weights already converted in the
    user's cache: they do not depend on the runtime or precision measured."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    home = Path(os.environ.get("XFERCLASS_CACHE_DIR", Path.home() / ".cache" / "xferclass"))
    for weights in home.glob("efficientnet_lite*.weights.h5"):
        (folder / weights.name).symlink_to(weights)
    return str(folder)
