"""Image-classification data for the training entry point: loading, column detection, transforms.

Sources: a Hub dataset name or local dataset path (``load_dataset``), image folders, Parquet/Arrow
files, or the embedded default (scikit-learn's bundled 8x8 digits, so the default job runs offline).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from datasets import ClassLabel, Dataset, DatasetDict, load_dataset
from datasets import Image as DatasetsImage
from PIL import Image
from torchvision.transforms import v2

IMAGE_COLUMNS = ("image", "img", "pixel_values")
LABEL_COLUMNS = ("label", "labels", "fine_label")
VALIDATION_SPLITS = ("validation", "valid", "val")
TEST_SPLITS = ("test",)


@dataclass
class DataArguments:
    """Which data to train and evaluate on (🤗 ``run_image_classification.py`` names)."""

    dataset_name: str | None = field(
        default=None, metadata={"help": "Hub dataset name or local dataset path. Nothing given: embedded digits."}
    )
    dataset_config_name: str | None = field(default=None, metadata={"help": "Dataset configuration name."})
    train_dir: str | None = field(default=None, metadata={"help": "Image folder (class sub-folders) to train on."})
    validation_dir: str | None = field(default=None, metadata={"help": "Image folder to evaluate on."})
    train_file: str | None = field(default=None, metadata={"help": "Parquet or Arrow file to train on."})
    validation_file: str | None = field(default=None, metadata={"help": "Parquet or Arrow file to evaluate on."})
    test_file: str | None = field(default=None, metadata={"help": "Parquet or Arrow file for final test metrics."})
    image_column_name: str | None = field(default=None, metadata={"help": f"Default: first of {IMAGE_COLUMNS}."})
    label_column_name: str | None = field(default=None, metadata={"help": f"Default: first of {LABEL_COLUMNS}."})
    train_val_split: float = field(
        default=0.15, metadata={"help": "Share of train held out for validation when there is no validation split."}
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Truncate the training set."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Truncate the evaluation/test sets."})
    train_augment: bool = field(
        default=True, metadata={"help": "Random crop, flip, RandAugment and erasing on training images; False: resize."}
    )
    hflip: bool = field(default=True, metadata={"help": "Random horizontal flip (paper recipe)."})
    rand_augment_magnitude: int = field(default=9, metadata={"help": "RandAugment magnitude (paper: 9); 0: off."})
    random_erasing: float = field(default=0.25, metadata={"help": "RandomErasing probability (paper: 0.25)."})
    crop_scale_min: float = field(default=0.08, metadata={"help": "RandomResizedCrop minimum area scale."})

    @property
    def uses_embedded_default(self) -> bool:
        return not any((self.dataset_name, self.train_dir, self.train_file))


def digits_dataset(seed: int = 0) -> DatasetDict:
    """scikit-learn's bundled 8x8 handwritten digits (1,797 images) as train (80 %) / test (20 %) splits."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images * (255.0 / 16.0)).astype(np.uint8)
    order = np.random.default_rng(seed).permutation(len(images))
    cut = int(0.8 * len(images))
    names = [str(i) for i in range(10)]

    def make(index: np.ndarray) -> Dataset:
        return Dataset.from_dict(
            {"image": [Image.fromarray(images[i], mode="L") for i in index], "label": digits.target[index].tolist()}
        ).cast_column("label", ClassLabel(names=names))

    return DatasetDict(train=make(order[:cut]), test=make(order[cut:]))


def _file_builder(path: str) -> str:
    ext = os.path.splitext(path)[1].lower().lstrip(".")
    builders = {"parquet": "parquet", "arrow": "arrow", "csv": "csv", "json": "json", "jsonl": "json"}
    if ext not in builders:
        raise ValueError(f"data file {path!r} has extension {ext!r}; expected one of {', '.join(builders)}")
    return builders[ext]


def load_image_datasets(args: DataArguments, seed: int = 0) -> DatasetDict:
    """Load the splits named by ``args``; the embedded digits when no data argument is given."""
    if args.uses_embedded_default:
        return digits_dataset(seed)
    try:
        if args.dataset_name:
            return load_dataset(args.dataset_name, args.dataset_config_name)
        if args.train_dir:
            files = {"train": os.path.join(args.train_dir, "**")}
            if args.validation_dir:
                files["validation"] = os.path.join(args.validation_dir, "**")
            for path in (args.train_dir, args.validation_dir):
                if path and not os.path.isdir(path):
                    raise FileNotFoundError(f"image folder {path!r} does not exist")
            return load_dataset("imagefolder", data_files=files)
        files = {"train": args.train_file, "validation": args.validation_file, "test": args.test_file}
        files = {split: path for split, path in files.items() if path}
        for path in files.values():
            if not os.path.isfile(path):
                raise FileNotFoundError(f"data file {path!r} does not exist")
        return load_dataset(_file_builder(args.train_file or ""), data_files=files)
    except (FileNotFoundError, ValueError):
        raise
    except Exception as err:  # datasets raises many types for an unknown name or an unreachable Hub
        source = args.dataset_name or args.train_dir or args.train_file
        raise ValueError(
            f"could not load dataset {source!r}: {type(err).__name__}: {err}. Give a Hub dataset name (needs the "
            "network or a local cache), a local dataset path, --train_dir, or --train_file"
        ) from err


