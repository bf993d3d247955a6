"""The flags of ``mixpro-train`` and of the no-Trainer example: :class:`~mixpro_hf.modeling.ModelArguments`,
:class:`~mixpro_hf.data.DataArguments` and :class:`~mixpro_hf.training_args.MixProTrainingArguments`, parsed by
one ``HfArgumentParser`` from the command line or from one JSON file (``mixpro-train args.json``), with the
defaults of a named recipe for every flag the user did not give.

* ``--recipe deit`` (the default from scratch): the paper's Table 11 and the reference code (``fistyee/MixPro``
  ``config.py``/``main.py``, built on the Swin training code): AdamW, lr 1e-3 x total batch / 1024 (the code: 1e-3
  whatever the batch; equal at the paper's 1,024), weight decay 0.05, the code's cosine (``--lr_schedule
  reference_cosine``: timm's ``CosineLRScheduler`` per step, warm-up from lr/1000, floor lr/100), warm-up 20 of 300
  epochs, 300 epochs, no gradient clipping (the code's 5.0 acts after its mixed-precision step, so never), drop path
  0.1 (label smoothing 0.1 and timm's augmentation are the defaults of ``MixProConfig`` and ``DataArguments``).
  ``--model_preset`` adds its family's differences (:mod:`mixpro_hf.presets`).
* ``--recipe none`` (the default with ``--model_name_or_path``): 🤗's ``TrainingArguments`` defaults.
* No data argument: the embedded default job, a small ViT on scikit-learn's digits (:data:`DIGITS_FLAGS`); its
  training flags belong to the ``deit`` recipe, its data flags apply whatever the recipe.

Every explicit flag wins over the recipe, and ``--help`` shows the defaults that apply (see :func:`build_parser`).
"""

from __future__ import annotations

import argparse
import json
import math
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, get_type_hints

from transformers import HfArgumentParser, TrainingArguments

from .data import DataArguments
from .modeling import RECIPE_DROP_PATH_RATE, ModelArguments
from .presets import MODEL_PRESETS
from .recipe import MixProConfig
from .training_args import MixProTrainingArguments

