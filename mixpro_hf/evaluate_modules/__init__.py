"""🤗 ``evaluate`` modules of :mod:`mixpro_hf.metrics`, shipped inside the package and loaded without any download.

``evaluate.load(evaluate_module_path("top_k_accuracy"))`` (or :func:`load_evaluate_module`) gives an
``EvaluationModule`` whose ``compute`` calls the plain function of :mod:`mixpro_hf.metrics`, so an ``evaluate``-based
``compute_metrics``, ``evaluate.combine`` and ``evaluate.evaluator("image-classification")`` get the same numbers as
the plain functions. The modules need the optional ``evaluate`` extra (``pip install "mixpro-hf[evaluate]"``); the
plain functions need nothing beyond NumPy and scikit-learn.

========================== ============================================ =====================================
module                     ``predictions``                              ``compute`` returns
========================== ============================================ =====================================
top_k_accuracy             logits (N, K), or class ids (N,) with k=1    ``accuracy`` (k=1), ``top5_accuracy``
expected_calibration_error logits (N, K)                                ``ece``
rms_calibration_error      logits (N, K)                                ``rms_calibration_error``
aurra                      logits (N, K)                                ``aurra``
ood_detection              logits (N, K), or anomaly scores (N,)        ``ood_auprc``, ``ood_auroc``, ``ood_fpr95``
========================== ============================================ =====================================

``references`` are class ids, except for ``ood_detection``: 1 for an out-of-distribution example, 0 for an
in-distribution one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

EVALUATE_MODULES = (
    "top_k_accuracy",
    "expected_calibration_error",
    "rms_calibration_error",
    "aurra",
    "ood_detection",
)


def evaluate_module_path(name: str) -> str:
    """The path of the shipped ``evaluate`` module script ``name`` (one of :data:`EVALUATE_MODULES`), for
    ``evaluate.load``; nothing is downloaded."""
    if name not in EVALUATE_MODULES:
        raise ValueError(f"no mixpro_hf evaluate module {name!r}: expected one of {', '.join(EVALUATE_MODULES)}")
    return str(Path(__file__).with_name(f"{name}.py"))


def load_evaluate_module(name: str, **kwargs: Any) -> Any:
    """``evaluate.load(evaluate_module_path(name), **kwargs)``, with a one-line error when ``evaluate`` (the
    optional extra) is not installed."""
    path = evaluate_module_path(name)
    try:
        import evaluate
    except ImportError as err:
        raise ImportError(
            f"the {name} evaluate module needs the evaluate package: pip install 'mixpro-hf[evaluate]'"
        ) from err
    return evaluate.load(path, **kwargs)
