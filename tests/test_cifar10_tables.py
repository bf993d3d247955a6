"""Tests of the GPU evidence's README tables (``make_tables.py``) and model card (``cifar10_card.py``), on
synthetic result files."""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from benchmarks import cifar10, cifar10_card, gpu_evidence, make_tables

BUDGET = gpu_evidence.budget_key(asdict(cifar10.Settings(epochs=50, batch=512, bf16=True)))
SMALL_BUDGET = gpu_evidence.budget_key(asdict(replace(cifar10.Settings(epochs=50, batch=512, bf16=True), layers=6)))
ENV = {"device": "NVIDIA H100 80GB HBM3", "commit": "abc1234", "torch": "2.9", "transformers": "5.0", "python": "3.11"}
# top-1 per (method, seed): mixup_cutmix is best, MixPro second
TOP1 = {
    "none": (0.70, 0.72),
    "mixup_cutmix": (0.86, 0.88),
    "transmix": (0.80, 0.81),
    "maskmix": (0.78, 0.80),
    "mixpro": (0.84, 0.85),
}


def run(method: str, seed: int, top1: float) -> dict[str, Any]:
    """One finished run as ``gpu_evidence`` records it; the drop ratios lose 5 points of top-1 per 10 %."""
    robustness = {f"{0.1 * i:.1f}": top1 - 0.05 * i for i in range(10)}
    return {
        "method": method,
        "seed": seed,
        "complete": True,
        "accuracy": top1,
        "top5_accuracy": min(1.0, top1 + 0.1),
        "ece": 0.01 * (seed + 1),
        "nll": 0.5,
        "robustness_top1": robustness,
        "steps": 4850,
        "final_train_loss": 1.2,
        "mix_stats": {},
        "train_seconds": 200.0,
        "images_per_s": 12000.0,
        "steady_images_per_s": 12500.0,
        "startup_seconds": 5.0,
        "eval_seconds": 4.0,
        "wall_seconds": 215.0,
        "compile": False,
    }


def runs_payload(
    runs: list[dict[str, Any]], budget: dict[str, Any] = BUDGET, smoke: bool = False, commit: str = "abc1234"
) -> dict[str, Any]:
    """A ``cifar10_runs_<tag>_<stamp>.json`` payload."""
    return {
        "environment": {**ENV, "commit": commit, "date": "2026-12-01T10:00:00+00:00", "machine": "x86_64"},
        "benchmark": "cifar10 runs",
        "smoke": smoke,
        "budget": budget,
        "data": {"num_train": 50000, "num_test": 10000, "source": "CIFAR-10 Parquet"},
        "plan": {"processes": 2, "compile": False, "seconds_per_run": 220.0},
        "runs": runs,
        "failed": [],
    }


def seed_runs(seed: int, top1: dict[str, tuple[float, float]] = TOP1) -> list[dict[str, Any]]:
    return [run(method, seed, values[seed]) for method, values in top1.items()]


