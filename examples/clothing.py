"""Clothing classification: the original transfer-learning notebook, reproduced with xferclass.

The notebook classified the ten classes of *clothing-dataset-small* (Alexey Grigorev,
CC0: dress, hat, longsleeve, outwear, pants, shirt, shoes, shorts, skirt, t-shirt) with
an ImageNet Xception base, frozen, at 299x299 pixels; GlobalAveragePooling ->
Dense(128, relu) -> Dense(10, softmax); Adam, categorical cross-entropy, 10 epochs,
batch 32; and judged the model by MAE, MSE, RMSE and R² of the predicted probabilities
as well as by accuracy.

This script runs that, end to end::

    python examples/clothing.py --data ../shared/data/clothing-dataset-small
    python examples/clothing.py --backbone efficientnet_lite0          # the tuned recipe

It reads ``DATA/train`` and ``DATA/validation`` (and ``DATA/test`` when there is one),
trains with :func:`xferclass.fit` or :func:`xferclass.fine_tune`, evaluates with
:func:`xferclass.evaluate_regression_style` on every split, and writes into ``--out``
(default ``runs/clothing``):

- ``model.keras``: the trained classifier (``xferclass.load_model`` reads it);
- ``metrics.json``: MAE, MSE, RMSE, R², accuracy, n and a per-class report
  (precision, recall, F1, support) per split; ``seen_in_training``: per split, how many
  of its images the model trained on (content digests recorded in the model); the
  ``headline``: accuracy on the first split the model did not train on (test, then
  validation), or with ``--recipe auto``, which trains on the validation images too and
  has no test split, the recipe's held-out estimate; the configuration,
  the training history, timings per phase and in total, the machine and the versions;
- ``history.png``: training curves;
- ``confusion_matrix.png`` and ``predictions.png``: on the test split, or on the
  validation split when there is no test split;
- with ``--export litert,onnx`` (any of ``saved_model``, ``litert``, ``onnx``,
  ``openvino``): ``model.tflite``, ``model.onnx``, ``saved_model/``, ``model.xml`` +
  ``model.bin``, made by :func:`xferclass.export` (see docs/deploy.md).

Recipes (``--recipe``; every field can be overridden by its own flag):

- ``notebook`` (the default for every backbone but ``efficientnet_lite0``): the
  notebook's configuration: frozen backbone at its native size (299 for Xception),
  10 epochs at Adam's 1e-3, no augmentation, the model of the last epoch.
- ``best`` (the default for ``--backbone efficientnet_lite0``): tuned on the validation
  split to run on a 2-core CPU in under 15 minutes: 288x288 input, 6 epochs of the head
  on the frozen backbone, then 5 epochs of fine-tuning from ``block14_expand_conv`` up
  at Adam's 1e-4 (on activations cached at the cut), keeping the epoch with the best
  validation accuracy (``BEST_LITE0``).

Results (validation split, 341 images; ``docs/clothing_results.md`` has the tuning log):
``--backbone efficientnet_lite0`` (``best``) reached accuracy 0.900 (MAE 0.023, MSE 0.016,
RMSE 0.126, R² 0.793) in 2 min 52 s on an idle 2-core CPU; ``--recipe notebook`` on
Lite0 (224 px, frozen) reached 0.862 in 88 s. The notebook's frozen Xception (299 px)
reported 0.856.

Without ``--data`` the dataset is looked up in ``$XFERCLASS_CLOTHING_DIR`` when it is set,
else in ``../shared/data/clothing-dataset-small`` (next to the repository; ``--no-shared``
or an empty ``XFERCLASS_CLOTHING_DIR`` skips this step), then in the cache folder
(``$XFERCLASS_CACHE_DIR/datasets`` or ``~/.cache/xferclass/datasets``), and otherwise
downloaded once from GitHub into the cache (``$XFERCLASS_CLOTHING_URL`` overrides the
address). Offline, the script stops with one line that says how to pass ``--data``.

Xception's ImageNet weights are downloaded by Keras; when that fails the script stops
and names the alternatives (``--backbone efficientnet_lite0``, whose weights ship in a
pip package, or ``--weights PATH``). It never falls back to random weights on its
own: that takes an explicit ``--weights none``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported

DATASET_NAME = "clothing-dataset-small"
DATASET_URL = (
    "https://github.com/alexeygrigorev/clothing-dataset-small/archive/refs/heads/master.zip"
)
#: Environment variable that replaces DATASET_URL (tests point it at a dead port).
URL_ENV = "XFERCLASS_CLOTHING_URL"
#: Environment variable with the copy to look for instead of ../shared (the name the
#: tests and benchmarks read too; an empty value skips it, as --no-shared does).
SHARED_ENV = "XFERCLASS_CLOTHING_DIR"
#: Seconds to wait for the download server to answer (connect and each read).
DOWNLOAD_TIMEOUT_S = 15
SPLITS = ("train", "validation", "test")
LITE0 = "efficientnet_lite0"
#: Time budget of the automatic recipe (--recipe auto) when --budget is not given.
AUTO_BUDGET = "15m"
PROG = "clothing.py"


class ExampleError(Exception):
    """A problem the user can fix; reported as one line, without a traceback."""


# --------------------------------------------------------------------------- recipes


@dataclass(frozen=True)
class Recipe:
    """Everything about a run that decides its accuracy.

    Attributes:
        name: ``notebook`` or ``best``.
        size: Input side in pixels; None for the backbone's native size.
        epochs: Epochs of training the head on the frozen backbone.
        learning_rate: Adam's learning rate for the head.
        fine_tune_epochs: Epochs of fine-tuning the top of the backbone afterwards (0: none).
        unfreeze: What fine-tuning unfreezes: a layer name (that layer and all above it),
            a fraction of the backbone's layers, or a layer count.
        fine_tune_learning_rate: Adam's learning rate while fine-tuning.
        augment: None or an xferclass augmentation preset (``"flip"``, ...).
        augment_views: Augmented copies of the training set cached per phase.
        dropout: Dropout before the output layer.
        best_epoch: Keep the weights of the epoch with the best validation accuracy
            (over both phases) instead of those of the last epoch.
    """

    name: str
    size: int | None = None
    epochs: int = 10
    learning_rate: float = 1e-3
    fine_tune_epochs: int = 0
    unfreeze: str | float | int = 0.1
    fine_tune_learning_rate: float = 1e-4
    augment: str | None = None
    augment_views: int = 1
    dropout: float = 0.0
    best_epoch: bool = False


#: The notebook's configuration, for any backbone.
NOTEBOOK = Recipe(name="notebook")

#: Tuned on the validation split for efficientnet_lite0 on a 2-core CPU (<= 15 minutes).
BEST_LITE0 = Recipe(
    name="best",
    size=288,
    epochs=6,
    learning_rate=1e-3,
    fine_tune_epochs=5,
    unfreeze="block14_expand_conv",
    fine_tune_learning_rate=1e-4,
    augment=None,
    augment_views=1,
    dropout=0.0,
    best_epoch=True,
)


def recipe_for(name: str | None, backbone: str) -> Recipe:
    """The recipe called ``name`` (default: ``best`` for Lite0, else ``notebook``)."""
    if name is None:
        name = "best" if backbone == LITE0 else "notebook"
    if name == "notebook":
        return NOTEBOOK
    if backbone == LITE0:
        return BEST_LITE0
    # The best recipe was tuned for Lite0: keep its training schedule, but let the
    # backbone keep its native size and unfreeze a fraction of it (Lite0's layer
    # names do not exist elsewhere).
    return dataclasses.replace(BEST_LITE0, size=None, unfreeze=0.1)


def apply_overrides(recipe: Recipe, args: argparse.Namespace) -> Recipe:
    """The recipe with every field that was given on the command line replaced."""
    fields = {
        "size": args.size,
        "epochs": args.epochs,
        "learning_rate": args.learning_rate,
        "fine_tune_epochs": args.fine_tune_epochs,
        "unfreeze": args.unfreeze,
        "fine_tune_learning_rate": args.fine_tune_learning_rate,
        "augment": args.augment,
        "augment_views": args.augment_views,
        "dropout": args.dropout,
        "best_epoch": args.best_epoch,
    }
    changes = {key: value for key, value in fields.items() if value is not None}
    if changes.get("augment") == "none":
        changes["augment"] = None
    return dataclasses.replace(recipe, **changes)


# --------------------------------------------------------------------------- command line


def _unfreeze(value: str) -> str | float | int:
    """A layer name, a fraction (contains a dot) or a layer count."""
    try:
        return int(value)
    except ValueError:
        pass
    try:
        return float(value)
    except ValueError:
        return value


#: What ``--export`` writes next to model.keras, per format.
EXPORT_FILES = {
    "saved_model": "saved_model",
    "litert": "model.tflite",
    "onnx": "model.onnx",
    "openvino": "model.xml",
}


def export_formats(value: str) -> list[str]:
    """``--export litert,onnx`` as a list of formats."""
    formats = [part.strip() for part in value.split(",") if part.strip()]
    unknown = [f for f in formats if f not in EXPORT_FILES]
    if unknown or not formats:
        raise argparse.ArgumentTypeError(
            f"--export {value!r}: formats are {', '.join(EXPORT_FILES)}, comma-separated"
        )
    return formats


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=(
            "Train and evaluate a clothing classifier (clothing-dataset-small) the way the "
            "original notebook did, with xferclass."
        ),
        epilog=(
            "examples:\n"
            "  python examples/clothing.py --data ../shared/data/clothing-dataset-small\n"
            "  python examples/clothing.py --backbone efficientnet_lite0 --out runs/lite0\n"
            "  python examples/clothing.py --backbone efficientnet_lite0 --recipe notebook"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--data",
        metavar="DIR",
        help="dataset folder with train/ and validation/ (and optionally test/) subfolders; "
        "default: the shared copy, the cache, or a download",
    )
    parser.add_argument("--backbone", default="xception", help="backbone (default: xception)")
    parser.add_argument(
        "--recipe",
        choices=("notebook", "best", "auto"),
        help="training recipe (default: best for efficientnet_lite0, notebook otherwise); "
        "auto: xferclass.train_auto chooses backbone, size and schedule within --budget",
    )
    parser.add_argument(
        "--budget",
        default=AUTO_BUDGET,
        help=f"time budget of --recipe auto, e.g. 90s, 15m, 1h (default: {AUTO_BUDGET})",
    )
    parser.add_argument(
        "--metric",
        default="accuracy",
        choices=("accuracy", "balanced_accuracy", "macro_f1"),
        help="what --recipe auto maximises in every choice (default: accuracy)",
    )
    parser.add_argument(
        "--weights",
        default="imagenet",
        help="'imagenet' (default), a local weights file, or 'none' for random weights",
    )
    parser.add_argument(
        "--out",
        default=os.path.join("runs", "clothing"),
        help="output folder (default: runs/clothing)",
    )
    parser.add_argument("--batch-size", type=int, default=32, help="batch size (default: 32)")
    parser.add_argument("--seed", type=int, default=1, help="random seed (default: 1)")
    parser.add_argument(
        "--no-shared",
        action="store_true",
        help=f"do not look for ../shared/data/{DATASET_NAME} next to the repository",
    )
    parser.add_argument(
        "--eval-train", action="store_true", help="also evaluate on the training split"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument(
        "--no-calibrate", action="store_true",
        help="keep the probabilities as trained (default: a temperature fitted on the "
        "validation split, kept when it lowers its cross-validated calibration error)",
    )  # fmt: skip
    parser.add_argument(
        "--no-unknown", action="store_true",
        help="save the model without an unknown score (default: one measured on the "
        "validation split, for 'xferclass predict --unknown'; one more pass over the images)",
    )  # fmt: skip
    parser.add_argument(
        "--export",
        type=export_formats,
        default=[],
        metavar="FORMATS",
        help=(
            "also export the model next to model.keras, comma-separated: "
            f"{','.join(EXPORT_FILES)} (e.g. --export litert,onnx)"
        ),
    )
    parser.add_argument(
        "--engine",
        default="auto",
        choices=["auto", "keras", "onnxruntime", "openvino"],
        help="runtime of the frozen forward passes (caching, evaluation; default: auto)",
    )
    tuning = parser.add_argument_group("recipe overrides (default: the recipe's value)")
    tuning.add_argument("--size", type=int, help="input side in pixels")
    tuning.add_argument("--epochs", type=int, help="epochs of training the head")
    tuning.add_argument("--learning-rate", type=float, help="learning rate of the head")
    tuning.add_argument(
        "--fine-tune-epochs", type=int, help="epochs of fine-tuning the backbone's top (0: none)"
    )
    tuning.add_argument(
        "--unfreeze",
        type=_unfreeze,
        help="what to fine-tune: a layer name (and everything above), a fraction or a count",
    )
    tuning.add_argument(
        "--fine-tune-learning-rate", type=float, help="learning rate while fine-tuning"
    )
    tuning.add_argument(
        "--augment", choices=("none", "flip", "light", "strong"), help="augmentation preset"
    )
    tuning.add_argument("--augment-views", type=int, help="augmented copies cached per image")
    tuning.add_argument("--dropout", type=float, help="dropout before the output layer")
    tuning.add_argument(
        "--best-epoch",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="keep the epoch with the best validation accuracy (--no-best-epoch: the last)",
    )
    return parser


def say(message: str) -> None:
    print(f"[clothing] {message}", flush=True)


# --------------------------------------------------------------------------- dataset


def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


def shared_copy(no_shared: bool) -> Path | None:
    """The shared copy next to the repository, when it exists and is not skipped."""
    if no_shared:
        return None
    configured = os.environ.get(SHARED_ENV)
    if configured is not None:
        candidate = Path(configured) if configured else None
    else:
        candidate = repo_root().parent / "shared" / "data" / DATASET_NAME
    if candidate is not None and (candidate / "train").is_dir():
        return candidate
    return None


def cache_root() -> Path:
    configured = os.environ.get("XFERCLASS_CACHE_DIR")
    base = Path(configured) if configured else Path.home() / ".cache" / "xferclass"
    return base / "datasets"


def _archive_root(folder: Path) -> Path:
    """The folder inside an extracted archive that holds train/."""
    if (folder / "train").is_dir():
        return folder
    for child in sorted(folder.iterdir()):
        if (child / "train").is_dir():
            return child
    raise ExampleError(f"the downloaded archive has no train/ folder (looked in {folder})")


def _extract(archive: Path, target: Path) -> None:
    with zipfile.ZipFile(archive) as zipped:
        for member in zipped.namelist():
            resolved = (target / member).resolve()
            if not resolved.is_relative_to(target.resolve()):
                raise ExampleError(f"the downloaded archive has an unsafe path: {member!r}")
        zipped.extractall(target)


def download_dataset(destination: Path, url: str) -> Path:
    """Download and unpack the dataset into ``destination`` atomically; returns it.

    Everything happens in a temporary folder next to ``destination`` that is renamed
    into place at the end, so an interrupted download never leaves a half dataset;
    when another process finished first, its copy is kept.
    """
    destination.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{DATASET_NAME}.", dir=destination.parent))
    try:
        archive = work / "archive.zip"
        say(f"downloading {url} into {destination.parent}")
        try:
            with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
                with open(archive, "wb") as out:
                    shutil.copyfileobj(response, out, length=1 << 20)
        except (urllib.error.URLError, OSError, ValueError) as error:
            reason = getattr(error, "reason", None) or error
            raise ExampleError(
                f"no --data given and the dataset cannot be downloaded from {url} ({reason}); "
                f"pass --data DIR, a copy of {DATASET_NAME} with train/ and validation/ "
                "folders (git clone https://github.com/alexeygrigorev/clothing-dataset-small)"
            ) from None
        try:
            _extract(archive, work / "unpacked")
        except zipfile.BadZipFile:
            raise ExampleError(f"the file downloaded from {url} is not a zip archive") from None
        root = _archive_root(work / "unpacked")
        if destination.exists() and not (destination / "train").is_dir():
            shutil.rmtree(destination)  # the leftover of something else: not a dataset
        try:
            os.rename(root, destination)
        except OSError:
            if not (destination / "train").is_dir():
                raise
        return destination
    finally:
        shutil.rmtree(work, ignore_errors=True)


def find_dataset(data: str | None, no_shared: bool) -> Path:
    """The dataset folder: ``--data``, the shared copy, the cache, or a fresh download."""
    if data is not None:
        path = Path(data).expanduser()
        if not path.is_dir():
            raise ExampleError(f"--data {data}: no such folder")
        for split in ("train", "validation"):
            if not (path / split).is_dir():
                raise ExampleError(
                    f"--data {data} has no {split}/ folder; it must hold train/ and "
                    "validation/ (and optionally test/), each with one subfolder per class"
                )
        return path
    shared = shared_copy(no_shared)
    if shared is not None:
        say(f"using the shared copy of the dataset in {shared}")
        return shared
    cached = cache_root() / DATASET_NAME
    if (cached / "train").is_dir():
        say(f"using the cached copy of the dataset in {cached}")
        return cached
    return download_dataset(cached, os.environ.get(URL_ENV) or DATASET_URL)


def load_splits(root: Path, size: int, batch_size: int, seed: int) -> dict[str, Any]:
    """train, validation and (when present) test, with one class order."""
    from xferclass import load_image_dataset

    train = load_image_dataset(root / "train", size, batch_size=batch_size, seed=seed)
    splits = {"train": train}
    for split in SPLITS[1:]:
        if (root / split).is_dir():
            splits[split] = load_image_dataset(
                root / split, size, batch_size=batch_size, shuffle=False,
                class_names=train.class_names,
            )  # fmt: skip
    return splits


# --------------------------------------------------------------------------- model


def weights_argument(value: str) -> str | None:
    if value.lower() in ("none", "random"):
        return None
    if value == "imagenet":
        return value
    if not os.path.isfile(value):
        raise ExampleError(f"--weights {value}: no such file ('imagenet', 'none' or a file)")
    return value


def build_model(backbone: str, weights: str | None, recipe: Recipe, num_classes: int) -> Any:
    import xferclass

    try:
        return xferclass.build_classifier(
            backbone, num_classes=num_classes, head_units=128, weights=weights,
            input_size=recipe.size, dropout=recipe.dropout,
        )  # fmt: skip
    except xferclass.WeightsUnavailableError as error:
        first = (str(error).strip().splitlines() or [""])[0]
        if backbone != LITE0:
            raise ExampleError(
                f"the ImageNet weights of {backbone} are not available (no network?). Run with "
                f"--backbone {LITE0} (its weights ship in a pip package), or pass --weights "
                f"PATH with a local {backbone} weights file (without top); --weights none "
                "trains from random weights"
            ) from None
        raise ExampleError(f"{first} (or pass --weights PATH)") from None


class TrainingMonitor:
    """Phase timings, from Keras callback hooks.

    Each phase (the head; then fine-tuning) is one Keras ``fit`` call, so the time
    between the end of the previous phase and a phase's first epoch is its caching
    pass. The best epoch is xferclass's business: ``restore_best=True`` keeps its
    weights in memory and puts them back at the end.
    """

    def __init__(self) -> None:
        import keras

        monitor = self
        self.start = time.perf_counter()
        self.marks: list[list[float]] = []

        class _Callback(keras.callbacks.Callback):
            def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
                monitor.marks.append([time.perf_counter(), float("nan")])

            def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
                monitor.marks[-1][1] = time.perf_counter()

        self.callback = _Callback()

    def timings(self) -> dict[str, float]:
        times: dict[str, float] = {}
        previous = self.start
        for phase, (begin, end) in enumerate(self.marks, start=1):
            times[f"phase{phase}_caching"] = round(begin - previous, 2)
            times[f"phase{phase}_epochs"] = round(end - begin, 2)
            previous = end
        return times


def train(
    model: Any, splits: dict[str, Any], recipe: Recipe, args: argparse.Namespace
) -> tuple[Any, TrainingMonitor]:
    """Train ``model`` by ``recipe``; returns the history and the monitor."""
    import xferclass

    validation = splits.get("validation")
    monitor = TrainingMonitor()
    common: dict[str, Any] = dict(
        callbacks=[monitor.callback], augment=recipe.augment, augment_views=recipe.augment_views,
        seed=args.seed, verbose=0 if args.quiet else 1, restore_best=recipe.best_epoch,
        engine=args.engine,
    )  # fmt: skip
    if recipe.fine_tune_epochs:
        say(
            f"training: {recipe.epochs} epochs of the head (phase 1), then "
            f"{recipe.fine_tune_epochs} epochs of fine-tuning from {recipe.unfreeze!r} on "
            "(phase 2)"
        )
        history = xferclass.fine_tune(
            model, splits["train"], validation, head_epochs=recipe.epochs,
            fine_tune_epochs=recipe.fine_tune_epochs, unfreeze=recipe.unfreeze,
            head_learning_rate=recipe.learning_rate,
            learning_rate=recipe.fine_tune_learning_rate, **common,
        )  # fmt: skip
    else:
        say(f"training: {recipe.epochs} epochs of the head, backbone frozen")
        history = xferclass.fit(
            model, splits["train"], validation, epochs=recipe.epochs,
            learning_rate=recipe.learning_rate, **common,
        )  # fmt: skip
    epochs = len(history.epoch)
    if recipe.best_epoch and validation is not None and history.best_epoch is not None:
        best = history.history[history.monitor][history.best_epoch - 1]
        say(
            f"kept the weights of epoch {history.best_epoch} of {epochs} "
            f"(best {history.monitor} {best:.4f})"
        )
    return history, monitor


def make_trustworthy(
    model: Any, splits: dict[str, Any], args: argparse.Namespace
) -> tuple[Any, dict[str, Any]]:
    """Calibrate ``model`` on the validation split and give it an unknown score (see the
    Trust page of the docs), unless asked not to; returns the model and what was measured."""
    import xferclass
    from xferclass.layers import unknown_layer

    validation = splits.get("validation")
    found: dict[str, Any] = {}
    if validation is None:
        return model, found
    if not args.no_calibrate:
        choice = xferclass.calibrate(model, validation, engine=args.engine, seed=args.seed)
        found["calibration"] = choice.to_dict()
        kept = f"temperature {choice.temperature:.3f} kept" if choice.kept else "no temperature"
        say(f"calibration: {kept} (cross-validated ECE {choice.ece_before:.4f} -> "
            f"{choice.ece_after:.4f} on the validation split)")  # fmt: skip
    if not args.no_unknown:
        say("measuring an unknown score: the training and validation images, then "
            "generated foreign ones")  # fmt: skip
        model = xferclass.detect_unknown(
            model, splits["train"], held_out=validation, seed=args.seed,
            verbose=0 if args.quiet else 1,
        )  # fmt: skip
        measured = unknown_layer(model).measured  # type: ignore[union-attr]
        found["unknown"] = measured
        k = f" k={measured['k']}" if measured["k"] else ""
        say(f"unknown score: {measured['score']}{k}, threshold {measured['threshold']:.4g}, "
            f"rejecting {measured['held_out_rejected']:.1%} of the validation images "
            f"(predict with --unknown)")  # fmt: skip
    return model, found


# --------------------------------------------------------------------------- results


def evaluate(
    model: Any,
    splits: dict[str, Any],
    eval_train: bool,
    engine: str = "auto",
    tta: bool | str = False,
) -> dict[str, Any]:
    """Metrics and raw predictions per split (``tta``: as in ``collect_predictions``)."""
    from xferclass.metrics import collect_predictions, per_class_report, regression_metrics

    results: dict[str, Any] = {}
    for name in SPLITS:
        if name not in splits or (name == "train" and not eval_train):
            continue
        say(f"evaluating on {name} ({len(splits[name].file_paths)} images)")
        # One pass gives each prediction with its own label, shuffled or not.
        labels, probabilities = collect_predictions(model, splits[name], engine=engine, tta=tta)
        metrics: dict[str, Any] = dict(regression_metrics(labels, probabilities))
        # Precision, recall, F1 and support per class (scikit-learn's classification_report).
        metrics["per_class"] = per_class_report(labels, probabilities, splits[name].class_names)
        results[name] = {
            "metrics": metrics,
            "predictions": (labels, probabilities),
        }
    return results


def training_overlap(model: Any, splits: dict[str, Any], results: dict[str, Any]) -> dict[str, Any]:
    """For each evaluated split: how many of its images the model trained on (or None
    when the model does not record its training files), by the files' content digests."""
    from xferclass.training._provenance import overlap_summary

    return {name: overlap_summary(model, splits[name].file_paths) for name in results}


