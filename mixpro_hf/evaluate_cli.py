"""``mixpro-evaluate``: the robustness evaluation of MixPro §4.3 (Fig. 3, Table 5) for several models at once.

    mixpro-evaluate MODEL [MODEL ...] --dataset DIR_OR_HUB_NAME [--ood_dataset ...] --output_dir OUT

Each model (a local folder or a Hub id: anything ``AutoModelForImageClassification`` loads, timm checkpoints
through ``TimmWrapper``) is evaluated with its own saved image processor on one data set: top-1, top-5, NLL,
ECE (15 bins), Hendrycks' RMS calibration error and AURRA (:func:`mixpro_hf.metrics.robustness_metrics`); with
``--ood_dataset``, out-of-distribution AUPRC / AUROC / FPR@95 (:func:`mixpro_hf.metrics.ood_metrics`); top-1
under random, salient and non-salient patch dropping (:mod:`mixpro_hf.robustness`). The data set's classes are
matched by name or WordNet id onto each model's labels (:func:`mixpro_hf.class_subsets.class_subset`).

Writes ``OUT/<model>__<data set>.json`` per model, ``OUT/results.md`` (one row per model, also printed) and
``OUT/occlusion.png``; ``--update_card`` adds the numbers to each local model's card (model-index). Batched,
with a progress bar, on the CPU or every GPU through Accelerate (``accelerate launch -m mixpro_hf.evaluate_cli``).
A local model or data set never triggers a Hub call. Bad input is one line and exit status 2.
"""

from __future__ import annotations

import json
import platform
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .attention import capture_cls_attention, cls_token_layout, supports_cls_attention
from .class_labels import (
    INTEGER_DTYPES,
    _check_no_missing,
    _is_dtype,
    _label_array,
    encode_string_labels,
    label_names,
)
from .class_subsets import class_subset
from .data import (
    IMAGE_COLUMNS,
    LABEL_COLUMNS,
    TEST_SPLITS,
    VALIDATION_SPLITS,
    DataArguments,
    find_column,
    load_image_datasets,
)
from .images import ensure_image_feature, to_rgb8
from .metrics import ood_metrics, robustness_metrics
from .modeling import model_geometry
from .multi_label import is_multi_label_feature, multi_hot, multi_label_names
from .multi_label_metrics import mean_average_precision, multi_label_metrics
from .preflight import first_line
from .robustness import DROP_RATIOS, OCCLUSION_MODES, attention_priority, occlusion_correct, occlusion_logits
from .streaming import _raw_streams, _stream_label_names
from .write_guard import (
    WriteError,
    WriteFailed,
    atomic_savefig,
    atomic_write_text,
    failure_line,
    reporting_write_failures,
)

__all__ = ["EvaluateArguments", "evaluate_model", "load_classifier", "load_evaluation_data", "main", "markdown_table"]

PROG = "mixpro-evaluate"
RESULTS_TABLE = "results.md"
OCCLUSION_PLOT = "occlusion.png"
MODE_TITLES = {"random": "random", "salient": "salient", "non_salient": "non-salient"}


