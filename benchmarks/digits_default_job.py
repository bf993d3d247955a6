"""The embedded default job (``mixpro-train`` with no arguments) measured: test top-1 over seeds, and wall time.

Runs ``mixpro-train --seed S --output_dir <tmp>`` as a subprocess for every seed (the whole command: start,
training, evaluation, figures, model card, exit), reads each run's ``all_results.json``, and writes
``results/digits_default_job.json``: the per-seed test top-1 / top-5 / ECE, their mean and sample std (ddof=1),
the wall time of every run, and the median wall time of the first ``--timed`` runs. The timing is only
meaningful on a quiet machine: the 1-minute load average before each run is recorded beside it (and
``OMP_NUM_THREADS``, which the runs inherit: ``OMP_NUM_THREADS=1`` runs two jobs side by side on 2 cores).

    python benchmarks/digits_default_job.py                  # seeds 0-4, timings of the first 3
    python benchmarks/digits_default_job.py --seeds 0 1 --timed 1
    python benchmarks/digits_default_job.py --seeds 0 1 2 --update   # retime 3 seeds, keep the others
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
from benchmarks.common import RESULTS_DIR, write_result  # noqa: E402
from mixpro_hf.arguments import DIGITS_FLAGS, DIGITS_MODEL  # noqa: E402

TARGET_TOP1, TARGET_WALL_S = 0.90, 180.0


def mixpro_train() -> str:
    """The ``mixpro-train`` beside this Python (the venv's console script), else the one on PATH."""
    beside = Path(sys.executable).with_name("mixpro-train")
    return str(beside) if beside.exists() else shutil.which("mixpro-train") or "mixpro-train"


def run_seed(seed: int, output_dir: Path) -> dict[str, Any]:
    """One ``mixpro-train --seed S --output_dir D``: its wall time, load average before it and test metrics."""
    load = os.getloadavg()[0]
    start = time.perf_counter()
    proc = subprocess.run(
        [mixpro_train(), "--seed", str(seed), "--output_dir", str(output_dir)],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
    )
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"seed {seed}: mixpro-train exited {proc.returncode}\n{proc.stderr[-3000:]}")
    results = json.loads((output_dir / "all_results.json").read_text())
    run = {"seed": seed, "wall_s": round(wall, 2), "load_average_1min_before": round(load, 2)}
    run.update({k: results[k] for k in ("test_accuracy", "test_top5_accuracy", "test_ece", "eval_accuracy")})
    run["train_runtime_s"] = results.get("train_runtime")
    print(json.dumps(run))
    return run


def summarize(runs: list[dict[str, Any]], timed: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean ± sample std of the test metrics, the median wall time of the ``timed`` runs, the verdicts."""
    top1 = [r["test_accuracy"] for r in runs]
    walls = [r["wall_s"] for r in timed]
    std = statistics.stdev(top1) if len(top1) > 1 else 0.0
    return {
        "test_top1_mean": statistics.mean(top1),
        "test_top1_std": std,
        "test_top1_min": min(top1),
        "test_ece_mean": statistics.mean(r["test_ece"] for r in runs),
        "timed_wall_s": walls,
        "median_wall_s": statistics.median(walls),
        "checks": {
            "every_seed_top1_at_least_0.90": min(top1) >= TARGET_TOP1,
            "median_wall_at_most_180s": statistics.median(walls) <= TARGET_WALL_S,
        },
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--timed", type=int, default=3, help="median wall time over the first N runs")
    parser.add_argument("--name", default="digits_default_job")
    parser.add_argument("--note", default=None, help="a remark stored with the results (e.g. the machine was busy)")
    parser.add_argument(
        "--update",
        action="store_true",
        help="rerun only --seeds and time them: they replace those seeds' runs in the existing result file, whose "
        "other seeds are kept (e.g. to retime on a quiet machine)",
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="mixpro-digits-") as tmp:
        new = [run_seed(seed, Path(tmp) / f"seed{seed}") for seed in args.seeds]
    timed = new[: args.timed]
    runs = new
    if args.update:
        old = json.loads((RESULTS_DIR / f"{args.name}.json").read_text())
        runs = sorted([r for r in old["runs"] if r["seed"] not in args.seeds] + new, key=lambda r: r["seed"])
    payload = {
        "benchmark": "digits default job",
        "settings": {
            "command": "mixpro-train --seed S --output_dir <tmp>",
            "config_overrides": DIGITS_MODEL,
            "digits_flags": DIGITS_FLAGS,
            "seeds": [r["seed"] for r in runs],
            "timed_seeds": [r["seed"] for r in timed],
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
            "note": args.note,
        },
        "runs": runs,
        **summarize(runs, timed),
    }
    write_result(args.name, payload)


if __name__ == "__main__":
    main()
