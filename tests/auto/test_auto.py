"""The automatic recipe: budget parsing, the split helper, ``train_auto`` end to end on a
tiny generated folder, its floor rule, and its command-line and example routes.

The cross-validation machinery it runs on is tested in test_headcv.py."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import xferclass
from conftest import make_shape_dataset
from helpers import example_module, tiny_arrays
from xferclass import auto
from xferclass.auto import parse_budget
from xferclass.evaluation._tta import VIEWS

# --------------------------------------------------------------------------- budget


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90.0), ("90", 90.0), ("10m", 600.0), ("10min", 600.0), ("10 min", 600.0),
        ("1h", 3600.0), ("1h30m", 5400.0), ("2.5m", 150.0), ("1H", 3600.0), (45, 45.0),
        (0.5, 0.5),
    ],
)  # fmt: skip
def test_parse_budget_reads_units_and_numbers(text: object, seconds: float) -> None:
    assert parse_budget(text) == seconds  # type: ignore[arg-type]


@pytest.mark.parametrize("text", ["", "soon", "10x", "m10", "1h-5m", "0", "0s", -3, float("nan")])
def test_parse_budget_rejects_what_is_not_a_positive_duration(text: object) -> None:
    with pytest.raises(xferclass.InvalidArgumentError, match="budget"):
        parse_budget(text)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [None, True, [60]])
def test_parse_budget_rejects_other_types(value: object) -> None:
    with pytest.raises(xferclass.InvalidArgumentTypeError, match="budget"):
        parse_budget(value)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- end to end


def test_train_auto_returns_a_measured_choice_and_saves_its_report(tmp_path: Path) -> None:
    root = make_shape_dataset(tmp_path / "data", per_class=20)
    out = tmp_path / "auto.keras"
    started = time.monotonic()
    result = xferclass.train_auto(root, budget="3m", backbone="test_tiny", weights=None,
                                  seed=0, out=out)  # fmt: skip
    elapsed = time.monotonic() - started
    report = result.report
    # Within its budget and the overrun the recipe allows itself (the floor's, under load).
    assert elapsed <= auto.OVERRUN * 180 and report["total_s"] <= auto.OVERRUN * 180
    assert report["data"]["train_images"] == 60 and report["folds"] == 5
    # The floor runs first, then the views; every one of them was measured.
    kinds = [entry["experiment"] for entry in report["experiments"]]
    assert kinds[0] == "floor" and "views" in kinds
    # Right after the floor, more heads of the floor's own recipe, averaged.
    assert (
        kinds[1] == "heads"
        and "of test_tiny 32 px, train views plain, class weights none"
        in report["experiments"][1]["why"]
    )
    assert report["floor"] == {"backbone": "test_tiny", "size": 32, "train_views": "plain",
                               "class_weight": "none", "epochs": 10, "tta": "none",
                               "heads": 1, "head": "dense", "inverse_l2": 0.0,
                               "depth": "last"}  # fmt: skip
    assert "class weights (balanced, none, sqrt)" in report["measured"]
    assert "heads averaged (1, 5)" in report["measured"]
    # Which engine (and precision) each frozen pass ran on: the tests keep float32.
    assert "test_tiny 32 px plain" in report["engines"]
    assert set(report["engines"].values()) <= {"keras", "onnxruntime", "openvino"}
    rows = report["candidates"]
    assert sum(row["chosen"] for row in rows) == 1 and sum(row["floor"] for row in rows) == 1
    estimate = report["estimate"]
    # Never below the floor on the held-out estimate; the floor when nothing beat it.
    assert estimate["value"] >= estimate["floor_value"]
    fine = report["fine_tune"]
    assert fine["measured"] is True and fine["images"] == 12  # fold 0 of 5
    assert fine["wins"] == (fine["score"] - fine["frozen_score"] > max(fine["standard_error"],
                                                                       0.005))  # fmt: skip
    assert result.plan.fine_tune_epochs == (fine["epochs"] if fine["wins"] else 0)
    assert estimate["beats_floor"] == (report["choice"] != report["floor"] or fine["wins"])
    assert result.plan.floor == (not estimate["beats_floor"])
    assert estimate["value"] > 0.5  # three shapes; chance is 1/3
    # The report survives a round trip through the saved file, and the saved model is the
    # returned one.
    saved = auto.read_report(out)
    assert saved is not None
    expected = {key: value for key, value in report.items() if key != "saved_s"}
    assert saved == json.loads(json.dumps(expected))
    text = auto.format_report(saved)
    assert "held-out estimate" in text and "(floor)" in text
    # The HTML report shows the recipe's report, candidates and estimate included.
    from xferclass.report import write_report

    page = write_report(out, root, tmp_path / "report.html", top_losses=2,
                        json_path=tmp_path / "report.json").read_text()  # fmt: skip
    assert "Automatic recipe" in page and "held-out estimate" in page
    # The recipe trained on every one of these images: the page says so, and its JSON.
    assert "60 of 60 images scored here were used in training" in page
    summary = json.loads((tmp_path / "report.json").read_text())
    assert json.dumps(summary).count('"seen_in_training": 60') == 1
    assert "candidates (cross-validated accuracy over 5 folds)" in page
    loaded = xferclass.load_model(out)
    images, _ = tiny_arrays(4)
    np.testing.assert_allclose(
        loaded.predict(images, verbose=0), result.model.predict(images, verbose=0), atol=1e-5
    )
    assert list(xferclass.predict(loaded, images).class_names) == ["circle", "square", "triangle"]


def test_train_auto_compares_backbones_sizes_and_their_averages(tmp_path: Path) -> None:
    from helpers import tiny_backbone

    if "test_tiny_wide" not in xferclass.list_backbones():
        xferclass.register_backbone("test_tiny_wide", tiny_backbone, preprocess="unit",
                                    default_size=48, family="test")  # fmt: skip
    if "test_tiny_twin" not in xferclass.list_backbones():  # test_tiny's size: an average
        xferclass.register_backbone("test_tiny_twin", tiny_backbone, preprocess="unit",
                                    default_size=32, family="test")  # fmt: skip
    root = make_shape_dataset(tmp_path / "data", per_class=15)
    # What is compared must not hang on the machine's load: on a clock running at a
    # tenth of real time, every experiment fits the budget unless the machine is ten
    # times slower than the one this was sized on (fine-tuning, whose deadline the
    # engine keeps on the real clock, is off).
    result = xferclass.train_auto(
        root, budget="4m", backbone=["test_tiny", "test_tiny_wide", "test_tiny_twin"],
        weights=None, overrides={"fine_tune_epochs": 0}, clock=lambda: time.monotonic() / 10,
    )  # fmt: skip
    report = result.report
    ran = {(e["experiment"], e["backbone"], e["size"]) for e in report["experiments"]}
    assert ("backbone", "test_tiny_wide", 48) in ran and ("backbone", "test_tiny_wide", 64) in ran
    rows = report["candidates"]
    averages = [row["candidate"] for row in rows if row["candidate"].startswith("average of")]
    # Averages are of members of one input size (test_tiny and test_tiny_twin at 32 px).
    assert averages and all(re.findall(r"\[\S+ (\d+) px", a) == ["32", "32"] for a in averages)
    assert ("backbone and input size (test_tiny 32 px; test_tiny_twin 32 px; test_tiny_wide "
            "48 px; test_tiny_wide 64 px)") in report["measured"]  # fmt: skip
    # Whatever won, the model takes images at the plan's size, names the classes and
    # averages the views the recipe chose inside it.
    images, _ = tiny_arrays(4, size=result.plan.input_size)
    predictions = xferclass.predict(result.model, images)
    assert list(predictions.class_names) == ["circle", "square", "triangle"]
    from xferclass.layers import built_in_views

    assert built_in_views(result.model) == result.plan.tta
    assert report["estimate"]["value"] >= report["estimate"]["floor_value"]


def _with_losing_fine_tune(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[Path, list[list[str]]]:
    """Shapes to train on, with ``run_fine_tune`` replaced by a stand-in that records the
    experiments run so far and loses, and no share of the budget kept for the frozen
    search before fine-tuning; returns the folder and the record."""
    from xferclass.auto import _finetune as _auto_finetune

    calls: list[list[str]] = []

    def run(search: Any, choice: Any, epochs: int, *args: object, **kw: object) -> tuple:
        calls.append([entry["experiment"] for entry in search.log])
        result = _auto_finetune.FineTuned(epochs=epochs, score=0.5, frozen_score=0.6,
                                          standard_error=0.05, images=6, seconds=0.1,
                                          wins=False)  # fmt: skip
        return result, lambda: pytest.fail("a fine-tuning that lost is never built")

    monkeypatch.setattr(_auto_finetune, "run_fine_tune", run)
    monkeypatch.setattr(auto, "FROZEN_SHARE", 0.0)
    return make_shape_dataset(tmp_path / "data", per_class=10), calls


def test_the_frozen_search_goes_on_when_fine_tuning_is_not_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from xferclass.auto import _finetune as _auto_finetune

    root, calls = _with_losing_fine_tune(tmp_path, monkeypatch)
    # Fine-tuning is estimated to need all the time there is: only the floor runs first.
    monkeypatch.setattr(_auto_finetune, "fine_tune_seconds", lambda *args: 1e6)
    monkeypatch.setattr(_auto_finetune, "plan_epochs", lambda *args: 3)
    result = xferclass.train_auto(root, budget=150, backbone="test_tiny", weights=None)
    report = result.report
    assert calls == [["floor"]] and report["fine_tune"]["measured"] is True
    assert report["fine_tune"]["wins"] is False and result.plan.fine_tune_epochs == 0
    kinds = [entry["experiment"] for entry in report["experiments"]]
    assert kinds[0] == "floor" and "views" in kinds  # run after fine-tuning lost


def test_the_frozen_search_gets_the_time_fine_tuning_will_not_need(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, calls = _with_losing_fine_tune(tmp_path, monkeypatch)
    # Fine-tuning 30 tiny images is estimated at seconds: the views run before it.
    xferclass.train_auto(root, budget=150, backbone="test_tiny", weights=None)
    assert len(calls) == 1 and calls[0][0] == "floor" and "views" in calls[0]


def _fine_tuning_that_wins(monkeypatch: pytest.MonkeyPatch, deeper_wins: bool) -> list[Any]:
    """Fine-tuning as it runs, except that the first depth is always kept and the deeper
    ones are kept when ``deeper_wins`` (and otherwise score below what they are measured
    against); returns the list each result is appended to."""
    outcomes = {0.15: "wins"} | dict.fromkeys((0.3, 0.6, 1.0), "wins" if deeper_wins else "below")
    return _scripted_fine_tuning(monkeypatch, outcomes)


def _scripted_fine_tuning(
    monkeypatch: pytest.MonkeyPatch, outcomes: dict[float, str], compared: list[Any] | None = None
) -> list[Any]:
    """Fine-tuning as it runs, except that each depth's result is scripted by
    ``outcomes``: ``"wins"`` (0.6 against 0.5), ``"ties"`` (0.5 against 0.5, not kept),
    ``"slightly"`` (0.47: below by less than the standard error, 0.05) or ``"below"``
    (0.4); returns the list each result is appended to, and
    appends to ``compared`` the probabilities each was measured against."""
    import dataclasses

    from xferclass.auto import _finetune as _auto_finetune

    results: list[Any] = []
    compare = _auto_finetune._compare

    def forced(search: Any, choice: Any, held: Any, probabilities: Any, frozen: Any,
               *args: Any) -> Any:  # fmt: skip
        result = compare(search, choice, held, probabilities, frozen, *args)
        outcome = outcomes[result.unfreeze]
        score = {"wins": 0.6, "ties": 0.5, "slightly": 0.47, "below": 0.4}[outcome]
        results.append(dataclasses.replace(result, wins=outcome == "wins", score=score,
                                           frozen_score=0.5, standard_error=0.05))  # fmt: skip
        if compared is not None:
            compared.append(frozen)
        return results[-1]

    monkeypatch.setattr(_auto_finetune, "_compare", forced)
    monkeypatch.setattr(_auto_finetune, "plan_epochs", lambda *args: 3)
    monkeypatch.setattr(auto, "FROZEN_SHARE", 0.0)
    return results


def _trainable_backbone_layers(model: Any) -> int:
    from xferclass.models import split_classifier

    layers = split_classifier(model).backbone.layers
    return sum(layer.trainable for layer in layers if layer.weights)


def _top_layers(model: Any, fraction: float) -> int:
    """Layers with weights, BatchNorm aside, in the top ``fraction`` of the backbone's."""
    import math

    import keras

    from xferclass.models import split_classifier

    layers = split_classifier(model).backbone.layers
    top = layers[len(layers) - math.ceil(fraction * len(layers)) :]
    return sum(bool(layer.weights) and not isinstance(layer, keras.layers.BatchNormalization)
               for layer in top)  # fmt: skip


