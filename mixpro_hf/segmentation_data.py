"""The data of semantic segmentation: loading (a Hub dataset, a local path, or the embedded digits task), the checks
before training, and the joint image/mask transforms.

Columns, as 🤗's ``run_semantic_segmentation.py``: an ``image`` and a ``label`` mask (its ``pixel_values`` /
``annotation`` names are accepted too). ``--reduce_labels`` is 🤗's ``do_reduce_labels``: 0 (background in ADE20K)
becomes 255 (ignored), every other id drops by one (255 stays 255). Class names: ``--id2label`` (a JSON file
``{"0": "wall", ...}``), else an ``id2label.json`` beside a local dataset, else ``0..K-1`` with K one more than the
largest id of the training masks. Masks use 255 for "ignore".

The training transform is Segmenter's (rstrudel/segmenter ``segm/data/config/*.py``, mmseg 0.14 pipelines) without its
photometric distortion: the shorter side resized to ``base_size x r``, r uniform in ``[0.5, 2.0]``; a random crop of
``crop_size`` padded with 0 (image) and 255 (mask); a horizontal flip with p 0.5; normalisation. Evaluation keeps the
image and its mask at their own size (:mod:`mixpro_hf.segmentation_metrics` resizes per view).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from datasets import Dataset, DatasetDict, Image, load_dataset, load_from_disk
from torchvision import tv_tensors
from torchvision.transforms import v2

from .data import find_column, hold_out_validation, named_splits, take_subsets
from .preflight import first_line
from .segmentation_metrics import IGNORE_INDEX

logger = logging.getLogger(__name__)

__all__ = [
    "DIGITS_CANVAS", "DIGITS_LABELS", "SegmentationDataArguments", "SegmentationSplits", "check_segmentation_split",
    "digits_segmentation_dataset", "eval_transform", "load_segmentation_splits", "reduce_labels", "train_transform",
]  # fmt: skip

IMAGE_COLUMNS = ("image", "pixel_values")
LABEL_COLUMNS = ("label", "annotation", "labels", "semantic_segmentation")
#: Segmenter's random rescale of the shorter side (mmseg ``Resize(ratio_range=(0.5, 2.0))``).
RATIO_RANGE = (0.5, 2.0)
#: The embedded task: 32 x 32 canvases, background + the ten digits.
DIGITS_CANVAS = 32
DIGITS_LABELS = ["background", *(str(d) for d in range(10))]


@dataclass
class SegmentationDataArguments:
    """Which data to fine-tune and evaluate on (🤗 ``run_semantic_segmentation.py`` names)."""

    dataset_name: str | None = field(
        default=None,
        metadata={
            "help": "Hub dataset (e.g. scene_parse_150) or local path (save_to_disk folder, parquet folder) with an "
            "image and a label mask column. Nothing given: the embedded digits segmentation task (offline)."
        },
    )
    dataset_config_name: str | None = field(default=None, metadata={"help": "Dataset configuration name."})
    image_column_name: str | None = field(default=None, metadata={"help": f"Default: first of {IMAGE_COLUMNS}."})
    label_column_name: str | None = field(default=None, metadata={"help": f"Default: first of {LABEL_COLUMNS}."})
    id2label: str | None = field(
        default=None,
        metadata={
            "help": 'JSON file of class names {"0": "wall", ...}. Default: id2label.json beside a local dataset, '
            "else 0..K-1 (K = largest training id + 1)."
        },
    )
    reduce_labels: bool = field(
        default=False,
        metadata={"help": "🤗's do_reduce_labels: 0 -> 255 (ignored), every other id - 1 (ADE20K's background)."},
    )
    crop_size: int = field(
        default=480,
        metadata={"help": "Training crop side (Segmenter's Pascal Context: 480; ADE20K: 512)."},
    )
    base_size: int = field(
        default=520,
        metadata={
            "help": "Shorter side before the random rescale x[0.5, 2.0] (training) and of the single-scale "
            "evaluation view (Segmenter's Pascal Context: 520; ADE20K: 512)."
        },
    )
    scale_range: str = field(
        default=",".join(f"{r:g}" for r in RATIO_RANGE),
        metadata={
            "help": "Training rescale of --base_size, uniform in MIN,MAX (Segmenter / MMSeg ratio_range: 0.5,2.0; "
            "1,1 keeps the size)."
        },
    )
    flip_probability: float = field(
        default=0.5,
        metadata={
            "help": "Probability of a horizontal flip in training (Segmenter: 0.5; 0 for mirror-sensitive data)."
        },
    )
    train_val_split: float = field(
        default=0.15, metadata={"help": "Share of train held out for validation when there is no validation split."}
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Train on this many examples (>= 1)."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Evaluate on this many examples (>= 1)."})

    def __post_init__(self) -> None:
        for name in ("max_train_samples", "max_eval_samples"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"--{name} must be a whole number >= 1 (or left unset), got {value!r}")
        for name in ("crop_size", "base_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"--{name} must be a whole number of pixels >= 1, got {value!r}")
        _ = self.scale_bounds  # checked here, before any data is read
        if isinstance(self.flip_probability, bool) or not 0.0 <= self.flip_probability <= 1.0:
            raise ValueError(f"--flip_probability must be in [0, 1], got {self.flip_probability!r}")
        if not 0.0 <= self.train_val_split < 1.0:
            raise ValueError(f"--train_val_split must be in [0, 1), got {self.train_val_split!r}")

    @property
    def scale_bounds(self) -> tuple[float, float]:
        """``--scale_range`` as ``(low, high)``, ``0 < low <= high``; else a one-line ``ValueError``."""
        try:
            low, high = (float(part) for part in str(self.scale_range).split(","))
        except ValueError:
            low = high = float("nan")
        if not 0.0 < low <= high < float("inf"):
            raise ValueError(
                f"--scale_range must be MIN,MAX with 0 < MIN <= MAX (e.g. 0.5,2.0), got {self.scale_range!r}"
            )
        return low, high

    @property
    def uses_embedded_default(self) -> bool:
        return not self.dataset_name


@dataclass
class SegmentationSplits:
    """The loaded, checked splits (raw: images and masks, no transform yet) and their label space."""

    train: Dataset
    validation: Dataset
    label_names: list[str]
    image_column: str
    label_column: str


def reduce_labels(mask: np.ndarray) -> np.ndarray:
    """🤗's ``do_reduce_labels``: 0 -> 255, every other id - 1, 255 stays 255."""
    mask = mask.astype(np.int64)
    reduced = mask - 1
    reduced[(mask == 0) | (mask == IGNORE_INDEX)] = IGNORE_INDEX
    return reduced


