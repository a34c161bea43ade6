"""The ``xferclass`` command line: train, evaluate, predict, export, backbones."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from .core._errors import InvalidArgumentError

__all__ = ["main"]

_EPILOG = """examples:
  xferclass train data/clothes --budget 10m --out model.keras
  xferclass train data/clothes --backbone efficientnet_lite0 --epochs 10 --out model.keras
  xferclass train labels.csv --root images/ --label-separator "|"
  xferclass evaluate model.keras data/clothes/test --plots plots/
  xferclass predict model.keras shoe.jpg hat.png
  xferclass export model.keras model.onnx --format onnx
  xferclass inspect data/clothes --report inspection.html --json issues.json
  xferclass review data/clothes
  xferclass explain model.keras shoe.jpg --out gradcam/
  xferclass report model.keras data/clothes/test --out report.html
  xferclass detect-unknown model.keras data/clothes/train --held-out \
      data/clothes/validation --out with-unknown.keras
  xferclass predict with-unknown.keras photo.jpg --unknown
  xferclass backbones

Score a model on images it did not train on: the automatic recipe (the first line)
trains on data/clothes/train and data/clothes/validation, so it is evaluated on
data/clothes/test; evaluate and report say how many scored images it trained on.
"""


#: Budget of ``xferclass train`` when no --budget is given.
_DEFAULT_BUDGET = "10m"


def _weights(value: str) -> str | None:
    return None if value.lower() in ("none", "random") else value


def _size(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--size must be an int, got {value!r}") from None


def _add_tta(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tta",
        nargs="?",
        const="flip",
        default="none",
        choices=["none", "flip", "crops", "rotations"],
        metavar="MODE",
        help="test-time augmentation: 'flip' (what --tta alone means) averages each image's "
        "probabilities with its mirror's, 'crops' also with five crops', 'rotations' with "
        "both mirrors and both quarter turns (default: none; a model from the automatic "
        "recipe already averages the views it chose, with no flag)",
    )


def _add_engine(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--engine",
        default="auto",
        choices=["auto", "keras", "onnxruntime", "openvino"],
        help=f"runtime of {what} (default: auto, the faster of Keras and an installed "
        "ONNX runtime)",
    )


def _parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="xferclass",
        description="Train, evaluate and use image classifiers on pretrained backbones.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"xferclass {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    _add_train(commands)
    _add_evaluate(commands)
    _add_predict(commands)
    _add_export(commands)
    _add_inspect(commands)
    _add_explain(commands)
    _add_detect_unknown(commands)
    _add_review(commands)

    commands.add_parser(
        "backbones",
        help="list the registered backbones",
        description="List the backbones build_classifier accepts, with their input sizes.",
    )
    return parser


def _add_train(commands: Any) -> None:
    train = commands.add_parser(
        "train",
        help="train a classifier on a folder of labelled images",
        description=(
            "Train a classifier. DATA_DIR holds one subfolder per class, or train/ and "
            "validation/ folders that each hold one subfolder per class; or it is a CSV "
            "label table (image path and label columns; a split column's 'train' and "
            "'validation' rows are used as such). Labels joined by --label-separator make a "
            "multi-label classifier. For a folder, without recipe flags (--epochs, --size, "
            "...) the automatic recipe (xferclass.train_auto) chooses backbone, input size "
            "and schedule within --budget; recipe flags without --budget train exactly as "
            "asked; with --budget they override the automatic choices. The automatic recipe "
            "cross-validates over train/ and validation/ together and trains on both: "
            "evaluate its model on other images (a test/ folder)."
        ),
    )
    train.add_argument(
        "data_dir", metavar="DATA_DIR", help="folder of class subfolders, or a .csv label table"
    )
    train.add_argument(
        "--backbone",
        default=None,
        help="backbone name (default: chosen by the automatic recipe; xception with recipe flags)",
    )
    train.add_argument(
        "--budget",
        default=None,
        help=f"time budget of the automatic recipe: 90s, 10m, 1h, ... (default: {_DEFAULT_BUDGET})",
    )
    train.add_argument(
        "--metric",
        default="accuracy",
        choices=["accuracy", "balanced_accuracy", "macro_f1"],
        help="what the automatic recipe maximises in every choice (default: accuracy)",
    )
    train.add_argument("--epochs", type=int, default=None, help="epochs of the head (default: 10)")
    train.add_argument("--out", default="model.keras", help="where to save the model (.keras)")
    train.add_argument("--size", type=_size, default=None, help="input side in pixels")
    train.add_argument("--batch-size", type=int, default=32, help="batch size (default: 32)")
    train.add_argument(
        "--learning-rate", type=float, default=None, help="Adam learning rate (default: 1e-3)"
    )
    train.add_argument(
        "--head-units", type=int, default=None, help="hidden units of the head (default: 128)"
    )
    train.add_argument(
        "--dropout", type=float, default=None, help="dropout before the output (default: 0)"
    )
    train.add_argument(
        "--weights",
        type=_weights,
        default="imagenet",
        help="'imagenet' (default), 'none' for random, or a weights file",
    )
    train.add_argument(
        "--validation", default=None, help="validation folder (default: DATA_DIR/validation)"
    )
    train.add_argument(
        "--validation-split",
        type=float,
        default=None,
        help="hold out this fraction of DATA_DIR for validation when there is no validation folder",
    )
    train.add_argument(
        "--augment", default=None, choices=["flip", "light", "strong"], help="augmentation preset"
    )
    _add_fine_tune_flags(train)
    train.add_argument("--seed", type=int, default=None, help="random seed")
    train.add_argument("--quiet", action="store_true", help="no progress output")
    train.add_argument(
        "--unknown", action="store_true",
        help="then give the model an unknown score, as detect-unknown does: held out "
        "against generated foreign images on the validation images (each training image "
        "against the others for the automatic recipe, which trains on both); one more "
        "pass over the images, after the budget",
    )  # fmt: skip
    _table_arguments(train)
    _add_engine(train, "the frozen passes that fill the cache")


def _add_fine_tune_flags(train: argparse.ArgumentParser) -> None:
    train.add_argument(
        "--fine-tune-epochs",
        type=int,
        default=None,
        help="after training the head, fine-tune the top of the backbone for this many epochs",
    )
    train.add_argument(
        "--unfreeze",
        type=float,
        default=None,
        help="fraction of backbone layers to fine-tune (default: 0.2)",
    )


def _add_evaluate(commands: Any) -> None:
    evaluate = commands.add_parser(
        "evaluate",
        help="evaluate a saved model on a folder of labelled images",
        description=(
            "Print accuracy, MAE, MSE, RMSE and R² of MODEL on DATA_DIR (F1 and mean "
            "average precision too for a multi-label model), then precision, recall, F1 "
            "and support per class, worst F1 first. When MODEL records the files it trained "
            "on, also how many of the images scored it trained on: those scores are not held "
            "out."
        ),
    )
    evaluate.add_argument("model", metavar="MODEL", help="a .keras model file")
    evaluate.add_argument(
        "data_dir", metavar="DATA_DIR", help="folder of class subfolders, or a .csv label table"
    )
    evaluate.add_argument("--batch-size", type=int, default=32, help="batch size (default: 32)")
    evaluate.add_argument("--plots", metavar="DIR", default=None, help="also write plots here")
    evaluate.add_argument("--json", action="store_true", help="print the metrics as JSON")
    evaluate.add_argument(
        "--per-class", action="store_true", help="with --json: add the per-class report"
    )
    _table_arguments(evaluate)
    evaluate.add_argument(
        "--split", default=None,
        help="rows of the table's split column to score (default: its test rows)",
    )  # fmt: skip
    _add_tta(evaluate)
    _add_engine(evaluate, "the forward pass")


def _add_predict(commands: Any) -> None:
    predict = commands.add_parser(
        "predict",
        help="classify image files with a saved model",
        description="Print the most probable classes of each IMAGE.",
    )
    predict.add_argument("model", metavar="MODEL", help="a .keras model file")
    predict.add_argument("images", metavar="IMAGE", nargs="+", help="image files")
    predict.add_argument("--top", type=int, default=1, help="classes to show per image")
    predict.add_argument("--json", action="store_true", help="print the results as JSON")
    predict.add_argument(
        "--unknown", action="store_true",
        help="answer 'unknown' for images unlike the training images, with each image's "
        "unknown score (a model from 'xferclass detect-unknown')",
    )  # fmt: skip
    _add_tta(predict)
    _add_engine(predict, "the forward pass")


def _add_detect_unknown(commands: Any) -> None:
    detect = commands.add_parser(
        "detect-unknown",
        help="give a saved model an unknown score, measured on held-out and foreign images",
        description=(
            "Measure which unknown score tells TRAIN's kind of images from foreign ones (the "
            "top class probability, or the distance to the nearest training images), set its "
            "threshold so that --rejection of the held-out images are rejected, and save the "
            "model with the score as its second output to OUT. 'xferclass predict --unknown' "
            "then answers 'unknown' above the threshold; exports carry the score."
        ),
    )  # fmt: skip
    detect.add_argument("model", metavar="MODEL", help="a saved .keras model")
    detect.add_argument("train", metavar="TRAIN", help="the training images (a folder)")
    detect.add_argument("--out", metavar="OUT", required=True, help="the .keras file to write")
    detect.add_argument(
        "--held-out", metavar="DIR", default=None,
        help="in-distribution images the model did not train on (the validation folder); "
        "without them, each training image is scored against the others",
    )  # fmt: skip
    detect.add_argument(
        "--foreign", metavar="DIR", default=None,
        help="images that belong to no class (default: generated noise, colours and shapes)",
    )  # fmt: skip
    detect.add_argument(
        "--rejection", type=float, default=0.05,
        help="share of held-out images the threshold rejects (default: 0.05)",
    )  # fmt: skip
    detect.add_argument("--json", action="store_true", help="print what was measured as JSON")
    detect.add_argument("--quiet", action="store_true", help="no progress output")


def _detect_unknown(args: argparse.Namespace) -> int:
    import xferclass
    from xferclass.backbones.layers import unknown_layer

    if os.path.exists(args.out):
        raise InvalidArgumentError(f"--out {args.out} already exists; choose another path")
    model = xferclass.load_model(args.model)
    scored = xferclass.detect_unknown(
        model, args.train, held_out=args.held_out, foreign=args.foreign,
        rejection=args.rejection, verbose=0 if args.quiet else 1,
    )  # fmt: skip
    xferclass.save_model(scored, args.out)
    measured = unknown_layer(scored).measured  # type: ignore[union-attr]
    if args.json:
        print(json.dumps(measured, indent=2))
        return 0
    print(f"{'score':<14}{'AUROC':>7}{'held-out rejected':>19}{'foreign rejected':>18}")
    for row in measured["candidates"]:
        name = row["score"] + (f" k={row['k']}" if row["k"] else "")
        print(f"{name:<14}{row['auroc']:>7.3f}{row['held_out_rejected']:>19.1%}"
              f"{row['foreign_rejected']:>18.1%}")  # fmt: skip
    k = f" k={measured['k']}" if measured["k"] else ""
    print(f"kept {measured['score']}{k}, threshold {measured['threshold']:.4g}: measured on "
          f"{measured['held_out']} against {measured['foreign']}")  # fmt: skip
    print(f"wrote {args.out}")
    return 0


def _add_export(commands: Any) -> None:
    export = commands.add_parser(
        "export",
        help="export a saved model to SavedModel, LiteRT, ONNX or OpenVINO",
        description=(
            "Export MODEL for use without xferclass: raw RGB pixels in, probabilities out, "
            "the class names inside. OUT is a folder (saved_model), a .tflite, a .onnx, or "
            "an .xml (openvino; its .bin goes beside it)."
        ),
    )
    export.add_argument("model", metavar="MODEL", help="a .keras model file")
    export.add_argument("out", metavar="OUT", help="where to write the artifact")
    export.add_argument(
        "--format",
        required=True,
        choices=["saved_model", "litert", "onnx", "openvino"],
        help="the artifact's format",
    )
    export.add_argument(
        "--quantize",
        default=None,
        choices=["float16", "dynamic", "int8"],
        help="LiteRT quantization (int8 needs --calibration)",
    )
    export.add_argument(
        "--calibration",
        metavar="DIR",
        default=None,
        help="folder of class subfolders of representative images (for --quantize int8)",
    )
    export.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")


def _table_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--root", default=None, help="folder of a table's relative image paths")
    parser.add_argument("--path-column", default=None, help="the table's image path column")
    parser.add_argument("--label-column", default=None, help="the table's label column")
    parser.add_argument(
        "--label-separator", default=None, help="split labels on this string (multi-label)"
    )
    parser.add_argument(
        "--max-pixels", type=int, default=None, help="skip images with more pixels than this"
    )


def _table_options(args: argparse.Namespace) -> dict[str, Any]:
    """load_image_dataset options from the command line (table ones only for tables)."""
    from .data._tables import is_label_table

    options: dict[str, Any] = {"max_pixels": args.max_pixels}
    table = {
        "root": args.root, "path_column": args.path_column, "label_column": args.label_column,
        "label_separator": args.label_separator,
    }  # fmt: skip
    if is_label_table(args.data_dir):
        options.update(table)
    elif any(value is not None for value in table.values()):
        given = ", ".join(f"--{k.replace('_', '-')}" for k, v in table.items() if v is not None)
        raise InvalidArgumentError(
            f"{given} apply to a .csv label table, not to the folder {args.data_dir}"
        )
    return options


def _table_splits(args: argparse.Namespace) -> tuple[bool, bool]:
    """Whether the table has a split column, and whether it has validation rows."""
    from .data._tables import split_values

    values = split_values(args.data_dir, path_column=args.path_column)
    return values is not None, bool(values and "validation" in values)


def _split_dirs(data_dir: str, validation: str | None) -> tuple[str, str | None]:
    train_dir = os.path.join(data_dir, "train")
    if os.path.isdir(train_dir):
        if validation is None:
            for name in ("validation", "val", "valid"):
                candidate = os.path.join(data_dir, name)
                if os.path.isdir(candidate):
                    validation = candidate
                    break
        return train_dir, validation
    return data_dir, validation


#: Options of label tables and pixel limits, which only the manual route reads.
_TABLE_OPTIONS = ("root", "path_column", "label_column", "label_separator", "max_pixels")

#: Recipe flags: given without --budget they select the manual recipe.
_RECIPE_FLAGS = {
    "epochs": "head_epochs", "size": "size", "learning_rate": "head_learning_rate",
    "fine_tune_epochs": "fine_tune_epochs", "unfreeze": None, "augment": "augment",
    "head_units": None, "dropout": None,
}  # fmt: skip


def _train(args: argparse.Namespace) -> int:
    given = [name for name in _RECIPE_FLAGS if getattr(args, name) is not None]
    table = [name for name in _TABLE_OPTIONS if getattr(args, name, None) is not None]
    if table:
        # The automatic recipe reads a folder, or a table whose paths need no options.
        if args.budget is not None:
            what = ", ".join("--" + name.replace("_", "-") for name in table)
            raise InvalidArgumentError(
                f"--budget (the automatic recipe) reads a folder of class subfolders or a "
                f"label table without {what}; drop --budget and give the recipe flags "
                "(--epochs, ...)"
            )
    elif args.budget is not None or not given:
        return _train_auto(args, given)
    for name, default in (
        ("epochs", 10),
        ("learning_rate", 1e-3),
        ("head_units", 128),
        ("dropout", 0.0),
        ("fine_tune_epochs", 0),
        ("unfreeze", 0.2),
    ):
        if getattr(args, name) is None:
            setattr(args, name, default)  # fmt: skip
    if args.backbone is None:
        args.backbone = "xception"
    return _train_manual(args)


def _train_auto(args: argparse.Namespace, given: list[str]) -> int:
    import logging

    import xferclass

    unsupported = [name for name in given if _RECIPE_FLAGS[name] is None]
    if args.engine != "auto":
        raise xferclass.InvalidArgumentError(
            f"--engine {args.engine} cannot be combined with the automatic recipe (--budget, "
            "or no recipe flags): it times the runtimes and takes the faster for its frozen "
            "passes itself; drop --engine, or give recipe flags (--epochs, ...) without --budget"
        )
    if unsupported:
        flags = ", ".join("--" + name.replace("_", "-") for name in unsupported)
        raise xferclass.InvalidArgumentError(
            f"{flags} cannot be combined with --budget (the automatic recipe keeps the "
            "default head and a frozen backbone); drop --budget to train exactly as asked"
        )
    budget = args.budget
    if budget is None:
        budget = _DEFAULT_BUDGET
        print(f"no --budget given: the automatic recipe uses the default budget of {budget}")
    overrides: dict[str, Any] = {str(_RECIPE_FLAGS[name]): getattr(args, name) for name in given}
    if "size" in overrides and isinstance(overrides["size"], tuple):
        overrides["size"] = overrides["size"][0]
    train_dir, validation_dir = _split_dirs(args.data_dir, args.validation)
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("xferclass: %(message)s"))
    log = logging.getLogger("xferclass")
    level = log.level
    if not args.quiet:
        log.addHandler(handler)
        log.setLevel(logging.INFO)
    try:
        result = xferclass.train_auto(
            train_dir, validation_dir, budget=budget, backbone=args.backbone,
            weights=args.weights, seed=args.seed if args.seed is not None else 0,
            batch_size=args.batch_size, metric=args.metric, overrides=overrides, out=args.out,
            verbose=0,
        )  # fmt: skip
    finally:
        log.removeHandler(handler)
        log.setLevel(level)
    estimate = result.report["estimate"]
    print(
        f"held-out estimate: {estimate['metric']} {estimate['value']:.4f} ± "
        f"{estimate['standard_error']:.4f} (floor {estimate['floor_value']:.4f}); "
        f"model saved to {args.out}"
    )
    if args.unknown:
        from xferclass.evaluation.unknown import _image_files

        known = [f for folder in (train_dir, validation_dir) if folder
                 for f in _image_files(folder)]  # fmt: skip
        _add_unknown(result.model, known, None, args)
    return 0


def _refuse_unknown_for_multi_label(args: argparse.Namespace, multi_label: bool) -> None:
    """``--unknown`` is refused before training on multi-label data."""
    if args.unknown and multi_label:
        raise InvalidArgumentError(
            "--unknown needs a single-label classifier: a multi-label one may rightly find "
            "none of its classes in an image"
        )


def _add_unknown(model: Any, known: Any, held_out: Any, args: argparse.Namespace) -> None:
    """``xferclass train --unknown``: the model with an unknown score, saved over --out."""
    import xferclass
    from xferclass.backbones.layers import unknown_layer

    scored = xferclass.detect_unknown(
        model, known, held_out=held_out, seed=args.seed or 0, verbose=0 if args.quiet else 1
    )
    xferclass.save_model(scored, args.out)
    measured = unknown_layer(scored).measured  # type: ignore[union-attr]
    k = f" k={measured['k']}" if measured["k"] else ""
    print(
        f"unknown score: {measured['score']}{k}, rejecting {measured['held_out_rejected']:.1%} "
        f"of {measured['held_out']} and {measured['foreign_rejected']:.1%} of "
        f"{measured['foreign']}; model saved to {args.out}"
    )


def _train_manual(args: argparse.Namespace) -> int:
    import xferclass
    from xferclass.data._facts import class_names_of, facts_of

    verbose = 0 if args.quiet else 1
    spec = xferclass.get_backbone(args.backbone)
    size = (args.size, args.size) if args.size else spec.default_size
    options = _table_options(args)
    if "root" in options:  # a label table
        has_splits, has_validation = _table_splits(args)
        train_dir, validation_dir = args.data_dir, None
        if has_splits:
            options["split"] = "train"
    else:
        train_dir, validation_dir = _split_dirs(args.data_dir, args.validation)
        has_validation = False
    if has_validation:
        train = xferclass.load_image_dataset(
            train_dir, size, batch_size=args.batch_size, seed=args.seed, **options
        )
        validation = xferclass.load_image_dataset(
            train_dir, size, batch_size=args.batch_size, shuffle=False,
            class_names=class_names_of(train), **{**options, "split": "validation"},
        )  # fmt: skip
    elif validation_dir is None and args.validation_split:
        split_seed = 1337 if args.seed is None else args.seed  # --seed 0 is a seed too
        train, validation = xferclass.load_image_dataset(
            train_dir, size, batch_size=args.batch_size, seed=split_seed,
            validation_split=args.validation_split, subset="both", **options,
        )  # fmt: skip
    else:
        train = xferclass.load_image_dataset(
            train_dir, size, batch_size=args.batch_size, seed=args.seed, **options
        )
        validation = None
        if validation_dir is not None:
            validation = xferclass.load_image_dataset(
                validation_dir, size, batch_size=args.batch_size, shuffle=False,
                class_names=class_names_of(train), max_pixels=args.max_pixels,
            )  # fmt: skip
    _refuse_unknown_for_multi_label(args, facts_of(train).multi_label)
    if args.seed is not None:
        import keras

        keras.utils.set_random_seed(args.seed)
    model = xferclass.build_classifier(
        spec.name, num_classes=len(class_names_of(train) or ()), head_units=args.head_units,
        weights=args.weights, input_size=size, dropout=args.dropout,
        multi_label=facts_of(train).multi_label,
    )  # fmt: skip
    common: dict[str, Any] = dict(verbose=verbose, augment=args.augment, seed=args.seed)
    common["engine"] = args.engine
    try:
        if args.fine_tune_epochs:
            history = xferclass.fine_tune(
                model, train, validation, head_epochs=args.epochs,
                fine_tune_epochs=args.fine_tune_epochs,
                unfreeze=args.unfreeze, head_learning_rate=args.learning_rate,
                checkpoint=args.out, **common,
            )  # fmt: skip
        else:
            history = xferclass.fit(
                model, train, validation, epochs=args.epochs, learning_rate=args.learning_rate,
                checkpoint=args.out, **common,
            )  # fmt: skip
    except KeyboardInterrupt:
        # Training put the best weights so far back into the model.
        xferclass.save_model(model, args.out)
        print(f"xferclass: interrupted; the model so far is saved to {args.out}", file=sys.stderr)
        return 130
    if validation is None:
        xferclass.save_model(model, args.out)
    monitor = "val_accuracy" if validation is not None else "accuracy"
    values = history.history.get(monitor, [])
    best = f"best {monitor} {max(values):.4f}, " if values else ""
    print(f"{best}model saved to {args.out}")
    if args.unknown:
        _add_unknown(model, train, validation, args)
    return 0


def _evaluated_split(args: argparse.Namespace, options: dict[str, Any]) -> str | None:
    """The rows ``evaluate`` scores, set in ``options``: ``--split``'s, else a table's test
    rows; ``"all"`` for a table without a split column, None for a folder.

    A table's training and validation rows are scored only when ``--split`` asks.
    """
    if "root" not in options:  # a folder
        if args.split is not None:
            raise InvalidArgumentError("--split applies to a .csv label table with a split column")
        return None
    if args.split is not None:
        options["split"] = args.split
        return str(args.split)
    from .data._tables import split_values

    values = split_values(args.data_dir, path_column=args.path_column)
    if values is None:
        return "all"
    if "test" not in values:
        raise InvalidArgumentError(
            f"{args.data_dir} has no test rows to score: its split column holds "
            f"{sorted(values)}; pass --split to score other rows (a model scores higher on "
            "the rows it trained on than on new images)"
        )
    options["split"] = "test"
    return "test"


def _evaluate(args: argparse.Namespace) -> int:
    import xferclass
    from xferclass.data._facts import class_names_of, facts_of
    from xferclass.metrics import (
        calibration_metrics,
        collect_predictions,
        multilabel_metrics,
        per_class_report,
        regression_metrics,
    )
    from xferclass.runtime._common import model_class_names, model_multi_label

    model = xferclass.load_model(args.model)
    size = tuple(model.input_shape[1:3])
    options = _table_options(args)
    scored = _evaluated_split(args, options)
    dataset = xferclass.load_image_dataset(
        args.data_dir,
        size,
        batch_size=args.batch_size,
        shuffle=False,
        class_names=model_class_names(model),
        **options,
    )
    overlap, estimate = _training_overlap(model, facts_of(dataset).file_paths)
    multi_label, threshold = model_multi_label(model)
    labels, probabilities = collect_predictions(model, dataset, tta=args.tta, engine=args.engine)
    metrics: dict[str, Any] = dict(regression_metrics(labels, probabilities))
    if scored is not None:
        metrics["split"] = scored
    if multi_label:
        metrics.update(multilabel_metrics(labels, probabilities, threshold=threshold))
    else:
        metrics.update(calibration_metrics(labels, probabilities))
    report = per_class_report(
        labels, probabilities, class_names_of(dataset), multi_label=multi_label, threshold=threshold
    )
    if args.plots:
        from xferclass import plots

        os.makedirs(args.plots, exist_ok=True)
        plots.plot_confusion_matrix(
            (labels, probabilities), dataset, os.path.join(args.plots, "confusion_matrix.png")
        )
        plots.plot_predictions(model, dataset, os.path.join(args.plots, "predictions.png"))
        plots.plot_top_losses(model, dataset, os.path.join(args.plots, "top_losses.png"))
    if args.json:
        if args.per_class:
            metrics["per_class"] = report
        metrics["training_overlap"] = overlap
        if estimate is not None:
            metrics["held_out_estimate"] = estimate
        print(json.dumps(metrics, indent=2))
    else:
        from .training._provenance import estimate_text, overlap_sentence

        seen = bool(overlap and overlap["seen_in_training"])
        if estimate is not None:
            print(
                f"held-out estimate: {estimate_text(estimate)} (the automatic recipe's "
                "cross-validation: the score to expect on new images)"
            )
        including = ", including images used in training" if seen else ""
        rows = {None: "", "all": "every row of "}.get(scored, f"the {scored} rows of ")
        print(f"{args.model} on {rows}{args.data_dir} ({metrics['n']} images{including})")
        if overlap is not None:
            print(f"  {'WARNING: ' if seen else ''}{overlap_sentence(overlap)}")
        keys = ["accuracy", "mae", "mse", "rmse", "r2"]
        keys += (["f1_micro", "f1_macro", "mean_average_precision"] if multi_label
                 else ["ece", "brier"])  # fmt: skip
        width = max(len(key) for key in keys) + 2
        for key in keys:
            print(f"  {key:<{width}}{metrics[key]:.4f}")
        print(_per_class_table(report, class_names_of(dataset) or []))
        if args.plots:
            print(f"plots written to {args.plots}")
    return 0


def _training_overlap(
    model: Any, paths: Sequence[str] | None
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """How many of the scored files ``model`` trained on (None: not recorded), and the
    automatic recipe's held-out estimate when some were (else None)."""
    from .training._provenance import held_out_estimate, overlap_summary

    overlap = overlap_summary(model, paths) if paths is not None else None
    seen = bool(overlap and overlap["seen_in_training"])
    return overlap, held_out_estimate(model) if seen else None


