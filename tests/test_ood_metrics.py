"""The out-of-distribution metrics now come from scikit-learn (``average_precision_score``, ``roc_auc_score``,
``roc_curve``): the same values as the hand-written NumPy code they replaced (kept here as the reference), with ties,
on scores and on logits."""

from __future__ import annotations

import numpy as np
import pytest

from mixpro_hf.metrics import max_softmax, ood_metrics, ood_scores_metrics


def previous_ood_scores_metrics(in_scores: np.ndarray, out_scores: np.ndarray, recall: float = 0.95) -> dict:
    """mixpro_hf.metrics.ood_scores_metrics before scikit-learn (commit f95c56f), verbatim in substance."""
    scores = np.concatenate([out_scores, in_scores]).astype(np.float64)
    positive = np.concatenate([np.ones(len(out_scores)), np.zeros(len(in_scores))])
    order = np.argsort(-scores, kind="stable")
    scores, positive = scores[order], positive[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(scores)), len(scores) - 1]
    true_pos = np.cumsum(positive)[last_of_tie]
    false_pos = last_of_tie + 1 - true_pos
    tpr, fpr = true_pos / len(out_scores), false_pos / len(in_scores)
    precision = true_pos / (true_pos + false_pos)
    auprc = float((np.diff(np.r_[0.0, tpr]) * precision).sum())
    tpr_from_0, fpr_from_0 = np.r_[0.0, tpr], np.r_[0.0, fpr]
    auroc = float((np.diff(fpr_from_0) * (tpr_from_0[1:] + tpr_from_0[:-1]) / 2).sum())
    fpr95 = float(fpr[np.searchsorted(tpr, recall - 1e-12)])
    return {"ood_auprc": auprc, "ood_auroc": auroc, "ood_fpr95": fpr95}


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("recall", [0.95, 0.5])
def test_scikit_learn_gives_the_previous_values_with_ties(seed, recall):
    rng = np.random.default_rng(seed)
    in_scores = rng.integers(0, 12, 300) / 12.0  # few distinct values: many ties, also across the two sets
    out_scores = rng.integers(3, 15, 90) / 12.0
    now, before = (
        ood_scores_metrics(in_scores, out_scores, recall),
        previous_ood_scores_metrics(in_scores, out_scores, recall),
    )
    assert now.keys() == before.keys()
    for key in now:
        assert now[key] == pytest.approx(before[key], rel=1e-12, abs=1e-12), key


def test_scikit_learn_gives_the_previous_values_on_logits():
    rng = np.random.default_rng(3)
    in_logits, out_logits = 3.0 * rng.normal(size=(200, 10)), rng.normal(size=(70, 10))
    before = previous_ood_scores_metrics(-max_softmax(in_logits)[0], -max_softmax(out_logits)[0])
    assert ood_metrics(in_logits, out_logits) == pytest.approx(before, rel=1e-12, abs=1e-12)
    assert before["ood_auroc"] > 0.6  # a case where the three numbers mean something


def test_one_empty_side_is_a_one_line_error():
    with pytest.raises(ValueError, match="need in- and out-of-distribution examples, got 3 and 0"):
        ood_scores_metrics(np.array([0.1, 0.2, 0.3]), np.array([]))
