"""The runtimes a frozen forward pass runs on (Keras, ONNX Runtime, OpenVINO), their
conversions and cache, and the checks shared by every pass over a dataset (``_common``).

It may import ``core``, ``data`` and ``backbones``.
"""
