"""A 🤗-style data collator that stacks image examples and mixes training batches.

It returns what the model needs (``pixel_values``, ``labels``) and what the loss needs
(``mix_partner``, ``mix_patch_mask``, ``mix_lam_area``, ``mix_method``). Evaluation batches are
never mixed: use :meth:`MixProCollator.without_mixing` (the ``MixProTrainer`` does).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.utils.data

from .labels import check_labels, check_multi_hot
from .mixing import MixOutput, check_pixel_values
from .recipe import MixProConfig, batch_generator, mix_batch

LABEL_KEYS = ("labels", "label")


def mix_to_batch(mix: MixOutput) -> dict[str, Any]:
    """The loss-side fields of a :class:`MixOutput`, as batch entries."""
    return {
        "mix_partner": mix.partner,
        "mix_patch_mask": mix.patch_mask,
        "mix_lam_area": mix.lam_area,
        "mix_method": mix.method,
    }


def pop_mix(batch: dict[str, Any]) -> MixOutput | None:
    """Remove the ``mix_*`` entries from ``batch`` and return them as a :class:`MixOutput` (or None)."""
    if "mix_partner" not in batch:
        return None
    return MixOutput(
        pixel_values=batch["pixel_values"],
        partner=batch.pop("mix_partner"),
        patch_mask=batch.pop("mix_patch_mask"),
        lam_area=batch.pop("mix_lam_area"),
        method=batch.pop("mix_method"),
    )


def _to_tensor(value: Any) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    return torch.as_tensor(np.asarray(value))


def _is_label_id(value: Any) -> bool:
    """Whether ``value`` is a class id: a Python or NumPy integer (not a bool) or a 0-d integer tensor/array."""
    if isinstance(value, torch.Tensor):
        dtype = value.dtype
        return value.dim() == 0 and not (dtype.is_floating_point or dtype.is_complex or dtype == torch.bool)
    if isinstance(value, np.ndarray):
        return value.ndim == 0 and np.issubdtype(value.dtype, np.integer)
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_label_vector(value: Any) -> bool:
    """Whether ``value`` is one example's multi-hot vector: a list, tuple or 1-D array / tensor."""
    if isinstance(value, (torch.Tensor, np.ndarray)):
        return value.ndim == 1
    return isinstance(value, (list, tuple))


def stack_multi_hot(values: Sequence[Any], label_key: str = "labels") -> torch.Tensor:
    """The multi-hot vectors ``values`` (one per example, as :func:`~mixpro_hf.data.attach_transform` gives them
    for multi-label data) as a ``(B, C)`` float32 tensor; vectors of different lengths are refused in one line."""
    lengths = {len(v) for v in values}
    if len(lengths) > 1:
        raise ValueError(
            f"the multi-hot label vectors under {label_key!r} have different lengths {sorted(lengths)}: every "
            "example needs one entry per class"
        )
    return torch.as_tensor(np.asarray([np.asarray(v, dtype=np.float32) for v in values]), dtype=torch.float32)


def stack_labels(values: Sequence[Any], label_key: str = "labels") -> torch.Tensor:
    """The class ids ``values`` as a ``long`` tensor; a float (even ``1.0``: ``mixed_loss`` refuses float labels
    too), bool, string, ``None`` or non-scalar is refused with a one-line ``ValueError`` naming it. Multi-label
    examples (every value a vector) give the ``(B, C)`` float multi-hot matrix of :func:`stack_multi_hot`."""
    if values and all(_is_label_vector(v) for v in values):
        return stack_multi_hot(values, label_key)
    if not all(type(v) is int for v in values):  # the common case (🤗 datasets give ints) skips the checks
        for index, value in enumerate(values):
            if not _is_label_id(value):
                raise ValueError(
                    f"label {value!r} ({type(value).__name__}) of example {index} under {label_key!r} is not an "
                    "integer class id: labels must be Python or NumPy integers or 0-d integer tensors"
                )
        values = [int(v) for v in values]
    return torch.tensor(values, dtype=torch.long)


def stack_examples(features: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
    """Stack ``pixel_values`` and the label column (``labels`` or ``label``, see :func:`stack_labels`) of a list
    of examples."""
    if not features:
        raise ValueError("cannot collate an empty list of examples")
    first = features[0]
    if "pixel_values" not in first:
        raise KeyError(f"examples need a 'pixel_values' entry (the transformed image), got keys {sorted(first)}")
    label_key = next((k for k in LABEL_KEYS if k in first), None)
    batch = {"pixel_values": torch.stack([_to_tensor(f["pixel_values"]) for f in features])}
    if label_key is not None:
        batch["labels"] = stack_labels([f[label_key] for f in features], label_key)
    return batch


@dataclass
class MixProCollator:
    """Collate image examples and mix them with the recipe of ``config`` (``None``: never mix).

    Args:
        config: the :class:`MixProConfig` (method, probabilities, MaskMix and Mixup/CutMix settings).
        patch_size: the model's patch size (``model.config.patch_size``).
        num_labels: when given, labels outside ``[0, num_labels)`` are refused.
        seed: seeds the mixing (default: torch's initial seed); with ``process_index`` it makes each
            batch's draws reproducible, and distinct between processes and ``DataLoader`` workers.
    """

    config: MixProConfig | None = None
    patch_size: int = 16
    num_labels: int | None = None
    seed: int | None = None
    process_index: int = 0

    def __post_init__(self) -> None:
        self._calls = 0

    def _next_generator(self) -> torch.Generator:
        """The generator of the next batch: ``batch_generator(seed, process, batch index)`` in the main
        process (so the Trainer's on-device mixing with the same seed draws the same masks), and
        seeded from the worker's own seed in ``DataLoader`` workers (which restart every epoch)."""
        seed = self.seed if self.seed is not None else int(torch.initial_seed())
        info = torch.utils.data.get_worker_info()
        keys = (self.process_index, self._calls) if info is None else (self.process_index, info.seed, self._calls)
        self._calls += 1
        return batch_generator(seed, *keys)

    def without_mixing(self) -> MixProCollator:
        """The same collator that only stacks (for evaluation)."""
        return dataclasses.replace(self, config=None)

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        batch: dict[str, Any] = stack_examples(features)
        check_pixel_values(batch["pixel_values"], self.patch_size)
        if self.num_labels is not None and "labels" in batch:
            labels = batch["labels"]
            (check_multi_hot if labels.dim() == 2 else check_labels)(labels, self.num_labels)
        if self.config is None or self.config.mix_method == "none":
            return batch
        if "labels" not in batch:
            raise KeyError("mixing needs labels: examples have neither 'labels' nor 'label'")
        mix = mix_batch(batch["pixel_values"], self.config, self.patch_size, self._next_generator())
        batch["pixel_values"] = mix.pixel_values
        batch.update(mix_to_batch(mix))
        return batch
