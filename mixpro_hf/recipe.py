"""The mixing recipes: which augmentation each training batch gets and which label it is given.

``method`` names a recipe (every one draws a fresh choice per batch, as timm and the MixPro code do):

==============  =====================================================  ==========================
method          images                                                 label
==============  =====================================================  ==========================
``none``        unmixed                                                one-hot (smoothed)
``mixup``       Mixup                                                  area
``cutmix``      CutMix                                                 area
``mixup_cutmix`` Mixup or CutMix (``switch_prob``), the DeiT default   area
``transmix``    Mixup or CutMix                                        CutMix: (λ_area + λ_attn)/2
``maskmix``     MaskMix (``maskmix_prob``) else Mixup/CutMix           area
``mixpro``      MaskMix (``maskmix_prob``) else Mixup/CutMix           MaskMix: PAL, eq. 9
==============  =====================================================  ==========================

With ``maskmix_prob=1`` every batch of ``maskmix``/``mixpro`` is MaskMix (the paper's text); the
reference code's 0.5 is the default.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import torch

from .mixing import MixOutput, cutmix, maskmix, mixup, unmixed

MIX_METHODS = ("none", "mixup", "cutmix", "mixup_cutmix", "transmix", "maskmix", "mixpro")
ALPHA_STRATEGIES = ("cosine", "equal", "linear", "parabolic", "learnable")
ATTENTION_METHODS = ("transmix", "mixpro")


@dataclass
class MixProConfig:
    """Every MixPro hyper-parameter; defaults follow the code that produced the paper's numbers.

    Images: ``method``, ``maskmix_prob``, ``mask_scale``, ``beta``, ``tau_per_sample``,
    ``cell_count``, ``maskmix_partner``, ``mixup_alpha``, ``cutmix_alpha``, ``cutmix_minmax``,
    ``switch_prob``, ``mix_prob``, ``correct_lam``. Labels: ``label_smoothing``,
    ``alpha_strategy`` (paper Table 10), ``alpha_grad`` (gradient through alpha, reference: yes),
    ``transmix_label`` (``"mean"`` as TransMix's code, ``"attn"`` as its paper),
    ``loss_form`` (``"soft"``: cross-entropy on the mixed smoothed target; ``"hard"``: the
    reference code's ``lam * CE(y_i) + (1 - lam) * CE(y_j)``).
    """

    method: str = "mixpro"
    maskmix_prob: float = 0.5
    mask_scale: int = 4
    beta: float = 1.0
    tau_per_sample: bool = False
    cell_count: str = "ceil"
    maskmix_partner: str = "randperm"
    mixup_alpha: float = 0.8
    cutmix_alpha: float = 1.0
    cutmix_minmax: tuple[float, float] | None = None
    switch_prob: float = 0.5
    mix_prob: float = 1.0
    correct_lam: bool = True
    label_smoothing: float = 0.1
    alpha_strategy: str = "cosine"
    alpha_grad: bool = True
    transmix_label: str = "mean"
    loss_form: str = "soft"

    def __post_init__(self) -> None:
        checks = [
            ("method", self.method, MIX_METHODS),
            ("alpha_strategy", self.alpha_strategy, ALPHA_STRATEGIES),
            ("cell_count", self.cell_count, ("ceil", "floor")),
            ("maskmix_partner", self.maskmix_partner, ("randperm", "flip")),
            ("transmix_label", self.transmix_label, ("mean", "attn")),
            ("loss_form", self.loss_form, ("soft", "hard")),
        ]
        for name, value, allowed in checks:
            if value not in allowed:
                raise ValueError(f"{name}={value!r} is not one of {', '.join(allowed)}")
        for name in ("maskmix_prob", "switch_prob", "mix_prob"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing!r}")
        if isinstance(self.mask_scale, bool) or not isinstance(self.mask_scale, int) or self.mask_scale < 1:
            raise ValueError(f"mask_scale must be an integer >= 1, got {self.mask_scale!r}")
        if self.beta <= 0:
            raise ValueError(f"beta must be > 0, got {self.beta!r}")
        if self.cutmix_minmax is not None:
            self.cutmix_minmax = tuple(float(v) for v in self.cutmix_minmax)  # type: ignore[assignment]
            if len(self.cutmix_minmax) != 2:
                raise ValueError(f"cutmix_minmax must hold two ratios (min, max), got {self.cutmix_minmax!r}")

    @property
    def uses_attention(self) -> bool:
        """True when some batches need the class-token attention (TransMix, MixPro)."""
        return self.method in ATTENTION_METHODS

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_object(cls, obj: Any, **overrides: Any) -> MixProConfig:
        """Build from any object holding these field names (e.g. ``MixProTrainingArguments``)."""
        values = {f.name: getattr(obj, f.name) for f in fields(cls) if hasattr(obj, f.name)}
        values.update(overrides)
        return cls(**values)


def batch_generator(seed: int, *keys: int) -> torch.Generator:
    """A CPU generator for one batch, seeded from ``seed`` and keys such as (process, batch index).

    Mixing draws are tiny, so they are made on the CPU whatever the images' device: the same seed
    gives the same masks on CPU and GPU, in the collator and in the Trainer, and after a resume.
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
    """Mix one training batch following ``config.method`` (see the module docstring)."""
    method = config.method
    if method == "none" or pixel_values.shape[0] == 1 or not _bernoulli(config.mix_prob, generator):
        return unmixed(pixel_values, patch_size)
    if method in ("maskmix", "mixpro") and _bernoulli(config.maskmix_prob, generator):
        return maskmix(
            pixel_values,
            patch_size=patch_size,
            mask_scale=config.mask_scale,
            beta=config.beta,
            generator=generator,
            tau_per_sample=config.tau_per_sample,
            cell_count=config.cell_count,  # type: ignore[arg-type]
            partner=config.maskmix_partner,  # type: ignore[arg-type]
        )
    has_cutmix = config.cutmix_alpha > 0 or config.cutmix_minmax is not None
    has_mixup = config.mixup_alpha > 0
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
            minmax=config.cutmix_minmax,
            correct_lam=config.correct_lam,
        )
    if not has_mixup:
        raise ValueError(f"method={method!r} needs mixup_alpha > 0, got {config.mixup_alpha!r}")
    return mixup(pixel_values, alpha=config.mixup_alpha, generator=generator, patch_size=patch_size)


def label_mode(config: MixProConfig, batch_method: str) -> str:
    """How a batch mixed by ``batch_method`` is labelled: ``"area"``, ``"pal"`` or ``"transmix"``."""
    if config.method == "mixpro" and batch_method == "maskmix":
        return "pal"
    if config.method == "transmix" and batch_method == "cutmix":
        return "transmix"
    return "area"
