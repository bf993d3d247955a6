"""The label space of a run: its class names (the model's ``id2label``) and every split's labels checked against it.

Training labels are a ``ClassLabel``, class-name strings (encoded as a ``ClassLabel`` of the sorted names) or
integer ids (``0..K-1``, all present, or in ``[0, --num_labels)``); validation and test labels are matched to the
training split's by name (:func:`align_splits`). A missing, stray or unknown label is a one-line ``ValueError``
naming the column and a few offending values, before any model is built. Also the column dtype names
(``INTEGER_DTYPES``, ``STRING_DTYPES``) the data modules share.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datasets import ClassLabel, Dataset, Value

logger = logging.getLogger(__name__)

INTEGER_DTYPES = ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")
STRING_DTYPES = ("string", "large_string")


def few_values(values: Sequence[Any] | np.ndarray, limit: int = 5) -> str:
    """At most ``limit`` values, comma-separated, with the count when there are more."""
    values = list(values)
    text = ", ".join(repr(v) if isinstance(v, str) else str(v) for v in values[:limit])
    return text + (f", ... ({len(values)} in all)" if len(values) > limit else "")


def _label_array(dataset: Dataset, label_column: str) -> pa.ChunkedArray:
    """The label column as Arrow, with the dataset's row selection applied (no image is read)."""
    return dataset.select_columns([label_column]).with_format("arrow")[:][label_column]


def blank_names(names: Sequence[Any]) -> list[int]:
    """The ids of ``names`` that are blank (``""`` or whitespace only): a blank class name is a missing label."""
    return [i for i, name in enumerate(names) if not str(name).strip()]


def _check_no_missing(values: pa.ChunkedArray, label_column: str, where: str, feature: Any = None) -> None:
    """Refuse missing labels, counted: ``None``, a blank or whitespace-only class name (a string, or an id whose
    ``ClassLabel`` name, ``feature``, is blank)."""
    missing = values.null_count
    if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
        missing += pc.sum(pc.equal(pc.utf8_trim_whitespace(values), "")).as_py() or 0
    blank = blank_names(feature.names) if isinstance(feature, ClassLabel) else []
    if blank:
        missing += pc.sum(pc.is_in(values, pa.array(blank, type=values.type))).as_py() or 0
    if missing or blank:
        what = "a blank or whitespace-only class name"
        if blank:
            what = f"the blank class name {feature.names[blank[0]]!r} of ClassLabel id {blank[0]}"
        raise ValueError(
            f"label column {label_column!r}{where} has {missing} missing labels (None, or {what}): label or drop "
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
    raise ValueError(
        f"label column {label_column!r}{where} holds ids {few_values(bad)} outside [0, {num_labels}) {reason}"
    )


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
    _check_no_missing(values, label_column, "", feature)
    if isinstance(feature, ClassLabel):
        names = class_label_names(feature, label_column, num_labels)
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
            f"label column {label_column!r} holds integer ids {few_values(bad)} that are not among 0..{len(ids) - 1}: "
            f"integer labels without ClassLabel names must be the ids 0..K-1, all present ({len(ids)} distinct ids "
            f"here); pass --num_labels N if every id is in [0, N), or cast the column to a ClassLabel with the class "
            "names"
        )
    return [str(i) for i in range(len(ids))]


def _names_text(names: Sequence[str]) -> str:
    return f"[{few_values(names, limit=30)}]"


def _refuse_unknown_names(
    unknown: Sequence[str], names: Sequence[str], own: Sequence[str], split: str, reference: str = "the training split"
) -> None:
    which = "training" if reference == "the training split" else "the model's"
    raise ValueError(
        f"the {split} split has label names {few_values(unknown)} that {reference} does not have: {which} names "
        f"{_names_text(names)}, {split} names {_names_text(own)}; give the splits the same classes"
    )


