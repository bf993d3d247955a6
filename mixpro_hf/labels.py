"""Label math of MixPro: attention label (eq. 5), progressive factor (eq. 8), PAL (eq. 9).

Papers:
    - MixPro: Zhao et al., "MixPro: Data Augmentation with MaskMix and Progressive Attention Labeling for
      Vision Transformer", ICLR 2023 (§3.1-3.2, eq. 5, 8, 9; Table 10). https://openreview.net/forum?id=dRjWsd3gwsm
    - TransMix: Chen et al., "TransMix: Attend to Mix for Vision Transformers", CVPR 2022.
      https://arxiv.org/abs/2111.09833
    - Label smoothing: Szegedy et al., "Rethinking the Inception Architecture", CVPR 2016.

Pure functions over tensors; :mod:`mixpro_hf.loss` puts them together for a training step.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F


def check_labels(labels: torch.Tensor, num_labels: int) -> None:
    """Raise ``ValueError`` unless ``labels`` are integer class ids in ``[0, num_labels)``."""
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(f"labels must be integer class ids, got dtype {labels.dtype}")
    if labels.dim() != 1:
        raise ValueError(f"labels must be 1-D (batch,), got shape {tuple(labels.shape)}")
    if labels.numel():
        low, high = int(labels.min()), int(labels.max())
        if low < 0 or high >= num_labels:
            bad = low if low < 0 else high
            raise ValueError(f"label {bad} is outside [0, {num_labels}) (num_labels={num_labels})")


def smooth_one_hot(labels: torch.Tensor, num_labels: int, smoothing: float = 0.0) -> torch.Tensor:
    """timm's smoothed one-hot: ``1 - smoothing + smoothing / K`` on the class, ``smoothing / K`` off."""
    off = smoothing / num_labels
    target = torch.full((labels.shape[0], num_labels), off, device=labels.device)
    return target.scatter_(1, labels.unsqueeze(1), 1.0 - smoothing + off)


def check_multi_hot(targets: torch.Tensor, num_labels: int) -> None:
    """Raise ``ValueError`` unless ``targets`` is a ``(B, num_labels)`` float multi-hot matrix with values in [0, 1]
    (the dense targets of a multi-label batch; a row of zeros is an image with no label)."""
    if not targets.dtype.is_floating_point:
        raise ValueError(f"multi-label targets must be a float (B, C) multi-hot matrix, got dtype {targets.dtype}")
    if targets.dim() != 2 or targets.shape[1] != num_labels:
        raise ValueError(
            f"multi-label targets must have shape (batch, {num_labels}) (num_labels={num_labels}), got "
            f"{tuple(targets.shape)}"
        )
    if targets.numel() and not bool(((targets >= 0) & (targets <= 1)).all()):
        raise ValueError("multi-label targets must hold values in [0, 1] (multi-hot), got values outside or NaN")


def smooth_multi_hot(targets: torch.Tensor, smoothing: float = 0.0) -> torch.Tensor:
    """timm 1.0.31's multi-label smoothing (``Mixup(multi_label=True)``, ``BinaryCrossEntropy(smooth_dense=True)``):
    every class is an independent binary label smoothed towards 0.5, ``t·(1 − smoothing) + 0.5·smoothing``."""
    targets = targets.float()
    return targets * (1.0 - smoothing) + 0.5 * smoothing if smoothing else targets


def dense_target(labels: torch.Tensor, num_labels: int, smoothing: float = 0.0) -> torch.Tensor:
    """The smoothed ``(B, num_labels)`` target of a batch: class ids ``(B,)`` give :func:`smooth_one_hot` (timm's
    single-label smoothing, also what timm's ``BinaryCrossEntropy`` uses for ids), a ``(B, C)`` multi-hot matrix
    gives :func:`smooth_multi_hot` (towards 0.5)."""
    if labels.dim() == 2:
        return smooth_multi_hot(labels, smoothing)
    return smooth_one_hot(labels, num_labels, smoothing)


def mixed_target(
    labels: torch.Tensor,
    partner: torch.Tensor,
    lam: torch.Tensor,
    num_labels: int,
    smoothing: float = 0.0,
) -> torch.Tensor:
    """``lam * y_i + (1 - lam) * y_partner`` on smoothed dense targets (eq. 7 with ``lam``; timm order: smooth,
    then mix). ``labels``: class ids ``(B,)`` or a multi-hot ``(B, C)`` matrix (:func:`dense_target`); ``lam`` is a
    ``(B,)`` tensor (or a float)."""
    own = dense_target(labels, num_labels, smoothing)
    lam = torch.as_tensor(lam, dtype=own.dtype, device=own.device).reshape(-1, 1)
    return lam * own + (1.0 - lam) * own[partner]


def binarize_target(target: torch.Tensor, threshold: float | None) -> torch.Tensor:
    """timm's ``BinaryCrossEntropy(target_threshold=...)``: ``target > threshold`` as 0/1 (strict), applied after
    smoothing and mixing; ``None`` keeps the soft target."""
    if threshold is None:
        return target
    return target.gt(threshold).to(target.dtype)


