"""Image transforms of the DeiT / MixPro training recipe, built with timm as the reference code did.

Train: RandomResizedCrop (bicubic, area scale ``crop_scale_min``-1), horizontal flip, timm RandAugment
``rand-m9-mstd0.5-inc1`` (2 ops from the "increasing" set, magnitude 9 of 10 with a normal jitter of std 0.5, each op
applied with probability 0.5), normalisation, RandomErasing 0.25 filled with per-pixel normal noise. Evaluation:
resize the short side to ``image_size / crop_pct`` (bicubic), centre-crop ``image_size``, normalise. These are
timm's own ``create_transform`` pipelines, with the arguments of the DeiT / MixPro ``build_transform``; the
evaluation's centre crop takes 🤗's offsets (:class:`CenterCropFloor`) so that :func:`evaluation_processor`, the
🤗 image processor saved with the model, reproduces it.

Papers:
    - RandAugment: Practical automated data augmentation with a reduced search space - Cubuk et al., 2020
      (https://arxiv.org/abs/1909.13719)
    - Random Erasing Data Augmentation - Zhong et al., 2020 (https://arxiv.org/abs/1708.04896)
    - Training data-efficient image transformers & distillation through attention (DeiT) - Touvron et al., 2021
      (https://arxiv.org/abs/2012.12877)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch
from PIL import Image
from timm.data import create_transform
from torchvision import transforms
from torchvision.transforms import functional as TF

if TYPE_CHECKING:
    from .data import DataArguments

ImageTransform = Callable[[Image.Image], torch.Tensor]

DEFAULT_AUTO_AUGMENT = "rand-m9-mstd0.5-inc1"
AUTO_AUGMENT_OFF = ("", "none")


def posterize_any_bits(img: Image.Image, bits_to_keep: int, **kwargs: object) -> Image.Image:
    """timm's ``posterize``, also for 0 bits kept: an all-black image, as Pillow < 13 gave. timm's
    ``PosterizeIncreasing`` (the ``inc1`` set) keeps 0 bits at magnitude 10, which ``rand-m9-mstd0.5`` reaches, and
    Pillow 13 refuses 0 bits (a ValueError that would stop training)."""
    from timm.data import auto_augment

    if bits_to_keep <= 0:
        return Image.new(img.mode, img.size)
    return auto_augment.posterize(img, bits_to_keep, **kwargs)


def _patch_posterize(transform: object) -> None:
    """Swap timm's ``posterize`` for :func:`posterize_any_bits` in the auto-augment ops of ``transform``."""
    from timm.data import auto_augment

    for step in getattr(transform, "transforms", []):
        ops = list(getattr(step, "ops", []))  # RandAugment, AugMix
        ops += [op for sub in getattr(step, "policy", []) for op in sub]  # AutoAugment
        for op in ops:
            if getattr(op, "aug_fn", None) is auto_augment.posterize:
                op.aug_fn = posterize_any_bits


def auto_augment_policy(auto_augment: str | None) -> str | None:
    """The timm auto-augment string to use, or None where ``auto_augment`` turns it off (None, ``""``, ``"none"``)."""
    if auto_augment is None or auto_augment.strip().lower() in AUTO_AUGMENT_OFF:
        return None
    return auto_augment.strip()


def check_auto_augment(auto_augment: str | None) -> None:
    """Raise a one-line ValueError when timm cannot build ``auto_augment`` (``rand-…``, ``augmix-…``, ``original``…)."""
    policy = auto_augment_policy(auto_augment)
    if policy is None:
        return
    try:
        create_transform(32, is_training=True, auto_augment=policy, color_jitter=None)
    except Exception as err:  # timm reports a bad string by assert, KeyError, ValueError or IndexError
        raise ValueError(
            f"auto_augment={auto_augment!r} is not a timm auto-augment string ({type(err).__name__}: {err}); "
            f"expected e.g. {DEFAULT_AUTO_AUGMENT!r}, 'original', 'augmix-m5-w4-d2' or 'none'"
        ) from err
    if policy.startswith("rand"):
        # timm skips sections without a digit ("rand-m9-incr" is "rand-m9"): refuse them instead.
        unknown = [s for s in policy.split("-")[1:] if not s.startswith("t") and not any(c.isdigit() for c in s)]
        if unknown:
            raise ValueError(f"auto_augment={auto_augment!r} has sections timm ignores: {unknown}")