def digits_segmentation_dataset(seed: int = 0, train_size: int = 800, validation_size: int = 200) -> DatasetDict:
    """The embedded task: scikit-learn's 8x8 digits, upscaled x2, two per 32 x 32 noisy canvas at random places;
    each pixel of a stroke (intensity >= 6 of 16) is labelled with its digit + 1, every other pixel 0 (background).
    A later digit covers an earlier one. Images and masks are 8-bit ``PIL`` images; splits ``train``/``validation``
    drawn from disjoint digits."""
    from PIL import Image as PILImage
    from sklearn.datasets import load_digits

    digits = load_digits()
    glyphs = np.kron(digits.images, np.ones((1, 2, 2)))  # (N, 16, 16), 0..16
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(glyphs))
    pools = {"train": order[: int(0.8 * len(order))], "validation": order[int(0.8 * len(order)) :]}

    def make(pool: np.ndarray, count: int) -> Dataset:
        images, masks = [], []
        for _ in range(count):
            canvas = rng.normal(40.0, 20.0, size=(DIGITS_CANVAS, DIGITS_CANVAS, 3))
            mask = np.zeros((DIGITS_CANVAS, DIGITS_CANVAS), dtype=np.uint8)
            for index in rng.choice(pool, size=2, replace=False):
                top, left = rng.integers(0, DIGITS_CANVAS - 16 + 1, size=2)
                glyph = glyphs[index]
                colour = rng.uniform(150.0, 255.0, size=3)
                window = (slice(top, top + 16), slice(left, left + 16))
                stroke = glyph >= 6
                canvas[window][stroke] = (glyph[stroke, None] / 16.0) * colour
                mask[window][stroke] = digits.target[index] + 1
            images.append(PILImage.fromarray(np.clip(canvas, 0, 255).astype(np.uint8), mode="RGB"))
            masks.append(PILImage.fromarray(mask, mode="L"))
        return (
            Dataset.from_dict({"image": images, "label": masks})
            .cast_column("image", Image())
            .cast_column("label", Image())
        )

    return DatasetDict(
        {"train": make(pools["train"], train_size), "validation": make(pools["validation"], validation_size)}
    )


