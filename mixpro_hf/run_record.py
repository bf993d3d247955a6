"""The run record, ``mixpro_run.json``: what a run actually ran, and the rules of resuming it.

:class:`RunRecorder` (a ``TrainerCallback``) writes the record when training begins, after the Trainer built (or, on a
resume, reloaded) the optimizer and the schedule: the learning rate is the one in the optimizer, the data counts are
those of the loaded splits, and a resume that changed settings adds a *segment* (from which step which settings
ran), so the record, the results and the model card never claim a setting that did not run.

Resuming (:func:`check_resume`): the data, the model and the class names must be those of the checkpoint's run
(:data:`MUST_MATCH`); a change of a setting that shapes the optimisation (:data:`CHANGE_NEEDS_CONSENT`: the learning
rate, the schedule and warm-up, the seed, the batch, every MixPro setting, ...) is refused with one line naming each,
unless ``--resume_with_changed_settings True``: then it applies from the resumed step (the learning rate is set in the
restored optimizer and schedule) and is recorded as a new segment. Everything else (``--max_steps``,
``--num_train_epochs``, logging, saving and evaluation settings) applies without a question.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from .recipe import MixProConfig
from .write_guard import atomic_write_text

logger = logging.getLogger(__name__)

RUN_FILE = "mixpro_run.json"
#: In every checkpoint folder: the training settings it was made with (the learning rate from the optimizer).
SETTINGS_FILE = "mixpro_settings.json"
RESUME_FLAG = "--resume_with_changed_settings True"
#: Settings a resumed run must share with the run that wrote its checkpoint (besides ``label_names``).
MUST_MATCH: dict[str, tuple[str, ...]] = {
    "data_args": (
        "dataset_name", "dataset_config_name", "train_dir", "validation_dir", "train_file", "validation_file",
        "test_file", "image_column_name", "label_column_name",
    ),
    "model_args": (
        "model_name_or_path", "model_revision", "config_name", "model_type", "model_size", "config_overrides",
    ),
}  # fmt: skip
#: Training settings whose change on a resume needs ``--resume_with_changed_settings True``: the restored optimizer,
#: schedule, weights or data order were made under the old value.
CHANGE_NEEDS_CONSENT: tuple[str, ...] = (
    "learning_rate", "lr_scheduler_type", "lr_scheduler_kwargs", "warmup_steps", "warmup_ratio", "weight_decay",
    "adam_beta1", "adam_beta2", "adam_epsilon", "optim", "max_grad_norm", "seed", "data_seed",
    "per_device_train_batch_size", "gradient_accumulation_steps", "label_smoothing_factor", "mix_on", "mix_patch_size",
    *(f.name for f in fields(MixProConfig)),
)  # fmt: skip
#: Kept for callers of the first round: the keys compared on a resume.
RESUME_KEYS: dict[str, tuple[str, ...]] = {**MUST_MATCH, "training_args": CHANGE_NEEDS_CONSENT}


def run_record(
    model_args: Any,
    data_args: Any,
    training_args: TrainingArguments,
    label_names: list[str] | None = None,
) -> dict[str, Any]:
    """The settings part of ``mixpro_run.json``: every argument of the run and its class names, as JSON values
    (the token never)."""
    data = {**asdict(data_args), "uses_embedded_default": data_args.uses_embedded_default}
    model = {**asdict(model_args), "token": "<TOKEN>" if model_args.token else None}  # never saved
    record: dict[str, Any] = {"model_args": model, "data_args": data}
    record["training_args"] = training_args.to_dict()
    if label_names is not None:
        record["label_names"] = list(label_names)
    return json.loads(json.dumps(record, default=str))


def read_run_record(path: str | Path) -> dict[str, Any] | None:
    """A ``mixpro_run.json`` as a dict; None when missing or unreadable."""
    try:
        record = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _few(names: list[Any], limit: int = 5) -> str:
    shown = ", ".join(map(str, names[:limit])) + (", ..." if len(names) > limit else "")
    return f"{len(names)} classes [{shown}]"


def _phrase(key: str, old: Any, new: Any) -> str:
    return f"{key}: {old!r} in the checkpoint's run, {new!r} now"


def run_differences(before: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """The :data:`RESUME_KEYS` and class names in which two run records differ, one phrase each (keys that
    ``before`` did not record are not compared)."""
    must, changed = resume_differences(before, now)
    return must + [_phrase(key, old, new) for key, (old, new) in changed.items()]


def _same(old: Any, new: Any) -> bool:
    """Equal, floats up to rounding (a learning rate read back from the optimizer)."""
    if isinstance(old, float) and isinstance(new, float):
        return math.isclose(old, new, rel_tol=1e-9)
    return old == new


def _same_settings(before: dict[str, Any], now: dict[str, Any]) -> bool:
    return before.keys() == now.keys() and all(_same(before[k], now[k]) for k in now)


def resume_differences(before: dict[str, Any], now: dict[str, Any]) -> tuple[list[str], dict[str, tuple[Any, Any]]]:
    """``(refused, changed)``: phrases for the :data:`MUST_MATCH` settings and class names that differ, and the
    :data:`CHANGE_NEEDS_CONSENT` settings that differ as ``{key: (old, new)}``."""
    refused = []
    for section, keys in MUST_MATCH.items():
        old, new = before.get(section) or {}, now.get(section) or {}
        refused += [_phrase(key, old[key], new.get(key)) for key in keys if key in old and old[key] != new.get(key)]
    old_names, new_names = before.get("label_names"), now.get("label_names")
    if old_names is not None and new_names is not None and old_names != new_names:
        refused.append(f"label_names: {_few(old_names)} in the checkpoint's run, {_few(new_names)} now")
    old_args, new_args = before.get("training_args") or {}, now.get("training_args") or {}
    changed = {
        key: (old_args[key], new_args.get(key))
        for key in CHANGE_NEEDS_CONSENT
        if key in old_args and not _same(old_args[key], new_args.get(key))
    }
    return refused, changed


def refuse_or_accept_changes(checkpoint: str, changed: dict[str, tuple[Any, Any]], accept: bool) -> dict[str, Any]:
    """Settings changed on a resume (``{key: (old, new)}``): refused with one line naming each and
    ``--resume_with_changed_settings``, unless ``accept`` (then logged); returns ``{key: new}``."""
    if changed and not accept:
        raise ValueError(
            f"--resume_from_checkpoint {checkpoint} belongs to a run with other settings: "
            f"{'; '.join(_phrase(k, o, n) for k, (o, n) in changed.items())} (the checkpoint's optimizer, schedule, "
            f"weights and data order were made with the old values: resume with the same settings, pass "
            f"{RESUME_FLAG} to apply the new ones from the checkpoint's step on, or train a new run in another "
            "--output_dir)"
        )
    if changed:
        logger.warning(
            "%s: from the checkpoint's step on, %s",
            RESUME_FLAG,
            "; ".join(f"{k} {o!r} -> {n!r}" for k, (o, n) in changed.items()),
        )
    return {key: new for key, (_, new) in changed.items()}


def check_resume(checkpoint: str, record: dict[str, Any], accept_changes: bool = False) -> dict[str, Any]:
    """Compare this run's ``record`` (:func:`run_record`) with that of the run that wrote ``checkpoint`` (the
    ``mixpro_run.json`` beside it); returns the accepted changes ``{key: new value}``.

    A different data set, model or class names is refused with one line naming every difference. The training
    settings are compared by :meth:`MixProTrainer.train` with the checkpoint's own :data:`SETTINGS_FILE`
    (:func:`check_checkpoint_settings`); for a checkpoint without one (written before it existed) they are
    compared here with the run record, refused unless ``accept_changes``."""
    path = Path(checkpoint).expanduser().resolve().parent / RUN_FILE
    before = read_run_record(path)
    if before is None:
        logger.warning("no readable %s beside %s: its run's settings are not checked", path, checkpoint)
        return {}
    refused, changed = resume_differences(before, record)
    if refused:
        raise ValueError(
            f"--resume_from_checkpoint {checkpoint} belongs to a run with other data or another model: "
            f"{'; '.join(refused + [_phrase(k, o, n) for k, (o, n) in changed.items()])} (resume with the same "
            "data and model, or train a new run in another --output_dir)"
        )
    if (Path(checkpoint) / SETTINGS_FILE).is_file():
        return {}  # the Trainer compares them with the checkpoint's own settings
    return refuse_or_accept_changes(checkpoint, changed, accept_changes)


def checkpoint_settings(args: TrainingArguments, optimizer: Any = None, scheduler: Any = None) -> dict[str, Any]:
    """The :data:`CHANGE_NEEDS_CONSENT` settings of ``args`` as JSON values, the learning rate read from the
    ``optimizer`` / ``scheduler`` when given (what runs)."""
    values = json.loads(json.dumps(args.to_dict(), default=str))
    settings = {key: values[key] for key in CHANGE_NEEDS_CONSENT if key in values}
    learning_rate = _base_learning_rate(optimizer, scheduler)
    if learning_rate is not None:
        settings["learning_rate"] = learning_rate
    return settings


def save_checkpoint_settings(folder: str | Path, args: TrainingArguments, optimizer: Any, scheduler: Any) -> None:
    """Write :func:`checkpoint_settings` into a checkpoint folder (:data:`SETTINGS_FILE`)."""
    text = json.dumps(checkpoint_settings(args, optimizer, scheduler), indent=2) + "\n"
    (Path(folder) / SETTINGS_FILE).write_text(text)


def check_checkpoint_settings(checkpoint: str | Path, args: TrainingArguments) -> dict[str, Any]:
    """Compare ``args`` with the settings the checkpoint was made with (its :data:`SETTINGS_FILE`; none: nothing
    to compare); a change is refused with one line unless ``args.resume_with_changed_settings``. Returns the
    accepted changes ``{key: new value}``, for :func:`apply_changes` once the optimizer is restored."""
    path = Path(checkpoint) / SETTINGS_FILE
    try:
        before = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    _, changed = resume_differences({"training_args": before}, {"training_args": checkpoint_settings(args)})
    return refuse_or_accept_changes(str(checkpoint), changed, bool(getattr(args, "resume_with_changed_settings", 0)))


def apply_changes(optimizer: Any, scheduler: Any, changes: dict[str, Any]) -> None:
    """Put accepted changes that a restored optimizer would otherwise undo into it: the learning rate
    (:func:`apply_learning_rate`) and the weight decay (:func:`apply_weight_decay`). The others apply by
    themselves: the schedule's shape and warm-up, the batch and every MixPro setting come from the arguments."""
    if optimizer is None:
        return
    if "learning_rate" in changes:
        apply_learning_rate(optimizer, scheduler, float(changes["learning_rate"]))
    if "weight_decay" in changes:
        apply_weight_decay(optimizer, float(changes["weight_decay"]))


