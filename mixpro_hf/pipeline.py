"""What a training entry point does around the training loop, shared by ``mixpro-train`` and the no-Trainer
example: :func:`prepare` (data, model, and the :mod:`~mixpro_hf.preflight`: every check before the first step),
:func:`resolve_checkpoint`, :func:`run_recorder` (the run record, :mod:`~mixpro_hf.run_record`), :func:`write_figures`
and :func:`calibrate` (``--calibrate``).

A run's output folder holds one run (:mod:`~mixpro_hf.output_guard`): a lock refuses a second run into it, and a
non-empty ``--output_dir`` is refused unless the run resumes (``--resume_from_checkpoint``, checked against the
checkpoint's ``mixpro_run.json`` by :func:`~mixpro_hf.run_record.check_resume`) or replaces it
(``--overwrite_output_dir``, which deletes only what ``mixpro-train`` writes: :func:`check_output_dir`).
"""

from __future__ import annotations

import functools
import json
import logging
import pickle
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import safe_open
from transformers import AutoConfig, PreTrainedModel, set_seed

from . import output_guard
from .data import DataArguments, attach_transform, load_evaluation_splits, load_splits
from .figures import ALPHA_CURVE_FILE, SAMPLES_FILE, plot_alpha_curve, plot_dataset_maskmix_samples
from .metrics import compute_metrics, expected_calibration_error, fit_temperature
from .modeling import ModelArguments, build_model, model_geometry
from .output_guard import RUN_OUTPUTS, remove_run_outputs, written_by_mixpro
from .preflight import (
    check_evaluation_data,
    check_hub_target,
    check_pickles,
    drop_foreign_auto_map,
    first_line,
    load_refusal,
)
from .recipe import resolved_loss
from .run_record import (
    RESUME_KEYS,
    RUN_FILE,
    RunRecorder,
    check_resume,
    check_resume_matches,
    read_run_record,
    run_differences,
    run_record,
    save_run_record,
)
from .step import check_model_for_mixing
from .streaming import load_streaming_splits
from .trainer import WEIGHT_FILES, MixProTrainer
from .training_args import MixProTrainingArguments
from .transforms import build_transforms, evaluation_processor

logger = logging.getLogger(__name__)

__all__ = [
    "RESUME_KEYS", "RUN_FILE", "RUN_OUTPUTS", "Prepared", "calibrate", "check_hub_target", "check_output_dir",
    "check_resume_matches", "checkpoint_problem", "last_complete_checkpoint", "make_trainer", "num_examples",
    "prepare", "remove_run_outputs", "resolve_checkpoint", "run_differences", "run_record", "run_recorder",
    "save_run_record", "write_figures", "written_by_mixpro",
]  # fmt: skip
CHECKPOINT_NAME = re.compile(r"^checkpoint-(\d+)$")


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
    #: multi-label data (lists of labels): the model has ``problem_type = "multi_label_classification"``
    multi_label: bool = False
    #: A resumed run: the checkpoint's run record, and the settings it changes with consent (applied, recorded).
    previous_record: dict[str, Any] | None = None
    resume_changes: dict[str, Any] = field(default_factory=dict)


def _processor_image_size(processor: Any) -> int | None:
    """The side of the images the processor gives the model: its centre crop when it crops (a saved evaluation
    transform resizes to ``image_size / crop_pct`` first), else its resize."""
    cropped = getattr(processor, "do_center_crop", False) and getattr(processor, "crop_size", None)
    size = (cropped or getattr(processor, "size", None)) or {}
    if isinstance(size, dict):
        value = size.get("height") or size.get("shortest_edge")
    else:
        value = getattr(size, "height", None) or getattr(size, "shortest_edge", None)
    return int(value) if value else None


