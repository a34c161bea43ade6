"""Backbones and the classifier built on them: the registry of backbones, the offline
EfficientNet-Lite weights, ``build_classifier`` (``models``), the layers xferclass puts
inside its models (``layers``), and saving and loading them (``saving``).

It may import ``core``.
"""
