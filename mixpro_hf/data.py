"""Image-classification data for the training entry point: arguments, loading, splits, transforms.

Sources: a Hub dataset name or local dataset path (``load_dataset``), image folders, Parquet/Arrow
files, or the embedded default (scikit-learn's bundled 8x8 digits, so the default job runs offline).
:func:`load_splits` runs every check before training: the label space (:mod:`mixpro_hf.class_labels`) and
the images (:mod:`mixpro_hf.images`); :mod:`mixpro_hf.streaming` reads the training split as a stream.
The label and image names are re-exported here.
"""

from __future__ import annotations

import glob
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from datasets import ClassLabel, Dataset, DatasetDict, IterableDataset, List, Value, load_dataset
from datasets import Image as DatasetsImage
from PIL import Image

from .class_labels import (
    INTEGER_DTYPES,
    STRING_DTYPES,
    align_splits,
    align_to_model,
    encode_string_labels,
    label_names,
)
from .images import ALPHA_BACKGROUND, _one_line, ensure_image_feature, image_problem, to_rgb8, verify_images
from .multi_label import align_multi_label_split, align_multi_label_splits, is_multi_label_feature, multi_hot

__all__ = [
    # defined here
    "IMAGE_COLUMNS",
    "LABEL_COLUMNS",
    "TEST_SPLITS",
    "VALIDATION_SPLITS",
    "DataArguments",
    "DataSplits",
    "attach_transform",
    "data_files",
    "digits_dataset",
    "digits_multilabel_dataset",
    "DIGITS_MULTILABEL",
    "find_column",
    "hold_out_validation",
    "load_evaluation_splits",
    "load_image_datasets",
    "load_image_folders",
    "load_splits",
    "named_splits",
    "resolve_image_paths",
    "split_datasets",
    "take_subsets",
    # from mixpro_hf.class_labels
    "INTEGER_DTYPES",
    "STRING_DTYPES",
    "align_splits",
    "encode_string_labels",
    "label_names",
    # from mixpro_hf.images
    "ALPHA_BACKGROUND",
    "ensure_image_feature",
    "image_problem",
    "to_rgb8",
    "verify_images",
]

# "image_path"/"file_name": a CSV or JSON column of image file paths (🤗 imagefolder metadata uses "file_name")
IMAGE_COLUMNS = ("image", "img", "pixel_values", "image_path", "file_name")
LABEL_COLUMNS = ("label", "labels", "fine_label")
VALIDATION_SPLITS = ("validation", "valid", "val")
TEST_SPLITS = ("test",)


