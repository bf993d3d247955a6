"""Image-classification data for the training entry point: loading, column detection, transforms.

Sources: a Hub dataset name or local dataset path (``load_dataset``), image folders, Parquet/Arrow
files, or the embedded default (scikit-learn's bundled 8x8 digits, so the default job runs offline).
"""

from __future__ import annotations

import glob
import io
import logging
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from datasets import ClassLabel, Dataset, DatasetDict, IterableDataset, Value, load_dataset
from datasets import Image as DatasetsImage
from PIL import Image

logger = logging.getLogger(__name__)

# "image_path"/"file_name": a CSV or JSON column of image file paths (🤗 imagefolder metadata uses "file_name")
IMAGE_COLUMNS = ("image", "img", "pixel_values", "image_path", "file_name")
LABEL_COLUMNS = ("label", "labels", "fine_label")
INTEGER_DTYPES = ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")
STRING_DTYPES = ("string", "large_string")
# Images with transparency are composited onto white, as 🤗 Transformers' ``convert_to_rgb`` does.
ALPHA_BACKGROUND = (255, 255, 255)
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


def _one_line(err: BaseException) -> str:
    """``Type: message`` of ``err`` (and of its cause, which datasets' generation errors hide) on one line."""
    text = f"{type(err).__name__}: {err}"
    if err.__cause__ is not None:
        text += f" ({type(err.__cause__).__name__}: {err.__cause__})"
    return " ".join(text.split())


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
    try:
        if args.dataset_name:
            return load_dataset(args.dataset_name, args.dataset_config_name, **load_kwargs)
        if args.train_dir:
            files = {"train": os.path.join(args.train_dir, "**")}
            if args.validation_dir:
                files["validation"] = os.path.join(args.validation_dir, "**")
            for path in (args.train_dir, args.validation_dir):
                if path and not os.path.isdir(path):
                    raise FileNotFoundError(f"image folder {path!r} does not exist")
            return load_dataset("imagefolder", data_files=files, **load_kwargs)
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


def ensure_image_feature(dataset: Dataset, image_column: str) -> Dataset:
    """Decode ``{"bytes", "path"}`` structs (Parquet written without 🤗 metadata) and columns of image file
    paths (strings; relative paths are taken from the working directory) as images."""
    feature = dataset.features[image_column]
    if isinstance(feature, DatasetsImage):
        return dataset
    if isinstance(feature, dict) and {"bytes", "path"} <= set(feature):
        return dataset.cast_column(image_column, DatasetsImage())
    if isinstance(feature, Value) and feature.dtype in STRING_DTYPES:
        return dataset.cast_column(image_column, DatasetsImage())
    return dataset


def _few(values: Sequence[Any] | np.ndarray, limit: int = 5) -> str:
    """At most ``limit`` values, comma-separated, with the count when there are more."""
    values = list(values)
    text = ", ".join(repr(v) if isinstance(v, str) else str(v) for v in values[:limit])
    return text + (f", ... ({len(values)} in all)" if len(values) > limit else "")


def _label_array(dataset: Dataset, label_column: str) -> pa.ChunkedArray:
    """The label column as Arrow, with the dataset's row selection applied (no image is read)."""
    return dataset.select_columns([label_column]).with_format("arrow")[:][label_column]


def _check_no_missing(values: pa.ChunkedArray, label_column: str, where: str) -> None:
    if values.null_count:
        raise ValueError(
            f"label column {label_column!r}{where} has {values.null_count} missing labels (None): label or drop "
            "those rows"
        )


def _check_ids(values: pa.ChunkedArray, label_column: str, num_labels: int, where: str, reason: str) -> None:
    """Every id of ``values`` in ``[0, num_labels)``, else a one-line error naming a few offending ids."""
    _check_no_missing(values, label_column, where)
    if len(values) == 0:
        return
    low_high = pc.min_max(values)
    if low_high["min"].as_py() >= 0 and low_high["max"].as_py() < num_labels:
        return
    ids = np.unique(values.to_numpy())
    bad = ids[(ids < 0) | (ids >= num_labels)]
    raise ValueError(f"label column {label_column!r}{where} holds ids {_few(bad)} outside [0, {num_labels}) {reason}")


