"""``MixProTrainer``: a 🤗 ``Trainer`` that mixes training batches and labels them with MixPro.

Change ``Trainer`` to ``MixProTrainer`` and ``TrainingArguments`` to ``MixProTrainingArguments``;
the patch size, number of labels and token layout are read from the model's config.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import re
import shutil
import signal
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel, Trainer, TrainerCallback, TrainerControl, TrainerState, TrainingArguments
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, TrainOutput, get_last_checkpoint, rotate_checkpoints
from transformers.utils import is_sagemaker_mp_enabled, is_torch_xla_available
from transformers.utils import logging as hf_logging

from .collator import MixProCollator, pop_mix
from .divergence import (
    NonFiniteLossWatch,
    TrainingDiverged,
    check_finite_weights,
    nonfinite_parameter_names,
    nonfinite_weights_message,
)
from .loss import learnable_alpha_parameter, mean_mix_stats
from .mixing import MixOutput
from .modeling import decay_parameter_names, model_geometry, unwrap_model
from .preflight import check_pickles
from .recipe import batch_generator, mix_batch, mixing_warnings
from .run_record import apply_changes, check_checkpoint_settings, save_checkpoint_settings
from .schedule import create_lr_scheduler
from .step import check_model_for_mixing, forward_mixed
from .trainer_internals import check_private_trainer_api
from .training_args import MixProTrainingArguments
from .write_guard import (
    WriteError,
    WriteFailed,
    atomic_write_text,
    check_folder_exists,
    failure_line,
    kept_and_next,
    reporting_write_failures,
)

logger = hf_logging.get_logger(__name__)

LEARNABLE_ALPHA_FILE = "mixpro_learnable_alpha.pt"
#: Checkpoints are written to ``output_dir/.mixpro-saving/checkpoint-N`` and renamed to ``output_dir/checkpoint-N``
#: when complete, so an interrupted save never leaves a ``checkpoint-N`` folder behind; the final model
#: (:meth:`MixProTrainer.save_model`) is written to ``output_dir/.mixpro-saving/final`` and its files moved up.
STAGING_DIR = ".mixpro-saving"
FINAL_STAGING = "final"
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


class CheckpointSaveError(WriteFailed):
    """A checkpoint or the final model could not be written (a full disk, a read-only or vanished folder, ...;
    :mod:`~mixpro_hf.write_guard`); ``str()`` is one line and the previous checkpoint (or final model) is intact."""


class TrainingStopped(RuntimeError):
    """Training stopped on a signal (SIGTERM) after a complete checkpoint; ``exit_code`` is 128 + the signal."""

    def __init__(self, message: str, *, exit_code: int, checkpoint: str) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.checkpoint = checkpoint


class StopOnSignal(TrainerCallback):
    """Saves a checkpoint and stops training at the next optimizer-step boundary once :meth:`request` was called
    (the SIGTERM handler of :meth:`MixProTrainer.train`); every process stops at the same step."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def request(self, signum: int, frame: Any = None) -> None:
        """Signal handler: remember the signal; the training loop stops at the end of the current step."""
        self.signum = signum

    def _requested_anywhere(self, args: TrainingArguments) -> bool:
        requested = self.signum is not None
        if args.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
            flag = torch.tensor([float(requested)], device=args.device)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            requested = bool(flag.item())
            if requested and self.signum is None:
                self.signum = signal.SIGTERM
        return requested

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> TrainerControl:
        if self._requested_anywhere(args):
            control.should_save = True
            control.should_training_stop = True
        return control

    @contextlib.contextmanager
    def installed(self, signum: int = signal.SIGTERM) -> Iterator[None]:
        """Handle ``signum`` with :meth:`request` inside the block (main thread only), then restore the handler."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = signal.signal(signum, self.request)
        try:
            yield
        finally:
            signal.signal(signum, previous)


class StopOnDivergence(TrainerCallback):
    """Before the Trainer logs, evaluates, saves or ends training (after ``on_step_end`` / ``on_epoch_end``), stop if
    the run diverged: the watched losses of every step since the last check are compared across processes
    (:meth:`MixProTrainer.check_divergence`), where the Trainer synchronises anyway, so a non-finite loss is never
    logged as a stand-in, evaluated, saved or returned. Must be the last callback, to see every flag set."""

    def __init__(self, trainer: MixProTrainer) -> None:
        self.trainer = trainer

    def _check(self, control: TrainerControl) -> None:
        if control.should_log or control.should_evaluate or control.should_save or control.should_training_stop:
            self.trainer.check_divergence()

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        self._check(control)

    def on_epoch_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self._check(control)


class RestoreMixProStates(TrainerCallback):
    """On a resume, once the Trainer restored the optimizer and scheduler (``on_train_begin`` comes after): MixPro's
    own states (:meth:`MixProTrainer.restore_mixpro_states`)."""

    def __init__(self, trainer: MixProTrainer, checkpoint: Any) -> None:
        self.trainer = trainer
        self.checkpoint = checkpoint if isinstance(checkpoint, str) and os.path.isdir(checkpoint) else None

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if self.checkpoint is not None:
            self.trainer.restore_mixpro_states(self.checkpoint)


class MixProTrainer(Trainer):
    """A ``Trainer`` that mixes training batches (MaskMix, Mixup, CutMix) and computes the MixPro loss.

    * Training batches are mixed on the model's device in :meth:`compute_loss` (``mix_on="device"``)
      or by :class:`MixProCollator` in the data loader (``mix_on="collator"``); evaluation batches
      never are. The draws of batch *k* of process *p* come from ``batch_generator(seed, p, k)``, so a
      resumed run draws the same masks as an uninterrupted one.
    * PAL / TransMix batches take the last block's class-token attention through
      :func:`capture_cls_attention` (the model keeps its SDPA / flash kernels).
    * Mean α, λ_area, λ_attn and λ of the logged steps are added to the logs as ``mixpro/alpha`` etc.
    """

    args: MixProTrainingArguments
    #: Level of the :func:`~mixpro_hf.recipe.mixing_warnings` logged when training starts (``mixpro-train`` lowers it
    #: to INFO for the embedded digits job's own documented 2x2 MaskMix cells: said, not warned about).
    mixing_notice_level: int = logging.WARNING

    def __init__(self, model: nn.Module | None = None, args: MixProTrainingArguments | None = None, **kwargs: Any):
        if model is None:
            raise ValueError("MixProTrainer needs a model (model_init is not supported)")
        if args is None:
            args = MixProTrainingArguments(output_dir="tmp_trainer")
        if not isinstance(args, MixProTrainingArguments):
            raise TypeError(f"args must be MixProTrainingArguments, got {type(args).__name__}")
        check_private_trainer_api(logger.warning)  # the Trainer internals overridden below (trainer_internals)
        self.mix_config = args.mixpro_config()
        self.patch_size, image_size = self.mixing_geometry(model, args)
        self.num_labels = int(unwrap_model(model).config.num_labels)
        self._image_size = image_size
        evaluating_only = (
            kwargs.get("train_dataset") is None and not args.do_train and (args.do_eval or args.do_predict)
        )
        if not evaluating_only:  # a Trainer built to evaluate mixes nothing; train() checks again
            check_model_for_mixing(model, self.mix_config, self.patch_size, image_size)
        if kwargs.get("data_collator") is None:
            kwargs["data_collator"] = MixProCollator(
                config=self.mix_config if args.mix_on == "collator" else None,
                patch_size=self.patch_size,
                num_labels=self.num_labels,
                seed=args.seed,
                process_index=args.process_index,
            )
        decide_unused_parameters(model, args, image_size)
        with warnings.catch_warnings():  # 🤗 drops its label smoother for multi-label models: that touches only
            # the evaluation loss (BCE, unsmoothed); the training targets are smoothed by mixed_loss
            warnings.filterwarnings("ignore", "Label smoothing is not compatible with multi-label", UserWarning)
            super().__init__(model=model, args=args, **kwargs)
        # our loss is a per-batch mean: the Trainer divides it by the accumulation steps (``loss_is_scaled_for_ga``;
        # releases before it decide from ``model_accepts_loss_kwargs``, which would skip the division)
        self.loss_is_scaled_for_ga = False
        self.model_accepts_loss_kwargs = False
        self.learnable_alpha = learnable_alpha_parameter(self.mix_config, self.args.device)
        self._mix_stats: list[dict[str, torch.Tensor]] = []
        self._mix_step, self._mix_micro = -1, 0
        self.loss_watch = NonFiniteLossWatch(self.args.device)
        self._resume_changes: dict[str, Any] = {}  # settings a resume changed with consent (train())

    def mixing_geometry(self, model: nn.Module, args: MixProTrainingArguments) -> tuple[int, int | None]:
        """``(patch_size, image_size)`` of the mixing grid: :func:`~mixpro_hf.modeling.model_geometry` (a subclass
        that mixes nothing may state its own)."""
        return model_geometry(model, args.mix_patch_size)

    def create_scheduler(
        self, num_training_steps: int, optimizer: torch.optim.Optimizer | None = None
    ) -> torch.optim.lr_scheduler.LRScheduler:
        """🤗's scheduler, or the reference code's cosine with ``lr_schedule="reference_cosine"``
        (:mod:`mixpro_hf.schedule`)."""
        if self.lr_scheduler is None and self.args.lr_schedule == "reference_cosine":
            self.lr_scheduler = create_lr_scheduler(self.args, optimizer or self.optimizer, num_training_steps)
            self._created_lr_scheduler = True
        return super().create_scheduler(num_training_steps, optimizer)

    # ------------------------------------------------------------------ mixing

    def _next_batch_index(self) -> int:
        """Index of this micro-batch since the start of training (also after a resume)."""
        step = self.state.global_step
        if step != self._mix_step:
            self._mix_step, self._mix_micro = step, 0
        index = step * self.args.gradient_accumulation_steps + self._mix_micro
        self._mix_micro += 1
        return index

    def mix_inputs(self, inputs: dict[str, Any]) -> MixOutput:
        """Mix a training batch in place (``inputs["pixel_values"]``) unless the collator already did."""
        mix = pop_mix(inputs)
        if mix is None:
            generator = batch_generator(self.args.seed, self.args.process_index, self._next_batch_index())
            mix = mix_batch(inputs["pixel_values"], self.mix_config, self.patch_size, generator)
            inputs["pixel_values"] = mix.pixel_values
        return mix

    def _progress(self) -> float:
        max_steps = self.state.max_steps or 0
        return min(self.state.global_step / max_steps, 1.0) if max_steps > 0 else 0.0

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, Any]:
        if not model.training:
            pop_mix(inputs)
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        mix = self.mix_inputs(inputs)
        labels = inputs.pop("labels")
        result, outputs = forward_mixed(
            model, inputs, labels, mix, self.mix_config, progress=self._progress(), learnable_alpha=self.learnable_alpha
        )
        self._mix_stats.append(result.stats)
        return (result.loss, outputs) if return_outputs else result.loss

    # ------------------------------------------------------------------ a diverged run stops, unsaved

    def training_step(
        self, model: nn.Module, inputs: dict[str, Any], num_items_in_batch: torch.Tensor | int | None = None
    ) -> torch.Tensor:
        """``Trainer.training_step``; its (unscaled) loss is watched for NaN/inf on the device, without a host sync
        (:class:`~mixpro_hf.divergence.NonFiniteLossWatch`)."""
        loss = super().training_step(model, inputs, num_items_in_batch)
        learning_rate = self.optimizer.param_groups[0]["lr"] if self.optimizer is not None else float("nan")
        self.loss_watch.observe(loss, self.state.global_step + 1, learning_rate)
        return loss

    def check_divergence(self) -> None:
        """Raise :class:`~mixpro_hf.divergence.TrainingDiverged` on every process when any process had a non-finite
        training loss (one gather; every process must call it)."""
        self.loss_watch.check(self.accelerator.gather if self.args.world_size > 1 else None)

    def _check_weights_before_save(self, model: nn.Module, what: str) -> None:
        """Refuse to write non-finite weights. Every process must call it: with several processes they agree through
        one gather (sharded weights differ by process), so all stop or none does."""
        bad = nonfinite_parameter_names(unwrap_model(model))
        if self.args.world_size > 1:
            flags = self.accelerator.gather(torch.tensor([float(bool(bad))], device=self.args.device))
            if flags.max().item() and not bad:
                bad = ["the weights of another process"]
        if bad:
            raise TrainingDiverged(nonfinite_weights_message(bad, what))

    # ------------------------------------------------------------------ evaluation never mixes

    def _unmixed_collator_call(self, method: Any, *args: Any, **kwargs: Any) -> Any:
        collator = self.data_collator
        if isinstance(collator, MixProCollator):
            self.data_collator = collator.without_mixing()
        try:
            return method(*args, **kwargs)
        finally:
            self.data_collator = collator

    def get_eval_dataloader(self, eval_dataset: Any = None) -> torch.utils.data.DataLoader:
        return self._unmixed_collator_call(super().get_eval_dataloader, eval_dataset)

    def get_test_dataloader(self, test_dataset: Any) -> torch.utils.data.DataLoader:
        return self._unmixed_collator_call(super().get_test_dataloader, test_dataset)

    # ------------------------------------------------------------------ logging

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add the mean MixPro statistics of the steps since the last training log, over the batches of every
        process (the Trainer calls this on every process at a logging step: one collective)."""
        if "loss" in logs and (self._mix_stats or self.args.world_size > 1):
            several = self.args.world_size > 1
            logs.update(
                mean_mix_stats(
                    self._mix_stats,
                    self.learnable_alpha,
                    sum_over_processes=(lambda t: self.accelerator.reduce(t, reduction="sum")) if several else None,
                    device=self.args.device,
                )
            )
            self._mix_stats.clear()
        super().log(logs, start_time)

    # ------------------------------------------------------------------ training, SIGTERM

    def train(
        self,
        resume_from_checkpoint: str | bool | None = None,
        trial: Any = None,
        ignore_keys_for_eval: list[str] | None = None,
    ) -> TrainOutput:
        """``Trainer.train``, plus:

        * the preflight of the model: the mixing settings against its geometry
          (:func:`~mixpro_hf.step.check_model_for_mixing`) and, for a resume, the checkpoint's pickle files
          (:func:`~mixpro_hf.preflight.check_pickles`) and the settings it was made with
          (:func:`~mixpro_hf.run_record.check_checkpoint_settings`: a change is refused unless
          ``resume_with_changed_settings``, then applied to the restored optimizer), before the first step;
        * one run per output folder: the main process holds the folder's lock
          (:class:`~mixpro_hf.output_guard.OutputDirLock`) while training, so a second run into it is refused;
        * a SIGTERM (pre-emption) saves a complete checkpoint at the next step boundary and raises
          :class:`TrainingStopped` (``exit_code`` 143) instead of killing the process mid-step."""
        from .output_guard import output_dir_lock  # (output_guard imports this module)

        check_model_for_mixing(self.model, self.mix_config, self.patch_size, self._image_size)
        checkpoint = resume_from_checkpoint
        if checkpoint is True and os.path.isdir(self.args.output_dir):
            checkpoint = get_last_checkpoint(self.args.output_dir)
        self._resume_changes = {}
        if isinstance(checkpoint, str) and os.path.isdir(checkpoint):
            check_pickles(checkpoint)
            self._resume_changes = check_checkpoint_settings(checkpoint, self.args)
        grid = None if self._image_size is None else (self._image_size // self.patch_size,) * 2
        for message in mixing_warnings(self.mix_config, grid, self.args.per_device_train_batch_size):
            logger.log(self.mixing_notice_level, message)
        stop = StopOnSignal()
        restore = RestoreMixProStates(self, checkpoint)
        # first, so that every other callback's on_train_begin sees MixPro's restored states (RunRecorder records them)
        self.callback_handler.callbacks.insert(0, restore)
        # last, in this order: the divergence check sees every flag the other callbacks (and a SIGTERM) set
        callbacks = [restore, stop, StopOnDivergence(self)]
        for callback in callbacks[1:]:
            self.add_callback(callback)
        try:
            with output_dir_lock(self.args.output_dir, take=self.args.should_save), stop.installed(signal.SIGTERM):
                result = super().train(resume_from_checkpoint, trial, ignore_keys_for_eval)
        finally:
            for callback in callbacks:
                self.remove_callback(callback)
        if stop.signum is not None and self.state.global_step < self.state.max_steps:
            raise self._stopped(stop.signum)
        return result

    def _stopped(self, signum: int) -> TrainingStopped:
        step = self.state.global_step
        checkpoint = os.path.join(self.args.output_dir, f"{PREFIX_CHECKPOINT_DIR}-{step}")
        message = (
            f"stopped by {signal.Signals(signum).name}: a complete checkpoint of step {step} is in {checkpoint}; "
            "continue with --resume_from_checkpoint last"
        )
        return TrainingStopped(message, exit_code=128 + signum, checkpoint=checkpoint)

    # ------------------------------------------------------------------ atomic checkpoints

    _staging_root: str | None = None  # set while Trainer._save_checkpoint writes into the staging folder

    def _get_output_dir(self, trial: Any) -> str:
        """The run folder; the staging folder while :meth:`_save_checkpoint` writes a checkpoint."""
        return self._staging_root or super()._get_output_dir(trial)

    def _save_checkpoint(self, model: nn.Module, trial: Any) -> None:
        """Save a checkpoint atomically: written to ``output_dir/.mixpro-saving/checkpoint-N``, renamed to
        ``output_dir/checkpoint-N`` when complete, then older checkpoints are rotated out.

        A write failure (a full disk, a read-only or vanished run folder, ...: :mod:`~mixpro_hf.write_guard`) removes
        the partial folder and raises :class:`CheckpointSaveError`; the previous checkpoints are untouched."""
        run_dir = super()._get_output_dir(trial)
        name = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        self._check_weights_before_save(model, name)
        staging_root = os.path.join(run_dir, STAGING_DIR)
        staged, final = os.path.join(staging_root, name), os.path.join(run_dir, name)
        if self.args.should_save:
            shutil.rmtree(staged, ignore_errors=True)
        self.accelerator.wait_for_everyone()
        self._staging_root = staging_root

        def failures() -> contextlib.AbstractContextManager[None]:
            return reporting_write_failures(
                lambda cause: self._save_error(cause, final, run_dir),
                cleanup=lambda: _discard_staged(staged) if self.args.should_save else None,
                error=CheckpointSaveError,
            )

        try:
            with failures():
                if self.args.should_save:  # never recreate a vanished run folder without its earlier checkpoints
                    check_folder_exists(run_dir)
                super()._save_checkpoint(model, trial)
                self._save_mixpro_states(staged)
                self._fix_best_checkpoint_path(staged, final)
        finally:
            self._staging_root = None
        self.accelerator.wait_for_everyone()
        if self.args.should_save:
            with failures():
                _replace_dir(staged, final)
            with contextlib.suppress(OSError):  # leave no empty staging folder behind
                os.rmdir(staging_root)
            rotate_checkpoints(run_dir, self.args.save_total_limit, self.state.best_model_checkpoint, use_mtime=True)
        self.accelerator.wait_for_everyone()

    def _fix_best_checkpoint_path(self, staged: str, final: str) -> None:
        """``Trainer`` records the best checkpoint under the staging path: point it (and the staged
        ``trainer_state.json``) at the final folder."""
        if self.state.best_model_checkpoint != staged:
            return
        self.state.best_model_checkpoint = final
        if self.args.should_save:
            self.state.save_to_json(os.path.join(staged, "trainer_state.json"))

    @staticmethod
    def _save_error(cause: WriteError, final: str, run_dir: str) -> str:
        """One line: what failed, which checkpoint is intact, how to go on."""
        return failure_line(final, cause, *kept_and_next(run_dir), folder=run_dir)

    # ------------------------------------------------------------------ atomic final model

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """``Trainer.save_model``, atomic per file: the model, config, processor and ``training_args.bin`` are
        written to ``output_dir/.mixpro-saving/final``, then each file is moved into ``output_dir`` with
        ``os.replace`` (the weights last), so a reader never sees a half-written ``model.safetensors`` and the
        previous one stays until the new one is complete; the staging folder is then removed.

        An ``OSError`` while writing (a full disk, ...) removes the staging folder, leaves ``output_dir`` untouched
        and raises :class:`CheckpointSaveError` (one line). Non-finite weights are not written:
        :class:`~mixpro_hf.divergence.TrainingDiverged` (checked on this process's weights: no collective, since a
        user may call this on the main process only; not for sharded weights, whose shards could disagree: there the
        loss watch and the checkpoints' agreed check stand guard). Saves that are not staged (``Trainer``'s own
        path):

        * a target inside a ``.mixpro-saving`` folder: the checkpoint that :meth:`_save_checkpoint` already stages
          (decided on the path, not on ``_internal_call``: :meth:`push_to_hub` saves the final model with
          ``_internal_call=True`` too);
        * DeepSpeed, FSDP, XLA/TPU, SageMaker model parallel and models sharded at load time
          (``DistributedConfig``): every process takes part in gathering the state dict (collectives that must run
          in the same order everywhere), and DeepSpeed / XLA / SageMaker write extra files (sharded states,
          ``user_content.pt``) from several processes straight into the folder.
        """
        target = output_dir if output_dir is not None else self.args.output_dir
        sharded = self._sharded_weights()
        if not sharded and STAGING_DIR not in os.path.abspath(target).split(os.sep):  # checkpoints: _save_checkpoint
            check_finite_weights(unwrap_model(self.model), f"the model in {target}")
        if not self._stages_final_save(target):
            super().save_model(output_dir, _internal_call)
            return
        if self.args.should_save:  # only the main process writes (``Trainer._save`` returns at once elsewhere)
            self._save_staged(target)
        if self.args.push_to_hub and not _internal_call:  # as ``Trainer.save_model``
            self.push_to_hub(commit_message="Model save", revision=self.args.hub_revision)

    def _sharded_weights(self) -> bool:
        """DeepSpeed, FSDP, or a model sharded at load time (``DistributedConfig``; the Trainer's
        ``is_distributed_loading_by_transformers``, which transformers 5.17 and older lack)."""
        return bool(
            self.is_deepspeed_enabled
            or self.is_fsdp_enabled
            or getattr(self, "is_distributed_loading_by_transformers", False)
        )

    def _stages_final_save(self, target: str) -> bool:
        sharded = self._sharded_weights()
        if sharded or is_torch_xla_available() or is_sagemaker_mp_enabled():
            return False
        return STAGING_DIR not in os.path.abspath(target).split(os.sep)

    def _save_staged(self, target: str) -> None:
        staging_root = os.path.join(target, STAGING_DIR)
        staged = os.path.join(staging_root, FINAL_STAGING)
        moved: list[str] = []
        try:
            with reporting_write_failures(
                lambda cause: self._final_save_error(cause, target, partly_moved=bool(moved)), error=CheckpointSaveError
            ):
                shutil.rmtree(staged, ignore_errors=True)  # left over by a killed save
                self._save(staged)
                for name in sorted(os.listdir(staged), key=_move_order):
                    source, destination = os.path.join(staged, name), os.path.join(target, name)
                    (_replace_dir if os.path.isdir(source) else os.replace)(source, destination)
                    moved.append(name)
        finally:
            shutil.rmtree(staged, ignore_errors=True)
            with contextlib.suppress(OSError):  # leave no empty staging folder behind
                os.rmdir(staging_root)
        _remove_stale_shards(target, moved)

    @staticmethod
    def _final_save_error(cause: WriteError, target: str, partly_moved: bool) -> str:
        """One line: what failed, whether the previous final model is intact, how to go on."""
        if partly_moved:  # a rename failed after others succeeded: rare (renames need no new data blocks)
            kept = f"some files in {target} were already replaced, so it may mix the previous and the new save"
        elif any(os.path.isfile(os.path.join(target, name)) for name in WEIGHT_FILES):
            kept = f"the previous final model in {target} is intact"
        else:
            kept = f"no earlier final model exists and the files in {target} are untouched"
        checkpoint, then = kept_and_next(target)
        if checkpoint.startswith("the last"):
            kept = f"{kept}, and {checkpoint}"
        return failure_line(f"the final model to {target}", cause, kept, then, folder=target)

    def save_metrics(self, split: str, metrics: dict[str, Any], combined: bool = True) -> None:
        """``Trainer.save_metrics`` (``<split>_results.json``, merged into ``all_results.json``), each file written
        atomically (:func:`~mixpro_hf.write_guard.atomic_write_text`): a full disk leaves the previous file."""
        if not self.is_world_process_zero():
            return
        atomic_write_text(os.path.join(self.args.output_dir, f"{split}_results.json"), _json_text(metrics))
        if combined:
            path = os.path.join(self.args.output_dir, "all_results.json")
            combined_metrics = json.loads(Path(path).read_text(encoding="utf-8")) if os.path.exists(path) else {}
            atomic_write_text(path, _json_text({**combined_metrics, **metrics}))

    def save_state(self) -> None:
        """``Trainer.save_state`` (``trainer_state.json``), written atomically."""
        if self.is_world_process_zero():
            text = json.dumps(dataclasses.asdict(self.state), indent=2, sort_keys=True) + "\n"
            atomic_write_text(os.path.join(self.args.output_dir, "trainer_state.json"), text)

    # ------------------------------------------------------------------ resume

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: nn.Module | None = None) -> None:
        """Restore the weights through ``from_pretrained`` (only; no ``Trainer`` reload before it).

        ``Trainer`` (transformers 5.x) reloads ``model.safetensors`` with ``load_state_dict(strict=False)``,
        but ``save_pretrained`` writes the checkpoint under the legacy parameter names of models whose
        modules were renamed (ViT, DeiT, ...): the keys do not match, the weights are silently not
        restored and a long "missing / unexpected keys" listing is logged. ``from_pretrained`` applies the
        name conversion and ``load_state_dict(strict=True)`` checks every key, so a resumed run continues
        exactly. Sharded (DeepSpeed, FSDP), PEFT and non-``PreTrainedModel`` checkpoints take ``Trainer``'s path.
        """
        target = unwrap_model(model if model is not None else self.model)
        if not self._loads_with_from_pretrained(resume_from_checkpoint, target):
            super()._load_from_checkpoint(resume_from_checkpoint, model)
            return
        self._reload_weights(resume_from_checkpoint, target)

    def _load_best_model(self) -> None:
        """``load_best_model_at_end``: the best checkpoint's weights, every tensor, through the same reload as a resume
        (:meth:`_load_from_checkpoint`: ``Trainer``'s own reload misses the legacy key names and keeps the last
        weights, a mix-up nobody notices)."""
        best = self.state.best_model_checkpoint
        target = unwrap_model(self.model)
        if best is None or not self._loads_with_from_pretrained(best, target):
            super()._load_best_model()
            return
        logger.info(f"Loading best model from {best} (score: {self.state.best_metric}).")
        self._reload_weights(best, target)

    @staticmethod
    def _reload_weights(checkpoint: str, target: nn.Module) -> None:
        """Load ``checkpoint``'s weights into ``target`` in place: ``from_pretrained`` (legacy names converted), then
        ``load_state_dict(strict=True)`` (every key checked)."""
        restored = type(target).from_pretrained(checkpoint, config=target.config)
        target.load_state_dict(restored.state_dict(), strict=True)

    def _loads_with_from_pretrained(self, checkpoint: str, target: nn.Module) -> bool:
        sharded = self.is_deepspeed_enabled or self.is_fsdp_enabled
        if sharded or not isinstance(target, PreTrainedModel) or getattr(target, "peft_config", None):
            return False
        has_weights = any(os.path.isfile(os.path.join(checkpoint, name)) for name in WEIGHT_FILES)
        return has_weights and os.path.isfile(os.path.join(checkpoint, "config.json"))

    # ------------------------------------------------------------------ optimisation

    def get_decay_parameter_names(self, model: nn.Module) -> list[str]:
        """Each family's official rule (:func:`mixpro_hf.modeling.decay_parameter_names`): no decay on biases,
        norms, the class / distillation / register tokens, the position embeddings and what timm's models name in
        ``no_weight_decay()``."""
        return decay_parameter_names(model)

    def create_optimizer(self, model: nn.Module | None = None) -> torch.optim.Optimizer:
        fresh = self.optimizer is None
        # (the Trainer of older transformers 5 releases has ``create_optimizer()`` without a model: passed when given)
        optimizer = super().create_optimizer() if model is None else super().create_optimizer(model)
        if fresh and self.learnable_alpha is not None:
            optimizer.add_param_group({"params": [self.learnable_alpha], "weight_decay": 0.0})
        return optimizer

    def _save_mixpro_states(self, checkpoint: str) -> None:
        """Beside the Trainer's optimizer and scheduler states (written unless ``save_only_model``): the learnable α
        and the settings the checkpoint was made with (:func:`~mixpro_hf.run_record.save_checkpoint_settings`,
        compared on a resume). Called by :meth:`_save_checkpoint` into the staged folder, before its rename."""
        if self.args.save_only_model or not self.args.should_save:
            return
        if self.learnable_alpha is not None:
            torch.save(self.learnable_alpha.detach().cpu(), os.path.join(checkpoint, LEARNABLE_ALPHA_FILE))
        save_checkpoint_settings(checkpoint, self.args, self.optimizer, self.lr_scheduler)

    def restore_mixpro_states(self, checkpoint: str) -> None:
        """On a resume, after the Trainer restored the optimizer and scheduler (``on_train_begin`` of
        :class:`RestoreMixProStates`): the learnable α, then the settings changes the resume was allowed to make
        (:func:`~mixpro_hf.run_record.apply_changes`)."""
        path = os.path.join(checkpoint, LEARNABLE_ALPHA_FILE)
        if self.learnable_alpha is not None and os.path.isfile(path):
            with torch.no_grad():
                self.learnable_alpha.copy_(torch.load(path, weights_only=True))
        if self._resume_changes:
            apply_changes(self.optimizer, self.lr_scheduler, self._resume_changes)

    # ------------------------------------------------------------------ model card and Hub

    def create_model_card(
        self,
        language: str | None = None,
        license: str | None = None,  # noqa: A002 - 🤗 Trainer's signature
        tags: str | list[str] | None = None,
        model_name: str | None = None,
        finetuned_from: str | None = None,
        tasks: str | list[str] | None = None,
        dataset_tags: str | list[str] | None = None,
        dataset: str | list[str] | None = None,
        dataset_args: str | list[str] | None = None,
    ) -> None:
        """Write the MixPro card to ``output_dir/README.md`` (main process), from the in-memory log history and
        arguments; a README.md that mixpro_hf did not write is kept, with a warning."""
        if not self.is_world_process_zero():
            return
        from .model_card import write_model_card

        first = [v if isinstance(v, str) else (v or [None])[0] for v in (dataset_tags, dataset)]
        try:
            write_model_card(
                self.args.output_dir,
                repo_id=self.args.hub_model_id,
                license=license or "apache-2.0",
                dataset_name=first[0] or first[1],
                log_history=self.state.log_history,
                training_args=self.args.to_dict(),
                model_name=model_name,
                base_model=finetuned_from,
                tags=[tags] if isinstance(tags, str) else tags or [],
                language=language,
            )
        except (FileExistsError, FileNotFoundError) as err:  # a user's own README.md; or no saved model yet
            logger.warning(f"model card not written: {err}")

    def push_to_hub(
        self,
        commit_message: str | None = "End of training",
        blocking: bool = True,
        token: str | None = None,
        revision: str | None = None,
        private: bool | None = None,
        **kwargs: Any,
    ) -> str | None:
        """Save the model, write the MixPro card and upload only what a model repository needs
        (:func:`mixpro_hf.hub.push_output_dir`: no dotfiles, symlinks or training states); returns the URL.

        ``kwargs`` go to :meth:`create_model_card`; the upload is always blocking."""
        from .hub import push_output_dir

        self.callback_handler.on_push_begin(self.args, self.state, self.control)
        self.save_model(_internal_call=True)
        if not self.args.should_save or not self.is_world_process_zero():
            return None
        output_dir = os.path.abspath(self.args.output_dir)
        repo_id = self.hub_model_id or self.args.hub_model_id or os.path.basename(output_dir)
        kwargs.setdefault("model_name", repo_id.split("/")[-1])
        self.create_model_card(**kwargs)
        self._finish_current_push()
        return push_output_dir(
            output_dir,
            repo_id,
            token=token if token is not None else self.args.hub_token,
            private=private if private is not None else self.args.hub_private_repo,
            commit_message=commit_message or "End of training",
            revision=revision or self.args.hub_revision,
        )


