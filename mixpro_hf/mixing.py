"""Image mixing for Vision Transformers: MaskMix, Mixup and CutMix with one result type.

Papers:
    - MixPro / MaskMix: Zhao et al., "MixPro: Data Augmentation with MaskMix and Progressive Attention
      Labeling for Vision Transformer", ICLR 2023 (§3.2, eq. 6-7). https://openreview.net/forum?id=dRjWsd3gwsm
    - Mixup: Zhang et al., "mixup: Beyond Empirical Risk Minimization", ICLR 2018.
      https://arxiv.org/abs/1710.09412
    - CutMix: Yun et al., "CutMix: Regularization Strategy to Train Strong Classifiers with Localizable
      Features", ICCV 2019. https://arxiv.org/abs/1905.04899

Modes (see :func:`mix_batch` for the recipe switch that chooses between them):

* ``maskmix`` -- MixPro's MaskMix (Zhao et al., ICLR 2023, §3.2, eq. 6-7). A grid mask whose
  cells are ``mask_scale`` x ``mask_scale`` ViT patches; ``ceil(S * tau)`` cells (``tau ~ Beta(beta,
  beta)``, one per batch) are kept from the sample itself, the rest come from its partner. Every
  patch therefore comes from exactly one image.
* ``mixup`` -- Zhang et al. (2018); timm's per-batch blend, partner ``flip(0)``.
* ``cutmix`` -- Yun et al. (2019); timm's per-batch box, ``cutmix_minmax`` and ``correct_lam``.

Every function returns a :class:`MixOutput` whose ``patch_mask`` gives, on the model's patch grid,
how much of each patch is the sample's own (bool for MaskMix, covered fraction for CutMix and
Mixup), so the attention label of eq. 5 (:func:`mixpro_hf.labels.attention_lambda`) works the same
for every mode. ``lam_area`` always weighs the sample's *own* label, as in eq. 7.

All functions are vectorised over the batch, run on CPU tensors (in a data collator) or on GPU
tensors, and are reproducible given a :class:`torch.Generator`. A batch of one has nothing to mix:
it is returned unmixed with ``lam_area = 1``.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import numpy as np
import torch

Pairing = Literal["randperm", "flip"]
CellCount = Literal["ceil", "floor"]
BoxEdge = Literal["reference", "timm-1.0.31"]
PatchMaskMode = Literal["nearest", "fraction"]
_F = TypeVar("_F", bound=Callable[..., Any])


def _accepts_old_partner_name(function: _F) -> _F:
    """Accept the pairing strategy under its old keyword ``partner=`` for one release (FutureWarning)."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if "partner" in kwargs:
            warnings.warn("partner= is deprecated, use pairing=", FutureWarning, stacklevel=2)
            kwargs["pairing"] = kwargs.pop("partner")
        return function(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


@dataclass
class MixOutput:
    """A mixed batch.

    Attributes:
        pixel_values: ``(B, C, H, W)`` mixed images.
        partner: ``(B,)`` long, index in the batch of the image each sample was mixed with.
        patch_mask: ``(B, H // patch, W // patch)``: ``True`` (or the covered fraction, for CutMix
            and Mixup) where the patch is the sample's own.
        lam_area: ``(B,)`` float, the fraction of the image that is the sample's own (eq. 7).
        method: ``"maskmix"``, ``"mixup"``, ``"cutmix"`` or ``"none"``.
    """

    pixel_values: torch.Tensor
    partner: torch.Tensor
    patch_mask: torch.Tensor
    lam_area: torch.Tensor
    method: str = "none"

    def to(self, device: torch.device | str, non_blocking: bool = False) -> MixOutput:
        return MixOutput(
            pixel_values=self.pixel_values.to(device, non_blocking=non_blocking),
            partner=self.partner.to(device, non_blocking=non_blocking),
            patch_mask=self.patch_mask.to(device, non_blocking=non_blocking),
            lam_area=self.lam_area.to(device, non_blocking=non_blocking),
            method=self.method,
        )


# ----------------------------------------------------------------------------------------------
# validation and random helpers


def check_pixel_values(pixel_values: torch.Tensor, patch_size: int | None = None) -> None:
    """Raise ``ValueError`` unless ``pixel_values`` is ``(B, C, H, W)`` with H, W divisible by the patch."""
    if not isinstance(pixel_values, torch.Tensor):
        raise TypeError(f"pixel_values must be a torch.Tensor, got {type(pixel_values).__name__}")
    if pixel_values.dim() != 4:
        raise ValueError(
            f"pixel_values must be 4-D (batch, channels, height, width), got shape {tuple(pixel_values.shape)}"
        )
    if pixel_values.shape[0] == 0:
        raise ValueError("pixel_values holds an empty batch (batch size 0)")
    if pixel_values.device.type == "meta":
        raise ValueError("pixel_values are on the 'meta' device and hold no data: move them to the CPU or a GPU")
    if patch_size is not None:
        if isinstance(patch_size, bool) or not isinstance(patch_size, int) or patch_size < 1:
            raise ValueError(f"patch_size must be a positive integer, got {patch_size!r}")
        height, width = pixel_values.shape[-2:]
        if height % patch_size or width % patch_size:
            raise ValueError(
                f"image size {height}x{width} is not divisible by the patch size {patch_size}: "
                "a ViT needs whole patches"
            )


def _rng_device(generator: torch.Generator | None) -> torch.device:
    """The device random numbers are drawn on; refuses a generator that cannot draw (``meta``)."""
    if generator is None:
        return torch.device("cpu")
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    if generator.device.type == "meta":
        raise ValueError("the generator is on the 'meta' device, which draws no numbers: use a CPU generator")
    return generator.device


def sample_beta(concentration: float, size: int = 1, generator: torch.Generator | None = None) -> torch.Tensor:
    """``size`` draws of Beta(concentration, concentration) on the CPU, reproducible from ``generator``.

    ``torch.distributions.Beta`` takes no generator, so for concentration != 1 the draws come from a
    NumPy generator seeded from ``generator``; Beta(1, 1) is a plain uniform draw.
    """
    if not concentration > 0:
        raise ValueError(f"Beta concentration must be > 0, got {concentration!r}")
    if concentration == 1.0:
        return torch.rand(size, generator=generator, device=_rng_device(generator)).cpu().double()
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=_rng_device(generator)).item())
    draws = np.random.default_rng(seed).beta(concentration, concentration, size=size)
    return torch.from_numpy(draws)


