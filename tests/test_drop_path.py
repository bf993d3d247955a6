"""Stochastic depth by hooks on 🤗 ViT/DeiT: behaviour as DeiT/timm, no new weights, stock checkpoints."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import TINY_CONFIG
from torch import nn
from transformers import (
    AutoModelForImageClassification,
    BeitConfig,
    BeitForImageClassification,
    DeiTConfig,
    DeiTForImageClassification,
    ViTConfig,
    ViTForImageClassification,
)

from mixpro_hf.drop_path import (
    DropPathHook,
    add_drop_path,
    apply_drop_path,
    drop_path,
    drop_path_rates,
    vit_blocks,
)

TINY = {**TINY_CONFIG, "num_hidden_layers": 4}
FAMILIES = [(ViTConfig, ViTForImageClassification, "vit"), (DeiTConfig, DeiTForImageClassification, "deit")]


def tiny(family: tuple, seed: int = 0) -> nn.Module:
    config_class, model_class, _ = family
    torch.manual_seed(seed)
    return model_class(config_class(**TINY))


def pixels(batch: int = 8) -> torch.Tensor:
    return torch.randn(batch, 3, 16, 16, generator=torch.Generator().manual_seed(1))


@pytest.fixture(params=FAMILIES, ids=lambda f: f[2])
def family(request: pytest.FixtureRequest) -> tuple:
    return request.param


def test_training_forwards_differ_eval_forwards_equal_plain_model(family: tuple) -> None:
    model = tiny(family)
    plain = copy.deepcopy(model)
    assert add_drop_path(model, 0.5) == 4
    x = pixels()
    model.train()
    first, second = model(x).logits, model(x).logits
    assert not torch.allclose(first, second)
    plain.train()  # every dropout at 0: without drop path training forwards are equal
    assert torch.equal(plain(x).logits, plain(x).logits)
    model.eval(), plain.eval()
    with torch.no_grad():
        assert torch.equal(model(x).logits, model(x).logits)
        assert torch.equal(model(x).logits, plain(x).logits)


def test_rates_rise_linearly_as_in_deit(family: tuple) -> None:
    model = tiny(family)
    assert drop_path_rates(model) == [0.0] * 4
    add_drop_path(model, 0.3)
    assert drop_path_rates(model) == pytest.approx(torch.linspace(0, 0.3, 4).tolist())
    assert drop_path_rates(model) == pytest.approx([0.0, 0.1, 0.2, 0.3])


def test_idempotent_and_zero_removes(family: tuple) -> None:
    model = tiny(family)
    add_drop_path(model, 0.5)
    add_drop_path(model, 0.5)
    hooks = [h for m in model.modules() for h in m._forward_hooks.values() if isinstance(h, DropPathHook)]
    assert len(hooks) == 4  # one shared branch dropout per block in transformers 5.x
    add_drop_path(model, 0.2)
    assert drop_path_rates(model) == pytest.approx([0.0, 0.2 / 3, 0.4 / 3, 0.2])
    assert add_drop_path(model, 0.0) == 0
    assert drop_path_rates(model) == [0.0] * 4
    assert not [h for m in model.modules() for h in m._forward_hooks.values() if isinstance(h, DropPathHook)]


def test_seeded_training_forwards_are_identical(family: tuple) -> None:
    model = tiny(family).train()
    add_drop_path(model, 0.5)
    x = pixels()
    torch.manual_seed(7)
    first = model(x).logits
    torch.manual_seed(7)
    assert torch.equal(model(x).logits, first)


def test_a_dropped_branch_leaves_the_residual_stream(family: tuple) -> None:
    """With every branch dropped each block is the identity: drop path acts on the branches, not the sum."""
    model = tiny(family).train()
    add_drop_path(model, 0.5)
    for module in model.modules():
        for hook in module._forward_hooks.values():
            if isinstance(hook, DropPathHook):
                hook.prob = 1.0 - 1e-12  # Bernoulli(1e-12): always 0
    embeddings = model.base_model.embeddings(pixels())
    hidden = embeddings
    for block in vit_blocks(model):  # transformers 5.x: base_model.layers (4.x: base_model.encoder.layer)
        hidden = block(hidden)
    assert torch.equal(hidden, embeddings)
    model.eval()  # and the same blocks are not the identity without drop path
    assert not torch.allclose(vit_blocks(model)[0](embeddings), embeddings)


def test_per_sample_masks() -> None:
    x = torch.ones(4000, 3, 5)
    torch.manual_seed(0)
    out = drop_path(x, 0.25)
    per_sample = out[:, 0, 0]
    assert per_sample.unique().tolist() == [0.0, torch.tensor(1 / 0.75).item()]
    assert torch.equal(out, per_sample[:, None, None].expand_as(out))  # whole samples
    assert abs((per_sample == 0).float().mean().item() - 0.25) < 0.03
    assert torch.equal(drop_path(x, 0.0), x)


def test_gradient_flows(family: tuple) -> None:
    model = tiny(family).train()
    add_drop_path(model, 0.5)
    torch.manual_seed(0)
    loss = nn.functional.cross_entropy(model(pixels()).logits, torch.arange(8) % 4)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    first_block = vit_blocks(model)[0]
    assert any(p.grad.abs().sum() > 0 for p in first_block.parameters())


def test_state_dict_unchanged_and_stock_transformers_loads(family: tuple, tmp_path) -> None:
    model = tiny(family)
    keys = list(model.state_dict())
    add_drop_path(model, 0.1)
    assert list(model.state_dict()) == keys
    model.save_pretrained(tmp_path)
    loaded, info = AutoModelForImageClassification.from_pretrained(tmp_path, output_loading_info=True)
    assert type(loaded) is type(model)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert drop_path_rates(loaded) == [0.0] * 4  # drop path is not a weight: re-apply it for training
    model.eval()
    with torch.no_grad():
        assert torch.equal(loaded.eval()(pixels()).logits, model(pixels()).logits)


@pytest.mark.parametrize("rate", [-0.1, 1.0, 1.5, float("nan")])
def test_bad_rate_is_refused(rate: float) -> None:
    model = tiny(FAMILIES[0])
    with pytest.raises(ValueError, match=r"drop path rate must be a number in \[0, 1\)") as info:
        add_drop_path(model, rate)
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="drop path rate"):
        apply_drop_path(model.config, rate)


def test_apply_drop_path_per_family() -> None:
    vit_config = ViTConfig(**TINY)
    assert apply_drop_path(vit_config, 0.1) == "hooks" and not hasattr(vit_config, "drop_path_rate")
    vit = ViTForImageClassification(vit_config)
    assert apply_drop_path(vit, 0.1) == "hooks"
    assert drop_path_rates(vit) == pytest.approx(torch.linspace(0, 0.1, 4).tolist())

    beit_config = BeitConfig(**TINY)
    assert apply_drop_path(beit_config, 0.1) == "config" and beit_config.drop_path_rate == 0.1
    beit = BeitForImageClassification(beit_config)
    assert apply_drop_path(beit, 0.1) == "config"
    assert vit_blocks(beit) == [] and drop_path_rates(beit) == []
    with pytest.raises(ValueError, match="before building"):
        apply_drop_path(beit, 0.2)
    with pytest.raises(ValueError, match="own drop path"):
        add_drop_path(beit, 0.1)

    assert apply_drop_path(nn.Linear(2, 2), 0.1) == "unsupported"
    with pytest.raises(ValueError, match="no ViT-style encoder blocks"):
        add_drop_path(nn.Sequential(nn.Linear(2, 2)), 0.1)


class _SelfOutput(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.dense, self.dropout = nn.Linear(4, 4), nn.Dropout(0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.dense(x))


class _Output(_SelfOutput):
    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return self.dropout(self.dense(x)) + residual


class ViTLayer(nn.Module):
    """The transformers < 5 ViT block layout: the branch dropouts live in attention.output and output."""

    def __init__(self) -> None:
        super().__init__()
        self.attention = nn.Module()
        self.attention.output = _SelfOutput()
        self.layernorm_before, self.layernorm_after = nn.LayerNorm(4), nn.LayerNorm(4)
        self.intermediate, self.output = nn.Linear(4, 4), _Output()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.attention.output(self.layernorm_before(x)) + x
        return self.output(self.intermediate(self.layernorm_after(x)), x)


def test_transformers_4_block_layout() -> None:
    model = nn.Sequential(nn.ModuleList([ViTLayer() for _ in range(3)]))
    assert add_drop_path(model, 0.4) == 3
    assert drop_path_rates(model) == pytest.approx([0.0, 0.2, 0.4])
    last = vit_blocks(model)[-1]
    hooked = [m for m in (last.attention.output.dropout, last.output.dropout) if m._forward_hooks]
    assert len(hooked) == 2