def prepare(
    model_args: ModelArguments,
    data_args: DataArguments,
    training_args: MixProTrainingArguments,
    checkpoint: str | None = None,
) -> Prepared:
    """Load and check the data and the model before any training starts (the :mod:`~mixpro_hf.preflight`: bad
    input fails here, before anything is written into the output folder).

    First the Hub target, the stages' data and the output folder (:func:`check_output_dir`), before the data is
    loaded; a resumed run's checkpoint files are checked, and its settings against its run record
    (:func:`~mixpro_hf.run_record.check_resume`, ``--resume_with_changed_settings``). The old run of
    ``--overwrite_output_dir`` is deleted last, once every check passed. The seed is set before the model is
    built, so the same ``--seed`` gives the same initial weights.
    """
    check_hub_target(training_args)
    check_evaluation_data(data_args, training_args)
    old_run = check_output_dir(model_args, data_args, training_args, checkpoint)
    if checkpoint is not None:
        check_pickles(checkpoint)
    prepared = _prepare_data_and_model(model_args, data_args, training_args)
    if checkpoint is not None:
        record = run_record(model_args, data_args, training_args, prepared.label_names)
        accept = bool(getattr(training_args, "resume_with_changed_settings", False))
        prepared.resume_changes = check_resume(checkpoint, record, accept_changes=accept)
        prepared.previous_record = read_run_record(Path(checkpoint).expanduser().resolve().parent / RUN_FILE)
    if old_run and training_args.should_save:
        remove_run_outputs(old_run)
    return prepared


