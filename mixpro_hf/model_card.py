"""Hub model cards for MixPro training runs, and publishing a run's output directory to the Hugging Face Hub.

A training output directory (written by the MixPro training script) holds a stock 🤗 Transformers image classifier
(``config.json`` + ``model.safetensors``), its image processor, and a few run records, each of them optional:

* ``all_results.json``   -- flat metrics dict (``eval_accuracy``, ``eval_top5_accuracy``, ``eval_ece``, ``test_*``...)
* ``trainer_state.json`` -- the Trainer's ``log_history`` (MixPro logs ``mixpro/alpha``, ``mixpro/lam_area``, ...)
* ``mixpro_run.json``    -- ``{"model_args": ..., "data_args": ..., "training_args": ...}``
* ``alpha_curve.png`` / ``maskmix_samples.png`` -- figures

:func:`generate_model_card` turns these into a :class:`huggingface_hub.ModelCard` (YAML metadata with a
``model-index`` + a Markdown body rendered from ``mixpro_hf/templates/model_card.md``). Anything missing is reported
as "not recorded"; no number is ever made up. :func:`push_output_dir` uploads the directory (checkpoint, processor,
card, figures -- not intermediate checkpoints or optimizer states) and turns every failure into a single
:class:`PushToHubError` that says why, and how to retry.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shlex
import shutil
import struct
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData
from huggingface_hub.utils import filter_repo_objects

__all__ = [
    "MIXPRO_BIBTEX",
    "NOT_RECORDED",
    "PUSH_IGNORE_PATTERNS",
    "PushToHubError",
    "card_main",
    "files_to_push",
    "generate_model_card",
    "push_output_dir",
    "write_model_card",
]

NOT_RECORDED = "not recorded"
TEMPLATE_PATH = Path(__file__).resolve().parent / "templates" / "model_card.md"
DEFAULT_LICENSE = "apache-2.0"
DEFAULT_COMMIT_MESSAGE = "Upload MixPro model"
HUB_ENDPOINT = "https://huggingface.co"

MIXPRO_BIBTEX = """@inproceedings{zhao2023mixpro,
  title     = {MixPro: Data Augmentation with MaskMix and Progressive Attention Labeling for Vision Transformer},
  author    = {Zhao, Qihao and Huang, Yangyu and Hu, Wei and Zhang, Fan and Liu, Jun},
  booktitle = {International Conference on Learning Representations (ICLR)},
  year      = {2023}
}"""

#: Files of an output directory that are *not* uploaded by :func:`push_output_dir` (``fnmatch`` patterns on the
#: path relative to the output directory; ``*`` also matches ``/``): intermediate Trainer checkpoints, optimizer /
#: scheduler / RNG / scaler states and other pickled training states, caches and experiment-tracker folders.
#: ``pytorch_model*.bin`` weights are kept when the directory has no ``*.safetensors`` weights.
PUSH_IGNORE_PATTERNS: tuple[str, ...] = (
    "checkpoint-*/*",
    "*/checkpoint-*/*",
    "optimizer.pt",
    "scheduler.pt",
    "scaler.pt",
    "rng_state*.pth",
    "training_args.bin",
    "*.pt",
    "*.pth",
    "*.ckpt",
    "*.bin",
    "*.lock",
    ".cache/*",
    "wandb/*",
    "__pycache__/*",
    "*/__pycache__/*",
    ".DS_Store",
)

_BASE_TAGS = ("mixpro", "maskmix", "vision-transformer")

# metric id -> (accepted key suffixes in all_results.json, model-index metric type, human name)
_METRICS: dict[str, tuple[tuple[str, ...], str, str]] = {
    "accuracy": (("accuracy", "top1_accuracy", "top_1_accuracy", "acc1", "top1"), "accuracy", "Top-1 accuracy"),
    "top5_accuracy": (("top5_accuracy", "top_5_accuracy", "acc5", "top5"), "top_5_accuracy", "Top-5 accuracy"),
    "ece": (("ece", "expected_calibration_error"), "ece", "Expected calibration error (ECE)"),
}

_MIX_METHODS = {
    "mixpro": "MixPro: MaskMix (with probability `maskmix_prob`, else Mixup/CutMix) labelled by Progressive "
    "Attention Labeling (area and attention labels blended by α)",
    "maskmix": "MaskMix (with probability `maskmix_prob`, else Mixup/CutMix) with area labels (no attention labeling)",
    "transmix": "TransMix: Mixup/CutMix, CutMix batches labelled with the class-token attention",
    "mixup": "Mixup (global pixel interpolation, area-ratio labels)",
    "cutmix": "CutMix (one rectangle pasted per batch, area-ratio labels)",
    "mixup_cutmix": "Mixup / CutMix (switching between the two per batch, the DeiT default)",
    "none": "no mixing (plain training baseline)",
}

# (label, training argument) -- the MixPro-specific fields written by the training script
_MIXPRO_FIELDS: tuple[tuple[str, str], ...] = (
    ("Mixing method", "mix_method"),
    ("MaskMix probability", "maskmix_prob"),
    ("MaskMix mask scale", "mask_scale"),
    ("Beta", "beta"),
    ("α strategy (Progressive Attention Labeling)", "alpha_strategy"),
    ("α gradient", "alpha_grad"),
    ("Mixup α", "mixup_alpha"),
    ("CutMix α", "cutmix_alpha"),
    ("Mixup/CutMix switch probability", "switch_prob"),
    ("Mix probability", "mix_prob"),
    ("CutMix min/max box ratio", "cutmix_minmax"),
    ("CutMix exact λ (correct_lam)", "correct_lam"),
    ("τ per sample", "tau_per_sample"),
    ("Cells taken (ceil/floor of S·τ)", "cell_count"),
    ("MaskMix partner", "maskmix_partner"),
    ("TransMix label", "transmix_label"),
    ("Loss form", "loss_form"),
    ("Label smoothing", "label_smoothing_factor"),
)
# further training arguments with these prefixes are MixPro extensions, listed after the known ones
_MIXPRO_PREFIXES = ("mixpro_", "maskmix_", "mask_", "mix_", "pal_", "attn_", "alpha_", "mixup_", "cutmix_")


class PushToHubError(RuntimeError):
    """Pushing an output directory to the Hub failed.

    The message says why, that the local output directory is complete and untouched, and the exact command that
    retries the push. Attributes: ``output_dir``, ``repo_id``, ``reason`` and ``retry_command``; the original
    exception is chained as ``__cause__``.
    """

    def __init__(self, message: str, *, output_dir: Path, repo_id: str, reason: str, retry_command: str):
        super().__init__(message)
        self.output_dir = output_dir
        self.repo_id = repo_id
        self.reason = reason
        self.retry_command = retry_command


# ----------------------------------------------------------------------------------------------------------------
# reading a run
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class _Run:
    """Everything read from one output directory (each part may be missing)."""

    output_dir: Path
    config: dict[str, Any]
    results: dict[str, Any] | None = None
    log_history: list[dict[str, Any]] | None = None
    model_args: dict[str, Any] = field(default_factory=dict)
    data_args: dict[str, Any] = field(default_factory=dict)
    training_args: dict[str, Any] = field(default_factory=dict)
    has_run_record: bool = False
    num_parameters: int | None = None
    notes: list[str] = field(default_factory=list)


def _check_output_dir(output_dir: str | os.PathLike[str]) -> Path:
    path = Path(output_dir).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"Output directory not found: {path.resolve()}")
    if not path.is_dir():
        raise NotADirectoryError(f"Not a directory: {path.resolve()} (expected a training output directory)")
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"{path.resolve()} is not a training output directory: {path.resolve() / 'config.json'} is missing "
            "(expected a saved transformers model: config.json + model.safetensors)"
        )
    return path.resolve()


def _read_json(path: Path, notes: list[str]) -> Any | None:
    """JSON content of ``path``, or ``None`` (with a note) when missing or unreadable."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        notes.append(f"`{path.name}` is present but could not be read ({type(err).__name__}); it was ignored.")
        return None


