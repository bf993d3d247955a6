"""The label space of multi-label data: a label column that holds a list per image.

Three forms are read, from every source :mod:`mixpro_hf.data` and :mod:`mixpro_hf.streaming` load (Hub, Parquet,
Arrow, CSV/JSON, streams):

* lists of class ids: a 🤗 ``Sequence(ClassLabel)`` (its names are the classes) or lists of integers (the ids
  ``0..K-1``, all present, or ids in ``[0, --num_labels)``, as for single-label integer labels);
* lists of class names (strings): the classes are the sorted distinct names;
* multi-hot vectors of floats or bools (0/1), one entry per class: the classes are ``"0"`` .. ``"C-1"``.

An empty list is an image with no label (allowed); a missing row (``None``) or a ``None`` inside a list is refused.
Every split ends as lists of class ids, a ``List(ClassLabel(names))`` in the training label space (validation and
test matched by name); :func:`multi_hot` turns a batch of them into the dense ``(B, C)`` targets of the loss. Every
problem is a one-line ``ValueError`` naming the column and a few offending values, before any model is built:
ids out of range, a repeated id in one list (an integer multi-hot vector mistaken for ids), names training lacks,
vectors of the wrong length or with values other than 0/1, and a class that is never positive in training (its
classifier would only learn "no").
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datasets import ClassLabel, Dataset, LargeList, List

from .class_labels import (
    INTEGER_DTYPES,
    STRING_DTYPES,
    _is_dtype,
    _label_array,
    class_label_names,
    few_values,
    label_names,
    split_label_feature,
)

logger = logging.getLogger(__name__)

MULTI_HOT_DTYPES = ("bool", "float16", "float32", "float64")


def is_multi_label_feature(feature: Any) -> bool:
    """Whether a label column's feature holds a list per example (``Sequence`` / ``List`` / ``LargeList``)."""
    return isinstance(feature, (List, LargeList))


def _check_rows(values: pa.ChunkedArray, label_column: str, where: str) -> pa.Array:
    """The flattened list entries of ``values``; a missing row or a missing entry is refused."""
    if values.null_count:
        raise ValueError(
            f"label column {label_column!r}{where} has {values.null_count} missing label lists (None): give an image "
            "with no label an empty list [], or drop those rows"
        )
    flat = pc.list_flatten(values)
    if flat.null_count:
        raise ValueError(f"label column {label_column!r}{where} has {flat.null_count} missing entries (None) in lists")
    return flat


