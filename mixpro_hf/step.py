"""One training forward of a mixed batch, shared by ``MixProTrainer`` and the Accelerate loop."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .attention import capture_cls_attention
from .loss import MixedLoss, mixed_loss
from .mixing import MixOutput
from .recipe import MixProConfig, label_mode


def forward_mixed(
    model: nn.Module,
    inputs: dict[str, Any],
    labels: torch.Tensor,
    mix: MixOutput,
    config: MixProConfig,
    *,
    progress: float | None = None,
    learnable_alpha: torch.Tensor | None = None,
) -> tuple[MixedLoss, Any]:
    """Run ``model(**inputs)`` on the mixed batch and compute its MixPro loss.

    The class-token attention is captured (:func:`capture_cls_attention`) only for the batches whose
    label needs it (PAL, TransMix); other batches run the plain forward.
    """
    if label_mode(config, mix.method) == "area":
        outputs, attention = model(**inputs), None
    else:
        with capture_cls_attention(model) as capture:
            outputs = model(**inputs)
        attention = capture.attention
    logits = outputs.logits if hasattr(outputs, "logits") else outputs[0]
    result = mixed_loss(
        logits, labels, mix, config, attention, progress=progress, learnable_alpha=learnable_alpha
    )
    return result, outputs
