"""What a run guarantees (issue 19, items 4-8): evaluate-only runs evaluate the user's data, a resume refuses or
records changed settings, one run per output folder, labels and inputs checked before the first step."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from conftest import TINY_CONFIG
from PIL import Image
from test_runs import fast, one_line_error, saving
from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

from mixpro_hf import train
from mixpro_hf.arguments import parse_args
from mixpro_hf.output_guard import LOCK_FILE, OutputDirInUse, OutputDirLock
from mixpro_hf.pipeline import prepare
from mixpro_hf.preflight import check_pickles
from mixpro_hf.run_record import RUN_FILE
from mixpro_hf.trainer import MixProTrainer
from mixpro_hf.training_args import MixProTrainingArguments

CPU = ["--use_cpu", "True", "--report_to", "none", "--disable_tqdm", "True", "--dataloader_num_workers", "0"]


def png(value: int, size: int = 12) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), (value, 255 - value, value // 2)).save(buffer, format="PNG")
    return buffer.getvalue()


def image_folder(root: Path, classes: dict[str, int]) -> Path:
    """``root/<class>/<i>.png``: ``classes[name]`` images per class."""
    for index, (name, count) in enumerate(classes.items()):
        (root / name).mkdir(parents=True)
        for i in range(count):
            (root / name / f"{i}.png").write_bytes(png(40 * index + 5 * i))
    return root


def parquet(path: Path, labels: list[int], image: list | None = None) -> Path:
    images = image if image is not None else [{"bytes": png(10 * i), "path": None} for i in range(len(labels))]
    pq.write_table(pa.table({"image": images, "label": labels}), path)
    return path


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny ViT classifier of the classes ``cat`` and ``dog`` with its image processor, as a trained run leaves."""
    folder = tmp_path_factory.mktemp("model")
    torch.manual_seed(0)
    config = ViTConfig(**{**TINY_CONFIG, "num_labels": 2, "id2label": {0: "cat", 1: "dog"}})
    config.label2id = {"cat": 0, "dog": 1}
    ViTForImageClassification(config).save_pretrained(folder)
    ViTImageProcessor(size={"height": 16, "width": 16}).save_pretrained(folder)
    return folder


# ---------------------------------------------------------------------- 4. evaluate-only on the user's data


def evaluate_only(tmp_path: Path, model: Path, *extra: str) -> list[str]:
    return ["--output_dir", str(tmp_path / "out"), "--model_name_or_path", str(model), "--do_train", "False", *CPU,
            *extra]  # fmt: skip


def test_evaluate_only_evaluates_the_given_folder_even_with_mixing_settings_a_tiny_grid_refuses(
    tmp_path, saved_model, caplog
):
    folder = image_folder(tmp_path / "val", {"cat": 3, "dog": 2})
    caplog.set_level("INFO", logger="mixpro_hf")
    test = image_folder(tmp_path / "test", {"cat": 1, "dog": 2})
    flags = evaluate_only(tmp_path, saved_model, "--validation_dir", str(folder), "--test_dir", str(test))
    results = train.run([*flags, "--mask_scale", "4"])  # a 1-cell MaskMix grid: refused only when training
    assert results["eval_samples"] == 5, "exactly the 5 images of --validation_dir, not the embedded digits"
    assert results["test_samples"] == 3, "and the 3 of --test_dir"
    assert json.loads((tmp_path / "out" / "eval_results.json").read_text())["eval_samples"] == 5
    assert "evaluating the model on 5 validation images" in caplog.text
    assert not (tmp_path / "out" / LOCK_FILE).exists(), "the lock is released"


def test_a_trainer_built_to_evaluate_does_not_check_mixing_settings(tmp_path, tiny_vit, toy_dataset):
    args = MixProTrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[], do_eval=True, mask_scale=4)
    trainer = MixProTrainer(model=tiny_vit(), args=args, eval_dataset=toy_dataset(8))
    assert "eval_loss" in trainer.evaluate()
    with pytest.raises(ValueError, match="mask_scale 4 on a 4x4 patch grid"):
        trainer.train()  # training checks them before the first step


def test_evaluate_only_without_evaluation_data_is_refused(tmp_path, saved_model, capsys):
    assert train.main(evaluate_only(tmp_path, saved_model, "--do_eval", "True")) == 2
    assert "no evaluation data was given" in one_line_error(capsys)
    assert not (tmp_path / "out").exists(), "nothing left behind"


def test_a_training_run_never_ignores_an_evaluation_folder(tmp_path, capsys):
    folder = image_folder(tmp_path / "val", {"cat": 1, "dog": 1})
    assert train.main(fast(tmp_path, "--validation_dir", str(folder))) == 2, "not the digits, with DIR ignored"
    assert "goes with --train_dir" in one_line_error(capsys)


