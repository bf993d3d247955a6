"""🤗 ``evaluate`` module: out-of-distribution detection, :func:`mixpro_hf.metrics.ood_metrics` (from logits) or
:func:`mixpro_hf.metrics.ood_scores_metrics` (from anomaly scores)."""

import evaluate
import numpy as np

from mixpro_hf.evaluate_modules._common import LOGITS, SCORES, logits_array, metric_info
from mixpro_hf.metrics import ood_metrics, ood_scores_metrics


class OodDetection(evaluate.Metric):
    """AUPRC, AUROC and the false-positive rate at 95 % recall, out-of-distribution examples (reference 1) as the
    positive class; from logits the anomaly score is minus the maximum softmax probability."""

    def _info(self) -> evaluate.MetricInfo:
        return metric_info(
            "Out-of-distribution detection (mixpro_hf.metrics.ood_metrics).",
            "predictions: logits (N, K) or anomaly scores (N,), higher = more anomalous; "
            "references: 1 out-of-distribution, 0 in-distribution; recall: 0.95. "
            "Returns ood_auprc, ood_auroc, ood_fpr95.",
            [LOGITS, SCORES],
        )

    def _compute(self, predictions: list, references: list, recall: float = 0.95) -> dict[str, float]:
        out = np.asarray(references)
        if not np.isin(out, (0, 1)).all():
            raise ValueError(f"references must be 1 (out-of-distribution) or 0 (in-distribution), got {set(out)}")
        out = out.astype(bool)
        if np.ndim(predictions[0]) == 0:
            scores = np.asarray(predictions, dtype=np.float64)
            return ood_scores_metrics(scores[~out], scores[out], recall)
        logits = logits_array(predictions)
        return ood_metrics(logits[~out], logits[out], recall)
