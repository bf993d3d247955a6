"""Tests for mixpro_hf.attention: class-token attention (MixPro eq. 1-4) without eager fallback.

Every test builds tiny random models (hidden 32, 2 layers, 2 heads, 32x32 images, 8x8 patches) and checks
the captured row against the same weights run in eager mode with ``output_attentions=True``.
"""

from __future__ import annotations

import copy
import socket
from collections.abc import Callable

import pytest
import torch
import transformers as tf
from conftest import TINY_CONFIG
from torch import nn

from mixpro_hf.attention import (
    ClsAttentionCapture,
    TokenLayout,
    capture_cls_attention,
    cls_token_layout,
    find_last_attention,
    remove_persistent_hooks,
    supports_cls_attention,
)
from mixpro_hf.modeling import unwrap_model

COMMON = {**TINY_CONFIG, "image_size": 32, "patch_size": 8, "num_labels": 5}

# name -> (config class, model class, extra config kwargs, expected prefix tokens)
FAMILIES: dict[str, tuple[type, type, dict, int]] = {
    "vit": (tf.ViTConfig, tf.ViTForImageClassification, {}, 1),
    "deit": (tf.DeiTConfig, tf.DeiTForImageClassification, {}, 2),
    "deit_teacher": (tf.DeiTConfig, tf.DeiTForImageClassificationWithTeacher, {}, 2),
    "beit_layer_bias": (
        tf.BeitConfig,
        tf.BeitForImageClassification,
        dict(use_relative_position_bias=True, use_shared_relative_position_bias=False),
        1,
    ),
    "beit_shared_bias": (
        tf.BeitConfig,
        tf.BeitForImageClassification,
        dict(use_relative_position_bias=False, use_shared_relative_position_bias=True),
        1,
    ),
    "data2vec_layer_bias": (
        tf.Data2VecVisionConfig,
        tf.Data2VecVisionForImageClassification,
        dict(use_relative_position_bias=True, use_shared_relative_position_bias=False),
        1,
    ),
    "data2vec_shared_bias": (
        tf.Data2VecVisionConfig,
        tf.Data2VecVisionForImageClassification,
        dict(use_relative_position_bias=False, use_shared_relative_position_bias=True),
        1,
    ),
    "data2vec_both_bias": (
        tf.Data2VecVisionConfig,
        tf.Data2VecVisionForImageClassification,
        dict(use_relative_position_bias=True, use_shared_relative_position_bias=True),
        1,
    ),
    "dinov2": (tf.Dinov2Config, tf.Dinov2ForImageClassification, {}, 1),
    "dinov2_registers": (
        tf.Dinov2WithRegistersConfig,
        tf.Dinov2WithRegistersForImageClassification,
        dict(num_register_tokens=2),
        3,
    ),
    "vit_msn": (tf.ViTMSNConfig, tf.ViTMSNForImageClassification, {}, 1),
}


def build_pair(name: str, seed: int = 0, **overrides) -> tuple[nn.Module, nn.Module, int]:
    """(sdpa model, eager model with identical weights, expected number of prefix tokens)."""
    config_cls, model_cls, extra, prefix = FAMILIES[name]
    config = config_cls(**{**COMMON, **extra, **overrides})
    torch.manual_seed(seed)
    # Separate config copies: _from_config writes the attention implementation into the config.
    model = model_cls._from_config(copy.deepcopy(config), attn_implementation="sdpa")
    with torch.no_grad():  # relative position bias tables are zero-initialised; make them matter
        for pname, param in model.named_parameters():
            if "relative_position_bias_table" in pname:
                param.normal_(0.0, 1.0)
    eager = model_cls._from_config(copy.deepcopy(config), attn_implementation="eager")
    eager.load_state_dict(model.state_dict())
    return model.eval(), eager.eval(), prefix


def reference(eager: nn.Module, x: torch.Tensor, prefix: int, **kwargs) -> torch.Tensor:
    with torch.no_grad():
        out = eager(pixel_values=x, output_attentions=True, **kwargs)
    return out.attentions[-1][:, :, 0, prefix:].mean(1).float()


