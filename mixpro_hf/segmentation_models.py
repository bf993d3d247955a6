"""The two decoders of MixPro's Table 3 as 🤗 semantic-segmentation models: Segmenter's linear decoder and its
Mask Transformer, over any backbone of :mod:`mixpro_hf.backbones` (or 🤗's ``SwinBackbone`` for CA-Swin).

Papers and code:
    - MixPro: Zhao et al., ICLR 2023, §4.2.1 and Table 3 (DeiT-S with a Linear and a Segmenter decoder on Pascal
      Context: "the patch embeddings z ∈ R^{p×d}" are decoded; the linear one's patch logits are reshaped and
      bilinearly upsampled).
    - Segmenter: Strudel et al., ICCV 2021, §3.2 (eq. for the Mask Transformer: class embeddings decoded jointly
      with the patch tokens, masks = L2-normalised patches x L2-normalised class embeddings). rstrudel/segmenter
      ``segm/model/decoder.py`` (``DecoderLinear``, ``MaskTransformer``), ``segm/model/segmenter.py`` (the input
      zero-padded to a multiple of the patch, logits upsampled to the padded size and cropped back),
      ``segm/model/blocks.py`` (pre-norm blocks), ``segm/model/factory.py`` (2 layers, width = the encoder's,
      heads = width / 64, MLP 4 x width, dropout 0.1).

Both models: ``model(pixel_values, labels=None)`` -> ``SemanticSegmenterOutput(loss, logits)``, logits
``(B, num_labels, H, W)`` at the input's size, the loss cross-entropy with ``config.loss_ignore_index`` (255, as
🤗 UperNet). The decoder reads the backbone's last feature map as tokens. Any input size works: the input is
zero-padded to a multiple of the backbone's total stride and the logits are cropped back.

This file imports nothing from ``mixpro_hf`` except the self-contained ``backbones`` (and its ``ca_swin``):
``save_pretrained`` copies all three next to the weights, so stock transformers loads a saved model with
``trust_remote_code=True``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from huggingface_hub.dataclasses import strict
from torch import nn
from transformers import (
    AutoBackbone,
    PreTrainedConfig,
    PreTrainedModel,
    SwinConfig,
    UperNetConfig,
    UperNetForSemanticSegmentation,
)
from transformers import initialization as init
from transformers.modeling_outputs import SemanticSegmenterOutput
from transformers.models.auto.configuration_auto import CONFIG_MAPPING

from .backbones import (
    DeiTBackbone,
    DeiTBackboneConfig,
    PvtBackbone,
    PvtBackboneConfig,
    ViTBackbone,
    ViTBackboneConfig,
)

__all__ = [
    "LinearSegmentationConfig",
    "LinearForSemanticSegmentation",
    "SegmenterConfig",
    "SegmenterForSemanticSegmentation",
    "UperNetWithBackboneConfig",
    "UperNetWithBackboneForSemanticSegmentation",
]

# Backbone configs and models this file knows without the Auto classes (stock transformers with remote code).
_LOCAL_BACKBONES: dict[str, tuple[type, type]] = {
    ViTBackboneConfig.model_type: (ViTBackboneConfig, ViTBackbone),
    DeiTBackboneConfig.model_type: (DeiTBackboneConfig, DeiTBackbone),
    PvtBackboneConfig.model_type: (PvtBackboneConfig, PvtBackbone),
}


# 🤗's UperNet builds its backbone with AutoBackbone: it must know these backbones wherever this file runs.
for _config_class, _model_class in _LOCAL_BACKBONES.values():
    AutoBackbone.register(_config_class, _model_class, exist_ok=True)


def _backbone_config(value: Any) -> PreTrainedConfig:
    """A backbone config from a config or its dict (``to_dict``), this file's types first, then 🤗's."""
    if isinstance(value, PreTrainedConfig):
        return value
    if not isinstance(value, dict) or "model_type" not in value:
        raise ValueError(f"backbone_config must be a backbone config or its dict with a model_type, got {value!r}")
    values = dict(value)
    model_type = values.pop("model_type")
    config_class = _LOCAL_BACKBONES[model_type][0] if model_type in _LOCAL_BACKBONES else CONFIG_MAPPING[model_type]
    return config_class(**values)


def _input_multiple(config: PreTrainedConfig) -> int:
    """Pixels a side that the backbone's input must be a multiple of: its total stride."""
    if isinstance(config, PvtBackboneConfig):
        return math.prod(config.patch_sizes)
    if isinstance(config, SwinConfig):
        return int(config.patch_size) * 2 ** (len(config.depths) - 1)
    patch = getattr(config, "patch_size", 1)
    return int(patch[0] if isinstance(patch, (list, tuple)) else patch)


