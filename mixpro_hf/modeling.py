"""The model side of a MixPro run: building a ViT-family classifier, reading its geometry, unwrapping it,
and the weight-decay rule every training loop shares.

Papers:
    - ViT: Dosovitskiy et al., "An Image is Worth 16x16 Words", ICLR 2021. https://arxiv.org/abs/2010.11929
    - DeiT: Touvron et al., "Training data-efficient image transformers & distillation through attention",
      ICML 2021 (model sizes, no weight decay on tokens and position embeddings). https://arxiv.org/abs/2012.12877
"""

from __future__ import annotations

import fnmatch
import logging
import math
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn
from transformers import (
    MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING,
    AutoConfig,
    AutoImageProcessor,
    AutoModelForImageClassification,
    PreTrainedModel,
    ViTImageProcessor,
)

from . import auto_classes  # noqa: F401  (CA-Swin in the Auto classes, also for `import mixpro_hf.modeling` alone)
from .config_overrides import apply_config_overrides, parse_config_overrides
from .drop_path import apply_drop_path
from .presets import MODEL_PRESETS, preset_config

logger = logging.getLogger(__name__)

ModelType = Literal["vit", "deit", "beit", "dinov2"]
ModelPresetName = Literal[tuple(MODEL_PRESETS)]  # type: ignore[valid-type]
# DeiT sizes of the paper (hidden, layers, heads); MLP ratio 4.
MODEL_SIZES = {"tiny": (192, 12, 3), "small": (384, 12, 6), "base": (768, 12, 12)}
# The reference code's DeiT geometry: 224x224 images, patch 14 (a 16x16 grid), so that 56-pixel MaskMix cells
# (mask_scale 4, for DeiT-T, -S and -B alike: the DeiT-B config file is named mask112 but sets 56) tile the grid with
# no cropped cell. LayerNorm eps 1e-6 as timm's ViT/DeiT (🤗's default is 1e-12).
PAPER_GEOMETRY = {"image_size": 224, "patch_size": 14, "layer_norm_eps": 1e-6}
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
RECIPE_DROP_PATH_RATE = 0.1
# 🤗 names of the parameters DeiT/timm never decay (their ``no_weight_decay``), besides every bias and norm (ndim <= 1).
NO_DECAY_NAMES = (
    "cls_token",
    "distillation_token",
    "register_tokens",
    "mask_token",
    "position_embeddings",
    "relative_position_bias_table",
)


