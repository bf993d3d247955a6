"""The augmentation pipelines against the reference: timm's own transforms and parameters."""

from __future__ import annotations

import random
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from timm.data import create_transform
from timm.data.auto_augment import _RAND_INCREASING_TRANSFORMS, RandAugment
from timm.data.random_erasing import RandomErasing
from timm.data.transforms import RandomResizedCropAndInterpolation
from torchvision import transforms as tv

from mixpro_hf.data import DataArguments
from mixpro_hf.transforms import build_transforms

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def photo(width: int = 300, height: int = 200, seed: int = 0) -> Image.Image:
    """A non-square RGB image with structure (a gradient plus noise), so resizes and crops are visible."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 // width, y * 255 // height, (x + y) * 255 // (width + height)], axis=-1)
    noise = rng.integers(0, 40, size=(height, width, 3))
    return Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8), mode="RGB")


def steps(pipeline: tv.Compose, kind: type) -> list:
    return [t for t in pipeline.transforms if isinstance(t, kind)]


def test_train_pipeline_is_the_reference_recipe() -> None:
    train, _ = build_transforms(224, MEAN, STD, DataArguments())
    (crop,) = steps(train, RandomResizedCropAndInterpolation)
    assert crop.size == (224, 224) and crop.scale == (0.08, 1.0)
    assert crop.interpolation == tv.InterpolationMode.BICUBIC
    (flip,) = steps(train, tv.RandomHorizontalFlip)
    assert flip.p == 0.5
    assert not steps(train, tv.ColorJitter)  # timm turns colour jitter off under RandAugment
    (rand_augment,) = steps(train, RandAugment)
    assert rand_augment.num_layers == 2 and rand_augment.choice_weights is None
    assert [op.name for op in rand_augment.ops] == list(_RAND_INCREASING_TRANSFORMS)
    for op in rand_augment.ops:
        assert (op.magnitude, op.magnitude_std, op.prob) == (9, 0.5, 0.5)
        assert op.hparams["translate_const"] == int(224 * 0.45)  # the reference's hparams
        assert op.hparams["interpolation"] == Image.BICUBIC
    (normalize,) = steps(train, tv.Normalize)
    assert torch.allclose(torch.as_tensor(normalize.mean), torch.tensor(MEAN))
    (erasing,) = steps(train, RandomErasing)
    assert erasing.probability == 0.25 and erasing.mode == "pixel" and erasing.max_count == 1
    names = [type(t).__name__ for t in train.transforms]
    assert names.index("RandAugment") < names.index("Normalize") < names.index("RandomErasing")


def test_train_pipeline_equals_timm_create_transform() -> None:
    """Same transforms, same parameters, same draws as timm's create_transform with the reference arguments."""
    train, _ = build_transforms(64, MEAN, STD, DataArguments())
    reference = create_transform(
        64,
        is_training=True,
        auto_augment="rand-m9-mstd0.5-inc1",
        interpolation="bicubic",
        re_prob=0.25,
        re_mode="pixel",
        re_count=1,
        mean=MEAN,
        std=STD,
    )
    assert repr(train) == repr(reference)
    image = photo(120, 90)
    outputs = []
    for pipeline in (train, reference):
        random.seed(3), np.random.seed(3), torch.manual_seed(3)
        outputs.append(torch.stack([pipeline(image) for _ in range(8)]))
    assert outputs[0].shape == (8, 3, 64, 64) and torch.equal(outputs[0], outputs[1])


def test_flags_reach_the_train_pipeline() -> None:
    args = DataArguments(
        hflip=False,
        auto_augment="none",
        random_erasing=0.5,
        random_erasing_mode="const",
        crop_scale_min=0.5,
        interpolation="bilinear",
    )
    train, _ = build_transforms(32, MEAN, STD, args)
    assert not steps(train, tv.RandomHorizontalFlip) and not steps(train, RandAugment)
    assert not steps(train, tv.ColorJitter)
    (crop,) = steps(train, RandomResizedCropAndInterpolation)
    assert crop.scale == (0.5, 1.0) and crop.interpolation == tv.InterpolationMode.BILINEAR
    (erasing,) = steps(train, RandomErasing)
    assert erasing.probability == 0.5 and erasing.mode == "const"
    off = DataArguments(random_erasing=0.0, auto_augment="")
    assert off.auto_augment is None
    assert not steps(build_transforms(32, MEAN, STD, off)[0], RandomErasing)
    other = DataArguments(auto_augment="rand-m5-n3-mstd1")
    (rand_augment,) = steps(build_transforms(32, MEAN, STD, other)[0], RandAugment)
    assert rand_augment.num_layers == 3 and {op.magnitude for op in rand_augment.ops} == {5}