class _SegmentationConfigBase(PreTrainedConfig):
    """Fields both decoders share; ``backbone_config`` is resolved without the Auto classes for this package's
    backbones, so that a saved model opens with remote code alone."""

    def __post_init__(self, **kwargs: Any) -> None:
        if self.backbone_config is None:
            raise ValueError(f"{type(self).__name__} needs a backbone_config (e.g. ViTBackboneConfig(...))")
        self.backbone_config = _backbone_config(self.backbone_config)
        super().__post_init__(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        output = super().to_dict()
        if isinstance(self.backbone_config, PreTrainedConfig):
            output["backbone_config"] = self.backbone_config.to_dict()
        return output


@strict
class LinearSegmentationConfig(_SegmentationConfigBase):
    """Segmenter's linear decoder (``DecoderLinear``): one linear layer per patch token.

    Args:
        backbone_config: the backbone's config (:mod:`mixpro_hf.backbones`, or a ``SwinConfig`` for CA-Swin).
        loss_ignore_index: label ignored by the loss (255).
        initializer_range: std of the decoder's truncated-normal init (Segmenter: 0.02).
    """

    model_type = "mixpro_linear_segmentation"

    backbone_config: dict | PreTrainedConfig | None = None
    loss_ignore_index: int = 255
    initializer_range: float = 0.02


@strict
class SegmenterConfig(_SegmentationConfigBase):
    """Segmenter's Mask Transformer decoder (``MaskTransformer``; defaults from ``segm/model/factory.py``).

    Args:
        backbone_config: the backbone's config.
        decoder_layers: transformer blocks of the decoder (2).
        decoder_hidden_size: width ``d`` of the decoder; ``None``: the encoder's width (Segmenter).
        decoder_num_heads: heads; ``None``: ``d // 64`` (at least 1).
        decoder_mlp_ratio: MLP width / ``d`` (4).
        decoder_dropout: dropout of attention and MLP (0.1).
        decoder_drop_path_rate: stochastic depth of the decoder's blocks (0.0).
        loss_ignore_index: label ignored by the loss (255).
        initializer_range: std of the truncated-normal init of linear layers and class embeddings (0.02).
    """

    model_type = "mixpro_segmenter"

    backbone_config: dict | PreTrainedConfig | None = None
    decoder_layers: int = 2
    decoder_hidden_size: int | None = None
    decoder_num_heads: int | None = None
    decoder_mlp_ratio: int = 4
    decoder_dropout: float = 0.1
    decoder_drop_path_rate: float = 0.0
    loss_ignore_index: int = 255
    initializer_range: float = 0.02


def _build_backbone(config: PreTrainedConfig) -> nn.Module:
    entry = _LOCAL_BACKBONES.get(config.model_type)
    return entry[1](config) if entry is not None else AutoBackbone.from_config(config)


class _SegmentationModelBase(PreTrainedModel):
    """Pad, backbone, decoder on the last feature map's tokens, upsample, crop, loss."""

    main_input_name = "pixel_values"
    input_modalities = ("image",)
    base_model_prefix = "segmentation"
    supports_gradient_checkpointing = True  # the backbone's blocks (🤗 GradientCheckpointingLayer)

    def _build_backbone(self) -> None:
        self.backbone = _build_backbone(self.config.backbone_config)
        self.input_multiple = _input_multiple(self.config.backbone_config)
        self.encoder_width = int(self.backbone.channels[-1])

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        """``(B, N, C)`` tokens -> ``(B, N, num_labels)`` patch logits."""
        raise NotImplementedError

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> SemanticSegmenterOutput:
        if pixel_values is None:
            raise ValueError(f"{type(self).__name__} needs pixel_values")
        height, width = pixel_values.shape[-2:]
        multiple = self.input_multiple
        pad_h, pad_w = (-height) % multiple, (-width) % multiple
        padded = nn.functional.pad(pixel_values, (0, pad_w, 0, pad_h)) if pad_h or pad_w else pixel_values
        feature_map = self.backbone(padded).feature_maps[-1]
        batch, _, grid_h, grid_w = feature_map.shape
        patch_logits = self.decode(feature_map.flatten(2).transpose(1, 2))
        patch_logits = patch_logits.transpose(1, 2).reshape(batch, -1, grid_h, grid_w)
        logits = nn.functional.interpolate(patch_logits, size=padded.shape[-2:], mode="bilinear", align_corners=False)
        logits = logits[..., :height, :width]
        loss = None
        if labels is not None:
            if labels.shape[-2:] != (height, width):
                raise ValueError(f"labels of size {tuple(labels.shape[-2:])} for images of size {(height, width)}")
            loss = nn.functional.cross_entropy(logits, labels.long(), ignore_index=self.config.loss_ignore_index)
        return SemanticSegmenterOutput(loss=loss, logits=logits)


class LinearForSemanticSegmentation(_SegmentationModelBase):
    """Backbone + Segmenter's linear decoder (``decoder.head``: ``Linear(encoder width, num_labels)`` per token)."""

    config_class = LinearSegmentationConfig
    config: LinearSegmentationConfig

    def __init__(self, config: LinearSegmentationConfig) -> None:
        super().__init__(config)
        self._build_backbone()
        self.decode_head = nn.Linear(self.encoder_width, config.num_labels)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if module is getattr(self, "decode_head", None):
            init.trunc_normal_(module.weight, std=self.config.initializer_range)
            init.zeros_(module.bias)

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.decode_head(tokens)


class SegmenterAttention(nn.Module):
    """Segmenter's multi-head self-attention (``qkv`` fused, ``proj``; dropout on the weights and the output)."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        self.dropout = dropout
        self.proj_drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, dim = x.shape
        qkv = self.qkv(x).reshape(batch, length, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        out = nn.functional.scaled_dot_product_attention(
            qkv[0], qkv[1], qkv[2], dropout_p=self.dropout if self.training else 0.0
        )
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(batch, length, dim)))


class SegmenterBlock(nn.Module):
    """Segmenter's pre-norm block: ``x + DropPath(Attn(LN(x)))``, ``x + DropPath(MLP(LN(x)))``."""

    def __init__(self, dim: int, heads: int, mlp_dim: int, dropout: float, drop_path: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = SegmenterAttention(dim, heads, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(
            nn.Linear(dim, mlp_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(mlp_dim, dim), nn.Dropout(dropout)
        )
        self.drop_path = drop_path

    def _drop_path(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.drop_path == 0.0:
            return x
        keep = 1.0 - self.drop_path
        return x * x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep) / keep

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self._drop_path(self.attn(self.norm1(x)))
        return x + self._drop_path(self.mlp(self.norm2(x)))


class SegmenterMaskTransformer(nn.Module):
    """Segmenter's ``MaskTransformer``: ``proj_dec``, ``num_labels`` class embeddings appended after the patch
    tokens, pre-norm blocks, ``decoder_norm``; patches x ``proj_patch`` and classes x ``proj_classes``, both
    L2-normalised; masks = their product, ``mask_norm`` (LayerNorm over the classes)."""

    def __init__(self, config: SegmenterConfig, encoder_width: int) -> None:
        super().__init__()
        dim = config.decoder_hidden_size or encoder_width
        heads = config.decoder_num_heads or max(1, dim // 64)
        if dim % heads:
            raise ValueError(f"Segmenter decoder width {dim} is not a multiple of its {heads} heads")
        rates = torch.linspace(0, config.decoder_drop_path_rate, config.decoder_layers).tolist()
        self.num_labels = config.num_labels
        self.proj_dec = nn.Linear(encoder_width, dim)
        self.blocks = nn.ModuleList(
            SegmenterBlock(dim, heads, config.decoder_mlp_ratio * dim, config.decoder_dropout, rate) for rate in rates
        )
        self.cls_emb = nn.Parameter(torch.zeros(1, config.num_labels, dim))
        self.proj_patch = nn.Parameter(torch.zeros(dim, dim))
        self.proj_classes = nn.Parameter(torch.zeros(dim, dim))
        self.decoder_norm = nn.LayerNorm(dim)
        self.mask_norm = nn.LayerNorm(config.num_labels)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.proj_dec(tokens)
        x = torch.cat((x, self.cls_emb.expand(x.shape[0], -1, -1)), dim=1)
        for block in self.blocks:
            x = block(x)
        x = self.decoder_norm(x)
        patches, classes = x[:, : -self.num_labels] @ self.proj_patch, x[:, -self.num_labels :] @ self.proj_classes
        patches = patches / patches.norm(dim=-1, keepdim=True)
        classes = classes / classes.norm(dim=-1, keepdim=True)
        return self.mask_norm(patches @ classes.transpose(1, 2))


class SegmenterForSemanticSegmentation(_SegmentationModelBase):
    """Backbone + Segmenter's Mask Transformer decoder (:class:`SegmenterMaskTransformer`)."""

    config_class = SegmenterConfig
    config: SegmenterConfig

    def __init__(self, config: SegmenterConfig) -> None:
        super().__init__(config)
        self._build_backbone()
        self.decode_head = SegmenterMaskTransformer(config, self.encoder_width)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        std = self.config.initializer_range
        head = getattr(self, "decode_head", None)
        if head is None:
            return
        if isinstance(module, nn.Linear) and any(module is m for m in head.modules()):
            init.trunc_normal_(module.weight, std=std)
            init.zeros_(module.bias)
        elif module is head:
            init.trunc_normal_(module.cls_emb, std=std)
            scale = module.proj_patch.shape[0] ** -0.5
            init.normal_(module.proj_patch, std=scale)
            init.normal_(module.proj_classes, std=scale)

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.decode_head(tokens)


class UperNetWithBackboneConfig(UperNetConfig):
    """:class:`transformers.UperNetConfig` whose ``backbone_config`` may be one of this package's backbones
    (ViT, DeiT, PVT v1), resolved without the Auto classes, so that a saved UperNet opens with remote code alone.
    (A UperNet over CA-Swin needs none of this: its backbone is 🤗's ``SwinBackbone``.)"""

    model_type = "mixpro_upernet"

    def __post_init__(self, **kwargs: Any) -> None:
        if isinstance(self.backbone_config, dict) and self.backbone_config.get("model_type") in _LOCAL_BACKBONES:
            self.backbone_config = _backbone_config(self.backbone_config)
        super().__post_init__(**kwargs)


class UperNetWithBackboneForSemanticSegmentation(UperNetForSemanticSegmentation):
    """🤗's ``UperNetForSemanticSegmentation``, unchanged, with :class:`UperNetWithBackboneConfig` (its backbone
    built by ``AutoBackbone``, which this file teaches the ViT, DeiT and PVT backbones)."""

    config_class = UperNetWithBackboneConfig