@dataclass
class EvaluateArguments:
    """Flags of ``mixpro-evaluate`` (the models are positional)."""

    dataset: str = field(
        metadata={"help": "Data set to evaluate on: an image folder (class sub-folders), a data file (Parquet, Arrow, "
                  "CSV/JSON of image paths), a local dataset folder or a Hub dataset name."}
    )  # fmt: skip
    output_dir: str = field(metadata={"help": "Folder for the JSON results, results.md and occlusion.png."})
    dataset_config_name: str | None = field(default=None, metadata={"help": "Configuration of --dataset."})
    split: str | None = field(
        default=None, metadata={"help": "Split of --dataset (default: test, else validation, else train)."}
    )
    ood_dataset: str | None = field(
        default=None,
        metadata={"help": "Out-of-distribution data set (as --dataset; labels ignored): AUPRC (OOD positive, "
                  "anomaly score -max softmax), AUROC and FPR at 95 %% TPR."},
    )  # fmt: skip
    ood_dataset_config_name: str | None = field(default=None, metadata={"help": "Configuration of --ood_dataset."})
    ood_split: str | None = field(
        default=None, metadata={"help": "Split of --ood_dataset (default: test, else validation, else train)."}
    )
    image_column_name: str | None = field(default=None, metadata={"help": "Image column (default: found by name)."})
    label_column_name: str | None = field(default=None, metadata={"help": "Label column (default: found by name)."})
    max_samples: int | None = field(
        default=None,
        metadata={"help": "Evaluate on this many examples of each data set: a seeded draw (of a stream: the first)."},
    )
    streaming: bool = field(
        default=False,
        metadata={"help": "Read Hub data sets as streams (not downloaded first); labels need a ClassLabel."},
    )
    batch_size: int = field(default=64, metadata={"help": "Images per forward pass, per process."})
    num_workers: int = field(default=0, metadata={"help": "Data-loader worker processes."})
    occlusion: bool = field(default=True, metadata={"help": "Measure top-1 under patch dropping (Fig. 3)."})
    occlusion_ratios: list[float] = field(
        default_factory=lambda: list(DROP_RATIOS), metadata={"help": "Shares of the patches dropped."}
    )
    occlusion_repeats: int = field(default=3, metadata={"help": "Random drops per image, averaged."})
    occlusion_patch_size: int | None = field(
        default=None,
        metadata={"help": "Patch size in pixels of the dropping grid (default: the model's config.patch_size)."},
    )
    saliency_model: str | None = field(
        default=None,
        metadata={"help": "Model whose class-token attention ranks the patches for salient / non-salient dropping, "
                  "e.g. facebook/dino-vits16 as in the paper (default: each evaluated model's own attention)."},
    )  # fmt: skip
    seed: int = field(default=0, metadata={"help": "Seed of the random patch drops (the same drops for every model)."})
    update_card: bool = field(
        default=False, metadata={"help": "Add the numbers to each local model's README.md (model-index)."}
    )
    overwrite_output_dir: bool = field(default=False, metadata={"help": "Replace earlier results in --output_dir."})
    cpu: bool = field(default=False, metadata={"help": "Run on the CPU even when a GPU is present."})

    def __post_init__(self) -> None:
        for name in ("batch_size", "occlusion_repeats", "max_samples", "occlusion_patch_size"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"--{name} must be a whole number >= 1, got {value!r}")
        if self.num_workers < 0:
            raise ValueError(f"--num_workers must be >= 0, got {self.num_workers!r}")
        bad = [r for r in self.occlusion_ratios if not 0.0 <= r < 1.0]
        if bad or not self.occlusion_ratios:
            raise ValueError(f"--occlusion_ratios must be shares in [0, 1), got {self.occlusion_ratios!r}")
        self.occlusion_ratios = sorted({float(r) for r in self.occlusion_ratios})


# --------------------------------------------------------------------------------------------------
# loading


def _is_local(name: str) -> bool:
    return Path(name).expanduser().exists()


def _check_hub_id(name: str, kind: str) -> None:
    """Refuse a name that is neither on this machine nor a Hub id (a mistyped path)."""
    from huggingface_hub.utils import validate_repo_id

    try:
        if name.startswith((".", "/", "~")):
            raise ValueError
        validate_repo_id(name)
    except Exception:
        raise ValueError(f"{kind} {name!r} not found: no such folder or file here, and not a Hub id") from None


def load_classifier(name: str, auto_class: Any = None) -> tuple[torch.nn.Module, Any]:
    """``(model, image processor)`` of a local folder (never a Hub call) or a Hub id, the model in eval mode.

    Raises:
        ValueError: one line, for an unknown model, a folder without model or without image processor.
    """
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    auto_class = auto_class or AutoModelForImageClassification
    local = _is_local(name)
    if not local:
        _check_hub_id(name, "model")
    kwargs = {"local_files_only": True} if local else {}
    try:
        model = auto_class.from_pretrained(name, **kwargs)
    except (OSError, ValueError, KeyError) as err:
        raise ValueError(f"could not load model {name!r}: {first_line(err)}") from err
    try:
        processor = AutoImageProcessor.from_pretrained(name, **kwargs)
    except (OSError, ValueError, KeyError) as err:
        raise ValueError(
            f"model {name!r} has no image processor (preprocessor_config.json) to prepare its images: {first_line(err)}"
        ) from err
    return model.eval(), processor


@dataclass
class EvaluationData:
    """One split to evaluate on: rows with an image (and a label), the class names."""

    name: str
    split: str  # the split read; "all" in the records when the data set has no other (an image folder)
    rows: Any  # datasets.Dataset or IterableDataset
    image_column: str
    label_column: str | None
    label_names: list[str] | None
    num_rows: int | None
    only_split: bool = False
    max_label: int | None = None  # integer labels without names: the largest id
    multi_label: bool = False  # the labels are lists of class ids (mixpro_hf.multi_label)

    @property
    def split_label(self) -> str:
        """The split as results name it: ``all`` for a data set of one split (an image folder's ``train``)."""
        return "all" if self.only_split else self.split


