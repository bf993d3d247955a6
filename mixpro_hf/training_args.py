"""``MixProTrainingArguments``: 🤗 ``TrainingArguments`` plus every MixPro field (CLI flags via
``HfArgumentParser``). Defaults come from :class:`mixpro_hf.recipe.MixProConfig`."""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers import TrainingArguments

from .recipe import ALPHA_STRATEGIES, MIX_METHODS, MixProConfig

_D = MixProConfig()


@dataclass
class MixProTrainingArguments(TrainingArguments):
    """``TrainingArguments`` with the MixPro recipe. Label smoothing is the Trainer's own
    ``label_smoothing_factor`` (the paper's recipe uses 0.1)."""

    mix_method: str = field(
        default=_D.method, metadata={"help": f"Mixing recipe, one of {', '.join(MIX_METHODS)}.", "choices": MIX_METHODS}
    )
    maskmix_prob: float = field(
        default=_D.maskmix_prob,
        metadata={"help": "maskmix/mixpro: probability that a batch gets MaskMix (else Mixup/CutMix). Paper text: 1."},
    )
    mask_scale: int = field(default=_D.mask_scale, metadata={"help": "MaskMix cell side, in patches (paper: 4)."})
    beta: float = field(default=_D.beta, metadata={"help": "MaskMix tau ~ Beta(beta, beta) (eq. 6)."})
    tau_per_sample: bool = field(default=_D.tau_per_sample, metadata={"help": "One tau per sample, not per batch."})
    cell_count: str = field(
        default=_D.cell_count,
        metadata={"help": "Cells kept: ceil(S*tau) (code) or floor (paper).", "choices": ("ceil", "floor")},
    )
    maskmix_partner: str = field(
        default=_D.maskmix_partner,
        metadata={"help": "MaskMix partner: randperm (code) or flip (paper).", "choices": ("randperm", "flip")},
    )
    mixup_alpha: float = field(default=_D.mixup_alpha, metadata={"help": "Mixup Beta(alpha, alpha); 0 disables."})
    cutmix_alpha: float = field(default=_D.cutmix_alpha, metadata={"help": "CutMix Beta(alpha, alpha); 0 disables."})
    cutmix_minmax: list[float] | None = field(
        default=None, metadata={"help": "CutMix box side ratio range (min max), overrides cutmix_alpha (timm)."}
    )
    switch_prob: float = field(default=_D.switch_prob, metadata={"help": "Probability of CutMix over Mixup."})
    mix_prob: float = field(default=_D.mix_prob, metadata={"help": "Probability that a batch is mixed at all."})
    correct_lam: bool = field(default=_D.correct_lam, metadata={"help": "CutMix: lam = exact area of the clipped box."})
    alpha_strategy: str = field(
        default=_D.alpha_strategy,
        metadata={"help": "Progressive factor (paper Table 10).", "choices": ALPHA_STRATEGIES},
    )
    alpha_grad: bool = field(
        default=_D.alpha_grad, metadata={"help": "Let the gradient flow through alpha (reference code: yes)."}
    )
    transmix_label: str = field(
        default=_D.transmix_label,
        metadata={
            "help": "TransMix label: mean of area and attention (code) or attn (paper).",
            "choices": ("mean", "attn"),
        },
    )
    loss_form: str = field(
        default=_D.loss_form,
        metadata={
            "help": "soft: CE on the mixed target; hard: lam*CE(y_i)+(1-lam)*CE(y_j).",
            "choices": ("soft", "hard"),
        },
    )
    mix_on: str = field(
        default="device",
        metadata={
            "help": "Where training batches are mixed: on the model's device in compute_loss (default; exact on "
            "resume) or in the data collator (dataloader workers).",
            "choices": ("device", "collator"),
        },
    )
    mix_patch_size: int | None = field(
        default=None,
        metadata={"help": "Mixing grid cell in pixels; default the model's config.patch_size (needed for CNNs)."},
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.mix_on not in ("device", "collator"):
            raise ValueError(f"mix_on={self.mix_on!r} is not one of device, collator")
        self.mixpro_config()  # validates every MixPro field now, not at the first training step

    def mixpro_config(self) -> MixProConfig:
        """The :class:`MixProConfig` these arguments describe."""
        minmax = tuple(self.cutmix_minmax) if self.cutmix_minmax else None
        return MixProConfig.from_object(
            self, method=self.mix_method, label_smoothing=self.label_smoothing_factor, cutmix_minmax=minmax
        )
