"""``examples/run_semantic_segmentation.py`` (``mixpro_hf.segmentation_train``): a ``mixpro-train`` checkpoint
fine-tuned with each decoder on a local ``datasets`` folder; mIoU against an independent confusion matrix (sklearn),
single-scale and multi-scale + flip; the saved model in stock transformers; the encoder's weights are the
checkpoint's; bad input is one line before training; the metrics' semantics (🤗 evaluate's mean_iou).
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import TINY_CONFIG
from datasets import Dataset, DatasetDict, Image
from PIL import Image as PILImage
from sklearn.metrics import confusion_matrix as sk_confusion_matrix
from transformers import AutoModelForImageClassification, AutoModelForSemanticSegmentation

from mixpro_hf.segmentation_metrics import confusion_matrix, iou_metrics, parse_scales
from mixpro_hf.segmentation_train import (
    SegmentationModelArguments,
    build_segmentation_model,
    main,
)

NAMES = ["background", "square", "bar"]
SIZE = 16
# the suite's tiny ViT with four blocks (UperNet's simple pyramid reads four)
OVERRIDES = ",".join(
    f"{k}={4 if k == 'num_hidden_layers' else v}"
    for k, v in TINY_CONFIG.items()
    if k in ("image_size", "patch_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")
)


def _example(rng: np.random.Generator, size: int = SIZE) -> tuple[PILImage.Image, PILImage.Image]:
    image = rng.normal(60, 20, size=(size, size, 3))
    mask = np.zeros((size, size), dtype=np.uint8)
    top, left = rng.integers(0, size - 6, size=2)
    image[top : top + 6, left : left + 6] += 150
    mask[top : top + 6, left : left + 6] = 1
    row = rng.integers(0, size - 2)
    image[row : row + 2, :, 2] += 120
    mask[row : row + 2, :] = 2
    mask[0, :3] = 255  # ignored pixels
    return PILImage.fromarray(np.clip(image, 0, 255).astype(np.uint8)), PILImage.fromarray(mask)


def _dataset(n: int, seed: int, image_column: str = "image", label_column: str = "label", **kwargs) -> Dataset:
    rng = np.random.default_rng(seed)
    pairs = [_example(rng, **kwargs) for _ in range(n)]
    data = Dataset.from_dict({image_column: [p[0] for p in pairs], label_column: [p[1] for p in pairs]})
    return data.cast_column(image_column, Image()).cast_column(label_column, Image())


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from mixpro_hf import train

    root = tmp_path_factory.mktemp("segmentation")
    checkpoint = root / "classifier"
    train.run(["--output_dir", str(checkpoint), "--config_overrides", OVERRIDES, "--max_steps", "1",
               "--max_train_samples", "16", "--max_eval_samples", "8", "--per_device_train_batch_size", "8",
               "--report_to", "none", "--disable_tqdm", "True", "--dataloader_num_workers", "0"])  # fmt: skip
    data = root / "data"
    DatasetDict({"train": _dataset(8, 0), "validation": _dataset(4, 1)}).save_to_disk(str(data))
    (data / "id2label.json").write_text(json.dumps(dict(enumerate(NAMES))))
    return {"checkpoint": checkpoint, "data": data, "root": root}


def _args(setup: dict[str, Path], out: Path, *extra: str) -> list[str]:
    return ["--model_name_or_path", str(setup["checkpoint"]), "--dataset_name", str(setup["data"]),
            "--output_dir", str(out), "--crop_size", str(SIZE), "--base_size", str(SIZE), "--max_steps", "2",
            "--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "2", "--report_to", "none",
            "--disable_tqdm", "True", "--dataloader_num_workers", "0", "--save_strategy", "no", *extra]  # fmt: skip


def _validation(setup: dict[str, Path]) -> tuple[torch.Tensor, np.ndarray]:
    """The validation images normalised as the script's processor says, and their masks."""
    from datasets import load_from_disk
    from transformers import AutoImageProcessor

    raw = load_from_disk(str(setup["data"]))["validation"]
    processor = AutoImageProcessor.from_pretrained(setup["checkpoint"])
    mean, std = torch.tensor(processor.image_mean)[:, None, None], torch.tensor(processor.image_std)[:, None, None]
    images = torch.stack([torch.from_numpy(np.array(e["image"])).permute(2, 0, 1).float() / 255 for e in raw])
    return (images - mean) / std, np.stack([np.array(e["label"]) for e in raw])


