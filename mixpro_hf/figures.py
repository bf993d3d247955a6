"""Figures of a training run: the α / λ curves and MaskMix samples beside their class-token attention.

Papers:
    - MixPro: Zhao et al., "MixPro: Data Augmentation with MaskMix and Progressive Attention Labeling for
      Vision Transformer", ICLR 2023 (Fig. 2a: α over training; Fig. 6: MaskMix samples and attention).
      https://openreview.net/forum?id=dRjWsd3gwsm

* :func:`plot_alpha_curve` (Fig. 2a): the ``mixpro/*`` entries of a ``Trainer`` log history, each line
  labelled with the batches it averages over (see :func:`mixpro_hf.loss.mean_mix_stats`); a history without
  ``mixpro/alpha`` still gets a figure, with a line saying why there is no α curve.
* :func:`plot_maskmix_samples` (Fig. 6): one row per sample, from distinct classes
  (:func:`select_sample_pairs`), each mixed by a real MaskMix mask (:func:`mixpro_hf.mixing.maskmix_mask`)
  with a partner of another class, beside the class token's attention on the mixed image.

The ``*_figure`` functions return the matplotlib ``Figure`` (for tests and notebooks); the ``plot_*``
functions save it and close it. Matplotlib runs on its ``Agg`` backend.
"""

from __future__ import annotations

import logging
import math
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .attention import capture_cls_attention, supports_cls_attention
from .labels import attention_lambda
from .mixing import check_mask_grid, maskmix_mask
from .write_guard import atomic_savefig

if TYPE_CHECKING:
    from matplotlib.figure import Figure

logger = logging.getLogger(__name__)

ALPHA_CURVE_FILE = "alpha_curve.png"
SAMPLES_FILE = "maskmix_samples.png"
SAMPLE_ROWS = 6
OUTLINE_COLOR = "cyan"

# The lines of the α curve, in legend order: (log key, legend label naming the batches it averages over,
# matplotlib style). Colour, line style and marker all differ, and λ_area is drawn below λ as a wide pale
# line with hollow markers, so that λ stays visible on top of it where the two coincide (area-labelled batches).
ALPHA_CURVE_LINES: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("mixpro/alpha", "α (PAL batches)", {"color": "tab:blue", "linestyle": "-", "marker": "^", "linewidth": 2.2,
                                         "markersize": 6, "zorder": 5}),
    ("mixpro/lam_attn", "λ_attn (attention-labelled batches)", {"color": "tab:orange", "linestyle": ":",
                                                               "marker": "s", "linewidth": 1.6, "markersize": 5,
                                                               "zorder": 4}),
    ("mixpro/lam", "λ (all batches)", {"color": "tab:green", "linestyle": "--", "marker": "D", "linewidth": 1.4,
                                       "markersize": 4, "zorder": 3}),
    ("mixpro/lam_area", "λ_area (all batches)", {"color": "tab:gray", "linestyle": "-", "marker": "o",
                                                 "linewidth": 4.0, "alpha": 0.45, "markersize": 10,
                                                 "markerfacecolor": "none", "markeredgewidth": 1.5, "zorder": 2}),
    ("mixpro/learnable_alpha", "sigmoid(θ) (learnable α)", {"color": "tab:purple", "linestyle": "-.",
                                                            "marker": "v", "linewidth": 1.4, "markersize": 5,
                                                            "zorder": 4}),
)  # fmt: skip


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    try:
        atomic_savefig(fig, path, dpi=110)  # a full disk leaves no half-written PNG
    finally:
        _pyplot().close(fig)
    return path


# ----------------------------------------------------------------------------------------------
# Fig. 2a: α and λ over training


def no_alpha_reason(log_history: Sequence[dict[str, Any]]) -> str | None:
    """Why a log history has no α curve, or ``None`` when it has one."""
    keys = {key for entry in log_history for key in entry}
    if "mixpro/alpha" in keys:
        return None
    if not keys & {"mixpro/lam_area", "mixpro/lam"}:
        steps = max((int(entry["step"]) for entry in log_history if "step" in entry), default=0)
        during = f" during the run's {steps} training steps" if steps else ""
        return (
            f"No α curve: no mixpro/* statistics were logged{during} (logging_steps is larger than the number "
            "of steps, or no batch was mixed)."
        )
    if "mixpro/lam_attn" in keys:
        return "No α curve: α is logged for PAL batches only (mix_method=mixpro); this run used TransMix labels."
    return "No α curve: α is logged for PAL batches only (mix_method=mixpro); this run used area labels."


