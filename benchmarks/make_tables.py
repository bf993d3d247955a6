"""Render ``benchmarks/results/*.json`` as Markdown tables and put them into README.md.

The tables replace what stands between the markers ``<!-- results:start -->`` and
``<!-- results:end -->`` in the README. Tables: mixing cost (``bench_mixing.py``), training step
(``bench_train_step.py``), CIFAR-10 accuracy (``cifar10.py``; smoke runs are marked as such), the GPU
evidence (``gpu_evidence.py``: the ``cifar10_runs_<tag>_<stamp>.json`` files of every session merged into one
table per budget, plus its throughput probe and budget choice), the default digits job
(``digits_default_job.py``) and the digits comparison (``digits.py``). Each table names the device and the
commit its numbers came from. The output holds no dates, so it only changes when the results do.

In the normal mode (neither ``--check`` nor ``--print``) it also draws the robustness plot of the merged GPU runs
(``benchmarks/results/cifar10_robustness_<tag>.png``) and writes the model card of the best MixPro run
(``model_cards/mixpro-vit-cifar10.md``, :mod:`benchmarks.cifar10_card`) when there is one.

    python benchmarks/make_tables.py            # rewrite the README section (and the plot and card)
    python benchmarks/make_tables.py --check    # exit 1 if the README section is out of date
    python benchmarks/make_tables.py --print    # print the tables only
    python benchmarks/make_tables.py --card PATH  # the model card elsewhere (the tests)

Exit codes: 0 done / up to date, 1 README out of date (``--check``), 2 markers missing (the tables
are printed).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # ``python benchmarks/make_tables.py``: make ``benchmarks`` importable
    sys.path.insert(0, str(REPO_ROOT))
START = "<!-- results:start -->"
END = "<!-- results:end -->"
# the README's "Robustness evaluation" example: the table of benchmarks/evaluate_digits.py
EVALUATE_START = "<!-- evaluate-digits:start -->"
EVALUATE_END = "<!-- evaluate-digits:end -->"
EVALUATE_BENCHMARK = "mixpro-evaluate digits"
# the README's "Multi-label images and the BCE loss" example: the table of benchmarks/digits_multilabel.py
MULTILABEL_START = "<!-- digits-multilabel:start -->"
MULTILABEL_END = "<!-- digits-multilabel:end -->"
MULTILABEL_BENCHMARK = "digits multi-label comparison"
CARD_PATH = REPO_ROOT / "model_cards" / "mixpro-vit-cifar10.md"
RUNS_PREFIX = "cifar10_runs_"
MIN_SEEDS = 2  # seeds per main method before the GPU table states a winner


def load_results(results_dir: Path) -> list[tuple[str, dict[str, Any]]]:
    """``(file name, payload)`` of every JSON result, sorted by name."""
    out = []
    for path in sorted(results_dir.glob("*.json")):
        try:
            out.append((path.name, json.loads(path.read_text())))
        except json.JSONDecodeError as error:
            raise SystemExit(f"{path}: not valid JSON ({error})") from error
    return out


def _source(name: str, payload: dict[str, Any]) -> str:
    env = payload.get("environment", {})
    device, commit, torch = env.get("device", "?"), env.get("commit", "?"), env.get("torch", "?")
    return f"`{name}`: device {device}, commit `{commit}`, torch {torch}"


def _fmt(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def mixing_table(name: str, payload: dict[str, Any]) -> str:
    s = payload.get("settings", {})
    lines = [
        f"**Mixing cost per batch** ({s.get('batch')}×3×{s.get('size')}×{s.get('size')} float32, patch "
        f"{s.get('patch')}, median of {s.get('rounds')} interleaved rounds). {_source(name, payload)}",
        "",
        "| variant | median ms | × timm blend |",
        "| --- | ---: | ---: |",
    ]
    for variant, ms in payload["median_ms"].items():
        lines.append(f"| {variant} | {ms:.2f} | {payload['ratio_to_timm_blend'][variant]:.2f} |")
    return "\n".join(lines)


def train_step_table(name: str, payload: dict[str, Any]) -> str:
    s = payload.get("settings", {})
    precision = "bf16 autocast" if s.get("bf16") else "float32"
    lines = [
        f"**Training step** (forward + backward + AdamW; {s.get('model')}, batch {s.get('batch')}, {precision}, "
        f"median of {s.get('steps')} interleaved steps). {_source(name, payload)}",
        "",
        "| variant | median ms | images/s | × cutmix | peak memory MB |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for variant, ms in payload["median_ms"].items():
        lines.append(
            f"| {variant} | {ms:.1f} | {payload['images_per_s'][variant]:.1f} | "
            f"{payload['ratio_to_cutmix'][variant]:.3f} | {_fmt(payload['peak_memory_mb'].get(variant), 0)} |"
        )
    checks = payload.get("checks", {})
    verdicts = [
        f"{key} = {c['value']:.3f} (target {c['target']}: {'pass' if c['pass'] else 'FAIL'})"
        for key, c in checks.items()
        if c.get("target")
    ]
    if verdicts:
        lines += ["", "Targets: " + "; ".join(verdicts) + "."]
    note = payload.get("peak_memory_note")
    if note:
        lines += ["", f"Peak memory: {note}."]
    return "\n".join(lines)


def _pm(entry: dict[str, Any], key: str) -> str:
    return f"{100 * entry['mean'][key]:.2f} ± {100 * entry['std'][key]:.2f}"


def cifar_table(name: str, payload: dict[str, Any]) -> str:
    s = payload.get("settings", {})
    smoke = payload.get("smoke", True)
    label = "SMOKE RUN: tiny budget, not evidence" if smoke else "full run"
    model = f"ViT {s.get('layers')}L/{s.get('hidden')}d/{s.get('heads')}h"
    seeds = s.get("seeds", [])
    lines = [
        f"**CIFAR-10 from scratch, {label}** ({model}, {s.get('total_steps')} steps of {s.get('batch')}, "
        f"{s.get('num_train')} train / {s.get('num_test')} test images, seeds {seeds}; mean ± std over seeds, %). "
        f"{_source(name, payload)}",
        "",
        "| method | top-1 | top-5 | ECE | top-1, 50 % patches dropped | top-1, 80 % dropped |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for spec, entry in payload["results"].items():
        mean = entry["mean"]
        cells = [_pm(entry, "accuracy"), _pm(entry, "top5_accuracy"), _pm(entry, "ece")]
        cells += [_pm(entry, key) if key in mean else "n/a" for key in ("drop_0.5", "drop_0.8")]
        lines.append(f"| {spec} | " + " | ".join(cells) + " |")
    plot = name.replace("cifar10_accuracy_", "cifar10_robustness_").replace(".json", ".png")
    lines += ["", f"Robustness curve: `benchmarks/results/{plot}`."]
    return "\n".join(lines)


def input_pipeline_table(name: str, payload: dict[str, Any]) -> str:
    """Images/s of the 224² training recipe's data loader, by number of workers, and decode/augment alone."""
    s = payload.get("settings", {})
    load = s.get("load_average_1_5_15", ["?"])[0]
    lines = [
        f"**Input pipeline, 224² recipe on CPU** (JPEG decode + RandAugment + erasing, batch {s.get('batch')}, "
        f"{s.get('source')}; load average {load} when measured). {_source(name, payload)}",
        "",
        "| loader workers | images/s |",
        "| ---: | ---: |",
    ]
    for workers, rate in payload.get("images_per_s_by_workers", {}).items():
        lines.append(f"| {workers} | {_fmt(rate)} |")
    decode = "; ".join(f"{k}: {_fmt(v, 0)}/s" for k, v in payload.get("decode_only_images_per_s", {}).items())
    lines += [
        "",
        f"Decode alone (one core): {decode}. Augmentation alone: {_fmt(payload.get('augment_only_images_per_s'), 0)}"
        f"/s. ImageNet-size estimate: {_fmt(payload.get('imagenet_estimate_images_per_s_per_worker'), 0)} images/s "
        "per worker.",
    ]
    return "\n".join(lines)


