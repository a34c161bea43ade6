"""xferclass: a folder of labelled images in, a trained image classifier out.

Examples:
    >>> import xferclass
    >>> train = xferclass.load_image_dataset("clothes/train")  # doctest: +SKIP
    >>> model = xferclass.build_classifier(num_classes=len(train.class_names))  # doctest: +SKIP
    >>> xferclass.fit(model, train, epochs=10)  # doctest: +SKIP
"""

from __future__ import annotations

from . import _backend  # noqa: F401 (first: names a missing backend package's extra)
from ._errors import (
    BackboneNotFoundError,
    DatasetError,
    ExportError,
    FallbackWarning,
    InvalidArgumentError,
    InvalidArgumentTypeError,
    MissingDependencyError,
    ModelFileError,
    TrainingError,
    UnsupportedBackendError,
    WeightsUnavailableError,
    XferclassError,
)
from ._facts import DatasetFacts, dataset_facts, with_facts
from ._registry import BackboneSpec, get_backbone, list_backbones, register_backbone
from .auto import AutoPlan, AutoResult, train_auto
from .data import SkippedFilesWarning, is_image_file, load_image_dataset, read_images
from .explain import explain
from .export import export
from .inference import Predictions, predict
from .inspection import Inspection, inspect
from .layers import Preprocessing
from .metrics import evaluate_regression_style
from .models import build_classifier
from .saving import load_model
from .training import fine_tune, fit, make_augmentation, save_model

__version__ = "0.1.0"

__all__ = [
    "AutoPlan",
    "AutoResult",
    "BackboneNotFoundError",
    "BackboneSpec",
    "DatasetError",
    "DatasetFacts",
    "ExportError",
    "UnsupportedBackendError",
    "FallbackWarning",
    "Inspection",
    "InvalidArgumentError",
    "InvalidArgumentTypeError",
    "MissingDependencyError",
    "ModelFileError",
    "Predictions",
    "Preprocessing",
    "SkippedFilesWarning",
    "TrainingError",
    "WeightsUnavailableError",
    "XferclassError",
    "__version__",
    "build_classifier",
    "dataset_facts",
    "evaluate_regression_style",
    "explain",
    "export",
    "fine_tune",
    "fit",
    "get_backbone",
    "inspect",
    "is_image_file",
    "list_backbones",
    "load_image_dataset",
    "load_model",
    "make_augmentation",
    "predict",
    "read_images",
    "register_backbone",
    "save_model",
    "train_auto",
    "with_facts",
]