def _data_arguments(source: str, config_name: str | None) -> Any:
    if Path(source).expanduser().is_file():
        return DataArguments(train_file=str(Path(source).expanduser()))
    if not _is_local(source):
        _check_hub_id(source, "data set")
    return DataArguments(dataset_name=source, dataset_config_name=config_name)


def _pick_split(splits: Sequence[str], wanted: str | None, source: str) -> str:
    if wanted is not None:
        if wanted not in splits:
            raise ValueError(f"data set {source!r} has no split {wanted!r}; it has {list(splits)}")
        return wanted
    return next((s for s in (*TEST_SPLITS, *VALIDATION_SPLITS, "train") if s in splits), list(splits)[0])


def load_evaluation_data(
    source: str,
    config_name: str | None = None,
    split: str | None = None,
    *,
    with_labels: bool = True,
    image_column_name: str | None = None,
    label_column_name: str | None = None,
    max_samples: int | None = None,
    streaming: bool = False,
) -> EvaluationData:
    """One split of ``source`` through the project's loaders (:func:`mixpro_hf.data.load_image_datasets`; streams
    through :mod:`mixpro_hf.streaming`), its image and label columns found and its labels checked.

    Raises:
        ValueError / FileNotFoundError: one line, for an unknown data set, split or column, or bad labels.
    """
    from datasets import ClassLabel

    args = _data_arguments(source, config_name)
    if streaming:
        splits = _raw_streams(args, {})
    else:
        splits = load_image_datasets(args)
    split = _pick_split(list(splits), split, source)
    rows = splits[split]
    columns = list(rows.column_names or rows.features or [])
    image_column = find_column(columns, image_column_name, IMAGE_COLUMNS, "image")
    label_column = find_column(columns, label_column_name, LABEL_COLUMNS, "label") if with_labels else None
    names = None
    num_rows = max_label = None
    multi_label = label_column is not None and is_multi_label_feature((rows.features or {}).get(label_column))
    if multi_label and streaming:
        raise ValueError(f"data set {source!r} is multi-label (lists of labels): evaluate it without --streaming")
    if streaming:
        if max_samples is not None:
            rows = rows.take(max_samples)
        if label_column is not None:
            names = _stream_label_names(rows.features, label_column, None)
    else:
        if max_samples is not None and max_samples < len(rows):  # a seeded draw: folders are sorted by class
            rows = rows.shuffle(seed=0).select(range(max_samples))
        rows = ensure_image_feature(rows, image_column)
        if multi_label:
            rows, names = multi_label_names(rows, label_column, every_class_positive=False)
        elif label_column is not None:
            rows = encode_string_labels(rows, label_column, split=split)
            if isinstance(rows.features[label_column], ClassLabel):
                names = label_names(rows, label_column)
            else:  # integer ids without names: the model's own label ids, checked against each model in run()
                max_label = _check_integer_labels(rows, label_column, source)
        num_rows = len(rows)
        if num_rows == 0:
            raise ValueError(f"split {split!r} of data set {source!r} has no rows")
    only_split = len(splits) == 1
    return EvaluationData(
        source, split, rows, image_column, label_column, names, num_rows, only_split, max_label, multi_label
    )


def _check_integer_labels(rows: Any, label_column: str, source: str) -> int:
    """The largest id of an integer label column (no names); refuses other types, missing and negative ids."""
    if not _is_dtype(rows.features[label_column], INTEGER_DTYPES):
        raise ValueError(
            f"label column {label_column!r} of data set {source!r} is {rows.features[label_column]}: expected class "
            "names, a ClassLabel or integer ids"
        )
    _check_no_missing(_label_array(rows, label_column), label_column, f" of data set {source!r}")
    ids = np.asarray(rows.with_format("numpy")[label_column])
    if ids.min() < 0:
        raise ValueError(f"label column {label_column!r} of data set {source!r} holds negative ids ({ids.min()})")
    return int(ids.max())


