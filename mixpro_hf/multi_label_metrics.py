"""Multi-label metrics: mAP (macro average precision over classes, as VOC / COCO multi-label papers report),
per-class AP, and micro / macro F1 at a sigmoid threshold.

AP is scikit-learn's ``average_precision_score`` (non-interpolated: Σ (Rₙ − Rₙ₋₁)·Pₙ over the ranking by logit,
ties as one threshold), the AP of the ML-GCN / ASL / timm 1.0.31 evaluators, not VOC07's 11-point AP. A class
with no positive image in the evaluated set has no AP (recall is undefined): it is left out of the mean, and out
of macro F1, and ``map_classes`` says over how many classes the mean was taken (timm counts such a class as 0).
Micro F1 pools every (image, class) decision, absent classes included; macro F1 is the mean of per-class F1
(timm's ``macro_f1``, not ML-GCN's CF1). Scores are fractions in [0, 1].
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: Sigmoid probability at or above which a class is predicted (F1), i.e. a logit >= 0.
F1_THRESHOLD = 0.5


def _check(logits: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    logits, targets = np.asarray(logits, dtype=np.float64), np.asarray(targets)
    if logits.ndim != 2 or targets.shape != logits.shape:
        raise ValueError(f"need logits (N, C) and multi-hot targets (N, C), got {logits.shape} and {targets.shape}")
    return logits, (targets > 0.5).astype(np.int64)


def per_class_average_precision(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """AP of every class (``(C,)``, NaN for a class with no positive in ``targets``)."""
    from sklearn.metrics import average_precision_score

    logits, targets = _check(logits, targets)
    present = targets.any(axis=0)
    ap = np.full(logits.shape[1], np.nan)
    if present.any():
        ap[present] = average_precision_score(targets[:, present], logits[:, present], average=None)
    return ap


def mean_average_precision(logits: np.ndarray, targets: np.ndarray) -> float:
    """mAP: the mean of :func:`per_class_average_precision` over the classes with a positive (NaN if none)."""
    ap = per_class_average_precision(logits, targets)
    return float(np.nanmean(ap)) if np.isfinite(ap).any() else float("nan")


def multi_label_metrics(
    logits: np.ndarray,
    targets: np.ndarray,
    label_names: Sequence[str] | None = None,
    threshold: float = F1_THRESHOLD,
) -> dict[str, float]:
    """``map``, ``map_classes``, ``micro_f1``, ``macro_f1`` (sigmoid >= ``threshold``) and, with ``label_names``,
    ``ap/<name>`` of every class with a positive."""
    from sklearn.metrics import f1_score

    logits, targets = _check(logits, targets)
    ap = per_class_average_precision(logits, targets)
    present = np.isfinite(ap)
    predicted = (1.0 / (1.0 + np.exp(-logits)) >= threshold).astype(np.int64)
    metrics = {
        "map": float(ap[present].mean()) if present.any() else float("nan"),
        "map_classes": float(present.sum()),
        "micro_f1": float(f1_score(targets, predicted, average="micro", zero_division=0.0)),
        "macro_f1": float(
            f1_score(targets[:, present], predicted[:, present], average="macro", zero_division=0.0)
            if present.any()
            else float("nan")
        ),
    }
    if label_names is not None:
        metrics.update({f"ap/{label_names[i]}": float(ap[i]) for i in np.flatnonzero(present)})
    return metrics
