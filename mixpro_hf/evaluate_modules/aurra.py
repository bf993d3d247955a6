"""🤗 ``evaluate`` module: area under the response rate–accuracy curve, :func:`mixpro_hf.metrics.aurra`."""

import evaluate
import numpy as np

from mixpro_hf.evaluate_modules._common import LOGITS, LOGITS_DESCRIPTION, logits_array, metric_info
from mixpro_hf.metrics import aurra


class Aurra(evaluate.Metric):
    """AURRA (Hendrycks et al., 2021): the mean accuracy of the ``r`` most confident answers over every rate ``r``."""

    def _info(self) -> evaluate.MetricInfo:
        return metric_info(
            "Area under the response rate-accuracy curve (mixpro_hf.metrics.aurra).",
            LOGITS_DESCRIPTION + "Returns: aurra.",
            LOGITS,
        )

    def _compute(self, predictions: list, references: list) -> dict[str, float]:
        return {"aurra": aurra(logits_array(predictions), np.asarray(references))}