def _count_parameters(output_dir: Path) -> int | None:
    """Number of parameters from the safetensors headers (no weights are loaded), or ``None``."""
    index = output_dir / "model.safetensors.index.json"
    files: list[Path]
    if (output_dir / "model.safetensors").is_file():
        files = [output_dir / "model.safetensors"]
    elif index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            files = [output_dir / name for name in sorted(set(weight_map.values()))]
        except (OSError, ValueError, KeyError, TypeError):
            return None
    else:
        return None
    total = 0
    try:
        for file in files:
            with file.open("rb") as fh:
                (header_len,) = struct.unpack("<Q", fh.read(8))
                if header_len > 100_000_000:
                    return None
                header = json.loads(fh.read(header_len))
            for name, info in header.items():
                if name != "__metadata__":
                    total += math.prod(info["shape"])
    except (OSError, ValueError, KeyError, TypeError, struct.error):
        return None
    return total


def _load_run(output_dir: Path) -> _Run:
    notes: list[str] = []
    config = _read_json(output_dir / "config.json", notes)
    if not isinstance(config, dict):
        raise ValueError(f"{output_dir / 'config.json'} is not a valid model configuration (JSON object expected)")
    run = _Run(output_dir=output_dir, config=config, notes=notes)

    results = _read_json(output_dir / "all_results.json", notes)
    if isinstance(results, dict):
        run.results = results
    elif results is not None:
        notes.append("`all_results.json` is not a JSON object; it was ignored.")

    state = _read_json(output_dir / "trainer_state.json", notes)
    if isinstance(state, dict) and isinstance(state.get("log_history"), list):
        run.log_history = [entry for entry in state["log_history"] if isinstance(entry, dict)]

    record = _read_json(output_dir / "mixpro_run.json", notes)
    if isinstance(record, dict):
        run.has_run_record = True
        for key in ("model_args", "data_args", "training_args"):
            value = record.get(key)
            if isinstance(value, dict):
                setattr(run, key, value)
    run.num_parameters = _count_parameters(output_dir)
    return run


