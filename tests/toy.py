"""Tiny random models and a learnable toy image set shared by the integration tests."""

from __future__ import annotations

import torch
from datasets import Dataset
from transformers import ViTConfig, ViTForImageClassification

NUM_LABELS = 4
IMAGE_SIZE = 16
PATCH_SIZE = 4


def tiny_vit(attn_implementation: str = "sdpa", seed: int = 0, **overrides) -> ViTForImageClassification:
    torch.manual_seed(seed)
    config = ViTConfig(
        image_size=IMAGE_SIZE, patch_size=PATCH_SIZE, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, num_labels=NUM_LABELS, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
        **overrides,
    )
    return ViTForImageClassification._from_config(config, attn_implementation=attn_implementation)


def toy_dataset(n: int = 64, seed: int = 0) -> Dataset:
    """Class k: a bright k-th quadrant on noise, so a ViT learns it in a few dozen steps."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % NUM_LABELS
    images = 0.3 * torch.randn(n, 3, IMAGE_SIZE, IMAGE_SIZE, generator=g)
    half = IMAGE_SIZE // 2
    for k in range(NUM_LABELS):
        rows, cols = divmod(k, 2)
        images[labels == k, :, rows * half:(rows + 1) * half, cols * half:(cols + 1) * half] += 2.0
    ds = Dataset.from_dict({"pixel_values": images.numpy(), "labels": labels.tolist()})
    return ds.with_format("torch")