def _json_text(values: dict[str, Any]) -> str:
    return json.dumps(values, indent=4, sort_keys=True)


def decide_unused_parameters(model: nn.Module, args: TrainingArguments, image_size: int | None) -> None:
    """``Trainer`` asks DDP to look for unused parameters (``find_unused_parameters=True``) whenever
    ``ddp_find_unused_parameters`` is unset, which costs a traversal of the autograd graph every step and makes DDP
    warn that it found none (ViT, DeiT, BEiT from scratch use every parameter). Unset and with several processes, it
    is decided from the model instead (:func:`unused_parameter_names`: on only when a parameter, e.g. Dinov2's
    ``mask_token``, gets no gradient), and recorded in ``args`` as what ran (before ``Trainer.__init__`` builds the
    accelerator from it)."""
    if args.ddp_find_unused_parameters is not None or args.world_size <= 1 or image_size is None:
        return
    if getattr(args, "activation_checkpointing", False) or args.gradient_checkpointing:  # (the first: newer 5.x)
        return
    try:
        args.ddp_find_unused_parameters = bool(unused_parameter_names(model, image_size))
    except (RuntimeError, ValueError, TypeError) as err:  # a model a zero image cannot run: 🤗's default
        logger.info(f"unused parameters not determined ({err}); DDP searches for them every step")