def _pct(entry: dict[str, Any], key: str) -> str:
    return f"{100 * entry['mean'][key]:.1f} ± {100 * entry['std'][key]:.1f}"


def digits_default_job_table(name: str, payload: dict[str, Any]) -> str:
    """``mixpro-train`` with no arguments: test top-1 per seed, mean ± std, and the median wall time."""
    s, runs = payload.get("settings", {}), payload.get("runs", [])
    checks = payload.get("checks", {})
    verdict = "; ".join(f"{k}: {'pass' if v else 'FAIL'}" for k, v in checks.items())
    lines = [
        f"**The default job** (`mixpro-train` with no arguments: MixPro, ViT `{s.get('config_overrides')}`, "
        f"{s.get('digits_flags', {}).get('num_train_epochs')} epochs on scikit-learn's digits; whole command "
        f"timed, median of {len(payload.get('timed_wall_s', []))} runs). {_source(name, payload)}",
        "",
        "| seed | test top-1 % | test ECE | wall time s |",
        "| ---: | ---: | ---: | ---: |",
    ]
    for run in runs:
        top1, ece, wall = 100 * run["test_accuracy"], run["test_ece"], run["wall_s"]
        lines.append(f"| {run['seed']} | {top1:.1f} | {ece:.3f} | {wall:.0f} |")
    lines += [
        "",
        f"Test top-1 {100 * payload['test_top1_mean']:.1f} ± {100 * payload['test_top1_std']:.1f} % over "
        f"{len(runs)} seeds (min {100 * payload['test_top1_min']:.1f} %); median wall time "
        f"{payload['median_wall_s']:.0f} s (seeds {s.get('timed_seeds')}). Targets ({verdict}).",
    ]
    if s.get("note"):
        lines[-1] += f" Note: {s['note']}."
    return "\n".join(lines)


