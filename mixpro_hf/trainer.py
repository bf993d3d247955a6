"""``MixProTrainer``: a 🤗 ``Trainer`` that mixes training batches and labels them with MixPro.

Change ``Trainer`` to ``MixProTrainer`` and ``TrainingArguments`` to ``MixProTrainingArguments``;
the patch size, number of labels and token layout are read from the model's config.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel, Trainer

from .collator import MixProCollator, pop_mix
from .loss import learnable_alpha_parameter, mean_mix_stats
from .mixing import MixOutput
from .modeling import decay_parameter_names, model_geometry, unwrap_model
from .recipe import batch_generator, mix_batch
from .step import check_model_for_mixing, forward_mixed
from .training_args import MixProTrainingArguments

LEARNABLE_ALPHA_FILE = "mixpro_learnable_alpha.pt"


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
        self.patch_size, image_size = model_geometry(model, args.mix_patch_size)
        self.num_labels = int(unwrap_model(model).config.num_labels)
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
        self.learnable_alpha = learnable_alpha_parameter(self.mix_config, self.args.device)
        self._mix_stats: list[dict[str, torch.Tensor]] = []
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
        self._mix_stats.append(result.stats)
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
            logs.update(mean_mix_stats(self._mix_stats, self.learnable_alpha))
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

    # ------------------------------------------------------------------ optimisation

    def get_decay_parameter_names(self, model: nn.Module) -> list[str]:
        """DeiT's rule (:func:`mixpro_hf.modeling.decay_parameter_names`): no decay on biases, norms, the
        class / distillation / register tokens and the position embeddings."""
        return decay_parameter_names(model)

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
        from transformers.utils import logging

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
            logging.get_logger(__name__).warning(f"model card not written: {err}")

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
