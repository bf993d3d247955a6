"""What a training entry point does around the training loop, shared by ``mixpro-train`` and the no-Trainer
example: :func:`prepare` (data, model, every check before the first step), :func:`resolve_checkpoint`,
:func:`save_run_record` and :func:`write_figures`."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel, set_seed
from transformers.trainer_utils import get_last_checkpoint

from .data import DataArguments, attach_transform, load_splits
from .figures import ALPHA_CURVE_FILE, SAMPLES_FILE, plot_alpha_curve, plot_maskmix_samples
from .modeling import ModelArguments, build_model, model_geometry
from .step import check_model_for_mixing
from .training_args import MixProTrainingArguments
from .transforms import build_transforms

RUN_FILE = "mixpro_run.json"


@dataclass
class Prepared:
    """Everything a training loop needs, built from the parsed arguments."""

    model: PreTrainedModel
    processor: Any
    train_set: Any
    eval_set: Any
    test_set: Any | None
    label_names: list[str]
    patch_size: int
    image_size: int


def _processor_image_size(processor: Any) -> int | None:
    size = getattr(processor, "size", None) or {}
    if isinstance(size, dict):
        value = size.get("height") or size.get("shortest_edge")
    else:
        value = getattr(size, "height", None) or getattr(size, "shortest_edge", None)
    return int(value) if value else None


def prepare(model_args: ModelArguments, data_args: DataArguments, training_args: MixProTrainingArguments) -> Prepared:
    """Load and check the data and the model before any training starts (bad input fails here).

    The seed is set before the model is built, so the same ``--seed`` gives the same initial weights.
    """
    data = load_splits(data_args, seed=training_args.seed)
    train_set, eval_set, test_set = data.train, data.validation, data.test
    image_column, label_column, names = data.image_column, data.label_column, data.label_names
    set_seed(training_args.seed)
    model, processor = build_model(model_args, names)
    patch, model_image_size = model_geometry(model, training_args.mix_patch_size)
    image_size = _processor_image_size(processor) or model_image_size
    if image_size is None:
        raise ValueError("the model config and its image processor give no image size")
    check_model_for_mixing(model, training_args.mixpro_config(), patch, image_size)
    train_tf, eval_tf = build_transforms(image_size, processor.image_mean, processor.image_std, data_args)
    train_set = attach_transform(train_set, train_tf, image_column, label_column)
    eval_set = attach_transform(eval_set, eval_tf, image_column, label_column)
    if test_set is not None:
        test_set = attach_transform(test_set, eval_tf, image_column, label_column)
    return Prepared(model, processor, train_set, eval_set, test_set, names, patch, image_size)


def resolve_checkpoint(value: str | None, output_dir: str) -> str | None:
    """``--resume_from_checkpoint``: None, a checkpoint folder, or ``last`` / ``True`` (the newest one)."""
    if value in (None, "", "False", "false"):
        return None
    if value in ("last", "True", "true"):
        last = get_last_checkpoint(output_dir) if Path(output_dir).is_dir() else None
        if last is None:
            raise ValueError(f"--resume_from_checkpoint {value}: no checkpoint-* folder in {output_dir!r}")
        return last
    if not Path(value).is_dir():
        raise ValueError(f"--resume_from_checkpoint {value!r} is not a directory")
    return value


def save_run_record(
    output_dir: Path, model_args: ModelArguments, data_args: DataArguments, training_args: MixProTrainingArguments
) -> None:
    """``mixpro_run.json``: every argument of the run, read by the model card."""
    data = {**asdict(data_args), "uses_embedded_default": data_args.uses_embedded_default}
    record = {"model_args": asdict(model_args), "data_args": data, "training_args": training_args.to_dict()}
    (output_dir / RUN_FILE).write_text(json.dumps(record, indent=2, default=str) + "\n")


def write_figures(
    prepared: Prepared, log_history: list[dict[str, Any]], output_dir: Path, mask_scale: int, seed: int
) -> None:
    """The α/λ curves (Fig. 2a) and MaskMix samples beside their attention maps (Fig. 6)."""
    plot_alpha_curve(log_history, output_dir / ALPHA_CURVE_FILE)
    eval_set, patch, processor = prepared.eval_set, prepared.patch_size, prepared.processor
    samples = torch.stack([eval_set[i]["pixel_values"] for i in range(min(6, len(eval_set)))])
    scale = max(1, min(mask_scale, prepared.image_size // patch // 2))
    plot_maskmix_samples(
        prepared.model,
        samples,
        patch,
        scale,
        output_dir / SAMPLES_FILE,
        processor.image_mean,
        processor.image_std,
        seed=seed,
    )
