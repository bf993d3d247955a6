"""🤗 backbones (``BackboneMixin`` feature maps) for the families 🤗 has none for: ViT, DeiT, PVT v1, CA-Swin.

Papers:
    - MixPro: Zhao et al., ICLR 2023, §4.2 (DeiT-S in a segmentation model, Table 3; PVT-S in Mask R-CNN, Table 4).
    - Segmenter: Strudel et al., ICCV 2021 (the patch tokens of a ViT as the decoder's input). https://arxiv.org/abs/2105.05633
    - BEiT: Bao et al., ICLR 2022 (the simple feature pyramid of four blocks: deconv x4, x2, identity,
      max-pool, as 🤗 ``BeitBackbone``'s ``add_fpn``). https://arxiv.org/abs/2106.08254
    - PVT: Wang et al., ICCV 2021 (whai362/PVT ``detection/pvt.py``: position embeddings bilinearly resized to
      each stage's grid). https://arxiv.org/abs/2102.12122

What each backbone returns (``BackboneOutput.feature_maps``, each ``(B, C, H, W)``):

* :class:`ViTBackbone` / :class:`DeiTBackbone`: stage ``k`` is the output of block ``k`` (``stem`` the
  embeddings), its patch tokens (class and distillation tokens dropped) after the checkpoint's final LayerNorm
  (``apply_layernorm``, as 🤗 Dinov2's backbone) as a map at stride = patch. With ``add_fpn`` the maps go through
  BEiT's simple pyramid and come out at strides patch/4, patch/2, patch, 2 x patch (its deconvolutions and
  BatchNorm are new weights): four stages chosen, one per scale (BEiT), or one stage for all four scales (ViTDet's
  simple pyramid idea, Li et al., ECCV 2022, https://arxiv.org/abs/2203.16527). Position embeddings are
  bicubically interpolated (🤗 ``interpolate_pos_encoding``) for inputs of another size; sides must be multiples
  of the patch.
* :class:`PvtBackbone`: the four stages of PVT v1 at strides 4, 8, 16, 32 (🤗 ``pvt`` layout). The last stage runs
  as in classification (its class token takes part in attention and is dropped from the map) and its map gets the
  checkpoint's final LayerNorm. Position embeddings are resized bilinearly for other sizes, as PVT's own dense
  code does (🤗 ``PvtModel`` itself cannot run at another size).
* CA-Swin: 🤗's own ``SwinBackbone`` (:func:`ca_swin_backbone_config`): the Swin stages without the class-attention
  block (which only updates the class token, so the last stage's tokens never pass through it); the per-stage
  LayerNorms of ``SwinBackbone`` are new, as for any Swin checkpoint in 🤗. :class:`CaSwinBackbone` lets
  ``AutoBackbone.from_pretrained`` open a CA-Swin checkpoint directly.

Weights keep the names of the classification checkpoints (``vit.*``, ``deit.*``, ``pvt.*``, ``swin.*``), so a
classifier's state dict loads into a backbone by name. This file imports nothing from ``mixpro_hf`` except the
self-contained ``ca_swin``: it is saved next to segmentation models as remote code.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from huggingface_hub.dataclasses import strict
from torch import nn
from transformers import (
    DeiTConfig,
    DeiTModel,
    DeiTPreTrainedModel,
    PreTrainedConfig,
    PvtConfig,
    PvtModel,
    PvtPreTrainedModel,
    SwinBackbone,
    SwinConfig,
    ViTConfig,
    ViTModel,
    ViTPreTrainedModel,
)
from transformers.backbone_utils import BackboneConfigMixin, BackboneMixin
from transformers.modeling_outputs import BackboneOutput

from .ca_swin import CaSwinConfig

__all__ = [
    "CaSwinBackbone",
    "DeiTBackbone",
    "DeiTBackboneConfig",
    "PvtBackbone",
    "PvtBackboneConfig",
    "ViTBackbone",
    "ViTBackboneConfig",
    "backbone_config_from",
    "ca_swin_backbone_config",
]

# Keys of a classifier's config that do not describe the encoder.
_NOT_ENCODER = ("model_type", "architectures", "transformers_version", "auto_map", "out_features", "out_indices")


def _block_stage_names(num_blocks: int) -> list[str]:
    return ["stem"] + [f"stage{index}" for index in range(1, num_blocks + 1)]


def _set_stages(config: Any, stage_names: list[str], kwargs: dict[str, Any]) -> None:
    config.stage_names = stage_names
    config.set_output_features_output_indices(
        out_indices=kwargs.pop("out_indices", None), out_features=kwargs.pop("out_features", None)
    )


@strict
class _TokenBackboneConfig(BackboneConfigMixin, PreTrainedConfig):
    """The backbone fields of :class:`ViTBackboneConfig` and :class:`DeiTBackboneConfig`: ``out_features`` /
    ``out_indices`` over ``stem``, ``stage1`` ... ``stageN``, ``apply_layernorm``, ``add_fpn``."""

    _out_features: list[str] | None = None
    _out_indices: list[int] | None = None
    apply_layernorm: bool = True
    add_fpn: bool = False
    batch_norm_eps: float = 1e-5

    def __post_init__(self, **kwargs: Any) -> None:
        _set_stages(self, _block_stage_names(self.num_hidden_layers), kwargs)
        super().__post_init__(**kwargs)


@strict
class ViTBackboneConfig(_TokenBackboneConfig, ViTConfig):
    """:class:`transformers.ViTConfig` + the backbone fields."""

    model_type = "mixpro_vit_backbone"


@strict
class DeiTBackboneConfig(_TokenBackboneConfig, DeiTConfig):
    """:class:`transformers.DeiTConfig` + the backbone fields."""

    model_type = "mixpro_deit_backbone"


@strict
class PvtBackboneConfig(BackboneConfigMixin, PvtConfig):
    """:class:`transformers.PvtConfig` + ``out_features`` / ``out_indices`` over ``stage1`` ... ``stage4``."""

    model_type = "mixpro_pvt_backbone"

    _out_features: list[str] | None = None
    _out_indices: list[int] | None = None

    def __post_init__(self, **kwargs: Any) -> None:
        _set_stages(self, [f"stage{index}" for index in range(1, self.num_encoder_blocks + 1)], kwargs)
        super().__post_init__(**kwargs)


BACKBONE_CONFIG_FOR = {"vit": ViTBackboneConfig, "deit": DeiTBackboneConfig, "pvt": PvtBackboneConfig}


def backbone_config_from(config: Any, **backbone_kwargs: Any) -> Any:
    """The backbone config of a classifier's config (``vit``, ``deit``, ``pvt``, ``ca_swin``, or one of this
    module's backbone configs), with ``backbone_kwargs`` (``out_indices``, ``out_features``, ``add_fpn``, ...)."""
    model_type = getattr(config, "model_type", None)
    if model_type == "ca_swin":
        return ca_swin_backbone_config(config, **backbone_kwargs)
    config_class = next((c for c in BACKBONE_CONFIG_FOR.values() if isinstance(config, c)), None)
    config_class = config_class or BACKBONE_CONFIG_FOR.get(model_type)
    if config_class is None:
        raise ValueError(f"no mixpro_hf backbone for model type {model_type!r} (known: vit, deit, pvt, ca_swin)")
    values = {k: v for k, v in config.to_dict().items() if k not in _NOT_ENCODER}
    if isinstance(config, BackboneConfigMixin) and not {"out_indices", "out_features"} & set(backbone_kwargs):
        backbone_kwargs["out_indices"] = list(config.out_indices)
    for key in ("stage_names", "_out_features", "_out_indices"):
        values.pop(key, None)
    return config_class(**{**values, **backbone_kwargs})


