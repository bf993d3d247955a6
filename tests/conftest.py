"""Shared test fixtures: the one source of tiny model configs, tiny random models, a learnable toy image set,
and a running fake Hub.

Tests take the factories as fixtures (``tiny_vit``, ``toy_dataset``); the constants are importable for
parametrisation and subprocess scripts (``from conftest import TINY_CONFIG``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from transformers import ViTConfig, ViTForImageClassification

NUM_LABELS = 4
HUB_TOKEN = "hf_test"  # the one token the fake Hub accepts
# The one tiny ViT-family config of the suite (a few thousand parameters, trains in seconds on a CPU).
TINY_CONFIG = dict(
    image_size=16,
    patch_size=4,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=64,
    num_labels=NUM_LABELS,
    hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0,
)
# The same model as ``mixpro-train --config_overrides`` (the script sets num_labels from the data).
TINY_OVERRIDES = ",".join(
    f"{k}={v}"
    for k, v in TINY_CONFIG.items()
    if k in ("image_size", "patch_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")
)


def make_tiny_vit(attn_implementation: str = "sdpa", seed: int = 0, **overrides) -> ViTForImageClassification:
    """A tiny random ViT classifier (``TINY_CONFIG`` + ``overrides``), seeded."""
    torch.manual_seed(seed)
    config = ViTConfig(**{**TINY_CONFIG, **overrides})
    return ViTForImageClassification._from_config(config, attn_implementation=attn_implementation)


def make_toy_dataset(n: int = 64, seed: int = 0) -> Dataset:
    """Class k: a bright k-th quadrant on noise, so a ViT learns it in a few dozen steps."""
    size = TINY_CONFIG["image_size"]
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % NUM_LABELS
    images = 0.3 * torch.randn(n, 3, size, size, generator=g)
    half = size // 2
    for k in range(NUM_LABELS):
        rows, cols = divmod(k, 2)
        images[labels == k, :, rows * half : (rows + 1) * half, cols * half : (cols + 1) * half] += 2.0
    return Dataset.from_dict({"pixel_values": images.numpy(), "labels": labels.tolist()}).with_format("torch")


@pytest.fixture
def tiny_vit() -> Callable[..., ViTForImageClassification]:
    """Factory of tiny random ViTs: ``tiny_vit(attn_implementation="sdpa", seed=0, **config_overrides)``."""
    return make_tiny_vit


@pytest.fixture
def toy_dataset() -> Callable[..., Dataset]:
    """Factory of the learnable toy image set: ``toy_dataset(n=64, seed=0)``."""
    return make_toy_dataset


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[object]:
    """A running fake Hub (``tests/hub_server.py``) that accepts ``HUB_TOKEN``; huggingface_hub points at it,
    with an empty HF home and no saved token."""
    from hub_server import FakeHub

    server = FakeHub(valid_tokens={HUB_TOKEN}).start()
    server.patch_huggingface_hub(monkeypatch, hf_home=tmp_path / "hf_home")
    yield server
    server.stop()
