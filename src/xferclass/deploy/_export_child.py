"""Export a saved model on the TensorFlow backend, for :func:`xferclass.export` on another.

Run as ``python -m xferclass.deploy._export_child MODEL TARGET FORMAT QUANTIZE [CALIBRATION.npy]``
with ``KERAS_BACKEND=tensorflow``; on failure a line of stderr starting with
:data:`xferclass.export.ERROR_PREFIX` says why.
"""

from __future__ import annotations

import sys


def main(argv: list[str]) -> int:
    # A model compiled on PyTorch names PyTorch's optimizer class, and importing torch
    # in a process that has loaded TensorFlow can segfault (triton's libraries against
    # TensorFlow's). Exporting needs no optimizer: the model loads uncompiled, and
    # torch is kept out.
    sys.modules["torch"] = None  # type: ignore[assignment]
    import numpy as np

    from ..backbones.saving import load_model
    from .export import ERROR_PREFIX, export

    model_path, target, format, quantize, *rest = argv
    calibration = np.load(rest[0]) if rest else None
    try:
        export(
            load_model(model_path, compile=False),
            target,
            format=format,
            quantize=quantize or None,
            calibration=calibration,
        )
    except Exception as error:  # the parent reports the last line
        message = f"{type(error).__name__}: {error}".splitlines()[0]
        print(ERROR_PREFIX + message, file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