@dataclass
class DataArguments:
    """Which data to train and evaluate on (🤗 ``run_image_classification.py`` names)."""

    dataset_name: str | None = field(
        default=None,
        metadata={
            "help": "Hub dataset name or local dataset path; digits_multilabel: the embedded multi-label digits "
            "(two digits per image). Nothing given: embedded digits."
        },
    )
    dataset_config_name: str | None = field(default=None, metadata={"help": "Dataset configuration name."})
    train_dir: str | None = field(default=None, metadata={"help": "Image folder (class sub-folders) to train on."})
    validation_dir: str | None = field(default=None, metadata={"help": "Image folder to evaluate on."})
    test_dir: str | None = field(default=None, metadata={"help": "Image folder for test metrics (--do_predict)."})
    train_file: str | None = field(
        default=None,
        metadata={
            "help": "Parquet/Arrow file, or CSV/JSON with image paths, to train on; a glob (data/train-*.parquet) or "
            "comma-separated files for a sharded set."
        },
    )
    validation_file: str | None = field(default=None, metadata={"help": "Data file (as train_file) to evaluate on."})
    test_file: str | None = field(default=None, metadata={"help": "Data file (as train_file) for test metrics."})
    image_column_name: str | None = field(default=None, metadata={"help": f"Default: first of {IMAGE_COLUMNS}."})
    label_column_name: str | None = field(default=None, metadata={"help": f"Default: first of {LABEL_COLUMNS}."})
    num_labels: int | None = field(
        default=None,
        metadata={
            "help": "Number of classes for integer labels without ClassLabel names: every id must be in "
            "[0, num_labels) (classes may be absent from the data). Unset: the ids must be 0..K-1, all present."
        },
    )
    streaming: bool = field(
        default=False,
        metadata={
            "help": "Read the training split as a stream (datasets IterableDataset) instead of preparing it on disk "
            "first, for data larger than memory or disk: a shuffle buffer (--shuffle_buffer_size), each rank reads "
            "its own shards, images are not verified beforehand; needs --max_steps. Evaluation splits are loaded "
            "as usual (a validation split held out of the stream: its first --max_eval_samples rows, default 1000)."
        },
    )
    shuffle_buffer_size: int = field(
        default=10_000,
        metadata={"help": "With --streaming: examples in the shuffle buffer (the shard order is shuffled too)."},
    )
    verify_images: bool = field(
        default=True,
        metadata={
            "help": "Decode every image of the used splits once before training, so a corrupt or missing image "
            "stops the run before it starts. False skips this pass (for huge datasets; a bad image then fails "
            "mid-training)."
        },
    )
    skip_bad_images: bool = field(
        default=False,
        metadata={
            "help": "With verify_images: drop corrupt or missing images (logged with their rows) instead of stopping."
        },
    )
    train_val_split: float = field(
        default=0.15, metadata={"help": "Share of train held out for validation when there is no validation split."}
    )
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Train on this many examples, drawn by a seeded shuffle (>= 1)."}
    )
    max_eval_samples: int | None = field(
        default=None, metadata={"help": "Evaluate/test on this many examples each, drawn by a seeded shuffle (>= 1)."}
    )
    train_augment: bool = field(
        default=True, metadata={"help": "Random crop, flip, RandAugment and erasing on training images; False: resize."}
    )
    hflip: bool = field(default=True, metadata={"help": "Random horizontal flip, p 0.5 (paper recipe)."})
    auto_augment: str | None = field(
        default="rand-m9-mstd0.5-inc1",
        metadata={
            "help": "timm auto-augment string (reference: RandAugment m9 of 10, std 0.5, 'increasing' ops, "
            "each op p 0.5); 'none' or '': off."
        },
    )
    rand_augment_magnitude: int | None = field(
        default=None,
        metadata={"help": "Deprecated: use --auto_augment. Sets auto_augment to rand-m{M}-mstd0.5-inc1; 0: off."},
    )
    random_erasing: float = field(default=0.25, metadata={"help": "RandomErasing probability (paper: 0.25)."})
    random_erasing_mode: Literal["pixel", "rand", "const"] = field(
        default="pixel", metadata={"help": "RandomErasing fill: per-pixel normal noise (reference), per-channel, 0."}
    )
    interpolation: Literal["bicubic", "bilinear"] = field(
        default="bicubic", metadata={"help": "Resize interpolation of the crop, the evaluation resize and RandAugment."}
    )
    crop_pct: float = field(
        default=0.875, metadata={"help": "Evaluation: resize the short side to image_size / crop_pct, centre-crop."}
    )
    crop_scale_min: float = field(default=0.08, metadata={"help": "RandomResizedCrop minimum area scale."})

    def __post_init__(self) -> None:
        for name in ("max_train_samples", "max_eval_samples", "num_labels", "shuffle_buffer_size"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"--{name} must be a whole number >= 1 (or left unset), got {value!r}")
        self._check_augmentation()

    def _check_augmentation(self) -> None:
        """Map the deprecated ``rand_augment_magnitude`` onto ``auto_augment``; refuse bad augmentation values."""
        from .transforms import DEFAULT_AUTO_AUGMENT, auto_augment_policy, check_auto_augment

        if self.rand_augment_magnitude is not None:
            m = self.rand_augment_magnitude
            if isinstance(m, bool) or not isinstance(m, int) or not 0 <= m <= 10:
                raise ValueError(f"--rand_augment_magnitude must be a whole number in [0, 10] (timm), got {m!r}")
            aliased = f"rand-m{m}-mstd0.5-inc1" if m > 0 else None
            if auto_augment_policy(self.auto_augment) not in (DEFAULT_AUTO_AUGMENT, aliased):
                raise ValueError(
                    f"give --auto_augment ({self.auto_augment!r}) or the deprecated --rand_augment_magnitude ({m}), "
                    "not both"
                )
            warnings.warn(
                f"--rand_augment_magnitude is deprecated and will be removed: use --auto_augment "
                f"{aliased or 'none'!r} (timm RandAugment, magnitude on a 0-10 scale)",
                FutureWarning,
                stacklevel=4,
            )
            self.auto_augment, self.rand_augment_magnitude = aliased, None
        self.auto_augment = auto_augment_policy(self.auto_augment)
        check_auto_augment(self.auto_augment)
        for name in ("random_erasing", "crop_pct", "crop_scale_min"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"--{name} must be a number, got {value!r}")
        if not 0.0 <= self.random_erasing <= 1.0:
            raise ValueError(f"--random_erasing must be a probability in [0, 1], got {self.random_erasing!r}")
        if not 0.0 < self.crop_pct <= 1.0:
            raise ValueError(
                f"--crop_pct must be in (0, 1] (evaluation resize = image_size / crop_pct), got {self.crop_pct!r}"
            )
        if not 0.0 < self.crop_scale_min <= 1.0:
            raise ValueError(
                f"--crop_scale_min must be in (0, 1] (a share of the image area), got {self.crop_scale_min!r}"
            )
        if self.random_erasing_mode not in ("pixel", "rand", "const"):
            raise ValueError(
                f"--random_erasing_mode must be 'pixel', 'rand' or 'const', got {self.random_erasing_mode!r}"
            )
        if self.interpolation not in ("bicubic", "bilinear"):
            raise ValueError(f"--interpolation must be 'bicubic' or 'bilinear', got {self.interpolation!r}")

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


