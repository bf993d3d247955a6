"""The recipe's defaults against the reference implementations (issue 10): timm's CutMix boxes and modes,
TransMix's nearest-neighbour attention mask, the reference code's hard PAL loss, ``mix_prob`` gating, and the
paper's patch-14 geometry."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from timm.data import mixup as timm_mixup

from mixpro_hf import MixProConfig, mix_batch, mixed_loss
from mixpro_hf.labels import attention_lambda, mixed_target
from mixpro_hf.mixing import box_pixel_mask, check_mask_grid, cutmix_boxes, mix_per_sample


@pytest.mark.parametrize("size", [(224, 224), (33, 47), (31, 31)])
@pytest.mark.parametrize("lam", [0.13, 0.5, 0.71, 0.9])
def test_cutmix_boxes_match_the_installed_timm_including_odd_sides(monkeypatch, size, lam):
    """``box_edge="timm-1.0.31"`` is the installed timm's ``rand_bbox`` exactly; the default ``"reference"``
    (timm <= 1.0.29, used by the MixPro and TransMix code) differs by one row/column where a side is odd."""
    height, width = size
    generator = torch.Generator().manual_seed(int(lam * 100))
    boxes = {
        edge: cutmix_boxes(size, torch.tensor([lam]), torch.Generator().manual_seed(7), None, edge)[0].tolist()
        for edge in ("reference", "timm-1.0.31")
    }
    # the same centre as ours, fed to timm's own function
    draws = torch.rand(2, generator=torch.Generator().manual_seed(7)).double()
    centre = [int(draws[0] * height), int(draws[1] * width)]
    monkeypatch.setattr(np.random, "randint", lambda low, high, size=None: centre.pop(0))
    timm_box = [int(v) for v in timm_mixup.rand_bbox((height, width), lam)]
    assert boxes["timm-1.0.31"] == timm_box
    cut_h, cut_w = int(height * math.sqrt(1 - lam)), int(width * math.sqrt(1 - lam))
    y0, y1, x0, x1 = timm_box
    cy, cx = y0 + cut_h // 2 if y0 > 0 else None, x0 + cut_w // 2 if x0 > 0 else None
    reference = boxes["reference"]
    assert reference[0] == y0 and reference[2] == x0
    if cy is not None and y1 < height:
        assert y1 - reference[1] == cut_h % 2
    if cx is not None and x1 < width:
        assert x1 - reference[3] == cut_w % 2
    del generator


def test_transmix_attention_label_uses_the_nearest_neighbour_mask_by_default():
    x = torch.randn(4, 3, 32, 32)
    attention = torch.rand(4, 16)
    for mode in ("nearest", "fraction"):
        config = MixProConfig(mix_method="transmix", switch_prob=1.0, transmix_patch_mask=mode)
        mix = mix_batch(x, config, 8, torch.Generator().manual_seed(3))
        assert mix.method == "cutmix"
        # rebuild the box from the pasted pixels and compute eq. 5 independently
        inside = (mix.pixel_values != x).any(1)[0]
        if mode == "nearest":
            own = (~inside[::8, ::8]).float()
        else:
            own = 1.0 - inside.float().view(4, 8, 4, 8).mean((1, 3))
        expected = (attention * own.flatten()).sum(1) / attention.sum(1)
        torch.testing.assert_close(attention_lambda(attention, mix.patch_mask), expected)
    assert MixProConfig().transmix_patch_mask == "nearest"


def test_pal_uses_the_reference_hard_loss_by_default_and_transmix_never_does():
    torch.manual_seed(0)
    logits, labels = torch.randn(8, 5), torch.randint(0, 5, (8,))
    attention = torch.rand(8, 16)
    x = torch.randn(8, 3, 16, 16)
    config = MixProConfig(mix_method="mixpro", maskmix_prob=1.0, mask_scale=1)
    assert config.loss_form == "hard"
    mix = mix_batch(x, config, 4, torch.Generator().manual_seed(0))
    out = mixed_loss(logits, labels, mix, config, attention)
    lam = out.lam.detach()
    expected = (
        lam * F.cross_entropy(logits, labels, reduction="none")
        + (1 - lam) * F.cross_entropy(logits, labels[mix.partner], reduction="none")
    ).mean()
    torch.testing.assert_close(out.loss, expected)
    # TransMix batches keep the soft form (TransMix's code), whatever loss_form says
    for form in ("hard", "soft"):
        config = MixProConfig(mix_method="transmix", switch_prob=1.0, loss_form=form)
        mix = mix_batch(x, config, 4, torch.Generator().manual_seed(0))
        out = mixed_loss(logits, labels, mix, config, attention)
        target = mixed_target(labels, mix.partner, out.lam.detach(), 5, 0.1)
        torch.testing.assert_close(out.loss, torch.sum(-target * F.log_softmax(logits, -1), -1).mean())


def test_mix_prob_gates_only_mixup_and_cutmix():
    x = torch.randn(4, 3, 16, 16)
    config = MixProConfig(mix_method="mixpro", mix_prob=0.0, maskmix_prob=0.5, mask_scale=1)
    methods = {mix_batch(x, config, 4, torch.Generator().manual_seed(s)).method for s in range(40)}
    assert methods == {"maskmix", "none"}


@pytest.mark.parametrize("paired", [False, True])
def test_per_sample_modes_follow_timm(paired):
    x = torch.rand(9, 3, 16, 16)
    out = mix_per_sample(
        x,
        torch.Generator().manual_seed(1),
        patch_size=4,
        paired=paired,
        mixup_alpha=0.8,
        cutmix_alpha=1.0,
        switch_prob=0.5,
    )
    assert out.partner.tolist() == list(range(8, -1, -1))  # timm mixes sample i with B - 1 - i
    assert len(set(out.lam_area.tolist())) > 3  # one lam per sample (or pair)
    if paired:
        torch.testing.assert_close(out.lam_area, out.lam_area.flip(0))
        assert out.lam_area[4] == 1.0  # the middle of an odd batch is unmixed
    for i in range(9):
        changed = (out.pixel_values[i] != x[i]).any(0)
        own = 1.0 - changed.float().mean()
        blend = out.lam_area[i] * x[i] + (1 - out.lam_area[i]) * x[8 - i]
        is_blend = torch.allclose(out.pixel_values[i], blend, atol=1e-6)
        is_box = torch.isclose(own, out.lam_area[i], atol=1e-6) and torch.equal(
            out.pixel_values[i][:, changed], x[8 - i][:, changed]
        )
        assert is_blend or is_box, i
    config = MixProConfig(mix_method="mixup_cutmix", mixup_mode="elem")
    assert mix_batch(x, config, 4, torch.Generator().manual_seed(0)).partner.tolist() == list(range(8, -1, -1))
    with pytest.raises(ValueError, match="mixup_mode must be 'batch'"):
        MixProConfig(mix_method="transmix", mixup_mode="pair")


def test_paper_geometry_has_no_cropped_mask_cell():
    """DeiT configs of the reference code: 224x224, patch 14, 56-pixel cells = mask_scale 4: a 16x16 patch grid
    of 4x4 whole cells."""
    grid = 224 // 14
    check_mask_grid((grid, grid), 4)
    assert grid % 4 == 0
    config = MixProConfig(mix_method="maskmix", maskmix_prob=1.0)
    mix = mix_batch(torch.randn(3, 3, 224, 224), config, 14, torch.Generator().manual_seed(0))
    cells = mix.patch_mask.view(3, 4, 4, 4, 4)
    assert torch.equal(cells, cells[:, :, :1, :, :1].expand_as(cells))
    assert box_pixel_mask(torch.tensor([[0, 1, 0, 1]]), (2, 2)).tolist() == [[[True, False], [False, False]]]


def test_paper_presets_use_the_reference_geometry():
    from mixpro_hf.modeling import ModelArguments, build_model, model_geometry

    args = ModelArguments(model_type="deit", model_size="tiny", config_overrides="num_hidden_layers=1")
    model, processor = build_model(args, ["a", "b"])
    assert model_geometry(model) == (14, 224) and model.config.hidden_size == 192
    assert processor.size["height"] == 224
    check_mask_grid((16, 16), MixProConfig().mask_scale)  # 4x4 whole 56-pixel cells