def check_resume_matches(checkpoint: str, record: dict[str, Any]) -> None:
    """:func:`check_resume` without accepting changes (the first round's name)."""
    check_resume(checkpoint, record, accept_changes=False)


def _base_learning_rate(optimizer: Any, scheduler: Any) -> float | None:
    """The learning rate the optimizer's first group runs at before the schedule's factor (the schedule's base)."""
    scheduler = getattr(scheduler, "scheduler", scheduler)  # Accelerate's AcceleratedScheduler wraps it
    if scheduler is not None and getattr(scheduler, "base_lrs", None):
        return float(scheduler.base_lrs[0])
    if optimizer is not None and optimizer.param_groups:
        group = optimizer.param_groups[0]
        return float(group.get("initial_lr", group["lr"]))
    return None


def apply_learning_rate(optimizer: Any, scheduler: Any, learning_rate: float) -> None:
    """Put ``learning_rate`` into a restored optimizer and schedule: every group's base rate, ``initial_lr`` and
    current rate are scaled by the same factor, so the schedule's shape (warm-up, decay) continues at the new rate."""
    scheduler = getattr(scheduler, "scheduler", scheduler)  # Accelerate's AcceleratedScheduler wraps it
    old = _base_learning_rate(optimizer, scheduler)
    if not old:
        return

    def scaled(rate: float) -> float:  # the first group's base becomes exactly ``learning_rate``
        return learning_rate * (rate / old)

    if scheduler is not None and getattr(scheduler, "base_lrs", None):
        scheduler.base_lrs = [scaled(rate) for rate in scheduler.base_lrs]
        if getattr(scheduler, "_last_lr", None):
            scheduler._last_lr = [scaled(rate) for rate in scheduler._last_lr]
    for group in optimizer.param_groups:
        group["lr"] = scaled(group["lr"])
        if "initial_lr" in group:
            group["initial_lr"] = scaled(group["initial_lr"])


