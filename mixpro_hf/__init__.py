"""mixpro-hf: MixPro (MaskMix + Progressive Attention Labeling, ICLR 2023) for 🤗 Vision Transformers."""

from .collator import MixProCollator, mix_to_batch, pop_mix
from .labels import (
    attention_lambda,
    mixed_target,
    pal_lambda,
    progressive_factor,
    smooth_one_hot,
    transmix_lambda,
)
from .loss import MixedLoss, mixed_loss
from .mixing import MixOutput, cutmix, maskmix, mixup, unmixed
from .recipe import MIX_METHODS, MixProConfig, label_mode, mix_batch

__version__ = "0.1.0"

__all__ = [
    "MIX_METHODS",
    "MixOutput",
    "MixProCollator",
    "MixProConfig",
    "MixedLoss",
    "attention_lambda",
    "cutmix",
    "label_mode",
    "maskmix",
    "mix_batch",
    "mix_to_batch",
    "mixed_loss",
    "mixed_target",
    "mixup",
    "pal_lambda",
    "pop_mix",
    "progressive_factor",
    "smooth_one_hot",
    "transmix_lambda",
    "unmixed",
]