def _sklearn_miou(predictions: np.ndarray, labels: np.ndarray) -> float:
    keep = labels != 255
    matrix = sk_confusion_matrix(labels[keep], predictions[keep], labels=list(range(len(NAMES))))
    intersection = np.diag(matrix)
    union = matrix.sum(0) + matrix.sum(1) - intersection
    return float(np.nanmean(np.where(union > 0, intersection / np.maximum(union, 1), np.nan)))


@pytest.fixture(scope="module")
def runs(setup: dict[str, Path]) -> dict[str, Path]:
    """The script run once per decoder (two steps; the linear one also evaluated at two scales with flip)."""
    outs = {}
    for decoder in ("linear", "segmenter", "upernet"):
        outs[decoder] = setup["root"] / f"run-{decoder}"
        extra = ["--eval_scales", "0.75,1.0"] if decoder == "linear" else []
        assert main(_args(setup, outs[decoder], "--decoder", decoder, *extra)) == 0
    return outs


@pytest.mark.parametrize("decoder", ["linear", "segmenter", "upernet"])
def test_each_decoder_fine_tunes_and_its_miou_is_a_confusion_matrix_recomputation(setup, runs, decoder):
    out = runs[decoder]
    extra = decoder == "linear"
    results = json.loads((out / "all_results.json").read_text())
    model = AutoModelForSemanticSegmentation.from_pretrained(out, trust_remote_code=True).eval()
    images, labels = _validation(setup)
    with torch.no_grad():
        logits = model(pixel_values=images).logits
    assert logits.shape == (4, len(NAMES), SIZE, SIZE)
    assert math.isclose(results["eval_mean_iou"], _sklearn_miou(logits.argmax(1).numpy(), labels), abs_tol=1e-9)
    if extra:  # +MS: softmax averaged over 12x12 and 16x16 views and their mirror images
        total = torch.zeros_like(logits)
        with torch.no_grad():
            for side in (12, 16):
                view = F.interpolate(images, size=(side, side), mode="bilinear", align_corners=False)
                for flipped in (False, True):
                    out_logits = model(pixel_values=view.flip(-1) if flipped else view).logits
                    out_logits = out_logits.flip(-1) if flipped else out_logits
                    total += F.interpolate(out_logits, size=(SIZE, SIZE), mode="bilinear").softmax(1)
        expected = _sklearn_miou(total.argmax(1).numpy(), labels)
        assert math.isclose(results["eval_ms_mean_iou"], expected, abs_tol=1e-9)
    for key in ("eval_mean_accuracy", "eval_overall_accuracy", "eval_iou_background", "eval_iou_square"):
        assert key in results
    record = json.loads((out / "mixpro_run.json").read_text())
    assert record["model_args"]["decoder"] == decoder and record["label_names"] == NAMES
    card = (out / "README.md").read_text()
    assert str(setup["checkpoint"]) in card and "mIoU" in card


