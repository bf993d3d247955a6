"""Class-token attention capture for Hugging Face Vision Transformers, without eager fallback.

Papers:
    - MixPro: Zhao et al., ICLR 2023 (§3.1, eq. 1-4). https://openreview.net/forum?id=dRjWsd3gwsm
    - TransMix: Chen et al., CVPR 2022. https://arxiv.org/abs/2111.09833

MixPro's Progressive Attention Labeling (PAL) and TransMix weight the area ratio of a mixed image by the
attention that the class token pays to the patch tokens in the *last* transformer block. In the notation
of the MixPro paper (Zhao et al., ICLR 2023, Sec. 3), for the last block with input tokens ``z`` and
``h`` heads:

* eq. (1)  ``q = z_cls W_q``,  ``K = z W_k``  (one query row: the class token; all keys);
* eq. (2)  ``A_h = softmax(q_h K_h^T / sqrt(d) [+ B_h])``  (``B`` a relative position bias where the
  backbone has one, e.g. BEiT / Data2Vec-Vision);
* eq. (3)  ``A = 1/h sum_h A_h``  (mean over heads);
* eq. (4)  ``A`` restricted to the patch columns (class, distillation and register tokens dropped);
  the renormalisation of ``A`` over the patches inside / outside the mixed region is done later, when
  the attention-based mixing ratio is computed (``attention_lambda``).

Hugging Face models only return attention maps with ``output_attentions=True``, which forces *eager*
attention on every layer and materialises ``B x h x N x N`` probabilities. Here every layer keeps its own
attention kernel (sdpa / flash / flex); forward hooks on the last attention module's query and key
projections recover ``q`` (class-token row only) and ``K``, and the single row ``A`` of eq. (2)-(4) is
computed on the side in float32, without gradient: ``O(N)`` memory per head.

Usage::

    from mixpro_hf.attention import capture_cls_attention

    with capture_cls_attention(model) as cap:
        out = model(pixel_values=x)
    cap.attention  # (B, N_patches) float32, detached

For ``torch.compile``: enter the context *before* the first compiled call (typically around the whole
training loop) -- dynamo does not guard on module hooks, so hooks added to an already-compiled module are
not seen until it recompiles.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .modeling import token_geometry, unwrap_model

__all__ = [
    "ClsAttentionCapture",
    "TokenLayout",
    "capture_cls_attention",
    "cls_attention_problem",
    "cls_token_layout",
    "find_last_attention",
    "remove_persistent_hooks",
    "supports_cls_attention",
]

# Names of separate (query, key) projection pairs, in order of preference: 🤗 (``q_proj``/``k_proj``,
# ``query``/``key``: ViT, DeiT, BEiT, PVT, CA-Swin) and timm's class attention (``q``/``k``: CaiT, XCiT).
_QK_NAMES: tuple[tuple[str, str], ...] = (("q_proj", "k_proj"), ("query", "key"), ("q", "k"))
# Forward arguments of an attention module that carry an additive score bias / mask (eq. 2, ``B``).
_BIAS_ARG_NAMES: tuple[str, ...] = (
    "attention_mask",
    "attn_mask",
    "relative_position_bias",
    "attn_bias",
    "position_bias",
)
# Parameter names that mark a class token.
_CLS_PARAM_NAMES: tuple[str, ...] = ("cls_token", "class_token")

_NO_CLS_MESSAGE = (
    "model type {model_type!r} has no class token. Attention-based labels (PAL, TransMix) need the "
    "class-token attention of the last transformer block, so they only work with backbones that have one "
    "(🤗 ViT, DeiT, BEiT, Data2Vec-Vision, Dinov2, PVT; timm ViT, DeiT, CaiT, XCiT through "
    "TimmWrapperForImageClassification; CA-Swin). Area-only label mixing (mixup, cutmix, maskmix) works for any "
    "image classifier."
)


# --------------------------------------------------------------------------------------------------
# Model inspection
# --------------------------------------------------------------------------------------------------
def _model_type(model: nn.Module) -> str:
    config = getattr(model, "config", None)
    return str(getattr(config, "model_type", None) or type(model).__name__)


@dataclass(frozen=True)
class TokenLayout:
    """Token layout of a classifier with a class token, at the last attention block.

    Attributes:
        model_type: ``config.model_type`` (e.g. ``"vit"``, ``"deit"``, ``"pvt"``, ``"timm_wrapper"``).
        num_prefix_tokens: tokens placed before the patch tokens among the last attention's keys: 1 (class) for
            ViT / BEiT / Dinov2 / PVT / CaiT / XCiT / CA-Swin, 2 (class + distillation) for DeiT,
            ``1 + num_register_tokens`` for Dinov2 with registers (timm: the model's ``num_prefix_tokens``).
        patch_size: ``(height, width)`` in pixels of one token of the grid the class token attends to
            (:func:`~mixpro_hf.modeling.token_geometry`: PVT's last stage, CA-Swin's last stage, ...).
        image_size: ``(height, width)`` of the configured input resolution, in pixels.
    """

    model_type: str
    num_prefix_tokens: int
    patch_size: tuple[int, int]
    image_size: tuple[int, int]

    @property
    def grid_size(self) -> tuple[int, int]:
        """Patch grid ``(rows, cols)`` at the configured resolution."""
        return self.image_size[0] // self.patch_size[0], self.image_size[1] // self.patch_size[1]

    @property
    def num_patches(self) -> int:
        """Number of patch tokens at the configured resolution."""
        rows, cols = self.grid_size
        return rows * cols


def _find_cls_owner(model: nn.Module) -> nn.Module | None:
    """The module that owns the class-token parameter (the embeddings, or the timm model), or None."""
    for module in model.modules():
        for name in _CLS_PARAM_NAMES:
            if isinstance(getattr(module, name, None), torch.Tensor):
                return module
    return None


def _num_prefix_tokens(model: nn.Module) -> int:
    """Tokens before the patch tokens among the last attention's keys (see :class:`TokenLayout`).

    Raises:
        ValueError: if the model has no class token (Swin, ConvNeXt, ResNet, ...).
    """
    owner = _find_cls_owner(model)
    if owner is None:
        raise ValueError(_NO_CLS_MESSAGE.format(model_type=_model_type(model)))
    timm_count = getattr(owner, "num_prefix_tokens", None)
    if isinstance(timm_count, int) and not isinstance(timm_count, bool):
        return timm_count
    num_prefix = 1
    if isinstance(getattr(owner, "distillation_token", None), torch.Tensor):
        num_prefix += 1
    registers = getattr(owner, "register_tokens", None)
    if isinstance(registers, torch.Tensor):
        num_prefix += int(registers.shape[1])
    return num_prefix


def _qk_pair(module: nn.Module) -> tuple[nn.Module, nn.Module] | None:
    """The modules whose outputs are the queries and keys of ``module``, if it is an attention we can read.

    Separate projections (``nn.Linear`` pairs of :data:`_QK_NAMES`), or timm's fused attention: one ``qkv``
    ``nn.Linear`` followed by the ``q_norm`` / ``k_norm`` modules (``nn.Identity`` unless qk-norm is on) whose
    outputs are the per-head queries and keys.
    """
    for q_name, k_name in _QK_NAMES:
        q, k = getattr(module, q_name, None), getattr(module, k_name, None)
        if isinstance(q, nn.Linear) and isinstance(k, nn.Linear):
            return q, k
    qkv, q_norm, k_norm = (getattr(module, name, None) for name in ("qkv", "q_norm", "k_norm"))
    if isinstance(qkv, nn.Linear) and isinstance(q_norm, nn.Module) and isinstance(k_norm, nn.Module):
        return q_norm, k_norm
    return None


@dataclass(frozen=True)
class _AttentionSpec:
    module: nn.Module
    q_proj: nn.Module
    k_proj: nn.Module
    num_heads: int
    head_dim: int
    scale: float
    heads_split: bool  # q_proj / k_proj already return (B, h, N, d) (timm's fused qkv), else (B, N, h*d)
    bias_args: tuple[tuple[str, int | None], ...]  # (name, positional index incl. hidden_states)
    inner_bias: nn.Module | None  # a relative-position-bias child the module applies itself


def find_last_attention(model: nn.Module) -> nn.Module | None:
    """The last module (in registration order) whose queries and keys can be read: 🤗 ``q_proj``/``k_proj`` or
    ``query``/``key``, timm's class attention ``q``/``k`` (CaiT, XCiT) or timm's fused ``qkv`` attention (ViT,
    DeiT), i.e. the attention of the last (class-attention) block; None if there is none."""
    last = None
    for module in unwrap_model(model).modules():
        if _qk_pair(module) is not None:
            last = module
    return last


def _attention_spec(model: nn.Module) -> _AttentionSpec:
    module = find_last_attention(model)
    model_type = _model_type(model)
    if module is None:
        raise ValueError(
            f"model type {model_type!r}: no readable query/key projections in its attention (looked for "
            "q_proj/k_proj, query/key, q/k linear layers or timm's fused qkv), so the class-token attention "
            "cannot be captured"
        )
    q_proj, k_proj = _qk_pair(module)  # type: ignore[misc]
    heads_split = not isinstance(q_proj, nn.Linear)
    config = getattr(model, "config", None)
    num_heads = getattr(module, "num_attention_heads", None) or getattr(module, "num_heads", None)
    num_heads = int(num_heads or getattr(config, "num_attention_heads", 0) or 1)
    head_dim = getattr(module, "head_dim", None) or getattr(module, "attention_head_size", None)
    if heads_split:
        if not isinstance(head_dim, int):
            raise ValueError(f"model type {model_type!r}: the fused qkv attention states no head_dim")
    else:
        head_dim = int(head_dim or q_proj.out_features // num_heads)
        if q_proj.out_features != num_heads * head_dim or k_proj.out_features != num_heads * head_dim:
            raise ValueError(
                f"model type {model_type!r}: query/key projections ({q_proj.out_features}, "
                f"{k_proj.out_features}) do not match {num_heads} heads x {head_dim} dims (grouped or "
                "multi-query attention is not supported)"
            )
    scale = getattr(module, "scaling", None)
    if not isinstance(scale, (int, float)):
        scale = getattr(module, "scale", None)
    scale = float(scale) if isinstance(scale, (int, float)) and not isinstance(scale, bool) else head_dim**-0.5
    reduction = getattr(module, "sequences_reduction_ratio", 1)  # PVT: keys from a spatially reduced sequence
    if isinstance(reduction, int) and reduction > 1:
        raise ValueError(
            f"model type {model_type!r}: the last attention reduces its keys spatially (sequence reduction "
            f"ratio {reduction}), so its class token does not attend to each token; the last stage needs ratio 1"
        )

    params = list(inspect.signature(module.forward).parameters.values())
    if any(p.name in ("position_embeddings", "rotary_pos_emb", "rope") for p in params):
        raise ValueError(
            f"model type {model_type!r}: the last attention applies rotary position embeddings to the "
            "queries/keys, which the class-token attention capture does not support."
        )
    bias_args: list[tuple[str, int | None]] = []
    for index, param in enumerate(params):
        if param.name in _BIAS_ARG_NAMES:
            positional = param.kind in (param.POSITIONAL_ONLY, param.POSITIONAL_OR_KEYWORD)
            bias_args.append((param.name, index if positional else None))
    inner = getattr(module, "relative_position_bias", None)
    inner_bias = inner if isinstance(inner, nn.Module) else None
    return _AttentionSpec(module, q_proj, k_proj, num_heads, head_dim, scale, heads_split, tuple(bias_args), inner_bias)


def cls_token_layout(model: nn.Module) -> TokenLayout:
    """Token layout (prefix tokens, token and image size) of a classifier with a class token.

    Raises:
        ValueError: if the model has no class token (Swin, ConvNeXt, ResNet, ...), or its token or image size
            cannot be read.
    """
    model = unwrap_model(model)
    model_type = _model_type(model)
    num_prefix = _num_prefix_tokens(model)
    geometry = token_geometry(model)
    if geometry.image_size is None:
        raise ValueError(f"model type {model_type!r}: no image size in its config")
    return TokenLayout(model_type, num_prefix, _pair(geometry.token_size), _pair(geometry.image_size))


def _pair(value: int) -> tuple[int, int]:
    return int(value), int(value)


def cls_attention_problem(model: nn.Module) -> str | None:
    """Why :func:`capture_cls_attention` cannot read ``model``'s class-token attention (one line), or None."""
    try:
        _num_prefix_tokens(unwrap_model(model))
        _attention_spec(unwrap_model(model))
    except ValueError as err:
        return str(err)
    return None


def supports_cls_attention(model: nn.Module) -> bool:
    """Whether :func:`capture_cls_attention` works for ``model`` (a class token and a readable last attention)."""
    return cls_attention_problem(model) is None


# --------------------------------------------------------------------------------------------------
# Capture
# --------------------------------------------------------------------------------------------------
def _in_backward() -> bool:
    """True while autograd runs a backward pass (gradient-checkpointing recomputation)."""
    if torch.compiler.is_compiling():  # compiled backward recomputes inside its own graph, no hooks
        return False
    task_id = getattr(torch._C, "_current_graph_task_id", None)
    return task_id is not None and task_id() != -1


def _bias_row(bias: torch.Tensor, num_keys: int) -> torch.Tensor:
    """Class-query row of an additive attention bias / mask, as float32 broadcastable to (B, h, 1, N)."""
    if bias.dim() < 2 or bias.shape[-1] != num_keys:
        raise ValueError(f"unexpected attention bias shape {tuple(bias.shape)} for {num_keys} keys")
    row = bias[..., :1, :]
    if row.dtype == torch.bool:  # True = attend
        return torch.zeros(row.shape, device=row.device).masked_fill(~row, float("-inf"))
    return row.float()


def _is_compiled(model: nn.Module, inner: nn.Module) -> bool:
    """Whether ``model`` (as passed) or any of its submodules is under ``torch.compile``."""
    if isinstance(getattr(model, "_orig_mod", None), nn.Module):
        return True
    wrapped = getattr(model, "module", None)
    if isinstance(wrapped, nn.Module) and isinstance(getattr(wrapped, "_orig_mod", None), nn.Module):
        return True
    return any(getattr(m, "_compiled_call_impl", None) is not None for m in inner.modules())


class _Recorder:
    """Forward hooks on the last attention block that compute the class-token row (eq. 1-4).

    Hooks only record while :attr:`active`; gradient-checkpointing recomputations (which run inside the
    backward pass) are ignored, so :attr:`attention` is always the value of the latest forward.
    """

    def __init__(self, spec: _AttentionSpec, num_prefix_tokens: int) -> None:
        self.spec = spec
        self.num_prefix_tokens = num_prefix_tokens
        self.active: bool = False
        self.attention: torch.Tensor | None = None
        self._q: torch.Tensor | None = None
        self._k: torch.Tensor | None = None
        self._inner_bias: torch.Tensor | None = None
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    @property
    def attached(self) -> bool:
        return bool(self._handles)

    def attach(self) -> None:
        if self._handles:
            return
        spec = self.spec
        self._handles.append(spec.q_proj.register_forward_hook(self._on_q))
        self._handles.append(spec.k_proj.register_forward_hook(self._on_k))
        if spec.inner_bias is not None:
            self._handles.append(spec.inner_bias.register_forward_hook(self._on_inner_bias))
        self._handles.append(spec.module.register_forward_hook(self._on_attention, with_kwargs=True))

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def reset(self) -> None:
        self.attention = self._q = self._k = self._inner_bias = None

    # ---- hooks ------------------------------------------------------------------------------------
    def _on_q(self, module: nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> None:
        if self.active and not _in_backward():
            self._q = self._heads(output, class_row=True)

    def _on_k(self, module: nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> None:
        if self.active and not _in_backward():
            self._k = self._heads(output, class_row=False)

    def _heads(self, output: torch.Tensor, class_row: bool) -> torch.Tensor:
        """Queries / keys as ``(B, h, N, d)`` (``N = 1`` for the class query), detached.

        Accepted: ``(B, h, N, d)`` (timm's fused qkv, after ``q_norm`` / ``k_norm``), ``(B, N, h*d)`` (separate
        projections) and ``(B, h*d)`` (timm's class attention projects the class token alone).
        """
        spec = self.spec
        output = output.detach()
        if spec.heads_split:
            return output[:, :, :1] if class_row else output
        if output.dim() == 2:
            output = output.unsqueeze(1)
        if class_row:
            output = output[:, :1]
        return output.reshape(output.shape[0], output.shape[1], spec.num_heads, spec.head_dim).transpose(1, 2)

    def _on_inner_bias(self, module: nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> None:
        # Cloned: Data2Vec-Vision's sdpa path adds the shared bias to this tensor in place.
        if self.active and not _in_backward():
            with torch.no_grad():
                self._inner_bias = output[..., :1, :].detach().clone()

    def _on_attention(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
        if not self.active or _in_backward():
            return
        q, k, inner = self._q, self._k, self._inner_bias
        self._q = self._k = self._inner_bias = None
        if q is None or k is None:
            return
        biases: list[torch.Tensor] = [] if inner is None else [inner]
        for name, index in self.spec.bias_args:
            value = kwargs.get(name)
            if value is None and index is not None and index < len(args):
                value = args[index]
            if isinstance(value, torch.Tensor):
                biases.append(value)
        self.attention = self._cls_row(q, k, biases)

    def _cls_row(self, q: torch.Tensor, k: torch.Tensor, biases: list[torch.Tensor]) -> torch.Tensor:
        """eq. (1)-(4): softmax(q_cls K^T * scale + B) per head, patch columns, mean over heads."""
        num_keys = k.shape[2]
        with torch.no_grad(), torch.autocast(device_type=k.device.type, enabled=False):
            scores = torch.matmul(q.float(), k.float().transpose(-1, -2)) * self.spec.scale  # (B, h, 1, N)
            for bias in biases:
                scores = scores + _bias_row(bias, num_keys)
            probs = torch.softmax(scores, dim=-1)
            return probs[:, :, 0, self.num_prefix_tokens :].mean(dim=1)


def _attached_recorder(module: nn.Module) -> _Recorder | None:
    """The recorder whose hooks are registered on ``module`` (persistent hooks of compiled models)."""
    for hook in module._forward_hooks.values():
        owner = getattr(hook, "__self__", None)
        if isinstance(owner, _Recorder):
            return owner
    return None


class ClsAttentionCapture:
    """Holds the class-token attention of the last block; created by :func:`capture_cls_attention`.

    Each forward of the model while attached overwrites :attr:`attention` (gradient-checkpointing
    recomputations during backward are ignored, so it is always the latest forward's value).

    Eager models get fresh hooks on :meth:`attach` that :meth:`detach` removes. Models under
    ``torch.compile`` keep one set of hooks for their lifetime, switched on and off by a flag: dynamo does
    not notice hooks being added to or removed from a compiled module (``skip_nnmodule_hook_guards``),
    but it does guard on the flag, so the compiled graphs with and without capture are each built once
    and reused. Call :func:`remove_persistent_hooks` to drop those hooks.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model: nn.Module = unwrap_model(model)
        num_prefix = _num_prefix_tokens(self.model)
        spec = _attention_spec(self.model)
        self.persistent: bool = _is_compiled(model, self.model)
        recorder = _attached_recorder(spec.module)
        if recorder is None or not self.persistent:
            recorder = _Recorder(spec, num_prefix)
        self._recorder: _Recorder = recorder
        self._attention: torch.Tensor | None = None
        self._attached: bool = False

    @property
    def layout(self) -> TokenLayout:
        """The model's :class:`TokenLayout` (:func:`cls_token_layout`)."""
        return cls_token_layout(self.model)

    @property
    def captured(self) -> bool:
        """Whether a forward has been captured."""
        return self._current() is not None

    @property
    def attention(self) -> torch.Tensor:
        """``(B, N_patches)`` float32, detached: last block, class token -> patch tokens, softmax row
        restricted to the patch columns, mean over heads (eq. 1-4 of MixPro; not renormalised).

        Raises:
            RuntimeError: if no forward pass has run inside the context yet.
        """
        attention = self._current()
        if attention is None:
            raise RuntimeError(
                "No class-token attention captured yet: run the model forward inside "
                "`with capture_cls_attention(model) as cap:` before reading `cap.attention`. With "
                "torch.compile, open the first capture before the first compiled call (dynamo does not "
                "see hooks added to an already-compiled module), or call torch._dynamo.reset()."
            )
        return attention

    def _current(self) -> torch.Tensor | None:
        return self._recorder.attention if self._attached else self._attention

    def attach(self) -> ClsAttentionCapture:
        """Start capturing (idempotent)."""
        if self._attached:
            return self
        recorder = self._recorder
        if recorder.active:
            raise RuntimeError("capture_cls_attention is already active on this model (nested capture).")
        recorder.reset()
        recorder.attach()
        recorder.active = True
        self._attached = True
        return self

    def detach(self) -> None:
        """Stop capturing and remove the hooks (kept, switched off, for compiled models); the last
        captured attention stays readable."""
        if not self._attached:
            return
        recorder = self._recorder
        self._attention = recorder.attention
        recorder.active = False
        recorder.reset()
        if not self.persistent:
            recorder.remove()
        self._attached = False


def remove_persistent_hooks(model: nn.Module) -> None:
    """Remove the switched-off hooks that captures leave on a ``torch.compile``-d model."""
    module = find_last_attention(model)
    recorder = _attached_recorder(module) if module is not None else None
    if recorder is not None:
        if recorder.active:
            raise RuntimeError("cannot remove the hooks while a capture is active")
        recorder.remove()


@contextmanager
def capture_cls_attention(model: nn.Module) -> Iterator[ClsAttentionCapture]:
    """Capture the last block's class-token attention (MixPro eq. 1-4) during forwards in the context.

    The model's attention implementation is left untouched (no eager fallback, no ``output_attentions``);
    only the class-token row is recomputed on the side, in float32 and without gradient. Hooks are
    removed on exit, also when the body raises (for ``torch.compile``-d models they are only switched
    off, see :class:`ClsAttentionCapture`).

    Args:
        model: a Hugging Face ViT-style classifier, possibly wrapped by DDP / accelerate (``.module``) or
            ``torch.compile`` (``._orig_mod``).

    Raises:
        ValueError: if the model has no class token or no ViT-style last attention.
    """
    capture = ClsAttentionCapture(model).attach()
    try:
        yield capture
    finally:
        capture.detach()
