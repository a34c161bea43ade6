"""Ctrl-C: training stops, the best weights stay, the model is saved, the CLI exits 130."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

import xferclass
from helpers import SIZE  # noqa: F401  (registers the test_tiny backbone)
from xferclass.cli import main


class InterruptAfter(keras.callbacks.Callback):
    """Raises KeyboardInterrupt at the start of epoch ``epoch`` (0-based), as Ctrl-C would."""

    def __init__(self, epoch: int) -> None:
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        if epoch == self.epoch:
            raise KeyboardInterrupt


def test_cli_train_saves_the_model_and_exits_130_on_ctrl_c(
    tiny_dataset_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    real_fit = xferclass.fit
    seen = {}

    def fit(model, *args, **kwargs):
        seen["model"] = model
        return real_fit(model, *args, callbacks=[InterruptAfter(2)], **kwargs)

    monkeypatch.setattr(xferclass, "fit", fit)
    out = tmp_path / "model.keras"
    status = main([
        "train", str(tiny_dataset_dir), "--backbone", "test_tiny", "--weights", "none",
        "--size", "32", "--epochs", "6", "--validation-split", "0.25", "--seed", "0",
        "--out", str(out), "--quiet",
    ])  # fmt: skip
    assert status == 130
    assert f"interrupted; the model so far is saved to {out}" in capsys.readouterr().err
    saved = xferclass.load_model(out)
    for a, b in zip(saved.get_weights(), seen["model"].get_weights()):
        np.testing.assert_array_equal(a, b)