def _collate(
    data: EvaluationData, processors: dict[str, Any]
) -> Callable[[list[dict[str, Any]]], dict[str, torch.Tensor]]:
    """Rows -> ``{key: pixel_values}`` for each processor (8-bit RGB first, :func:`mixpro_hf.images.to_rgb8`),
    and ``labels``."""
    from PIL import Image

    def collate(rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        images = []
        for row in rows:
            image = row[data.image_column]
            image = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image))
            images.append(to_rgb8(image))
        batch = {key: proc(images=images, return_tensors="pt")["pixel_values"] for key, proc in processors.items()}
        if data.multi_label:
            targets = multi_hot([row[data.label_column] for row in rows], len(data.label_names or []))
            batch["labels"] = torch.from_numpy(targets)
        elif data.label_column is not None:
            batch["labels"] = torch.tensor([int(row[data.label_column]) for row in rows])
        return batch

    return collate


# --------------------------------------------------------------------------------------------------
# evaluation


@dataclass
class Saliency:
    """A saliency model for salient / non-salient dropping, with its processor and patch grid."""

    name: str
    model: torch.nn.Module
    processor: Any


def _grid(pixel_values: torch.Tensor, patch: int) -> tuple[int, int]:
    return pixel_values.shape[-2] // patch, pixel_values.shape[-1] // patch


