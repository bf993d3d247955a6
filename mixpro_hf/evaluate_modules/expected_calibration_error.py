"""🤗 ``evaluate`` module: expected calibration error, :func:`mixpro_hf.metrics.expected_calibration_error`."""

import evaluate
import numpy as np

from mixpro_hf.evaluate_modules._common import LOGITS, LOGITS_DESCRIPTION, logits_array, metric_info
from mixpro_hf.metrics import expected_calibration_error


class ExpectedCalibrationError(evaluate.Metric):
    """ECE (Guo et al., 2017) over ``num_bins`` equal-width confidence bins (15 by default)."""

    def _info(self) -> evaluate.MetricInfo:
        return metric_info(
            "Expected calibration error (mixpro_hf.metrics.expected_calibration_error).",
            LOGITS_DESCRIPTION + "    num_bins: equal-width bins (15).\nReturns: ece.",
            LOGITS,
        )

    def _compute(self, predictions: list, references: list, num_bins: int = 15) -> dict[str, float]:
        logits, labels = logits_array(predictions), np.asarray(references)
        return {"ece": expected_calibration_error(logits, labels, num_bins)}
