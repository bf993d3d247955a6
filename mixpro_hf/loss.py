"""The training loss of a mixed batch: area labels, TransMix labels or PAL (eq. 7-9).

One function, :func:`mixed_loss`, serves the ``Trainer`` and the Accelerate loop alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .labels import (
    attention_lambda,
    check_labels,
    mixed_target,
    pal_lambda,
    progressive_factor,
    transmix_lambda,
)
from .mixing import MixOutput
from .recipe import MixProConfig, label_mode


@dataclass
class MixedLoss:
    """The loss and what it was made of: per-sample ``lam`` and the mean statistics to log
    (kept as detached tensors so that no step waits on the device; ``float()`` them when logging)."""

    loss: torch.Tensor
    lam: torch.Tensor
    mode: str
    stats: dict[str, torch.Tensor] = field(default_factory=dict)  # detached scalars


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of ``-Σ target · log_softmax(logits)`` (timm's SoftTargetCrossEntropy)."""
    return torch.sum(-target * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()


def hard_mixed_cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, partner: torch.Tensor, lam: torch.Tensor
) -> torch.Tensor:
    """The reference code's form: mean of ``λ·CE(y_i) + (1 − λ)·CE(y_partner)``, no smoothing."""
    logits = logits.float()
    own = F.cross_entropy(logits, labels, reduction="none")
    other = F.cross_entropy(logits, labels[partner], reduction="none")
    return (lam * own + (1.0 - lam) * other).mean()


def mixed_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    mix: MixOutput,
    config: MixProConfig,
    cls_attention: torch.Tensor | None = None,
    *,
    progress: float | None = None,
    learnable_alpha: torch.Tensor | None = None,
) -> MixedLoss:
    """Loss of a batch mixed by :func:`mixpro_hf.recipe.mix_batch`.

    * area label: ``λ = λ_area`` (eq. 7);
    * TransMix (CutMix batch of ``method="transmix"``): ``λ = (λ_area + λ_attn)/2``;
    * PAL (MaskMix batch of ``method="mixpro"``): ``λ_attn`` (eq. 5) from ``cls_attention``,
      ``α`` (eq. 8) against the smoothed area-mixed target, ``λ = α·λ_attn + (1 − α)·λ_area`` (eq. 9).

    The loss is the soft-target cross-entropy on ``mixed_target(λ)`` (``config.loss_form="soft"``),
    or, for attention-labelled batches with ``loss_form="hard"``, the reference code's
    ``λ·CE(y_i) + (1 − λ)·CE(y_j)``.
    """
    num_labels = logits.shape[-1]
    if labels.device.type == "cpu":  # on accelerators the collator has checked them (no per-step host sync)
        check_labels(labels, num_labels)
    mode = label_mode(config, mix.method)
    lam_area = mix.lam_area.to(device=logits.device, dtype=torch.float32)
    partner = mix.partner.to(logits.device)
    stats = {"lam_area": lam_area.mean()}
    lam = lam_area
    if mode in ("pal", "transmix"):
        if cls_attention is None:
            raise ValueError(f"{config.method} labels of a {mix.method} batch need the class-token attention")
        lam_attn = attention_lambda(cls_attention.to(logits.device), mix.patch_mask.to(logits.device))
        stats["lam_attn"] = lam_attn.mean()
        if mode == "pal":
            area_target = mixed_target(labels, partner, lam_area, num_labels, config.label_smoothing)
            alpha = progressive_factor(
                logits, area_target, config.alpha_strategy, progress=progress, learnable=learnable_alpha
            )
            if not config.alpha_grad:
                alpha = alpha.detach()
            stats["alpha"] = alpha.detach().mean()
            lam = pal_lambda(lam_area, lam_attn, alpha)
        else:
            lam = transmix_lambda(lam_area, lam_attn, config.transmix_label)
    stats["lam"] = lam.detach().mean()
    if mode != "area" and config.loss_form == "hard":
        loss = hard_mixed_cross_entropy(logits, labels, partner, lam)
    else:
        target = mixed_target(labels, partner, lam, num_labels, config.label_smoothing)
        loss = soft_cross_entropy(logits, target)
    return MixedLoss(loss=loss, lam=lam, mode=mode, stats=stats)