#: ``--dataset_name`` of the embedded multi-label task (:func:`digits_multilabel_dataset`), read before the Hub.
DIGITS_MULTILABEL = "digits_multilabel"


def digits_multilabel_dataset(seed: int = 0) -> DatasetDict:
    """An offline multi-label task from scikit-learn's digits: each 16x16 image holds two 8x8 digits side by side
    (rows 4-11), its labels are the set of those digits (one label when both are the same digit). The digits of the
    train (80 %) and test (20 %) images are drawn from disjoint halves of the 1,797 digits; as many images as digits
    in each split. Labels are a ``Sequence(ClassLabel)`` of the names ``"0"`` .. ``"9"``."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images * (255.0 / 16.0)).astype(np.uint8)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(images))
    cut = int(0.8 * len(images))
    names = [str(i) for i in range(10)]

    def make(pool: np.ndarray) -> Dataset:
        left, right = pool, rng.permutation(pool)
        canvas = np.zeros((len(pool), 16, 16), dtype=np.uint8)
        canvas[:, 4:12, :8], canvas[:, 4:12, 8:] = images[left], images[right]
        labels = [sorted({int(digits.target[a]), int(digits.target[b])}) for a, b in zip(left, right, strict=True)]
        data = {"image": [Image.fromarray(c, mode="L") for c in canvas], "label": labels}
        return Dataset.from_dict(data).cast_column("label", List(ClassLabel(names=names)))

    return DatasetDict(train=make(order[:cut]), test=make(order[cut:]))


def _file_builder(path: str) -> str:
    ext = os.path.splitext(path)[1].lower().lstrip(".")
    builders = {"parquet": "parquet", "arrow": "arrow", "csv": "csv", "json": "json", "jsonl": "json"}
    if ext not in builders:
        raise ValueError(f"data file {path!r} has extension {ext!r}; expected one of {', '.join(builders)}")
    return builders[ext]


def data_files(value: str) -> list[str]:
    """The files of a ``--train_file`` value: one path, a glob (``data/train-*.parquet``) or comma-separated
    paths and globs, in sorted order within each glob; a glob that matches nothing is a ``FileNotFoundError``."""
    files: list[str] = []
    for part in (p.strip() for p in value.split(",")):
        if not part:
            continue
        if glob.has_magic(part):
            matches = sorted(glob.glob(part))
            if not matches:
                raise FileNotFoundError(f"no data file matches {part!r}")
            files.extend(matches)
        else:
            files.append(part)
    if not files:
        raise ValueError(f"no data file in {value!r}")
    return files


def _load_file(
    path: str, split: str, image_column_name: str | None = None, load_kwargs: dict[str, Any] | None = None
) -> Dataset:
    """One data file as a split; an empty or unreadable file is named in a one-line ``ValueError``.

    CSV/JSON files may list image paths: relative paths are resolved against the file's folder and the
    column becomes a ``datasets.Image`` feature.
    """
    paths = data_files(path)
    if len(paths) > 1:  # a sharded set: one split of every file (each checked on its own first)
        builders = {_file_builder(p) for p in paths}
        if len(builders) > 1:
            raise ValueError(f"the files of {path!r} mix formats ({', '.join(sorted(builders))}); give one format")
        parts = [_load_file(one, split, image_column_name, load_kwargs) for one in paths]
        from datasets import concatenate_datasets

        return concatenate_datasets(parts)
    path = paths[0]
    builder = _file_builder(path)
    empty = f"data file {path!r} ({split}) has no rows: it needs at least one example"
    if builder == "parquet":
        try:
            rows = pq.ParquetFile(path).metadata.num_rows
        except (pa.ArrowException, OSError) as err:
            raise ValueError(f"data file {path!r} is not a readable Parquet file: {_one_line(err)}") from err
        if rows == 0:
            raise ValueError(empty)
    elif os.path.getsize(path) == 0:
        raise ValueError(empty)
    try:
        dataset = load_dataset(builder, data_files={split: path}, split=split, **(load_kwargs or {}))
    except Exception as err:  # datasets wraps the reader's error in a DatasetGenerationError
        raise ValueError(f"could not read data file {path!r} as {builder}: {_one_line(err)}") from err
    if len(dataset) == 0:
        raise ValueError(empty)
    if builder in ("csv", "json"):
        dataset = resolve_image_paths(dataset, image_column_name, os.path.dirname(os.path.abspath(path)))
    return dataset


def resolve_image_paths(dataset: Dataset, image_column_name: str | None, base_dir: str) -> Dataset:
    """Turn a column of image file paths (strings) into a ``datasets.Image`` column, relative paths taken from
    ``base_dir``. The column is ``image_column_name`` or the first of ``IMAGE_COLUMNS``; a dataset without
    such a string column is returned unchanged (the later column checks report what is missing)."""
    try:
        column = find_column(dataset.column_names, image_column_name, IMAGE_COLUMNS, "image")
    except ValueError:
        return dataset
    feature = dataset.features[column]
    if not (isinstance(feature, Value) and feature.dtype in STRING_DTYPES):
        return dataset

    def absolute(paths: list[str | None]) -> dict[str, list[str | None]]:
        return {column: [p if not p or "://" in p or os.path.isabs(p) else os.path.join(base_dir, p) for p in paths]}

    dataset = dataset.map(absolute, batched=True, input_columns=[column], desc="Resolving image paths")
    return dataset.cast_column(column, DatasetsImage())


def load_image_datasets(args: DataArguments, seed: int = 0, load_kwargs: dict[str, Any] | None = None) -> DatasetDict:
    """Load the splits named by ``args``; the embedded digits when no data argument is given. ``load_kwargs``
    (e.g. ``cache_dir``, ``token``: ``ModelArguments.dataset_kwargs()``) go to every ``load_dataset`` call."""
    load_kwargs = load_kwargs or {}
    if args.uses_embedded_default:
        return digits_dataset(seed)
    if args.dataset_name == DIGITS_MULTILABEL and not os.path.exists(DIGITS_MULTILABEL):
        return digits_multilabel_dataset(seed)
    try:
        if args.dataset_name:
            return load_dataset(args.dataset_name, args.dataset_config_name, **load_kwargs)
        if args.train_dir:
            folders = {"train": args.train_dir, "validation": args.validation_dir, "test": args.test_dir}
            return load_image_folders({split: path for split, path in folders.items() if path}, load_kwargs)
        files = {"train": args.train_file, "validation": args.validation_file, "test": args.test_file}
        files = {split: path for split, path in files.items() if path}
        for path in (one for value in files.values() for one in data_files(value)):
            _file_builder(path)
            if not os.path.isfile(path):
                raise FileNotFoundError(f"data file {path!r} does not exist")
        return DatasetDict(
            {split: _load_file(path, split, args.image_column_name, load_kwargs) for split, path in files.items()}
        )
    except (FileNotFoundError, ValueError):
        raise
    except Exception as err:  # datasets raises many types for an unknown name or an unreachable Hub
        source = args.dataset_name or args.train_dir or args.train_file
        raise ValueError(
            f"could not load dataset {source!r}: {type(err).__name__}: {err}. Give a Hub dataset name (needs the "
            "network or a local cache), a local dataset path, --train_dir, or --train_file"
        ) from err


def class_folders(path: str) -> list[str]:
    """The class names of an image folder: its sub-folders (hidden ones aside), sorted."""
    return sorted(entry.name for entry in os.scandir(path) if entry.is_dir() and not entry.name.startswith("."))


def load_image_folders(folders: dict[str, str], load_kwargs: dict[str, Any] | None = None) -> DatasetDict:
    """Image folders (one class sub-folder per class) as splits, e.g. ``{"train": ..., "validation": ...}``.

    🤗 ``imagefolder`` gives every split the union of all folders' class names, so a class folder present only in
    the validation folder would silently become an extra class of the model, and a single class folder gives no
    label column at all; both are refused here with one line. Without a training folder (evaluation only) the
    class names are checked later against the model's."""
    for path in folders.values():
        if not os.path.isdir(path):
            raise FileNotFoundError(f"image folder {path!r} does not exist")
    classes = {split: class_folders(path) for split, path in folders.items()}
    if "train" in classes:
        train = classes["train"]
        if len(train) < 2:
            raise ValueError(
                f"--train_dir {folders['train']} has {len(train)} class folder{'s' if len(train) != 1 else ''} "
                f"{train}: a classifier needs at least two classes, one sub-folder of images per class"
            )
        for split, own in classes.items():
            unseen = [name for name in own if name not in set(train)]
            if unseen:
                raise ValueError(
                    f"the {split} folder {folders[split]} has classes {unseen} that the training folder does not "
                    f"have (training classes {train}): a model cannot learn a class it never sees; give the folders "
                    "the same classes"
                )
    files = {split: os.path.join(path, "**") for split, path in folders.items()}
    return load_dataset("imagefolder", data_files=files, **load_kwargs)


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
        f"no {kind} column found among {list(columns)}: expected one of {list(candidates)} or pass --{kind}_column_name"
    )


