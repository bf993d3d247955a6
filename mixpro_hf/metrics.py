"""Offline classification metrics: top-1, top-5, expected calibration error, and temperature scaling.

Papers:
    - ECE and temperature scaling: Guo et al., "On Calibration of Modern Neural Networks", ICML 2017.
      https://arxiv.org/abs/1706.04599

Nothing is downloaded: these replace ``evaluate.load("accuracy")`` in the training script (🤗 ``evaluate``
loads metric scripts from the Hub at run time, which an offline cluster node cannot do).
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


def negative_log_likelihood(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean cross-entropy of ``softmax(logits / temperature)``."""
    logits, labels = _check(logits, labels)
    scaled = logits / temperature
    shifted = scaled - scaled.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return float(-log_probs[np.arange(len(labels)), labels].mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature T > 0 minimising the NLL of ``softmax(logits / T)`` on held-out data (Guo et al., 2017).

    A golden-section search over log T in [log 0.05, log 20] (the NLL is unimodal in T); T > 1 softens an
    over-confident model, T < 1 sharpens an under-confident one (mixed soft labels make models under-confident).
    """
    low, high = np.log(0.05), np.log(20.0)
    ratio = (np.sqrt(5.0) - 1.0) / 2.0
    a, b = high - ratio * (high - low), low + ratio * (high - low)
    fa, fb = negative_log_likelihood(logits, labels, np.exp(a)), negative_log_likelihood(logits, labels, np.exp(b))
    for _ in range(60):
        if fa < fb:
            high, b, fb = b, a, fa
            a = high - ratio * (high - low)
            fa = negative_log_likelihood(logits, labels, np.exp(a))
        else:
            low, a, fa = a, b, fb
            b = low + ratio * (high - low)
            fb = negative_log_likelihood(logits, labels, np.exp(b))
    return float(np.exp((low + high) / 2.0))