@dataclass
class ModelArguments:
    """Which model to train: a pretrained checkpoint (fine-tuning) or a fresh one (from scratch), the training
    recipe, and how checkpoints are loaded (🤗 ``run_image_classification.py`` names)."""

    recipe: Literal["deit", "none"] | None = field(
        default=None,
        metadata={
            "help": "Training recipe for every flag not given: deit (paper Table 11 + reference code) or none "
            "(🤗's defaults). Unset: deit from scratch, none with --model_name_or_path."
        },
    )
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "Hub id or local checkpoint to fine-tune. Unset: train from scratch."}
    )
    model_type: ModelType = field(default="vit", metadata={"help": "Family when training from scratch."})
    model_size: Literal["tiny", "small", "base"] | None = field(
        default=None,
        metadata={
            "help": "Paper preset when training from scratch: DeiT-Ti/S/B widths with the reference code's geometry "
            "(224x224, patch 14: 56-pixel MaskMix cells at mask_scale 4). --config_overrides still win."
        },
    )
    model_preset: ModelPresetName | None = field(  # type: ignore[valid-type]
        default=None,
        metadata={
            "help": "A model of MixPro's Table 1 from scratch, with its family's recipe for every flag not given "
            "(README, 'Presets'): deit-t/s/b, pvt-t/s/m/l, cait-xxs36 (Table 1's CaiT-XXS), xcit-t24 (Table 1's "
            "XCiT-T), xcit-s12/m24/l24, ca-swin-t/s; also cait-xxs24 and xcit-t12. --config_overrides still win "
            "(timm presets: keys of timm.create_model, e.g. img_size=32)."
        },
    )
    config_overrides: str | None = field(
        default=None, metadata={"help": 'From scratch: config overrides, e.g. "image_size=32,patch_size=4".'}
    )
    drop_path_rate: float | None = field(
        default=None,
        metadata={
            "help": "Stochastic depth rate of the last block, rising linearly from 0 over the blocks (DeiT). Default: "
            f"{RECIPE_DROP_PATH_RATE} from scratch (paper Table 11; ViT/DeiT get it through hooks, no new weights), "
            "the checkpoint's own when fine-tuning."
        },
    )
    attn_implementation: str = field(
        default="sdpa", metadata={"help": "Attention kernel: sdpa, eager, flash_attention_2."}
    )
    config_name: str | None = field(
        default=None,
        metadata={
            "help": "Config to load (Hub id or path) instead of the checkpoint's; from scratch, instead of "
            "--model_type's default config (--model_size and --config_overrides still apply)."
        },
    )
    image_processor_name: str | None = field(
        default=None, metadata={"help": "Image processor to load (Hub id or path) instead of the checkpoint's."}
    )
    ignore_mismatched_sizes: bool = field(default=False, metadata={"help": "Allow a new classifier head size."})
    cache_dir: str | None = field(
        default=None, metadata={"help": "Where downloaded models and datasets are cached (🤗's cache by default)."}
    )
    model_revision: str = field(
        default="main", metadata={"help": "Branch, tag or commit of the checkpoint, config and image processor."}
    )
    token: str | None = field(
        default=None,
        repr=False,
        metadata={
            "help": "Hub token for private models and datasets (default: HF_TOKEN or the saved login); never "
            "printed or saved."
        },
    )
    trust_remote_code: bool = field(
        default=False,
        metadata={
            "help": "Run code from the checkpoint's Hub repository (custom models, configs, processors). Only for "
            "repositories you trust (datasets 4+ never run dataset scripts)."
        },
    )

    def __post_init__(self) -> None:
        if self.config_overrides:  # the form of every entry, checked before any data is loaded
            parse_config_overrides(self.config_overrides)

    def pretrained_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of every ``from_pretrained`` call: cache, revision, token, remote code."""
        return {
            "cache_dir": self.cache_dir,
            "revision": self.model_revision,
            "token": self.token,
            "trust_remote_code": self.trust_remote_code,
        }

    def dataset_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``datasets.load_dataset``: cache and token."""
        return {"cache_dir": self.cache_dir, "token": self.token}


def unwrap_model(model: nn.Module) -> nn.Module:
    """Strip DDP / DataParallel / accelerate (``.module``) and ``torch.compile`` (``._orig_mod``) wrappers."""
    seen: set[int] = set()
    while id(model) not in seen:
        seen.add(id(model))
        orig = getattr(model, "_orig_mod", None)
        if isinstance(orig, nn.Module):
            model = orig
            continue
        inner = getattr(model, "module", None)
        if isinstance(inner, nn.Module) and not hasattr(model, "config"):
            model = inner
            continue
        break
    return model


@dataclass(frozen=True)
class TokenGeometry:
    """Where the class token looks: the pixel side of one token of the grid it attends to, and the image side.

    Attributes:
        token_size: pixels a side of one token of that grid: the ViT/DeiT patch, PVT's last-stage stride (the
            product of ``config.patch_sizes``), timm's ``patch_embed.patch_size``, CA-Swin's last-stage token
            (``patch_size x 2^(stages - 1)``).
        image_size: the configured square input side in pixels (``None`` when the model states none).
        source: where ``token_size`` was read, for messages.
    """

    token_size: int
    image_size: int | None
    source: str

    @property
    def grid_size(self) -> int | None:
        """Tokens a side at the configured resolution (``None`` without an image size)."""
        return None if self.image_size is None else self.image_size // self.token_size


