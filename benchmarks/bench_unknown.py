"""Trust, measured on clothing: calibration and unknown images, on images no choice saw.

A classifier of ``fit``'s defaults (EfficientNet-Lite0 at 224 px, the README's main
model) trains on ``DATA/train``. ``DATA/validation`` is split in two halves by a seeded
shuffle: half A is what a user holds out (the best epoch, the temperature of
``xferclass.calibrate`` and the threshold of ``xferclass.detect_unknown`` are chosen on
it); half B stands for the test split and is only scored.

Foreign images, which belong to no class, that no choice saw either:

- ``digits``: scikit-learn's handwritten digits (real scans), upscaled to 128 px, gray;
- ``ordinal``: the generated ordinal grades of ``make_suite_data.py`` (fine defects on
  textured grayscale cells, a stand-in for the solar cells of the issue), when given.

``detect_unknown`` chooses its score against its own generated foreign images (noise,
colours, shapes), as a user without foreign images gets it; the table says how that
choice, and each candidate, does on the real foreign sets.

    python benchmarks/bench_unknown.py --foreign ordinal=/tmp/suite/ordinal/test
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from _bench import (
    CLOTHING,
    ROOT,
    _results_table,
    machine,
    quiet_tensorflow,
    record_section,
    table,
)

RESULTS = ROOT / "benchmarks" / "results" / "bench_unknown.json"
SUFFIXES = (".jpg", ".jpeg", ".png")


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in SUFFIXES)


def _digits(folder: Path, count: int, seed: int) -> list[str]:
    """``count`` of scikit-learn's digits as 128 px gray PNG files in ``folder``."""
    import tensorflow as tf
    from sklearn.datasets import load_digits

    images = load_digits().images
    picked = np.random.default_rng(seed).choice(len(images), count, replace=False)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in picked:
        pixels = tf.image.resize((images[i] * 255.0 / 16.0)[..., None], (128, 128)).numpy()
        path = folder / f"digit_{i:04d}.png"
        path.write_bytes(tf.io.encode_png(np.clip(pixels, 0, 255).astype("uint8")).numpy())
        paths.append(str(path))
    return paths


def _halves(root: Path, seed: int) -> tuple[list[str], list[str], list[int], list[int], list[str]]:
    """Validation files split in two halves, with their class indices and the classes."""
    classes = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
    items = [(str(f), classes.index(c)) for c in classes for f in _files(root / "validation" / c)]
    random.Random(seed).shuffle(items)
    half = len(items) // 2
    a, b = items[:half], items[half:]
    return [f for f, _ in a], [f for f, _ in b], [y for _, y in a], [y for _, y in b], classes


def _dataset(files: list[str], labels: list[int], classes: int, size: int) -> Any:
    import tensorflow as tf

    from xferclass.data import image_paths_dataset

    images = image_paths_dataset(files, size, batch_size=32)
    onehot = tf.data.Dataset.from_tensor_slices(np.eye(classes, dtype="float32")[labels]).batch(32)
    return tf.data.Dataset.zip((images, onehot))


def run(root: Path, foreign_sets: dict[str, list[str]], seed: int, epochs: int) -> dict[str, Any]:
    import xferclass
    from xferclass.evaluation.calibration import expected_calibration_error
    from xferclass.evaluation.unknown import area_under_roc
    from xferclass.layers import unknown_layer

    size = 224
    a_files, b_files, a_labels, b_labels, classes = _halves(root, seed)
    train = xferclass.load_image_dataset(root / "train", size, seed=seed)
    held_a = _dataset(a_files, a_labels, len(classes), size)
    model = xferclass.build_classifier("efficientnet_lite0", num_classes=len(classes),
                                       input_size=size)  # fmt: skip
    xferclass.fit(model, train, held_a, epochs=epochs, seed=seed, verbose=0)
    before = xferclass.predict(model, b_files).probabilities
    choice = xferclass.calibrate(model, held_a, seed=seed)
    after = xferclass.predict(model, b_files).probabilities
    scored = xferclass.detect_unknown(model, root / "train", held_out=a_files, seed=seed)
    measured = unknown_layer(scored).measured  # type: ignore[union-attr]
    threshold = float(measured["threshold"])
    inside = xferclass.predict(scored, b_files, unknown=True)
    row: dict[str, Any] = {
        "seed": seed, "epochs": epochs, "held_out_a": len(a_files), "held_out_b": len(b_files),
        "accuracy_b": float(np.mean(after.argmax(1) == np.array(b_labels))),
        "accuracy_b_before": float(np.mean(before.argmax(1) == np.array(b_labels))),
        "ece_b_before": expected_calibration_error(b_labels, before),
        "ece_b_after": expected_calibration_error(b_labels, after),
        "ece_b_if_calibrated": _ece_if_calibrated(after, seed),
        "mean_top_b_before": float(before.max(1).mean()),
        "mean_top_b_after": float(after.max(1).mean()),
        "temperature": choice.temperature, "temperature_kept": choice.kept,
        "chosen": measured, "rejected_b": float(np.mean(inside.unknown)), "foreign": {},
    }  # fmt: skip
    for name, files in foreign_sets.items():
        outside = xferclass.predict(scored, files, unknown=True)
        row["foreign"][name] = {
            "images": len(files),
            "rejected": float(np.mean(outside.unknown)),
            "auroc": area_under_roc(inside.unknown_scores, outside.unknown_scores),
            "mean_top": float(outside.probabilities.max(1).mean()),
            "candidates": _every_candidate(model, root, b_files, files, measured, seed),
        }
    row["threshold"] = threshold
    return row


