"""The flags of ``mixpro-train`` and of the no-Trainer example: :class:`~mixpro_hf.modeling.ModelArguments`,
:class:`~mixpro_hf.data.DataArguments` and :class:`~mixpro_hf.training_args.MixProTrainingArguments`, parsed by
one ``HfArgumentParser``, with the recipe's defaults for every flag the user did not give.

* From scratch (no ``--model_name_or_path``): the paper's recipe (Table 11): AdamW, lr 1e-3 x total batch /
  1024, weight decay 0.05, cosine schedule, warm-up 20/300 of training.
* No data argument: the embedded default job, a small ViT on scikit-learn's digits (:data:`DIGITS_FLAGS`).
* Fine-tuning a checkpoint keeps 🤗's defaults.
"""

from __future__ import annotations

from collections.abc import Sequence

from transformers import HfArgumentParser

from .data import DataArguments
from .modeling import ModelArguments
from .training_args import MixProTrainingArguments

# The embedded default job: a small ViT on 32x32 upscaled digits, about two minutes on 2 CPU cores.
DIGITS_MODEL = (
    "image_size=32,patch_size=4,hidden_size=96,num_hidden_layers=4,num_attention_heads=3,intermediate_size=384"
)
DIGITS_FLAGS = {
    "output_dir": "outputs/mixpro-digits",
    "num_train_epochs": "20",
    "per_device_train_batch_size": "64",
    "per_device_eval_batch_size": "128",
    "learning_rate": "2e-3",
    "mask_scale": "2",
    "hflip": "False",
    "auto_augment": "none",
    "random_erasing": "0",
    "crop_scale_min": "0.6",
    "logging_steps": "10",
    "eval_strategy": "epoch",
    "save_strategy": "epoch",
    "save_total_limit": "2",
}
# Paper Table 11 (from scratch); the learning rate scales with the total batch (see parse_args).
RECIPE_FLAGS = {"weight_decay": "0.05", "lr_scheduler_type": "cosine", "warmup_steps": str(20 / 300)}
RECIPE_BASE_LR, RECIPE_BASE_BATCH = 1e-3, 1024


def _explicit_flags(argv: Sequence[str]) -> set[str]:
    return {arg[2:].split("=", 1)[0] for arg in argv if arg.startswith("--")}


def parse_args(argv: Sequence[str]) -> tuple[ModelArguments, DataArguments, MixProTrainingArguments]:
    """Parse the command line and fill in the recipe defaults for every flag the user did not give."""
    parser = HfArgumentParser((ModelArguments, DataArguments, MixProTrainingArguments))
    explicit = _explicit_flags(argv)
    from_scratch = "model_name_or_path" not in explicit
    defaults: dict[str, str] = {"output_dir": "outputs/mixpro", "remove_unused_columns": "False"}
    if not explicit & {"dataset_name", "train_dir", "train_file"}:
        defaults.update(DIGITS_FLAGS)
        if from_scratch:
            defaults["config_overrides"] = DIGITS_MODEL
    if from_scratch:
        defaults.update(RECIPE_FLAGS)
    given = [item for key, value in defaults.items() if key not in explicit for item in (f"--{key}", value)]
    model_args, data_args, training_args = parser.parse_args_into_dataclasses(args=given + list(argv))
    if from_scratch and "learning_rate" not in explicit | set(defaults):
        total_batch = (
            training_args.per_device_train_batch_size
            * training_args.gradient_accumulation_steps
            * max(training_args.world_size, 1)
        )
        training_args.learning_rate = RECIPE_BASE_LR * total_batch / RECIPE_BASE_BATCH
    training_args.remove_unused_columns = False
    return model_args, data_args, training_args
