"""``xferclass.inspect`` on clothing with label errors and duplicates injected by the script.

In a temporary copy of clothing's ``train/`` and ``validation/`` folders the
script

- flips 5% of the training labels (seeded): each picked file moves to the
  folder of another class, drawn at random;
- adds 10 exact copies (the same bytes) and 20 near copies of validation
  images to ``train/``, in the class folder of their source: 7 resized (to
  50-75% of the side), 7 recompressed (JPEG quality 25-45), 6 cropped (4-8% off
  each side), the sources drawn at random without repeats;

then runs ``xferclass.inspect(train, validation)`` and reports:

- label issues: precision and recall against the flips, next to cleanlab's
  ``find_label_issues`` (default ``prune_by_noise_rate``) on the same
  out-of-fold probabilities, when cleanlab is installed (it is not a
  dependency of xferclass: ``pip install cleanlab`` for this script only);
- duplicates: the share of the 30 injected cross-split copies found (a group
  flagged ``cross_split`` that holds the copy and its source), and the groups
  that hold no injected copy ("other groups": genuine duplicates of the data
  set or false groups; exact ones have the same bytes);
- time: the whole ``inspect`` call against one caching pass (the frozen pass
  over the same images, through the same caching code, on datasets already
  loaded). ``inspect`` runs first, so any engine conversion is paid by it;
- the similarity measurements behind the near-copy threshold: the cosine
  similarity of every injected near copy, and of ``--calibration`` more
  resized, recompressed and cropped copies of validation images, to their
  source, against each original image's highest similarity to any other
  original image.

Results go to ``benchmarks/results/bench_inspect.json`` and to a section of
``docs/data_quality.md``.

Run::

    pip install cleanlab                 # the comparison column only
    python benchmarks/bench_inspect.py   # about 3 frozen passes over clothing
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import _bench

_bench.quiet_tensorflow()

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

import xferclass  # noqa: E402
from xferclass import inspection  # noqa: E402

RESULTS = _bench.ROOT / "benchmarks" / "results" / "bench_inspect.json"
DOC = _bench.ROOT / "docs" / "data_quality.md"
KINDS = ("resized", "recompressed", "cropped")
MARGINS = (0.15, 0.20, 0.25, 0.30)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--flip", type=float, default=0.05, help="fraction of labels flipped")
    parser.add_argument("--exact", type=int, default=10, help="exact copies injected")
    parser.add_argument("--near", type=int, default=20, help="near copies injected")
    parser.add_argument("--calibration", type=int, default=150, help="sources of more copies")
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--no-docs", action="store_true", help="do not update the docs page")
    parser.add_argument("--save", default=None, help="also save features and probabilities here")
    return parser.parse_args(argv)


def near_copy(source: Path, kind: str, rng: np.random.Generator, strong: bool = False) -> bytes:
    """JPEG bytes of a resized, recompressed or cropped copy of ``source``.

    The injected copies: resized to 50-75% of the side, recompressed at JPEG
    quality 25-45, or cropped by 4-8% on each side. ``strong``: 25-40%,
    quality 10-19, 8-12%.
    """
    image = Image.open(source).convert("RGB")
    quality = 90
    if kind == "resized":
        scale = rng.uniform(0.25, 0.4) if strong else rng.uniform(0.5, 0.75)
        image = image.resize((round(image.width * scale), round(image.height * scale)))
    elif kind == "recompressed":
        quality = int(rng.integers(10, 20) if strong else rng.integers(25, 46))
    else:
        cut = rng.uniform(0.08, 0.12, 4) if strong else rng.uniform(0.04, 0.08, 4)
        w, h = image.size
        box = (cut[0] * w, cut[1] * h, w - cut[2] * w, h - cut[3] * h)
        image = image.crop(tuple(round(v) for v in box))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=quality)
    return out.getvalue()


def prepare(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Copy clothing into ``work``, flip labels, inject copies; return what was done."""
    rng = np.random.default_rng(args.seed)
    for split in ("train", "validation"):
        shutil.copytree(_bench.CLOTHING / split, work / split)
    train = sorted(p for p in (work / "train").rglob("*") if p.is_file())
    classes = sorted(p.name for p in (work / "train").iterdir() if p.is_dir())
    flipped = []
    was = {}
    for index in rng.choice(len(train), round(args.flip * len(train)), replace=False):
        path = train[int(index)]
        others = [c for c in classes if c != path.parent.name]
        target = work / "train" / others[int(rng.integers(len(others)))] / path.name
        path.rename(target)
        flipped.append(str(target))
        was[str(target)] = path.parent.name
    validation = sorted(p for p in (work / "validation").rglob("*") if p.is_file())
    sources = rng.choice(len(validation), args.exact + args.near, replace=False)
    copies = []
    for k, index in enumerate(sources):
        source = validation[int(index)]
        kind = "exact" if k < args.exact else KINDS[(k - args.exact) % 3]
        target = work / "train" / source.parent.name / f"copy{k:02d}_{kind}_{source.stem}.jpg"
        if kind == "exact":
            target = target.with_suffix(source.suffix)
            shutil.copyfile(source, target)
        else:
            target.write_bytes(near_copy(source, kind, rng))
        copies.append({"copy": str(target), "source": str(source), "kind": kind})
    return {
        "flipped": flipped, "was": was, "copies": copies, "train": len(train), "classes": classes,
    }  # fmt: skip


