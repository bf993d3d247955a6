"""Transfer to dense prediction (MixPro §4.2): backbones of every family from classification checkpoints, the
linear and Segmenter decoders (saved with their code, opened by stock transformers), 🤗 UperNet, and the PVT /
CA-Swin backbones inside 🤗's Mask2Former and Conditional DETR. Tiny random models, offline."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from conftest import TINY_OVERRIDES
from torch import nn
from transformers import (
    AutoBackbone,
    AutoConfig,
    AutoModelForImageClassification,
    AutoModelForSemanticSegmentation,
    ConditionalDetrConfig,
    ConditionalDetrForObjectDetection,
    DeformableDetrConfig,
    DeformableDetrForObjectDetection,
    DeiTConfig,
    DeiTForImageClassification,
    DeiTForImageClassificationWithTeacher,
    Mask2FormerConfig,
    Mask2FormerForUniversalSegmentation,
    PvtConfig,
    PvtForImageClassification,
    TimmWrapperConfig,
    TimmWrapperForImageClassification,
    UperNetForSemanticSegmentation,
    ViTConfig,
    ViTForImageClassification,
)

import mixpro_hf
from mixpro_hf import copy_backbone_weights, load_backbone, segmentation_model
from mixpro_hf.ca_swin import CaSwinConfig, CaSwinForImageClassification
from mixpro_hf.hub import files_to_push

LABELS = ["background", "road", "sky"]
VIT = dict(
    hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=32, patch_size=4
)
PVT = dict(
    image_size=64,  # 🤗 PVT's stage grids assume a first stride of 4, then 2
    num_encoder_blocks=4,
    depths=[1, 1, 1, 1],
    sequence_reduction_ratios=[8, 4, 2, 1],
    hidden_sizes=[16, 16, 32, 32],
    patch_sizes=[4, 2, 2, 2],
    strides=[4, 2, 2, 2],
    num_attention_heads=[1, 1, 2, 2],
    mlp_ratios=[2, 2, 2, 2],
)
CA_SWIN = dict(image_size=64, patch_size=4, embed_dim=16, depths=[1, 1, 1, 2], num_heads=[1, 1, 2, 2], window_size=2)
TIMM = dict(img_size=32, patch_size=4, embed_dim=32, depth=2, num_heads=2)


def _timm(architecture: str, **model_args: object) -> nn.Module:
    config = TimmWrapperConfig(architecture=architecture, num_labels=len(LABELS), model_args=model_args)
    return TimmWrapperForImageClassification(config)


# name -> (builder, input side, [(channels, stride) of each default map], checkpoint keys left out)
FAMILIES: dict[str, tuple[Callable[[], nn.Module], int, list[tuple[int, int]], Callable[[str], bool]]] = {
    "hf-vit": (
        lambda: ViTForImageClassification(ViTConfig(num_labels=3, **VIT)),
        32,
        [(32, 4)],
        lambda key: key.startswith("classifier."),
    ),
    "hf-deit": (
        lambda: DeiTForImageClassification(DeiTConfig(num_labels=3, **VIT)),
        32,
        [(32, 4)],
        lambda key: key.startswith("classifier."),
    ),
    "hf-pvt": (
        lambda: PvtForImageClassification(PvtConfig(num_labels=3, **PVT)),
        64,
        [(16, 4), (16, 8), (32, 16), (32, 32)],
        lambda key: key.startswith("classifier."),
    ),
    "ca-swin": (
        lambda: CaSwinForImageClassification(CaSwinConfig(num_labels=3, **CA_SWIN)),
        64,
        [(16, 4), (32, 8), (64, 16), (128, 32)],
        lambda key: key.startswith(("classifier.", "cls_token", "swin.encoder.layers.3.blocks.1.")),
    ),
    "timm-vit": (
        lambda: _timm("vit_tiny_patch16_224", **TIMM),
        32,
        [(32, 4)],
        lambda key: key.startswith(("timm_model.head.", "timm_model.norm.", "timm_model.fc_norm.")),
    ),
    "cait": (
        lambda: _timm("cait_xxs24_224", depth_token_only=2, **TIMM),
        32,
        [(32, 4)],
        lambda key: key.startswith(
            ("timm_model.head.", "timm_model.norm.", "timm_model.blocks_token_only.", "timm_model.cls_token")
        ),
    ),
    "xcit": (
        lambda: _timm("xcit_tiny_12_p8_224", img_size=40, patch_size=8, embed_dim=32, depth=2, num_heads=2),
        40,
        [(32, 8)],
        lambda key: key.startswith(
            ("timm_model.head.", "timm_model.norm.", "timm_model.cls_attn_blocks.", "timm_model.cls_token")
        ),
    ),
}


def _saved(name: str, folder: Path) -> tuple[nn.Module, Path]:
    torch.manual_seed(0)
    classifier = FAMILIES[name][0]().eval()
    classifier.save_pretrained(folder)
    return classifier, folder


def _checkpoint_name(key: str) -> str:
    """The classifier's name of a backbone tensor (timm: ``_backbone.model.x`` is the wrapper's
    ``timm_model.x``)."""
    return "timm_model." + key.removeprefix("_backbone.model.") if key.startswith("_backbone.") else key


@pytest.mark.parametrize("name", list(FAMILIES))
def test_every_family_loads_strictly_with_the_left_out_keys_named(name: str, tmp_path, caplog) -> None:
    classifier, folder = _saved(name, tmp_path / name)
    _, side, maps, left_out = FAMILIES[name]
    with caplog.at_level("WARNING", logger="mixpro_hf.transfer"):
        backbone, info = load_backbone(str(folder), output_loading_info=True)
    source = classifier.state_dict()  # the saved tensors (transformers 5 writes some under legacy names)
    for key, tensor in backbone.state_dict().items():
        if key in info["missing_keys"]:
            assert key.startswith("hidden_states_norms."), f"only Swin's per-stage norms are new, not {key}"
            continue
        assert torch.equal(tensor, source[_checkpoint_name(key)]), key
    assert info["unexpected_keys"] and all(left_out(key) for key in info["unexpected_keys"]), info["unexpected_keys"]
    expected_left_out = sorted(key for key in source if left_out(key))
    assert info["unexpected_keys"] == expected_left_out
    assert len([r for r in caplog.records if "left out" in r.getMessage()]) == 1, "one logged line"
    line = next(r.getMessage() for r in caplog.records if "left out" in r.getMessage())
    head = "classifier.*" if name.startswith(("hf-", "ca-")) else "timm_model.head.*"
    assert head in line.split("left out: ")[1].split(";")[0], line
    features = backbone(torch.randn(2, 3, side, side)).feature_maps
    assert [(f.shape[1], side // f.shape[-1]) for f in features] == maps
    assert list(backbone.channels) == [channels for channels, _ in maps]
    if name != "cait":  # another size (timm's CaiT runs at its pre-training size only)
        larger = side + maps[-1][1]
        features = backbone(torch.randn(1, 3, larger, larger)).feature_maps
        assert [f.shape[-1] for f in features] == [larger // stride for _, stride in maps]


def test_vit_maps_are_the_classifier_tokens_and_interpolate_to_other_sizes(tmp_path) -> None:
    classifier, folder = _saved("hf-vit", tmp_path)
    backbone = load_backbone(folder, out_indices=[1, 2])
    assert backbone.out_features == ["stage1", "stage2"]
    pixel_values = torch.randn(2, 3, 48, 40)  # another size, not square: bicubic position embeddings
    with torch.no_grad():
        tokens = classifier.vit(pixel_values, interpolate_pos_encoding=True).last_hidden_state
        maps = backbone(pixel_values).feature_maps
    assert [m.shape for m in maps] == [torch.Size([2, 32, 12, 10])] * 2
    expected = tokens[:, 1:].transpose(1, 2).reshape(2, 32, 12, 10)  # the final LayerNorm applied, as Dinov2
    torch.testing.assert_close(maps[-1], expected)
    raw = load_backbone(folder, apply_layernorm=False)  # the last block's output before the final LayerNorm
    with torch.no_grad():
        before_norm = classifier.vit(pixel_values, interpolate_pos_encoding=True, output_hidden_states=True)
        raw_map = raw(pixel_values).feature_maps[-1]
    torch.testing.assert_close(raw_map, before_norm.hidden_states[-1][:, 1:].transpose(1, 2).reshape(2, 32, 12, 10))
    with pytest.raises(ValueError, match="not a multiple of 4"):
        backbone(torch.randn(1, 3, 33, 32))
    from_base_model = load_backbone(classifier.vit, out_indices=[1, 2])  # a ViTModel without head: names unprefixed
    assert all(torch.equal(t, backbone.state_dict()[k]) for k, t in from_base_model.state_dict().items())
    with pytest.raises(ValueError, match="out_indices"):
        load_backbone(folder, out_indices=[7])


def test_pvt_matches_its_classifier_and_resizes_position_embeddings(tmp_path) -> None:
    classifier, folder = _saved("hf-pvt", tmp_path)
    backbone = load_backbone(folder)
    pixel_values = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        tokens = classifier.pvt(pixel_values).last_hidden_state  # class token first, after the final LayerNorm
        last = backbone(pixel_values).feature_maps[-1]
        other = backbone(torch.randn(1, 3, 96, 64)).feature_maps
    torch.testing.assert_close(last, tokens[:, 1:].transpose(1, 2).reshape(1, 32, 2, 2))
    assert [tuple(m.shape[-2:]) for m in other] == [(24, 16), (12, 8), (6, 4), (3, 2)]


def test_auto_backbone_knows_the_families_transformers_lacks(tmp_path) -> None:
    expected = {
        "hf-vit": "ViTBackbone",
        "hf-deit": "DeiTBackbone",
        "hf-pvt": "PvtBackbone",
        "ca-swin": "CaSwinBackbone",
    }
    for name, class_name in expected.items():
        classifier, folder = _saved(name, tmp_path / name)
        config = AutoConfig.from_pretrained(folder)
        backbone_class = type(AutoBackbone.from_config(config))
        assert backbone_class.__name__ == class_name
        # transformers 5.25's AutoBackbone.from_pretrained asks the Hub about every name, local folders included:
        # the class opens the folder itself
        backbone = backbone_class.from_pretrained(folder, out_features=["stage1"])
        source = classifier.state_dict()
        taken = [key for key in backbone.state_dict() if key in source]
        assert len(taken) > 5 and all(torch.equal(backbone.state_dict()[k], source[k]) for k in taken), name
        assert backbone.out_features == ["stage1"], name


def _segmentation_batch(side: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, len(LABELS), (2, side, side), generator=generator)
    labels[:, : side // 2] = 255  # the ignore index
    return torch.randn(2, 3, side, side, generator=generator), labels


@pytest.mark.parametrize("decoder", ["linear", "segmenter"])
def test_token_decoders_train_ignore_255_and_take_any_size(decoder: str) -> None:
    torch.manual_seed(0)
    classifier = ViTForImageClassification(ViTConfig(num_labels=3, **VIT))
    model, info = segmentation_model(classifier, decoder, id2label=LABELS, output_loading_info=True)
    assert info["unexpected_keys"] == ["classifier.bias", "classifier.weight"]
    assert info["missing_keys"] and all(key.startswith("decode_head.") for key in info["missing_keys"])
    source = classifier.state_dict()
    assert all(
        torch.equal(t, source[k.removeprefix("backbone.")])
        for k, t in model.state_dict().items()
        if k.startswith("backbone.")
    )
    pixel_values, labels = _segmentation_batch()
    output = model(pixel_values=pixel_values, labels=labels)
    assert output.logits.shape == (2, len(LABELS), 32, 32)
    kept = labels != 255
    expected = nn.functional.cross_entropy(output.logits.permute(0, 2, 3, 1)[kept], labels[kept])
    torch.testing.assert_close(output.loss, expected)
    output.loss.backward()
    assert model.backbone.vit.embeddings.patch_embeddings.projection.weight.grad.abs().sum() > 0
    assert model.decode_head.weight.grad is not None if decoder == "linear" else model.decode_head.cls_emb.grad.any()
    model.eval()
    assert model(pixel_values=torch.randn(1, 3, 37, 45)).logits.shape == (1, 3, 37, 45), "padded, then cropped"


@pytest.mark.parametrize("name", ["hf-pvt", "ca-swin"])
def test_token_decoders_read_the_last_stage_of_hierarchical_backbones(name: str) -> None:
    torch.manual_seed(0)
    model = segmentation_model(FAMILIES[name][0](), "segmenter", id2label=LABELS)
    assert model.backbone.out_features == ["stage4"] and model.input_multiple == 32
    output = model(pixel_values=torch.randn(1, 3, 70, 50), labels=torch.randint(0, 3, (1, 70, 50)))
    assert output.logits.shape == (1, 3, 70, 50), "padded to a multiple of 32, then cropped"
    output.loss.backward()


def _block_mixpro_hf() -> str:
    return "import sys\nsys.modules['mixpro_hf'] = None  # any import of mixpro_hf fails\n"


def test_saved_decoders_open_in_stock_transformers_with_the_same_logits(tmp_path) -> None:
    torch.manual_seed(0)
    classifier = ViTForImageClassification(ViTConfig(num_labels=3, **VIT))
    pixel_values = torch.randn(1, 3, 36, 40)
    torch.save(pixel_values, tmp_path / "x.pt")
    expected = {}
    swin = segmentation_model(FAMILIES["ca-swin"][0](), "upernet", id2label=LABELS, hidden_size=16).eval()
    assert type(swin) is UperNetForSemanticSegmentation
    swin.save_pretrained(tmp_path / "upernet-ca-swin")  # 🤗's own SwinBackbone: no remote code at all
    with torch.no_grad():
        expected["upernet-ca-swin"] = swin(pixel_values=pixel_values).logits
    deeper = ViTForImageClassification(ViTConfig(num_labels=3, **{**VIT, "num_hidden_layers": 4}))
    vit_upernet = segmentation_model(deeper, "upernet", id2label=LABELS, hidden_size=16).eval()
    assert isinstance(vit_upernet, UperNetForSemanticSegmentation)
    vit_upernet.save_pretrained(tmp_path / "upernet-vit")
    with torch.no_grad():
        expected["upernet-vit"] = vit_upernet(pixel_values=pixel_values).logits
    for decoder in ("linear", "segmenter"):
        model = segmentation_model(classifier, decoder, id2label=LABELS).eval()
        model.save_pretrained(tmp_path / decoder)
        code = {"segmentation_models.py", "backbones.py", "ca_swin.py"}
        assert code <= set(os.listdir(tmp_path / decoder))
        assert code <= set(files_to_push(tmp_path / decoder)), "a Hub push carries the code and what it imports"
        with torch.no_grad():
            expected[decoder] = model(pixel_values=pixel_values).logits
    script = _block_mixpro_hf() + textwrap.dedent(
        f"""
        import torch
        from transformers import AutoModelForSemanticSegmentation
        x = torch.load({str(tmp_path / "x.pt")!r})
        for decoder in ("linear", "segmenter", "upernet-vit", "upernet-ca-swin"):
            model = AutoModelForSemanticSegmentation.from_pretrained({str(tmp_path)!r} + "/" + decoder,
                                                                     trust_remote_code=decoder != "upernet-ca-swin")
            remote = type(model).__module__.startswith("transformers_modules")
            assert remote == (decoder != "upernet-ca-swin"), type(model).__module__
            model.eval()
            with torch.no_grad():
                torch.save(model(pixel_values=x).logits, {str(tmp_path)!r} + f"/{{decoder}}.pt")
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for decoder, logits in expected.items():
        assert torch.equal(torch.load(tmp_path / f"{decoder}.pt"), logits), decoder


