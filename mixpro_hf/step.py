"""One training forward of a mixed batch, shared by ``MixProTrainer`` and the Accelerate loop."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .attention import capture_cls_attention, supports_cls_attention
from .loss import MixedLoss, mixed_loss
from .mixing import MixOutput, check_mask_grid
from .modeling import unwrap_model
from .recipe import MASKMIX_METHODS, MixProConfig, label_mode


def check_model_for_mixing(model: nn.Module, config: MixProConfig, patch_size: int, image_size: int | None) -> None:
    """Refuse, before training, a model the recipe cannot train: an image size the patch size does not
    divide, a ``mask_scale`` leaving a single MaskMix cell, or attention labels without a class token."""
    if image_size is not None:
        if image_size % patch_size:
            raise ValueError(f"image size {image_size} is not divisible by the patch size {patch_size}")
        if config.mix_method in MASKMIX_METHODS and config.maskmix_prob > 0:
            check_mask_grid((image_size // patch_size,) * 2, config.mask_scale)
    if config.uses_attention and getattr(getattr(unwrap_model(model), "config", None), "use_mean_pooling", False):
        raise ValueError(
            f"mix_method={config.mix_method!r} labels batches with the class token's attention, but this model "
            "classifies from the mean of the patch tokens (config.use_mean_pooling=True), so the class token does "
            'not feed the classifier: set use_mean_pooling=False (--config_overrides "use_mean_pooling=False") or '
            "use an area-label method"
        )
    if config.uses_attention and not supports_cls_attention(model):
        model_type = getattr(getattr(unwrap_model(model), "config", None), "model_type", type(model).__name__)
        raise ValueError(
            f"mix_method={config.mix_method!r} labels batches with the class token's attention, but model type "
            f"{model_type!r} has no class token: use an area-label method (maskmix, mixup, cutmix, mixup_cutmix)"
        )


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
    result = mixed_loss(logits, labels, mix, config, attention, progress=progress, learnable_alpha=learnable_alpha)
    return result, outputs