def ca_swin_backbone_config(config: Any, **backbone_kwargs: Any) -> SwinConfig:
    """The :class:`transformers.SwinConfig` of a CA-Swin's encoder: the same stages, the last one block shorter
    (the class-attention block, which updates only the class token, is left out); every stage out by default."""
    values = {k: v for k, v in config.to_dict().items() if k not in _NOT_ENCODER}
    for key in ("stage_names", "_out_features", "_out_indices"):
        values.pop(key, None)
    depths = list(values["depths"])
    if depths[-1] < 2:
        raise ValueError(
            f"CA-Swin depths {depths}: the last stage has no Swin block besides the class-attention block, so it "
            "has no feature map to give"
        )
    values["depths"] = depths[:-1] + [depths[-1] - 1]
    if not {"out_indices", "out_features"} & set(backbone_kwargs):
        backbone_kwargs["out_indices"] = list(range(1, len(depths) + 1))
    return SwinConfig(**{**values, **backbone_kwargs})


def _check_multiple(pixel_values: torch.Tensor, stride: int, what: str) -> None:
    height, width = pixel_values.shape[-2:]
    if height % stride or width % stride:
        raise ValueError(
            f"{what}: input {height}x{width} is not a multiple of {stride} pixels a side: pad or resize it "
            "(LinearForSemanticSegmentation and SegmenterForSemanticSegmentation pad and crop back)"
        )


