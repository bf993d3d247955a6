"""Beyond one process: two machines on one host through ``accelerate launch``, sharded parameters (FSDP2),
the example Accelerate configs, and streaming data split across ranks.

Launch notes (accelerate 1.15): ``accelerate launch --cpu --num_processes 2`` starts ONE process (its CPU
launcher expects ``mpirun``); two CPU processes per launch come from the torchrun launcher
(``--multi_gpu``) with ``ACCELERATE_USE_CPU=true`` in the environment and ``--use_cpu True`` for the script.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
from conftest import TINY_OVERRIDES

from mixpro_hf import MixProConfig, batch_generator, mix_batch

REPO_ROOT = Path(__file__).resolve().parents[1]
CIFAR = REPO_ROOT.parent / "shared" / "data" / "cifar10"
NO_TRAINER = REPO_ROOT / "examples" / "run_image_classification_no_trainer.py"
CONFIGS = REPO_ROOT / "examples" / "accelerate_configs"
ACCELERATE = shutil.which("accelerate", path=os.path.dirname(sys.executable))
SEED, BATCH, STEPS = 0, 8, 3
TIMEOUT = 300

needs_launcher = pytest.mark.skipif(ACCELERATE is None, reason="the accelerate launcher is not installed")

# Runs mixpro-train's entry point (``train.main``) and records, per rank, the first training batch's mixing
# draws: the test recomputes them from ``batch_generator(seed, rank, 0)``.
TRAINER_WRAPPER = """
import json, os, sys
from mixpro_hf import train
from mixpro_hf.trainer import MixProTrainer

record_dir = os.environ["MIXPRO_TEST_RECORD"]
original = MixProTrainer.mix_inputs

def mix_inputs(self, inputs):
    mix = original(self, inputs)
    path = os.path.join(record_dir, f"first_batch_rank{self.args.process_index}.json")
    if not os.path.exists(path):
        with open(path, "w") as f:
            json.dump({"world": self.args.world_size, "method": mix.method, "shape": list(mix.pixel_values.shape),
                       "partner": mix.partner.tolist(), "patch_mask": mix.patch_mask.float().tolist(),
                       "lam_area": mix.lam_area.tolist()}, f)
    return mix

MixProTrainer.mix_inputs = mix_inputs
sys.exit(train.main())
"""

# The start of each no-Trainer wrapper: load the example as a module, keep its mix_batch to wrap.
NO_TRAINER_PRELUDE = """
import hashlib, importlib.util, json, os, sys
spec = importlib.util.spec_from_file_location("no_trainer", {script!r})
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
record_dir = os.environ["MIXPRO_TEST_RECORD"]
original = module.mix_batch
"""

# Runs the no-Trainer example with the same record of its first batch.
NO_TRAINER_WRAPPER = (
    NO_TRAINER_PRELUDE
    + """
def mix_batch(pixel_values, config, patch_size, generator=None):
    mix = original(pixel_values, config, patch_size, generator)
    rank, world = os.environ.get("RANK", "0"), os.environ.get("WORLD_SIZE", "1")
    path = os.path.join(record_dir, f"first_batch_rank{{rank}}.json")
    if not os.path.exists(path):
        with open(path, "w") as f:
            json.dump({{"world": int(world), "method": mix.method, "shape": list(mix.pixel_values.shape),
                       "partner": mix.partner.tolist(), "patch_mask": mix.patch_mask.float().tolist(),
                       "lam_area": mix.lam_area.tolist()}}, f)
    return mix

