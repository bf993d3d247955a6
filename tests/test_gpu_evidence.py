"""The GPU evidence driver (``benchmarks/gpu_evidence.py``), end to end on a CPU with a tiny budget, so that a
GPU session never fails on a bug a CPU could have found; and its planning pieces."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from benchmarks import cifar10, gpu_evidence

REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPT = REPO_ROOT / "benchmarks" / "gpu_evidence.py"


def write_cifar_like(folder: Path, train: int = 80, test: int = 40) -> Path:
    """A CIFAR-10-shaped Parquet export (``img`` {bytes, path} PNG 32x32, ``label`` 0-9), sorted by label."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, count in (("train", train), ("test", test)):
        blobs, labels = [], sorted(i % 10 for i in range(count))
        for label in labels:
            pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
            pixels[..., label % 3] = 25 * label  # a little signal per class
            buffer = io.BytesIO()
            Image.fromarray(pixels).save(buffer, format="PNG")
            blobs.append({"bytes": buffer.getvalue(), "path": None})
        pq.write_table(pa.table({"img": blobs, "label": labels}), folder / f"{split}.parquet")
    return folder


def run_driver(tmp_path: Path, out: Path, results: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, str(SCRIPT), "--out", str(out), "--results-dir", str(results), "--device", "cpu"]
    command += ["--tiny", "--data-dir", str(tmp_path / "cifar"), "--cache-dir", str(tmp_path / "cache"), *extra]
    return subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=REPO_ROOT)


def runs_files(out: Path) -> list[Path]:
    return sorted(out.glob("cifar10_runs_cpu_smoke_*.json"))


def test_driver_end_to_end_on_cpu_queues_runs_across_sessions(tmp_path: Path) -> None:
    write_cifar_like(tmp_path / "cifar")
    out, results = tmp_path / "out", tmp_path / "results"
    results.mkdir()

    first = run_driver(tmp_path, out, results, "--workers", "2", "--max-runs", "3")
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    names = sorted(p.name for p in out.iterdir())
    # what comes back from the GPU machine: at most 8 plain files, plain names, no PNG, nothing left behind
    assert len(names) <= 8 and all(re.fullmatch(r"[A-Za-z0-9._-]+", n) for n in names), names
    assert all((out / n).is_file() and (out / n).stat().st_size < 16 * 2**20 for n in names)
    for expected in ("train_step_cpu_tiny.json", "mixing_cpu.json", "cifar10_throughput_cpu_smoke.json"):
        assert expected in names, first.stdout[-3000:]
    assert "cifar10_budget_cpu_smoke.json" in names and "gpu_evidence.log" in names
    assert not [n for n in names if n.endswith((".tmp", ".png", ".job.json"))]

    speed = json.loads((out / "train_step_cpu_tiny.json").read_text())
    assert set(speed["median_ms"]) == {"none", "cutmix", "transmix", "maskmix", "mixpro", "naive"}
    throughput = json.loads((out / "cifar10_throughput_cpu_smoke.json").read_text())
    assert throughput["measured"]["eager_1"]["total_images_per_s"] > 0
    assert throughput["measured"]["eager_2"]["processes"] == 2
    budget = json.loads((out / "cifar10_budget_cpu_smoke.json").read_text())
    assert budget["settings"]["epochs"] == 2 and "compile" not in budget["settings"] and budget["reason"]

    (session,) = runs_files(out)
    record = json.loads(session.read_text())
    assert record["budget"] == budget["settings"] and record["smoke"] is True and record["failed"] == []
    assert [(r["method"], r["seed"]) for r in record["runs"]] == [("none", 0), ("mixup_cutmix", 0), ("transmix", 0)]
    for run in record["runs"]:
        assert run["complete"] and run["steps"] == 8  # 64 training images, batch 16, 2 epochs
        assert 0.0 <= run["accuracy"] <= run["top5_accuracy"] <= 1.0 and 0.0 <= run["ece"] <= 1.0
        assert list(run["robustness_top1"]) == [f"{0.1 * i:.1f}" for i in range(10)]
        assert run["robustness_top1"]["0.0"] == run["accuracy"]
    first_bytes = session.read_bytes()

    # the next session: speed and throughput are known, so it only takes the next pairs of the queue
    second = run_driver(tmp_path, out, results, "--max-runs", "2")
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "speed:" not in second.stdout and "probe " not in second.stdout
    assert session.read_bytes() == first_bytes  # nothing finished is rewritten
    newer = [p for p in runs_files(out) if p != session]
    assert len(newer) == 1
    assert [(r["method"], r["seed"]) for r in json.loads(newer[0].read_text())["runs"]] == [
        ("maskmix", 0),
        ("mixpro", 0),
    ]

    # a session with no time for a whole run starts none and records nothing
    third = run_driver(tmp_path, out, results, "--budget-s", "1")
    assert third.returncode == 0, third.stdout[-3000:] + third.stderr[-3000:]
    assert "would not finish in time" in third.stdout
    assert len(runs_files(out)) == 2


