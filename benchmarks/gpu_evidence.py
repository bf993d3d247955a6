"""GPU evidence, gathered run by run: the Table 2 speed and the CIFAR-10 accuracy queue in one command.

A GPU is lent to this project now and then, for about 15 minutes, of which one command may run 10. This driver
is that command (``benchmarks/gpu_run.sh`` starts it on the GPU machine): it works to a time budget
(``--budget-s``, 530 s by default), starts no work that its estimates say would not finish in time, and writes
everything it finished to ``--out``: a few small JSON files and its log, no PNG (the README's plots are drawn
here, from the files). Each phase is skipped when its result file is already in ``--results-dir`` (the committed
``benchmarks/results/``), so the first GPU session measures speed and throughput and later ones spend all their
time on accuracy runs; ``--phases`` forces a choice.

Phases:

1. ``speed`` (paper Table 2): ``bench_train_step.py --device cuda --bf16 --model deit-s`` (DeiT-S, 224², batch
   128, SDPA; none, CutMix, TransMix, MaskMix, MixPro and the naive ``output_attentions=True`` route, timed
   interleaved in one process, with peak memory) and ``bench_mixing.py --device cuda`` (the cost of mixing one
   128×224² batch). Writes ``train_step_cuda_deit-s.json`` and ``mixing_cuda.json``. Then, for the smallest Table 1
   model of each other family (PVT-T, CaiT-XXS-36, XCiT-T24, CA-Swin-T, 224², batch 128), the MixPro step (capture
   included) next to a CutMix step: ``train_step_cuda_<model>.json``.
2. ``probe``: CIFAR-10 training throughput of MixPro (the costliest method) with the 12-layer model (the
   6-layer one is estimated from it): one eager process, ``--workers`` eager processes at once (does the total
   rise when one run leaves the GPU idle?), one ``torch.compile`` process (with its compile time). Writes
   ``cifar10_throughput_<tag>.json``. When no budget is committed yet, it also fixes the budget once for every
   later run (``cifar10_budget_<tag>.json``): the 12-layer DeiT-Tiny if, with the best execution plan, a session's queue
   finishes ``RUNS_PER_SESSION`` 50-epoch runs (a seed of the main table), else the 6-layer model of the same
   width.
3. ``queue``: the (method, seed) pairs, seed-major (the five methods at seed 0, then seed 1, ...; after three
   seeds the mask-scale ablation of Fig. 5a and the α strategies of Table 10, then seeds 3-4), minus those
   already finished with this budget in any ``cifar10_runs_<tag>_*.json``. The execution plan (number of
   concurrent worker processes, compiled or not) is the one that finishes the most runs in the time left,
   from the measured throughput. Each finished run is appended at once to ``cifar10_runs_<tag>_<stamp>.json``
   (a new file per session, so nothing finished is ever overwritten or re-run); a run cut off by the deadline
   is not recorded.

Each run (``benchmarks/cifar10.py``'s ``train_one``: data decoded once and kept on the GPU, crop/flip and
mixing on the GPU, bf16 autocast) records top-1, top-5, ECE on the 10,000 test images and top-1 under random
patch dropping 0-90 % (paper §4.3.1). ``make_tables.py`` merges the run files into the README's tables and
robustness plot.

    python benchmarks/gpu_evidence.py --out /tmp/out                       # on the GPU machine
    python benchmarks/gpu_evidence.py --out /tmp/out --tiny --device cpu   # CPU end-to-end check (the tests)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
from benchmarks import cifar10  # noqa: E402
from benchmarks.bench_train_step import FAMILY_MODELS  # noqa: E402
from benchmarks.common import environment  # noqa: E402

MAIN_METHODS = ("none", "mixup_cutmix", "transmix", "maskmix", "mixpro")
# Fig. 5a (mask scale; 2 is the main table's) and Table 10 (alpha strategies; cosine is the main table's).
ABLATIONS = (
    "mixpro:mask_scale=1",
    "mixpro:mask_scale=4",
    "mixpro:alpha_strategy=equal",
    "mixpro:alpha_strategy=linear",
    "mixpro:alpha_strategy=parabolic",
    "mixpro:alpha_strategy=learnable",
)
# The budget is the largest model with which a later session's queue (about SESSION_QUEUE_S seconds) finishes
# at least RUNS_PER_SESSION runs: a seed of the main table per session.
SESSION_QUEUE_S = 480.0
RUNS_PER_SESSION = 5
SAFETY = 1.15  # a run starts only if SAFETY x its estimated time fits before the deadline
MIN_EPOCHS = 50
# Settings fields that are how a run is executed, not what it trains: runs that differ only in these are
# runs of the same budget.
EXECUTION_FIELDS = ("compile", "eval_batch")


@dataclass(frozen=True)
class Mode:
    """What this invocation measures: the real GPU evidence, or a tiny CPU end-to-end check of this script."""

    tag: str  # file-name tag: "cuda" or "cpu_smoke"
    device: str
    budgets: tuple[cifar10.Settings, ...]  # the candidates, largest first
    max_train: int | None
    max_test: int | None
    probe_seconds: float
    speed_args: tuple[tuple[str, ...], ...]  # (script, args...) per speed benchmark
    speed_files: tuple[str, ...]  # what the speed benchmarks write
    probe_compile: bool  # whether the probe tries torch.compile (minutes of compiling on a CPU)
    smoke: bool


def gpu_mode(device: str) -> Mode:
    base = cifar10.Settings(epochs=MIN_EPOCHS, batch=512, bf16=True)
    return Mode(
        tag=device,
        device=device,
        budgets=(base, replace(base, layers=6)),
        max_train=None,
        max_test=None,
        probe_seconds=15.0,
        speed_args=(
            ("bench_train_step.py", "--device", device, "--bf16", "--model", "deit-s", "--steps", "30"),
            ("bench_mixing.py", "--device", device, "--rounds", "30"),
            *(  # the capture's cost next to CutMix for the other families' smallest Table 1 model, 224²
                ("bench_train_step.py", "--device", device, "--bf16", "--model", family, "--steps", "20")
                for family in FAMILY_MODELS
            ),
        ),
        speed_files=(
            f"train_step_{device}_deit-s.json",
            f"mixing_{device}.json",
            *(f"train_step_{device}_{family}.json" for family in FAMILY_MODELS),
        ),
        probe_compile=True,
        smoke=False,
    )


def tiny_mode(device: str) -> Mode:
    base = cifar10.Settings(layers=2, hidden=32, heads=2, epochs=2, batch=16, eval_batch=64, bf16=False)
    return Mode(
        tag=f"{device}_smoke",
        device=device,
        budgets=(base, replace(base, layers=1)),
        max_train=64,
        max_test=40,
        probe_seconds=1.0,
        speed_args=(
            ("bench_train_step.py", "--device", device, "--model", "tiny", "--steps", "2", "--warmup", "1"),
            ("bench_mixing.py", "--device", device, "--batch", "8", "--size", "32", "--patch", "4", "--rounds", "2"),
        ),
        speed_files=(f"train_step_{device}_tiny.json", f"mixing_{device}.json"),
        probe_compile=False,
        smoke=True,
    )


def queue(done: set[tuple[str, int]]) -> list[tuple[str, int]]:
    """The (method, seed) pairs still to run, in order: main methods seeds 0-2, ablations seeds 0-2, main 3-4."""
    order = [(m, s) for s in range(3) for m in MAIN_METHODS]
    order += [(m, s) for s in range(3) for m in ABLATIONS]
    order += [(m, s) for s in (3, 4) for m in MAIN_METHODS]
    return [pair for pair in order if pair not in done]


def budget_key(settings: dict[str, Any]) -> dict[str, Any]:
    """What makes two runs comparable: every setting except how it was executed."""
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in settings.items() if k not in EXECUTION_FIELDS}


def settings_from(record: dict[str, Any]) -> cifar10.Settings:
    names = {f.name for f in fields(cifar10.Settings)}
    values = {k: v for k, v in record.items() if k in names}
    if "drop_ratios" in values:
        values["drop_ratios"] = tuple(values["drop_ratios"])
    return cifar10.Settings(**values)


# ----------------------------------------------------------------------------------------------
# files


class Log:
    """Prints with the elapsed time and keeps a copy in ``out/gpu_evidence.log``."""

    def __init__(self, path: Path, start: float) -> None:
        self.path, self.start = path, start

    def __call__(self, message: str) -> None:
        line = f"[{time.monotonic() - self.start:6.1f} s] {message}"
        print(line, flush=True)
        with self.path.open("a") as handle:
            handle.write(line + "\n")


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Atomic write (a cut-off command never leaves half a file)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    tmp.replace(path)


def read_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def find(name: str, folders: Sequence[Path]) -> dict[str, Any] | None:
    """The first ``name`` found in ``folders``."""
    for folder in folders:
        payload = read_json(folder / name)
        if payload is not None:
            return payload
    return None


def finished_pairs(folders: Sequence[Path], tag: str, key: dict[str, Any]) -> set[tuple[str, int]]:
    """(method, seed) of every complete run of budget ``key`` in the ``cifar10_runs_<tag>_*.json`` files."""
    done = set()
    for folder in folders:
        for path in sorted(folder.glob(f"cifar10_runs_{tag}_*.json")):
            payload = json.loads(path.read_text())
            if payload.get("budget") == key:
                done |= {(run["method"], run["seed"]) for run in payload.get("runs", [])}
    return done


# ----------------------------------------------------------------------------------------------
# worker processes


def spawn_worker(job: dict[str, Any], work: Path, name: str) -> subprocess.Popen[bytes]:
    """Start ``gpu_evidence.py worker`` on ``job`` (written to ``work/<name>.job.json``); it writes
    ``job["result"]`` and its output to ``work/<name>.log``."""
    job_path = work / f"{name}.job.json"
    write_json(job_path, job)
    log = (work / f"{name}.log").open("wb")
    return subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "worker", str(job_path)],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=REPO_ROOT,
    )


def worker_main(job_path: str) -> None:
    """One training run (or throughput probe) of a job file; the result is written atomically when done."""
    import torch

    job = json.loads(Path(job_path).read_text())
    settings = settings_from(job["settings"])
    device = torch.device(job["device"])
    torch.set_num_threads(job.get("threads") or torch.get_num_threads())
    data_dir, cache_dir = Path(job["data_dir"]), Path(job["cache_dir"])
    train_x, train_y = cifar10.load_split(data_dir, "train", cache_dir)
    test_x, test_y = cifar10.load_split(data_dir, "test", cache_dir)
    keep = cifar10.balanced_subset(train_y, job.get("max_train"))
    keep_test = cifar10.balanced_subset(test_y, job.get("max_test"))
    data = {
        "train_x": train_x[keep],
        "train_y": train_y[keep],
        "test_x": test_x[keep_test],
        "test_y": test_y[keep_test],
    }
    data = {k: v.to(device) for k, v in data.items()}
    probe = job.get("probe_seconds")
    run = cifar10.train_one(
        job["method"],
        job["seed"],
        data,
        settings,
        device,
        evaluate=probe is None,
        stop_after_s=probe,
        mark_every=5 if probe is not None else 0,
    )
    run["compile"] = settings.compile
    if probe is None and not run["complete"]:
        raise SystemExit(f"{job['method']} seed {job['seed']}: training stopped early")
    write_json(Path(job["result"]), run)


def wait_all(procs: dict[str, subprocess.Popen[bytes]], deadline: float) -> None:
    """Wait for every process; kill those still running at ``deadline`` (``time.monotonic()``)."""
    while any(p.poll() is None for p in procs.values()):
        if time.monotonic() > deadline:
            for p in procs.values():
                if p.poll() is None:
                    p.kill()
            break
        time.sleep(0.5)
    for p in procs.values():
        p.wait()


def tail(path: Path, lines: int = 6) -> str:
    return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:]) if path.is_file() else ""


# ----------------------------------------------------------------------------------------------
# phases


def run_speed(mode: Mode, out: Path, log: Log, deadline: float) -> None:
    """Phase 1: the speed benchmarks, each a subprocess writing its JSON into ``out``."""
    env = {**os.environ, "MIXPRO_RESULTS_DIR": str(out)}
    for script, *args in mode.speed_args:
        remaining = deadline - time.monotonic()
        if remaining < 30:
            log(f"speed: no time left for {script}")
            return
        command = [sys.executable, str(REPO_ROOT / "benchmarks" / script), *args]
        log(f"speed: {' '.join(command[1:])}")
        try:
            done = subprocess.run(command, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=remaining)
        except subprocess.TimeoutExpired:
            log(f"speed: {script} ran out of time")
            continue
        for line in (done.stdout + done.stderr).strip().splitlines()[-12:]:
            log(f"  {line}")
        if done.returncode:
            log(f"speed: {script} failed (exit {done.returncode})")


def concurrent_rate(results: list[dict[str, Any]], batch: int) -> float | None:
    """Images/s of several processes together, over the window in which all of them were past warm-up."""
    marks = [r.get("step_marks") or [] for r in results]
    if any(len(m) < 4 for m in marks):
        return None
    start = max(m[2][1] for m in marks)  # every process past its first marks (warm-up)
    end = min(m[-1][1] for m in marks)
    if end - start <= 0:
        return None
    total = 0.0
    for m in marks:
        steps = [s for s, _ in m]
        times = [t for _, t in m]
        total += _interp(end, times, steps) - _interp(start, times, steps)
    return total * batch / (end - start)


def _interp(x: float, xs: list[float], ys: list[int]) -> float:
    for i in range(1, len(xs)):
        if xs[i] >= x:
            span = xs[i] - xs[i - 1]
            return ys[i - 1] + (ys[i] - ys[i - 1]) * ((x - xs[i - 1]) / span if span > 0 else 1.0)
    return float(ys[-1])


def run_probe(
    mode: Mode, common: dict[str, Any], workers: int, out: Path, work: Path, log: Log, deadline: float
) -> None:
    """Phase 2: throughput of MixPro training for each candidate budget and execution plan."""
    # the largest candidate, with many epochs so that the probe's time limit ends it, not the schedule; the
    # smaller candidates are estimated from it (rates scale with the number of layers)
    large = replace(mode.budgets[0], epochs=1000 * mode.budgets[0].epochs)
    cases: list[tuple[str, cifar10.Settings, int]] = [("eager_1", large, 1), (f"eager_{workers}", large, workers)]
    if mode.probe_compile:
        cases.append(("compile_1", replace(large, compile=True), 1))
    measured: dict[str, Any] = {}
    for name, settings, count in cases:
        if deadline - time.monotonic() < mode.probe_seconds + 90:
            log(f"probe: no time left for {name}")
            break
        procs, results = {}, []
        spawned = time.monotonic()
        for index in range(count):
            job = {
                **common,
                "threads": max(1, (os.cpu_count() or 1) // count),
                "method": "mixpro",
                "seed": index,
                "settings": asdict(settings),
                "probe_seconds": mode.probe_seconds,
                "result": str(work / f"probe_{name}_{index}.json"),
            }
            procs[f"probe_{name}_{index}"] = spawn_worker(job, work, f"probe_{name}_{index}")
        wait_all(procs, min(deadline, time.monotonic() + mode.probe_seconds + 150))
        wall = time.monotonic() - spawned
        for key in procs:
            result = read_json(work / f"{key}.json")
            if result is None:
                log(f"probe {name}: a worker failed: {tail(work / f'{key}.log')}")
            else:
                results.append(result)
        if len(results) != count:
            continue
        total = results[0].get("steady_images_per_s") if count == 1 else concurrent_rate(results, settings.batch)
        measured[name] = {
            "processes": count,
            "compile": settings.compile,
            "layers": settings.layers,
            "total_images_per_s": total,
            # first steps (CUDA warm-up, compiling) beyond their share of the steady rate
            "startup_seconds": max(r["startup_seconds"] for r in results),
            # everything of a worker's wall time but its steady training: process start, imports, data to the
            # device, the first steps, exit
            "overhead_seconds": max(wall - r["steady_seconds"] for r in results),
        }
        log(
            f"probe {name}: {total or 0:.0f} images/s in all, startup {measured[name]['startup_seconds']:.1f} s, "
            f"overhead per process {measured[name]['overhead_seconds']:.1f} s"
        )
    payload = {
        "benchmark": "cifar10 throughput",
        "smoke": mode.smoke,
        "method": "mixpro",
        "settings": {"budgets": [asdict(b) for b in mode.budgets], "probe_seconds": mode.probe_seconds},
        "measured": measured,
    }
    write_json(out / f"cifar10_throughput_{mode.tag}.json", {"environment": environment(), **payload})


@dataclass(frozen=True)
class Plan:
    processes: int
    compile: bool
    seconds_per_run: float  # estimated wall time of one run with this plan, evaluation included


def plans(throughput: dict[str, Any], settings: cifar10.Settings, num_train: int, num_test: int) -> list[Plan]:
    """Execution plans with their estimated time per run of ``settings``, from the probe's measurements (the
    probe's model may be the larger candidate: rates scale with the number of layers)."""
    measured = throughput.get("measured", {})
    out = []
    images = settings.total_steps(num_train) * settings.batch
    for entry in measured.values():
        rate = entry.get("total_images_per_s")
        if not rate:
            continue
        scale = entry["layers"] / settings.layers
        per_process = rate * scale / entry["processes"]
        evaluation = 10 * num_test / (3 * per_process) + 5  # 10 drop ratios, forward only
        if entry["compile"]:
            evaluation += entry["startup_seconds"]  # the evaluation mode compiles again
        overhead = entry.get("overhead_seconds", entry["startup_seconds"])
        seconds = overhead + images / per_process + evaluation
        out.append(Plan(entry["processes"], entry["compile"], seconds))
    return out