module.mix_batch = mix_batch
module.main()
"""
)


def free_port() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return str(sock.getsockname()[1])


def launch_env(record_dir: Path | None = None) -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true", "TOKENIZERS_PARALLELISM": "false"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT / "tests"), env.get("PYTHONPATH")]))
    if record_dir is not None:
        record_dir.mkdir(parents=True, exist_ok=True)
        env["MIXPRO_TEST_RECORD"] = str(record_dir)
    return env


def accelerate_launch(
    script: Path, script_args: list[str], env: dict[str, str], machines: int, processes: int = 2
) -> list[subprocess.CompletedProcess]:
    """``accelerate launch`` of ``processes`` CPU processes over ``machines`` machines on this host: one launcher
    per machine rank, all started together; returns their completed processes (all must succeed)."""
    port = free_port()
    common = [ACCELERATE, "launch", "--multi_gpu", "--num_processes", str(processes), "--num_machines", str(machines)]
    common += ["--main_process_port", port, "--mixed_precision", "no", "--dynamo_backend", "no"]
    # Each launcher writes to its own files, not pipes: waiting on one launcher while another fills an unread pipe
    # (progress bars, warnings) would block that one mid-training and hang the collective of both.
    launchers, logs = [], []
    for rank in range(machines):
        where = ["--machine_rank", str(rank), "--main_process_ip", "127.0.0.1"] if machines > 1 else []
        out, err = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
        logs.append((out, err))
        launchers.append(
            subprocess.Popen([*common, *where, str(script), *script_args], env=env, stdout=out, stderr=err)
        )
    done = []
    try:
        for proc, (out, err) in zip(launchers, logs, strict=True):
            try:
                proc.wait(timeout=TIMEOUT)
            except subprocess.TimeoutExpired:
                tails = []
                for rank, (o, e) in enumerate(logs):
                    o.seek(0)
                    e.seek(0)
                    tails.append(f"--- machine {rank} stdout:\n{o.read()[-3000:]}\n--- stderr:\n{e.read()[-5000:]}")
                pytest.fail(f"accelerate launch timed out after {TIMEOUT} s\n" + "\n".join(tails))
            out.seek(0)
            err.seek(0)
            done.append(subprocess.CompletedProcess(proc.args, proc.returncode, out.read(), err.read()))
    finally:
        for proc in launchers:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for out, err in logs:
            out.close()
            err.close()
    if any(p.returncode for p in done) and any("address already in use" in p.stderr.lower() for p in done):
        return accelerate_launch(script, script_args, env, machines, processes)  # the free port was taken: retry
    for proc in done:
        assert proc.returncode == 0, proc.stderr[-4000:]
    return done


def run_flags(output_dir: Path, *extra: str) -> list[str]:
    """A few seconds of MixPro training of the tiny ViT on the embedded digits, every batch MaskMix + PAL."""
    return [
        "--output_dir",
        str(output_dir),
        "--config_overrides",
        TINY_OVERRIDES,
        "--max_train_samples",
        "64",
        "--max_eval_samples",
        "16",
        "--max_steps",
        str(STEPS),
        "--per_device_train_batch_size",
        str(BATCH),
        "--per_device_eval_batch_size",
        "16",
        "--mix_method",
        "mixpro",
        "--maskmix_prob",
        "1",
        "--mask_scale",
        "2",
        "--logging_steps",
        "1",
        "--eval_strategy",
        "no",
        "--seed",
        str(SEED),
        "--report_to",
        "none",
        "--use_cpu",
        "True",
        "--disable_tqdm",
        "True",
        "--dataloader_num_workers",
        "0",
        *extra,
    ]


def listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def check_first_batches(record_dir: Path) -> list[dict]:
    """Each rank mixed its first batch with ``batch_generator(seed, rank, 0)``, so the two ranks' masks differ."""
    records = [json.loads((record_dir / f"first_batch_rank{rank}.json").read_text()) for rank in (0, 1)]
    config = MixProConfig(mix_method="mixpro", maskmix_prob=1.0, mask_scale=2)
    for rank, record in enumerate(records):
        assert record["world"] == 2 and record["method"] == "maskmix"
        expected = mix_batch(torch.zeros(record["shape"]), config, 4, batch_generator(SEED, rank, 0))
        assert record["partner"] == expected.partner.tolist(), f"rank {rank}: not batch_generator(seed, {rank}, 0)"
        assert torch.equal(torch.tensor(record["patch_mask"]), expected.patch_mask.float())
        assert torch.allclose(torch.tensor(record["lam_area"]), expected.lam_area)
    assert records[0]["patch_mask"] != records[1]["patch_mask"] or records[0]["partner"] != records[1]["partner"]
    return records


def losses(output_dir: Path) -> list[float]:
    history = json.loads((output_dir / "trainer_state.json").read_text())["log_history"]
    return [entry["loss"] for entry in history if "loss" in entry]


