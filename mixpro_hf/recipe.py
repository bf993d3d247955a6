"""The mixing recipe: every MixPro setting (declared once, in :class:`MixProConfig`), which augmentation
each training batch gets, and which label it is given.

Papers:
    - MixPro: Zhao et al., "MixPro: Data Augmentation with MaskMix and Progressive Attention Labeling for
      Vision Transformer", ICLR 2023. https://openreview.net/forum?id=dRjWsd3gwsm
    - TransMix: Chen et al., "TransMix: Attend to Mix for Vision Transformers", CVPR 2022.
      https://arxiv.org/abs/2111.09833
    - Mixup: Zhang et al., ICLR 2018 (https://arxiv.org/abs/1710.09412); CutMix: Yun et al., ICCV 2019
      (https://arxiv.org/abs/1905.04899).

``mix_method`` names a recipe (every one draws a fresh choice per batch, as timm and the MixPro code do):

================  =====================================================  ==========================
mix_method        images                                                 label
================  =====================================================  ==========================
``none``          unmixed                                                one-hot (smoothed)
``mixup``         Mixup                                                  area
``cutmix``        CutMix                                                 area
``mixup_cutmix``  Mixup or CutMix (``switch_prob``), the DeiT default    area
``transmix``      Mixup or CutMix                                        CutMix: (λ_area + λ_attn)/2
``maskmix``       MaskMix (``maskmix_prob``) else Mixup/CutMix           area
``mixpro``        MaskMix (``maskmix_prob``) else Mixup/CutMix           MaskMix: PAL, eq. 9
================  =====================================================  ==========================

With ``maskmix_prob=1`` every batch of ``maskmix``/``mixpro`` is MaskMix (the paper's text); the
reference code's 0.5 is the default.

:class:`MixProConfig` is the one declaration of every setting: its fields (type, default, help) are the
``mixpro-train`` flags, the fields of :class:`~mixpro_hf.training_args.MixProTrainingArguments` (which
extends it) and the rows of the model card's settings table.
"""

from __future__ import annotations

import functools
import math
import warnings
from dataclasses import InitVar, dataclass, field, fields
from typing import Any, Literal, get_args, get_origin, get_type_hints

import numpy as np
import torch

from .mixing import MixOutput, cutmix, maskmix, mix_per_sample, mixup, unmixed, unmixed_maskmix_share

MixMethod = Literal["none", "mixup", "cutmix", "mixup_cutmix", "transmix", "maskmix", "mixpro"]
AlphaStrategy = Literal["cosine", "equal", "linear", "parabolic", "learnable"]
MIX_METHODS: tuple[str, ...] = get_args(MixMethod)
ALPHA_STRATEGIES: tuple[str, ...] = get_args(AlphaStrategy)
ATTENTION_METHODS = ("transmix", "mixpro")
MASKMIX_METHODS = ("maskmix", "mixpro")
# Old argument names, accepted for one release with a FutureWarning: old name -> field.
DEPRECATED_NAMES = {
    "method": "mix_method",
    "label_smoothing": "label_smoothing_factor",
    "maskmix_partner": "maskmix_pairing",
}


def _setting(default: Any, help: str) -> Any:  # noqa: A002 - the HfArgumentParser metadata key
    return field(default=default, metadata={"help": help})