def named_splits(raw: DatasetDict) -> tuple[Dataset, Dataset | None, Dataset | None]:
    """(train, validation or None, test or None) of ``raw``, picked by the usual split names."""
    if "train" not in raw:
        raise ValueError(f"the dataset has no 'train' split; it has {list(raw)}")
    if len(raw["train"]) == 0:
        raise ValueError("the 'train' split has no rows: it needs at least one example")
    validation = next((raw[s] for s in VALIDATION_SPLITS if s in raw), None)
    test = next((raw[s] for s in TEST_SPLITS if s in raw), None)
    return raw["train"], validation, test


def hold_out_validation(
    train: Dataset, validation: Dataset | None, test: Dataset | None, args: DataArguments, seed: int
) -> tuple[Dataset, Dataset]:
    """(train, validation): the validation split if there is one, else a seeded ``train_val_split`` share of
    train, else the test split."""
    if validation is not None:
        return train, validation
    if args.train_val_split > 0:
        parts = train.train_test_split(test_size=args.train_val_split, seed=seed)
        return parts["train"], parts["test"]
    if test is not None:
        return train, test
    raise ValueError("no validation split: add one, set --train_val_split > 0, or give a test split")


def take_subsets(
    train: Dataset, validation: Dataset, test: Dataset | None, args: DataArguments, seed: int
) -> tuple[Dataset, Dataset, Dataset | None]:
    """``max_train_samples`` / ``max_eval_samples`` examples of each split, drawn by a seeded shuffle (as 🤗's
    script does), so that a file sorted by label does not give a one-class subset."""

    def take(dataset: Dataset | None, count: int | None) -> Dataset | None:
        if dataset is None or count is None:
            return dataset
        return dataset.shuffle(seed=seed).select(range(min(count, len(dataset))))

    train, validation = take(train, args.max_train_samples), take(validation, args.max_eval_samples)
    return train, validation, take(test, args.max_eval_samples)


