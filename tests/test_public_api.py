"""``xferclass.__all__`` is exactly the public API, and every name in it is real."""

from __future__ import annotations

import inspect

import xferclass

PUBLIC = {
    # the automatic recipe
    "train_auto", "AutoResult", "AutoPlan",
    # models and the registry
    "build_classifier", "list_backbones", "register_backbone", "get_backbone", "BackboneSpec",
    "Preprocessing",
    # data
    "load_image_dataset", "read_images", "is_image_file", "SkippedFilesWarning",
    "DatasetFacts", "dataset_facts", "with_facts",
    # training
    "fit", "fine_tune", "make_augmentation", "save_model", "load_model",
    # evaluation and prediction
    "evaluate_regression_style", "predict", "Predictions", "explain", "calibrate",
    "detect_unknown",
    # deployment
    "export",
    # data quality
    "inspect", "Inspection",
    # errors
    "XferclassError", "BackboneNotFoundError", "DatasetError", "WeightsUnavailableError",
    "ModelFileError", "TrainingError", "InvalidArgumentError", "InvalidArgumentTypeError",
    "MissingDependencyError", "ExportError", "UnsupportedBackendError", "FallbackWarning",
    "__version__",
}  # fmt: skip


def test_all_is_exactly_the_public_api() -> None:
    assert set(xferclass.__all__) == PUBLIC
    assert len(xferclass.__all__) == len(PUBLIC)  # no duplicates


def test_every_public_name_exists_and_is_documented() -> None:
    for name in xferclass.__all__:
        value = getattr(xferclass, name)
        if name != "__version__":
            assert inspect.getdoc(value), f"xferclass.{name} has no docstring"


def test_errors_share_one_base_and_the_builtin_they_stand_for() -> None:
    assert issubclass(xferclass.DatasetError, ValueError)
    assert issubclass(xferclass.BackboneNotFoundError, KeyError)
    assert issubclass(xferclass.InvalidArgumentError, ValueError)
    assert issubclass(xferclass.InvalidArgumentTypeError, TypeError)
    assert issubclass(xferclass.MissingDependencyError, ImportError)
    assert issubclass(xferclass.UnsupportedBackendError, RuntimeError)
    for error in (
        xferclass.BackboneNotFoundError, xferclass.DatasetError, xferclass.ModelFileError,
        xferclass.WeightsUnavailableError, xferclass.TrainingError,
        xferclass.InvalidArgumentError, xferclass.InvalidArgumentTypeError,
        xferclass.MissingDependencyError, xferclass.ExportError, xferclass.UnsupportedBackendError,
    ):  # fmt: skip
        assert issubclass(error, xferclass.XferclassError)


def test_version() -> None:
    from importlib.metadata import version

    assert xferclass.__version__ == version("xferclass")
