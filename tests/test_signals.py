"""Signals a run gives about its own mixing: the share of MaskMix draws that cannot mix, one image per process, the
``mixpro/*`` statistics over processes (two processes: ``test_distributed.py``), DDP's unused-parameter search."""

from __future__ import annotations

import logging

import pytest
import torch
from transformers import Dinov2Config, Dinov2ForImageClassification

from mixpro_hf import MixProConfig, maskmix_mask, mean_mix_stats, mixing_warnings
from mixpro_hf.mixing import unmixed_maskmix_share
from mixpro_hf.trainer import MixProTrainer, unused_parameter_names
from mixpro_hf.training_args import MixProTrainingArguments


@pytest.mark.parametrize(("grid", "mask_scale", "beta"), [((4, 4), 2, 1.0), ((4, 4), 2, 3.0), ((6, 5), 2, 0.5)])
def test_unmixed_share_matches_maskmix_draws(grid, mask_scale, beta):
    """The share of masks with every cell the sample's own, as drawn by ``maskmix_mask`` (one tau per sample)."""
    masks = maskmix_mask(20000, grid, mask_scale, beta, torch.Generator().manual_seed(0), tau_per_sample=True)
    drawn = masks.flatten(1).all(1).float().mean().item()
    assert unmixed_maskmix_share(grid, mask_scale, beta) == pytest.approx(drawn, abs=0.01)


def test_unmixed_share_of_the_papers_and_small_grids():
    assert unmixed_maskmix_share((4, 4), 2) == pytest.approx(1 / 4)  # 2x2 cells: a quarter
    assert unmixed_maskmix_share((14, 14), 4) == pytest.approx(1 / 16)  # the paper's ImageNet setting


def test_mixing_warnings():
    mixpro = MixProConfig(mix_method="mixpro", mask_scale=2)
    (few_cells,) = mixing_warnings(mixpro, (4, 4), 8)
    assert "4 MaskMix cells" in few_cells and "25%" in few_cells and "not mixed" in few_cells
    assert mixing_warnings(MixProConfig(mix_method="mixpro", mask_scale=4), (14, 14), 8) == []  # the paper's: none
    assert mixing_warnings(MixProConfig(mix_method="mixup"), (4, 4), 8) == []  # no MaskMix
    (alone,) = mixing_warnings(MixProConfig(mix_method="mixup"), (4, 4), 1)
    assert "batch of 1 image per process" in alone
    assert mixing_warnings(MixProConfig(mix_method="none"), (4, 4), 1) == []


def test_trainer_warns_when_training_starts(tmp_path, tiny_vit, toy_dataset, caplog):
    args = MixProTrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=1, max_steps=1, mix_method="mixpro", mask_scale=2,
        report_to=[], save_strategy="no", use_cpu=True, disable_tqdm=True, dataloader_num_workers=0,
    )  # fmt: skip
    trainer = MixProTrainer(model=tiny_vit(), args=args, train_dataset=toy_dataset(4))
    with caplog.at_level(logging.WARNING, logger="mixpro_hf"):
        trainer.train()
    messages = [r.getMessage() for r in caplog.records if r.name.startswith("mixpro_hf")]
    assert any("4 MaskMix cells" in m for m in messages), messages
    assert any("batch of 1 image per process" in m for m in messages), messages


def test_mix_stats_summed_over_processes():
    """Two processes, one with a PAL batch (α) and one without: α is the mean over the batches that have it."""
    rank0 = [{"lam_area": torch.tensor(0.5), "lam": torch.tensor(0.5)}]
    rank1 = [{"lam_area": torch.tensor(1.0), "lam": torch.tensor(0.8), "alpha": torch.tensor(0.3)}]
    rank1_totals: list[torch.Tensor] = []
    mean_mix_stats(rank1, sum_over_processes=lambda totals: rank1_totals.append(totals) or totals)
    logs = mean_mix_stats(rank0, sum_over_processes=lambda totals: totals + rank1_totals[0])  # an all-reduce
    assert logs == {"mixpro/lam_area": 0.75, "mixpro/lam": 0.65, "mixpro/alpha": 0.3}


def test_unused_parameters_found_only_where_there_are(tiny_vit):
    assert unused_parameter_names(tiny_vit(), 16) == []
    config = Dinov2Config(
        image_size=16, patch_size=4, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
        num_labels=3,
    )  # fmt: skip
    dinov2 = Dinov2ForImageClassification(config)
    dinov2.train()
    assert unused_parameter_names(dinov2, 16) == ["dinov2.embeddings.mask_token"]
    assert dinov2.training and all(p.grad is None for p in dinov2.parameters())
