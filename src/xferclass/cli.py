"""The ``xferclass`` command line: train, evaluate, predict, backbones."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from ._errors import InvalidArgumentError

__all__ = ["main"]

_EPILOG = """examples:
  xferclass train data/clothes --backbone efficientnet_lite0 --epochs 10 --out model.keras
  xferclass evaluate model.keras data/clothes/validation --plots plots/
  xferclass predict model.keras shoe.jpg hat.png
  xferclass backbones
"""


def _weights(value: str) -> str | None:
    return None if value.lower() in ("none", "random") else value


def _size(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--size must be an int, got {value!r}") from None


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

    train = commands.add_parser(
        "train",
        help="train a classifier on a folder of labelled images",
        description=(
            "Train a classifier. DATA_DIR holds one subfolder per class, or train/ and "
            "validation/ folders that each hold one subfolder per class."
        ),
    )
    train.add_argument("data_dir", metavar="DATA_DIR", help="folder of class subfolders")
    train.add_argument("--backbone", default="xception", help="backbone name (default: xception)")
    train.add_argument("--epochs", type=int, default=10, help="epochs (default: 10)")
    train.add_argument("--out", default="model.keras", help="where to save the model (.keras)")
    train.add_argument("--size", type=_size, default=None, help="input side in pixels")
    train.add_argument("--batch-size", type=int, default=32, help="batch size (default: 32)")
    train.add_argument("--learning-rate", type=float, default=1e-3, help="Adam learning rate")
    train.add_argument("--head-units", type=int, default=128, help="hidden units of the head")
    train.add_argument("--dropout", type=float, default=0.0, help="dropout before the output")
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
    train.add_argument(
        "--fine-tune-epochs",
        type=int,
        default=0,
        help="after training the head, fine-tune the top of the backbone for this many epochs",
    )
    train.add_argument(
        "--unfreeze", type=float, default=0.2, help="fraction of backbone layers to fine-tune"
    )
    train.add_argument("--seed", type=int, default=None, help="random seed")
    train.add_argument("--quiet", action="store_true", help="no progress output")

    evaluate = commands.add_parser(
        "evaluate",
        help="evaluate a saved model on a folder of labelled images",
        description="Print accuracy, MAE, MSE, RMSE and R² of MODEL on DATA_DIR.",
    )
    evaluate.add_argument("model", metavar="MODEL", help="a .keras model file")
    evaluate.add_argument("data_dir", metavar="DATA_DIR", help="folder of class subfolders")
    evaluate.add_argument("--batch-size", type=int, default=32, help="batch size (default: 32)")
    evaluate.add_argument("--plots", metavar="DIR", default=None, help="also write plots here")
    evaluate.add_argument("--json", action="store_true", help="print the metrics as JSON")

    predict = commands.add_parser(
        "predict",
        help="classify image files with a saved model",
        description="Print the most probable classes of each IMAGE.",
    )
    predict.add_argument("model", metavar="MODEL", help="a .keras model file")
    predict.add_argument("images", metavar="IMAGE", nargs="+", help="image files")
    predict.add_argument("--top", type=int, default=1, help="classes to show per image")
    predict.add_argument("--json", action="store_true", help="print the results as JSON")

    commands.add_parser(
        "backbones",
        help="list the registered backbones",
        description="List the backbones build_classifier accepts, with their input sizes.",
    )
    return parser


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


def _train(args: argparse.Namespace) -> int:
    import xferclass

    verbose = 0 if args.quiet else 1
    spec = xferclass.get_backbone(args.backbone)
    size = (args.size, args.size) if args.size else spec.default_size
    train_dir, validation_dir = _split_dirs(args.data_dir, args.validation)
    if validation_dir is None and args.validation_split:
        split_seed = 1337 if args.seed is None else args.seed  # --seed 0 is a seed too
        train, validation = xferclass.load_image_dataset(
            train_dir, size, batch_size=args.batch_size, seed=split_seed,
            validation_split=args.validation_split, subset="both",
        )  # fmt: skip
    else:
        train = xferclass.load_image_dataset(
            train_dir, size, batch_size=args.batch_size, seed=args.seed
        )
        validation = None
        if validation_dir is not None:
            validation = xferclass.load_image_dataset(
                validation_dir, size, batch_size=args.batch_size, shuffle=False,
                class_names=train.class_names,
            )  # fmt: skip
    if args.seed is not None:
        import keras

        keras.utils.set_random_seed(args.seed)
    model = xferclass.build_classifier(
        spec.name, num_classes=len(train.class_names), head_units=args.head_units,
        weights=args.weights, input_size=size, dropout=args.dropout,
    )  # fmt: skip
    common: dict[str, Any] = dict(verbose=verbose, augment=args.augment, seed=args.seed)
    try:
        if args.fine_tune_epochs:
            history = xferclass.fine_tune(
                model, train, validation, head_epochs=args.epochs, epochs=args.fine_tune_epochs,
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
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    import xferclass
    from xferclass._common import model_class_names
    from xferclass.metrics import collect_predictions, regression_metrics

    model = xferclass.load_model(args.model)
    size = tuple(model.input_shape[1:3])
    dataset = xferclass.load_image_dataset(
        args.data_dir,
        size,
        batch_size=args.batch_size,
        shuffle=False,
        class_names=model_class_names(model),
    )
    labels, probabilities = collect_predictions(model, dataset)
    metrics = regression_metrics(labels, probabilities)
    if args.plots:
        from xferclass import plots

        os.makedirs(args.plots, exist_ok=True)
        plots.plot_confusion_matrix(
            (labels, probabilities), dataset, os.path.join(args.plots, "confusion_matrix.png")
        )
        plots.plot_predictions(model, dataset, os.path.join(args.plots, "predictions.png"))
        plots.plot_top_losses(model, dataset, os.path.join(args.plots, "top_losses.png"))
    if args.json:
        print(json.dumps(metrics, indent=2))
    else:
        print(f"{args.model} on {args.data_dir} ({metrics['n']} images)")
        for key in ("accuracy", "mae", "mse", "rmse", "r2"):
            print(f"  {key:<9}{metrics[key]:.4f}")
        if args.plots:
            print(f"plots written to {args.plots}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    import xferclass

    if args.top < 1:
        raise InvalidArgumentError(f"--top={args.top} must be at least 1")
    model = xferclass.load_model(args.model)
    result = xferclass.predict(model, args.images)
    tops = result.top(args.top)
    if args.json:
        rows = [
            {"image": path, "top": [{"class": name, "probability": p} for name, p in top]}
            for path, top in zip(args.images, tops)
        ]
        print(json.dumps(rows, indent=2))
        return 0
    width = max(len(path) for path in args.images)
    for path, top in zip(args.images, tops):
        shown = ", ".join(f"{name} {p:.3f}" for name, p in top)
        print(f"{path:<{width}}  {shown}")
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
    }
    from ._errors import XferclassError

    try:
        return handlers[args.command](args)
    except (XferclassError, ValueError, FileNotFoundError, ImportError) as error:
        message = str(error).strip().splitlines()
        print(
            f"xferclass: error: {message[0] if message else type(error).__name__}", file=sys.stderr
        )
        return 1
    except KeyboardInterrupt:
        print("xferclass: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