def digits_comparison_table(name: str, payload: dict[str, Any]) -> str:
    """The five methods on digits with the default job's model and budget (small-scale CPU evidence)."""
    s = payload.get("settings", {})
    seeds = s.get("seeds", [])
    planned = s.get("seeds_planned", seeds)
    status = "" if payload.get("complete") else f", incomplete: {len(seeds)} of {len(planned)} seeds"
    lines = [
        f"**Digits, small-scale CPU evidence{status}** (the default job's ViT `{s.get('config_overrides')}` and "
        f"budget, {s.get('digits_flags', {}).get('num_train_epochs')} epochs; only `--mix_method` differs; "
        f"seeds {seeds}; test split; mean ± std over seeds, %, ECE × 100; calibrated: temperature scaling fitted "
        f"on the validation split). {_source(name, payload)}",
        "",
        "| method | top-1 | top-5 | ECE | ECE, calibrated | top-1, 50 % patches dropped | top-1, 80 % dropped |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for spec, entry in payload["results"].items():
        keys = ("accuracy", "top5_accuracy", "ece", "ece_calibrated", "drop_0.5", "drop_0.8")
        cells = [_pct(entry, key) if key in entry["mean"] else "n/a" for key in keys]
        lines.append(f"| {spec} | " + " | ".join(cells) + " |")
    plot = name.replace("digits_comparison", "digits_robustness").replace(".json", ".png")
    lines += ["", f"Robustness curve (0-90 % of the patches dropped): `benchmarks/results/{plot}`."]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# GPU evidence (gpu_evidence.py): the runs of every session merged per budget, throughput probe, budget


def _evidence_modules() -> tuple[Any, Any]:
    """``benchmarks.cifar10`` and ``benchmarks.gpu_evidence``, imported on first use (they import torch)."""
    from benchmarks import cifar10, gpu_evidence

    return cifar10, gpu_evidence


def runs_tag(name: str) -> str:
    """``cifar10_runs_<tag>_<stamp>.json`` -> ``<tag>`` (a tag may hold underscores, a stamp does not)."""
    stem = name.removeprefix(RUNS_PREFIX).removesuffix(".json")
    return stem.rsplit("_", 1)[0] if "_" in stem else stem


@dataclass
class RunGroup:
    """The runs of every non-smoke ``"cifar10 runs"`` file of one budget, merged by method."""

    budget: dict[str, Any]
    files: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    runs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # method -> its runs, by seed
    duplicates: list[tuple[str, int]] = field(default_factory=list)  # (method, seed) met again: first one kept

    @property
    def tag(self) -> str:
        """The file-name tag of the group's first file (``cuda``)."""
        return runs_tag(self.files[0][0]) if self.files else "?"

    def summaries(self) -> dict[str, dict[str, dict[str, float]]]:
        """``cifar10.summarize`` (mean and sample std over seeds) of every method with runs."""
        cifar10, _ = _evidence_modules()
        return {method: cifar10.summarize(runs) for method, runs in self.runs.items() if runs}


def is_smoke_runs(payload: dict[str, Any]) -> bool:
    """Whether a ``"cifar10 runs"`` file is from a smoke check (no ``smoke`` key counts as smoke)."""
    return bool(payload.get("smoke", True))


def cifar10_run_groups(results: Sequence[tuple[str, dict[str, Any]]]) -> list[RunGroup]:
    """The complete runs of the non-smoke ``"cifar10 runs"`` files, grouped by identical ``budget`` (in the
    order of the files; a (method, seed) found in two files of a budget counts once, from the first file)."""
    groups: dict[str, RunGroup] = {}
    for name, payload in results:
        if payload.get("benchmark") != "cifar10 runs" or is_smoke_runs(payload):
            continue
        budget = payload.get("budget", {})
        group = groups.setdefault(json.dumps(budget, sort_keys=True), RunGroup(budget))
        group.files.append((name, payload))
        for run in payload.get("runs", []):
            if not run.get("complete", True) or "accuracy" not in run:
                continue
            seen = group.runs.setdefault(run["method"], [])
            if any(other["seed"] == run["seed"] for other in seen):
                group.duplicates.append((run["method"], run["seed"]))
                continue
            seen.append(run)
    for group in groups.values():
        for runs in group.runs.values():
            runs.sort(key=lambda run: run["seed"])
    return list(groups.values())


def order_methods(methods: Sequence[str] | set[str]) -> list[str]:
    """Main methods in ``gpu_evidence.MAIN_METHODS`` order, then ``ABLATIONS`` in order, then the rest sorted."""
    _, gpu_evidence = _evidence_modules()
    known = [*gpu_evidence.MAIN_METHODS, *gpu_evidence.ABLATIONS]
    return [m for m in known if m in methods] + sorted(m for m in methods if m not in known)


def incomplete_methods(group: RunGroup) -> list[str]:
    """Main methods with fewer than ``MIN_SEEDS`` seeds in ``group``."""
    _, gpu_evidence = _evidence_modules()
    return [m for m in gpu_evidence.MAIN_METHODS if len(group.runs.get(m, [])) < MIN_SEEDS]


def winner_line(group: RunGroup) -> str:
    """Which main method has the best mean top-1 and whether it is MixPro; stated only once every main method
    has ``MIN_SEEDS`` seeds."""
    if incomplete_methods(group):
        return f"Winner: not stated until every main method has at least {MIN_SEEDS} seeds."
    _, gpu_evidence = _evidence_modules()
    summaries = group.summaries()
    main = list(gpu_evidence.MAIN_METHODS)
    mean = {m: summaries[m]["mean"]["accuracy"] for m in main}
    std = {m: summaries[m]["std"]["accuracy"] for m in main}
    ranked = sorted(main, key=lambda m: -mean[m])
    best = mean[ranked[0]]
    leaders = [m for m in ranked if mean[m] == best]
    if leaders == ["mixpro"]:
        verdict = "MixPro is best."
    elif "mixpro" in leaders:
        verdict = "MixPro ties for best with " + ", ".join(m for m in leaders if m != "mixpro") + "."
    else:
        gap = 100 * (best - mean["mixpro"])
        verdict = (
            f"MixPro is not best: it ranks {ranked.index('mixpro') + 1} of {len(main)}, {gap:.2f} points of "
            f"top-1 below {ranked[0]}."
        )
    runner_up = ranked[len(leaders)] if len(leaders) < len(ranked) else None
    if runner_up is not None and best - mean[runner_up] <= max(std[ranked[0]], std[runner_up]):
        verdict += (
            f" The gap between {ranked[0]} and {runner_up} ({100 * (best - mean[runner_up]):.2f} points) is within "
            "one std over seeds."
        )
    return f"Winner by mean top-1 among the main methods: **{', '.join(leaders)}** ({100 * best:.2f} %). {verdict}"


def num_text(value: Any) -> str:
    """A number as ``%g`` (``50.0`` -> ``50``); anything else as text."""
    return f"{value:g}" if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)


