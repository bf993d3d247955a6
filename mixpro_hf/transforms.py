"""Image transforms of the DeiT / MixPro training recipe, built with timm as the reference code did.

Train: RandomResizedCrop (bicubic, area scale ``crop_scale_min``-1), horizontal flip, timm RandAugment
``rand-m9-mstd0.5-inc1`` (2 ops from the "increasing" set, magnitude 9 of 10 with a normal jitter of std 0.5, each op
applied with probability 0.5), normalisation, RandomErasing 0.25 filled with per-pixel normal noise. Evaluation:
resize the short side to ``image_size / crop_pct`` (bicubic), centre-crop ``image_size``, normalise. These are
timm's own ``create_transform`` pipelines, with the arguments of the DeiT / MixPro ``build_transform``.

Papers:
    - RandAugment: Practical automated data augmentation with a reduced search space - Cubuk et al., 2020
      (https://arxiv.org/abs/1909.13719)
    - Random Erasing Data Augmentation - Zhong et al., 2020 (https://arxiv.org/abs/1708.04896)
    - Training data-efficient image transformers & distillation through attention (DeiT) - Touvron et al., 2021
      (https://arxiv.org/abs/2012.12877)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch
from PIL import Image
from timm.data import create_transform
from torchvision import transforms

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
    return train, evaluation
