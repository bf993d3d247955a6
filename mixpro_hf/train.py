"""``mixpro-train``: image classification with MixPro, in the style of 🤗's ``run_image_classification.py``.

    mixpro-train                                   # embedded default: a small ViT on sklearn digits, MixPro
    mixpro-train --train_file train.parquet --test_file test.parquet --model_type deit --model_size tiny \\
        --config_overrides "image_size=32,patch_size=4" --output_dir outputs/cifar10
    accelerate launch --num_processes 8 -m mixpro_hf.train ...   # multi-GPU

From scratch (no ``--model_name_or_path``) the paper's recipe (Table 11) is the default: AdamW,
lr 1e-3 x batch/1024, weight decay 0.05, cosine schedule with warm-up (20/300 of training), label
smoothing 0.1, RandAugment(9), random erasing 0.25, drop path 0.1 where the family has it. Any flag
given on the command line wins. Fine-tuning keeps the usual 🤗 defaults.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import transformers
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModelForImageClassification,
    HfArgumentParser,
    PreTrainedModel,
    ViTImageProcessor,
)
from transformers.trainer_utils import get_last_checkpoint

from .data import (
    IMAGE_COLUMNS,
    LABEL_COLUMNS,
    DataArguments,
    attach_transform,
    build_transforms,
    ensure_image_feature,
    find_column,
    label_names,
    load_image_datasets,
    split_datasets,
)
from .figures import ALPHA_CURVE_FILE, SAMPLES_FILE, plot_alpha_curve, plot_maskmix_samples
from .metrics import compute_metrics
from .step import check_model_for_mixing
from .trainer import MixProTrainer, model_patch_size
from .training_args import MixProTrainingArguments

logger = logging.getLogger("mixpro_hf.train")

MODEL_TYPES = ("vit", "deit", "beit", "dinov2")
# DeiT sizes of the paper (hidden, layers, heads); MLP ratio 4.
MODEL_SIZES = {"tiny": (192, 12, 3), "small": (384, 12, 6), "base": (768, 12, 12)}
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
RUN_FILE = "mixpro_run.json"

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
    "rand_augment_magnitude": "0",
    "random_erasing": "0",
    "crop_scale_min": "0.6",
    "logging_steps": "10",
    "eval_strategy": "epoch",
    "save_strategy": "epoch",
    "save_total_limit": "2",
}


@dataclass
class ModelArguments:
    """Which model to train: a pretrained checkpoint (fine-tuning) or a fresh one (from scratch)."""

    model_name_or_path: str | None = field(
        default=None, metadata={"help": "Hub id or local checkpoint to fine-tune. Unset: train from scratch."}
    )
    model_type: str = field(
        default="vit", metadata={"help": "Family when training from scratch.", "choices": MODEL_TYPES}
    )
    model_size: str | None = field(
        default=None, metadata={"help": "Paper preset when training from scratch.", "choices": tuple(MODEL_SIZES)}
    )
    config_overrides: str | None = field(
        default=None, metadata={"help": 'From scratch: config overrides, e.g. "image_size=32,patch_size=4".'}
    )
    drop_path_rate: float = field(default=0.1, metadata={"help": "Stochastic depth, where the family has it."})
    attn_implementation: str = field(
        default="sdpa", metadata={"help": "Attention kernel: sdpa, eager, flash_attention_2."}
    )
    image_processor_name: str | None = field(default=None, metadata={"help": "Image processor to load."})
    ignore_mismatched_sizes: bool = field(default=False, metadata={"help": "Allow a new classifier head size."})


def _explicit_flags(argv: Sequence[str]) -> set[str]:
    return {arg[2:].split("=", 1)[0] for arg in argv if arg.startswith("--")}


def _flags(values: dict[str, str], skip: set[str]) -> list[str]:
    return [item for key, value in values.items() if key not in skip for item in (f"--{key}", value)]


def parse_args(argv: Sequence[str]) -> tuple[ModelArguments, DataArguments, MixProTrainingArguments]:
    """Parse the command line and fill in the recipe defaults for every flag the user did not give."""
    parser = HfArgumentParser((ModelArguments, DataArguments, MixProTrainingArguments))
    explicit = _explicit_flags(argv)
    data_given = explicit & {"dataset_name", "train_dir", "train_file"}
    defaults: dict[str, str] = {"output_dir": "outputs/mixpro", "remove_unused_columns": "False"}
    if not data_given:
        defaults.update(DIGITS_FLAGS)
        if "model_name_or_path" not in explicit:
            defaults["config_overrides"] = DIGITS_MODEL
    if "model_name_or_path" not in explicit:
        defaults.update(
            {"weight_decay": "0.05", "lr_scheduler_type": "cosine", "warmup_steps": str(20 / 300),
             "label_smoothing_factor": "0.1"}
        )
    model_args, data_args, training_args = parser.parse_args_into_dataclasses(
        args=_flags(defaults, explicit) + list(argv)
    )
    if "model_name_or_path" not in explicit and "learning_rate" not in explicit | set(defaults):
        total_batch = (
            training_args.per_device_train_batch_size * training_args.gradient_accumulation_steps
            * max(training_args.world_size, 1)
        )
        training_args.learning_rate = 1e-3 * total_batch / 1024
    training_args.remove_unused_columns = False
    return model_args, data_args, training_args


def build_model(model_args: ModelArguments, names: list[str]) -> tuple[PreTrainedModel, Any]:
    """The model and its image processor: loaded for fine-tuning, or configured fresh from scratch."""
    id2label = dict(enumerate(names))
    label2id = {name: i for i, name in id2label.items()}
    if model_args.model_name_or_path:
        try:
            model = AutoModelForImageClassification.from_pretrained(
                model_args.model_name_or_path, num_labels=len(names), id2label=id2label, label2id=label2id,
                ignore_mismatched_sizes=model_args.ignore_mismatched_sizes,
                attn_implementation=model_args.attn_implementation,
            )
            processor = AutoImageProcessor.from_pretrained(
                model_args.image_processor_name or model_args.model_name_or_path
            )
        except OSError as err:
            raise ValueError(f"could not load model {model_args.model_name_or_path!r}: {err}") from err
        return model, processor
    config = AutoConfig.for_model(model_args.model_type)
    if model_args.model_size:
        hidden, layers, heads = MODEL_SIZES[model_args.model_size]
        config.update(dict(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                           intermediate_size=4 * hidden))
    if model_args.config_overrides:
        config.update_from_string(model_args.config_overrides)
    if hasattr(config, "drop_path_rate"):
        config.drop_path_rate = model_args.drop_path_rate
    elif model_args.drop_path_rate > 0:
        logger.warning(
            "model type %r has no drop path (stochastic depth) in 🤗 Transformers: drop_path_rate=%s is ignored",
            config.model_type, model_args.drop_path_rate,
        )
    config.num_labels, config.id2label, config.label2id = len(names), id2label, label2id
    model = AutoModelForImageClassification.from_config(config, attn_implementation=model_args.attn_implementation)
    processor = ViTImageProcessor(
        size={"height": config.image_size, "width": config.image_size}, image_mean=list(IMAGENET_MEAN),
        image_std=list(IMAGENET_STD),
    )
    return model, processor


def _image_size(processor: Any, model: PreTrainedModel) -> int:
    size = getattr(processor, "size", None) or {}
    if isinstance(size, dict):
        value = size.get("height") or size.get("shortest_edge")
    else:
        value = getattr(size, "height", None) or getattr(size, "shortest_edge", None)
    return int(value or model.config.image_size)


def _resolve_checkpoint(value: str | None, output_dir: str) -> str | None:
    if value in (None, "", "False", "false"):
        return None
    if value in ("last", "True", "true"):
        last = get_last_checkpoint(output_dir) if os.path.isdir(output_dir) else None
        if last is None:
            raise ValueError(f"--resume_from_checkpoint {value}: no checkpoint-* folder in {output_dir!r}")
        return last
    if not os.path.isdir(value):
        raise ValueError(f"--resume_from_checkpoint {value!r} is not a directory")
    return value


@dataclass
class Prepared:
    """Everything a training loop needs, built from the parsed arguments (shared by both entry points)."""

    model: PreTrainedModel
    processor: Any
    train_set: Any
    eval_set: Any
    test_set: Any | None
    patch_size: int
    image_size: int


def prepare(model_args: ModelArguments, data_args: DataArguments, training_args: MixProTrainingArguments) -> Prepared:
    """Load and check the data and the model before any training starts (bad input fails here)."""
    raw = load_image_datasets(data_args, seed=training_args.seed)
    train_set, eval_set, test_set = split_datasets(raw, data_args, training_args.seed)
    image_column = find_column(train_set.column_names, data_args.image_column_name, IMAGE_COLUMNS, "image")
    label_column = find_column(train_set.column_names, data_args.label_column_name, LABEL_COLUMNS, "label")
    names = label_names(train_set, label_column)
    train_set, eval_set = (ensure_image_feature(d, image_column) for d in (train_set, eval_set))
    if test_set is not None:
        test_set = ensure_image_feature(test_set, image_column)

    model, processor = build_model(model_args, names)
    image_size = _image_size(processor, model)
    patch = model_patch_size(model, training_args.mix_patch_size)
    check_model_for_mixing(model, training_args.mixpro_config(), patch, image_size)
    train_tf, eval_tf = build_transforms(image_size, processor.image_mean, processor.image_std, data_args)
    train_set = attach_transform(train_set, train_tf, image_column, label_column)
    eval_set = attach_transform(eval_set, eval_tf, image_column, label_column)
    if test_set is not None:
        test_set = attach_transform(test_set, eval_tf, image_column, label_column)
    return Prepared(model, processor, train_set, eval_set, test_set, patch, image_size)


def save_run_record(
    output_dir: Path, model_args: ModelArguments, data_args: DataArguments, training_args: MixProTrainingArguments
) -> None:
    """``mixpro_run.json``: every argument of the run, read by the model card."""
    record = {
        "model_args": asdict(model_args),
        "data_args": asdict(data_args),
        "training_args": {**training_args.to_dict(), "mix_method": training_args.mix_method},
    }
    (output_dir / RUN_FILE).write_text(json.dumps(record, indent=2, default=str) + "\n")


def write_figures(prepared: Prepared, log_history: list[dict[str, Any]], output_dir: Path, mask_scale: int,
                  seed: int) -> None:
    """The α/λ curves (Fig. 2a) and MaskMix samples beside their attention maps (Fig. 6)."""
    plot_alpha_curve(log_history, output_dir / ALPHA_CURVE_FILE)
    eval_set, patch, processor = prepared.eval_set, prepared.patch_size, prepared.processor
    samples = torch.stack([eval_set[i]["pixel_values"] for i in range(min(6, len(eval_set)))])
    scale = max(1, min(mask_scale, prepared.image_size // patch // 2))
    plot_maskmix_samples(prepared.model, samples, patch, scale, output_dir / SAMPLES_FILE, processor.image_mean,
                         processor.image_std, seed=seed)


def run(argv: Sequence[str]) -> dict[str, Any]:
    """Train, evaluate, and write the output directory; returns the final metrics."""
    model_args, data_args, training_args = parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    transformers.utils.logging.set_verbosity_warning()
    prepared = prepare(model_args, data_args, training_args)
    model, processor = prepared.model, prepared.processor
    train_set, eval_set, test_set = prepared.train_set, prepared.eval_set, prepared.test_set

    push = training_args.push_to_hub
    training_args.push_to_hub = False  # pushed at the end with the MixPro card and figures (mixpro_hf.model_card)
    trainer = MixProTrainer(
        model=model, args=training_args, train_dataset=train_set, eval_dataset=eval_set,
        processing_class=processor, compute_metrics=compute_metrics,
    )
    checkpoint = _resolve_checkpoint(training_args.resume_from_checkpoint, training_args.output_dir)
    try:
        train_result = trainer.train(resume_from_checkpoint=checkpoint)
    except KeyboardInterrupt:
        if trainer.state.global_step > 0:
            trainer._save_checkpoint(trainer.model, trial=None)
            print(
                f"\ninterrupted: a complete checkpoint of step {trainer.state.global_step} is in "
                f"{training_args.output_dir}; continue with --resume_from_checkpoint last",
                file=sys.stderr,
            )
        raise

    output_dir = Path(training_args.output_dir)
    trainer.save_model()
    metrics: dict[str, Any] = dict(train_result.metrics)
    metrics["train_samples"] = len(train_set)
    trainer.log_metrics("train", train_result.metrics)
    trainer.save_metrics("train", metrics)
    eval_metrics = trainer.evaluate()
    eval_metrics["eval_samples"] = len(eval_set)
    trainer.log_metrics("eval", eval_metrics)
    trainer.save_metrics("eval", eval_metrics)
    if test_set is not None:
        test_metrics = trainer.evaluate(test_set, metric_key_prefix="test")
        test_metrics["test_samples"] = len(test_set)
        trainer.log_metrics("test", test_metrics)
        trainer.save_metrics("test", test_metrics)
    trainer.save_state()

    if trainer.is_world_process_zero():
        save_run_record(output_dir, model_args, data_args, training_args)
        write_figures(prepared, trainer.state.log_history, output_dir, training_args.mask_scale, training_args.seed)
        from .model_card import push_output_dir, write_model_card

        dataset_name = data_args.dataset_name or ("sklearn-digits" if data_args.uses_embedded_default else None)
        write_model_card(output_dir, dataset_name=dataset_name)
        if push:
            repo_id = training_args.hub_model_id or output_dir.name
            url = push_output_dir(output_dir, repo_id, token=training_args.hub_token, dataset_name=dataset_name)
            print(f"pushed {output_dir} to {url}")
    return json.loads((output_dir / "all_results.json").read_text())


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point; prints a one-line error (exit 2) for bad input found before training."""
    try:
        results = run(sys.argv[1:] if argv is None else argv)
    except KeyboardInterrupt:
        return 130
    except (ValueError, FileNotFoundError) as err:
        print(f"mixpro-train: error: {err}", file=sys.stderr)
        return 2
    summary = {k: v for k, v in results.items() if k.endswith(("accuracy", "ece"))}
    print("final metrics:", json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
