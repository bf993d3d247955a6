"""``mixpro-train``: image classification with MixPro, in the style of 🤗's ``run_image_classification.py``.

    mixpro-train                                   # embedded default: a small ViT on sklearn digits, MixPro
    mixpro-train --train_file train.parquet --test_file test.parquet --model_type deit --model_size tiny \\
        --config_overrides "image_size=32,patch_size=4" --output_dir outputs/cifar10
    accelerate launch --num_processes 8 -m mixpro_hf.train ...   # multi-GPU

A thin script over the library: :func:`mixpro_hf.arguments.parse_args` (flags and recipe defaults),
:func:`mixpro_hf.pipeline.prepare` (data, model and every check before training),
:class:`mixpro_hf.trainer.MixProTrainer` (training, evaluation, the model card and the Hub push).
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import transformers

from .arguments import parse_args
from .metrics import compute_metrics
from .pipeline import prepare, resolve_checkpoint, save_run_record, write_figures
from .trainer import MixProTrainer

logger = logging.getLogger("mixpro_hf.train")


def run(argv: Sequence[str]) -> dict[str, Any]:
    """Train, evaluate, and write the output directory; returns the final metrics."""
    model_args, data_args, training_args = parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    transformers.utils.logging.set_verbosity_warning()
    checkpoint = resolve_checkpoint(training_args.resume_from_checkpoint, training_args.output_dir)
    prepared = prepare(model_args, data_args, training_args)
    push, training_args.push_to_hub = training_args.push_to_hub, False  # pushed once, at the end, with the card
    trainer = MixProTrainer(
        model=prepared.model,
        args=training_args,
        train_dataset=prepared.train_set,
        eval_dataset=prepared.eval_set,
        processing_class=prepared.processor,
        compute_metrics=compute_metrics,
    )
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
    metrics: dict[str, Any] = {**train_result.metrics, "train_samples": len(prepared.train_set)}
    trainer.log_metrics("train", metrics)
    trainer.save_metrics("train", metrics)
    splits = [("eval", prepared.eval_set)] + ([("test", prepared.test_set)] if prepared.test_set is not None else [])
    for prefix, dataset in splits:
        split_metrics = trainer.evaluate(dataset, metric_key_prefix=prefix)
        split_metrics[f"{prefix}_samples"] = len(dataset)
        trainer.log_metrics(prefix, split_metrics)
        trainer.save_metrics(prefix, split_metrics)
    trainer.save_state()

    if trainer.is_world_process_zero():
        save_run_record(output_dir, model_args, data_args, training_args)
        write_figures(prepared, trainer.state.log_history, output_dir, training_args.mask_scale, training_args.seed)
    trainer.create_model_card(dataset=data_args.dataset_name)
    if push:
        training_args.push_to_hub = True
        url = trainer.push_to_hub()
        if trainer.is_world_process_zero():
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
