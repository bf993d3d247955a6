"""The README's claim "one import and two renames turn 🤗's run_image_classification.py into MixPro" stays true:
the diff shown in the README is applied to the lines of 🤗's script that it touches (copied below as 🤗 wrote them,
with the script's own collate_fn), and the result trains with MixPro."""

from __future__ import annotations

import re
from pathlib import Path

import torch
from datasets import Dataset

README = Path(__file__).resolve().parents[1] / "README.md"

# The skeleton of 🤗's examples/pytorch/image-classification/run_image_classification.py (transformers 5): its
# imports, argument parsing, collate_fn and Trainer call as written there; data and model made tiny and local.
HF_SCRIPT = """
from dataclasses import dataclass, field

import torch
from transformers import (
    HfArgumentParser,
    Trainer,
    TrainingArguments,
)


@dataclass
class DataTrainingArguments:
    dataset_name: str = field(default="toy")


@dataclass
class ModelArguments:
    model_name_or_path: str = field(default="tiny")


def collate_fn(examples):
    pixel_values = torch.stack([example["pixel_values"] for example in examples])
    labels = torch.tensor([example["label"] for example in examples])
    return {"pixel_values": pixel_values, "labels": labels}


def main(argv, model, dataset):
    parser = HfArgumentParser((ModelArguments, DataTrainingArguments, TrainingArguments))
    model_args, data_args, training_args = parser.parse_args_into_dataclasses(argv)
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=dataset,
        data_collator=collate_fn,
    )
    trainer.train()
    return trainer
"""


def readme_diff() -> list[str]:
    text = README.read_text()
    section = text[text.index("### With the 🤗 Trainer") :]
    block = re.search(r"```diff\n(.*?)```", section, flags=re.S)
    assert block, "the README shows the change as a diff"
    return block.group(1).splitlines()


def apply(diff: list[str], script: str) -> str:
    """Apply the README's hunks: each '-' line must be in the script (exactly once) and becomes the '+' line that
    follows it; '+' lines without a '-' are inserted after the preceding context line."""
    lines = script.splitlines()
    context: str | None = None
    pending: str | None = None
    for entry in diff:
        marker, body = entry[:1], entry[1:]
        if marker == "-":
            assert lines.count(body) == 1, f"the README removes {body!r}, which 🤗's script has once"
            pending = body
        elif marker == "+":
            if pending is not None:
                lines[lines.index(pending)] = body
                pending = None
            else:
                anchor = lines.index(context) if context in lines else None
                assert anchor is not None, f"no context line for {body!r}"
                lines.insert(anchor + 1, body)
                context = body
        elif body.strip() and body.strip() != "...":
            context = body
    return "\n".join(lines)


def test_readme_diff_turns_hf_script_into_mixpro(tmp_path, tiny_vit) -> None:
    diff = readme_diff()
    changed = [line for line in diff if line[:1] in "+-"]
    assert len([line for line in changed if line.startswith("-")]) == 2, "two renames"
    assert len([line for line in changed if line.startswith("+")]) == 3, "two renamed lines and one import"
    namespace: dict = {}
    exec(compile(apply(diff, HF_SCRIPT), "run_image_classification.py", "exec"), namespace)  # noqa: S102
    g = torch.Generator().manual_seed(0)
    dataset = Dataset.from_dict(
        {"pixel_values": torch.randn(16, 3, 16, 16, generator=g).numpy(), "label": [i % 4 for i in range(16)]}
    ).with_format("torch")
    argv = ["--output_dir", str(tmp_path), "--remove_unused_columns", "False", "--max_steps", "2"]
    argv += ["--per_device_train_batch_size", "8", "--report_to", "none", "--use_cpu", "True", "--logging_steps", "1"]
    argv += ["--mix_method", "mixpro", "--maskmix_prob", "1", "--mask_scale", "2", "--save_strategy", "no"]
    trainer = namespace["main"](argv, tiny_vit(), dataset)
    assert type(trainer).__name__ == "MixProTrainer"
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logs) == 2 and all("mixpro/lam_attn" in entry for entry in logs), "MaskMix + PAL ran"