def test_eval_pipeline_resizes_short_side_and_centre_crops() -> None:
    _, evaluation = build_transforms(224, MEAN, STD, DataArguments())
    (resize,) = steps(evaluation, tv.Resize)
    assert resize.size == 256 and resize.interpolation == tv.InterpolationMode.BICUBIC  # int(224 / 0.875)
    (crop,) = steps(evaluation, tv.CenterCrop)
    assert crop.size == (224, 224)
    image = photo(300, 200)
    out = evaluation(image)
    reference = create_transform(224, is_training=False, crop_pct=0.875, interpolation="bicubic", mean=MEAN, std=STD)
    assert out.shape == (3, 224, 224) and out.dtype == torch.float32
    assert torch.equal(out, reference(image))
    # by hand: short side 200 -> 256 (long side 384), centre 224 x 224
    by_hand = image.resize((384, 256), Image.BICUBIC).crop((80, 16, 304, 240))
    expected = tv.Normalize(MEAN, STD)(tv.ToTensor()(by_hand))
    assert torch.allclose(out, expected, atol=1e-6)
    assert torch.equal(evaluation(image), out)


def test_crop_pct_flag() -> None:
    _, evaluation = build_transforms(32, MEAN, STD, DataArguments(crop_pct=1.0))
    assert steps(evaluation, tv.Resize)[0].size == 32


def test_no_train_augment_is_deterministic_resize() -> None:
    train, evaluation = build_transforms(32, MEAN, STD, DataArguments(train_augment=False))
    image = photo(50, 40)
    first = train(image)
    assert first.shape == (3, 32, 32)
    torch.manual_seed(1), random.seed(1), np.random.seed(1)
    assert all(torch.equal(train(image), first) for _ in range(3))
    assert torch.equal(evaluation(image), first)
    assert not steps(train, RandAugment) and not steps(train, RandomErasing)


def test_small_grayscale_digits_go_through_both_pipelines() -> None:
    digit = Image.fromarray(np.random.default_rng(0).integers(0, 256, (8, 8)).astype(np.uint8), mode="L").convert("RGB")
    train, evaluation = build_transforms(32, MEAN, STD, DataArguments())
    random.seed(0), np.random.seed(0), torch.manual_seed(0)
    for _ in range(20):
        out = train(digit)
        assert out.shape == (3, 32, 32) and out.dtype == torch.float32 and torch.isfinite(out).all()
    out = evaluation(digit)
    assert out.shape == (3, 32, 32) and torch.isfinite(out).all()


def test_deprecated_rand_augment_magnitude_alias() -> None:
    with pytest.warns(FutureWarning, match="--auto_augment"):
        args = DataArguments(rand_augment_magnitude=7)
    assert args.auto_augment == "rand-m7-mstd0.5-inc1" and args.rand_augment_magnitude is None
    (rand_augment,) = steps(build_transforms(32, MEAN, STD, args)[0], RandAugment)
    assert {op.magnitude for op in rand_augment.ops} == {7}
    with pytest.warns(FutureWarning):
        off = DataArguments(rand_augment_magnitude=0)
    assert off.auto_augment is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert DataArguments().auto_augment == "rand-m9-mstd0.5-inc1"
    with pytest.raises(ValueError, match="not both"):
        DataArguments(auto_augment="rand-m5-mstd0.5-inc1", rand_augment_magnitude=7)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"crop_pct": 0.0}, "crop_pct must be in \\(0, 1\\]"),
        ({"crop_pct": 1.5}, "crop_pct"),
        ({"random_erasing": -0.1}, "random_erasing must be a probability in \\[0, 1\\]"),
        ({"random_erasing": 1.5}, "random_erasing"),
        ({"crop_scale_min": 0.0}, "crop_scale_min must be in \\(0, 1\\]"),
        ({"random_erasing_mode": "noise"}, "random_erasing_mode must be"),
        ({"interpolation": "nearest"}, "interpolation must be"),
        ({"auto_augment": "rand-x9"}, "not a timm auto-augment string"),
        ({"auto_augment": "rand-m9-foo"}, "sections timm ignores"),
        ({"auto_augment": "bogus"}, "not a timm auto-augment string"),
        ({"rand_augment_magnitude": 11}, "rand_augment_magnitude must be a whole number in \\[0, 10\\]"),
        ({"rand_augment_magnitude": -1}, "rand_augment_magnitude"),
    ],
)
def test_bad_values_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        DataArguments(**kwargs)
    assert "\n" not in str(info.value)
    assert str(next(iter(kwargs.values()))) in str(info.value)


def test_posterize_increasing_at_magnitude_10_does_not_stop_training():
    """timm's PosterizeIncreasing keeps 0 bits at magnitude 10 (reached by rand-m9-mstd0.5); Pillow 13 refuses 0."""
    from timm.data import auto_augment

    from mixpro_hf.data import DataArguments
    from mixpro_hf.transforms import build_transforms, posterize_any_bits

    image = Image.new("RGB", (8, 8), (200, 100, 50))
    assert posterize_any_bits(image, 0).getpixel((0, 0)) == (0, 0, 0)
    assert posterize_any_bits(image, 8) is image
    train, _ = build_transforms(16, (0.5,) * 3, (0.5,) * 3, DataArguments())
    ops = [op for step in train.transforms for op in getattr(step, "ops", [])]
    assert ops and not any(op.aug_fn is auto_augment.posterize for op in ops)
    op = next(op for op in ops if op.name == "PosterizeIncreasing")
    op.prob, op.magnitude, op.magnitude_std = 1.0, 10, 0
    op(image)