def encode_string_labels(
    dataset: Dataset,
    label_column: str,
    names: Sequence[str] | None = None,
    split: str = "training",
    reference: str = "the training split",
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
            _refuse_unknown_names(unknown, names, present, split, reference)
    return dataset.cast_column(label_column, ClassLabel(names=list(names)))


def class_label_names(feature: ClassLabel, label_column: str, num_labels: int | None) -> list[str]:
    """A ``ClassLabel``'s names as the label space; a ``--num_labels`` that disagrees is refused in one line."""
    names = list(feature.names)
    if num_labels is not None and num_labels != len(names):
        raise ValueError(
            f"--num_labels {num_labels} does not match the {len(names)} ClassLabel names of label column "
            f"{label_column!r}: leave --num_labels unset"
        )
    return names


def split_label_feature(dataset: Dataset, label_column: str, split: str) -> tuple[str, Any]:
    """The label column's feature of a validation / test (or evaluation) split, and the ``" of the <split> split"``
    its messages use; a split without the column is refused in one line."""
    if label_column not in dataset.column_names:
        raise ValueError(
            f"the {split} split has no label column {label_column!r}; it has columns {dataset.column_names}"
        )
    return f" of the {split} split", dataset.features[label_column]


def _align_split(
    dataset: Dataset, label_column: str, names: list[str], split: str, reference: str = "the training split"
) -> Dataset:
    """``dataset``'s labels as ids of the training ``names`` (see :func:`align_splits`)."""
    where, feature = split_label_feature(dataset, label_column, split)
    if _is_dtype(feature, STRING_DTYPES):
        return encode_string_labels(dataset, label_column, names, split, reference)
    values = _label_array(dataset, label_column)
    if isinstance(feature, ClassLabel):
        own = list(feature.names)
        _check_no_missing(values, label_column, where, feature)
        _check_ids(values, label_column, len(own), where, f"(its ClassLabel has {len(own)} names; -1 means unlabelled)")
        if own == names:
            return dataset
        index = {name: i for i, name in enumerate(names)}
        used = [own[i] for i in pc.unique(values).to_pylist()]
        unknown = [name for name in used if name not in index]
        if unknown:
            _refuse_unknown_names(sorted(unknown), names, own, split, reference)
        lookup = np.array([index.get(name, -1) for name in own], dtype=np.int64)
        features = dataset.features.copy()
        features[label_column] = ClassLabel(names=names)
        logger.info("%s labels matched by name to the label ids of %s", split, reference)
        return dataset.map(
            lambda ids: {label_column: lookup[np.asarray(ids, dtype=np.int64)]},
            batched=True,
            input_columns=[label_column],
            features=features,
            desc=f"Matching {split} label names",
        )
    if not _is_dtype(feature, INTEGER_DTYPES):
        _refuse_label_type(feature, values, label_column, where)
    _check_ids(values, label_column, len(names), where, f"(the label space of {reference} has {len(names)} classes)")
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
    trained = pc.unique(_label_array(train, label_column)).to_pylist()
    if len(trained) < 2:
        only = f" ({names[trained[0]]!r})" if trained else ""
        raise ValueError(
            f"label column {label_column!r} of the training split holds one class{only} in its {len(train)} rows: a "
            "classifier needs examples of at least two classes"
        )
    validation_out = None if validation is None else _align_split(validation, label_column, names, "validation")
    if test is None:
        test_out = None
    elif test is validation:
        test_out = validation_out
    else:
        test_out = _align_split(test, label_column, names, "test")
    for split, dataset in (("validation", validation_out), ("test", test_out)):
        if dataset is not None:
            check_seen_in_training(dataset, label_column, names, set(trained), split)
    return train, validation_out, test_out, names


def check_seen_in_training(
    dataset: Dataset, label_column: str, names: Sequence[str], trained: set[int], split: str
) -> None:
    """Refuse ``dataset`` (an aligned validation / test split) when it holds classes of which the training split
    has no example (e.g. a ``ClassLabel`` name or an id of ``--num_labels`` that only the evaluation data uses)."""
    used = pc.unique(_label_array(dataset, label_column)).to_pylist()
    unseen = sorted(names[i] for i in used if i not in trained)
    if unseen:
        raise ValueError(
            f"the {split} split has classes {few_values(unseen)} of which the training split has no example: a model "
            "cannot learn a class it never sees; give the splits the same classes"
        )


def align_to_model(dataset: Dataset, label_column: str, names: list[str], split: str) -> Dataset:
    """An evaluation split (a run that trains nothing) in the label space of the model being evaluated (its
    ``id2label`` names): matched by name as in :func:`align_splits`; a class the model does not have is refused."""
    return _align_split(dataset, label_column, names, split, reference="the model")
