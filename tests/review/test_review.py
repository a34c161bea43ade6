"""``xferclass review``: findings cached, decisions saved and applied, files kept safe.

The decisions and what they make are tested on findings written by hand, so each
expected row is known; the cache and the round trip through ``inspect`` use the
real ``inspect`` on a tiny backbone; the web application is driven through
Starlette's test client (the real-browser test is ``test_review_browser.py``).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest

import xferclass
from conftest import make_shape_dataset
from helpers import SIZE  # noqa: F401  (registers the test_tiny backbone)
from xferclass.cli import main
from xferclass.core._errors import (
    DatasetError,
    InvalidArgumentError,
    InvalidArgumentTypeError,
    MissingDependencyError,
)
from xferclass.review import TABLE_COLUMNS, Review, locate
from xferclass.review._decisions import DecisionLog, corrected_rows, items_of
from xferclass.review._findings import Findings, from_inspection

TINY: dict[str, Any] = dict(backbone="test_tiny", weights=None, input_size=32, folds=3)


def tree(root: Path) -> dict[str, str]:
    """``{relative path: sha256}`` of every file under ``root`` but the review's own folder."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and ".xferclass" not in p.relative_to(root).parts
    }


@pytest.fixture()
def data(tmp_path: Path) -> Path:
    """DATA/train and DATA/validation of circle/square/triangle, 6 and 2 images each."""
    root = tmp_path / "DATA"
    make_shape_dataset(root / "train", per_class=6, seed=1)
    make_shape_dataset(root / "validation", per_class=2, seed=2)
    return root


def hand_inspection(root: Path) -> xferclass.Inspection:
    """An inspection of ``data`` written by hand: two label issues, a duplicate group across
    splits and one within the training split, and one outlier."""
    files = sorted(p for p in root.rglob("*.*") if ".xferclass" not in p.parts)
    relative = [p.relative_to(root) for p in files]

    def at(path: str) -> str:
        return str(root / path)

    return xferclass.Inspection(
        label_issues=[
            {"path": at("train/circle/circle_00.png"), "given": "circle", "suggested": "square",
             "score": 0.9},
            {"path": at("train/circle/circle_01.jpg"), "given": "circle",
             "suggested": "triangle", "score": 0.8},
        ],
        duplicates=[
            {"paths": [at("train/square/square_00.png"), at("validation/square/square_00.png")],
             "splits": ["train", "validation"], "cross_split": True},
            {"paths": [at("train/triangle/triangle_00.png"),
                       at("train/triangle/triangle_01.jpg")],
             "splits": ["train", "train"], "cross_split": False},
        ],
        outliers=[{"path": at("validation/circle/circle_01.jpg"), "score": 0.7}],
        class_names=["circle", "square", "triangle"],
        paths=[str(p) for p in files],
        splits=[r.parts[0] for r in relative],
        labels=[p.parent.name for p in files],
    )  # fmt: skip


def hand_findings(root: Path) -> Findings:
    return from_inspection(locate(root), hand_inspection(root))


def hand_review(root: Path) -> Review:
    """A :class:`Review` of :func:`hand_inspection` (no backbone runs)."""
    return Review(root, inspection=hand_inspection(root))


# --------------------------------------------------------------------------- decisions


def test_the_log_keeps_every_decision_through_a_line_cut_short(tmp_path: Path) -> None:
    log = DecisionLog(str(tmp_path / "state" / "review.jsonl"))
    log.append({"item": "label:a", "action": "keep"})
    log.append({"item": "label:b", "action": "exclude"})
    with open(log.path, "ab") as file:
        file.write(b'{"item": "label:c", "act')  # a crash in the middle of a write
    log.append({"item": "label:a", "action": "accept"})
    log.append({"item": "label:b", "action": "undo"})
    assert {k: v["action"] for k, v in log.read().items()} == {"label:a": "accept"}
    lines = Path(log.path).read_text().splitlines()
    assert len(lines) == 5 and json.loads(lines[3])["action"] == "accept"


