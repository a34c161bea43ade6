"""Every error xferclass raises on bad input is an XferclassError.

The walk reads every ``raise`` statement in ``src/`` with :mod:`ast` and fails
on one that creates a built-in exception (``ValueError(...)``, ``TypeError``,
...): those must be the classes of :mod:`xferclass.core._errors`, which subclass
both :class:`xferclass.XferclassError` and the built-in that callers catch.
A bare ``raise`` and ``raise error`` (re-raising a caught exception) are fine.
"""

from __future__ import annotations

import ast
import builtins
import logging
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest

import xferclass
from xferclass.core import _errors

SOURCE = Path(xferclass.__file__).parent

#: Internal checks, not bad input: (file, exception class, why).
ALLOWED: dict[tuple[str, str], str] = {}


def _raised_class(node: ast.Raise) -> str | None:
    """The name of the class a ``raise`` creates, or ``None`` for a re-raise."""
    exc = node.exc
    if exc is None:
        return None
    if isinstance(exc, ast.Call):
        exc = exc.func
    if isinstance(exc, ast.Attribute):
        return exc.attr
    if isinstance(exc, ast.Name):
        return exc.id
    return None


def builtin_raises() -> list[str]:
    found = []
    for path in sorted(SOURCE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if not isinstance(node, ast.Raise):
                continue
            name = _raised_class(node)
            cls = getattr(builtins, name, None) if name else None
            if not (isinstance(cls, type) and issubclass(cls, Exception)):
                continue
            if (path.name, name) in ALLOWED:
                continue
            found.append(f"{path.relative_to(SOURCE)}:{node.lineno}: raise {name}")
    return found


def test_no_builtin_exception_is_raised_in_src():
    assert builtin_raises() == []


def test_the_walk_catches_a_builtin_raise(tmp_path, monkeypatch):
    (tmp_path / "bad.py").write_text("def f():\n    raise ValueError('x')\n")
    (tmp_path / "good.py").write_text(
        "def g(e):\n    try:\n        pass\n    except OSError as error:\n        raise\n"
        "    raise e\n"
    )
    monkeypatch.setattr(__import__(__name__), "SOURCE", tmp_path)
    assert builtin_raises() == ["bad.py:2: raise ValueError"]


_CLASSES = [n for n in _errors.__all__ if isinstance(getattr(_errors, n), type)]
_WARNINGS = [n for n in _CLASSES if issubclass(getattr(_errors, n), Warning)]


@pytest.mark.parametrize("name", _WARNINGS)
def test_every_warning_class_is_a_user_warning(name):
    assert issubclass(getattr(_errors, name), UserWarning)


@pytest.mark.parametrize("name", [n for n in _CLASSES if n not in _WARNINGS])
def test_every_error_class_is_an_xferclass_error_and_a_builtin(name):
    cls = getattr(_errors, name)
    assert issubclass(cls, xferclass.XferclassError)
    if cls is not xferclass.XferclassError:
        assert any(base.__module__ == "builtins" and base is not Exception for base in cls.__mro__)


def test_bad_input_errors_are_caught_both_ways():
    from helpers import tiny_dataset, tiny_model

    for catch in (ValueError, xferclass.XferclassError):
        with pytest.raises(catch, match="epochs=-1"):
            xferclass.fit(tiny_model(), tiny_dataset(), epochs=-1, verbose=0)
    with pytest.raises(TypeError, match="model must be a keras.Model"):
        xferclass.fit("model.keras", tiny_dataset(), verbose=0)
    with pytest.raises(xferclass.InvalidArgumentError, match="num_classes=1"):
        xferclass.build_classifier("test_tiny", num_classes=1, weights=None)


# ---------------------------------------------------------------- error contract


def test_a_damaged_imagenet_class_list_is_an_xferclass_error(monkeypatch):
    from xferclass.backbones import _imagenet

    class Damaged:
        def joinpath(self, name: str) -> Any:
            return self

        def read_text(self, encoding: str) -> str:
            return "tench\ngoldfish\n"

    monkeypatch.setattr(_imagenet.resources, "files", lambda package: Damaged())
    _imagenet._class_names.cache_clear()
    try:
        with pytest.raises(xferclass.WeightsUnavailableError, match="has 2 names, not 1000"):
            _imagenet.imagenet_class_names()
    finally:
        monkeypatch.undo()
        _imagenet._class_names.cache_clear()
    assert len(_imagenet.imagenet_class_names()) == 1000


def test_first_line():
    assert _errors.first_line(RuntimeError("  op not supported\nsecond line")) == "op not supported"
    assert _errors.first_line(MemoryError()) == "MemoryError"


def _have(*modules: str) -> bool:
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in modules)


