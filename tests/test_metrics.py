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