def apply_weight_decay(optimizer: Any, weight_decay: float) -> None:
    """Set ``weight_decay`` on every group of a restored optimizer that decays (groups without decay keep 0)."""
    for group in optimizer.param_groups:
        if group.get("weight_decay", 0.0):
            group["weight_decay"] = weight_decay


class RunRecorder(TrainerCallback):
    """Writes ``mixpro_run.json`` into ``output_dir`` when training begins (main process), from what runs.

    ``settings`` is :func:`run_record` of the arguments; ``counts`` the examples of each split
    (``{"train": n, ...}``); ``changes`` the settings a resume changed with consent (:func:`check_resume`), which
    are applied here where the Trainer restored the old value (the learning rate and weight decay of the optimizer)
    and recorded as a new segment. ``previous`` is the checkpoint's run record (its segments continue)."""

    def __init__(
        self,
        output_dir: str | Path,
        settings: dict[str, Any],
        counts: dict[str, int | None],
        previous: dict[str, Any] | None = None,
        changes: dict[str, Any] | None = None,
    ) -> None:
        self.output_dir = Path(output_dir)
        self.settings = settings
        self.counts = counts
        self.previous = previous
        self.changes = changes or {}
        self.record: dict[str, Any] | None = None

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self.write(args, state.global_step, kwargs.get("optimizer"), kwargs.get("lr_scheduler"))

    def write(self, args: TrainingArguments, global_step: int, optimizer: Any, scheduler: Any) -> None:
        """Apply the accepted changes to the (restored) ``optimizer`` and ``scheduler``, then write the record of
        the run from step ``global_step`` on (a training loop without a Trainer calls this before its first step)."""
        apply_changes(optimizer, scheduler, self.changes)  # (idempotent: MixProTrainer applied them already)
        learning_rate = _base_learning_rate(optimizer, scheduler)
        training = self.settings.get("training_args") or {}
        applied = {key: training.get(key) for key in CHANGE_NEEDS_CONSENT if key in training}
        if learning_rate is not None:
            applied["learning_rate"] = learning_rate
        applied["world_size"] = args.world_size
        applied["total_train_batch_size"] = (
            args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
        )
        segment = {"from_step": global_step, "applied": applied}
        segments = list((self.previous or {}).get("segments") or [])
        if global_step > 0 and segments and _same_settings(segments[-1].get("applied") or {}, applied):
            segment = segments.pop()  # a resume that changed nothing continues the last segment
        segments.append(segment)
        record = json.loads(json.dumps(self.settings, default=str))
        record["training_args"]["learning_rate"] = applied.get("learning_rate", training.get("learning_rate"))
        record["examples"] = dict(self.counts)
        record["segments"] = segments
        self.record = record
        if args.should_save:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.output_dir / RUN_FILE, json.dumps(record, indent=2) + "\n")


def save_run_record(
    output_dir: Path,
    model_args: Any,
    data_args: Any,
    training_args: TrainingArguments,
    label_names: list[str] | None = None,
) -> None:
    """``mixpro_run.json`` from the arguments alone (no optimizer: for a caller outside a Trainer run)."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    record = run_record(model_args, data_args, training_args, label_names)
    atomic_write_text(output_dir / RUN_FILE, json.dumps(record, indent=2) + "\n")
