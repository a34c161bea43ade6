"""The automatic recipe: budget parsing, the planner's rules, the deadline guard,
the stratified split and ``train_auto`` end to end on a tiny generated folder."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pytest

import xferclass
from conftest import make_shape_dataset
from helpers import example_module, tiny_arrays
from xferclass import auto
from xferclass.auto import DataSummary, parse_budget, plan_run

LITE = {"efficientnet_lite0": 224, "efficientnet_lite2": 260}


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


# --------------------------------------------------------------------------- planner


def _data(counts: tuple[int, ...], validation: int = 300) -> DataSummary:
    return DataSummary(class_counts=counts, validation_images=validation)


def test_imbalanced_classes_get_class_weights_and_balanced_ones_do_not() -> None:
    timing = {"efficientnet_lite0": 0.01}
    native = {"efficientnet_lite0": 224}
    imbalanced = plan_run(_data((500, 50)), timing, native, 900)
    balanced = plan_run(_data((300, 250)), timing, native, 900)
    assert imbalanced.class_weight and "10.0" in imbalanced.reasons["class_weight"]
    assert not balanced.class_weight


def test_tiny_data_is_not_fine_tuned_and_is_augmented() -> None:
    plan = plan_run(_data((12, 15, 10), 10), {"efficientnet_lite0": 0.01}, LITE, 900)
    assert plan.fine_tune_epochs == 0
    assert "10 < 20" in plan.reasons["fine_tune"]
    assert plan.augment == "flip" and plan.augment_views >= 1


def test_plenty_of_data_is_fine_tuned_without_augmentation() -> None:
    plan = plan_run(_data((300,) * 10), {"efficientnet_lite0": 0.01}, LITE, 900)
    assert plan.fine_tune_epochs >= 4
    assert plan.augment is None
    assert plan.unfreeze == pytest.approx(0.15)
    # Fine-tuning waits for half its planned epochs (3 to 5) before it stops.
    assert plan.fine_tune_patience == max(3, min(5, plan.fine_tune_epochs // 2))
    assert f"stops after {plan.fine_tune_patience} epochs" in plan.reasons["fine_tune"]


def test_fewer_images_get_more_head_epochs() -> None:
    timing = {"efficientnet_lite0": 0.01}
    small = plan_run(_data((30,) * 3, 20), timing, LITE, 900)
    large = plan_run(_data((1000,) * 3, 300), timing, LITE, 900)
    assert small.head_epochs > large.head_epochs >= 5


def test_a_slower_machine_gets_a_smaller_backbone_or_input() -> None:
    data = _data((300,) * 10, 341)
    fast = plan_run(data, {"efficientnet_lite0": 0.004, "efficientnet_lite2": 0.009}, LITE, 900)
    per_image = {"efficientnet_lite0": 0.08, "efficientnet_lite2": 0.18}  # 20 times slower
    slow = plan_run(data, per_image, LITE, 900)
    assert (fast.backbone, fast.size) == ("efficientnet_lite2", 352)

    # Compute per image, in units of the same machine: less on the slower one.
    def compute(plan: xferclass.AutoPlan) -> float:
        return per_image[plan.backbone] * (plan.size / LITE[plan.backbone]) ** 2

    assert compute(slow) < compute(fast)
    assert slow.backbone == "efficientnet_lite0" and slow.size < 288


def test_the_plan_fits_in_the_time_left() -> None:
    data = _data((200,) * 5, 250)
    for seconds_left in (50, 120, 300, 900, 3600):
        plan = plan_run(data, {"efficientnet_lite0": 0.01, "efficientnet_lite2": 0.02}, LITE,
                        seconds_left)  # fmt: skip
        planned = sum(v for k, v in plan.estimates.items() if k != "tta")  # TTA is optional
        assert planned <= seconds_left * (1 - auto.SAFETY)
        assert plan.fine_tune_epochs <= auto.MAX_FINE_TUNE_EPOCHS
    # A budget far larger than the work plans the most fine-tuning epochs, not more.
    assert plan.fine_tune_epochs == auto.MAX_FINE_TUNE_EPOCHS
    # A short budget drops fine-tuning before it drops the data.
    short = plan_run(data, {"efficientnet_lite0": 0.01}, LITE, 35)
    assert short.fine_tune_epochs == 0 and "fit" in short.reasons["fine_tune"]


def test_a_tight_budget_caches_fewer_augmented_views_before_refusing() -> None:
    data = _data((60,) * 5, 50)  # < 100 per class: a mirrored view wanted
    timing = {"efficientnet_lite0": 0.05}
    roomy = plan_run(data, timing, LITE, 900)
    assert roomy.augment == "flip" and roomy.augment_views == 1
    tight = plan_run(data, timing, LITE, 45)  # the plain images fit, a mirrored copy not
    assert tight.augment is None
    assert "fit in the time left" in tight.reasons["augment"]


def test_a_budget_too_small_for_one_pass_is_refused_before_training() -> None:
    with pytest.raises(xferclass.InvalidArgumentError, match="budget too small"):
        plan_run(_data((1000,) * 10), {"efficientnet_lite0": 0.05}, LITE, 60)


def test_overrides_are_kept_and_unknown_ones_refused() -> None:
    timing = {"efficientnet_lite0": 0.01}
    plan = plan_run(
        _data((300,) * 4), timing, LITE, 900,
        overrides={"head_epochs": 3, "fine_tune_epochs": 0, "size": 256, "augment": "flip"},
    )  # fmt: skip
    assert (plan.head_epochs, plan.fine_tune_epochs, plan.size, plan.augment) == (
        3, 0, 256, "flip",
    )  # fmt: skip
    with pytest.raises(xferclass.InvalidArgumentError, match="epochs_typo"):
        plan_run(_data((300,) * 4), timing, LITE, 900, overrides={"epochs_typo": 1})
    with pytest.raises(xferclass.InvalidArgumentError, match="no backbone"):
        plan_run(_data((300,) * 4), {}, LITE, 900)


# --------------------------------------------------------------------------- guard


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _tiny_classifier() -> keras.Model:
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    return model


def test_guard_never_starts_an_epoch_that_would_end_past_the_deadline() -> None:
    clock = _Clock()
    model = _tiny_classifier()

    class Tick(keras.callbacks.Callback):  # each epoch "takes" 10 s of the fake clock
        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            clock.now += 10.0

    guard = auto._Guard(
        model, deadline=35.0, clock=clock, first_epoch=[10.0], patience=100,
        phase_names=["head"],
    )  # fmt: skip
    x = np.random.default_rng(0).normal(size=(12, 4)).astype("float32")
    y = np.eye(3, dtype="float32")[np.arange(12) % 3]
    with pytest.raises(auto._OutOfTime, match="not started"):
        model.fit(x, y, validation_data=(x, y), epochs=10, verbose=0,
                  callbacks=[Tick(), guard.callback])  # fmt: skip
    assert guard.epochs == 3  # ends at 10, 20, 30; a fourth would end at 40 > 35
    assert len(guard.history["val_accuracy"]) == 3
    assert guard.best == max(guard.history["val_accuracy"])
    assert guard.best_weights is not None


def test_guard_refuses_a_phase_whose_first_epoch_cannot_fit() -> None:
    clock = _Clock()
    guard = auto._Guard(
        None, deadline=100.0, clock=clock, first_epoch=[5.0, 60.0], patience=2,
        phase_names=["head", "fine-tune"],
    )  # fmt: skip
    guard.begin_phase()
    guard.begin_epoch()
    clock.now = 50.0
    assert not guard.end_epoch({"val_accuracy": 0.5})
    guard.end_phase()
    guard.begin_phase()
    with pytest.raises(auto._OutOfTime, match="fine-tune"):
        guard.begin_epoch()  # 50 + 60 > 100


def test_guard_stops_a_phase_after_patience_epochs_without_improvement() -> None:
    clock = _Clock()
    guard = auto._Guard(
        None, deadline=1e9, clock=clock, first_epoch=[1.0], patience=2, phase_names=["head"]
    )
    guard.begin_phase()
    stops = []
    for value in (0.5, 0.7, 0.6, 0.65, 0.9):
        guard.begin_epoch()
        clock.now += 1
        stops.append(guard.end_epoch({"val_accuracy": value}))
    assert stops == [False, False, False, True, False]
    assert guard.best == 0.9 and guard.best_epoch == 5


def test_guard_waits_longer_in_the_fine_tuning_phase_when_told_to() -> None:
    clock = _Clock()
    guard = auto._Guard(
        None, deadline=1e9, clock=clock, first_epoch=[1.0], patience=[1, 3],
        phase_names=["head", "fine-tune"],
    )  # fmt: skip
    stops = []
    for values in ((0.5, 0.4), (0.6, 0.3, 0.4, 0.45)):
        guard.begin_phase()
        for value in values:
            guard.begin_epoch()
            clock.now += 1
            stops.append(guard.end_epoch({"val_accuracy": value}))
        guard.end_phase()
    # Head: one epoch without a better value stops it. Fine-tuning: the third does.
    assert stops == [False, True, False, False, False, True]
    assert guard.best == 0.6 and guard.best_epoch == 3


# --------------------------------------------------------------------------- split


def test_the_carved_validation_split_is_stratified_disjoint_and_seeded(tmp_path: Path) -> None:
    root = make_shape_dataset(tmp_path / "data", per_class=10)
    train, val = auto.load_splits(root, None, 32, seed=3, validation_split=0.3)
    again_train, again_val = auto.load_splits(root, None, 32, seed=3, validation_split=0.3)
    _, other_val = auto.load_splits(root, None, 32, seed=4, validation_split=0.3)
    assert set(train.file_paths).isdisjoint(val.file_paths)
    assert len(train.file_paths) + len(val.file_paths) == 30
    assert sorted(Counter_of(val)) == [0, 1, 2]  # every class in validation
    assert all(count == 3 for count in Counter_of(val).values())
    assert list(val.file_paths) == list(again_val.file_paths)
    assert list(train.file_paths) == list(again_train.file_paths)
    assert sorted(val.file_paths) != sorted(other_val.file_paths)
    with pytest.raises(xferclass.InvalidArgumentError, match="validation_split"):
        auto.load_splits(root, None, 32, validation_split=1.5)


def Counter_of(dataset: object) -> dict[int, int]:  # noqa: N802
    from collections import Counter

    return dict(Counter(int(label) for label in dataset.labels))  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- end to end


def test_train_auto_finishes_within_its_budget_and_saves_its_report(tmp_path: Path) -> None:
    import time

    root = make_shape_dataset(tmp_path / "data", per_class=30)
    out = tmp_path / "auto.keras"
    started = time.monotonic()
    result = xferclass.train_auto(
        root, budget="90s", backbone="test_tiny", weights=None, seed=0, out=out,
        overrides={"head_epochs": 6, "augment_views": 1},
    )  # fmt: skip
    elapsed = time.monotonic() - started
    report = result.report
    assert elapsed <= 90 and report["total_s"] <= 90
    assert report["data"]["validation_given"] is False
    assert report["data"]["train_images"] + report["data"]["validation_images"] == 90
    # 24 training images per class: enough to fine-tune (>= 20) and to augment (< 100).
    assert result.plan.fine_tune_epochs >= 4 and result.plan.augment == "flip"
    phases = [phase["name"] for phase in report["phases"]]
    assert any(name.startswith("head") for name in phases)
    assert set(result.history["phase"]) <= {1.0, 2.0}
    tta, best = report["tta"], max(result.history["val_accuracy"])
    if "accuracy_with" in tta:  # the mirror was tried on the kept epoch's weights
        assert tta["accuracy_without"] == pytest.approx(best)
        assert report["validation_accuracy"] == max(tta["accuracy_without"], tta["accuracy_with"])
    else:
        assert report["validation_accuracy"] == best
    assert report["validation_accuracy"] > 0.6  # three colours; chance is 1/3
    # The report survives a round trip through the saved file.
    saved = auto.read_report(out)
    assert saved is not None
    expected = {key: value for key, value in report.items() if key != "saved_s"}
    assert saved == json.loads(json.dumps(expected))
    assert saved["plan"] == json.loads(json.dumps(result.plan.to_dict()))
    assert saved["phases"] == report["phases"]
    text = auto.format_report(saved)
    assert "test_tiny" in text and "phases:" in text
    # The saved model is the returned one.
    loaded = xferclass.load_model(out)
    images, _ = tiny_arrays(4)
    np.testing.assert_allclose(
        loaded.predict(images, verbose=0), result.model.predict(images, verbose=0), atol=1e-5
    )


def test_train_auto_uses_a_given_validation_folder_and_overrides(tmp_path: Path) -> None:
    train = make_shape_dataset(tmp_path / "train", per_class=6, seed=1)
    val = make_shape_dataset(tmp_path / "val", per_class=3, seed=2)
    result = xferclass.train_auto(
        train, val, budget=60, backbone="test_tiny", weights=None,
        overrides={"head_epochs": 2, "augment": None},
    )  # fmt: skip
    assert result.report["data"]["validation_given"] is True
    assert result.report["data"]["validation_images"] == 9
    assert len(result.history["val_accuracy"]) <= 2
    assert result.plan.augment is None and result.plan.fine_tune_epochs == 0
    assert auto.read_report(result.model) == result.report
    assert auto.read_report(xferclass.build_classifier("test_tiny", num_classes=3,
                                                       weights=None)) is None  # fmt: skip


def test_train_auto_rejects_bad_arguments(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_shape_dataset(tmp_path / "data", per_class=4)
    with pytest.raises(xferclass.InvalidArgumentError, match="out="):
        xferclass.train_auto(root, backbone="test_tiny", weights=None, out=tmp_path / "m.h5")
    with pytest.raises(xferclass.InvalidArgumentError, match="budget"):
        xferclass.train_auto(root, backbone="test_tiny", weights=None, budget="soon")
    with pytest.raises(xferclass.InvalidArgumentError, match="batch_size"):
        xferclass.train_auto(root, backbone="test_tiny", weights=None, batch_size=0)
    with pytest.raises(xferclass.BackboneNotFoundError):
        xferclass.train_auto(root, backbone="no_such_backbone", weights=None)
    monkeypatch.setattr(auto, "available_backbones", lambda: [])
    with pytest.raises(xferclass.InvalidArgumentError, match="no backbone"):
        xferclass.train_auto(root)


# --------------------------------------------------------------------------- command line


def test_cli_train_without_recipe_flags_takes_the_automatic_route(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from xferclass.cli import main

    root = make_shape_dataset(tmp_path / "data", per_class=8)
    out = tmp_path / "cli.keras"
    code = main(["train", str(root), "--backbone", "test_tiny", "--weights", "none",
                 "--out", str(out), "--seed", "1"])  # fmt: skip
    printed = capsys.readouterr().out
    assert code == 0
    assert "default budget of 10m" in printed
    assert "plan (600 s budget" in printed and "phases:" in printed
    assert f"model saved to {out}" in printed
    report = auto.read_report(out)
    assert report is not None and report["budget_s"] == 600 and report["seed"] == 1


def test_cli_recipe_flags_with_a_budget_override_the_automatic_choices(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from xferclass.cli import main

    root = make_shape_dataset(tmp_path / "data", per_class=8)
    out = tmp_path / "cli.keras"
    code = main(["train", str(root), "--backbone", "test_tiny", "--weights", "none",
                 "--budget", "2m", "--epochs", "2", "--augment", "flip", "--out", str(out),
                 "--quiet"])  # fmt: skip
    printed = capsys.readouterr().out
    assert code == 0 and "plan" not in printed and "default budget" not in printed
    report = auto.read_report(out)
    assert report is not None and report["budget_s"] == 120
    assert report["plan"]["head_epochs"] == 2 and report["plan"]["augment"] == "flip"
    assert report["plan"]["reasons"]["augment"] == "set by the caller"


def test_cli_head_flags_cannot_be_combined_with_a_budget(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from xferclass.cli import main

    code = main(["train", str(tmp_path), "--budget", "1m", "--dropout", "0.2"])
    error = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(error) == 1 and "--dropout cannot be combined" in error[0]


# --------------------------------------------------------------------------- example


def test_clothing_example_runs_the_automatic_recipe(tmp_path: Path) -> None:
    root = tmp_path / "clothing"
    for seed, (split, per_class) in enumerate((("train", 8), ("validation", 3))):
        make_shape_dataset(root / split, per_class=per_class, seed=seed)
    out = tmp_path / "run"
    with example_module("clothing_auto_example") as example:
        code = example.main(
            ["--data", str(root), "--out", str(out), "--recipe", "auto", "--budget", "2m",
             "--backbone", "test_tiny", "--weights", "none", "--epochs", "3", "--quiet"]
        )  # fmt: skip
    assert code == 0
    record = json.loads((out / "metrics.json").read_text())
    assert record["config"]["recipe"] == "auto" and record["config"]["budget"] == "2m"
    assert record["auto_report"]["plan"]["head_epochs"] == 3  # --epochs overrides
    assert record["metrics"]["validation"]["n"] == 9
    # The example evaluates the model as the recipe decided: with TTA when it chose it.
    assert record["config"]["tta"] == (record["auto_report"]["tta"]["choice"] != "no")
    saved = auto.read_report(out / "model.keras")
    assert saved is not None and saved["plan"] == record["auto_report"]["plan"]