@dataclass
class MixProConfig:
    """Every MixPro setting; the defaults follow the code that produced the paper's numbers.

    The old argument names ``method``, ``label_smoothing`` and ``maskmix_partner`` are accepted for one release
    with a ``FutureWarning``.
    """

    mix_method: MixMethod = _setting("mixpro", "Mixing recipe (see the README's methods table).")
    maskmix_prob: float = _setting(
        0.5, "maskmix/mixpro: probability that a batch gets MaskMix, else Mixup/CutMix (reference code 0.5, paper 1)."
    )
    mask_scale: int = _setting(4, "MaskMix cell side in ViT patches, P_mask / P_image (paper §3.2: 4).")
    beta: float = _setting(1.0, "MaskMix mixing ratio tau ~ Beta(beta, beta) (eq. 6).")
    tau_per_sample: bool = _setting(False, "MaskMix: one tau per sample instead of one per batch (reference).")
    cell_count: Literal["ceil", "floor"] = _setting("ceil", "MaskMix cells kept: ceil(S*tau) (code) or floor (paper).")
    maskmix_pairing: Literal["randperm", "flip"] = _setting(
        "randperm", "MaskMix pairing of samples: a random permutation (code) or the reversed batch (paper Alg. 1)."
    )
    mixup_alpha: float = _setting(0.8, "Mixup lam ~ Beta(mixup_alpha, mixup_alpha) (timm); 0 disables Mixup.")
    cutmix_alpha: float = _setting(1.0, "CutMix lam ~ Beta(cutmix_alpha, cutmix_alpha) (timm); 0 disables CutMix.")
    cutmix_minmax: list[float] | None = _setting(
        None, "CutMix box side ratio range 'min max' (timm); overrides cutmix_alpha."
    )
    switch_prob: float = _setting(0.5, "Probability of CutMix rather than Mixup when both are on (timm).")
    mix_prob: float = _setting(1.0, "Probability that a batch is mixed at all (timm's prob).")
    correct_lam: bool = _setting(True, "CutMix: lam is the exact area outside the clipped box (timm).")
    mixup_mode: Literal["batch", "pair", "elem"] = _setting(
        "batch", "timm's mode of Mixup/CutMix draws: one per batch (reference), per pair of samples, or per sample."
    )
    cutmix_box_edge: Literal["reference", "timm-1.0.31"] = _setting(
        "reference",
        "CutMix box upper edge: centre + cut//2 as the timm the reference code used (<= 1.0.29), or centre + "
        "(cut+1)//2 (timm >= 1.0.31); they differ for odd box sides.",
    )
    label_smoothing_factor: float = _setting(0.1, "Label smoothing of the mixed targets (paper Table 11: 0.1).")
    alpha_strategy: AlphaStrategy = _setting(
        "cosine", "PAL progressive factor alpha: cosine (eq. 8) or the ablations of paper Table 10."
    )
    alpha_grad: bool = _setting(True, "PAL: let the gradient flow through alpha (reference code: yes).")
    transmix_label: Literal["mean", "attn"] = _setting(
        "mean", "TransMix label: (lam_area + lam_attn)/2 (TransMix code) or lam_attn (TransMix paper)."
    )
    transmix_patch_mask: Literal["nearest", "fraction"] = _setting(
        "nearest",
        "TransMix lam_attn: the box mask downsampled to the patch grid by nearest neighbour (eq. 5, TransMix code) "
        "or the covered fraction of each patch.",
    )
    loss_form: Literal["hard", "soft"] = _setting(
        "hard",
        "Loss of PAL batches: hard = lam*CE(y_i) + (1-lam)*CE(y_j) on unsmoothed labels (reference code); soft = "
        "soft-target CE on the smoothed lam-mixed target (paper Alg. 1). Other batches always use the soft form.",
    )
    loss: Literal["auto", "ce", "bce"] = _setting(
        "auto",
        "Training loss: ce = softmax cross-entropy on the mixed targets; bce = binary cross-entropy with logits on "
        "the same mixed targets (timm's BinaryCrossEntropy, DeiT III); auto = bce for multi-label data (list "
        "labels), ce otherwise. Multi-label data needs bce.",
    )
    bce_target_threshold: float | None = _setting(
        None,
        "With loss bce: binarise the smoothed, mixed target, target > threshold (strict, timm's "
        "--bce-target-thresh; DeiT III binarises at 0). Unset: the soft target.",
    )
    method: InitVar[str | None] = None
    label_smoothing: InitVar[float | None] = None
    maskmix_partner: InitVar[str | None] = None

    def __post_init__(
        self, method: str | None = None, label_smoothing: float | None = None, maskmix_partner: str | None = None
    ) -> None:
        for old, value in (
            ("method", method),
            ("label_smoothing", label_smoothing),
            ("maskmix_partner", maskmix_partner),
        ):
            if value is not None:
                new = DEPRECATED_NAMES[old]
                warnings.warn(f"{old}= is deprecated, use {new}=", FutureWarning, stacklevel=3)
                setattr(self, new, value)
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first setting that is out of range."""
        for name, choices in _choices().items():
            if getattr(self, name) not in choices:
                raise ValueError(f"{name}={getattr(self, name)!r} is not one of {', '.join(choices)}")
        for name in ("maskmix_prob", "switch_prob", "mix_prob"):
            _check_number(name, getattr(self, name), 0.0, 1.0)
        _check_number("label_smoothing_factor", self.label_smoothing_factor, 0.0, 1.0, high_open=True)
        for name in ("mixup_alpha", "cutmix_alpha"):
            _check_number(name, getattr(self, name), 0.0, math.inf, high_open=True)
        _check_number("beta", self.beta, 0.0, math.inf, low_open=True, high_open=True)
        if isinstance(self.mask_scale, bool) or not isinstance(self.mask_scale, int) or self.mask_scale < 1:
            raise ValueError(f"mask_scale must be an integer >= 1 (mask cell side in patches), got {self.mask_scale!r}")
        if self.cutmix_minmax is not None:
            values = list(self.cutmix_minmax)
            if len(values) != 2 or not all(isinstance(v, (int, float)) for v in values):
                raise ValueError(f"cutmix_minmax must hold two ratios (min max), got {self.cutmix_minmax!r}")
            if not 0.0 <= values[0] < values[1] <= 1.0:
                raise ValueError(f"cutmix_minmax must satisfy 0 <= min < max <= 1, got {values!r}")
            self.cutmix_minmax = [float(v) for v in values]
        if self.bce_target_threshold is not None:
            _check_number("bce_target_threshold", self.bce_target_threshold, 0.0, 1.0, high_open=True)
            if self.loss == "ce":
                raise ValueError(
                    f"bce_target_threshold={self.bce_target_threshold!r} binarises the targets of loss bce, but loss "
                    "is 'ce': use --loss bce or leave the threshold unset"
                )
        if self.mix_method == "transmix" and self.mixup_mode != "batch":
            raise ValueError(
                f"mix_method='transmix' labels whole CutMix batches (TransMix's code): mixup_mode must be 'batch', "
                f"got {self.mixup_mode!r}"
            )

    @property
    def uses_attention(self) -> bool:
        """True when some batches need the class-token attention (TransMix, MixPro)."""
        return self.mix_method in ATTENTION_METHODS

    @classmethod
    def from_object(cls, obj: Any) -> MixProConfig:
        """The settings held by ``obj`` (e.g. ``MixProTrainingArguments``), as a plain ``MixProConfig``."""
        return cls(**{f.name: getattr(obj, f.name) for f in fields(cls)})


@functools.cache
def _choices() -> dict[str, tuple[str, ...]]:
    """The allowed values of every ``Literal`` setting, from the type hints (declared once)."""
    hints = get_type_hints(MixProConfig)
    return {f.name: get_args(hints[f.name]) for f in fields(MixProConfig) if get_origin(hints[f.name]) is Literal}


def _check_number(
    name: str, value: Any, low: float, high: float, *, low_open: bool = False, high_open: bool = False
) -> None:
    """Refuse a non-number, NaN/inf (unless ``high`` is inf) or a value outside the interval."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
    if not ok:
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise ValueError(f"{name} must be a finite number in {interval}, got {value!r}")