def test_queue_is_seed_major_then_ablations_then_more_seeds() -> None:
    order = gpu_evidence.queue(set())
    assert order[:6] == [(m, 0) for m in gpu_evidence.MAIN_METHODS] + [("none", 1)]
    main_three = 3 * len(gpu_evidence.MAIN_METHODS)
    assert order[main_three] == (gpu_evidence.ABLATIONS[0], 0)
    assert order[-1] == ("mixpro", 4) and len(order) == len(set(order))
    for spec in gpu_evidence.ABLATIONS:
        cifar10.parse_method(spec, cifar10.Settings())  # every ablation is a valid method spec
    assert gpu_evidence.queue({("none", 0), ("transmix", 0)})[:2] == [("mixup_cutmix", 0), ("maskmix", 0)]


def test_finished_pairs_count_only_runs_of_the_same_budget(tmp_path: Path) -> None:
    key = gpu_evidence.budget_key({"layers": 12, "epochs": 50, "compile": True, "eval_batch": 1000})
    assert key == {"layers": 12, "epochs": 50}
    for name, budget, method in (("a", key, "none"), ("b", {**key, "epochs": 60}, "mixpro")):
        payload = {"budget": budget, "runs": [{"method": method, "seed": 0}]}
        (tmp_path / f"cifar10_runs_cuda_{name}.json").write_text(json.dumps(payload))
    assert gpu_evidence.finished_pairs([tmp_path], "cuda", key) == {("none", 0)}
    assert gpu_evidence.finished_pairs([tmp_path], "cpu_smoke", key) == set()


def test_concurrent_rate_counts_the_common_window() -> None:
    # two processes, 10 steps/s each from t=0 and t=1; marks every 5 steps; batch 4 -> 80 images/s together
    marks = [[(s, 0.1 * s) for s in range(0, 101, 5)], [(s, 1.0 + 0.1 * s) for s in range(0, 101, 5)]]
    rate = gpu_evidence.concurrent_rate([{"step_marks": m} for m in marks], batch=4)
    assert rate == pytest.approx(80.0)
    assert gpu_evidence.concurrent_rate([{"step_marks": marks[0][:2]}], batch=4) is None


def test_plans_pick_what_finishes_the_most_runs() -> None:
    settings = cifar10.Settings(layers=12, epochs=1, batch=100)
    throughput = {
        "measured": {
            "eager_1": {"processes": 1, "compile": False, "layers": 12, "total_images_per_s": 1000.0,
                        "startup_seconds": 1.0},
            "eager_3": {"processes": 3, "compile": False, "layers": 12, "total_images_per_s": 2400.0,
                        "startup_seconds": 1.0},
        }
    }  # fmt: skip
    options = gpu_evidence.plans(throughput, settings, num_train=10_000, num_test=100)
    one, three = sorted(options, key=lambda p: p.processes)
    assert one.seconds_per_run == pytest.approx(1.0 + 10.0 + 10 * 100 / 3000 + 5)
    assert three.seconds_per_run > one.seconds_per_run
    assert gpu_evidence.runs_in(three, 100.0) > gpu_evidence.runs_in(one, 100.0)
    # the 6-layer candidate is estimated twice as fast as the measured 12-layer model
    half = gpu_evidence.plans(throughput, cifar10.Settings(layers=6, epochs=1, batch=100), 10_000, 100)
    assert min(p.seconds_per_run for p in half) < min(p.seconds_per_run for p in options)
    mode = gpu_evidence.tiny_mode("cpu")
    chosen, reason = gpu_evidence.choose_budget(mode, throughput, 64, 40)
    assert chosen == mode.budgets[0] and "runs per" in reason
    # a GPU budget that a session could run only once or twice: the smaller model
    slow = {"measured": {"eager_1": {**throughput["measured"]["eager_1"], "total_images_per_s": 20_000.0}}}
    gpu = gpu_evidence.gpu_mode("cuda")
    chosen, reason = gpu_evidence.choose_budget(gpu, slow, 50_000, 10_000)
    assert chosen.layers == 6 and "6 layers" in reason
    fast = {"measured": {"eager_1": {**throughput["measured"]["eager_1"], "total_images_per_s": 200_000.0}}}
    assert gpu_evidence.choose_budget(gpu, fast, 50_000, 10_000)[0].layers == 12
