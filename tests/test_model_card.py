"""The model card, ``mixpro-card`` and Hub publishing, against a local fake Hub (nothing reaches huggingface.co)."""

from __future__ import annotations

import dataclasses
import json
import shlex
import shutil
from pathlib import Path

import pytest
import torch
from conftest import HUB_TOKEN, make_tiny_vit, make_toy_dataset
from hub_server import FakeHub
from huggingface_hub import ModelCard, snapshot_download
from huggingface_hub.repocard_data import model_index_to_eval_results
from PIL import Image
from transformers import AutoImageProcessor, AutoModelForImageClassification, ViTImageProcessor

from mixpro_hf.model_card import (
    MIXPRO_BIBTEX,
    NOT_RECORDED,
    PushToHubError,
    add_evaluation_results,
    card_main,
    check_push_target,
    files_to_push,
    generate_model_card,
    push_output_dir,
    write_model_card,
)
from mixpro_hf.recipe import MixProConfig

REPO = "tester/vit-mixpro"
RESULTS = {
    "eval_accuracy": 0.9123,
    "eval_top5_accuracy": 0.99,
    "eval_ece": 0.0312,
    "eval_loss": 0.4,
    "eval_runtime": 1.25,
    "eval_samples_per_second": 120.0,
    "train_runtime": 12.5,
    "epoch": 3.0,
}
RECIPE = {
    "learning_rate": 0.0005,
    "per_device_train_batch_size": 64,
    "num_train_epochs": 3.0,
    "weight_decay": 0.05,
    "warmup_steps": 0.0667,
    "seed": 1234,
    "optim": "adamw_torch",
    "lr_scheduler_type": "cosine",
    "max_steps": -1,
}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny ViT output folder with every run record (shared: tests work on a copy)."""
    out = tmp_path_factory.mktemp("run") / "vit-mixpro-out"
    make_tiny_vit().save_pretrained(out)
    ViTImageProcessor(size={"height": 16, "width": 16}).save_pretrained(out)
    (out / "all_results.json").write_text(json.dumps(RESULTS))
    alpha = [
        {
            "step": s,
            "epoch": s / 10,
            "mixpro/alpha": s / 40,
            "mixpro/lam_area": 0.5,
            "mixpro/lam_attn": 0.25,
            "mixpro/lam": 0.375,
        }
        for s in range(1, 31)
    ]
    (out / "trainer_state.json").write_text(json.dumps({"log_history": alpha}))
    training_args = {**dataclasses.asdict(MixProConfig()), **RECIPE}
    record = {
        "model_args": {"model_name_or_path": None},
        "data_args": {"dataset_name": "cifar10"},
        "training_args": training_args,
    }
    (out / "mixpro_run.json").write_text(json.dumps(record))
    Image.new("RGB", (16, 8)).save(out / "alpha_curve.png")
    return out


@pytest.fixture
def out(built: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(built, tmp_path / built.name))


def _record(out: Path, **changes: dict) -> None:
    record = json.loads((out / "mixpro_run.json").read_text())
    for key, value in changes.items():
        record[key].update(value)
    (out / "mixpro_run.json").write_text(json.dumps(record))


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _add_secrets(out: Path, tmp_path: Path) -> None:
    """A dotfile, a dot-folder and a symlink to a file outside the folder: none may leave the machine."""
    (out / ".env").write_text("HF_TOKEN=secret")
    (out / ".secret").mkdir()
    (out / ".secret" / "key.json").write_text("{}")
    (tmp_path / "outside.json").write_text('{"private": true}')
    (out / "linked_results.json").symlink_to(tmp_path / "outside.json")
    (out / "checkpoint-2").mkdir()
    (out / "checkpoint-2" / "model.safetensors").write_bytes(b"x")
    for name in ("optimizer.pt", "scheduler.pt", "rng_state.pth", "training_args.bin"):
        (out / name).write_bytes(b"x")


# ------------------------------------------------------------------------------------------------ card content
def test_card_metadata_and_model_index(out: Path) -> None:
    data = ModelCard.load(write_model_card(out, repo_id=REPO)).data.to_dict()
    assert data["library_name"] == "transformers" and data["license"] == "apache-2.0"
    assert data["datasets"] == ["cifar10"] and "base_model" not in data
    assert {"mixpro", "maskmix", "image-classification", "vision-transformer", "vit"} <= set(data["tags"])
    name, results = model_index_to_eval_results(data["model-index"])
    assert name == "vit-mixpro"
    found = {(r.dataset_split, r.metric_type): r.metric_value for r in results}
    assert found == {
        ("validation", "accuracy"): 0.9123,
        ("validation", "top_5_accuracy"): 0.99,
        ("validation", "ece"): 0.0312,
    }


def test_rewriting_the_card_keeps_the_results_mixpro_evaluate_added(out: Path) -> None:
    write_model_card(out, repo_id=REPO)
    record = {"dataset": "/data/imagenet-a", "split": "test", "metrics": {"accuracy": 0.25, "ece": 0.3}}
    add_evaluation_results(out, record, dataset_type="imagefolder")
    data = ModelCard.load(write_model_card(out, repo_id=REPO)).data.to_dict()  # mixpro-card again
    _, results = model_index_to_eval_results(data["model-index"])
    found = {(r.dataset_name, r.dataset_split, r.metric_type): r.metric_value for r in results}
    assert found[("imagenet-a", "test", "accuracy")] == 0.25 and found[("imagenet-a", "test", "ece")] == 0.3
    assert ("validation", "accuracy") in {(split, metric) for _, split, metric in found}  # the run's own, once
    assert len(results) == len(found)


def test_card_text_settings_recipe_alpha_usage_citation(out: Path) -> None:
    text = str(generate_model_card(out, repo_id=REPO))
    assert text.count("<!-- generated by mixpro_hf -->") == 1
    for f in dataclasses.fields(MixProConfig):  # one row per declared setting, with its help text
        assert f"| {f.metadata.get('help', f.name)} | `{f.name}` | " in text, f.name
    for row in (
        "| `mix_method` | `mixpro` |",
        "| `maskmix_prob` | `0.5` |",
        "| `alpha_grad` | `true` |",
        "| `label_smoothing_factor` | `0.1` |",
        "| `cutmix_minmax` | unset |",  # recorded as None: unset, not "not recorded"
    ):
        assert row in text, row
    for row in (
        "| Optimizer | `adamw_torch` |",
        "| Learning rate | `0.0005` |",
        "| Epochs | `3.0` |",
        "| Warm-up | `6.67 %` of training steps |",
        "| Seed | `1234` |",
    ):
        assert row in text, row
    assert text.count("Warm-up") == 1 and "Warm-up ratio" not in text and "Max steps" not in text
    assert "(alpha_curve.png)" in text and "maskmix_samples.png" not in text
    assert "| 1 | 0.1 | 0.025 | 0.5 | 0.25 | 0.375 |" in text and "| 30 | 3 | 0.75 | 0.5 | 0.25 | 0.375 |" in text
    assert "| validation | Top-1 accuracy | 0.9123 |" in text and "| validation | Loss | 0.4 |" in text
    assert f'pipeline("image-classification", model="{REPO}")' in text and "trained from scratch" in text
    assert "seed 1234" in text and MIXPRO_BIBTEX in text
    assert "https://huggingface.co/datasets/cifar10" in text


def test_results_table_has_only_metrics(out: Path) -> None:
    text = str(generate_model_card(out))
    results = text.split("## Evaluation results")[1].split("##")[0]
    table = [line for line in results.splitlines() if line.startswith("|")]
    assert len(table) == 2 + 4 and not any("runtime" in line or "per_second" in line for line in table)
    assert "Speed" in results and "`eval_runtime` 1.25" in results and "`train_runtime` 12.5" in results


def test_embedded_digits_card_has_no_dead_link(out: Path) -> None:
    _record(out, data_args={"dataset_name": None, "train_dir": None, "train_file": None})
    card = generate_model_card(out, repo_id=REPO)
    assert "datasets" not in card.data.to_dict()
    assert "huggingface.co/datasets" not in str(card)
    assert "scikit-learn's bundled handwritten digits (embedded default, no Hub dataset)" in str(card)
    _record(out, data_args={"dataset_name": str(out)})  # a local path is never a Hub link
    card = generate_model_card(out)
    assert "datasets" not in card.data.to_dict() and "huggingface.co/datasets" not in str(card)


def test_warmup_shown_once_as_recorded(out: Path) -> None:
    for recorded, shown in ((10, "`10` steps"), (0, "none"), (0.25, "`25 %` of training steps")):
        card = str(generate_model_card(out, training_args={**RECIPE, "warmup_steps": recorded}))
        assert f"| Warm-up | {shown} |" in card and card.count("Warm-up") == 1


def test_base_model_only_when_fine_tuned(out: Path) -> None:
    _record(out, model_args={"model_name_or_path": "google/vit-base-patch16-224-in21k"})
    card = generate_model_card(out)
    assert card.data.to_dict()["base_model"] == "google/vit-base-patch16-224-in21k"
    assert "fine-tuned from [google/vit-base-patch16-224-in21k]" in str(card) and "from scratch" not in str(card)
    Image.new("RGB", (8, 8)).save(out / "maskmix_samples.png")
    assert "![MaskMix training samples](maskmix_samples.png)" in str(generate_model_card(out))
    _record(out, model_args={"model_name_or_path": str(out)})  # a local checkpoint: mentioned, not metadata
    card = generate_model_card(out)
    assert "base_model" not in card.data.to_dict() and f"local checkpoint `{out}`" in str(card)


def test_test_split_metrics_go_to_the_model_index(out: Path) -> None:
    (out / "all_results.json").write_text(json.dumps({**RESULTS, "test_accuracy": 0.875, "test_ece": 0.05}))
    data = generate_model_card(out, dataset_name="uoft-cs/cifar10").data.to_dict()
    assert data["datasets"] == ["uoft-cs/cifar10"]
    found = {
        (r.dataset_split, r.metric_type): r.metric_value for r in model_index_to_eval_results(data["model-index"])[1]
    }
    assert found[("test", "accuracy")] == 0.875 and found[("test", "ece")] == 0.05
    assert ("test", "top_5_accuracy") not in found  # not recorded -> not invented


def test_missing_records_say_not_recorded(out: Path) -> None:
    for name in ("all_results.json", "trainer_state.json", "mixpro_run.json", "alpha_curve.png"):
        (out / name).unlink()
    card = ModelCard.load(write_model_card(out))
    assert not {"model-index", "datasets", "base_model"} & set(card.data.to_dict())
    assert "Evaluation results: not recorded" in card.text and "α over training: not recorded" in card.text
    assert f"| `mix_method` | {NOT_RECORDED} |" in card.text and f"| Learning rate | {NOT_RECORDED} |" in card.text
    assert f"| Warm-up | {NOT_RECORDED} |" in card.text and "on a dataset that was not recorded" in card.text
    assert "0.9123" not in card.text and "from scratch" not in card.text and "initialisation not recorded" in card.text


def test_unreadable_results_are_ignored_not_invented(out: Path) -> None:
    (out / "all_results.json").write_text("{not json")
    card = generate_model_card(out)
    assert "model-index" not in card.data.to_dict()
    assert "`all_results.json` is present but could not be read" in str(card)


def test_bad_output_dir_errors_name_the_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "does-not-exist"
    with pytest.raises(FileNotFoundError, match="config.json"):
        generate_model_card(missing)
    assert card_main([str(missing)]) == 2
    err = capsys.readouterr().err
    assert str(missing) in err and err.count("\n") == 1 and "Traceback" not in err


def test_cli_writes_readme_but_never_a_users_readme(out: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert card_main([str(out)]) == 0
    assert card_main([str(out), "--repo_id", REPO, "--license", "mit", "--dataset_name", "uoft-cs/cifar10"]) == 0
    card = ModelCard.load(out / "README.md")
    assert card.data.license == "mit" and card.data.datasets == ["uoft-cs/cifar10"] and f'model="{REPO}"' in card.text
    (out / "README.md").write_text("# My own notes\n")
    assert card_main([str(out)]) == 2
    assert "not written by mixpro_hf" in capsys.readouterr().err
    assert (out / "README.md").read_text() == "# My own notes\n"
    with pytest.raises(SystemExit):
        card_main([str(out), "--push"])  # --push needs --repo_id


# ------------------------------------------------------------------------------------------------ what is pushed
def test_files_to_push_is_an_allow_list(out: Path, tmp_path: Path) -> None:
    _add_secrets(out, tmp_path)
    write_model_card(out)
    files = files_to_push(out)
    assert files == sorted(
        [
            "README.md",
            "all_results.json",
            "alpha_curve.png",
            "config.json",
            "mixpro_run.json",
            "model.safetensors",
            "preprocessor_config.json",
            "trainer_state.json",
        ]
    )
    (out / "model.safetensors").rename(out / "pytorch_model.bin")  # .bin weights only without safetensors
    assert "pytorch_model.bin" in files_to_push(out) and "training_args.bin" not in files_to_push(out)


def test_push_round_trip_and_load(out: Path, hub: FakeHub, tmp_path: Path) -> None:
    _add_secrets(out, tmp_path)
    write_model_card(out, repo_id=REPO)
    url = push_output_dir(out, REPO, token=HUB_TOKEN)
    assert url == f"{hub.endpoint}/{REPO}"
    remote = hub.files(REPO)
    assert set(remote) == {*files_to_push(out), ".gitattributes"}
    assert not [p for p in remote if p.startswith(".secret") or p in (".env", "linked_results.json")]
    assert remote["README.md"] == (out / "README.md").read_bytes()
    images = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    downloaded = Path(snapshot_download(REPO, local_dir=tmp_path / "download", cache_dir=tmp_path / "cache"))
    model = AutoModelForImageClassification.from_pretrained(downloaded).eval()
    assert type(model).__name__ == "ViTForImageClassification"
    assert AutoImageProcessor.from_pretrained(downloaded).size == {"height": 16, "width": 16}
    local = AutoModelForImageClassification.from_pretrained(out).eval()  # same weights, same kernels
    with torch.no_grad():
        assert torch.equal(model(pixel_values=images).logits, local(pixel_values=images).logits)
    assert push_output_dir(out, REPO, token=HUB_TOKEN) == url  # pushing again succeeds


def test_push_with_server_down_then_retry(out: Path, hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    before = _snapshot(out)
    hub.stop()
    with pytest.raises(PushToHubError) as excinfo:
        push_output_dir(out, REPO, token=HUB_TOKEN)
    message = str(excinfo.value)
    assert "\n" not in message and "could not connect" in message and hub.endpoint in message
    assert "complete and untouched" in message and excinfo.value.retry_command in message and HUB_TOKEN not in message
    assert _snapshot(out) == before
    hub.start()
    argv = [a for a in shlex.split(excinfo.value.retry_command) if not a.startswith("HF_ENDPOINT=")]
    assert argv[:2] == ["mixpro-card", str(out.resolve())] and "--push" in argv
    assert card_main([HUB_TOKEN if a == "YOUR_HF_WRITE_TOKEN" else a for a in argv[1:]]) == 0
    assert hub.files(REPO)["model.safetensors"] == (out / "model.safetensors").read_bytes()


def test_push_with_refused_token_or_none(out: Path, hub: FakeHub) -> None:
    before = _snapshot(out)
    with pytest.raises(PushToHubError, match="401.*token was refused") as excinfo:
        push_output_dir(out, REPO, token="hf_wrong_token")
    assert "hf_wrong_token" not in str(excinfo.value) and REPO not in hub.commits
    with pytest.raises(PushToHubError, match="no token found"):
        push_output_dir(out, REPO)
    assert _snapshot(out) == before


def test_cli_push_failure_exits_1(out: Path, hub: FakeHub, capsys: pytest.CaptureFixture[str]) -> None:
    hub.stop()
    assert card_main([str(out), "--repo_id", REPO, "--push", "--token", HUB_TOKEN]) == 1
    err = capsys.readouterr().err
    assert err.startswith("mixpro-card: error: push of") and err.count("\n") == 1 and HUB_TOKEN not in err
    hub.start()
    assert card_main([str(out), "--repo_id", REPO, "--push", "--token", HUB_TOKEN]) == 0


def test_check_push_target(hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="invalid Hub repository id"):
        check_push_target("not/a/valid id", token=HUB_TOKEN)
    with pytest.raises(ValueError, match="no token"):
        check_push_target(REPO)
    check_push_target(REPO, token=HUB_TOKEN)
    monkeypatch.setenv("HF_TOKEN", HUB_TOKEN)
    check_push_target(REPO)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError, match="offline"):
        check_push_target(REPO)


# ------------------------------------------------------------------------------------------------ the Trainer
def _trainer(output_dir: Path, **kwargs):
    from mixpro_hf import MixProTrainer, MixProTrainingArguments

    args = MixProTrainingArguments(
        output_dir=str(output_dir),
        max_steps=2,
        per_device_train_batch_size=8,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        mask_scale=2,
        **kwargs,
    )
    return MixProTrainer(model=make_tiny_vit(), args=args, train_dataset=make_toy_dataset(16))


def test_trainer_push_to_hub_publishes_the_mixpro_card(hub: FakeHub, tmp_path: Path) -> None:
    trainer = _trainer(tmp_path / "run", push_to_hub=True, hub_model_id="tester/tiny-mixpro", hub_token=HUB_TOKEN)
    trainer.train()
    (tmp_path / "run" / ".env").write_text("HF_TOKEN=secret")
    assert trainer.push_to_hub() == f"{hub.endpoint}/tester/tiny-mixpro"
    remote = hub.files("tester/tiny-mixpro")
    assert ".env" not in remote and "training_args.bin" not in remote and "model.safetensors" in remote
    card = ModelCard(remote["README.md"].decode())
    assert "mixpro" in card.data.tags and "| `mix_method` | `mixpro` |" in card.text
    assert "| Seed | `42` |" in card.text


def test_create_model_card_keeps_a_users_readme(tmp_path: Path) -> None:
    trainer = _trainer(tmp_path / "run")
    trainer.save_model()
    trainer.create_model_card()
    assert "<!-- generated by mixpro_hf -->" in (tmp_path / "run" / "README.md").read_text()
    (tmp_path / "run" / "README.md").write_text("# Mine\n")
    trainer.create_model_card()
    assert (tmp_path / "run" / "README.md").read_text() == "# Mine\n"
