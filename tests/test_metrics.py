"""Offline metrics: top-k, ECE and temperature scaling against direct computations."""

from __future__ import annotations

import numpy as np
import pytest

from mixpro_hf.metrics import (
    classification_metrics,
    expected_calibration_error,
    fit_temperature,
    negative_log_likelihood,
)


def test_fit_temperature_recovers_the_temperature_that_made_the_logits():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 4000)
    true_logits = rng.normal(size=(4000, 10)) + 4.0 * np.eye(10)[labels]
    # sample labels from the calibrated model so that T = 1 is optimal for true_logits
    probs = np.exp(true_logits) / np.exp(true_logits).sum(1, keepdims=True)
    labels = np.array([rng.choice(10, p=p) for p in probs])
    under_confident = true_logits / 3.0  # what mixed soft labels do: a model that needs T = 1/3
    temperature = fit_temperature(under_confident, labels)
    assert temperature == pytest.approx(1 / 3, rel=0.1)
    grid = np.exp(np.linspace(np.log(0.05), np.log(20), 400))
    best = grid[np.argmin([negative_log_likelihood(under_confident, labels, t) for t in grid])]
    assert temperature == pytest.approx(best, rel=0.03)
    before = expected_calibration_error(under_confident, labels)
    after = expected_calibration_error(under_confident / temperature, labels)
    assert after < before / 2


def test_classification_metrics_by_hand():
    logits = np.array([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [0.0, 1.0, 2.0], [5.0, 0.0, 0.0]])
    labels = np.array([0, 2, 2, 1])
    metrics = classification_metrics(logits, labels)
    assert metrics["accuracy"] == 0.5 and metrics["top5_accuracy"] == 1.0
    confidence = np.exp(logits).max(1) / np.exp(logits).sum(1)
    correct = logits.argmax(1) == labels
    bins = np.minimum((confidence * 15).astype(int), 14)
    expected = sum(abs(correct[bins == b].sum() - confidence[bins == b].sum()) for b in set(bins)) / 4
    assert metrics["ece"] == pytest.approx(expected)


# ---------------------------------------------------------------------------------------------------
# Table 5 metrics: RMS calibration error, AURRA, out-of-distribution detection


def _hendrycks_calib_err(confidence, correct, p="2", beta=100):
    """hendrycks/natural-adv-examples calibration_tools.calib_err, line for line (the reference)."""
    idxs = np.argsort(confidence)
    confidence, correct = confidence[idxs], correct[idxs]
    bins = [[i * beta, (i + 1) * beta] for i in range(len(confidence) // beta)]
    bins[-1] = [bins[-1][0], len(confidence)]
    cerr, total_examples = 0, len(confidence)
    for i in range(len(bins) - 1):
        bin_confidence, bin_correct = confidence[bins[i][0] : bins[i][1]], correct[bins[i][0] : bins[i][1]]
        if len(bin_confidence) > 0:
            difference = np.abs(np.nanmean(bin_confidence) - np.nanmean(bin_correct))
            cerr += len(bin_confidence) / total_examples * np.square(difference)
    return np.sqrt(cerr)


def _hendrycks_aurra(confidence, correct):
    conf_ranks = np.argsort(confidence)[::-1]
    rra_curve = np.cumsum(np.asarray(correct)[conf_ranks])
    return np.mean(rra_curve / np.arange(1, len(rra_curve) + 1))


def _random_predictions(n: int, k: int = 10, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    return rng.normal(size=(n, k)) * 2 + 2.0 * np.eye(k)[labels], labels


def test_rms_calibration_error_by_hand():
    # 4 examples, bins of 2: the less confident bin (confidence 0.5 and 0.5, one correct) counts, the last
    # bin does not (the reference's loop stops before it); N = 4 -> sqrt(2/4 * (0.5 - 0.5)^2) = 0
    logits = np.log(np.array([[0.5, 0.5], [0.5, 0.5], [0.9, 0.1], [0.9, 0.1]]))
    labels = np.array([0, 1, 1, 1])  # arg-max of a tie is class 0: one of the two is correct
    from mixpro_hf.metrics import rms_calibration_error

    assert rms_calibration_error(logits, labels, bin_size=2) == pytest.approx(0.0, abs=1e-12)
    labels = np.array([1, 1, 0, 0])  # the first bin: confidence 0.5, accuracy 0 -> sqrt(2/4 * 0.25)
    assert rms_calibration_error(logits, labels, bin_size=2) == pytest.approx(np.sqrt(0.125))


@pytest.mark.parametrize("n", [200, 257, 1000, 1234])
def test_rms_calibration_error_and_aurra_match_hendrycks_code(n):
    from mixpro_hf.metrics import aurra, max_softmax, rms_calibration_error

    logits, labels = _random_predictions(n, seed=n)
    confidence, prediction = max_softmax(logits)
    correct = prediction == labels
    assert rms_calibration_error(logits, labels) == pytest.approx(_hendrycks_calib_err(confidence, correct))
    assert aurra(logits, labels) == pytest.approx(_hendrycks_aurra(confidence, correct))


def test_rms_calibration_error_refuses_too_few_examples():
    from mixpro_hf.metrics import rms_calibration_error, robustness_metrics

    logits, labels = _random_predictions(199)
    with pytest.raises(ValueError, match="at least 200 examples, got 199"):
        rms_calibration_error(logits, labels)
    assert robustness_metrics(logits, labels)["rms_calibration_error"] is None


def test_aurra_by_hand():
    from mixpro_hf.metrics import aurra

    # confidences 0.9 (correct), 0.8 (wrong), 0.6 (correct): accuracies 1, 1/2, 2/3 -> mean 13/18
    logits = np.log(np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]]))
    assert aurra(logits, np.array([0, 0, 0])) == pytest.approx((1 + 1 / 2 + 2 / 3) / 3)