def _is_dtype(feature: Any, dtypes: Sequence[str]) -> bool:
    return isinstance(feature, Value) and feature.dtype in dtypes


def _refuse_label_type(feature: Any, values: pa.ChunkedArray, label_column: str, where: str) -> None:
    dtype = getattr(feature, "dtype", type(feature).__name__)
    example = values[0].as_py() if len(values) else None
    raise ValueError(
        f"label column {label_column!r}{where} holds {dtype} values (e.g. {example!r}); labels must be integer "
        "class ids, class names (strings) or a ClassLabel"
    )


def label_names(dataset: Dataset, label_column: str, num_labels: int | None = None) -> list[str]:
    """The class names (the model's label space) of ``label_column``, after checking every label of ``dataset``.

    - ``ClassLabel``: its names; every id must be one of them (``-1``, datasets' "no label", is refused).
    - integers with ``num_labels``: ``"0"`` .. ``str(num_labels - 1)``; every id must be in ``[0, num_labels)``.
    - integers without: the ids must be exactly ``0..K-1``, all present, since a stray id (``1_000_000``) or a
      gap (``{0, 7}``) would silently add classes.

    Strings (class names) are encoded first by :func:`align_splits` (:func:`encode_string_labels`); other types
    are refused. Each error is one line naming the column, a few offending values and what to do.
    """
    feature = dataset.features[label_column]
    values = _label_array(dataset, label_column)
    _check_no_missing(values, label_column, "")
    if isinstance(feature, ClassLabel):
        names = list(feature.names)
        if num_labels is not None and num_labels != len(names):
            raise ValueError(
                f"--num_labels {num_labels} does not match the {len(names)} ClassLabel names of label column "
                f"{label_column!r}: leave --num_labels unset"
            )
        reason = f"(the ClassLabel has {len(names)} names; -1 means unlabelled)"
        _check_ids(values, label_column, len(names), "", reason)
        return names
    if _is_dtype(feature, STRING_DTYPES):
        raise ValueError(
            f"label column {label_column!r} holds class names (strings); encode them first (align_splits) or cast "
            "the column to a ClassLabel"
        )
    if not _is_dtype(feature, INTEGER_DTYPES):
        _refuse_label_type(feature, values, label_column, "")
    if num_labels is not None:
        _check_ids(values, label_column, num_labels, "", f"(--num_labels {num_labels})")
        return [str(i) for i in range(num_labels)]
    ids = np.unique(values.to_numpy())
    bad = ids[(ids < 0) | (ids >= len(ids))]
    if bad.size:
        raise ValueError(
            f"label column {label_column!r} holds integer ids {_few(bad)} that are not among 0..{len(ids) - 1}: "
            f"integer labels without ClassLabel names must be the ids 0..K-1, all present ({len(ids)} distinct ids "
            f"here); pass --num_labels N if every id is in [0, N), or cast the column to a ClassLabel with the class "
            "names"
        )
    return [str(i) for i in range(len(ids))]


def _names_text(names: Sequence[str]) -> str:
    return f"[{_few(names, limit=30)}]"


def _refuse_unknown_names(unknown: Sequence[str], names: Sequence[str], own: Sequence[str], split: str) -> None:
    raise ValueError(
        f"the {split} split has label names {_few(unknown)} that the training split does not have: training names "
        f"{_names_text(names)}, {split} names {_names_text(own)}; give the splits the same classes"
    )


def encode_string_labels(
    dataset: Dataset, label_column: str, names: Sequence[str] | None = None, split: str = "training"
) -> Dataset:
    """Cast a column of class-name strings to a ``ClassLabel``: with the sorted distinct names (as
    ``Dataset.class_encode_column``), or with ``names`` (another split's), refusing names not among them.
    Other columns are returned unchanged."""
    if not _is_dtype(dataset.features[label_column], STRING_DTYPES):
        return dataset
    values = _label_array(dataset, label_column)
    _check_no_missing(values, label_column, f" of the {split} split")
    present = sorted(pc.unique(values).to_pylist())
    if names is None:
        names = present
    else:
        known = set(names)
        unknown = [name for name in present if name not in known]
        if unknown:
            _refuse_unknown_names(unknown, names, present, split)
    return dataset.cast_column(label_column, ClassLabel(names=list(names)))