def _per_class_table(report: dict[str, Any], class_names: list[str]) -> str:
    """The per-class report as text, worst F1 first (then lowest recall, then name)."""
    rows = sorted(class_names, key=lambda n: (report[n]["f1-score"], report[n]["recall"], n))
    width = max(12, *(len(name) + 2 for name in class_names))
    lines = [
        "per class (worst F1 first):",
        f"  {'class':<{width}}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>10}",
    ]
    for name in rows:
        row = report[name]
        lines.append(
            f"  {name:<{width}}{row['precision']:>10.4f}{row['recall']:>10.4f}"
            f"{row['f1-score']:>10.4f}{row['support']:>10d}"
        )
    return "\n".join(lines)


def _predict(args: argparse.Namespace) -> int:
    import xferclass

    if args.top < 1:
        raise InvalidArgumentError(f"--top={args.top} must be at least 1")
    model = xferclass.load_model(args.model)
    result = xferclass.predict(
        model, args.images, tta=args.tta, engine=args.engine, unknown=args.unknown
    )
    tops = result.top(args.top)
    label_sets = result.label_sets  # a multi-label model: the classes above its threshold
    scores = result.unknown_scores
    if args.json:
        rows: list[dict[str, Any]] = [
            {"image": path, "top": [{"class": name, "probability": p} for name, p in top]}
            for path, top in zip(args.images, tops)
        ]
        if label_sets is not None:
            for row, labels in zip(rows, label_sets):
                row["labels"] = labels
        if scores is not None:
            for row, name, score in zip(rows, result.predicted_names, scores.tolist()):
                row["predicted"] = "unknown" if name is None else name
                row["unknown_score"] = score
        print(json.dumps(rows, indent=2))
        return 0
    width = max(len(path) for path in args.images)
    for i, (path, top) in enumerate(zip(args.images, tops)):
        shown = ", ".join(f"{name} {p:.3f}" for name, p in top)
        if label_sets is not None:
            shown += f"  labels: {', '.join(label_sets[i]) or '(none)'}"
        if scores is not None:
            verdict = "unknown" if result.predicted_names[i] is None else "known"
            shown = f"{verdict} (score {scores[i]:.3f}): {shown}"
        print(f"{path:<{width}}  {shown}")
    return 0


