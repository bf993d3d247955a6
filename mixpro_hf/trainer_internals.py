"""The private 🤗 ``Trainer`` API that :class:`~mixpro_hf.trainer.MixProTrainer` still depends on, in one place, each
with why no public hook does it.

Everything else goes through public hooks: the mixed loss (``compute_loss``, ``training_step``), the optimizer
(``create_optimizer``, ``get_decay_parameter_names``), the scheduler (``create_scheduler``), the final model
(``save_model``), the divergence stop and MixPro's resumed states (``TrainerCallback``), DDP's unused-parameter search
(decided in ``__init__``, before ``Trainer.__init__``). A transformers release that renames or re-signs one of the
methods below would otherwise silently switch a guarantee off (the override is simply no longer called), so:

* ``tests/test_trainer_internals.py`` fences each entry: its signature, and the behaviour ``MixProTrainer`` relies on,
  checked on the stock ``Trainer``; a failure names the method and the installed transformers version;
* :func:`check_private_trainer_api` runs when a ``MixProTrainer`` is built: a missing method is an error, a changed
  signature a warning.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import transformers
from transformers import Trainer


@dataclass(frozen=True)
class PrivateTrainerMethod:
    """A private ``Trainer`` method that ``MixProTrainer`` overrides or calls."""

    name: str
    #: parameter names after ``self``, as in every supported transformers release
    parameters: tuple[str, ...]
    #: True: ``MixProTrainer`` overrides it; False: it only calls it
    overridden: bool
    why: str


PRIVATE_TRAINER_API: tuple[PrivateTrainerMethod, ...] = (
    PrivateTrainerMethod(
        "_save_checkpoint",
        ("model", "trial"),
        True,
        "atomic checkpoints: the Trainer writes the checkpoint into a staging folder that is renamed when complete; "
        "no public hook runs before a checkpoint is written (on_save runs after), and the weights are checked finite "
        "first. mixpro-train also calls it to save a checkpoint on Ctrl-C.",
    ),
    PrivateTrainerMethod(
        "_get_output_dir",
        ("trial",),
        True,
        "where _save_checkpoint writes: the staging folder while a checkpoint is saved (the only way to redirect the "
        "Trainer's checkpoint writer without copying it).",
    ),
    PrivateTrainerMethod(
        "_load_from_checkpoint",
        ("resume_from_checkpoint", "model"),
        True,
        "a resume restores every weight through from_pretrained (legacy key names converted, strict load); the "
        "Trainer's own reload misses renamed keys silently and no public hook replaces it.",
    ),
    PrivateTrainerMethod(
        "_load_best_model",
        (),
        True,
        "load_best_model_at_end restores the best checkpoint through the same strict reload; the Trainer's own "
        "keeps the last weights for renamed keys, and on_train_end would run after it.",
    ),
    PrivateTrainerMethod(
        "_save",
        ("output_dir", "state_dict"),
        False,
        "the atomic final save writes the Trainer's files (model, processor, training_args.bin) into its staging "
        "folder; save_model would recurse into MixProTrainer.save_model.",
    ),
    PrivateTrainerMethod(
        "_finish_current_push",
        (),
        False,
        "push_to_hub waits for a checkpoint push still in flight before uploading the output folder itself.",
    ),
)


@functools.cache
def private_api_problems(trainer_class: type = Trainer) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(missing, changed)``: one line for each entry of :data:`PRIVATE_TRAINER_API` that ``trainer_class`` lacks,
    or whose parameters are not the expected ones; each names the method and the installed transformers version."""
    missing, changed = [], []
    for method in PRIVATE_TRAINER_API:
        function = getattr(trainer_class, method.name, None)
        if not callable(function):
            missing.append(
                f"transformers {transformers.__version__}: Trainer.{method.name} no longer exists; MixProTrainer "
                f"relies on it ({method.why})"
            )
            continue
        names = tuple(p for p in inspect.signature(function).parameters if p != "self")
        if names != method.parameters:
            changed.append(
                f"transformers {transformers.__version__}: Trainer.{method.name}{names} is not "
                f"{method.name}{method.parameters} as MixProTrainer expects ({method.why})"
            )
    return tuple(missing), tuple(changed)


def check_private_trainer_api(warn: Callable[[str], Any], trainer_class: type = Trainer) -> None:
    """Raise ``ImportError`` if the installed ``Trainer`` lacks a method of :data:`PRIVATE_TRAINER_API` (a guarantee
    would be off); ``warn`` each whose signature changed (it may still work: the fence tests decide)."""
    missing, changed = private_api_problems(trainer_class)
    if missing:
        raise ImportError(missing[0] + "; install a supported transformers release (see the README)")
    for line in changed:
        warn(line)