@pytest.mark.parametrize(
    "outcomes, measured, kept, stop",
    [
        # Each depth that wins is kept; the ladder stops at one that scores below.
        ({0.15: "wins", 0.3: "wins", 0.6: "below"}, [0.15, 0.3, 0.6], 0.3,
         "top 100% not measured: the top 60% scored below"),
        # A depth that ties goes on down the ladder: a deeper one may win.
        ({0.15: "ties", 0.3: "wins", 0.6: "ties", 1.0: "ties"}, [0.15, 0.3, 0.6, 1.0], 0.3, ""),
        ({0.15: "wins", 0.3: "below"}, [0.15, 0.3], 0.15, "top 60% not measured"),
        # Below by less than the standard error of the difference is a near tie: on.
        ({0.15: "slightly", 0.3: "wins", 0.6: "below"}, [0.15, 0.3, 0.6], 0.3,
         "top 100% not measured: the top 60% scored below what it was measured against by "
         "more than the standard error (0.4000 against 0.5000, 0.0500)"),
        # A first depth below the frozen choice ends it: nothing is kept.
        ({0.15: "below"}, [0.15], None, "top 30% not measured: the top 15% scored below"),
    ],
)  # fmt: skip
def test_fine_tuning_goes_down_a_ladder_of_depths_each_against_the_depth_kept_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, outcomes: dict[float, str],
    measured: list[float], kept: float | None, stop: str,
) -> None:  # fmt: skip
    compared: list[Any] = []
    results = _scripted_fine_tuning(monkeypatch, outcomes, compared)
    root = make_shape_dataset(tmp_path / "data", per_class=10)
    result = xferclass.train_auto(root, budget=150, backbone="test_tiny", weights=None,
                                  overrides={"head_epochs": 3})  # fmt: skip
    report, fine = result.report, result.report["fine_tune"]
    assert [r.unfreeze for r in results] == measured
    # Every depth is scored on the same fold-0 images, for the same epochs, against the
    # depth kept before it, or the frozen choice's probabilities before any was kept.
    assert len({r.images for r in results}) == 1 and len({r.epochs for r in results}) == 1
    frozen, reference = compared[0], compared[0]
    for run, against in zip(results, compared):
        np.testing.assert_array_equal(against, reference)
        if run.wins:
            reference = run.probabilities
    assert [d["unfreeze"] for d in fine["depths"]] == measured
    assert [d["wins"] for d in fine["depths"]] == [r.wins for r in results]
    assert "probabilities" not in fine and all("probabilities" not in d for d in fine["depths"])
    assert fine.get("deeper_reason", "").startswith(stop)
    assert fine["wins"] is (kept is not None)
    text = auto.format_report(report)
    rows = [row for row in report["candidates"] if "fine-tuned" in row["candidate"]]
    assert [row["score"] for row in rows] == [r.score for r in results]
    if kept is None:
        assert result.plan.fine_tune_epochs == 0 and result.plan.unfreeze == 0.0
        assert not any(row["chosen"] for row in rows)
        assert "fine-tuning: top 15%, 3 epochs scored 0.4000" in text
        return
    (run,) = [r for r in results if r.unfreeze == kept]
    assert result.plan.unfreeze == kept and result.plan.fine_tune_epochs == run.epochs
    assert fine["unfreeze"] == kept and fine["score"] == run.score
    # The top-level entry measures the depth kept against the frozen choice itself.
    held = result.report["fine_tune"]["images"]
    assert held == run.images
    assert [row["chosen"] for row in rows] == [r.unfreeze == kept for r in results]
    assert sum(row["chosen"] for row in report["candidates"]) == 1
    # The estimate is the frozen decision's, over every fold, plus the gain on fold 0 of
    # the depth kept over the frozen choice (scripted at 0.5 there); not the fold-0 score.
    estimate = report["estimate"]
    assert estimate["gain"] == round(run.score - 0.5, 4)
    assert estimate["value"] == round(min(1.0, max(0.0, estimate["frozen_value"] + 0.1)), 4)
    choices = ("two", "three", "four", "five")[len(measured) - 1]
    assert f"a choice of {choices}" in estimate["how"]
    assert f"top {kept:.0%} fine-tuned" in fine["final"]
    if len(measured) > 1:
        depths = ", ".join(f"top {d:.0%}" for d in measured)
        assert f"fine-tuning depth ({depths}; on one fold)" in report["measured"]
        assert f"deeper: top {measured[1]:.0%}, 3 epochs scored" in text
    # The model returned is the one fine-tuned at the depth kept: the top ``unfreeze`` of
    # its backbone's layers train, BatchNorm aside.
    assert _trainable_backbone_layers(result.model) == _top_layers(result.model, kept)
    np.testing.assert_array_equal(frozen, compared[0])