def _check_ids(values: pa.ChunkedArray, label_column: str, num_labels: int, where: str, reason: str) -> None:
    """Every listed id in ``[0, num_labels)`` and no id twice in one list, else one line naming a few."""
    flat = _check_rows(values, label_column, where)
    if len(flat) == 0:
        return
    ids = np.asarray(flat.to_numpy(zero_copy_only=False), dtype=np.int64)
    bad = np.unique(ids[(ids < 0) | (ids >= num_labels)])
    if bad.size:
        raise ValueError(
            f"label column {label_column!r}{where} holds ids {few_values(bad.tolist())} outside [0, {num_labels}) "
            f"{reason}"
        )
    rows = np.asarray(pc.list_parent_indices(values).to_numpy(zero_copy_only=False), dtype=np.int64)
    pairs = rows * num_labels + ids
    if np.unique(pairs).size != pairs.size:
        unique, counts = np.unique(pairs, return_counts=True)
        row = int(unique[counts > 1][0] // num_labels)
        raise ValueError(
            f"label column {label_column!r}{where} lists an id twice in row {row} ({values[row].as_py()!r}): lists "
            "of class ids name each class once; if the column holds multi-hot vectors, store them as floats or "
            "bools (0.0 / 1.0)"
        )


def _multi_hot_to_ids(
    dataset: Dataset, label_column: str, names: list[str], where: str, split: str
) -> tuple[Dataset, list[str]]:
    """A column of multi-hot vectors (floats / bools) as lists of class ids; the vectors must all have
    ``len(names)`` entries (the training split: the first row's length) of 0 or 1."""
    values = _label_array(dataset, label_column)
    flat = _check_rows(values, label_column, where)
    lengths = np.asarray(pc.list_value_length(values).to_numpy(zero_copy_only=False))
    width = len(names) if names else int(lengths[0]) if lengths.size else 0
    wrong = np.flatnonzero(lengths != width)
    if wrong.size:
        raise ValueError(
            f"label column {label_column!r}{where} holds multi-hot vectors of {width} entries but row {int(wrong[0])} "
            f"has {int(lengths[wrong[0]])}: every vector needs one entry per class ({width} classes)"
        )
    entries = np.asarray(flat.to_numpy(zero_copy_only=False), dtype=np.float64)
    bad = np.unique(entries[(entries != 0) & (entries != 1)])
    if bad.size:
        raise ValueError(
            f"label column {label_column!r}{where} holds multi-hot values {few_values(bad.tolist())}: a multi-hot "
            "vector holds only 0 and 1"
        )
    names = names or [str(i) for i in range(width)]
    features = dataset.features.copy()
    features[label_column] = List(ClassLabel(names=names))

    def to_ids(rows: list[list[float]]) -> dict[str, list[list[int]]]:
        return {label_column: [np.flatnonzero(np.asarray(row, dtype=np.float64)).tolist() for row in rows]}

    dataset = dataset.map(
        to_ids, batched=True, input_columns=[label_column], features=features, desc=f"Reading {split} multi-hot labels"
    )
    return dataset, names


def _refuse_unknown_names(
    unknown: Sequence[str], names: Sequence[str], label_column: str, where: str, reference: str
) -> None:
    """One line naming the label names of a split that ``reference`` (training, the model) does not have."""
    if unknown:
        raise ValueError(
            f"label column {label_column!r}{where} has label names {few_values(unknown)} that {reference} does not "
            f"have (its names: {few_values(names, limit=30)}); give the splits the same classes"
        )


def _encode_names(
    dataset: Dataset, label_column: str, names: list[str] | None, where: str, reference: str
) -> tuple[Dataset, list[str]]:
    """Lists of class-name strings as lists of ids of ``names`` (default: the sorted distinct names)."""
    flat = _check_rows(_label_array(dataset, label_column), label_column, where)
    present = sorted(pc.unique(flat).to_pylist())
    if names is None:
        names = present
    else:
        _refuse_unknown_names(sorted(set(present) - set(names)), names, label_column, where, reference)
    return dataset.cast_column(label_column, List(ClassLabel(names=list(names)))), list(names)


def _remap_class_label(
    dataset: Dataset, label_column: str, own: list[str], names: list[str], where: str, reference: str
) -> Dataset:
    """A ``List(ClassLabel(own))`` column as ids of ``names``, matched by name."""
    index = {name: i for i, name in enumerate(names)}
    flat = _check_rows(_label_array(dataset, label_column), label_column, where)
    used = sorted({own[i] for i in pc.unique(flat).to_pylist()})
    _refuse_unknown_names([name for name in used if name not in index], names, label_column, where, reference)
    lookup = np.array([index.get(name, -1) for name in own], dtype=np.int64)
    features = dataset.features.copy()
    features[label_column] = List(ClassLabel(names=names))

    def remap(rows: list[list[int]]) -> dict[str, list[list[int]]]:
        return {label_column: [lookup[np.asarray(row, dtype=np.int64)].tolist() for row in rows]}

    return dataset.map(remap, batched=True, input_columns=[label_column], features=features, desc="Matching names")


def _refuse_list_type(inner: Any, label_column: str, where: str) -> None:
    raise ValueError(
        f"label column {label_column!r}{where} holds lists of {getattr(inner, 'dtype', inner)} values; multi-label "
        "lists must hold class ids (integers or a ClassLabel), class names (strings) or multi-hot 0/1 "
        "(floats or bools)"
    )


def multi_label_names(
    dataset: Dataset, label_column: str, num_labels: int | None = None, *, every_class_positive: bool = True
) -> tuple[Dataset, list[str]]:
    """The training split as lists of class ids, and its class names (the model's ``id2label``), after checking
    every label (see the module docstring); every class must be positive in at least one training image
    (``every_class_positive=False``: evaluation data, where such a class has no AP)."""
    feature = dataset.features[label_column]
    inner = feature.feature
    values = _label_array(dataset, label_column)
    if isinstance(inner, ClassLabel):
        names = class_label_names(inner, label_column, num_labels)
        _check_ids(values, label_column, len(names), "", f"(the ClassLabel has {len(names)} names)")
    elif _is_dtype(inner, STRING_DTYPES):
        dataset, names = _encode_names(dataset, label_column, None, "", "the training split")
    elif _is_dtype(inner, INTEGER_DTYPES):  # the single-label rules (0..K-1, or --num_labels) on every listed id
        flat = Dataset(pa.table({label_column: _check_rows(values, label_column, "")}))
        names = label_names(flat, label_column, num_labels)
        _check_ids(values, label_column, len(names), "", "")  # an id twice in one list
        dataset = dataset.cast_column(label_column, List(ClassLabel(names=names)))
    elif _is_dtype(inner, MULTI_HOT_DTYPES):
        if num_labels is not None:
            dataset, names = _multi_hot_to_ids(dataset, label_column, [str(i) for i in range(num_labels)], "", "train")
        else:
            dataset, names = _multi_hot_to_ids(dataset, label_column, [], "", "train")
    else:
        _refuse_list_type(inner, label_column, "")
    if every_class_positive:
        check_every_class_positive(dataset, label_column, names)
    return dataset, names


def check_every_class_positive(dataset: Dataset, label_column: str, names: Sequence[str]) -> None:
    """Refuse a training split (lists of class ids) with fewer than two classes, or with a class that no image has
    (its sigmoid would only learn "absent", and its average precision could not be measured)."""
    if len(names) < 2:
        raise ValueError(
            f"label column {label_column!r} of the training split has {len(names)} class {list(names)}: a "
            "multi-label classifier needs at least two classes"
        )
    flat = pc.list_flatten(_label_array(dataset, label_column))
    counts = np.bincount(np.asarray(flat.to_numpy(zero_copy_only=False), dtype=np.int64), minlength=len(names))
    never = [names[i] for i in np.flatnonzero(counts == 0)]
    if never:
        raise ValueError(
            f"label column {label_column!r} of the training split never lists the classes {few_values(never)} "
            f"({len(dataset)} rows): a class no training image has cannot be learnt; drop it from the label space or "
            "add examples"
        )


def align_multi_label_split(
    dataset: Dataset, label_column: str, names: list[str], split: str, reference: str = "the training split"
) -> Dataset:
    """A validation / test split (or an evaluation split of a multi-label model) as lists of ids of ``names``."""
    where, feature = split_label_feature(dataset, label_column, split)
    if not is_multi_label_feature(feature):
        raise ValueError(
            f"label column {label_column!r}{where} holds {getattr(feature, 'dtype', type(feature).__name__)} values, "
            f"but {reference} is multi-label (lists of labels): give every split lists of labels"
        )
    inner = feature.feature
    values = _label_array(dataset, label_column)
    reason = f"(the label space of {reference} has {len(names)} classes)"
    if isinstance(inner, ClassLabel):
        own = list(inner.names)
        _check_ids(values, label_column, len(own), where, f"(its ClassLabel has {len(own)} names)")
        return dataset if own == names else _remap_class_label(dataset, label_column, own, names, where, reference)
    if _is_dtype(inner, STRING_DTYPES):
        return _encode_names(dataset, label_column, names, where, reference)[0]
    if _is_dtype(inner, INTEGER_DTYPES):
        _check_ids(values, label_column, len(names), where, reason)
        return dataset.cast_column(label_column, List(ClassLabel(names=names)))
    if _is_dtype(inner, MULTI_HOT_DTYPES):
        return _multi_hot_to_ids(dataset, label_column, names, where, split)[0]
    _refuse_list_type(inner, label_column, where)
    raise AssertionError  # unreachable


def align_multi_label_splits(
    train: Dataset,
    validation: Dataset | None,
    test: Dataset | None,
    label_column: str,
    num_labels: int | None = None,
) -> tuple[Dataset, Dataset | None, Dataset | None, list[str]]:
    """:func:`mixpro_hf.class_labels.align_splits` for multi-label data: every split as lists of class ids of the
    training label space; returns ``(train, validation, test, names)``."""
    train, names = multi_label_names(train, label_column, num_labels)
    validation_out = (
        None if validation is None else align_multi_label_split(validation, label_column, names, "validation")
    )
    if test is None:
        test_out = None
    elif test is validation:
        test_out = validation_out
    else:
        test_out = align_multi_label_split(test, label_column, names, "test")
    return train, validation_out, test_out, names


def multi_hot(rows: Sequence[Sequence[int]], num_labels: int) -> np.ndarray:
    """Lists of class ids as a ``(len(rows), num_labels)`` float32 multi-hot matrix (an empty list: a row of
    zeros); an id outside ``[0, num_labels)`` is a one-line ``ValueError``."""
    lengths = np.fromiter((len(row) for row in rows), dtype=np.int64, count=len(rows))
    ids = np.fromiter((i for row in rows for i in row), dtype=np.int64, count=int(lengths.sum()))
    if ids.size and (ids.min() < 0 or ids.max() >= num_labels):
        bad = np.unique(ids[(ids < 0) | (ids >= num_labels)])
        raise ValueError(f"label ids {few_values(bad.tolist())} are outside [0, {num_labels}) (the label space)")
    target = np.zeros((len(rows), num_labels), dtype=np.float32)
    target[np.repeat(np.arange(len(rows)), lengths), ids] = 1.0
    return target
