"""The command line of ``mixpro-train``: ``--help``, the named recipe, 🤗 parity (``args.json``, hub flags,
``--do_*``, TensorBoard) and quiet logs."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TINY_OVERRIDES

from mixpro_hf import train
from mixpro_hf.arguments import (
    DIGITS_FLAGS,
    RECIPE_MIN_LR_RATE,
    parse_args,
    short_run_logging_steps,
)
from mixpro_hf.data import digits_dataset
from mixpro_hf.pipeline import run_record

ROOT = Path(__file__).resolve().parents[1]
DATA = ["--train_file", "x.parquet"]  # never read: parse_args only


def tiny(tmp_path: Path, *extra: str, out: str = "out", report_to: str = "none") -> list[str]:
    """Flags of a seconds-long run on the embedded digits (a 2-layer ViT from scratch unless ``extra`` names a
    checkpoint, a few dozen images)."""
    model = [] if "--model_name_or_path" in extra else ["--config_overrides", TINY_OVERRIDES]
    return [
        "--output_dir",
        str(tmp_path / out),
        *model,
        "--max_train_samples",
        "32",
        "--max_eval_samples",
        "16",
        "--per_device_train_batch_size",
        "16",
        "--report_to",
        report_to,
        "--disable_tqdm",
        "True",
        "--dataloader_num_workers",
        "0",
        *extra,
    ]


def help_text(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    with pytest.raises(SystemExit) as exit_info:
        parse_args([*argv, "--help"])
    assert exit_info.value.code == 0
    return capsys.readouterr().out


def shown_default(text: str, flag: str) -> str:
    """The ``(default: ...)`` that ``--help`` shows for ``flag`` (line wraps removed)."""
    flags = text[text.index("\noptions:") :]
    block = re.search(rf"\n  --{flag} .*?(?=\n  -|\n\S|\Z)", flags, flags=re.S)
    assert block, flag
    match = re.search(r"\(default: (.*?)\)$", " ".join(block.group(0).split()))
    assert match, (flag, block.group(0))
    return match.group(1)


# ---------------------------------------------------------------------------------------------- --help


def test_help_starts_with_a_description_and_shows_the_recipe_defaults(capsys):
    text = help_text(capsys)
    assert text.startswith("mixpro-train: train a Vision Transformer image classifier with MixPro")
    assert "examples:" in text.split("usage:")[0], "an example before the flags"
    assert text.index("\nMixPro:") < text.index("\n🤗 TrainingArguments:"), "MixPro flags before 🤗's"
    assert text.index("\nrecipe:") < text.index("\ndata:") < text.index("\nMixPro:")
    expected = {
        "recipe": "deit",
        "weight_decay": "0.05",
        "lr_scheduler_type": "cosine_with_min_lr",
        "lr_scheduler_kwargs": json.dumps({"min_lr_rate": RECIPE_MIN_LR_RATE}),
        "warmup_steps": str(20 / 300),
        "max_grad_norm": "0.0",
        "lr_schedule": "reference_cosine",
        "num_train_epochs": "300.0",
        "drop_path_rate": "0.1",
        "label_smoothing_factor": "0.1",
        "output_dir": "outputs/mixpro",
        "trust_remote_code": "False",
    }
    for flag, value in expected.items():
        assert shown_default(text, flag) == value, flag
    lr = " ".join(re.search(r"\n  --learning_rate .*?(?=\n  -|\n\S)", text, flags=re.S).group(0).split())
    assert "1e-3 x total batch / 1024" in lr and "(default:" not in lr, "the scaled lr, not 🤗's 5e-05"
    assert "5e-5" in " ".join(re.search(r"\n  --recipe .*?(?=\n\S)", text, flags=re.S).group(0).split())
    # the embedded job's own values are listed in the description
    assert all(f"--{k} {v}" in " ".join(text.split()) for k, v in DIGITS_FLAGS.items())


def test_help_when_fine_tuning_shows_the_hf_defaults(capsys):
    text = help_text(capsys, "--model_name_or_path", "some/checkpoint")
    assert shown_default(text, "recipe") == "none"
    assert shown_default(text, "weight_decay") == "0.0"
    assert shown_default(text, "lr_scheduler_type") == "linear"
    assert shown_default(text, "max_grad_norm") == "1.0"


# ------------------------------------------------------------------------------------------ the recipe


def test_from_scratch_gets_the_deit_recipe():
    model_args, _, args = parse_args(
        [*DATA, "--per_device_train_batch_size", "128", "--gradient_accumulation_steps", "2"]
    )
    assert model_args.recipe == "deit"
    assert args.learning_rate == pytest.approx(1e-3 * 256 / 1024)
    assert (args.weight_decay, args.max_grad_norm, args.num_train_epochs) == (0.05, 0.0, 300), "no clipping"
    assert args.lr_schedule == "reference_cosine"
    assert args.lr_scheduler_type == "cosine_with_min_lr"
    assert args.lr_scheduler_kwargs == {"min_lr_rate": RECIPE_MIN_LR_RATE}
    assert args.warmup_steps == pytest.approx(20 / 300) and args.get_warmup_steps(3000) == 200, "a ratio"
    assert args.label_smoothing_factor == 0.1 and model_args.drop_path_rate == 0.1


def test_fine_tuning_keeps_the_hf_defaults_also_on_the_embedded_digits():
    for data in ([], DATA):
        model_args, data_args, args = parse_args(["--model_name_or_path", "some/checkpoint", *data])
        assert model_args.recipe == "none"
        got = (args.learning_rate, args.weight_decay, args.lr_scheduler_type, args.warmup_steps, args.max_grad_norm)
        assert got == (5e-5, 0.0, "linear", 0, 1.0), "🤗 defaults"
        assert (args.num_train_epochs, args.per_device_train_batch_size, args.logging_steps) == (3, 8, 500)
        assert model_args.drop_path_rate is None, "the checkpoint's own"
        assert args.label_smoothing_factor == 0.1, "a MixPro setting, not a 🤗 one"
    assert args.output_dir == "outputs/mixpro"
    model_args, data_args, args = parse_args(["--model_name_or_path", "some/checkpoint"])
    assert model_args.config_overrides is None, "the digits model is for from scratch only"
    assert (data_args.hflip, data_args.auto_augment, args.mask_scale) == (False, None, 2), "digits data flags stay"
    assert args.output_dir == "outputs/mixpro-digits"


def test_recipe_can_be_named_either_way_and_explicit_flags_win():
    model_args, _, args = parse_args([*DATA, "--recipe", "none"])
    assert (args.learning_rate, args.lr_scheduler_type, args.max_grad_norm) == (5e-5, "linear", 1.0)
    assert model_args.drop_path_rate == 0.0, "recipe none from scratch: no stochastic depth"
    model_args, _, args = parse_args(["--model_name_or_path", "m", *DATA, "--recipe", "deit"])
    assert (args.weight_decay, args.max_grad_norm, model_args.drop_path_rate) == (0.05, 0.0, 0.1)
    _, _, args = parse_args([*DATA, "--learning-rate", "0.01", "--weight_decay", "0.1", "--max_grad_norm", "2"])
    assert (args.learning_rate, args.weight_decay, args.max_grad_norm) == (0.01, 0.1, 2.0)
    _, _, args = parse_args([*DATA, "--lr_scheduler_type", "linear"])
    assert args.lr_scheduler_type == "linear" and not args.lr_scheduler_kwargs, "min_lr_rate only for its schedule"
    model_args, _, args = parse_args([*DATA, "--drop_path_rate", "0.3", "--num_train_epochs", "5"])
    assert model_args.drop_path_rate == 0.3 and args.num_train_epochs == 5
    with pytest.raises(SystemExit):
        parse_args([*DATA, "--recipe", "timm"])


def test_embedded_digits_from_scratch_keeps_its_preset():
    model_args, _, args = parse_args([])
    assert model_args.recipe == "deit" and model_args.config_overrides
    preset = tuple(float(DIGITS_FLAGS[k]) for k in ("learning_rate", "num_train_epochs", "per_device_train_batch_size"))
    assert (args.learning_rate, args.num_train_epochs, args.per_device_train_batch_size) == preset
    assert args.weight_decay == 0.05 and args.lr_scheduler_type == "cosine_with_min_lr"


def test_args_json_is_hfs_json_form_with_the_recipe_filling_the_rest(tmp_path):
    path = tmp_path / "args.json"
    path.write_text(json.dumps({"train_file": "x.parquet", "weight_decay": 0.1, "per_device_train_batch_size": 256}))
    model_args, data_args, args = parse_args([str(path)])
    assert data_args.train_file == "x.parquet" and model_args.recipe == "deit"
    assert args.weight_decay == 0.1 and args.learning_rate == pytest.approx(0.25e-3) and args.max_grad_norm == 0.0
    path.write_text(json.dumps({"model_name_or_path": "m", "train_file": "x.parquet", "do_eval": True}))
    model_args, _, args = parse_args([str(path)])
    assert model_args.recipe == "none" and args.learning_rate == 5e-5
    assert (args.do_train, args.do_eval, args.do_predict) == (False, True, False)
    path.write_text(json.dumps({"train_file": "x.parquet", "no_such_flag": 1}))
    with pytest.raises(ValueError, match="no_such_flag"):
        parse_args([str(path)])
    with pytest.raises(FileNotFoundError):
        parse_args([str(tmp_path / "missing.json")])


# ------------------------------------------------------------------------------------------ 🤗 parity


def test_hub_flags_have_hfs_names_and_the_token_is_never_saved():
    model_args, data_args, args = parse_args(DATA)
    assert model_args.trust_remote_code is False and model_args.model_revision == "main"
    model_args, data_args, args = parse_args(
        [*DATA, "--cache_dir", "/tmp/c", "--model_revision", "v1", "--token", "hf_secret", "--config_name", "cfg"]
    )
    assert model_args.pretrained_kwargs() == {
        "cache_dir": "/tmp/c",
        "revision": "v1",
        "token": "hf_secret",
        "trust_remote_code": False,
    }
    assert model_args.dataset_kwargs() == {"cache_dir": "/tmp/c", "token": "hf_secret"}
    assert model_args.config_name == "cfg"
    assert "hf_secret" not in repr(model_args)
    record = run_record(model_args, data_args, args)
    assert "hf_secret" not in json.dumps(record) and record["model_args"]["recipe"] == "deit"
    model_args, _, _ = parse_args([*DATA, "--trust_remote_code"])
    assert model_args.trust_remote_code is True


def test_do_flags():
    def stages(*argv: str) -> tuple[bool, bool, bool]:
        _, _, args = parse_args(list(argv))
        return args.do_train, args.do_eval, args.do_predict

    assert stages(*DATA) == (True, True, True), "none given: all three, as before"
    assert stages(*DATA, "--do_train") == (True, False, False), "some given: exactly those"
    assert stages(*DATA, "--do_train", "--do_predict") == (True, False, True)
    assert stages(*DATA, "--do_predict", "False") == (True, True, False), "only False ones: the others"
    assert stages("--model_name_or_path", "m", "--do_train", "False", "--do_eval", "True") == (False, True, False)
    with pytest.raises(ValueError, match="--model_name_or_path"):
        parse_args([*DATA, "--do_eval"])
    with pytest.raises(ValueError, match="nothing to do"):
        parse_args([*DATA, "--do_train", "False", "--do_eval", "False", "--do_predict", "False"])


def test_evaluation_only_run_of_a_saved_checkpoint(tmp_path):
    train.run(tiny(tmp_path, "--max_steps", "2", "--do_train"))
    checkpoint = tmp_path / "out"
    assert (checkpoint / "model.safetensors").is_file()
    stages = ["--do_train", "False", "--do_eval", "True"]
    assert train.main(tiny(tmp_path, "--model_name_or_path", str(checkpoint), *stages, out="eval")) == 2, (
        "no evaluation data given: refused, not the embedded digits"
    )
    digits = tmp_path / "digits.parquet"
    digits_dataset(0)["test"].select(range(20)).to_parquet(digits)
    data = ["--validation_file", str(digits)]
    results = train.run(tiny(tmp_path, "--model_name_or_path", str(checkpoint), *stages, *data, out="eval"))
    assert "eval_accuracy" in results and not any(k.startswith(("train_", "test_")) for k in results)
    assert results["eval_samples"] == 16, "--max_eval_samples of the 20 given images"
    assert not (tmp_path / "eval" / "model.safetensors").exists(), "nothing trained, nothing saved"


def test_report_to_tensorboard_writes_events(tmp_path, monkeypatch):
    pytest.importorskip("tensorboard", reason="the [tensorboard] extra (part of [dev])")
    logs = tmp_path / "tb"
    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", str(logs))  # transformers 5: was --logging_dir
    train.run(tiny(tmp_path, "--max_steps", "2", "--logging_steps", "1", "--do_train", report_to="tensorboard"))
    assert list(logs.rglob("events.out.tfevents.*")), "an events file"


# ------------------------------------------------------------------------------------------------ logs


def test_short_runs_log_often_enough_for_an_alpha_curve():
    assert short_run_logging_steps(500, 40) == 2
    assert short_run_logging_steps(500, 10) == 1
    assert short_run_logging_steps(10, 100_000) == 10
    assert short_run_logging_steps(0.1, 40) == 0.1, "a ratio is left alone"
    _, _, args = parse_args([*DATA, "--max_steps", "40"])
    assert args.logging_steps == 2
    _, _, args = parse_args([*DATA, "--max_steps", "40", "--logging_steps", "50"])
    assert args.logging_steps == 50, "explicit flags win"


def test_no_pin_memory_without_an_accelerator():
    _, _, args = parse_args([*DATA, "--use_cpu", "True"])
    assert args.dataloader_pin_memory is False
    _, _, args = parse_args([*DATA, "--use_cpu", "True", "--dataloader_pin_memory", "True"])
    assert args.use_cpu and args.dataloader_pin_memory is False, "🤗 itself turns it off with --use_cpu"


PROBE = """
import logging, sys
import datasets.utils.logging as datasets_logging
import huggingface_hub.utils.logging as hub_logging
from mixpro_hf import train