def test_saved_models_load_in_stock_transformers_with_the_same_logits(setup, runs, tmp_path):
    outs = {decoder: runs[decoder] for decoder in ("linear", "upernet")}
    images, _ = _validation(setup)
    torch.save(images, tmp_path / "x.pt")
    expected = {}
    for decoder, out in outs.items():
        with torch.no_grad():
            model = AutoModelForSemanticSegmentation.from_pretrained(out, trust_remote_code=True).eval()
            expected[decoder] = model(pixel_values=images).logits
    # stock transformers with the code saved beside the weights, in a process without mixpro_hf
    script = textwrap.dedent(
        f"""
        import sys, torch
        from transformers import AutoModelForSemanticSegmentation
        x = torch.load({str(tmp_path / "x.pt")!r})
        for path in {[str(p) for p in outs.values()]!r}:
            model = AutoModelForSemanticSegmentation.from_pretrained(path, trust_remote_code=True).eval()
            with torch.no_grad():
                torch.save(model(pixel_values=x).logits, path + "/stock_logits.pt")
        assert "mixpro_hf" not in sys.modules, "the saved models load without mixpro_hf"
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    for decoder, out in outs.items():
        torch.testing.assert_close(torch.load(out / "stock_logits.pt"), expected[decoder])
        (out / "stock_logits.pt").unlink()


@pytest.mark.parametrize("decoder", ["linear", "segmenter", "upernet"])
def test_the_encoder_starts_from_the_checkpoint_tensor_for_tensor(setup, decoder):
    model_args = SegmentationModelArguments(model_name_or_path=str(setup["checkpoint"]), decoder=decoder)
    model, _, _, info = build_segmentation_model(model_args, NAMES)
    source = AutoModelForImageClassification.from_pretrained(setup["checkpoint"]).state_dict()
    encoder = {k.removeprefix("backbone."): t for k, t in model.state_dict().items() if k.startswith("backbone.")}
    shared = set(encoder) & set(source)
    assert shared and set(source) - shared == {"classifier.weight", "classifier.bias"}
    assert all(torch.equal(encoder[k], source[k]) for k in shared)
    assert sorted(info["unexpected_keys"]) == ["classifier.bias", "classifier.weight"]


def test_zero_learning_rate_saves_the_checkpoints_encoder(setup, tmp_path):
    out = tmp_path / "frozen"
    assert main(_args(setup, out, "--learning_rate", "0", "--lr_scheduler_type", "constant", "--max_steps", "1")) == 0
    saved = AutoModelForSemanticSegmentation.from_pretrained(out, trust_remote_code=True).state_dict()
    source = AutoModelForImageClassification.from_pretrained(setup["checkpoint"]).state_dict()
    encoder = {k.removeprefix("backbone."): t for k, t in saved.items() if k.startswith("backbone.")}
    assert all(torch.equal(encoder[k], source[k]) for k in set(encoder) & set(source))


def _bad_data(root: Path, name: str) -> str:
    rng = np.random.default_rng(0)
    path = root / name
    if name == "columns":
        data = _dataset(4, 0, image_column="img", label_column="mask")
    elif name == "size":
        image, _ = _example(rng)
        _, mask = _example(rng, size=12)
        data = Dataset.from_dict({"image": [image] * 2, "label": [mask] * 2}).cast_column("image", Image())
        data = data.cast_column("label", Image())
    elif name == "range":
        image, mask = _example(rng)
        mask = PILImage.fromarray(np.where(np.array(mask) == 2, 7, np.array(mask)).astype(np.uint8))
        data = Dataset.from_dict({"image": [image] * 2, "label": [mask] * 2}).cast_column("image", Image())
        data = data.cast_column("label", Image())
    else:  # an empty training split (parquet files: datasets cannot save an empty split with save_to_disk)
        path.mkdir()
        _dataset(2, 0).select([]).to_parquet(str(path / "train.parquet"))
        _dataset(2, 1).to_parquet(str(path / "validation.parquet"))
        return str(path)
    DatasetDict({"train": data, "validation": _dataset(2, 1) if name != "columns" else data}).save_to_disk(str(path))
    (path / "id2label.json").write_text(json.dumps(dict(enumerate(NAMES))))
    return str(path)


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("decoder", "--decoder 'fcn' is not one of linear, segmenter, upernet"),
        ("stride", "--crop_size 14: UperNet's encoder takes sides that are multiples of its stride 4"),
        ("scales", "--eval_scales: 'abc' is not a number"),
        ("zero_scale", "--eval_scales: '0' is not a scale"),
        ("scale_range", "--scale_range must be MIN,MAX with 0 < MIN <= MAX (e.g. 0.5,2.0), got '2,0.5'"),
        ("flip", "--flip_probability must be in [0, 1], got 1.5"),
        ("columns", "no image column found among ['img', 'mask']"),
        ("size", "the mask is 12x12 but its image is 16x16"),
        ("range", "label id 7 is outside [0, 3) and not 255"),
        ("empty", "a split has no rows"),
    ],
)
def test_bad_input_is_one_line_before_training(setup, tmp_path, capsys, case, message):
    out = tmp_path / "out"
    extra = {
        "decoder": ["--decoder", "fcn"],
        "scales": ["--eval_scales", "0.5,abc"],
        "zero_scale": ["--eval_scales", "0,1"],
        "scale_range": ["--scale_range", "2,0.5"],
        "flip": ["--flip_probability", "1.5"],
        "stride": ["--decoder", "upernet", "--crop_size", "14"],
    }.get(case, [])
    args = _args(setup, out, *extra)
    if case in ("columns", "size", "range", "empty"):
        args[args.index("--dataset_name") + 1] = _bad_data(tmp_path, case)
    capsys.readouterr()  # (the progress bars of save_to_disk)
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    ours = [line for line in err.splitlines() if "run_semantic_segmentation" in line]  # (not datasets' progress bars)
    assert len(ours) == 1 and ours[0].startswith("run_semantic_segmentation: error:") and "Traceback" not in err, err
    assert message in err
    assert not out.exists(), "nothing is left of a run refused before training"


def test_a_second_run_into_the_folder_is_refused_and_a_resume_continues(setup, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_args(setup, out, "--save_strategy", "steps", "--save_steps", "1")) == 0
    assert main(_args(setup, out)) == 2
    assert "--output_dir" in capsys.readouterr().err
    assert main(_args(setup, out, "--max_steps", "3", "--resume_from_checkpoint", "last")) == 0
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 3
    assert (
        main(_args(setup, out, "--decoder", "segmenter", "--max_steps", "4", "--resume_from_checkpoint", "last")) == 2
    )
    assert "the checkpoint's run trained the linear decoder" in capsys.readouterr().err
    assert (out / "segmentation_models.py").is_file()  # the decoder's code, beside the weights
    (out / "notes.py").write_text("# the user's own\n")
    assert main(_args(setup, out, "--overwrite_output_dir", "True")) == 2
    assert "notes.py, which mixpro-train did not write" in capsys.readouterr().err
    (out / "notes.py").unlink()
    assert main(_args(setup, out, "--overwrite_output_dir", "True", "--max_steps", "1")) == 0
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 1


def test_metrics_follow_evaluates_mean_iou():
    labels = torch.tensor([[0, 0, 1, 1], [2, 2, 255, 255]])
    predictions = torch.tensor([[0, 1, 1, 1], [2, 0, 3, 3]])  # class 3: predicted only on ignored pixels
    matrix = confusion_matrix(predictions, labels, num_labels=5)
    assert matrix.sum() == 6 and matrix[2, 0] == 1
    metrics = iou_metrics(matrix, ["a", "b", "c", "d", "e"])
    # IoU: a 1/3, b 2/3, c 1/2; d and e absent from labels and predictions -> nan, left out of the means
    assert math.isclose(metrics["mean_iou"], (1 / 3 + 2 / 3 + 1 / 2) / 3)
    assert math.isclose(metrics["mean_accuracy"], (1 / 2 + 1 + 1 / 2) / 3)
    assert math.isclose(metrics["overall_accuracy"], 4 / 6)
    assert math.isnan(metrics["iou_d"]) and math.isnan(metrics["iou_e"])
    assert parse_scales("0.5, 1.0,1.75") == (0.5, 1.0, 1.75)
    for bad in ("", "1,1", "-1", "nan"):
        with pytest.raises(ValueError, match="--eval_scales"):
            parse_scales(bad)


def test_card_names_the_hub_checkpoint_as_base_model_and_a_random_encoder_as_such(runs, tmp_path):
    from mixpro_hf.segmentation_card import generate_segmentation_card

    out = tmp_path / "card"
    out.mkdir()
    for name in ("config.json", "mixpro_run.json", "all_results.json"):
        shutil.copy(runs["segmenter"] / name, out / name)
    record_path = out / "mixpro_run.json"
    record = json.loads(record_path.read_text())
    record["model_args"]["model_name_or_path"] = "someone/mixpro-deit-s"
    record_path.write_text(json.dumps(record))
    card = generate_segmentation_card(out)
    assert card.data.base_model == "someone/mixpro-deit-s" and "someone/mixpro-deit-s" in card.text
    record["model_args"]["model_name_or_path"] = None
    record_path.write_text(json.dumps(record))
    card = generate_segmentation_card(out)
    assert card.data.base_model is None and "not pre-trained" in card.text


def test_a_diverged_run_stops_with_one_line_and_saves_nothing(setup, tmp_path, capsys):
    out = tmp_path / "diverged"
    args = _args(setup, out, "--learning_rate", "1e30", "--lr_scheduler_type", "constant", "--max_steps", "3")
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "run_semantic_segmentation: error:" in err and "Traceback" not in err
    assert not (out / "model.safetensors").exists()


@pytest.mark.parametrize("flip", [0.0, 1.0])
def test_train_transform_follows_scale_range_and_flip_probability(flip):
    """``--scale_range 1,1`` keeps a crop-sized image as it is; ``--flip_probability`` 0 never mirrors it, 1 always
    (the embedded digits task sets 1,1 and 0: a mirrored digit is another glyph)."""
    from torchvision import tv_tensors

    from mixpro_hf.segmentation_data import train_transform

    mask = torch.arange(64, dtype=torch.uint8).reshape(1, 8, 8) % 11
    image = mask.expand(3, 8, 8).clone()
    transform = train_transform(8, 8, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), scale_range=(1.0, 1.0), flip_probability=flip)
    _, out_mask = transform(tv_tensors.Image(image), tv_tensors.Mask(mask))
    expected = mask.flip(-1) if flip else mask
    assert torch.equal(out_mask, expected.long())
