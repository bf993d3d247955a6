"""CA-Swin: Swin whose last block is a class-attention block, as a 🤗 model (config + image classifier).

Papers:
    - MixPro: Zhao et al., ICLR 2023, §4.1: "CA-Swin replaces the last Swin block with a block of classification
      attention (CA) with no parameter overhead", following TransMix.
    - TransMix: Chen et al., CVPR 2022 (CA-Swin, Table 1). https://arxiv.org/abs/2111.09833
    - Swin: Liu et al., ICCV 2021. https://arxiv.org/abs/2103.14030
    - CaiT: Touvron et al., ICCV 2021 (class attention, §3). https://arxiv.org/abs/2103.17239

What is built here:

* the 🤗 Swin of the same config (:class:`transformers.SwinModel`: patch embedding, stages, patch merging, final
  LayerNorm), except that the last block of the last stage is replaced by a CaiT class-attention block;
* a learnable class token (one vector of the last stage's width), prepended to the last stage's tokens at the
  class-attention block;
* the class-attention block has the replaced Swin block's layers under the same names (``layernorm_before``,
  ``attention.q_proj/k_proj/v_proj/o_proj``, ``layernorm_after``, ``mlp.fc1/fc2``) and no LayerScale: the class
  token's query attends to the class token and every last-stage token (global attention, no window, no shift,
  no relative position bias); only the class token is updated: ``c = c + A(LN(c, x))``, ``c = c + MLP(LN(c))``;
* the classifier reads the class token after Swin's final LayerNorm (instead of the mean of the tokens).

Parameters: Swin's, minus the replaced block's relative position bias table (``(2w - 1)^2 x heads``), plus the
class token: CA-Swin-T 28.29 M (Swin-T 28.29 M; MixPro Table 1: 28.3 M), CA-Swin-S 49.60 M (Table 1: 49.6 M).
:meth:`CaSwinForImageClassification.from_swin` starts from a Swin checkpoint: every weight is taken over by name,
the class-attention block takes the replaced block's; only the class token is new.

This file imports nothing from ``mixpro_hf``: ``save_pretrained`` copies it next to the weights, so that stock
transformers loads a checkpoint with ``trust_remote_code=True``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import SwinConfig, SwinModel, SwinPreTrainedModel
from transformers.modeling_outputs import ImageClassifierOutput

__all__ = ["CaSwinConfig", "CaSwinForImageClassification"]


class CaSwinConfig(SwinConfig):
    """:class:`transformers.SwinConfig` for CA-Swin (same fields; ``model_type = "ca_swin"``)."""

    model_type = "ca_swin"


class CaSwinClassAttention(nn.Module):
    """Multi-head attention of the class token (query) over the class token and every token (keys, values).

    ``config._attn_implementation == "eager"`` computes the softmax explicitly (``attention_probs`` passes
    through :attr:`dropout`); otherwise ``torch.nn.functional.scaled_dot_product_attention``.
    """

    def __init__(self, config: CaSwinConfig, dim: int, num_heads: int) -> None:
        super().__init__()
        self.config = config
        self.num_attention_heads = num_heads
        self.head_dim = dim // num_heads
        self.scaling = self.head_dim**-0.5
        self.q_proj = nn.Linear(dim, dim, bias=config.qkv_bias)
        self.k_proj = nn.Linear(dim, dim, bias=config.qkv_bias)
        self.v_proj = nn.Linear(dim, dim, bias=config.qkv_bias)
        self.o_proj = nn.Linear(dim, dim)
        self.dropout = nn.Dropout(config.attention_probs_dropout_prob)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """``hidden_states`` ``(B, 1 + N, C)`` with the class token first; returns the class token's ``(B, 1, C)``."""
        batch, length, _ = hidden_states.shape
        query = self.q_proj(hidden_states[:, :1]).view(batch, 1, -1, self.head_dim).transpose(1, 2)
        key = self.k_proj(hidden_states).view(batch, length, -1, self.head_dim).transpose(1, 2)
        value = self.v_proj(hidden_states).view(batch, length, -1, self.head_dim).transpose(1, 2)
        if self.config._attn_implementation == "eager":
            probs = torch.softmax(torch.matmul(query, key.transpose(-1, -2)) * self.scaling, dim=-1)
            output = torch.matmul(self.dropout(probs), value)
        else:
            output = nn.functional.scaled_dot_product_attention(
                query, key, value, dropout_p=self.dropout.p if self.training else 0.0, scale=self.scaling
            )
        return self.o_proj(output.transpose(1, 2).reshape(batch, 1, -1))


class CaSwinMLP(nn.Module):
    """Swin's MLP (``fc1``, activation, ``fc2``)."""

    def __init__(self, config: CaSwinConfig, dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, int(config.mlp_ratio * dim))
        self.activation = nn.GELU() if config.hidden_act == "gelu" else nn.SiLU()
        self.fc2 = nn.Linear(int(config.mlp_ratio * dim), dim)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.activation(self.fc1(hidden_states)))