inner = train.run
def run(argv):
    logging.getLogger("mixpro_hf.probe").warning("probe-mixpro")
    hub_logging.get_logger("huggingface_hub.probe").warning("probe-hub")
    datasets_logging.get_logger("datasets.probe").warning("probe-datasets")
    return inner(argv)
train.run = run
sys.exit(train.main(sys.argv[1:]))
"""


def test_the_default_shaped_job_prints_no_needless_warning_and_nothing_twice(tmp_path):
    env = {**os.environ, "CI": "1"}  # CI=1 makes transformers' logger propagate to the root logger
    env.pop("CUDA_VISIBLE_DEVICES", None)
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, *tiny(tmp_path, "--max_steps", "3")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    assert "pin_memory" not in output
    assert "stochastic depth" not in output and "is not applied" not in output, "no warning about drop_path_rate"
    warnings = [line for line in output.splitlines() if "warn" in line.lower() and "probe-" not in line]
    assert not warnings, warnings
    for probe in ("probe-mixpro", "probe-hub", "probe-datasets"):
        assert output.count(probe) == 1, (probe, output[-3000:])
    recipe_lines = [line for line in output.splitlines() if "mixpro_hf.train - recipe deit" in line]
    assert len(recipe_lines) == 1, output[-3000:]
    lr = float(DIGITS_FLAGS["learning_rate"])
    assert f"learning_rate {lr:.3g}" in recipe_lines[0] and "max_grad_norm 5" in recipe_lines[0]
    logged = [line for line in proc.stdout.splitlines() if " - mixpro_hf" in line]
    assert len(logged) == len(set(logged))
    state = json.loads((tmp_path / "out" / "trainer_state.json").read_text())
    assert sum("loss" in entry for entry in state["log_history"]) == 3, "a 3-step run logs every step"
