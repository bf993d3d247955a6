"""MixPro and its baselines on scikit-learn's digits with the embedded default job: small-scale evidence on a CPU.

Every method trains the default job's model with the default job's budget and flags (``mixpro-train`` with no
arguments: :data:`mixpro_hf.arguments.DIGITS_MODEL` / :data:`~mixpro_hf.arguments.DIGITS_FLAGS`, the ``deit``
recipe); only ``--mix_method`` and ``--seed`` change. The runs are in-process (``parse_args`` →
:func:`mixpro_hf.pipeline.prepare` → :class:`~mixpro_hf.trainer.MixProTrainer`), then each model is evaluated on
the held-out test digits: top-1, top-5, ECE (:func:`mixpro_hf.metrics.classification_metrics`), the ECE after
temperature scaling fitted on the validation split (:func:`mixpro_hf.metrics.fit_temperature`), and top-1 under
random patch dropping (paper §4.3.1; :func:`mixpro_hf.robustness.random_drop_accuracy` on the normalised test images, on
the model's patch grid, 0-90 % of the patches set to 0; the drops come from a fixed seed per ratio, so every
model sees the same ones).

Seeds are the outer loop, and the result file is rewritten after every run, so a run cut short still leaves
every method with the same seeds (``"complete": false`` and the seed count say so).

    python benchmarks/digits.py                                   # 5 methods x 5 seeds (about 25 default jobs)
    python benchmarks/digits.py --seeds 0 1 --methods none mixpro  # a quicker look
    python benchmarks/digits.py --seeds 0 --max_steps 5 --name digits_smoke  # other flags go to mixpro-train

On two cores, two processes of one thread each finish the 25 runs in about half the time; then merge their files
(same settings required) into ``digits_comparison.json``::

    OMP_NUM_THREADS=1 python benchmarks/digits.py --seeds 0 1 2 --name digits_part_a &
    OMP_NUM_THREADS=1 python benchmarks/digits.py --seeds 3 4 --name digits_part_b; wait
    python benchmarks/digits.py --merge digits_part_a digits_part_b

Writes ``results/digits_comparison.json`` and ``results/digits_robustness.png``.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
from benchmarks.cifar10 import plot_robustness, summarize  # noqa: E402
from benchmarks.common import RESULTS_DIR, write_result  # noqa: E402
from mixpro_hf.arguments import DIGITS_FLAGS, DIGITS_MODEL, parse_args  # noqa: E402
from mixpro_hf.metrics import (  # noqa: E402
    classification_metrics,
    expected_calibration_error,
    fit_temperature,
)
from mixpro_hf.pipeline import make_trainer, prepare, split_logits  # noqa: E402
from mixpro_hf.robustness import DROP_RATIOS, random_drop_accuracy  # noqa: E402

METHODS = ("none", "mixup_cutmix", "transmix", "maskmix", "mixpro")
DROP_SEED = 1234


def test_images(test_set: Any) -> tuple[torch.Tensor, np.ndarray]:
    """The normalised test images ``(N, 3, H, W)`` (evaluation transform) and their labels."""
    rows = [test_set[i] for i in range(len(test_set))]
    return torch.stack([r["pixel_values"] for r in rows]), np.array([int(r["labels"]) for r in rows])


def run_one(method: str, seed: int, work_dir: Path, extra: Sequence[str] = ()) -> dict[str, Any]:
    """Train the default job with ``--mix_method method --seed seed`` (and the mixpro-train flags ``extra``);
    its test metrics, calibration and robustness."""
    argv = ["--mix_method", method, "--seed", str(seed), "--output_dir", str(work_dir / f"{method}-{seed}")]
    argv += ["--save_strategy", "no", "--report_to", "none", "--disable_tqdm", "True", *extra]
    model_args, data_args, training_args = parse_args(argv)
    start = time.perf_counter()
    prepared = prepare(model_args, data_args, training_args)
    trainer = make_trainer(prepared, training_args)
    trainer.train()
    train_s = time.perf_counter() - start
    eval_logits, eval_labels = split_logits(trainer, prepared.eval_set)
    logits, labels = split_logits(trainer, prepared.test_set)
    temperature = fit_temperature(eval_logits, eval_labels)
    images, image_labels = test_images(prepared.test_set)
    run = {"method": method, "seed": seed, **classification_metrics(logits, labels)}
    run["ece_calibrated"] = expected_calibration_error(logits / temperature, labels)
    run["temperature"] = temperature
    run["eval_accuracy"] = classification_metrics(eval_logits, eval_labels)["accuracy"]
    run["robustness_top1"] = random_drop_accuracy(
        trainer.model, images, image_labels, prepared.patch_size, DROP_RATIOS, DROP_SEED
    )
    run["train_seconds"], run["total_seconds"] = train_s, time.perf_counter() - start
    return run


def aggregate(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """:func:`benchmarks.cifar10.summarize` plus the calibrated ECE and the temperature."""
    summary = summarize(runs)
    for key in ("ece_calibrated", "temperature", "eval_accuracy"):
        values = [r[key] for r in runs]
        summary["mean"][key] = statistics.fmean(values)
        summary["std"][key] = statistics.stdev(values) if len(values) > 1 else 0.0
    return summary


def payload(
    runs: list[dict[str, Any]], methods: Sequence[str], seeds: Sequence[int], extra: Sequence[str] = ()
) -> dict[str, Any]:
    """The result file's content: settings, per-method runs and mean/std over the seeds finished by every
    method."""
    done = [s for s in seeds if all(any(r["method"] == m and r["seed"] == s for r in runs) for m in methods)]
    results = {}
    for method in methods:
        mine = [r for r in runs if r["method"] == method and r["seed"] in done]
        if mine:
            results[method] = {"runs": mine, **aggregate(mine)}
    return {
        "benchmark": "digits comparison",
        "settings": {
            "data": "scikit-learn digits, 8x8 upscaled; 80/20 train/test split, 15 % of train for validation",
            "config_overrides": DIGITS_MODEL,
            "digits_flags": {k: v for k, v in DIGITS_FLAGS.items() if k != "output_dir"},
            "methods": list(methods),
            "seeds_planned": list(seeds),
            "seeds": done,
            "drop_ratios": list(DROP_RATIOS),
            "drop_seed": DROP_SEED,
            "torch_threads": torch.get_num_threads(),
            "extra_flags": list(extra),
        },
        "complete": len(done) == len(seeds),
        "results": results,
    }


def plot(result: dict[str, Any], name: str) -> None:
    """The robustness curve of a result (``digits_comparison`` -> ``digits_robustness.png``)."""
    if result["results"]:
        title = f"digits, default job, seeds {result['settings']['seeds']} (small-scale CPU evidence)"
        plot_robustness(result["results"], RESULTS_DIR / f"{name.replace('comparison', 'robustness')}.png", title)


def merge(names: Sequence[str], name: str) -> dict[str, Any]:
    """Merge result files of the same settings (runs split over processes by seed) into ``results/<name>.json``.

    The merged file keeps the environment of the parts (which must share a commit), not the merging checkout's.
    """
    parts = []
    for part in names:
        path = RESULTS_DIR / f"{part}.json"
        if not path.is_file():
            raise SystemExit(f"--merge: {path} not found")
        parts.append(json.loads(path.read_text()))
    same = ("config_overrides", "digits_flags", "methods", "drop_ratios", "drop_seed", "extra_flags")
    for part_name, part in zip(names[1:], parts[1:], strict=True):
        differ = [k for k in same if part["settings"].get(k) != parts[0]["settings"].get(k)]
        if part["environment"].get("commit") != parts[0]["environment"].get("commit"):
            differ.append("environment.commit")
        if differ:
            raise SystemExit(f"--merge: {part_name} differs from {names[0]} in {', '.join(differ)}")
    runs = [run for part in parts for entry in part["results"].values() for run in entry["runs"]]
    seeds = sorted({seed for part in parts for seed in part["settings"]["seeds_planned"]})
    methods = parts[0]["settings"]["methods"]
    result = payload(runs, methods, seeds, parts[0]["settings"]["extra_flags"])
    result["settings"]["torch_threads"] = sorted({p["settings"]["torch_threads"] for p in parts})
    result["settings"]["merged_from"] = list(names)
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps({"environment": parts[0]["environment"], **result}, indent=2) + "\n")
    print(f"wrote {path} ({len(result['settings']['seeds'])} seeds of {len(seeds)})")
    return result


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--name", default="digits_comparison")
    parser.add_argument("--merge", nargs="+", metavar="NAME", help="merge these result files into --name; no runs")
    args, extra = parser.parse_known_args(argv)
    if args.merge:
        plot(merge(args.merge, args.name), args.name)
        return
    logging.getLogger("transformers").setLevel(logging.ERROR)
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="mixpro-digits-cmp-") as tmp:
        for seed in args.seeds:
            for method in args.methods:
                run = run_one(method, seed, Path(tmp), extra)
                print(
                    f"{method:13s} seed {seed}: top-1 {run['accuracy']:.4f} top-5 {run['top5_accuracy']:.4f} "
                    f"ECE {run['ece']:.4f} -> {run['ece_calibrated']:.4f} (T {run['temperature']:.3f}) "
                    f"top-1@50% drop {run['robustness_top1']['0.5']:.4f} ({run['total_seconds']:.0f} s)",
                    flush=True,
                )
                runs.append(run)
            result = payload(runs, args.methods, args.seeds, extra)
            write_result(args.name, result)
            plot(result, args.name)


if __name__ == "__main__":
    main()