def check_written_once(output_dir: Path, kept: tuple[str, ...] = (f"checkpoint-{STEPS}",)) -> None:
    """One card, one run record, one set of figures, the ``kept`` checkpoints; every JSON complete."""
    files = listing(output_dir)
    for name in ("README.md", "mixpro_run.json", "alpha_curve.png", "model.safetensors", "config.json"):
        assert files.count(name) == 1, (name, files)
    assert len([f for f in files if f.endswith("README.md")]) == 1, files
    checkpoints = sorted({f.split("/")[0] for f in files if f.startswith("checkpoint-")})
    assert checkpoints == sorted(set(kept)), files
    assert not [f for f in files if f.endswith((".tmp", ".part", ".lock")) or "rank1" in f], files
    for name in files:
        if name.endswith(".json"):
            json.loads((output_dir / name).read_text())  # no half-written file


@needs_launcher
@pytest.mark.parametrize("entry", ["mixpro-train", "no-trainer"])
def test_two_machines_on_one_host_match_one_machine(tmp_path, entry):
    """2 machines x 1 process == 1 machine x 2 processes: both ranks train with their own masks, the same losses,
    and the output dir (shared by the two "machines") is written once."""
    wrapper = tmp_path / "wrapper.py"
    if entry == "mixpro-train":
        wrapper.write_text(TRAINER_WRAPPER)
        extra = ["--save_strategy", "steps", "--save_steps", "1", *BEST_MODEL_FLAGS]
    else:
        wrapper.write_text(NO_TRAINER_WRAPPER.format(script=str(NO_TRAINER)))
        extra = []
    runs = {}
    for machines in (1, 2):
        out, record = tmp_path / f"out{machines}", tmp_path / f"record{machines}"
        launched = accelerate_launch(wrapper, run_flags(out, *extra), launch_env(record), machines=machines)
        runs[machines] = out, check_first_batches(record)
        # DDP is not asked to search for unused parameters the model does not have (it warns, and costs every step)
        assert not any("find_unused_parameters=True" in proc.stderr for proc in launched)
    (one, first_one), (two, first_two) = runs[1], runs[2]
    assert first_one == first_two
    assert len(losses(two)) == STEPS
    assert losses(two) == pytest.approx(losses(one), abs=1e-6)
    best = check_best_model(two) if entry == "mixpro-train" else f"checkpoint-{STEPS}"
    check_written_once(two, kept=(best, f"checkpoint-{STEPS}"))  # the recipe's save_total_limit 2 keeps the best
    assert listing(two) == listing(one)
    for out, first in runs.values():
        check_mix_stats_of_all_ranks(out, first)
    if entry == "mixpro-train":
        check_best_model(one)


# Two processes, load_best_model_at_end: a checkpoint and an evaluation every step, the best is the least accurate
# (ties keep the earliest), so it is not the last checkpoint.
BEST_MODEL_FLAGS = [
    "--eval_strategy", "steps", "--eval_steps", "1", "--load_best_model_at_end", "True",
    "--metric_for_best_model", "accuracy", "--greater_is_better", "False",
]  # fmt: skip


def check_best_model(output_dir: Path) -> str:
    """The final model is the best checkpoint's, every tensor (the Trainer's own reload kept the last weights);
    returns the best checkpoint's name."""
    from safetensors.torch import load_file

    best = Path(json.loads((output_dir / "trainer_state.json").read_text())["best_model_checkpoint"])
    assert best.name != f"checkpoint-{STEPS}", best
    final, best_weights = load_file(str(output_dir / "model.safetensors")), load_file(str(best / "model.safetensors"))
    assert final.keys() == best_weights.keys()
    assert all(torch.equal(final[k], best_weights[k]) for k in final), f"the final model is not {best.name}"
    return best.name


