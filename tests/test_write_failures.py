"""A failed write (issue 30): a full disk, a read-only or vanished folder, at every write of every entry point, is one
line naming the path and the cause, what was kept and how to continue; exit 1; nothing half-written is left; a
rerun with space resumes or restarts as the line says (:mod:`mixpro_hf.write_guard`)."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import safetensors
import transformers.modeling_utils
from conftest import make_tiny_vit
from test_runs import fast, global_step, one_line_error, saving

from mixpro_hf import evaluate_cli, model_card, train, write_guard
from mixpro_hf.output_guard import LOCK_FILE
from mixpro_hf.pipeline import checkpoint_problem
from mixpro_hf.trainer import STAGING_DIR, MixProTrainer
from mixpro_hf.write_guard import (
    PARTIAL_SUFFIX,
    WriteFailed,
    atomic_write_text,
    reporting_write_failures,
    write_error,
)

FULL = "Error while serializing: I/O error: No space left on device (os error 28)"


def leftovers(folder: Path) -> list[str]:
    """Half-written things a later run or a user could take for complete (temporary files, staging folders)."""
    if not folder.exists():
        return []
    return sorted(str(p) for p in folder.rglob("*") if p.name.endswith(PARTIAL_SUFFIX) or p.name == STAGING_DIR)


# ---------------------------------------------------------------------- the mechanism


def test_write_error_finds_the_cause_of_every_writer():
    cause = write_error(safetensors.SafetensorError(FULL))
    assert (cause.errno, cause.reason, cause.from_writer) == (errno.ENOSPC, "No space left on device", True)
    torn = RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")  # torch.save
    assert (
        write_error(torn).reason
        == "torch's writer stopped short (unexpected pos 576 vs 534): the volume is likely full"
    )
    assert write_error(torn).fix("out").startswith("free some space")
    wrapped = RuntimeError("saving failed")
    wrapped.__cause__ = OSError(errno.EROFS, os.strerror(errno.EROFS), "/out/x.json")
    assert (write_error(wrapped).errno, write_error(wrapped).path) == (errno.EROFS, "/out/x.json")
    assert write_error(ValueError("bad value")) is None
    assert write_error(safetensors.SafetensorError("Error while deserializing header: HeaderTooLarge")) is None
    assert write_error(RuntimeError("the Hub answered with status code: 404")) is None
    assert write_error(FileNotFoundError("out is not a training output folder")) is None  # the code's own message


def test_only_write_failures_become_one_line():
    with pytest.raises(WriteFailed, match=r"^could not write x: No space left on device \(errno 28\); kept; "):
        with reporting_write_failures(lambda c: write_guard.failure_line("x", c, "kept", "again")):
            raise safetensors.SafetensorError(FULL)
    with pytest.raises(KeyError), reporting_write_failures(lambda c: "never"):
        raise KeyError("not a write")
    # a whole run (the safety net) never reports a missing input as a failed write
    missing_input = FileNotFoundError(errno.ENOENT, "No such file or directory", "/data/train.parquet")
    with pytest.raises(FileNotFoundError), reporting_write_failures(lambda c: "", writes_only=False, within="/out"):
        raise missing_input


def test_an_atomic_write_that_fails_keeps_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "results.json"
    atomic_write_text(path, "old\n")

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(write_guard.os, "fsync", full)
    with pytest.raises(OSError, match="No space left"):
        atomic_write_text(path, "new, long " * 1000)
    assert path.read_text() == "old\n" and os.listdir(tmp_path) == ["results.json"]


# ---------------------------------------------------------------------- each write site of mixpro-train


def full_disk_for(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """``write_guard.atomic_write`` of ``name`` hits a full disk (after the data was written, before the rename)."""
    fsync = os.fsync

    def failing(fd: int) -> None:
        if Path(os.readlink(f"/proc/self/fd/{fd}")).name.startswith(f".{name}."):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        fsync(fd)

    monkeypatch.setattr(write_guard.os, "fsync", failing)


@pytest.mark.parametrize("name", ["mixpro_run.json", "trainer_state.json", "README.md", "alpha_curve.png"])
def test_a_full_disk_at_a_file_of_the_run_is_one_line(tmp_path, monkeypatch, capsys, name):
    out = tmp_path / "out"
    full_disk_for(monkeypatch, name)
    assert train.main(fast(tmp_path)) == 1
    line = one_line_error(capsys)
    assert f"could not write {out / name}: No space left on device (errno 28); no complete checkpoint" in line, line
    assert line.endswith("then run again with --overwrite_output_dir True"), line
    assert not (out / name).exists() and not leftovers(out), "nothing half-written"
    assert not (out / LOCK_FILE).exists()


def test_safetensors_full_disk_at_a_checkpoint_and_at_the_final_model(tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    original = transformers.modeling_utils.safe_save_file
    fail_in = {"where": "checkpoint-4"}

    def full(tensors, filename, metadata=None):
        if fail_in["where"] in str(filename):
            Path(filename).write_bytes(b"half a file")
            raise safetensors.SafetensorError(FULL)
        return original(tensors, filename, metadata=metadata)

    monkeypatch.setattr(transformers.modeling_utils, "safe_save_file", full)
    assert train.main(fast(tmp_path, *saving(2, 4))) == 1
    line = one_line_error(capsys)
    assert f"could not write {out / 'checkpoint-4'}: No space left on device (errno 28)" in line, line
    assert f"the last complete checkpoint {out / 'checkpoint-2'} is intact" in line, line
    assert line.endswith("then continue with --resume_from_checkpoint last"), line
    assert not (out / "checkpoint-4").exists() and not leftovers(out)

    fail_in["where"] = os.path.join(STAGING_DIR, "final")  # the final model, after a resume as the line says
    assert train.main(fast(tmp_path, *saving(2, 4), "--resume_from_checkpoint", "last")) == 1
    line = one_line_error(capsys)
    assert f"could not write the final model to {out}: No space left on device (errno 28)" in line, line
    assert "no earlier final model exists" in line and "checkpoint-4 is intact" in line, line
    assert not (out / "model.safetensors").exists() and not leftovers(out)
    monkeypatch.undo()
    assert train.main(fast(tmp_path, *saving(2, 4), "--resume_from_checkpoint", "last")) == 0
    assert (out / "model.safetensors").is_file() and global_step(out) == 4


def test_a_read_only_folder_and_a_vanished_one(tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    original = MixProTrainer._save_rng_state

    def read_only(self, output_dir):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.path.join(output_dir, "rng_state.pth"))

    monkeypatch.setattr(MixProTrainer, "_save_rng_state", read_only)
    assert train.main(fast(tmp_path, *saving(2, 4))) == 1
    line = one_line_error(capsys)
    assert "Read-only file system (errno 30)" in line and f"make {out} writable" in line, line
    assert not (out / "checkpoint-2").exists() and not leftovers(out)

    monkeypatch.setattr(MixProTrainer, "_save_rng_state", original)
    training_step = MixProTrainer.training_step

    def vanish_after_step_2(self, *args, **kwargs):
        if self.state.global_step == 2 and out.exists():
            shutil.rmtree(out)  # the folder is deleted while the run goes on
        return training_step(self, *args, **kwargs)

    monkeypatch.setattr(MixProTrainer, "training_step", vanish_after_step_2)
    assert train.main(fast(tmp_path, *saving(2, 4), "--overwrite_output_dir", "True")) == 1
    line = one_line_error(capsys)
    assert f"could not write {out / 'checkpoint-4'}: the folder was removed during the run (errno 2)" in line, line
    assert "no complete checkpoint was saved" in line, line
    assert not out.exists(), "not recreated without the run's earlier checkpoints and record"


# ---------------------------------------------------------------------- mixpro-evaluate and mixpro-card


def test_mixpro_evaluate_and_mixpro_card_on_a_full_disk(tmp_path, monkeypatch, capsys):
    from test_evaluate import NAMES, _image_folder
    from transformers import ViTImageProcessor

    model_dir = tmp_path / "model"
    make_tiny_vit(id2label=dict(enumerate(NAMES)), label2id={n: i for i, n in enumerate(NAMES)}).save_pretrained(
        model_dir
    )
    ViTImageProcessor(size={"height": 16, "width": 16}).save_pretrained(model_dir)
    data = _image_folder(tmp_path / "data", NAMES, 2, 0)
    out = tmp_path / "results"
    full_disk_for(monkeypatch, "model__data.json")
    argv = [str(model_dir), "--dataset", str(data), "--output_dir", str(out), "--occlusion", "False"]
    assert evaluate_cli.main(argv) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(errors) == 1 and errors[0].startswith("mixpro-evaluate: error: could not write "), errors
    assert f"{out / 'model__data.json'}: No space left on device (errno 28); no result file was written" in errors[0]
    assert os.listdir(out) == [], "no half-written result"

    (model_dir / "README.md").write_text("---\nlibrary_name: transformers\n---\nby mixpro_hf\n")
    full_disk_for(monkeypatch, "README.md")
    monkeypatch.setattr(model_card, "REPLACEABLE", ("by mixpro_hf",))
    before = (model_dir / "README.md").read_text()
    assert model_card.card_main([str(model_dir)]) == 1
    err = capsys.readouterr().err.strip()
    assert err == (
        f"mixpro-card: error: could not write {model_dir / 'README.md'}: No space left on device (errno 28); the "
        f"previous README.md is unchanged; free some space on the volume of {model_dir} (or choose another "
        "--output_dir), then run mixpro-card again"
    )
    assert (model_dir / "README.md").read_text() == before and not leftovers(model_dir)


# ---------------------------------------------------------------------- a real small volume


@pytest.fixture
def small_volume(tmp_path: Path):
    """A 448 KiB tmpfs (room for the run record and one checkpoint of the tiny ViT, not two); ``resize(size)``
    remounts it, ``"ro"`` read-only."""
    mount = tmp_path / "volume"
    mount.mkdir()
    if shutil.which("mount") is None or os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root and mount(8); the monkeypatched full disks above still run")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=448k", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"could not mount a tmpfs here: {done.stderr.decode().strip()}")

    def resize(option: str) -> None:
        subprocess.run(["mount", "-o", f"remount,{option}", str(mount)], check=True)

    try:
        yield mount, resize
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_volume_too_small_ends_in_one_line_and_the_rerun_resumes_as_it_says(small_volume, capsys):
    volume, resize = small_volume
    out = volume / "out"
    argv = [*fast(volume, *saving(2, 4)), "--eval_strategy", "no"]
    assert train.main(argv) == 1
    line = one_line_error(capsys)
    assert f"could not write {out / 'checkpoint-4'}: " in line, line
    # the weights (safetensors: errno 28) or the optimizer's state (torch.save: a short write, no errno) fill it
    assert "No space left on device (errno 28)" in line or "the volume is likely full" in line, line
    assert f"the last complete checkpoint {out / 'checkpoint-2'} is intact" in line, line
    assert f"free some space on the volume of {out}" in line and line.endswith("--resume_from_checkpoint last")
    assert checkpoint_problem(out / "checkpoint-2") is None and not leftovers(out)

    resize("size=8m")  # space freed: the rerun does what the line says
    assert train.main([*argv, "--resume_from_checkpoint", "last"]) == 0
    assert global_step(out) == 4 and (out / "model.safetensors").is_file() and not leftovers(out)

    resize("ro")  # the card of that run, on a volume now read-only
    assert model_card.card_main([str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert "Read-only file system (errno 30); the previous README.md is unchanged; make" in err, err
    assert train.main([*argv, "--resume_from_checkpoint", "last"]) == 1
    assert f"could not write {out / LOCK_FILE}: Read-only file system (errno 30)" in one_line_error(capsys)


def test_a_volume_too_small_for_the_first_checkpoint_restarts_as_the_line_says(small_volume, capsys):
    volume, resize = small_volume
    resize("size=64k")  # the weights (82 KB) do not fit: safetensors' own error type, errno 28
    out = volume / "out"
    argv = [*fast(volume, *saving(2, 2)), "--eval_strategy", "no"]
    assert train.main(argv) == 1
    line = one_line_error(capsys)
    assert f"could not write {out / 'checkpoint-2'}: No space left on device (errno 28); no complete checkpoint" in line
    assert line.endswith("then run again with --overwrite_output_dir True") and not leftovers(out)
    resize("size=8m")
    assert train.main([*argv, "--overwrite_output_dir", "True"]) == 0
    assert json.loads((out / "all_results.json").read_text())["epoch"] > 0


def test_the_no_trainer_example_on_a_full_disk(tmp_path, monkeypatch, capsys):
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "examples" / "run_image_classification_no_trainer.py"
    spec = importlib.util.spec_from_file_location("no_trainer", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    def full(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"half a file")
        raise safetensors.SafetensorError(FULL)

    monkeypatch.setattr(transformers.modeling_utils, "safe_save_file", full)
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        module.main(fast(tmp_path))
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "error" in line]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert f"could not write {out}: No space left on device (errno 28)" in lines[0], lines[0]
    assert not (out / "model.safetensors").exists() and not (out / "config.json").exists(), "no half-written model"
    assert (out / "mixpro_run.json").is_file() and not (out / LOCK_FILE).exists()
