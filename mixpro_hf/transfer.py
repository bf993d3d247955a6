"""From a classification checkpoint to dense prediction (MixPro §4.2): :func:`load_backbone` and
:func:`segmentation_model`, and the Auto-class registration of the backbones and decoders (run on import).

Papers:
    - MixPro: Zhao et al., ICLR 2023, §4.2.1 / Table 3 (DeiT-S with a Linear or a Segmenter decoder) and §4.2.2 /
      Table 4 (PVT-S in Mask R-CNN; 🤗 has no Mask R-CNN: its DETR-family and Mask2Former models take these
      backbones through ``backbone_config``).
    - UperNet: Xiao et al., ECCV 2018 (🤗 ``UperNetForSemanticSegmentation``, the common 🤗 route).

Loading is strict: every tensor of the backbone comes from the checkpoint, by name, except the backbone's own new
layers (BEiT's pyramid ``fpn.*``, Swin's per-stage norms ``hidden_states_norms.*``), and what the checkpoint has
beyond the encoder (the classifier, CA-Swin's class-attention block and class token, the blocks after the last
chosen one of a timm model) is named in one logged line and in the loading info.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
from typing import Any

import torch
from torch import nn
from transformers import (
    AutoBackbone,
    AutoConfig,
    AutoModelForImageClassification,
    AutoModelForSemanticSegmentation,
    DeiTConfig,
    PreTrainedModel,
    PvtConfig,
    SwinBackbone,
    TimmBackbone,
    TimmBackboneConfig,
    UperNetConfig,
    UperNetForSemanticSegmentation,
    ViTConfig,
)

from . import modeling  # noqa: F401  (registers CA-Swin with AutoConfig / AutoModelForImageClassification)
from .backbones import (
    CaSwinBackbone,
    DeiTBackbone,
    DeiTBackboneConfig,
    PvtBackbone,
    PvtBackboneConfig,
    ViTBackbone,
    ViTBackboneConfig,
    backbone_config_from,
)
from .ca_swin import CaSwinConfig
from .segmentation_models import (
    LinearForSemanticSegmentation,
    LinearSegmentationConfig,
    SegmenterConfig,
    SegmenterForSemanticSegmentation,
    UperNetWithBackboneConfig,
    UperNetWithBackboneForSemanticSegmentation,
)

logger = logging.getLogger(__name__)

__all__ = [
    "BACKBONE_CLASSES",
    "BACKBONE_FAMILIES",
    "DECODERS",
    "TRANSFER_MIN_TRANSFORMERS",
    "check_transfer_support",
    "copy_backbone_weights",
    "load_backbone",
    "register_auto_classes",
    "segmentation_model",
]

DECODERS = ("linear", "segmenter", "upernet")
# The backbone class of each 🤗 model type load_backbone takes (timm models: TimmBackbone).
BACKBONE_CLASSES = {"vit": ViTBackbone, "deit": DeiTBackbone, "pvt": PvtBackbone, "ca_swin": SwinBackbone}
BACKBONE_FAMILIES = (*BACKBONE_CLASSES, "timm_wrapper")
# Backbone layers that are new by design (not in any classification checkpoint).
NEW_LAYER_PREFIXES = ("fpn.", "hidden_states_norms.")
# Keyword arguments of load_backbone that configure the backbone (the others go to from_pretrained).
BACKBONE_KWARGS = ("out_features", "add_fpn", "apply_layernorm")


def register_auto_classes() -> None:
    """The Auto classes for this package's models: ``AutoConfig`` for the backbone configs; ``AutoBackbone`` for
    🤗's ``ViTConfig``, ``DeiTConfig``, ``PvtConfig`` and CA-Swin's config (``segmentation_models`` registers the
    backbone configs' own types, for remote code too); ``AutoConfig`` / ``AutoModelForSemanticSegmentation`` for
    the three segmentation models, with ``register_for_auto_class`` so that ``save_pretrained`` writes their code
    and ``auto_map``."""
    for config_class in (ViTBackboneConfig, DeiTBackboneConfig, PvtBackboneConfig):
        AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
    # 🤗's own configs of the classifiers: the backbone class converts them (the name check of `register` is for
    # a model's own config class, so the mapping is extended directly).
    for config_class, model_class in ((ViTConfig, ViTBackbone), (DeiTConfig, DeiTBackbone), (PvtConfig, PvtBackbone)):
        AutoBackbone._model_mapping.register(config_class, model_class, exist_ok=True)
    AutoBackbone.register(CaSwinConfig, CaSwinBackbone, exist_ok=True)
    for config_class, model_class in (
        (LinearSegmentationConfig, LinearForSemanticSegmentation),
        (SegmenterConfig, SegmenterForSemanticSegmentation),
        (UperNetWithBackboneConfig, UperNetWithBackboneForSemanticSegmentation),
    ):
        AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
        AutoModelForSemanticSegmentation.register(config_class, model_class, exist_ok=True)
        config_class.register_for_auto_class()
        model_class.register_for_auto_class("AutoModelForSemanticSegmentation")


register_auto_classes()

#: The oldest transformers the transfer code is tested with (CI's newest set). The package's own lower bound (5.13, CI's
#: lower-bound job) is older: there ``AutoBackbone`` ignores the registration for 🤗's ViT config and a saved decoder's
#: config does not reload, so this module refuses it rather than fail later or differently.
TRANSFER_MIN_TRANSFORMERS = "5.25.0"


def check_transfer_support() -> None:
    """One-line ``ValueError`` when the installed transformers is older than :data:`TRANSFER_MIN_TRANSFORMERS`."""
    import transformers
    from packaging.version import Version

    if Version(transformers.__version__) < Version(TRANSFER_MIN_TRANSFORMERS):
        raise ValueError(
            f"backbones and segmentation models from checkpoints are tested with transformers >= "
            f"{TRANSFER_MIN_TRANSFORMERS}, and this environment has {transformers.__version__}: "
            f"pip install -U 'transformers>={TRANSFER_MIN_TRANSFORMERS}'"
        )


def _classifier(checkpoint: Any, load_kwargs: dict[str, Any]) -> PreTrainedModel:
    if isinstance(checkpoint, PreTrainedModel):
        if load_kwargs:
            raise ValueError(f"loading options {sorted(load_kwargs)} given with an already-loaded model")
        return checkpoint
    if not isinstance(checkpoint, (str, bytes)) and not hasattr(checkpoint, "__fspath__"):
        raise ValueError(f"checkpoint must be a folder, a Hub id or a PreTrainedModel, got {type(checkpoint).__name__}")
    try:
        return AutoModelForImageClassification.from_pretrained(checkpoint, **load_kwargs)
    except (OSError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"could not load the classification checkpoint {checkpoint!r}: {first}") from err


def _timm_backbone(classifier: PreTrainedModel, out_indices: list[int] | None) -> tuple[nn.Module, dict[str, str]]:
    """A ``TimmBackbone`` of the wrapper's architecture and ``model_args`` (``dynamic_img_size`` where the
    architecture has it), and the map from its tensor names to the wrapper's."""
    config = classifier.config
    timm_model = classifier.timm_model
    model_args = dict(config.model_args or {})
    if "dynamic_img_size" in inspect.signature(type(timm_model).__init__).parameters:
        model_args.setdefault("dynamic_img_size", True)
    depth = len(getattr(timm_model, "blocks", []) or []) or None
    indices = out_indices if out_indices is not None else ([depth - 1] if depth else [-1])
    backbone_config = TimmBackboneConfig(backbone=config.architecture, out_indices=list(indices))
    try:
        backbone = TimmBackbone(backbone_config, **model_args)
    except (RuntimeError, AssertionError, TypeError) as err:
        raise ValueError(
            f"timm {config.architecture!r} gives no feature maps (features_only): {str(err).splitlines()[0]}"
        ) from err
    names = {key: "timm_model." + key.removeprefix("_backbone.model.") for key in backbone.state_dict()}
    return backbone, names