def _ece_if_calibrated(probabilities: np.ndarray, seed: int, draws: int = 200) -> float:
    """The mean ECE of a perfectly calibrated model with these top probabilities on as
    many images: each right with its top probability. What a finite set measures even
    when there is nothing left to correct."""
    from xferclass.evaluation.calibration import expected_calibration_error

    rng = np.random.default_rng(seed)
    top = probabilities.argmax(1)
    other = (top + 1) % probabilities.shape[1]
    found = []
    for _ in range(draws):
        right = rng.random(len(top)) < probabilities.max(1)
        found.append(expected_calibration_error(np.where(right, top, other), probabilities))
    return float(np.mean(found))


def _every_candidate(
    model: Any,
    root: Path,
    inside: list[str],
    outside: list[str],
    measured: dict[str, Any],
    seed: int,
) -> dict[str, dict[str, float]]:
    """Each candidate of ``measured`` on ``inside`` against ``outside`` images, at the
    threshold it had on the held-out half: AUROC and the shares rejected."""
    import keras

    from xferclass.backbones.models import POOL
    from xferclass.evaluation.unknown import _candidate_scores, _image_files, _pass

    network = keras.Model(model.inputs, [model.output, model.get_layer(POOL).output])
    size = (int(model.input_shape[1]), int(model.input_shape[2]))
    _, known = _pass(network, _image_files(str(root / "train")), size, 32, "train", 0)
    held = _pass(network, inside, size, 32, "inside", 0)
    foreign = _pass(network, outside, size, 32, "outside", 0)
    scores_in, scores_out, _ = _candidate_scores(held, known, foreign, max_references=2000,
                                                 seed=seed)  # fmt: skip
    from xferclass.evaluation.unknown import area_under_roc

    found = {}
    for candidate in measured["candidates"]:
        key = (candidate["score"], candidate["k"] or 0)
        name = candidate["score"] + (f" k={candidate['k']}" if candidate["k"] else "")
        found[name] = {
            "auroc": area_under_roc(scores_in[key], scores_out[key]),
            "inside_rejected": float(np.mean(scores_in[key] > candidate["threshold"])),
            "foreign_rejected": float(np.mean(scores_out[key] > candidate["threshold"])),
        }
    return found


TITLE = "Trust: calibration and unknown images (`bench_unknown.py`)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=CLOTHING)
    parser.add_argument("--foreign", nargs="*", default=[], help="NAME=FOLDER ...")
    parser.add_argument("--digits", type=int, default=100, help="digits as foreign images")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--no-docs", action="store_true")
    parser.add_argument(
        "--summary-only", action="store_true",
        help="run nothing: record the section from the runs in " + str(RESULTS.name),
    )  # fmt: skip
    args = parser.parse_args()
    if args.summary_only:
        results = json.loads(RESULTS.read_text())
    else:
        quiet_tensorflow()
        info = machine()
        with tempfile.TemporaryDirectory() as scratch:
            foreign = {"digits": _digits(Path(scratch) / "digits", args.digits, 0)}
            for item in args.foreign:
                name, folder = item.split("=", 1)
                foreign[name] = [str(p) for p in _files(Path(folder))]
            rows = [run(args.data, foreign, seed, args.epochs) for seed in args.seeds]
        info.finish()
        results = {**info.fields(), "runs": rows}
        RESULTS.write_text(json.dumps(results, indent=1, default=str))
        print(json.dumps(rows, indent=1, default=str))
    if not args.no_docs:
        fields = ("command", "commit", "date", "machine", "load", "software")
        tables = _results_table()
        entry = {"title": TITLE, **{key: results[key] for key in fields},
                 "body": tables.parse_body(markdown(results))}  # fmt: skip
        record_section("unknown", entry)


def markdown(results: dict[str, Any]) -> str:
    rows = results["runs"]
    lines = []
    for r in rows:
        chosen = r["chosen"]
        k = f", k={chosen['k']}" if chosen["k"] else ""
        lines.append([
            r["seed"], f"{r['accuracy_b']:.3f}",
            f"{r['ece_b_before']:.3f} -> {r['ece_b_after']:.3f} (T={r['temperature']:.2f}; "
            f"{r.get('ece_b_if_calibrated', float('nan')):.3f} if calibrated)",
            f"{chosen['score']}{k}", f"{r['rejected_b']:.1%}",
            *[f"{f['rejected']:.1%} (AUROC {f['auroc']:.3f}; {f['images']} images)"
              for f in r["foreign"].values()],
        ])  # fmt: skip
    names = list(rows[0]["foreign"]) if rows else []
    return "\n\n".join([
        "A classifier of `fit`'s defaults (EfficientNet-Lite0 at 224 px, 10 epochs) on "
        "clothing's train split. Its validation split is halved: half A chooses the best "
        "epoch, the temperature (`xferclass.calibrate`) and the unknown threshold "
        "(`xferclass.detect_unknown`, 5 % of half A rejected, its score chosen against "
        "generated foreign images only); half B stands for a test split and is only "
        "scored. Foreign images: scikit-learn's digits upscaled to 128 px, and the "
        "generated ordinal grades (textured grayscale cells) where given.",
        table(["seed", "accuracy (B)", "ECE on B: before -> after", "unknown score kept",
               "B rejected", *[f"{n} rejected" for n in names]], lines),
    ])  # fmt: skip


if __name__ == "__main__":
    main()