def test_evaluate_only_refuses_a_class_the_model_does_not_have(tmp_path, saved_model, capsys):
    folder = image_folder(tmp_path / "val", {"cat": 1, "horse": 1})
    assert train.main(evaluate_only(tmp_path, saved_model, "--validation_dir", str(folder))) == 2
    line = one_line_error(capsys)
    assert "'horse'" in line and "the model" in line


# ---------------------------------------------------------------------- 5. resume tells the truth


def test_a_resume_with_a_changed_learning_rate_is_refused_then_applied_and_recorded(tmp_path, capsys):
    out = tmp_path / "out"
    constant = ["--lr_scheduler_type", "constant", "--warmup_steps", "0", "--mix_method", "mixup"]
    assert train.main(fast(tmp_path, *saving(2, 2), *constant, "--learning_rate", "0.001")) == 0
    capsys.readouterr()
    changed = fast(tmp_path, *saving(2, 4), *constant, "--learning_rate", "0.002", "--resume_from_checkpoint", "last")
    assert train.main(changed) == 2
    line = one_line_error(capsys)
    assert "learning_rate: 0.001 in the checkpoint's run, 0.002 now" in line
    assert "--resume_with_changed_settings True" in line
    assert train.main([*changed, "--resume_with_changed_settings", "True"]) == 0
    logged = {e["step"]: e["learning_rate"] for e in json.loads((out / "trainer_state.json").read_text())["log_history"]
              if "learning_rate" in e}  # fmt: skip
    assert logged[1] == pytest.approx(0.001) and logged[4] == pytest.approx(0.002), "the new rate ran"
    record = json.loads((out / RUN_FILE).read_text())
    segments = [(s["from_step"], s["applied"]["learning_rate"]) for s in record["segments"]]
    assert segments == [(0, pytest.approx(0.001)), (2, pytest.approx(0.002))]
    assert record["training_args"]["learning_rate"] == pytest.approx(0.002)
    assert record["examples"]["train"] == 64
    card = (out / "README.md").read_text()
    assert "from step 2: learning_rate `0.002` (before: learning_rate `0.001`)" in card


def test_the_trainer_refuses_then_applies_a_changed_learning_rate_on_resume(tmp_path, tiny_vit, toy_dataset):
    def trainer(learning_rate: float, steps: int, **extra) -> MixProTrainer:
        args = MixProTrainingArguments(
            output_dir=str(tmp_path), use_cpu=True, report_to=[], mask_scale=2, max_steps=steps, save_steps=2,
            per_device_train_batch_size=4, learning_rate=learning_rate, lr_scheduler_type="constant", logging_steps=1,
            **extra,
        )  # fmt: skip
        return MixProTrainer(model=tiny_vit(), args=args, train_dataset=toy_dataset(16))

    trainer(1e-3, 2).train()
    with pytest.raises(ValueError, match=r"learning_rate: 0.001 in the checkpoint's run, 0.002 now.*--resume_with"):
        trainer(2e-3, 4).train(resume_from_checkpoint=True)
    resumed = trainer(2e-3, 4, resume_with_changed_settings=True)
    resumed.train(resume_from_checkpoint=True)
    logged = {e["step"]: e["learning_rate"] for e in resumed.state.log_history if "learning_rate" in e}
    assert logged[1] == pytest.approx(1e-3) and logged[3] == logged[4] == pytest.approx(2e-3)


# ---------------------------------------------------------------------- 6. one run per output folder


def hold_lock(folder: Path, pid: int, host: str | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    owner = {"host": host or socket.gethostname(), "pid": pid, "started": time.time() - 60}
    (folder / LOCK_FILE).write_text(json.dumps(owner))


def test_a_second_run_into_a_folder_in_use_is_refused(tmp_path, capsys):
    out = tmp_path / "out"
    hold_lock(out, os.getppid())  # a live process of this host: another run
    assert train.main(fast(tmp_path)) == 2
    line = one_line_error(capsys)
    assert "is in use by another run" in line and f"pid {os.getppid()}" in line
    assert sorted(p.name for p in out.iterdir()) == [LOCK_FILE], "nothing written, the other run's lock kept"


def test_the_no_trainer_example_refuses_a_folder_in_use(tmp_path, capsys):
    from test_training_loops import _no_trainer_main

    out = tmp_path / "out"
    hold_lock(out, os.getppid())
    with pytest.raises(SystemExit) as exit_info:
        _no_trainer_main()(fast(tmp_path))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "is in use by another run" in err and "Traceback" not in err
    assert sorted(p.name for p in out.iterdir()) == [LOCK_FILE]


def test_the_trainer_refuses_a_folder_in_use(tmp_path, tiny_vit, toy_dataset):
    hold_lock(tmp_path, os.getppid())
    args = MixProTrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[], max_steps=1, mask_scale=2)
    trainer = MixProTrainer(model=tiny_vit(), args=args, train_dataset=toy_dataset(8))
    with pytest.raises(OutputDirInUse, match="in use by another run"):
        trainer.train()


