"""🤗 ``evaluate`` module: area under the response rate–accuracy curve, :func:`mixpro_hf.metrics.aurra`."""

import evaluate
import numpy as np

from mixpro_hf.evaluate_modules._common import CITATION, LOGITS, LOGITS_DESCRIPTION, logits_array
from mixpro_hf.metrics import aurra


class Aurra(evaluate.Metric):
    """AURRA (Hendrycks et al., 2021): the mean accuracy of the ``r`` most confident answers over every rate ``r``."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description="Area under the response rate-accuracy curve (mixpro_hf.metrics.aurra).",
            citation=CITATION,
            inputs_description=LOGITS_DESCRIPTION + "Returns: aurra.",
            features=LOGITS,
        )

    def _compute(self, predictions: list, references: list) -> dict[str, float]:
        return {"aurra": aurra(logits_array(predictions), np.asarray(references))}
