"""``MixProTrainingArguments``: 🤗 ``TrainingArguments`` extended by every MixPro setting (the TRL pattern).

The MixPro fields are inherited from :class:`mixpro_hf.recipe.MixProConfig`, their one declaration, so the
``HfArgumentParser`` flags, their defaults and help, and the model card's settings table all come from there.
Only the two settings of where the Trainer mixes, and ``calibrate``, are declared here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from transformers import TrainingArguments
from transformers.trainer_utils import HubStrategy

from .config_overrides import scheduler_kwargs
from .recipe import MixProConfig


@dataclass
class MixProTrainingArguments(MixProConfig, TrainingArguments):
    """``TrainingArguments`` plus the MixPro settings of :class:`~mixpro_hf.recipe.MixProConfig`.

    ``label_smoothing_factor`` is the Trainer's own field, used for the mixed targets too; its default here is
    the paper's 0.1 (Table 11).
    """

    mix_on: Literal["device", "collator"] = field(
        default="device",
        metadata={
            "help": "Where training batches are mixed: on the model's device in compute_loss (default; exact on "
            "resume) or in the data collator (dataloader workers)."
        },
    )
    mix_patch_size: int | None = field(
        default=None,
        metadata={
            "help": "Mixing grid cell in pixels; default the pixel side of one token of the grid the class token "
            "attends to (ViT/DeiT patch, PVT and CA-Swin last stage, timm patch_embed); needed for CNNs."
        },
    )
    lr_schedule: Literal["lr_scheduler_type", "reference_cosine"] = field(
        default="lr_scheduler_type",
        metadata={
            "help": "Learning-rate schedule: 🤗's, from --lr_scheduler_type, or reference_cosine: the reference "
            "code's timm CosineLRScheduler per step (cosine over all steps including warm-up, warm-up linear from "
            "lr/1000, floor lr/100; mixpro_hf.schedule), which replaces --lr_scheduler_type. Default with --recipe "
            "deit: reference_cosine unless --lr_scheduler_type is given."
        },
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "Replace the run in a non-empty output_dir: its results, figures, checkpoints, weights and "
            "mixpro_hf model card are deleted before training; a file mixpro-train did not write stops the run."
        },
    )
    resume_with_changed_settings: bool = field(
        default=False,
        metadata={
            "help": "With --resume_from_checkpoint: accept settings that differ from the checkpoint's run (learning "
            "rate, schedule, warm-up, seed, batch, MixPro settings, ...); they apply from the checkpoint's step on "
            "(the learning rate is set in the restored optimizer) and mixpro_run.json records them as a new segment. "
            "False: such a resume is refused, naming each changed setting."
        },
    )
    calibrate: bool = field(
        default=False,
        metadata={
            "help": "After training, fit a softmax temperature on the validation logits (temperature scaling, "
            "Guo et al. 2017) and report eval_temperature and the validation/test ECE before and after "
            "(*_ece, *_ece_calibrated) in all_results.json and the model card; top-1 is unchanged."
        },
    )
    logging_nan_inf_filter: bool = field(
        default=False,
        metadata={
            "help": "🤗's stand-in for a NaN/inf training loss (the mean of the earlier ones; a host sync every step). "
            "Off: a non-finite loss stops the run instead (mixpro_hf.divergence), and the eval loss is the real one."
        },
    )
    hub_strategy: HubStrategy | str = field(
        default="end",
        metadata={
            "help": "With push_to_hub: 'end' (the only one supported) pushes once, at the end, with the model card."
        },
    )

    def __post_init__(
        self, method: str | None = None, label_smoothing: float | None = None, maskmix_partner: str | None = None
    ) -> None:
        # a key=value or JSON string, its keys those of the schedule (🤗 keeps other strings: a schedule got them)
        self.lr_scheduler_kwargs = scheduler_kwargs(self.lr_scheduler_kwargs, self.lr_scheduler_type)
        TrainingArguments.__post_init__(self)
        # validates every MixPro setting now, not at the first training step
        MixProConfig.__post_init__(self, method, label_smoothing, maskmix_partner)
        if self.mix_on not in ("device", "collator"):
            raise ValueError(f"mix_on={self.mix_on!r} is not one of device, collator")

    def mixpro_config(self) -> MixProConfig:
        """The :class:`MixProConfig` these arguments describe."""
        return MixProConfig.from_object(self)
