"""Every model family of the paper's Table 1, as a tiny random model: the token grid read from the model, the
class-token attention captured at the layer (fast attention kept) against the model's own eager computation,
three MixPro steps with the default geometry (mask_scale 4 on the model's token grid), save and load.

Families: 🤗 ViT, 🤗 DeiT, 🤗 PVT (class token in the last stage), timm ViT and DeiT (fused qkv), CaiT and XCiT
(class-attention blocks) through ``TimmWrapperForImageClassification``, CA-Swin (``mixpro_hf.ca_swin``).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
from datasets import Dataset
from torch import nn
from transformers import (
    AutoModelForImageClassification,
    DeiTConfig,
    DeiTForImageClassification,
    PvtConfig,
    PvtForImageClassification,
    TimmWrapperConfig,
    TimmWrapperForImageClassification,
    ViTConfig,
    ViTForImageClassification,
)

from mixpro_hf import MixProTrainer, MixProTrainingArguments
from mixpro_hf.attention import capture_cls_attention, cls_token_layout, find_last_attention
from mixpro_hf.ca_swin import CaSwinConfig, CaSwinForImageClassification
from mixpro_hf.hub import files_to_push
from mixpro_hf.modeling import decay_parameter_names, model_geometry, token_geometry
from mixpro_hf.recipe import MixProConfig
from mixpro_hf.step import check_model_for_mixing

NUM_LABELS = 3
VIT = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, image_size=32)
TIMM = dict(img_size=32, patch_size=4, embed_dim=32, depth=1, num_heads=2)


@dataclass(frozen=True)
class Family:
    """A tiny model of one family: its builder, the expected token size (pixels) and image side."""

    build: Callable[[str], nn.Module]  # attention implementation -> model (timm: "eager" = unfused attention)
    token_size: int
    image_size: int
    num_prefix: int


def _timm(architecture: str, attn: str, **model_args: object) -> nn.Module:
    model = TimmWrapperForImageClassification(
        TimmWrapperConfig(architecture=architecture, num_labels=NUM_LABELS, model_args=model_args)
    )
    for module in model.modules():  # timm's own eager path: the softmax goes through attn_drop
        if hasattr(module, "fused_attn"):
            module.fused_attn = attn != "eager"
    return model


def _hf(config_class: type, model_class: type, attn: str, **values: object) -> nn.Module:
    if not model_class._supports_sdpa:  # 🤗 PVT: its own (eager) attention only
        attn = "eager"
    return model_class._from_config(config_class(num_labels=NUM_LABELS, **values), attn_implementation=attn)


FAMILIES: dict[str, Family] = {
    "hf-vit": Family(lambda a: _hf(ViTConfig, ViTForImageClassification, a, patch_size=4, **VIT), 4, 32, 1),
    "hf-deit": Family(lambda a: _hf(DeiTConfig, DeiTForImageClassification, a, patch_size=4, **VIT), 4, 32, 2),
    "hf-pvt": Family(
        lambda a: _hf(
            PvtConfig,
            PvtForImageClassification,
            a,
            image_size=64,  # 🤗 PVT assumes a first stride of 4, then 2 (its position embeddings' grids)
            num_encoder_blocks=2,
            depths=[1, 1],
            sequence_reduction_ratios=[2, 1],
            hidden_sizes=[16, 32],
            patch_sizes=[4, 2],
            strides=[4, 2],
            num_attention_heads=[1, 2],
            mlp_ratios=[2, 2],
        ),
        8,
        64,
        1,
    ),
    "timm-vit": Family(lambda a: _timm("vit_tiny_patch16_224", a, **TIMM), 4, 32, 1),
    "timm-deit": Family(lambda a: _timm("deit_tiny_distilled_patch16_224", a, **TIMM), 4, 32, 2),
    # two class-attention blocks, as CaiT's own (the capture must read the last one)
    "cait": Family(lambda a: _timm("cait_xxs24_224", a, depth_token_only=2, **TIMM), 4, 32, 1),
    "xcit": Family(
        lambda a: _timm("xcit_tiny_12_p8_224", a, img_size=40, patch_size=8, embed_dim=32, depth=1, num_heads=2),
        8,
        40,
        1,
    ),
    "ca-swin": Family(
        lambda a: _hf(
            CaSwinConfig,
            CaSwinForImageClassification,
            a,
            image_size=40,
            patch_size=4,
            embed_dim=16,
            depths=[1, 2],
            num_heads=[1, 2],
            window_size=5,
        ),
        8,
        40,
        1,
    ),
}


def _eager_cls_attention(model: nn.Module, pixel_values: torch.Tensor, num_prefix: int) -> torch.Tensor:
    """The last block's class-token row from the model's own eager softmax (independent of the capture)."""
    attention = find_last_attention(model)
    probs: list[torch.Tensor] = []
    dropout = getattr(attention, "attn_drop", None) or getattr(attention, "dropout", None)
    if isinstance(dropout, nn.Module):  # timm and CA-Swin: the eager probabilities enter their dropout
        handle = dropout.register_forward_pre_hook(lambda module, args: probs.append(args[0]))
        with torch.no_grad():
            model(pixel_values=pixel_values)
        handle.remove()
        full = probs[-1]
    else:  # 🤗 eager attention with output_attentions
        with torch.no_grad():
            full = model(pixel_values=pixel_values, output_attentions=True).attentions[-1]
    return full[:, :, 0, num_prefix:].float().mean(dim=1)


@pytest.mark.parametrize("name", list(FAMILIES))
def test_geometry_and_capture_match_eager(name: str) -> None:
    family = FAMILIES[name]
    torch.manual_seed(0)
    fast = family.build("sdpa").eval()
    geometry = token_geometry(fast)
    assert (geometry.token_size, geometry.image_size) == (family.token_size, family.image_size)
    assert model_geometry(fast) == (family.token_size, family.image_size)
    layout = cls_token_layout(fast)
    assert layout.num_prefix_tokens == family.num_prefix
    pixel_values = torch.randn(2, 3, family.image_size, family.image_size)
    with capture_cls_attention(fast) as capture:
        with torch.no_grad():
            fast(pixel_values=pixel_values)
    assert capture.attention.shape == (2, layout.num_patches)
    eager = family.build("eager").eval()
    eager.load_state_dict(fast.state_dict())
    expected = _eager_cls_attention(eager, pixel_values, family.num_prefix)
    torch.testing.assert_close(capture.attention, expected, atol=1e-5, rtol=0)


def _random_images(n: int, size: int) -> Dataset:
    g = torch.Generator().manual_seed(0)
    images = torch.randn(n, 3, size, size, generator=g)
    return Dataset.from_dict({"pixel_values": images.numpy(), "labels": (torch.arange(n) % NUM_LABELS).tolist()})


@pytest.mark.parametrize("name", list(FAMILIES))
def test_three_mixpro_steps_and_save_load(name: str, tmp_path) -> None:
    family = FAMILIES[name]
    torch.manual_seed(0)
    model = family.build("sdpa")
    args = MixProTrainingArguments(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=4,
        max_steps=3,
        learning_rate=1e-3,
        logging_steps=1,
        report_to=[],
        save_strategy="no",
        maskmix_prob=1.0,  # every batch MaskMix + PAL; mask_scale, mix_patch_size: the defaults
        use_cpu=True,
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    train_set = _random_images(12, family.image_size).with_format("torch")
    trainer = MixProTrainer(model=model, args=args, train_dataset=train_set)
    assert trainer.patch_size == family.token_size
    trainer.train()
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logs) == 3 and all("mixpro/lam_attn" in entry for entry in logs)
    model.save_pretrained(tmp_path / "saved")
    loaded = AutoModelForImageClassification.from_pretrained(tmp_path / "saved").eval()
    assert type(loaded) is type(model)
    pixel_values = torch.randn(2, 3, family.image_size, family.image_size)
    with torch.no_grad():
        torch.testing.assert_close(
            loaded(pixel_values=pixel_values).logits, model.eval()(pixel_values=pixel_values).logits
        )


def test_ca_swin_loads_in_stock_transformers_with_remote_code(tmp_path) -> None:
    torch.manual_seed(0)
    model = FAMILIES["ca-swin"].build("sdpa").eval()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "ca_swin.py").is_file()
    (tmp_path / "notes.py").write_text("# not model code\n")
    pushed = files_to_push(tmp_path)
    assert "ca_swin.py" in pushed and "notes.py" not in pushed, "a push carries the code the config names"
    pixel_values = torch.randn(1, 3, 40, 40)
    with torch.no_grad():
        expected = model(pixel_values=pixel_values).logits
    torch.save(pixel_values, tmp_path / "x.pt")
    script = textwrap.dedent(
        f"""
        import sys, torch
        from transformers import AutoModelForImageClassification
        model = AutoModelForImageClassification.from_pretrained({str(tmp_path)!r}, trust_remote_code=True).eval()
        assert "mixpro_hf" not in sys.modules, "the saved code must not need mixpro_hf"
        with torch.no_grad():
            print(model(pixel_values=torch.load({str(tmp_path / "x.pt")!r})).logits.tolist())
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    got = torch.tensor(eval(result.stdout.strip().splitlines()[-1]))
    torch.testing.assert_close(got, expected)