def batch_generator(seed: int, *keys: int) -> torch.Generator:
    """A CPU generator for one batch, seeded from ``seed`` and keys such as (process, batch index).

    Mixing draws are tiny, so they are made on the CPU whatever the images' device: the same seed gives
    the same masks on CPU and GPU, in the collator and in the Trainer, and after a resume.
    """
    state = np.random.SeedSequence([int(seed) % 2**63, *(int(k) for k in keys)]).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(state) & (2**63 - 1))


def _bernoulli(prob: float, generator: torch.Generator | None) -> bool:
    if prob >= 1.0:
        return True
    if prob <= 0.0:
        return False
    device = generator.device if generator is not None else "cpu"
    return bool(torch.rand(1, generator=generator, device=device).item() < prob)


def mix_batch(
    pixel_values: torch.Tensor,
    config: MixProConfig,
    patch_size: int,
    generator: torch.Generator | None = None,
) -> MixOutput:
    """Mix one training batch following ``config.mix_method`` (see the module docstring)."""
    method = config.mix_method
    if method == "none" or pixel_values.shape[0] == 1:
        return unmixed(pixel_values, patch_size)
    if method in MASKMIX_METHODS and _bernoulli(config.maskmix_prob, generator):
        return maskmix(
            pixel_values,
            patch_size=patch_size,
            mask_scale=config.mask_scale,
            beta=config.beta,
            generator=generator,
            tau_per_sample=config.tau_per_sample,
            cell_count=config.cell_count,
            pairing=config.maskmix_pairing,
        )
    # Mixup / CutMix (timm): mix_prob gates only these batches, as in the reference code
    has_cutmix = method != "mixup" and (config.cutmix_alpha > 0 or config.cutmix_minmax is not None)
    has_mixup = method != "cutmix" and config.mixup_alpha > 0
    minmax = tuple(config.cutmix_minmax) if config.cutmix_minmax is not None else None
    if config.mixup_mode != "batch":
        return mix_per_sample(
            pixel_values,
            generator,
            patch_size=patch_size,
            mixup_alpha=config.mixup_alpha if has_mixup else 0.0,
            cutmix_alpha=config.cutmix_alpha if has_cutmix else 0.0,
            cutmix_minmax=minmax if has_cutmix else None,  # type: ignore[arg-type]
            switch_prob=config.switch_prob,
            mix_prob=config.mix_prob,
            correct_lam=config.correct_lam,
            paired=config.mixup_mode == "pair",
            box_edge=config.cutmix_box_edge,
            patch_mask_mode=config.transmix_patch_mask,
        )
    if not _bernoulli(config.mix_prob, generator):
        return unmixed(pixel_values, patch_size)
    if method == "mixup":
        use_cutmix = False
    elif method == "cutmix":
        use_cutmix = True
    elif has_cutmix and has_mixup:
        use_cutmix = _bernoulli(config.switch_prob, generator)
    else:
        use_cutmix = has_cutmix
    if use_cutmix:
        return cutmix(
            pixel_values,
            alpha=config.cutmix_alpha,
            generator=generator,
            patch_size=patch_size,
            minmax=minmax,  # type: ignore[arg-type]
            correct_lam=config.correct_lam,
            box_edge=config.cutmix_box_edge,
            patch_mask_mode=config.transmix_patch_mask,
        )
    if not has_mixup:
        raise ValueError(f"mix_method={method!r} needs mixup_alpha > 0, got {config.mixup_alpha!r}")
    return mixup(pixel_values, alpha=config.mixup_alpha, generator=generator, patch_size=patch_size)


