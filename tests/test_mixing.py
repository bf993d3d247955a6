"""MaskMix, Mixup and CutMix: purity, exact areas, granularity, statistics, seeding, bad input."""

from __future__ import annotations

import math

import pytest
import torch

from mixpro_hf import cutmix, maskmix, mixup
from mixpro_hf.mixing import box_patch_mask, maskmix_mask, sample_beta


def distinct_images(batch: int, height: int, width: int, channels: int = 3) -> torch.Tensor:
    """Images whose every pixel differs between samples, so provenance is unambiguous."""
    base = torch.rand(1, channels, height, width)
    return base + torch.arange(batch, dtype=torch.float32).view(batch, 1, 1, 1) * 10.0


def patches(x: torch.Tensor, p: int) -> torch.Tensor:
    b, c, h, w = x.shape
    return x.view(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5)  # (B, gh, gw, C, p, p)


@pytest.mark.parametrize("size,patch,scale", [((64, 64), 8, 2), ((64, 48), 8, 3), ((40, 56), 4, 4)])
def test_every_patch_comes_from_exactly_one_image(size, patch, scale):
    x = distinct_images(6, *size)
    out = maskmix(x, patch_size=patch, mask_scale=scale, generator=torch.Generator().manual_seed(1))
    mixed, own, other = patches(out.pixel_values, patch), patches(x, patch), patches(x[out.partner], patch)
    from_self = (mixed == own).flatten(3).all(-1)
    from_partner = (mixed == other).flatten(3).all(-1)
    assert bool((from_self | from_partner).all()), "a patch mixes two images"
    not_self_partner = out.partner != torch.arange(6)
    # where the partner is another image, the patch source is exactly the mask
    assert torch.equal(from_self[not_self_partner], out.patch_mask[not_self_partner])
    assert torch.equal(from_partner[not_self_partner], ~out.patch_mask[not_self_partner])
    assert out.patch_mask.shape == (6, size[0] // patch, size[1] // patch)
    assert out.patch_mask.dtype == torch.bool and out.partner.dtype == torch.long
    assert sorted(out.partner.tolist()) == list(range(6)), "partner must be a permutation"


def test_lam_area_is_exact_on_cropped_grids():
    # 10 x 7 patches with 3-patch cells: a 4 x 3 cell grid cropped to 10 x 7 patches
    x = torch.rand(16, 3, 40, 28)
    for seed in range(20):
        out = maskmix(x, patch_size=4, mask_scale=3, generator=torch.Generator().manual_seed(seed))
        counted = out.patch_mask.sum((1, 2)).double() / (10 * 7)
        torch.testing.assert_close(out.lam_area.double(), counted)
        pixel_mask = out.patch_mask.repeat_interleave(4, 1).repeat_interleave(4, 2)
        torch.testing.assert_close(out.lam_area.double(), pixel_mask.double().mean((1, 2)))


def test_mask_cells_are_whole_blocks_of_mask_scale_patches():
    mask = maskmix_mask(32, (12, 12), 4, generator=torch.Generator().manual_seed(0))
    tau = float(sample_beta(1.0, 1, torch.Generator().manual_seed(0)))  # the same first draw (eq. 6)
    blocks = mask.view(32, 3, 4, 3, 4)
    first = blocks[:, :, :1, :, :1]
    assert torch.equal(blocks, first.expand_as(blocks)), "a mask cell is not uniform"
    # ceil(9 * tau) cells kept per sample (one tau per batch), positions differ between samples
    assert torch.equal(mask.view(32, -1).sum(1), torch.full((32,), math.ceil(9 * tau) * 16))
    assert len({tuple(m.flatten().tolist()) for m in mask}) > 1


def test_cell_count_ceil_and_floor():
    tau = float(sample_beta(1.0, 1, torch.Generator().manual_seed(3)))
    ceil = maskmix_mask(4, (4, 4), 1, generator=torch.Generator().manual_seed(3)).view(4, -1).sum(1)
    floor = maskmix_mask(4, (4, 4), 1, generator=torch.Generator().manual_seed(3), cell_count="floor")
    assert ceil.tolist() == [math.ceil(16 * tau)] * 4
    assert floor.view(4, -1).sum(1).tolist() == [math.floor(16 * tau)] * 4


def test_tau_per_sample_draws_one_ratio_per_sample():
    mask = maskmix_mask(64, (8, 8), 1, generator=torch.Generator().manual_seed(0), tau_per_sample=True)
    assert len(set(mask.view(64, -1).sum(1).tolist())) > 5


def test_lam_area_statistics_for_beta_one():
    x = torch.zeros(8, 1, 32, 32)
    g = torch.Generator().manual_seed(0)
    lams = torch.cat([maskmix(x, patch_size=4, mask_scale=2, generator=g).lam_area for _ in range(1500)])
    num_cells = 16
    expected = 0.5 + 0.5 / num_cells  # E[ceil(S tau) / S] for tau ~ U(0, 1)
    assert abs(lams.mean().item() - expected) < 0.02
    assert lams.min() >= 1 / num_cells and lams.max() <= 1.0
    # one tau per batch: every sample of a batch has the same area (the grid divides evenly)
    out = maskmix(x, patch_size=4, mask_scale=2, generator=g)
    assert torch.all(out.lam_area == out.lam_area[0])
    per_sample = maskmix(x, patch_size=4, mask_scale=2, generator=g, tau_per_sample=True)
    assert per_sample.lam_area.unique().numel() > 1


def test_beta_concentration_changes_spread():
    x = torch.zeros(4, 1, 32, 32)
    g = torch.Generator().manual_seed(0)
    narrow = torch.cat([maskmix(x, 4, 1, beta=20.0, generator=g).lam_area for _ in range(300)])
    wide = torch.cat([maskmix(x, 4, 1, beta=0.2, generator=g).lam_area for _ in range(300)])
    assert narrow.std() < 0.15 < wide.std()


def test_same_seed_same_result_and_flip_partner():
    x = torch.rand(8, 3, 32, 32)
    a = maskmix(x, 8, 2, generator=torch.Generator().manual_seed(7))
    b = maskmix(x, 8, 2, generator=torch.Generator().manual_seed(7))
    c = maskmix(x, 8, 2, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a.pixel_values, b.pixel_values) and torch.equal(a.patch_mask, b.patch_mask)
    assert torch.equal(a.partner, b.partner)
    assert not torch.equal(a.patch_mask, c.patch_mask)
    flipped = maskmix(x, 8, 2, generator=torch.Generator().manual_seed(7), pairing="flip")
    assert flipped.partner.tolist() == list(range(7, -1, -1))


def test_input_is_not_modified():
    x = torch.rand(4, 3, 16, 16)
    before = x.clone()
    maskmix(x, 4, 2, generator=torch.Generator().manual_seed(0))
    mixup(x, generator=torch.Generator().manual_seed(0), patch_size=4)
    cutmix(x, generator=torch.Generator().manual_seed(0), patch_size=4)
    assert torch.equal(x, before)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"pixel_values": torch.rand(3, 32, 32)}, "4-D"),
        ({"pixel_values": torch.rand(2, 3, 30, 32)}, "not divisible by the patch size 8"),
        ({"pixel_values": torch.rand(2, 3, 32, 32), "mask_scale": 0}, "mask_scale must be an integer >= 1"),
        ({"pixel_values": torch.rand(2, 3, 32, 32), "mask_scale": 1.5}, "mask_scale"),
        ({"pixel_values": torch.rand(2, 3, 32, 32), "beta": 0.0}, "Beta concentration must be > 0"),
        ({"pixel_values": torch.rand(2, 3, 32, 32), "pairing": "roll"}, "pairing must be"),
        ({"pixel_values": torch.rand(0, 3, 32, 32)}, "empty batch"),
        ({"pixel_values": torch.rand(2, 3, 32, 32), "mask_scale": 4}, "leaves a single mask cell"),
    ],
)
def test_bad_input_is_refused(kwargs, message):
    kwargs = {"patch_size": 8, "mask_scale": 2, **kwargs}
    with pytest.raises(ValueError, match=message):
        maskmix(**kwargs)


