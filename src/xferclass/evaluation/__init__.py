"""What a trained model is worth and why: metrics (``metrics``), prediction
(``inference``), test-time views, plots, Grad-CAM (``explain``), data inspection
(``inspection``), cross-validated heads (``_headcv``) and the HTML report (``report``).

It may import ``core``, ``data``, ``backbones``, ``runtime`` and ``training``.
"""