def _class_attention(model: torch.nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
    with capture_cls_attention(model) as capture:
        model(pixel_values=pixel_values)
    return capture.attention


def _saliency_patch(model: torch.nn.Module) -> int:
    return cls_token_layout(model).patch_size[0]


def occlusion_patch_size(name: str, model: torch.nn.Module, args: EvaluateArguments) -> int:
    """The dropping grid's cell: ``--occlusion_patch_size`` or the side of one token of the grid the model's class
    token attends to (:func:`~mixpro_hf.modeling.model_geometry`)."""
    try:
        return model_geometry(model, args.occlusion_patch_size)[0]
    except ValueError as err:
        raise ValueError(
            f"model {name!r}: {err}; for occlusion give --occlusion_patch_size (or --occlusion False)"
        ) from None


def model_class_subset(name: str, model: torch.nn.Module, data: EvaluationData) -> list[int] | None:
    """The model's class ids of the data set's classes (:func:`class_subset`); ``None``: all, in order."""
    if data.label_names is None:
        return None
    id2label = {int(k): str(v) for k, v in model.config.id2label.items()}
    return class_subset(data.label_names, id2label, dataset=repr(data.name), model=f"model {name!r}")


@torch.no_grad()
def evaluate_model(
    name: str,
    model: torch.nn.Module,
    processor: Any,
    data: EvaluationData,
    args: EvaluateArguments,
    accelerator: Any,
    ood: EvaluationData | None = None,
    saliency: Saliency | None = None,
) -> dict[str, Any]:
    """The metrics, out-of-distribution metrics and occlusion curves of one model on ``data``, as a JSON record."""
    from tqdm.auto import tqdm

    subset = model_class_subset(name, model, data)
    columns = torch.tensor(subset, device=accelerator.device) if subset is not None else None
    patch = None
    notes: list[str] = []
    saliency_source = None
    if args.occlusion:
        patch = occlusion_patch_size(name, model, args)
        if saliency is not None:
            saliency_source = saliency.name
        elif supports_cls_attention(model):
            saliency_source = "own class-token attention (last block, mean over heads)"
        else:
            notes.append("no class-token attention to rank patches by: salient / non-salient dropping left out")
    model = model.to(accelerator.device)
    processors = {"pixel_values": processor}
    if saliency is not None and patch is not None:
        processors["saliency_pixel_values"] = saliency.processor
        saliency.model.to(accelerator.device).eval()
    loader = torch.utils.data.DataLoader(
        data.rows, batch_size=args.batch_size, collate_fn=_collate(data, processors), num_workers=args.num_workers
    )
    loader = accelerator.prepare(loader)
    generator = torch.Generator().manual_seed(args.seed + accelerator.process_index)
    logits_parts, label_parts = [], []
    occlusion_parts: dict[str, list[torch.Tensor]] = {}
    progress = tqdm(loader, desc=f"{name} on {data.name}", disable=not accelerator.is_local_main_process)
    for batch in progress:
        pixel_values, labels = batch["pixel_values"], batch["labels"]
        attention = None
        if saliency_source is not None and saliency is None:
            with capture_cls_attention(model) as capture:
                logits = model(pixel_values=pixel_values).logits
            attention = capture.attention
        else:
            logits = model(pixel_values=pixel_values).logits
        logits = (logits if columns is None else logits[:, columns]).float()
        if not data.multi_label and (labels.max() >= logits.shape[1] or labels.min() < 0):
            raise ValueError(
                f"data set {data.name!r} has label ids outside the {logits.shape[1]} classes of model {name!r}"
            )
        per_image = {}
        if patch is not None:
            grid = _grid(pixel_values, patch)
            if saliency is not None:
                saliency_values = batch["saliency_pixel_values"]
                source_attention = _class_attention(saliency.model, saliency_values)
                attention = attention_priority(
                    source_attention, _grid(saliency_values, _saliency_patch(saliency.model)), grid
                )
            drops = dict(saliency=attention, repeats=args.occlusion_repeats, generator=generator, columns=columns)
            if data.multi_label:  # the logits of every drop: mAP is a metric of the whole set
                per_image = occlusion_logits(model, pixel_values, patch, args.occlusion_ratios, **drops)
            else:
                clean = logits.argmax(1) == labels
                per_image = occlusion_correct(
                    model, pixel_values, labels, patch, args.occlusion_ratios, clean_correct=clean, **drops
                )
        gathered = accelerator.gather_for_metrics((logits, labels, per_image))
        logits_parts.append(gathered[0].cpu())
        label_parts.append(gathered[1].cpu())
        for mode, values in gathered[2].items():
            occlusion_parts.setdefault(mode, []).append(values.cpu())
    logits_all = torch.cat(logits_parts).double().numpy()
    labels_all = torch.cat(label_parts).numpy()
    record: dict[str, Any] = {
        "model": name,
        "dataset": data.name,
        "split": data.split_label,
        "num_examples": int(len(labels_all)),
        "class_subset": None if subset is None else {"num_classes": len(subset), "model_ids": subset},
    }
    if data.multi_label:
        record["multi_label"] = True
        record["metrics"] = multi_label_metrics(logits_all, labels_all, data.label_names)
        if patch is not None:
            record["occlusion"] = {**_occlusion_settings(args, patch, saliency_source), "map": {
                mode: _map_curve(torch.cat(parts).double().numpy(), labels_all)
                for mode, parts in occlusion_parts.items()
            }}  # fmt: skip
        record["notes"] = notes
        return record
    record["metrics"] = robustness_metrics(logits_all, labels_all)
    if record["metrics"]["rms_calibration_error"] is None:
        notes.append("RMS calibration error needs at least 200 examples (bins of 100): not computed")
    if ood is not None:
        out_logits = _ood_logits(model, processor, ood, args, accelerator, columns, name)
        record["ood"] = {
            "dataset": ood.name,
            "split": ood.split_label,
            "num_examples": int(len(out_logits)),
            **ood_metrics(logits_all, out_logits),
        }
    if patch is not None:
        record["occlusion"] = {
            **_occlusion_settings(args, patch, saliency_source),
            "top1": {mode: torch.cat(parts).double().mean(0).tolist() for mode, parts in occlusion_parts.items()},
        }
    record["notes"] = notes
    return record


def _occlusion_settings(args: EvaluateArguments, patch: int, saliency_source: str | None) -> dict[str, Any]:
    return {
        "ratios": args.occlusion_ratios,
        "patch_size": patch,
        "repeats": args.occlusion_repeats,
        "seed": args.seed,
        "saliency": saliency_source,
    }


def _map_curve(logits: np.ndarray, targets: np.ndarray) -> list[float]:
    """mAP at each dropping ratio of ``logits`` ``(N, orders, ratios, C)``, averaged over the orders (random
    repeats)."""
    return [
        float(np.mean([mean_average_precision(logits[:, o, r], targets) for o in range(logits.shape[1])]))
        for r in range(logits.shape[2])
    ]


@torch.no_grad()
def _ood_logits(
    model: torch.nn.Module,
    processor: Any,
    ood: EvaluationData,
    args: EvaluateArguments,
    accelerator: Any,
    columns: torch.Tensor | None,
    name: str,
) -> np.ndarray:
    from tqdm.auto import tqdm

    loader = torch.utils.data.DataLoader(
        ood.rows,
        batch_size=args.batch_size,
        collate_fn=_collate(ood, {"pixel_values": processor}),
        num_workers=args.num_workers,
    )
    parts = []
    for batch in tqdm(
        accelerator.prepare(loader), desc=f"{name} on {ood.name}", disable=not accelerator.is_local_main_process
    ):
        logits = model(pixel_values=batch["pixel_values"]).logits
        logits = (logits if columns is None else logits[:, columns]).float()
        parts.append(accelerator.gather_for_metrics(logits).cpu())
    return torch.cat(parts).double().numpy()


# --------------------------------------------------------------------------------------------------
# results


def _slug(name: str) -> str:
    path = Path(name).expanduser()
    text = path.resolve().name if path.exists() else name.replace("/", "--")
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in text) or "model"


