"""``--streaming``: the training split read as a 🤗 ``datasets.IterableDataset`` while training.

:func:`load_streaming_splits` is :func:`mixpro_hf.data.load_splits` for data larger than memory or disk: the label
space comes from the stream's features (nothing is scanned before training), the training images are not
verified, and the evaluation splits are map-style datasets, checked as without streaming.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from datasets import ClassLabel, Dataset, IterableDataset, load_dataset
from datasets import Image as DatasetsImage

from .class_labels import INTEGER_DTYPES, _align_split, _is_dtype, blank_names
from .data import (
    IMAGE_COLUMNS,
    LABEL_COLUMNS,
    TEST_SPLITS,
    VALIDATION_SPLITS,
    DataArguments,
    DataSplits,
    _file_builder,
    _load_file,
    data_files,
    find_column,
)
from .images import ensure_image_feature, verify_images
from .multi_label import align_multi_label_split, is_multi_label_feature

logger = logging.getLogger(__name__)

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
        blank = blank_names(feature.names)
        if blank:  # a stream's rows cannot be counted before training: its label space is refused
            raise ValueError(
                f"label column {label_column!r}: the ClassLabel's class name {feature.names[blank[0]]!r} (id "
                f"{blank[0]}) is blank, and a blank class name is a missing label: name the class or drop its rows"
            )
        return list(feature.names)
    inner = feature.feature if is_multi_label_feature(feature) else feature  # multi-label: lists of ids
    if isinstance(inner, ClassLabel) and inner is not feature:
        return _stream_label_names({label_column: inner}, label_column, num_labels)
    if _is_dtype(inner, INTEGER_DTYPES) and num_labels is not None:
        return [str(i) for i in range(num_labels)]
    raise ValueError(
        f"--streaming: label column {label_column!r} is {feature}; a stream's label space must come from its "
        "features: a ClassLabel (as 🤗 Parquet exports and image folders have), or integer ids with --num_labels N "
        "(for multi-label data, lists of either)"
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
    multi_label = is_multi_label_feature(features[label_column])
    if len(names) < 2:
        raise ValueError(f"label column {label_column!r} declares {len(names)} class {names}: a classifier needs two")
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
        if multi_label:
            dataset = align_multi_label_split(dataset, label_column, names, split)
        else:
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
    return DataSplits(train, validation, test, image_column, label_column, names, multi_label)
