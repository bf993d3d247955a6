"""Figures of a training run: the α / λ curves (paper Fig. 2a) and MaskMix samples with attention (Fig. 6)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .attention import capture_cls_attention, supports_cls_attention
from .labels import attention_lambda
from .mixing import maskmix

ALPHA_CURVE_FILE = "alpha_curve.png"
SAMPLES_FILE = "maskmix_samples.png"


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_alpha_curve(log_history: Sequence[dict[str, Any]], path: str | Path) -> Path | None:
    """Plot ``mixpro/alpha``, ``mixpro/lam``, ``mixpro/lam_area`` and ``mixpro/lam_attn`` against the step.

    Returns the path, or ``None`` when the history holds no MixPro statistics.
    """
    keys = ("mixpro/alpha", "mixpro/lam_attn", "mixpro/lam", "mixpro/lam_area")
    series = {k: [(e["step"], e[k]) for e in log_history if k in e and "step" in e] for k in keys}
    if not any(series.values()):
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for key, points in series.items():
        if points:
            steps, values = zip(*points, strict=True)
            ax.plot(steps, values, label=key.split("/")[1], linewidth=2 if key == "mixpro/alpha" else 1)
    ax.set_xlabel("training step")
    ax.set_ylabel("mean over logged steps")
    ax.set_ylim(0, 1)
    ax.set_title("Progressive factor α and label weights (cf. MixPro Fig. 2a)")
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


@torch.no_grad()
def plot_maskmix_samples(
    model: nn.Module,
    pixel_values: torch.Tensor,
    patch_size: int,
    mask_scale: int,
    path: str | Path,
    image_mean: Sequence[float] = (0.5, 0.5, 0.5),
    image_std: Sequence[float] = (0.5, 0.5, 0.5),
    seed: int = 0,
) -> Path:
    """A grid: for each sample its image, its partner, the MaskMix image and the class-token attention.

    ``pixel_values`` are normalised model inputs; the attention column is left out for models without
    a class token.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    mix = maskmix(
        pixel_values, patch_size, mask_scale, generator=torch.Generator().manual_seed(seed), tau_per_sample=True
    )
    attention = None
    if supports_cls_attention(model):
        with capture_cls_attention(model) as capture:
            model(pixel_values=mix.pixel_values.to(device))
        attention = capture.attention.cpu()
    model.train(was_training)

    mean = torch.tensor(image_mean).view(1, -1, 1, 1)
    std = torch.tensor(image_std).view(1, -1, 1, 1)

    def to_image(x: torch.Tensor) -> Any:
        return (x.cpu() * std + mean).clamp(0, 1)[0].permute(1, 2, 0).numpy()

    rows, grid = pixel_values.shape[0], mix.patch_mask.shape[1:]
    cols = 4 if attention is not None else 3
    plt = _pyplot()
    fig, axes = plt.subplots(rows, cols, figsize=(2.0 * cols, 2.0 * rows), squeeze=False)
    lam_attn = attention_lambda(attention, mix.patch_mask) if attention is not None else None
    for i in range(rows):
        panels = [
            (to_image(pixel_values[i : i + 1]), "sample"),
            (to_image(pixel_values[mix.partner[i] : mix.partner[i] + 1]), "partner"),
            (to_image(mix.pixel_values[i : i + 1]), f"MaskMix λ_area={mix.lam_area[i]:.2f}"),
        ]
        for j, (image, title) in enumerate(panels):
            axes[i, j].imshow(image)
            axes[i, j].set_title(title, fontsize=7)
        if attention is not None and lam_attn is not None:
            axes[i, 3].imshow(attention[i].view(*grid).numpy(), cmap="inferno")
            axes[i, 3].contour(mix.patch_mask[i].float().numpy(), levels=[0.5], colors="cyan", linewidths=0.8)
            axes[i, 3].set_title(f"CLS attention λ_attn={lam_attn[i]:.2f}", fontsize=7)
        for ax in axes[i]:
            ax.axis("off")
    fig.suptitle("MaskMix samples and class-token attention (cf. MixPro Fig. 6)", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
