"""What the shipped 🤗 ``evaluate`` modules share: their input features and the paper they cite."""

from __future__ import annotations

import datasets
import evaluate
import numpy as np

CITATION = """\
@inproceedings{hendrycks2021nae,
  title={Natural Adversarial Examples},
  author={Hendrycks, Dan and Zhao, Kevin and Basart, Steven and Steinhardt, Jacob and Song, Dawn},
  booktitle={CVPR},
  year={2021}
}
@inproceedings{guo2017calibration,
  title={On Calibration of Modern Neural Networks},
  author={Guo, Chuan and Pleiss, Geoff and Sun, Yu and Weinberger, Kilian Q.},
  booktitle={ICML},
  year={2017}
}
"""

#: one row of logits per example, and its class id
LOGITS = datasets.Features(
    {"predictions": datasets.Sequence(datasets.Value("float64")), "references": datasets.Value("int64")}
)
#: one predicted class id per example (what ``evaluate.evaluator("image-classification")`` passes)
CLASS_IDS = datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")})
#: one anomaly score per example (higher = more anomalous)
SCORES = datasets.Features({"predictions": datasets.Value("float64"), "references": datasets.Value("int64")})

LOGITS_DESCRIPTION = """
Args:
    predictions: the logits of each example, shape (N, K).
    references: the class id of each example, shape (N,).
"""


def logits_array(predictions: list) -> np.ndarray:
    """The rows of logits as one (N, K) array; a ragged list is a one-line error."""
    try:
        return np.asarray(predictions, dtype=np.float64)
    except ValueError as err:
        raise ValueError(f"predictions must be logits of one length per example (N, K): {err}") from err


def metric_info(description: str, inputs_description: str, features: datasets.Features | list) -> evaluate.MetricInfo:
    """The ``MetricInfo`` of a shipped module (this package's citation)."""
    return evaluate.MetricInfo(
        description=description, citation=CITATION, inputs_description=inputs_description, features=features
    )
