"""What a training entry point does around the training loop, shared by ``mixpro-train`` and the no-Trainer
example: :func:`prepare` (data, model, every check before the first step), :func:`resolve_checkpoint`,
:func:`save_run_record`, :func:`write_figures` and :func:`calibrate` (``--calibrate``).

A run's output folder holds one run: a non-empty ``--output_dir`` is refused unless the run resumes
(``--resume_from_checkpoint``, checked against the checkpoint's ``mixpro_run.json`` by :func:`check_resume_matches`)
or replaces it (``--overwrite_output_dir``, which deletes only what ``mixpro-train`` writes: :func:`check_output_dir`).
"""

from __future__ import annotations

import fnmatch
import json
import logging
import re
import shutil
import zipfile
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import safe_open
from transformers import PreTrainedModel, set_seed
from transformers.trainer_utils import HubStrategy

from .data import DataArguments, attach_transform, load_splits
from .figures import ALPHA_CURVE_FILE, SAMPLES_FILE, plot_alpha_curve, plot_dataset_maskmix_samples
from .hub import check_push_target
from .metrics import compute_metrics, expected_calibration_error, fit_temperature
from .model_card import REPLACEABLE
from .modeling import ModelArguments, build_model, model_geometry
from .recipe import MixProConfig
from .step import check_model_for_mixing
from .streaming import load_streaming_splits
from .trainer import STAGING_DIR, WEIGHT_FILES, MixProTrainer
from .training_args import MixProTrainingArguments
from .transforms import build_transforms, evaluation_processor

logger = logging.getLogger(__name__)

RUN_FILE = "mixpro_run.json"
#: What ``mixpro-train`` writes into an output folder (``fnmatch`` patterns), besides a README.md that is its model
#: card: ``--overwrite_output_dir`` deletes exactly these and refuses to touch anything else.
RUN_OUTPUTS = (
    "all_results.json", "*_results.json", "trainer_state.json", RUN_FILE, ALPHA_CURVE_FILE, SAMPLES_FILE,
    "config.json", "preprocessor_config.json", "training_args.bin", "model.safetensors", "model-*.safetensors",
    "model.safetensors.index.json", "pytorch_model*.bin", "pytorch_model.bin.index.json", "checkpoint-*", STAGING_DIR,
    "runs",  # TensorBoard logs (--report_to tensorboard)
)  # fmt: skip
#: The settings of ``mixpro_run.json`` a resumed run must share with the run that wrote its checkpoint
#: (besides ``label_names``): the data, the model and every MixPro setting.
RESUME_KEYS: dict[str, tuple[str, ...]] = {
    "data_args": (
        "dataset_name", "dataset_config_name", "train_dir", "validation_dir", "train_file", "validation_file",
        "test_file", "image_column_name", "label_column_name",
    ),
    "model_args": (
        "model_name_or_path", "model_revision", "config_name", "model_type", "model_size", "config_overrides",
    ),
    "training_args": tuple(f.name for f in fields(MixProConfig)),
}  # fmt: skip
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


def _processor_image_size(processor: Any) -> int | None:
    size = getattr(processor, "size", None) or {}
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
    """Load and check the data and the model before any training starts (bad input fails here).

    First the Hub target (:func:`check_hub_target`) and the output folder (:func:`check_output_dir`), before the
    data is loaded; a resumed run (``checkpoint``) is checked against its checkpoint's run record. The old run of
    ``--overwrite_output_dir`` is deleted last, once every check passed. The seed is set before the model is
    built, so the same ``--seed`` gives the same initial weights.
    """
    check_hub_target(training_args)
    old_run = check_output_dir(model_args, data_args, training_args, checkpoint)
    prepared = _prepare_data_and_model(model_args, data_args, training_args)
    if checkpoint is not None:
        check_resume_matches(checkpoint, run_record(model_args, data_args, training_args, prepared.label_names))
    if old_run and training_args.should_save:
        remove_run_outputs(old_run)
    return prepared


def make_trainer(prepared: Prepared, training_args: MixProTrainingArguments) -> MixProTrainer:
    """The :class:`MixProTrainer` of a prepared run: its model, datasets and processor, the offline metrics."""
    return MixProTrainer(
        model=prepared.model,
        args=training_args,
        train_dataset=prepared.train_set,
        eval_dataset=prepared.eval_set,
        processing_class=prepared.processor,
        compute_metrics=compute_metrics,
    )


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