def test_a_kept_fine_tuning_is_estimated_as_the_frozen_estimate_plus_its_paired_gain() -> None:
    from xferclass.auto._finetune import FineTuned
    from xferclass.auto._search import Choice

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 200)
    # The frozen choice is right on 70 % of fold 0, the fine-tuned model on 78 %.
    frozen_right = rng.random(200) < 0.7
    tuned_right = frozen_right | (rng.random(200) < 0.27)
    against = np.eye(3)[np.where(frozen_right, labels, (labels + 1) % 3)]
    tuned = np.eye(3)[np.where(tuned_right, labels, (labels + 2) % 3)]
    p_frozen, p_tuned = frozen_right.mean(), tuned_right.mean()
    result = FineTuned(epochs=4, score=float(p_tuned), frozen_score=float(p_frozen),
                       standard_error=0.02, images=200, seconds=1.0, wins=True,
                       probabilities=tuned)  # fmt: skip
    decision = {"estimate": {"metric": "accuracy", "value": 0.65, "standard_error": 0.012,
                             "floor_value": 0.6, "floor_standard_error": 0.01,
                             "beats_floor": True, "how": "nested"}}  # fmt: skip
    choice = Choice("test_tiny", 32, "none", "none", 5, "none")
    estimate = auto._fine_tune_decision(decision, result, choice, result, 1, labels,
                                        against)["estimate"]  # fmt: skip
    difference = tuned_right.astype(float) - frozen_right
    paired_se = difference.std(ddof=1) / np.sqrt(200)
    assert estimate["value"] == round(0.65 + p_tuned - p_frozen, 4)  # not p_tuned
    assert estimate["gain"] == round(p_tuned - p_frozen, 4)
    assert estimate["frozen_value"] == 0.65
    assert estimate["standard_error"] == round(float(np.hypot(0.012, paired_se)), 4)
    assert "a choice of two" in estimate["how"] and "nested" in estimate["how"]
    # A gain that would pass 1 is cut there.
    high = {"estimate": {**decision["estimate"], "value": 0.99}}
    assert auto._fine_tune_decision(high, result, choice, result, 1, labels,
                                    against)["estimate"]["value"] == 1.0  # fmt: skip