def _unique_slugs(names: Sequence[str]) -> list[str]:
    slugs: list[str] = []
    for name in names:
        slug, count = _slug(name), 2
        while slug in slugs:
            slug, count = f"{_slug(name)}-{count}", count + 1
        slugs.append(slug)
    return slugs


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.2f}"


def _pick_ratio(ratios: Sequence[float]) -> float | None:
    """The ratio shown in the table: 50 % if measured, else the largest."""
    positive = [r for r in ratios if r > 0]
    return 0.5 if 0.5 in positive else (max(positive) if positive else None)


def multi_label_table(records: Sequence[dict[str, Any]], labels: Sequence[str]) -> str:
    """One row per multi-label model: mAP, micro / macro F1 in %, mAP at 50 % dropping."""
    ratios = next((r["occlusion"]["ratios"] for r in records if "occlusion" in r), [])
    shown = _pick_ratio(ratios)
    header = ["model", "mAP", "micro F1", "macro F1"]
    if shown is not None:
        header += [f"mAP, {shown:.0%} dropped: {MODE_TITLES[m]}" for m in OCCLUSION_MODES]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, record in zip(labels, records, strict=True):
        m = record["metrics"]
        cells = [f"`{label}`", *(_percent(m[k]) for k in ("map", "micro_f1", "macro_f1"))]
        if shown is not None:
            occlusion = record.get("occlusion") or {"ratios": [], "map": {}}
            index = occlusion["ratios"].index(shown) if shown in occlusion["ratios"] else None
            curves = occlusion["map"]
            cells += [_percent(curves[m][index]) if index is not None and m in curves else "—" for m in OCCLUSION_MODES]
        lines.append("| " + " | ".join(cells) + " |")
    first = records[0]
    caption = (
        f"{first['dataset']} ({first['split']}, {first['num_examples']} images, multi-label). Percent; mAP over the "
        f"{int(first['metrics']['map_classes'])} classes with a positive image; F1 at sigmoid 0.5."
    )
    return caption + "\n\n" + "\n".join(lines) + "\n"


def markdown_table(records: Sequence[dict[str, Any]], labels: Sequence[str]) -> str:
    """One row per model: the metrics in % (NLL in nats), OOD columns when measured, top-1 at 50 % dropping
    (:func:`multi_label_table` for multi-label models)."""
    if records and records[0].get("multi_label"):
        return multi_label_table(records, labels)
    has_ood = any("ood" in r for r in records)
    ratios = next((r["occlusion"]["ratios"] for r in records if "occlusion" in r), [])
    shown = _pick_ratio(ratios)
    header = ["model", "top-1", "top-5", "NLL", "ECE", "RMS calib. error", "AURRA"]
    if has_ood:
        header += ["OOD AUPRC", "OOD AUROC", "FPR@95"]
    if shown is not None:
        header += [f"top-1, {shown:.0%} dropped: {MODE_TITLES[m]}" for m in OCCLUSION_MODES]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, record in zip(labels, records, strict=True):
        m = record["metrics"]
        cells = [f"`{label}`", _percent(m["accuracy"]), _percent(m["top5_accuracy"]), f"{m['nll']:.3f}"]
        cells += [_percent(m["ece"]), _percent(m["rms_calibration_error"]), _percent(m["aurra"])]
        if has_ood:
            ood = record.get("ood", {})
            cells += [_percent(ood.get(k)) for k in ("ood_auprc", "ood_auroc", "ood_fpr95")]
        if shown is not None:
            occlusion = record.get("occlusion") or {"ratios": [], "top1": {}}
            index = occlusion["ratios"].index(shown) if shown in occlusion["ratios"] else None
            cells += [
                _percent(occlusion["top1"][m][index]) if index is not None and m in occlusion["top1"] else "—"
                for m in OCCLUSION_MODES
            ]
        lines.append("| " + " | ".join(cells) + " |")
    first = records[0]
    caption = (
        f"{first['dataset']} ({first['split']}, {first['num_examples']} images"
        + (
            f"; out-of-distribution: {first['ood']['dataset']}, {first['ood']['num_examples']} images"
            if has_ood
            else ""
        )
        + "). Percent, except NLL (nats); lower is better for NLL, ECE, RMS calibration error and FPR@95."
    )
    return caption + "\n\n" + "\n".join(lines) + "\n"