def alpha_curve_figure(log_history: Sequence[dict[str, Any]]) -> Figure:
    """The ``mixpro/*`` statistics of ``log_history`` against the training step (cf. MixPro Fig. 2a).

    Each logged value is a mean over the batches of one logging interval that have the statistic:
    λ_area and λ over every batch, λ_attn over attention-labelled batches, α over PAL batches.
    Every point carries a marker, so a run with a single logged step still shows its values.
    """
    from matplotlib.ticker import MaxNLocator

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.4), layout="constrained")
    logged_steps: set[int] = set()
    for key, label, style in ALPHA_CURVE_LINES:
        points = [(entry["step"], entry[key]) for entry in log_history if key in entry and "step" in entry]
        if points:
            steps, values = zip(*points, strict=True)
            logged_steps.update(steps)
            ax.plot(steps, values, label=label, markevery=max(1, math.ceil(len(steps) / 25)), **style)
    if len(logged_steps) == 1:  # a single logged step: whole-step ticks around it
        (step,) = logged_steps
        ax.set_xlim(step - 1, step + 1)
    ax.set_xlabel("training step")
    ax.set_ylabel("mean over the logging interval")
    ax.set_ylim(-0.02, 1.02)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    fig.suptitle("Progressive factor α and label weights λ (cf. MixPro Fig. 2a)", fontsize=10)
    reason = no_alpha_reason(log_history)
    if reason is not None:
        ax.set_title(textwrap.fill(reason, 80), fontsize=8.5, color="0.25")
    if ax.get_legend_handles_labels()[0]:
        fig.legend(loc="outside lower center", ncols=2, fontsize=8, frameon=False)
    return fig


