"""Label math against independent computations: eq. 5, 8, 9, TransMix, smoothing, the losses, recipes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mixpro_hf import (
    MixProConfig,
    attention_lambda,
    label_mode,
    maskmix,
    mix_batch,
    mixed_loss,
    mixed_target,
    pal_lambda,
    progressive_factor,
    smooth_one_hot,
    transmix_lambda,
)
from mixpro_hf.labels import check_labels
from mixpro_hf.mixing import MixOutput


def test_attention_lambda_eq5_against_a_loop():
    g = torch.Generator().manual_seed(0)
    attention = torch.rand(5, 3, 16, generator=g)
    mask = torch.rand(5, 4, 4, generator=g) > 0.5
    got = attention_lambda(attention, mask)
    for i in range(5):
        a = attention[i].mean(0).numpy().astype(np.float64)
        m = mask[i].flatten().numpy()
        assert got[i].item() == pytest.approx(a[m].sum() / a.sum(), rel=1e-5)
    # (B, N) input and a float (covered-fraction) mask
    frac = torch.rand(5, 16, generator=g)
    got = attention_lambda(attention.mean(1), frac.view(5, 4, 4))
    expected = (attention.mean(1) * frac).sum(1) / attention.mean(1).sum(1)
    torch.testing.assert_close(got, expected)


def test_attention_lambda_renormalises_over_patches():
    attention = torch.tensor([[0.1, 0.1, 0.2, 0.0]])  # a softmax row without its class-token column
    mask = torch.tensor([[True, False, True, False]])
    assert attention_lambda(attention, mask).item() == pytest.approx(0.75)


@pytest.mark.parametrize(
    "attention,mask,message",
    [
        (torch.zeros(2, 4), torch.ones(2, 4, dtype=torch.bool), "sums to 0"),
        (torch.tensor([[0.5, float("nan"), 0.2, 0.1]]), torch.ones(1, 4, dtype=torch.bool), "NaN"),
        (torch.rand(2, 9), torch.ones(2, 2, 2, dtype=torch.bool), "must match"),
        (torch.rand(2, 2, 2, 2), torch.ones(2, 4, dtype=torch.bool), r"\(B, N\) or \(B, heads, N\)"),
    ],
)
def test_attention_lambda_bad_input(attention, mask, message):
    with pytest.raises(ValueError, match=message):
        attention_lambda(attention, mask)


def test_progressive_factor_eq8_is_the_cosine_of_softmax_and_target():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(6, 10, generator=g)
    target = mixed_target(torch.arange(6), torch.arange(5, -1, -1), torch.rand(6, generator=g), 10, 0.1)
    got = progressive_factor(logits, target)
    p = torch.softmax(logits, -1).numpy().astype(np.float64)
    t = target.numpy().astype(np.float64)
    expected = (p * t).sum(1) / (np.linalg.norm(p, axis=1) * np.linalg.norm(t, axis=1))
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5)
    assert bool(((got >= 0) & (got <= 1)).all())
    # a perfect one-hot prediction of an unmixed target gives alpha -> 1
    confident = progressive_factor(torch.eye(4) * 50, torch.eye(4))
    torch.testing.assert_close(confident, torch.ones(4))


def test_progressive_factor_strategies_table10():
    logits, target = torch.randn(3, 5), torch.full((3, 5), 0.2)
    assert progressive_factor(logits, target, "equal").tolist() == [0.5] * 3
    assert progressive_factor(logits, target, "linear", progress=0.3).tolist() == pytest.approx([0.3] * 3)
    assert progressive_factor(logits, target, "parabolic", progress=0.3).tolist() == pytest.approx([0.09] * 3)
    param = torch.zeros((), requires_grad=True)
    alpha = progressive_factor(logits, target, "learnable", learnable=param)
    assert alpha.tolist() == [0.5] * 3
    alpha.sum().backward()
    assert param.grad is not None and param.grad.item() == pytest.approx(0.75)
    with pytest.raises(ValueError, match="progress = T / T_max"):
        progressive_factor(logits, target, "linear")
    with pytest.raises(ValueError, match="unknown alpha strategy 'cubic'"):
        progressive_factor(logits, target, "cubic")


def test_pal_eq9_and_transmix():
    lam_area, lam_attn, alpha = torch.tensor([0.2, 0.9]), torch.tensor([0.6, 0.1]), torch.tensor([0.25, 1.0])
    torch.testing.assert_close(pal_lambda(lam_area, lam_attn, alpha), torch.tensor([0.3, 0.1]))
    torch.testing.assert_close(transmix_lambda(lam_area, lam_attn), torch.tensor([0.4, 0.5]))
    torch.testing.assert_close(transmix_lambda(lam_area, lam_attn, "attn"), lam_attn)


def test_smoothing_then_mixing_matches_timm():
    timm_mixup = pytest.importorskip("timm.data.mixup", reason="timm (dev extra) gives the reference target")
    labels = torch.tensor([0, 3, 2, 1])
    ours = mixed_target(labels, torch.tensor([3, 2, 1, 0]), 0.7, num_labels=5, smoothing=0.1)
    theirs = timm_mixup.mixup_target(labels, 5, lam=0.7, smoothing=0.1)
    torch.testing.assert_close(ours, theirs)
    one_hot = smooth_one_hot(labels, 5, 0.1)
    torch.testing.assert_close(one_hot.sum(1), torch.ones(4))
    assert one_hot[0, 0].item() == pytest.approx(0.92)


def test_labels_outside_range_are_refused():
    with pytest.raises(ValueError, match=r"label 7 is outside \[0, 5\)"):
        check_labels(torch.tensor([0, 7]), 5)
    with pytest.raises(ValueError, match=r"label -1 is outside"):
        check_labels(torch.tensor([-1, 2]), 5)
    with pytest.raises(ValueError, match="integer class ids"):
        check_labels(torch.tensor([0.0, 1.0]), 5)


def _maskmix_batch(seed: int = 0) -> tuple[MixOutput, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    mix = maskmix(torch.rand(6, 3, 16, 16, generator=g), patch_size=4, mask_scale=1, generator=g)
    return mix, torch.randint(0, 7, (6,), generator=g), torch.rand(6, 16, generator=g)


def test_mixed_loss_pal_matches_the_equations():
    mix, labels, attention = _maskmix_batch()
    logits = torch.randn(6, 7, requires_grad=True)
    config = MixProConfig(mix_method="mixpro", loss_form="soft")
    out = mixed_loss(logits, labels, mix, config, attention)
    area_target = mixed_target(labels, mix.partner, mix.lam_area, 7, 0.1)
    alpha = progressive_factor(logits, area_target)
    lam = alpha * attention_lambda(attention, mix.patch_mask) + (1 - alpha) * mix.lam_area
    target = mixed_target(labels, mix.partner, lam, 7, 0.1)
    expected = -(target * torch.log_softmax(logits, -1)).sum(1).mean()
    torch.testing.assert_close(out.loss, expected)
    assert out.mode == "pal" and set(out.stats) == {"alpha", "lam", "lam_area", "lam_attn"}
    assert out.stats["alpha"].item() == pytest.approx(alpha.mean().item())


def test_alpha_gradient_flows_by_default_and_can_be_stopped():
    mix, labels, attention = _maskmix_batch(1)
    grads = {}
    for alpha_grad in (True, False):
        logits = torch.randn(6, 7, generator=torch.Generator().manual_seed(5)).requires_grad_()
        config = MixProConfig(mix_method="mixpro", alpha_grad=alpha_grad)
        mixed_loss(logits, labels, mix, config, attention).loss.backward()
        grads[alpha_grad] = logits.grad
    assert not torch.allclose(grads[True], grads[False])
    # with alpha detached the gradient is that of a fixed soft target: softmax - target
    # (the default hard form: unsmoothed labels; the soft form: the smoothed target)
    for form, smoothing in (("hard", 0.0), ("soft", 0.1)):
        logits = torch.randn(6, 7, generator=torch.Generator().manual_seed(5)).requires_grad_()
        config = MixProConfig(mix_method="mixpro", alpha_grad=False, loss_form=form)
        out = mixed_loss(logits, labels, mix, config, attention)
        out.loss.backward()
        target = mixed_target(labels, mix.partner, out.lam.detach(), 7, smoothing)
        torch.testing.assert_close(logits.grad, (torch.softmax(logits.detach(), -1) - target) / 6)


def test_hard_loss_form_is_the_reference_code():
    mix, labels, attention = _maskmix_batch(2)
    logits = torch.randn(6, 7)
    out = mixed_loss(logits, labels, mix, MixProConfig(mix_method="mixpro", loss_form="hard"), attention)
    ce = torch.nn.functional.cross_entropy
    expected = (
        out.lam * ce(logits, labels, reduction="none")
        + (1 - out.lam) * ce(logits, labels[mix.partner], reduction="none")
    ).mean()
    torch.testing.assert_close(out.loss, expected)


def test_area_label_needs_no_attention_and_pal_refuses_without():
    mix, labels, attention = _maskmix_batch(3)
    logits = torch.randn(6, 7)
    area = mixed_loss(logits, labels, mix, MixProConfig(mix_method="maskmix"))
    target = mixed_target(labels, mix.partner, mix.lam_area, 7, 0.1)
    torch.testing.assert_close(area.loss, -(target * torch.log_softmax(logits, -1)).sum(1).mean())
    assert area.mode == "area" and "alpha" not in area.stats
    with pytest.raises(ValueError, match="need the class-token attention"):
        mixed_loss(logits, labels, mix, MixProConfig(mix_method="mixpro"))


def test_recipe_switch_frequencies_and_label_modes():
    x = torch.rand(4, 3, 32, 32)
    g = torch.Generator().manual_seed(0)
    methods = [mix_batch(x, MixProConfig(mix_method="mixpro"), 4, g).method for _ in range(600)]
    share = {m: methods.count(m) / 600 for m in ("maskmix", "mixup", "cutmix")}
    assert share["maskmix"] == pytest.approx(0.5, abs=0.07)
    assert share["mixup"] == pytest.approx(0.25, abs=0.06) and share["cutmix"] == pytest.approx(0.25, abs=0.06)
    assert {mix_batch(x, MixProConfig(mix_method="mixup_cutmix"), 4, g).method for _ in range(50)} == {
        "mixup",
        "cutmix",
    }
    assert mix_batch(x, MixProConfig(mix_method="none"), 4, g).method == "none"
    assert mix_batch(x, MixProConfig(mix_method="maskmix", maskmix_prob=1.0), 4, g).method == "maskmix"
    assert mix_batch(x, MixProConfig(mix_method="cutmix"), 4, g).method == "cutmix"
    assert mix_batch(x, MixProConfig(mix_method="mixup_cutmix", mix_prob=0.0), 4, g).method == "none"
    assert label_mode(MixProConfig(mix_method="mixpro"), "maskmix") == "pal"
    assert label_mode(MixProConfig(mix_method="mixpro"), "cutmix") == "area"
    assert label_mode(MixProConfig(mix_method="transmix"), "cutmix") == "transmix"
    assert label_mode(MixProConfig(mix_method="transmix"), "mixup") == "area"
    assert label_mode(MixProConfig(mix_method="maskmix"), "maskmix") == "area"


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"mix_method": "fmix"}, "mix_method='fmix' is not one of"),
        ({"maskmix_prob": 1.5}, r"maskmix_prob must be a finite number in \[0, 1\], got 1.5"),
        ({"mask_scale": 0}, "mask_scale must be an integer >= 1"),
        ({"mask_scale": True}, "mask_scale must be an integer >= 1"),
        ({"alpha_strategy": "cubic"}, "alpha_strategy='cubic'"),
        ({"label_smoothing_factor": 1.0}, "label_smoothing_factor"),
        ({"cutmix_minmax": (0.1,)}, "two ratios"),
        ({"cutmix_minmax": (0.5, 0.2)}, "0 <= min < max <= 1"),
        ({"beta": float("inf")}, "beta must be a finite number"),
        ({"beta": float("nan")}, "beta must be a finite number"),
        ({"mixup_alpha": float("nan")}, "mixup_alpha must be a finite number"),
        ({"cutmix_alpha": float("inf")}, "cutmix_alpha must be a finite number"),
        ({"maskmix_pairing": "roll"}, "maskmix_pairing='roll'"),
    ],
)
def test_config_refuses_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MixProConfig(**kwargs)


def test_old_setting_names_are_deprecated_aliases():
    with pytest.warns(FutureWarning) as record:
        config = MixProConfig(method="cutmix", label_smoothing=0.2, maskmix_partner="flip")
    assert [str(w.message).split("=")[0] for w in record] == ["method", "label_smoothing", "maskmix_partner"]
    assert (config.mix_method, config.label_smoothing_factor, config.maskmix_pairing) == ("cutmix", 0.2, "flip")
