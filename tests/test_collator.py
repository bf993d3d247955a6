"""The data collator: stacking 🤗 examples, mixing training batches only, labels, workers."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

from mixpro_hf import MixProCollator, MixProConfig, pop_mix


def examples(n: int, size: int = 16, label_key: str = "labels", num_labels: int = 5) -> list[dict]:
    g = torch.Generator().manual_seed(n)
    return [
        {"pixel_values": torch.rand(3, size, size, generator=g), label_key: i % num_labels, "extra": "x"}
        for i in range(n)
    ]


def test_collator_stacks_and_mixes_training_batches():
    config = MixProConfig(mix_method="mixpro", maskmix_prob=1.0, mask_scale=1)
    collate = MixProCollator(config, patch_size=4, num_labels=5, seed=1)
    feats = examples(6)
    batch = collate(feats)
    assert batch["pixel_values"].shape == (6, 3, 16, 16)
    assert batch["labels"].tolist() == [0, 1, 2, 3, 4, 0]
    assert batch["mix_method"] == "maskmix"
    assert batch["mix_patch_mask"].shape == (6, 4, 4) and batch["mix_lam_area"].shape == (6,)
    assert bool((batch["mix_lam_area"] < 1).all())
    stacked = torch.stack([f["pixel_values"] for f in feats])
    assert not torch.equal(batch["pixel_values"], stacked)
    mix = pop_mix(batch)
    assert mix is not None and mix.method == "maskmix"
    assert set(batch) == {"pixel_values", "labels"}, "pop_mix leaves only model inputs"


def test_evaluation_batches_are_never_mixed():
    collate = MixProCollator(MixProConfig(mix_method="mixpro"), patch_size=4, seed=0).without_mixing()
    feats = examples(4, label_key="label")
    batch = collate(feats)
    assert set(batch) == {"pixel_values", "labels"}
    assert torch.equal(batch["pixel_values"], torch.stack([f["pixel_values"] for f in feats]))
    assert pop_mix(batch) is None


def test_same_seed_same_batches():
    config = MixProConfig(mix_method="mixpro", mask_scale=1)
    a = MixProCollator(config, 4, seed=3)
    b = MixProCollator(config, 4, seed=3)
    for _ in range(3):
        batch_a, batch_b = a(examples(4)), b(examples(4))
        assert torch.equal(batch_a["pixel_values"], batch_b["pixel_values"])
        assert batch_a["mix_method"] == batch_b["mix_method"]


def test_collator_refuses_bad_labels_and_shapes():
    collate = MixProCollator(MixProConfig(), patch_size=4, num_labels=3)
    with pytest.raises(ValueError, match=r"label 4 is outside \[0, 3\)"):
        collate(examples(5, num_labels=5))
    with pytest.raises(ValueError, match="not divisible by the patch size 4"):
        collate(examples(4, size=18))
    with pytest.raises(KeyError, match="pixel_values"):
        collate([{"image": 1, "labels": 0}])
    with pytest.raises(KeyError, match="mixing needs labels"):
        collate([{"pixel_values": torch.rand(3, 16, 16)} for _ in range(2)])


def test_dataloader_workers_draw_different_masks():
    feats = examples(16)
    collate = MixProCollator(MixProConfig(mix_method="maskmix", maskmix_prob=1.0, mask_scale=2), patch_size=4, seed=0)
    torch.manual_seed(0)
    loader = DataLoader(feats, batch_size=4, num_workers=2, collate_fn=collate)
    masks = [b["mix_patch_mask"] for b in loader]
    assert len(masks) == 4
    # batches 0 and 1 come from different workers, each on its first call: they must differ
    assert not torch.equal(masks[0], masks[1])
