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


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--flip", type=float, default=0.05, help="fraction of labels flipped")
    parser.add_argument("--exact", type=int, default=10, help="exact copies injected")
    parser.add_argument("--near", type=int, default=20, help="near copies injected")
    parser.add_argument("--calibration", type=int, default=100, help="sources of more copies")
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--no-docs", action="store_true", help="do not update the docs page")
    parser.add_argument("--save", default=None, help="also save features and probabilities here")
    return parser.parse_args(argv)


def near_copy(source: Path, kind: str, rng: np.random.Generator) -> bytes:
    """JPEG bytes of a resized, recompressed or cropped copy of ``source``."""
    image = Image.open(source).convert("RGB")
    quality = 90
    if kind == "resized":
        scale = rng.uniform(0.5, 0.75)
        image = image.resize((round(image.width * scale), round(image.height * scale)))
    elif kind == "recompressed":
        quality = int(rng.integers(25, 46))
    else:
        cut = rng.uniform(0.04, 0.08, 4)
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
    for index in rng.choice(len(train), round(args.flip * len(train)), replace=False):
        path = train[int(index)]
        others = [c for c in classes if c != path.parent.name]
        target = work / "train" / others[int(rng.integers(len(others)))] / path.name
        path.rename(target)
        flipped.append(str(target))
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
    return {"flipped": flipped, "copies": copies, "train": len(train), "classes": classes}


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


def duplicate_scores(result: inspection.Inspection, copies: list[dict[str, str]]) -> dict[str, Any]:
    leaks = [set(g["paths"]) for g in result.duplicates if g["cross_split"]]
    found = {kind: [0, 0] for kind in ("exact", *KINDS)}
    for copy in copies:
        hit = any(copy["copy"] in group and copy["source"] in group for group in leaks)
        found[copy["kind"]][0] += int(hit)
        found[copy["kind"]][1] += 1
    injected = {c["copy"] for c in copies}
    others = [g for g in result.duplicates if not injected & set(g["paths"])]
    exact_others = [g for g in others if len({inspection._file_hash(p) for p in g["paths"]}) == 1]
    hits = sum(v[0] for v in found.values())
    return {
        "recall": hits / len(copies),
        "found_by_kind": {k: f"{v[0]}/{v[1]}" for k, v in found.items()},
        "groups": len(result.duplicates),
        "other_groups": len(others),
        "other_groups_exact": len(exact_others),
        "other_groups_cross_split": sum(g["cross_split"] for g in others),
        "other_groups_paths": [g["paths"] for g in others],
    }


def similarities(work: Path, args: argparse.Namespace, datasets: list[Any]) -> dict[str, Any]:
    """Cached pass over the originals and over more copies: the numbers behind the threshold."""
    rng = np.random.default_rng(args.seed + 1)
    validation = sorted(p for p in (work / "validation").rglob("*") if p.is_file())
    extra = work / "calibration"
    pairs = []
    for k, index in enumerate(rng.choice(len(validation), args.calibration, replace=False)):
        source = validation[int(index)]
        for kind in KINDS:
            folder = extra / source.parent.name
            folder.mkdir(parents=True, exist_ok=True)
            target = folder / f"{k:03d}_{kind}.jpg"
            target.write_bytes(near_copy(source, kind, rng))
            pairs.append((str(target), str(source), kind))
    size = datasets[0].image_size
    copies = xferclass.load_image_dataset(
        extra, size, shuffle=False, class_names=datasets[0].class_names
    )
    extractor = inspection._extractor(args.backbone, "imagenet", size)
    splits = [("train", datasets[0]), ("validation", datasets[1]), ("copies", copies)]
    start = time.perf_counter()
    features = inspection._features(splits[:2], extractor, "auto", 0)
    cache_seconds = time.perf_counter() - start
    features.append(inspection._features(splits[2:], extractor, "auto", 0)[0])
    centre = features[0].mean(axis=0)
    units = [inspection._unit_rows(f, centre) for f in features]
    paths = [list(d.file_paths) for _, d in splits]
    originals = np.concatenate(units[:2])
    index = {p: i for i, p in enumerate(paths[0] + paths[1])}
    return {
        "cache_seconds": cache_seconds,
        "originals": originals,
        "original_paths": paths[0] + paths[1],
        "copy_similarity": [
            (kind, float(units[2][paths[2].index(c)] @ originals[index[s]])) for c, s, kind in pairs
        ],
    }