@pytest.mark.parametrize("name", ["hf-vit", "hf-pvt", "ca-swin"])
def test_upernet_over_each_backbone_trains_and_reloads(name: str, tmp_path) -> None:
    torch.manual_seed(0)
    classifier = FAMILIES[name][0]()
    if name == "hf-vit":  # four blocks for BEiT's pyramid (3, 6, 9, 12 of 12 in general)
        classifier = ViTForImageClassification(ViTConfig(num_labels=3, **{**VIT, "num_hidden_layers": 4}))
    model, info = segmentation_model(
        classifier, "upernet", id2label=LABELS, hidden_size=16, auxiliary_channels=8, output_loading_info=True
    )
    assert isinstance(model, UperNetForSemanticSegmentation) and model.config.loss_ignore_index == 255
    assert list(model.backbone.channels) == [m[0] for m in FAMILIES[name][2]] if name != "hf-vit" else [32] * 4
    source = classifier.state_dict()
    for key, tensor in model.backbone.state_dict().items():
        if key in source:
            assert torch.equal(tensor, source[key]), key
        else:
            assert f"backbone.{key}" in info["missing_keys"] and key.startswith(("fpn.", "hidden_states_norms."))
    side = FAMILIES[name][1]
    pixel_values, labels = _segmentation_batch(side)
    output = model(pixel_values=pixel_values, labels=labels)
    assert output.logits.shape == (2, len(LABELS), side, side) and torch.isfinite(output.loss)
    output.loss.backward()
    model.eval().save_pretrained(tmp_path)
    reloaded = AutoModelForSemanticSegmentation.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(pixel_values=pixel_values).logits, model(pixel_values=pixel_values).logits)


