"""``SegmentationTrainer``: fine-tuning a semantic-segmentation model with what
:class:`~mixpro_hf.trainer.MixProTrainer` guarantees, without mixing.

Kept from ``MixProTrainer``: atomic checkpoints and final model of finite weights, the divergence stop (a NaN/inf loss
stops the run, nothing non-finite is saved), resume through ``from_pretrained`` (every tensor restored), the settings
check on a resume, the output folder's lock, SIGTERM, the Hub push of an allow-list. Changed: batches are not mixed
(``mix_method`` must be ``none``), the loss is the model's own (cross-entropy ignoring 255), evaluation is a confusion
matrix over the evaluation set (:mod:`mixpro_hf.segmentation_metrics`: single scale, or several scales + flip), and
the card is the segmentation card (:mod:`mixpro_hf.segmentation_card`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from transformers import Trainer

from .modeling import unwrap_model
from .segmentation_data import collate_segmentation
from .segmentation_metrics import evaluate_segmentation, iou_metrics
from .trainer import MixProTrainer
from .training_args import MixProTrainingArguments

__all__ = ["SegmentationTrainer", "input_multiple"]


def input_multiple(model: nn.Module) -> int:
    """Pixels a side that the model's input should be a multiple of: its backbone's total stride (1 when it has no
    ``backbone_config``)."""
    config = getattr(unwrap_model(model), "config", None)
    backbone = getattr(config, "backbone_config", None)
    if backbone is None:
        return 1
    from .segmentation_models import _input_multiple

    return max(1, int(_input_multiple(backbone)))


class SegmentationTrainer(MixProTrainer):
    """A :class:`MixProTrainer` for ``…ForSemanticSegmentation`` models (``model(pixel_values, labels)`` ->
    ``loss``, ``logits`` at the input size).

    Args:
        label_names: the class names, by id (per-class IoU keys ``iou_<name>``).
        base_size: the shorter side of the single-scale evaluation view (scale 1.0).
        other arguments: as :class:`MixProTrainer`; ``args.mix_method`` must be ``"none"``.
    """

    def __init__(
        self,
        model: nn.Module | None = None,
        args: MixProTrainingArguments | None = None,
        *,
        label_names: Sequence[str],
        base_size: int,
        **kwargs: Any,
    ) -> None:
        if args is not None and args.mix_method != "none":
            raise ValueError(
                f"segmentation fine-tuning mixes nothing: mix_method must be 'none', got {args.mix_method!r}"
            )
        self.class_names = list(label_names)
        self.base_size = int(base_size)
        kwargs.setdefault("data_collator", collate_segmentation)
        super().__init__(model=model, args=args, **kwargs)

    def mixing_geometry(self, model: nn.Module, args: MixProTrainingArguments) -> tuple[int, int | None]:
        """No mixing grid: the model's input multiple, no fixed image size."""
        return input_multiple(model), None

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, Any]:
        """The model's own loss (cross-entropy over the pixels not labelled 255), as 🤗's ``Trainer``."""
        return Trainer.compute_loss(self, model, inputs, return_outputs, num_items_in_batch)

    def evaluate(
        self,
        eval_dataset: Any = None,
        ignore_keys: list[str] | None = None,
        metric_key_prefix: str = "eval",
        *,
        scales: Sequence[float] = (1.0,),
        flip: bool = False,
    ) -> dict[str, float]:
        """``<prefix>_mean_iou``, ``_mean_accuracy``, ``_overall_accuracy``, ``_iou_<class>`` of the model over
        ``eval_dataset`` (default: the trainer's), from one confusion matrix; logged and passed to the callbacks as
        ``Trainer.evaluate`` does (``metric_for_best_model`` can be ``mean_iou``). Every process evaluates the whole
        set (the same numbers)."""
        dataset = eval_dataset if eval_dataset is not None else self.eval_dataset
        if dataset is None:
            raise ValueError("evaluation needs an eval_dataset")
        self.check_divergence()
        start = time.time()
        confusion = evaluate_segmentation(
            self.model,
            dataset,
            len(self.class_names),
            base_size=self.base_size,
            scales=scales,
            flip=flip,
            size_divisor=self.patch_size,
            batch_size=self.args.per_device_eval_batch_size,
        )
        runtime = time.time() - start
        metrics = {
            f"{metric_key_prefix}_{key}": value for key, value in iou_metrics(confusion, self.class_names).items()
        }
        metrics[f"{metric_key_prefix}_runtime"] = round(runtime, 4)
        metrics[f"{metric_key_prefix}_samples_per_second"] = (
            round(len(dataset) / runtime, 3) if runtime > 0 else math.nan
        )
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics

    def create_model_card(self, *args: Any, **kwargs: Any) -> None:
        """The segmentation card (:func:`mixpro_hf.segmentation_card.write_segmentation_card`) in ``output_dir``
        (main process); a README.md that mixpro_hf did not write is kept, with a warning."""
        if not self.is_world_process_zero():
            return
        from .segmentation_card import write_segmentation_card
        from .trainer import logger

        try:
            write_segmentation_card(
                self.args.output_dir,
                repo_id=self.args.hub_model_id,
                log_history=self.state.log_history,
                training_args=self.args.to_dict(),
                model_name=kwargs.get("model_name"),
            )
        except (FileExistsError, FileNotFoundError) as err:
            logger.warning(f"model card not written: {err}")
