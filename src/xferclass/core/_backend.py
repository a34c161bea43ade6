"""What each Keras backend can do here, checked where it matters.

xferclass runs on the TensorFlow, JAX and PyTorch backends of Keras 3 (``KERAS_BACKEND``).
tf.data stays the input pipeline on all three, and TensorFlow stays a dependency.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

from ._errors import MissingDependencyError, UnsupportedBackendError

__all__ = ["TRAINING_BACKENDS", "check_training_backend", "import_keras"]

#: The environment as it was before xferclass imported Keras and its backend, which
#: set variables of their own (PyTorch's OpenMP settings, for one); a child process on
#: another backend starts from this (see :func:`xferclass.export`).
STARTING_ENVIRONMENT = dict(os.environ)
#: The extra that installs each backend's package.
_EXTRAS = {"jax": "jax", "jaxlib": "jax", "torch": "torch"}


def import_keras() -> None:
    """Import Keras, or say in one line which extra the chosen backend needs.

    Keras imports its backend's package when it is first imported; a missing one
    surfaces as a bare ``ModuleNotFoundError`` from deep inside Keras.
    """
    try:
        importlib.import_module("keras")
    except ModuleNotFoundError as error:
        root = (error.name or "").split(".")[0]
        if root not in _EXTRAS:
            raise
        backend = os.environ.get("KERAS_BACKEND", "")
        raise MissingDependencyError(
            f"KERAS_BACKEND={backend} needs {root}, which is not installed; "
            f'pip install "xferclass[{_EXTRAS[root]}]"'
        ) from None


#: The Keras backends that train; Keras's NumPy and OpenVINO backends run inference only.
TRAINING_BACKENDS = ("tensorflow", "jax", "torch")


def check_training_backend(strategy: Any = None) -> None:
    """Raise :class:`UnsupportedBackendError` when this Keras backend cannot train, or
    cannot take ``strategy`` (a tf.distribute strategy runs on TensorFlow only)."""
    import keras

    backend = keras.backend.backend()
    if backend not in TRAINING_BACKENDS:
        raise UnsupportedBackendError(
            f"the {backend!r} Keras backend runs inference only; train with "
            "KERAS_BACKEND=tensorflow, jax or torch (a saved model loads on any of them)"
        )
    if strategy is not None and backend != "tensorflow":
        raise UnsupportedBackendError(
            f"strategy= takes a tf.distribute strategy, which runs on the TensorFlow backend "
            f"only, not on {backend!r}; on JAX, set keras.distribution.DataParallel() with "
            "keras.distribution.set_distribution before building the model instead"
        )


import_keras()