def test_upernet_over_a_vit_of_two_blocks_takes_four_scales_from_the_last() -> None:
    torch.manual_seed(0)
    model = segmentation_model(ViTForImageClassification(ViTConfig(num_labels=3, **VIT)), "upernet", id2label=LABELS)
    assert model.backbone.out_features == ["stage2"] and model.backbone.channels == [32] * 4  # ViTDet's pyramid
    maps = model.backbone(torch.randn(1, 3, 32, 32)).feature_maps
    assert [32 // m.shape[-1] for m in maps] == model.backbone.feature_strides == [1, 2, 4, 8]
    assert model(pixel_values=torch.randn(2, 3, 32, 32)).logits.shape == (2, 3, 32, 32)


def test_a_mixpro_train_checkpoint_becomes_a_segmentation_model(tmp_path) -> None:
    from mixpro_hf import train

    out = tmp_path / "run"
    train.run(
        [
            "--output_dir",
            str(out),
            "--config_overrides",
            TINY_OVERRIDES,
            "--max_steps",
            "1",
            "--max_train_samples",
            "16",
            "--max_eval_samples",
            "8",
            "--per_device_train_batch_size",
            "8",
            "--report_to",
            "none",
            "--disable_tqdm",
            "True",
            "--dataloader_num_workers",
            "0",
        ]
    )
    model, info = segmentation_model(str(out), "segmenter", id2label=LABELS, output_loading_info=True)
    source = AutoModelForImageClassification.from_pretrained(out).state_dict()
    backbone = {k.removeprefix("backbone."): t for k, t in model.state_dict().items() if k.startswith("backbone.")}
    assert backbone and all(torch.equal(t, source[k]) for k, t in backbone.items())
    assert set(backbone) | set(info["unexpected_keys"]) == set(source), "every tensor taken or named"
    assert info["unexpected_keys"] == ["classifier.bias", "classifier.weight"]
    assert model(pixel_values=torch.randn(1, 3, 16, 16)).logits.shape == (1, 3, 16, 16)


DETR_SIZES = dict(num_labels=2, d_model=32, encoder_layers=1, encoder_ffn_dim=64, decoder_ffn_dim=64, num_queries=4)
DETR_SIZES.update(encoder_attention_heads=2, decoder_attention_heads=2)
DETECTION = {
    "mask2former": lambda backbone_config: Mask2FormerForUniversalSegmentation(
        Mask2FormerConfig(
            backbone_config=backbone_config,
            num_labels=2,
            hidden_dim=32,
            mask_feature_size=32,
            feature_size=32,
            encoder_feedforward_dim=64,
            dim_feedforward=64,
            encoder_layers=1,
            decoder_layers=2,
            num_attention_heads=2,
            num_queries=4,
        )
    ),
    # two decoder layers: with one, transformers 5.25's weight tying of the box heads fails at construction
    "deformable_detr": lambda backbone_config: DeformableDetrForObjectDetection(
        DeformableDetrConfig(
            backbone_config=backbone_config,
            decoder_layers=2,
            num_feature_levels=4,
            encoder_n_points=2,
            decoder_n_points=2,
            **DETR_SIZES,
        )
    ),
    "conditional_detr": lambda backbone_config: ConditionalDetrForObjectDetection(
        ConditionalDetrConfig(backbone_config=backbone_config, decoder_layers=1, **DETR_SIZES)
    ),
}


@pytest.mark.parametrize("family", ["hf-pvt", "ca-swin"])
@pytest.mark.parametrize("detector", list(DETECTION))
def test_pvt_and_ca_swin_feed_detection_and_instance_segmentation(family: str, detector: str) -> None:
    torch.manual_seed(0)
    backbone = load_backbone(FAMILIES[family][0]())
    model = DETECTION[detector](backbone.config).train()
    name = copy_backbone_weights(model, backbone)
    assert name == {"mask2former": "model.pixel_level_module.encoder"}.get(detector, name)
    inner = model.get_submodule(name)
    assert all(torch.equal(t, backbone.state_dict()[k]) for k, t in inner.state_dict().items())
    pixel_values = torch.randn(2, 3, 64, 64)
    if detector == "mask2former":
        masks = [(torch.rand(2, 64, 64) > 0.5).float() for _ in range(2)]
        output = model(pixel_values=pixel_values, mask_labels=masks, class_labels=[torch.tensor([0, 1])] * 2)
    else:
        boxes = torch.tensor([[0.5, 0.5, 0.2, 0.3], [0.3, 0.4, 0.2, 0.2]])
        output = model(pixel_values=pixel_values, labels=[{"class_labels": torch.tensor([0, 1]), "boxes": boxes}] * 2)
    assert torch.isfinite(output.loss)
    output.loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in inner.parameters()), "the backbone trains"


