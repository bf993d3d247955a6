"""Stochastic depth (drop path) for 🤗 ViT and DeiT, added by forward hooks: no forked model code, no weights.

🤗 ViT and DeiT have no drop path; the DeiT recipe trains them with 0.1, rising linearly over the blocks
(``torch.linspace(0, rate, depth)`` in timm and DeiT). ``add_drop_path`` hooks the dropout module that each block
applies to its attention output and to its MLP output right before the residual addition, and scales that branch per
sample by ``Bernoulli(1 - p_i) / (1 - p_i)`` in training mode only. The state_dict does not change, so a checkpoint
saved with drop path loads with stock ``transformers``; the masks come from torch's global RNG (``torch.manual_seed``
reproduces a run; gradient checkpointing replays them, as it restores the RNG state).

Which family gets what (``apply_drop_path`` chooses):
    - config: families whose config has ``drop_path_rate`` (BEiT, Data2VecVision, Dinov2, Swin, CA-Swin, PVT,
      ConvNeXt, …) and timm models through ``TimmWrapperConfig.model_args`` (CaiT, XCiT, timm ViT) build
      their own drop path from it when the model is built (BEiT/Data2Vec rise linearly; Dinov2 uses one rate for
      every block). Setting it on a built model changes nothing, so it goes on the config before building.
    - hooks: ViT-style blocks (pre-norm, one dropout before each residual addition; found as the first ModuleList of
      them, ``model.vit.layers`` in transformers 5.x, ``model.vit.encoder.layer`` before): ViT, DeiT (tested) and their
      copies with the same block forward in transformers 5.x (ViT-MAE, ViT-MSN, I-JEPA, AST, ViViT, VideoPrism);
      the transformers < 5 layout of ViT/DeiT (``attention.output.dropout``, ``output.dropout``) too.

Papers:
    - Deep Networks with Stochastic Depth - Huang et al., 2016 (https://arxiv.org/abs/1603.09382)
    - Training data-efficient image transformers & distillation through attention (DeiT) - Touvron et al., 2021
      (https://arxiv.org/abs/2012.12877)
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle
from transformers import PretrainedConfig

# Block classes whose forward is ViT's: ``x = x + dropout(attention(norm(x))); x = x + dropout(mlp(norm(x)))``.
VIT_STYLE_LAYERS = (
    "ViTLayer",
    "DeiTLayer",
    "ViTMAELayer",
    "ViTMSNLayer",
    "IJepaLayer",
    "ASTLayer",
    "VivitLayer",
    "VideoPrismLayer",
)
# Model types known to get hooks (``apply_drop_path`` on a config says "hooks" for them).
HOOK_MODEL_TYPES = ("vit", "deit", "vit_mae", "vit_msn", "ijepa", "audio-spectrogram-transformer", "vivit")

DropPathKind = Literal["config", "hooks", "unsupported"]


def drop_path(x: torch.Tensor, prob: float) -> torch.Tensor:
    """Zero whole samples of ``x`` with probability ``prob`` and scale the rest by ``1 / (1 - prob)``."""
    if prob <= 0.0:
        return x
    keep = 1.0 - prob
    mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
    return x * mask.div_(keep)


class DropPathHook:
    """Forward hook that applies ``drop_path`` to a module's output while the module is in training mode."""

    def __init__(self, prob: float) -> None:
        self.prob = prob
        self.handle: RemovableHandle | None = None

    def __call__(self, module: nn.Module, inputs: tuple[object, ...], output: torch.Tensor) -> torch.Tensor | None:
        if not module.training or self.prob <= 0.0:
            return None
        return drop_path(output, self.prob)

    def __repr__(self) -> str:
        return f"DropPathHook(prob={self.prob:g})"


def _check_rate(rate: float) -> None:
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= rate < 1.0:
        raise ValueError(f"drop path rate must be a number in [0, 1), got {rate!r}")


def _branch_dropouts(layer: nn.Module) -> list[nn.Module] | None:
    """The dropout module(s) applied to the block's two residual branches, or None for a block of another kind."""
    if type(layer).__name__ not in VIT_STYLE_LAYERS or hasattr(layer, "drop_path"):
        return None
    if isinstance(getattr(layer, "dropout", None), nn.Dropout) and hasattr(layer, "mlp"):
        return [layer.dropout]  # transformers 5.x: one dropout, called on both branches
    attention_output = getattr(getattr(layer, "attention", None), "output", None)
    dropouts = [getattr(attention_output, "dropout", None), getattr(getattr(layer, "output", None), "dropout", None)]
    if all(isinstance(d, nn.Dropout) for d in dropouts):
        return dropouts  # transformers < 5 layout: ViTSelfOutput.dropout, ViTOutput.dropout (before its residual add)
    return None