def check_mix_stats_of_all_ranks(output_dir: Path, first_batches: list[dict]) -> None:
    """Each step's logged ``mixpro/lam_area`` is the mean over both ranks' batches (batch k of rank p drew from
    ``batch_generator(seed, p, k)``), not rank 0's alone."""
    history = json.loads((output_dir / "trainer_state.json").read_text())["log_history"]
    logged = {e["step"]: e["mixpro/lam_area"] for e in history if "mixpro/lam_area" in e}
    config = MixProConfig(mix_method="mixpro", maskmix_prob=1.0, mask_scale=2)
    shape = first_batches[0]["shape"]
    draws = [[batch_generator(SEED, rank, k) for rank in (0, 1)] for k in range(STEPS)]
    rank_means = [[float(mix_batch(torch.zeros(shape), config, 4, g).lam_area.mean()) for g in gens] for gens in draws]
    assert [logged[k + 1] for k in range(STEPS)] == pytest.approx([sum(m) / 2 for m in rank_means], abs=1e-5)
    assert any(abs(m[0] - m[1]) > 1e-4 for m in rank_means)  # the test tells rank 0 from all ranks


# ---------------------------------------------------------------------------------------------- FSDP

FSDP2_SCRIPT = """
import math, sys, torch, torch.distributed as dist
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor
from conftest import make_tiny_vit, make_toy_dataset
from mixpro_hf import MixProConfig, batch_generator, forward_mixed, mean_mix_stats, mix_batch

dist.init_process_group("gloo")
rank = dist.get_rank()
model = make_tiny_vit()
for layer in [m for m in model.modules() if type(m).__name__ == "ViTLayer"]:
    fully_shard(layer)
fully_shard(model)
assert all(isinstance(p, DTensor) for p in model.parameters()), "parameters are not sharded"
config = MixProConfig(mix_method="mixpro", maskmix_prob=1.0, mask_scale=1)
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
data = make_toy_dataset(32)
stats = []
for step in range(3):
    batch = data[step * 8 + rank * 4 : step * 8 + rank * 4 + 4]
    mix = mix_batch(batch["pixel_values"], config, 4, batch_generator(0, rank, step))
    result, _ = forward_mixed(model, {"pixel_values": mix.pixel_values}, batch["labels"], mix, config,
                              progress=step / 3)
    result.loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    stats.append(result.stats)
logged = mean_mix_stats(stats)
assert math.isfinite(logged["mixpro/lam_attn"]) and math.isfinite(result.loss.item()), logged
print(f"rank {rank} lam_attn {logged['mixpro/lam_attn']}")
dist.destroy_process_group()
"""


def test_pal_with_fsdp2_sharded_parameters_on_cpu(tmp_path):
    """torch's FSDP2 (``fully_shard``, what Accelerate's FSDP2 wraps) on 2 CPU processes with gloo: the
    class-token capture and PAL run on DTensor-sharded parameters and λ_attn is finite.

    Accelerate 1.15 enables its FSDP plugin only for accelerator devices (a MULTI_CPU state keeps DDP), so the
    Trainer path is tested on GPUs: ``test_trainer_fsdp_on_gpus``."""
    script = tmp_path / "fsdp2.py"
    script.write_text(FSDP2_SCRIPT)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", free_port()]
    proc = subprocess.run([*cmd, str(script)], capture_output=True, text=True, timeout=TIMEOUT, env=launch_env())
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stdout.count("lam_attn") == 2


FSDP_TRAINER_SCRIPT = """
import math, sys
from conftest import make_tiny_vit, make_toy_dataset
from mixpro_hf.trainer import MixProTrainer
from mixpro_hf.training_args import MixProTrainingArguments

args = MixProTrainingArguments(output_dir=sys.argv[1], per_device_train_batch_size=4, max_steps=3, report_to=[],
    save_strategy="no", mix_method="mixpro", maskmix_prob=1.0, mask_scale=1, disable_tqdm=True, logging_steps=1,
    fsdp=True, fsdp_config={"version": 2, "transformer_layer_cls_to_wrap": ["ViTLayer"], "reshard_after_forward": True})
trainer = MixProTrainer(model=make_tiny_vit(), args=args, train_dataset=make_toy_dataset(32))
assert trainer.is_fsdp_enabled
trainer.train()
lam_attn = [e["mixpro/lam_attn"] for e in trainer.state.log_history if "mixpro/lam_attn" in e]
assert len(lam_attn) == 3 and all(math.isfinite(v) for v in lam_attn), lam_attn
"""