def _export(args: argparse.Namespace) -> int:
    import xferclass

    model = xferclass.load_model(args.model)
    paths = xferclass.export(
        model, args.out, format=args.format, quantize=args.quantize,
        calibration=args.calibration, overwrite=args.overwrite,
    )  # fmt: skip
    for path in paths:
        print(f"wrote {path}")
    return 0


def _add_inspect(commands: Any) -> None:
    inspect = commands.add_parser(
        "inspect",
        help="find label issues, duplicates and outliers in labelled images",
        description=(
            "Find images whose label is probably wrong (confident learning on out-of-fold "
            "probabilities of heads trained on cached features), duplicates across the splits "
            "(exact and near copies) and outliers. DATA holds one subfolder per class, or "
            "train/ and validation/ folders that do; or it is a CSV label table, whose split "
            "column's train, validation and test rows are used as such."
        ),
    )
    inspect.add_argument("data", metavar="DATA", help="folder of class subfolders, or a .csv table")
    inspect.add_argument(
        "--validation", metavar="DIR", default=None,
        help="validation images (default: DATA/validation)",
    )  # fmt: skip
    inspect.add_argument("--test", metavar="DIR", default=None, help="test images")
    inspect.add_argument(
        "--backbone", default="efficientnet_lite0", help="backbone (default: efficientnet_lite0)"
    )
    inspect.add_argument("--folds", type=int, default=5, help="out-of-fold heads (default: 5)")
    inspect.add_argument("--seed", type=int, default=0, help="seed of the folds (default: 0)")
    inspect.add_argument("--size", type=_size, default=None, help="input side in pixels")
    inspect.add_argument(
        "--weights", type=_weights, default="imagenet",
        help="'imagenet' (default), 'none' for random, or a weights file",
    )  # fmt: skip
    inspect.add_argument("--batch-size", type=int, default=32, help="batch size (default: 32)")
    inspect.add_argument("--report", metavar="HTML", default=None, help="write an HTML page here")
    inspect.add_argument("--json", metavar="JSON", default=None, help="write the findings here")
    inspect.add_argument("--quiet", action="store_true", help="no progress output")