def images(batch: int = 3, size: int = 32, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def all_forward_hooks(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


# --------------------------------------------------------------------------------------------------
# Correctness per family
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(FAMILIES))
def test_matches_eager_attention(name: str) -> None:
    model, eager, prefix = build_pair(name)
    x = images()
    with capture_cls_attention(model) as cap:
        with torch.no_grad():
            model(pixel_values=x)
    expected = reference(eager, x, prefix)
    num_patches = (32 // 8) ** 2
    assert cap.attention.shape == (3, num_patches)
    assert cap.attention.dtype == torch.float32
    torch.testing.assert_close(cap.attention, expected, atol=1e-5, rtol=0)
    # the attention kernel is untouched and no attention maps were requested
    assert model.config._attn_implementation == "sdpa"
    assert not model.config.output_attentions
    assert all_forward_hooks(model) == 0


@pytest.mark.parametrize("name", list(FAMILIES))
def test_token_layout(name: str) -> None:
    model, _, prefix = build_pair(name)
    layout = cls_token_layout(model)
    assert isinstance(layout, TokenLayout)
    assert layout.model_type == model.config.model_type
    assert layout.num_prefix_tokens == prefix
    assert layout.patch_size == (8, 8) and layout.image_size == (32, 32)
    assert layout.grid_size == (4, 4) and layout.num_patches == 16
    assert supports_cls_attention(model)


def test_beit_interpolated_relative_position_bias() -> None:
    """At another resolution the layer's (interpolated) bias is what gets added, not the stored one."""
    model, eager, prefix = build_pair("beit_layer_bias", use_shared_relative_position_bias=True)
    x = images(size=48)
    with capture_cls_attention(model) as cap, torch.no_grad():
        model(pixel_values=x, interpolate_pos_encoding=True)
    expected = reference(eager, x, prefix, interpolate_pos_encoding=True)
    assert cap.attention.shape == (3, 36)
    torch.testing.assert_close(cap.attention, expected, atol=1e-5, rtol=0)


def test_generic_query_key_fallback() -> None:
    """A non-HF model with a class token and query/key projections is handled by the fallback."""

    class Embed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.cls_token = nn.Parameter(torch.randn(1, 1, 16))
            self.proj = nn.Conv2d(3, 16, 4, 4)
            self.patch_size, self.image_size = 4, 16

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            patches = self.proj(x).flatten(2).transpose(1, 2)
            return torch.cat([self.cls_token.expand(x.shape[0], -1, -1), patches], 1)

    class Attn(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.num_attention_heads, self.attention_head_size = 4, 4
            self.query, self.key, self.value = nn.Linear(16, 16), nn.Linear(16, 16), nn.Linear(16, 16)

        def heads(self, t: torch.Tensor) -> torch.Tensor:
            return t.view(t.shape[0], t.shape[1], 4, 4).transpose(1, 2)

        def forward(self, h: torch.Tensor) -> torch.Tensor:
            q, k, v = self.heads(self.query(h)), self.heads(self.key(h)), self.heads(self.value(h))
            self.probs = torch.softmax(q @ k.transpose(-1, -2) / 2.0, -1)
            out = nn.functional.scaled_dot_product_attention(q, k, v)
            return out.transpose(1, 2).reshape(h.shape)

    class Toy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embeddings, self.blocks = Embed(), nn.ModuleList([Attn(), Attn()])

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.embeddings(x)
            for block in self.blocks:
                h = h + block(h)
            return h[:, 0]

    model = Toy()
    assert find_last_attention(model) is model.blocks[1]
    layout = cls_token_layout(model)
    assert layout.model_type == "Toy" and layout.num_prefix_tokens == 1 and layout.grid_size == (4, 4)
    with capture_cls_attention(model) as cap, torch.no_grad():
        model(images(size=16))
    expected = model.blocks[1].probs[:, :, 0, 1:].mean(1)
    torch.testing.assert_close(cap.attention, expected, atol=1e-6, rtol=0)


# --------------------------------------------------------------------------------------------------
# Training conditions
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("use_reentrant", [False, True])
@pytest.mark.parametrize("name", ["vit", "beit_layer_bias", "data2vec_both_bias"])
def test_gradient_checkpointing_keeps_latest_forward(name: str, use_reentrant: bool) -> None:
    model, eager, prefix = build_pair(name)
    model.train()
    kwargs = {"use_reentrant": use_reentrant}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x name
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    assert getattr(model, "is_activation_checkpointing", False) or model.is_gradient_checkpointing
    x1, x2 = images(seed=1), images(seed=2)
    labels = torch.tensor([0, 1, 2])
    with capture_cls_attention(model) as cap:
        loss1 = model(pixel_values=x1.requires_grad_(use_reentrant), labels=labels).loss
        loss2 = model(pixel_values=x2, labels=labels).loss
        # backward of the *earlier* forward recomputes its last layer: must not overwrite x2's row
        loss1.backward()
        torch.testing.assert_close(cap.attention, reference(eager, x2, prefix), atol=1e-5, rtol=0)
        loss2.backward()
        torch.testing.assert_close(cap.attention, reference(eager, x2, prefix), atol=1e-5, rtol=0)
    assert any(p.grad is not None for p in model.parameters())


def test_bf16_autocast() -> None:
    model, eager, prefix = build_pair("beit_layer_bias")
    x = images()
    with capture_cls_attention(model) as cap, torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():
        model(pixel_values=x)
    assert cap.attention.dtype == torch.float32
    torch.testing.assert_close(cap.attention, reference(eager, x, prefix), atol=2e-2, rtol=0)
    torch.testing.assert_close(cap.attention.sum(-1), torch.ones(3) - 0.0, atol=0.2, rtol=0)


def test_gradients_flow_and_capture_is_detached() -> None:
    model, _, _ = build_pair("vit")
    model.train()
    x, labels = images(), torch.tensor([0, 3, 4])
    torch.manual_seed(0)
    model(pixel_values=x, labels=labels).loss.backward()
    plain = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    with capture_cls_attention(model) as cap:
        loss = model(pixel_values=x, labels=labels).loss
        assert not cap.attention.requires_grad and cap.attention.grad_fn is None
        loss.backward()
    captured = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert plain.keys() == captured.keys() and len(plain) > 0
    for n in plain:
        torch.testing.assert_close(captured[n], plain[n], atol=0, rtol=0)


def test_torch_compile_inductor() -> None:
    """Default (inductor) backend: the hooks are traced into the compiled graph and give the eager values."""
    torch._dynamo.reset()
    model, eager, prefix = build_pair("vit")
    compiled = torch.compile(model)
    x1, x2 = images(seed=1), images(seed=2)
    with capture_cls_attention(compiled) as cap, torch.no_grad():
        compiled(pixel_values=x1)
        torch.testing.assert_close(cap.attention, reference(eager, x1, prefix), atol=1e-5, rtol=0)
        compiled(pixel_values=x2)
        torch.testing.assert_close(cap.attention, reference(eager, x2, prefix), atol=1e-5, rtol=0)
    assert model.config._attn_implementation == "sdpa"
    remove_persistent_hooks(compiled)
    assert all_forward_hooks(model) == 0
    torch._dynamo.reset()


def test_torch_compile_per_step_contexts() -> None:
    """One context per step on a compiled model: right values, no capture outside the context, and only
    two graphs (capture on / off) however many steps -- no recompilation per step."""
    torch._dynamo.reset()
    graphs: list[torch.fx.GraphModule] = []

    def counting_backend(gm: torch.fx.GraphModule, example_inputs: list[torch.Tensor]) -> Callable:
        graphs.append(gm)
        return gm.forward

    model, eager, prefix = build_pair("vit")
    compiled = torch.compile(model, backend=counting_backend)
    xs = [images(seed=s) for s in range(5)]
    for step in range(3):
        with capture_cls_attention(compiled) as cap:
            assert cap.persistent
            with torch.no_grad():
                compiled(pixel_values=xs[step])
            torch.testing.assert_close(cap.attention, reference(eager, xs[step], prefix), atol=1e-5, rtol=0)
        with torch.no_grad():
            compiled(pixel_values=xs[4])  # outside the context: the row is not overwritten
        torch.testing.assert_close(cap.attention, reference(eager, xs[step], prefix), atol=1e-5, rtol=0)
    assert len(graphs) == 2
    remove_persistent_hooks(compiled)
    assert all_forward_hooks(model) == 0
    torch._dynamo.reset()


# --------------------------------------------------------------------------------------------------
# Wrappers
# --------------------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_ddp_wrapped() -> None:
    import torch.distributed as dist

    model, eager, prefix = build_pair("deit_teacher")
    x = images()
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1)
    try:
        ddp = nn.parallel.DistributedDataParallel(model)
        assert unwrap_model(ddp) is model
        assert cls_token_layout(ddp).num_prefix_tokens == 2
        with capture_cls_attention(ddp) as cap, torch.no_grad():
            ddp(pixel_values=x)
        torch.testing.assert_close(cap.attention, reference(eager, x, prefix), atol=1e-5, rtol=0)
    finally:
        dist.destroy_process_group()
    assert all_forward_hooks(model) == 0


def test_unwrap_module_and_orig_mod() -> None:
    model, _, _ = build_pair("vit")

    class Wrapper(nn.Module):
        def __init__(self, module: nn.Module) -> None:
            super().__init__()
            self.module = module

    class Compiled(nn.Module):
        def __init__(self, module: nn.Module) -> None:
            super().__init__()
            self._orig_mod = module

    assert unwrap_model(Wrapper(Compiled(Wrapper(model)))) is model
    assert unwrap_model(model) is model


# --------------------------------------------------------------------------------------------------
# Unsupported models, lifecycle
# --------------------------------------------------------------------------------------------------
NO_CLS: dict[str, Callable[[], nn.Module]] = {
    "swin": lambda: tf.SwinForImageClassification(
        tf.SwinConfig(image_size=32, patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[1, 2], window_size=4)
    ),
    "convnext": lambda: tf.ConvNextForImageClassification(
        tf.ConvNextConfig(hidden_sizes=[8, 16], depths=[1, 1], num_stages=2)
    ),
    "resnet": lambda: tf.ResNetForImageClassification(
        tf.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1])
    ),
}


