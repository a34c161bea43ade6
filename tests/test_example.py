"""Smoke tests of examples/clothing.py: a whole run in seconds, and its offline failures.

The script runs in a subprocess, as a user runs it. Nothing here needs the network:
downloads are pointed at a closed local port (127.0.0.1:9) or at a local HTTP server.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import json
import os
import subprocess
import sys
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from conftest import make_shape_dataset
from helpers import EXAMPLE, example_module

METRIC_KEYS = {"mae", "mse", "rmse", "r2", "accuracy", "n"}
#: A port nothing listens on: connections are refused at once.
DEAD = "http://127.0.0.1:9"


def _offline_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment of a run that can reach no server and sees no cached files."""
    env = {key: value for key, value in os.environ.items() if "proxy" not in key.lower()}
    env.update(
        HTTP_PROXY=DEAD,
        HTTPS_PROXY=DEAD,
        http_proxy=DEAD,
        https_proxy=DEAD,
        XFERCLASS_CLOTHING_URL=f"{DEAD}/clothing.zip",
        XFERCLASS_CLOTHING_DIR="",
        XFERCLASS_CACHE_DIR=str(tmp_path / "xferclass-cache"),
        KERAS_HOME=str(tmp_path / "keras-home"),
        TF_CPP_MIN_LOG_LEVEL="3",
        CUDA_VISIBLE_DEVICES="",
    )
    env.update(extra)
    return env


def _run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(EXAMPLE), *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=900,  # a guard against a hang, not a timing
    )


def _error_lines(stderr: str) -> list[str]:
    """The script's own error lines (TensorFlow may log other lines to stderr)."""
    return [line for line in stderr.splitlines() if line.startswith("clothing.py: error:")]


@pytest.fixture(scope="module")
def clothing_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """train/, validation/ and test/ folders of 3 classes, like clothing-dataset-small."""
    root = tmp_path_factory.mktemp("clothing")
    for seed, (split, per_class) in enumerate((("train", 6), ("validation", 3), ("test", 3))):
        make_shape_dataset(root / split, per_class=per_class, size=40, seed=seed)
    return root


@pytest.fixture(scope="module")
def example() -> Iterator[ModuleType]:
    """The example imported as a module (it imports TensorFlow only when it runs)."""
    with example_module() as module:
        yield module


