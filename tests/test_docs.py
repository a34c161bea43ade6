"""The code in the documentation runs, so the docs cannot rot.

Every fenced ``python`` block of ``README.md`` and ``docs/*.md`` is executed. The
blocks of one page run in order, in one namespace, in a temporary working
folder prepared like the reader's: ``clothes/train`` and ``clothes/validation``
(one subfolder per class of small generated images) and ``shoe.jpg``. The docs
use ``backbone="efficientnet_lite0"``, whose ImageNet weights ship in a pip
package, or ``weights=None``, so nothing needs the network.

To keep the run short on a CPU, the test shrinks the heavy calls, not which
functions run or how: image and input sizes above 64 pixels become 64, training
runs at most 1 epoch per phase with at most 1 cached augmented view, and
``os.fsync`` (which only makes saved files durable) is skipped.

A block opts out with a first line ``# docs-test: skip (reason)``; few may
(see ``test_few_blocks_are_skipped``). The other tests check that the API pages
cover every name in ``xferclass.__all__``, that mkdocs.yml's nav lists every
page, that the ``--help`` texts in docs/cli.md are what the command prints, that
no guide runs past ``MAX_PAGE_LINES`` and that links between pages reach a page
and a heading that exist.
"""

from __future__ import annotations

import functools
import inspect
import os
import re
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

import xferclass
from xferclass.backbones import _registry

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.glob("*.md")) + [ROOT / "README.md"]
SKIP_MARKER = "# docs-test: skip"
#: The most seconds of budget a docs example of the automatic recipe gets.
AUTO_SECONDS = 40.0
#: Most blocks must run; an opt-out needs a reason (network, several GPUs, ...).
MAX_SKIPPED_FRACTION = 0.2