def split_datasets(raw: DatasetDict, args: DataArguments, seed: int) -> tuple[Dataset, Dataset, Dataset | None]:
    """(train, validation, test): validation is split off train when the dataset has none; the
    ``max_*_samples`` subsets are seeded shuffles. (:func:`load_splits` does the same, with the label checks
    of :func:`align_splits` on the whole splits in between.)"""
    train, validation, test = named_splits(raw)
    train, validation = hold_out_validation(train, validation, test, args, seed)
    return take_subsets(train, validation, test, args, seed)


def attach_transform(
    dataset: Dataset | IterableDataset,
    transform: Callable[[Image.Image], Any],
    image_column: str,
    label_column: str,
    multi_label_classes: int | None = None,
) -> Dataset | IterableDataset:
    """Set an on-the-fly transform giving ``pixel_values`` and ``labels``: every image becomes 8-bit RGB by
    :func:`to_rgb8` (16-bit and float images scaled, transparency on white), any size is resized by the
    transform. A stream (``IterableDataset``) gets it as a lazy batched ``map`` that drops the other columns.
    ``multi_label_classes``: the labels are lists of class ids (multi-label data), given as multi-hot vectors of
    that many classes (:func:`~mixpro_hf.multi_label.multi_hot`)."""

    def apply(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        images = [
            image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image))
            for image in batch[image_column]
        ]
        labels = batch[label_column]
        if multi_label_classes is not None:
            labels = list(multi_hot(labels, multi_label_classes))
        return {"pixel_values": [transform(to_rgb8(image)) for image in images], "labels": labels}

    if isinstance(dataset, IterableDataset):
        return dataset.map(apply, batched=True, batch_size=64, remove_columns=dataset.column_names)
    return dataset.with_transform(apply)