def choose_headline(
    results: dict[str, Any], overlap: dict[str, Any], estimate: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The number to lead with: accuracy on the first split of test and validation that
    the model did not train on; else the automatic recipe's held-out estimate; else
    (said so by ``held_out``) the accuracy on images it trained on."""
    for name in ("test", "validation"):
        seen = (overlap.get(name) or {}).get("seen_in_training")
        if name in results and not seen:
            metrics = results[name]["metrics"]
            return {"source": name, "metric": "accuracy", "value": metrics["accuracy"],
                    "n": metrics["n"], "held_out": True}  # fmt: skip
    if estimate is not None:
        return {"source": "held-out estimate (the automatic recipe's cross-validation)",
                "metric": estimate["metric"], "value": estimate["value"],
                "standard_error": estimate["standard_error"], "held_out": True}  # fmt: skip
    name = "test" if "test" in results else "validation"
    metrics = results[name]["metrics"]
    return {"source": name, "metric": "accuracy", "value": metrics["accuracy"],
            "n": metrics["n"], "held_out": False}  # fmt: skip


def say_results(results: dict[str, Any], overlap: dict[str, Any], headline: dict[str, Any]) -> None:
    """The headline first, then one line per split, marked when it holds training images."""
    error = f" ± {headline['standard_error']:.4f}" if "standard_error" in headline else ""
    held = "" if headline["held_out"] else " (NOT held out: the model trained on these images)"
    say(f"headline: {headline['metric']} {headline['value']:.4f}{error} on "
        f"{headline['source']}{held}")  # fmt: skip
    for name, result in results.items():
        metrics, seen = result["metrics"], overlap.get(name) or {}
        mark = ""
        if seen.get("seen_in_training"):
            mark = (f"  [{seen['seen_in_training']} of {seen['scored']} images used in "
                    "training: not held out]")  # fmt: skip
        say(
            f"{name}: accuracy {metrics['accuracy']:.4f}  mae {metrics['mae']:.4f}  "
            f"mse {metrics['mse']:.4f}  rmse {metrics['rmse']:.4f}  r2 {metrics['r2']:.4f}  "
            f"(n={metrics['n']}){mark}"
        )


def write_plots(
    model: Any,
    history: Any,
    results: dict[str, Any],
    out: Path,
    *,
    root: Path,
    class_names: list[str],
    seed: int,
) -> list[str]:
    """history.png (when there is a history), confusion_matrix.png and predictions.png;
    returns the file names.

    The confusion matrix and the predictions grid show the test split, or the
    validation split when there is no test split.
    """
    try:
        from xferclass import load_image_dataset, plots
    except ImportError as error:
        say(f"skipping the plots: {error}")
        return []
    shown = "test" if "test" in results else "validation"
    labels, probabilities = results[shown]["predictions"]
    try:
        if history is not None:
            plots.plot_history(history, out / "history.png")
        plots.plot_confusion_matrix(
            (labels, probabilities), None, out / "confusion_matrix.png",
            class_names=class_names,
        )  # fmt: skip
        # The split is read class by class; a seeded shuffle shows a mix of classes.
        sample = load_image_dataset(
            root / shown, model.input_shape[1:3], batch_size=16, seed=seed,
            class_names=class_names,
        )  # fmt: skip
        plots.plot_predictions(model, sample, out / "predictions.png", n=16)
    except ImportError as error:
        say(f"skipping the plots: {error}")
        return []
    return ["history.png"] * (history is not None) + ["confusion_matrix.png", "predictions.png"]


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
    }
    try:
        info["memory_gib"] = round(
            os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3, 1
        )
    except (ValueError, OSError, AttributeError):
        pass
    try:
        import tensorflow as tf

        info["gpus"] = [device.name for device in tf.config.list_physical_devices("GPU")]
    except Exception:  # the record is informative only
        info["gpus"] = None
    return info


def load_average() -> list[float] | None:
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def versions() -> dict[str, str | None]:
    from importlib import metadata

    found: dict[str, str | None] = {}
    for package in ("xferclass", "tensorflow", "keras", "numpy", "matplotlib"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = None
    return found


def write_json(path: Path, data: dict[str, Any]) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(temporary, path)


# --------------------------------------------------------------------------- main


def run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    load_start = load_average()
    timings: dict[str, float] = {}

    def lap(name: str, since: float) -> float:
        now = time.perf_counter()
        timings[name] = round(now - since, 2)
        return now

    weights = weights_argument(args.weights)
    if weights is None:
        say("WARNING: --weights none: the backbone starts from random weights")
    out = Path(args.out)
    root = find_dataset(args.data, args.no_shared)

    import keras

    import xferclass

    if args.recipe == "auto":
        return run_auto(args, root, out, started, load_start)
    spec = xferclass.get_backbone(args.backbone)
    recipe = apply_overrides(recipe_for(args.recipe, spec.name), args)
    size = recipe.size or spec.default_size[0]
    recipe = dataclasses.replace(recipe, size=size)
    say(f"recipe {recipe.name!r} on {spec.name} at {size}x{size}: {recipe}")
    keras.utils.set_random_seed(args.seed)

    now = time.perf_counter()
    say(f"loading the dataset from {root}")
    splits = load_splits(root, size, args.batch_size, args.seed)
    counts = {name: len(dataset.file_paths) for name, dataset in splits.items()}
    say("images per split: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    class_names = list(splits["train"].class_names)
    now = lap("load_data", now)

    say(f"building the model ({spec.name}, weights={args.weights})")
    model = build_model(spec.name, weights, recipe, len(class_names))
    now = lap("build_model", now)

    history, monitor = train(model, splits, recipe, args)
    timings.update(monitor.timings())
    now = lap("train", now)
    model, trust = make_trustworthy(model, splits, args)
    if trust:
        now = lap("calibrate_and_unknown", now)

    results = evaluate(model, splits, args.eval_train, args.engine)
    overlap = training_overlap(model, splits, results)
    headline = choose_headline(results, overlap)
    now = lap("evaluate", now)

    out.mkdir(parents=True, exist_ok=True)
    say(f"writing the model and plots into {out}")
    xferclass.save_model(model, out / "model.keras")
    pictures = write_plots(
        model, history, results, out, root=root, class_names=class_names, seed=args.seed
    )
    now = lap("save_and_plots", now)
    exported = []
    for format in args.export:
        say(f"exporting to {format}")
        paths = xferclass.export(model, out / EXPORT_FILES[format], format=format, overwrite=True)
        exported += [path.name for path in paths]
    if args.export:
        now = lap("export", now)
    timings["total"] = round(time.perf_counter() - started, 2)

    record = {
        "dataset": {"path": str(root), "images": counts, "class_names": class_names},
        "evaluated_on": headline["source"],
        "headline": headline,
        "seen_in_training": overlap,
        "metrics": {name: result["metrics"] for name, result in results.items()},
        "config": {
            "backbone": spec.name,
            "weights": args.weights,
            "recipe": dataclasses.asdict(recipe),
            "head": "GlobalAveragePooling2D -> Dense(128, relu) -> Dense(softmax)",
            "optimizer": "Adam",
            "loss": "categorical_crossentropy",
            "batch_size": args.batch_size,
            "seed": args.seed,
            "engine": args.engine,
        },
        "history": {key: [float(v) for v in values] for key, values in history.history.items()},
        **trust,
        "kept_epoch": (history.best_epoch if recipe.best_epoch else None) or len(history.epoch),
        "timings_s": timings,
        "load_average": {"start": load_start, "end": load_average()},
        "machine": machine_info(),
        "versions": versions(),
        "files": ["model.keras", "metrics.json", *pictures, *exported],
    }
    write_json(out / "metrics.json", record)

    say_results(results, overlap, headline)
    say(f"done in {timings['total']:.0f} s; results in {out / 'metrics.json'}")
    return 0


def auto_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The recipe flags given on the command line, as train_auto plan overrides."""
    fields = {
        "size": args.size,
        "head_epochs": args.epochs,
        "head_learning_rate": args.learning_rate,
        "fine_tune_epochs": args.fine_tune_epochs,
        "unfreeze": args.unfreeze,
        "fine_tune_learning_rate": args.fine_tune_learning_rate,
        "augment": args.augment,
        "augment_views": args.augment_views,
    }
    changes = {key: value for key, value in fields.items() if value is not None}
    if changes.get("augment") == "none":
        changes["augment"] = None
    return changes


def auto_overlap(
    model: Any, report: dict[str, Any], splits: dict[str, Any], results: dict[str, Any]
) -> dict[str, Any]:
    """:func:`training_overlap` for the automatic recipe's model. A model that does not
    record its files still says, in its report, that train_auto trained on the train
    folder and on the validation folder given to it: all of their images count as seen."""
    overlap = training_overlap(model, splits, results)
    pooled = ["train"] + (["validation"] if report["data"].get("validation_given") else [])
    for name in results:
        if overlap[name] is None and name in pooled:
            scored = results[name]["metrics"]["n"]
            overlap[name] = {
                "scored": scored, "seen_in_training": scored,
                "how": f"xferclass.train_auto trained on the {name} folder (its report)",
            }  # fmt: skip
    return overlap


def run_auto(
    args: argparse.Namespace, root: Path, out: Path, started: float, load_start: Any
) -> int:
    """--recipe auto: xferclass.train_auto within --budget, then the same evaluation."""
    import logging

    log = logging.getLogger("xferclass")
    handler = logging.StreamHandler(sys.stdout)  # xferclass's plan, phases and report
    handler.setFormatter(logging.Formatter("[clothing] %(message)s"))
    level = log.level
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        return _run_auto(args, root, out, started, load_start)
    finally:  # leave the logger as it was (main() may be called in-process)
        log.removeHandler(handler)
        log.setLevel(level)


def _run_auto(
    args: argparse.Namespace, root: Path, out: Path, started: float, load_start: Any
) -> int:
    import xferclass

    backbone = None if args.backbone in ("auto", "xception") else args.backbone
    weights = weights_argument(args.weights)
    say(f"recipe 'auto' with a budget of {args.budget} (backbone: {backbone or 'chosen'})")
    timings: dict[str, float] = {}
    out.mkdir(parents=True, exist_ok=True)
    result = xferclass.train_auto(
        root / "train", root / "validation", budget=args.budget, backbone=backbone,
        weights=weights, seed=args.seed, batch_size=args.batch_size,
        metric=args.metric, overrides=auto_overrides(args), out=out / "model.keras",
        verbose=0 if args.quiet else 1,
    )  # fmt: skip
    timings["train_auto"] = round(time.perf_counter() - started, 2)
    model, report = result.model, result.report
    size = result.plan.input_size
    splits = load_splits(root, size, args.batch_size, args.seed)
    class_names = list(splits["train"].class_names)
    mark = time.perf_counter()
    # The model is used as the recipe decided: with the flip average when it chose TTA.
    choice = report["tta"]["choice"]
    tta: bool | str = False if choice == "no" else choice
    if tta:
        say(f"evaluating with test-time augmentation ({choice}), as the recipe chose")
    results = evaluate(model, splits, args.eval_train, tta=tta)
    overlap = auto_overlap(model, report, splits, results)
    timings["evaluate"] = round(time.perf_counter() - mark, 2)
    estimate = report["estimate"]
    headline = choose_headline(results, overlap, estimate)
    if (overlap.get("validation") or {}).get("seen_in_training"):
        say(
            "the validation images took part in the recipe's cross-validation and its final "
            "training, so the scores on them are not held out; the headline is "
            + ("the test accuracy" if headline["source"] == "test" else "its held-out estimate")
        )
    # No training curve: the recipe trains heads on cached features, fold by fold.
    pictures = write_plots(
        model, None, results, out, root=root, class_names=class_names, seed=args.seed
    )
    timings["total"] = round(time.perf_counter() - started, 2)
    counts = {name: len(dataset.file_paths) for name, dataset in splits.items()}
    record = {
        "dataset": {"path": str(root), "images": counts, "class_names": class_names},
        "evaluated_on": headline["source"],
        "headline": headline,
        "held_out_estimate": estimate,
        "seen_in_training": overlap,
        "metrics": {name: r["metrics"] for name, r in results.items()},
        "config": {
            "recipe": "auto",
            "budget": args.budget,
            "metric": args.metric,
            "seed": args.seed,
            "plan": result.plan.to_dict(),
            "tta": tta,
        },  # fmt: skip
        "auto_report": report,
        "candidates": result.history,
        "timings_s": timings,
        "load_average": {"start": load_start, "end": load_average()},
        "machine": machine_info(),
        "versions": versions(),
        "files": ["model.keras", "metrics.json", *pictures],
    }
    write_json(out / "metrics.json", record)
    say_results(results, overlap, headline)
    say(f"done in {timings['total']:.0f} s (training within the budget: "
        f"{report['total_s']:.0f} s); results in {out / 'metrics.json'}")  # fmt: skip
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the example; returns the exit status (0 on success, 1 on a reported error)."""
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except ExampleError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        from xferclass import XferclassError

        # xferclass's errors on bad input (and ValueErrors on bad arguments) say what
        # to change in their first line; anything else is a bug: show the traceback.
        if not isinstance(error, (XferclassError, ValueError)):
            raise
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        print(f"{PROG}: error: {first}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
