"""Patch dropping (occlusion): top-1 with a share of the patches set to zero (MixPro §4.3.1, Fig. 3).

Papers:
    - Naseer et al., "Intriguing Properties of Vision Transformers", NeurIPS 2021 (random, salient and
      non-salient PatchDrop). https://arxiv.org/abs/2105.10497
    - MixPro: Zhao et al., ICLR 2023, §4.3.1 and Fig. 3 (as TransMix, Chen et al., CVPR 2022).

A patch is a cell of the evaluated model's own patch grid (``patch_size`` pixels square, from
:func:`mixpro_hf.modeling.model_geometry`); dropping sets all its pixels, after normalisation, to 0.
Which patches go first is a *priority* per patch, lowest dropped first:

* ``random``: uniform noise (a fresh draw per image and repeat);
* ``salient``: minus the class-token attention of a saliency model (DINO in the paper), so that the patches the
  saliency model looks at most are dropped first;
* ``non_salient``: the attention itself, the least-attended patches first.

The attention of a saliency model with another grid is resized to the evaluated model's grid.
Everything is vectorised over the batch; the loops run over drop ratios and repeats only.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "DROP_RATIOS",
    "OCCLUSION_MODES",
    "attention_priority",
    "drop_patches",
    "occlusion_correct",
    "patch_drop_mask",
    "random_drop_accuracy",
]

#: 0, 10, ..., 90 % of the patches dropped (Fig. 3 of MixPro).
DROP_RATIOS: tuple[float, ...] = tuple(round(0.1 * i, 1) for i in range(10))
OCCLUSION_MODES: tuple[str, ...] = ("random", "salient", "non_salient")


def _check_ratio(ratio: float) -> None:
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0.0 <= ratio <= 1.0:
        raise ValueError(f"drop ratio must be a number in [0, 1], got {ratio!r}")


def patch_drop_mask(priority: torch.Tensor, ratio: float) -> torch.Tensor:
    """``(B, N)`` bool: ``round(ratio * N)`` patches of each row, those of lowest ``priority``, are True."""
    _check_ratio(ratio)
    batch, patches = priority.shape
    count = round(ratio * patches)
    dropped = torch.zeros(batch, patches, dtype=torch.bool, device=priority.device)
    dropped.scatter_(1, priority.argsort(dim=1)[:, :count], True)
    return dropped


def drop_patches(
    images: torch.Tensor,
    ratio: float,
    patch_size: int,
    generator: torch.Generator | None = None,
    priority: torch.Tensor | None = None,
) -> torch.Tensor:
    """``images`` ``(B, C, H, W)`` with ``round(ratio * N)`` of each image's ``N`` patches set to 0 (a copy).

    The patches of lowest ``priority`` ``(B, N)`` (row-major over the grid) go first; without ``priority``, a
    uniform draw from ``generator`` (on the CPU, so that a seed gives the same drops on every device).
    """
    _check_ratio(ratio)
    batch, _, height, width = images.shape
    if height % patch_size or width % patch_size:
        raise ValueError(f"image {height}x{width} is not a multiple of the patch size {patch_size}")
    grid_h, grid_w = height // patch_size, width // patch_size
    if priority is None:
        priority = torch.rand(batch, grid_h * grid_w, generator=generator)
    elif priority.shape != (batch, grid_h * grid_w):
        raise ValueError(f"priority must be (B, N) = {(batch, grid_h * grid_w)}, got {tuple(priority.shape)}")
    dropped = patch_drop_mask(priority, ratio)
    mask = dropped.view(batch, grid_h, grid_w).repeat_interleave(patch_size, 1).repeat_interleave(patch_size, 2)
    return images.masked_fill(mask.unsqueeze(1).to(images.device), 0)


def attention_priority(
    attention: torch.Tensor, source_grid: tuple[int, int], target_grid: tuple[int, int]
) -> torch.Tensor:
    """Class-token attention ``(B, N_source)`` on ``source_grid`` as ``(B, N_target)`` on ``target_grid``
    (bilinear resize when the grids differ, e.g. a DINO ViT-S/16 ranking patches for a ViT-B/32)."""
    batch = attention.shape[0]
    if attention.shape[1] != source_grid[0] * source_grid[1]:
        raise ValueError(f"attention has {attention.shape[1]} patches, not the {source_grid[0]}x{source_grid[1]} grid")
    if tuple(source_grid) == tuple(target_grid):
        return attention.float()
    grid = attention.float().view(batch, 1, *source_grid)
    resized = F.interpolate(grid, size=tuple(target_grid), mode="bilinear", align_corners=False, antialias=True)
    return resized.view(batch, -1)


def _logits(model: nn.Module, pixel_values: torch.Tensor, columns: torch.Tensor | None) -> torch.Tensor:
    logits = model(pixel_values=pixel_values).logits
    return logits if columns is None else logits[:, columns]


def _drop_orders(
    pixel_values: torch.Tensor,
    patch_size: int,
    saliency: torch.Tensor | None,
    repeats: int,
    generator: torch.Generator | None,
) -> dict[str, list[torch.Tensor]]:
    """The patch priorities of each dropping mode: ``repeats`` random orders, and the (non-)salient order."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats!r}")
    batch, _, height, width = pixel_values.shape
    patches = (height // patch_size) * (width // patch_size)
    orders = {"random": [torch.rand(batch, patches, generator=generator) for _ in range(repeats)]}
    if saliency is not None:
        orders["salient"] = [-saliency]
        orders["non_salient"] = [saliency]
    return orders


@torch.no_grad()
def occlusion_logits(
    model: nn.Module,
    pixel_values: torch.Tensor,
    patch_size: int,
    ratios: Sequence[float] = DROP_RATIOS,
    *,
    saliency: torch.Tensor | None = None,
    repeats: int = 1,
    generator: torch.Generator | None = None,
    columns: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """The logits under patch dropping, for metrics over a whole set (a multi-label model's mAP):
    ``{mode: (B, orders, len(ratios), C)}``, ``orders`` being ``repeats`` random draws (``random``) or 1; the modes
    and drops as :func:`occlusion_correct`."""
    results = {}
    for mode, priorities in _drop_orders(pixel_values, patch_size, saliency, repeats, generator).items():
        per_order = []
        for priority in priorities:
            priority = priority.to(pixel_values.device)
            per_ratio = [
                _logits(model, drop_patches(pixel_values, ratio, patch_size, priority=priority), columns).float()
                for ratio in ratios
            ]
            per_order.append(torch.stack(per_ratio, dim=1))
        results[mode] = torch.stack(per_order, dim=1)
    return results


@torch.no_grad()
def occlusion_correct(
    model: nn.Module,
    pixel_values: torch.Tensor,
    labels: torch.Tensor,
    patch_size: int,
    ratios: Sequence[float] = DROP_RATIOS,
    *,
    saliency: torch.Tensor | None = None,
    repeats: int = 1,
    generator: torch.Generator | None = None,
    columns: torch.Tensor | None = None,
    clean_correct: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Per-image top-1 correctness under patch dropping: ``{mode: (B, len(ratios)) float}``.

    ``random``: the mean over ``repeats`` draws (one random order of the patches per image and repeat, so that
    the drops of the ratios are nested). ``salient`` / ``non_salient``, when ``saliency`` ``(B, N)`` (class-token
    attention on the model's grid) is given: the most / least attended patches first. ``columns`` restricts the
    logits to a class subset (labels index into it); ``clean_correct`` ``(B,)``, when known, is used for ratio 0.
    """
    results = {}
    for mode, priorities in _drop_orders(pixel_values, patch_size, saliency, repeats, generator).items():
        columns_out = []
        for ratio in ratios:
            if ratio == 0 and clean_correct is not None:
                columns_out.append(clean_correct.float())
                continue
            correct = torch.zeros(pixel_values.shape[0], device=pixel_values.device)
            for priority in priorities:
                dropped = drop_patches(pixel_values, ratio, patch_size, priority=priority.to(pixel_values.device))
                correct += (_logits(model, dropped, columns).argmax(1) == labels).float()
            columns_out.append(correct / len(priorities))
        results[mode] = torch.stack(columns_out, dim=1)
    return results


@torch.no_grad()
def random_drop_accuracy(
    model: nn.Module,
    images: torch.Tensor,
    labels: np.ndarray,
    patch_size: int,
    ratios: Sequence[float] = DROP_RATIOS,
    seed: int = 1234,
    batch_size: int = 256,
) -> dict[str, float]:
    """Top-1 of ``model`` on ``images`` with each ratio of random patches dropped, ``{str(ratio): top-1}``.

    One draw per ratio, from a generator seeded ``seed + round(100 * ratio)`` over all images at once, so every
    model given the same images sees the same drops (the digits benchmark's protocol)."""
    model.eval()
    device = next(model.parameters()).device
    labels = np.asarray(labels)
    top1 = {}
    for ratio in ratios:
        generator = torch.Generator().manual_seed(seed + int(round(ratio * 100)))
        dropped = drop_patches(images, ratio, patch_size, generator) if ratio > 0 else images
        predictions = torch.cat(
            [model(pixel_values=x.to(device)).logits.argmax(1).cpu() for x in dropped.split(batch_size)]
        )
        top1[str(ratio)] = float((predictions.numpy() == labels).mean())
    return top1