@pytest.mark.slow
def test_whole_run_writes_every_output(clothing_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = _run(
        [
            *("--data", str(clothing_dir), "--out", str(out)),
            *"--backbone mobilenet_v2 --weights none --size 32 --epochs 1 --batch-size 8".split(),
            *("--eval-train", "--quiet", "--export", "litert,onnx"),
        ],
        _offline_env(tmp_path),
        tmp_path,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    for name in ("model.keras", "metrics.json", "history.png", "confusion_matrix.png"):
        assert (out / name).stat().st_size > 0, name
    for name in ("model.tflite", "model.onnx"):  # checked against Keras by xferclass.export
        assert (out / name).stat().st_size > 0, name
    assert (out / "predictions.png").stat().st_size > 0

    record = json.loads((out / "metrics.json").read_text())
    assert set(record["metrics"]) == {"train", "validation", "test"}
    for split, expected in (("train", 18), ("validation", 9), ("test", 9)):
        metrics = record["metrics"][split]
        assert METRIC_KEYS <= set(metrics), split
        assert metrics["n"] == expected
        assert 0.0 <= metrics["accuracy"] <= 1.0
        report = metrics["per_class"]
        assert {"circle", "square", "triangle", "macro avg", "weighted avg"} <= set(report)
        assert sum(report[c]["support"] for c in ("circle", "square", "triangle")) == expected
    assert record["evaluated_on"] == "test"
    assert record["config"]["backbone"] == "mobilenet_v2"
    assert record["config"]["recipe"]["name"] == "notebook"
    assert record["config"]["recipe"]["size"] == 32
    assert record["dataset"]["class_names"] == ["circle", "square", "triangle"]
    assert record["timings_s"]["total"] > 0
    assert {"load_data", "build_model", "train", "evaluate"} <= set(record["timings_s"])
    assert record["versions"]["tensorflow"]
    assert record["machine"]["cpu_count"]
    assert len(record["history"]["loss"]) == 1
    assert {"model.tflite", "model.onnx"} <= set(record["files"])
    assert "WARNING: --weights none" in result.stdout
    # Calibrated on the validation split, and an unknown score measured on it, inside the
    # saved model (and so in its exports, which xferclass.export checked).
    assert record["calibration"]["images"] == 9
    assert record["unknown"]["held_out"] == "9 held-out images"
    assert "calibrate_and_unknown" in record["timings_s"]
    import xferclass
    from xferclass.layers import unknown_layer

    layer = unknown_layer(xferclass.load_model(out / "model.keras"))
    assert layer is not None and layer.measured == record["unknown"]


def test_without_data_offline_says_how_to_pass_data(tmp_path: Path) -> None:
    result = _run(["--no-shared", "--out", str(tmp_path / "run")], _offline_env(tmp_path), tmp_path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = _error_lines(result.stderr)
    assert len(lines) == 1, result.stderr
    assert "--data DIR" in lines[0] and "127.0.0.1:9" in lines[0]
    # Nothing half-downloaded is left in the cache.
    datasets = tmp_path / "xferclass-cache" / "datasets"
    assert not datasets.exists() or not any(datasets.iterdir())


def test_without_data_the_shared_env_var_is_skipped_when_empty(tmp_path: Path) -> None:
    # XFERCLASS_CLOTHING_DIR="" (set by _offline_env) skips ../shared without --no-shared.
    result = _run(["--out", str(tmp_path / "run")], _offline_env(tmp_path), tmp_path)
    assert result.returncode == 1
    assert len(_error_lines(result.stderr)) == 1


def test_xception_without_weights_names_the_alternatives(
    clothing_dir: Path, tmp_path: Path
) -> None:
    result = _run(
        ["--data", str(clothing_dir), "--size", "71", "--out", str(tmp_path / "run")],
        _offline_env(tmp_path),
        tmp_path,
    )
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    lines = _error_lines(result.stderr)
    assert len(lines) == 1, result.stderr
    assert "--backbone efficientnet_lite0" in lines[0]
    assert "--weights PATH" in lines[0]
    assert not (tmp_path / "run" / "model.keras").exists()


def test_bad_data_folder_is_one_line(tmp_path: Path) -> None:
    result = _run(["--data", str(tmp_path / "missing")], _offline_env(tmp_path), tmp_path)
    assert result.returncode == 1
    assert _error_lines(result.stderr) == [
        f"clothing.py: error: --data {tmp_path / 'missing'}: no such folder"
    ]


@pytest.fixture
def served_archive(tmp_path: Path) -> Iterator[str]:
    """A GitHub-like archive (one top folder holding train/ ...) on a local HTTP server."""
    source = make_shape_dataset(tmp_path / "source" / "train", per_class=2, size=8)
    archive = tmp_path / "www" / "master.zip"
    archive.parent.mkdir()
    with zipfile.ZipFile(archive, "w") as zipped:
        for file in sorted(source.rglob("*")):
            zipped.write(
                file, Path("clothing-dataset-small-master/train") / file.relative_to(source)
            )
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(archive.parent))
    handler.log_message = lambda *args: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/master.zip"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_download_unpacks_once_into_the_cache(
    example: ModuleType, served_archive: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in [key for key in os.environ if "proxy" in key.lower()]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("XFERCLASS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("XFERCLASS_CLOTHING_URL", served_archive)
    found = example.find_dataset(None, no_shared=True)
    assert found == tmp_path / "cache" / "datasets" / "clothing-dataset-small"
    assert sorted(p.name for p in (found / "train").iterdir()) == ["circle", "square", "triangle"]
    assert [p.name for p in found.parent.iterdir()] == [found.name]  # no temporary leftovers
    # The second time the cache is used: the server is not asked again.
    monkeypatch.setenv("XFERCLASS_CLOTHING_URL", f"{DEAD}/clothing.zip")
    assert example.find_dataset(None, no_shared=True) == found


def test_recipes(example: ModuleType) -> None:
    assert example.recipe_for(None, "xception") == example.NOTEBOOK
    assert example.recipe_for(None, "efficientnet_lite0") == example.BEST_LITE0
    assert example.recipe_for("notebook", "efficientnet_lite0") == example.NOTEBOOK
    notebook = example.NOTEBOOK
    assert (notebook.epochs, notebook.learning_rate, notebook.fine_tune_epochs) == (10, 1e-3, 0)
    assert notebook.augment is None and notebook.dropout == 0 and not notebook.best_epoch
    args = example.build_parser().parse_args(["--epochs", "3", "--augment", "none"])
    changed = example.apply_overrides(example.BEST_LITE0, args)
    assert changed.epochs == 3 and changed.augment is None
    assert changed.size == example.BEST_LITE0.size


def test_export_formats_argument(example: ModuleType) -> None:
    assert example.build_parser().parse_args(["--export", "litert,onnx"]).export == [
        "litert",
        "onnx",
    ]
    assert example.build_parser().parse_args([]).export == []
    with pytest.raises(argparse.ArgumentTypeError, match="formats are saved_model, litert"):
        example.export_formats("litert,coreml")