def test_each_action_makes_the_row_it_says(data: Path) -> None:
    findings = hand_findings(data)
    items = {item.id: item for item in items_of(findings)}
    assert [item.kind for item in items.values()] == ["label"] * 2 + ["duplicate"] * 2 + ["outlier"]
    decisions = {
        "label:train/circle/circle_00.png": {"action": "accept"},
        "label:train/circle/circle_01.jpg": {"action": "relabel", "label": "square"},
        "duplicate:train/square/square_00.png|validation/square/square_00.png": {
            "action": "exclude"},
        "duplicate:train/triangle/triangle_00.png|train/triangle/triangle_01.jpg": {
            "action": "keep_one", "keep": "train/triangle/triangle_01.jpg"},
        "outlier:validation/circle/circle_01.jpg": {"action": "keep"},
    }  # fmt: skip
    rows = {row["path"]: row for row in corrected_rows(findings, list(items.values()), decisions)}
    assert len(rows) == len(findings.files) == 24
    assert rows["train/circle/circle_00.png"] == {
        "path": "train/circle/circle_00.png", "label": "square", "split": "train",
        "excluded": False, "review": "relabelled", "original_label": "circle",
    }  # fmt: skip
    assert rows["train/circle/circle_01.jpg"]["label"] == "square"
    # "exclude from training" excludes the group's training copy, not the validation one.
    assert rows["train/square/square_00.png"]["excluded"]
    assert not rows["validation/square/square_00.png"]["excluded"]
    assert rows["train/triangle/triangle_00.png"]["review"] == "excluded"
    assert rows["train/triangle/triangle_01.jpg"]["review"] == "kept"
    assert rows["validation/circle/circle_01.jpg"] == {
        "path": "validation/circle/circle_01.jpg", "label": "circle", "split": "validation",
        "excluded": False, "review": "kept", "original_label": "circle",
    }  # fmt: skip
    untouched = [r for r in rows.values() if not r["review"]]
    assert len(untouched) == 24 - 6 and not any(r["excluded"] for r in untouched)


def test_an_exclusion_wins_over_a_relabelling(data: Path) -> None:
    findings = hand_findings(data)
    findings.outliers.append({"path": "train/circle/circle_00.png", "split": "train", "score": 1.0})
    items = items_of(findings)
    decisions = {
        "outlier:train/circle/circle_00.png": {"action": "exclude"},
        "label:train/circle/circle_00.png": {"action": "accept"},
    }
    rows = {r["path"]: r for r in corrected_rows(findings, items, decisions)}
    assert rows["train/circle/circle_00.png"]["excluded"]
    assert rows["train/circle/circle_00.png"]["review"] == "excluded"


def test_a_wrong_decision_is_refused_and_nothing_is_saved(data: Path) -> None:
    review = hand_review(data)
    label = "label:train/circle/circle_00.png"
    group = "duplicate:train/square/square_00.png|validation/square/square_00.png"
    with pytest.raises(InvalidArgumentError, match="does not apply to a label item"):
        review.decide(label, "keep_all")
    with pytest.raises(InvalidArgumentError, match="is not one of the classes"):
        review.decide(label, "relabel", label="hexagon")
    with pytest.raises(InvalidArgumentError, match="not one of the group's images"):
        review.decide(group, "keep_one", keep="train/circle/circle_00.png")
    with pytest.raises(KeyError, match="no item"):
        review.decide("label:nowhere.png", "keep")
    assert not os.path.exists(review.log.path)
    review.decide(label, "relabel", label="triangle")
    assert review.progress() == (1, 5)
    assert hand_review(data).decisions[label]["label"] == "triangle"  # resumed from the file