def plot_alpha_curve(log_history: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Save :func:`alpha_curve_figure` to ``path``; a history without α gets the figure saying why."""
    return _save(alpha_curve_figure(log_history), path)


# ----------------------------------------------------------------------------------------------
# Fig. 6: MaskMix samples and class-token attention


def select_sample_pairs(
    labels: torch.Tensor | Sequence[int], seed: int = 0, count: int = SAMPLE_ROWS
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pick the rows of the MaskMix figure: ``(indices, partners)``, two ``(rows,)`` long tensors of dataset
    indices.

    Up to ``count`` samples from distinct classes (the classes and the sample of each class drawn from
    ``seed``), ordered by class; each row's partner is the next row's sample (a cyclic shift: a
    derangement, so a partner is never the sample itself and, with two classes or more, is of another
    class). A single chosen row is paired with a sample of another class; a one-class label set gives
    up to ``count`` distinct samples of that class.
    """
    labels = torch.as_tensor(labels).long().flatten()
    if labels.numel() < 2:
        raise ValueError(f"a MaskMix figure needs at least two samples, got {labels.numel()}")
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    generator = torch.Generator().manual_seed(seed)
    scores = torch.rand(labels.numel(), generator=generator, dtype=torch.float64)
    order = torch.argsort(labels.double() + scores)  # grouped by class, random order inside each class
    classes, counts = torch.unique_consecutive(labels[order], return_counts=True)
    first = torch.cumsum(counts, 0) - counts  # position in ``order`` of each class's random representative
    if classes.numel() == 1:
        indices = order[torch.randperm(labels.numel(), generator=generator)[: max(2, count)]]
        if count == 1:
            return indices[:1], indices[1:2]
        return indices, indices.roll(-1)
    chosen = torch.randperm(classes.numel(), generator=generator)[: max(2, count)].sort().values
    representatives = order[first[chosen]]
    if count == 1:
        return representatives[:1], representatives[1:2]
    return representatives, representatives.roll(-1)


def dataset_labels(dataset: Any, label_key: str = "labels", limit: int = 4096) -> torch.Tensor:
    """The label of every example of ``dataset``, read without decoding images where possible.

    A 🤗 ``Dataset`` with an on-the-fly transform is read without it: ``label_key``, else its ``ClassLabel``
    column, else a usual label column name. Any other dataset is indexed (its first ``limit`` examples).
    """
    if hasattr(dataset, "with_format") and hasattr(dataset, "column_names"):
        from datasets import ClassLabel

        from .data import LABEL_COLUMNS

        raw = dataset.with_format(None)
        class_labels = [name for name, feature in raw.features.items() if isinstance(feature, ClassLabel)]
        for name in (label_key, *class_labels, *LABEL_COLUMNS):
            if name in raw.column_names:
                return torch.as_tensor(raw[name]).long()
    return torch.as_tensor([int(dataset[i][label_key]) for i in range(min(len(dataset), limit))]).long()


@dataclass
class MaskMixRows:
    """The rows of the MaskMix figure.

    Attributes:
        pixel_values: ``(B, C, H, W)`` the MaskMix images ``M * x + (1 - M) * x_partner`` (eq. 7).
        patch_mask: ``(B, grid_h, grid_w)`` bool, True where the patch is the sample's own.
        lam_area: ``(B,)`` the share of the sample's own patches, strictly between 0 and 1.
        attention: ``(B, N)`` the class token's attention on the mixed images (last block, mean over
            heads), or ``None`` for a model without a class token.
        lam_attn: ``(B,)`` the share of that attention on the sample's own patches (eq. 5), or ``None``.
    """

    pixel_values: torch.Tensor
    patch_mask: torch.Tensor
    lam_area: torch.Tensor
    attention: torch.Tensor | None = None
    lam_attn: torch.Tensor | None = None


def mixed_maskmix_mask(
    batch_size: int, grid: tuple[int, int], mask_scale: int, generator: torch.Generator, max_draws: int = 100
) -> torch.Tensor:
    """MaskMix masks (:func:`mixpro_hf.mixing.maskmix_mask`, one τ per sample) with every row truly mixed:
    a row that keeps all or none of its patches is drawn again from ``generator``."""
    check_mask_grid(grid, mask_scale)
    own = maskmix_mask(batch_size, grid, mask_scale, generator=generator, tau_per_sample=True)
    for _ in range(max_draws):
        share = own.flatten(1).float().mean(1)
        unmixed = (share <= 0) | (share >= 1)
        if not unmixed.any():
            return own
        redraw = maskmix_mask(batch_size, grid, mask_scale, generator=generator, tau_per_sample=True)
        own = torch.where(unmixed.view(-1, 1, 1), redraw, own)
    raise RuntimeError(f"no mixed MaskMix mask in {max_draws} draws on a {grid} grid with mask_scale {mask_scale}")


@torch.no_grad()
def maskmix_rows(
    model: nn.Module | None,
    pixel_values: torch.Tensor,
    partner_pixel_values: torch.Tensor,
    patch_size: int,
    mask_scale: int,
    seed: int = 0,
) -> MaskMixRows:
    """Mix each sample with its partner by a MaskMix mask (eq. 6-7, λ_area in (0, 1)) and, for a model with a
    class token, capture the class token's attention on the mixed images and λ_attn (eq. 5)."""
    if pixel_values.shape != partner_pixel_values.shape:
        raise ValueError(
            f"samples {tuple(pixel_values.shape)} and partners {tuple(partner_pixel_values.shape)} differ in shape"
        )
    grid = (pixel_values.shape[-2] // patch_size, pixel_values.shape[-1] // patch_size)
    own = mixed_maskmix_mask(pixel_values.shape[0], grid, mask_scale, torch.Generator().manual_seed(seed))
    keep = own.repeat_interleave(patch_size, 1).repeat_interleave(patch_size, 2).unsqueeze(1)
    mixed = torch.where(keep.to(pixel_values.device), pixel_values, partner_pixel_values)  # eq. 7
    rows = MaskMixRows(mixed, own, own.flatten(1).float().mean(1))
    if model is not None and supports_cls_attention(model):
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        try:
            with capture_cls_attention(model) as capture:
                model(pixel_values=mixed.to(device))
        finally:
            model.train(was_training)
        rows.attention = capture.attention.float().cpu()
        rows.lam_attn = attention_lambda(rows.attention, own)
    return rows


def _outline_segments(mask: torch.Tensor) -> np.ndarray:
    """``(K, 2, 2)`` line segments, in patch-grid coordinates, around the True cells of a ``(gh, gw)`` mask."""
    padded = F.pad(mask.int(), (1, 1, 1, 1))
    vertical = (padded[1:-1, 1:] != padded[1:-1, :-1]).nonzero().float()  # (row, x) of edge x, row..row+1
    horizontal = (padded[1:, 1:-1] != padded[:-1, 1:-1]).nonzero().float()  # (y, col) of edge y, col..col+1
    v = torch.stack([vertical[:, [1, 0]], vertical[:, [1, 0]] + torch.tensor([0.0, 1.0])], 1)
    h = torch.stack([horizontal[:, [1, 0]], horizontal[:, [1, 0]] + torch.tensor([1.0, 0.0])], 1)
    return torch.cat([v, h]).numpy()


def _outline(segments: np.ndarray) -> Any:
    """The cyan cell outline, on a thin dark stroke so that it stands out on any image."""
    from matplotlib import patheffects
    from matplotlib.collections import LineCollection

    stroke = [patheffects.withStroke(linewidth=3.2, foreground="black")]
    return LineCollection(segments, colors=OUTLINE_COLOR, linewidths=1.6, path_effects=stroke)


def _class_name(label: int | None, label_names: Sequence[str] | None) -> str | None:
    if label is None:
        return None
    if label_names is not None and 0 <= label < len(label_names):
        return str(label_names[label])
    return f"class {label}"


def maskmix_samples_figure(
    model: nn.Module | None,
    pixel_values: torch.Tensor,
    patch_size: int,
    mask_scale: int,
    image_mean: Sequence[float] = (0.5, 0.5, 0.5),
    image_std: Sequence[float] = (0.5, 0.5, 0.5),
    seed: int = 0,
    *,
    partner_pixel_values: torch.Tensor | None = None,
    labels: torch.Tensor | Sequence[int] | None = None,
    partner_labels: torch.Tensor | Sequence[int] | None = None,
    label_names: Sequence[str] | None = None,
) -> Figure:
    """A grid (cf. MixPro Fig. 6): per row the sample, its partner, the MaskMix image and the class token's
    attention on it, with class names, λ_area, λ_attn, a colour bar and a legend.

    ``pixel_values`` are normalised model inputs. Without ``partner_pixel_values`` each row is paired with
    the next row (a derangement: never with itself). The attention column is left out for a model without
    a class token (or ``model=None``).
    """
    if partner_pixel_values is None:
        if pixel_values.shape[0] < 2:
            raise ValueError("a MaskMix figure needs two samples or an explicit partner")
        partner_pixel_values = pixel_values.roll(-1, 0)
        if labels is not None and partner_labels is None:
            partner_labels = torch.as_tensor(labels).roll(-1, 0)
    rows = maskmix_rows(model, pixel_values, partner_pixel_values, patch_size, mask_scale, seed)
    own_labels = [int(v) for v in torch.as_tensor(labels).flatten()] if labels is not None else None
    other_labels = [int(v) for v in torch.as_tensor(partner_labels).flatten()] if partner_labels is not None else None

    mean = torch.tensor(image_mean, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(image_std, dtype=torch.float32).view(1, -1, 1, 1)

    def to_images(x: torch.Tensor) -> np.ndarray:
        images = (x.detach().float().cpu() * std + mean).clamp(0, 1)
        return images.expand(-1, 3, -1, -1).permute(0, 2, 3, 1).numpy()

    samples, partners, mixed = (to_images(x) for x in (pixel_values, partner_pixel_values, rows.pixel_values))
    count, (grid_h, grid_w) = samples.shape[0], rows.patch_mask.shape[1:]
    extent = (0, grid_w, grid_h, 0)  # every panel in patch-grid coordinates, so outlines align with pixels
    share = None
    if rows.attention is not None:
        share = rows.attention / rows.attention.sum(1, keepdim=True).clamp_min(1e-12)
        share = share.view(count, grid_h, grid_w).numpy()
    cols = 4 if share is not None else 3

    from matplotlib.lines import Line2D

    plt = _pyplot()
    fig, axes = plt.subplots(
        count,
        cols,
        figsize=(2.1 * cols + (0.9 if share is not None else 0), 2.15 * count + 1.1),
        squeeze=False,
        layout="constrained",
    )
    image = None
    vmax = float(share.max()) if share is not None else 1.0
    for i in range(count):
        own_name = _class_name(own_labels[i] if own_labels else None, label_names)
        other_name = _class_name(other_labels[i] if other_labels else None, label_names)
        lam_area = float(rows.lam_area[i])
        titles = [
            f"sample: {own_name}" if own_name is not None else "sample",
            f"partner: {other_name}" if other_name is not None else "partner",
            f"MaskMix λ_area={lam_area:.2f}" + (f" ({own_name})" if own_name is not None else ""),
        ]
        for j, (picture, title) in enumerate(zip((samples[i], partners[i], mixed[i]), titles, strict=True)):
            axes[i, j].imshow(picture, interpolation="nearest", extent=extent)
            axes[i, j].set_title(textwrap.fill(title, 30, break_long_words=False), fontsize=8)
        segments = _outline_segments(rows.patch_mask[i])
        axes[i, 2].add_collection(_outline(segments))
        if share is not None and rows.lam_attn is not None:
            image = axes[i, 3].imshow(
                share[i], cmap="inferno", vmin=0.0, vmax=vmax, interpolation="nearest", extent=extent
            )
            axes[i, 3].add_collection(_outline(segments))
            axes[i, 3].set_title(f"CLS attention λ_attn={float(rows.lam_attn[i]):.2f}", fontsize=8)
        for ax in axes[i]:
            ax.set_xticks([])
            ax.set_yticks([])
    if image is not None:
        label = "class-token attention per patch (dashed: uniform)"
        colorbar = fig.colorbar(image, ax=axes[:, 3], shrink=0.6, label=label)
        colorbar.ax.axhline(1.0 / (grid_h * grid_w), color="0.55", linewidth=2.0, linestyle="--")
    legend = [
        ("the sample's own cells (MaskMix mask M); the rest is the partner's", OUTLINE_COLOR),
        ("λ_area: share of the sample's own patches (its label weight by area, eq. 7)", None),
    ]
    if share is not None:
        legend.append(
            (
                "λ_attn: share of the class token's attention (CLS attention: last block, mean over heads)\n"
                "on the sample's own patches (eq. 5)",
                None,
            )
        )
    handles = [
        Line2D([], [], color=color, linewidth=2, label=text) if color else Line2D([], [], linestyle="none", label=text)
        for text, color in legend
    ]
    fig.legend(handles=handles, loc="outside lower center", fontsize=8, frameon=False, handlelength=2.5)
    fig.suptitle("MaskMix samples and class-token attention (cf. MixPro Fig. 6)", fontsize=10)
    return fig


def plot_maskmix_samples(
    model: nn.Module | None,
    pixel_values: torch.Tensor,
    patch_size: int,
    mask_scale: int,
    path: str | Path,
    image_mean: Sequence[float] = (0.5, 0.5, 0.5),
    image_std: Sequence[float] = (0.5, 0.5, 0.5),
    seed: int = 0,
    *,
    partner_pixel_values: torch.Tensor | None = None,
    labels: torch.Tensor | Sequence[int] | None = None,
    partner_labels: torch.Tensor | Sequence[int] | None = None,
    label_names: Sequence[str] | None = None,
) -> Path:
    """Save :func:`maskmix_samples_figure` to ``path``."""
    fig = maskmix_samples_figure(
        model,
        pixel_values,
        patch_size,
        mask_scale,
        image_mean,
        image_std,
        seed,
        partner_pixel_values=partner_pixel_values,
        labels=labels,
        partner_labels=partner_labels,
        label_names=label_names,
    )
    return _save(fig, path)


def plot_dataset_maskmix_samples(
    model: nn.Module | None,
    dataset: Any,
    patch_size: int,
    mask_scale: int,
    path: str | Path,
    image_mean: Sequence[float] = (0.5, 0.5, 0.5),
    image_std: Sequence[float] = (0.5, 0.5, 0.5),
    seed: int = 0,
    label_names: Sequence[str] | None = None,
    count: int = SAMPLE_ROWS,
) -> Path | None:
    """:func:`plot_maskmix_samples` for up to ``count`` examples of ``dataset`` (items with ``pixel_values``
    and ``labels``) from distinct classes, chosen by :func:`select_sample_pairs` from ``seed``; ``None``
    (with an info line) when the dataset has fewer than two examples."""
    labels = dataset_labels(dataset)
    if labels.numel() < 2:
        logger.info("no %s: the evaluation set has %d example(s), MaskMix needs two", Path(path).name, len(labels))
        return None
    indices, partners = select_sample_pairs(labels, seed, count)

    def load(rows: torch.Tensor) -> torch.Tensor:
        return torch.stack([torch.as_tensor(dataset[int(i)]["pixel_values"]) for i in rows])

    return plot_maskmix_samples(
        model,
        load(indices),
        patch_size,
        mask_scale,
        path,
        image_mean,
        image_std,
        seed,
        partner_pixel_values=load(partners),
        labels=labels[indices],
        partner_labels=labels[partners],
        label_names=label_names,
    )