@dataclass
class DataSplits:
    """The checked data of a run, from :func:`load_splits` (or :func:`load_evaluation_splits`: no training split,
    the validation or the test split may be None)."""

    train: Dataset | None
    validation: Dataset
    test: Dataset | None
    image_column: str
    label_column: str
    label_names: list[str]
    #: the labels are lists of class ids (:mod:`mixpro_hf.multi_label`), not one class id per image
    multi_label: bool = False


def load_splits(args: DataArguments, seed: int = 0, load_kwargs: dict[str, Any] | None = None) -> DataSplits:
    """Load, check and select the data of a run, in the order that makes every check meaningful:

    1. :func:`load_image_datasets` (empty or unreadable files named; CSV/JSON image paths resolved);
    2. :func:`named_splits`, :func:`find_column` for the image and label columns;
    3. :func:`align_splits` on the whole splits: the label space of the whole training split, validation and
       test labels matched by name or checked to lie in it;
    4. :func:`hold_out_validation` (when there is no validation split), :func:`take_subsets` (seeded shuffles);
    5. :func:`ensure_image_feature`, and :func:`verify_images` on every used image unless ``args.verify_images``
       is False.

    Every problem is a one-line ``ValueError`` (or ``FileNotFoundError``) before any model is built.
    """
    folders = [f"--{name} {value}" for name, value in (("validation_dir", args.validation_dir),
               ("test_dir", args.test_dir)) if value]  # fmt: skip
    if folders and not args.train_dir:  # would be ignored: refused instead
        raise ValueError(
            f"{', '.join(folders)} goes with --train_dir (image folders); with --train_file or --dataset_name give "
            "--validation_file / --test_file or the dataset's splits"
        )
    raw = load_image_datasets(args, seed=seed, load_kwargs=load_kwargs)
    train, validation, test = named_splits(raw)
    image_column = find_column(train.column_names, args.image_column_name, IMAGE_COLUMNS, "image")
    label_column = find_column(train.column_names, args.label_column_name, LABEL_COLUMNS, "label")
    multi_label = is_multi_label_feature(train.features[label_column])
    align = align_multi_label_splits if multi_label else align_splits
    train, validation, test, names = align(train, validation, test, label_column, args.num_labels)
    train, validation = hold_out_validation(train, validation, test, args, seed)
    train, validation, test = take_subsets(train, validation, test, args, seed)
    checked: list[Dataset | None] = []
    for dataset, split in ((train, "train"), (validation, "validation"), (test, "test")):
        checked.append(None if dataset is None else _checked_images(dataset, image_column, args, split))
    return DataSplits(checked[0], checked[1], checked[2], image_column, label_column, names, multi_label)


