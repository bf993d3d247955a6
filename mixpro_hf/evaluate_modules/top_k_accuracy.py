"""🤗 ``evaluate`` module: top-k accuracy, :func:`mixpro_hf.metrics.top_k_accuracy`."""

import evaluate
import numpy as np

from mixpro_hf.evaluate_modules._common import CLASS_IDS, LOGITS, logits_array, metric_info
from mixpro_hf.metrics import top_k_accuracy


class TopKAccuracy(evaluate.Metric):
    """Fraction of examples whose label is among the ``k`` highest logits; from predicted class ids (what
    ``evaluate.evaluator("image-classification")`` passes) only ``k=1``."""

    def _info(self) -> evaluate.MetricInfo:
        return metric_info(
            "Top-k accuracy (mixpro_hf.metrics.top_k_accuracy).",
            "predictions: logits (N, K) or class ids (N,); references: class ids (N,); "
            "k: 1 (default) or more, logits only. Returns accuracy (k=1) or top{k}_accuracy.",
            [LOGITS, CLASS_IDS],
        )

    def _compute(self, predictions: list, references: list, k: int = 1) -> dict[str, float]:
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        labels = np.asarray(references)
        if np.ndim(predictions[0]) == 0:  # class ids: the arg-max of one-hot logits
            if k != 1:
                raise ValueError(f"top-{k} accuracy needs logits, got predicted class ids (only k=1 works with them)")
            ids = np.asarray(predictions, dtype=np.int64)
            logits = np.zeros((len(ids), int(max(ids.max(), labels.max())) + 1))
            logits[np.arange(len(ids)), ids] = 1.0
        else:
            logits = logits_array(predictions)
        return {"accuracy" if k == 1 else f"top{k}_accuracy": top_k_accuracy(logits, labels, k)}