def vit_blocks(model: nn.Module) -> list[nn.Module]:
    """The encoder blocks of a ViT-style model (the first ModuleList made of them), or [] for another family."""
    for module in model.modules():
        if isinstance(module, nn.ModuleList) and len(module) and all(_branch_dropouts(m) for m in module):
            return list(module)
    return []


def _hooks(module: nn.Module) -> list[DropPathHook]:
    return [hook for hook in module._forward_hooks.values() if isinstance(hook, DropPathHook)]


def add_drop_path(model: nn.Module, rate: float) -> int:
    """Stochastic depth on a ViT-style model: block ``i`` of ``depth`` drops each residual branch with probability
    ``rate * i / (depth - 1)``, per sample, in training mode. Returns the number of blocks hooked (0 for ``rate=0``).

    Idempotent: a second call replaces the rates of the first (``rate=0`` removes them). Refuses a model without
    ViT-style blocks, and one whose family has its own ``config.drop_path_rate`` (use ``apply_drop_path``).
    """
    _check_rate(rate)
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "drop_path_rate"):
        raise ValueError(
            f"model type {config.model_type!r} has its own drop path: set config.drop_path_rate before building it"
        )
    blocks = vit_blocks(model)
    if not blocks:
        raise ValueError(f"{type(model).__name__} has no ViT-style encoder blocks to add drop path to")
    rates = torch.linspace(0.0, rate, len(blocks)).tolist()
    for block, prob in zip(blocks, rates, strict=True):
        for dropout in _branch_dropouts(block) or []:
            for hook in _hooks(dropout):
                if hook.handle is not None:
                    hook.handle.remove()
            if rate > 0.0:
                hook = DropPathHook(prob)
                hook.handle = dropout.register_forward_hook(hook)
    return len(blocks) if rate > 0.0 else 0


def drop_path_rates(model: nn.Module) -> list[float]:
    """The hooked drop path probability of each ViT-style block (0.0 where none); [] for other families."""
    rates = []
    for block in vit_blocks(model):
        hooks = [hook for dropout in _branch_dropouts(block) or [] for hook in _hooks(dropout)]
        rates.append(hooks[0].prob if hooks else 0.0)
    return rates


def apply_drop_path(config_or_model: PretrainedConfig | nn.Module, rate: float) -> DropPathKind:
    """Stochastic depth for any family. Call it on the config before building the model and on the model after:

        apply_drop_path(config, rate)          # families with config.drop_path_rate: sets it
        model = AutoModelForImageClassification.from_config(config)
        apply_drop_path(model, rate)           # ViT/DeiT: adds the hooks

    Returns "config" (the family's own drop path, from ``config.drop_path_rate``), "hooks" (ViT-style blocks: on a
    config nothing is done yet, the call on the model adds them) or "unsupported" (neither: nothing done; the caller
    warns when ``rate > 0``). On a built model of a "config" family whose ``config.drop_path_rate`` is not ``rate``
    it raises: the model has already built its drop path (pass ``drop_path_rate=rate`` to ``from_pretrained``).
    """
    _check_rate(rate)
    if isinstance(config_or_model, PretrainedConfig):
        config = config_or_model
        if config.model_type == "timm_wrapper":  # timm builds its own drop path from create_model's drop_path_rate
            config.model_args = {**(config.model_args or {}), "drop_path_rate": rate}
            return "config"
        if hasattr(config, "drop_path_rate"):
            config.drop_path_rate = rate
            return "config"
        return "hooks" if config.model_type in HOOK_MODEL_TYPES else "unsupported"
    model = config_or_model
    config = getattr(model, "config", None)
    if config is not None and config.model_type == "timm_wrapper":
        built = (config.model_args or {}).get("drop_path_rate", 0.0)
        if built != rate:
            raise ValueError(
                f"the timm model was built with drop_path_rate={built}, not {rate}: call apply_drop_path(config, rate) "
                "before building the model"
            )
        return "config"
    if config is not None and hasattr(config, "drop_path_rate"):
        if config.drop_path_rate != rate:
            raise ValueError(
                f"{config.model_type!r} built its drop path from config.drop_path_rate={config.drop_path_rate}, "
                f"not {rate}: call apply_drop_path(config, rate) before building the model"
            )
        return "config"
    if vit_blocks(model):
        add_drop_path(model, rate)
        return "hooks"
    return "unsupported"
