"""The reference code's learning-rate schedule (``--lr_schedule reference_cosine``, the default of ``--recipe deit``)
against timm's ``CosineLRScheduler`` as the reference code configures it, at every step."""

from __future__ import annotations

import pytest
import torch
from timm.scheduler import CosineLRScheduler
from torch import nn

from mixpro_hf import MixProTrainer, MixProTrainingArguments
from mixpro_hf.arguments import parse_args
from mixpro_hf.schedule import reference_cosine_schedule


def _optimizer(lr: float) -> torch.optim.Optimizer:
    return torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=lr)


@pytest.mark.parametrize(("total", "warmup"), [(60, 4), (37, 0), (25, 25)])
def test_every_step_matches_timm_cosine(total: int, warmup: int) -> None:
    lr = 1e-3
    ours_optimizer, timm_optimizer = _optimizer(lr), _optimizer(lr)
    ours = reference_cosine_schedule(ours_optimizer, warmup, total)
    reference = CosineLRScheduler(
        timm_optimizer,
        t_initial=total,
        warmup_t=warmup,
        warmup_lr_init=lr / 1000,
        lr_min=lr / 100,
        cycle_limit=1,
        t_in_epochs=False,
    )
    for step in range(total + 3):  # past the end: the floor
        reference.step_update(step)
        assert ours_optimizer.param_groups[0]["lr"] == pytest.approx(timm_optimizer.param_groups[0]["lr"], rel=1e-9)
        ours_optimizer.step()
        ours.step()


def test_trainer_uses_it_and_the_deit_recipe_selects_it(tmp_path, tiny_vit) -> None:
    args = MixProTrainingArguments(
        output_dir=str(tmp_path),
        learning_rate=2e-3,
        warmup_steps=5,
        lr_schedule="reference_cosine",
        mask_scale=2,
        use_cpu=True,
    )
    trainer = MixProTrainer(model=tiny_vit(), args=args)
    trainer.create_optimizer_and_scheduler(num_training_steps=20)
    assert trainer.lr_scheduler.get_last_lr()[0] == pytest.approx(2e-3 / 1000)
    _, _, deit = parse_args(["--train_file", "train.parquet"])
    assert deit.lr_schedule == "reference_cosine" and deit.max_grad_norm == 0.0
    _, _, chosen = parse_args(["--train_file", "train.parquet", "--lr_scheduler_type", "linear"])
    assert chosen.lr_schedule == "lr_scheduler_type"
    with pytest.raises(SystemExit):
        parse_args(["--train_file", "train.parquet", "--lr_schedule", "cosine"])
