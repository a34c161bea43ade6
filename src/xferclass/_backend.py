"""What each Keras backend can do here, checked where it matters.

xferclass runs on the TensorFlow, JAX and PyTorch backends of Keras 3 (``KERAS_BACKEND``).
tf.data stays the input pipeline on all three, and TensorFlow stays a dependency.
"""

from __future__ import annotations

from typing import Any

import keras

from ._errors import UnsupportedBackendError

__all__ = ["TRAINING_BACKENDS", "check_training_backend"]

#: The Keras backends that train; Keras's NumPy and OpenVINO backends run inference only.
TRAINING_BACKENDS = ("tensorflow", "jax", "torch")


def check_training_backend(strategy: Any = None) -> None:
    """Raise :class:`UnsupportedBackendError` when this Keras backend cannot train, or
    cannot take ``strategy`` (a tf.distribute strategy runs on TensorFlow only)."""
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