def _align_split(dataset: Dataset, label_column: str, names: list[str], split: str) -> Dataset:
    """``dataset``'s labels as ids of the training ``names`` (see :func:`align_splits`)."""
    if label_column not in dataset.column_names:
        raise ValueError(
            f"the {split} split has no label column {label_column!r}; it has columns {dataset.column_names}"
        )
    where = f" of the {split} split"
    feature = dataset.features[label_column]
    if _is_dtype(feature, STRING_DTYPES):
        return encode_string_labels(dataset, label_column, names, split)
    values = _label_array(dataset, label_column)
    if isinstance(feature, ClassLabel):
        own = list(feature.names)
        _check_ids(values, label_column, len(own), where, f"(its ClassLabel has {len(own)} names; -1 means unlabelled)")
        if own == names:
            return dataset
        index = {name: i for i, name in enumerate(names)}
        used = [own[i] for i in pc.unique(values).to_pylist()]
        unknown = [name for name in used if name not in index]
        if unknown:
            _refuse_unknown_names(sorted(unknown), names, own, split)
        lookup = np.array([index.get(name, -1) for name in own], dtype=np.int64)
        features = dataset.features.copy()
        features[label_column] = ClassLabel(names=names)
        logger.info("%s labels matched by name to the training label ids", split)
        return dataset.map(
            lambda ids: {label_column: lookup[np.asarray(ids, dtype=np.int64)]},
            batched=True,
            input_columns=[label_column],
            features=features,
            desc=f"Matching {split} label names",
        )
    if not _is_dtype(feature, INTEGER_DTYPES):
        _refuse_label_type(feature, values, label_column, where)
    _check_ids(values, label_column, len(names), where, f"(the training label space has {len(names)} classes)")
    return dataset


def align_splits(
    train: Dataset,
    validation: Dataset | None,
    test: Dataset | None,
    label_column: str,
    num_labels: int | None = None,
) -> tuple[Dataset, Dataset | None, Dataset | None, list[str]]:
    """Put every split in the training label space; returns ``(train, validation, test, names)``, ``names``
    being the model's ``id2label``.

    Training labels that are strings become a ``ClassLabel`` of the sorted names; :func:`label_names` then
    checks them. Validation and test labels are matched to training's *by name*: a ``ClassLabel`` in another
    order is remapped to the training ids, strings are encoded with the training names, integer ids must lie
    in the training label space. A name training lacks (both lists are given), an id outside the label space
    or a missing label is a one-line ``ValueError``, before any training. Call it on whole splits, before
    :func:`take_subsets`, so that a subset missing a class does not shrink the label space.
    """
    train = encode_string_labels(train, label_column)
    names = label_names(train, label_column, num_labels)
    validation_out = None if validation is None else _align_split(validation, label_column, names, "validation")
    if test is None:
        test_out = None
    elif test is validation:
        test_out = validation_out
    else:
        test_out = _align_split(test, label_column, names, "test")
    return train, validation_out, test_out, names


def attach_transform(
    dataset: Dataset | IterableDataset,
    transform: Callable[[Image.Image], Any],
    image_column: str,
    label_column: str,
) -> Dataset | IterableDataset:
    """Set an on-the-fly transform giving ``pixel_values`` and ``labels``: every image becomes 8-bit RGB by
    :func:`to_rgb8` (16-bit and float images scaled, transparency on white), any size is resized by the
    transform. A stream (``IterableDataset``) gets it as a lazy batched ``map`` that drops the other columns."""

    def apply(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        images = [
            image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image))
            for image in batch[image_column]
        ]
        return {
            "pixel_values": [transform(to_rgb8(image)) for image in images],
            "labels": batch[label_column],
        }

    if isinstance(dataset, IterableDataset):
        return dataset.map(apply, batched=True, batch_size=64, remove_columns=dataset.column_names)
    return dataset.with_transform(apply)