#: Classes of the generated ``clothes/`` folders and the colour of each.
CLASSES = {"hat": (200, 60, 60), "pants": (60, 180, 60), "shoes": (60, 80, 220)}
TRAIN_PER_CLASS = 6
VALIDATION_PER_CLASS = 3
SIZE = 32
#: Largest image / input side while the docs run; larger sizes are shrunk to it.
SMALL_SIDE = 64
#: Most epochs per training phase while the docs run.
MAX_EPOCHS = 1
#: The most lines of a docs page; the references below list what they list.
MAX_PAGE_LINES = 250
LONG_PAGES = {"cli.md"}

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>[^\n`]*)$")


@dataclass(frozen=True)
class Block:
    """One fenced code block of a page."""

    page: Path
    line: int  # 1-based line of the first code line
    language: str
    code: str

    @property
    def skipped(self) -> bool:
        first = self.code.lstrip().splitlines()[0] if self.code.strip() else ""
        return first.startswith(SKIP_MARKER)


def code_blocks(page: Path) -> list[Block]:
    """The fenced code blocks of a Markdown page, dedented, with their languages."""
    lines = page.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    index = 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        fence, indent = opening["fence"], opening["indent"]
        info = opening["info"].strip()
        language = info.split()[0].strip("{}.").lower() if info else ""
        body: list[str] = []
        index += 1
        start = index + 1
        while index < len(lines):
            closing = _FENCE.match(lines[index])
            if (
                closing is not None
                and closing["fence"][0] == fence[0]
                and len(closing["fence"]) >= len(fence)
                and not closing["info"].strip()
            ):
                break
            line = lines[index]
            body.append(line[len(indent) :] if line.startswith(indent) else line.lstrip())
            index += 1
        index += 1
        blocks.append(Block(page, start, language, textwrap.dedent("\n".join(body))))
    return blocks


def python_blocks(page: Path) -> list[Block]:
    return [block for block in code_blocks(page) if block.language in ("python", "py")]


PAGES_WITH_CODE = [page for page in PAGES if python_blocks(page)]


def _shape_image(kind: str, rng: np.random.Generator) -> np.ndarray:
    """A small RGB image: the class's colour as a blob on a dark noisy background."""
    y, x = np.mgrid[0:SIZE, 0:SIZE]
    centre = SIZE / 2 + rng.uniform(-4, 4, 2)
    mask = (y - centre[0]) ** 2 + (x - centre[1]) ** 2 <= (SIZE * rng.uniform(0.25, 0.4)) ** 2
    image = rng.uniform(0, 50, (SIZE, SIZE, 3))
    image[mask] = np.clip(np.array(CLASSES[kind]) + rng.uniform(-25, 25, 3), 0, 255)
    return image.astype(np.uint8)


def _write_image(path: Path, pixels: np.ndarray) -> None:
    tensor = tf.constant(pixels)
    if path.suffix == ".png":
        path.write_bytes(tf.io.encode_png(tensor).numpy())
    else:
        path.write_bytes(tf.io.encode_jpeg(tensor, quality=95).numpy())


def make_reader_folder(root: Path) -> None:
    """``clothes/{train,validation}/<class>/*`` and ``shoe.jpg`` under ``root``."""
    rng = np.random.default_rng(0)
    for split, count in (("train", TRAIN_PER_CLASS), ("validation", VALIDATION_PER_CLASS)):
        for kind in CLASSES:
            folder = root / "clothes" / split / kind
            folder.mkdir(parents=True)
            for i in range(count):
                suffix = ".png" if i % 2 else ".jpg"
                _write_image(folder / f"{kind}_{i:02d}{suffix}", _shape_image(kind, rng))
    _write_image(root / "shoe.jpg", _shape_image("shoes", rng))


@pytest.fixture(scope="module")
def reader_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A pristine copy-source of the reader's working folder."""
    root = tmp_path_factory.mktemp("docs_reader")
    make_reader_folder(root)
    return root


def _small(size: object, floor: int = 1) -> object:
    """``size`` (an int or ``(height, width)``) with each side at most SMALL_SIDE."""
    side = max(SMALL_SIDE, floor)
    if isinstance(size, int) and not isinstance(size, bool):
        return min(size, side)
    if isinstance(size, (tuple, list)) and len(size) == 2:
        return tuple(min(int(s), side) for s in size)
    return size


def _shrinking(function: Callable[..., object], adjust: Callable[[dict], None]) -> Callable:
    """``function`` with its bound arguments passed through ``adjust`` first."""
    signature = inspect.signature(function)

    @functools.wraps(function)
    def call(*args: object, **kwargs: object) -> object:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        adjust(bound.arguments)
        return function(*bound.args, **bound.kwargs)

    return call


def _small_dataset(arguments: dict) -> None:
    arguments["size"] = _small(arguments["size"])


def _small_model(arguments: dict) -> None:
    spec = xferclass.get_backbone(arguments["backbone"])
    size = arguments["input_size"]
    if size is None and max(spec.default_size) > SMALL_SIDE:
        size = SMALL_SIDE
    arguments["input_size"] = _small(size, floor=spec.min_size)


def _short_fit(arguments: dict) -> None:
    arguments["epochs"] = min(arguments["epochs"], MAX_EPOCHS)
    arguments["augment_views"] = min(arguments["augment_views"], 1)


def _short_fine_tune(arguments: dict) -> None:
    arguments["augment_views"] = min(arguments["augment_views"], 1)
    for name in ("head_epochs", "fine_tune_epochs"):
        arguments[name] = min(arguments[name], MAX_EPOCHS)


def _short_auto(arguments: dict) -> None:
    from xferclass.auto import parse_budget

    arguments["budget"] = min(parse_budget(arguments["budget"]), AUTO_SECONDS)


def _shrink_heavy_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the docs' training small (see the module docstring); nothing else changes."""
    import xferclass.auto
    import xferclass.data
    import xferclass.models
    import xferclass.training

    patches = [
        (xferclass.data, "load_image_dataset", _small_dataset),
        (xferclass.models, "build_classifier", _small_model),
        (xferclass.training, "fit", _short_fit),
        (xferclass.training, "fine_tune", _short_fine_tune),
        (xferclass.auto, "train_auto", _short_auto),
    ]
    for module, name, adjust in patches:
        small = _shrinking(getattr(module, name), adjust)
        monkeypatch.setattr(module, name, small)
        if getattr(xferclass, name, None) is not None:  # never add a name the package lacks
            monkeypatch.setattr(xferclass, name, small)
    monkeypatch.setattr(os, "fsync", lambda descriptor: None)


@pytest.fixture
def workdir(reader_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh working folder per page, small training, the registry restored afterwards."""
    import shutil

    shutil.copytree(reader_folder, tmp_path, dirs_exist_ok=True)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    _shrink_heavy_calls(monkeypatch)
    registry = dict(_registry._REGISTRY)
    yield tmp_path
    _registry._REGISTRY.clear()
    _registry._REGISTRY.update(registry)


@pytest.mark.parametrize("page", PAGES_WITH_CODE, ids=lambda page: page.name)
def test_page_code_runs(page: Path, workdir: Path) -> None:
    """Run the page's python blocks in order, in one namespace."""
    import keras

    keras.utils.set_random_seed(0)
    namespace: dict[str, object] = {"__name__": f"docs_{page.stem}"}
    for block in python_blocks(page):
        if block.skipped:
            continue
        # Pad so that tracebacks show the line numbers of the Markdown file.
        source = "\n" * (block.line - 1) + block.code
        code = compile(source, str(page), "exec")
        try:
            exec(code, namespace)
        except Exception as error:
            raise AssertionError(
                f"the python block at {page.relative_to(ROOT)}:{block.line} failed: "
                f"{type(error).__name__}: {error}"
            ) from error


def test_few_blocks_are_skipped() -> None:
    blocks = [block for page in PAGES for block in python_blocks(page)]
    assert blocks, "no python blocks found in the docs"
    skipped = [block for block in blocks if block.skipped]
    for block in skipped:
        reason = block.code.lstrip().splitlines()[0][len(SKIP_MARKER) :].strip(" :()-")
        assert reason, f"{block.page.name}:{block.line}: say why the block is skipped"
    assert len(skipped) < MAX_SKIPPED_FRACTION * len(blocks), (
        f"{len(skipped)} of {len(blocks)} python blocks in the docs are skipped: "
        + ", ".join(f"{b.page.name}:{b.line}" for b in skipped)
    )


def test_readme_quickstart_is_tested() -> None:
    assert python_blocks(ROOT / "README.md"), "README.md has no python block to test"


def test_api_pages_cover_every_public_name() -> None:
    """Each name in ``xferclass.__all__`` has a ``::: ...name`` entry in docs/api/."""
    documented = set()
    for page in sorted((DOCS / "api").glob("*.md")):
        for line in page.read_text(encoding="utf-8").splitlines():
            if line.startswith("::: "):
                documented.add(line[4:].strip().rsplit(".", 1)[-1])
    missing = [
        name for name in xferclass.__all__ if not name.startswith("__") and name not in documented
    ]
    assert not missing, f"no API entry in docs/api/*.md for {missing}"


def test_nav_lists_every_page() -> None:
    """Every page in docs/ is reachable from the navigation of mkdocs.yml."""
    config = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    pages = sorted(
        str(path.relative_to(DOCS)) for path in DOCS.rglob("*.md") if "_ext" not in path.parts
    )
    missing = [page for page in pages if page not in config]
    assert not missing, f"mkdocs.yml's nav does not list {missing}"


def test_reader_folder_matches_the_docs(reader_folder: Path) -> None:
    """The generated folder has what the README's quickstart reads."""
    assert sorted(os.listdir(reader_folder / "clothes" / "train")) == sorted(CLASSES)
    assert (reader_folder / "shoe.jpg").is_file()


def test_cli_help_in_the_docs_is_current(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each ``$ xferclass ... --help`` shown in docs/cli.md is what the command prints."""
    from xferclass.cli import main

    monkeypatch.setenv("COLUMNS", "88")
    shown = [
        block.code
        for block in code_blocks(DOCS / "cli.md")
        if block.language == "text"
        and block.code.startswith("$ xferclass")
        and "--help" in block.code
    ]
    assert len(shown) == 8, "cli.md should show the help of xferclass and its 7 subcommands"
    for text in shown:
        command, _, documented = text.partition("\n")
        with pytest.raises(SystemExit):
            main(command.split()[2:])  # after "$ xferclass"
        printed = capsys.readouterr().out
        # Compare words, not line breaks: argparse wraps to the terminal's width.
        assert printed.split() == documented.split(), f"docs/cli.md is out of date for {command}"


def test_pages_are_short() -> None:
    """A guide says what a user can do in the fewest words that are still exact; the
    history goes to CHANGELOG.md and the measurements to benchmarks/results/."""
    pages = [page for page in DOCS.rglob("*.md") if not {"_ext", "api"} & set(page.parts)]
    long = {
        page.name: count
        for page in pages
        if page.name not in LONG_PAGES
        and (count := len(page.read_text(encoding="utf-8").splitlines())) > MAX_PAGE_LINES
    }
    assert not long, f"pages over {MAX_PAGE_LINES} lines: {long}"


_LINK = re.compile(r"\]\((?P<path>[^()\s#]*\.md)?(?:#(?P<anchor>[^()\s]+))?\)")


def _anchors(page: Path) -> set[str]:
    """The ids MkDocs gives the headings of ``page`` (Python-Markdown's ``toc``), and the
    object paths of its ``::: name`` API entries (mkdocstrings' headings)."""
    markdown = pytest.importorskip("markdown")
    converter = markdown.Markdown(extensions=["toc", "tables", "fenced_code", "admonition"])
    text = page.read_text(encoding="utf-8")
    converter.convert(text)
    found = {line[4:].strip() for line in text.splitlines() if line.startswith("::: ")}
    tokens = list(converter.toc_tokens)
    while tokens:
        token = tokens.pop()
        found.add(token["id"])
        tokens += token["children"]
    return found


def test_links_between_pages_reach_a_heading() -> None:
    """``[...](page.md#anchor)`` in README.md and docs/ names a page and a heading that
    exist (mkdocs build --strict checks the same, with ``validation: anchors``)."""
    broken = []
    for page in [*sorted(DOCS.rglob("*.md")), ROOT / "README.md"]:
        if "_ext" in page.parts:
            continue
        for match in _LINK.finditer(page.read_text(encoding="utf-8")):
            if match["path"] is None and match["anchor"] is None:
                continue
            target = (page.parent / match["path"]).resolve() if match["path"] else page
            if not target.is_file():
                broken.append(f"{page.name}: {match.group(0)} (no such page)")
            elif match["anchor"] and match["anchor"] not in _anchors(target):
                broken.append(f"{page.name}: {match.group(0)} (no such heading)")
    assert not broken, broken
