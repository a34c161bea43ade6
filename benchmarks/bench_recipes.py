"""Fine-tuning recipes replayed on activations cached once at the cut (clothing).

What ``xferclass.fine_tune`` does with its cut-point cache, opened up so that
many recipes can be compared on the same cached activations: the frozen bottom
of the backbone runs once over train and validation (saved as ``.npy`` under
``--cache``); each recipe then trains the head for 7 epochs on the pooled
features and fine-tunes the top of the backbone for ``--epochs`` epochs on the
cached activations, recording the validation accuracy of every epoch.

Recipes are ``+``-joined options on top of the automatic recipe's defaults
(Adam, 1e-3 for the head, 1e-4 for fine-tuning, class weights ``n / (k *
count)``, no label smoothing, constant learning rate):

- ``base``: those defaults;
- ``ls``: label smoothing 0.1;
- ``cos``: cosine decay of the fine-tuning learning rate to 0 over its epochs;
- ``flip``: a cached mirrored view of every training image (twice the rows);
- ``nocw``: no class weights;
- ``ema``: an exponential moving average of the weights (Adam ``use_ema=True``,
  momentum 0.99), swapped in for validation (``keras.callbacks.SwapEMAWeights``).

Each finished run is appended to ``--results`` (JSON lines); the table of mean
and spread per recipe over every seed run so far goes to stdout and
``docs/benchmarks.md``. Only the validation split is used.

Run::

    python benchmarks/bench_recipes.py --recipes base ls+cos ema --seeds 1 2 3
    python benchmarks/bench_recipes.py --table-only      # the table from --results
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import _bench

_bench.quiet_tensorflow()

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import xferclass  # noqa: E402
from xferclass.data import load_image_dataset  # noqa: E402
from xferclass.models import split_classifier  # noqa: E402
from xferclass.training import _first_unfrozen  # noqa: E402
from xferclass.training._engine import cut_models, head_model, set_trainable  # noqa: E402

OPTIONS = {"base", "ls", "cos", "flip", "nocw", "ema"}


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="efficientnet_lite2")
    parser.add_argument("--size", type=int, default=352, help="input side (the auto recipe's)")
    parser.add_argument("--unfreeze", type=float, default=0.15, help="fraction fine-tuned")
    parser.add_argument("--recipes", nargs="+", default=["base"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--epochs", type=int, default=10, help="fine-tuning epochs")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/xferclass-bench-recipes"))
    parser.add_argument("--results", type=Path, default=None, help="JSON lines (in --cache)")
    parser.add_argument("--table-only", action="store_true")
    parser.add_argument("--no-docs", action="store_true")
    args = parser.parse_args(argv)
    for recipe in args.recipes:
        unknown = set(recipe.split("+")) - OPTIONS
        if unknown:
            parser.error(f"unknown recipe option(s) {sorted(unknown)}; use {sorted(OPTIONS)}")
    args.results = args.results or args.cache / "results.jsonl"
    return args


class Replay:
    """The classifier, its cut, and the activations cached at the cut."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tag = f"{args.backbone}_{args.size}_{args.unfreeze}"
        self.model = xferclass.build_classifier(args.backbone, num_classes=10, input_size=args.size)
        self.parts = split_classifier(self.model)
        assert self.parts is not None
        self.first = _first_unfrozen(self.parts.backbone.layers, args.unfreeze)
        self.cut = cut_models(self.model, self.parts, self.first, None)
        self.initial = self.model.get_weights()
        args.cache.mkdir(parents=True, exist_ok=True)
        self.train, self.train_labels = self.activations("train")
        self.validation, self.validation_labels = self.activations("validation")
        self._mirrored: np.ndarray | None = None

    def activations(self, split: str, mirrored: bool = False) -> tuple[np.ndarray, np.ndarray]:
        path = self.args.cache / f"{self.tag}_{split}{'_mirrored' if mirrored else ''}.npy"
        size = (self.args.size, self.args.size)
        dataset = load_image_dataset(_bench.CLOTHING / split, size, batch_size=32, shuffle=False)
        labels = np.concatenate([y.numpy() for _, y in dataset])
        if path.is_file():
            return np.load(path), labels
        images = dataset.map(lambda x, y: x)
        if mirrored:
            images = images.map(tf.image.flip_left_right)
        start = time.perf_counter()
        array = self.cut.extractor.predict(images, verbose=0)
        print(f"cached {split}{' mirrored' if mirrored else ''} {array.shape} "
              f"in {time.perf_counter() - start:.0f} s", flush=True)  # fmt: skip
        np.save(path, array)
        return array, labels

    def run(self, recipe: str, seed: int) -> dict[str, Any]:
        options = set(recipe.split("+"))
        keras.utils.set_random_seed(seed)
        self.model.set_weights(self.initial)
        x, y = self.train, self.train_labels
        if "flip" in options:
            if self._mirrored is None:
                self._mirrored, _ = self.activations("train", mirrored=True)
            x, y = np.concatenate([x, self._mirrored]), np.concatenate([y, y])
        counts = self.train_labels.sum(axis=0)
        weights = {i: len(self.train_labels) / (len(counts) * c) for i, c in enumerate(counts)}
        class_weight = None if "nocw" in options else weights
        loss = keras.losses.CategoricalCrossentropy(label_smoothing=0.1 if "ls" in options else 0)
        start = time.perf_counter()
        # Phase 1: the head on features pooled from the cached activations.
        pooled_train = self.cut.pooled.predict(x, verbose=0, batch_size=64)
        pooled_val = self.cut.pooled.predict(self.validation, verbose=0, batch_size=64)
        head = head_model(self.parts.head[1:], keras.KerasTensor((None, pooled_train.shape[1])),
                          None, "head")  # fmt: skip
        head.compile(keras.optimizers.Adam(1e-3), loss, metrics=["accuracy"])
        head_history = head.fit(
            pooled_train, y, batch_size=32, epochs=7, class_weight=class_weight, verbose=0,
            validation_data=(pooled_val, self.validation_labels),
        )  # fmt: skip
        # Phase 2: the top of the backbone and the head, on the cached activations.
        set_trainable(self.parts, self.first)
        steps = int(np.ceil(len(x) / 32)) * self.args.epochs
        rate: Any = 1e-4
        if "cos" in options:
            rate = keras.optimizers.schedules.CosineDecay(1e-4, steps)
        optimizer = keras.optimizers.Adam(rate, use_ema="ema" in options, ema_momentum=0.99)
        callbacks = [keras.callbacks.SwapEMAWeights(swap_on_epoch=True)] if "ema" in options else []
        self.cut.trained.compile(optimizer, loss, metrics=["accuracy"])
        tune_start = time.perf_counter()
        history = self.cut.trained.fit(
            x, y, batch_size=32, epochs=self.args.epochs, class_weight=class_weight,
            validation_data=(self.validation, self.validation_labels), verbose=0,
            callbacks=callbacks,
        )  # fmt: skip
        set_trainable(self.parts, -1)
        head_acc = [round(float(v), 4) for v in head_history.history["val_accuracy"]]
        tune_acc = [round(float(v), 4) for v in history.history["val_accuracy"]]
        return {
            "tag": self.tag, "recipe": recipe, "seed": seed, "head": head_acc, "ft": tune_acc,
            "best": max(head_acc + tune_acc), "last3": round(statistics.mean(tune_acc[-3:]), 4),
            "ft_s": round(time.perf_counter() - tune_start, 1),
            "total_s": round(time.perf_counter() - start, 1),
        }  # fmt: skip


