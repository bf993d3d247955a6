"""The final ``MixProTrainer.save_model()`` is atomic per file: staged under ``output_dir/.mixpro-saving/final``,
moved into place when complete; a full disk leaves the previous final model intact and gives one line."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
import safetensors.torch
import torch
import transformers.modeling_utils
from transformers import Trainer, ViTForImageClassification, ViTImageProcessor

from mixpro_hf.hub import files_to_push
from mixpro_hf.trainer import STAGING_DIR, CheckpointSaveError, MixProTrainer
from mixpro_hf.training_args import MixProTrainingArguments


def make_trainer(tmp_path: Path, model: torch.nn.Module, dataset, **kw) -> MixProTrainer:
    defaults = dict(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=8,
        max_steps=2,
        mask_scale=1,
        learning_rate=3e-3,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
        dataloader_num_workers=0,
    )
    args = MixProTrainingArguments(**{**defaults, **kw})
    return MixProTrainer(model=model, args=args, train_dataset=dataset, processing_class=ViTImageProcessor())


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (relative path -> bytes)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_save_model_writes_the_same_files_and_weights(tmp_path, tiny_vit, toy_dataset):
    trainer = make_trainer(tmp_path, tiny_vit(), toy_dataset(16))
    out = Path(trainer.args.output_dir)
    plain = tmp_path / "plain"
    Trainer.save_model(trainer, str(plain))  # 🤗 Trainer's own save, straight into the folder
    out.mkdir(exist_ok=True)
    (out / "model-00001-of-00002.safetensors").write_bytes(b"stale shard of an earlier sharded save")
    (out / "notes.txt").write_text("not ours")

    trainer.save_model()

    names = sorted(os.listdir(out))
    assert names == sorted([*os.listdir(plain), "notes.txt"]), "the same files; the stale shard is removed"
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "training_args.bin"} <= set(names)
    for name in ("model.safetensors", "config.json", "preprocessor_config.json"):
        assert (out / name).read_bytes() == (plain / name).read_bytes(), name
    assert not (out / STAGING_DIR).exists(), "no staging folder left"
    loaded = ViTForImageClassification.from_pretrained(out)
    expected = trainer.model.state_dict()
    assert loaded.state_dict().keys() == expected.keys()
    assert all(torch.equal(loaded.state_dict()[k], expected[k]) for k in expected)


def test_a_full_disk_keeps_the_previous_final_model_and_gives_one_line(tmp_path, tiny_vit, toy_dataset, monkeypatch):
    trainer = make_trainer(tmp_path, tiny_vit(), toy_dataset(16))
    out = Path(trainer.args.output_dir)
    trainer.save_model()
    before = snapshot(out)
    with torch.no_grad():  # the next save would write other weights
        for p in trainer.model.parameters():
            p.add_(1.0)
    written: list[str] = []

    def half_then_full_disk(tensors, filename, metadata=None):
        data = safetensors.torch.save(tensors, metadata=metadata)
        Path(filename).write_bytes(data[: len(data) // 2])  # a torn model.safetensors
        written.append(str(filename))
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(transformers.modeling_utils, "safe_save_file", half_then_full_disk)
    with pytest.raises(CheckpointSaveError) as info:
        trainer.save_model()

    message = str(info.value)
    assert "\n" not in message, message
    assert "No space left on device" in message and f"the previous final model in {out} is intact" in message
    assert written and all(STAGING_DIR in w for w in written), "the weights were written to the staging folder"
    assert snapshot(out) == before, "model.safetensors and every other file are byte-identical"
    assert not (out / STAGING_DIR).exists(), "the partial save is removed"


def test_checkpoints_are_staged_once_and_the_final_model_beside_them(tmp_path, tiny_vit, toy_dataset, monkeypatch):
    trainer = make_trainer(tmp_path, tiny_vit(), toy_dataset(32), max_steps=4, save_strategy="steps", save_steps=2)
    out = Path(trainer.args.output_dir)
    saved_to: list[str] = []
    original = MixProTrainer._save

    def recording(self, output_dir=None, state_dict=None):
        saved_to.append(os.path.relpath(output_dir, out))
        return original(self, output_dir, state_dict)

    monkeypatch.setattr(MixProTrainer, "_save", recording)
    trainer.train()
    trainer.save_model()

    staging = os.path.join(STAGING_DIR, "{}")
    assert saved_to == [staging.format("checkpoint-2"), staging.format("checkpoint-4"), staging.format("final")]
    for step in (2, 4):
        checkpoint = out / f"checkpoint-{step}"
        assert {"model.safetensors", "config.json", "trainer_state.json", "optimizer.pt"} <= set(os.listdir(checkpoint))
        assert not (checkpoint / STAGING_DIR).exists(), "a checkpoint is not staged a second time"
    assert (out / "model.safetensors").is_file() and (out / "config.json").is_file()
    assert not (out / STAGING_DIR).exists(), "nothing staged left over"


def test_a_killed_save_is_cleaned_up_and_never_pushed(tmp_path, tiny_vit, toy_dataset):
    trainer = make_trainer(tmp_path, tiny_vit(), toy_dataset(16))
    out = Path(trainer.args.output_dir)
    leftover = out / STAGING_DIR / "final"
    leftover.mkdir(parents=True)
    (leftover / "model.safetensors").write_bytes(b"torn")
    assert files_to_push(out) == [], "the staging folder is a dot-folder: never on the push list"
    trainer.save_model()
    assert not (out / STAGING_DIR).exists()
    assert "model.safetensors" in files_to_push(out) and not any(STAGING_DIR in f for f in files_to_push(out))