def _prepare_data_and_model(
    model_args: ModelArguments, data_args: DataArguments, training_args: MixProTrainingArguments
) -> Prepared:
    if data_args.streaming:
        data = _load_stream(model_args, data_args, training_args)
    else:
        data = load_splits(data_args, seed=training_args.seed, load_kwargs=model_args.dataset_kwargs())
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
    # the processor saved with the model is the evaluation transform (interpolation, resize, crop, mean/std)
    processor = evaluation_processor(image_size, processor.image_mean, processor.image_std, data_args)
    train_set = attach_transform(train_set, train_tf, image_column, label_column)
    eval_set = attach_transform(eval_set, eval_tf, image_column, label_column)
    if test_set is not None:
        test_set = attach_transform(test_set, eval_tf, image_column, label_column)
    return Prepared(model, processor, train_set, eval_set, test_set, names, patch, image_size)


# ---------------------------------------------------------------------- checks before training


def check_hub_target(training_args: MixProTrainingArguments) -> None:
    """With ``--push_to_hub``: refuse a ``--hub_strategy`` other than ``end`` and check the repository id, offline
    mode and the token (:func:`mixpro_hf.hub.check_push_target`), so a push cannot fail for these after training."""
    if not training_args.push_to_hub:
        return
    strategy = HubStrategy(training_args.hub_strategy)
    if strategy != HubStrategy.END:
        raise ValueError(
            f"--hub_strategy {strategy.value} is not supported: mixpro-train pushes once, at the end of training, "
            "with the model card (--hub_strategy end)"
        )
    repo_id = training_args.hub_model_id or Path(training_args.output_dir).expanduser().resolve().name
    check_push_target(repo_id, training_args.hub_token)


def _names(paths: list[Path], limit: int = 5) -> str:
    shown = [p.name + ("/" if p.is_dir() else "") for p in paths[:limit]]
    return ", ".join(shown) + (f" and {len(paths) - limit} more" if len(paths) > limit else "")


def written_by_mixpro(path: Path) -> bool:
    """Whether ``path`` (an entry of an output folder) is something ``mixpro-train`` writes (:data:`RUN_OUTPUTS`,
    or a README.md that is a mixpro_hf / 🤗 Trainer model card)."""
    if path.name == "README.md":
        text = path.read_text(encoding="utf-8", errors="replace") if path.is_file() else ""
        return any(mark in text for mark in REPLACEABLE)
    return any(fnmatch.fnmatch(path.name, pattern) for pattern in RUN_OUTPUTS)


def _run_inputs(model_args: ModelArguments, data_args: DataArguments, checkpoint: str | None) -> list[str]:
    """Local paths a run reads from: the model, the data and the checkpoint."""
    sources = [model_args.model_name_or_path, checkpoint, data_args.dataset_name]
    sources += [data_args.train_dir, data_args.validation_dir, data_args.train_file, data_args.validation_file]
    return [s for s in sources + [data_args.test_file] if s and Path(s).expanduser().exists()]


def _inside(path: str, folder: Path) -> bool:
    resolved, root = Path(path).expanduser().resolve(), folder.resolve()
    return resolved == root or root in resolved.parents