class CaSwinClassAttentionBlock(nn.Module):
    """CaiT's class-attention block without LayerScale, with the layer names of the Swin block it replaces."""

    def __init__(self, config: CaSwinConfig, dim: int, num_heads: int, drop_path_rate: float) -> None:
        super().__init__()
        self.layernorm_before = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        self.attention = CaSwinClassAttention(config, dim, num_heads)
        self.layernorm_after = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        self.mlp = CaSwinMLP(config, dim)
        self.drop_path_rate = float(drop_path_rate)

    def _drop_path(self, residual: torch.Tensor) -> torch.Tensor:
        """Stochastic depth per sample (Swin's rule: keep with 1 - rate, rescale)."""
        if not self.training or self.drop_path_rate == 0.0:
            return residual
        keep = 1.0 - self.drop_path_rate
        mask = residual.new_empty((residual.shape[0],) + (1,) * (residual.dim() - 1)).bernoulli_(keep)
        return residual * mask / keep

    def forward(self, tokens: torch.Tensor, class_token: torch.Tensor) -> torch.Tensor:
        """``tokens`` ``(B, N, C)``, ``class_token`` ``(B, 1, C)``; returns the updated class token."""
        joined = torch.cat([class_token, tokens], dim=1)
        class_token = class_token + self._drop_path(self.attention(self.layernorm_before(joined)))
        return class_token + self._drop_path(self.mlp(self.layernorm_after(class_token)))


class CaSwinForImageClassification(SwinPreTrainedModel):
    """CA-Swin image classifier (see the module docstring): Swin stages, then a class-attention block in place of
    the last Swin block, Swin's final LayerNorm on the class token, a linear classifier."""

    config_class = CaSwinConfig
    config: CaSwinConfig
    base_model_prefix = "swin"
    _no_split_modules = ["SwinStage", "CaSwinClassAttentionBlock"]
    _keys_to_ignore_on_load_unexpected = [r"relative_position_index", r"pooler"]

    def __init__(self, config: CaSwinConfig) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self.swin = SwinModel(config, add_pooling_layer=False)
        last_stage = self.swin.encoder.layers[-1]
        replaced = last_stage.blocks[-1]
        drop_path_rate = float(getattr(replaced.drop_path, "drop_prob", 0.0) or 0.0)
        dim, heads = int(config.embed_dim * 2 ** (len(config.depths) - 1)), int(config.num_heads[-1])
        last_stage.blocks[-1] = CaSwinClassAttentionBlock(config, dim, heads, drop_path_rate)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.classifier = nn.Linear(dim, config.num_labels) if config.num_labels > 0 else nn.Identity()
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, CaSwinForImageClassification):
            with torch.no_grad():
                nn.init.trunc_normal_(module.cls_token, std=self.config.initializer_range)

    @classmethod
    def from_swin(cls, swin: Any, **config_kwargs: Any) -> CaSwinForImageClassification:
        """A CA-Swin holding the weights of a Swin classifier (a ``SwinForImageClassification`` or a path / Hub
        id of one): every weight by name, the class-attention block taking the replaced block's; the class token
        is new. ``config_kwargs`` update the config (e.g. ``num_labels``)."""
        from transformers import SwinForImageClassification

        if not isinstance(swin, nn.Module):
            swin = SwinForImageClassification.from_pretrained(swin)
        values = swin.config.to_dict()
        for key in ("model_type", "architectures", "transformers_version", "auto_map"):
            values.pop(key, None)
        values.update(config_kwargs)
        model = cls(CaSwinConfig(**values))
        state = {k: v for k, v in swin.state_dict().items() if k in model.state_dict()}
        if "num_labels" in config_kwargs and config_kwargs["num_labels"] != swin.config.num_labels:
            state = {k: v for k, v in state.items() if not k.startswith("classifier.")}
        model.load_state_dict(state, strict=False)
        return model

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> ImageClassifierOutput:
        if pixel_values is None:
            raise ValueError("CaSwinForImageClassification needs pixel_values")
        hidden_states, dimensions = self.swin.embeddings(pixel_values)
        stages = self.swin.encoder.layers
        for index, stage in enumerate(stages):
            blocks = stage.blocks if index < len(stages) - 1 else stage.blocks[:-1]
            for block in blocks:
                hidden_states = block(hidden_states, dimensions)[0]
            if stage.downsample is not None:
                hidden_states = stage.downsample(hidden_states, dimensions)
                dimensions = ((dimensions[0] + 1) // 2, (dimensions[1] + 1) // 2)
        class_token = self.cls_token.expand(hidden_states.shape[0], -1, -1)
        class_token = stages[-1].blocks[-1](hidden_states, class_token)
        logits = self.classifier(self.swin.layernorm(class_token[:, 0]))
        loss = self.loss_function(labels, logits, self.config) if labels is not None else None
        return ImageClassifierOutput(loss=loss, logits=logits)