def test_fine_tuning_starts_from_the_best_dense_choice_whose_fine_tuning_fits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from xferclass.auto import _finetune as _auto_finetune

    _fine_tuning_that_wins(monkeypatch, deeper_wins=False)
    planned: list[tuple[Any, ...]] = []
    offered: list[list[Any]] = []
    singles = auto._dense_singles

    def plan(*args: Any) -> int:  # the best choice's fine-tuning does not fit, the next does
        planned.append(args)
        return 0 if len(planned) == 1 else 3

    def spy(*args: Any) -> list[Any]:
        offered.append(singles(*args))
        return offered[-1]

    monkeypatch.setattr(_auto_finetune, "plan_epochs", plan)
    monkeypatch.setattr(auto, "_dense_singles", spy)
    root = make_shape_dataset(tmp_path / "data", per_class=10)
    result = xferclass.train_auto(root, budget=150, backbone="test_tiny", weights=None,
                                  overrides={"head_epochs": 3})  # fmt: skip
    fine = result.report["fine_tune"]
    (bases,) = offered
    assert len(planned) == 2 and len(bases) >= 2
    assert all(b.head == "dense" and b.heads == 1 for b in bases)
    assert fine["measured"] is True and fine["base"] == bases[1].label() != bases[0].label()


def test_fine_tuning_deeper_is_not_measured_when_it_does_not_fit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from xferclass.auto import _finetune as _auto_finetune

    results = _fine_tuning_that_wins(monkeypatch, deeper_wins=True)
    monkeypatch.setattr(_auto_finetune, "deeper_seconds", lambda *args: 1e6)
    root = make_shape_dataset(tmp_path / "data", per_class=10)
    result = xferclass.train_auto(root, budget=150, backbone="test_tiny", weights=None,
                                  overrides={"head_epochs": 3})  # fmt: skip
    report, fine = result.report, result.report["fine_tune"]
    assert len(results) == 1 and fine["wins"] is True
    assert [d["unfreeze"] for d in fine["depths"]] == [0.15]
    assert "top 30% not measured: it would need about 1000000 s" in fine["deeper_reason"]
    assert any(a.startswith("fine-tuning depth (deeper: top 30% not measured")
               for a in report["assumed"])  # fmt: skip
    assert result.plan.unfreeze == _auto_finetune.UNFREEZE
    assert "a choice of two" in report["estimate"]["how"]
    assert "deeper: top 30% not measured" in auto.format_report(report)
    # The report says how many epochs were planned, and when fewer ran before the deadline.
    assert fine["planned_epochs"] == 3 and fine["epochs"] <= 3
    shown = "epochs" if fine["epochs"] == 3 else "of 3 planned epochs (stopped for time)"
    assert f"top 15%, {fine['epochs']} {shown} scored" in auto.format_report(report)
    cut = json.loads(json.dumps(report))
    cut["fine_tune"]["epochs"] = 2
    assert "top 15%, 2 of 3 planned epochs (stopped for time) scored" in auto.format_report(cut)
    # Reports saved before the depth was recorded fine-tuned the top 15 %.
    older = json.loads(json.dumps(report))
    del older["plan"]["unfreeze"]
    assert "top 15% of the backbone fine-tuned" in auto.format_report(older)


def test_time_no_experiment_fits_goes_to_averaged_heads_of_the_next_recipes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from xferclass.auto import _search as _auto_search

    seconds_needed = _auto_search.Search.seconds_needed

    def no_pass_fits(self: Any, experiment: Any, per_image: float, dim: int) -> float:
        need = seconds_needed(self, experiment, per_image, dim)
        return need if experiment.kind == "floor" else 1e6

    monkeypatch.setattr(_auto_search.Search, "seconds_needed", no_pass_fits)
    root = make_shape_dataset(tmp_path / "data", per_class=10)
    result = xferclass.train_auto(root, budget=150, backbone="test_tiny", weights=None,
                                  overrides={"head_epochs": 3, "fine_tune_epochs": 0})  # fmt: skip
    report = result.report
    assert any("needs about 1000000 s" in line for line in report["skipped"])
    kinds = [entry["experiment"] for entry in report["experiments"]]
    assert kinds[0] == "floor" and set(kinds[1:]) == {"heads"}
    # Every class weighting the floor's pass compared got its averaged heads, not only
    # the best one.
    averaged = [entry["why"] for entry in report["experiments"][1:]]
    weights = [re.search(r"class weights (\w+)", why).group(1) for why in averaged]  # type: ignore[union-attr]
    assert sorted(weights) == ["balanced", "none", "sqrt"]
    # Each is a candidate of its own.
    assert sum("5 heads averaged" in row["candidate"] for row in report["candidates"]) >= 1
    assert "heads averaged (1, 5)" in report["measured"]


@pytest.mark.parametrize(
    ("fixed", "allowed"),
    [
        ({}, {"none", "sqrt", "balanced"}),
        ({"class_weight": "sqrt"}, {"sqrt"}),
        ({"class_weight": True}, {"balanced"}),
        ({"class_weight": False}, {"none"}),
        ({"head_epochs": 3}, {"none", "sqrt", "balanced"}),
    ],
)  # fmt: skip
def test_only_the_callers_class_weights_are_candidates(fixed: dict, allowed: set) -> None:
    # The floor's pass trains unweighted heads for every epoch count compared, whatever the
    # caller fixed (the floor is always a candidate); none but the floor may be returned
    # against the caller's class weights.
    from xferclass.auto._search import Choice

    for weight in ("none", "sqrt", "balanced"):
        choice = Choice("test_tiny", 32, "plain", weight, 3, "none")
        assert auto._allowed(choice, fixed) is (weight in allowed)


