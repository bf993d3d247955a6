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
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import datasets
import transformers

from .arguments import given_flags, parse_args, recipe_summary, short_run_logging_steps, training_steps
from .divergence import TrainingDiverged
from .hub import PushToHubError
from .output_guard import run_holding_the_lock
from .pipeline import (
    calibrate,
    end_process_group,
    make_trainer,
    num_examples,
    prepare,
    resolve_checkpoint,
    run_recorder,
    write_figures,
)
from .trainer import MixProTrainer, TrainingStopped
from .write_guard import WriteFailed, check_folder_exists

logger = logging.getLogger("mixpro_hf.train")
LOG_FORMAT, LOG_DATE_FORMAT = "%(asctime)s - %(levelname)s - %(name)s - %(message)s", "%m/%d/%Y %H:%M:%S"


def setup_logging(training_args: transformers.TrainingArguments) -> None:
    """🤗's example-script conventions: the process's level from ``training_args.get_process_log_level()``
    (``--log_level``, ``--log_level_replica``) for transformers and datasets; mixpro_hf's own messages at INFO
    on the main process unless ``--log_level`` says otherwise. No handler is added here (see :func:`main`)."""
    log_level = training_args.get_process_log_level()
    transformers.utils.logging.set_verbosity(log_level)
    datasets.utils.logging.set_verbosity(log_level)
    passive = training_args.log_level == "passive" and training_args.should_log
    logging.getLogger("mixpro_hf").setLevel(logging.INFO if passive else log_level)


