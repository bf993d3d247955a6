"""Tests for mixpro_hf.model_card: card generation, CLI, and Hub publishing against a local fake Hub.

Nothing here talks to huggingface.co: every Hub call goes to ``tests/hub_server.FakeHub`` on 127.0.0.1, and
``HF_HOME`` is redirected to a temporary directory.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from huggingface_hub import ModelCard, snapshot_download
from huggingface_hub.repocard_data import model_index_to_eval_results
from PIL import Image

from mixpro_hf.model_card import (
    MIXPRO_BIBTEX,
    NOT_RECORDED,
    PushToHubError,
    card_main,
    files_to_push,
    generate_model_card,
    push_output_dir,
    write_model_card,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hub_server import FakeHub  # noqa: E402

REPO = "tester/vit-mixpro"
TOKEN = "hf_valid_test_token"
LABELS = {0: "cat", 1: "dog", 2: "bird"}

ALL_RESULTS = {
    "eval_accuracy": 0.9123,
    "eval_top5_accuracy": 0.99,
    "eval_ece": 0.0312,
    "eval_loss": 0.4,
    "eval_samples": 150,
    "train_loss": 1.2,
    "train_samples": 600,
    "train_runtime": 12.5,
    "epoch": 3.0,
}
MIXPRO_ARGS = {
    "mix_method": "mixpro",
    "maskmix_prob": 0.5,
    "mask_scale": 16,
    "beta": 1.0,
    "alpha_strategy": "progressive",
    "alpha_grad": True,
    "mixup_alpha": 0.8,
    "cutmix_alpha": 1.0,
    "switch_prob": 0.5,
    "label_smoothing_factor": 0.1,
}
RECIPE_ARGS = {
    "learning_rate": 0.0005,
    "per_device_train_batch_size": 64,
    "num_train_epochs": 3.0,
    "weight_decay": 0.05,
    "warmup_ratio": 0.1,
    "seed": 1234,
    "optim": "adamw_torch",
    "lr_scheduler_type": "cosine",
    "max_steps": -1,
}


@dataclass
class Run:
    """A fake training output directory plus the original model's outputs on a fixed image."""

    path: Path
    image_path: Path
    logits: torch.Tensor