def check_output_dir(
    model_args: ModelArguments,
    data_args: DataArguments,
    training_args: MixProTrainingArguments,
    checkpoint: str | None = None,
) -> list[Path]:
    """Check ``--output_dir`` before training; returns the old run's entries ``--overwrite_output_dir`` deletes.

    An empty or new folder is fine; a resumed run (``checkpoint``) continues in its folder, and an evaluation-only
    run (``--do_eval``/``--do_predict`` without ``--do_train``, as in 🤗's scripts) only adds its metrics. Otherwise
    a non-empty folder is refused, naming ``--overwrite_output_dir`` and ``--resume_from_checkpoint``; with
    ``--overwrite_output_dir`` only what :func:`written_by_mixpro` may be deleted (anything else, e.g. a user's own
    README.md, is named and refused), and never an input of this run (the model, the data, the checkpoint)."""
    out = Path(training_args.output_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise ValueError(f"--output_dir {out} is a file, not a folder")
    entries = sorted(out.iterdir()) if out.is_dir() else []
    overwrite = training_args.overwrite_output_dir
    evaluating_only = not training_args.do_train and (training_args.do_eval or training_args.do_predict)
    if not entries or evaluating_only or (checkpoint is not None and not overwrite):
        return []
    if not overwrite:
        raise ValueError(
            f"--output_dir {out} already holds a run ({_names(entries)}): pass --overwrite_output_dir True to "
            "replace it, or --resume_from_checkpoint last to continue it"
        )
    foreign = [p for p in entries if not written_by_mixpro(p)]
    if foreign:
        what = ", ".join(p.name + (" (not a mixpro_hf model card)" if p.name == "README.md" else "") for p in foreign)
        raise ValueError(
            f"--overwrite_output_dir: {out} holds {what}, which mixpro-train did not write and never deletes; move "
            "it away or choose another --output_dir"
        )
    used = [s for s in _run_inputs(model_args, data_args, checkpoint) if _inside(s, out)]
    if used:
        raise ValueError(
            f"--overwrite_output_dir would delete {used[0]}, which this run reads: choose another --output_dir"
        )
    return entries


def remove_run_outputs(paths: list[Path]) -> None:
    """Delete the entries of an old run found by :func:`check_output_dir` (a link is removed, not followed)."""
    for path in paths:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    logger.info("--overwrite_output_dir: removed the previous run's %s", _names(paths))


# ---------------------------------------------------------------------- the run record and resuming


def run_record(
    model_args: ModelArguments,
    data_args: DataArguments,
    training_args: MixProTrainingArguments,
    label_names: list[str] | None = None,
) -> dict[str, Any]:
    """The content of ``mixpro_run.json``: every argument of the run and its class names, as JSON values."""
    data = {**asdict(data_args), "uses_embedded_default": data_args.uses_embedded_default}
    model = {**asdict(model_args), "token": "<TOKEN>" if model_args.token else None}  # never saved
    record: dict[str, Any] = {"model_args": model, "data_args": data}
    record["training_args"] = training_args.to_dict()
    if label_names is not None:
        record["label_names"] = list(label_names)
    return json.loads(json.dumps(record, default=str))


def save_run_record(
    output_dir: Path,
    model_args: ModelArguments,
    data_args: DataArguments,
    training_args: MixProTrainingArguments,
    label_names: list[str] | None = None,
) -> None:
    """``mixpro_run.json`` (:func:`run_record`), written when training starts; read by the model card and by
    :func:`check_resume_matches` when the run is resumed."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    record = run_record(model_args, data_args, training_args, label_names)
    (output_dir / RUN_FILE).write_text(json.dumps(record, indent=2) + "\n")


def _few(names: list[Any], limit: int = 5) -> str:
    shown = ", ".join(map(str, names[:limit])) + (", ..." if len(names) > limit else "")
    return f"{len(names)} classes [{shown}]"


def run_differences(before: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """The :data:`RESUME_KEYS` and class names in which two run records differ, one phrase each (keys that
    ``before`` did not record are not compared)."""
    diffs = []
    for section, keys in RESUME_KEYS.items():
        old, new = before.get(section) or {}, now.get(section) or {}
        for key in keys:
            if key in old and old[key] != new.get(key):
                diffs.append(f"{key}: {old[key]!r} in the checkpoint's run, {new.get(key)!r} now")
    old_names, new_names = before.get("label_names"), now.get("label_names")
    if old_names is not None and new_names is not None and old_names != new_names:
        diffs.append(f"label_names: {_few(old_names)} in the checkpoint's run, {_few(new_names)} now")
    return diffs


def check_resume_matches(checkpoint: str, record: dict[str, Any]) -> None:
    """Refuse to resume ``checkpoint`` when the ``mixpro_run.json`` beside it (its run's record) differs from
    this run's ``record`` (:func:`run_record`) in the data, the model or a MixPro setting; one line says what."""
    path = Path(checkpoint).expanduser().resolve().parent / RUN_FILE
    try:
        before = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        logger.warning("no readable %s beside %s: its run's settings are not checked", path, checkpoint)
        return
    diffs = run_differences(before if isinstance(before, dict) else {}, record)
    if diffs:
        raise ValueError(
            f"--resume_from_checkpoint {checkpoint} belongs to a run with other settings: {'; '.join(diffs)} "
            "(resume with the same settings, or train a new run in another --output_dir)"
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