#: Warn when more than this share of MaskMix draws cannot mix (:func:`~mixpro_hf.mixing.unmixed_maskmix_share`): twice
#: the share of the paper's own setting (ImageNet, 14x14 patches, mask_scale 4: 4x4 cells, 1/16 unmixed), so the
#: paper's geometry passes, 3x3 cells (1/9) pass, and 2x3 (1/6) and 2x2 (1/4) cells warn.
UNMIXED_SHARE_WARNING = 1 / 8


def mixing_warnings(config: MixProConfig, grid: tuple[int, int] | None, per_process_batch_size: int) -> list[str]:
    """What would make a run mix much less than its settings say, one line each (training still runs):

    * a MaskMix grid with so few cells that more than :data:`UNMIXED_SHARE_WARNING` of the MaskMix draws keep every
      cell of one image (``grid``: the patch grid, ``None`` when unknown);
    * one image per process and batch: a batch is mixed with itself only, so every batch stays unmixed (λ = 1).
    """
    if config.mix_method == "none":
        return []
    warnings_ = []
    if per_process_batch_size == 1:
        warnings_.append(
            f"mix_method={config.mix_method!r} with a batch of 1 image per process: an image has no partner to mix "
            "with, so no batch is mixed; use a per-device batch of at least 2"
        )
    if grid is not None and config.mix_method in MASKMIX_METHODS and config.maskmix_prob > 0:
        share = unmixed_maskmix_share(grid, config.mask_scale, config.beta)
        if share > UNMIXED_SHARE_WARNING:
            cells = math.ceil(grid[0] / config.mask_scale) * math.ceil(grid[1] / config.mask_scale)
            draws = "images" if config.tau_per_sample else "MaskMix batches"
            warnings_.append(
                f"mask_scale {config.mask_scale} on a {grid[0]}x{grid[1]} patch grid gives {cells} MaskMix cells: "
                f"about {share:.0%} of the {draws} keep every cell of one image and are not mixed (tau ~ "
                f"Beta({config.beta:g}, {config.beta:g}), {config.cell_count}(cells * tau) cells kept); a smaller "
                "mask_scale gives more cells"
            )
    return warnings_


def resolved_loss(config: MixProConfig, multi_label: bool) -> str:
    """The loss a run trains with: ``config.loss``, ``"auto"`` meaning ``"bce"`` for multi-label data and ``"ce"``
    otherwise; ``loss="ce"`` on multi-label data is a one-line ``ValueError`` (a softmax cannot give several
    independent labels)."""
    if multi_label and config.loss == "ce":
        raise ValueError(
            "loss='ce' (softmax cross-entropy) cannot train multi-label data (the label column holds lists): use "
            "--loss bce or leave --loss unset (auto)"
        )
    loss = ("bce" if multi_label else "ce") if config.loss == "auto" else config.loss
    if loss == "ce" and config.bce_target_threshold is not None:
        raise ValueError(
            f"bce_target_threshold={config.bce_target_threshold!r} binarises the targets of loss bce, but this "
            "single-label run trains with ce (loss 'auto'): add --loss bce or leave the threshold unset"
        )
    return loss


def label_mode(config: MixProConfig, batch_method: str) -> str:
    """How a batch mixed by ``batch_method`` is labelled: ``"area"``, ``"pal"`` or ``"transmix"``."""
    if config.mix_method == "mixpro" and batch_method == "maskmix":
        return "pal"
    if config.mix_method == "transmix" and batch_method == "cutmix":
        return "transmix"
    return "area"
