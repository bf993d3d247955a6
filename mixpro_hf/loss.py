"""The training loss of a mixed batch: area labels, TransMix labels or PAL (eq. 7-9).

Papers:
    - MixPro: Zhao et al., ICLR 2023 (eq. 7-9, Table 10). https://openreview.net/forum?id=dRjWsd3gwsm
    - TransMix: Chen et al., CVPR 2022. https://arxiv.org/abs/2111.09833

One contract for every training loop (the ``Trainer``, the Accelerate loop, the benchmarks):
:func:`mixed_loss` computes the loss, :func:`learnable_alpha_parameter` builds the one trained scalar of
``alpha_strategy="learnable"``, and :func:`mean_mix_stats` averages the logged ``mixpro/*`` statistics.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

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
    * TransMix (CutMix batch of ``mix_method="transmix"``): ``λ = (λ_area + λ_attn)/2``;
    * PAL (MaskMix batch of ``mix_method="mixpro"``): ``λ_attn`` (eq. 5) from ``cls_attention``,
      ``α`` (eq. 8) against the smoothed area-mixed target, ``λ = α·λ_attn + (1 − α)·λ_area`` (eq. 9).

    PAL batches use the reference code's ``λ·CE(y_i) + (1 − λ)·CE(y_j)`` on unsmoothed labels
    (``config.loss_form="hard"``, the default) or the soft form; every other batch (area labels, TransMix)
    uses the soft-target cross-entropy on the smoothed ``mixed_target(λ)``, as timm and TransMix's code do.
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
            raise ValueError(f"{config.mix_method} labels of a {mix.method} batch need the class-token attention")
        lam_attn = attention_lambda(cls_attention.to(logits.device), mix.patch_mask.to(logits.device))
        stats["lam_attn"] = lam_attn.mean()
        if mode == "pal":
            area_target = mixed_target(labels, partner, lam_area, num_labels, config.label_smoothing_factor)
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
    if mode == "pal" and config.loss_form == "hard":
        loss = hard_mixed_cross_entropy(logits, labels, partner, lam)
    else:
        target = mixed_target(labels, partner, lam, num_labels, config.label_smoothing_factor)
        loss = soft_cross_entropy(logits, target)
    return MixedLoss(loss=loss, lam=lam, mode=mode, stats=stats)


def learnable_alpha_parameter(config: MixProConfig, device: torch.device | str | None = None) -> nn.Parameter | None:
    """The trained scalar θ of ``alpha_strategy="learnable"`` (paper Table 10; α = sigmoid(θ), starting at
    0.5), or ``None`` for every other strategy. Give it to the optimizer without weight decay and pass it to
    :func:`mixed_loss` as ``learnable_alpha``."""
    if config.alpha_strategy != "learnable":
        return None
    return nn.Parameter(torch.zeros((), device=device))


def mean_mix_stats(
    batch_stats: Iterable[Mapping[str, torch.Tensor | float]], learnable_alpha: torch.Tensor | None = None
) -> dict[str, float]:
    """The ``mixpro/*`` log entries of a logging interval: each statistic averaged over the batches that have
    it (λ_area and λ over every batch; λ_attn over attention-labelled batches; α over PAL batches), plus
    ``mixpro/learnable_alpha`` (sigmoid(θ)) when a learnable α is trained."""
    values: dict[str, list[torch.Tensor]] = {}
    for stats in batch_stats:
        for name, value in stats.items():
            values.setdefault(name, []).append(torch.as_tensor(value).detach().float())
    logs = {f"mixpro/{name}": round(float(torch.stack(items).mean()), 6) for name, items in values.items()}
    if learnable_alpha is not None:
        logs["mixpro/learnable_alpha"] = round(float(torch.sigmoid(learnable_alpha.detach().float())), 6)
    return logs
