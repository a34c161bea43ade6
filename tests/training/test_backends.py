"""Every Keras backend: the same training, prediction, Grad-CAM and export as on TensorFlow.

Keras picks its backend once per process, so each backend runs
``_backend_script.py`` in a subprocess, from the same initial weights (written
here, on TensorFlow) and on the same batches in the same order. All runs start
together when the first test asks for them, and each test waits for the runs it
compares. JAX is a development dependency and runs in CI; PyTorch's wheel is
large, so its runs skip where it is not installed (see the README for the
command that runs them before a release).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_distribute import relative_distance, trained

import xferclass

SCRIPT = Path(__file__).with_name("_backend_script.py")
# Seconds a run may take before it is killed: an idle 2-core machine needs about two
# minutes for the JAX run (compiling each new shape); this only guards against a hang.
# Two suites and a training job on 2 cores once took the three runs past 20 minutes.
TIMEOUT = 3600
TAGS = ("cache", "nocache", "finetune")
OTHER_BACKENDS = ("jax", "torch")

#: What two backends' runs of the same training must agree on, and how closely.
#: Their kernels differ (XLA or PyTorch's against oneDNN's convolutions, fused or not),
#: not only the order of float32 sums, so one forward pass of the same weights through
#: a random MobileNetV2 differs by about 1e-5 relatively, and a dozen Adam steps carry
#: that into the weights. What the runs compute must agree: probabilities (in [0, 1])
#: to 1e-3 and each epoch's loss to 1e-3 relatively, as the tf.distribute tests ask of
#: two TensorFlow runs.
AGREE = 1e-3
#: The trained weights, as one vector, in relative L2 norm. Ten times ``AGREE``: a
#: weight whose gradient is near zero moves by Adam's full step whatever the sign of
#: the noise, so single weights of the first Dense layer (1,280 x 8, fed by features
#: that differ by 1e-5) drift further than what the model computes. Training moves
#: the weights by far more (``test_training_moved_the_weights`` checks it).
WEIGHTS_AGREE = 1e-2
#: One forward pass of the same weights on another runtime (ONNX Runtime against the
#: backend that exported): float32 sums of some hundred terms per layer, ~1e-5 each.
ONE_PASS = 1e-4
#: Grad-CAM heatmaps in [0, 1]: gradients through the same network, each value a
#: ratio of two sums that differ by float32 rounding; a few 1e-4, bounded with room.
HEATMAPS_AGREE = 1e-2


def installed(backend: str) -> bool:
    return backend == "tensorflow" or importlib.util.find_spec(backend) is not None


class Run:
    """``_backend_script.py`` on one backend in a subprocess, its output in a log file."""

    def __init__(self, name: str, backend: str, folder: Path, devices: int = 1) -> None:
        self.name = name
        self.out = folder / f"{name}.npz"
        self.log = folder / f"{name}.log"
        env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2")
        env["CUDA_VISIBLE_DEVICES"] = ""
        env["JAX_PLATFORMS"] = "cpu"
        if devices > 1:
            env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
        command = [
            sys.executable, str(SCRIPT), str(folder / "initial.keras"),
            str(folder / "wide.keras"), str(self.out), "--devices", str(devices),
        ]  # fmt: skip
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=SCRIPT.parent
            )
        self.deadline = time.monotonic() + TIMEOUT

    def result(self) -> Any:
        try:
            code = self.process.wait(timeout=max(1.0, self.deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            pytest.fail(f"{self.name} ran past {TIMEOUT} s:\n{self.log.read_text()[-3000:]}")
        assert code == 0, f"{self.name} exited {code}:\n{self.log.read_text()[-3000:]}"
        return np.load(self.out)


def _initial_models(folder: Path) -> None:
    """The weights every run starts from: a random MobileNetV2 at 32 px whose BatchNorm
    statistics are set from the training images, and one at 96 px for Grad-CAM."""
    import keras
    from _distribute_script import arrays, calibrate

    images = arrays(48, seed=0)[0]
    for name, size in (("initial", 32), ("wide", 96)):
        keras.utils.set_random_seed(0)
        model = xferclass.build_classifier(
            "mobilenet_v2", num_classes=3, weights=None, input_size=size, head_units=8
        )
        calibrate(model, images if size == 32 else keras.ops.image.resize(images, (96, 96)))
        xferclass.save_model(model, folder / f"{name}.keras")


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Run]]:
    folder = tmp_path_factory.mktemp("backends")
    _initial_models(folder)
    started = {"tensorflow": Run("tensorflow", "tensorflow", folder)}
    for backend in OTHER_BACKENDS:
        if installed(backend):
            started[backend] = Run(backend, backend, folder)
    if installed("jax"):
        started["jax_2_devices"] = Run("jax_2_devices", "jax", folder, devices=2)
    yield started
    for run in started.values():
        if run.process.poll() is None:
            run.process.kill()
            run.process.wait()


def _need(runs: dict[str, Run], name: str) -> Run:
    if name not in runs:
        backend = name.split("_")[0]
        pytest.skip(f"{backend} is not installed (pip install 'xferclass[{backend}]')")
    return runs[name]


def assert_same_training(got: Any, want: Any, tag: str) -> None:
    distance = relative_distance(trained(got, tag), trained(want, tag))
    assert distance < WEIGHTS_AGREE, f"{tag}: weights differ by {distance:.2e} (relative L2)"
    np.testing.assert_allclose(
        got[f"{tag}_predictions"], want[f"{tag}_predictions"], rtol=0, atol=AGREE
    )
    for key in ("loss", "val_loss"):
        if f"{tag}_{key}" in want.files:
            np.testing.assert_allclose(got[f"{tag}_{key}"], want[f"{tag}_{key}"], rtol=AGREE)


@pytest.mark.parametrize("backend", OTHER_BACKENDS)
@pytest.mark.parametrize("tag", TAGS)
def test_training_matches_tensorflow(runs: dict[str, Run], backend: str, tag: str) -> None:
    got = _need(runs, backend).result()
    want = runs["tensorflow"].result()
    assert str(got["backend"]) == backend and str(want["backend"]) == "tensorflow"
    assert_same_training(got, want, tag)


def test_training_moved_the_weights(runs: dict[str, Run]) -> None:
    """What the comparisons tolerate is far below what training changes."""
    result = runs["tensorflow"].result()
    for tag in TAGS:
        assert result[f"{tag}_loss"][-1] < result[f"{tag}_loss"][0]
    initial = xferclass.load_model(Path(runs["tensorflow"].out).with_name("initial.keras"))
    start = [np.asarray(w) for w in initial.trainable_weights]
    assert relative_distance(trained(result, "cache"), start) > 10 * WEIGHTS_AGREE


@pytest.mark.parametrize("backend", OTHER_BACKENDS)
def test_prediction_tta_and_evaluation_match_tensorflow(runs: dict[str, Run], backend: str) -> None:
    got = _need(runs, backend).result()
    want = runs["tensorflow"].result()
    for key in ("predict", "predict_flip"):
        assert got[key].shape == (48, 3)
        np.testing.assert_allclose(got[key], want[key], rtol=0, atol=AGREE)
    np.testing.assert_allclose(got["evaluate"], want["evaluate"], rtol=AGREE, atol=AGREE)


@pytest.mark.parametrize("backend", ("tensorflow", *OTHER_BACKENDS))
def test_onnx_export_runs_like_the_model(runs: dict[str, Run], backend: str) -> None:
    got = _need(runs, backend).result()
    np.testing.assert_allclose(got["onnx"], got["predict"][:8], rtol=0, atol=ONE_PASS)


@pytest.mark.parametrize("backend", ("tensorflow", *OTHER_BACKENDS))
def test_every_export_format_is_written_and_checked(runs: dict[str, Run], backend: str) -> None:
    got = _need(runs, backend).result()
    assert list(got["formats"]) == ["saved_model:1:True", "litert:1:True", "openvino:2:True"]


@pytest.mark.parametrize("backend", ("tensorflow", *OTHER_BACKENDS))
def test_command_line_predicts_on_the_backend(runs: dict[str, Run], backend: str) -> None:
    got = _need(runs, backend).result()
    assert got["cli_probabilities"].shape == (3, 3)
    np.testing.assert_allclose(got["cli_probabilities"], got["cli_reference"], rtol=0, atol=1e-6)
    want = runs["tensorflow"].result()
    np.testing.assert_allclose(got["cli_probabilities"], want["cli_probabilities"], atol=AGREE)


@pytest.mark.parametrize("backend", OTHER_BACKENDS)
def test_the_automatic_recipe_runs_on_the_backend(runs: dict[str, Run], backend: str) -> None:
    got = _need(runs, backend).result()
    want = runs["tensorflow"].result()
    assert json.loads(str(got["auto_floor"])) == json.loads(str(want["auto_floor"]))
    probabilities = got["auto_predict"]
    assert probabilities.shape == (15, 3)  # the PNG half of 3 x 10 images
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("backend", OTHER_BACKENDS)
def test_grad_cam_matches_tensorflow(runs: dict[str, Run], backend: str) -> None:
    got = _need(runs, backend).result()["heatmaps"]
    want = runs["tensorflow"].result()["heatmaps"]
    assert got.shape == want.shape == (4, 32, 32)
    assert want.std() > 0.05, "the heatmaps are flat: nothing to compare"
    np.testing.assert_allclose(got, want, rtol=0, atol=HEATMAPS_AGREE)


def test_jax_data_parallel_on_two_devices_matches_one(runs: dict[str, Run]) -> None:
    got = _need(runs, "jax_2_devices").result()
    want = runs["jax"].result()
    assert int(got["devices"]) == 2
    for tag in TAGS:
        assert int(got[f"{tag}_weight_devices"]) == 2  # replicated on both devices
        assert int(want[f"{tag}_weight_devices"]) == 1
        assert_same_training(got, want, tag)


def _python(code: str, backend: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2", JAX_PLATFORMS="cpu")
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600
    )


def test_an_inference_only_backend_refuses_to_train_and_says_which_to_use() -> None:
    if not installed("jax"):
        pytest.skip("Keras's NumPy backend imports jax, which is not installed")
    done = _python(
        "import numpy as np, keras, xferclass\n"
        "assert keras.backend.backend() == 'numpy'\n"
        "model = xferclass.build_classifier('mobilenet_v2', num_classes=2, weights=None,"
        " input_size=32)\n"
        "x = np.zeros((4, 32, 32, 3), 'float32'); y = np.eye(2, dtype='float32')[[0, 1, 0, 1]]\n"
        "import tensorflow as tf\n"
        "try:\n"
        "    xferclass.fit(model, tf.data.Dataset.from_tensor_slices((x, y)).batch(2))\n"
        "except xferclass.UnsupportedBackendError as error:\n"
        "    print('REFUSED', error)\n",
        "numpy",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "REFUSED the 'numpy' Keras backend runs inference only" in done.stdout
    assert "KERAS_BACKEND=tensorflow, jax or torch" in done.stdout


def test_jax_refuses_a_tf_distribute_strategy_and_names_the_missing_onnx_converter() -> None:
    if not installed("jax"):
        pytest.skip("jax is not installed (pip install 'xferclass[jax]')")
    done = _python(
        "import sys, numpy as np, tensorflow as tf, xferclass\n"
        "try:\n"
        "    xferclass.build_classifier('mobilenet_v2', num_classes=2, weights=None,"
        " input_size=32, strategy=tf.distribute.OneDeviceStrategy('/cpu:0'))\n"
        "except xferclass.UnsupportedBackendError as error:\n"
        "    print('STRATEGY', error)\n"
        "model = xferclass.build_classifier('mobilenet_v2', num_classes=2, weights=None,"
        " input_size=32)\n"
        "sys.modules['jax2onnx'] = None  # as if it were not installed\n"
        "try:\n"
        "    xferclass.export(model, 'never.onnx', format='onnx')\n"
        "except xferclass.MissingDependencyError as error:\n"
        "    print('MISSING', error)\n",
        "jax",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = dict(line.split(" ", 1) for line in done.stdout.splitlines() if " " in line)
    assert "runs on the TensorFlow backend only, not on 'jax'" in lines["STRATEGY"]
    assert "keras.distribution.DataParallel" in lines["STRATEGY"]
    assert "jax2onnx" in lines["MISSING"] and 'pip install "xferclass[jax]"' in lines["MISSING"]


def test_a_backend_whose_package_is_missing_is_named_with_its_extra() -> None:
    missing = next((b for b in OTHER_BACKENDS if not installed(b)), None)
    if missing is None:
        pytest.skip("jax and torch are both installed: no backend package is missing")
    done = _python("import xferclass", missing)
    assert done.returncode != 0
    assert done.stderr.strip().splitlines()[-1] == (
        f"xferclass.core._errors.MissingDependencyError: KERAS_BACKEND={missing} needs {missing}, "
        f'which is not installed; pip install "xferclass[{missing}]"'
    )