def _checked_images(dataset: Dataset, image_column: str, args: DataArguments, split: str) -> Dataset:
    if image_column not in dataset.column_names:
        raise ValueError(
            f"the {split} split has no image column {image_column!r}; it has columns {dataset.column_names}"
        )
    dataset = ensure_image_feature(dataset, image_column)
    if args.verify_images:
        dataset = verify_images(dataset, image_column, skip_bad_images=args.skip_bad_images, split=split)
    return dataset


def load_evaluation_splits(
    args: DataArguments,
    names: list[str],
    seed: int = 0,
    load_kwargs: dict[str, Any] | None = None,
    multi_label: bool = False,
) -> DataSplits:
    """The data of a run that trains nothing (``--do_train False``): exactly the validation and test data given
    (``--validation_dir``/``--test_dir`` image folders, ``--validation_file``/``--test_file``, or the validation /
    test split of ``--dataset_name``), labels matched by name to the model's class ``names``
    (:func:`align_to_model`; ``multi_label``: a multi-label model's, lists of labels), ``--max_eval_samples`` of
    each, every image checked. No training data is read and
    nothing is held out of it; neither split given is a one-line ``ValueError``."""
    load_kwargs = load_kwargs or {}
    splits: dict[str, Dataset] = {}
    if args.dataset_name:
        raw = load_image_datasets(args, seed=seed, load_kwargs=load_kwargs)
        for split, candidates in (("validation", VALIDATION_SPLITS), ("test", TEST_SPLITS)):
            found = next((raw[name] for name in candidates if name in raw), None)
            if found is not None:
                splits[split] = found
    folders = {"validation": args.validation_dir, "test": args.test_dir}
    folders = {split: path for split, path in folders.items() if path}
    if folders:
        splits.update(load_image_folders(folders, load_kwargs))
    for split, value in (("validation", args.validation_file), ("test", args.test_file)):
        if value:
            splits[split] = _load_file(value, split, args.image_column_name, load_kwargs)
    if not splits:
        raise ValueError(
            "--do_train False: no validation or test data to evaluate (give --validation_dir, --test_dir, "
            "--validation_file, --test_file, or a --dataset_name with a validation or test split)"
        )
    first = next(iter(splits.values()))
    image_column = find_column(first.column_names, args.image_column_name, IMAGE_COLUMNS, "image")
    label_column = find_column(first.column_names, args.label_column_name, LABEL_COLUMNS, "label")
    checked: dict[str, Dataset] = {}
    for split, dataset in splits.items():
        if multi_label:
            dataset = align_multi_label_split(dataset, label_column, names, split, reference="the model")
        else:
            dataset = align_to_model(dataset, label_column, names, split)
        if args.max_eval_samples is not None:
            dataset = dataset.shuffle(seed=seed).select(range(min(args.max_eval_samples, len(dataset))))
        checked[split] = _checked_images(dataset, image_column, args, split)
    validation, test = checked.get("validation"), checked.get("test")
    return DataSplits(None, validation, test, image_column, label_column, list(names), multi_label)