def test_the_table_loads_as_the_decisions_say(data: Path) -> None:
    review = hand_review(data)
    review.decide("label:train/circle/circle_00.png", "accept")
    review.decide("duplicate:train/square/square_00.png|validation/square/square_00.png", "exclude")
    table = Path(review.write_table())
    assert table == data / ".xferclass" / "labels.csv"
    header = table.read_text().splitlines()[0]
    assert header == ",".join(TABLE_COLUMNS)
    train = xferclass.load_image_dataset(table, 32, split="train", shuffle=False)
    names = train.class_names
    got = {
        os.path.relpath(p, data).replace(os.sep, "/"): names[int(label)]
        for p, label in zip(train.file_paths, np.concatenate([y for _, y in train]).argmax(-1))
    }
    assert len(got) == 18 - 1  # one training copy excluded
    assert "train/square/square_00.png" not in got
    assert got["train/circle/circle_00.png"] == "square"
    assert got["train/circle/circle_02.png"] == "circle"
    validation = xferclass.load_image_dataset(table, 32, split="validation", shuffle=False)
    assert len(validation.file_paths) == 6
    assert review.summary() == {"relabelled": 1, "excluded": 1, "kept": 0}


def test_images_are_served_only_from_inside_the_data(data: Path, tmp_path: Path) -> None:
    review = hand_review(data)
    assert review.image_file("train/circle/circle_00.png") == str(
        (data / "train/circle/circle_00.png").resolve()
    )
    outside = tmp_path / "secret.png"
    outside.write_bytes((data / "train/circle/circle_00.png").read_bytes())
    bad_paths = [
        "../secret.png", "train/../../secret.png", str(outside), "/etc/passwd", "", "C:/x.png",
        "train\\circle\\circle_00.png", "train/circle/nothing.png", 7,
    ]  # fmt: skip
    for bad in bad_paths:
        with pytest.raises(InvalidArgumentError):
            review.image_file(bad)
    # A link inside the data that points outside it is refused too.
    link = data / "train" / "circle" / "circle_00.png"
    link.unlink()
    link.symlink_to(outside)
    with pytest.raises(InvalidArgumentError, match="outside"):
        review.image_file("train/circle/circle_00.png")


def test_moves_are_undone_to_the_last_byte(data: Path) -> None:
    before = tree(data)
    review = hand_review(data)
    review.decide("label:train/circle/circle_00.png", "accept")
    review.decide("outlier:validation/circle/circle_01.jpg", "exclude")
    log, moved, table = review.apply_moves()
    assert moved == 2 and log is not None and os.path.isfile(log)
    after = tree(data)
    assert "train/square/circle_00.png" in after and "train/circle/circle_00.png" not in after
    assert "validation/circle/circle_01.jpg" not in after
    assert (data / ".xferclass/excluded/validation/circle/circle_01.jpg").is_file()
    assert sorted(after.values()) == sorted(
        v for k, v in before.items() if k != "validation/circle/circle_01.jpg"
    )
    moved_table = xferclass.load_image_dataset(table, 32, split="train", shuffle=False)
    files = {os.path.normpath(p) for p in moved_table.file_paths}
    assert str(data / "train/square/circle_00.png") in files
    assert xferclass.review.undo(data)[1] == 2
    assert tree(data) == before
    with pytest.raises(DatasetError, match="nothing to undo"):
        xferclass.review.undo(data)


def test_moves_refuse_a_table_and_undo_refuses_a_changed_folder(data: Path) -> None:
    review = hand_review(data)
    review.decide("label:train/circle/circle_00.png", "accept")
    table = review.write_table()
    with pytest.raises(DatasetError, match="label table"):
        Review(table, inspection=hand_inspection(data)).apply_moves()
    review.apply_moves()
    (data / "train/circle/circle_00.png").write_bytes(b"a new file where the old one was")
    before = tree(data)
    with pytest.raises(DatasetError, match="nothing was moved"):
        xferclass.review.undo(data)
    assert tree(data) == before