def test_robustness_metrics_nll_and_names():
    from mixpro_hf.metrics import robustness_metrics

    logits = np.log(np.array([[0.5, 0.25, 0.25], [0.1, 0.8, 0.1]]))
    metrics = robustness_metrics(logits, np.array([0, 2]))
    assert set(metrics) == {"accuracy", "top5_accuracy", "ece", "nll", "rms_calibration_error", "aurra"}
    assert metrics["nll"] == pytest.approx(-(np.log(0.5) + np.log(0.1)) / 2)
    assert metrics["accuracy"] == 0.5


def test_ood_metrics_by_hand():
    from mixpro_hf.metrics import ood_scores_metrics

    # anomaly scores: out 0.9, 0.4; in 0.6, 0.1 -> ranking out, in, out, in
    metrics = ood_scores_metrics(np.array([0.6, 0.1]), np.array([0.9, 0.4]))
    assert metrics["ood_auprc"] == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    assert metrics["ood_auroc"] == pytest.approx(0.75)  # 3 of the 4 (out, in) pairs ordered right
    assert metrics["ood_fpr95"] == pytest.approx(0.5)  # both out found once one in is flagged
    perfect = ood_scores_metrics(np.array([0.1, 0.2]), np.array([0.5, 0.6]))
    assert perfect == {"ood_auprc": 1.0, "ood_auroc": 1.0, "ood_fpr95": 0.0}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ood_metrics_match_sklearn_with_ties(seed):
    from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

    from mixpro_hf.metrics import max_softmax, ood_metrics

    rng = np.random.default_rng(seed)
    in_logits = rng.normal(size=(300, 5)) * 3
    out_logits = rng.normal(size=(120, 5))
    out_logits[:30] = in_logits[:30]  # exact ties between the two sets
    metrics = ood_metrics(in_logits, out_logits)
    scores = -np.concatenate([max_softmax(out_logits)[0], max_softmax(in_logits)[0]])
    is_ood = np.r_[np.ones(120), np.zeros(300)]
    assert metrics["ood_auprc"] == pytest.approx(average_precision_score(is_ood, scores))
    assert metrics["ood_auroc"] == pytest.approx(roc_auc_score(is_ood, scores))
    fpr, tpr, _ = roc_curve(is_ood, scores, drop_intermediate=False)
    assert metrics["ood_fpr95"] == pytest.approx(fpr[np.argmax(tpr >= 0.95)])
    with pytest.raises(ValueError, match="got 300 and 0"):
        ood_metrics(in_logits, out_logits[:0])