class CenterCropFloor(transforms.CenterCrop):
    """torchvision's ``CenterCrop`` with the offsets of 🤗 image processors, ``floor((H - h) / 2)`` (both the PIL
    and the torchvision backend). torchvision rounds half to even instead, which crops one pixel further when
    ``H - h`` is 3 modulo 4: the long side of a non-square image after the short-side resize often is."""

    def forward(self, img: Any) -> Any:
        width, height = TF.get_image_size(img)
        crop_height, crop_width = self.size
        if crop_height > height or crop_width > width:  # padded: torchvision's own rule (🤗 pads the same way)
            return super().forward(img)
        return TF.crop(img, (height - crop_height) // 2, (width - crop_width) // 2, crop_height, crop_width)


def evaluation_processor(image_size: int, mean: Sequence[float], std: Sequence[float], args: DataArguments) -> Any:
    """The 🤗 image processor that is :func:`build_transforms`' evaluation pipeline: saved with the model
    (``preprocessor_config.json``), so that ``pipeline("image-classification")`` and ``AutoImageProcessor`` give the
    inputs the card's accuracy was measured on.

    A ``BitImageProcessor`` (a stock 🤗 class, in every transformers version): convert to RGB, resize the shorter
    side to ``floor(image_size / crop_pct)`` (timm's rounding, and 🤗's ``int(short * long / short)`` long side, as
    torchvision's), centre crop ``image_size`` (:class:`CenterCropFloor`), rescale by 1/255, normalise; or, with
    ``train_augment=False``, resize to ``image_size`` squared. Interpolation ``args.interpolation``. Its PIL backend
    (``AutoImageProcessor.from_pretrained(path, backend="pil")``; transformers 4.x: ``use_fast=False``) computes
    the same tensors to float rounding; the torchvision backend (the default in transformers 5) resizes uint8
    tensors, within about one grey level of PIL's resize.
    """
    from transformers import BitImageProcessor
    from transformers.image_utils import PILImageResampling

    resample = PILImageResampling.BICUBIC if args.interpolation == "bicubic" else PILImageResampling.BILINEAR
    common = dict(
        do_convert_rgb=True,
        do_resize=True,
        resample=resample,
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=[float(m) for m in mean],
        image_std=[float(s) for s in std],
    )
    if not args.train_augment:
        return BitImageProcessor(size={"height": image_size, "width": image_size}, do_center_crop=False, **common)
    return BitImageProcessor(
        size={"shortest_edge": math.floor(image_size / args.crop_pct)},
        do_center_crop=True,
        crop_size={"height": image_size, "width": image_size},
        **common,
    )


def build_transforms(
    image_size: int, mean: Sequence[float], std: Sequence[float], args: DataArguments
) -> tuple[ImageTransform, ImageTransform]:
    """(train, eval) pipelines from RGB PIL images to normalised ``(3, image_size, image_size)`` float tensors.

    ``args.train_augment=False`` gives the same deterministic pipeline for both: resize to ``image_size`` squared
    (``args.interpolation``), normalise. Otherwise timm's ``create_transform`` with the reference arguments; colour
    jitter stays off (timm turns it off whenever RandAugment is on, and the recipe has it on).
    """
    mean, std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
    if not args.train_augment:
        interpolation = transforms.InterpolationMode(args.interpolation)
        resize = transforms.Compose(
            [
                transforms.Resize((image_size, image_size), interpolation=interpolation),
                transforms.ToTensor(),
                transforms.Normalize(mean, std),
            ]
        )
        return resize, resize
    train = create_transform(
        image_size,
        is_training=True,
        scale=(args.crop_scale_min, 1.0),
        hflip=0.5 if args.hflip else 0.0,
        color_jitter=None,
        auto_augment=auto_augment_policy(args.auto_augment),
        interpolation=args.interpolation,
        mean=mean,
        std=std,
        re_prob=args.random_erasing,
        re_mode=args.random_erasing_mode,
        re_count=1,
    )
    _patch_posterize(train)
    evaluation = create_transform(
        image_size, is_training=False, crop_pct=args.crop_pct, interpolation=args.interpolation, mean=mean, std=std
    )
    evaluation.transforms = [
        CenterCropFloor(step.size) if type(step) is transforms.CenterCrop else step for step in evaluation.transforms
    ]
    return train, evaluation
