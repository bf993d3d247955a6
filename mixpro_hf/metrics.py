"""Offline classification metrics: top-1, top-5, NLL, calibration, AURRA, out-of-distribution detection.

Papers:
    - ECE and temperature scaling: Guo et al., "On Calibration of Modern Neural Networks", ICML 2017.
      https://arxiv.org/abs/1706.04599
    - RMS calibration error (adaptive bins), AURRA, ImageNet-O AUPRC: Hendrycks et al., "Natural Adversarial
      Examples", CVPR 2021 (https://arxiv.org/abs/1907.07174), the metrics of MixPro's Table 5; their code
      (``calibration_tools.py`` of hendrycks/natural-adv-examples) is followed to the bin.

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


def max_softmax(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(confidence, prediction)``: the maximum softmax probability and the arg-max class of each row."""
    probs = _softmax(np.asarray(logits, dtype=np.float64))
    return probs.max(axis=1), probs.argmax(axis=1)


def rms_calibration_error(logits: np.ndarray, labels: np.ndarray, bin_size: int = 100) -> float:
    """Hendrycks et al.'s RMS calibration error with adaptive bins (``calib_err(confidence, correct, p='2')``).

    The examples, sorted by confidence, are cut into bins of ``bin_size`` (the remainder joins the last bin);
    the error is ``sqrt(Σ_b |B_b|/N · (mean confidence(B_b) − accuracy(B_b))²)``. As in their code (which
    produced the numbers of MixPro's Table 5) the last bin, the most confident examples, is left out of the
    sum (``for i in range(len(bins) - 1)``), while ``N`` counts every example. That needs at least two bins.

    Raises:
        ValueError: fewer than ``2 * bin_size`` examples (the reference code returns 0 or fails there).
    """
    logits, labels = _check(logits, labels)
    if len(labels) < 2 * bin_size:
        raise ValueError(
            f"the RMS calibration error with bins of {bin_size} needs at least {2 * bin_size} examples, got "
            f"{len(labels)}"
        )
    confidence, prediction = max_softmax(logits)
    order = np.argsort(confidence)
    confidence, correct = confidence[order], (prediction == labels)[order].astype(np.float64)
    num_bins = len(labels) // bin_size
    used = (num_bins - 1) * bin_size  # every bin but the last has exactly bin_size examples
    gap = confidence[:used].reshape(-1, bin_size).mean(1) - correct[:used].reshape(-1, bin_size).mean(1)
    return float(np.sqrt((bin_size / len(labels) * gap**2).sum()))


def aurra(logits: np.ndarray, labels: np.ndarray) -> float:
    """Area under the response rate–accuracy curve (Hendrycks et al.): answer only the ``r`` most confident
    examples, for every response rate ``r = 1/N, ..., 1``; the mean accuracy of those answers."""
    logits, labels = _check(logits, labels)
    confidence, prediction = max_softmax(logits)
    order = np.argsort(confidence)[::-1]  # most confident first, ties as in the reference
    correct = (prediction == labels)[order]
    return float((np.cumsum(correct) / np.arange(1, len(correct) + 1)).mean())


def _ood_labels_and_scores(in_scores: np.ndarray, out_scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(is_out, scores)`` of the out- then in-distribution examples (out-of-distribution = positive class)."""
    in_scores, out_scores = np.asarray(in_scores, np.float64).ravel(), np.asarray(out_scores, np.float64).ravel()
    if not len(in_scores) or not len(out_scores):
        raise ValueError(
            f"out-of-distribution metrics need in- and out-of-distribution examples, got {len(in_scores)} and "
            f"{len(out_scores)}"
        )
    is_out = np.concatenate([np.ones(len(out_scores), dtype=np.int64), np.zeros(len(in_scores), dtype=np.int64)])
    return is_out, np.concatenate([out_scores, in_scores])


def ood_metrics(in_logits: np.ndarray, out_logits: np.ndarray, recall: float = 0.95) -> dict[str, float]:
    """Out-of-distribution detection with the anomaly score ``−max softmax probability`` (Hendrycks & Gimpel,
    ICLR 2017; ImageNet-O in Hendrycks et al., 2021), out-of-distribution examples as the positive class:

    * ``ood_auprc``: average precision ``Σ_n (R_n − R_{n−1}) P_n`` over the distinct thresholds
      (``sklearn.metrics.average_precision_score``);
    * ``ood_auroc``: area under the ROC curve, ties counted half (``roc_auc_score``);
    * ``ood_fpr95``: the false-positive rate at the first threshold whose true-positive rate reaches ``recall``.
    """
    in_scores = -max_softmax(np.asarray(in_logits, dtype=np.float64))[0]
    out_scores = -max_softmax(np.asarray(out_logits, dtype=np.float64))[0]
    return ood_scores_metrics(in_scores, out_scores, recall)


def ood_scores_metrics(in_scores: np.ndarray, out_scores: np.ndarray, recall: float = 0.95) -> dict[str, float]:
    """:func:`ood_metrics` from anomaly scores (higher = more anomalous) instead of logits (scikit-learn's
    ``average_precision_score``, ``roc_auc_score`` and ``roc_curve``)."""
    from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

    is_out, scores = _ood_labels_and_scores(in_scores, out_scores)
    fpr, tpr, _ = roc_curve(is_out, scores, drop_intermediate=False)  # every distinct threshold, highest first
    return {
        "ood_auprc": float(average_precision_score(is_out, scores)),
        "ood_auroc": float(roc_auc_score(is_out, scores)),
        "ood_fpr95": float(fpr[np.searchsorted(tpr, recall - 1e-12)]),
    }


def robustness_metrics(logits: np.ndarray, labels: np.ndarray) -> dict[str, float | None]:
    """The clean-data numbers of MixPro's Table 5 and more: ``accuracy`` (top-1), ``top5_accuracy``, ``nll``,
    ``ece`` (15 equal-width bins), ``rms_calibration_error`` (bins of 100; ``None`` below 200 examples) and
    ``aurra``."""
    try:
        rms = rms_calibration_error(logits, labels)
    except ValueError:
        rms = None
    return {
        **classification_metrics(logits, labels),
        "nll": negative_log_likelihood(logits, labels),
        "rms_calibration_error": rms,
        "aurra": aurra(logits, labels),
    }


def classification_metrics(logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """``accuracy`` (top-1), ``top5_accuracy`` and ``ece``."""
    return {
        "accuracy": top_k_accuracy(logits, labels, 1),
        "top5_accuracy": top_k_accuracy(logits, labels, 5),
        "ece": expected_calibration_error(logits, labels),
    }


def evaluation_metrics(
    logits: np.ndarray, labels: np.ndarray, label_names: list[str] | None = None
) -> dict[str, float]:
    """The evaluation metrics of a split: :func:`classification_metrics` for class ids ``(N,)``,
    :func:`~mixpro_hf.multi_label_metrics.multi_label_metrics` (mAP, F1) for multi-hot targets ``(N, C)``."""
    if np.ndim(labels) == 2:
        from .multi_label_metrics import multi_label_metrics

        return multi_label_metrics(logits, labels, label_names)
    return classification_metrics(logits, labels)


def compute_metrics(eval_prediction: Any, label_names: list[str] | None = None) -> dict[str, float]:
    """``Trainer`` hook: metrics of an ``EvalPrediction`` (``predictions``, ``label_ids``), see
    :func:`evaluation_metrics` (bind ``label_names`` with ``functools.partial`` for per-class AP)."""
    logits = eval_prediction.predictions
    if isinstance(logits, tuple):
        logits = logits[0]
    return evaluation_metrics(logits, eval_prediction.label_ids, label_names)


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