def token_geometry(model: nn.Module) -> TokenGeometry:
    """The token grid the class token of ``model`` attends to, read from the model itself.

    * 🤗 ViT, DeiT, BEiT, Dinov2, ... and models without a class token (Swin, ConvNeXt): ``config.patch_size``;
    * 🤗 PVT (class token in the last stage): the product of ``config.patch_sizes`` (4 x 2 x 2 x 2 = 32);
    * timm models through ``TimmWrapperForImageClassification`` (ViT, DeiT, CaiT, XCiT): ``patch_embed.patch_size``
      and ``patch_embed.img_size``;
    * CA-Swin (:mod:`mixpro_hf.ca_swin`): the last stage's token, ``patch_size x 2^(len(depths) - 1)``.

    Raises:
        ValueError: when no token size can be read (e.g. a CNN), naming ``--mix_patch_size``.
    """
    inner = unwrap_model(model)
    config = getattr(inner, "config", None)
    model_type = str(getattr(config, "model_type", None) or type(inner).__name__)
    image = _square(getattr(config, "image_size", None), "image size", model_type)
    timm_model = getattr(inner, "timm_model", None)
    if model_type == "timm_wrapper" and isinstance(timm_model, nn.Module):
        embed = getattr(timm_model, "patch_embed", None)
        token = _square(getattr(embed, "patch_size", None), "patch size", model_type)
        image = _square(getattr(embed, "img_size", None), "image size", model_type)
        if image is None:
            input_size = (getattr(timm_model, "pretrained_cfg", None) or {}).get("input_size")
            image = _square(list(input_size[-2:]), "image size", model_type) if input_size else None
        source = f"timm {type(timm_model).__name__}.patch_embed.patch_size"
    elif model_type == "pvt" and getattr(config, "patch_sizes", None):
        # 🤗 PVT's patch embeddings are Conv2d(kernel_size=strides[i], stride=patch_sizes[i]): the token stride
        token, source = math.prod(int(s) for s in config.patch_sizes), "PVT: product of config.patch_sizes"
    elif model_type == "ca_swin":
        token = int(config.patch_size) * 2 ** (len(config.depths) - 1)
        source = "CA-Swin: config.patch_size x 2^(stages - 1)"
    else:
        token, source = _square(getattr(config, "patch_size", None), "patch size", model_type), "config.patch_size"
    if token is None:  # a model outside 🤗 / timm: the patch and image size its class-token embeddings state
        for module in inner.modules():
            if isinstance(getattr(module, "cls_token", None), torch.Tensor) and hasattr(module, "patch_size"):
                token = _square(module.patch_size, "patch size", model_type)
                image = image or _square(getattr(module, "image_size", None), "image size", model_type)
                source = f"{type(module).__name__}.patch_size"
                break
    if token is None:
        raise ValueError(
            f"model type {model_type!r}: the pixel size of one token is unknown (no config.patch_size, PVT patch_sizes "
            "or timm patch_embed.patch_size): set mix_patch_size (--mix_patch_size) to the grid cell, in pixels, "
            "on which images are mixed"
        )
    return TokenGeometry(token, image, source)


def model_geometry(model: nn.Module, mix_patch_size: int | None = None) -> tuple[int, int | None]:
    """``(patch_size, image_size)`` in pixels: the mixing grid cell (``mix_patch_size``, else the side of one token
    of the grid the class token attends to, :func:`token_geometry`) and the model's square image size (``None``
    when it states none)."""
    if mix_patch_size is not None:
        if isinstance(mix_patch_size, bool) or not isinstance(mix_patch_size, int) or mix_patch_size < 1:
            raise ValueError(f"mix_patch_size must be a positive integer, got {mix_patch_size!r}")
        try:
            image = token_geometry(model).image_size
        except ValueError:
            config = getattr(unwrap_model(model), "config", None)
            model_type = str(getattr(config, "model_type", None) or type(model).__name__)
            image = _square(getattr(config, "image_size", None), "image size", model_type)
        return mix_patch_size, image
    geometry = token_geometry(model)
    return geometry.token_size, geometry.image_size


def _square(value: Any, what: str, model_type: str) -> int | None:
    if isinstance(value, (list, tuple)):
        if len(set(value)) != 1:
            raise ValueError(f"model type {model_type!r}: non-square {what} {tuple(value)} is not supported")
        value = value[0]
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else None


def _apply_overrides(config: Any, overrides: str) -> None:
    """``--config_overrides "k=v,..."`` on a 🤗 config (:func:`~mixpro_hf.config_overrides.apply_config_overrides`:
    lists, booleans, floats, strings, ``None``); for a timm model (``TimmWrapperConfig``) the keys go to
    ``model_args`` (``timm.create_model``'s keyword arguments), read the same way."""
    if getattr(config, "model_type", None) != "timm_wrapper":
        apply_config_overrides(config, overrides)
        return
    config.model_args = {**(config.model_args or {}), **parse_config_overrides(overrides)}