def _copy_weights(
    backbone: nn.Module, source: dict[str, torch.Tensor], names: dict[str, str], origin: str
) -> dict[str, list[str]]:
    """Copy each backbone tensor from ``source`` (``names``: backbone name -> checkpoint name); returns 🤗's
    loading-info dict. A backbone tensor that is neither in the checkpoint nor a new layer is an error."""
    target = backbone.state_dict()
    new, absent, mismatched = [], [], []
    with torch.no_grad():
        for key, tensor in target.items():
            name = names.get(key, key)
            if name not in source:
                (new if key.startswith(NEW_LAYER_PREFIXES) else absent).append(key)
            elif source[name].shape != tensor.shape:
                mismatched.append(f"{key} {tuple(source[name].shape)} -> {tuple(tensor.shape)}")
            else:
                tensor.copy_(source[name])
    if absent or mismatched:
        raise ValueError(
            f"{origin}: the checkpoint does not hold the backbone's "
            + ("tensors " + ", ".join(absent[:5]) if absent else "shapes " + ", ".join(mismatched[:5]))
            + (" ..." if len(absent or mismatched) > 5 else "")
        )
    taken = {names.get(key, key) for key in target}
    return {
        "missing_keys": new,
        "unexpected_keys": sorted(key for key in source if key not in taken),
        "mismatched_keys": [],
        "error_msgs": [],
    }