def unused_parameter_names(model: nn.Module, image_size: int) -> list[str]:
    """The trainable parameters a classification forward of ``model`` does not reach (no gradient), found with one
    image of zeros in eval mode (dropout and stochastic depth off; the random state is untouched), without touching
    ``.grad``. Dinov2 and models built with ``use_mask_token`` have an unused ``mask_token``; ViT, DeiT, BEiT none."""
    model = unwrap_model(model)
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    if not named:
        return []
    first = named[0][1]
    channels = int(getattr(getattr(model, "config", None), "num_channels", 3))
    pixels = torch.zeros(1, channels, image_size, image_size, device=first.device, dtype=first.dtype)
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            outputs = model(pixel_values=pixels)
            logits = outputs.logits if hasattr(outputs, "logits") else outputs[0]
            grads = torch.autograd.grad(logits.sum(), [p for _, p in named], allow_unused=True)
    finally:
        model.train(was_training)
    return [name for (name, _), grad in zip(named, grads, strict=True) if grad is None]


def _discard_staged(staged: str) -> None:
    """Remove a partial save and its staging folder when nothing else is staged there."""
    shutil.rmtree(staged, ignore_errors=True)
    with contextlib.suppress(OSError):
        os.rmdir(os.path.dirname(staged))


def _replace_dir(source: str, target: str) -> None:
    """Rename the complete folder ``source`` to ``target``; an existing ``target`` (the same step saved again) is
    moved aside first and deleted only after the rename."""
    if not os.path.exists(target):
        os.replace(source, target)
        return
    old = f"{source}.old"
    shutil.rmtree(old, ignore_errors=True)
    os.replace(target, old)
    os.replace(source, target)
    shutil.rmtree(old, ignore_errors=True)


_SHARD = re.compile(r"(.+)-\d{5}-of-\d{5}\.(safetensors|bin)")


def _move_order(name: str) -> tuple[int, str]:
    """Weights move last (shards, then ``model.safetensors`` / the index): once they are new, every file is."""
    return (2 if name in WEIGHT_FILES else 1 if _SHARD.fullmatch(name) else 0, name)


def _remove_stale_shards(target: str, written: list[str]) -> None:
    """Delete the weight shards of an earlier save that this save did not replace, as ``save_pretrained`` does when
    it writes straight into the folder (``model-00002-of-00002.safetensors`` after an unsharded save, ...)."""
    prefixes = {name.split(".")[0] for name in written if name in WEIGHT_FILES}
    prefixes |= {m.group(1) for m in map(_SHARD.fullmatch, written) if m}
    for name in os.listdir(target):
        match = _SHARD.fullmatch(name)
        if match and match.group(1) in prefixes and name not in written and os.path.isfile(os.path.join(target, name)):
            with contextlib.suppress(OSError):
                os.remove(os.path.join(target, name))