def _inspect_splits(args: argparse.Namespace) -> tuple[Any, Any, Any]:
    """The training, validation and test data of ``xferclass inspect``.

    A folder with ``train/`` inside is split as for ``train``; a table is passed
    whole (``inspect`` reads the rows of each split from its split column, and what
    a review decided from its ``review`` column).
    """
    from .data._tables import is_label_table

    if not is_label_table(args.data):
        train, validation = _split_dirs(args.data, args.validation)
        return train, validation, args.test
    return args.data, args.validation, args.test


def _inspect(args: argparse.Namespace) -> int:
    import xferclass

    train, validation, test = _inspect_splits(args)
    found = xferclass.inspect(
        train, validation, test, backbone=args.backbone, folds=args.folds, seed=args.seed,
        weights=args.weights, input_size=args.size, batch_size=args.batch_size,
        verbose=0 if args.quiet else 1,
    )  # fmt: skip
    leaks = sum(1 for group in found.duplicates if group["cross_split"])
    print(
        f"{len(found.label_issues)} label issues, {len(found.duplicates)} groups of duplicates "
        f"({leaks} across splits), {len(found.outliers)} outliers"
    )
    if found.decided:
        rows = [*found.label_issues, *found.duplicates, *found.outliers]
        print(f"{sum(1 for row in rows if row['decided'])} of them decided in a review")
    if args.json:
        found.to_json(args.json)
        print(f"findings written to {args.json}")
    if args.report:
        found.to_html(args.report)
        print(f"report written to {args.report}")
    return 0