class SimpleFeaturePyramid(nn.Module):
    """BEiT's simple feature pyramid (🤗 ``BeitBackbone`` ``add_fpn``): four same-stride maps to strides x4 (two
    2x2 deconvolutions with BatchNorm + GELU between), x2 (one deconvolution), x1 (identity), /2 (max-pool)."""

    def __init__(self, channels: int, batch_norm_eps: float) -> None:
        super().__init__()
        self.fpn1 = nn.Sequential(
            nn.ConvTranspose2d(channels, channels, kernel_size=2, stride=2),
            nn.BatchNorm2d(channels, eps=batch_norm_eps),
            nn.GELU(),
            nn.ConvTranspose2d(channels, channels, kernel_size=2, stride=2),
        )
        self.fpn2 = nn.Sequential(nn.ConvTranspose2d(channels, channels, kernel_size=2, stride=2))
        self.fpn3 = nn.Identity()
        self.fpn4 = nn.MaxPool2d(kernel_size=2, stride=2)

    def forward(self, feature_maps: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        operations = (self.fpn1, self.fpn2, self.fpn3, self.fpn4)
        return tuple(operation(feature_map) for operation, feature_map in zip(operations, feature_maps, strict=True))


class _PlainViTFeatures:
    """The forward shared by :class:`ViTBackbone` and :class:`DeiTBackbone` (``self.encoder_model`` is the 🤗
    ``ViTModel`` / ``DeiTModel``; ``num_prefix_tokens`` the class and distillation tokens)."""

    num_prefix_tokens: int
    encoder_class: type
    config_class: type

    def __init__(self, config: Any) -> None:
        if not isinstance(config, self.config_class):
            config = backbone_config_from(config, **_stage_selection(config))
        super().__init__(config)
        # named as in the classifier (`vit`, `deit`), so that its weights load by name
        setattr(self, self.base_model_prefix, self.encoder_class(config, add_pooling_layer=False))
        self.num_features = [config.hidden_size] * (config.num_hidden_layers + 1)
        if config.add_fpn:
            if len(self.out_features) not in (1, 4):
                raise ValueError(
                    f"add_fpn needs four out_features (BEiT: one block per scale) or one (ViTDet: the four scales "
                    f"from one block), got {self.out_features}"
                )
            self.fpn = SimpleFeaturePyramid(config.hidden_size, config.batch_norm_eps)
        self.post_init()

    @property
    def encoder_model(self) -> nn.Module:
        return getattr(self, self.base_model_prefix)

    @property
    def patch_size(self) -> int:
        patch = self.config.patch_size
        return int(patch[0] if isinstance(patch, (list, tuple)) else patch)

    @property
    def channels(self) -> list[int]:
        """Channels of each output map (four with ``add_fpn``, whether from one block or four)."""
        return [self.config.hidden_size] * (4 if self.config.add_fpn else len(self.out_features))

    @property
    def feature_strides(self) -> list[int]:
        """Pixels per map cell of each output map."""
        if self.config.add_fpn:
            return [self.patch_size // 4, self.patch_size // 2, self.patch_size, self.patch_size * 2]
        return [self.patch_size] * len(self.out_features)

    def forward(
        self,
        pixel_values: torch.Tensor,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> BackboneOutput:
        _check_multiple(pixel_values, self.patch_size, type(self).__name__)
        model = self.encoder_model
        batch, _, height, width = pixel_values.shape
        dtype = model.embeddings.patch_embeddings.projection.weight.dtype
        hidden_states = model.embeddings(pixel_values.to(dtype), interpolate_pos_encoding=True)
        all_states = [hidden_states]
        for layer in model.layers:
            hidden_states = layer(hidden_states, None)
            all_states.append(hidden_states)
        grid = (height // self.patch_size, width // self.patch_size)
        feature_maps = []
        for stage, state in zip(self.stage_names, all_states, strict=True):
            if stage in self.out_features:
                if self.config.apply_layernorm:
                    state = model.layernorm(state)
                patches = state[:, self.num_prefix_tokens :]
                feature_maps.append(patches.transpose(1, 2).reshape(batch, -1, *grid))
        maps = tuple(feature_maps)
        if self.config.add_fpn:
            maps = self.fpn(maps * 4 if len(maps) == 1 else maps)
        return BackboneOutput(feature_maps=maps, hidden_states=tuple(all_states) if output_hidden_states else None)


class ViTBackbone(_PlainViTFeatures, BackboneMixin, ViTPreTrainedModel):
    """A 🤗 ViT (``ViTForImageClassification``'s ``vit.*`` weights) as a backbone; see the module docstring.

    Built from a :class:`ViTBackboneConfig` or a plain ``ViTConfig`` (whose ``out_indices`` / ``out_features``, if
    set on it, are read), so that ``AutoBackbone.from_config(vit_config)`` and ``ViTBackbone.from_pretrained(
    vit_checkpoint, out_indices=[...])`` work after ``import mixpro_hf``."""

    config_class = ViTBackboneConfig
    encoder_class = ViTModel
    num_prefix_tokens = 1


class DeiTBackbone(_PlainViTFeatures, BackboneMixin, DeiTPreTrainedModel):
    """A 🤗 DeiT (``DeiTForImageClassification``'s ``deit.*`` weights, class and distillation tokens) as a
    backbone; as :class:`ViTBackbone`."""

    config_class = DeiTBackboneConfig
    encoder_class = DeiTModel
    num_prefix_tokens = 2


def _stage_selection(config: Any) -> dict[str, Any]:
    """``out_indices`` / ``out_features`` given to a plain config as extra attributes (``AutoBackbone``)."""
    return {k: getattr(config, k) for k in ("out_indices", "out_features") if getattr(config, k, None) is not None}


class PvtBackbone(BackboneMixin, PvtPreTrainedModel):
    """A 🤗 PVT v1 (``PvtForImageClassification``'s ``pvt.*`` weights) as a four-stage backbone; see the module
    docstring. Built from a :class:`PvtBackboneConfig` or a plain ``PvtConfig`` (every stage out by default)."""

    config_class = PvtBackboneConfig
    has_attentions = False

    def __init__(self, config: PvtConfig) -> None:
        if not isinstance(config, PvtBackboneConfig):
            selection = _stage_selection(config) or {"out_indices": list(range(config.num_encoder_blocks))}
            config = backbone_config_from(config, **selection)
        super().__init__(config)
        self.num_features = list(config.hidden_sizes)
        self.pvt = PvtModel(config)
        self.post_init()

    @property
    def feature_strides(self) -> list[int]:
        strides = [math.prod(self.config.patch_sizes[: index + 1]) for index in range(len(self.stage_names))]
        return [strides[self.stage_names.index(stage)] for stage in self.out_features]

    @staticmethod
    def _position_embeddings(embeddings: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """Stage position embeddings ``(1, N, C)`` on their square pre-training grid, bilinearly resized to
        ``height x width`` (PVT's ``_get_pos_embed``)."""
        side = math.isqrt(embeddings.shape[1])
        if side * side != embeddings.shape[1]:
            raise ValueError(f"PVT position embeddings of {embeddings.shape[1]} tokens are not a square grid")
        if (side, side) == (height, width):
            return embeddings
        grid = embeddings.reshape(1, side, side, -1).permute(0, 3, 1, 2)
        resized = nn.functional.interpolate(grid, size=(height, width), mode="bilinear", align_corners=False)
        return resized.flatten(2).transpose(1, 2)

    def forward(
        self,
        pixel_values: torch.Tensor,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> BackboneOutput:
        _check_multiple(pixel_values, math.prod(self.config.patch_sizes), "PvtBackbone")
        encoder = self.pvt.encoder
        batch = pixel_values.shape[0]
        hidden_states, feature_maps, all_states = pixel_values, [], []
        last = len(encoder.block) - 1
        for index, (embed, layers) in enumerate(zip(encoder.patch_embeddings, encoder.block, strict=True)):
            tokens = embed.projection(hidden_states)
            height, width = tokens.shape[-2:]
            tokens = embed.layer_norm(tokens.flatten(2).transpose(1, 2))
            if embed.cls_token is not None:
                positions = self._position_embeddings(embed.position_embeddings[:, 1:], height, width)
                positions = torch.cat((embed.position_embeddings[:, :1], positions), dim=1)
                tokens = torch.cat((embed.cls_token.expand(batch, -1, -1), tokens), dim=1)
            else:
                positions = self._position_embeddings(embed.position_embeddings, height, width)
            tokens = embed.dropout(tokens + positions)
            for layer in layers:
                tokens = layer(tokens, height, width)[0]
            if index == last:
                tokens = encoder.layer_norm(tokens)
            if embed.cls_token is not None:
                tokens = tokens[:, 1:]
            hidden_states = tokens.transpose(1, 2).reshape(batch, -1, height, width)
            all_states.append(hidden_states)
            if self.stage_names[index] in self.out_features:
                feature_maps.append(hidden_states)
        return BackboneOutput(
            feature_maps=tuple(feature_maps), hidden_states=tuple(all_states) if output_hidden_states else None
        )


class CaSwinBackbone(SwinBackbone):
    """``SwinBackbone`` opened from a CA-Swin config or checkpoint (``AutoBackbone.from_pretrained`` of a CA-Swin
    folder): the config becomes :func:`ca_swin_backbone_config`'s ``SwinConfig``; the weights keep their names."""

    config_class = CaSwinConfig

    def __init__(self, config: Any) -> None:
        if getattr(config, "model_type", None) == "ca_swin":
            config = ca_swin_backbone_config(config, **_stage_selection(config))
        super().__init__(config)
