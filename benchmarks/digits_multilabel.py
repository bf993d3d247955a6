"""Multi-label mixing on an offline task: ``none`` vs ``mixup_cutmix`` vs ``mixpro`` on two digits per image.

The data is :func:`mixpro_hf.data.digits_multilabel_dataset` (``mixpro-train --dataset_name digits_multilabel``):
16x16 images of two scikit-learn digits side by side, labelled with the set of the two digits (10 classes, one or
two labels per image). Every method trains the embedded digits job's model with its budget and flags
(:data:`mixpro_hf.arguments.DIGITS_MODEL` / :data:`~mixpro_hf.arguments.DIGITS_FLAGS`: 60 epochs, lr 3e-3, batch
64, mask_scale 2), the loss is BCE (``--loss auto`` on list labels), and only ``--mix_method`` and ``--seed``
change; evaluation is at the end only. Each model is scored on the 360 held-out test images: mAP, micro / macro
F1 at sigmoid 0.5 (:func:`mixpro_hf.multi_label_metrics.multi_label_metrics`). Seeds are the outer loop, and the
result file is rewritten after every run.

    python benchmarks/digits_multilabel.py                        # 3 methods x seeds 0 1 2
    python benchmarks/digits_multilabel.py --seeds 0 --max_steps 5 --name digits_multilabel_smoke

Writes ``results/digits_multilabel.json``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
from benchmarks.common import write_result  # noqa: E402
from mixpro_hf.arguments import DIGITS_FLAGS, DIGITS_MODEL, parse_args  # noqa: E402
from mixpro_hf.data import DIGITS_MULTILABEL  # noqa: E402
from mixpro_hf.multi_label_metrics import multi_label_metrics  # noqa: E402
from mixpro_hf.pipeline import make_trainer, prepare, split_logits  # noqa: E402

METHODS = ("none", "mixup_cutmix", "mixpro")
METRICS = ("map", "micro_f1", "macro_f1")


def job_flags() -> list[str]:
    """The digits job's flags on the multi-label digits, evaluated once at the end, nothing saved."""
    flags = {k: v for k, v in DIGITS_FLAGS.items() if k != "output_dir"}
    flags.update({"eval_strategy": "no", "save_strategy": "no"})
    flags.pop("eval_steps"), flags.pop("save_steps"), flags.pop("save_total_limit")
    argv = ["--dataset_name", DIGITS_MULTILABEL, "--config_overrides", DIGITS_MODEL]
    return argv + [item for k, v in flags.items() for item in (f"--{k}", v)]


def run_one(method: str, seed: int, work_dir: Path, extra: Sequence[str] = ()) -> dict[str, Any]:
    """Train with ``--mix_method method --seed seed``; its test mAP and F1."""
    argv = [
        *job_flags(),
        "--mix_method",
        method,
        "--seed",
        str(seed),
        "--output_dir",
        str(work_dir / f"{method}-{seed}"),
    ]
    argv += ["--report_to", "none", "--disable_tqdm", "True", *extra]
    model_args, data_args, training_args = parse_args(argv)
    start = time.perf_counter()
    prepared = prepare(model_args, data_args, training_args)
    trainer = make_trainer(prepared, training_args)
    trainer.train()
    train_s = time.perf_counter() - start
    logits, targets = split_logits(trainer, prepared.test_set)
    metrics = multi_label_metrics(logits, targets)
    return {
        "method": method,
        "seed": seed,
        "loss": training_args.loss,
        **{k: metrics[k] for k in METRICS},
        "train_seconds": train_s,
    }


def payload(runs: list[dict[str, Any]], methods: Sequence[str], seeds: Sequence[int], extra: Sequence[str]) -> dict:
    """Settings, per-method runs, and mean / std over the seeds every method finished."""
    done = [s for s in seeds if all(any(r["method"] == m and r["seed"] == s for r in runs) for m in methods)]
    results = {}
    for method in methods:
        mine = [r for r in runs if r["method"] == method and r["seed"] in done]
        if mine:
            results[method] = {
                "runs": mine,
                "mean": {k: statistics.fmean(r[k] for r in mine) for k in (*METRICS, "train_seconds")},
                "std": {k: statistics.stdev(r[k] for r in mine) if len(mine) > 1 else 0.0 for k in METRICS},
            }
    return {
        "benchmark": "digits multi-label comparison",
        "settings": {
            "data": "two scikit-learn digits per 16x16 image, labels = the set of the digits (10 classes); 1,437 "
            "train images (15 % held out for validation), 360 test images from disjoint digits",
            "flags": job_flags(),
            "methods": list(methods),
            "seeds_planned": list(seeds),
            "seeds": done,
            "metrics": "test mAP (macro AP over classes, sklearn), micro / macro F1 at sigmoid 0.5",
            "torch_threads": torch.get_num_threads(),
            "extra_flags": list(extra),
        },
        "complete": len(done) == len(seeds),
        "results": results,
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--name", default="digits_multilabel")
    args, extra = parser.parse_known_args(argv)
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as work:
        for seed in args.seeds:
            for method in args.methods:
                run = run_one(method, seed, Path(work), extra)
                runs.append(run)
                print({k: round(v, 4) if isinstance(v, float) else v for k, v in run.items()}, flush=True)
                result = payload(runs, args.methods, args.seeds, extra)
                write_result(args.name, result)
    return result


if __name__ == "__main__":
    main()