def attention_lambda(cls_attention: torch.Tensor, patch_mask: torch.Tensor) -> torch.Tensor:
    """λ_attn (eq. 5): the share of the class token's attention that falls on the sample's own patches.

    Args:
        cls_attention: ``(B, N)`` or ``(B, heads, N)`` attention of the class token over the N patch
            tokens (heads are averaged). It is renormalised over the patch tokens, as the reference
            code does: ``λ_attn = Σ(M'·A) / Σ(A)``.
        patch_mask: ``(B, grid_h, grid_w)`` (or ``(B, N)``) with ``grid_h * grid_w = N``: True/1 where
            the patch is the sample's own; a float mask gives the covered fraction (CutMix boxes).

    Returns:
        ``(B,)`` float32 in ``[0, 1]``.
    """
    attention = cls_attention.float()
    if attention.dim() == 3:
        attention = attention.mean(1)
    if attention.dim() != 2:
        raise ValueError(f"cls_attention must be (B, N) or (B, heads, N), got shape {tuple(cls_attention.shape)}")
    mask = patch_mask.reshape(patch_mask.shape[0], -1).to(attention.dtype)
    if mask.shape != attention.shape:
        raise ValueError(
            f"cls_attention covers {attention.shape[-1]} patches for {attention.shape[0]} samples but "
            f"patch_mask has {mask.shape[-1]} patches for {mask.shape[0]} samples: they must match"
        )
    total = attention.sum(1)
    # one host sync per batch for both checks; the messages are built only on failure
    if bool((~torch.isfinite(attention)).any() | (total <= 0).any()):
        if not bool(torch.isfinite(attention).all()):
            raise ValueError("cls_attention holds NaN or infinite values")
        bad = int((total <= 0).nonzero()[0])
        raise ValueError(f"cls_attention of sample {bad} sums to {float(total[bad])} over the patches: need > 0")
    return (attention * mask).sum(1) / total


def progressive_factor(
    logits: torch.Tensor,
    soft_targets: torch.Tensor,
    strategy: str = "cosine",
    *,
    progress: float | None = None,
    learnable: torch.Tensor | None = None,
    activation: Literal["softmax", "sigmoid"] = "softmax",
) -> torch.Tensor:
    """The progressive factor α (eq. 8), per sample, in ``[0, 1]``.

    Strategies (paper Table 10): ``"cosine"`` (default) the cosine similarity of the model's probability vector
    and the area-mixed soft target, the probability vector being the one of the loss: ``activation="softmax"``
    for cross-entropy (the paper), ``"sigmoid"`` (independent per-class probabilities) for binary cross-entropy
    and multi-label targets; ``"equal"`` 0.5; ``"linear"`` ``progress`` = T / T_max;
    ``"parabolic"`` ``progress ** 2``; ``"learnable"`` ``sigmoid(learnable)``, one trained parameter.
    The gradient flows through α (as in the reference code); detach the result to stop it.
    """
    batch = logits.shape[0]
    if strategy == "cosine":
        if soft_targets.shape != logits.shape:
            raise ValueError(
                f"soft_targets shape {tuple(soft_targets.shape)} must equal logits shape {tuple(logits.shape)}"
            )
        if activation not in ("softmax", "sigmoid"):
            raise ValueError(f"activation must be 'softmax' or 'sigmoid', got {activation!r}")
        probs = logits.float().softmax(-1) if activation == "softmax" else logits.float().sigmoid()
        return F.cosine_similarity(probs, soft_targets.float(), dim=-1).clamp(0.0, 1.0)
    if strategy == "equal":
        return torch.full((batch,), 0.5, device=logits.device)
    if strategy in ("linear", "parabolic"):
        if progress is None or not 0.0 <= progress <= 1.0:
            raise ValueError(f"alpha strategy {strategy!r} needs progress = T / T_max in [0, 1], got {progress!r}")
        value = progress if strategy == "linear" else progress**2
        return torch.full((batch,), float(value), device=logits.device)
    if strategy == "learnable":
        if learnable is None:
            raise ValueError("alpha strategy 'learnable' needs the learnable parameter")
        return torch.sigmoid(learnable.float()).reshape(()).expand(batch).to(logits.device)
    raise ValueError(f"unknown alpha strategy {strategy!r}: cosine, equal, linear, parabolic or learnable")


def pal_lambda(lam_area: torch.Tensor, lam_attn: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """Progressive Attention Labeling (eq. 9): ``λ = α·λ_attn + (1 − α)·λ_area``, per sample."""
    return alpha * lam_attn + (1.0 - alpha) * lam_area


def transmix_lambda(lam_area: torch.Tensor, lam_attn: torch.Tensor, mode: str = "mean") -> torch.Tensor:
    """TransMix's label weight: ``(λ_area + λ_attn) / 2`` (its released code) or ``λ_attn`` (its paper)."""
    if mode == "mean":
        return 0.5 * (lam_area + lam_attn)
    if mode == "attn":
        return lam_attn
    raise ValueError(f"transmix_label must be 'mean' or 'attn', got {mode!r}")