def _load_raw(args: SegmentationDataArguments, load_kwargs: dict[str, Any]) -> DatasetDict:
    name = args.dataset_name
    path = Path(str(name)).expanduser()
    try:
        if path.is_dir() and ((path / "dataset_dict.json").is_file() or (path / "state.json").is_file()):
            loaded = load_from_disk(str(path))
            return loaded if isinstance(loaded, DatasetDict) else DatasetDict({"train": loaded})
        return load_dataset(name, args.dataset_config_name, **load_kwargs)
    except ValueError as err:
        if "corresponds to no data" in str(err):  # datasets' words for an empty split file
            raise ValueError(f"dataset {name!r}: a split has no rows ({first_line(err)})") from err
        raise
    except FileNotFoundError:
        raise
    except Exception as err:  # datasets raises many types for an unknown name or an unreachable Hub
        raise ValueError(
            f"could not load dataset {name!r}: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}. "
            "Give a Hub dataset name (needs the network or a local cache) or a local dataset path"
        ) from err


def _read_id2label(path: Path) -> list[str]:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        mapping = {int(k): str(v) for k, v in raw.items()}
    except (OSError, ValueError, AttributeError) as err:
        raise ValueError(f'--id2label {str(path)!r}: expected a JSON object {{"0": "name", ...}} ({err})') from err
    if sorted(mapping) != list(range(len(mapping))):
        raise ValueError(
            f"--id2label {str(path)!r}: the ids must be 0..{len(mapping) - 1}, got {sorted(mapping)[:5]}..."
        )
    return [mapping[i] for i in range(len(mapping))]


def _mask_array(value: Any, reduce: bool) -> np.ndarray:
    mask = np.asarray(value)
    if mask.ndim == 3:  # an RGB-saved mask whose channels repeat the id
        mask = mask[..., 0]
    return reduce_labels(mask) if reduce else mask.astype(np.int64)


def _image_size(value: Any) -> tuple[int, int]:
    """(height, width) of a decoded image or of an undecoded ``{"bytes", "path"}`` entry (header only)."""
    from PIL import Image as PILImage

    if isinstance(value, dict):
        source = value.get("bytes")
        import io

        with PILImage.open(io.BytesIO(source) if source else value["path"]) as image:
            return image.height, image.width
    return value.height, value.width


def check_segmentation_split(
    dataset: Dataset,
    image_column: str,
    label_column: str,
    split: str,
    reduce: bool,
    num_labels: int | None = None,
) -> int:
    """Read every mask (and every image's size, from its header) of ``dataset`` once; a one-line ``ValueError``
    for an empty split, a mask whose size differs from its image's, or an id outside ``[0, num_labels)`` and 255.
    Returns the largest id seen (-1 when every pixel is ignored)."""
    if len(dataset) == 0:
        raise ValueError(f"the {split!r} split has no rows: it needs at least one image and mask")
    headers = dataset.select_columns([image_column])
    if isinstance(headers.features[image_column], Image):  # sizes from the file headers, no decoding
        headers = headers.cast_column(image_column, Image(decode=False))
    masks = dataset.select_columns([label_column])
    largest = -1
    for row in range(len(dataset)):
        mask = _mask_array(masks[row][label_column], reduce)
        size = _image_size(headers[row][image_column])
        if tuple(mask.shape[:2]) != size:
            raise ValueError(
                f"{split} row {row}: the mask is {mask.shape[0]}x{mask.shape[1]} but its image is {size[0]}x{size[1]} "
                "(height x width): masks must have their image's size"
            )
        ids = np.unique(mask)
        ids = ids[ids != IGNORE_INDEX]
        if ids.size and (ids.min() < 0 or (num_labels is not None and ids.max() >= num_labels)):
            bad = ids[(ids < 0) | (ids >= (num_labels or np.inf))]
            raise ValueError(
                f"{split} row {row}: label id {int(bad[0])} is outside [0, {num_labels}) and not 255 (ignore)"
                + ("; after --reduce_labels" if reduce else "")
            )
        if ids.size:
            largest = max(largest, int(ids.max()))
    return largest