def _modules(keys: list[str]) -> list[str]:
    """Tensor names grouped by module, for one readable line: ``classifier.*``, ``swin.encoder.layers.3.blocks.1.*``
    (up to the last block index), ``cls_token``."""
    groups: dict[str, int] = {}
    for key in keys:
        parts = key.split(".")
        numeric = [index for index, part in enumerate(parts) if part.isdigit()]
        tensor_name = parts[-1] in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
        end = numeric[-1] + 1 if numeric else len(parts) - 1 if tensor_name and len(parts) > 1 else len(parts)
        group = ".".join(parts[:end])
        groups[group] = groups.get(group, 0) + 1
    return [group if group in keys else f"{group}.*" for group in groups]


def _describe(keys: list[str], limit: int = 8) -> str:
    groups = _modules(keys)
    if not groups:
        return "none"
    return ", ".join(groups[:limit]) + (f" and {len(groups) - limit} more" if len(groups) > limit else "")


def load_backbone(
    checkpoint: str | PreTrainedModel,
    out_indices: list[int] | None = None,
    output_loading_info: bool = False,
    **kwargs: Any,
) -> nn.Module | tuple[nn.Module, dict[str, list[str]]]:
    """A 🤗 ``BackboneMixin`` model holding the encoder of a classification checkpoint.

    Args:
        checkpoint: a local folder or Hub id (anything ``from_pretrained`` takes; CA-Swin needs no remote code once
            ``mixpro_hf`` is imported) or an already-loaded classifier: 🤗 ViT, DeiT, PVT v1, CA-Swin, or a timm
            model through ``TimmWrapperForImageClassification`` (any architecture with ``features_only``).
        out_indices: stages out (``stem`` = 0 for ViT / DeiT, then block k = k; PVT / CA-Swin stage k = k, their
            stem 0 only for Swin). Default: the last block (ViT, DeiT, timm), every stage (PVT, CA-Swin).
        output_loading_info: also return 🤗's loading-info dict: ``missing_keys`` the new layers, ``unexpected_keys``
            the checkpoint tensors left out.
        kwargs: ``out_features``, ``add_fpn`` (ViT / DeiT: BEiT's simple pyramid over four stages),
            ``apply_layernorm`` (ViT / DeiT: the final LayerNorm on every map, default True); any other keyword
            goes to ``from_pretrained`` (``revision``, ``token``, ``cache_dir``, ``trust_remote_code``, ...).

    Raises:
        ValueError: unknown family, a checkpoint that cannot be loaded, stages out of range, a checkpoint that lacks
            one of the backbone's tensors.
    """
    check_transfer_support()
    backbone_kwargs = {key: kwargs.pop(key) for key in BACKBONE_KWARGS if key in kwargs}
    if out_indices is not None:
        backbone_kwargs["out_indices"] = list(out_indices)
    classifier = _classifier(checkpoint, kwargs)
    config = classifier.config
    model_type = getattr(config, "model_type", None)
    origin = str(checkpoint) if not isinstance(checkpoint, nn.Module) else None
    origin = origin or getattr(classifier, "name_or_path", "") or f"{type(classifier).__name__} ({model_type})"
    if model_type not in BACKBONE_FAMILIES:
        raise ValueError(
            f"load_backbone: model type {model_type!r} is not one of {', '.join(BACKBONE_FAMILIES)} (🤗 models "
            "with their own backbone class open with transformers.AutoBackbone.from_pretrained)"
        )
    names: dict[str, str] = {}
    if model_type == "timm_wrapper":
        extra = sorted(set(backbone_kwargs) - {"out_indices"})
        if extra:
            raise ValueError(f"load_backbone: {', '.join(extra)} are not options of a timm backbone")
        backbone, names = _timm_backbone(classifier, backbone_kwargs.get("out_indices"))
    else:
        if model_type == "pvt" and not {"out_indices", "out_features"} & set(backbone_kwargs):
            backbone_kwargs["out_indices"] = list(range(config.num_encoder_blocks))
        try:
            backbone_config = backbone_config_from(config, **backbone_kwargs)
        except (ValueError, TypeError) as err:
            raise ValueError(f"load_backbone {origin}: {str(err).splitlines()[0]}") from err
        backbone = BACKBONE_CLASSES[model_type](backbone_config)
    prefix = getattr(backbone, "base_model_prefix", "")
    if model_type != "timm_wrapper" and prefix and not hasattr(classifier, prefix):  # a base model (ViTModel, ...)
        names = {key: key.removeprefix(f"{prefix}.") for key in backbone.state_dict()}
    info = _copy_weights(backbone, classifier.state_dict(), names, str(origin))
    backbone.eval()
    logger.warning(
        "load_backbone %s: %s from %d checkpoint tensors; left out: %s; new layers: %s",
        origin,
        type(backbone).__name__,
        len(classifier.state_dict()) - len(info["unexpected_keys"]),
        _describe(info["unexpected_keys"]),
        _describe(info["missing_keys"]),
    )
    return (backbone, info) if output_loading_info else backbone


