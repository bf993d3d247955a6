"""``MixProTrainer``: a 🤗 ``Trainer`` that mixes training batches and labels them with MixPro.

Change ``Trainer`` to ``MixProTrainer`` and ``TrainingArguments`` to ``MixProTrainingArguments``;
the patch size, number of labels and token layout are read from the model's config.
"""

from __future__ import annotations

import os
from collections import defaultdict
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel, Trainer

from .attention import unwrap_model
from .collator import MixProCollator, pop_mix
from .mixing import MixOutput
from .recipe import batch_generator, mix_batch
from .step import check_model_for_mixing, forward_mixed
from .training_args import MixProTrainingArguments

LEARNABLE_ALPHA_FILE = "mixpro_learnable_alpha.pt"


def model_patch_size(model: nn.Module, override: int | None = None) -> int:
    """The mixing grid cell in pixels: ``override``, else the model config's ``patch_size``."""
    if override is not None:
        if override < 1:
            raise ValueError(f"mix_patch_size must be a positive integer, got {override!r}")
        return int(override)
    config = getattr(unwrap_model(model), "config", None)
    patch = getattr(config, "patch_size", None)
    if isinstance(patch, (list, tuple)):
        if len(set(patch)) != 1:
            raise ValueError(f"non-square patch size {tuple(patch)} is not supported: set mix_patch_size")
        patch = patch[0]
    if not isinstance(patch, int):
        model_type = getattr(config, "model_type", type(model).__name__)
        raise ValueError(
            f"model type {model_type!r} has no integer config.patch_size: set mix_patch_size (--mix_patch_size) "
            "to the grid cell, in pixels, on which images are mixed"
        )
    return patch


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

    def __init__(self, model: nn.Module | None = None, args: MixProTrainingArguments | None = None, **kwargs: Any):
        if model is None:
            raise ValueError("MixProTrainer needs a model (model_init is not supported)")
        if args is None:
            args = MixProTrainingArguments(output_dir="tmp_trainer")
        if not isinstance(args, MixProTrainingArguments):
            raise TypeError(f"args must be MixProTrainingArguments, got {type(args).__name__}")
        self.mix_config = args.mixpro_config()
        self.patch_size = model_patch_size(model, args.mix_patch_size)
        self.num_labels = int(unwrap_model(model).config.num_labels)
        image_size = getattr(unwrap_model(model).config, "image_size", None)
        image_size = image_size if isinstance(image_size, int) else None
        check_model_for_mixing(model, self.mix_config, self.patch_size, image_size)
        if kwargs.get("data_collator") is None:
            kwargs["data_collator"] = MixProCollator(
                config=self.mix_config if args.mix_on == "collator" else None,
                patch_size=self.patch_size,
                num_labels=self.num_labels,
                seed=args.seed,
                process_index=args.process_index,
            )
        super().__init__(model=model, args=args, **kwargs)
        self.loss_is_scaled_for_ga = False  # our loss is a per-batch mean: the Trainer divides by GA
        self.learnable_alpha: nn.Parameter | None = None
        if self.mix_config.alpha_strategy == "learnable":
            self.learnable_alpha = nn.Parameter(torch.zeros((), device=self.args.device))
        self._mix_stats: dict[str, list[torch.Tensor]] = defaultdict(list)
        self._mix_step, self._mix_micro = -1, 0

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
        for name, value in result.stats.items():
            self._mix_stats[name].append(value)
        return (result.loss, outputs) if return_outputs else result.loss

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
        """Add the mean MixPro statistics of the steps since the last training log."""
        if "loss" in logs and self._mix_stats:
            for name, values in self._mix_stats.items():
                logs[f"mixpro/{name}"] = round(float(torch.stack(values).float().mean()), 6)
            if self.learnable_alpha is not None:
                logs["mixpro/learnable_alpha"] = round(float(torch.sigmoid(self.learnable_alpha.detach())), 6)
            self._mix_stats.clear()
        super().log(logs, start_time)

    # ------------------------------------------------------------------ resume

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: nn.Module | None = None) -> None:
        """Restore the weights through ``from_pretrained``.

        ``Trainer`` (transformers 5.x) reloads ``model.safetensors`` with ``load_state_dict(strict=False)``,
        but ``save_pretrained`` writes the checkpoint under the legacy parameter names of models whose
        modules were renamed (ViT, DeiT, ...): the keys do not match and the weights are silently not
        restored. ``from_pretrained`` applies the name conversion, so a resumed run continues exactly.
        """
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        target = unwrap_model(model if model is not None else self.model)
        sharded = self.is_deepspeed_enabled or self.is_fsdp_enabled
        if sharded or not isinstance(target, PreTrainedModel):
            return
        if not os.path.isfile(os.path.join(resume_from_checkpoint, "config.json")):
            return
        restored = type(target).from_pretrained(resume_from_checkpoint, config=target.config)
        target.load_state_dict(restored.state_dict(), strict=True)

    # ------------------------------------------------------------------ learnable alpha (Table 10)

    def create_optimizer(self, model: nn.Module | None = None) -> torch.optim.Optimizer:
        fresh = self.optimizer is None
        optimizer = super().create_optimizer(model)
        if fresh and self.learnable_alpha is not None:
            optimizer.add_param_group({"params": [self.learnable_alpha], "weight_decay": 0.0})
        return optimizer

    def _save_optimizer_and_scheduler(self, output_dir: str) -> None:
        super()._save_optimizer_and_scheduler(output_dir)
        if self.learnable_alpha is not None and self.args.should_save:
            torch.save(self.learnable_alpha.detach().cpu(), os.path.join(output_dir, LEARNABLE_ALPHA_FILE))

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        if checkpoint is not None and self.learnable_alpha is not None:
            path = os.path.join(checkpoint, LEARNABLE_ALPHA_FILE)
            if os.path.isfile(path):
                with torch.no_grad():
                    self.learnable_alpha.copy_(torch.load(path, weights_only=True))
        super()._load_optimizer_and_scheduler(checkpoint)
