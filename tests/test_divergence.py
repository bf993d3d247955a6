"""A diverged run stops with one line and saves nothing non-finite (``mixpro_hf.divergence``): the watch itself,
``MixProTrainer``, ``mixpro-train`` and the no-Trainer example."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
import torch
from conftest import TINY_OVERRIDES
from safetensors.torch import load_file
from transformers import TrainerCallback

from mixpro_hf.divergence import NonFiniteLossWatch, TrainingDiverged, nonfinite_parameter_names
from mixpro_hf.trainer import MixProTrainer
from mixpro_hf.training_args import MixProTrainingArguments

NO_TRAINER = Path(__file__).resolve().parents[1] / "examples" / "run_image_classification_no_trainer.py"


def test_watch_reports_the_first_nonfinite_loss_of_any_process():
    watch = NonFiniteLossWatch()
    for step, loss in enumerate([2.3, 2.1], start=1):
        watch.observe(torch.tensor(loss), step, 1e-3)
    watch.check()  # finite so far
    watch.observe(torch.tensor(float("nan")), 3, 1e4)
    watch.observe(torch.tensor(float("inf")), 4, 1e4)  # not the first
    assert watch.first_nonfinite() == (3, pytest.approx(math.nan, nan_ok=True), 1e4)
    # another process diverged earlier (step 2, inf): every process reports that one
    other = torch.tensor([2.0, float("inf"), 5e3])
    with pytest.raises(TrainingDiverged, match=r"the loss is inf at step 2 \(learning rate 5e\+03\).*learning rate"):
        watch.check(lambda mine: torch.cat([mine, other]))


def test_nonfinite_parameter_names(tiny_vit):
    model = tiny_vit()
    assert nonfinite_parameter_names(model) == []
    with torch.no_grad():
        model.classifier.weight[0, 0] = float("inf")
    assert nonfinite_parameter_names(model) == ["classifier.weight"]


def finite_weights(folder: Path) -> bool:
    return all(torch.isfinite(t).all() for t in load_file(str(folder / "model.safetensors")).values())


class InfWeightAfterStep(TrainerCallback):
    """Makes one encoder weight infinite at the end of step ``step``: the divergence the tests need, whatever the
    optimizer's own arithmetic does with a learning rate of 1e4 (fused AdamW in torch 2.14 keeps it finite)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step == self.step:
            with torch.no_grad():
                model.vit.embeddings.patch_embeddings.projection.weight.view(-1)[0] = float("inf")


@pytest.mark.parametrize(
    ("save", "caught_by"),
    [("no", r"the loss is (nan|inf) at step \d+ \(learning rate 1e\+04\)"), ("steps", r"NaN/inf weights \(vit\.")],
)
def test_trainer_stops_on_a_nan_loss_and_saves_nothing_nonfinite(tmp_path, tiny_vit, toy_dataset, save, caught_by):
    """Without checkpoints the loss watch stops the run at the next logging step; with a checkpoint every step, the
    weights check refuses the first non-finite checkpoint (its step's loss was still finite)."""
    out = tmp_path / "out"
    args = MixProTrainingArguments(
        output_dir=str(out), learning_rate=1e4, lr_scheduler_type="constant", max_grad_norm=0.0, mix_method="none",
        per_device_train_batch_size=8, max_steps=8, logging_steps=4, save_strategy=save, save_steps=1,
        report_to=[], use_cpu=True, disable_tqdm=True, seed=0, dataloader_num_workers=0,
    )  # fmt: skip
    trainer = MixProTrainer(
        model=tiny_vit(), args=args, train_dataset=toy_dataset(64), callbacks=[InfWeightAfterStep(2)]
    )
    with pytest.raises(TrainingDiverged, match=r"^training diverged: " + caught_by) as err:
        trainer.train()
    assert "\n" not in str(err.value) and "learning rate" in str(err.value)
    for checkpoint in out.glob("checkpoint-*"):  # every checkpoint written holds finite weights
        assert finite_weights(checkpoint), checkpoint
    logged = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    assert all(math.isfinite(v) and v != 0 for v in logged), logged  # the real losses, never a stand-in
    with pytest.raises(TrainingDiverged, match="was not saved"):
        trainer.save_model()
    assert not (out / "model.safetensors").exists()


def flags(out: Path, method: str) -> list[str]:
    return [
        "--output_dir", str(out), "--learning_rate", "1e4", "--mix_method", method, "--max_steps", "8",
        "--config_overrides", TINY_OVERRIDES, "--max_train_samples", "64", "--max_eval_samples", "16",
        "--per_device_train_batch_size", "8", "--logging_steps", "4", "--eval_strategy", "no", "--report_to", "none",
        "--use_cpu", "True", "--disable_tqdm", "True", "--dataloader_num_workers", "0", "--warmup_steps", "0",
    ]  # fmt: skip


@pytest.mark.parametrize("method", ["none", "mixup_cutmix"])
def test_cli_exits_nonzero_with_one_line_and_no_model(tmp_path, capsys, method):
    from mixpro_hf import train

    out = tmp_path / "out"
    assert train.main([*flags(out, method), "--save_strategy", "steps", "--save_steps", "2"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    (line,) = [x for x in err.splitlines() if x.startswith("mixpro-train:")]
    assert line.startswith("mixpro-train: error: training diverged: ") and "learning rate" in line
    assert not (out / "model.safetensors").exists() and not (out / "all_results.json").exists()
    assert all(finite_weights(c) for c in out.glob("checkpoint-*"))


def test_no_trainer_example_exits_nonzero_without_saving(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("no_trainer_divergence", NO_TRAINER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        module.main(flags(out, "none"))
    assert exit_info.value.code == 1
    (line,) = [x for x in capsys.readouterr().err.splitlines() if "error:" in x]
    assert "training diverged: " in line and "step" in line
    assert not (out / "model.safetensors").exists() and not list(out.glob("checkpoint-*"))
