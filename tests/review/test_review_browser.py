"""``xferclass review`` in a real browser: Debian's chromium, driven by Playwright.

The server runs as ``xferclass review`` does, in its own process. The test decides
by clicking and by keyboard, kills the server with SIGKILL, restarts it, checks
that every saved decision is back, applies, trains on the corrected table, and
checks that the data folder is byte-identical outside the review's own folder.
Screenshots go to ``$XFERCLASS_SCREENSHOTS`` when it is set (docs/img takes them
from there), else to the test's temporary folder.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import xferclass
from conftest import make_shape_dataset
from helpers import tiny_model

HERE = Path(__file__).resolve().parent
SERVER = [
    sys.executable, str(HERE / "_serve.py"), "--backbone", "test_tiny", "--weights", "none",
    "--size", "32", "--folds", "3", "--port", "0",
]  # fmt: skip


def _chromium() -> str | None:
    """The chromium binary itself (Debian's /usr/bin/chromium is a shell wrapper)."""
    for path in (
        "/usr/lib/chromium/chromium",
        shutil.which("chromium"),
        shutil.which("chromium-browser"),
    ):
        if path and os.path.isfile(path):
            return path
    return None


CHROMIUM = _chromium()
pytestmark = [
    pytest.mark.skipif(
        CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)"
    ),
]


def tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and ".xferclass" not in p.relative_to(root).parts
    }


def faulty_data(root: Path) -> Path:
    """Shapes with two flipped labels, a training image copied into validation, and noise."""
    make_shape_dataset(root / "train", per_class=8, seed=3)
    make_shape_dataset(root / "validation", per_class=3, seed=4)
    for name in ("circle_00.png", "circle_02.png"):
        (root / "train/circle" / name).rename(root / "train/square" / name)
    shutil.copy(root / "train/triangle/triangle_00.png", root / "validation/triangle/copy.png")
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    import tensorflow as tf

    (root / "validation/circle/noise.png").write_bytes(tf.io.encode_png(noise).numpy())
    return root


class Server:
    """``xferclass review DATA`` in a process of its own."""

    def __init__(self, data: Path) -> None:
        self.process = subprocess.Popen(
            [*SERVER[:2], str(data), *SERVER[2:]], stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, cwd=HERE,
        )  # fmt: skip
        self.url = self._wait_for_url()

    def _wait_for_url(self) -> str:
        assert self.process.stdout is not None
        lines = []
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line and self.process.poll() is not None:
                break
            lines.append(line)
            found = re.search(r"open (http://127\.0\.0\.1:\d+/\?token=\S+)", line)
            if found:
                return found.group(1)
        raise AssertionError("the server printed no URL:\n" + "".join(lines[-40:]))

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=60)
        if self.process.stdout is not None:
            self.process.stdout.close()


def decided(page: Any) -> int:
    return int(page.locator("#progress").inner_text().split(" of ")[0])


def test_a_review_in_chromium_survives_a_killed_server(tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    pytest.importorskip("uvicorn", reason="the review extra is not installed")
    shots = Path(os.environ.get("XFERCLASS_SCREENSHOTS") or tmp_path / "shots")
    shots.mkdir(parents=True, exist_ok=True)
    data = faulty_data(tmp_path / "DATA")
    before = tree(data)
    server = Server(data)
    try:
        # Without the token: 403, and no data.
        bare = server.url.split("?")[0]
        for path in ("", "api/state", "image?path=train/square/circle_00.png"):
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(bare + path, timeout=30)
            assert refused.value.code == 403
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM)
            page = browser.new_page(viewport={"width": 1100, "height": 800})
            page.goto(server.url)
            page.wait_for_selector("#item [data-action], #item p")
            total = int(page.locator("#progress").inner_text().split(" of ")[1].split()[0])
            assert total >= 3
            made = _decide_in_each_view(page, shots)
            assert decided(page) == made
            browser.close()
        server.kill()
        log = data / ".xferclass" / "review.jsonl"
        assert len(log.read_text().splitlines()) == made  # each saved as it was made

        server = Server(data)  # a restart resumes
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM)
            page = browser.new_page(viewport={"width": 1100, "height": 800})
            page.goto(server.url)
            page.wait_for_selector("#item [data-action], #item p")
            assert decided(page) == made
            page.click("#apply")
            page.wait_for_selector("#status:has-text('table written')")
            status = page.locator("#status").inner_text()
            page.screenshot(path=str(shots / "review_applied.png"))
            browser.close()
    finally:
        server.kill()
    table = Path(re.search(r"table written: (\S+) \(", status).group(1))  # type: ignore[union-attr]
    assert table == data / ".xferclass" / "labels.csv"
    assert tree(data) == before  # nothing moved, renamed or deleted
    _train_on(table)


def _decide_in_each_view(page: Any, shots: Path) -> int:
    """Decide in every view that has items, by click and by key; return decisions made."""
    made = 0
    for kind, click, key in (("label", "keep", "x"), ("duplicate", "keep_all", "1"),
                             ("outlier", "exclude", "k")):  # fmt: skip
        page.click(f"nav button[data-kind={kind}]")
        if page.locator("#item [data-action]").count() == 0:
            continue
        page.screenshot(path=str(shots / f"review_{kind}.png"))
        page.click(f"#item button[data-action={click}]")
        made += 1
        page.wait_for_function(
            f"document.querySelector('#progress').textContent.startsWith('{made} of')"
        )
        if (
            page.locator("#item [data-action]").count()
            and "undecided" in page.locator("#decision").inner_text()
        ):
            page.keyboard.press(key)
            made += 1
            page.wait_for_function(
                f"document.querySelector('#progress').textContent.startsWith('{made} of')"
            )
    return made


def _train_on(table: Path) -> None:
    train = xferclass.load_image_dataset(table, 32, split="train", batch_size=8, seed=0)
    validation = xferclass.load_image_dataset(table, 32, split="validation", batch_size=8)
    model = tiny_model()
    history = xferclass.fit(model, train, validation, epochs=2, verbose=0)
    assert len(history.history["val_accuracy"]) == 2
    excluded = {
        os.path.normpath(str(table.parent / row.split(",")[0]))
        for row in table.read_text().splitlines()[1:]
        if row.split(",")[3] == "1"
    }
    assert not excluded & {os.path.normpath(p) for p in train.file_paths}
