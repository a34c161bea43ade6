"""How far predicted probabilities are from frequencies, and a temperature that brings them closer.

A classifier's top probability is *calibrated* when, among the images it gives 0.9,
nine in ten are right. Networks trained to low cross-entropy are usually too sure of
themselves (Guo et al., 2017, "On Calibration of Modern Neural Networks"). One
number, a *temperature* ``T``, fitted on images the model did not train on, corrects
much of it: the calibrated probabilities are ``softmax(log(p) / T)``, which is
``softmax(logits / T)`` for a softmax output. Dividing every logit by the same positive
number keeps their order, so the top class, and with it accuracy, never changes.

- :func:`expected_calibration_error`: the weighted mean gap between accuracy and mean
  top probability over equal-width bins of the top probability (15 by default).
- :func:`fit_temperature`: the temperature of least negative log-likelihood.
- :func:`choose_temperature`: a temperature only when it lowers the calibration error
  on images it was not fitted on (cross-validated); 1.0 otherwise.
- :func:`with_temperature`: probabilities at a temperature, as the
  :class:`xferclass.layers.Temperature` layer computes them inside a model.
- :func:`calibrate`: a trained classifier calibrated in place on held-out images
  (``xferclass.calibrate``; ``fit(..., calibrate=True)`` does the same on the validation
  split).
"""

from __future__ import annotations

from typing import Any

from ..training._calibration import (
    BINS,
    TemperatureChoice,
    _softmax_layer,
    calibrate_on,
    choose_temperature,
    expected_calibration_error,
    fit_temperature,
    fold_temperature,
    reliability_bins,
    with_temperature,
)

__all__ = [
    "BINS",
    "TemperatureChoice",
    "calibrate",
    "calibrate_on",
    "choose_temperature",
    "expected_calibration_error",
    "fit_temperature",
    "fold_temperature",
    "reliability_bins",
    "with_temperature",
]


def calibrate(
    model: Any, dataset: Any, *, engine: str = "auto", seed: int = 0, verbose: int = 0
) -> TemperatureChoice:
    """Fit a temperature on ``dataset`` (images ``model`` did not train on) and, when it
    lowers the cross-validated calibration error there, fold it into ``model``'s softmax
    layer, in place.

    ``softmax((W x + b) / T)`` is ``softmax((W / T) x + b / T)``: dividing the softmax
    layer's kernel and bias by ``T`` gives calibrated probabilities with no extra layer,
    so :func:`xferclass.predict`, :func:`xferclass.evaluate_regression_style`, the command
    line and every export format give them. The top class never changes. What was
    measured is recorded in the model's metadata (``"calibration"``), and returned.

    Args:
        model: A single-label classifier whose output is a Dense softmax layer.
        dataset: ``(images, one-hot labels)`` batches the model did not train on.
        engine: The runtime of the pass, as in :func:`xferclass.predict`.
        seed: Seed of the cross-validation's folds.
        verbose: A progress bar for the pass when 1.

    Raises:
        InvalidArgumentError: The model is multi-label, or its output is not a Dense
            softmax layer; or the dataset has fewer than 4 images.

    Examples:
        >>> choice = xferclass.calibrate(model, validation)  # doctest: +SKIP
        >>> choice.temperature, choice.ece_before, choice.ece_after  # doctest: +SKIP
        (1.8, 0.072, 0.021)
    """
    from ..backbones.layers import refuse_unknown
    from .metrics import collect_predictions

    refuse_unknown(model, "calibrating it")
    _softmax_layer(model)  # before the pass: refuse what cannot be calibrated
    labels, probabilities = collect_predictions(model, dataset, engine=engine, verbose=verbose)
    return calibrate_on(model, labels, probabilities, seed=seed)
