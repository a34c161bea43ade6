"""xferclass: a folder of labelled images in, a trained image classifier out."""

from __future__ import annotations

from ._errors import (
    BackboneNotFoundError,
    DatasetError,
    ModelFileError,
    TrainingError,
    WeightsUnavailableError,
    XferclassError,
)
from ._registry import BackboneSpec, get_backbone, list_backbones, register_backbone
from .layers import Preprocessing
from .models import build_classifier

__version__ = "0.1.0"

__all__ = [
    "BackboneNotFoundError",
    "BackboneSpec",
    "DatasetError",
    "ModelFileError",
    "Preprocessing",
    "TrainingError",
    "WeightsUnavailableError",
    "XferclassError",
    "__version__",
    "build_classifier",
    "get_backbone",
    "list_backbones",
    "register_backbone",
]