def test_mistakes_get_one_line(tmp_path) -> None:
    classifier = ViTForImageClassification(ViTConfig(num_labels=3, **VIT))
    with pytest.raises(ValueError, match="decoder 'fcn' is not one of linear, segmenter, upernet"):
        segmentation_model(classifier, "fcn", id2label=LABELS)
    with pytest.raises(ValueError, match="needs id2label"):
        segmentation_model(classifier, "linear")
    with pytest.raises(ValueError, match="hiden_size is not a field of UperNetConfig"):
        segmentation_model(classifier, "upernet", id2label=LABELS, out_indices=[0, 1, 2, 2], hiden_size=16)
    with pytest.raises(ValueError, match="decoder_layer is not a field of SegmenterConfig"):
        segmentation_model(classifier, "segmenter", id2label=LABELS, decoder_layer=1)
    with pytest.raises(ValueError, match="add_fpn needs four out_features"):
        load_backbone(classifier, out_indices=[1, 2], add_fpn=True)
    with pytest.raises(ValueError, match="timm models"):
        segmentation_model(FAMILIES["timm-vit"][0](), "linear", id2label=LABELS)
    with pytest.raises(ValueError, match="could not load the classification checkpoint"):
        load_backbone(str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="model type 'resnet' is not one of"):
        from transformers import ResNetConfig, ResNetForImageClassification

        load_backbone(ResNetForImageClassification(ResNetConfig(hidden_sizes=[8, 8, 8, 8], embedding_size=8)))
    only_class_attention = CaSwinConfig(num_labels=3, **{**CA_SWIN, "depths": [1, 1, 1, 1]})
    with pytest.raises(ValueError, match=r"CA-Swin depths \[1, 1, 1, 1\]: the last stage has no Swin block"):
        load_backbone(CaSwinForImageClassification(only_class_attention))
    assert "load_backbone" in mixpro_hf.__all__