def find_column(columns: Sequence[str], wanted: str | None, candidates: Sequence[str], kind: str) -> str:
    """The column named ``wanted``, else the first of ``candidates`` present; a clear error otherwise."""
    if wanted is not None:
        if wanted not in columns:
            raise ValueError(f"{kind} column {wanted!r} not found; the dataset has columns {list(columns)}")
        return wanted
    for name in candidates:
        if name in columns:
            return name
    raise ValueError(
        f"no {kind} column found among {list(columns)}: expected one of {list(candidates)} or pass "
        f"--{kind}_column_name"
    )


def split_datasets(raw: DatasetDict, args: DataArguments, seed: int) -> tuple[Dataset, Dataset, Dataset | None]:
    """(train, validation, test): validation is split off train when the dataset has none."""
    if "train" not in raw:
        raise ValueError(f"the dataset has no 'train' split; it has {list(raw)}")
    train = raw["train"]
    validation_name = next((s for s in VALIDATION_SPLITS if s in raw), None)
    test = next((raw[s] for s in TEST_SPLITS if s in raw), None)
    if validation_name is not None:
        validation = raw[validation_name]
    elif args.train_val_split > 0:
        parts = train.train_test_split(test_size=args.train_val_split, seed=seed)
        train, validation = parts["train"], parts["test"]
    elif test is not None:
        validation = test
    else:
        raise ValueError("no validation split: add one, set --train_val_split > 0, or give a test split")
    if args.max_train_samples is not None:
        train = train.shuffle(seed=seed).select(range(min(args.max_train_samples, len(train))))
    if args.max_eval_samples is not None:
        validation = validation.select(range(min(args.max_eval_samples, len(validation))))
        if test is not None:
            test = test.select(range(min(args.max_eval_samples, len(test))))
    return train, validation, test


def ensure_image_feature(dataset: Dataset, image_column: str) -> Dataset:
    """Decode ``{"bytes", "path"}`` structs (Parquet written without 🤗 metadata) as images."""
    feature = dataset.features[image_column]
    if isinstance(feature, DatasetsImage):
        return dataset
    if isinstance(feature, dict) and {"bytes", "path"} <= set(feature):
        return dataset.cast_column(image_column, DatasetsImage())
    return dataset


def label_names(dataset: Dataset, label_column: str) -> list[str]:
    """Class names from a ``ClassLabel`` feature, else from the sorted label values; refuses missing labels."""
    feature = dataset.features[label_column]
    if isinstance(feature, ClassLabel):
        names = list(feature.names)
    else:
        values = dataset.unique(label_column)
        if any(v is None for v in values):
            raise ValueError(f"label column {label_column!r} has missing labels (None)")
        if not all(isinstance(v, (int, np.integer)) for v in values):
            raise ValueError(
                f"label column {label_column!r} holds {type(values[0]).__name__} values; cast it to a ClassLabel "
                "or integer ids"
            )
        names = [str(i) for i in range(int(max(values)) + 1)]
    missing = dataset.filter(lambda v: v is None or v < 0, input_columns=label_column)
    if len(missing):
        raise ValueError(f"label column {label_column!r} has {len(missing)} missing or negative labels")
    return names


def build_transforms(
    image_size: int, mean: Sequence[float], std: Sequence[float], args: DataArguments
) -> tuple[v2.Compose, v2.Compose]:
    """(train, eval) torchvision ``transforms.v2`` pipelines of the DeiT/MixPro recipe (paper Table 11)."""
    evaluation = [
        v2.ToImage(),
        v2.Resize((image_size, image_size), antialias=True),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean, std),
    ]
    if not args.train_augment:
        return v2.Compose(evaluation), v2.Compose(evaluation)
    crop = v2.RandomResizedCrop(image_size, scale=(args.crop_scale_min, 1.0), antialias=True)
    train: list[Any] = [v2.ToImage(), crop]
    if args.hflip:
        train.append(v2.RandomHorizontalFlip())
    if args.rand_augment_magnitude > 0:
        train.append(v2.RandAugment(num_ops=2, magnitude=args.rand_augment_magnitude))
    train += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]
    if args.random_erasing > 0:
        train.append(v2.RandomErasing(p=args.random_erasing))
    return v2.Compose(train), v2.Compose(evaluation)


def attach_transform(dataset: Dataset, transform: v2.Compose, image_column: str, label_column: str) -> Dataset:
    """Set an on-the-fly transform giving ``pixel_values`` and ``labels``; grayscale/palette/RGBA images become
    RGB, any size is resized by the transform."""

    def apply(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        images = [image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image))
                  for image in batch[image_column]]
        return {
            "pixel_values": [transform(image.convert("RGB")) for image in images],
            "labels": batch[label_column],
        }

    return dataset.with_transform(apply)
