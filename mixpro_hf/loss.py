"""The training loss of a mixed batch: area labels, TransMix labels or PAL (eq. 7-9).

Papers:
    - MixPro: Zhao et al., ICLR 2023 (eq. 7-9, Table 10). https://openreview.net/forum?id=dRjWsd3gwsm
    - TransMix: Chen et al., CVPR 2022. https://arxiv.org/abs/2111.09833

One contract for every training loop (the ``Trainer``, the Accelerate loop, the benchmarks):
:func:`mixed_loss` computes the loss, :func:`learnable_alpha_parameter` builds the one trained scalar of
``alpha_strategy="learnable"``, and :func:`mean_mix_stats` averages the logged ``mixpro/*`` statistics.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .labels import (
    attention_lambda,
    binarize_target,
    check_labels,
    check_multi_hot,
    mixed_target,
    pal_lambda,
    progressive_factor,
    transmix_lambda,
)
from .mixing import MixOutput
from .recipe import MixProConfig, label_mode, resolved_loss


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


def binary_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over all ``B × C`` entries of BCE-with-logits on a dense target (timm's ``BinaryCrossEntropy`` with
    reduction ``mean``, 🤗's multi-label loss)."""
    return F.binary_cross_entropy_with_logits(logits.float(), target.float())


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

    ``labels``: class ids ``(B,)``, or a multi-hot ``(B, C)`` float matrix (multi-label data). With binary
    cross-entropy (``config.loss`` ``"bce"``, or ``"auto"`` on multi-label labels) every batch's loss is
    :func:`binary_cross_entropy` on the same ``mixed_target(λ)`` (multi-hot targets smoothed towards 0.5, as timm
    1.0.31), binarised at ``config.bce_target_threshold`` when set; α (eq. 8) compares the *sigmoid*
    probabilities with the area-mixed target. BCE is linear in the target, so the hard form of PAL batches,
    ``λ·BCE(y_i) + (1 − λ)·BCE(y_j)`` on unsmoothed labels, is BCE on the unsmoothed ``mixed_target(λ)``.
    """
    num_labels = logits.shape[-1]
    multi_label = labels.dim() == 2
    if labels.device.type == "cpu":  # on accelerators the collator has checked them (no per-step host sync)
        if multi_label:
            check_multi_hot(labels, num_labels)
        else:
            check_labels(labels, num_labels)
    bce = resolved_loss(config, multi_label) == "bce"
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
                logits,
                area_target,
                config.alpha_strategy,
                progress=progress,
                learnable=learnable_alpha,
                activation="sigmoid" if bce else "softmax",
            )
            if not config.alpha_grad:
                alpha = alpha.detach()
            stats["alpha"] = alpha.detach().mean()
            lam = pal_lambda(lam_area, lam_attn, alpha)
        else:
            lam = transmix_lambda(lam_area, lam_attn, config.transmix_label)
    stats["lam"] = lam.detach().mean()
    hard = mode == "pal" and config.loss_form == "hard"
    if bce:
        smoothing = 0.0 if hard else config.label_smoothing_factor
        target = mixed_target(labels, partner, lam, num_labels, smoothing)
        loss = binary_cross_entropy(logits, binarize_target(target, config.bce_target_threshold))
    elif hard:
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


#: The per-batch statistics :func:`mixed_loss` returns, in the order :func:`mean_mix_stats` sums them.
MIX_STAT_NAMES = ("alpha", "lam_attn", "lam", "lam_area")


def mean_mix_stats(
    batch_stats: Iterable[Mapping[str, torch.Tensor | float]],
    learnable_alpha: torch.Tensor | None = None,
    sum_over_processes: Callable[[torch.Tensor], torch.Tensor] | None = None,
    device: torch.device | str | None = None,
) -> dict[str, float]:
    """The ``mixpro/*`` log entries of a logging interval: each statistic averaged over the batches that have
    it (λ_area and λ over every batch; λ_attn over attention-labelled batches; α over PAL batches), plus
    ``mixpro/learnable_alpha`` (sigmoid(θ)) when a learnable α is trained.

    With several processes, pass ``sum_over_processes`` (e.g. ``lambda t: accelerator.reduce(t, "sum")``) and
    call it on every process: the per-statistic sums and batch counts are summed over the processes (one
    collective; a process may have drawn no PAL batch while another did), so every process logs the mean over
    all batches of all processes, not the main process's own. ``device``: where the sums live when this process
    has no batch (the collective's device)."""
    batch_stats = list(batch_stats)
    extra = sorted({name for stats in batch_stats for name in stats} - set(MIX_STAT_NAMES))
    names = [*MIX_STAT_NAMES, *extra] if sum_over_processes is None else list(MIX_STAT_NAMES)
    first = next((v for stats in batch_stats for v in stats.values() if isinstance(v, torch.Tensor)), None)
    device = device if device is not None else first.device if first is not None else "cpu"
    totals = torch.zeros(2, len(names), device=device)  # row 0: sums, row 1: batch counts
    for stats in batch_stats:
        for i, name in enumerate(names):
            if name in stats:
                totals[0, i] += torch.as_tensor(stats[name]).detach().float().to(device)
                totals[1, i] += 1
    if sum_over_processes is not None:
        totals = sum_over_processes(totals)
    sums, counts = totals.cpu().tolist()
    rows = zip(names, sums, counts, strict=True)
    logs = {f"mixpro/{name}": round(total / count, 6) for name, total, count in rows if count}
    if learnable_alpha is not None:
        logs["mixpro/learnable_alpha"] = round(float(torch.sigmoid(learnable_alpha.detach().float())), 6)
    return logs
