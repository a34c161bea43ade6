"""Models remember the files they trained on, and no score on them passes as held out.

The Bloom filter of content digests against an exact set, its size at a million
images, its JSON and ``.keras`` round trips; ``fit`` and ``fine_tune`` recording their
training files; and what ``xferclass evaluate``, ``xferclass report`` and
``examples/clothing.py`` say when the images they score overlap the training images.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from pathlib import Path

import keras
import numpy as np
import pytest

import xferclass
from conftest import make_shape_dataset
from helpers import example_module, tiny_dataset, tiny_model
from xferclass.cli import main
from xferclass.evaluation._auto_report import store_report
from xferclass.layers import preprocessing_layer
from xferclass.training._provenance import (
    HOW,
    METADATA_KEY,
    BloomFilter,
    digests,
    file_digest,
    overlap_summary,
    record_training_files,
    trained_on,
)

SIZE = 32
#: Images per class of each generated folder (3 classes).
PER_CLASS = 4
#: A made-up automatic-recipe estimate, stored in a model as train_auto stores its report.
ESTIMATE = {"metric": "accuracy", "value": 0.8125, "standard_error": 0.0375}


def _keys(start: int, count: int) -> np.ndarray:
    """``count`` distinct 16-byte digests (BLAKE2b of the integers from ``start``)."""
    rows = [hashlib.blake2b(str(start + i).encode(), digest_size=16).digest() for i in range(count)]
    return np.frombuffer(b"".join(rows), dtype=np.uint8).reshape(count, 16)


# --------------------------------------------------------------------------- the filter


def test_the_filter_agrees_with_an_exact_set_up_to_its_false_positive_rate() -> None:
    members = _keys(0, 3000)
    exact = {bytes(row) for row in members}
    candidates = _keys(10_000_000, 20_500)
    strangers = np.stack([row for row in candidates if bytes(row) not in exact][:20_000])
    assert len(strangers) == 20_000
    found = BloomFilter.sized_for(len(members))
    found.add(members)
    assert found.count == 3000
    assert found.contains(members).all()  # no false negatives, ever
    rate = found.false_positive_rate  # from bits, hashes and count
    assert 5e-5 < rate < 1.2e-4
    expected = rate * len(strangers)  # about 2
    # A bound a correct filter fails with probability below 1e-6 (Poisson tail);
    # a filter with one hash or with clustered positions counts hundreds.
    positives = int(found.contains(strangers).sum())
    assert positives <= expected + 6 * math.sqrt(expected) + 6, (positives, expected)
    # Adding a list of 16-byte strings is the same as adding the array.
    again = BloomFilter.sized_for(len(members))
    again.add([bytes(row) for row in members])
    assert np.array_equal(again.packed, found.packed)


def test_the_size_at_a_million_images_follows_from_the_parameters() -> None:
    small = BloomFilter.sized_for(3000)
    assert 6_500 <= small.nbytes <= 7_500  # about 7 KB
    big = BloomFilter.sized_for(1_000_000)
    assert big.hashes == 13
    assert 19.0 <= big.bits / 1_000_000 <= 19.3  # bits per image
    assert 2_300_000 <= big.nbytes <= 2_500_000  # about 2.4 MB
    full = BloomFilter(bits=big.bits, hashes=big.hashes, count=1_000_000, packed=big.packed)
    assert full.false_positive_rate == pytest.approx(1e-4, rel=0.05)
    encoded = len(json.dumps(full.to_json()))
    assert encoded < 3_300_000  # base64 of 2.4 MB, plus the parameters


def test_the_filter_survives_json() -> None:
    members = _keys(0, 500)
    found = BloomFilter.sized_for(len(members))
    found.add(members)
    data = json.loads(json.dumps(found.to_json()))
    assert set(data) == {"digest", "bits", "hashes", "count", "filter"}
    assert data["digest"] == "blake2b-128" and data["count"] == 500
    back = BloomFilter.from_json(data)
    assert (back.bits, back.hashes, back.count) == (found.bits, found.hashes, found.count)
    assert np.array_equal(back.packed, found.packed)
    probe = np.concatenate([members, _keys(50_000, 500)])
    assert np.array_equal(back.contains(probe), found.contains(probe))
    with pytest.raises(ValueError, match="bytes for"):
        BloomFilter.from_json({**data, "bits": data["bits"] * 2})
    with pytest.raises(ValueError, match="not a Bloom filter"):
        BloomFilter.from_json({**data, "filter": "not base64!"})


# --------------------------------------------------------------------------- files


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``train/`` (the training images), ``fresh/`` (other images) and ``mixed/`` (one
    copy of each training image of a class under another name, plus fresh images)."""
    root = tmp_path_factory.mktemp("provenance")
    train = make_shape_dataset(root / "train", per_class=PER_CLASS, size=SIZE, seed=0)
    fresh = make_shape_dataset(root / "fresh", per_class=PER_CLASS, size=SIZE, seed=1)
    mixed = root / "mixed"
    shutil.copytree(fresh, mixed)
    for source in sorted((train / "circle").iterdir()):
        shutil.copyfile(source, mixed / "circle" / f"copy_of_{source.name}")
    return {"train": train, "fresh": fresh, "mixed": mixed}


