"""mixpro-hf: MixPro (MaskMix + Progressive Attention Labeling, ICLR 2023) for 🤗 Vision Transformers."""

from . import auto_classes  # noqa: F401  (this package's models in 🤗's Auto classes: CA-Swin)
from .collator import MixProCollator, mix_to_batch, pop_mix
from .labels import (
    attention_lambda,
    mixed_target,
    pal_lambda,
    progressive_factor,
    smooth_multi_hot,
    smooth_one_hot,
    transmix_lambda,
)
from .loss import MixedLoss, learnable_alpha_parameter, mean_mix_stats, mixed_loss
from .mixing import MixOutput, cutmix, maskmix, maskmix_mask, mixup, unmixed
from .recipe import (
    MIX_METHODS,
    MixProConfig,
    batch_generator,
    label_mode,
    mix_batch,
    mixing_warnings,
    resolved_loss,
)

__version__ = "0.1.0"

# The Auto classes know this package's models as soon as it is imported: the backbones (AutoBackbone for ViT, DeiT,
# PVT v1 and CA-Swin checkpoints), the two segmentation decoders (AutoModelForSemanticSegmentation) and CA-Swin
# (auto_classes, imported above).
from . import transfer as _transfer  # noqa: E402, F401  (registration runs on import)

# The other names (the trainer, the pipeline, timm, datasets) are imported on first use.
_LAZY = {
    "capture_cls_attention": "attention",
    "cls_attention_problem": "attention",
    "cls_token_layout": "attention",
    "supports_cls_attention": "attention",
    "MixProTrainer": "trainer",
    "TrainingDiverged": "divergence",
    "nonfinite_parameter_names": "divergence",
    "MixProTrainingArguments": "training_args",
    "forward_mixed": "step",
    "check_model_for_mixing": "step",
    "classification_metrics": "metrics",
    "compute_metrics": "metrics",
    "evaluation_metrics": "metrics",
    "multi_label_metrics": "multi_label_metrics",
    "mean_average_precision": "multi_label_metrics",
    "robustness_metrics": "metrics",
    "ood_metrics": "metrics",
    "evaluate_module_path": "evaluate_modules",
    "load_evaluate_module": "evaluate_modules",
    "drop_patches": "robustness",
    "occlusion_correct": "robustness",
    "class_subset": "class_subsets",
    "ModelArguments": "modeling",
    "build_model": "modeling",
    "decay_parameter_names": "modeling",
    "model_geometry": "modeling",
    "token_geometry": "modeling",
    "TokenGeometry": "modeling",
    "CaSwinConfig": "ca_swin",
    "CaSwinForImageClassification": "ca_swin",
    "optimizer_param_groups": "modeling",
    "unwrap_model": "modeling",
    "load_backbone": "transfer",
    "segmentation_model": "transfer",
    "copy_backbone_weights": "transfer",
    "ViTBackbone": "backbones",
    "ViTBackboneConfig": "backbones",
    "DeiTBackbone": "backbones",
    "DeiTBackboneConfig": "backbones",
    "PvtBackbone": "backbones",
    "PvtBackboneConfig": "backbones",
    "CaSwinBackbone": "backbones",
    "LinearSegmentationConfig": "segmentation_models",
    "LinearForSemanticSegmentation": "segmentation_models",
    "SegmenterConfig": "segmentation_models",
    "SegmenterForSemanticSegmentation": "segmentation_models",
    "UperNetWithBackboneConfig": "segmentation_models",
    "UperNetWithBackboneForSemanticSegmentation": "segmentation_models",
    "SegmentationTrainer": "segmentation_trainer",
    "evaluate_segmentation": "segmentation_metrics",
    "iou_metrics": "segmentation_metrics",
    "DataArguments": "data",
    "parse_args": "arguments",
    "Prepared": "pipeline",
    "prepare": "pipeline",
    "resolve_checkpoint": "pipeline",
    "save_run_record": "pipeline",
    "run_recorder": "pipeline",
    "write_figures": "pipeline",
    "OutputDirLock": "output_guard",
    "RunRecorder": "run_record",
    "generate_model_card": "model_card",
    "write_model_card": "model_card",
    "push_output_dir": "model_card",
}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'mixpro_hf' has no attribute {name!r}")


__all__ = [
    *_LAZY,
    "MIX_METHODS",
    "MixOutput",
    "MixProCollator",
    "MixProConfig",
    "MixedLoss",
    "attention_lambda",
    "batch_generator",
    "cutmix",
    "label_mode",
    "learnable_alpha_parameter",
    "maskmix",
    "maskmix_mask",
    "mean_mix_stats",
    "mix_batch",
    "mix_to_batch",
    "mixing_warnings",
    "mixed_loss",
    "mixed_target",
    "mixup",
    "pal_lambda",
    "pop_mix",
    "progressive_factor",
    "resolved_loss",
    "smooth_multi_hot",
    "smooth_one_hot",
    "transmix_lambda",
    "unmixed",
]