@pytest.mark.parametrize("fn", [maskmix, mixup, cutmix])
def test_batch_of_one_is_returned_unmixed(fn):
    x = torch.rand(1, 3, 16, 16)
    out = fn(x, patch_size=4, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out.pixel_values, x)
    assert out.lam_area.tolist() == [1.0] and out.partner.tolist() == [0]
    assert out.method == "none" and bool(out.patch_mask.all())


def test_mixup_is_the_blend_with_the_flipped_batch():
    x = torch.rand(4, 3, 16, 16)
    out = mixup(x, alpha=0.8, generator=torch.Generator().manual_seed(3), patch_size=4)
    lam = out.lam_area[0].item()
    torch.testing.assert_close(out.pixel_values, lam * x + (1 - lam) * x.flip(0))
    assert out.partner.tolist() == [3, 2, 1, 0]
    torch.testing.assert_close(out.patch_mask, torch.full((4, 4, 4), lam))


@pytest.mark.parametrize("minmax", [None, (0.2, 0.8)])
def test_cutmix_box_area_and_patch_fraction(minmax):
    x = distinct_images(4, 32, 24)
    for seed in range(10):
        out = cutmix(
            x, generator=torch.Generator().manual_seed(seed), patch_size=8, minmax=minmax, patch_mask_mode="fraction"
        )
        pasted = (out.pixel_values != x).any(1)  # (B, H, W): pixels taken from the partner
        assert torch.equal(pasted, (out.pixel_values == x[out.partner]).all(1) & pasted)
        area = pasted[0].double().mean().item()
        assert out.lam_area[0].item() == pytest.approx(1 - area)
        own_fraction = 1 - torch.nn.functional.avg_pool2d(pasted[:1].double(), 8)[0]
        torch.testing.assert_close(out.patch_mask[0].double(), own_fraction)


