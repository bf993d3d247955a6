"""The training entry point: embedded default, data sources, bad input, resume, Ctrl-C, two processes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import HUB_TOKEN
from conftest import TINY_OVERRIDES as TINY
from huggingface_hub import ModelCard
from PIL import Image

from mixpro_hf import train
from mixpro_hf.arguments import parse_args
from mixpro_hf.trainer import MixProTrainer

CIFAR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cifar10"


def fast(tmp_path: Path, *extra: str) -> list[str]:
    """Flags of a seconds-long run on the embedded digits."""
    return [
        "--output_dir",
        str(tmp_path / "out"),
        "--config_overrides",
        TINY,
        "--max_train_samples",
        "96",
        "--max_eval_samples",
        "48",
        "--num_train_epochs",
        "1",
        "--mask_scale",
        "2",
        "--per_device_train_batch_size",
        "16",
        "--disable_tqdm",
        "True",
        "--logging_steps",
        "2",
        "--report_to",
        "none",
        "--use_cpu",
        "True",
        "--dataloader_num_workers",
        "0",
        *extra,
    ]


def test_embedded_default_writes_a_complete_output_dir(tmp_path):
    results = train.run(fast(tmp_path))
    out = tmp_path / "out"
    for name in (
        "all_results.json",
        "trainer_state.json",
        "config.json",
        "model.safetensors",
        "README.md",
        "preprocessor_config.json",
        "mixpro_run.json",
        "alpha_curve.png",
        "maskmix_samples.png",
    ):
        assert (out / name).is_file(), name
    assert {"eval_accuracy", "eval_top5_accuracy", "eval_ece", "test_accuracy"} <= set(results)
    state = json.loads((out / "trainer_state.json").read_text())
    assert any("mixpro/lam_area" in entry for entry in state["log_history"])
    run = json.loads((out / "mixpro_run.json").read_text())
    assert run["training_args"]["mix_method"] == "mixpro"
    # the from-scratch recipe of paper Table 11 fills the flags that were not given
    args = run["training_args"]
    assert args["weight_decay"] == 0.05 and args["label_smoothing_factor"] == 0.1
    assert args["lr_scheduler_type"] == "cosine_with_min_lr" and args["mask_scale"] == 2
    card = ModelCard.load(out / "README.md")
    assert "mixpro" in card.data.tags
    assert "| Recipe (`--recipe`) | `deit` |" in card.text and "| Gradient clipping (max norm) | `5.0` |" in card.text
    assert "| Learning-rate schedule | `reference_cosine` (timm CosineLRScheduler per step" in card.text


def test_recipe_learning_rate_scales_with_the_batch():
    _, _, args = parse_args(
        [
            "--train_file",
            "x.parquet",
            "--per_device_train_batch_size",
            "128",
            "--gradient_accumulation_steps",
            "2",
            "--use_cpu",
            "True",
        ]
    )
    assert args.learning_rate == pytest.approx(1e-3 * 256 / 1024)
    assert args.label_smoothing_factor == 0.1 and args.weight_decay == 0.05
    _, _, args = parse_args(["--model_name_or_path", "some/model", "--train_file", "x.parquet"])
    assert (args.weight_decay, args.learning_rate, args.lr_scheduler_type) == (0.0, 5e-5, "linear"), "🤗 defaults"
    assert args.label_smoothing_factor == 0.1, "the MixPro setting (mixed targets are smoothed, paper Table 11)"
    _, _, args = parse_args(["--train_file", "x.parquet", "--learning_rate", "0.01", "--weight_decay", "0.1"])
    assert args.learning_rate == 0.01 and args.weight_decay == 0.1, "explicit flags win"


def write_parquet(path: Path, images: list[Image.Image], labels: list[int | None], image_key: str = "img") -> Path:
    def encode(image: Image.Image) -> dict:
        import io

        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return {"bytes": buffer.getvalue(), "path": None}

    table = pa.table({image_key: [encode(i) for i in images], "label": labels})
    pq.write_table(table, path)
    return path


def random_images(n: int, seed: int = 0, mode: str = "RGB", sizes: tuple[int, ...] = (16,)) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        size = sizes[i % len(sizes)]
        array = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
        out.append(Image.fromarray(array).convert(mode))
    return out


def test_parquet_files_with_grayscale_and_mixed_sizes(tmp_path):
    images = random_images(40, mode="L", sizes=(12, 16, 20))
    train_file = write_parquet(tmp_path / "train.parquet", images, [i % 3 for i in range(40)])
    test_file = write_parquet(tmp_path / "test.parquet", random_images(12, 1, "RGBA"), [i % 3 for i in range(12)])
    results = train.run(fast(tmp_path, "--train_file", str(train_file), "--test_file", str(test_file)))
    assert 0.0 <= results["test_accuracy"] <= 1.0


def test_image_folders(tmp_path):
    for split, n in (("train", 12), ("val", 6)):
        for label in ("cat", "dog"):
            folder = tmp_path / split / label
            folder.mkdir(parents=True)
            for i, image in enumerate(random_images(n, seed=n, sizes=(16, 24))):
                image.save(folder / f"{i}.png")
    folders = ("--train_dir", str(tmp_path / "train"), "--validation_dir", str(tmp_path / "val"))
    results = train.run(fast(tmp_path, *folders))
    assert "eval_accuracy" in results
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert sorted(config["id2label"].values()) == ["cat", "dog"]


@pytest.mark.skipif(not CIFAR.is_dir(), reason=f"CIFAR-10 Parquet files not found at {CIFAR}")
def test_cifar10_from_local_parquet(tmp_path):
    results = train.run(
        fast(
            tmp_path,
            "--train_file",
            str(CIFAR / "train.parquet"),
            "--test_file",
            str(CIFAR / "test.parquet"),
            "--max_train_samples",
            "64",
            "--max_eval_samples",
            "32",
        )
    )
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["id2label"]["0"] == "airplane" and len(config["id2label"]) == 10
    assert results["test_samples"] == 32


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--dataset_name", "no-such-user/no-such-dataset-xyz"], "could not load dataset"),
        (["--train_file", "/nonexistent/train.parquet"], "does not exist"),
        (["--image_column_name", "picture"], "image column 'picture' not found"),
        (["--label_column_name", "klass"], "label column 'klass' not found"),
        (["--config_overrides", TINY.replace("patch_size=4", "patch_size=5")], "not divisible by the patch size 5"),
        (["--mix_method", "bogus"], "bogus"),
    ],
)
def test_bad_input_gets_a_clear_message_before_training(tmp_path, capsys, monkeypatch, extra, message):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)  # no network here: fail fast, not after retries
    try:
        code = train.main(fast(tmp_path, *extra))
    except SystemExit as exit_:  # argparse refuses a bad choice itself, with the usage line
        code = exit_.code
    err = capsys.readouterr().err
    assert code == 2 and message in err, err
    assert not (tmp_path / "out" / "model.safetensors").exists()


def test_missing_labels_are_refused(tmp_path, capsys):
    path = write_parquet(tmp_path / "train.parquet", random_images(8), [0, 1, None, 1, 0, 1, 0, 1])
    assert train.main(fast(tmp_path, "--train_file", str(path))) == 2
    assert "missing labels" in capsys.readouterr().err


def test_pal_with_a_model_without_class_token_is_refused(tmp_path, capsys):
    from transformers import SwinConfig, SwinForImageClassification

    swin_dir = tmp_path / "swin"
    SwinForImageClassification(
        SwinConfig(
            image_size=16, patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[1, 2], window_size=2, num_labels=10
        )
    ).save_pretrained(swin_dir)
    from transformers import ViTImageProcessor

    ViTImageProcessor(size={"height": 16, "width": 16}).save_pretrained(swin_dir)
    flags = fast(tmp_path, "--model_name_or_path", str(swin_dir), "--ignore_mismatched_sizes", "True")
    assert train.main(flags) == 2
    err = capsys.readouterr().err
    assert "'swin' has no class token" in err
    assert train.main(flags + ["--mix_method", "maskmix"]) == 0, "area-only MaskMix works without a class token"


def test_resume_reaches_the_same_final_metrics(tmp_path):
    # Random augmentations off: the data loader prefetches the next batch before the checkpoint stores the
    # RNG, so a resumed run's random crops can differ (README). Everything MixPro draws is exact.
    common = [
        "--max_steps",
        "6",
        "--save_strategy",
        "steps",
        "--save_steps",
        "3",
        "--eval_strategy",
        "no",
        "--train_augment",
        "False",
    ]
    full = train.run(fast(tmp_path / "full", *common))
    resumed_dir = tmp_path / "resumed" / "out"
    resumed_dir.mkdir(parents=True)
    shutil.copytree(tmp_path / "full" / "out" / "checkpoint-3", resumed_dir / "checkpoint-3")
    resumed = train.run(fast(tmp_path / "resumed", *common, "--resume_from_checkpoint", "last"))
    for key in ("eval_accuracy", "test_accuracy", "eval_top5_accuracy", "eval_ece", "eval_loss", "test_loss"):
        assert resumed[key] == pytest.approx(full[key], rel=1e-5, abs=1e-7), key


def test_ctrl_c_leaves_a_complete_resumable_checkpoint(tmp_path, monkeypatch):
    original = MixProTrainer.training_step

    def interrupted(self, *args, **kwargs):
        if self.state.global_step == 2:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(MixProTrainer, "training_step", interrupted)
    flags = fast(tmp_path, "--max_steps", "5", "--save_strategy", "no", "--eval_strategy", "no")
    assert train.main(flags) == 130
    checkpoint = tmp_path / "out" / "checkpoint-2"
    for name in ("model.safetensors", "optimizer.pt", "scheduler.pt", "trainer_state.json", "config.json"):
        assert (checkpoint / name).is_file(), name
    monkeypatch.setattr(MixProTrainer, "training_step", original)
    assert train.main(flags + ["--resume_from_checkpoint", "last"]) == 0
    state = json.loads((tmp_path / "out" / "trainer_state.json").read_text())
    assert state["global_step"] == 5


def test_no_trainer_accelerate_loop(tmp_path):
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "examples" / "run_image_classification_no_trainer.py"
    spec = importlib.util.spec_from_file_location("no_trainer", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    metrics = module.main(fast(tmp_path, "--max_steps", "4", "--mix_method", "mixpro", "--maskmix_prob", "1.0"))
    assert 0.0 <= metrics["eval_accuracy"] <= 1.0
    out = tmp_path / "out"
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 4 and all("mixpro/alpha" in entry for entry in state["log_history"])
    assert (out / "model.safetensors").is_file() and (out / "alpha_curve.png").is_file()
    record = json.loads((out / "mixpro_run.json").read_text())  # written from the optimizer, before step 1
    assert record["segments"][0]["applied"]["learning_rate"] == record["training_args"]["learning_rate"] > 0
    assert record["examples"]["train"] == 96 and not (out / ".mixpro-run.lock").exists()


def test_push_to_hub_publishes_checkpoint_card_and_figures(tmp_path, hub):
    from huggingface_hub import snapshot_download
    from transformers import AutoModelForImageClassification

    flags = fast(
        tmp_path,
        "--max_steps",
        "2",
        "--eval_strategy",
        "no",
        "--push_to_hub",
        "True",
        "--hub_model_id",
        "someone/mixpro-digits",
        "--hub_token",
        HUB_TOKEN,
    )
    assert train.main(flags) == 0
    local = Path(
        snapshot_download(
            "someone/mixpro-digits", endpoint=hub.endpoint, local_dir=tmp_path / "dl", cache_dir=tmp_path / "cache"
        )
    )
    for name in (
        "README.md",
        "model.safetensors",
        "preprocessor_config.json",
        "alpha_curve.png",
        "maskmix_samples.png",
    ):
        assert (local / name).is_file(), name
    assert not list(local.glob("checkpoint-*")), "training states are not published"
    model = AutoModelForImageClassification.from_pretrained(local)
    assert model.config.num_labels == 10
    assert "mixpro" in ModelCard.load(local / "README.md").data.tags