def threshold_table(sims: dict[str, Any], injected: set[str]) -> str:
    """Copy similarities against each clean original's nearest other original."""
    paths = sims["original_paths"]
    clean = np.array([p not in injected for p in paths])
    units = sims["originals"][clean]
    hashes = [inspection._file_hash(p) for p in np.array(paths)[clean]]
    same: dict[str, list[int]] = {}
    for i, digest in enumerate(hashes):
        same.setdefault(digest, []).append(i)
    nearest = np.empty(len(units))
    for start in range(0, len(units), 512):
        block = units[start : start + 512] @ units.T
        for row in range(len(block)):
            block[row, same[hashes[start + row]]] = -1.0  # itself and its exact copies
        nearest[start : start + 512] = block.max(axis=1)
    rows = []
    by_kind: dict[str, list[float]] = {}
    for kind, value in sims["copy_similarity"]:
        by_kind.setdefault(kind, []).append(value)
    for kind, values in by_kind.items():
        v = np.array(values)
        rows.append([f"{kind} copy vs its source", len(v), f"{v.min():.3f}",
                     f"{np.percentile(v, 5):.3f}", f"{np.median(v):.3f}"])  # fmt: skip
    rows.append(
        ["original vs its most similar other original", len(nearest),
         f"{nearest.min():.3f}", f"{np.percentile(nearest, 5):.3f}",
         f"{np.median(nearest):.3f}"]
    )  # fmt: skip
    above = [f"{t:.2f}: {int(np.sum(nearest >= t))} of {len(nearest)}" for t in (0.85, 0.9, 0.95)]
    counts = [f"{int(np.sum(np.array([v for _, v in sims['copy_similarity']]) >= t))}"
              for t in (0.85, 0.9, 0.95)]  # fmt: skip
    return (
        _bench.table(["pairs", "n", "min", "5th pct", "median"], rows)
        + "\n\nOriginals whose most similar other original reaches the similarity "
        + "; ".join(above)
        + f". Copies at 0.85 / 0.90 / 0.95: {' / '.join(counts)} "
        + f"of {len(sims['copy_similarity'])}.\n"
    )


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
        ours = label_scores({row["path"] for row in result.label_issues}, flipped)
        theirs = cleanlab_scores(result, flipped)
        duplicates = duplicate_scores(result, prepared["copies"])
        injected = {c["copy"] for c in prepared["copies"]}
        thresholds = threshold_table(sims, injected)
        if args.save:
            np.savez(
                args.save, originals=sims["originals"], paths=np.array(sims["original_paths"]),
                copy_kinds=np.array([k for k, _ in sims["copy_similarity"]]),
                copy_similarity=np.array([v for _, v in sims["copy_similarity"]]),
                out_of_fold=result.out_of_fold, labels=result.train_labels,
                train_paths=np.array(result.train_paths), flipped=np.array(sorted(flipped)),
                copies=np.array(json.dumps(prepared["copies"])),
            )  # fmt: skip
    info.finish()
    report(args, info, prepared, ours, theirs, duplicates, thresholds, inspect_seconds, sims)


def report(
    args: argparse.Namespace,
    info: _bench.Machine,
    prepared: dict[str, Any],
    ours: dict[str, float],
    theirs: dict[str, float] | None,
    duplicates: dict[str, Any],
    thresholds: str,
    inspect_seconds: float,
    sims: dict[str, Any],
) -> None:
    cache_seconds = sims["cache_seconds"]
    results = {
        "train_images": prepared["train"] + len(prepared["copies"]),
        "flipped": len(prepared["flipped"]),
        "label_issues": ours,
        "cleanlab": theirs,
        "duplicates": duplicates,
        "inspect_seconds": inspect_seconds,
        "cache_seconds": cache_seconds,
        "ratio": inspect_seconds / cache_seconds,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    label_rows = [["xferclass.inspect", ours["flagged"], f"{ours['precision']:.3f}",
                   f"{ours['recall']:.3f}"]]  # fmt: skip
    if theirs is not None:
        label_rows.append(["cleanlab find_label_issues", theirs["flagged"],
                           f"{theirs['precision']:.3f}", f"{theirs['recall']:.3f}"])  # fmt: skip
    kinds = ", ".join(f"{k} {v}" for k, v in duplicates["found_by_kind"].items())
    body = f"""
{results["train_images"]} training images ({len(prepared["flipped"])} labels flipped, \
{len(prepared["copies"])} copies of validation images added), 341 validation images, \
backbone {args.backbone}, {inspection.NEAR_DUPLICATE_THRESHOLD:.2f} near-copy threshold.

**Label issues** against the flipped labels (the same out-of-fold probabilities for both rows;
clothing's own label errors count as false positives here):

{_bench.table(["method", "flagged", "precision", "recall"], label_rows)}

**Duplicates**: {duplicates["recall"]:.0%} of the injected cross-split copies found ({kinds}).
Groups without an injected copy: {duplicates["other_groups"]} \
({duplicates["other_groups_exact"]} of them exact byte copies, \
{duplicates["other_groups_cross_split"]} across splits).

**Time**: `inspect` {inspect_seconds:.1f} s, one caching pass over the same images \
{cache_seconds:.1f} s: {inspect_seconds / cache_seconds:.2f}x.

**Similarities behind the near-copy threshold** (cosine of centred {args.backbone} features):

{thresholds}
"""
    markdown = _bench.section("bench_inspect", "Inspection on clothing", info, body, write=False)
    if not args.no_docs:
        _bench.write_section("bench_inspect", markdown, DOC)


if __name__ == "__main__":
    main()