def label_scores(found: set[str], truth: set[str]) -> dict[str, float]:
    hits = len(found & truth)
    return {
        "flagged": len(found),
        "precision": hits / len(found) if found else 0.0,
        "recall": hits / len(truth) if truth else 0.0,
    }


def cleanlab_scores(result: inspection.Inspection, flipped: set[str]) -> dict[str, float] | None:
    try:
        from cleanlab.filter import find_label_issues
    except ImportError:
        return None
    mask = find_label_issues(labels=result.train_labels, pred_probs=result.out_of_fold)
    return label_scores({result.train_paths[i] for i in np.flatnonzero(mask)}, flipped)


def duplicate_scores(groups: list[dict[str, Any]], copies: list[dict[str, str]]) -> dict[str, Any]:
    leaks = [set(g["paths"]) for g in groups if g["cross_split"]]
    found = {kind: [0, 0] for kind in ("exact", *KINDS)}
    for copy in copies:
        hit = any(copy["copy"] in group and copy["source"] in group for group in leaks)
        found[copy["kind"]][0] += int(hit)
        found[copy["kind"]][1] += 1
    injected = {c["copy"] for c in copies}
    others = [g for g in groups if not injected & set(g["paths"])]
    exact_others = [g for g in others if len({inspection._file_hash(p) for p in g["paths"]}) == 1]
    hits = sum(v[0] for v in found.values())
    return {
        "recall": hits / len(copies),
        "found_by_kind": {k: f"{v[0]}/{v[1]}" for k, v in found.items()},
        "groups": len(groups),
        "other_groups": len(others),
        "other_groups_exact": len(exact_others),
        "other_groups_cross_split": sum(g["cross_split"] for g in others),
        "other_groups_paths": [g["paths"] for g in others],
    }


def similarities(work: Path, args: argparse.Namespace, datasets: list[Any]) -> dict[str, Any]:
    """One timed caching pass over the originals, and one over more copies of validation images."""
    rng = np.random.default_rng(args.seed + 1)
    validation = sorted(p for p in (work / "validation").rglob("*") if p.is_file())
    extra = work / "calibration"
    pairs = []
    for k, index in enumerate(rng.choice(len(validation), args.calibration, replace=False)):
        source = validation[int(index)]
        for kind in KINDS:
            for level in ("normal", "strong"):
                target = extra / kind / f"{k:03d}_{level}.jpg"
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(near_copy(source, kind, rng, strong=level == "strong"))
                pairs.append((str(target), str(source), kind, level))
    size = datasets[0].image_size
    copies = xferclass.load_image_dataset(extra, size, shuffle=False)
    extractor = inspection._extractor(args.backbone, "imagenet", size)
    splits = [("train", datasets[0]), ("validation", datasets[1])]
    start = time.perf_counter()
    features = inspection._features(splits, extractor, "auto", 0)
    cache_seconds = time.perf_counter() - start
    extra_features = inspection._features([("copies", copies)], extractor, "auto", 0)[0]
    paths = list(datasets[0].file_paths) + list(datasets[1].file_paths)
    every = np.concatenate([*features, extra_features])
    train = np.arange(len(every)) < len(datasets[0].file_paths)
    units = inspection._whitened_units(every, train)
    where = {p: len(paths) + i for i, p in enumerate(copies.file_paths)}
    index = {p: i for i, p in enumerate(paths)}
    return {
        "cache_seconds": cache_seconds,
        "features": np.concatenate(features),
        "units": units[: len(paths)],
        "paths": paths,
        "copies": [(units[where[c]], index[s], kind, level) for c, s, kind, level in pairs],
    }