def test_a_stale_lock_is_reported_and_replaced_and_another_hosts_lock_is_named(tmp_path, caplog):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    hold_lock(tmp_path, gone.pid)
    lock = OutputDirLock(tmp_path).acquire()
    assert "stale lock" in caplog.text and f"pid {gone.pid}" in caplog.text
    assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
    lock.release()
    assert not (tmp_path / LOCK_FILE).exists()
    hold_lock(tmp_path, 1, host="another-machine")
    with pytest.raises(OutputDirInUse, match=f"another-machine.*delete {tmp_path / LOCK_FILE}"):
        OutputDirLock(tmp_path).acquire()


# ---------------------------------------------------------------------- 7. labels checked before training


def test_an_image_folder_class_absent_from_training_is_refused(tmp_path, capsys):
    train_dir = image_folder(tmp_path / "train", {"cat": 2, "dog": 2})
    val_dir = image_folder(tmp_path / "val", {"cat": 1, "dog": 1, "fox": 1})
    assert train.main(fast(tmp_path, "--train_dir", str(train_dir), "--validation_dir", str(val_dir))) == 2
    line = one_line_error(capsys)
    assert "['fox']" in line and "training folder does not have" in line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("source", ["image_folder", "parquet"])
def test_one_class_is_refused(tmp_path, capsys, source):
    if source == "image_folder":
        flags = ["--train_dir", str(image_folder(tmp_path / "train", {"cat": 4}))]
    else:
        flags = ["--train_file", str(parquet(tmp_path / "train.parquet", [0, 0, 0, 0]))]
    assert train.main(fast(tmp_path, *flags)) == 2
    assert "at least two classes" in one_line_error(capsys)


# ---------------------------------------------------------------------- 8. every input check before the first step


def test_an_integer_image_column_is_refused_before_anything_is_written(tmp_path, capsys):
    data = parquet(tmp_path / "train.parquet", [0, 1, 0, 1], image=[1, 2, 3, 4])
    assert train.main(fast(tmp_path, "--train_file", str(data))) == 2
    line = one_line_error(capsys)
    assert "image column 'image' holds int64 values (e.g. 1)" in line
    assert not (tmp_path / "out").exists(), "no mixpro_run.json that blocks the corrected rerun"


class Payload:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_a_pickle_checkpoint_is_refused_in_one_line(tmp_path, saved_model, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model = tmp_path / "pickled"
    model.mkdir()
    (model / "config.json").write_text((saved_model / "config.json").read_text())
    torch.save({"weights": Payload()}, model / "pytorch_model.bin")
    val = image_folder(tmp_path / "val", {"cat": 1, "dog": 1})
    assert train.main(evaluate_only(tmp_path, model, "--validation_dir", str(val))) == 2
    line = one_line_error(capsys)
    assert "pytorch_model.bin is a pickle file" in line and "safetensors" in line
    checkpoint = tmp_path / "checkpoint-1"
    checkpoint.mkdir()
    torch.save({"state": Payload()}, checkpoint / "optimizer.pt")
    with pytest.raises(ValueError, match="optimizer.pt is a pickle file"):
        check_pickles(checkpoint)
    assert not (tmp_path / "PWNED").exists(), "the payload never ran"


def test_an_auto_map_of_code_the_run_does_not_use_is_dropped(tmp_path, saved_model, caplog):
    model = tmp_path / "remote"
    model.mkdir()
    for name in ("model.safetensors", "preprocessor_config.json"):
        (model / name).write_bytes((saved_model / name).read_bytes())
    config = json.loads((saved_model / "config.json").read_text())
    config["auto_map"] = {"AutoModelForImageClassification": "modeling_custom.CustomViT"}
    (model / "config.json").write_text(json.dumps(config))
    val = image_folder(tmp_path / "val", {"cat": 1, "dog": 1})
    prepared = prepare(*parse_args(evaluate_only(tmp_path, model, "--validation_dir", str(val))))
    assert "auto_map" in caplog.text and "dropped" in caplog.text
    prepared.model.save_pretrained(tmp_path / "saved")
    assert "auto_map" not in json.loads((tmp_path / "saved" / "config.json").read_text())


def test_the_lock_file_keeps_no_command_line_secret(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["mixpro-train", "--token", "hf_not_to_be_written", "--hub_token", "hf_neither"])
    lock = OutputDirLock(tmp_path / "out").acquire()
    try:
        text = (tmp_path / "out" / LOCK_FILE).read_text()
        assert "hf_not_to_be_written" not in text and "hf_neither" not in text
        assert json.loads(text)["pid"] == os.getpid()
    finally:
        lock.release()
    assert not (tmp_path / "out" / LOCK_FILE).exists()