def model_text(budget: dict[str, Any]) -> str:
    """``ViT 12L/192d/3h`` of a budget."""
    return f"ViT {budget.get('layers')}L/{budget.get('hidden')}d/{budget.get('heads')}h"


def lr_text(budget: dict[str, Any]) -> str:
    """The peak learning rate of a budget; ``lr`` None means ``1e-3 * batch / 1024``."""
    if budget.get("lr") is not None:
        return num_text(budget["lr"])
    batch = budget.get("batch")
    if isinstance(batch, (int, float)):
        return f"{1e-3 * batch / 1024:g} (1e-3 × batch/1024)"
    return "1e-3 × batch/1024"


def budget_text(budget: dict[str, Any]) -> str:
    """One line naming a CIFAR-10 budget: model, patch, epochs, batch, lr, precision and the mixing settings."""
    hidden, mlp = budget.get("hidden"), budget.get("mlp")
    if mlp is None and isinstance(hidden, int):
        mlp = 4 * hidden
    steps = f" (at most {budget['max_steps']} steps)" if budget.get("max_steps") is not None else ""
    parts = [
        f"{model_text(budget)} (MLP {mlp})",
        f"patch {budget.get('patch_size')}",
        f"{num_text(budget.get('epochs'))} epochs{steps}",
        f"batch {budget.get('batch')}",
        f"lr {lr_text(budget)}",
        f"weight decay {num_text(budget.get('weight_decay'))}",
        f"warm-up {num_text(budget.get('warmup_frac'))}",
        f"label smoothing {num_text(budget.get('label_smoothing'))}",
        f"MaskMix prob {num_text(budget.get('maskmix_prob'))}",
        f"mask scale {budget.get('mask_scale')}",
        f"α {budget.get('alpha_strategy')}",
        "bf16 autocast" if budget.get("bf16") else "float32",
    ]
    return ", ".join(parts)