@pytest.fixture(scope="module")
def trained(folders: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model trained by xferclass.fit on ``train/``, saved."""
    train = xferclass.load_image_dataset(folders["train"], SIZE, batch_size=4, seed=0)
    model = tiny_model()
    xferclass.fit(model, train, epochs=1, verbose=0)
    path = tmp_path_factory.mktemp("model") / "model.keras"
    xferclass.save_model(model, path)
    return path


def _files(folder: Path) -> list[str]:
    return sorted(str(path) for path in folder.rglob("*") if path.is_file())


def test_file_digests_read_the_bytes(folders: dict[str, Path], tmp_path: Path) -> None:
    files = _files(folders["train"])
    rows = digests(files)
    assert rows.shape == (len(files), 16) and rows.dtype == np.uint8
    assert bytes(rows[0]) == hashlib.blake2b(Path(files[0]).read_bytes(), digest_size=16).digest()
    assert bytes(rows[0]) == file_digest(files[0])
    many = files * 12  # past the threaded path's threshold: same digests, same order
    assert np.array_equal(digests(many), np.tile(rows, (12, 1)))
    big = tmp_path / "big.bin"  # several read chunks
    payload = np.random.default_rng(0).integers(0, 256, 3 * (1 << 20) + 5, dtype=np.uint8)
    big.write_bytes(payload.tobytes())
    assert file_digest(big) == hashlib.blake2b(payload.tobytes(), digest_size=16).digest()


def test_fit_records_its_training_files(trained: Path, folders: dict[str, Path]) -> None:
    model = xferclass.load_model(trained)  # so the record also survived .keras
    record = preprocessing_layer(model).metadata[METADATA_KEY]
    assert record["version"] == 1 and len(record["filters"]) == 1
    assert record["filters"][0]["count"] == 3 * PER_CLASS
    train, fresh = _files(folders["train"]), _files(folders["fresh"])
    assert trained_on(model, train).all()
    assert not trained_on(model, fresh).any()
    assert trained_on(trained, train[:2]).tolist() == [True, True]  # a path works too


def test_a_copy_under_another_name_counts_as_seen_and_a_new_file_does_not(
    trained: Path, folders: dict[str, Path], tmp_path: Path
) -> None:
    source = Path(_files(folders["train"])[0])
    copy = tmp_path / "elsewhere" / "renamed.bin"
    copy.parent.mkdir()
    shutil.copyfile(source, copy)
    changed = tmp_path / "changed.png"
    changed.write_bytes(source.read_bytes() + b"\0")  # one byte more: other content
    assert trained_on(trained, [copy, changed]).tolist() == [True, False]
    summary = overlap_summary(trained, _files(folders["mixed"]))
    assert summary is not None
    assert summary["scored"] == 4 * PER_CLASS and summary["seen_in_training"] == PER_CLASS
    assert summary["how"] == HOW and 0 < summary["false_positive_rate"] < 2e-4
    assert json.loads(json.dumps(summary)) == summary


def test_recording_changes_no_weight_and_adds_only_new_files(folders: dict[str, Path]) -> None:
    model = tiny_model()
    before = [w.copy() for w in model.get_weights()]
    train, fresh = _files(folders["train"]), _files(folders["fresh"])
    assert record_training_files(model, train) is True
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    record = preprocessing_layer(model).metadata[METADATA_KEY]
    assert record_training_files(model, train[::-1] + train) is True  # nothing new
    assert preprocessing_layer(model).metadata[METADATA_KEY] == record
    assert record_training_files(model, fresh[:3]) is True
    filters = preprocessing_layer(model).metadata[METADATA_KEY]["filters"]
    assert [entry["count"] for entry in filters] == [len(train), 3]
    assert trained_on(model, train + fresh).tolist() == [True] * (len(train) + 3) + [False] * (
        len(fresh) - 3
    )


def test_fine_tune_records_its_training_files_and_not_the_validation_files(
    folders: dict[str, Path],
) -> None:
    train, validation = xferclass.load_image_dataset(
        folders["train"], SIZE, batch_size=4, seed=0, validation_split=0.25, subset="both"
    )
    model = tiny_model()
    xferclass.fine_tune(
        model, train, validation, head_epochs=0, fine_tune_epochs=1, unfreeze=2, verbose=0
    )
    assert trained_on(model, train.file_paths).all()
    assert not trained_on(model, validation.file_paths).any()


def test_models_without_a_record_say_nothing(folders: dict[str, Path]) -> None:
    files = _files(folders["train"])
    model = tiny_model()
    assert trained_on(model, files) is None and overlap_summary(model, files) is None
    # Training data that does not know its files records nothing.
    xferclass.fit(model, tiny_dataset(12, batch_size=4), epochs=1, verbose=0)
    assert trained_on(model, files) is None
    foreign = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    assert record_training_files(foreign, files) is False
    assert trained_on(foreign, files) is None and overlap_summary(foreign, files) is None


def test_an_unreadable_file_is_named(trained: Path, tmp_path: Path) -> None:
    missing = tmp_path / "gone" / "photo_17.jpg"
    with pytest.raises(xferclass.DatasetError, match="photo_17.jpg"):
        trained_on(trained, [missing])
    folder = tmp_path / "not_a_file"
    folder.mkdir()
    with pytest.raises(xferclass.DatasetError, match="cannot read .*not_a_file"):
        file_digest(folder)
    with pytest.raises(xferclass.DatasetError, match="photo_17.jpg"):
        record_training_files(tiny_model(), [missing])


def test_a_damaged_record_is_an_error_not_silence(folders: dict[str, Path]) -> None:
    model = tiny_model()
    record_training_files(model, _files(folders["train"])[:2])
    layer = preprocessing_layer(model)
    layer.metadata = {METADATA_KEY: {"version": 1, "filters": [{"bits": 8}]}}
    with pytest.raises(xferclass.ModelFileError, match="damaged"):
        trained_on(model, [])


# --------------------------------------------------------------------------- evaluate


def test_evaluate_says_how_many_scored_images_it_trained_on(
    trained: Path, folders: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    common = ["--engine", "keras", "--batch-size", "8"]
    assert main(["evaluate", str(trained), str(folders["mixed"]), *common]) == 0
    text = capsys.readouterr().out
    lines = text.splitlines()
    assert lines[0].startswith(f"{trained} on {folders['mixed']} (16 images, including images")
    assert (
        f"{PER_CLASS} of {4 * PER_CLASS} images scored here were used in training: "
        "these scores are not held out" in lines[1]
    )
    assert "held-out estimate" not in text  # the model has no recipe report
    assert main(["evaluate", str(trained), str(folders["mixed"]), "--json", *common]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["training_overlap"]["scored"] == 4 * PER_CLASS
    assert metrics["training_overlap"]["seen_in_training"] == PER_CLASS
    assert "held_out_estimate" not in metrics
    assert main(["evaluate", str(trained), str(folders["fresh"]), *common]) == 0
    text = capsys.readouterr().out
    assert f"none of the {3 * PER_CLASS} images scored here was used in training" in text
    assert "not held out" not in text


def test_evaluate_leads_with_the_recipes_held_out_estimate(
    trained: Path, folders: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = xferclass.load_model(trained)
    store_report(model, {"estimate": ESTIMATE})
    path = tmp_path / "auto.keras"
    xferclass.save_model(model, path)
    common = ["--engine", "keras", "--batch-size", "8"]
    assert main(["evaluate", str(path), str(folders["train"]), *common]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("held-out estimate: accuracy 0.8125 ± 0.0375")
    assert "including images used in training" in lines[1]
    assert "12 of 12 images scored here were used in training" in lines[2]
    assert main(["evaluate", str(path), str(folders["train"]), "--json", *common]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["held_out_estimate"] == ESTIMATE
    assert metrics["training_overlap"]["seen_in_training"] == 12
    # On images it did not train on, the score is the headline: no estimate first.
    assert main(["evaluate", str(path), str(folders["fresh"]), *common]) == 0
    assert capsys.readouterr().out.startswith(f"{path} on {folders['fresh']} (12 images)")


def test_evaluate_on_a_model_without_a_record_prints_as_before(
    folders: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "old.keras"
    xferclass.save_model(tiny_model(), path)
    common = ["--engine", "keras", "--batch-size", "8"]
    assert main(["evaluate", str(path), str(folders["train"]), *common]) == 0
    text = capsys.readouterr().out
    assert "used in training" not in text and "held-out" not in text
    assert main(["evaluate", str(path), str(folders["train"]), "--json", *common]) == 0
    assert json.loads(capsys.readouterr().out)["training_overlap"] is None


# --------------------------------------------------------------------------- report


def test_the_report_shows_a_banner_and_its_json_the_overlap(
    trained: Path, folders: dict[str, Path], tmp_path: Path
) -> None:
    pytest.importorskip("matplotlib")
    from xferclass.report import write_report

    model = xferclass.load_model(trained)
    page = write_report(
        model, folders["mixed"], tmp_path / "mixed.html", top_losses=1,
        json_path=tmp_path / "mixed.json",
    )  # fmt: skip
    text = page.read_text(encoding="utf-8")
    banner = (
        f"{PER_CLASS} of {4 * PER_CLASS} images scored here were used in training: "
        "these scores are not held out"
    )
    assert '<div class="banner"' in text and banner in text
    assert text.index('class="banner"') < text.index("<h2>Metrics")  # at the top
    assert "Held-out estimate" not in text
    numbers = json.loads((tmp_path / "mixed.json").read_text(encoding="utf-8"))
    assert numbers["training_overlap"]["scored"] == 4 * PER_CLASS
    assert numbers["training_overlap"]["seen_in_training"] == PER_CLASS
    assert numbers["metrics"]["n"] == 4 * PER_CLASS and numbers["held_out_estimate"] is None

    page = write_report(
        model, folders["fresh"], tmp_path / "fresh.html", top_losses=1,
        json_path=tmp_path / "fresh.json",
    )  # fmt: skip
    text = page.read_text(encoding="utf-8")
    assert 'class="banner"' not in text and "not held out" not in text
    numbers = json.loads((tmp_path / "fresh.json").read_text(encoding="utf-8"))
    assert numbers["training_overlap"]["seen_in_training"] == 0


def test_the_report_leads_with_the_recipes_estimate(
    trained: Path, folders: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("matplotlib")
    model = xferclass.load_model(trained)
    store_report(model, {"estimate": ESTIMATE})
    path = tmp_path / "auto.keras"
    xferclass.save_model(model, path)
    out, numbers = tmp_path / "page" / "report.html", tmp_path / "page" / "report.json"
    argv = ["report", str(path), str(folders["train"]), "--out", str(out), "--top", "1"]
    assert main([*argv, "--json", str(numbers)]) == 0
    assert f"numbers written to {numbers}" in capsys.readouterr().out
    text = out.read_text(encoding="utf-8")
    headline = text.index("Held-out estimate: <b>accuracy 0.8125 ± 0.0375</b>")
    assert headline < text.index('class="banner"') < text.index("<h2>Metrics")
    assert "12 of 12 images scored here were used in training" in text
    saved = json.loads(numbers.read_text(encoding="utf-8"))
    assert saved["held_out_estimate"] == ESTIMATE
    assert saved["training_overlap"]["seen_in_training"] == 12


def test_the_report_of_a_model_without_a_record_has_no_banner(
    folders: dict[str, Path], tmp_path: Path
) -> None:
    pytest.importorskip("matplotlib")
    from xferclass.report import write_report

    page = write_report(
        tiny_model(), folders["train"], tmp_path / "r.html", top_losses=1,
        json_path=tmp_path / "r.json",
    )  # fmt: skip
    assert "used in training" not in page.read_text(encoding="utf-8")
    assert json.loads((tmp_path / "r.json").read_text())["training_overlap"] is None


# --------------------------------------------------------------------------- the example


class _Split:
    def __init__(self, paths: list[str]) -> None:
        self.file_paths = paths


def _results(**counts: tuple[int, float]) -> dict:
    return {
        name: {"metrics": {"n": n, "accuracy": accuracy}} for name, (n, accuracy) in counts.items()
    }


def test_the_example_leads_with_a_held_out_number(folders: dict[str, Path]) -> None:
    with example_module() as example:
        # --recipe auto without a test split: validation was trained on.
        results = _results(validation=(12, 1.0))
        seen = {"validation": {"scored": 12, "seen_in_training": 12}}
        headline = example.choose_headline(results, seen, ESTIMATE)
        assert headline["value"] == ESTIMATE["value"] and headline["held_out"]
        assert "held-out estimate" in headline["source"]
        # With a test split the model did not train on, its accuracy leads.
        results = _results(validation=(12, 1.0), test=(12, 0.75))
        seen["test"] = {"scored": 12, "seen_in_training": 0}
        assert example.choose_headline(results, seen, ESTIMATE)["source"] == "test"
        # Nothing held out and no estimate: said so.
        lone = example.choose_headline(_results(validation=(12, 1.0)), seen)
        assert lone["source"] == "validation" and lone["held_out"] is False
        # A recipe model that records no files: its report says what it pooled.
        splits = {"validation": _Split(_files(folders["fresh"]))}
        report = {"data": {"validation_given": True}}
        found = example.auto_overlap(tiny_model(), report, splits, _results(validation=(12, 1.0)))
        assert found["validation"]["seen_in_training"] == 12
        # A model that records its files is measured, not assumed.
        model = tiny_model()
        record_training_files(model, _files(folders["train"]))
        found = example.auto_overlap(model, report, splits, _results(validation=(12, 1.0)))
        assert found["validation"]["seen_in_training"] == 0