def end_process_group() -> None:
    """Destroy the default process group of a distributed run, if there is one, before the interpreter exits.

    Every entry point calls it last (``mixpro-train``, ``mixpro-evaluate``, the no-Trainer example): a gloo process
    group left to the interpreter's shutdown can abort the process ("terminate called without an active exception",
    exit -6) after a successful run, and PyTorch asks for it under NCCL too. A no-op in a single process."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def make_trainer(prepared: Prepared, training_args: MixProTrainingArguments) -> MixProTrainer:
    """The :class:`MixProTrainer` of a prepared run: its model, datasets and processor, the offline metrics."""
    return MixProTrainer(
        model=prepared.model,
        args=training_args,
        train_dataset=prepared.train_set,
        eval_dataset=prepared.eval_set,
        processing_class=prepared.processor,
        compute_metrics=functools.partial(compute_metrics, label_names=prepared.label_names),
    )


def run_recorder(
    prepared: Prepared, model_args: ModelArguments, data_args: DataArguments, training_args: MixProTrainingArguments
) -> RunRecorder:
    """The callback that writes ``mixpro_run.json`` when training begins, from what runs (the optimizer's learning
    rate, the data counts, a new segment for settings a resume changed)."""
    counts = {"train": num_examples(prepared.train_set), "validation": num_examples(prepared.eval_set)}
    if prepared.test_set is not None:
        counts["test"] = num_examples(prepared.test_set)
    settings = run_record(model_args, data_args, training_args, prepared.label_names)
    return RunRecorder(training_args.output_dir, settings, counts, prepared.previous_record, prepared.resume_changes)


def num_examples(dataset: Any) -> int | None:
    """Rows of a map-style dataset; None for a stream (``--streaming``), whose length is unknown."""
    return len(dataset) if hasattr(dataset, "__len__") else None


def _load_stream(model_args: ModelArguments, data_args: DataArguments, training_args: MixProTrainingArguments) -> Any:
    """``--streaming``: :func:`load_streaming_splits`; each rank reads its own part of the stream through
    Accelerate's sharding (``dispatch_batches=False``: by shards when the stream has at least as many as processes,
    else by batches), not through rank 0 reading and sending every batch."""
    if training_args.max_steps <= 0:
        raise ValueError("--streaming needs --max_steps N (a stream has no length to count epochs by)")
    config = training_args.accelerator_config
    if isinstance(config, dict):
        config.setdefault("dispatch_batches", False)
    elif getattr(config, "dispatch_batches", None) is None:
        config.dispatch_batches = False
    return load_streaming_splits(data_args, seed=training_args.seed, load_kwargs=model_args.dataset_kwargs())


def _model_config(model_args: ModelArguments) -> Any:
    source = model_args.config_name or model_args.model_name_or_path
    try:
        return AutoConfig.from_pretrained(source, **model_args.pretrained_kwargs())
    except (OSError, ValueError) as err:
        raise ValueError(f"could not load the config of model {source!r}: {first_line(err)}") from err


def model_label_names(model_args: ModelArguments) -> list[str]:
    """The class names of the model an evaluation-only run evaluates (its config's ``id2label``, by id)."""
    id2label = getattr(_model_config(model_args), "id2label", None) or {}
    return [str(id2label[i]) for i in sorted(id2label, key=int)]


MULTI_LABEL_PROBLEM = "multi_label_classification"


def set_problem_type(model: PreTrainedModel, training_args: MixProTrainingArguments, multi_label: bool) -> None:
    """Resolve ``--loss auto`` into what the run trains with (recorded as such) and give the model the
    ``problem_type`` that makes stock 🤗 code (its own loss, ``pipeline()``) score it as it was evaluated:
    ``"multi_label_classification"`` (BCE, independent sigmoid scores) for multi-label data; single-label models
    keep 🤗's single-label default, also with ``--loss bce`` (top-1 and the reported softmax metrics, as the
    run's evaluation; the ranking of the sigmoid scores is the same)."""
    training_args.loss = resolved_loss(training_args, multi_label)
    if multi_label and getattr(training_args, "calibrate", False):
        raise ValueError(
            "--calibrate fits one softmax temperature (single-label); this data is multi-label (lists of labels): "
            "leave --calibrate off"
        )
    if multi_label:
        model.config.problem_type = MULTI_LABEL_PROBLEM


def _build_model(model_args: ModelArguments, names: list[str]) -> tuple[PreTrainedModel, Any]:
    """:func:`build_model`, with weights that torch refuses to unpickle as one line (:func:`load_refusal`)."""
    try:
        model, processor = build_model(model_args, names)
    except (pickle.UnpicklingError, RuntimeError) as err:
        refusal = load_refusal(model_args.model_name_or_path or "", err)
        if refusal is None:
            raise
        raise refusal from err
    drop_foreign_auto_map(model)
    return model, processor


def _prepare_data_and_model(
    model_args: ModelArguments, data_args: DataArguments, training_args: MixProTrainingArguments
) -> Prepared:
    load_kwargs = model_args.dataset_kwargs()
    if not training_args.do_train:  # evaluation only: the given evaluation data, in the model's label space
        multi = getattr(_model_config(model_args), "problem_type", None) == MULTI_LABEL_PROBLEM
        names = model_label_names(model_args)
        data = load_evaluation_splits(data_args, names, training_args.seed, load_kwargs, multi_label=multi)
    elif data_args.streaming:
        data = _load_stream(model_args, data_args, training_args)
    else:
        data = load_splits(data_args, seed=training_args.seed, load_kwargs=load_kwargs)
    train_set, eval_set, test_set = data.train, data.validation, data.test
    image_column, label_column, names = data.image_column, data.label_column, data.label_names
    set_seed(training_args.seed)
    model, processor = _build_model(model_args, names)
    set_problem_type(model, training_args, data.multi_label)
    patch, model_image_size = model_geometry(model, training_args.mix_patch_size)
    image_size = _processor_image_size(processor) or model_image_size
    if image_size is None:
        raise ValueError("the model config and its image processor give no image size")
    if training_args.do_train:  # a run that trains nothing mixes nothing
        check_model_for_mixing(model, training_args.mixpro_config(), patch, image_size)
    train_tf, eval_tf = build_transforms(image_size, processor.image_mean, processor.image_std, data_args)
    # the processor saved with the model is the evaluation transform (interpolation, resize, crop, mean/std)
    processor = evaluation_processor(image_size, processor.image_mean, processor.image_std, data_args)
    classes = len(names) if data.multi_label else None
    if train_set is not None:
        train_set = attach_transform(train_set, train_tf, image_column, label_column, classes)
    if eval_set is not None:
        eval_set = attach_transform(eval_set, eval_tf, image_column, label_column, classes)
    if test_set is not None:
        test_set = attach_transform(test_set, eval_tf, image_column, label_column, classes)
    for split, dataset in (("validation", eval_set), ("test", test_set)):
        if dataset is not None and not training_args.do_train:
            logger.info("evaluating the model on %d %s images", len(dataset), split)
    return Prepared(model, processor, train_set, eval_set, test_set, names, patch, image_size, data.multi_label)


# ---------------------------------------------------------------------- checks before training


def _run_inputs(model_args: ModelArguments, data_args: DataArguments, checkpoint: str | None) -> list[str]:
    """Local paths a run reads from: the model, the data and the checkpoint."""
    sources = [model_args.model_name_or_path, checkpoint, data_args.dataset_name]
    sources += [data_args.train_dir, data_args.validation_dir, data_args.test_dir, data_args.train_file]
    sources += [data_args.validation_file, data_args.test_file]
    return [s for s in sources if s and Path(s).expanduser().exists()]


def check_output_dir(
    model_args: ModelArguments,
    data_args: DataArguments,
    training_args: MixProTrainingArguments,
    checkpoint: str | None = None,
) -> list[Path]:
    """Check ``--output_dir`` before training (:func:`mixpro_hf.output_guard.check_output_dir`); returns the old
    run's entries ``--overwrite_output_dir`` deletes. An evaluation-only run (``--do_eval``/``--do_predict``
    without ``--do_train``, as in 🤗's scripts) only adds its metrics."""
    return output_guard.check_output_dir(
        training_args.output_dir,
        overwrite=training_args.overwrite_output_dir,
        resuming=checkpoint is not None,
        evaluating_only=not training_args.do_train and (training_args.do_eval or training_args.do_predict),
        inputs=_run_inputs(model_args, data_args, checkpoint),
    )


# ---------------------------------------------------------------------- complete checkpoints


def _weights_problem(path: Path) -> str | None:
    """Why the weights file ``path`` cannot be read (``None`` when its header / index / archive reads)."""
    try:
        if path.name.endswith(".index.json"):
            shards = set(json.loads(path.read_text(encoding="utf-8"))["weight_map"].values())
            return next((p for p in (_weights_problem(path.parent / s) for s in sorted(shards)) if p), None)
        if path.suffix == ".safetensors":
            with safe_open(str(path), framework="pt"):
                return None
        return None if zipfile.is_zipfile(path) else f"{path.name} is not a complete torch archive"
    except Exception as err:  # noqa: BLE001 - any failure to read means the file is unusable
        return f"{path.name} is unreadable ({str(err).splitlines()[0] if str(err) else type(err).__name__})"


def checkpoint_problem(folder: str | Path) -> str | None:
    """Why ``folder`` is not a complete checkpoint, or ``None``: it needs a readable ``trainer_state.json`` (the
    Trainer writes it last) and readable weights (or the sub-folders of a DeepSpeed / FSDP checkpoint)."""
    folder = Path(folder)
    try:
        json.loads((folder / "trainer_state.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        return "no trainer_state.json"
    except (OSError, ValueError):
        return "trainer_state.json is unreadable"
    weights = [folder / name for name in WEIGHT_FILES if (folder / name).is_file()]
    if not weights:
        return None if any(p.is_dir() for p in folder.iterdir()) else "no model weights"
    return next((problem for problem in map(_weights_problem, weights) if problem), None)


def last_complete_checkpoint(output_dir: str | Path) -> tuple[str | None, list[str]]:
    """The newest complete ``checkpoint-N`` of ``output_dir`` (or ``None``) and the newer incomplete ones it
    skipped, each as ``"checkpoint-N (why)"``."""
    out = Path(output_dir)
    found = [(int(m.group(1)), p) for p in out.iterdir() if p.is_dir() and (m := CHECKPOINT_NAME.match(p.name))]
    skipped = []
    for _, folder in sorted(found, reverse=True):
        problem = checkpoint_problem(folder)
        if problem is None:
            return str(folder), skipped
        skipped.append(f"{folder.name} ({problem})")
    return None, skipped


def resolve_checkpoint(value: str | None, output_dir: str) -> str | None:
    """``--resume_from_checkpoint``: None, a checkpoint folder, or ``last`` / ``True`` (the newest complete one,
    logging the incomplete ones it skipped). An incomplete folder is refused with one line."""
    if value in (None, "", "False", "false"):
        return None
    if value in ("last", "True", "true"):
        last, skipped = last_complete_checkpoint(output_dir) if Path(output_dir).is_dir() else (None, [])
        incomplete = f" (incomplete: {', '.join(skipped)})" if skipped else ""
        if last is None:
            raise ValueError(f"--resume_from_checkpoint {value}: no complete checkpoint-* folder in {output_dir!r}"
                             + incomplete)  # fmt: skip
        if skipped:
            logger.warning("--resume_from_checkpoint %s: resuming %s, skipped%s", value, last, incomplete)
        return last
    if not Path(value).is_dir():
        raise ValueError(f"--resume_from_checkpoint {value!r} is not a directory")
    problem = checkpoint_problem(value)
    if problem:
        raise ValueError(f"--resume_from_checkpoint {value!r} is an incomplete checkpoint: {problem}")
    return value


def write_figures(
    prepared: Prepared, log_history: list[dict[str, Any]], output_dir: Path, mask_scale: int, seed: int
) -> None:
    """The α/λ curves (Fig. 2a) and MaskMix samples beside their attention maps (Fig. 6): up to six evaluation
    images of distinct classes, each mixed with an image of another class, titled with the class names."""
    plot_alpha_curve(log_history, output_dir / ALPHA_CURVE_FILE)
    if prepared.multi_label:  # the figure pairs images of distinct classes and titles each with its one class
        logger.info("no %s for multi-label data (its titles name one class per image)", SAMPLES_FILE)
        return
    patch, processor = prepared.patch_size, prepared.processor
    scale = max(1, min(mask_scale, prepared.image_size // patch // 2))
    plot_dataset_maskmix_samples(
        prepared.model,
        prepared.eval_set,
        patch,
        scale,
        output_dir / SAMPLES_FILE,
        processor.image_mean,
        processor.image_std,
        seed=seed,
        label_names=prepared.label_names,
    )


# ---------------------------------------------------------------------- post-hoc calibration


def split_logits(trainer: Any, dataset: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(logits, labels)`` of ``dataset`` from ``trainer.predict`` (the first output when it returns several)."""
    output = trainer.predict(dataset, metric_key_prefix="calibration")
    logits = output.predictions[0] if isinstance(output.predictions, tuple) else output.predictions
    return np.asarray(logits, dtype=np.float64), np.asarray(output.label_ids)


def calibrate(trainer: Any, eval_set: Any, test_set: Any | None = None) -> dict[str, float]:
    """``--calibrate``: post-hoc temperature scaling (Guo et al., 2017) fitted on the validation logits.

    Returns ``eval_temperature`` and, for the validation split (``eval_``) and the test split (``test_``, when
    given), the ECE before and after dividing the logits by the temperature (``*_ece``, ``*_ece_calibrated``).
    Top-1 and top-5 do not change: a positive temperature keeps the order of the logits. The temperature
    minimises the validation NLL, so the validation ECE usually drops; the test ECE may go either way.
    """
    logits, labels = split_logits(trainer, eval_set)
    temperature = fit_temperature(logits, labels)
    metrics = {"eval_temperature": temperature}
    splits = [("eval", logits, labels)]
    if test_set is not None:
        splits.append(("test", *split_logits(trainer, test_set)))
    for prefix, split_logits_, split_labels in splits:
        metrics[f"{prefix}_ece"] = expected_calibration_error(split_logits_, split_labels)
        metrics[f"{prefix}_ece_calibrated"] = expected_calibration_error(split_logits_ / temperature, split_labels)
    logger.info("--calibrate: temperature %.4g fitted on %d validation images", temperature, len(labels))
    return metrics