def declared_no_decay_names(model: nn.Module) -> set[str]:
    """Parameters that the model's own modules exempt from weight decay through ``no_weight_decay()``.

    timm's models state their family's official rule this way, as patterns (``fnmatch``) relative to the module that
    declares them: ViT/DeiT ``{pos_embed, cls_token, reg_token, dist_token}``; CaiT ``{pos_embed, cls_token}``
    (facebookresearch/deit ``cait_models.py``); XCiT ``{pos_embed.*, cls_token}`` (the Fourier position encoding is a
    module) and each cross-covariance attention's ``{temperature}`` (facebookresearch/xcit ``xcit.py`` declares it on
    ``XCA``); Swin's ``relative_position_bias_table``. Every module that declares a rule is read, not only the top one
    (timm's optimizer factory reads only the top model's, which would decay XCiT's ``temperature``).
    """
    parameters = [name for name, _ in model.named_parameters()]
    exempt: set[str] = set()
    for prefix, module in model.named_modules():
        declared = getattr(module, "no_weight_decay", None)
        if not callable(declared):
            continue
        patterns = list(declared())
        base = f"{prefix}." if prefix else ""
        exempt.update(
            name
            for name in parameters
            if name.startswith(base) and any(_declared(name[len(base) :], p) for p in patterns)
        )
    return exempt


def _declared(name: str, pattern: str) -> bool:
    """``name`` is covered by a ``no_weight_decay()`` pattern: the pattern itself, or a module the pattern names (timm
    before 1.0.31 declares XCiT's position encoding, a module, as ``pos_embed``; 1.0.31 as ``pos_embed.*``)."""
    return fnmatch.fnmatchcase(name, pattern) or name.startswith(f"{pattern}.")


def decay_parameter_names(model: nn.Module) -> list[str]:
    """Names of the parameters that get weight decay: every weight except

    * biases, norms and LayerScale factors (``ndim <= 1``, as DeiT and timm);
    * the class / distillation / register / mask tokens, position embeddings and relative position bias tables, by
      their 🤗 names (:data:`NO_DECAY_NAMES`: 🤗 ViT, DeiT, BEiT, PVT, Swin and CA-Swin declare no rule of their own);
    * what the model's modules declare in ``no_weight_decay()`` (:func:`declared_no_decay_names`: the official rule of
      each timm family: ViT/DeiT, CaiT, XCiT, Swin).
    """
    inner = unwrap_model(model)
    declared = declared_no_decay_names(inner)
    return [
        name
        for name, param in inner.named_parameters()
        if param.ndim > 1 and name not in declared and not any(part in name for part in NO_DECAY_NAMES)
    ]


def optimizer_param_groups(
    model: nn.Module, weight_decay: float, extra_no_decay: list[nn.Parameter] | None = None
) -> list[dict[str, Any]]:
    """AdamW parameter groups under :func:`decay_parameter_names`; ``extra_no_decay`` (e.g. the learnable α)
    joins the group without decay."""
    decay = set(decay_parameter_names(model))
    named = [(n, p) for n, p in unwrap_model(model).named_parameters() if p.requires_grad]
    return [
        {"params": [p for n, p in named if n in decay], "weight_decay": weight_decay},
        {"params": [p for n, p in named if n not in decay] + list(extra_no_decay or []), "weight_decay": 0.0},
    ]


