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

On a shared machine, one process per seed (one thread each), then merge their files (same settings and commit)::

    OMP_NUM_THREADS=1 python benchmarks/digits_multilabel.py --seeds 0 --name digits_multilabel_s0 &
    OMP_NUM_THREADS=1 python benchmarks/digits_multilabel.py --seeds 1 --name digits_multilabel_s1; wait
    python benchmarks/digits_multilabel.py --merge digits_multilabel_s0 digits_multilabel_s1

Writes ``results/digits_multilabel.json``.
"""

from __future__ import annotations

import argparse
import json
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
from benchmarks.common import RESULTS_DIR, write_result  # noqa: E402
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


def payload_of(runs: list[dict[str, Any]], methods: Sequence[str], seeds: Sequence[int], extra: Sequence[str]) -> dict:
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


def merge(parts: Sequence[str], name: str) -> dict[str, Any]:
    """Merge result files of the same settings and commit (runs split over processes by seed) into
    ``results/<name>.json``, keeping the parts' environment; the parts are removed."""
    payloads = [json.loads((RESULTS_DIR / f"{part}.json").read_text()) for part in parts]
    first = payloads[0]
    for part, other in zip(parts[1:], payloads[1:], strict=True):
        same = {k: v for k, v in other["settings"].items() if k not in ("seeds", "seeds_planned")}
        if same != {k: v for k, v in first["settings"].items() if k not in ("seeds", "seeds_planned")}:
            raise SystemExit(f"{part}: other settings than {parts[0]}")
        if other["environment"].get("commit") != first["environment"].get("commit"):
            raise SystemExit(f"{part}: another commit than {parts[0]}")
    runs = [run for payload in payloads for entry in payload["results"].values() for run in entry["runs"]]
    seeds = sorted({seed for payload in payloads for seed in payload["settings"]["seeds_planned"]})
    result = payload_of(runs, first["settings"]["methods"], seeds, first["settings"]["extra_flags"])
    result["settings"]["torch_threads"] = [p["settings"]["torch_threads"] for p in payloads]
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps({"environment": first["environment"], **result}, indent=2) + "\n")
    for part in parts:
        (RESULTS_DIR / f"{part}.json").unlink()
    print(f"wrote {path}")
    return result


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--merge", nargs="+", metavar="NAME", help="merge these result files into --name")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--name", default="digits_multilabel")
    args, extra = parser.parse_known_args(argv)
    if args.merge:
        return merge(args.merge, args.name)
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as work:
        for seed in args.seeds:
            for method in args.methods:
                run = run_one(method, seed, Path(work), extra)
                runs.append(run)
                print({k: round(v, 4) if isinstance(v, float) else v for k, v in run.items()}, flush=True)
                result = payload_of(runs, args.methods, args.seeds, extra)
                write_result(args.name, result)
    return result


if __name__ == "__main__":
    main()
