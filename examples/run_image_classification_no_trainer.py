#!/usr/bin/env python
"""The same MixPro training as ``mixpro-train``, written as an explicit 🤗 Accelerate loop.

    python examples/run_image_classification_no_trainer.py --output_dir outputs/no-trainer
    accelerate launch --num_processes 2 examples/run_image_classification_no_trainer.py --train_file ...

It takes the same flags and uses the same library contract as ``MixProTrainer``: ``parse_args`` and ``prepare``
(data, model, checks), ``mix_batch`` + ``batch_generator`` (the same draws for the same seed),
``forward_mixed`` (attention capture and the loss), ``optimizer_param_groups`` (each family's weight-decay rule),
``learnable_alpha_parameter`` and ``mean_mix_stats`` (the logged ``mixpro/*`` statistics). Only the loop is
written out: optimiser, schedule, gradient accumulation, mixed precision, evaluation, checkpoint, card.
``--streaming True --max_steps N`` reads the training split while training, as ``mixpro-train`` does: each rank
its own shards (``dispatch_batches=False``), the stream's shuffle buffer, reshuffled on each new pass.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator, DataLoaderConfiguration
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from mixpro_hf import (
    MixProCollator,
    MixProTrainingArguments,
    OutputDirLock,
    batch_generator,
    evaluation_metrics,
    forward_mixed,
    learnable_alpha_parameter,
    mean_mix_stats,
    mix_batch,
    mixing_warnings,
    optimizer_param_groups,
    parse_args,
    prepare,
    run_recorder,
    write_figures,
    write_model_card,
)
from mixpro_hf.divergence import NonFiniteLossWatch, TrainingDiverged, check_finite_weights
from mixpro_hf.output_guard import LOCK_FILE, remove_if_written_by_this_run
from mixpro_hf.schedule import create_lr_scheduler
from mixpro_hf.write_guard import (
    WriteFailed,
    atomic_write_text,
    check_folder_exists,
    reporting_write_failures,
    run_write_failure,
)

PROG = Path(__file__).name


def make_accelerator(args: MixProTrainingArguments, streaming: bool) -> Accelerator:
    """The run's Accelerator. With ``--streaming``, as ``MixProTrainer`` does (``dispatch_batches=False``): each rank
    reads its own part of the stream (whole shards when there are at least as many as processes, else batches),
    instead of rank 0 reading every batch and sending it out."""
    mixed_precision = "bf16" if args.bf16 else "fp16" if args.fp16 else "no"
    return Accelerator(
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=mixed_precision,
        cpu=args.use_cpu,
        dataloader_config=DataLoaderConfiguration(dispatch_batches=False) if streaming else None,
    )


def make_train_loader(
    train_set: Any, args: MixProTrainingArguments, collate: MixProCollator, streaming: bool
) -> DataLoader:
    """The training DataLoader: shuffled, or, for a stream (an ``IterableDataset``), in stream order, since the
    stream shuffles itself (its shard order and a ``--shuffle_buffer_size`` buffer, reseeded by ``set_epoch``)."""
    return DataLoader(
        train_set,
        batch_size=args.per_device_train_batch_size,
        shuffle=not streaming,
        collate_fn=collate,
        num_workers=args.dataloader_num_workers,
        drop_last=True,
    )


@torch.no_grad()
def evaluate(
    model: torch.nn.Module, loader: DataLoader, accelerator: Accelerator, label_names: list[str]
) -> dict[str, float]:
    """Top-1 / top-5 / ECE (single-label) or mAP / F1 (multi-label: multi-hot labels) of a split."""
    model.eval()
    logits, labels = [], []
    for batch in loader:
        out = model(pixel_values=batch["pixel_values"]).logits
        out, target = accelerator.gather_for_metrics((out, batch["labels"]))
        logits.append(out.float().cpu().numpy())
        labels.append(target.cpu().numpy())
    model.train()
    return evaluation_metrics(np.concatenate(logits), np.concatenate(labels), label_names)


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    """Parse, train, evaluate and save; bad input exits 2, a diverged run (a NaN/inf loss) and a failed write (a
    full disk, a read-only or vanished folder: :mod:`mixpro_hf.write_guard`) exit 1, each with one line on stderr,
    nothing non-finite or half-written saved."""
    try:  # bad input, found before training: one line on stderr and exit 2, as mixpro-train
        model_args, data_args, args = parse_args(sys.argv[1:] if argv is None else list(argv))
        streaming = data_args.streaming  # prepare refuses a stream without --max_steps (it has no length)
        if not args.do_train:
            raise ValueError("this example trains: evaluate a saved model with mixpro-train --do_train False")
        accelerator = make_accelerator(args, streaming)
        # one run per output folder: the main process holds its lock (the other ranks of this run share it)
        with reporting_write_failures(run_write_failure(args.output_dir, Path(args.output_dir) / LOCK_FILE)):
            lock = OutputDirLock(args.output_dir).acquire() if accelerator.is_main_process else None
    except (ValueError, FileNotFoundError) as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    except WriteFailed as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        raise SystemExit(1) from None
    try:
        prepared = prepare(model_args, data_args, args)
    except (ValueError, FileNotFoundError) as err:
        if lock is not None:
            lock.release_and_clean()
        print(f"{PROG}: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    try:
        with reporting_write_failures(run_write_failure(args.output_dir), writes_only=False, within=args.output_dir):
            return train_and_save(accelerator, prepared, model_args, data_args, args)
    except (TrainingDiverged, WriteFailed) as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        raise SystemExit(1) from None
    finally:
        if lock is not None:
            lock.release()
        accelerator.end_training()  # trackers closed, process group destroyed (a gloo group left to exit can abort)


def train_and_save(
    accelerator: Accelerator, prepared: Any, model_args: Any, data_args: Any, args: MixProTrainingArguments
) -> dict[str, float]:
    """The training loop of a prepared run, its evaluation and the output folder (see the module docstring)."""
    streaming = data_args.streaming
    config = args.mixpro_config()
    grid = (prepared.image_size // prepared.patch_size,) * 2
    for message in mixing_warnings(config, grid, args.per_device_train_batch_size):
        if accelerator.is_main_process:
            print(f"{PROG}: warning: {message}", file=sys.stderr)
    collate = MixProCollator(config=None, patch_size=prepared.patch_size, num_labels=len(prepared.label_names))
    train_loader = make_train_loader(prepared.train_set, args, collate, streaming)
    eval_loaders = {"eval": prepared.eval_set, "test": prepared.test_set}
    eval_loaders = {
        k: DataLoader(v, batch_size=args.per_device_eval_batch_size, collate_fn=collate)
        for k, v in eval_loaders.items()
        if v is not None
    }
    learnable_alpha = learnable_alpha_parameter(config, accelerator.device)
    extra = [learnable_alpha] if learnable_alpha is not None else []
    optimizer = torch.optim.AdamW(
        optimizer_param_groups(prepared.model, args.weight_decay, extra), lr=args.learning_rate
    )
    if streaming:
        max_steps = args.max_steps
    else:
        steps_per_epoch = math.ceil(len(train_loader) / accelerator.num_processes / args.gradient_accumulation_steps)
        max_steps = args.max_steps if args.max_steps > 0 else int(args.num_train_epochs * steps_per_epoch)
    scheduler = create_lr_scheduler(args, optimizer, max_steps)  # --lr_schedule: the reference cosine or 🤗's
    if accelerator.is_main_process:  # mixpro_run.json, from what runs (the optimizer's learning rate, the data)
        run_recorder(prepared, model_args, data_args, args).write(args, 0, optimizer, scheduler)
    model, optimizer, train_loader, scheduler, *loaders = accelerator.prepare(
        prepared.model, optimizer, train_loader, scheduler, *eval_loaders.values()
    )

    history: list[dict[str, float]] = []
    # every step's loss is watched on the device; the processes compare at logging steps and before saving
    watch = NonFiniteLossWatch(accelerator.device)
    losses: list[torch.Tensor] = []
    stats: list[dict[str, torch.Tensor]] = []
    step, micro, epoch = 0, 0, 0
    progress = tqdm(total=max_steps, disable=not accelerator.is_local_main_process or args.disable_tqdm)
    model.train()
    while step < max_steps:
        if streaming:  # a new pass over the stream (it ended before max_steps): reshuffled by the epoch
            train_loader.set_epoch(epoch)  # Accelerate's loader passes it on to the IterableDataset's set_epoch
        micro_at_start = micro
        for batch in train_loader:
            mix = mix_batch(
                batch["pixel_values"],
                config,
                prepared.patch_size,
                batch_generator(args.seed, accelerator.process_index, micro),
            )
            micro += 1
            learning_rate = scheduler.get_last_lr()[0]
            with accelerator.accumulate(model), accelerator.autocast():
                result, _ = forward_mixed(
                    model,
                    {"pixel_values": mix.pixel_values},
                    batch["labels"],
                    mix,
                    config,
                    progress=step / max_steps,
                    learnable_alpha=learnable_alpha,
                )
                accelerator.backward(result.loss)
                if accelerator.sync_gradients and args.max_grad_norm:
                    accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            losses.append(result.loss.detach())
            watch.observe(result.loss, step + 1, learning_rate)
            stats.append(result.stats)
            if accelerator.sync_gradients:
                step += 1
                progress.update(1)
                if step % args.logging_steps == 0 or step == max_steps:
                    watch.check(accelerator.gather)
                    loss = accelerator.reduce(torch.stack(losses).mean(), reduction="mean")  # all ranks, as Trainer
                    over_ranks = {"sum_over_processes": lambda t: accelerator.reduce(t, reduction="sum")}
                    mix_stats = mean_mix_stats(stats, learnable_alpha, device=accelerator.device, **over_ranks)
                    entry = {"loss": float(loss), **mix_stats}
                    history.append({**entry, "step": step, "learning_rate": scheduler.get_last_lr()[0]})
                    losses.clear()
                    stats.clear()
                    accelerator.print(history[-1])
            if step >= max_steps:
                break
        if micro == micro_at_start:
            raise RuntimeError("a pass over the training data gave no batch: fewer examples than one batch per rank")
        epoch += 1

    watch.check(accelerator.gather)  # the last steps' losses, if they were not logged
    check_finite_weights(accelerator.unwrap_model(model), f"checkpoint-{step} or the final model")
    metrics: dict[str, float] = {}
    for prefix, loader in zip(eval_loaders, loaders, strict=True):
        metrics.update(
            {f"{prefix}_{k}": v for k, v in evaluate(model, loader, accelerator, prepared.label_names).items()}
        )
    output_dir = Path(args.output_dir)
    accelerator.save_state(str(output_dir / f"checkpoint-{step}"))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        check_folder_exists(output_dir)  # never recreate a vanished folder without the run's record
        before = {p.name for p in output_dir.iterdir()}
        # a failed write removes every file of this block (nothing half-written is taken for the final model)
        with reporting_write_failures(
            run_write_failure(output_dir), cleanup=lambda: remove_if_written_by_this_run(output_dir, before)
        ):
            accelerator.unwrap_model(model).save_pretrained(output_dir)
            prepared.processor.save_pretrained(output_dir)
            atomic_write_text(output_dir / "all_results.json", json.dumps(metrics, indent=2) + "\n")
            state = json.dumps({"global_step": step, "log_history": history}) + "\n"
            atomic_write_text(output_dir / "trainer_state.json", state)
            write_figures(prepared, history, output_dir, args.mask_scale, args.seed)
            write_model_card(output_dir)
        accelerator.print("final metrics:", json.dumps(metrics))
    return metrics


if __name__ == "__main__":
    main()
