"""Render ``benchmarks/results/*.json`` as Markdown tables and put them into README.md.

The tables replace what stands between the markers ``<!-- results:start -->`` and
``<!-- results:end -->`` in the README. Tables: mixing cost (``bench_mixing.py``), training step
(``bench_train_step.py``), CIFAR-10 accuracy (``cifar10.py``; smoke runs are marked as such), the default
digits job (``digits_default_job.py``) and the digits comparison (``digits.py``). Each
table names the device and the commit its numbers came from. The output holds no dates, so it only
changes when the results do.

    python benchmarks/make_tables.py            # rewrite the README section
    python benchmarks/make_tables.py --check    # exit 1 if the README section is out of date
    python benchmarks/make_tables.py --print    # print the tables only

Exit codes: 0 done / up to date, 1 README out of date (``--check``), 2 markers missing (the tables
are printed).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
START = "<!-- results:start -->"
END = "<!-- results:end -->"


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


RENDERERS = {
    "digits default job": digits_default_job_table,
    "digits comparison": digits_comparison_table,
    "mixing cost per batch": mixing_table,
    "train step": train_step_table,
    "cifar10 accuracy": cifar_table,
    "input pipeline": input_pipeline_table,
}
ORDER = list(RENDERERS)


def render(results: list[tuple[str, dict[str, Any]]]) -> str:
    """All tables, grouped by benchmark (mixing, train step, CIFAR-10), as one Markdown block."""
    blocks = []
    for benchmark in ORDER:
        for name, payload in results:
            if payload.get("benchmark") == benchmark:
                blocks.append(RENDERERS[benchmark](name, payload))
    unknown = sorted(name for name, payload in results if payload.get("benchmark") not in RENDERERS)
    if unknown:
        blocks.append("Result files without a table: " + ", ".join(f"`{n}`" for n in unknown) + ".")
    if not blocks:
        blocks.append("No results yet.")
    header = "Generated by `python benchmarks/make_tables.py` from `benchmarks/results/`; do not edit by hand."
    return "\n\n".join([header, *blocks])


def replace_section(readme: str, tables: str) -> str | None:
    """``readme`` with the text between the markers replaced by ``tables``; None if the markers are missing."""
    start = readme.find(START)
    end = readme.find(END, start + len(START)) if start >= 0 else -1
    if start < 0 or end < 0:
        return None
    return readme[: start + len(START)] + "\n" + tables + "\n" + readme[end:]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results-dir", type=Path, default=REPO_ROOT / "benchmarks" / "results")
    parser.add_argument("--readme", type=Path, default=REPO_ROOT / "README.md")
    parser.add_argument("--check", action="store_true", help="exit 1 if the README section is out of date")
    parser.add_argument("--print", dest="print_only", action="store_true", help="print the tables, touch nothing")
    args = parser.parse_args(argv)

    tables = render(load_results(args.results_dir))
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