def test_an_inspection_outside_the_data_is_refused(data: Path, tmp_path: Path) -> None:
    other = make_shape_dataset(tmp_path / "other", per_class=1)
    with pytest.raises(DatasetError, match="outside the data's folder"):
        Review(data, inspection=hand_inspection(other))
    with pytest.raises(InvalidArgumentTypeError, match="must be an Inspection"):
        Review(data, inspection={"label_issues": []})
    with pytest.raises(DatasetError, match="neither a folder"):
        Review(tmp_path / "absent")


# --------------------------------------------------------------------------- web application


@pytest.fixture()
def client(data: Path) -> Any:
    pytest.importorskip("starlette", reason="the review extra is not installed")
    pytest.importorskip("httpx", reason="starlette's test client needs httpx")
    from starlette.testclient import TestClient

    return TestClient(xferclass.review.create_app(hand_review(data), "s3cret"))


def test_every_request_needs_the_token(client: Any) -> None:
    for path in ("/", "/api/state", "/image?path=train/circle/circle_00.png", "/nowhere"):
        refused = client.get(path)
        assert refused.status_code == 403 and "token" in refused.text
        assert client.get(path + ("&" if "?" in path else "?") + "token=wrong").status_code == 403
    assert client.post("/api/decide", json={"item": "x", "action": "keep"}).status_code == 403
    assert client.get("/?token=s3cret").status_code == 200
    assert client.get("/api/state", headers={"X-Token": "s3cret"}).status_code == 200
    image = client.get("/image?path=train/circle/circle_00.png&token=s3cret")
    assert image.status_code == 200 and image.content[:4] == b"\x89PNG"


def test_bad_requests_get_a_4xx_and_a_message(client: Any) -> None:
    auth = {"X-Token": "s3cret"}

    def post(body: Any) -> Any:
        return client.post("/api/decide", content=body, headers=auth)

    cases = [
        (post(b"{not json"), 400, "JSON object"),
        (post(json.dumps([1, 2])), 400, "JSON object"),
        (post(json.dumps({"item": 3, "action": "keep"})), 400, "strings"),
        (post(json.dumps({"item": "label:nope", "action": "keep"})), 404, "no item"),
        (post(json.dumps({"item": "label:train/circle/circle_00.png", "action": "fly"})), 400,
         "does not apply"),
        (client.get("/image?path=../../etc/passwd", headers=auth), 400, ".."),
        (client.get("/image?path=/etc/passwd", headers=auth), 400, "relative"),
        (client.get("/image?path=train/circle/absent.png", headers=auth), 404, "not an image"),
        (client.get("/image", headers=auth), 404, "not an image"),
    ]  # fmt: skip
    for answer, status, words in cases:
        assert answer.status_code == status, answer.text
        assert words in answer.json()["error"]
        assert "Traceback" not in answer.text
    assert client.get("/api/decide", headers=auth).status_code == 405


def test_decisions_made_in_the_app_survive_a_restart(client: Any, data: Path) -> None:
    auth = {"X-Token": "s3cret"}
    state = client.get("/api/state", headers=auth).json()
    assert state["progress"] == {"decided": 0, "total": 5}
    assert [item["kind"] for item in state["items"]][-1] == "outlier"
    item = state["items"][0]["id"]
    answer = client.post("/api/decide", json={"item": item, "action": "accept"}, headers=auth)
    assert answer.json()["progress"] == {"decided": 1, "total": 5}
    applied = client.post("/api/apply", headers=auth).json()
    assert applied["relabelled"] == 1 and os.path.isfile(applied["table"])
    again = hand_review(data)  # a new server on the same data
    assert again.decisions[item]["action"] == "accept"


# --------------------------------------------------------------------------- with inspect