def build_model(model_args: ModelArguments, names: list[str]) -> tuple[PreTrainedModel, Any]:
    """The model and its image processor: loaded for fine-tuning, or configured fresh from scratch.

    From scratch, BEiT classifies from the class token (``use_mean_pooling=False``), so that the attention PAL
    reads is the one the classifier uses.
    """
    id2label = dict(enumerate(names))
    label2id = {name: i for i, name in id2label.items()}
    labels = dict(num_labels=len(names), id2label=id2label, label2id=label2id)
    source = model_args.model_name_or_path
    if source and model_args.model_preset:
        raise ValueError("--model_preset builds a model from scratch: drop --model_name_or_path (or the preset)")
    rate = model_args.drop_path_rate
    hub = model_args.pretrained_kwargs()
    if source:
        try:
            config = AutoConfig.from_pretrained(model_args.config_name or source, **labels, **hub)
            if rate is not None:
                apply_drop_path(config, rate)
            model = AutoModelForImageClassification.from_pretrained(
                source,
                config=config,
                ignore_mismatched_sizes=model_args.ignore_mismatched_sizes,
                attn_implementation=model_args.attn_implementation,
                **hub,
            )
            processor = AutoImageProcessor.from_pretrained(model_args.image_processor_name or source, **hub)
        except OSError as err:
            raise ValueError(f"could not load model {source!r}: {err}") from err
        except RuntimeError as err:
            # transformers 4.x: "size mismatch for classifier.weight ..."; 5.x: "You set `ignore_mismatched_sizes`
            # to `False`, thus raising an error" (after a report of the mismatched keys)
            if "size mismatch" not in str(err) and "ignore_mismatched_sizes" not in str(err):
                raise
            raise ValueError(
                f"the classifier of {source!r} does not fit the {len(names)} classes of the data: pass "
                "--ignore_mismatched_sizes True to train a new head"
            ) from err
    else:
        rate = RECIPE_DROP_PATH_RATE if rate is None else rate
        if model_args.model_preset:
            config = preset_config(model_args.model_preset)
            if model_args.config_name or model_args.model_size:
                raise ValueError("--model_preset names the whole model: drop --config_name and --model_size")
        elif model_args.config_name:
            try:
                config = AutoConfig.from_pretrained(model_args.config_name, **hub)
            except OSError as err:
                raise ValueError(f"could not load config {model_args.config_name!r}: {err}") from err
        else:
            config = AutoConfig.for_model(model_args.model_type)
        if model_args.model_size:
            hidden, layers, heads = MODEL_SIZES[model_args.model_size]
            config.update(
                dict(
                    hidden_size=hidden,
                    num_hidden_layers=layers,
                    num_attention_heads=heads,
                    intermediate_size=4 * hidden,
                    **PAPER_GEOMETRY,
                )
            )
        if hasattr(config, "use_mean_pooling"):
            config.use_mean_pooling = False
        if model_args.config_overrides:
            _apply_overrides(config, model_args.config_overrides)
        config.update(labels)
        classes = MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING[type(config)]
        if isinstance(classes, (list, tuple)):  # e.g. DeiT: train the plain classifier, not the one with a teacher
            config.architectures = [classes[0].__name__]
        apply_drop_path(config, rate)
        attn = model_args.attn_implementation
        model_class = classes[0] if isinstance(classes, (list, tuple)) else classes
        if attn == "sdpa" and not getattr(model_class, "_supports_sdpa", False):
            attn = None  # e.g. 🤗 PVT: its own attention only
        model = AutoModelForImageClassification.from_config(
            config, attn_implementation=attn, trust_remote_code=model_args.trust_remote_code
        )
        if model_args.model_preset:
            preset = MODEL_PRESETS[model_args.model_preset]
            count = sum(p.numel() for p in model.parameters()) / 1e6
            paper = "MixPro Table 1" if preset.in_table else f"{preset.family} paper (not in Table 1)"
            logger.info(
                "--model_preset %s: %.2f M parameters with %d classes (%s: %.1f M with 1,000 classes)",
                preset.name,
                count,
                len(names),
                paper,
                preset.paper_params,
            )
        image_size = token_geometry(model).image_size or 224
        if model_args.image_processor_name:
            processor = AutoImageProcessor.from_pretrained(model_args.image_processor_name, **hub)
        else:
            processor = ViTImageProcessor(
                size={"height": image_size, "width": image_size},
                image_mean=list(IMAGENET_MEAN),
                image_std=list(IMAGENET_STD),
            )
    if rate is not None and apply_drop_path(model, rate) == "unsupported" and rate > 0:
        logger.warning(
            "model type %r has no stochastic depth: --drop_path_rate %s is not applied", model.config.model_type, rate
        )
    return model, processor
