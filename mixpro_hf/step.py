"""One training forward of a mixed batch, shared by ``MixProTrainer`` and the Accelerate loop."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .attention import capture_cls_attention, cls_attention_problem
from .loss import MixedLoss, mixed_loss
from .mixing import MixOutput, check_mask_grid
from .modeling import token_geometry, unwrap_model
from .recipe import MASKMIX_METHODS, MixProConfig, label_mode


def check_model_for_mixing(model: nn.Module, config: MixProConfig, patch_size: int, image_size: int | None) -> None:
    """Refuse, before training, a model the recipe cannot train, with a one-line error naming the real cause.

    The geometry check of every training entry point: an image size the mixing cell (``patch_size``) does not
    divide, a ``mask_scale`` leaving a single MaskMix cell, and for attention labels (PAL, TransMix) a class token
    that does not feed the classifier, a class-token attention that cannot be read (no class token, no readable
    query/key projections, keys spatially reduced), or a mixing grid other than the token grid the class token
    attends to (:func:`~mixpro_hf.modeling.token_geometry`).
    """
    if image_size is not None:
        if image_size % patch_size:
            raise ValueError(
                f"image size {image_size} is not divisible by the patch size {patch_size} (the pixel side of one "
                "token, or --mix_patch_size)"
            )
        if config.mix_method in MASKMIX_METHODS and config.maskmix_prob > 0:
            check_mask_grid((image_size // patch_size,) * 2, config.mask_scale)
    if not config.uses_attention:
        return
    inner = unwrap_model(model)
    method = f"mix_method={config.mix_method!r} labels batches with the class token's attention"
    if getattr(getattr(inner, "config", None), "use_mean_pooling", False):
        raise ValueError(
            f"{method}, but this model classifies from the mean of the patch tokens (config.use_mean_pooling=True), "
            "so the class token does not feed the classifier: set use_mean_pooling=False (--config_overrides "
            '"use_mean_pooling=False") or use an area-label method'
        )
    pool = getattr(getattr(inner, "timm_model", None), "global_pool", "token")
    if isinstance(pool, str) and pool not in ("token", ""):
        raise ValueError(
            f"{method}, but this timm model pools its tokens with global_pool={pool!r}, so the class token does not "
            "feed the classifier: build it with TimmWrapperConfig(model_args={'global_pool': 'token'}) or use an "
            "area-label method"
        )
    problem = cls_attention_problem(model)
    if problem is not None:
        advice = "" if "Area-only" in problem else ": use an area-label method (maskmix, mixup, cutmix, mixup_cutmix)"
        raise ValueError(f"{method}, but {problem.rstrip('.')}{advice}")
    try:
        geometry = token_geometry(model)
    except ValueError:
        return  # token size unknown: the user's --mix_patch_size is the grid (checked again at the first batch)
    if patch_size != geometry.token_size:
        raise ValueError(
            f"{method}, which covers a grid of {geometry.token_size}-pixel tokens ({geometry.source}), but the "
            f"mixing grid cell is {patch_size} pixels: leave --mix_patch_size unset (or set it to "
            f"{geometry.token_size})"
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