def _add_review(commands: Any) -> None:
    review = commands.add_parser(
        "review",
        help="fix label issues, duplicates and outliers in a browser",
        description=(
            "Start a local web application (on 127.0.0.1, with a token in its URL) to accept or "
            "reject each finding of xferclass inspect, which is computed once and cached in "
            "DATA/.xferclass/. Every decision is saved as it is made to "
            "DATA/.xferclass/review.jsonl; a restart resumes. 'Apply' (or --apply) writes the "
            "corrected label table (path,label,split,excluded,review,original_label) that "
            "load_image_dataset, train and inspect read. No file moves unless --apply-moves."
        ),
    )
    review.add_argument(
        "data", metavar="DATA",
        help="folder with train/ (and validation/, test/) inside, or of class subfolders; or a "
        ".csv label table",
    )  # fmt: skip
    review.add_argument(
        "--port", type=int, default=None, help="port (default: 8765, or a free one)"
    )
    review.add_argument("--open", action="store_true", help="open the page in the browser")
    review.add_argument(
        "--apply", action="store_true",
        help="write the corrected label table from the saved decisions, and exit",
    )  # fmt: skip
    review.add_argument(
        "--apply-moves", action="store_true",
        help="also move relabelled images to their class folders and excluded ones to "
        "DATA/.xferclass/excluded/, after writing an undo log, and exit",
    )  # fmt: skip
    review.add_argument("--undo", action="store_true", help="put back the files of the last moves")
    review.add_argument("--out", metavar="CSV", default=None, help="where --apply writes the table")
    review.add_argument("--refresh", action="store_true", help="inspect anew, ignoring the cache")
    review.add_argument(
        "--backbone", default="efficientnet_lite0", help="backbone (default: efficientnet_lite0)"
    )
    review.add_argument("--size", type=_size, default=None, help="input side in pixels")
    review.add_argument(
        "--weights", type=_weights, default="imagenet",
        help="'imagenet' (default), 'none' for random, or a weights file",
    )  # fmt: skip
    review.add_argument("--folds", type=int, default=5, help="out-of-fold heads (default: 5)")
    review.add_argument("--seed", type=int, default=0, help="seed of the folds (default: 0)")
    review.add_argument("--quiet", action="store_true", help="no progress output")