def test_the_findings_are_cached_until_a_file_changes(
    data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = Review(data, **TINY)
    cache = data / ".xferclass" / "inspection.json"
    assert cache.is_file()
    assert len(first.findings.files) == 24
    assert {f["split"] for f in first.findings.files} == {"train", "validation"}

    @functools.wraps(xferclass.inspect)  # the same signature, so the same options
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("inspect ran again")

    monkeypatch.setattr(xferclass.inspection, "inspect", refuse)
    assert Review(data, **TINY).findings == first.findings
    with pytest.raises(AssertionError, match="ran again"):
        Review(data, **{**TINY, "seed": 1})  # other options
    (data / "train" / "circle" / "extra.png").write_bytes(
        (data / "train" / "circle" / "circle_00.png").read_bytes()
    )
    with pytest.raises(AssertionError, match="ran again"):
        Review(data, **TINY)  # a file added


def test_inspect_shows_what_a_review_decided(data: Path) -> None:
    copy = data / "validation" / "square" / "copy_of_train.png"
    copy.write_bytes((data / "train" / "square" / "square_00.png").read_bytes())
    keras.utils.set_random_seed(0)  # the same random backbone for both inspections
    review = Review(data, **TINY)
    groups = [item for item in review.items if item.kind == "duplicate"]
    leak = next(i for i in groups if "validation/square/copy_of_train.png" in i.paths)
    review.decide(leak.id, "keep_all")
    table = review.write_table()
    keras.utils.set_random_seed(0)
    found = xferclass.inspect(table, **TINY)
    assert found.decided[str(copy)] == "kept"
    group = next(g for g in found.duplicates if str(copy) in map(os.path.normpath, g["paths"]))
    assert group["decided"] == "kept"
    assert all("decided" in row for row in found.label_issues + found.outliers)
    assert all(list(row)[-1] == "decided" for row in found.to_dict()["outliers"])


def test_the_command_line_applies_moves_and_undoes_them(
    data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    options = ["--backbone", "test_tiny", "--weights", "none", "--size", "32", "--folds", "3"]
    before = tree(data)
    review = Review(data, **TINY)
    issue = next(item for item in review.items if item.kind in ("label", "outlier"))
    review.decide(issue.id, "exclude")
    out = data.parent / "corrected.csv"
    assert main(["review", str(data), "--apply", "--out", str(out), "--quiet", *options]) == 0
    printed = capsys.readouterr().out
    assert "1 of" in printed and "1 excluded" in printed and str(out) in printed
    assert tree(data) == before  # --apply moves nothing
    assert main(["review", str(data), "--apply-moves", "--quiet", *options]) == 0
    assert "1 files moved" in capsys.readouterr().out
    assert tree(data) != before
    assert main(["review", str(data), "--undo"]) == 0
    assert tree(data) == before
    assert main(["review", str(data), "--undo"]) == 1
    assert "nothing to undo" in capsys.readouterr().err


def test_the_automatic_recipe_trains_on_the_corrected_table(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    review = hand_review(data)
    review.decide("label:train/circle/circle_00.png", "accept")
    review.decide("outlier:validation/circle/circle_01.jpg", "exclude")
    table = review.write_table()
    out = tmp_path / "auto.keras"
    code = main(["train", table, "--budget", "60", "--backbone", "test_tiny", "--weights",
                 "none", "--fine-tune-epochs", "0", "--out", str(out), "--quiet"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    from xferclass.training._provenance import trained_on

    files = sorted(p for p in data.rglob("*.*") if ".xferclass" not in p.parts)
    seen = trained_on(xferclass.load_model(out), files)
    assert seen is not None
    # The train and validation rows joined the recipe; the excluded image did not.
    left_out = [str(p.relative_to(data)) for p, s in zip(files, seen) if not s]
    assert left_out == ["validation/circle/circle_01.jpg"]


def test_without_the_review_extra_the_error_names_it(
    data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # as if not installed
    with pytest.raises(MissingDependencyError, match=r"pip install 'xferclass\[review\]'"):
        xferclass.review.serve(hand_review(data), port=0)