def copy_backbone_weights(model: nn.Module, backbone: nn.Module) -> str:
    """Load ``backbone``'s weights (e.g. from :func:`load_backbone`) into the one backbone of its class inside
    ``model`` (UperNet, Mask2Former, a DETR-family detector built from ``backbone_config``, whose own backbone
    starts random), strictly; returns the backbone's name in ``model``.

    Raises:
        ValueError: ``model`` holds no backbone of that class, or several.
    """
    found = [(name, module) for name, module in model.named_modules() if type(module) is type(backbone)]
    if len(found) != 1:
        raise ValueError(
            f"{type(model).__name__} holds {len(found)} modules of class {type(backbone).__name__}, not one: build it "
            "with backbone_config=backbone.config"
        )
    name, module = found[0]
    module.load_state_dict(backbone.state_dict(), strict=True)
    return name


def _pyramid_blocks(num_blocks: int, count: int = 4) -> list[int]:
    """The blocks a ViT/DeiT's simple pyramid reads: ``count`` evenly spread over the depth, the last block last
    (3, 6, 9, 12 of 12; BEiT), or the last block alone when there are fewer (ViTDet)."""
    if num_blocks < count:
        return [num_blocks]
    return [round(num_blocks * (k + 1) / count) for k in range(count)]


def _labels(id2label: dict[int, str] | list[str] | None, label2id: dict[str, int] | None) -> dict[str, Any]:
    if id2label is None:
        raise ValueError("segmentation_model needs id2label (class index -> name) for the new decoder")
    if isinstance(id2label, (list, tuple)):
        id2label = dict(enumerate(id2label))
    id2label = {int(k): str(v) for k, v in id2label.items()}
    if sorted(id2label) != list(range(len(id2label))) or len(id2label) < 2:
        raise ValueError(f"id2label must name classes 0..K-1 with K >= 2, got keys {sorted(id2label)[:10]}")
    label2id = label2id or {name: index for index, name in id2label.items()}
    return {"id2label": id2label, "label2id": label2id, "num_labels": len(id2label)}