@pytest.mark.parametrize("model_type", list(NO_CLS))
def test_models_without_class_token_raise(model_type: str) -> None:
    model = NO_CLS[model_type]()
    assert model.config.model_type == model_type
    assert not supports_cls_attention(model)
    for call in (cls_token_layout, lambda m: capture_cls_attention(m).__enter__()):
        with pytest.raises(ValueError, match=model_type) as info:
            call(model)
        message = str(info.value)
        assert "class token" in message and "PAL" in message and "TransMix" in message
        assert "mixup" in message and "cutmix" in message and "maskmix" in message
    assert all_forward_hooks(model) == 0


def test_attention_before_forward_raises() -> None:
    model, _, _ = build_pair("vit")
    with capture_cls_attention(model) as cap:
        assert not cap.captured
        with pytest.raises(RuntimeError, match="No class-token attention captured"):
            _ = cap.attention
    assert isinstance(cap, ClsAttentionCapture)


def test_hooks_removed_after_exit() -> None:
    model, eager, prefix = build_pair("dinov2_registers")
    x1, x2 = images(seed=1), images(seed=2)
    with capture_cls_attention(model) as cap, torch.no_grad():
        assert all_forward_hooks(model) > 0
        model(pixel_values=x1)
    assert all_forward_hooks(model) == 0
    before = cap.attention.clone()
    with torch.no_grad():
        model(pixel_values=x2)
    torch.testing.assert_close(cap.attention, before, atol=0, rtol=0)
    torch.testing.assert_close(before, reference(eager, x1, prefix), atol=1e-5, rtol=0)


def test_hooks_removed_on_exception() -> None:
    model, _, _ = build_pair("beit_shared_bias")
    with pytest.raises(KeyError), capture_cls_attention(model):
        assert all_forward_hooks(model) > 0
        raise KeyError("boom")
    assert all_forward_hooks(model) == 0
    # a fresh capture still works afterwards
    with capture_cls_attention(model) as cap, torch.no_grad():
        model(pixel_values=images())
    assert cap.attention.shape == (3, 16)
