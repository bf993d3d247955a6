"""The Hub model card of a segmentation fine-tuning run (``examples/run_semantic_segmentation.py``): one Jinja
template (``templates/segmentation_card.md``) filled from the output folder, as :mod:`mixpro_hf.model_card` does for
classification. The pre-trained checkpoint is the card's ``base_model`` (in the metadata when it is a Hub id; named
in the text always); what is not recorded is written "not recorded", never made up.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .model_card import (
    MIXPRO_BIBTEX,
    NOT_RECORDED,
    RECIPE,
    REPLACEABLE,
    _fmt,
    _hub_id,
    _is_number,
    _merged_results,
    _read_json,
    _warmup,
)

__all__ = ["generate_segmentation_card", "write_segmentation_card"]

TEMPLATE_PATH = Path(__file__).resolve().parent / "templates" / "segmentation_card.md"
TAGS = ("mixpro", "semantic-segmentation", "vision-transformer")
EMBEDDED_TASK = "the embedded digits segmentation task (scikit-learn digits on 32×32 canvases; no Hub dataset)"
DECODERS = {
    "linear": "Segmenter's linear decoder: one linear layer per patch token, upsampled bilinearly",
    "segmenter": "Segmenter's Mask Transformer decoder",
    "upernet": "🤗 UperNet over the encoder's feature pyramid",
}
# all_results key suffix -> (model-index metric type, name in the results table)
METRICS = {
    "mean_iou": ("mean_iou", "mIoU"),
    "mean_accuracy": ("mean_accuracy", "Mean class accuracy"),
    "overall_accuracy": ("overall_accuracy", "Pixel accuracy"),
}
# all_results prefix -> (split, inference)
PREFIXES = {"eval": ("validation", "single scale"), "eval_ms": ("validation", "multi-scale + flip")}


def generate_segmentation_card(
    output_dir: str | os.PathLike[str],
    *,
    repo_id: str | None = None,
    log_history: list[dict[str, Any]] | None = None,
    training_args: dict[str, Any] | None = None,
    model_name: str | None = None,
    license: str = "apache-2.0",  # noqa: A002 - the Hub's metadata name
) -> ModelCard:
    """The card of the segmentation run in ``output_dir``; in-memory ``log_history`` / ``training_args`` win."""
    out = Path(output_dir).expanduser().resolve()
    if not (out / "config.json").is_file():
        raise FileNotFoundError(f"{out} is not a training output folder: {out / 'config.json'} is missing")
    notes: list[str] = []
    config, record = _read_json(out / "config.json", notes), _read_json(out / "mixpro_run.json", notes)
    model_args, data_args = record.get("model_args") or {}, record.get("data_args") or {}
    args = training_args if training_args is not None else record.get("training_args") or {}
    results = _read_json(out / "all_results.json", notes)
    for entry in log_history or []:
        if isinstance(entry, dict):
            results.update({k: v for k, v in entry.items() if k.startswith("eval_") and k not in results})

    source = model_args.get("model_name_or_path")
    hub_base = _hub_id(source)
    if hub_base:
        init_text = f"is [{hub_base}](https://huggingface.co/{hub_base})'s"
    elif source:
        init_text = f"is that of the local checkpoint `{source}`"
    else:
        init_text = "started from random weights (no pre-trained checkpoint)" if model_args else NOT_RECORDED
    dataset = data_args.get("dataset_name")
    hub_dataset = _hub_id(dataset)
    if hub_dataset:
        dataset_text = f"[{hub_dataset}](https://huggingface.co/datasets/{hub_dataset})"
    else:
        dataset_text = f"local dataset `{dataset}`" if dataset else EMBEDDED_TASK if data_args else NOT_RECORDED
    name = model_name or (repo_id or out.name).split("/")[-1]
    decoder = model_args.get("decoder")

    results_rows, eval_results = [], []
    for prefix, (split, inference) in PREFIXES.items():
        for key, (metric_type, label) in METRICS.items():
            value = results.get(f"{prefix}_{key}")
            if _is_number(value):
                results_rows.append((split, inference, label, f"{value:.4g}"))
                eval_results.append(
                    EvalResult(
                        "image-segmentation",
                        dataset_type=hub_dataset or "local",
                        dataset_name=hub_dataset or ("digits segmentation" if not dataset else "local dataset"),
                        dataset_split=split,
                        metric_type=metric_type if prefix == "eval" else f"{metric_type}_ms_flip",
                        metric_value=value,
                    )
                )
    class_prefix = "eval_ms" if any(k.startswith("eval_ms_iou_") for k in results) else "eval"
    id2label = config.get("id2label") or {}
    class_rows = [
        (str(label), f"{results[key]:.4g}" if _is_number(results[key]) else "absent")
        for label in (id2label[k] for k in sorted(id2label, key=int))
        if (key := f"{class_prefix}_iou_{label}") in results
    ]
    recipe_rows = [(label, _fmt(args.get(k))) for label, k in RECIPE if k != "max_steps" or (args.get(k) or 0) > 0]
    recipe_rows.insert(-1, ("Warm-up", _warmup(args)))
    card_data = ModelCardData(
        license=license,
        library_name="transformers",
        pipeline_tag="image-segmentation",
        tags=list(
            dict.fromkeys(
                [*TAGS, *([decoder] if decoder else []), *([config["model_type"]] if config.get("model_type") else [])]
            )
        ),
        datasets=[hub_dataset] if hub_dataset else None,
        base_model=hub_base,
        model_name=name,
        eval_results=eval_results or None,
    )
    return ModelCard.from_template(
        card_data,
        template_path=str(TEMPLATE_PATH),
        model_name=name,
        architecture=(config.get("architectures") or ["model"])[0],
        decoder_text=DECODERS.get(str(decoder), f"decoder {NOT_RECORDED}"),
        num_labels=len(id2label) or NOT_RECORDED,
        init_text=init_text,
        dataset_text=dataset_text,
        repo_for_code=repo_id or f"path/to/{out.name}",
        remote_code=", trust_remote_code=True" if config.get("auto_map") else "",
        recipe_rows=recipe_rows,
        results_rows=results_rows,
        class_rows=class_rows,
        class_inference=PREFIXES[class_prefix][1],
        seed=args.get("seed", NOT_RECORDED),
        toy_data=not dataset and bool(data_args),
        random_init=not source and bool(model_args),
        notes=notes,
        bibtex=MIXPRO_BIBTEX,
    )


def write_segmentation_card(output_dir: str | os.PathLike[str], **kwargs: Any) -> Path:
    """Write :func:`generate_segmentation_card` to ``output_dir/README.md``; never replaces a README someone else
    wrote (model-index entries of the previous card that the new one lacks are kept)."""
    path = Path(output_dir).expanduser().resolve() / "README.md"
    card = generate_segmentation_card(output_dir, **kwargs)
    if path.is_file():
        if not any(mark in path.read_text(encoding="utf-8", errors="replace") for mark in REPLACEABLE):
            raise FileExistsError(f"{path} was not written by mixpro_hf; it is kept (move it away to write the card)")
        card.data.eval_results = _merged_results(card.data.eval_results, ModelCard.load(path).data.eval_results)
    path.write_text(str(card), encoding="utf-8")
    return path