def data_text(group: RunGroup) -> str:
    """``50000 train / 10000 test images`` of a group's files (every distinct pair, should they differ)."""
    pairs = []
    for _, payload in group.files:
        data = payload.get("data", {})
        pair = f"{data.get('num_train', '?')} train / {data.get('num_test', '?')} test"
        if pair not in pairs:
            pairs.append(pair)
    return ", ".join(pairs) + " images"


def mean_std_text(summary: dict[str, dict[str, float]], key: str, seeds: int) -> str:
    """``mean ± std`` in %, ``± n/a`` for one seed, ``n/a`` when the metric is missing."""
    if key not in summary["mean"]:
        return "n/a"
    spread = f"{100 * summary['std'][key]:.2f}" if seeds > 1 else "n/a"
    return f"{100 * summary['mean'][key]:.2f} ± {spread}"


def robustness_plot_names(groups: Sequence[RunGroup]) -> list[str]:
    """The robustness plot file of each group: ``cifar10_robustness_<tag>.png``, ``..._budget2.png`` for a
    second budget of the same tag."""
    names, counts = [], {}
    for group in groups:
        counts[group.tag] = counts.get(group.tag, 0) + 1
        suffix = "" if counts[group.tag] == 1 else f"_budget{counts[group.tag]}"
        names.append(f"cifar10_robustness_{group.tag}{suffix}.png")
    return names


