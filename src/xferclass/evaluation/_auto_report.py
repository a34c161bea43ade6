"""The automatic recipe's report: stored inside the model, read back, and shown on one screen."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

__all__ = ["format_report", "read_report", "store_report", "FIRST_UNFREEZE"]

#: The fine-tuned share of the backbone in reports written before the depth was
#: measured and recorded as ``unfreeze``: they all fine-tuned the top 15 %.
FIRST_UNFREEZE = 0.15


def store_report(model: Any, report: Mapping[str, Any]) -> bool:
    """Put ``report`` (JSON data) into the model's Preprocessing layer metadata."""
    from ..backbones.layers import preprocessing_layer

    layer = preprocessing_layer(model)
    if layer is None:
        return False
    layer.metadata = {**(layer.metadata or {}), "auto_report": json.loads(json.dumps(report))}
    return True


def read_report(model: Any) -> dict[str, Any] | None:
    """The report of :func:`xferclass.train_auto` saved inside a model, or None.

    Args:
        model: A ``keras.Model``, or the path of a saved ``.keras`` file.

    Returns:
        The report (plain JSON data), or None when the model was not trained by
        :func:`xferclass.train_auto`.

    Examples:
        >>> from xferclass.auto import read_report
        >>> report = read_report("model.keras")  # doctest: +SKIP
        >>> report["plan"]["backbone"]  # doctest: +SKIP
        'efficientnet_lite0'
    """
    from ..backbones.layers import preprocessing_layer

    if isinstance(model, (str, os.PathLike)):
        from ..backbones.saving import load_model

        model = load_model(model)
    layer = preprocessing_layer(model)
    found = (layer.metadata or {}).get("auto_report") if layer is not None else None
    return dict(found) if found is not None else None


def _candidate_lines(report: Mapping[str, Any]) -> list[str]:
    metric = report.get("metric", "accuracy")
    lines = [f"candidates (cross-validated {metric} over {report['folds']} folds):"]
    for row in report.get("candidates", []):
        marks = ("  <- returned" if row["chosen"] else "") + ("  (floor)" if row["floor"] else "")
        lines.append(f"  {row['score']:.4f} ± {row['se']:.4f}  {row['candidate']}{marks}")
    return lines


def format_report(report: Mapping[str, Any]) -> str:
    """The one-screen text of a :func:`xferclass.train_auto` report.

    Args:
        report: ``AutoResult.report`` or :func:`read_report`'s result.

    Returns:
        Lines: the data, the experiments run and skipped, the candidates with
        their cross-validated scores, the choice, and the held-out estimate.
    """
    data, plan = report["data"], report["plan"]
    lines = [
        f"automatic recipe: budget {report['budget_s']:.0f} s, used {report['total_s']:.0f} s",
        f"data: {data['train_images']} labelled images in {len(data['class_counts'])} classes "
        f"({data['min_per_class']}-{max(data['class_counts'])} per class)",
        "experiments:",
    ]
    for entry in report.get("experiments", []):
        lines.append(
            f"  {entry['experiment']:<8} {entry['backbone']} {entry['size']} px: caching "
            f"{entry['caching_s']:.0f} s, {entry['choices_compared']} choices in "
            f"{entry['comparison_s']:.0f} s; best {entry['best_score']:.4f}"
        )
    lines += [f"  skipped: {note}" for note in report.get("skipped", [])]
    lines += _candidate_lines(report)
    fine = report.get("fine_tune", {})
    if fine.get("measured"):
        top = f"top {fine['unfreeze']:.0%}, " if "unfreeze" in fine else ""
        planned = fine.get("planned_epochs", fine["epochs"])
        epochs = (f"{fine['epochs']} epochs" if fine["epochs"] == planned else
                  f"{fine['epochs']} of {planned} planned epochs (stopped for time)")  # fmt: skip
        lines.append(
            f"fine-tuning: {top}{epochs} scored {fine['score']:.4f} on fold 0 "
            f"({fine['images']} images) against {fine['frozen_score']:.4f} for "
            f"{fine.get('against', 'the frozen choice')}: "
            + ("kept" if fine["wins"] else "not kept")
            + (f" ({fine['superseded']})" if fine.get("superseded") else "")
            + (f"; {fine['final']}" if fine.get("final") else "")
        )
        for depth in fine.get("depths", [])[1:]:
            lines.append(
                f"  deeper: top {depth['unfreeze']:.0%}, {depth['epochs']} epochs scored "
                f"{depth['score']:.4f} against {depth['against_score']:.4f}: "
                + ("won" if depth["wins"] else "did not win")
            )
        if fine.get("deeper_reason"):
            lines.append(f"  deeper: {fine['deeper_reason']}")
    else:
        lines.append(f"fine-tuning: not measured ({fine.get('reason', '')})")
    lines.append(
        f"returned: {plan['backbone']} {plan['input_size']} px, train views "
        f"{plan['augment'] or 'plain'}, class weights {plan['class_weight']}, "
        f"{plan['head_epochs']} epochs, "
        f"TTA {report['tta']['choice']}"
        + (" (inside the model: every prediction and export averages these views)"
           if report["tta"].get("inside_model") else "")
        + (f", top {plan.get('unfreeze', FIRST_UNFREEZE):.0%} of the backbone fine-tuned for "
           f"{plan['fine_tune_epochs']} epochs" if plan.get("fine_tune_epochs") else "")
    )  # fmt: skip
    calibration = report.get("calibration")
    if calibration:
        lines.append(
            f"calibration: temperature {calibration['fitted']:.3f} fitted on "
            f"{calibration['held_out']} ({calibration['images']} images); expected "
            f"calibration error {calibration['ece_before']:.4f} before, "
            f"{calibration['ece_after']:.4f} after (cross-validated): "
            + ("kept (inside the model: every prediction and export is calibrated)"
               if calibration["kept"] else "not kept")
        )  # fmt: skip
    lines.append(f"why: {report['why']}")
    estimate = report["estimate"]
    lines.append(
        f"held-out estimate: {estimate['metric']} {estimate['value']:.4f} ± "
        f"{estimate['standard_error']:.4f} (floor {estimate['floor_value']:.4f}); "
        f"{estimate['how']}"
    )
    lines += [f"measured: {', '.join(report['measured'])}"]
    if report.get("assumed"):
        lines += [f"assumed: {', '.join(report['assumed'])}"]
    lines += [f"note: {note}" for note in report.get("notes", [])]
    return "\n".join(lines)