def _review(args: argparse.Namespace) -> int:
    from .review import DEFAULT_PORT, Review, serve, undo

    if args.undo:
        used, back = undo(args.data)
        print(f"{back} files put back as before ({os.path.basename(used)})")
        return 0
    found = Review(
        args.data, refresh=args.refresh, verbose=0 if args.quiet else 1, backbone=args.backbone,
        weights=args.weights, input_size=args.size, folds=args.folds, seed=args.seed,
    )  # fmt: skip
    if not (args.apply or args.apply_moves):
        serve(found, port=DEFAULT_PORT if args.port is None else args.port, open_browser=args.open)
        return 0
    decided, total = found.progress()
    counts = found.summary()
    if args.apply_moves:
        log, moved, table = found.apply_moves(args.out)
        if log:
            print(f"{moved} files moved; xferclass review --undo puts them back ({log})")
    else:
        table = found.write_table(args.out)
    print(
        f"{decided} of {total} findings decided: {counts['relabelled']} images relabelled, "
        f"{counts['excluded']} excluded; table written to {table}"
    )
    return 0


def _add_explain(commands: Any) -> None:
    explain = commands.add_parser(
        "explain",
        help="write Grad-CAM overlays of a model's predictions on images",
        description="Write OUT/<image name>_gradcam.png: each image with the Grad-CAM heatmap "
        "of the predicted class (or --class) laid over it.",
    )
    explain.add_argument("model", metavar="MODEL", help="a saved .keras model")
    explain.add_argument("images", metavar="IMAGE", nargs="+", help="image files")
    explain.add_argument("--out", metavar="DIR", required=True, help="folder of the overlays")
    explain.add_argument("--class", dest="class_name", default=None, help="class to explain")
    report = commands.add_parser(
        "report",
        help="write one self-contained HTML report of a model on labelled images",
        description="Metrics, per-class table, confusion matrix, top losses with Grad-CAM, "
        "training history and the automatic recipe's report, in one HTML file.",
    )
    report.add_argument("model", metavar="MODEL", help="a saved .keras model")
    report.add_argument("data", metavar="DATA", help="folder of class subfolders")
    report.add_argument("--out", metavar="HTML", default="report.html", help="the page to write")
    report.add_argument(
        "--json", metavar="JSON", default=None,
        help="also write the metrics and the overlap with the training images here",
    )  # fmt: skip
    report.add_argument("--inspect", action="store_true", help="add xferclass.inspect's findings")
    report.add_argument("--top", type=int, default=12, help="top losses shown (default: 12)")


