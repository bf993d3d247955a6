"""Semantic-segmentation evaluation: a confusion matrix accumulated over the evaluation set, the metrics of 🤗
``evaluate``'s ``mean_iou`` read from it, and single- or multi-scale + flip inference (Segmenter's "+MS").

Metrics (:func:`iou_metrics`), with the semantics of huggingface/evaluate ``metrics/mean_iou``: pixels labelled
``ignore_index`` (255) are left out; per class, IoU = intersection / union and accuracy = intersection / labelled
pixels, ``nan`` when the denominator is 0; ``mean_iou`` and ``mean_accuracy`` are ``nanmean`` over the classes (a
class absent from both the labels and the predictions counts in neither); ``overall_accuracy`` = correct / labelled.
MixPro's Table 3 reports mIoU over every class, background included (Pascal Context's 60).

Inference (:func:`predict_probabilities`): each view resizes the image (bilinear) so that its shorter side is
``base_size x scale`` (each side rounded to a multiple of ``size_divisor``), the logits are resized (bilinear) to the
label's size and turned into probabilities; with ``flip`` each scale is also read on the mirrored image (its logits
mirrored back). The probabilities are averaged over the views, as Segmenter's multi-scale mode
(rstrudel/segmenter ``segm/model/utils.py``: scales 0.5-1.75 with flip, softmax averaged). Differences from Segmenter:
the whole resized image is read at once (no sliding window of the crop size).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

IGNORE_INDEX = 255
#: Segmenter's multi-scale ratios (rstrudel/segmenter ``segm/data/...``: ``img_ratios``), with flip.
SEGMENTER_MS_SCALES = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)

__all__ = [
    "IGNORE_INDEX", "SEGMENTER_MS_SCALES", "confusion_matrix", "evaluate_segmentation", "iou_metrics",
    "parse_scales", "predict_probabilities",
]  # fmt: skip


def parse_scales(text: str) -> tuple[float, ...]:
    """``--eval_scales "0.5,0.75,1.0"`` as a tuple of positive, finite, distinct floats; a one-line ``ValueError``
    names a bad value."""
    values = []
    for item in str(text).split(","):
        try:
            value = float(item.strip())
        except ValueError:
            raise ValueError(f"--eval_scales: {item.strip()!r} is not a number (expected e.g. 0.5,0.75,1.0)") from None
        if not math.isfinite(value) or value <= 0 or value > 8:
            raise ValueError(f"--eval_scales: {item.strip()!r} is not a scale in (0, 8]")
        values.append(value)
    if len(set(values)) != len(values):
        raise ValueError(f"--eval_scales {text!r} repeats a scale")
    return tuple(values)


def confusion_matrix(
    predictions: torch.Tensor, labels: torch.Tensor, num_labels: int, ignore_index: int = IGNORE_INDEX
) -> torch.Tensor:
    """``(num_labels, num_labels)`` counts, ``[true class, predicted class]``, of the pixels whose label is not
    ``ignore_index`` (int64, on the inputs' device)."""
    labels = labels.reshape(-1).long()
    predictions = predictions.reshape(-1).long()
    keep = labels != ignore_index
    labels, predictions = labels[keep], predictions[keep]
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_labels):
        raise ValueError(f"label ids must be in [0, {num_labels}) or {ignore_index}, got {int(labels.max())}")
    counts = torch.bincount(labels * num_labels + predictions, minlength=num_labels * num_labels)
    return counts.reshape(num_labels, num_labels)