def test_train_auto_takes_a_validation_folder_into_the_folds_and_keeps_overrides(
    tmp_path: Path,
) -> None:
    train = make_shape_dataset(tmp_path / "train", per_class=6, seed=1)
    val = make_shape_dataset(tmp_path / "val", per_class=3, seed=2)
    result = xferclass.train_auto(
        train, val, budget=120, backbone="test_tiny", weights=None, metric="macro_f1",
        overrides={"head_epochs": 3, "augment": None, "class_weight": "sqrt",
                   "fine_tune_epochs": 0},
    )  # fmt: skip
    report = result.report
    assert report["fine_tune"] == {
        "measured": False,
        "reason": "turned off by the caller (fine_tune_epochs=0)",
    }
    assert report["data"]["validation_given"] is True
    assert report["data"]["train_images"] == 27 and report["data"]["validation_images"] == 9
    assert report["metric"] == "macro_f1" and report["estimate"]["metric"] == "macro_f1"
    # Only the caller's choices and the floor were candidates; only the caller's choice
    # got more heads. Test-time views are measured all the same, with heads trained on
    # plain images only.
    kinds = [e["experiment"] for e in report["experiments"]]
    assert kinds[:2] == ["floor", "heads"] and "views" in kinds
    assert set(kinds) == {"floor", "heads", "views"}
    assert "class weights sqrt, 3 epochs" in report["experiments"][1]["why"]
    singles = [r["candidate"] for r in report["candidates"] if "average" not in r["candidate"]]
    assert all("train views plain" in c for c in singles)
    assert "test-time views (flip, none, rotations)" in report["measured"]
    choice = report["choice"]
    assert choice == report["floor"] or (
        choice["epochs"] == 3 and choice["class_weight"] == "sqrt"
        and choice["train_views"] == "plain"
    )  # fmt: skip
    assert "head_epochs set by the caller" in report["assumed"]
    assert auto.read_report(result.model) == report
    plain = xferclass.build_classifier("test_tiny", num_classes=3, weights=None)
    assert auto.read_report(plain) is None


def test_train_auto_rejects_bad_arguments(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_shape_dataset(tmp_path / "data", per_class=4)
    options: dict[str, object] = {"backbone": "test_tiny", "weights": None}
    cases: list[tuple[dict[str, object], str]] = [
        ({"out": tmp_path / "m.h5"}, "out="),
        ({"budget": "soon"}, "budget"),
        ({"batch_size": 0}, "batch_size"),
        ({"seed": -1}, "seed"),
        ({"folds": 1}, "folds"),
        ({"metric": "auc"}, "metric="),
        ({"metric": "map"}, "multi-label"),
        ({"overrides": {"unfreeze": 0.5}}, "unfreeze cannot be set"),
        ({"overrides": {"augment": "strong"}}, "training views"),
        ({"overrides": {"class_weight": "inverse"}}, "class_weight="),
        ({"overrides": {"head": "mlp"}}, "head='mlp' must be 'dense' or 'linear'"),
        ({"budget": 1}, "budget too small"),
    ]
    for extra, message in cases:
        with pytest.raises(xferclass.InvalidArgumentError, match=message):
            xferclass.train_auto(root, **{**options, **extra})  # type: ignore[arg-type]
    with pytest.raises(xferclass.BackboneNotFoundError):
        xferclass.train_auto(root, backbone="no_such_backbone", weights=None)
    lonely = make_shape_dataset(tmp_path / "lonely", per_class=1)
    with pytest.raises(xferclass.InvalidArgumentError, match="at least 2 images"):
        xferclass.train_auto(lonely, **options)  # type: ignore[arg-type]
    monkeypatch.setattr(auto, "available_backbones", lambda: [])
    with pytest.raises(xferclass.InvalidArgumentError, match="no backbone"):
        xferclass.train_auto(root)


@pytest.mark.parametrize("head", ["dense", "linear"])
def test_a_head_fixed_by_the_caller_is_the_only_kind_measured_beside_the_floor(
    tmp_path: Path, head: str
) -> None:
    root = make_shape_dataset(tmp_path / "data", per_class=8)
    result = xferclass.train_auto(
        root, budget=60, backbone="test_tiny", weights=None,
        overrides={"head": head, "augment": None, "fine_tune_epochs": 0},
    )  # fmt: skip
    report = result.report
    singles = [r for r in report["candidates"] if "average" not in r["candidate"]]
    linear = [r for r in singles if "linear head (C=" in r["candidate"]]
    if head == "dense":
        assert not linear
    else:  # the floor (dense) and linear heads only
        assert linear and all(r in linear or r["floor"] for r in singles)
    assert report["choice"] == report["floor"] or report["choice"]["head"] == head
    assert report["plan"]["head"] == report["choice"]["head"]


def test_fine_tuning_is_planned_only_when_its_epochs_fit_twice() -> None:
    from xferclass.auto._finetune import FINE_TUNE_EPOCH_RATIO, MAX_EPOCHS, plan_epochs

    # 1,000 images at 10 ms a pass, 5 folds: the passes take 10 s each.
    assert plan_epochs(10_000, 1000, 5, 0.01) == MAX_EPOCHS
    assert plan_epochs(30, 1000, 5, 0.01) == 0  # not even 3 epochs fit
    fixed = 10 * (0.8 + 0.2 + 1.0) + 10.0
    per_epoch = FINE_TUNE_EPOCH_RATIO * 10 * 1.8
    assert plan_epochs(fixed + 4.5 * per_epoch, 1000, 5, 0.01) == 4
    # The pass ran on a faster runtime than Keras: the epochs, which train in Keras, are
    # planned from Keras's pass (twice as slow here); the caching passes are not.
    assert plan_epochs(fixed + 4.5 * per_epoch, 1000, 5, 0.01, keras_seconds=0.02) == 0
    assert plan_epochs(fixed + 9 * per_epoch, 1000, 5, 0.01, keras_seconds=0.02) == 4
    # A Keras pass faster than the measured one (decoding is in the measured one) changes
    # nothing.
    assert plan_epochs(fixed + 4.5 * per_epoch, 1000, 5, 0.01, keras_seconds=0.005) == 4


def test_fine_tuning_is_planned_from_the_keras_pass_of_its_backbone_at_its_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from xferclass.auto import _finetune as _auto_finetune

    timed: list[dict[str, float]] = []
    planned: list[tuple[Any, ...]] = []
    time_backbones, plan = auto._time_backbones, _auto_finetune.plan_epochs

    def timing(*args: Any) -> dict[str, float]:
        timed.append(time_backbones(*args))
        return timed[-1]

    def planning(*args: Any) -> int:
        planned.append(args)
        return plan(*args)

    monkeypatch.setattr(auto, "_time_backbones", timing)
    monkeypatch.setattr(_auto_finetune, "plan_epochs", planning)
    root = make_shape_dataset(tmp_path / "data", per_class=10)
    result = xferclass.train_auto(root, budget=150, backbone="test_tiny", weights=None,
                                  overrides={"head_epochs": 3, "size": 48})  # fmt: skip
    assert result.plan.input_size == 48
    (args,) = planned  # (seconds left, images, folds, measured pass, Keras pass)
    assert timed[0]["test_tiny"] > 0
    assert args[4] == pytest.approx(timed[0]["test_tiny"] * (48 / 32) ** 2)  # native: 32 px


@pytest.mark.parametrize(
    ("files", "name", "found"),
    [
        (["resnet50v2_weights_tf_dim_ordering_tf_kernels_notop.h5"], "resnet50", False),
        (["resnet50v2_weights_tf_dim_ordering_tf_kernels_notop.h5"], "resnet50_v2", True),
        (["resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"], "resnet50", True),
        (["resnet50_weights_tf_dim_ordering_tf_kernels.h5"], "resnet50", False),
        (["weights_mobilenet_v3_large_224_1.0_float_no_top_v2.h5"], "mobilenet_v3_large", True),
        (["weights_mobilenet_v3_large_224_1.0_float_no_top_v2.h5"], "mobilenet_v3_small", False),
        (["efficientnetv2-b0_notop.h5"], "efficientnet_v2_b0", True),
        (["efficientnetb0_notop.h5"], "efficientnet_b0", True),
        (["efficientnetb0_notop.h5"], "efficientnet_v2_b0", False),
        (["mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"], "mobilenet_v2",
         True),
        (["convnext_tiny_notop.h5"], "convnext_tiny", True),
    ],
)  # fmt: skip
def test_keras_weights_are_found_by_their_own_file_names_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, files: list[str], name: str, found: bool
) -> None:
    (tmp_path / "models").mkdir()
    for file in files:
        (tmp_path / "models" / file).write_bytes(b"")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    assert auto._keras_weights_cached(name) is found