def write(directory: Path, files: dict[str, dict[str, Any]]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, payload in files.items():
        (directory / name).write_text(json.dumps(payload))
    return directory


def tables(tmp_path: Path, files: dict[str, dict[str, Any]], *extra: str, card: Path | None = None) -> tuple[int, str]:
    """Run ``make_tables.main`` on ``files`` with a temporary README and card path; exit code and section."""
    results = write(tmp_path / "results", files)
    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n\n{make_tables.START}\nold\n{make_tables.END}\n")
    card = card or tmp_path / "cards" / "mixpro-vit-cifar10.md"
    code = make_tables.main(["--results-dir", str(results), "--readme", str(readme), "--card", str(card), *extra])
    return code, readme.read_text().split(make_tables.START)[1].split(make_tables.END)[0]


def row(section: str, method: str) -> str:
    return next(line for line in section.splitlines() if line.startswith(f"| {method} |"))


def test_runs_tag() -> None:
    assert make_tables.runs_tag("cifar10_runs_cuda_20261201T100000Z.json") == "cuda"
    assert make_tables.runs_tag("cifar10_runs_cpu_smoke_20261201T100000Zx.json") == "cpu_smoke"


def test_two_files_of_one_budget_merge_into_one_table_with_mean_and_std(tmp_path: Path) -> None:
    files = {
        "cifar10_runs_cuda_20261201T100000Z.json": runs_payload(seed_runs(0)),
        "cifar10_runs_cuda_20261202T100000Z.json": runs_payload(seed_runs(1), commit="def5678"),
    }
    code, section = tables(tmp_path, files)
    assert code == 0
    assert section.count("**CIFAR-10 from scratch, GPU runs") == 1
    assert "INCOMPLETE" not in section and "every main method has at least 2 seeds" in section
    top1 = statistics.fmean(TOP1["mixpro"]), statistics.stdev(TOP1["mixpro"])
    assert f"{100 * top1[0]:.2f} ± {100 * top1[1]:.2f}" == "84.50 ± 0.71"
    # n, top-1, top-5, ECE × 100 (0.01 and 0.02), top-1 at 50 % (-25 points) and 80 % (-40 points) dropped
    assert (
        row(section, "mixpro")
        == "| mixpro | 2 | 84.50 ± 0.71 | 94.50 ± 0.71 | 1.50 ± 0.71 | 59.50 ± 0.71 | 44.50 ± 0.71 |"
    )
    assert row(section, "none").startswith("| none | 2 | 71.00 ± 1.41 |")
    methods = [line.split("|")[1].strip() for line in section.splitlines() if line.startswith("| ")][2:]
    assert methods == list(gpu_evidence.MAIN_METHODS)
    # the header names the budget, the data, the files with their devices and commits
    assert "ViT 12L/192d/3h (MLP 768), patch 4, 50 epochs, batch 512, lr 0.0005 (1e-3 × batch/1024)" in section
    assert "bf16 autocast" in section and "50000 train / 10000 test images" in section
    for name in files:
        assert f"`{name}`" in section
    assert "commit `abc1234`" in section and "commit `def5678`" in section and "device NVIDIA H100" in section
    assert "`benchmarks/results/cifar10_robustness_cuda.png`" in section


def test_different_budgets_give_two_tables_and_two_plots(tmp_path: Path) -> None:
    files = {
        "cifar10_runs_cuda_20261201T100000Z.json": runs_payload(seed_runs(0)),
        "cifar10_runs_cuda_20261202T100000Z.json": runs_payload(seed_runs(1), budget=SMALL_BUDGET),
    }
    code, section = tables(tmp_path, files)
    assert code == 0
    assert section.count("**CIFAR-10 from scratch, GPU runs") == 2
    assert "ViT 12L/192d/3h" in section and "ViT 6L/192d/3h" in section
    assert "| mixpro | 1 | 84.00 ± n/a |" in section and "| mixpro | 1 | 85.00 ± n/a |" in section
    results = tmp_path / "results"
    assert (results / "cifar10_robustness_cuda.png").is_file()
    assert (results / "cifar10_robustness_cuda_budget2.png").is_file()
    assert "cifar10_robustness_cuda_budget2.png" in section


def test_incomplete_marker_until_every_main_method_has_two_seeds(tmp_path: Path) -> None:
    one = {"cifar10_runs_cuda_20261201T100000Z.json": runs_payload(seed_runs(0)[:4])}  # mixpro not run yet
    _, section = tables(tmp_path, one)
    assert "INCOMPLETE: fewer than 2 seeds for none, mixup_cutmix, transmix, maskmix, mixpro" in section
    assert row(section, "mixpro").startswith("| mixpro | 0 | not run yet |")
    assert row(section, "none").startswith("| none | 1 | 70.00 ± n/a |")
    assert "Winner: not stated until every main method has at least 2 seeds." in section
    assert "MixPro is" not in section
    # second seed of everything but mixpro: still incomplete, for mixpro only
    partial = {**one, "cifar10_runs_cuda_20261202T100000Z.json": runs_payload(seed_runs(1)[:4] + seed_runs(0)[4:])}
    _, section = tables(tmp_path, partial)
    assert "INCOMPLETE: fewer than 2 seeds for mixpro" in section
    complete = {**partial, "cifar10_runs_cuda_20261203T100000Z.json": runs_payload(seed_runs(1)[4:])}
    _, section = tables(tmp_path, complete)
    assert "INCOMPLETE" not in section and "Winner by mean top-1" in section


def test_smoke_runs_files_are_left_out_of_the_table_and_the_unknown_list(tmp_path: Path) -> None:
    smoke = runs_payload([run("mixpro", 0, 0.99), run("mixpro", 5, 0.99)], smoke=True)
    smoke["budget"] = {**BUDGET, "layers": 2}
    files = {
        "cifar10_runs_cuda_20261201T100000Z.json": runs_payload(seed_runs(0) + seed_runs(1)),
        "cifar10_runs_cpu_smoke_20261201T100000Z.json": smoke,
    }
    code, section = tables(tmp_path, files)
    assert code == 0
    assert section.count("**CIFAR-10 from scratch, GPU runs") == 1
    assert row(section, "mixpro").startswith("| mixpro | 2 | 84.50 ± 0.71 |")
    assert "99.00" not in section and "ViT 2L" not in section
    assert "Result files without a table" not in section
    assert (
        "smoke check (not evidence, left out of the tables): `cifar10_runs_cpu_smoke_20261201T100000Z.json`" in section
    )
    assert not (tmp_path / "results" / "cifar10_robustness_cpu_smoke.png").exists()
    # only smoke files: no GPU table, no plot, no card
    card = tmp_path / "only_smoke_card.md"
    only = {"cifar10_runs_cpu_smoke_20261201T100000Z.json": smoke}
    code, section = tables(tmp_path / "only", only, card=card)
    assert code == 0 and "GPU runs" not in section and "Result files without a table" not in section
    assert not card.exists() and not list((tmp_path / "only" / "results").glob("*.png"))


def test_winner_line_says_plainly_when_mixpro_is_not_best(tmp_path: Path) -> None:
    files = {"cifar10_runs_cuda_20261201T100000Z.json": runs_payload(seed_runs(0) + seed_runs(1))}
    _, section = tables(tmp_path, files)
    assert "Winner by mean top-1 among the main methods: **mixup_cutmix** (87.00 %)." in section
    assert "MixPro is not best: it ranks 2 of 5, 2.50 points of top-1 below mixup_cutmix." in section
    best = {**TOP1, "mixpro": (0.95, 0.96)}
    files = {"cifar10_runs_cuda_20261201T100000Z.json": runs_payload(seed_runs(0, best) + seed_runs(1, best))}
    _, section = tables(tmp_path, files)
    assert "**mixpro** (95.50 %). MixPro is best." in section and "not best" not in section


def test_ablations_follow_the_main_methods_in_order(tmp_path: Path) -> None:
    extra = [run("other:x=1", 0, 0.5), run("mixpro:alpha_strategy=linear", 0, 0.8), run("mixpro:mask_scale=1", 0, 0.8)]
    files = {"cifar10_runs_cuda_20261201T100000Z.json": runs_payload(seed_runs(0) + extra)}
    _, section = tables(tmp_path, files)
    methods = [line.split("|")[1].strip() for line in section.splitlines() if line.startswith("| ")][2:]
    assert methods == [*gpu_evidence.MAIN_METHODS, "mixpro:mask_scale=1", "mixpro:alpha_strategy=linear", "other:x=1"]


def test_robustness_plot_written_in_normal_mode_only(tmp_path: Path) -> None:
    files = {"cifar10_runs_cuda_20261201T100000Z.json": runs_payload(seed_runs(0) + seed_runs(1))}
    results = write(tmp_path / "results", files)
    readme = tmp_path / "README.md"
    readme.write_text(f"{make_tables.START}\n{make_tables.END}\n")
    args = ["--results-dir", str(results), "--readme", str(readme), "--card", str(tmp_path / "card.md")]
    plot = results / "cifar10_robustness_cuda.png"
    assert make_tables.main([*args, "--print"]) == 0 and not plot.exists()
    assert make_tables.main([*args, "--check"]) == 1 and not plot.exists()
    assert make_tables.main(args) == 0
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert make_tables.main([*args, "--check"]) == 0


def test_card_of_the_best_mixpro_run(tmp_path: Path) -> None:
    files = {
        "cifar10_runs_cuda_20261201T100000Z.json": runs_payload(seed_runs(0)),
        "cifar10_runs_cuda_20261202T100000Z.json": runs_payload(seed_runs(1), commit="def5678"),
    }
    card = cifar10_card.render_card(list(files.values()))
    assert card is not None
    front, body = card.split("---\n", 2)[1:]
    meta = yaml.safe_load(front)
    assert meta["library_name"] == "transformers"
    assert meta["tags"] == ["image-classification", "vision-transformer", "mixpro"]
    assert meta["datasets"] == ["cifar10"] and meta["metrics"] == ["accuracy"]
    result = meta["model-index"][0]["results"][0]
    assert result["dataset"]["type"] == "cifar10" and result["dataset"]["split"] == "test"
    assert result["metrics"][0] == {"type": "accuracy", "value": 0.85, "name": "Top-1 accuracy"}
    assert "| top-1 accuracy | 85.00 % |" in body and "| top-5 accuracy | 95.00 % |" in body
    assert "seed 1" in body and "commit: `def5678`" in body.lower()
    assert "12 layers, hidden 192, 3 heads" in body and "from scratch" in body and "50000 training images" in body
    assert "| top-1 | 85.00 % | 80.00 % |" in body  # robustness at 0 and 10 % dropped
    assert "| mixup_cutmix | 2 | 87.00 ± 1.41 |" in body and "MixPro is not best" in body
    assert "Not published" in body and "bash benchmarks/gpu_run.sh" in body and "GPU evidence" in body
    # make_tables writes it where --card says
    path = tmp_path / "cards" / "mixpro-vit-cifar10.md"
    code, _ = tables(tmp_path, files, card=path)
    assert code == 0 and path.read_text() == card


def test_no_card_without_a_non_smoke_mixpro_run(tmp_path: Path) -> None:
    without = runs_payload(seed_runs(0)[:4] + [run("mixpro:mask_scale=1", 0, 0.9)])
    smoke = runs_payload([run("mixpro", 0, 0.9)], smoke=True)
    assert cifar10_card.render_card([without, smoke]) is None
    assert cifar10_card.render_card([]) is None
    # an existing card is kept when there is nothing to render
    path = tmp_path / "card.md"
    path.write_text("an older card\n")
    code, _ = tables(tmp_path, {"cifar10_runs_cuda_20261201T100000Z.json": without}, card=path)
    assert code == 0 and path.read_text() == "an older card\n"


def test_throughput_and_budget_renderers(tmp_path: Path) -> None:
    settings = asdict(cifar10.Settings(epochs=50, batch=512, bf16=True))
    throughput = {
        "environment": ENV,
        "benchmark": "cifar10 throughput",
        "smoke": False,
        "method": "mixpro",
        "settings": {"budgets": [settings, {**settings, "layers": 6}], "probe_seconds": 12.0},
        "measured": {
            "eager_1": {
                "processes": 1,
                "compile": False,
                "layers": 12,
                "total_images_per_s": 11000.4,
                "startup_seconds": 6.25,
            },
            "compile_1": {
                "processes": 1,
                "compile": True,
                "layers": 12,
                "total_images_per_s": None,
                "startup_seconds": 60.0,
            },
        },
    }
    budget = {
        "environment": ENV,
        "benchmark": "cifar10 budget",
        "smoke": False,
        "settings": BUDGET,
        "reason": "12 layers: estimated 240 s per run <= 300 s",
    }
    files = {"cifar10_throughput_cuda.json": throughput, "cifar10_budget_cuda.json": budget}
    code, section = tables(tmp_path, files)
    assert code == 0 and "Result files without a table" not in section
    assert "**CIFAR-10 training throughput, probe**" in section and "ViT 12L/192d/3h, ViT 6L/192d/3h" in section
    assert "| eager_1 | 1 | no | 12 | 11000 | 6.2 |" in section
    assert "| compile_1 | 1 | yes | 12 | n/a | 60.0 |" in section
    assert "**CIFAR-10 budget of the GPU runs**: ViT 12L/192d/3h (MLP 768), patch 4, 50 epochs, batch 512" in section
    assert "Why: 12 layers: estimated 240 s per run <= 300 s." in section and "SMOKE" not in section
    line = make_tables.cifar10_budget_line("cifar10_budget_cpu_smoke.json", {**budget, "smoke": True})
    assert "(SMOKE, not evidence)" in line
    empty = make_tables.cifar10_throughput_table("t.json", {**throughput, "smoke": True, "measured": {}})
    assert "SMOKE" in empty and "Nothing was measured." in empty


def test_existing_smoke_accuracy_file_still_renders_next_to_the_gpu_runs(tmp_path: Path) -> None:
    summary = {
        "mean": {"accuracy": 0.5, "top5_accuracy": 0.9, "ece": 0.1, "drop_0.5": 0.3},
        "std": {"accuracy": 0.01, "top5_accuracy": 0.0, "ece": 0.02, "drop_0.5": 0.05},
    }
    accuracy = {
        "environment": ENV,
        "benchmark": "cifar10 accuracy",
        "smoke": True,
        "settings": {"layers": 2, "hidden": 64, "heads": 2, "total_steps": 30, "batch": 64, "seeds": [0, 1]},
        "results": {"mixpro": {"runs": [], **summary}},
    }
    files = {
        "cifar10_accuracy_cpu_smoke.json": accuracy,
        "cifar10_runs_cuda_20261201T100000Z.json": runs_payload(seed_runs(0)),
    }
    code, section = tables(tmp_path, files)
    assert code == 0
    assert "SMOKE RUN" in section and "| mixpro | 50.00 ± 1.00 |" in section
    assert section.index("GPU runs") < section.index("SMOKE RUN")


@pytest.mark.parametrize("duplicate_top1", [0.10, 0.99])
def test_a_run_found_twice_counts_once(tmp_path: Path, duplicate_top1: float) -> None:
    files = {
        "cifar10_runs_cuda_20261201T100000Z.json": runs_payload(seed_runs(0)),
        "cifar10_runs_cuda_20261202T100000Z.json": runs_payload([run("mixpro", 0, duplicate_top1)]),
    }
    _, section = tables(tmp_path, files)
    assert row(section, "mixpro").startswith("| mixpro | 1 | 84.00 ± n/a |")
    assert "Found in more than one file (the first kept): mixpro seed 0." in section
