"""The models of MixPro's Table 1, each as a preset: the paper's architecture and its family's training recipe.

Papers and the official training code each preset follows:
    - MixPro: Zhao et al., ICLR 2023, Table 1 and §4.1 (300 epochs, 400 for CaiT and XCiT; AdamW, lr 1e-3 at batch
      1024, weight decay 0.05, cosine, 20 warm-up epochs for every model, "following TransMix").
    - DeiT: Touvron et al., ICML 2021 (facebookresearch/deit ``main.py``: drop path 0.1, no gradient clipping).
    - PVT: Wang et al., ICCV 2021 (whai362/PVT ``classification/configs/pvt/pvt_{tiny,small,medium,large}.py``:
      drop path 0.1 / 0.1 / 0.3 / 0.3, gradient clipping 1.0 for PVT-M and PVT-L, none for PVT-T and PVT-S).
    - CaiT: Touvron et al., ICCV 2021 (paper's training settings / facebookresearch/deit ``cait_models.py``:
      stochastic depth 0.05 for XXS-24, 0.1 for XXS-36, LayerScale init 1e-5 (timm's ``cait_xxs*_224``); the DeiT
      code's ``main.py``: no clipping).
    - XCiT: Ali et al., NeurIPS 2021: 400 epochs (the paper's §4.1 and README); drop path 0.05 for S12 from the
      facebookresearch/xcit README's training command (``--model xcit_small_12_p16 ... --drop-path 0.05``). The
      README sends every other model's hyper-parameters to Table B.1 of the paper's supplement, which could not be
      retrieved here: the values 0.05 / 0.1 / 0.15 / 0.25 for T12 / T24 / M24 / L24 are unverified (not sourced).
      LayerScale eta 1.0 for T12 and S12, 1e-5 for T24, M24 and L24, as facebookresearch/xcit ``xcit.py`` and
      timm's model definitions build them; no clipping.
    - Swin: Liu et al., ICCV 2021 (microsoft/Swin-Transformer ``configs/swin_{tiny,small}_patch4_window7_224.yaml``
      and ``config.py``: drop path 0.2 / 0.3, gradient clipping 5.0 before the optimizer step, 20 warm-up epochs).

Every preset builds at 224², LayerNorm ε as its family's official code (1e-6 for DeiT/PVT/CaiT/XCiT, 1e-5 for Swin's
``nn.LayerNorm``). The MaskMix cell (``mask_scale`` tokens of the grid the class token attends to) is 56 pixels for
the DeiT presets (the reference code: patch 14, 4 x 4 cells), 64 pixels for the others (16-pixel tokens x 4 for CaiT
and XCiT, 32-pixel last-stage tokens x 2 for PVT and CA-Swin; the last cell cropped as in the reference code).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from transformers import PretrainedConfig, PvtConfig, TimmWrapperConfig, ViTConfig

from .ca_swin import CaSwinConfig

__all__ = ["MODEL_PRESETS", "ModelPreset", "preset_config"]


@dataclass(frozen=True)
class ModelPreset:
    """One Table 1 model.

    Attributes:
        name: the ``--model_preset`` value.
        family: DeiT, PVT, CaiT, XCiT or CA-Swin.
        paper_params: millions of parameters in MixPro Table 1 (1,000 classes); for the two presets not in Table 1
            (``in_table`` False: CaiT-XXS-24 and XCiT-T12, whose names are often taken for Table 1's CaiT-XXS and
            XCiT-T, but whose sizes are not: Table 1's 17.3 M / 3.8 GFLOPs and 12 M / 2.3 GFLOPs are those of
            CaiT-XXS-36 and XCiT-T24), the count in the family's paper.
        config: keyword arguments of the config (``kind`` says which).
        kind: ``"vit"`` (🤗 ViT with DeiT sizes: the paper's DeiT is not distilled), ``"pvt"`` (🤗 PVT), ``"timm"``
            (``TimmWrapperConfig(architecture=..., model_args=...)``) or ``"ca_swin"`` (:mod:`mixpro_hf.ca_swin`).
        recipe: training flags whose default differs from the DeiT recipe (``--recipe deit``), as strings.
        differs: what differs from DeiT's recipe, in words (the README's presets table).
    """

    name: str
    family: str
    paper_params: float
    kind: str
    config: dict[str, Any]
    recipe: dict[str, str] = field(default_factory=dict)
    differs: str = "-"
    in_table: bool = True


def _deit(name: str, hidden: int, heads: int, params: float) -> ModelPreset:
    config = dict(
        hidden_size=hidden,
        num_hidden_layers=12,
        num_attention_heads=heads,
        intermediate_size=4 * hidden,
        image_size=224,
        patch_size=14,  # the reference code's DeiT geometry: a 16 x 16 grid, 56-pixel cells at mask_scale 4
        layer_norm_eps=1e-6,
    )
    return ModelPreset(name, "DeiT", params, "vit", config, {"mask_scale": "4"}, "patch 14 (reference code)")


def _pvt(name: str, depths: list[int], params: float, drop_path: float, clip: float | None) -> ModelPreset:
    config = dict(
        image_size=224,
        num_encoder_blocks=4,
        depths=depths,
        sequence_reduction_ratios=[8, 4, 2, 1],
        hidden_sizes=[64, 128, 320, 512],
        patch_sizes=[4, 2, 2, 2],
        strides=[4, 2, 2, 2],
        num_attention_heads=[1, 2, 5, 8],
        mlp_ratios=[8, 8, 4, 4],
        layer_norm_eps=1e-6,
    )
    recipe = {"drop_path_rate": str(drop_path), "mask_scale": "2"}
    differs = f"drop path {drop_path}"
    if clip is not None:
        recipe["max_grad_norm"] = str(clip)
        differs += f", clipping {clip}"
    return ModelPreset(name, "PVT", params, "pvt", config, recipe, differs)


def _timm(
    name: str, family: str, architecture: str, params: float, drop_path: float, note: str, in_table: bool = True
) -> ModelPreset:
    # 20 warm-up epochs of 400 (the recipe's warm-up is a share of the training steps)
    recipe = {
        "drop_path_rate": str(drop_path),
        "num_train_epochs": "400",
        "warmup_steps": str(20 / 400),
        "mask_scale": "4",
    }
    config = dict(architecture=architecture, model_args={"img_size": 224})
    differs = f"400 epochs, drop path {drop_path}, {note}"
    return ModelPreset(name, family, params, "timm", config, recipe, differs, in_table)


def _ca_swin(name: str, depths: list[int], heads: list[int], params: float, drop_path: float) -> ModelPreset:
    config = dict(image_size=224, patch_size=4, embed_dim=96, depths=depths, num_heads=heads, window_size=7)
    recipe = {"drop_path_rate": str(drop_path), "max_grad_norm": "5.0", "mask_scale": "2"}
    return ModelPreset(name, "CA-Swin", params, "ca_swin", config, recipe, f"drop path {drop_path}, clipping 5.0")


MODEL_PRESETS: dict[str, ModelPreset] = {
    preset.name: preset
    for preset in (
        _deit("deit-t", 192, 3, 5.7),
        _deit("deit-s", 384, 6, 22.1),
        _deit("deit-b", 768, 12, 86.6),
        _pvt("pvt-t", [2, 2, 2, 2], 13.2, 0.1, None),
        _pvt("pvt-s", [3, 4, 6, 3], 24.5, 0.1, None),
        _pvt("pvt-m", [3, 4, 18, 3], 44.2, 0.3, 1.0),
        _pvt("pvt-l", [3, 8, 27, 3], 61.4, 0.3, 1.0),
        _timm("cait-xxs36", "CaiT", "cait_xxs36_224", 17.3, 0.1, "LayerScale 1e-5"),
        _timm("cait-xxs24", "CaiT", "cait_xxs24_224", 12.0, 0.05, "LayerScale 1e-5", in_table=False),
        _timm("xcit-t24", "XCiT", "xcit_tiny_24_p16_224", 12.0, 0.1, "LayerScale 1e-5"),
        _timm("xcit-t12", "XCiT", "xcit_tiny_12_p16_224", 6.7, 0.05, "LayerScale 1.0", in_table=False),
        _timm("xcit-s12", "XCiT", "xcit_small_12_p16_224", 26.0, 0.05, "LayerScale 1.0"),
        _timm("xcit-m24", "XCiT", "xcit_medium_24_p16_224", 84.0, 0.15, "LayerScale 1e-5"),
        _timm("xcit-l24", "XCiT", "xcit_large_24_p16_224", 189.0, 0.25, "LayerScale 1e-5"),
        _ca_swin("ca-swin-t", [2, 2, 6, 2], [3, 6, 12, 24], 28.3, 0.2),
        _ca_swin("ca-swin-s", [2, 2, 18, 2], [3, 6, 12, 24], 49.6, 0.3),
    )
}


def preset_config(name: str) -> PretrainedConfig:
    """The config of preset ``name`` (1,000 classes until the caller sets the labels)."""
    if name not in MODEL_PRESETS:
        raise ValueError(f"--model_preset {name!r} is not one of {', '.join(MODEL_PRESETS)}")
    preset = MODEL_PRESETS[name]
    values = {**preset.config, "num_labels": 1000}
    if preset.kind == "vit":
        return ViTConfig(**values)
    if preset.kind == "pvt":
        return PvtConfig(**values)
    if preset.kind == "timm":
        return TimmWrapperConfig(**{**values, "model_args": dict(values["model_args"])})
    return CaSwinConfig(**values)
