"""Deploying a model: export to SavedModel, ONNX, OpenVINO and LiteRT (``export``),
each artifact checked against the model in process.

It may import ``core``, ``data``, ``backbones`` and ``runtime``.
"""
