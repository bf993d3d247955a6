"""``examples/run_semantic_segmentation.py``: a classification checkpoint (MixPro or any supported family) fine-tuned
for semantic segmentation, in the style of 🤗's script of the same name (MixPro §4.2, Table 3).

    python examples/run_semantic_segmentation.py                          # offline: embedded digits task
    mixpro-train && python examples/run_semantic_segmentation.py --model_name_or_path outputs/mixpro-digits
    python examples/run_semantic_segmentation.py --model_name_or_path CKPT --decoder segmenter \\
        --dataset_name scene_parse_150 --reduce_labels --crop_size 512 --base_size 512 \\
        --eval_scales 0.5,0.75,1.0,1.25,1.5,1.75

A thin script over the library: :mod:`mixpro_hf.segmentation_data` (data, checks, transforms),
:func:`mixpro_hf.segmentation_model` (the model), :class:`mixpro_hf.segmentation_trainer.SegmentationTrainer`
(checkpoints, resume, divergence stop, evaluation), :mod:`mixpro_hf.segmentation_card` (the card). The output folder,
the run record and the resume rules are ``mixpro-train``'s (:mod:`mixpro_hf.output_guard`, :mod:`mixpro_hf.run_record`).

Defaults: the segmentation recipe of MixPro's Table 3 protocol (Segmenter's decoders, run in MMSegmentation) for every
flag not given (:data:`RECIPE_FLAGS`: SGD momentum 0.9, lr 1e-3, poly 0.9 per step to 1e-5, no weight decay, no
warm-up, no clipping, batch 16, 256 epochs; crops 480 of a shorter side 520 x [0.5, 2]: Pascal Context's). Without a
dataset the embedded digits task sets its own (:data:`EMBEDDED_FLAGS`: small images, AdamW, a short run).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers import (
    HfArgumentParser,
    PreTrainedModel,
    ViTConfig,
    ViTForImageClassification,
    ViTImageProcessor,
    set_seed,
)

from . import output_guard
from .arguments import has_accelerator
from .modeling import IMAGENET_MEAN, IMAGENET_STD, ModelArguments
from .output_guard import run_holding_the_lock
from .pipeline import resolve_checkpoint
from .preflight import check_hub_target, check_pickles, first_line
from .run_record import RUN_FILE, RunRecorder, check_resume, read_run_record, run_record
from .segmentation_data import (
    SegmentationDataArguments,
    attach_segmentation_transform,
    dataset_source,
    eval_transform,
    load_segmentation_splits,
    train_transform,
)
from .segmentation_metrics import parse_scales
from .segmentation_trainer import SegmentationTrainer, input_multiple
from .training_args import MixProTrainingArguments
from .transfer import DECODERS, segmentation_model

logger = logging.getLogger("mixpro_hf.segmentation_train")
PROG = "run_semantic_segmentation"
#: The paper's segmentation protocol (MixPro §4.2.1 = TransMix's: DeiT-S + Segmenter's decoders on Pascal Context,
#: MMSegmentation): MMSeg ``configs/_base_/schedules/schedule_160k.py`` (SGD, momentum 0.9, poly power 0.9) with
#: Segmenter's ``segm/config.yml`` / ``segm/optim`` values (lr 1e-3, weight decay 0, poly to min_lr 1e-5 per
#: iteration, no warm-up, no clipping; Pascal Context: 256 epochs at batch 16, about 80k iterations).
RECIPE_FLAGS = {
    "output_dir": "outputs/mixpro-segmentation",
    "optim": "sgd",
    "optim_args": "momentum=0.9",
    "learning_rate": "1e-3",
    "weight_decay": "0.0",
    "lr_scheduler_type": "polynomial",
    "lr_scheduler_kwargs": json.dumps({"power": 0.9, "lr_end": 1e-5}),
    "warmup_steps": "0",
    "max_grad_norm": "0.0",
    "per_device_train_batch_size": "16",
    "num_train_epochs": "256",
    "mix_method": "none",
    "label_smoothing_factor": "0.0",
    "remove_unused_columns": "False",
}
#: The embedded digits task (32 x 32 canvases) runs in a few minutes on a CPU: small crops, AdamW 1e-3 (SGD at 1e-3
#: barely moves a randomly initialised encoder in 20 epochs), 20 epochs of 800 images, evaluated every epoch; no
#: flip (a mirrored digit is another glyph) and no rescale (the digits' size is fixed).
EMBEDDED_FLAGS = {
    "output_dir": "outputs/mixpro-segmentation-digits",
    "crop_size": "32",
    "base_size": "32",
    "scale_range": "1,1",
    "flip_probability": "0.0",
    "optim": "adamw_torch",
    "optim_args": "",
    "learning_rate": "1e-3",
    "weight_decay": "0.0",
    "lr_scheduler_type": "polynomial",
    "num_train_epochs": "20",
    "per_device_train_batch_size": "32",
    "per_device_eval_batch_size": "64",
    "logging_steps": "10",
    "eval_strategy": "epoch",
    "save_strategy": "epoch",
    "save_total_limit": "2",
}
#: Without --model_name_or_path: a randomly initialised ViT of the digits job's width (mixpro_hf.arguments.DIGITS_MODEL)
#: at the canvas size, with 4 blocks (UperNet's pyramid reads four). Said in the log and the card: not pre-trained.
RANDOM_VIT = dict(
    image_size=32, patch_size=4, hidden_size=64, num_hidden_layers=4, num_attention_heads=4, intermediate_size=256
)


@dataclass
class SegmentationModelArguments:
    """The pre-trained checkpoint, the decoder, and how the model is evaluated."""

    model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "Classification checkpoint whose encoder is fine-tuned (a mixpro-train output folder or Hub id: "
            "ViT, DeiT, PVT, CA-Swin). Unset: a randomly initialised small ViT (not pre-trained; said in the card)."
        },
    )
    decoder: str = field(
        default="linear",
        metadata={
            "help": "linear (Segmenter's per-token linear decoder), segmenter (its Mask Transformer) or upernet "
            "(🤗 UperNet over the encoder's feature pyramid)."
        },
    )
    out_indices: str | None = field(
        default=None,
        metadata={
            "help": "Encoder stages the decoder reads, e.g. 0,1,2,3 (0: the embeddings of a ViT/DeiT). Default: the "
            "last block (linear, segmenter); four evenly spaced blocks of a ViT/DeiT, every stage of PVT/CA-Swin "
            "(upernet)."
        },
    )
    eval_scales: str | None = field(
        default=None,
        metadata={
            "help": "Also evaluate multi-scale + flip (MixPro Table 3's '+MS'; Segmenter: 0.5,0.75,1.0,1.25,1.5,1.75): "
            "probabilities averaged over these scales of --base_size and their mirror images; eval_ms_* metrics."
        },
    )
    model_revision: str = field(default="main", metadata={"help": "Branch, tag or commit of the checkpoint."})
    cache_dir: str | None = field(default=None, metadata={"help": "Where downloaded models and datasets are cached."})
    token: str | None = field(
        default=None, repr=False, metadata={"help": "Hub token (default: HF_TOKEN or the saved login); never saved."}
    )
    trust_remote_code: bool = field(
        default=False, metadata={"help": "Run code from the checkpoint's repository (only repositories you trust)."}
    )

    def __post_init__(self) -> None:
        if self.decoder not in DECODERS:
            raise ValueError(f"--decoder {self.decoder!r} is not one of {', '.join(DECODERS)}")
        if self.eval_scales is not None:
            parse_scales(self.eval_scales)
        if self.out_indices is not None:
            self.stages  # noqa: B018  (checked here, before anything runs)

    @property
    def stages(self) -> list[int] | None:
        if self.out_indices is None:
            return None
        try:
            return [int(item) for item in self.out_indices.split(",")]
        except ValueError:
            raise ValueError(f"--out_indices {self.out_indices!r} is not a comma-separated list of integers") from None

    @property
    def scales(self) -> tuple[float, ...] | None:
        return parse_scales(self.eval_scales) if self.eval_scales else None

    pretrained_kwargs = ModelArguments.pretrained_kwargs  # cache, revision, token, remote code: the same fields


def _parser(add_help: bool = True) -> HfArgumentParser:
    dataclasses = (SegmentationModelArguments, SegmentationDataArguments, MixProTrainingArguments)
    formatter = argparse.ArgumentDefaultsHelpFormatter
    return HfArgumentParser(dataclasses, prog=PROG, formatter_class=formatter, add_help=add_help)


def _typed(argv: Sequence[str]) -> dict[str, Any]:
    """The flags present in ``argv`` (abbreviations and ``--no_`` forms resolved), typed, by field name."""
    probe = _parser(add_help=False)
    for action in probe._actions:
        action.default = argparse.SUPPRESS
    namespace, _ = probe.parse_known_args(list(argv))
    return vars(namespace)


def parse_segmentation_args(
    argv: Sequence[str],
) -> tuple[SegmentationModelArguments, SegmentationDataArguments, MixProTrainingArguments]:
    """Parse ``argv`` with :data:`RECIPE_FLAGS` (and, without ``--dataset_name``, :data:`EMBEDDED_FLAGS`) as the
    defaults of every flag not given (``--help`` shows them); bad values are one-line ``ValueError``s."""
    given = set(_typed(argv))
    defaults = dict(RECIPE_FLAGS)
    if "dataset_name" not in given and not {"-h", "--help"} & set(argv):  # --help describes the recipe
        defaults.update(EMBEDDED_FLAGS)
    if "lr_scheduler_type" in given and "lr_scheduler_kwargs" not in given:
        del defaults["lr_scheduler_kwargs"]  # the recipe's power and end belong to its polynomial schedule
    parser = _parser()
    parser.set_defaults(**_typed([item for key, value in defaults.items() for item in (f"--{key}", value)]))
    namespace, unused = parser.parse_known_args(list(argv))
    if unused:
        raise ValueError(f"unknown arguments: {' '.join(unused)}")
    values = vars(namespace)
    model_args, data_args, training_args = parser.parse_dict(values)
    if training_args.mix_method != "none":
        raise ValueError(f"--mix_method {training_args.mix_method}: segmentation fine-tuning mixes nothing (none)")
    if training_args.label_smoothing_factor:
        raise ValueError(
            f"--label_smoothing_factor {training_args.label_smoothing_factor:g}: the loss is the model's own "
            "cross-entropy over the labelled pixels (no smoothing)"
        )
    if training_args.load_best_model_at_end and training_args.metric_for_best_model in (None, "loss", "eval_loss"):
        training_args.metric_for_best_model, training_args.greater_is_better = "mean_iou", True
    training_args.remove_unused_columns = False
    if "dataloader_pin_memory" not in given and (training_args.use_cpu or not has_accelerator()):
        training_args.dataloader_pin_memory = False  # torch warns at every loader otherwise
    if "do_eval" not in given:
        training_args.do_eval = True
    if "do_train" not in given:
        training_args.do_train = True
    if not training_args.do_train:
        raise ValueError("--do_train False: this script fine-tunes; evaluate a saved model with --max_steps 0 instead")
    return model_args, data_args, training_args


def build_segmentation_model(
    model_args: SegmentationModelArguments, label_names: list[str]
) -> tuple[PreTrainedModel, tuple[float, ...], tuple[float, ...], dict[str, list[str]]]:
    """The model (:func:`mixpro_hf.segmentation_model` over the checkpoint, or a random small ViT), the
    normalisation (mean, std) of its encoder, and the loading info (keys left out, new decoder keys)."""
    mean, std = IMAGENET_MEAN, IMAGENET_STD
    source: Any = model_args.model_name_or_path
    if source is None:
        logger.warning(
            "no --model_name_or_path: the encoder is a randomly initialised ViT (%s), not a pre-trained checkpoint. To "
            "transfer a MixPro encoder: mixpro-train (writes outputs/mixpro-digits), then --model_name_or_path "
            "outputs/mixpro-digits",
            ", ".join(f"{k}={v}" for k, v in RANDOM_VIT.items()),
        )
        source = ViTForImageClassification(ViTConfig(**RANDOM_VIT, layer_norm_eps=1e-6, num_labels=2))
    else:
        from transformers import AutoImageProcessor

        try:
            processor = AutoImageProcessor.from_pretrained(source, **model_args.pretrained_kwargs())
            mean, std = tuple(processor.image_mean), tuple(processor.image_std)
        except (OSError, ValueError, AttributeError, TypeError):
            logger.info("%s has no image processor with a mean and std: ImageNet's are used", source)
    try:
        model, info = segmentation_model(
            source,
            decoder=model_args.decoder,
            id2label=dict(enumerate(label_names)),
            output_loading_info=True,
            load_kwargs=model_args.pretrained_kwargs() if isinstance(source, str) else None,
            **({"out_indices": model_args.stages} if model_args.stages else {}),
        )
    except OSError as err:
        raise ValueError(f"could not load model {source!r}: {first_line(err)}") from err
    return model, mean, std, info


def run(argv: Sequence[str]) -> dict[str, Any]:
    """Fine-tune, evaluate, and write the output folder; returns ``all_results.json``'s metrics. The main process holds
    the folder's lock for the whole run; a run that fails before its first step removes what it wrote."""
    model_args, data_args, training_args = parse_segmentation_args(argv)
    from .train import setup_logging as setup

    setup(training_args)
    return run_holding_the_lock(
        training_args.output_dir,
        training_args.should_save,
        lambda trainers: _run(model_args, data_args, training_args, trainers),
    )


