"""The preflight: every check a run can make before its first step, shared by every entry point.

``mixpro-train`` and the no-Trainer example go through :func:`mixpro_hf.pipeline.prepare`, which calls these in
order, before anything is written into the output folder; :class:`~mixpro_hf.trainer.MixProTrainer` runs the
model checks again when ``train()`` starts. Each failure is a one-line ``ValueError`` (exit 2 from the scripts):

* the Hub target (:func:`check_hub_target`) and the output folder (:func:`mixpro_hf.output_guard.check_output_dir`);
* the stages and their data (:func:`check_evaluation_data`): a run that trains nothing evaluates the user's
  validation / test data, never the embedded digits;
* the data and its labels (:func:`mixpro_hf.data.load_splits`: columns, image column type, at least two classes,
  no evaluation class unseen in training, every image decodable);
* the model: weights that torch refuses to unpickle (:func:`check_pickles`, :func:`load_refusal`), remote code
  (:func:`drop_foreign_auto_map`), and the mixing geometry of a run that trains
  (:func:`mixpro_hf.step.check_model_for_mixing`);
* the checkpoint of a resumed run: its files (:func:`check_pickles`) and its run's settings
  (:func:`mixpro_hf.run_record.check_resume`).
"""

from __future__ import annotations

import fnmatch
import logging
import pickle
from pathlib import Path
from typing import Any

from transformers import PreTrainedModel
from transformers.trainer_utils import HubStrategy

from .hub import check_push_target

logger = logging.getLogger(__name__)

#: Files torch unpickles (model weights, optimizer / scheduler / RNG states).
PICKLE_SUFFIXES = (".bin", ".pt", ".pth")
#: Files of a checkpoint folder the Trainer loads with ``torch.load(weights_only=True)`` on a resume
#: (``training_args.bin`` is never loaded).
RESUME_PICKLES = ("pytorch_model*.bin", "optimizer*.pt", "scheduler*.pt", "scaler.pt", "rng_state*.pth", "mixpro_*.pt")
#: What a run that trains nothing can evaluate, as flags.
EVALUATION_DATA_FLAGS = "--validation_dir, --test_dir, --validation_file, --test_file or --dataset_name"


def check_hub_target(training_args: Any) -> None:
    """With ``--push_to_hub``: refuse a ``--hub_strategy`` other than ``end`` and check the repository id, offline
    mode and the token (:func:`mixpro_hf.hub.check_push_target`), so a push cannot fail for these after training."""
    if not training_args.push_to_hub:
        return
    strategy = HubStrategy(training_args.hub_strategy)
    if strategy != HubStrategy.END:
        raise ValueError(
            f"--hub_strategy {strategy.value} is not supported: mixpro-train pushes once, at the end of training, "
            "with the model card (--hub_strategy end)"
        )
    repo_id = training_args.hub_model_id or Path(training_args.output_dir).expanduser().resolve().name
    check_push_target(repo_id, training_args.hub_token)


def check_evaluation_data(data_args: Any, training_args: Any) -> None:
    """A run that trains nothing (``--do_train False``) evaluates the data the user gave: a validation or test
    split (an image folder, a data file or a dataset's split); without one it is refused, instead of evaluating
    the embedded digits or a share held out of training data."""
    if training_args.do_train:
        return
    given = (
        data_args.validation_dir, data_args.test_dir, data_args.validation_file, data_args.test_file,
        data_args.dataset_name,
    )  # fmt: skip
    if not any(given):
        raise ValueError(
            f"--do_train False evaluates your data, but no evaluation data was given: pass {EVALUATION_DATA_FLAGS} "
            "(the embedded digits are only a training default)"
        )


def first_line(err: BaseException) -> str:
    """The first line of ``err``'s message (its type's name when the message is empty), for one-line errors."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def pickle_refusal(path: str | Path, err: BaseException) -> ValueError:
    """The one-line error for a file torch refused to unpickle with ``weights_only=True``."""
    return ValueError(
        f"{path} is a pickle file that torch refuses to load safely (weights_only=True: {first_line(err)}); "
        "it may run code when loaded: use weights saved as safetensors (save_pretrained writes model.safetensors) "
        "and remove the pickle file"
    )


def load_refusal(source: str, err: BaseException) -> ValueError | None:
    """The one-line error for a model that could not be loaded because a weights file is an unsafe pickle; None
    for any other error."""
    if isinstance(err, pickle.UnpicklingError) or "weights_only" in str(err).split("\n", 1)[0]:
        folder = Path(source)
        files = sorted(p.name for p in folder.glob("*") if p.suffix in PICKLE_SUFFIXES) if folder.is_dir() else []
        where = f"{source}/{files[0]}" if files else f"a weights file of {source!r}"
        return pickle_refusal(where, err)
    return None


def check_pickles(folder: str | Path) -> None:
    """Open every pickle file of a checkpoint folder the way the Trainer will (``torch.load(weights_only=True)``,
    memory-mapped: nothing is read into memory); one that torch refuses is a one-line ``ValueError``."""
    import torch
    from transformers.trainer_pt_utils import safe_globals  # the NumPy types of rng_state.pth, as the Trainer

    for path in sorted(Path(folder).glob("*")):
        if not path.is_file() or not any(fnmatch.fnmatch(path.name, pattern) for pattern in RESUME_PICKLES):
            continue
        try:
            with safe_globals():
                try:
                    torch.load(path, map_location="cpu", weights_only=True, mmap=True)
                except RuntimeError as err:  # an old (not zip) torch file cannot be memory-mapped
                    if "mmap" not in str(err):
                        raise
                    torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            raise pickle_refusal(path, err) from err


def drop_foreign_auto_map(model: PreTrainedModel) -> None:
    """A config's ``auto_map`` points ``AutoModel...`` at code files of the repository it came from. When the model
    runs on a class of transformers itself (the code was not loaded), saving the entry would point at files the
    output folder does not have: it is dropped, with a warning. Remote code that was loaded (``trust_remote_code``)
    is saved with the model by ``save_pretrained``."""
    config = model.config
    auto_map = getattr(config, "auto_map", None)
    if not auto_map or not type(model).__module__.startswith("transformers."):
        return
    del config.auto_map
    logger.warning(
        "the model's config names remote code (auto_map %s) that this run does not use (%s is transformers' own "
        "class): the entry is dropped, so the saved model loads with transformers alone",
        sorted(auto_map),
        type(model).__name__,
    )