def summary(rows: list[dict[str, Any]]) -> list[list[str]]:
    """Mean and spread per recipe (and cut), over every seed run so far."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["tag"], row.get("recipe", row.get("cfg", "?"))), []).append(row)

    def spread(values: list[float]) -> str:
        mean = statistics.mean(values)
        sd = statistics.stdev(values) if len(values) > 1 else float("nan")
        return f"{mean:.3f} (sd {sd:.3f})" if len(values) > 1 else f"{mean:.3f}"

    table = []
    for (tag, recipe), runs in sorted(groups.items()):
        table.append([
            tag, recipe, ", ".join(str(r["seed"]) for r in runs),
            spread([r["best"] for r in runs]),
            spread([r.get("last3", statistics.mean(r["ft"][-3:])) for r in runs]),
            f"{statistics.mean(r['ft_s'] for r in runs):.0f} s",
        ])  # fmt: skip
    return table


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    info = _bench.machine()
    if not args.table_only:
        replay = Replay(args)
        for seed in args.seeds:
            for recipe in args.recipes:
                row = replay.run(recipe, seed)
                print(json.dumps(row), flush=True)
                with args.results.open("a") as handle:
                    handle.write(json.dumps(row) + "\n")
    info.finish()
    rows = [json.loads(line) for line in args.results.read_text().splitlines() if line.strip()]
    headers = ["backbone_size_unfreeze", "recipe", "seeds", "best epoch (val acc)",
               "mean of last 3 fine-tuning epochs", "fine-tuning time per run"]  # fmt: skip
    body = f"""
Clothing train (3068 images) and validation (341), {args.epochs} fine-tuning epochs after 7
head epochs, activations cached once at the cut; "best epoch" is the largest validation
accuracy over all 17 epochs (what a recipe that keeps the best epoch reports; optimistic,
since it is chosen on the same split), "last 3" the mean of the last three fine-tuning
epochs. Mean (sd) over the seeds listed.

{_bench.table(headers, summary(rows))}
"""  # noqa: E501
    print(_bench.section("recipes", "Fine-tuning recipes on cached activations", info, body,
                         write=not args.no_docs))  # fmt: skip


if __name__ == "__main__":
    main()