def load_segmentation_splits(
    args: SegmentationDataArguments, seed: int = 0, load_kwargs: dict[str, Any] | None = None
) -> SegmentationSplits:
    """Load, subset and check the training and validation splits (the validation split, else a seeded
    ``train_val_split`` share of train), and their class names; every mask is read once here (see
    :func:`check_segmentation_split`)."""
    raw = digits_segmentation_dataset(seed) if args.uses_embedded_default else _load_raw(args, load_kwargs or {})
    columns = raw["train"].column_names if "train" in raw else next(iter(raw.values())).column_names
    image_column = find_column(columns, args.image_column_name, IMAGE_COLUMNS, "image")
    label_column = find_column(columns, args.label_column_name, LABEL_COLUMNS, "label")
    train, validation, test = named_splits(raw)
    train, validation = hold_out_validation(train, validation, test, args, seed)  # type: ignore[arg-type]
    train, validation, _ = take_subsets(train, validation, None, args, seed)  # type: ignore[arg-type]
    names: list[str] | None = None
    if args.uses_embedded_default:
        names = list(DIGITS_LABELS)
    elif args.id2label:
        names = _read_id2label(Path(args.id2label).expanduser())
    elif (Path(str(args.dataset_name)).expanduser() / "id2label.json").is_file():
        names = _read_id2label(Path(str(args.dataset_name)).expanduser() / "id2label.json")
    largest = check_segmentation_split(
        train, image_column, label_column, "train", args.reduce_labels, None if names is None else len(names)
    )
    if names is None:
        if largest < 0:
            raise ValueError("every pixel of the training masks is 255 (ignored): nothing to learn from")
        names = [str(i) for i in range(largest + 1)]
        logger.info("class names: none given (--id2label); ids 0..%d from the training masks", largest)
    check_segmentation_split(validation, image_column, label_column, "validation", args.reduce_labels, len(names))
    return SegmentationSplits(train, validation, names, image_column, label_column)


def _rgb(image: Any) -> Any:
    return image.convert("RGB") if getattr(image, "mode", "RGB") != "RGB" else image


def train_transform(
    crop_size: int,
    base_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    scale_range: tuple[float, float] = RATIO_RANGE,
    flip_probability: float = 0.5,
) -> v2.Transform:
    """Segmenter's training pipeline without its photometric distortion (module docstring): the shorter side
    rescaled to ``base_size`` x U(``scale_range``), a ``crop_size`` crop, a horizontal flip with
    ``flip_probability``; applied jointly to a ``tv_tensors.Image`` and its ``tv_tensors.Mask`` (nearest for the
    mask, 255 where padded)."""
    low, high = (round(base_size * r) for r in scale_range)
    return v2.Compose(
        [
            v2.RandomResize(low, high + 1, antialias=True),
            v2.RandomCrop(crop_size, pad_if_needed=True, fill={tv_tensors.Image: 0, tv_tensors.Mask: IGNORE_INDEX}),
            v2.RandomHorizontalFlip(flip_probability),
            v2.ToDtype({tv_tensors.Image: torch.float32, tv_tensors.Mask: torch.int64}, scale=True),
            v2.Normalize(mean=list(mean), std=list(std)),
        ]
    )


def eval_transform(mean: Sequence[float], std: Sequence[float]) -> v2.Transform:
    """Scale to [0, 1] and normalise; the image keeps its size (the evaluation resizes per view)."""
    return v2.Compose(
        [
            v2.ToDtype({tv_tensors.Image: torch.float32, tv_tensors.Mask: torch.int64}, scale=True),
            v2.Normalize(mean=list(mean), std=list(std)),
        ]
    )


def attach_segmentation_transform(
    dataset: Dataset, transform: v2.Transform, image_column: str, label_column: str, reduce: bool
) -> Dataset:
    """``dataset`` with ``pixel_values`` (3, H, W) float and ``labels`` (H, W) int64 made on the fly."""

    def apply(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        pixel_values, labels = [], []
        for image, mask in zip(batch[image_column], batch[label_column], strict=True):
            picture = tv_tensors.Image(torch.from_numpy(np.array(_rgb(image))).permute(2, 0, 1).contiguous())
            target = tv_tensors.Mask(torch.from_numpy(_mask_array(mask, reduce)))
            picture, target = transform(picture, target)
            pixel_values.append(picture.as_subclass(torch.Tensor))
            labels.append(target.as_subclass(torch.Tensor))
        return {"pixel_values": pixel_values, "labels": labels}

    return dataset.with_transform(apply)


def collate_segmentation(examples: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Stack ``pixel_values`` (B, 3, H, W) and ``labels`` (B, H, W) of equally sized examples."""
    return {
        "pixel_values": torch.stack([e["pixel_values"] for e in examples]),
        "labels": torch.stack([e["labels"] for e in examples]),
    }


def dataset_source(args: SegmentationDataArguments) -> str | None:
    """The local path of the data (for the output-folder guard), if it is one."""
    name = args.dataset_name
    return str(name) if name and os.path.exists(os.path.expanduser(str(name))) else None