def test_ca_swin_from_swin_takes_the_replaced_block_and_keeps_the_parameter_count() -> None:
    from transformers import SwinConfig, SwinForImageClassification

    values = dict(image_size=32, patch_size=2, embed_dim=16, depths=[1, 2], num_heads=[1, 2], window_size=4)
    swin = SwinForImageClassification(SwinConfig(num_labels=NUM_LABELS, **values))
    ca_swin = CaSwinForImageClassification.from_swin(swin)
    block = "swin.encoder.layers.1.blocks.1"
    swin_state, ca_state = swin.state_dict(), ca_swin.state_dict()
    for key in (f"{block}.attention.q_proj.weight", f"{block}.mlp.fc2.weight", f"{block}.layernorm_before.weight"):
        assert torch.equal(swin_state[key], ca_state[key])
    table = swin_state[f"{block}.attention.relative_position_bias.relative_position_bias_table"].numel()
    count = sum(p.numel() for p in ca_swin.parameters())
    assert count == sum(p.numel() for p in swin.parameters()) - table + ca_swin.cls_token.numel()


def test_geometry_errors_name_the_real_cause() -> None:
    attention = MixProConfig(mix_method="mixpro", mask_scale=1)
    timm_vit = FAMILIES["timm-vit"].build("sdpa")
    with pytest.raises(ValueError, match=r"4-pixel tokens .*--mix_patch_size"):
        check_model_for_mixing(timm_vit, attention, 8, 32)  # a mixing grid other than the token grid
    reduced = PvtForImageClassification(
        PvtConfig(
            num_labels=NUM_LABELS,
            image_size=64,
            num_encoder_blocks=2,
            depths=[1, 1],
            sequence_reduction_ratios=[2, 2],  # the last stage's keys spatially reduced
            hidden_sizes=[16, 32],
            patch_sizes=[4, 2],
            strides=[4, 2],
            num_attention_heads=[1, 2],
        )
    )
    with pytest.raises(ValueError, match="reduces its keys spatially"):
        check_model_for_mixing(reduced, attention, 8, 64)
    avg = _timm("vit_tiny_patch16_224", "sdpa", global_pool="avg", **TIMM)
    with pytest.raises(ValueError, match="global_pool='avg'"):
        check_model_for_mixing(avg, attention, 4, 32)
    no_qk = TimmWrapperForImageClassification(
        TimmWrapperConfig(
            architecture="xcit_tiny_12_p8_224",
            num_labels=NUM_LABELS,
            model_args=dict(img_size=64, patch_size=8, embed_dim=32, depth=1, num_heads=2, cls_attn_layers=0),
        )
    )
    with pytest.raises(ValueError, match="no readable query/key") as info:
        check_model_for_mixing(no_qk, attention, 8, 64)
    assert "no class token" not in str(info.value)