def segmentation_model(
    checkpoint: str | PreTrainedModel,
    decoder: str = "linear",
    id2label: dict[int, str] | list[str] | None = None,
    label2id: dict[str, int] | None = None,
    output_loading_info: bool = False,
    **decoder_kwargs: Any,
) -> PreTrainedModel | tuple[PreTrainedModel, dict[str, list[str]]]:
    """A semantic-segmentation model whose encoder is a classification checkpoint's, tensor for tensor.

    Args:
        checkpoint: as :func:`load_backbone`.
        decoder: ``linear`` (:class:`LinearForSemanticSegmentation`: Segmenter's per-token linear layer),
            ``segmenter`` (:class:`SegmenterForSemanticSegmentation`: its Mask Transformer) or ``upernet`` (🤗
            ``UperNetForSemanticSegmentation`` over the backbone: for ViT/DeiT four evenly spaced blocks through
            BEiT's pyramid (the last block alone with fewer than four blocks), for PVT / CA-Swin their four
            stages; over ViT/DeiT/PVT the class is its unchanged
            subclass :class:`UperNetWithBackboneForSemanticSegmentation`, saved with the backbone's code).
            ``linear`` / ``segmenter`` decode the last block's (last stage's) tokens.
        id2label / label2id: the classes (``id2label`` a dict or a list of names).
        output_loading_info: also return ``{"missing_keys": the new decoder (and pyramid / norm) parameters,
            "unexpected_keys": the checkpoint tensors not taken}``.
        decoder_kwargs: fields of the decoder's config (``SegmenterConfig``'s ``decoder_layers``, ...;
            ``UperNetConfig``'s ``hidden_size``, ``use_auxiliary_head``, ...; ``loss_ignore_index``), and
            ``out_indices`` / ``load_kwargs`` (a dict for ``from_pretrained``).

    Every model: ``model(pixel_values, labels=None)`` -> ``SemanticSegmenterOutput``, logits at the input's size,
    loss cross-entropy ignoring ``config.loss_ignore_index`` (255).
    """
    check_transfer_support()
    if decoder not in DECODERS:
        raise ValueError(f"decoder {decoder!r} is not one of {', '.join(DECODERS)}")
    labels = _labels(id2label, label2id)
    load_kwargs = dict(decoder_kwargs.pop("load_kwargs", None) or {})
    out_indices = decoder_kwargs.pop("out_indices", None)
    config_class, model_class = {
        "linear": (LinearSegmentationConfig, LinearForSemanticSegmentation),
        "segmenter": (SegmenterConfig, SegmenterForSemanticSegmentation),
        "upernet": (UperNetConfig, UperNetForSemanticSegmentation),
    }[decoder]
    fields = {field.name for field in dataclasses.fields(config_class)} - {"backbone_config", "id2label", "label2id"}
    unknown = sorted(set(decoder_kwargs) - fields)
    if unknown:  # a config would keep a misspelt field as an unused attribute
        raise ValueError(
            f"segmentation_model: {', '.join(unknown)} {'is' if len(unknown) == 1 else 'are'} not a field of "
            f"{config_class.__name__} (the {decoder} decoder); its fields: {', '.join(sorted(fields))}"
        )
    classifier = _classifier(checkpoint, load_kwargs)
    model_type = classifier.config.model_type
    if decoder == "upernet" and model_type in ("vit", "deit", "pvt"):  # saved with the backbone's code
        config_class, model_class = UperNetWithBackboneConfig, UperNetWithBackboneForSemanticSegmentation
    if model_type == "timm_wrapper":
        raise ValueError(
            "segmentation_model: timm models (TimmWrapper) have no saveable backbone config with their model_args; "
            "use load_backbone(...) for their feature maps"
        )
    backbone_kwargs: dict[str, Any] = {}
    if decoder == "upernet":
        if model_type in ("vit", "deit"):
            depth = classifier.config.num_hidden_layers
            backbone_kwargs = {"out_indices": out_indices or _pyramid_blocks(depth), "add_fpn": True}
        elif out_indices is not None:
            backbone_kwargs = {"out_indices": out_indices}
    else:
        if out_indices is not None and len(out_indices) != 1:
            raise ValueError(f"the {decoder} decoder reads one feature map: out_indices {out_indices} names several")
        backbone_kwargs = {"out_indices": out_indices or [-1]}
    backbone, backbone_info = load_backbone(classifier, output_loading_info=True, **backbone_kwargs)
    try:
        config = config_class(backbone_config=backbone.config, **labels, **decoder_kwargs)
    except (TypeError, ValueError) as err:
        raise ValueError(f"segmentation_model ({decoder}): {str(err).splitlines()[0]}") from err
    model = model_class(config)
    copy_backbone_weights(model, backbone)
    new = [f"backbone.{key}" for key in backbone_info["missing_keys"]]
    new += [key for key in model.state_dict() if not key.startswith("backbone.")]
    info = {
        "missing_keys": new,
        "unexpected_keys": backbone_info["unexpected_keys"],
        "mismatched_keys": [],
        "error_msgs": [],
    }
    model.train()
    return (model, info) if output_loading_info else model