# Modes PIL converts to RGB faithfully; transparency is handled before (``_ALPHA_MODES``, ``info["transparency"]``).
_DIRECT_MODES = frozenset({"L", "1", "P", "CMYK", "YCbCr", "LAB", "HSV", "RGBX"})
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa"})
_GRAY16_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})


def _gray_to_rgb8(gray: np.ndarray) -> Image.Image:
    gray = np.ascontiguousarray(gray, dtype=np.uint8)
    return Image.fromarray(np.repeat(gray[..., None], 3, axis=-1))


def _refuse_mode(image: Image.Image, detail: str) -> None:
    raise ValueError(
        f"image mode {image.mode!r} {detail}: convert the images to 8-bit RGB, L or RGBA, or 16-bit grey (I;16)"
    )


def to_rgb8(image: Image.Image) -> Image.Image:
    """``image`` as 8-bit RGB, its values scaled from the range of its mode; a one-line ``ValueError`` naming the
    mode when that range is unknown.

    - ``RGB``: unchanged. ``L``, ``1``, ``P``, ``CMYK``, ``YCbCr``, ``LAB``, ``HSV``, ``RGBX``: PIL's conversion.
    - Transparency (``RGBA``, ``LA``, ``PA``, ``RGBa``, or a ``transparency`` entry as palette and grey PNGs have):
      composited onto white (``ALPHA_BACKGROUND``), as 🤗 Transformers' ``convert_to_rgb`` does; dropping the
      alpha channel would show whatever colour the transparent pixels happen to store.
    - 16-bit grey (``I;16``, ``I;16L``, ``I;16B``, ``I;16N``): ``0..65535`` scaled to ``0..255`` (32768 -> 128);
      PIL's ``convert("RGB")`` clips every value above 255 to white.
    - 32-bit integer grey (``I``, as PIL reads 16-bit PNG/TIFF data in some versions): read as 16-bit data; values
      must lie in ``0..65535``, others are refused (their range is unknown).
    - 32-bit float grey (``F``): an image whose values all lie in ``[0, 1]`` is scaled by 255, else values in
      ``[0, 255]`` are kept (rounded); negative, larger, NaN or infinite values are refused.
    - any other mode (``La``, ``I;16S``, ...) is refused.
    """
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in _GRAY16_MODES or mode in ("I", "F"):
        values = np.asarray(image)
        if values.size == 0:
            return Image.new("RGB", image.size)
        if mode in _GRAY16_MODES:
            return _gray_to_rgb8((values.astype(np.uint32) * 255 + 32767) // 65535)
        low, high = values.min(), values.max()
        if mode == "I":
            if low < 0 or high > 65535:
                _refuse_mode(image, f"(32-bit integers) has values in [{low}, {high}], outside 16-bit 0..65535")
            return _gray_to_rgb8((values.astype(np.int64) * 255 + 32767) // 65535)
        if not (np.isfinite(low) and np.isfinite(high)) or low < 0 or high > 255:
            _refuse_mode(image, f"(32-bit floats) has values in [{low}, {high}]; expected [0, 1] or [0, 255]")
        scale = 255.0 if high <= 1.0 else 1.0
        return _gray_to_rgb8(np.clip(np.rint(values.astype(np.float64) * scale), 0, 255))
    if mode in _ALPHA_MODES or (mode in _DIRECT_MODES and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*ALPHA_BACKGROUND, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode in _DIRECT_MODES:
        return image.convert("RGB")
    _refuse_mode(image, "is not supported")
    raise AssertionError("unreachable")


def _needs_value_check(mode: str) -> bool:
    """Whether :func:`to_rgb8` can refuse an image of ``mode`` (by its values or its mode)."""
    return mode in ("I", "F") or not (
        mode == "RGB" or mode in _DIRECT_MODES or mode in _ALPHA_MODES or mode in _GRAY16_MODES
    )


def image_problem(value: dict[str, Any] | None) -> str | None:
    """Why a stored image (datasets' undecoded ``{"bytes", "path"}``) cannot be trained on, or None.

    The image is decoded in full (``load``); JPEGs at 1/8 scale (``draft``), which still decodes every block, so
    truncated or corrupt data is found, about ten times faster. Images whose values :func:`to_rgb8` refuses are
    reported too.
    """
    if value is None:
        return "no image (None)"
    data, path = value.get("bytes"), value.get("path")
    try:
        if data is not None:
            image = Image.open(io.BytesIO(data))
        elif not path:
            return "no image (neither bytes nor a path)"
        elif "://" in path:  # a URL (or fsspec path): datasets fetches it as it will in training
            image = DatasetsImage().decode_example({"bytes": None, "path": path})
        elif not os.path.isfile(path):
            return f"image file {path!r} not found"
        else:
            image = Image.open(path)
        with image:
            if image.format == "JPEG":
                image.draft(image.mode, (1, 1))
            image.load()
            if _needs_value_check(image.mode):
                to_rgb8(image)
    except Exception as err:  # PIL raises OSError, SyntaxError, ValueError, DecompressionBombError, ...
        named = f" {path!r}" if path else ""
        return f"cannot decode image{named}: {_one_line(err)}"
    return None


def _file_rows(dataset: Dataset, positions: list[int]) -> list[int]:
    """The rows of the loaded split behind ``positions`` of ``dataset`` (which shuffles and selections map)."""
    indices = getattr(dataset, "_indices", None)  # datasets' row mapping; absent when nothing was selected
    if indices is None:
        return positions
    try:
        return [int(i) for i in indices.column(0).take(pa.array(positions, pa.int64())).to_pylist()]
    except Exception:  # a datasets version with another layout: report the positions
        return positions


def verify_images(
    dataset: Dataset,
    image_column: str,
    *,
    skip_bad_images: bool = False,
    split: str | None = None,
    batch_size: int = 1000,
) -> Dataset:
    """Decode every image of ``dataset`` once (:func:`image_problem`), before training.

    A missing, corrupt or unusable image stops the run with a one-line ``ValueError`` naming its row (in the
    loaded split, before any shuffle or subset) and path; with ``skip_bad_images`` such rows are dropped and
    their count and first rows logged (all rows bad: an error). A column that is not a ``datasets.Image``
    (e.g. arrays) is returned unchanged. About 10 s for CIFAR-10's 50,000 PNGs on one core.
    """
    if not isinstance(dataset.features[image_column], DatasetsImage):
        return dataset
    where = f" of the {split} split" if split else ""
    stored = dataset.select_columns([image_column]).cast_column(image_column, DatasetsImage(decode=False))
    bad: list[tuple[int, str]] = []
    for start in range(0, len(stored), batch_size):
        for offset, value in enumerate(stored[start : start + batch_size][image_column]):
            problem = image_problem(value)
            if problem is None:
                continue
            if not skip_bad_images:
                row = _file_rows(dataset, [start + offset])[0]
                raise ValueError(
                    f"image column {image_column!r}{where}, row {row}: {problem}; fix or remove it, or pass "
                    "--skip_bad_images True"
                )
            bad.append((start + offset, problem))
    if not bad:
        return dataset
    positions = [position for position, _ in bad]
    rows = _file_rows(dataset, positions)
    if len(bad) == len(dataset):
        raise ValueError(f"none of the {len(dataset)} images{where} can be used; row {rows[0]}: {bad[0][1]}")
    logger.warning(
        "skipped %d of %d images%s that cannot be used (--skip_bad_images): rows %s; row %d: %s",
        len(bad),
        len(dataset),
        where,
        _few(rows),
        rows[0],
        bad[0][1],
    )
    keep = np.setdiff1d(np.arange(len(dataset)), np.asarray(positions))
    return dataset.select(keep)


@dataclass
class DataSplits:
    """The checked data of a run, from :func:`load_splits`."""

    train: Dataset
    validation: Dataset
    test: Dataset | None
    image_column: str
    label_column: str
    label_names: list[str]


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
    raw = load_image_datasets(args, seed=seed, load_kwargs=load_kwargs)
    train, validation, test = named_splits(raw)
    image_column = find_column(train.column_names, args.image_column_name, IMAGE_COLUMNS, "image")
    label_column = find_column(train.column_names, args.label_column_name, LABEL_COLUMNS, "label")
    train, validation, test, names = align_splits(train, validation, test, label_column, args.num_labels)
    train, validation = hold_out_validation(train, validation, test, args, seed)
    train, validation, test = take_subsets(train, validation, test, args, seed)
    checked: list[Dataset | None] = []
    for dataset, split in ((train, "train"), (validation, "validation"), (test, "test")):
        if dataset is not None:
            if image_column not in dataset.column_names:
                raise ValueError(
                    f"the {split} split has no image column {image_column!r}; it has columns {dataset.column_names}"
                )
            dataset = ensure_image_feature(dataset, image_column)
            if args.verify_images:
                dataset = verify_images(dataset, image_column, skip_bad_images=args.skip_bad_images, split=split)
        checked.append(dataset)
    return DataSplits(checked[0], checked[1], checked[2], image_column, label_column, names)


# ---------------------------------------------------------------------------------------------- streaming

STREAM_HOLD_OUT = 1000  # --streaming without a validation split: rows of the stream held out (or --max_eval_samples)


def _stream_label_names(features: Any, label_column: str, num_labels: int | None) -> list[str]:
    """The label space of a stream, from its features alone (a stream cannot be scanned before training)."""
    feature = features[label_column]
    if isinstance(feature, ClassLabel):
        if num_labels is not None and num_labels != feature.num_classes:
            raise ValueError(
                f"--num_labels {num_labels} does not match the {feature.num_classes} ClassLabel names of label "
                f"column {label_column!r}: leave --num_labels unset"
            )
        return list(feature.names)
    if _is_dtype(feature, INTEGER_DTYPES) and num_labels is not None:
        return [str(i) for i in range(num_labels)]
    raise ValueError(
        f"--streaming: label column {label_column!r} is {feature}; a stream's label space must come from its "
        "features: a ClassLabel (as 🤗 Parquet exports and image folders have), or integer ids with --num_labels N"
    )


def _raw_streams(args: DataArguments, load_kwargs: dict[str, Any]) -> dict[str, IterableDataset]:
    """The splits named by ``args`` as streams (``load_dataset(..., streaming=True)``)."""
    if args.uses_embedded_default:
        raise ValueError("--streaming needs a data source: --dataset_name, --train_dir or --train_file")
    if args.dataset_name:
        return dict(load_dataset(args.dataset_name, args.dataset_config_name, streaming=True, **load_kwargs))
    if args.train_dir:
        for path in (args.train_dir, args.validation_dir):
            if path and not os.path.isdir(path):
                raise FileNotFoundError(f"image folder {path!r} does not exist")
        files = {"train": os.path.join(args.train_dir, "**")}
        if args.validation_dir:
            files["validation"] = os.path.join(args.validation_dir, "**")
        return dict(load_dataset("imagefolder", data_files=files, streaming=True, **load_kwargs))
    paths = data_files(args.train_file or "")
    builders = {_file_builder(path) for path in paths}
    if not builders <= {"parquet", "arrow"} or len(builders) > 1:
        raise ValueError(f"--streaming reads Parquet or Arrow files (one format); --train_file gives {paths[:3]}")
    for path in paths:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"data file {path!r} does not exist")
    return {"train": load_dataset(builders.pop(), data_files={"train": paths}, split="train", streaming=True)}


def _materialise(stream: IterableDataset, image_column: str, rows: int | None) -> Dataset:
    """The first ``rows`` examples of ``stream`` (all when None) as an in-memory ``Dataset``, images kept encoded."""
    features = stream.features
    if isinstance(features[image_column], DatasetsImage):
        stream = stream.cast_column(image_column, DatasetsImage(decode=False))
    if rows is not None:
        stream = stream.take(rows)
    dataset = Dataset.from_list(list(stream), features=stream.features)
    if isinstance(dataset.features[image_column], DatasetsImage):
        return dataset.cast_column(image_column, DatasetsImage())
    return ensure_image_feature(dataset, image_column)


def load_streaming_splits(
    args: DataArguments,
    seed: int = 0,
    world_size: int = 1,
    rank: int = 0,
    load_kwargs: dict[str, Any] | None = None,
) -> DataSplits:
    """``--streaming``: the training split as a 🤗 ``datasets.IterableDataset``, read while training.

    * Sources: a Hub dataset (``streaming=True``), an image folder, or Parquet/Arrow ``--train_file`` values (a
      glob or comma-separated files: each file is a shard of the stream).
    * The label space comes from the features (a ``ClassLabel``, or integer ids with ``--num_labels``): nothing is
      scanned before training, and the images are not verified (a corrupt image stops the run when it is read).
    * ``max_train_samples``: the first rows of the stream; then a shuffle of the shard order and a buffer of
      ``args.shuffle_buffer_size`` examples, seeded (``set_epoch`` reshuffles each epoch).
    * ``world_size > 1``: :func:`datasets.distributed.split_dataset_by_node` gives this ``rank`` its own part (whole
      shards when they divide evenly, else every ``world_size``-th example). Pass it only to a loop that does not
      shard the data itself: 🤗 Trainer / Accelerate shard a stream in ``accelerator.prepare`` (by shards when
      there are at least as many as processes, else by batches), which :func:`mixpro_hf.pipeline.prepare` uses.
    * Evaluation splits are map-style ``Dataset``s as without streaming: ``--validation_file`` / ``--test_file``
      loaded as usual, a stream's validation / test split materialised (up to ``max_eval_samples`` rows), or,
      with no validation split, the first ``max_eval_samples`` (default :data:`STREAM_HOLD_OUT`) rows of the
      training stream held out (skipped by training).
    """
    from datasets.distributed import split_dataset_by_node

    load_kwargs = load_kwargs or {}
    streams = _raw_streams(args, load_kwargs)
    if "train" not in streams:
        raise ValueError(f"the dataset has no 'train' split; it has {list(streams)}")
    train = streams["train"]
    features = train.features
    if features is None:
        raise ValueError("--streaming: the training stream declares no features (columns); use Parquet/Arrow files")
    image_column = find_column(list(features), args.image_column_name, IMAGE_COLUMNS, "image")
    label_column = find_column(list(features), args.label_column_name, LABEL_COLUMNS, "label")
    names = _stream_label_names(features, label_column, args.num_labels)
    feature = features[image_column]
    if isinstance(feature, dict) and {"bytes", "path"} <= set(feature):
        train = train.cast_column(image_column, DatasetsImage())
    logger.info("--streaming: the training images are not verified before training (it would read the whole stream)")

    def evaluation(split: str, path: str | None, stream: IterableDataset | None) -> Dataset | None:
        if path:
            dataset = _load_file(path, split, args.image_column_name, load_kwargs)
        elif stream is not None:
            dataset = _materialise(stream, image_column, args.max_eval_samples)
        else:
            return None
        dataset = _align_split(dataset, label_column, names, split)
        if args.max_eval_samples is not None and len(dataset) > args.max_eval_samples:
            dataset = dataset.shuffle(seed=seed).select(range(args.max_eval_samples))
        dataset = ensure_image_feature(dataset, image_column)
        if args.verify_images:
            dataset = verify_images(dataset, image_column, skip_bad_images=args.skip_bad_images, split=split)
        return dataset

    validation_stream = next((streams[s] for s in VALIDATION_SPLITS if s in streams), None)
    test_stream = next((streams[s] for s in TEST_SPLITS if s in streams), None)
    validation = evaluation("validation", args.validation_file, validation_stream)
    test = evaluation("test", args.test_file, test_stream)
    if validation is None:
        if args.train_val_split > 0 or test is None:
            held = args.max_eval_samples or STREAM_HOLD_OUT
            validation = evaluation("validation", None, train.take(held))
            train = train.skip(held)
        else:
            validation = test
    if args.max_train_samples is not None:
        train = train.take(args.max_train_samples)
    train = train.shuffle(seed=seed, buffer_size=args.shuffle_buffer_size)
    if world_size > 1:
        train = split_dataset_by_node(train, rank=rank, world_size=world_size)
    return DataSplits(train, validation, test, image_column, label_column, names)