def cifar10_runs_table(group: RunGroup, plot: str) -> str:
    """One budget's merged GPU runs: per method the number of seeds and mean ± std of the metrics."""
    _, gpu_evidence = _evidence_modules()
    summaries = group.summaries()
    missing = incomplete_methods(group)
    status = (
        f"INCOMPLETE: fewer than {MIN_SEEDS} seeds for {', '.join(missing)}"
        if missing
        else f"every main method has at least {MIN_SEEDS} seeds"
    )
    sources = []
    for name, payload in group.files:
        runs, failed = len(payload.get("runs", [])), len(payload.get("failed", []))
        env = payload.get("environment", {})
        text = f"{_source(name, payload)}, transformers {env.get('transformers', '?')}: {runs} runs"
        sources.append(text + (f", {failed} failed" if failed else ""))
    lines = [
        f"**CIFAR-10 from scratch, GPU runs, {status}** ({budget_text(group.budget)}; {data_text(group)}; "
        f"test split; mean ± std over seeds (n), %, ECE × 100; one seed: ± n/a). Files: " + "; ".join(sources) + ".",
        "",
        "| method | n | top-1 | top-5 | ECE | top-1, 50 % patches dropped | top-1, 80 % dropped |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for method in order_methods(set(group.runs) | set(gpu_evidence.MAIN_METHODS)):
        seeds = len(group.runs.get(method, []))
        if not seeds:
            lines.append(f"| {method} | 0 | not run yet | | | | |")
            continue
        keys = ("accuracy", "top5_accuracy", "ece", "drop_0.5", "drop_0.8")
        cells = [mean_std_text(summaries[method], key, seeds) for key in keys]
        lines.append(f"| {method} | {seeds} | " + " | ".join(cells) + " |")
    lines += ["", winner_line(group)]
    if group.duplicates:
        pairs = ", ".join(f"{m} seed {s}" for m, s in group.duplicates)
        lines.append(f"Found in more than one file (the first kept): {pairs}.")
    failed = [f"{f.get('method')} seed {f.get('seed')}" for _, p in group.files for f in p.get("failed", [])]
    if failed:
        lines.append(f"Failed runs (not in the table): {', '.join(failed)}.")
    if any(group.runs.get(m) for m in gpu_evidence.MAIN_METHODS):
        lines.append(
            "Robustness curve (top-1 with 0-90 % of the patches dropped, mean over seeds, main methods): "
            f"`benchmarks/results/{plot}`."
        )
    return "\n".join(lines)


def cifar10_runs_blocks(results: Sequence[tuple[str, dict[str, Any]]]) -> list[str]:
    """The merged tables of the non-smoke ``"cifar10 runs"`` files, one per budget, and a line naming the smoke
    files that were left out."""
    groups = cifar10_run_groups(results)
    blocks = [cifar10_runs_table(g, plot) for g, plot in zip(groups, robustness_plot_names(groups), strict=True)]
    smoke = [n for n, p in results if p.get("benchmark") == "cifar10 runs" and is_smoke_runs(p)]
    if smoke:
        names = ", ".join(f"`{n}`" for n in smoke)
        blocks.append(f"CIFAR-10 run files of the smoke check (not evidence, left out of the tables): {names}.")
    return blocks


def write_cifar10_robustness_plots(results: Sequence[tuple[str, dict[str, Any]]], directory: Path) -> list[Path]:
    """Draw each budget's robustness plot (mean over seeds, main methods) into ``directory``; the paths written."""
    groups = cifar10_run_groups(results)
    if not groups:
        return []
    cifar10, gpu_evidence = _evidence_modules()
    written = []
    for group, name in zip(groups, robustness_plot_names(groups), strict=True):
        entries = {
            f"{m} (n={len(group.runs[m])})": {"runs": group.runs[m], **cifar10.summarize(group.runs[m])}
            for m in gpu_evidence.MAIN_METHODS
            if group.runs.get(m)
        }
        if not entries:
            continue
        budget = group.budget
        title = (
            f"CIFAR-10, {model_text(budget)}, {num_text(budget.get('epochs'))} epochs: top-1 under patch dropping "
            "(mean over seeds)"
        )
        path = directory / name
        cifar10.plot_robustness(entries, path, title)
        written.append(path)
    return written


def cifar10_throughput_table(name: str, payload: dict[str, Any]) -> str:
    """The GPU driver's throughput probe: images/s of MixPro training per execution plan."""
    label = "SMOKE (CPU check of the driver), not evidence" if payload.get("smoke", True) else "probe"
    s = payload.get("settings", {})
    budgets = s.get("budgets", [])
    candidates = ", ".join(model_text(b) for b in budgets) or "?"
    batch = budgets[0].get("batch") if budgets else "?"
    lines = [
        f"**CIFAR-10 training throughput, {label}** ({payload.get('method', 'mixpro')}, batch {batch}, candidate "
        f"models {candidates}; {num_text(s.get('probe_seconds'))} s per case; images/s of all processes together after "
        f"warm-up). {_source(name, payload)}",
    ]
    measured = payload.get("measured", {})
    if not measured:
        return lines[0] + "\n\nNothing was measured."
    lines += [
        "",
        "| case | processes | compile | layers | images/s | startup s |",
        "| --- | ---: | --- | ---: | ---: | ---: |",
    ]
    for case, entry in measured.items():
        lines.append(
            f"| {case} | {entry.get('processes')} | {'yes' if entry.get('compile') else 'no'} | "
            f"{entry.get('layers')} | {_fmt(entry.get('total_images_per_s'), 0)} | "
            f"{_fmt(entry.get('startup_seconds'))} |"
        )
    return "\n".join(lines)


def cifar10_budget_line(name: str, payload: dict[str, Any]) -> str:
    """The budget every GPU run uses, fixed once from the throughput probe, and why."""
    label = " (SMOKE, not evidence)" if payload.get("smoke") else ""
    return (
        f"**CIFAR-10 budget of the GPU runs{label}**: {budget_text(payload.get('settings', {}))}. "
        f"Why: {payload.get('reason', '?')}. {_source(name, payload)}"
    )


RENDERERS = {  # one table per file
    "digits default job": digits_default_job_table,
    "digits comparison": digits_comparison_table,
    "mixing cost per batch": mixing_table,
    "train step": train_step_table,
    "cifar10 budget": cifar10_budget_line,
    "cifar10 throughput": cifar10_throughput_table,
    "cifar10 accuracy": cifar_table,
    "input pipeline": input_pipeline_table,
}
MERGED = {"cifar10 runs": cifar10_runs_blocks}  # one set of tables from every file of the benchmark
ORDER = [
    "digits default job",
    "digits comparison",
    "mixing cost per batch",
    "train step",
    "cifar10 runs",
    "cifar10 budget",
    "cifar10 throughput",
    "cifar10 accuracy",
    "input pipeline",
]


def evaluate_digits_block(results: Sequence[tuple[str, dict[str, Any]]]) -> str:
    """The table ``mixpro-evaluate`` wrote for ``benchmarks/evaluate_digits.py``, its budget and its plot."""
    found = [(name, payload) for name, payload in results if payload.get("benchmark") == EVALUATE_BENCHMARK]
    if not found:
        return "No `evaluate_digits.json` yet: run `python benchmarks/evaluate_digits.py`."
    name, payload = found[-1]
    settings = payload["settings"]
    epochs = settings["num_train_epochs"]
    short = " (SHORT: the default job trains 60)" if epochs < 60 else " (the default job's budget)"
    budget = (
        f"Checkpoints: `{settings['train_command']}` with E = {epochs:g}{short}, one seed: an example of what the "
        "command reports, not a comparison of the methods (that is the digits table under Benchmarks and results)."
    )
    command = f"Command: `{settings['evaluate_command']}`."
    plot = f"![top-1 under patch dropping](benchmarks/results/{payload['plot']})"
    header = "Generated by `python benchmarks/make_tables.py` from " + _source(name, payload) + "; do not edit by hand."
    return "\n\n".join([header, budget, command, payload["table"].strip(), plot])


def digits_multilabel_block(results: Sequence[tuple[str, dict[str, Any]]]) -> str:
    """The table of ``benchmarks/digits_multilabel.py``: test mAP and F1 of each method, mean ± std over seeds."""
    found = [(name, payload) for name, payload in results if payload.get("benchmark") == MULTILABEL_BENCHMARK]
    if not found:
        return "No `digits_multilabel.json` yet: run `python benchmarks/digits_multilabel.py`."
    name, payload = found[-1]
    s = payload["settings"]
    seeds, planned = s.get("seeds", []), s.get("seeds_planned", [])
    status = "" if payload.get("complete") else f" (incomplete: {len(seeds)} of {len(planned)} seeds)"
    flags = s.get("flags", [])
    epochs = next((v for k, v in zip(flags, flags[1:], strict=False) if k == "--num_train_epochs"), "?")
    epochs = next((v for k, v in zip(s.get("extra_flags", []), s.get("extra_flags", [])[1:], strict=False)
                   if k == "--num_train_epochs"), epochs)  # fmt: skip
    lines = [
        "Generated by `python benchmarks/make_tables.py` from " + _source(name, payload) + "; do not edit by hand.",
        "",
        f"**Two digits per image, multi-label{status}**: {s.get('data')}; the digits job's ViT and flags, {epochs} "
        f"epochs, BCE; only `--mix_method` differs; seeds {seeds}; test split, mean ± std over seeds, %.",
        "",
        "| method | mAP | micro F1 | macro F1 | training time, s |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for method, entry in payload["results"].items():
        cells = [_pct(entry, key) for key in ("map", "micro_f1", "macro_f1")]
        lines.append(f"| {method} | " + " | ".join(cells) + f" | {entry['mean']['train_seconds']:.0f} |")
    return "\n".join(lines)


def render(results: list[tuple[str, dict[str, Any]]]) -> str:
    """All tables, grouped by benchmark in ``ORDER``, as one Markdown block."""
    blocks = []
    for benchmark in ORDER:
        if benchmark in MERGED:
            blocks += MERGED[benchmark](results)
            continue
        for name, payload in results:
            if payload.get("benchmark") == benchmark:
                blocks.append(RENDERERS[benchmark](name, payload))
    known = set(RENDERERS) | set(MERGED) | {EVALUATE_BENCHMARK, MULTILABEL_BENCHMARK}
    unknown = sorted(name for name, payload in results if payload.get("benchmark") not in known)
    if unknown:
        blocks.append("Result files without a table: " + ", ".join(f"`{n}`" for n in unknown) + ".")
    if not blocks:
        blocks.append("No results yet.")
    header = "Generated by `python benchmarks/make_tables.py` from `benchmarks/results/`; do not edit by hand."
    return "\n\n".join([header, *blocks])


def replace_section(readme: str, tables: str, start_marker: str = START, end_marker: str = END) -> str | None:
    """``readme`` with the text between the markers replaced by ``tables``; None if the markers are missing."""
    start = readme.find(start_marker)
    end = readme.find(end_marker, start + len(start_marker)) if start >= 0 else -1
    if start < 0 or end < 0:
        return None
    return readme[: start + len(start_marker)] + "\n" + tables + "\n" + readme[end:]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results-dir", type=Path, default=REPO_ROOT / "benchmarks" / "results")
    parser.add_argument("--readme", type=Path, default=REPO_ROOT / "README.md")
    parser.add_argument("--card", type=Path, default=CARD_PATH, help="where the CIFAR-10 MixPro model card goes")
    parser.add_argument("--check", action="store_true", help="exit 1 if the README section is out of date")
    parser.add_argument("--print", dest="print_only", action="store_true", help="print the tables, touch nothing")
    args = parser.parse_args(argv)

    results = load_results(args.results_dir)
    tables = render(results)
    if args.print_only:
        print(tables)
        return 0
    readme = args.readme.read_text()
    updated = replace_section(readme, tables)
    if updated is None:
        print(tables)
        print(
            f"\n{args.readme}: the markers {START} and {END} are missing; add them where the tables go.",
            file=sys.stderr,
        )
        return 2
    if EVALUATE_START in updated:  # the example of the "Robustness evaluation" section
        updated = replace_section(updated, evaluate_digits_block(results), EVALUATE_START, EVALUATE_END) or updated
    if MULTILABEL_START in updated:  # the example of the "Multi-label images and the BCE loss" section
        block = digits_multilabel_block(results)
        updated = replace_section(updated, block, MULTILABEL_START, MULTILABEL_END) or updated
    if args.check:
        if updated != readme:
            print(
                f"{args.readme}: the results section is out of date; run python benchmarks/make_tables.py",
                file=sys.stderr,
            )
            return 1
        print(f"{args.readme}: results section up to date")
        return 0
    if updated != readme:
        args.readme.write_text(updated)
        print(f"rewrote the results section of {args.readme}")
    else:
        print(f"{args.readme}: results section already up to date")
    write_cifar10_robustness_plots(results, args.results_dir)
    write_card(results, args.card)
    return 0


def write_card(results: Sequence[tuple[str, dict[str, Any]]], path: Path) -> bool:
    """Write the CIFAR-10 MixPro model card to ``path`` when there is a non-smoke MixPro run (an existing card
    is never deleted); whether the file changed."""
    from benchmarks import cifar10_card

    card = cifar10_card.render_card([payload for _, payload in results])
    if card is None or (path.is_file() and path.read_text() == card):
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(card)
    print(f"wrote {path}")
    return True


if __name__ == "__main__":
    sys.exit(main())