def _background(values: np.ndarray) -> float:
    """The ``NEAR_DUPLICATE_NEIGHBOUR``-th largest of ``values``."""
    k = inspection.NEAR_DUPLICATE_NEIGHBOUR
    return float(-np.partition(-values, k - 1)[k - 1])


def threshold_sweep(
    sims: dict[str, Any], train_count: int, copies: list[dict[str, str]]
) -> list[dict[str, Any]]:
    """Duplicate findings at other margins, from the same features as ``inspect``'s."""
    paths = sims["paths"]
    splits = ["train"] * train_count + ["validation"] * (len(paths) - train_count)
    rows = []
    for margin in MARGINS:
        pairs = inspection._near_pairs(sims["units"], inspection.NEAR_DUPLICATE_FLOOR, margin)
        groups = inspection._duplicate_groups(paths, splits, pairs)
        rows.append({"margin": margin, **duplicate_scores(groups, copies)})
    return rows


def calibration(sims: dict[str, Any], injected: set[str]) -> dict[str, Any]:
    """Which calibration copies the rule finds, one copy at a time among the clean originals."""
    units = sims["units"]
    clean = np.array([p not in injected for p in sims["paths"]])
    originals = units @ units.T
    np.fill_diagonal(originals, -np.inf)
    floor = inspection.NEAR_DUPLICATE_FLOOR
    found: dict[str, dict[float, list[bool]]] = {}
    similarity: dict[str, list[float]] = {}
    for unit, source, kind, level in sims["copies"]:
        to_originals = np.where(clean, units @ unit, -np.inf)
        value = float(to_originals[source])
        copy_background = _background(to_originals)
        source_row = np.append(np.where(clean, originals[source], -np.inf), value)
        gap = value - max(copy_background, _background(source_row))
        key = f"{kind} ({level})"
        similarity.setdefault(key, []).append(value)
        for margin in MARGINS:
            found.setdefault(key, {}).setdefault(margin, []).append(
                value >= floor and gap >= margin
            )
    clean_units = units[clean]
    others = {margin: len(inspection._near_pairs(clean_units, floor, margin)) for margin in MARGINS}
    return {
        "found": {k: {m: float(np.mean(v)) for m, v in by.items()} for k, by in found.items()},
        "similarity_median": {k: float(np.median(v)) for k, v in similarity.items()},
        "other_pairs": others,
        "count": {k: len(v) for k, v in similarity.items()},
    }


def threshold_table(measured: dict[str, Any]) -> str:
    rows = [
        [key, measured["count"][key], f"{measured['similarity_median'][key]:.2f}"]
        + [f"{by[m]:.0%}" for m in MARGINS]
        for key, by in sorted(measured["found"].items())
    ]
    rows.append(
        ["pairs of distinct originals flagged", "", ""]
        + [str(measured["other_pairs"][m]) for m in MARGINS]
    )
    headers = ["copies", "n", "median similarity"] + [f"margin {m:.2f}" for m in MARGINS]
    return _bench.table(headers, rows)


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    info = _bench.machine()
    with tempfile.TemporaryDirectory(prefix="bench-inspect-") as folder:
        work = Path(folder)
        prepared = prepare(work, args)
        flipped = set(prepared["flipped"])
        start = time.perf_counter()
        result = xferclass.inspect(
            str(work / "train"), str(work / "validation"), backbone=args.backbone, seed=args.seed
        )
        inspect_seconds = time.perf_counter() - start
        size = xferclass.get_backbone(args.backbone).default_size
        train = xferclass.load_image_dataset(work / "train", size, shuffle=False)
        validation = xferclass.load_image_dataset(
            work / "validation", size, shuffle=False, class_names=train.class_names
        )
        sims = similarities(work, args, [train, validation])
        injected = {c["copy"] for c in prepared["copies"]}
        measured = {
            "train_images": len(train.file_paths),
            "validation_images": len(validation.file_paths),
            "flipped": len(flipped),
            "label_issues": label_scores({row["path"] for row in result.label_issues}, flipped),
            "cleanlab": cleanlab_scores(result, flipped),
            "duplicates": duplicate_scores(result.duplicates, prepared["copies"]),
            "threshold_sweep": threshold_sweep(sims, len(train.file_paths), prepared["copies"]),
            "outliers": {
                "count": len(result.outliers),
                "fence": result.outlier_threshold,
                "top": [dict(row, path=_short(row["path"], work)) for row in result.outliers[:20]],
            },
            "inspect_seconds": inspect_seconds,
            "cache_seconds": sims["cache_seconds"],
            "ratio": inspect_seconds / sims["cache_seconds"],
        }
        measured["duplicates"]["other_groups_paths"] = [
            [_short(p, work) for p in group]
            for group in measured["duplicates"]["other_groups_paths"]
        ]
        measured["calibration"] = calibration(sims, injected)
        thresholds = threshold_table(measured["calibration"])
        if args.save:
            save(args.save, sims, result, flipped, prepared)
    info.finish()
    report(args, info, measured, thresholds)