# --------------------------------------------------------------------------- command line


def test_cli_train_without_recipe_flags_takes_the_automatic_route(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from xferclass.cli import main

    root = make_shape_dataset(tmp_path / "data", per_class=8)
    out = tmp_path / "cli.keras"
    code = main(["train", str(root), "--backbone", "test_tiny", "--weights", "none",
                 "--out", str(out), "--seed", "1", "--metric", "balanced_accuracy"])  # fmt: skip
    printed = capsys.readouterr().out
    assert code == 0
    assert "default budget of 10m" in printed
    assert "floor test_tiny at 32 px" in printed and "candidates (" in printed
    assert "held-out estimate: balanced_accuracy" in printed
    assert f"model saved to {out}" in printed
    report = auto.read_report(out)
    assert report is not None and report["budget_s"] == 600 and report["seed"] == 1
    assert report["metric"] == "balanced_accuracy"


def test_cli_recipe_flags_with_a_budget_fix_the_automatic_choices(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from xferclass.cli import main

    root = make_shape_dataset(tmp_path / "data", per_class=8)
    out = tmp_path / "cli.keras"
    code = main(["train", str(root), "--backbone", "test_tiny", "--weights", "none",
                 "--budget", "2m", "--epochs", "2", "--augment", "flip", "--out", str(out),
                 "--quiet", "--unknown"])  # fmt: skip
    printed = capsys.readouterr().out
    assert code == 0 and "candidates (" not in printed and "default budget" not in printed
    # --unknown: the recipe trained on every image, so each is scored against the others.
    from xferclass.layers import unknown_layer

    layer = unknown_layer(xferclass.load_model(out))
    assert layer is not None and layer.measured["score"] == "knn"
    assert layer.measured["held_out"] == "24 training images, each against the others"
    report = auto.read_report(out)
    assert report is not None and report["budget_s"] == 120
    assert "augment set by the caller" in report["assumed"]
    assert report["choice"] == report["floor"] or (
        report["plan"]["head_epochs"] == 2 and report["plan"]["augment"] == "flip"
    )


@pytest.mark.parametrize("flag", [["--dropout", "0.2"], ["--unfreeze", "0.5"]])
def test_cli_flags_the_recipe_does_not_measure_cannot_be_combined_with_a_budget(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: list[str]
) -> None:
    from xferclass.cli import main

    code = main(["train", str(tmp_path), "--budget", "1m", *flag])
    error = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(error) == 1 and f"{flag[0]} cannot be combined" in error[0]


# --------------------------------------------------------------------------- example


def test_clothing_example_runs_the_automatic_recipe(tmp_path: Path) -> None:
    root = tmp_path / "clothing"
    for seed, (split, per_class) in enumerate((("train", 8), ("validation", 3))):
        make_shape_dataset(root / split, per_class=per_class, seed=seed)
    out = tmp_path / "run"
    with example_module("clothing_auto_example") as example:
        code = example.main(
            ["--data", str(root), "--out", str(out), "--recipe", "auto", "--budget", "2m",
             "--backbone", "test_tiny", "--weights", "none", "--epochs", "3", "--quiet",
             "--metric", "macro_f1"]
        )  # fmt: skip
    assert code == 0
    record = json.loads((out / "metrics.json").read_text())
    assert record["config"]["recipe"] == "auto" and record["config"]["budget"] == "2m"
    assert record["config"]["metric"] == "macro_f1"
    report = record["auto_report"]
    assert report["choice"] == report["floor"] or report["plan"]["head_epochs"] == 3
    assert record["metrics"]["validation"]["n"] == 9
    # The example evaluates the model as the recipe decided: with its TTA when it chose one.
    choice = report["tta"]["choice"]
    assert record["config"]["tta"] == (False if choice == "no" else choice)
    saved = auto.read_report(out / "model.keras")
    assert saved is not None and saved["plan"] == report["plan"]


def test_the_plan_names_the_model_input_size_and_keeps_the_old_name_working() -> None:
    plan = auto.AutoPlan(backbone="b0", input_size=224, head_epochs=10, augment=None,
                         class_weight="none", tta="none", floor=True)  # fmt: skip
    with pytest.warns(DeprecationWarning, match="input_size"):
        assert plan.size == 224
    assert plan.to_dict()["input_size"] == 224 and "size" not in plan.to_dict()


def test_the_floor_is_lite0_whatever_one_timed_batch_said() -> None:
    from xferclass.auto._plan import floor_of

    native = {"efficientnet_lite0": 224, "efficientnet_lite2": 260, "other": 128}
    noisy = {"efficientnet_lite0": 0.02, "efficientnet_lite2": 0.01}  # a busy machine
    assert floor_of(noisy, native, {}) == ("efficientnet_lite0", 224)
    assert floor_of({"efficientnet_lite2": 0.01}, native, {}) == ("efficientnet_lite2", 260)
    assert floor_of({"other": 0.01, "x": 0.02}, {**native, "x": 64}, {}) == ("other", 128)
    assert floor_of(noisy, native, {"size": 192}) == ("efficientnet_lite0", 192)
    # Without a Lite backbone, a load-independent cost decides over a timing that a busy
    # machine inverted (the same network at 48 px timed faster than at 32 px).
    inverted = {"tiny": 0.02, "tiny_wide": 0.01}
    sides = {"tiny": 32, "tiny_wide": 48}
    cost = {name: 1000 * side**2 for name, side in sides.items()}
    assert floor_of(inverted, sides, {}, cost) == ("tiny", 32)
    assert floor_of(inverted, sides, {}) == ("tiny_wide", 48)


@pytest.mark.parametrize(
    ("augment", "caches", "trains"),
    [
        (None, [("plain",), ("plain", "hflip"), VIEWS], [("plain",), ("plain",), ("plain",)]),
        ("flip", [("plain", "hflip"), VIEWS], [("plain", "flip"), ("flip",)]),
        ("rotations", [VIEWS], [("plain", "rotations")]),
    ],
)  # fmt: skip
def test_a_fixed_training_view_still_measures_every_test_time_view(
    augment: str | None, caches: list, trains: list
) -> None:
    from xferclass.auto._plan import view_experiments

    queue = view_experiments(("test_tiny", 32), {"augment": augment})
    assert [set(e.views) for e in queue] == [set(v) for v in caches]
    assert [e.train_views for e in queue] == trains


def test_the_model_returned_averages_the_views_its_choice_was_measured_with(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Whatever the data, make the recipe return its best choice that averages the
    # rotations: the returned model, its saved file, the command line and an exported
    # file must then all give that choice's probabilities with no flag.
    from xferclass.auto._search import Choice
    from xferclass.cli import main
    from xferclass.evaluation._headcv import score
    from xferclass.evaluation._tta import without_views

    decide = auto._decide

    def rotations_win(search: Any, floor: Any, fixed: Any) -> tuple:
        _, decision = decide(search, floor, fixed)
        pool = [c for c in decision["pool"] if isinstance(c, Choice) and c.tta == "rotations"]
        best = max(pool, key=lambda c: score("accuracy", search.images.labels, search.oof[c]))
        return best, decision

    monkeypatch.setattr(auto, "_decide", rotations_win)
    root = make_shape_dataset(tmp_path / "data", per_class=8)
    out = tmp_path / "auto.keras"
    # Training views fixed to the rotations: the floor's own pass caches every view, so
    # choices that average the rotations are measured however slow the machine is.
    result = xferclass.train_auto(
        root, budget=120, backbone="test_tiny", weights=None, out=out,
        overrides={"fine_tune_epochs": 0, "augment": "rotations"},
    )  # fmt: skip
    assert result.plan.tta == "rotations" and result.report["tta"]["inside_model"] is True
    assert "inside the model" in auto.format_report(result.report)
    paths = sorted(str(p) for p in root.rglob("*.png"))[:6]
    images = xferclass.read_images(paths, 32)
    inner = without_views(result.model)
    expected = np.mean([inner.predict(v, verbose=0) for v in (
        images, images[:, :, ::-1], images[:, ::-1], np.rot90(images, 1, axes=(1, 2)),
        np.rot90(images, 3, axes=(1, 2)))], axis=0)  # fmt: skip
    # Then the temperature fitted on the out-of-fold predictions, when it was kept.
    from xferclass.evaluation.calibration import with_temperature

    expected = with_temperature(expected, result.report["calibration"]["temperature"])
    loaded = xferclass.load_model(out)
    for model in (result.model, loaded):
        found = xferclass.predict(model, paths).probabilities
        np.testing.assert_allclose(found, expected, rtol=0, atol=1e-5)
    assert main(["predict", str(out), *paths, "--json", "--top", "3"]) == 0
    rows = json.loads(capsys.readouterr().out)
    for row, probabilities in zip(rows, expected):
        shown = {entry["class"]: entry["probability"] for entry in row["top"]}
        names = ["circle", "square", "triangle"]
        assert shown == pytest.approx(dict(zip(names, probabilities)), abs=1e-5)
    onnx = pytest.importorskip("onnxruntime")
    (written, *_) = xferclass.export(loaded, tmp_path / "m.onnx", format="onnx")
    session = onnx.InferenceSession(str(written), providers=["CPUExecutionProvider"])
    ran = session.run(None, {session.get_inputs()[0].name: images.astype(np.float32)})[0]
    np.testing.assert_allclose(ran, expected, rtol=0, atol=1e-4)


@pytest.mark.parametrize("train_views", ["plain", "flip", "rotations"])
def test_fine_tuning_trains_on_the_training_views_of_its_base_recipe(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, train_views: str
) -> None:
    from types import SimpleNamespace

    from xferclass import training
    from xferclass.auto import _finetune as _auto_finetune
    from xferclass.auto._features import FeatureSet, Images
    from xferclass.auto._search import VIEW_SETS, Choice, Search

    root = make_shape_dataset(tmp_path / "data", per_class=3)
    paths = tuple(sorted(str(p) for p in root.rglob("*.*")))
    labels = np.arange(len(paths)) // 3
    images = Images(paths, labels, ("circle", "square", "triangle"), ("train",) * len(paths))
    rng = np.random.default_rng(0)
    build = lambda: xferclass.build_classifier("test_tiny", num_classes=3, weights=None)  # noqa: E731
    dim = int(build().get_layer("pool").output.shape[-1])
    features = FeatureSet("test_tiny", 32, {v: rng.normal(size=(len(paths), dim)) for v in VIEWS})
    search = Search(images, np.arange(len(paths)) % 3, "accuracy", lambda n, s: None,
                    clock=time.monotonic, deadline=time.monotonic() + 60)  # fmt: skip
    seen: dict[str, Any] = {}

    def record(model: Any, dataset: Any, *args: object, **options: Any) -> Any:
        batches = list(dataset)
        seen["images"] = np.concatenate([np.asarray(x) for x, _ in batches])
        seen["labels"] = np.concatenate([np.asarray(y) for _, y in batches]).argmax(1)
        return SimpleNamespace(epochs_completed=options["fine_tune_epochs"])

    monkeypatch.setattr(training, "fine_tune", record)
    choice = Choice("test_tiny", 32, train_views, "none", 5, "none")
    rows = np.arange(6)
    _auto_finetune._fine_tuned_model(build, features, images, choice, 2, search=search,
                                     rows=rows, deadline=time.monotonic() + 60,
                                     unfreeze=0.15)  # fmt: skip
    views = VIEW_SETS[train_views]
    plain = xferclass.read_images([paths[i] for i in rows], 32)
    assert len(seen["images"]) == len(rows) * len(views)
    # Each image in each view of the base recipe, with its own label (6 images: one
    # batch, stacked view by view; compared as sets, as the batch is shuffled).
    expected = {"plain": plain, "hflip": plain[:, :, ::-1], "vflip": plain[:, ::-1],
                "rot90": np.rot90(plain, 1, axes=(1, 2)),
                "rot270": np.rot90(plain, 3, axes=(1, 2))}  # fmt: skip
    shown = seen["images"].reshape(len(views), len(rows), 32, 32, 3)
    for k, name in enumerate(views):
        key = {tuple(np.round(image, 2).ravel()[:64]) for image in shown[k]}
        assert key == {tuple(np.round(image, 2).ravel()[:64]) for image in expected[name]}
    assert sorted(seen["labels"].tolist()) == sorted(labels[rows].tolist() * len(views))


@pytest.mark.parametrize(("need", "runs"), [(100.0, True), (115.0, False)])
def test_the_floor_runs_only_when_it_fits_in_the_budget_with_its_overrun(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, need: float, runs: bool
) -> None:
    # On a clock that stands still, a 100 s budget leaves the floor 100 * 1.15 - 5 = 110 s
    # at the latest: an estimate of 100 s runs (past the search's own deadline, 75 s),
    # one of 115 s is refused with the budget it would need.
    from xferclass.auto._search import Search

    estimate = Search.seconds_needed

    def floor_needs(self: Any, experiment: Any, *args: Any) -> float:
        return need if experiment.kind == "floor" else estimate(self, experiment, *args)

    monkeypatch.setattr(Search, "seconds_needed", floor_needs)
    root = make_shape_dataset(tmp_path / "data", per_class=4)
    options: dict[str, Any] = dict(
        budget=100, backbone="test_tiny", weights=None, overrides={"fine_tune_epochs": 0},
        clock=lambda: 0.0,
    )  # fmt: skip
    if runs:
        report = xferclass.train_auto(root, **options).report
        assert report["experiments"][0]["experiment"] == "floor"
    else:
        with pytest.raises(xferclass.InvalidArgumentError, match="needs about 115 s, but only "
                           "110 s are left; give a budget about 15 s larger"):  # fmt: skip
            xferclass.train_auto(root, **options)


def test_time_the_final_fine_tuning_will_not_need_goes_back_to_the_frozen_search(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from xferclass.auto import _finetune as _auto_finetune

    results = _fine_tuning_that_wins(monkeypatch, deeper_wins=False)
    # Fine-tuning is estimated to need all the time: only the floor runs before it.
    monkeypatch.setattr(_auto_finetune, "fine_tune_seconds", lambda *args: 1e6)
    monkeypatch.setattr(_auto_finetune, "deeper_seconds", lambda *args: 1e6)
    logged: list[int] = []
    compare = _auto_finetune._compare

    def count(search: Any, *args: Any) -> Any:
        logged.append(len(search.log))
        return compare(search, *args)

    monkeypatch.setattr(_auto_finetune, "_compare", count)
    root = make_shape_dataset(tmp_path / "data", per_class=10)
    result = xferclass.train_auto(root, budget=150, backbone="test_tiny", weights=None)
    report = result.report
    kinds = [entry["experiment"] for entry in report["experiments"]]
    # Fine-tuning was measured after the floor (and perhaps its averaged heads) alone ...
    assert results and results[0].wins and len(logged) == 1
    assert kinds[0] == "floor" and "views" not in kinds[: logged[0]]
    # ... and after it won, the frozen search went on: the views were measured.
    assert "views" in kinds[logged[0] :]
    fine = report["fine_tune"]
    if fine["wins"]:  # still the best estimate: the fine-tuned model is returned
        assert result.plan.fine_tune_epochs == fine["epochs"] and "final" in fine
    else:  # a frozen choice estimated higher: it is returned, and the report says why
        assert "the frozen search went on" in fine["superseded"]
        assert result.plan.fine_tune_epochs == 0
        assert "not kept (the frozen search went on" in auto.format_report(report)


def test_the_plan_of_an_average_counts_its_members_heads() -> None:
    from xferclass.auto._ensemble import Ensemble
    from xferclass.auto._search import Choice

    five = Choice("a", 224, "plain", "none", 10, "none", heads=5)
    one = Choice("b", 224, "flip", "sqrt", 5, "none")
    plan = auto._plan(Ensemble((five, one)), one, {"why": "test"}, 1e-3, {})
    assert plan.heads == 5 and [m["heads"] for m in plan.members] == [5, 1]
    assert plan.backbone == "a + b" and plan.input_size == 224
