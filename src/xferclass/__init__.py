"""xferclass: a folder of labelled images in, a trained image classifier out.

The package is laid out as the pipeline a user's images flow through; each subpackage
imports only those listed before it (``tests/test_imports.py`` checks it):

- ``core``: errors, arguments, logging, files, the Keras backend check;
- ``data``: reading folders and label tables, decoding, checking and resizing images;
- ``backbones``: the registry, the classifier (``models``), its layers, saving and loading;
- ``runtime``: the runtimes a forward pass runs on (Keras, ONNX Runtime, OpenVINO);
- ``training``: ``fit``, ``fine_tune``, their caches, and the record of what a model
  trained on;
- ``evaluation``: metrics, prediction, test-time views, plots, Grad-CAM, data inspection
  and the HTML report;
- ``auto``: the automatic recipe;
- ``deploy``: export to SavedModel, ONNX, OpenVINO and LiteRT.

The modules of the earlier flat layout (``xferclass.layers``, ``xferclass.metrics``,
``xferclass.report``, ...) still import, as the same module objects.

Examples:
    >>> import xferclass
    >>> train = xferclass.load_image_dataset("clothes/train")  # doctest: +SKIP
    >>> model = xferclass.build_classifier(num_classes=len(train.class_names))  # doctest: +SKIP
    >>> xferclass.fit(model, train, epochs=10)  # doctest: +SKIP
"""

from __future__ import annotations

from .core import _backend  # noqa: F401 (first: names a missing backend package's extra)

# isort: split
from .auto import AutoPlan, AutoResult, train_auto
from .backbones import layers, models, saving  # noqa: F401 (flat-layout modules: see the end)
from .backbones._registry import BackboneSpec, get_backbone, list_backbones, register_backbone
from .backbones.layers import Preprocessing
from .backbones.models import build_classifier
from .backbones.saving import load_model
from .core._errors import (
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
from .data import SkippedFilesWarning, is_image_file, load_image_dataset, read_images
from .data._facts import DatasetFacts, dataset_facts, with_facts
from .deploy.export import export
from .evaluation import inference, inspection, metrics, plots, report  # noqa: F401 (as above)
from .evaluation.calibration import calibrate
from .evaluation.explain import explain
from .evaluation.inference import Predictions, predict
from .evaluation.inspection import Inspection, inspect
from .evaluation.metrics import evaluate_regression_style
from .evaluation.unknown import detect_unknown
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
    "calibrate",
    "dataset_facts",
    "detect_unknown",
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


def _keep_flat_module_paths() -> None:
    """The module paths of the flat layout name the same module objects as before:
    ``import xferclass.layers`` is ``xferclass.backbones.layers``. ``xferclass.explain``
    and ``xferclass.export`` stay the functions, as they always were."""
    import importlib
    import sys

    moved = {
        "explain": "evaluation.explain", "export": "deploy.export",
        "inference": "evaluation.inference", "inspection": "evaluation.inspection",
        "layers": "backbones.layers", "metrics": "evaluation.metrics",
        "models": "backbones.models", "plots": "evaluation.plots",
        "report": "evaluation.report", "saving": "backbones.saving",
    }  # fmt: skip
    for old, new in moved.items():
        sys.modules[f"{__name__}.{old}"] = importlib.import_module(f"{__name__}.{new}")


_keep_flat_module_paths()
