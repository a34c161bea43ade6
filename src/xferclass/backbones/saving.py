"""Loading saved models safely, with clear errors."""

from __future__ import annotations

import os
import zipfile

import keras

from ..core._errors import ModelFileError, first_line

__all__ = ["load_model"]

#: What reading a damaged or foreign file raises inside Keras (bad JSON, an
#: unknown class, missing or misshapen weights, a broken zip or HDF5 member).
#: Anything else (``MemoryError``, ``RecursionError``, a TensorFlow resource
#: error) is not the file's fault and goes through as it is.
_FILE_ERRORS = (
    OSError,
    EOFError,
    ValueError,
    KeyError,
    IndexError,
    TypeError,
    AttributeError,
    zipfile.BadZipFile,
)


def load_model(path: str | os.PathLike[str], *, compile: bool = True) -> keras.Model:
    """Load a ``.keras`` model saved by xferclass or Keras, with safe mode on.

    Keras's safe mode refuses to deserialize Lambda layers and other code
    objects, so loading a file cannot run arbitrary code. xferclass models need
    no Lambda layers, so they always load this way.

    Args:
        path: A ``.keras`` file.
        compile: Restore the optimizer and loss as well.

    Returns:
        The model.

    Raises:
        ModelFileError: The file is missing, truncated, or not a Keras model;
            or it is a legacy ``.h5`` / SavedModel, which xferclass does not load.

    Examples:
        >>> model = xferclass.load_model("runs/clothing/model.keras")  # doctest: +SKIP
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ModelFileError(f"model={path!r}: no such file")
    if os.path.isdir(path):
        raise ModelFileError(
            f"model={path!r} is a folder; xferclass loads .keras files (TensorFlow SavedModel "
            "folders can run code and are not supported)"
        )
    if not path.endswith(".keras"):
        raise ModelFileError(
            f"model={path!r} is not a .keras file; legacy .h5 and pickled models can run code "
            "when loaded, so xferclass only loads the .keras format"
        )
    if not zipfile.is_zipfile(path):
        raise ModelFileError(f"model={path!r} is not a Keras model file (truncated or corrupt?)")
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            if "config.json" not in names:
                raise ModelFileError(f"model={path!r} is a zip file but not a Keras model")
            bad = archive.testzip()
            if bad is not None:
                raise ModelFileError(f"model={path!r} is corrupt: {bad} fails its checksum")
        from . import layers  # noqa: F401  (registers xferclass's layers)

        return keras.models.load_model(path, compile=compile, safe_mode=True)
    except ModelFileError:
        raise
    except _FILE_ERRORS as error:
        raise ModelFileError(f"model={path!r} could not be loaded: {first_line(error)}") from error
