"""The command line, run in subprocesses as a user would run it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import xferclass
from helpers import tiny_model
from xferclass.cli import main

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "xferclass", *args],
        capture_output=True,
        text=True,
        timeout=900,  # a guard against a hang, not a timing
        env=ENV,
        cwd=cwd,
    )


@pytest.fixture(scope="module")
def trained(tiny_dataset_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "model.keras"
    done = run(
        "train", str(tiny_dataset_dir), "--backbone", "mobilenet_v2", "--weights", "none",
        "--size", "32", "--epochs", "2", "--validation-split", "0.25", "--seed", "0",
        "--out", str(out),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "caching backbone activations for train" in done.stdout
    assert f"model saved to {out}" in done.stdout
    return out


def test_train_writes_a_loadable_model_with_class_names(trained: Path) -> None:
    model = xferclass.load_model(trained)
    from xferclass.runtime._common import model_class_names

    assert model_class_names(model) == ["circle", "square", "triangle"]
    assert model.input_shape == (None, 32, 32, 3)


def test_evaluate_prints_metrics_and_writes_plots(
    trained: Path, tiny_dataset_dir: Path, tmp_path: Path
) -> None:
    done = run("evaluate", str(trained), str(tiny_dataset_dir), "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads(done.stdout)
    assert {"mae", "mse", "rmse", "r2", "accuracy", "n", "ece", "brier"} <= set(metrics)
    assert metrics["n"] == 24 and "training_overlap" in metrics
    # The Brier score sums over the 3 classes what the MSE averages over them.
    assert metrics["brier"] == pytest.approx(3 * metrics["mse"], rel=1e-6)
    assert 0.0 <= metrics["ece"] <= 1.0
    plots = tmp_path / "plots"
    done = run("evaluate", str(trained), str(tiny_dataset_dir), "--plots", str(plots))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "accuracy" in done.stdout and "rmse" in done.stdout and "ece" in done.stdout
    for name in ("confusion_matrix.png", "predictions.png", "top_losses.png"):
        assert (plots / name).stat().st_size > 1000


def test_predict_prints_one_line_per_image(trained: Path, tiny_dataset_dir: Path) -> None:
    images = sorted(str(p) for p in (tiny_dataset_dir / "square").iterdir())[:2]
    done = run("predict", str(trained), *images, "--top", "2")
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 2
    for line, image in zip(lines, images):
        assert line.startswith(image)
        shown = line[len(image) :]
        assert sum(name in shown for name in ("circle", "square", "triangle")) == 2
    done = run("predict", str(trained), *images, "--json")
    rows = json.loads(done.stdout)
    assert [row["image"] for row in rows] == images


def test_backbones_lists_the_registry() -> None:
    done = run("backbones")
    assert done.returncode == 0
    assert "xception" in done.stdout and "299x299" in done.stdout
    assert "efficientnet_lite0" in done.stdout


@pytest.mark.parametrize("command", ["train", "evaluate", "predict", "backbones"])
def test_every_command_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert f"usage: xferclass {command}" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "/no/such/folder"], "path='/no/such/folder' does not exist"),
        (["train", ".", "--backbone", "xceptoin"], "did you mean xception"),
        (["evaluate", "/no/model.keras", "."], "no such file"),
        (["predict", "/no/model.keras", "x.jpg"], "no such file"),
    ],
)
def test_bad_input_gives_a_one_line_error(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(args) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("xferclass: error:") and message in lines[0]


def test_predict_on_a_bad_image_names_it(trained: Path, tmp_path: Path) -> None:
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"<html>not an image</html>")
    done = run("predict", str(trained), str(bad))
    assert done.returncode == 1 and "broken.jpg" in done.stderr and "Traceback" not in done.stderr


def test_predict_in_process_matches_the_model(trained: Path, tiny_dataset_dir: Path) -> None:
    model = xferclass.load_model(trained)
    paths = sorted(str(p) for p in (tiny_dataset_dir / "circle").iterdir())[:3]
    result = xferclass.predict(model, paths)
    images = xferclass.read_images(paths, 32)
    direct = model.predict(images, verbose=0)
    assert result.sources == paths
    assert abs(result.probabilities - direct).max() < 1e-5
    one = xferclass.predict(model, images[0])
    assert len(one) == 1 and abs(one.probabilities[0] - direct[0]).max() < 1e-5


def test_predict_bad_inputs() -> None:
    model = tiny_model()
    with pytest.raises(xferclass.DatasetError, match="shape"):
        xferclass.predict(model, [[1, 2], [3, 4]])
    with pytest.raises(xferclass.DatasetError, match="class_names has 2 names"):
        xferclass.predict(model, [], class_names=["a", "b"])
    with pytest.raises(xferclass.DatasetError, match="do not exist"):
        xferclass.predict(model, ["/no/such.jpg"])


@pytest.mark.parametrize(("given", "used"), [(["--seed", "0"], 0), ([], 1337)])
def test_the_validation_split_uses_the_seed_given(
    given: list[str], used: int, tiny_dataset_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # --seed 0 is a seed like any other (it used to fall back to 1337, like no --seed).
    seen: list[object] = []

    class Stop(Exception):
        pass

    def recording(*args: object, **kwargs: object) -> object:
        seen.append(kwargs.get("seed"))
        raise Stop  # the split is all this test needs; no training

    monkeypatch.setattr(xferclass, "load_image_dataset", recording)
    # --epochs selects the manual route (without recipe flags, train_auto splits).
    argv = ["train", str(tiny_dataset_dir), "--validation-split", "0.25", "--epochs", "1", *given]
    with pytest.raises(Stop):
        main(argv)
    assert seen == [used]
