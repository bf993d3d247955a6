"""Offline classification metrics: top-1, top-5 and expected calibration error (plain functions).

Nothing is downloaded: these replace ``evaluate.load("accuracy")`` in the training script.
:func:`compute_metrics` plugs into ``Trainer(compute_metrics=...)``.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def _check(logits: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    logits, labels = np.asarray(logits, dtype=np.float64), np.asarray(labels)
    if logits.ndim != 2 or labels.shape != (logits.shape[0],):
        raise ValueError(f"need logits (N, K) and labels (N,), got {logits.shape} and {labels.shape}")
    return logits, labels


def top_k_accuracy(logits: np.ndarray, labels: np.ndarray, k: int = 1) -> float:
    """Fraction of samples whose label is among the ``k`` highest logits."""
    logits, labels = _check(logits, labels)
    k = min(k, logits.shape[1])
    top = np.argpartition(-logits, k - 1, axis=1)[:, :k]
    return float((top == labels[:, None]).any(axis=1).mean())


def expected_calibration_error(logits: np.ndarray, labels: np.ndarray, num_bins: int = 15) -> float:
    """ECE (Guo et al., 2017): Σ_b |B_b|/N · |accuracy(B_b) − confidence(B_b)| over equal-width bins."""
    logits, labels = _check(logits, labels)
    probs = _softmax(logits)
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == labels).astype(np.float64)
    bins = np.minimum((confidence * num_bins).astype(int), num_bins - 1)
    conf_sum = np.bincount(bins, weights=confidence, minlength=num_bins)
    acc_sum = np.bincount(bins, weights=correct, minlength=num_bins)
    return float(np.abs(acc_sum - conf_sum).sum() / len(labels))


def classification_metrics(logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """``accuracy`` (top-1), ``top5_accuracy`` and ``ece``."""
    return {
        "accuracy": top_k_accuracy(logits, labels, 1),
        "top5_accuracy": top_k_accuracy(logits, labels, 5),
        "ece": expected_calibration_error(logits, labels),
    }


def compute_metrics(eval_prediction: Any) -> dict[str, float]:
    """``Trainer`` hook: metrics of an ``EvalPrediction`` (``predictions``, ``label_ids``)."""
    logits = eval_prediction.predictions
    if isinstance(logits, tuple):
        logits = logits[0]
    return classification_metrics(logits, eval_prediction.label_ids)