def test_cutmix_without_correct_lam_keeps_the_sampled_lam():
    x = torch.rand(4, 3, 32, 32)
    out = cutmix(x, generator=torch.Generator().manual_seed(0), patch_size=8, correct_lam=False)
    g = torch.Generator().manual_seed(0)
    sampled = torch.rand(1, generator=g).item()
    assert out.lam_area[0].item() == pytest.approx(sampled, abs=1e-6)


def test_box_patch_mask_nearest_and_fraction():
    box = torch.tensor([[0, 4, 2, 8]])  # rows 0-3, cols 2-7 of a 16x16 image, patches of 8
    torch.testing.assert_close(box_patch_mask(box, (16, 16), 8, "fraction"), torch.tensor([[[0.375, 0.0], [0.0, 0.0]]]))
    # nearest neighbour: each patch takes its top-left pixel (0, 0), which lies outside the box
    torch.testing.assert_close(box_patch_mask(box, (16, 16), 8, "nearest"), torch.zeros(1, 2, 2))
    box = torch.tensor([[0, 9, 0, 9]])
    torch.testing.assert_close(box_patch_mask(box, (16, 16), 8, "nearest"), torch.tensor([[[1.0, 1.0], [1.0, 1.0]]]))


def test_old_partner_keyword_still_works_with_a_warning():
    x = torch.randn(4, 3, 16, 16)
    with pytest.warns(FutureWarning, match="pairing="):
        old = maskmix(x, 8, 1, generator=torch.Generator().manual_seed(1), partner="flip")
    new = maskmix(x, 8, 1, generator=torch.Generator().manual_seed(1), pairing="flip")
    assert torch.equal(old.pixel_values, new.pixel_values) and old.partner.tolist() == [3, 2, 1, 0]


def test_mixup_accepts_uint8_images_like_maskmix_and_cutmix():
    x = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8)
    for out in (
        mixup(x, generator=torch.Generator().manual_seed(0), patch_size=8),
        cutmix(x, generator=torch.Generator().manual_seed(0), patch_size=8),
        maskmix(x, patch_size=8, mask_scale=1, generator=torch.Generator().manual_seed(0)),
    ):
        assert out.pixel_values.dtype == torch.uint8
    lam = float(mixup(x, generator=torch.Generator().manual_seed(0)).lam_area[0])
    expected = (lam * x.float() + (1 - lam) * x.flip(0).float()).round().to(torch.uint8)
    assert torch.equal(mixup(x, generator=torch.Generator().manual_seed(0)).pixel_values, expected)


def test_bool_patch_size_and_meta_tensors_are_refused():
    x = torch.randn(2, 3, 8, 8)
    with pytest.raises(ValueError, match="patch_size must be a positive integer, got True"):
        maskmix(x, patch_size=True, mask_scale=1)
    with pytest.raises(ValueError, match="'meta' device"):
        maskmix(x.to("meta"), patch_size=4, mask_scale=1)