def plot_occlusion(records: Sequence[dict[str, Any]], labels: Sequence[str], path: Path) -> Path | None:
    """Top-1 (%; mAP for multi-label models) against patches dropped (%), one panel per dropping mode, one line
    per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with_curves = [(label, r["occlusion"]) for label, r in zip(labels, records, strict=True) if r.get("occlusion")]
    if not with_curves:
        return None
    key, metric = ("map", "mAP") if "map" in with_curves[0][1] else ("top1", "top-1 accuracy")
    with_curves = [(label, {**o, "top1": o[key]}) for label, o in with_curves]
    modes = [m for m in OCCLUSION_MODES if any(m in o["top1"] for _, o in with_curves)]
    fig, axes = plt.subplots(1, len(modes), figsize=(4.2 * len(modes), 3.6), sharey=True, squeeze=False)
    for ax, mode in zip(axes[0], modes, strict=True):
        for label, occlusion in with_curves:
            if mode in occlusion["top1"]:
                x = [100 * r for r in occlusion["ratios"]]
                ax.plot(x, [100 * v for v in occlusion["top1"][mode]], marker="o", markersize=3, label=label)
        ax.set_title(f"{MODE_TITLES[mode]} patch dropping")
        ax.set_xlabel("patches dropped (%)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(f"{metric} (%)")
    axes[0][-1].legend(title="model", fontsize=8)
    first = records[0]
    title = f"Occlusion: {first['dataset']} ({first['split']}, {first['num_examples']} images)"
    sources = {o.get("saliency") for _, o in with_curves} - {None}
    if len(sources) == 1:
        title += f"; salient / non-salient ranked by {sources.pop()}"
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    try:
        atomic_savefig(fig, path, dpi=130)
    finally:
        plt.close(fig)
    return path


def _environment(accelerator: Any) -> dict[str, Any]:
    import transformers

    from . import __version__

    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "device": str(accelerator.device),
        "num_processes": accelerator.num_processes,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "mixpro_hf": __version__,
    }


def _check_output_dir(output_dir: Path, overwrite: bool) -> None:
    if output_dir.is_file():
        raise ValueError(f"--output_dir {str(output_dir)!r} is a file, not a folder")
    earlier = sorted(
        p.name for p in output_dir.glob("*") if p.name in (RESULTS_TABLE, OCCLUSION_PLOT) or p.suffix == ".json"
    )
    if earlier and not overwrite:
        raise ValueError(
            f"--output_dir {str(output_dir)!r} already holds results ({', '.join(earlier[:3])}): choose another folder "
            "or pass --overwrite_output_dir True"
        )


# --------------------------------------------------------------------------------------------------
# script


def parse_arguments(argv: Sequence[str] | None) -> tuple[list[str], EvaluateArguments]:
    """``(models, arguments)``; argparse errors exit with status 2."""
    from transformers import HfArgumentParser

    parser = HfArgumentParser(
        EvaluateArguments,
        prog=PROG,
        description="Compare image classifiers on the robustness metrics of MixPro §4.3 (Fig. 3, Table 5).",
    )
    parser.add_argument("models", nargs="+", metavar="MODEL", help="local model folders or Hub model ids")
    try:
        args, rest = parser.parse_args_into_dataclasses(args=list(argv) if argv is not None else None)
    except ValueError as err:  # EvaluateArguments.__post_init__
        parser.error(str(err))
    return list(rest.models), args


def run(models: Sequence[str], args: EvaluateArguments) -> tuple[list[dict[str, Any]], str]:
    """Evaluate ``models``: write the results, return the records and the Markdown table."""
    from accelerate import Accelerator

    output_dir = Path(args.output_dir).expanduser()
    _check_output_dir(output_dir, args.overwrite_output_dir)
    accelerator = Accelerator(cpu=args.cpu)
    data_options = dict(
        image_column_name=args.image_column_name,
        label_column_name=args.label_column_name,
        max_samples=args.max_samples,
        streaming=args.streaming,
    )
    loaded = [(name, *load_classifier(name)) for name in models]  # every input checked before the first is run
    saliency = None
    if args.saliency_model and args.occlusion:
        from transformers import AutoModel

        sal_model, sal_processor = load_classifier(args.saliency_model, auto_class=AutoModel)
        if not supports_cls_attention(sal_model):
            raise ValueError(
                f"--saliency_model {args.saliency_model!r} has no class-token attention to rank patches by"
            )
        saliency = Saliency(args.saliency_model, sal_model, sal_processor)
    data = load_evaluation_data(args.dataset, args.dataset_config_name, args.split, **data_options)
    ood = None
    if args.ood_dataset:
        ood_options = {**data_options, "label_column_name": None}
        ood = load_evaluation_data(
            args.ood_dataset,
            args.ood_dataset_config_name,
            args.ood_split,
            with_labels=False,
            **ood_options,
        )
    if data.multi_label and ood is not None:
        raise ValueError("--ood_dataset scores single-label classifiers (maximum softmax); this data is multi-label")
    for name, model, _ in loaded:
        multi = getattr(model.config, "problem_type", None) == "multi_label_classification"
        if multi != data.multi_label:
            raise ValueError(
                f"model {name!r} is a {'multi' if multi else 'single'}-label classifier (problem_type "
                f"{getattr(model.config, 'problem_type', None)!r}) but data set {data.name!r} is "
                f"{'multi-label (lists of labels)' if data.multi_label else 'single-label'}"
            )
        model_class_subset(name, model, data)
        if data.max_label is not None and data.max_label >= model.config.num_labels:
            raise ValueError(
                f"data set {data.name!r} has label id {data.max_label}, outside the {model.config.num_labels} classes "
                f"of model {name!r}"
            )
        if args.occlusion:
            occlusion_patch_size(name, model, args)
    labels = _unique_slugs(models)
    records = []
    for (name, model, processor), label in zip(loaded, labels, strict=True):
        record = evaluate_model(label, model, processor, data, args, accelerator, ood=ood, saliency=saliency)
        record.update(model=name, settings=asdict(args), environment=_environment(accelerator))
        records.append(record)
        model.to("cpu")
    table = markdown_table(records, labels)
    if accelerator.is_main_process:
        _write_results(output_dir, models, records, labels, table, args)
    return records, table


def _write_results(
    output_dir: Path,
    models: Sequence[str],
    records: list[dict[str, Any]],
    labels: list[str],
    table: str,
    args: EvaluateArguments,
) -> None:
    """The result files (each written atomically), the occlusion plot and, with ``--update_card``, the models'
    cards; a failed write (a full disk, ...) is one line naming the file and the files already complete."""
    written: list[str] = []

    def describe(cause: WriteError) -> str:
        kept = f"complete: {', '.join(written)}" if written else "no result file was written"
        return failure_line(target, cause, kept, "run mixpro-evaluate again (--overwrite_output_dir True)", output_dir)

    data_slug = _slug(args.dataset)
    files = [(output_dir / f"{label}__{data_slug}.json", json.dumps(record, indent=2) + "\n")
             for label, record in zip(labels, records, strict=True)]  # fmt: skip
    target: Path = output_dir
    with reporting_write_failures(describe):
        output_dir.mkdir(parents=True, exist_ok=True)
        for target, text in [*files, (output_dir / RESULTS_TABLE, table)]:
            atomic_write_text(target, text)
            written.append(target.name)
        target = output_dir / OCCLUSION_PLOT
        if plot_occlusion(records, labels, target) is not None:
            written.append(target.name)
        if args.update_card:
            from .model_card import add_evaluation_results

            for name, record in zip(models, records, strict=True):
                if _is_local(name):
                    target = Path(name).expanduser().resolve() / "README.md"
                    print(f"card updated: {add_evaluation_results(name, record, _dataset_type(args.dataset))}")
                    written.append(str(target))
                else:
                    print(f"{name}: not a local folder, its card is not updated")


def _dataset_type(source: str) -> str:
    """The model-index ``dataset.type``: the Hub id, or ``imagefolder`` / the file format for local data."""
    path = Path(source).expanduser()
    if path.is_file():
        return path.suffix.lstrip(".").lower() or "file"
    return "imagefolder" if path.is_dir() else source


def main(argv: Sequence[str] | None = None) -> int:
    """``mixpro-evaluate``: 0 on success, 2 for bad input, 1 for a failed write (one line on stderr)."""
    models, args = parse_arguments(argv)
    from accelerate import PartialState

    from .pipeline import end_process_group

    try:
        _, table = run(models, args)
        if PartialState().is_main_process:
            print(table)
            print(f"results written to {Path(args.output_dir).expanduser()}")
    except (ValueError, FileNotFoundError) as err:
        print(f"{PROG}: error: {first_line(err)}", file=sys.stderr)
        return 2
    except WriteFailed as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 1
    finally:
        end_process_group()
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