def test_cait_capture_reads_the_last_of_two_class_attention_blocks() -> None:
    torch.manual_seed(0)
    model = FAMILIES["cait"].build("eager").eval()
    blocks = model.timm_model.blocks_token_only
    assert len(blocks) == 2
    with torch.no_grad():  # sharper than the near-uniform attention of a fresh model, so the blocks differ clearly
        for block in blocks:
            block.attn.q.weight.mul_(30.0)
    rows: list[list[torch.Tensor]] = [[], []]
    handles = [  # each block's eager softmax, read at its own dropout (not through find_last_attention)
        block.attn.attn_drop.register_forward_pre_hook(lambda module, args, i=i: rows[i].append(args[0]))
        for i, block in enumerate(blocks)
    ]
    pixel_values = torch.randn(2, 3, 32, 32)
    with capture_cls_attention(model) as capture, torch.no_grad():
        model(pixel_values=pixel_values)
    for handle in handles:
        handle.remove()
    first, last = (r[-1][:, :, 0, 1:].float().mean(dim=1) for r in rows)
    assert (first - last).abs().max() > 1e-2, "the two blocks must attend differently for the test to tell them apart"
    torch.testing.assert_close(capture.attention, last, atol=1e-5, rtol=0)


# Each family's parameters of more than one dimension that get no weight decay (every 1-D one gets none): the
# official rule of each (timm's no_weight_decay() for timm's models, DeiT's token and position names for 🤗's).
NO_DECAY = {
    "hf-vit": {"vit.embeddings.cls_token", "vit.embeddings.position_embeddings"},
    "hf-deit": {
        "deit.embeddings.cls_token",
        "deit.embeddings.position_embeddings",
        "deit.embeddings.distillation_token",
    },
    "hf-pvt": {
        "pvt.encoder.patch_embeddings.0.position_embeddings",
        "pvt.encoder.patch_embeddings.1.position_embeddings",
        "pvt.encoder.patch_embeddings.1.cls_token",
    },
    "timm-vit": {"timm_model.cls_token", "timm_model.pos_embed"},
    "timm-deit": {"timm_model.cls_token", "timm_model.pos_embed", "timm_model.dist_token"},
    "cait": {"timm_model.cls_token", "timm_model.pos_embed"},
    "xcit": {
        "timm_model.cls_token",
        "timm_model.pos_embed.token_projection.weight",
        "timm_model.blocks.0.attn.temperature",
    },
    "ca-swin": {
        "cls_token",
        "swin.encoder.layers.0.blocks.0.attention.relative_position_bias.relative_position_bias_table",
        "swin.encoder.layers.1.blocks.0.attention.relative_position_bias.relative_position_bias_table",
    },
}


@pytest.mark.parametrize("name", list(FAMILIES))
def test_weight_decay_follows_each_familys_official_rule(name: str) -> None:
    model = FAMILIES[name].build("sdpa")
    decayed = set(decay_parameter_names(model))
    parameters = dict(model.named_parameters())
    assert not any(parameters[n].ndim <= 1 for n in decayed), "biases, norms and LayerScale factors are never decayed"
    exempt = {n for n, p in parameters.items() if p.ndim > 1 and n not in decayed}
    assert exempt == NO_DECAY[name]
    assert any("weight" in n for n in decayed)  # the projections themselves are decayed


def test_import_mixpro_hf_registers_ca_swin_with_the_auto_classes() -> None:
    script = textwrap.dedent(
        """
        import mixpro_hf
        from transformers import AutoConfig, AutoModelForImageClassification
        config = AutoConfig.for_model("ca_swin", image_size=32, patch_size=4, embed_dim=8, depths=[1, 1],
                                      num_heads=[1, 1], window_size=4, num_labels=2)
        print(type(AutoModelForImageClassification.from_config(config)).__name__)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["CaSwinForImageClassification"]