# The embedded default job: a small ViT on the 8x8 digits upscaled x2 to 16x16, patch 4 (a 4x4 grid of 16 tokens;
# mask_scale 2 gives 2x2 MaskMix cells), 60 epochs (benchmarks/results/digits_default_job.json: seeds, top-1,
# wall time on 2 CPU cores). Evaluated and saved a few times, not every epoch; evaluation keeps the whole digit.
DIGITS_MODEL = (
    "image_size=16,patch_size=4,hidden_size=64,num_hidden_layers=3,num_attention_heads=4,intermediate_size=256"
)
DIGITS_FLAGS = {
    "output_dir": "outputs/mixpro-digits",
    "num_train_epochs": "60",
    "per_device_train_batch_size": "64",
    "per_device_eval_batch_size": "128",
    "learning_rate": "3e-3",
    # clipping as the reference config states it (TRAIN.CLIP_GRAD 5.0): a stabiliser for this small job at lr 3e-3
    # (without it, one of seeds 0-4 ended at 89 % test top-1 with the reference cosine)
    "max_grad_norm": "5.0",
    "mask_scale": "2",
    "hflip": "False",
    "auto_augment": "none",
    "random_erasing": "0",
    "crop_scale_min": "0.7",
    "crop_pct": "1.0",
    "logging_steps": "10",
    "eval_strategy": "steps",
    "eval_steps": "0.25",
    "save_strategy": "steps",
    "save_steps": "0.5",
    "save_total_limit": "2",
}
# Recipe "deit": paper Table 11 + the reference code. The code's MIN_LR is 1 % of its BASE_LR (5e-6 at 5e-4 per
# 512 images in config.py; 1e-5 at 1e-3 in main.py), its warm-up 20 of 300 epochs,
# TRAIN.CLIP_GRAD 5.0 (applied after its mixed-precision step: in effect never).
RECIPE_BASE_LR, RECIPE_BASE_BATCH = 1e-3, 1024
RECIPE_MIN_LR_RATE = 0.01
RECIPE_FLAGS = {
    "weight_decay": "0.05",
    "lr_scheduler_type": "cosine_with_min_lr",
    "lr_scheduler_kwargs": json.dumps({"min_lr_rate": RECIPE_MIN_LR_RATE}),
    "warmup_steps": str(20 / 300),  # a float < 1 is a share of the training steps (transformers 5)
    "num_train_epochs": "300",
    "max_grad_norm": "0.0",  # the reference clips after its mixed-precision step: in effect never (as DeiT)
    "lr_schedule": "reference_cosine",
}
RECIPES = ("deit", "none")
STAGES = ("do_train", "do_eval", "do_predict")
# Flags of the 🤗 Trainer alone: the embedded job's values of these belong to the deit recipe.
_TRAINER_ONLY = {f.name for f in fields(TrainingArguments)} - {f.name for f in fields(MixProConfig)} - {"output_dir"}
_MIXPRO_FIELDS = {f.name for f in fields(MixProConfig)} | {"mix_on", "mix_patch_size"}
_DATA_FLAGS = ("dataset_name", "train_dir", "train_file")
_LR_HELP = (
    "AdamW's initial learning rate. Default with --recipe deit: 1e-3 x total batch / 1024 (DeiT's 5e-4 x batch / "
    "512; the reference code sets 1e-3 whatever the batch, the same at its 1,024; total batch = per-device batch "
    "x processes x gradient accumulation); with --recipe none: 🤗's 5e-5."
)
_STAGE_HELP = (
    "{}. None of --do_train/--do_eval/--do_predict given: all three (test metrics when there is a test split); "
    "some given True: exactly those; only False ones given: the others. Without training, --model_name_or_path "
    "names the model to evaluate."
)
_RECIPE_HELP = (
    "Training recipe for every flag not given. deit (default from scratch): paper Table 11 + reference code: "
    "AdamW, lr 1e-3 x total batch / 1024, weight decay 0.05, --lr_schedule reference_cosine (the reference's timm "
    "cosine per step: warm-up from lr/1000, floor lr/100), warm-up 20/300 of training, 300 epochs, no gradient "
    "clipping (max_grad_norm 0), drop path 0.1, label smoothing 0.1, timm augmentation; with --model_preset, its "
    "family's differences; the defaults shown here. none (default with --model_name_or_path): 🤗's "
    "TrainingArguments defaults instead: lr 5e-5, weight decay 0.0, linear schedule, no warm-up, 3 epochs, "
    "max_grad_norm 1.0, the checkpoint's drop path."
)


def _intro() -> str:
    """The text ``--help`` starts with: what the tool does, examples, and where the defaults come from."""
    digits = textwrap.fill(" ".join(f"--{k} {v}" for k, v in DIGITS_FLAGS.items()), 110, initial_indent="  ")
    digits = digits.replace("\n", "\n  ")
    return f"""\
mixpro-train: train a Vision Transformer image classifier with MixPro (MaskMix + Progressive Attention
Labeling, ICLR 2023) through the 🤗 Trainer, in the style of 🤗's run_image_classification.py.

examples:
  mixpro-train                       # embedded job: a small ViT on scikit-learn's digits, offline
  mixpro-train --train_file path/to/train.parquet --test_file path/to/test.parquet --model_size tiny \\
      --config_overrides "image_size=32,patch_size=4" --mask_scale 2 --output_dir outputs/cifar10-mixpro
  mixpro-train --model_name_or_path google/vit-base-patch16-224 --dataset_name uoft-cs/cifar10 \\
      --ignore_mismatched_sizes True      # fine-tuning: 🤗's defaults (--recipe none)
  mixpro-train args.json             # all flags from one JSON file (keys = flag names)

The defaults shown are those of a run from scratch (--recipe deit). With --model_name_or_path the recipe is
none: 🤗's defaults (see --recipe). Without a data argument the embedded digits job also sets, from scratch:
{digits}
(with --model_name_or_path only its data flags, --mask_scale and --output_dir). Flags you give always win.
"""