def runs_in(plan: Plan, seconds: float) -> int:
    return plan.processes * max(0, math.floor(seconds / (SAFETY * plan.seconds_per_run)))


def choose_budget(
    mode: Mode, throughput: dict[str, Any], num_train: int, num_test: int
) -> tuple[cifar10.Settings, str]:
    """The largest candidate of which a session's queue finishes RUNS_PER_SESSION runs with its best plan (the
    smallest otherwise), and why."""
    for settings in mode.budgets:
        candidates = plans(throughput, settings, num_train, num_test)
        if not candidates:
            continue
        best = max(candidates, key=lambda p: runs_in(p, SESSION_QUEUE_S))
        runs = runs_in(best, SESSION_QUEUE_S)
        why = (
            f"{settings.layers} layers: ~{best.seconds_per_run:.0f} s per run with {best.processes} process(es), "
            f"compile {best.compile}: {runs} runs per {SESSION_QUEUE_S:.0f} s session"
        )
        if runs >= RUNS_PER_SESSION:
            return settings, why
    return mode.budgets[-1], f"the smallest candidate: none finishes {RUNS_PER_SESSION} runs per session"


def run_queue(
    mode: Mode,
    common: dict[str, Any],
    budget: cifar10.Settings,
    throughput: dict[str, Any],
    folders: Sequence[Path],
    out: Path,
    work: Path,
    log: Log,
    deadline: float,
    max_runs: int | None,
) -> None:
    """Phase 3: the next (method, seed) pairs of the queue, as many as finish before ``deadline``."""
    key = budget_key(asdict(budget))
    todo = queue(finished_pairs(folders, mode.tag, key))
    if max_runs is not None:
        todo = todo[:max_runs]
    if not todo:
        log("queue: every run of this budget is done")
        return
    position = {pair: index for index, pair in enumerate(todo)}
    num_train, num_test = common["num_train"], common["num_test"]
    options = plans(throughput, budget, num_train, num_test)
    if not options:
        log("queue: no throughput measured, so no run can be planned (run the probe phase)")
        return
    remaining = deadline - time.monotonic()
    plan = max(options, key=lambda p: (runs_in(p, remaining), -p.seconds_per_run))
    log(
        f"queue: {len(todo)} runs to go; plan {plan.processes} process(es), compile {plan.compile}, "
        f"~{plan.seconds_per_run:.0f} s per run, ~{runs_in(plan, remaining)} runs fit in {remaining:.0f} s"
    )
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    runs_path = out / f"cifar10_runs_{mode.tag}_{stamp}.json"
    while runs_path.exists():  # two sessions in one second (the tests): never overwrite
        stamp += "x"
        runs_path = out / f"cifar10_runs_{mode.tag}_{stamp}.json"
    settings = replace(budget, compile=plan.compile)
    record: dict[str, Any] = {
        "environment": environment(),
        "benchmark": "cifar10 runs",
        "smoke": mode.smoke,
        "budget": key,
        "data": {"num_train": num_train, "num_test": num_test, "source": "CIFAR-10 Parquet (🤗 datasets export)"},
        "plan": asdict(plan),
        "runs": [],
        "failed": [],
    }
    estimate = plan.seconds_per_run
    running: dict[str, tuple[subprocess.Popen[bytes], tuple[str, int], float]] = {}
    while todo or running:
        while todo and len(running) < plan.processes:
            if time.monotonic() + SAFETY * estimate > deadline:
                log(f"queue: {todo[0][0]} seed {todo[0][1]} would not finish in time (~{estimate:.0f} s); stopping")
                todo = []
                break
            method, seed = todo.pop(0)
            name = f"run_{len(position) - len(todo)}"
            job = {
                **common,
                "threads": max(1, (os.cpu_count() or 1) // plan.processes),
                "method": method,
                "seed": seed,
                "settings": asdict(settings),
                "probe_seconds": None,
                "result": str(work / f"{name}.json"),
            }
            running[name] = (spawn_worker(job, work, name), (method, seed), time.monotonic())
            log(f"queue: started {method} seed {seed}")
        time.sleep(1.0)
        if time.monotonic() > deadline:
            for proc, pair, _ in running.values():
                proc.kill()
                proc.wait()
                log(f"queue: {pair[0]} seed {pair[1]} cut off by the deadline (not recorded)")
            break
        for name in [n for n, (p, _, _) in running.items() if p.poll() is not None]:
            proc, (method, seed), started = running.pop(name)
            result = read_json(work / f"{name}.json")
            if proc.returncode or result is None:
                record["failed"].append({"method": method, "seed": seed, "error": tail(work / f"{name}.log")})
                log(f"queue: {method} seed {seed} FAILED: {tail(work / f'{name}.log')}")
            else:
                result["wall_seconds"] = time.monotonic() - started
                record["runs"].append(result)
                record["runs"].sort(key=lambda r: position[(r["method"], r["seed"])])  # queue order
                estimate = max(estimate, result["wall_seconds"])
                log(
                    f"queue: {method} seed {seed}: top-1 {result['accuracy']:.4f} top-5 {result['top5_accuracy']:.4f} "
                    f"ECE {result['ece']:.4f} ({result['wall_seconds']:.0f} s, "
                    f"{result.get('steady_images_per_s') or 0:.0f} img/s after warm-up)"
                )
            write_json(runs_path, record)
    if record["runs"] or record["failed"]:
        write_json(runs_path, record)
    log(f"queue: {len(record['runs'])} runs finished this session, {len(record['failed'])} failed")


# ----------------------------------------------------------------------------------------------
# driver


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["worker"]:
        worker_main(argv[1])
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="where the result files go ($OUT on the GPU)")
    parser.add_argument("--results-dir", type=Path, default=REPO_ROOT / "benchmarks" / "results")
    parser.add_argument("--data-dir", default="../shared/data/cifar10", help="CIFAR-10 Parquet, relative to the repo")
    parser.add_argument("--cache-dir", type=Path, default=Path("/tmp/mixpro-cifar10-cache"))
    parser.add_argument("--budget-s", type=float, default=530.0, help="seconds from start to the last result")
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--phases", nargs="+", choices=("speed", "probe", "queue"), default=None,
                        help="default: speed and probe when their files are missing, then queue")  # fmt: skip
    parser.add_argument("--workers", type=int, default=3, help="concurrent processes the probe tries")
    parser.add_argument("--max-runs", type=int, default=None, help="at most this many queue runs")
    parser.add_argument("--tiny", action="store_true", help="tiny models and data: a CPU check of this script")
    args = parser.parse_args(argv)

    start = time.monotonic()
    deadline = start + args.budget_s
    args.out.mkdir(parents=True, exist_ok=True)
    log = Log(args.out / "gpu_evidence.log", start)
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("--device cuda: no CUDA device is available (use --device cpu --tiny for the CPU check)", file=sys.stderr)
        return 2
    if args.workers < 1:
        print(f"--workers must be >= 1, got {args.workers}", file=sys.stderr)
        return 2
    mode = tiny_mode(args.device) if args.tiny else gpu_mode(args.device)
    env = environment()
    log(f"gpu_evidence: {env['device']}, torch {env['torch']}, transformers {env['transformers']}, "
        f"commit {env['commit']}, budget {args.budget_s:.0f} s")  # fmt: skip
    folders = [args.out, args.results_dir]
    phases = args.phases or [
        *(["speed"] if any(find(name, folders) is None for name in mode.speed_files) else []),
        *(["probe"] if find(f"cifar10_throughput_{mode.tag}.json", folders) is None else []),
        "queue",
    ]
    if "speed" in phases:
        run_speed(mode, args.out, log, deadline)
    if not {"probe", "queue"} & set(phases):
        return 0

    data_dir = cifar10.resolve_data_dir(args.data_dir)
    decode_start = time.monotonic()
    _, train_y = cifar10.load_split(data_dir, "train", args.cache_dir)
    _, test_y = cifar10.load_split(data_dir, "test", args.cache_dir)
    num_train = len(cifar10.balanced_subset(train_y, mode.max_train))
    num_test = len(cifar10.balanced_subset(test_y, mode.max_test))
    log(f"data: {num_train} train / {num_test} test images ready in {time.monotonic() - decode_start:.1f} s")
    common = {
        "device": mode.device,
        "data_dir": str(data_dir),
        "cache_dir": str(args.cache_dir),
        "max_train": mode.max_train,
        "max_test": mode.max_test,
        "num_train": num_train,
        "num_test": num_test,
    }
    work = Path(tempfile.mkdtemp(prefix="gpu-evidence-"))  # job files and worker logs: not results
    if "probe" in phases:
        run_probe(mode, common, args.workers, args.out, work, log, deadline)
    if "queue" not in phases:
        return 0
    throughput = find(f"cifar10_throughput_{mode.tag}.json", folders)
    if throughput is None:
        log("queue: no throughput file, so no run can be planned")
        return 1
    budget_name = f"cifar10_budget_{mode.tag}.json"
    budget_file = find(budget_name, folders)
    if budget_file is None:
        budget, reason = choose_budget(mode, throughput, num_train, num_test)
        budget_file = {
            "environment": env,
            "benchmark": "cifar10 budget",
            "smoke": mode.smoke,
            "settings": budget_key(asdict(budget)),
            "reason": reason,
        }
        write_json(args.out / budget_name, budget_file)
        log(f"budget fixed for every later run: {reason}")
    budget = settings_from(budget_file["settings"])
    run_queue(mode, common, budget, throughput, folders, args.out, work, log, deadline, args.max_runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