def _short(path: str, work: Path) -> str:
    """``path`` relative to the temporary copy (which is gone after the run)."""
    return str(Path(path).relative_to(work))


def save(
    where: str,
    sims: dict[str, Any],
    result: inspection.Inspection,
    flipped: set[str],
    prepared: dict[str, Any],
) -> None:
    np.savez(
        where, units=sims["units"], paths=np.array(sims["paths"]),
        out_of_fold=result.out_of_fold, labels=result.train_labels,
        train_paths=np.array(result.train_paths), flipped=np.array(sorted(flipped)),
        copies=np.array(json.dumps(prepared["copies"])), features=sims["features"],
    )  # fmt: skip


def report(
    args: argparse.Namespace, info: _bench.Machine, measured: dict[str, Any], thresholds: str
) -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(measured, indent=2) + "\n", encoding="utf-8")
    rows = []
    for name, key in (
        ("xferclass.inspect", "label_issues"),
        ("cleanlab find_label_issues", "cleanlab"),
    ):
        scores = measured[key]
        if scores is not None:
            rows.append([name, scores["flagged"], f"{scores['precision']:.3f}",
                         f"{scores['recall']:.3f}"])  # fmt: skip
    duplicates = measured["duplicates"]
    kinds = ", ".join(f"{k} {v}" for k, v in duplicates["found_by_kind"].items())
    sweep = _bench.table(
        ["margin", "copies found", "groups", "groups without an injected copy", "exact ones"],
        [[f"{r['margin']:.2f}", f"{r['recall']:.0%}", r["groups"], r["other_groups"],
          r["other_groups_exact"]] for r in measured["threshold_sweep"]],
    )  # fmt: skip
    body = f"""
{measured["train_images"]} training images ({measured["flipped"]} labels flipped, \
{args.exact + args.near} copies of validation images added), \
{measured["validation_images"]} validation images, backbone {args.backbone}, near-copy \
rule: floor {inspection.NEAR_DUPLICATE_FLOOR:.2f}, margin {inspection.NEAR_DUPLICATE_MARGIN:.2f}.

**Label issues** against the flipped labels (the same out-of-fold probabilities for both rows;
clothing's own label errors count as false positives here):

{_bench.table(["method", "flagged", "precision", "recall"], rows)}

**Duplicates**: {duplicates["recall"]:.0%} of the injected cross-split copies found ({kinds}).
Groups without an injected copy: {duplicates["other_groups"]} \
({duplicates["other_groups_exact"]} of them exact byte copies, \
{duplicates["other_groups_cross_split"]} across splits). At other margins:

{sweep}

**Outliers**: {measured["outliers"]["count"]} images above the cutoff \
{measured["outliers"]["fence"]:.3f} (the {inspection.OUTLIER_PERCENTILE:g}th percentile of the \
training images' scores).

**Time**: `inspect` {measured["inspect_seconds"]:.1f} s, one caching pass over the same \
images {measured["cache_seconds"]:.1f} s: {measured["ratio"]:.2f}x.

**The measurements behind the near-copy rule**: {args.calibration} more validation images,
each copied in every way at the injected strength ("normal") and at a stronger one ("strong":
resized to 25-40%, JPEG quality 10-19, cropped by 8-12% a side), each copy tested on its own
among the originals (without the injected copies); similarity is the cosine of whitened
features; the last row counts pairs of distinct originals that the rule joins (genuine
re-shoots of one garment among them):

{thresholds}
"""
    markdown = _bench.section("bench_inspect", "Inspection on clothing", info, body, write=False)
    if not args.no_docs:
        _bench.write_section("bench_inspect", markdown, DOC)


if __name__ == "__main__":
    main()