class MixProArgumentParser(HfArgumentParser):
    """``HfArgumentParser`` over (``ModelArguments``, ``DataArguments``, ``MixProTrainingArguments``) with the
    help of a tool: a description and examples first, the flags in groups (recipe, model, data, MixPro), and the
    inherited 🤗 ``TrainingArguments`` last. Parsing still gives the three dataclasses."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("prog", "mixpro-train")
        kwargs.setdefault("usage", "%(prog)s [args.json | --flag value ...]")
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__((ModelArguments, DataArguments, MixProTrainingArguments), **kwargs)

    def _add_dataclass_arguments(self, dtype: Any) -> None:
        hints = get_type_hints(dtype)
        for title, description, wanted in _groups(dtype):
            group = self.add_argument_group(title, description)
            for field in fields(dtype):
                if field.init and wanted(field.name):
                    field.type = hints[field.name]
                    self._parse_dataclass_field(group, field)

    def format_help(self) -> str:
        """The description and examples first, then the usage line and the flags."""
        return _intro() + "\n" + super().format_help()


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Defaults shown, wider columns."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=36, width=120)


def _groups(dtype: Any) -> list[tuple[str, str | None, Any]]:
    """(title, description, name filter) of the help groups of one dataclass, in display order."""
    if dtype is ModelArguments:
        return [
            ("recipe", None, lambda name: name == "recipe"),
            ("model", "A checkpoint to fine-tune, or a model from scratch.", lambda name: name != "recipe"),
        ]
    if dtype is DataArguments:
        return [("data", "Nothing given: the embedded scikit-learn digits.", lambda name: True)]
    return [
        ("MixPro", "Mixing and labels (MixProConfig).", lambda name: name in _MIXPRO_FIELDS),
        ("🤗 TrainingArguments", "Inherited from transformers.", lambda name: name not in _MIXPRO_FIELDS),
    ]


@dataclass(frozen=True)
class _Context:
    """What decides the defaults: the flags given (typed), the recipe, from scratch or not, the embedded job."""

    given: dict[str, Any]
    recipe: str
    from_scratch: bool
    embedded: bool


def _flag_list(values: dict[str, str]) -> list[str]:
    return [item for key, value in values.items() for item in (f"--{key}", value)]


def _probe(argv: Sequence[str]) -> dict[str, Any]:
    """The flags present in ``argv`` (hyphen and ``--no_`` forms, abbreviations), typed; nothing else."""
    probe = MixProArgumentParser(add_help=False)
    for action in probe._actions:
        action.default = argparse.SUPPRESS
    namespace, _ = probe.parse_known_args(list(argv))
    return vars(namespace)


def _json_file(argv: Sequence[str]) -> Path | None:
    return Path(argv[0]) if len(argv) == 1 and argv[0].endswith(".json") else None


def given_flags(argv: Sequence[str]) -> dict[str, Any]:
    """The flags the user gave, by field name: from the command line, or the keys of the one JSON file."""
    path = _json_file(argv)
    if path is None:
        return _probe(argv)
    if not path.is_file():
        raise FileNotFoundError(f"arguments file {str(path)!r} does not exist")
    try:
        values = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"arguments file {str(path)!r} is not valid JSON: {err}") from err
    if not isinstance(values, dict):
        raise ValueError(f"arguments file {str(path)!r} must hold one JSON object of flag names and values")
    return values


def _context(given: dict[str, Any]) -> _Context:
    from_scratch = not given.get("model_name_or_path")
    recipe = given.get("recipe") or ("deit" if from_scratch else "none")
    if recipe not in RECIPES:
        raise ValueError(f"--recipe must be one of {', '.join(RECIPES)}, got {recipe!r}")
    return _Context(given, recipe, from_scratch, not any(given.get(k) for k in _DATA_FLAGS))


def recipe_defaults(context: _Context) -> dict[str, str]:
    """The default of every flag the recipe and the embedded job set, as command-line strings."""
    defaults = {"output_dir": "outputs/mixpro", "remove_unused_columns": "False", "recipe": context.recipe}
    preset = MODEL_PRESETS.get(str(context.given.get("model_preset")))
    if context.recipe == "deit":
        defaults.update(RECIPE_FLAGS)
        defaults["drop_path_rate"] = str(RECIPE_DROP_PATH_RATE)
        if preset is not None:  # the family's recipe where it differs from DeiT's (mixpro_hf.presets)
            defaults.update(preset.recipe)
        if context.given.get("lr_scheduler_type", "cosine_with_min_lr") != "cosine_with_min_lr":
            del defaults["lr_scheduler_kwargs"]  # min_lr_rate is an argument of cosine_with_min_lr only
        if "lr_scheduler_type" in context.given:  # the user's 🤗 scheduler, not the reference cosine
            del defaults["lr_schedule"]
    elif context.from_scratch:
        defaults["drop_path_rate"] = "0.0"
    if preset is not None:  # the MaskMix cell suits the preset's token grid whatever the recipe
        defaults["mask_scale"] = preset.recipe["mask_scale"]
    if context.embedded:
        defaults.update({k: v for k, v in DIGITS_FLAGS.items() if context.recipe == "deit" or k not in _TRAINER_ONLY})
        if context.from_scratch and preset is None:  # a preset keeps its own architecture on the digits
            defaults["config_overrides"] = DIGITS_MODEL
    return defaults


def build_parser(context: _Context) -> MixProArgumentParser:
    """The parser whose defaults are those that apply in ``context`` (so ``--help`` shows them)."""
    parser = MixProArgumentParser()
    defaults = recipe_defaults(context)
    typed = _probe(_flag_list(defaults))
    actions = {action.dest: action for action in parser._actions if action.option_strings[:1] == [f"--{action.dest}"]}
    if context.recipe == "deit" and "learning_rate" not in defaults:
        actions["learning_rate"].default = argparse.SUPPRESS  # scaled with the total batch after parsing
    actions["learning_rate"].help = _LR_HELP
    actions["recipe"].help = _RECIPE_HELP
    actions["output_dir"].help = "Where the checkpoints, metrics, figures and model card are written."
    actions["dataloader_pin_memory"].help += " Default: True only when torch sees an accelerator."
    for name, what in zip(
        STAGES, ("Train", "Evaluate on the validation split", "Test metrics on the test split"), strict=True
    ):
        actions[name].help = _STAGE_HELP.format(what)
    parser.set_defaults(dataloader_pin_memory=has_accelerator(), **typed)
    return parser


def has_accelerator() -> bool:
    """True when torch sees a GPU-like device (CUDA, MPS, XPU, ...)."""
    import torch

    accelerator = getattr(torch, "accelerator", None)
    if accelerator is not None and hasattr(accelerator, "is_available"):
        return bool(accelerator.is_available())
    return torch.cuda.is_available() or torch.backends.mps.is_available()


def total_batch_size(training_args: TrainingArguments) -> int:
    """Images per optimisation step: per-device batch x processes x gradient accumulation."""
    return (
        training_args.per_device_train_batch_size
        * training_args.gradient_accumulation_steps
        * max(training_args.world_size, 1)
    )


def short_run_logging_steps(logging_steps: float, total_steps: int) -> float:
    """``logging_steps`` for a run of ``total_steps``: at least about 20 logs, so a short run still draws its
    alpha curve (a ratio < 1 is left as it is)."""
    if logging_steps < 1 or total_steps <= 0:
        return logging_steps
    return max(1, min(int(logging_steps), total_steps // 20))


def parse_args(argv: Sequence[str]) -> tuple[ModelArguments, DataArguments, MixProTrainingArguments]:
    """Parse ``argv`` (flags, or one ``args.json``) with the recipe's defaults for every flag not given.

    Also resolved here: the recipe's learning rate (scaled with the total batch), ``--do_train/--do_eval/
    --do_predict`` (none given: all three; some given True: exactly those), pinned memory only with an
    accelerator, more frequent logs for a short ``--max_steps`` run.
    """
    given = given_flags(argv)
    context = _context(given)
    if "-h" in argv or "--help" in argv:  # describe the recipe for the user's data; the intro lists the digits job
        context = _Context(given, context.recipe, context.from_scratch, embedded=False)
    parser = build_parser(context)
    if _json_file(argv) is None:
        namespace, unused = parser.parse_known_args(list(argv))
        if unused:
            raise ValueError(f"Some specified arguments are not used by the HfArgumentParser: {unused}")
        values = vars(namespace)
    else:  # HfArgumentParser's JSON form: the file's values over the defaults that apply
        values = {**vars(parser.parse_args([])), **given}
    model_args, data_args, training_args = parser.parse_dict(values)
    defaults = recipe_defaults(context)
    model_args.recipe = context.recipe
    if context.recipe == "deit" and "learning_rate" not in given and "learning_rate" not in defaults:
        training_args.learning_rate = RECIPE_BASE_LR * total_batch_size(training_args) / RECIPE_BASE_BATCH
    training_args.remove_unused_columns = False
    if "dataloader_pin_memory" not in given and (training_args.use_cpu or not has_accelerator()):
        training_args.dataloader_pin_memory = False  # torch warns at every loader otherwise
    if "logging_steps" not in given and training_args.max_steps > 0:
        training_args.logging_steps = short_run_logging_steps(training_args.logging_steps, training_args.max_steps)
    # Data loader: on a GPU, 8 workers per process (fewer if the CPUs are fewer), kept alive, 4 batches ahead each;
    # the 224² recipe decodes + augments ~100-180 images/s per worker (benchmarks/results/input_pipeline_cpu.json).
    if "dataloader_num_workers" not in given and has_accelerator() and not training_args.use_cpu:
        import os

        per_process = (os.cpu_count() or 1) // max(int(os.environ.get("LOCAL_WORLD_SIZE", "1")), 1)
        training_args.dataloader_num_workers = max(0, min(8, per_process - 1))
    if training_args.dataloader_num_workers > 0:
        if "dataloader_persistent_workers" not in given:
            training_args.dataloader_persistent_workers = True
        if "dataloader_prefetch_factor" not in given:
            training_args.dataloader_prefetch_factor = 4
    _resolve_stages(given, model_args, training_args)
    return model_args, data_args, training_args


def _resolve_stages(given: dict[str, Any], model_args: ModelArguments, training_args: TrainingArguments) -> None:
    """None of ``--do_train/--do_eval/--do_predict`` given: all three (test when there is a test split); some
    given True: exactly those; only False ones given: the others."""
    chosen = {name: bool(given[name]) for name in STAGES if name in given}
    default = not any(chosen.values())
    for name in STAGES:
        setattr(training_args, name, chosen.get(name, default))
    if not any(getattr(training_args, name) for name in STAGES):
        raise ValueError("--do_train, --do_eval and --do_predict are all False: nothing to do")
    if not training_args.do_train:
        if not model_args.model_name_or_path:
            raise ValueError(
                "--do_eval/--do_predict without --do_train evaluate a trained model: pass --model_name_or_path"
            )
        if training_args.push_to_hub:
            raise ValueError("--push_to_hub publishes a trained model: it needs --do_train")


def training_steps(training_args: TrainingArguments, num_train_samples: int) -> int:
    """Rough number of optimisation steps of a run on ``num_train_samples`` examples."""
    if training_args.max_steps > 0:
        return training_args.max_steps
    per_step = training_args.per_device_train_batch_size * max(training_args.world_size, 1)
    batches = math.ceil(num_train_samples / max(per_step, 1))
    return math.ceil(training_args.num_train_epochs * batches / max(training_args.gradient_accumulation_steps, 1))


def recipe_summary(model_args: ModelArguments, training_args: TrainingArguments) -> str:
    """One line: the recipe's name and the effective value of each of its elements, by flag name."""
    source = f"fine-tuning {model_args.model_name_or_path}" if model_args.model_name_or_path else "from scratch"
    drop_path = "checkpoint's" if model_args.drop_path_rate is None else f"{model_args.drop_path_rate:g}"
    scheduler = str(getattr(training_args.lr_scheduler_type, "value", training_args.lr_scheduler_type))
    if training_args.lr_scheduler_kwargs:
        scheduler += f" {json.dumps(training_args.lr_scheduler_kwargs)}"
    if getattr(training_args, "lr_schedule", None) == "reference_cosine":
        scheduler = "(unused: lr_schedule reference_cosine)"
    duration = (
        f"max_steps {training_args.max_steps}"
        if training_args.max_steps > 0
        else f"num_train_epochs {training_args.num_train_epochs:g}"
    )
    return (
        f"recipe {model_args.recipe} ({source}): learning_rate {training_args.learning_rate:.3g} (total batch "
        f"{total_batch_size(training_args)}), weight_decay {training_args.weight_decay:g}, lr_scheduler_type "
        f"{scheduler}, warmup_steps {training_args.warmup_steps:.4g}, {duration}, max_grad_norm "
        f"{training_args.max_grad_norm:g}, drop_path_rate {drop_path}, label_smoothing_factor "
        f"{training_args.label_smoothing_factor:g}"
    )