def iou_metrics(confusion: torch.Tensor | np.ndarray, label_names: Sequence[str] | None = None) -> dict[str, float]:
    """``mean_iou``, ``mean_accuracy``, ``overall_accuracy`` and ``iou_<class name>`` (``nan`` for a class with
    no labelled and no predicted pixel) of a confusion matrix (rows: true class, columns: predicted class)."""
    counts = np.asarray(confusion.cpu() if isinstance(confusion, torch.Tensor) else confusion, dtype=np.float64)
    intersection = np.diag(counts)
    labelled, predicted = counts.sum(axis=1), counts.sum(axis=0)
    union = labelled + predicted - intersection
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, intersection / union, np.nan)
        accuracy = np.where(labelled > 0, intersection / labelled, np.nan)
    metrics = {
        "mean_iou": float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan"),
        "mean_accuracy": float(np.nanmean(accuracy)) if np.isfinite(accuracy).any() else float("nan"),
        "overall_accuracy": float(intersection.sum() / labelled.sum()) if labelled.sum() else float("nan"),
    }
    names = list(label_names) if label_names is not None else [str(i) for i in range(len(iou))]
    metrics.update({f"iou_{name}": float(value) for name, value in zip(names, iou, strict=True)})
    return metrics


def _view_size(height: int, width: int, short_side: float, size_divisor: int) -> tuple[int, int]:
    factor = short_side / min(height, width)
    return tuple(max(size_divisor, round(side * factor / size_divisor) * size_divisor) for side in (height, width))


@torch.no_grad()
def predict_probabilities(
    model: nn.Module,
    pixel_values: torch.Tensor,
    label_size: tuple[int, int],
    *,
    base_size: int,
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    size_divisor: int = 1,
) -> torch.Tensor:
    """``(B, num_labels, *label_size)`` class probabilities of normalised images ``pixel_values`` (B, 3, H, W),
    averaged over the views (each scale, and its mirror image with ``flip``); see the module docstring."""
    height, width = pixel_values.shape[-2:]
    total: torch.Tensor | None = None
    views = 0
    for scale in scales:
        size = _view_size(height, width, base_size * scale, size_divisor)
        resized = F.interpolate(pixel_values, size=size, mode="bilinear", align_corners=False)
        for mirrored in (False, True) if flip else (False,):
            inputs = resized.flip(-1) if mirrored else resized
            logits = model(pixel_values=inputs).logits.float()
            logits = logits.flip(-1) if mirrored else logits
            logits = F.interpolate(logits, size=label_size, mode="bilinear", align_corners=False)
            probabilities = logits.softmax(dim=1)
            total = probabilities if total is None else total + probabilities
            views += 1
    assert total is not None
    return total / views


def _same_size_batches(dataset: Any, batch_size: int) -> Iterable[list[dict[str, Any]]]:
    """Consecutive examples of one image size, up to ``batch_size`` at a time (sizes may vary over the set)."""
    batch: list[dict[str, Any]] = []
    for index in range(len(dataset)):
        example = dataset[index]
        if batch and (
            len(batch) == batch_size or tuple(example["pixel_values"].shape) != tuple(batch[0]["pixel_values"].shape)
        ):
            yield batch
            batch = []
        batch.append(example)
    if batch:
        yield batch


def evaluate_segmentation(
    model: nn.Module,
    dataset: Any,
    num_labels: int,
    *,
    base_size: int,
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    size_divisor: int = 1,
    batch_size: int = 8,
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """The confusion matrix of ``model`` over ``dataset`` (examples: normalised ``pixel_values`` (3, H, W) and
    ``labels`` (H, W) at the image's own size), predicted by :func:`predict_probabilities`."""
    parameter = next(model.parameters())
    confusion = torch.zeros(num_labels, num_labels, dtype=torch.long, device=parameter.device)
    was_training = model.training
    model.eval()
    try:
        for batch in _same_size_batches(dataset, batch_size):
            pixel_values = torch.stack([torch.as_tensor(e["pixel_values"]) for e in batch])
            labels = torch.stack([torch.as_tensor(e["labels"]) for e in batch]).to(parameter.device)
            pixel_values = pixel_values.to(device=parameter.device, dtype=parameter.dtype)
            probabilities = predict_probabilities(
                model,
                pixel_values,
                tuple(labels.shape[-2:]),
                base_size=base_size,
                scales=scales,
                flip=flip,
                size_divisor=size_divisor,
            )
            confusion += confusion_matrix(probabilities.argmax(dim=1), labels, num_labels, ignore_index)
    finally:
        model.train(was_training)
    return confusion
