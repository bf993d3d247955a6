"""🤗 ``evaluate`` module: Hendrycks et al.'s RMS calibration error, :func:`mixpro_hf.metrics.rms_calibration_error`."""

import evaluate
import numpy as np

from mixpro_hf.evaluate_modules._common import LOGITS, LOGITS_DESCRIPTION, logits_array, metric_info
from mixpro_hf.metrics import rms_calibration_error


class RmsCalibrationError(evaluate.Metric):
    """RMS calibration error with adaptive bins of ``bin_size`` examples (100; needs at least two bins)."""

    def _info(self) -> evaluate.MetricInfo:
        return metric_info(
            "RMS calibration error, adaptive bins (mixpro_hf.metrics.rms_calibration_error).",
            LOGITS_DESCRIPTION
            + "    bin_size: examples per bin (100; at least 2 * bin_size examples).\nReturns: rms_calibration_error.",
            LOGITS,
        )

    def _compute(self, predictions: list, references: list, bin_size: int = 100) -> dict[str, float]:
        logits, labels = logits_array(predictions), np.asarray(references)
        return {"rms_calibration_error": rms_calibration_error(logits, labels, bin_size)}