def _run(
    model_args: SegmentationModelArguments,
    data_args: SegmentationDataArguments,
    training_args: MixProTrainingArguments,
    trainers: list[SegmentationTrainer],
) -> dict[str, Any]:
    checkpoint = resolve_checkpoint(training_args.resume_from_checkpoint, training_args.output_dir)
    check_hub_target(training_args)
    inputs = [s for s in (model_args.model_name_or_path, checkpoint, dataset_source(data_args)) if s]
    old_run = output_guard.check_output_dir(
        training_args.output_dir,
        overwrite=training_args.overwrite_output_dir,
        resuming=checkpoint is not None,
        evaluating_only=False,
        inputs=[s for s in inputs if Path(s).expanduser().exists()],
    )
    if checkpoint is not None:
        check_pickles(checkpoint)
    splits = load_segmentation_splits(
        data_args, training_args.seed, {"cache_dir": model_args.cache_dir, "token": model_args.token}
    )
    set_seed(training_args.seed)
    model, mean, std, info = build_segmentation_model(model_args, splits.label_names)
    logger.info(
        "%s decoder over %s: %d new decoder tensors; checkpoint tensors left out: %s",
        model_args.decoder,
        model_args.model_name_or_path or "a random ViT",
        len(info["missing_keys"]),
        ", ".join(info["unexpected_keys"]) or "none",
    )
    stride = input_multiple(model)
    if model_args.decoder == "upernet" and data_args.crop_size % stride:  # (linear / segmenter pad their input)
        raise ValueError(
            f"--crop_size {data_args.crop_size}: UperNet's encoder takes sides that are multiples of its stride "
            f"{stride}; use e.g. --crop_size {max(stride, data_args.crop_size // stride * stride)}"
        )
    settings = run_record(model_args, data_args, training_args, splits.label_names)
    previous, changes = None, {}
    if checkpoint is not None:
        previous = read_run_record(Path(checkpoint).expanduser().resolve().parent / RUN_FILE)
        old_decoder = ((previous or {}).get("model_args") or {}).get("decoder")
        if old_decoder not in (None, model_args.decoder):
            raise ValueError(f"--decoder {model_args.decoder}: the checkpoint's run trained the {old_decoder} decoder")
        changes = check_resume(checkpoint, settings, accept_changes=training_args.resume_with_changed_settings)
    if old_run and training_args.should_save:
        output_guard.remove_run_outputs(old_run)
    train_set = attach_segmentation_transform(
        splits.train,
        train_transform(
            data_args.crop_size,
            data_args.base_size,
            mean,
            std,
            scale_range=data_args.scale_bounds,
            flip_probability=data_args.flip_probability,
        ),
        splits.image_column,
        splits.label_column,
        data_args.reduce_labels,
    )
    eval_set = attach_segmentation_transform(
        splits.validation, eval_transform(mean, std), splits.image_column, splits.label_column, data_args.reduce_labels
    )
    push, training_args.push_to_hub = training_args.push_to_hub, False  # pushed once, at the end, with the card
    processor = ViTImageProcessor(do_resize=False, image_mean=list(mean), image_std=list(std))
    trainer = SegmentationTrainer(
        model=model,
        args=training_args,
        train_dataset=train_set,
        eval_dataset=eval_set,
        processing_class=processor,
        label_names=splits.label_names,
        base_size=data_args.base_size,
    )
    trainers.append(trainer)
    counts = {"train": len(train_set), "validation": len(eval_set)}
    trainer.add_callback(RunRecorder(training_args.output_dir, settings, counts, previous, changes))
    trainer.accelerator.wait_for_everyone()
    train_result = trainer.train(resume_from_checkpoint=checkpoint)
    trainer.save_model()
    metrics = {**train_result.metrics, "train_samples": len(train_set)}
    trainer.log_metrics("train", metrics)
    trainer.save_metrics("train", metrics)
    if training_args.do_eval:
        evaluations = [("eval", (1.0,), False)]
        if model_args.scales:
            evaluations.append(("eval_ms", model_args.scales, True))
        for prefix, scales, flip in evaluations:
            split_metrics = trainer.evaluate(metric_key_prefix=prefix, scales=scales, flip=flip)
            split_metrics[f"{prefix}_samples"] = len(eval_set)
            trainer.log_metrics(prefix, split_metrics)
            trainer.save_metrics(prefix, split_metrics)
    trainer.save_state()
    trainer.create_model_card()
    if push:
        training_args.push_to_hub = True
        url = trainer.push_to_hub()
        if trainer.is_world_process_zero():
            print(f"pushed {training_args.output_dir} to {url}")
    if trainer.is_world_process_zero():
        return json.loads((Path(training_args.output_dir) / "all_results.json").read_text())
    return metrics


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point; one line on stderr for bad input found before training (exit 2), a failed save or push
    or a diverged run (exit 1), a SIGTERM that stopped training after a checkpoint (exit 143)."""
    from .train import run_entry_point

    argv = sys.argv[1:] if argv is None else argv
    return run_entry_point(PROG, run, argv, ("mean_iou", "mean_accuracy", "overall_accuracy"))