def draw_partner(
    batch_size: int, pairing: Pairing, generator: torch.Generator | None, device: torch.device
) -> torch.Tensor:
    """Index of each sample's partner under ``pairing``: a random permutation (MixPro's code) or the
    reversed batch (timm, and the paper's Alg. 1)."""
    if pairing == "randperm":
        perm = torch.randperm(batch_size, generator=generator, device=_rng_device(generator))
        return perm.to(device)
    if pairing == "flip":
        return torch.arange(batch_size - 1, -1, -1, device=device)
    raise ValueError(f"pairing must be 'randperm' or 'flip', got {pairing!r}")


def unmixed(pixel_values: torch.Tensor, patch_size: int | None = None) -> MixOutput:
    """The identity mix: each sample is its own partner, ``lam_area = 1``."""
    batch, _, height, width = pixel_values.shape
    grid = (height // patch_size, width // patch_size) if patch_size else (1, 1)
    device = pixel_values.device
    return MixOutput(
        pixel_values=pixel_values,
        partner=torch.arange(batch, device=device),
        patch_mask=torch.ones((batch, *grid), dtype=torch.bool, device=device),
        lam_area=torch.ones(batch, device=device),
        method="none",
    )


def _blend_patches(x: torch.Tensor, own: torch.Tensor, partner: torch.Tensor, patch_size: int) -> torch.Tensor:
    """``M * x + (1 - M) * x[partner]`` (eq. 7) for a boolean patch-grid mask ``own``.

    One gather of the partner images and one in-place ``where`` over a pixel-size boolean mask: the
    cheapest form measured (benchmarks/bench_mixing.py), about the cost of timm's in-place blend.
    """
    other = torch.index_select(x, 0, partner)
    keep = own.repeat_interleave(patch_size, 1).repeat_interleave(patch_size, 2).unsqueeze(1)
    if x.requires_grad:
        return torch.where(keep, x, other)
    return torch.where(keep, x, other, out=other)


# ----------------------------------------------------------------------------------------------
# MaskMix (paper §3.2)


def check_mask_grid(grid: tuple[int, int], mask_scale: int) -> None:
    """Refuse a ``mask_scale`` whose cell grid on the ``grid`` of patches has a single cell (no mixing)."""
    if math.ceil(grid[0] / mask_scale) * math.ceil(grid[1] / mask_scale) < 2:
        raise ValueError(
            f"mask_scale {mask_scale} on a {grid[0]}x{grid[1]} patch grid leaves a single mask cell: nothing "
            f"would be mixed; use a mask_scale below {max(grid)}"
        )


def unmixed_maskmix_share(grid: tuple[int, int], mask_scale: int, beta: float = 1.0) -> float:
    """The share of MaskMix draws that mix nothing: all ``S`` cells the sample's own.

    With ``tau ~ Beta(beta, beta)`` (eq. 6) and ``k = ceil(S * tau)`` own cells (reference code), ``k = S`` exactly
    when ``tau > 1 - 1/S``; with the paper's ``floor``, ``k = 0`` (all cells the partner's: the partner unmixed)
    exactly when ``tau < 1/S``. Beta(beta, beta) is symmetric, so both are its CDF at ``1/S``: ``1/S`` for
    ``beta = 1``, e.g. a quarter for 2x2 cells, 1/16 for the paper's 4x4 cells on ImageNet."""
    from scipy.special import betainc

    cells = math.ceil(grid[0] / mask_scale) * math.ceil(grid[1] / mask_scale)
    return float(betainc(beta, beta, 1.0 / cells))


def maskmix_mask(
    batch_size: int,
    grid: tuple[int, int],
    mask_scale: int,
    beta: float = 1.0,
    generator: torch.Generator | None = None,
    *,
    tau_per_sample: bool = False,
    cell_count: CellCount = "ceil",
) -> torch.Tensor:
    """The MaskMix mask M of MixPro §3.2, on the patch grid: ``(B, grid_h, grid_w)`` bool, True = own patch.

    * eq. 6: the mixing ratio ``tau ~ Beta(beta, beta)``, one per batch (reference code) or per sample;
    * the grid is divided into ``S = ceil(grid_h / mask_scale) * ceil(grid_w / mask_scale)`` cells of
      ``mask_scale x mask_scale`` patches (P_mask = mask_scale * P_image, so every patch lies in one cell);
    * ``ceil(S * tau)`` cells (reference code; the paper writes floor: ``cell_count="floor"``) are drawn at
      independent random positions per sample and set to 1: M keeps the sample's own pixels there
      (eq. 7: ``x~ = M * x_i + (1 - M) * x_j``);
    * the cell mask is repeated up to patches and cropped to the patch grid, as the reference code does.
    """
    if cell_count not in ("ceil", "floor"):
        raise ValueError(f"cell_count must be 'ceil' or 'floor', got {cell_count!r}")
    tau = sample_beta(beta, batch_size if tau_per_sample else 1, generator)
    grid_h, grid_w = grid
    cells_h, cells_w = math.ceil(grid_h / mask_scale), math.ceil(grid_w / mask_scale)
    num_cells = cells_h * cells_w
    rounding = torch.ceil if cell_count == "ceil" else torch.floor
    kept = rounding(tau * num_cells).long().clamp_(0, num_cells).expand(batch_size)
    scores = torch.rand(batch_size, num_cells, generator=generator, device=_rng_device(generator))
    rank = scores.argsort(dim=1).argsort(dim=1)  # a uniform random ranking of the cells, per sample
    cells = (rank < kept.to(rank.device).unsqueeze(1)).view(batch_size, cells_h, cells_w)
    patches = cells.repeat_interleave(mask_scale, dim=1).repeat_interleave(mask_scale, dim=2)
    return patches[:, :grid_h, :grid_w]


@_accepts_old_partner_name
def maskmix(
    pixel_values: torch.Tensor,
    patch_size: int = 16,
    mask_scale: int = 4,
    beta: float = 1.0,
    generator: torch.Generator | None = None,
    *,
    tau_per_sample: bool = False,
    cell_count: CellCount = "ceil",
    pairing: Pairing = "randperm",
) -> MixOutput:
    """MaskMix (paper §3.2): ``x~ = M * x_i + (1 - M) * x_j`` (eq. 7) with a patch-aligned grid mask M.

    Args:
        pixel_values: ``(B, C, H, W)`` images; H and W must be multiples of ``patch_size``.
        patch_size: the ViT patch size in pixels (P_image).
        mask_scale: mask-cell side in patches (P_mask / P_image), an integer >= 1; paper default 4.
        beta: ``tau ~ Beta(beta, beta)`` (eq. 6).
        generator: source of randomness; the same seed gives the same result.
        tau_per_sample: draw one tau per sample instead of one per batch (reference: per batch).
        cell_count: ``"ceil"`` (reference code) or ``"floor"`` (paper text) of ``S * tau``.
        pairing: how samples are paired: ``"randperm"`` (reference code) or ``"flip"`` (paper Alg. 1).

    Returns:
        :class:`MixOutput` with a boolean ``patch_mask`` and the exact ``lam_area`` (the fraction
        of the image's patches that are the sample's own, also when the crop cuts cells).
    """
    check_pixel_values(pixel_values, patch_size)
    if isinstance(mask_scale, bool) or not isinstance(mask_scale, int) or mask_scale < 1:
        raise ValueError(f"mask_scale must be an integer >= 1 (mask cell side in patches), got {mask_scale!r}")
    batch = pixel_values.shape[0]
    if batch == 1:
        return unmixed(pixel_values, patch_size)
    grid = (pixel_values.shape[-2] // patch_size, pixel_values.shape[-1] // patch_size)
    check_mask_grid(grid, mask_scale)
    own = maskmix_mask(
        batch, grid, mask_scale, beta, generator, tau_per_sample=tau_per_sample, cell_count=cell_count
    ).to(pixel_values.device)
    perm = draw_partner(batch, pairing, generator, pixel_values.device)
    return MixOutput(
        pixel_values=_blend_patches(pixel_values, own, perm, patch_size),
        partner=perm,
        patch_mask=own,
        lam_area=own.flatten(1).float().mean(1),
        method="maskmix",
    )


# ----------------------------------------------------------------------------------------------
# Mixup and CutMix (timm semantics)


@_accepts_old_partner_name
def mixup(
    pixel_values: torch.Tensor,
    alpha: float = 0.8,
    generator: torch.Generator | None = None,
    *,
    patch_size: int | None = None,
    pairing: Pairing = "flip",
) -> MixOutput:
    """Mixup: ``lam * x + (1 - lam) * x[partner]``, one ``lam ~ Beta(alpha, alpha)`` per batch (timm).

    ``patch_mask`` is ``lam`` everywhere (every patch is a ``lam`` blend), so the attention label of
    a Mixup batch equals its area label.
    """
    check_pixel_values(pixel_values, patch_size)
    batch = pixel_values.shape[0]
    if batch == 1:
        return unmixed(pixel_values, patch_size)
    lam = float(sample_beta(alpha, 1, generator))
    perm = draw_partner(batch, pairing, generator, pixel_values.device)
    other = torch.index_select(pixel_values, 0, perm)
    if not pixel_values.is_floating_point():  # uint8 images: blend in float32, round back (timm's collate)
        blend = torch.lerp(other.float(), pixel_values.float(), lam)
        mixed = blend.round_().clamp_(0, torch.iinfo(pixel_values.dtype).max).to(pixel_values.dtype)
    elif pixel_values.requires_grad:
        mixed = torch.lerp(other, pixel_values, lam)
    else:  # lerp(other, x, lam) = lam * x + (1 - lam) * other, written over the gathered copy
        mixed = other.lerp_(pixel_values, lam)
    height, width = pixel_values.shape[-2:]
    grid = (height // patch_size, width // patch_size) if patch_size else (1, 1)
    device = pixel_values.device
    return MixOutput(
        pixel_values=mixed,
        partner=perm,
        patch_mask=torch.full((batch, *grid), lam, device=device),
        lam_area=torch.full((batch,), lam, device=device),
        method="mixup",
    )


def cutmix_boxes(
    image_size: tuple[int, int],
    lam: torch.Tensor,
    generator: torch.Generator | None = None,
    minmax: tuple[float, float] | None = None,
    box_edge: BoxEdge = "reference",
) -> torch.Tensor:
    """timm's CutMix boxes, one per entry of ``lam``: ``(n, 4)`` long ``(y0, y1, x0, x1)``.

    A box of area ``1 - lam`` (sides ``int(H * sqrt(1 - lam))``) centred at a uniform random pixel and clipped
    to the image; or, with ``minmax``, sides drawn uniformly in ``[int(H * min), int(H * max))`` and the box
    kept inside. ``box_edge``: the lower edge is ``centre - cut // 2``; the upper edge is ``centre + cut // 2``
    in the timm releases the MixPro and TransMix code used (``"reference"``, timm <= 1.0.29) and
    ``centre + (cut + 1) // 2`` since timm 1.0.31 (``"timm-1.0.31"``); they differ for odd box sides only.
    """
    height, width = image_size
    count = lam.shape[0]
    device = _rng_device(generator)

    def randint(low: int | torch.Tensor, high: int | torch.Tensor) -> torch.Tensor:
        draw = torch.rand(count, generator=generator, device=device).cpu().double()
        return (low + (draw * (torch.as_tensor(high) - low)).floor()).long()

    if minmax is not None:
        low, high = minmax
        if not 0 <= low < high <= 1:
            raise ValueError(f"cutmix_minmax must satisfy 0 <= min < max <= 1, got {minmax!r}")
        cut_h = randint(int(height * low), max(int(height * high), int(height * low) + 1))
        cut_w = randint(int(width * low), max(int(width * high), int(width * low) + 1))
        y0, x0 = randint(0, height - cut_h + 1), randint(0, width - cut_w + 1)
        return torch.stack([y0, y0 + cut_h, x0, x0 + cut_w], dim=1)
    if box_edge not in ("reference", "timm-1.0.31"):
        raise ValueError(f"box_edge must be 'reference' or 'timm-1.0.31', got {box_edge!r}")
    ratio = torch.sqrt(1.0 - lam.double().cpu())
    cut_h, cut_w = (height * ratio).long(), (width * ratio).long()
    cy, cx = randint(0, height), randint(0, width)
    upper_h, upper_w = (cut_h // 2, cut_w // 2) if box_edge == "reference" else ((cut_h + 1) // 2, (cut_w + 1) // 2)
    return torch.stack(
        [
            (cy - cut_h // 2).clamp(0, height),
            (cy + upper_h).clamp(0, height),
            (cx - cut_w // 2).clamp(0, width),
            (cx + upper_w).clamp(0, width),
        ],
        dim=1,
    )


def box_pixel_mask(boxes: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
    """``(n, H, W)`` bool, True inside each box ``(y0, y1, x0, x1)``."""
    height, width = image_size
    rows, cols = torch.arange(height), torch.arange(width)
    inside_rows = (rows >= boxes[:, 0:1]) & (rows < boxes[:, 1:2])  # (n, H)
    inside_cols = (cols >= boxes[:, 2:3]) & (cols < boxes[:, 3:4])  # (n, W)
    return inside_rows[:, :, None] & inside_cols[:, None, :]


def box_patch_mask(
    boxes: torch.Tensor, image_size: tuple[int, int], patch_size: int, mode: PatchMaskMode = "nearest"
) -> torch.Tensor:
    """How much of each patch each box covers, ``(n, H // patch, W // patch)`` float.

    ``"nearest"``: the box mask downsampled to the patch grid by nearest neighbour, i.e. each patch takes the
    value of its top-left pixel (TransMix's ``nn.Upsample``, MixPro eq. 5's ``↓(M)``); ``"fraction"``: the
    covered fraction of each patch.
    """
    inside = box_pixel_mask(boxes, image_size)
    if mode == "nearest":
        return inside[:, ::patch_size, ::patch_size].float()
    if mode == "fraction":
        n, height, width = inside.shape
        grid = inside.view(n, height // patch_size, patch_size, width // patch_size, patch_size)
        return grid.float().mean((2, 4))
    raise ValueError(f"patch mask mode must be 'nearest' or 'fraction', got {mode!r}")


@_accepts_old_partner_name
def cutmix(
    pixel_values: torch.Tensor,
    alpha: float = 1.0,
    generator: torch.Generator | None = None,
    *,
    patch_size: int | None = None,
    minmax: tuple[float, float] | None = None,
    correct_lam: bool = True,
    pairing: Pairing = "flip",
    box_edge: BoxEdge = "reference",
    patch_mask_mode: PatchMaskMode = "nearest",
) -> MixOutput:
    """CutMix with timm's semantics: one box per batch pasted from the partner.

    ``lam ~ Beta(alpha, alpha)`` sets the box area ``1 - lam`` (or ``minmax`` sets its sides, see
    :func:`cutmix_boxes`); with ``correct_lam`` (timm default) ``lam_area`` is the exact area outside the clipped
    box. ``patch_mask`` is the share of each patch outside the box (the sample's own), by ``patch_mask_mode``
    (:func:`box_patch_mask`): what TransMix's λ_attn (eq. 5) weighs the attention with.
    """
    check_pixel_values(pixel_values, patch_size)
    batch, _, height, width = pixel_values.shape
    if batch == 1:
        return unmixed(pixel_values, patch_size)
    lam = float(sample_beta(alpha, 1, generator)) if minmax is None else 1.0
    boxes = cutmix_boxes((height, width), torch.tensor([lam]), generator, minmax, box_edge)
    y0, y1, x0, x1 = (int(v) for v in boxes[0])
    if correct_lam or minmax is not None:
        lam = 1.0 - (y1 - y0) * (x1 - x0) / float(height * width)
    perm = draw_partner(batch, pairing, generator, pixel_values.device)
    mixed = pixel_values.clone()
    mixed[:, :, y0:y1, x0:x1] = pixel_values[perm, :, y0:y1, x0:x1]
    if patch_size is None:  # no patch grid: one cell holding the area fraction
        own = torch.full((1, 1, 1), lam)
    else:
        own = 1.0 - box_patch_mask(boxes, (height, width), patch_size, patch_mask_mode)
    device = pixel_values.device
    return MixOutput(
        pixel_values=mixed,
        partner=perm,
        patch_mask=own.to(device).expand(batch, -1, -1),
        lam_area=torch.full((batch,), lam, device=device),
        method="cutmix",
    )


def mix_per_sample(
    pixel_values: torch.Tensor,
    generator: torch.Generator | None = None,
    *,
    patch_size: int | None = None,
    mixup_alpha: float = 0.8,
    cutmix_alpha: float = 1.0,
    cutmix_minmax: tuple[float, float] | None = None,
    switch_prob: float = 0.5,
    mix_prob: float = 1.0,
    correct_lam: bool = True,
    paired: bool = False,
    box_edge: BoxEdge = "reference",
    patch_mask_mode: PatchMaskMode = "nearest",
) -> MixOutput:
    """timm's ``mode="elem"`` (``paired=False``) and ``mode="pair"`` (``paired=True``) Mixup/CutMix.

    Every sample ``i`` is mixed with ``B - 1 - i`` (``flip``) with its own draws: whether it is mixed at all
    (``mix_prob``), CutMix or Mixup (``switch_prob``), its ``lam`` and its box. In ``pair`` mode, ``i`` and
    ``B - 1 - i`` share their draws (each gets the other's pixels in the same box, or the same blend); the
    middle sample of an odd batch stays unmixed. ``method`` is ``"cutmix"``/``"mixup"`` when every mixed sample
    used that one, else ``"mixup_cutmix"``.
    """
    check_pixel_values(pixel_values, patch_size)
    batch, _, height, width = pixel_values.shape
    if batch == 1:
        return unmixed(pixel_values, patch_size)
    has_cutmix, has_mixup = cutmix_alpha > 0 or cutmix_minmax is not None, mixup_alpha > 0
    if not (has_cutmix or has_mixup):
        raise ValueError("per-sample mixing needs mixup_alpha > 0, cutmix_alpha > 0 or cutmix_minmax")
    count = batch // 2 if paired else batch
    device = _rng_device(generator)
    mixed_flag = torch.rand(count, generator=generator, device=device).cpu() < mix_prob
    if has_cutmix and has_mixup:
        use_cutmix = torch.rand(count, generator=generator, device=device).cpu() < switch_prob
    else:
        use_cutmix = torch.full((count,), has_cutmix)
    lam = torch.ones(count, dtype=torch.float64)
    if has_mixup:
        lam = torch.where(~use_cutmix, sample_beta(mixup_alpha, count, generator), lam)
    if has_cutmix and cutmix_minmax is None:
        lam = torch.where(use_cutmix, sample_beta(cutmix_alpha, count, generator), lam)
    boxes = cutmix_boxes((height, width), lam, generator, cutmix_minmax, box_edge)
    boxes = torch.where((use_cutmix & mixed_flag)[:, None], boxes, torch.zeros_like(boxes))
    area = (boxes[:, 1] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 2]) / float(height * width)
    if correct_lam or cutmix_minmax is not None:
        lam = torch.where(use_cutmix, 1.0 - area, lam)
    lam = torch.where(mixed_flag, lam, torch.ones_like(lam))
    if paired:  # sample i and B - 1 - i share their draws; the middle of an odd batch stays unmixed
        middle = torch.ones(batch % 2, dtype=lam.dtype)
        lam = torch.cat([lam, middle, lam.flip(0)])
        use_cutmix = torch.cat([use_cutmix, torch.zeros(batch % 2, dtype=torch.bool), use_cutmix.flip(0)])
        mixed_flag = torch.cat([mixed_flag, torch.zeros(batch % 2, dtype=torch.bool), mixed_flag.flip(0)])
        boxes = torch.cat([boxes, torch.zeros(batch % 2, 4, dtype=boxes.dtype), boxes.flip(0)])
    cut = use_cutmix & mixed_flag
    inside = box_pixel_mask(boxes, (height, width))  # all False for samples without a box
    own_pixels = torch.where(cut[:, None, None], (~inside).double(), lam[:, None, None])
    perm = torch.arange(batch - 1, -1, -1, device=pixel_values.device)
    own = own_pixels.to(pixel_values.device, torch.float32).unsqueeze(1)
    blend = pixel_values.float() * own + pixel_values[perm].float() * (1.0 - own)
    if pixel_values.is_floating_point():
        mixed = blend.to(pixel_values.dtype)
    else:
        mixed = blend.round_().clamp_(0, torch.iinfo(pixel_values.dtype).max).to(pixel_values.dtype)
    if patch_size is None:
        patch_mask = lam.float().view(batch, 1, 1)
    else:
        covered = box_patch_mask(boxes, (height, width), patch_size, patch_mask_mode)
        grid = covered.shape[1:]
        patch_mask = torch.where(cut[:, None, None], 1.0 - covered, lam.float()[:, None, None].expand(-1, *grid))
    kinds = {bool(c) for c, m in zip(use_cutmix.tolist(), mixed_flag.tolist(), strict=True) if m}
    method = "none" if not kinds else "cutmix" if kinds == {True} else "mixup" if kinds == {False} else "mixup_cutmix"
    return MixOutput(
        pixel_values=mixed,
        partner=perm,
        patch_mask=patch_mask.to(pixel_values.device),
        lam_area=lam.float().to(pixel_values.device),
        method=method,
    )
