"""The image processor saved with the model (``preprocessor_config.json``) is the evaluation transform: stock 🤗
``AutoImageProcessor`` (PIL backend: to float rounding; torchvision backend: within one grey level) and
``pipeline("image-classification")`` give the inputs and predictions of the evaluation behind the card."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import TINY_OVERRIDES
from PIL import Image
from torchvision.transforms import functional as TF
from transformers import AutoImageProcessor, AutoModelForImageClassification, pipeline

from mixpro_hf.arguments import parse_args
from mixpro_hf.data import DataArguments
from mixpro_hf.model_card import generate_model_card
from mixpro_hf.pipeline import make_trainer, prepare
from mixpro_hf.transforms import build_transforms, evaluation_processor

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# (width, height): non-square, larger than the evaluation resize (18 at size 16), landscape and portrait; 70x36 and
# 36x70 leave a long side 19 pixels over a 16-pixel crop (the offset on which torchvision and 🤗 differ).
SIZES = [(70, 36), (36, 70), (41, 23), (53, 29), (300, 211)]


def image(width: int, height: int, seed: int) -> Image.Image:
    """Smooth structure plus noise, so that a one-pixel shift or another interpolation shows."""
    rng = np.random.default_rng(seed)
    coarse = np.kron(rng.random((height // 4 + 1, width // 4 + 1, 3)), np.ones((4, 4, 1)))[:height, :width]
    return Image.fromarray((coarse * 200 + rng.random((height, width, 3)) * 55).astype(np.uint8))


def grey_levels(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest difference of two normalised images in 8-bit grey levels."""
    return float(((a - b).abs() * torch.tensor(STD)[:, None, None] * 255).max())


@pytest.mark.parametrize(
    ("size", "data_args"),
    [
        (16, DataArguments()),  # bicubic, crop_pct 0.875: 18 then 16
        (32, DataArguments(interpolation="bilinear", crop_pct=0.9)),
        (16, DataArguments(train_augment=False)),  # resize to 16x16 only
    ],
)
def test_saved_processor_reproduces_the_evaluation_transform(tmp_path, size, data_args):
    _, evaluation = build_transforms(size, MEAN, STD, data_args)
    evaluation_processor(size, MEAN, STD, data_args).save_pretrained(tmp_path)
    slow = AutoImageProcessor.from_pretrained(tmp_path, backend="pil")
    fast = AutoImageProcessor.from_pretrained(tmp_path)
    for seed, (width, height) in enumerate(SIZES):
        img = image(width, height, seed)
        expected = evaluation(img)
        by_pil = torch.as_tensor(slow(img, return_tensors="pt")["pixel_values"][0])
        by_torchvision = fast(img, return_tensors="pt")["pixel_values"][0]
        assert by_pil.shape == expected.shape == (3, size, size)
        assert (by_pil - expected).abs().max() < 1e-3, (width, height)
        assert grey_levels(by_torchvision, expected) <= 1.0 + 1e-3, (width, height)


def test_evaluation_crop_takes_the_offsets_of_the_processors():
    """70x36 at size 16: the short side to 18, the long side to 35, 19 columns over the crop. 🤗's processors start
    the crop at 19 // 2 = 9, torchvision's ``CenterCrop`` at round(9.5) = 10: the evaluation takes 🤗's."""
    _, evaluation = build_transforms(16, MEAN, STD, DataArguments())
    img = image(70, 36, 0)
    crop = img.resize((35, 18), Image.BICUBIC).crop((9, 1, 25, 17))
    assert (evaluation(img) - TF.normalize(TF.to_tensor(crop), MEAN, STD)).abs().max() < 1e-6


def test_pipeline_and_auto_classes_predict_as_the_evaluation(tmp_path):
    """The processor ``prepare`` (mixpro-train's library path) hands to the Trainer is saved with the model; stock
    🤗 loading gives the evaluation's logits (PIL backend) and its predictions (``pipeline``, torchvision backend)."""
    argv = ["--output_dir", str(tmp_path / "run"), "--config_overrides", TINY_OVERRIDES, "--max_train_samples", "16"]
    argv += ["--max_eval_samples", "8", "--crop_pct", "0.875", "--report_to", "none", "--use_cpu", "True"]
    model_args, data_args, training_args = parse_args(argv)
    prepared = prepare(model_args, data_args, training_args)
    saved = tmp_path / "model"
    make_trainer(prepared, training_args).save_model(str(saved))
    _, evaluation = build_transforms(prepared.image_size, MEAN, STD, data_args)
    images = [image(w, h, seed) for seed, (w, h) in enumerate(SIZES)]
    model = prepared.model.eval()
    with torch.no_grad():
        expected = model(pixel_values=torch.stack([evaluation(img) for img in images])).logits
        processor = AutoImageProcessor.from_pretrained(saved, backend="pil")
        reloaded = AutoModelForImageClassification.from_pretrained(saved).eval()
        logits = reloaded(**processor(images, return_tensors="pt")).logits
    torch.testing.assert_close(logits, expected, atol=1e-4, rtol=1e-4)
    card = str(generate_model_card(saved))  # the card says what the saved processor does and how to reproduce it
    assert "it resizes the shorter side to 18 (bicubic), centre-crops 16×16" in card and 'backend="pil"' in card
    classify = pipeline("image-classification", model=str(saved), device="cpu")
    for img, row in zip(images, expected.softmax(-1), strict=True):
        (top,) = classify(img, top_k=1)
        assert top["label"] == model.config.id2label[int(row.argmax())]
        assert top["score"] == pytest.approx(float(row.max()), abs=2e-2)
