"""Fences around the private 🤗 ``Trainer`` API that ``MixProTrainer`` still uses
(:data:`mixpro_hf.trainer_internals.PRIVATE_TRAINER_API`): each entry's signature, and the behaviour MixPro relies on,
checked on the stock ``Trainer`` of the installed transformers. A failure names the method and the version, so a
transformers release that renames or re-signs one fails here instead of silently switching a guarantee off."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import pytest
import transformers
from conftest import make_tiny_vit, make_toy_dataset
from transformers import Trainer, TrainerCallback, TrainingArguments

from mixpro_hf.trainer import MixProTrainer
from mixpro_hf.trainer_internals import PRIVATE_TRAINER_API, check_private_trainer_api, private_api_problems

VERSION = f"transformers {transformers.__version__}"


def test_the_table_lists_every_private_override_of_mixpro_trainer():
    overridden = {
        name
        for name in vars(MixProTrainer)
        if name.startswith("_") and not name.startswith("__") and callable(getattr(Trainer, name, None))
    }
    assert overridden == {m.name for m in PRIVATE_TRAINER_API if m.overridden}, (
        "MixProTrainer overrides a private Trainer method that trainer_internals.PRIVATE_TRAINER_API does not list "
        "(or the table lists one it no longer overrides)"
    )


@pytest.mark.parametrize("method", PRIVATE_TRAINER_API, ids=lambda m: m.name)
def test_signature_is_the_expected_one(method):
    function = getattr(Trainer, method.name, None)
    assert callable(function), f"{VERSION}: Trainer.{method.name} no longer exists ({method.why})"
    names = tuple(p for p in inspect.signature(function).parameters if p != "self")
    assert names == method.parameters, (
        f"{VERSION}: Trainer.{method.name}{names} changed from {method.parameters} ({method.why})"
    )


def test_a_missing_method_is_an_error_and_a_changed_one_a_warning():
    class Renamed(Trainer):
        _load_best_model = None  # as if a release renamed it

        def _get_output_dir(self, trial, extra=None):  # as if a release added a parameter
            return super()._get_output_dir(trial)

    missing, changed = private_api_problems(Renamed)
    assert len(missing) == 1 and missing[0].startswith(f"{VERSION}: Trainer._load_best_model no longer exists")
    assert len(changed) == 1 and f"{VERSION}: Trainer._get_output_dir('trial', 'extra')" in changed[0]
    with pytest.raises(ImportError, match=r"Trainer._load_best_model no longer exists.*install a supported"):
        check_private_trainer_api(print, Renamed)
    assert private_api_problems() == ((), ())  # the installed release: nothing to report
    warnings: list[str] = []
    check_private_trainer_api(warnings.append)
    assert warnings == []


class RecordingTrainer(Trainer):
    """The stock Trainer, recording the calls MixProTrainer's overrides rely on; ``_get_output_dir`` redirects to a
    staging folder while ``_save_checkpoint`` runs, as MixProTrainer does."""

    def __init__(self, *args: Any, staging: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.staging, self.calls, self.saving = staging, [], False

    def _save_checkpoint(self, model, trial):
        self.calls.append(("_save_checkpoint", self.state.global_step))
        self.saving = True
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self.saving = False

    def _get_output_dir(self, trial):
        self.calls.append(("_get_output_dir", self.saving))
        return self.staging if self.saving else super()._get_output_dir(trial)

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        self.calls.append(("_load_from_checkpoint", Path(resume_from_checkpoint).name))
        super()._load_from_checkpoint(resume_from_checkpoint, model)

    def _load_best_model(self):
        self.calls.append(("_load_best_model", Path(self.state.best_model_checkpoint).name))
        super()._load_best_model()


def make_trainer(out: Path, staging: Path, max_steps: int) -> RecordingTrainer:
    args = TrainingArguments(
        output_dir=str(out), per_device_train_batch_size=8, max_steps=max_steps, learning_rate=1e-3,
        eval_strategy="steps", eval_steps=1, save_strategy="steps", save_steps=1, load_best_model_at_end=True,
        report_to=[], use_cpu=True, disable_tqdm=True, dataloader_num_workers=0, logging_steps=1,
    )  # fmt: skip
    return RecordingTrainer(
        model=make_tiny_vit(), args=args, train_dataset=make_toy_dataset(16), eval_dataset=make_toy_dataset(8),
        staging=str(staging),
    )  # fmt: skip


class Probe(TrainerCallback):
    """What the public hooks that replaced private overrides rely on: ``on_train_begin`` runs after the optimizer and
    scheduler were restored (MixPro's resumed states go on top), ``on_step_end`` before the step's log / save flags
    are acted on (the divergence stop)."""

    def __init__(self) -> None:
        self.scheduler_step_at_begin: int | None = None
        self.flags: list[tuple[int, bool, bool]] = []

    def on_train_begin(self, args, state, control, lr_scheduler=None, **kwargs):
        self.scheduler_step_at_begin = getattr(lr_scheduler, "scheduler", lr_scheduler).last_epoch

    def on_step_end(self, args, state, control, **kwargs):
        self.flags.append((state.global_step, control.should_log, control.should_save))


def test_stock_trainer_calls_the_overridden_methods_as_mixpro_relies_on(tmp_path):
    out, staging = tmp_path / "out", tmp_path / "staging"
    trainer = make_trainer(out, staging, max_steps=2)
    trainer.train()
    calls = trainer.calls
    # _save_checkpoint: called at each save step, and it asks _get_output_dir where to write (atomic checkpoints)
    saves = [step for name, step in calls if name == "_save_checkpoint"]
    assert saves == [1, 2], f"{VERSION}: Trainer no longer saves checkpoints through _save_checkpoint ({calls})"
    assert ("_get_output_dir", True) in calls, (
        f"{VERSION}: Trainer._save_checkpoint no longer asks _get_output_dir where to write ({calls})"
    )
    assert (staging / "checkpoint-1" / "trainer_state.json").is_file() and not (out / "checkpoint-1").exists(), (
        f"{VERSION}: Trainer._save_checkpoint does not write under the folder _get_output_dir gives"
    )
    # _load_best_model: called at the end with load_best_model_at_end
    assert [c for c in calls if c[0] == "_load_best_model"], (
        f"{VERSION}: Trainer.train no longer calls _load_best_model at the end ({calls})"
    )
    # _save: writes the model files into the folder it is given (the atomic final save stages through it)
    final = tmp_path / "final"
    trainer._save(str(final))
    assert (final / "model.safetensors").is_file() and (final / "config.json").is_file(), (
        f"{VERSION}: Trainer._save(output_dir) no longer writes the model into output_dir"
    )
    # _finish_current_push: a no-op when nothing is being pushed
    assert trainer._finish_current_push() is None
    # _load_from_checkpoint: a resume restores the weights through it
    resumed = make_trainer(tmp_path / "resumed", tmp_path / "staging2", max_steps=3)
    probe = Probe()
    resumed.add_callback(probe)
    resumed.train(resume_from_checkpoint=str(staging / "checkpoint-2"))
    assert ("_load_from_checkpoint", "checkpoint-2") in resumed.calls, (
        f"{VERSION}: Trainer.train(resume_from_checkpoint=...) no longer calls _load_from_checkpoint ({resumed.calls})"
    )
    # the public hooks that replaced private overrides (StopOnDivergence, RestoreMixProStates)
    assert probe.scheduler_step_at_begin == 2, (
        f"{VERSION}: on_train_begin no longer runs after the scheduler is restored "
        f"(scheduler step {probe.scheduler_step_at_begin}, not 2)"
    )
    assert probe.flags == [(3, True, True)], (
        f"{VERSION}: on_step_end no longer sees the step's log/save flags before they are acted on ({probe.flags})"
    )


def test_rotate_checkpoints_keeps_the_signature_the_atomic_checkpoints_call():
    """``MixProTrainer._save_checkpoint`` rotates the renamed checkpoints with
    ``transformers.trainer_utils.rotate_checkpoints(run_dir, limit, best, use_mtime=True)``."""
    from transformers import trainer_utils

    names = list(inspect.signature(trainer_utils.rotate_checkpoints).parameters)[:4]
    assert names == ["output_dir", "save_total_limit", "best_model_checkpoint", "use_mtime"], (
        f"{VERSION}: transformers.trainer_utils.rotate_checkpoints{tuple(names)} changed"
    )