needs_ort = pytest.mark.skipif(
    not _have("onnx", "tf2onnx", "onnxruntime"),
    reason="needs onnx, tf2onnx and onnxruntime (pip install 'xferclass[export]')",
)


@pytest.fixture
def onnx_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    from xferclass.runtime import _runtime

    monkeypatch.setenv("XFERCLASS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(_runtime, "_DECISIONS", {})
    _runtime.open_session.cache_clear()
    yield tmp_path / "cache"
    _runtime.open_session.cache_clear()


@needs_ort
def test_onnxruntime_errors_are_export_errors_with_the_first_line(onnx_cache, tmp_path):
    from helpers import tiny_arrays, tiny_model
    from xferclass.runtime import _runtime
    from xferclass.runtime._common import forward_function

    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not an onnx model")
    with pytest.raises(xferclass.ExportError, match="onnxruntime could not load garbage.onnx") as e:
        _runtime.open_session(garbage, "onnxruntime")
    assert isinstance(e.value, RuntimeError) and "\n" not in str(e.value)
    forward = forward_function(tiny_model(), engine="onnxruntime")
    images, _ = tiny_arrays(2)
    assert forward(images).shape == (2, 3)
    with pytest.raises(xferclass.ExportError, match="onnxruntime could not run") as e:
        forward(images[:, :7, :7])  # the converted model takes 32x32 images
    assert "\n" not in str(e.value) and e.value.__cause__ is not None


@needs_ort
def test_a_runtime_fallback_is_a_warning(onnx_cache, monkeypatch, caplog):
    from helpers import tiny_arrays, tiny_model
    from xferclass.runtime._common import forward_function

    def broken(self: keras.Model, filepath: str, **kwargs: Any) -> None:
        raise ValueError("Unsupported op: SomeOp\ndetails")

    monkeypatch.setattr(keras.Model, "export", broken)
    monkeypatch.setenv("XFERCLASS_CONVERSION_SECONDS", "0")  # so that "auto" converts
    model = tiny_model()
    images, _ = tiny_arrays(96)
    with caplog.at_level(logging.INFO, logger="xferclass"):
        forward = forward_function(model, engine="auto", steps=48)
        for batch in np.split(images, 48):
            forward(batch)
    assert forward.engine == "keras"
    (record,) = [r for r in caplog.records if r.name == "xferclass"]
    assert record.levelno == logging.WARNING
    assert "stays on Keras" in record.getMessage() and "SomeOp" in record.getMessage()


@needs_ort
def test_a_runtime_fallback_is_seen_at_verbose_0(tmp_path):
    """In a plain process (no logging set up), ``verbose=0`` still shows the fallback."""
    script = textwrap.dedent(
        f"""
        import sys
        import keras, numpy as np
        sys.path.insert(0, {str(Path(__file__).parents[1])!r})
        from helpers import tiny_arrays, tiny_model
        import xferclass

        def broken(self, filepath, **kwargs):
            raise ValueError("Unsupported op: SomeOp")

        keras.Model.export = broken
        images, _ = tiny_arrays(128)
        xferclass.predict(tiny_model(), images, batch_size=2, engine="auto", verbose=0)
        print("done")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=900,
        env={
            **__import__("os").environ,
            "XFERCLASS_CACHE_DIR": str(tmp_path),
            "TF_CPP_MIN_LOG_LEVEL": "3",
            "XFERCLASS_CONVERSION_SECONDS": "0",  # so that "auto" converts
        },  # fmt: skip
    )
    assert done.returncode == 0, done.stderr[-2000:]
    (line,) = [line for line in done.stderr.splitlines() if "stays on Keras" in line]
    assert "Unsupported op: SomeOp" in line


@pytest.mark.parametrize("size", [0, -3, 1.5, "big", True, (10,), (10, 0), (10, 2.0), "7"])
def test_one_image_size_check(size):
    import helpers  # noqa: F401  (registers the test_tiny backbone)
    from xferclass.core._args import as_size

    with pytest.raises(xferclass.InvalidArgumentError, match=r"input_size=.* is not an image size"):
        as_size(size, "input_size")
    with pytest.raises(xferclass.InvalidArgumentError, match="is not an image size"):
        xferclass.build_classifier("test_tiny", num_classes=3, weights=None, input_size=size)


def test_image_sizes_that_pass():
    from xferclass.core._args import as_size

    assert as_size(np.int64(7), "size") == (7, 7)
    assert as_size([5, np.int32(6)], "size") == (5, 6)
    assert as_size(np.array([3, 4]), "size") == (3, 4)
