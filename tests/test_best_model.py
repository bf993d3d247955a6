"""``load_best_model_at_end=True`` hands back exactly the best checkpoint's weights (every tensor), through the same
``from_pretrained`` reload as a resume: with the Trainer API and ``mixpro-train`` (one process here; two processes in
``test_distributed.py::test_two_machines_on_one_host_match_one_machine``)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from conftest import TINY_OVERRIDES
from safetensors.torch import load_file

from mixpro_hf.trainer import MixProTrainer
from mixpro_hf.training_args import MixProTrainingArguments


def saved_weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_trainer_api_loads_the_best_checkpoint(tmp_path, tiny_vit, toy_dataset):
    scores = iter(range(100, 0, -1))  # each evaluation scores lower: the first checkpoint is the best
    args = MixProTrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=8, per_device_eval_batch_size=16, max_steps=6,
        learning_rate=3e-3, logging_steps=2, eval_strategy="steps", eval_steps=2, save_strategy="steps", save_steps=2,
        load_best_model_at_end=True, metric_for_best_model="score", greater_is_better=True, mix_method="mixpro",
        mask_scale=1, report_to=[], use_cpu=True, disable_tqdm=True, seed=0, dataloader_num_workers=0,
    )  # fmt: skip
    trainer = MixProTrainer(
        model=tiny_vit(),
        args=args,
        train_dataset=toy_dataset(48),
        eval_dataset=toy_dataset(16, seed=1),
        compute_metrics=lambda _: {"score": next(scores)},
    )
    trainer.train()
    best = Path(trainer.state.best_model_checkpoint)
    assert best.name == "checkpoint-2"
    model = trainer.model
    reloaded = type(model).from_pretrained(best).state_dict()
    state = model.state_dict()
    assert state.keys() == reloaded.keys()
    assert all(torch.equal(state[k], reloaded[k]) for k in state), "not the best checkpoint's weights"
    last = type(model).from_pretrained(tmp_path / "checkpoint-6").state_dict()
    assert not all(torch.equal(state[k], last[k]) for k in state)  # the test can tell best from last


def test_cli_final_model_is_the_best_checkpoint(tmp_path):
    from mixpro_hf import train

    out = tmp_path / "out"
    flags = [
        "--output_dir", str(out), "--config_overrides", TINY_OVERRIDES, "--max_train_samples", "64",
        "--max_eval_samples", "16", "--max_steps", "4", "--per_device_train_batch_size", "8", "--learning_rate", "3e-3",
        "--eval_strategy", "steps", "--eval_steps", "1", "--save_strategy", "steps", "--save_steps", "1",
        "--load_best_model_at_end", "True", "--metric_for_best_model", "accuracy", "--greater_is_better", "False",
        "--report_to", "none", "--use_cpu", "True", "--disable_tqdm", "True", "--dataloader_num_workers", "0",
        "--do_predict", "False",
    ]  # fmt: skip
    assert train.main(flags) == 0
    best = Path(json.loads((out / "trainer_state.json").read_text())["best_model_checkpoint"])
    assert best.parent == out and best.name != "checkpoint-4", best  # the best is not the last
    assert same_tensors(saved_weights(out), saved_weights(best))
    assert not same_tensors(saved_weights(out), saved_weights(out / "checkpoint-4"))