def test_a_distilled_deit_names_both_heads_left_out() -> None:
    teacher = DeiTForImageClassificationWithTeacher(DeiTConfig(num_labels=3, **VIT))
    backbone, info = load_backbone(teacher, output_loading_info=True)
    assert info["unexpected_keys"] == [
        f"{h}.{p}" for h in ("cls_classifier", "distillation_classifier") for p in ("bias", "weight")
    ]
    assert backbone(torch.randn(1, 3, 32, 32)).feature_maps[-1].shape == (1, 32, 8, 8), "both prefix tokens dropped"


def test_an_untested_older_transformers_is_refused_in_one_line(monkeypatch) -> None:
    """transformers 5.13 (the package's lower bound) fails the transfer code in several ways (AutoBackbone, reloading
    a decoder's config): load_backbone and segmentation_model refuse it before doing anything."""
    import transformers

    from mixpro_hf.transfer import TRANSFER_MIN_TRANSFORMERS

    monkeypatch.setattr(transformers, "__version__", "5.13.0")
    model = ViTForImageClassification(ViTConfig(num_labels=3, **VIT))
    for call in (lambda: load_backbone(model), lambda: segmentation_model(model, decoder="linear", id2label={0: "a"})):
        with pytest.raises(ValueError, match=r"tested with transformers >= ") as err:
            call()
        assert "\n" not in str(err.value) and "5.13.0" in str(err.value) and TRANSFER_MIN_TRANSFORMERS in str(err.value)