def _explain(args: argparse.Namespace) -> int:
    from .evaluation.report import write_explanations

    for path in write_explanations(args.model, args.images, args.out, class_name=args.class_name):
        print(f"wrote {path}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from .evaluation.report import write_report

    path = write_report(
        args.model, args.data, args.out, inspect=args.inspect, top_losses=args.top,
        json_path=args.json,
    )  # fmt: skip
    print(f"report written to {path}")
    if args.json:
        print(f"numbers written to {args.json}")
    return 0


def _backbones(args: argparse.Namespace) -> int:
    import xferclass

    print(f"{'name':<22}{'size':>9}  {'preprocess':<11}weights")
    for name in xferclass.list_backbones():
        spec = xferclass.get_backbone(name)
        size = f"{spec.default_size[0]}x{spec.default_size[1]}"
        print(f"{name:<22}{size:>9}  {spec.preprocess:<11}{spec.weights}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = _parser().parse_args(argv)
    handlers = {
        "train": _train,
        "evaluate": _evaluate,
        "predict": _predict,
        "backbones": _backbones,
        "export": _export,
        "inspect": _inspect,
        "explain": _explain,
        "report": _report,
        "detect-unknown": _detect_unknown,
        "review": _review,
    }
    from .core._errors import XferclassError, first_line

    try:
        return handlers[args.command](args)
    except (XferclassError, ValueError, FileNotFoundError, ImportError) as error:
        print(f"xferclass: error: {first_line(error)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("xferclass: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