# ----------------------------------------------------------------------------------------------------------------
# formatting helpers
# ----------------------------------------------------------------------------------------------------------------
def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _fmt(value: Any) -> str:
    """Markdown table cell for a recorded value (``not recorded`` for ``None``)."""
    if value is None or value == "":
        return NOT_RECORDED
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, float):
        if not math.isfinite(value):
            return f"`{value}`"
        return f"`{value!r}`"
    if isinstance(value, (dict, list, tuple)):
        text = json.dumps(value, sort_keys=True)
    else:
        text = str(value)
    text = text.replace("|", "\\|").replace("\n", " ").replace("`", "'")
    return f"`{text}`"


def _fmt_metric(value: Any) -> str:
    """Metric value for the results table (rounded for display; the model-index keeps the exact value)."""
    if isinstance(value, bool) or value is None:
        return _fmt(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        if abs(value) >= 1e5:
            return f"{value:.4e}"
        return repr(round(value, 4))
    return _fmt(value)


def _looks_like_hub_id(name: str | None) -> bool:
    """``True`` for ``name`` / ``namespace/name`` ids that are not paths on this machine."""
    if not name or not re.fullmatch(r"[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?", name) or ".." in name:
        return False
    return not Path(name).expanduser().exists()


def _first(mapping: Mapping[str, Any], *keys: str) -> Any:
    for key in keys:
        value = mapping.get(key)
        if value not in (None, "", []):
            return value
    return None


# ----------------------------------------------------------------------------------------------------------------
# card sections
# ----------------------------------------------------------------------------------------------------------------
def _dataset_info(run: _Run, dataset_name: str | None) -> tuple[str | None, str, str, str]:
    """(Hub dataset id or None, model-index dataset type, model-index dataset name, Markdown description)."""
    name = dataset_name or _first(run.data_args, "dataset_name")
    config_name = _first(run.data_args, "dataset_config_name")
    if name:
        suffix = f" (config `{config_name}`)" if config_name else ""
        if _looks_like_hub_id(str(name)):
            return str(name), str(name), str(name), f"[{name}](https://huggingface.co/datasets/{name}){suffix}"
        return None, "imagefolder", f"local dataset {Path(str(name)).name}", f"local dataset `{name}`{suffix}"
    local = [
        f"{key} `{run.data_args[key]}`"
        for key in ("train_dir", "train_file", "validation_dir", "validation_file", "test_dir", "test_file")
        if run.data_args.get(key)
    ]
    if local:
        return None, "imagefolder", "local image files", "local image files (" + ", ".join(local) + ")"
    return None, "imagefolder", "unknown dataset", f"{NOT_RECORDED} (no dataset name or data files recorded)"


def _split_names(run: _Run) -> dict[str, str]:
    validation = _first(run.data_args, "validation_split_name", "eval_split_name", "validation_split") or "validation"
    test = _first(run.data_args, "test_split_name") or "test"
    return {"eval": str(validation), "test": str(test), "train": "train", "predict": str(test)}


def _metric_entries(run: _Run) -> list[tuple[str, str, str, float]]:
    """(split prefix, metric id, all_results key, value) for the metrics that go into the model-index."""
    if not run.results:
        return []
    entries = []
    for prefix in ("eval", "test"):
        for metric_id, (suffixes, _, _) in _METRICS.items():
            for suffix in suffixes:
                key = f"{prefix}_{suffix}"
                if _is_number(run.results.get(key)):
                    entries.append((prefix, metric_id, key, run.results[key]))
                    break
    return entries


def _eval_results(run: _Run, dataset_type: str, dataset_name: str) -> list[EvalResult]:
    splits = _split_names(run)
    config_name = _first(run.data_args, "dataset_config_name")
    results = []
    for prefix, metric_id, _, value in _metric_entries(run):
        _, metric_type, metric_name = _METRICS[metric_id]
        results.append(
            EvalResult(
                task_type="image-classification",
                task_name="Image Classification",
                dataset_type=dataset_type,
                dataset_name=dataset_name,
                dataset_config=str(config_name) if config_name else None,
                dataset_split=splits[prefix],
                metric_type=metric_type,
                metric_name=metric_name,
                metric_value=value,
            )
        )
    return results


def _results_rows(run: _Run) -> list[tuple[str, str, str]]:
    if not run.results:
        return []
    splits = _split_names(run)
    rows = []
    order = {"eval": 0, "test": 1, "train": 2, "predict": 3}
    items = sorted(run.results.items(), key=lambda kv: (order.get(kv[0].split("_", 1)[0], 4), kv[0]))
    for key, value in items:
        prefix, _, rest = key.partition("_")
        if prefix in splits and rest:
            split, metric = splits[prefix], rest
        else:
            split, metric = "run", key
        rows.append((split, f"`{metric}`", _fmt_metric(value)))
    return rows


def _alpha_rows(run: _Run, max_rows: int = 6) -> tuple[list[list[str]], int]:
    entries = [e for e in (run.log_history or []) if _is_number(e.get("mixpro/alpha"))]
    if not entries:
        return [], 0
    if len(entries) <= max_rows:
        picked = entries
    else:
        idx = sorted({round(i * (len(entries) - 1) / (max_rows - 1)) for i in range(max_rows)})
        picked = [entries[i] for i in idx]
    rows = []
    for entry in picked:
        row = [_fmt_metric(entry.get("step")) if entry.get("step") is not None else NOT_RECORDED]
        row.append(_fmt_metric(entry["epoch"]) if _is_number(entry.get("epoch")) else NOT_RECORDED)
        for key in ("mixpro/alpha", "mixpro/lam_area", "mixpro/lam_attn", "mixpro/lam"):
            row.append(_fmt_metric(entry[key]) if _is_number(entry.get(key)) else NOT_RECORDED)
        rows.append(row)
    return rows, len(entries)


def _mixpro_rows(run: _Run) -> list[tuple[str, str, str]]:
    targs = run.training_args
    rows = [(label, key, _fmt(targs.get(key))) for label, key in _MIXPRO_FIELDS]
    known = {key for _, key in _MIXPRO_FIELDS}
    for key in sorted(targs):
        if key not in known and key.startswith(_MIXPRO_PREFIXES):
            rows.append((key, key, _fmt(targs[key])))
    return rows


def _recipe_rows(run: _Run) -> list[tuple[str, str]]:
    t = run.training_args
    optim = t.get("optim")
    if optim is not None:
        extras = [
            f"{name}={t[key]!r}"
            for name, key in (("β1", "adam_beta1"), ("β2", "adam_beta2"), ("ε", "adam_epsilon"))
            if _is_number(t.get(key))
        ]
        optimizer = _fmt(optim) + (f" ({', '.join(extras)})" if extras and "adam" in str(optim).lower() else "")
    else:
        optimizer = NOT_RECORDED
    if t.get("bf16") is True:
        precision = "`bf16`"
    elif t.get("fp16") is True:
        precision = "`fp16`"
    elif "bf16" in t or "fp16" in t:
        precision = "`fp32`"
    else:
        precision = NOT_RECORDED
    rows = [
        ("Optimizer", optimizer),
        ("Learning rate", _fmt(t.get("learning_rate"))),
        ("Learning-rate schedule", _fmt(t.get("lr_scheduler_type"))),
        ("Train batch size (per device)", _fmt(t.get("per_device_train_batch_size"))),
        ("Gradient accumulation steps", _fmt(t.get("gradient_accumulation_steps"))),
        ("Epochs", _fmt(t.get("num_train_epochs"))),
    ]
    if _is_number(t.get("max_steps")) and t["max_steps"] > 0:
        rows.append(("Max steps", _fmt(t["max_steps"])))
    rows += [
        ("Weight decay", _fmt(t.get("weight_decay"))),
        ("Warm-up ratio", _fmt(t.get("warmup_ratio"))),
    ]
    if _is_number(t.get("warmup_steps")) and t["warmup_steps"] > 0:
        rows.append(("Warm-up steps", _fmt(t["warmup_steps"])))
    rows += [
        ("Label smoothing", _fmt(t.get("label_smoothing_factor"))),
        ("Max gradient norm", _fmt(t.get("max_grad_norm"))),
        ("Mixed precision", precision),
        ("Seed", _fmt(t.get("seed"))),
    ]
    return rows


def _model_rows(run: _Run) -> list[tuple[str, str]]:
    c = run.config
    id2label = c.get("id2label") if isinstance(c.get("id2label"), dict) else None
    if id2label:
        names = [str(id2label[k]) for k in sorted(id2label, key=lambda k: int(k) if str(k).isdigit() else 0)]
        shown = ", ".join(names[:20]) + (f", ... ({len(names)} in total)" if len(names) > 20 else "")
        labels = _fmt(shown)
    else:
        labels = NOT_RECORDED
    num_labels = len(id2label) if id2label else c.get("num_labels")
    architectures = c.get("architectures")
    return [
        ("Architecture", _fmt(architectures[0] if isinstance(architectures, list) and architectures else None)),
        ("Model type", _fmt(c.get("model_type"))),
        ("Parameters", f"{run.num_parameters:,}" if run.num_parameters is not None else NOT_RECORDED),
        ("Image size", _fmt(c.get("image_size"))),
        ("Patch size", _fmt(c.get("patch_size"))),
        ("Hidden size", _fmt(c.get("hidden_size"))),
        ("Layers", _fmt(c.get("num_hidden_layers"))),
        ("Attention heads", _fmt(c.get("num_attention_heads"))),
        ("Number of labels", _fmt(num_labels)),
        ("Labels", labels),
        ("Config overrides", _fmt(_first(run.model_args, "config_overrides"))),
    ]


def _data_rows(run: _Run, dataset_name: str | None) -> list[tuple[str, str]]:
    d = run.data_args
    rows = [("Dataset", _fmt(dataset_name or d.get("dataset_name")))]
    rows.append(("Dataset config", _fmt(d.get("dataset_config_name"))))
    for key in ("train_dir", "train_file", "validation_dir", "validation_file", "test_dir", "test_file"):
        if d.get(key):
            rows.append((key, _fmt(d[key])))
    results = run.results or {}
    for key, label in (
        ("train_samples", "Training samples"),
        ("eval_samples", "Evaluation samples"),
        ("test_samples", "Test samples"),
    ):
        rows.append((label, _fmt(results.get(key)) if key in results else NOT_RECORDED))
    return rows


def _limitations(run: _Run, from_scratch: bool | None, has_test: bool) -> list[str]:
    items = []
    seed = run.training_args.get("seed")
    train_samples = (run.results or {}).get("train_samples")
    if from_scratch:
        size = f" on {train_samples:,} training images" if isinstance(train_samples, int) else ""
        items.append(
            "Trained **from scratch** (no pre-training)" + size + ". Vision Transformers are data-hungry: trained "
            "from scratch on small datasets they usually stay well below pre-trained / fine-tuned models, so these "
            "numbers are not comparable with results of ImageNet-pre-trained models."
        )
    elif from_scratch is None:
        items.append("Whether the model was trained from scratch or fine-tuned is not recorded.")
    items.append(
        "All numbers and figures come from a single training run"
        + (f" (seed {seed})" if seed is not None else " (seed not recorded)")
        + "; there is no variance over seeds and no confidence interval."
    )
    if run.results is None:
        items.append("No evaluation results were recorded for this run, so its accuracy is unknown.")
    elif not has_test:
        items.append(
            "No held-out test-split metrics were recorded: the reported metrics are on the validation split, which "
            "may also have been used for model selection during training."
        )
    items.append(
        "The model was not evaluated for robustness to distribution shift, adversarial inputs or fairness; it can "
        "only predict the labels it was trained on and should not be used for high-stakes decisions."
    )
    return items


# ----------------------------------------------------------------------------------------------------------------
# public API
# ----------------------------------------------------------------------------------------------------------------
def generate_model_card(
    output_dir: str | os.PathLike[str],
    *,
    repo_id: str | None = None,
    license: str = DEFAULT_LICENSE,  # noqa: A002 - the Hub metadata field is called "license"
    dataset_name: str | None = None,
    model_name: str | None = None,
    template_path: str | os.PathLike[str] | None = None,
) -> ModelCard:
    """Build the Hub model card of a MixPro training output directory.

    Args:
        output_dir: training output directory (must hold ``config.json``).
        repo_id: Hub repository the model is / will be published to (used in the usage snippets and as model name).
        license: license id for the metadata (default ``apache-2.0``).
        dataset_name: Hub dataset id; overrides ``data_args.dataset_name`` of ``mixpro_run.json``.
        model_name: name in the title and ``model-index`` (default: repository name, else directory name).
        template_path: Jinja2 Markdown template (default: the packaged ``templates/model_card.md``).

    Returns:
        The card (``card.data`` holds the metadata, ``str(card)`` the full ``README.md`` text).

    Raises:
        FileNotFoundError / NotADirectoryError: ``output_dir`` is missing or has no ``config.json``.
    """
    out = _check_output_dir(output_dir)
    run = _load_run(out)
    c, m, t = run.config, run.model_args, run.training_args

    model_type = str(c.get("model_type") or "") or None
    architectures = c.get("architectures")
    architecture = architectures[0] if isinstance(architectures, list) and architectures else "image classifier"
    name = model_name or (repo_id.split("/")[-1] if repo_id else out.name)

    base = _first(m, "model_name_or_path")
    from_scratch: bool | None = (base is None) if run.has_run_record else None
    if base is not None:
        base_hub = str(base) if _looks_like_hub_id(str(base)) else None
        init_text = (
            f"fine-tuned from [{base}](https://huggingface.co/{base})"
            if base_hub
            else f"fine-tuned from the local checkpoint `{base}`"
        )
    else:
        base_hub = None
        init_text = "trained from scratch (randomly initialised)" if from_scratch else NOT_RECORDED

    dataset_id, dataset_type, dataset_index_name, dataset_desc = _dataset_info(run, dataset_name)
    eval_results = _eval_results(run, dataset_type, dataset_index_name)

    tags = list(_BASE_TAGS)
    if model_type:
        tags.append(model_type)
    tags.append("image-classification")
    card_data = ModelCardData(
        library_name="transformers",
        pipeline_tag="image-classification",
        license=license,
        base_model=base_hub,
        datasets=[dataset_id] if dataset_id else None,
        tags=tags,
        model_name=name if eval_results else None,
        eval_results=eval_results or None,
    )

    mix_method = t.get("mix_method")
    if mix_method is None:
        mix_method_text = NOT_RECORDED
    else:
        description = _MIX_METHODS.get(str(mix_method).lower())
        mix_method_text = f"`{mix_method}`" + (f" ({description})" if description else "")
    summary = (
        f"This model is a `{architecture}` image classifier trained with `mixpro_hf` "
        f"(mixing method: {f'`{mix_method}`' if mix_method is not None else NOT_RECORDED}), "
        f"{'from scratch' if from_scratch else 'fine-tuned' if base is not None else 'initialisation not recorded'}"
        + ("; training data not recorded." if dataset_desc.startswith(NOT_RECORDED) else f", on {dataset_desc}.")
    )

    has_test = any(prefix == "test" for prefix, *_ in _metric_entries(run))
    alpha_rows, n_alpha = _alpha_rows(run)
    if run.results is None:
        missing_reason = "no `all_results.json` in the output directory"
    else:
        missing_reason = "`all_results.json` holds no entries"
    notes = list(run.notes)
    if not run.has_run_record:
        notes.append("`mixpro_run.json` is missing: training arguments, data and initialisation are not recorded.")
    if run.log_history is None:
        notes.append("`trainer_state.json` is missing or has no `log_history`: the α schedule is not recorded.")

    template = Path(template_path) if template_path is not None else TEMPLATE_PATH
    return ModelCard.from_template(
        card_data,
        template_path=str(template),
        model_name=name,
        summary=summary,
        mix_method_text=mix_method_text,
        architecture=architecture,
        model_type=model_type or NOT_RECORDED,
        init_text=init_text,
        dataset_text=dataset_desc,
        license_text=f"`{license}`" if license else NOT_RECORDED,
        repo_for_code=repo_id or f"path/to/{out.name}",
        model_rows=_model_rows(run),
        data_rows=_data_rows(run, dataset_name),
        mixpro_rows=_mixpro_rows(run),
        recipe_rows=_recipe_rows(run),
        alpha_figure="alpha_curve.png" if (out / "alpha_curve.png").is_file() else None,
        maskmix_figure="maskmix_samples.png" if (out / "maskmix_samples.png").is_file() else None,
        alpha_rows=alpha_rows,
        alpha_intro=(
            f"α and the label mixing ratios at {len(alpha_rows)} of the {n_alpha} logged steps "
            "(`mixpro/*` entries of `trainer_state.json`):"
        ),
        results_rows=_results_rows(run),
        results_intro="All values from `all_results.json` (rounded to 4 decimals; the metadata keeps exact values):",
        results_missing_reason=missing_reason,
        limitations=_limitations(run, from_scratch, has_test),
        notes=notes,
        bibtex=MIXPRO_BIBTEX,
    )


def write_model_card(output_dir: str | os.PathLike[str], **kwargs: Any) -> Path:
    """Generate the model card of ``output_dir`` (see :func:`generate_model_card`) and write it as ``README.md``.

    Returns:
        Path of the written ``README.md``.
    """
    card = generate_model_card(output_dir, **kwargs)
    path = Path(output_dir).expanduser().resolve() / "README.md"
    _write_text_if_changed(path, str(card))
    return path


def _write_text_if_changed(path: Path, text: str) -> None:
    """Atomically write ``text`` to ``path`` unless it already holds exactly that text."""
    data = text.encode("utf-8")
    if path.is_file() and path.read_bytes() == data:
        return
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def files_to_push(output_dir: str | os.PathLike[str]) -> list[str]:
    """Relative paths (POSIX) of the files :func:`push_output_dir` uploads, besides the regenerated ``README.md``.

    Everything in the directory except :data:`PUSH_IGNORE_PATTERNS` (``pytorch_model*.bin`` weights are kept when
    there are no ``*.safetensors`` weights) and the local ``README.md`` (replaced by the freshly generated card).
    """
    out = _check_output_dir(output_dir)
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    has_safetensors = any(re.fullmatch(r"model.*\.safetensors", f) for f in files)
    kept = set(filter_repo_objects(files, ignore_patterns=list(PUSH_IGNORE_PATTERNS)))
    if not has_safetensors:
        kept |= {f for f in files if re.fullmatch(r"pytorch_model.*\.bin", f)}
    kept.discard("README.md")
    return sorted(kept)


def _retry_command(
    output_dir: Path,
    repo_id: str,
    *,
    token_given: bool,
    private: bool,
    license: str,  # noqa: A002
    dataset_name: str | None,
    commit_message: str,
    endpoint: str | None,
) -> str:
    parts = ["mixpro-card", str(output_dir), "--repo_id", repo_id, "--push"]
    if license != DEFAULT_LICENSE:
        parts += ["--license", license]
    if dataset_name:
        parts += ["--dataset_name", dataset_name]
    if private:
        parts.append("--private")
    if commit_message != DEFAULT_COMMIT_MESSAGE:
        parts += ["--commit_message", commit_message]
    command = shlex.join(parts)
    if token_given:
        command += " --token YOUR_HF_WRITE_TOKEN"  # placeholder: never echo the secret itself
    if endpoint and endpoint.rstrip("/") != HUB_ENDPOINT:
        command = f"HF_ENDPOINT={shlex.quote(endpoint.rstrip('/'))} {command}"
    return command


def _network_error_types() -> tuple[type[BaseException], ...]:
    types: list[type[BaseException]] = [ConnectionError, TimeoutError]
    for module_name, attr in (
        ("httpx2", "TransportError"),
        ("httpx", "TransportError"),
        ("requests", "RequestException"),
    ):
        try:
            module = __import__(module_name)
            types.append(getattr(module, attr))
        except (ImportError, AttributeError):
            pass
    return tuple(types)


def _token_available(token: str | None) -> bool:
    """Whether a Hub token was passed or can be found (``HF_TOKEN``, saved login)."""
    if token:
        return True
    try:
        from huggingface_hub import get_token

        return get_token() is not None
    except Exception:  # token discovery must never hide the real push error
        return True


def _explain_failure(err: BaseException, endpoint: str, repo_id: str, *, token_sent: bool = True) -> str:
    """One-paragraph, human reason for a failed push (``token_sent``: whether any token was available)."""
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    if isinstance(err, OfflineModeIsEnabled):
        return "offline mode is enabled (HF_HUB_OFFLINE=1), so no request was sent; unset HF_HUB_OFFLINE to push."
    if isinstance(err, HfHubHTTPError):
        response = getattr(err, "response", None)
        status = getattr(response, "status_code", None)
        server_message = getattr(err, "server_message", None) or ""
        detail = f" (server said: {server_message.strip()})" if server_message.strip() else ""
        if status == 401 and not token_sent:
            return (
                f"authentication failed: no Hub token was found, and the Hub at {endpoint} requires one to create "
                f"or write '{repo_id}' (HTTP 401 Unauthorized){detail}. Log in with `hf auth login`, set HF_TOKEN, "
                "or pass --token with a write token."
            )
        if status == 401:
            return (
                f"authentication failed: the Hub at {endpoint} refused the token (HTTP 401 Unauthorized){detail}. "
                "Use a valid token with write access: run `hf auth login`, set HF_TOKEN, or pass --token."
            )
        if status == 403:
            return (
                f"permission denied (HTTP 403 Forbidden){detail}: the token was accepted but may not write to "
                f"'{repo_id}' (read-only token, or a namespace you do not belong to)."
            )
        if status == 404:
            return f"not found (HTTP 404){detail}: check the repository id '{repo_id}' and the Hub endpoint {endpoint}."
        if status == 429:
            return f"rate-limited by the Hub (HTTP 429){detail}; wait a little and retry."
        if status is not None and status >= 500:
            return f"the Hub had a server error (HTTP {status}){detail}; it is probably temporary."
        return f"the Hub answered HTTP {status}{detail}: {err}"
    if isinstance(err, _network_error_types()):
        return (
            f"could not connect to the Hub at {endpoint} ({type(err).__name__}: {err}): the server is down or "
            "unreachable, or there is no network connection."
        )
    if isinstance(err, ValueError):
        return f"the request was rejected before upload ({type(err).__name__}: {err})."
    return f"unexpected error ({type(err).__name__}: {err})."


def push_output_dir(
    output_dir: str | os.PathLike[str],
    repo_id: str,
    *,
    token: str | None = None,
    private: bool = False,
    commit_message: str = DEFAULT_COMMIT_MESSAGE,
    license: str = DEFAULT_LICENSE,  # noqa: A002
    dataset_name: str | None = None,
    endpoint: str | None = None,
) -> str:
    """Regenerate the model card of ``output_dir`` and upload the directory to the Hub model repo ``repo_id``.

    Uploads the checkpoint, image processor, run records, figures and the freshly generated ``README.md`` (see
    :func:`files_to_push`; intermediate ``checkpoint-*/`` folders, optimizer states and ``*.pt``/``*.bin`` training
    states are left out) with ``HfApi.create_repo(exist_ok=True)`` + ``HfApi.upload_folder``. The upload goes
    through a temporary staging folder of links, so a failed push never modifies ``output_dir``; after a successful
    push the card is also written to ``output_dir/README.md``. Re-running after a failure is safe: files already on
    the Hub are skipped.

    Args:
        output_dir: training output directory.
        repo_id: ``namespace/name`` of the Hub model repository (created if needed).
        token: Hub token with write access (default: the locally saved token / ``HF_TOKEN``).
        private: create the repository as private (ignored when it already exists).
        commit_message: commit message on the Hub.
        license: license id for the card metadata.
        dataset_name: Hub dataset id for the card (see :func:`generate_model_card`).
        endpoint: Hub endpoint (default: ``HF_ENDPOINT`` / huggingface.co).

    Returns:
        URL of the Hub repository.

    Raises:
        FileNotFoundError / NotADirectoryError: ``output_dir`` is missing, or has no ``config.json`` or weights.
        PushToHubError: the push failed (server down, connection error, token refused, ...).
    """
    from huggingface_hub import constants

    out = _check_output_dir(output_dir)
    if not any(re.fullmatch(r"(model|pytorch_model).*\.(safetensors|bin)", name) for name in files_to_push(out)):
        raise FileNotFoundError(
            f"No model weights in {out} (expected model.safetensors): refusing to push a model without weights"
        )
    card = generate_model_card(out, repo_id=repo_id, license=license, dataset_name=dataset_name)
    card_text = str(card)
    api = HfApi(endpoint=endpoint, token=token)
    resolved_endpoint = (endpoint or constants.ENDPOINT).rstrip("/")

    with tempfile.TemporaryDirectory(prefix="mixpro-push-") as tmp:
        staging = Path(tmp) / out.name
        staging.mkdir()
        for rel in files_to_push(out):
            target = staging / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.symlink(out / rel, target)
            except OSError:  # no symlink support (e.g. some Windows setups): copy instead
                shutil.copy2(out / rel, target)
        (staging / "README.md").write_text(card_text, encoding="utf-8")
        try:
            repo_url = api.create_repo(repo_id, private=private, exist_ok=True)
            api.upload_folder(
                repo_id=repo_id,
                folder_path=staging,
                commit_message=commit_message,
                ignore_patterns=list(PUSH_IGNORE_PATTERNS),
            )
        except Exception as err:
            reason = _explain_failure(err, resolved_endpoint, repo_id, token_sent=_token_available(token))
            retry = _retry_command(
                out,
                repo_id,
                token_given=token is not None,
                private=private,
                license=license,
                dataset_name=dataset_name,
                commit_message=commit_message,
                endpoint=endpoint if endpoint is not None else os.environ.get("HF_ENDPOINT"),
            )
            message = (
                f"Push of {out} to the Hub repository '{repo_id}' ({resolved_endpoint}) failed.\n"
                f"Reason: {reason}\n"
                f"The local output directory is complete and untouched: {out} (the failed push did not modify, "
                "move or delete anything in it).\n"
                "Once the problem is fixed, retry with (files already on the Hub are skipped):\n"
                f"    {retry}"
            )
            raise PushToHubError(message, output_dir=out, repo_id=repo_id, reason=reason, retry_command=retry) from err

    _write_text_if_changed(out / "README.md", card_text)
    return str(repo_url)


def card_main(argv: Sequence[str] | None = None) -> int:
    """``mixpro-card``: regenerate ``OUTPUT_DIR/README.md`` and optionally push the directory to the Hub.

    Returns the exit status: 0 on success, 1 when the push failed, 2 on bad input.
    """
    parser = argparse.ArgumentParser(
        prog="mixpro-card",
        description="Write the Hub model card (README.md) of a MixPro training output directory and optionally "
        "push the directory (checkpoint, processor, card, figures) to the Hugging Face Hub.",
    )
    parser.add_argument("output_dir", help="training output directory (with config.json)")
    parser.add_argument("--repo_id", "--repo-id", dest="repo_id", help="Hub model repository, e.g. user/vit-mixpro")
    parser.add_argument("--push", action="store_true", help="upload the directory to --repo_id")
    parser.add_argument("--token", help="Hub token with write access (default: saved token or HF_TOKEN)")
    parser.add_argument("--license", default=DEFAULT_LICENSE, help=f"license id (default: {DEFAULT_LICENSE})")
    parser.add_argument("--dataset_name", "--dataset-name", dest="dataset_name", help="Hub dataset id for the card")
    parser.add_argument("--private", action="store_true", help="create the repository as private")
    parser.add_argument(
        "--commit_message",
        "--commit-message",
        dest="commit_message",
        default=DEFAULT_COMMIT_MESSAGE,
        help="commit message on the Hub",
    )
    args = parser.parse_args(argv)
    if args.push and not args.repo_id:
        parser.error("--push requires --repo_id")

    try:
        path = write_model_card(
            args.output_dir, repo_id=args.repo_id, license=args.license, dataset_name=args.dataset_name
        )
    except (FileNotFoundError, NotADirectoryError, ValueError) as err:
        print(f"mixpro-card: error: {err}", file=sys.stderr)
        return 2
    print(f"Model card written to {path}")
    if not args.push:
        return 0
    try:
        url = push_output_dir(
            args.output_dir,
            args.repo_id,
            token=args.token,
            private=args.private,
            commit_message=args.commit_message,
            license=args.license,
            dataset_name=args.dataset_name,
        )
    except PushToHubError as err:
        print(f"mixpro-card: error: {err}", file=sys.stderr)
        return 1
    print(f"Pushed {path.parent} to {url}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(card_main())