def _snapshot(directory: Path) -> dict[str, bytes]:
    return {p.relative_to(directory).as_posix(): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def _image() -> Image.Image:
    return Image.fromarray(np.random.RandomState(0).randint(0, 256, (40, 48, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def built_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """Build one tiny ViT training output directory (shared, read-only: tests copy it)."""
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    root = tmp_path_factory.mktemp("run")
    out = root / "vit-mixpro-out"
    torch.manual_seed(0)
    config = ViTConfig(
        image_size=32,
        patch_size=8,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=3,
        id2label=LABELS,
        label2id={v: k for k, v in LABELS.items()},
    )
    model = ViTForImageClassification(config).eval()
    model.save_pretrained(out)
    processor = ViTImageProcessor(size={"height": 32, "width": 32})
    processor.save_pretrained(out)

    (out / "all_results.json").write_text(json.dumps(ALL_RESULTS))
    log_history = [
        {
            "step": step,
            "epoch": step / 10,
            "mixpro/alpha": step / 40,
            "mixpro/lam_area": 0.5,
            "mixpro/lam_attn": 0.25,
            "mixpro/lam": 0.375,
        }
        for step in range(1, 31)
    ]
    log_history.append({"step": 30, "epoch": 3.0, "train_loss": 1.2})
    (out / "trainer_state.json").write_text(json.dumps({"global_step": 30, "log_history": log_history}))
    (out / "mixpro_run.json").write_text(
        json.dumps(
            {
                "model_args": {"model_name_or_path": None, "model_type": "vit", "config_overrides": "hidden_size=32"},
                "data_args": {"dataset_name": "cifar10", "train_file": None},
                "training_args": {**MIXPRO_ARGS, **RECIPE_ARGS, "output_dir": str(out)},
            }
        )
    )
    Image.new("RGB", (16, 8), (200, 30, 30)).save(out / "alpha_curve.png")

    image_path = root / "image.png"
    _image().save(image_path)
    with torch.no_grad():
        logits = model(**processor(images=Image.open(image_path), return_tensors="pt")).logits[0]
    return Run(path=out, image_path=image_path, logits=logits)


@pytest.fixture
def out(built_run: Run, tmp_path: Path) -> Path:
    """A private copy of the output directory."""
    return Path(shutil.copytree(built_run.path, tmp_path / built_run.path.name))


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """A running fake Hub; huggingface_hub is pointed at it and at a temporary HF_HOME."""
    server = FakeHub(valid_tokens={TOKEN}).start()
    server.patch_huggingface_hub(monkeypatch, hf_home=tmp_path / "hf_home")
    try:
        yield server
    finally:
        server.stop()


def _download(hub: FakeHub, dest: Path) -> Path:
    return Path(snapshot_download(REPO, endpoint=hub.endpoint, local_dir=dest, cache_dir=dest.parent / "hub-cache"))


# ------------------------------------------------------------------------------------------------ card content
def test_card_metadata_and_model_index(out: Path) -> None:
    path = write_model_card(out, repo_id=REPO)
    assert path == out / "README.md"
    card = ModelCard.load(path)
    data = card.data.to_dict()
    assert data["library_name"] == "transformers"
    assert data["pipeline_tag"] == "image-classification"
    assert data["license"] == "apache-2.0"
    assert data["datasets"] == ["cifar10"]
    for tag in ("mixpro", "maskmix", "vision-transformer", "vit", "image-classification"):
        assert tag in data["tags"]
    assert "base_model" not in data  # trained from scratch

    model_name, results = model_index_to_eval_results(data["model-index"])
    assert model_name == "vit-mixpro"
    by_type = {r.metric_type: r for r in results}
    assert by_type["accuracy"].metric_value == ALL_RESULTS["eval_accuracy"]
    assert by_type["top_5_accuracy"].metric_value == ALL_RESULTS["eval_top5_accuracy"]
    assert by_type["ece"].metric_value == ALL_RESULTS["eval_ece"]
    for result in results:
        assert result.task_type == "image-classification"
        assert result.dataset_type == "cifar10" and result.dataset_name == "cifar10"
        assert result.dataset_split == "validation"


def test_card_text_has_recipe_alpha_usage_and_citation(out: Path) -> None:
    text = str(generate_model_card(out, repo_id=REPO))
    for key, value in MIXPRO_ARGS.items():
        shown = str(value).lower() if isinstance(value, bool) else repr(value) if isinstance(value, float) else value
        assert f"| `{key}` | `{shown}` |" in text, key
    for row in (
        "| Optimizer | `adamw_torch` |",
        "| Learning rate | `0.0005` |",
        "| Learning-rate schedule | `cosine` |",
        "| Train batch size (per device) | `64` |",
        "| Epochs | `3.0` |",
        "| Weight decay | `0.05` |",
        "| Warm-up ratio | `0.1` |",
        "| Label smoothing | `0.1` |",
        "| Seed | `1234` |",
    ):
        assert row in text, row
    assert "Max steps" not in text  # max_steps=-1 means "not used"
    assert "trained from scratch" in text
    # α curve: figure + a few logged values (first and last logged step)
    assert "![" in text and "(alpha_curve.png)" in text
    assert "| 1 | 0.1 | 0.025 | 0.5 | 0.25 | 0.375 |" in text
    assert "| 30 | 3 | 0.75 | 0.5 | 0.25 | 0.375 |" in text
    assert "maskmix_samples.png" not in text  # not present -> not embedded
    # results table and usage snippets
    assert "| validation | `accuracy` | 0.9123 |" in text
    assert f'pipeline("image-classification", model="{REPO}")' in text
    assert f'AutoModelForImageClassification.from_pretrained("{REPO}")' in text
    assert f'AutoImageProcessor.from_pretrained("{REPO}")' in text
    assert "## Limitations" in text and "single training run (seed 1234)" in text
    assert MIXPRO_BIBTEX in text


def test_base_model_only_when_fine_tuned(out: Path) -> None:
    record = json.loads((out / "mixpro_run.json").read_text())
    record["model_args"]["model_name_or_path"] = "google/vit-base-patch16-224-in21k"
    (out / "mixpro_run.json").write_text(json.dumps(record))
    card = generate_model_card(out, repo_id=REPO)
    assert card.data.to_dict()["base_model"] == "google/vit-base-patch16-224-in21k"
    assert "fine-tuned from [google/vit-base-patch16-224-in21k]" in str(card)
    assert "from scratch" not in str(card)

    # optional MaskMix figure is embedded when present
    Image.new("RGB", (8, 8)).save(out / "maskmix_samples.png")
    assert "![MaskMix training samples](maskmix_samples.png)" in str(generate_model_card(out))

    # a local checkpoint is mentioned but is not valid `base_model` metadata
    record["model_args"]["model_name_or_path"] = str(out)
    (out / "mixpro_run.json").write_text(json.dumps(record))
    card = generate_model_card(out)
    assert "base_model" not in card.data.to_dict()
    assert f"local checkpoint `{out}`" in str(card)


def test_test_split_metrics_go_to_the_model_index(out: Path) -> None:
    results = {**ALL_RESULTS, "test_accuracy": 0.875, "test_ece": 0.05}
    (out / "all_results.json").write_text(json.dumps(results))
    data = generate_model_card(out, repo_id=REPO, dataset_name="uoft-cs/cifar10").data.to_dict()
    assert data["datasets"] == ["uoft-cs/cifar10"]
    _, eval_results = model_index_to_eval_results(data["model-index"])
    found = {(r.dataset_split, r.metric_type): r.metric_value for r in eval_results}
    assert found[("test", "accuracy")] == 0.875 and found[("test", "ece")] == 0.05
    assert found[("validation", "accuracy")] == ALL_RESULTS["eval_accuracy"]
    assert ("test", "top_5_accuracy") not in found  # not recorded -> not invented


def test_missing_records_say_not_recorded(out: Path) -> None:
    for name in ("all_results.json", "trainer_state.json", "mixpro_run.json", "alpha_curve.png"):
        (out / name).unlink()
    path = write_model_card(out)
    card = ModelCard.load(path)
    data = card.data.to_dict()
    assert "model-index" not in data and "metrics" not in data and "datasets" not in data
    assert data["library_name"] == "transformers" and "vit" in data["tags"]
    text = card.text
    assert "Evaluation results: not recorded" in text
    assert "α over training: not recorded" in text
    assert f"| Mixing method | `mix_method` | {NOT_RECORDED} |" in text
    assert f"| Learning rate | {NOT_RECORDED} |" in text
    assert "0.9123" not in text and "(alpha_curve.png)" not in text
    assert "Initialisation:** not recorded" in text  # unknown, not assumed to be "from scratch"
    assert "Trained **from scratch**" not in text
    assert 'model="path/to/vit-mixpro-out"' in text


def test_unreadable_results_are_ignored_not_invented(out: Path) -> None:
    (out / "all_results.json").write_text("{not json")
    card = generate_model_card(out)
    assert "model-index" not in card.data.to_dict()
    assert "`all_results.json` is present but could not be read" in str(card)


def test_bad_output_dir_errors_name_the_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "does-not-exist"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        generate_model_card(missing)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="config.json"):
        write_model_card(empty)
    assert card_main([str(missing)]) == 2
    assert str(missing) in capsys.readouterr().err


def test_cli_writes_readme(out: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (out / "README.md").unlink(missing_ok=True)
    assert card_main([str(out)]) == 0
    assert (out / "README.md").is_file()
    assert ModelCard.load(out / "README.md").data.library_name == "transformers"
    assert card_main([str(out), "--repo_id", REPO, "--license", "mit", "--dataset_name", "uoft-cs/cifar10"]) == 0
    card = ModelCard.load(out / "README.md")
    assert card.data.license == "mit" and card.data.datasets == ["uoft-cs/cifar10"]
    assert f'model="{REPO}"' in card.text
    with pytest.raises(SystemExit):
        card_main([str(out), "--push"])  # --push needs --repo_id
    capsys.readouterr()


def test_files_to_push_excludes_training_states(out: Path) -> None:
    (out / "checkpoint-10").mkdir()
    (out / "checkpoint-10" / "model.safetensors").write_bytes(b"x")
    (out / "checkpoint-10" / "optimizer.pt").write_bytes(b"x")
    for name in ("optimizer.pt", "scheduler.pt", "rng_state.pth", "training_args.bin"):
        (out / name).write_bytes(b"x")
    (out / "README.md").write_text("old card")
    files = files_to_push(out)
    assert not [f for f in files if f.startswith("checkpoint-") or f.endswith((".pt", ".pth", ".bin"))]
    assert "README.md" not in files  # replaced by the regenerated card
    (out / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model weights"):
        push_output_dir(out, REPO, token=TOKEN, endpoint="http://127.0.0.1:9")
    for name in (
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
        "all_results.json",
        "trainer_state.json",
        "mixpro_run.json",
        "alpha_curve.png",
    ):
        assert name in files


# ------------------------------------------------------------------------------------------------ Hub round trip
def test_push_round_trip_and_load(out: Path, hub: FakeHub, built_run: Run, tmp_path: Path) -> None:
    from transformers import AutoImageProcessor, AutoModelForImageClassification, pipeline

    (out / "optimizer.pt").write_bytes(b"not for the hub")
    url = push_output_dir(out, REPO, token=TOKEN, endpoint=hub.endpoint)
    assert url == f"{hub.endpoint}/{REPO}"
    remote = hub.files(REPO)
    assert set(remote) == set(files_to_push(out)) | {"README.md", ".gitattributes"}
    assert "optimizer.pt" not in remote
    assert remote["README.md"] == (out / "README.md").read_bytes()  # card written locally after the push
    assert remote["model.safetensors"] == (out / "model.safetensors").read_bytes()
    assert hub.unhandled == []

    downloaded = _download(hub, tmp_path / "download")
    assert ModelCard.load(downloaded / "README.md").data.pipeline_tag == "image-classification"
    image = Image.open(built_run.image_path)
    model = AutoModelForImageClassification.from_pretrained(downloaded).eval()
    processor = AutoImageProcessor.from_pretrained(downloaded)
    with torch.no_grad():
        logits = model(**processor(images=image, return_tensors="pt")).logits[0]
    assert torch.equal(logits, built_run.logits)

    predictions = pipeline("image-classification", model=str(downloaded), top_k=3)(image)
    expected = dict(zip(LABELS.values(), built_run.logits.softmax(-1).tolist(), strict=True))
    assert {p["label"] for p in predictions} == set(LABELS.values())
    for prediction in predictions:
        assert prediction["score"] == pytest.approx(expected[prediction["label"]], abs=1e-6)

    # pushing again is a no-op (all files unchanged) and still succeeds
    assert push_output_dir(out, REPO, token=TOKEN, endpoint=hub.endpoint) == url


_STOCK_SCRIPT = textwrap.dedent(
    """
    import json, sys
    sys.modules["mixpro_hf"] = None  # make `import mixpro_hf` fail, whatever is installed
    try:
        import mixpro_hf  # noqa: F401
    except ImportError:
        pass
    else:
        raise SystemExit("mixpro_hf should not be importable here")
    import torch
    from PIL import Image
    from transformers import AutoImageProcessor, AutoModelForImageClassification, pipeline

    model_dir, image_path = sys.argv[1], sys.argv[2]
    image = Image.open(image_path)
    model = AutoModelForImageClassification.from_pretrained(model_dir).eval()
    processor = AutoImageProcessor.from_pretrained(model_dir)
    with torch.no_grad():
        logits = model(**processor(images=image, return_tensors="pt")).logits[0].tolist()
    predictions = pipeline("image-classification", model=model_dir, top_k=1)(image)
    loaded = sorted(m for m, mod in sys.modules.items() if mod is not None and m.split(".")[0] == "mixpro_hf")
    print(json.dumps({"class": type(model).__name__, "logits": logits, "top": predictions[0], "mixpro": loaded}))
    """
)


def test_stock_transformers_loads_pushed_model_without_mixpro_hf(
    out: Path, hub: FakeHub, built_run: Run, tmp_path: Path
) -> None:
    push_output_dir(out, REPO, token=TOKEN, endpoint=hub.endpoint)
    downloaded = _download(hub, tmp_path / "download")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "PYTHON"))}
    env.update(HF_HOME=str(tmp_path / "hf_home_sub"), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    proc = subprocess.run(
        [sys.executable, "-I", "-c", _STOCK_SCRIPT, str(downloaded), str(built_run.image_path)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["class"] == "ViTForImageClassification"
    assert result["mixpro"] == []
    assert torch.allclose(torch.tensor(result["logits"]), built_run.logits, atol=1e-6)
    assert result["top"]["label"] == LABELS[int(built_run.logits.argmax())]


# ------------------------------------------------------------------------------------------------ failures
def test_push_with_server_down_then_retry(out: Path, hub: FakeHub, tmp_path: Path) -> None:
    before = _snapshot(out)
    hub.stop()
    with pytest.raises(PushToHubError) as excinfo:
        push_output_dir(out, REPO, token=TOKEN, endpoint=hub.endpoint)
    err = excinfo.value
    message = str(err)
    assert isinstance(err, RuntimeError) and err.__cause__ is not None
    assert "failed" in message and REPO in message
    assert "could not connect" in message and hub.endpoint in message
    assert "complete and untouched" in message and str(out) in message
    assert err.retry_command in message and "mixpro-card" in err.retry_command and "--push" in err.retry_command
    assert TOKEN not in message  # the secret is never echoed
    assert _snapshot(out) == before  # same files, same bytes

    # the server comes back: running the printed retry command succeeds
    hub.start()
    argv = shlex.split(err.retry_command)
    argv = [a for a in argv if not a.startswith("HF_ENDPOINT=")]
    assert argv[0] == "mixpro-card"
    argv = [TOKEN if a == "YOUR_HF_WRITE_TOKEN" else a for a in argv[1:]]
    assert card_main(argv) == 0
    assert set(hub.files(REPO)) >= {"config.json", "model.safetensors", "preprocessor_config.json", "README.md"}
    downloaded = _download(hub, tmp_path / "download")
    assert (downloaded / "model.safetensors").read_bytes() == (out / "model.safetensors").read_bytes()


def test_push_with_refused_token_then_right_token(out: Path, hub: FakeHub, tmp_path: Path) -> None:
    before = _snapshot(out)
    with pytest.raises(PushToHubError) as excinfo:
        push_output_dir(out, REPO, token="hf_wrong_token", endpoint=hub.endpoint)
    message = str(excinfo.value)
    assert "authentication failed" in message and "401" in message
    assert "hf_wrong_token" not in message
    assert "--token YOUR_HF_WRITE_TOKEN" in excinfo.value.retry_command
    assert _snapshot(out) == before
    assert REPO not in hub.repos

    # no token at all (HF_TOKEN unset, empty HF_HOME): told to log in
    with pytest.raises(PushToHubError, match="no Hub token was found"):
        push_output_dir(out, REPO, endpoint=hub.endpoint)
    assert _snapshot(out) == before

    push_output_dir(out, REPO, token=TOKEN, endpoint=hub.endpoint)
    downloaded = _download(hub, tmp_path / "download")
    assert json.loads((downloaded / "config.json").read_text())["id2label"] == {str(k): v for k, v in LABELS.items()}


def test_cli_push_failure_exit_code(out: Path, hub: FakeHub, capsys: pytest.CaptureFixture[str]) -> None:
    hub.stop()
    assert card_main([str(out), "--repo_id", REPO, "--push", "--token", TOKEN]) == 1
    err = capsys.readouterr().err
    assert "could not connect" in err and "mixpro-card" in err and TOKEN not in err
    hub.start()
    assert card_main([str(out), "--repo_id", REPO, "--push", "--token", TOKEN]) == 0
    assert "README.md" in hub.files(REPO)
