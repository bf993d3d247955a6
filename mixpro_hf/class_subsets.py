"""A data set's classes as a subset of a model's labels (ImageNet-A / -O: 200 of the 1,000 ImageNet classes).

:func:`class_subset` maps each class name of the data set onto the model's ``config.id2label``, by name (case,
``_`` / ``-`` and spacing ignored) or by WordNet id (``n01440764``: ImageNet folders), through timm's ImageNet
synset table (``timm.data.ImageNetInfo``) when the model's labels are descriptions ("tench, Tinca tinca", as 🤗
ImageNet checkpoints have) or WordNet ids. The evaluation keeps only those logits, in the data set's class order
(Hendrycks et al.'s ImageNet-A protocol: the arg-max over the 200 classes).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from .class_labels import few_values

__all__ = ["class_subset", "normalise_class_name"]

_WNID = re.compile(r"^n\d{8}$")
_GENERIC = re.compile(r"^label_(\d+)$", re.IGNORECASE)  # transformers' default names: LABEL_0, LABEL_1, ...


def normalise_class_name(name: str) -> str:
    """Lower case, ``_`` and ``-`` as spaces, runs of spaces as one: ``"Golden_Retriever"`` -> "golden retriever"."""
    return " ".join(re.sub(r"[_\-]", " ", str(name)).lower().split())


def _wordnet_descriptions() -> dict[str, str]:
    """WordNet id -> description of the ImageNet-1k / -21k synsets timm ships (empty if unavailable)."""
    try:
        from timm.data import ImageNetInfo

        info = ImageNetInfo("imagenet-1k")
        return {wnid: info.label_name_to_description(wnid) for wnid in info.label_names()}
    except Exception:  # an older timm without the table: names must then match directly
        return {}


def class_subset(
    dataset_names: Sequence[str], id2label: Mapping[int, str], dataset: str = "the data set", model: str = "the model"
) -> list[int] | None:
    """The model's class ids of ``dataset_names``, in their order; ``None`` when they are exactly the model's
    labels in the model's order (no restriction needed).

    Raises:
        ValueError: one line naming a few data set classes that are not model labels (or two that map onto one).
    """
    wordnet = _wordnet_descriptions() if any(_WNID.match(str(n)) for n in [*dataset_names, *id2label.values()]) else {}
    keys: dict[str, set[int]] = {}
    for index, label in id2label.items():
        aliases = {normalise_class_name(label)}
        if label in wordnet:
            aliases.add(normalise_class_name(wordnet[label]))
        generic = _GENERIC.match(str(label))
        if generic:
            aliases.add(generic.group(1))
        for alias in aliases:
            keys.setdefault(alias, set()).add(int(index))
    ids: list[int] = []
    unmatched: list[str] = []
    for name in dataset_names:
        candidates = [normalise_class_name(name)]
        if name in wordnet:
            candidates.append(normalise_class_name(wordnet[name]))
        found = next((keys[c] for c in candidates if len(keys.get(c, ())) == 1), None)
        if found is None:
            unmatched.append(str(name))
        else:
            ids.append(next(iter(found)))
    if unmatched:
        labels = [str(id2label[i]) for i in sorted(id2label)]
        raise ValueError(
            f"{len(unmatched)} of the {len(dataset_names)} classes of {dataset} are not labels of {model}: "
            f"{few_values(unmatched)}; its labels are {few_values(labels)}: give a data set whose class names (or "
            "WordNet ids) are the model's labels"
        )
    if len(set(ids)) != len(ids):
        twice = sorted({str(dataset_names[i]) for i, x in enumerate(ids) if ids.count(x) > 1})
        raise ValueError(f"classes {few_values(twice)} of {dataset} map onto the same label of {model}")
    return None if ids == sorted(id2label) and len(ids) == len(id2label) else ids