@needs_launcher
@pytest.mark.skipif(
    torch.cuda.device_count() < 2,
    reason="MixProTrainer with --fsdp needs 2 GPUs: accelerate 1.15 enables FSDP only on accelerator devices "
    "(on CPU the Trainer silently keeps DDP); the CPU case is test_pal_with_fsdp2_sharded_parameters_on_cpu",
)
def test_trainer_fsdp_on_gpus(tmp_path):
    """MixProTrainer under FSDP2 (full shard, ViTLayer auto-wrap) on 2 GPUs: PAL's λ_attn is logged and finite."""
    script = tmp_path / "fsdp_trainer.py"
    script.write_text(FSDP_TRAINER_SCRIPT)
    env = {**launch_env(), "ACCELERATE_USE_CPU": "false"}
    cmd = [ACCELERATE, "launch", "--config_file", str(CONFIGS / "fsdp.yaml"), "--num_processes", "2"]
    cmd += ["--main_process_port", free_port(), str(script), str(tmp_path / "out")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]


# ---------------------------------------------------------------------------------------------- configs


@pytest.mark.parametrize("name", ["ddp.yaml", "fsdp.yaml", "deepspeed_zero2.yaml"])
def test_example_accelerate_configs_load(name):
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(CONFIGS / name))
    assert config.num_processes == 8 and config.mixed_precision == "bf16"
    if name == "ddp.yaml":
        assert config.distributed_type.value == "MULTI_GPU"
    elif name == "fsdp.yaml":
        assert config.distributed_type.value == "FSDP"
        fsdp = config.fsdp_config
        assert fsdp["fsdp_version"] == 2 and fsdp["fsdp_reshard_after_forward"] is True
        assert fsdp["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
        assert set(fsdp["fsdp_transformer_layer_cls_to_wrap"].split(",")) >= {"ViTLayer", "DeiTLayer"}
        assert fsdp["fsdp_use_orig_params"] is True
    else:
        assert config.distributed_type.value == "DEEPSPEED" and config.deepspeed_config["zero_stage"] == 2


# ---------------------------------------------------------------------------------------------- streaming

needs_cifar = pytest.mark.skipif(not CIFAR.is_dir(), reason=f"CIFAR-10 Parquet files not found at {CIFAR}")

# Records a digest of every training image each rank trains on (augmentation off: an image's pixels are its id).
STREAM_WRAPPER = """
import hashlib, os, sys
from mixpro_hf import train
from mixpro_hf.trainer import MixProTrainer

record_dir = os.environ["MIXPRO_TEST_RECORD"]
original = MixProTrainer.mix_inputs

def mix_inputs(self, inputs):
    with open(os.path.join(record_dir, f"samples_rank{self.args.process_index}.txt"), "a") as f:
        for image in inputs["pixel_values"]:
            f.write(hashlib.sha1(image.detach().cpu().numpy().round(4).tobytes()).hexdigest() + "\\n")
    return original(self, inputs)

MixProTrainer.mix_inputs = mix_inputs
sys.exit(train.main())
"""


def write_shards(folder: Path, shards: int = 3, rows: int = 200) -> str:
    """``shards`` Parquet files of ``rows`` CIFAR-10 training images each (a seeded sample of every class; the
    file is sorted by label), with the 🤗 feature metadata (ClassLabel names) kept; returns their glob."""
    import numpy as np
    import pyarrow.parquet as pq

    table = pq.read_table(CIFAR / "train.parquet")
    picked = table.take(np.random.default_rng(0).choice(table.num_rows, shards * rows, replace=False))
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(shards):
        pq.write_table(picked.slice(i * rows, rows), folder / f"train-{i:05d}.parquet")
    return str(folder / "train-*.parquet")


def stream_flags(output_dir: Path, train_glob: str, *extra: str) -> list[str]:
    flags = run_flags(output_dir, "--streaming", "True", "--train_file", train_glob, "--shuffle_buffer_size", "64")
    flags[flags.index("--max_train_samples") : flags.index("--max_train_samples") + 2] = []
    return [*flags, *extra]


@needs_cifar
def test_streaming_sharded_parquet_trains_and_resumes(tmp_path):
    from mixpro_hf import train

    train_glob = write_shards(tmp_path / "data")
    out = tmp_path / "out"
    save = ["--save_strategy", "steps", "--save_steps", "2"]
    first = stream_flags(out, train_glob, *save)
    first[first.index("--max_steps") + 1] = "2"
    assert train.main(first) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["id2label"]["0"] == "airplane" and len(config["id2label"]) == 10
    results = json.loads((out / "all_results.json").read_text())
    assert "train_samples" not in results and results["eval_samples"] == 16  # held out of the stream
    # resumed: the Trainer replays the stream up to the checkpoint's step (datasets' state_dict is not saved)
    assert train.main(stream_flags(out, train_glob, *save, "--max_steps", "4", "--resume_from_checkpoint", "last")) == 0
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 4


def test_streaming_needs_max_steps(tmp_path, capsys):
    from mixpro_hf import train

    flags = stream_flags(tmp_path / "out", str(tmp_path / "train-*.parquet"))
    flags[flags.index("--max_steps") + 1] = "-1"
    assert train.main(flags) == 2
    assert "--streaming needs --max_steps" in capsys.readouterr().err


@needs_launcher
@needs_cifar
def test_streaming_two_processes_read_different_samples(tmp_path):
    """2 processes, 3 shards: Accelerate gives each rank its own shards (no sample trained on twice)."""
    wrapper = tmp_path / "wrapper.py"
    wrapper.write_text(STREAM_WRAPPER)
    record = tmp_path / "record"
    flags = stream_flags(tmp_path / "out", write_shards(tmp_path / "data"), "--train_augment", "False")
    flags += ["--save_strategy", "no", "--mix_method", "none"]
    accelerate_launch(wrapper, flags, launch_env(record), machines=1)
    seen = [(record / f"samples_rank{rank}.txt").read_text().split() for rank in (0, 1)]
    assert len(seen[0]) == len(seen[1]) == STEPS * BATCH
    assert not set(seen[0]) & set(seen[1]), "two ranks trained on the same images"


# The no-Trainer example, streaming: records a digest of every training image per rank, as STREAM_WRAPPER does.
NO_TRAINER_STREAM_WRAPPER = (
    NO_TRAINER_PRELUDE
    + """
def mix_batch(pixel_values, config, patch_size, generator=None):
    with open(os.path.join(record_dir, f"samples_rank{{os.environ.get('RANK', '0')}}.txt"), "a") as f:
        for image in pixel_values:
            f.write(hashlib.sha1(image.detach().cpu().numpy().round(4).tobytes()).hexdigest() + "\\n")
    return original(pixel_values, config, patch_size, generator)

module.mix_batch = mix_batch
module.main()
"""
)


def no_trainer_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("no_trainer", NO_TRAINER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@needs_cifar
def test_no_trainer_streaming_sharded_parquet_trains(tmp_path, monkeypatch):
    """The no-Trainer example on a stream of 3 Parquet shards, 14 training rows (30, less the 16 held out for eval):
    one batch of 8 per pass, so its 3 steps take 3 passes over the stream, each after ``set_epoch(pass)``."""
    from datasets import IterableDataset

    epochs, set_epoch = [], IterableDataset.set_epoch
    monkeypatch.setattr(
        IterableDataset, "set_epoch", lambda self, epoch: (epochs.append(epoch), set_epoch(self, epoch))
    )
    out = tmp_path / "out"
    flags = stream_flags(out, write_shards(tmp_path / "data", rows=10), "--test_file", str(CIFAR / "test.parquet"))
    metrics = no_trainer_module().main(flags)
    assert sorted(set(epochs)) == [0, 1, 2]
    results = json.loads((out / "all_results.json").read_text())
    assert results == pytest.approx(metrics)
    assert 0 <= results["eval_accuracy"] <= 1 and 0 <= results["test_accuracy"] <= 1
    assert (out / "model.safetensors").is_file()
    assert json.loads((out / "config.json").read_text())["id2label"]["0"] == "airplane"
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == STEPS and len(losses(out)) == STEPS


def test_no_trainer_streaming_loader_and_accelerator():
    """A stream: no shuffle in the DataLoader (the stream shuffles itself), ``dispatch_batches=False`` (each rank
    reads its own part); without a stream, the shuffled DataLoader and Accelerate's default, as before."""
    from datasets import Dataset
    from torch.utils.data import RandomSampler

    module = no_trainer_module()
    _, _, args = module.parse_args(["--use_cpu", "True", "--per_device_train_batch_size", "4"])
    rows = Dataset.from_dict({"x": list(range(8))})
    stream = module.make_train_loader(rows.to_iterable_dataset(num_shards=2), args, None, streaming=True)
    assert not isinstance(stream.sampler, RandomSampler) and stream.batch_size == 4 and stream.drop_last
    assert module.make_accelerator(args, streaming=True).dataloader_config.dispatch_batches is False
    assert isinstance(module.make_train_loader(rows, args, None, streaming=False).sampler, RandomSampler)
    assert module.make_accelerator(args, streaming=False).dataloader_config.dispatch_batches is None


def test_no_trainer_streaming_needs_max_steps(tmp_path, capsys):
    flags = stream_flags(tmp_path / "out", str(tmp_path / "train-*.parquet"))
    flags[flags.index("--max_steps") + 1] = "-1"
    with pytest.raises(SystemExit) as exit_info:
        no_trainer_module().main(flags)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("run_image_classification_no_trainer.py: error: --streaming needs")


@needs_launcher
@needs_cifar
def test_no_trainer_streaming_two_processes_read_different_samples(tmp_path):
    """The no-Trainer example, 2 processes, 3 shards: each rank trains on its own shards, as with the Trainer."""
    wrapper = tmp_path / "wrapper.py"
    wrapper.write_text(NO_TRAINER_STREAM_WRAPPER.format(script=str(NO_TRAINER)))
    record = tmp_path / "record"
    flags = stream_flags(tmp_path / "out", write_shards(tmp_path / "data"), "--train_augment", "False")
    flags += ["--mix_method", "none"]
    accelerate_launch(wrapper, flags, launch_env(record), machines=1)
    seen = [(record / f"samples_rank{rank}.txt").read_text().split() for rank in (0, 1)]
    assert len(seen[0]) == len(seen[1]) == STEPS * BATCH
    assert not set(seen[0]) & set(seen[1]), "two ranks trained on the same images"


def test_data_loader_defaults(monkeypatch):
    from mixpro_hf import arguments

    _, _, args = arguments.parse_args(["--use_cpu", "True"])
    assert args.dataloader_num_workers == 0 and not args.dataloader_persistent_workers
    _, _, args = arguments.parse_args(["--use_cpu", "True", "--dataloader_num_workers", "2"])
    assert args.dataloader_persistent_workers and args.dataloader_prefetch_factor == 4
    monkeypatch.setattr(arguments, "has_accelerator", lambda: True)
    monkeypatch.setattr("os.cpu_count", lambda: 64)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
    _, _, args = arguments.parse_args([])
    assert args.dataloader_num_workers == 7 and args.dataloader_persistent_workers
    _, _, args = arguments.parse_args(["--dataloader_num_workers", "3", "--dataloader_prefetch_factor", "2"])
    assert args.dataloader_num_workers == 3 and args.dataloader_prefetch_factor == 2


def test_other_ranks_return_their_metrics_without_reading_the_main_process_file(tmp_path):
    """Only the main process writes all_results.json; another process (on another machine, or while the main one
    rewrites it) returns what the run measured instead of reading that file."""
    from types import SimpleNamespace

    from mixpro_hf.train import _final_metrics

    results = {"train_loss": 1.0, "test_accuracy": 0.5}
    other = SimpleNamespace(is_world_process_zero=lambda: False)
    assert _final_metrics(other, tmp_path, results) == results  # no all_results.json here: not read
    (tmp_path / "all_results.json").write_text('{"train_loss": 1.0, "test_accuracy": 0.5, "earlier_run": 2}')
    main = SimpleNamespace(is_world_process_zero=lambda: True)
    assert _final_metrics(main, tmp_path, results)["earlier_run"] == 2