def _console_handler() -> logging.Handler:
    """A stdout handler on the ``mixpro_hf`` logger, in 🤗's format. Not on the root logger: transformers,
    datasets and huggingface_hub print through their own handlers and would print twice through a root one."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter(LOG_FORMAT, LOG_DATE_FORMAT))
    logging.getLogger("mixpro_hf").addHandler(handler)
    return handler


def run(argv: Sequence[str]) -> dict[str, Any]:
    """Train, evaluate, and write the output directory; returns the final metrics.

    The main process holds the output folder's lock (:class:`~mixpro_hf.output_guard.OutputDirLock`) for the whole
    run, so a second run into the folder is refused; a run that fails before saving a checkpoint removes what it
    wrote (a folder it created, ``mixpro_run.json``, ...), so nothing blocks the corrected rerun."""
    model_args, data_args, training_args = parse_args(argv)
    given = given_flags(argv)
    setup_logging(training_args)
    return run_holding_the_lock(
        training_args.output_dir,
        training_args.should_save,
        lambda trainers: _run(model_args, data_args, training_args, given, trainers),
    )


def _run(
    model_args: Any, data_args: Any, training_args: Any, given: dict[str, Any], trainers: list[MixProTrainer]
) -> dict[str, Any]:
    checkpoint = resolve_checkpoint(training_args.resume_from_checkpoint, training_args.output_dir)
    prepared = prepare(model_args, data_args, training_args, checkpoint)
    if prepared.test_set is None and "do_predict" in given and training_args.do_predict:
        raise ValueError("--do_predict needs a test split: --test_file, --test_dir, or a dataset with a 'test' split")
    if prepared.eval_set is None and "do_eval" in given and training_args.do_eval:
        raise ValueError(
            "--do_eval needs a validation split: --validation_dir, --validation_file, or a dataset with a "
            "'validation' split"
        )
    evaluated = (training_args.do_eval and prepared.eval_set is not None) or (
        training_args.do_predict and prepared.test_set is not None
    )
    if not training_args.do_train and not evaluated:
        raise ValueError(
            "--do_train False: nothing to evaluate (--do_eval needs validation data, --do_predict test data)"
        )
    if "logging_steps" not in given and training_args.do_train:  # a short run still logs its alpha curve
        steps = training_steps(training_args, num_examples(prepared.train_set) or 0)
        training_args.logging_steps = short_run_logging_steps(training_args.logging_steps, steps)
    logger.info(recipe_summary(model_args, training_args))
    push, training_args.push_to_hub = training_args.push_to_hub, False  # pushed once, at the end, with the card
    trainer = make_trainer(prepared, training_args)
    if data_args.uses_embedded_default and "mask_scale" not in given:  # the demo's own 2x2 cells, in the README
        trainer.mixing_notice_level = logging.INFO
    trainers.append(trainer)
    output_dir = Path(training_args.output_dir)
    trainer.accelerator.wait_for_everyone()  # every process checked the output folder before it is written to
    if training_args.do_train:  # mixpro_run.json, written when training begins, from what runs
        trainer.add_callback(run_recorder(prepared, model_args, data_args, training_args))
    try:
        train_result = trainer.train(resume_from_checkpoint=checkpoint) if training_args.do_train else None
    except KeyboardInterrupt:
        if trainer.state.global_step > 0:
            trainer._save_checkpoint(trainer.model, trial=None)
            print(
                f"\ninterrupted: a complete checkpoint of step {trainer.state.global_step} is in "
                f"{training_args.output_dir}; continue with --resume_from_checkpoint last",
                file=sys.stderr,
            )
        raise

    # What this run measured, kept in memory: only the main process writes all_results.json, and a process on
    # another machine may not even see that file (no shared file system), or see it half rewritten.
    results: dict[str, Any] = {}
    if train_result is not None:
        if trainer.is_world_process_zero():  # never recreate a vanished folder without the run's checkpoints
            check_folder_exists(output_dir)
        trainer.save_model()
        metrics: dict[str, Any] = dict(train_result.metrics)
        if num_examples(prepared.train_set) is not None:  # a stream (--streaming) has no length
            metrics["train_samples"] = num_examples(prepared.train_set)
        trainer.log_metrics("train", metrics)
        trainer.save_metrics("train", metrics)
        results.update(metrics)
    splits = [("eval", prepared.eval_set)] if training_args.do_eval and prepared.eval_set is not None else []
    if training_args.do_predict and prepared.test_set is not None:
        splits.append(("test", prepared.test_set))
    for prefix, dataset in splits:
        split_metrics = trainer.evaluate(dataset, metric_key_prefix=prefix)
        split_metrics[f"{prefix}_samples"] = len(dataset)
        trainer.log_metrics(prefix, split_metrics)
        trainer.save_metrics(prefix, split_metrics)
        results.update(split_metrics)
    if training_args.calibrate and prepared.eval_set is not None:
        calibration = calibrate(trainer, prepared.eval_set, prepared.test_set if training_args.do_predict else None)
        trainer.log_metrics("calibration", calibration)
        trainer.save_metrics("calibration", calibration)
        results.update(calibration)
    if train_result is None:  # evaluation only: metrics, no new checkpoint, figures or card
        return _final_metrics(trainer, output_dir, results)
    trainer.save_state()

    if trainer.is_world_process_zero():
        write_figures(prepared, trainer.state.log_history, output_dir, training_args.mask_scale, training_args.seed)
    trainer.create_model_card(dataset=data_args.dataset_name)
    if push:
        training_args.push_to_hub = True
        url = trainer.push_to_hub()
        if trainer.is_world_process_zero():
            print(f"pushed {output_dir} to {url}")
    return _final_metrics(trainer, output_dir, results)


def _final_metrics(trainer: MixProTrainer, output_dir: Path, results: dict[str, Any]) -> dict[str, Any]:
    """The main process returns ``all_results.json`` (which also keeps what earlier runs into the folder wrote);
    every other process returns what this run measured, the same numbers, without reading a file that it did not
    write."""
    if trainer.is_world_process_zero():
        return json.loads((output_dir / "all_results.json").read_text())
    return results


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point; one line on stderr for: bad input found before training (exit 2), a failed write (a
    checkpoint, the final model, a figure, the card, the run record, ...: :mod:`~mixpro_hf.write_guard`) or Hub
    push, a diverged run (a NaN/inf loss; nothing non-finite saved) (exit 1), a SIGTERM that stopped
    training after a checkpoint (exit 143)."""
    return run_entry_point(
        "mixpro-train", run, sys.argv[1:] if argv is None else argv, ("accuracy", "ece", "_map", "_f1")
    )


def run_entry_point(
    prog: str, run_fn: Callable[[Sequence[str]], dict[str, Any]], argv: Sequence[str], shown: tuple[str, ...]
) -> int:
    """Run ``run_fn(argv)`` as a console command named ``prog`` (``mixpro-train``, ``run_semantic_segmentation``):
    the exit codes and one-line errors of :func:`main`, then ``final metrics:`` with the results whose key ends with
    one of ``shown``."""
    handler = _console_handler()
    try:
        results = run_fn(argv)
    except KeyboardInterrupt:
        return 130
    except TrainingStopped as err:
        print(f"{prog}: {err}", file=sys.stderr)
        return err.exit_code
    except (ValueError, FileNotFoundError) as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    except (WriteFailed, PushToHubError, TrainingDiverged) as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 1
    finally:
        logging.getLogger("mixpro_hf").removeHandler(handler)
        end_process_group()
    summary = {k: v for k, v in results.items() if k.endswith(shown)}
    print("final metrics:", json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
