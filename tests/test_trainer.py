"""MixProTrainer on tiny random models: every method, learning, eval unmixed, logs, resume, equivalence."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import NUM_LABELS
from transformers import SwinConfig, SwinForImageClassification

from mixpro_hf import MIX_METHODS
from mixpro_hf.trainer import MixProTrainer
from mixpro_hf.training_args import MixProTrainingArguments


def make_args(tmp_path: Path, **kw) -> MixProTrainingArguments:
    defaults = dict(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=8,
        per_device_eval_batch_size=16,
        max_steps=3,
        learning_rate=3e-3,
        logging_steps=1,
        report_to=[],
        save_strategy="no",
        mask_scale=1,
        label_smoothing_factor=0.1,
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
        dataloader_num_workers=0,
    )
    defaults.update(kw)
    return MixProTrainingArguments(**defaults)


def params(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


@pytest.mark.parametrize("method", MIX_METHODS)
def test_every_method_trains(tmp_path, method, tiny_vit, toy_dataset):
    extra = {"maskmix_prob": 1.0} if method == "mixpro" else {"switch_prob": 1.0} if method == "transmix" else {}
    trainer = MixProTrainer(
        model=tiny_vit(), args=make_args(tmp_path, mix_method=method, **extra), train_dataset=toy_dataset(32)
    )
    before = params(trainer.model).clone()
    result = trainer.train()
    assert torch.isfinite(torch.tensor(result.training_loss))
    assert not torch.equal(before, params(trainer.model))
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logs) == 3 and all("mixpro/lam_area" in entry for entry in logs)
    if method == "mixpro":
        assert all(0 <= entry["mixpro/alpha"] <= 1 and "mixpro/lam_attn" in entry for entry in logs)
    if method == "transmix":
        assert all("mixpro/lam_attn" in entry and "mixpro/alpha" not in entry for entry in logs)
    if method == "none":
        assert all(entry["mixpro/lam_area"] == 1.0 for entry in logs)


def test_mixpro_learns_the_toy_set_and_logs_alpha(tmp_path, tiny_vit, toy_dataset):
    args = make_args(tmp_path, max_steps=40, mix_method="mixpro", save_strategy="steps", save_steps=40)
    trainer = MixProTrainer(model=tiny_vit(), args=args, train_dataset=toy_dataset(64), eval_dataset=toy_dataset(32, 1))
    first = trainer.evaluate()["eval_loss"]
    trainer.train()
    last = trainer.evaluate()["eval_loss"]
    assert last < first - 0.1, (first, last)
    prediction = trainer.predict(toy_dataset(32, 1))
    accuracy = (prediction.predictions.argmax(-1) == prediction.label_ids).mean()
    assert accuracy >= 0.5, f"toy accuracy {accuracy} (chance 0.25)"
    state = json.loads((tmp_path / "out" / "checkpoint-40" / "trainer_state.json").read_text())
    alphas = [entry["mixpro/alpha"] for entry in state["log_history"] if "mixpro/alpha" in entry]
    assert len(alphas) >= 10 and all(0 <= a <= 1 for a in alphas)


def test_evaluation_is_never_mixed(tmp_path, tiny_vit, toy_dataset):
    eval_set = toy_dataset(16, 2)
    trainer = MixProTrainer(
        model=tiny_vit(),
        args=make_args(tmp_path, mix_on="collator", mix_method="mixpro"),
        train_dataset=toy_dataset(16),
        eval_dataset=eval_set,
    )
    batch = next(iter(trainer.get_eval_dataloader()))
    assert set(batch) == {"pixel_values", "labels"}
    torch.testing.assert_close(batch["pixel_values"].cpu(), eval_set[:]["pixel_values"])
    train_batch = next(iter(trainer.get_train_dataloader()))
    assert "mix_partner" in train_batch, "training batches are mixed by the collator"
    model = trainer.model.eval()
    with torch.no_grad():
        logits = model(pixel_values=eval_set[:]["pixel_values"]).logits
    expected = F.cross_entropy(logits, eval_set[:]["labels"], label_smoothing=0.1).item()
    assert trainer.evaluate()["eval_loss"] == pytest.approx(expected, rel=1e-4)


def test_unmixed_training_loss_is_label_smoothed_cross_entropy(tmp_path, tiny_vit, toy_dataset):
    trainer = MixProTrainer(model=tiny_vit(), args=make_args(tmp_path, mix_method="none"), train_dataset=toy_dataset(8))
    data = toy_dataset(8)
    inputs = {"pixel_values": data[:]["pixel_values"], "labels": data[:]["labels"]}
    trainer.model.train()
    loss = trainer.compute_loss(trainer.model, dict(inputs))
    logits = trainer.model(pixel_values=inputs["pixel_values"]).logits
    torch.testing.assert_close(loss, F.cross_entropy(logits, inputs["labels"], label_smoothing=0.1))


def test_collator_and_device_mixing_give_the_same_training(tmp_path, tiny_vit, toy_dataset):
    finals = {}
    for mix_on in ("device", "collator"):
        args = make_args(tmp_path / mix_on, mix_on=mix_on, mix_method="mixpro", max_steps=4)
        trainer = MixProTrainer(model=tiny_vit(), args=args, train_dataset=toy_dataset(32))
        trainer.train()
        finals[mix_on] = params(trainer.model)
    torch.testing.assert_close(finals["device"], finals["collator"])


def test_resume_reproduces_the_uninterrupted_run(tmp_path, tiny_vit, toy_dataset):
    common = dict(mix_method="mixpro", max_steps=6, save_strategy="steps", save_steps=3)
    full = MixProTrainer(model=tiny_vit(), args=make_args(tmp_path / "full", **common), train_dataset=toy_dataset(32))
    full.train()
    resumed = MixProTrainer(model=tiny_vit(), args=make_args(tmp_path / "res", **common), train_dataset=toy_dataset(32))
    resumed.train(resume_from_checkpoint=str(tmp_path / "full" / "out" / "checkpoint-3"))
    torch.testing.assert_close(params(full.model), params(resumed.model))
    alpha = [e.get("mixpro/alpha") for e in full.state.log_history if e.get("step", 0) > 3 and "loss" in e]
    alpha_resumed = [e.get("mixpro/alpha") for e in resumed.state.log_history if e.get("step", 0) > 3 and "loss" in e]
    assert alpha == alpha_resumed


def test_gradient_accumulation_matches_the_large_batch(tmp_path, tiny_vit, toy_dataset):
    small = MixProTrainer(
        model=tiny_vit(),
        train_dataset=toy_dataset(16),
        args=make_args(
            tmp_path / "a", mix_method="none", per_device_train_batch_size=8, gradient_accumulation_steps=2, max_steps=2
        ),
    )
    small.train()
    large = MixProTrainer(
        model=tiny_vit(),
        train_dataset=toy_dataset(16),
        args=make_args(tmp_path / "b", mix_method="none", per_device_train_batch_size=16, max_steps=2),
    )
    large.train()
    torch.testing.assert_close(params(small.model), params(large.model), atol=1e-5, rtol=1e-4)


def test_learnable_alpha_is_trained_and_logged(tmp_path, tiny_vit, toy_dataset):
    args = make_args(tmp_path, mix_method="mixpro", maskmix_prob=1.0, alpha_strategy="learnable", max_steps=3)
    trainer = MixProTrainer(model=tiny_vit(), args=args, train_dataset=toy_dataset(32))
    trainer.train()
    assert trainer.learnable_alpha is not None and trainer.learnable_alpha.item() != 0.0
    assert any("mixpro/learnable_alpha" in entry for entry in trainer.state.log_history)


def tiny_swin() -> SwinForImageClassification:
    config = SwinConfig(
        image_size=16, patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[1, 2], window_size=2, num_labels=NUM_LABELS
    )
    return SwinForImageClassification(config)


def test_model_without_class_token(tmp_path, toy_dataset):
    with pytest.raises(ValueError, match="swin"):
        MixProTrainer(model=tiny_swin(), args=make_args(tmp_path, mix_method="mixpro"), train_dataset=toy_dataset(16))
    trainer = MixProTrainer(
        model=tiny_swin(), args=make_args(tmp_path, mix_method="maskmix", max_steps=2), train_dataset=toy_dataset(16)
    )
    trainer.train()  # area-only MaskMix works for any image classifier


def test_bad_arguments_fail_early(tmp_path):
    with pytest.raises(ValueError, match="mix_method='cutout'|cutout"):
        make_args(tmp_path, mix_method="cutout")
    with pytest.raises(ValueError, match="maskmix_prob"):
        make_args(tmp_path, maskmix_prob=2.0)


DDP_SCRIPT = textwrap.dedent(
    """
    import torch, torch.distributed as dist
    from conftest import make_tiny_vit as tiny_vit, make_toy_dataset as toy_dataset
    from mixpro_hf.trainer import MixProTrainer
    from mixpro_hf.training_args import MixProTrainingArguments
    args = MixProTrainingArguments(output_dir={out!r}, per_device_train_batch_size=4, max_steps=3, report_to=[],
        save_strategy="no", mix_method="mixpro", maskmix_prob=1.0, mask_scale=1, use_cpu=True, disable_tqdm=True,
        logging_steps=1, ddp_backend="gloo")
    trainer = MixProTrainer(model=tiny_vit(), args=args, train_dataset=toy_dataset(32))
    trainer.train()
    flat = torch.cat([p.detach().flatten() for p in trainer.model.parameters()])
    gathered = [torch.zeros_like(flat) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, flat)
    assert torch.equal(gathered[0], gathered[1]), "replicas diverged"
    alpha = trainer.state.log_history[0]["mixpro/alpha"]
    with open({out!r} + f"/rank{{dist.get_rank()}}.txt", "w") as f:
        f.write(f"{{dist.get_world_size()}} {{alpha}}")
    dist.destroy_process_group()
    """
)


def test_two_processes_with_gloo(tmp_path):
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT.format(out=str(tmp_path / "out")))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parent)}
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = str(sock.getsockname()[1])
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", port, str(script)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for rank in (0, 1):
        world, alpha = (tmp_path / "out" / f"rank{rank}.txt").read_text().split()
        assert world == "2" and 0 <= float(alpha) <= 1
