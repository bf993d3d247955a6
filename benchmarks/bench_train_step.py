"""Training-step cost of each mixing recipe: forward + backward + AdamW step, and peak memory.

Variants (same model, same batch size, timed interleaved round-robin in one process, median of the
steps, so machine noise hits them alike):

* ``none``      -- unmixed batch, smoothed one-hot label;
* ``cutmix``    -- CutMix every step, area label (the baseline of the ratios);
* ``transmix``  -- Mixup/CutMix with ``switch_prob=1`` (CutMix every step), TransMix label from the
  class-token attention captured by :func:`mixpro_hf.attention.capture_cls_attention` (SDPA kept);
* ``maskmix``   -- MaskMix every step (``maskmix_prob=1``), area label;
* ``mixpro``    -- MaskMix every step + PAL (eq. 9), attention captured with SDPA kept;
* ``naive``     -- MixPro done the obvious way: the model loaded with ``attn_implementation="eager"``
  and called with ``output_attentions=True``; λ_attn from ``attentions[-1][:, :, 0, prefix:].mean(1)``
  (detached, ``prefix`` = 1 for ViT, 2 for DeiT); PAL otherwise identical.

Each step includes the mixing of the batch (its generator is ``batch_generator(0, variant, step)``).
The five SDPA variants share one model and optimizer; ``naive`` has its own eager copy of the same
weights (the weights drift apart with the updates, which does not change the cost).

Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` over the variant's steps (reset before each
step; it includes the weights and optimizer state, which are the same for every variant). On the CPU
there is no per-variant allocator peak that can be trusted (the process RSS is shared by the
interleaved variants and glibc keeps freed memory), so it is reported as ``null``.

Targets printed: CPU: mixpro <= 1.05x cutmix. GPU: mixpro <= 1.03x cutmix, naive / mixpro >= 1.3,
peak memory mixpro <= 1.05x cutmix.

    python benchmarks/bench_train_step.py --steps 5 --warmup 1          # CPU, ViT-S/16, batch 16
    python benchmarks/bench_train_step.py --device cuda --bf16          # H100: batch 128, bf16 autocast
    python benchmarks/bench_train_step.py --device cuda --bf16 --model deit-s
    python benchmarks/bench_train_step.py --device cuda --bf16 --model pvt-t    # cutmix and mixpro only

Other families (``--model pvt-t|cait-xxs36|xcit-t24|ca-swin-t``, the smallest Table 1 preset of each family,
:mod:`mixpro_hf.presets`, at 224²): the capture's cost next to a CutMix step (variants ``cutmix`` and ``mixpro``
by default; ``naive`` needs 🤗's ``output_attentions``, which timm and CA-Swin do not have). ``--image-size``
builds them smaller (a CPU check of the command, not a measurement of the paper's models).

Writes ``results/train_step_<device>.json`` (``train_step_<device>_<model>.json`` for the other models).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import write_result  # noqa: E402
from mixpro_hf.attention import cls_token_layout  # noqa: E402
from mixpro_hf.loss import mixed_loss  # noqa: E402
from mixpro_hf.modeling import model_geometry  # noqa: E402
from mixpro_hf.presets import MODEL_PRESETS, preset_config  # noqa: E402
from mixpro_hf.recipe import MixProConfig, batch_generator, mix_batch  # noqa: E402
from mixpro_hf.step import forward_mixed  # noqa: E402

VARIANTS = ("none", "cutmix", "transmix", "maskmix", "mixpro", "naive")
# ViT-S/16 (DeiT-S size): 22 M parameters.
SMALL = dict(
    hidden_size=384,
    num_hidden_layers=12,
    num_attention_heads=6,
    intermediate_size=1536,
    image_size=224,
    patch_size=16,
    num_labels=1000,
)
# A 2-layer ViT at 32x32: the end-to-end test of the GPU driver on a CPU, not a benchmark.
TINY = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=64,
    image_size=32,
    patch_size=4,
    num_labels=10,
)
MODEL_CONFIGS = {"vit-s": SMALL, "deit-s": SMALL, "tiny": TINY}
# The smallest Table 1 model of each other family (mixpro_hf.presets), 1,000 classes.
FAMILY_MODELS = ("pvt-t", "cait-xxs36", "xcit-t24", "ca-swin-t")
# The image-size key of each preset kind's config (timm: a create_model keyword).
_IMAGE_SIZE_KEY = {"pvt-t": "image_size", "ca-swin-t": "image_size"}
TARGETS = {
    "cpu": {"mixpro_over_cutmix": 1.05},
    "cuda": {
        "mixpro_over_cutmix": 1.03,
        "naive_over_mixpro_min": 1.3,
        "peak_memory_mixpro_over_cutmix": 1.05,
    },
}


def variant_config(variant: str, mask_scale: int = 4) -> MixProConfig:
    """The recipe of a variant, chosen so that every step takes the measured path (``mask_scale``: the model's,
    e.g. a family preset's)."""
    if variant == "none":
        return MixProConfig(mix_method="none")
    if variant == "cutmix":
        return MixProConfig(mix_method="cutmix")
    if variant == "transmix":
        return MixProConfig(mix_method="transmix", switch_prob=1.0)
    if variant == "maskmix":
        return MixProConfig(mix_method="maskmix", maskmix_prob=1.0, mask_scale=mask_scale)
    if variant in ("mixpro", "naive"):
        return MixProConfig(mix_method="mixpro", maskmix_prob=1.0, mask_scale=mask_scale)
    raise ValueError(f"unknown variant {variant!r}: one of {', '.join(VARIANTS)}")


def build_model(name: str, attn_implementation: str, image_size: int | None = None) -> nn.Module:
    """ViT-S/16 (``vit-s``), DeiT-S (``deit-s``), a tiny test ViT (``tiny``) or a family preset
    (:data:`FAMILY_MODELS`, at ``image_size`` if given) with random weights and the given attention kernel."""
    import transformers as tf

    if name in FAMILY_MODELS:
        config = preset_config(name)
        if image_size is not None:
            if name in _IMAGE_SIZE_KEY:
                setattr(config, _IMAGE_SIZE_KEY[name], image_size)
            else:
                config.model_args = {**config.model_args, "img_size": image_size}
        model_class = tf.MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING[type(config)]
        attn = attn_implementation if getattr(model_class, "_supports_sdpa", False) else None  # PVT: its own
        return tf.AutoModelForImageClassification.from_config(config, attn_implementation=attn)
    if name not in MODEL_CONFIGS:
        raise ValueError(f"unknown model {name!r}: one of {', '.join((*MODEL_CONFIGS, *FAMILY_MODELS))}")
    if name == "deit-s":
        return tf.DeiTForImageClassification(tf.DeiTConfig(**SMALL, attn_implementation=attn_implementation))
    return tf.ViTForImageClassification(tf.ViTConfig(**MODEL_CONFIGS[name], attn_implementation=attn_implementation))


def naive_step_loss(
    model: nn.Module,
    pixel_values: torch.Tensor,
    labels: torch.Tensor,
    mix: Any,
    config: MixProConfig,
    num_prefix_tokens: int,
    progress: float,
) -> torch.Tensor:
    """PAL with the attention taken from ``output_attentions=True`` on an eager model."""
    outputs = model(pixel_values=pixel_values, output_attentions=True)
    cls_attention = outputs.attentions[-1][:, :, 0, num_prefix_tokens:].mean(1).detach()
    return mixed_loss(outputs.logits, labels, mix, config, cls_attention, progress=progress).loss


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--model", default="vit-s", choices=(*MODEL_CONFIGS, *FAMILY_MODELS))
    parser.add_argument("--image-size", type=int, default=None, help="family presets only: build at this size")
    parser.add_argument("--batch", type=int, default=None, help="default: 16 on CPU, 128 on CUDA")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (CUDA)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per variant (default 5 CPU, 30 CUDA)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps per variant (default 1 CPU, 5 CUDA)")
    parser.add_argument(
        "--variants", nargs="+", default=None, choices=VARIANTS, help="default: all; family presets: cutmix mixpro"
    )
    args = parser.parse_args(argv)
    family = args.model in FAMILY_MODELS
    if args.variants is None:
        args.variants = ["cutmix", "mixpro"] if family else list(VARIANTS)
    if family and "naive" in args.variants:
        sys.exit(f"--model {args.model}: the naive variant needs 🤗's output_attentions (ViT / DeiT only)")
    if args.image_size is not None and not family:
        sys.exit("--image-size applies to the family presets only")
    on_cuda = args.device == "cuda"
    if on_cuda and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA device is available")
    batch = args.batch or (128 if on_cuda else 16)
    steps = args.steps or (30 if on_cuda else 5)
    warmup = args.warmup if args.warmup is not None else (5 if on_cuda else 1)
    device = torch.device(args.device)
    if "cutmix" not in args.variants:
        sys.exit("the ratios are taken to cutmix: keep it in --variants")

    torch.manual_seed(0)
    model = build_model(args.model, "sdpa", args.image_size).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05)
    eager_model = eager_optimizer = None
    if "naive" in args.variants:
        eager_model = build_model(args.model, "eager").to(device).train()
        eager_model.load_state_dict(model.state_dict())
        eager_optimizer = torch.optim.AdamW(eager_model.parameters(), lr=1e-4, weight_decay=0.05)
    num_prefix = cls_token_layout(model).num_prefix_tokens
    mask_scale = int(MODEL_PRESETS[args.model].recipe["mask_scale"]) if family else 4
    patch, size = model_geometry(model)  # the token grid the class token attends to (PVT, CA-Swin: last stage)
    data_gen = torch.Generator().manual_seed(0)
    pixels = torch.randn(batch, 3, size, size, generator=data_gen).to(device)
    labels = torch.randint(0, model.config.num_labels, (batch,), generator=data_gen).to(device)

    def autocast() -> AbstractContextManager[Any]:
        if args.bf16:
            return torch.autocast(device.type, dtype=torch.bfloat16)
        return nullcontext()

    def sync() -> None:
        if on_cuda:
            torch.cuda.synchronize()

    total_steps = warmup + steps

    def make_step(index: int, variant: str) -> Callable[[int], None]:
        config = variant_config(variant, mask_scale)
        net, opt = (eager_model, eager_optimizer) if variant == "naive" else (model, optimizer)
        assert net is not None and opt is not None

        def step(step_index: int) -> None:
            progress = step_index / total_steps
            mix = mix_batch(pixels, config, patch, batch_generator(0, index, step_index))
            mix = mix.to(device)
            opt.zero_grad(set_to_none=True)
            with autocast():
                if variant == "naive":
                    loss = naive_step_loss(net, mix.pixel_values, labels, mix, config, num_prefix, progress)
                else:
                    result, _ = forward_mixed(
                        net, {"pixel_values": mix.pixel_values}, labels, mix, config, progress=progress
                    )
                    loss = result.loss
            loss.backward()
            opt.step()

        return step

    step_fns = {name: make_step(i, name) for i, name in enumerate(args.variants)}
    times: dict[str, list[float]] = {name: [] for name in args.variants}
    peak: dict[str, int] = dict.fromkeys(args.variants, 0)
    print(
        f"{args.model} batch {batch} on {device} ({'bf16 autocast' if args.bf16 else 'float32'}), "
        f"{warmup} warm-up + {steps} timed steps per variant, interleaved"
    )
    for step_index in range(total_steps):
        for name, fn in step_fns.items():
            sync()
            if on_cuda:
                torch.cuda.reset_peak_memory_stats(device)
            start = time.perf_counter()
            fn(step_index)
            sync()
            elapsed = time.perf_counter() - start
            if on_cuda:
                peak[name] = max(peak[name], torch.cuda.max_memory_allocated(device))
            if step_index >= warmup:
                times[name].append(elapsed)
        print(f"  round {step_index + 1}/{total_steps} done", flush=True)

    median_ms = {name: 1000 * statistics.median(t) for name, t in times.items()}
    images_per_s = {name: batch / (ms / 1000) for name, ms in median_ms.items()}
    ratio = {name: median_ms[name] / median_ms["cutmix"] for name in median_ms}
    peak_mb: dict[str, float | None] = {name: (peak[name] / 2**20 if on_cuda else None) for name in args.variants}
    for name in args.variants:
        mem = f"{peak_mb[name]:9.0f} MB" if peak_mb[name] is not None else "   (n/a on CPU)"
        print(
            f"  {name:9s} {median_ms[name]:9.1f} ms  {images_per_s[name]:8.1f} img/s  "
            f"{ratio[name]:5.3f}x cutmix  peak {mem}"
        )

    checks: dict[str, dict[str, Any]] = {}
    targets = TARGETS[device.type]
    if "mixpro" in median_ms:
        value = ratio["mixpro"]
        checks["mixpro_over_cutmix"] = {
            "value": value,
            "target": f"<= {targets['mixpro_over_cutmix']}",
            "pass": value <= targets["mixpro_over_cutmix"],
        }
    if on_cuda and "mixpro" in median_ms and "naive" in median_ms:
        value = median_ms["naive"] / median_ms["mixpro"]
        checks["naive_over_mixpro"] = {
            "value": value,
            "target": f">= {targets['naive_over_mixpro_min']}",
            "pass": value >= targets["naive_over_mixpro_min"],
        }
    if on_cuda and "mixpro" in peak:
        value = peak["mixpro"] / peak["cutmix"]
        limit = targets["peak_memory_mixpro_over_cutmix"]
        checks["peak_memory_mixpro_over_cutmix"] = {"value": value, "target": f"<= {limit}", "pass": value <= limit}
    if not on_cuda and "naive" in median_ms and "mixpro" in median_ms:
        # informative only on the CPU: no target
        checks["naive_over_mixpro"] = {"value": median_ms["naive"] / median_ms["mixpro"], "target": None, "pass": None}
    for name, check in checks.items():
        verdict = "" if check["pass"] is None else ("PASS" if check["pass"] else "FAIL")
        target = f"(target {check['target']})" if check["target"] else "(no target on this device)"
        print(f"{name} = {check['value']:.3f} {target} {verdict}")

    suffix = "" if args.model == "vit-s" else f"_{args.model}"
    write_result(
        f"train_step_{device.type}{suffix}",
        {
            "benchmark": "train step",
            "settings": {
                **vars(args),
                "batch": batch,
                "steps": steps,
                "warmup": warmup,
                "model_config": MODEL_CONFIGS.get(args.model) or preset_config(args.model).to_diff_dict(),
                "parameters": sum(p.numel() for p in model.parameters()),
                "optimizer": "AdamW(lr=1e-4, wd=0.05)",
            },
            "median_ms": median_ms,
            "images_per_s": images_per_s,
            "ratio_to_cutmix": ratio,
            "peak_memory_mb": peak_mb,
            "peak_memory_note": (
                "torch.cuda.max_memory_allocated over the variant's steps (weights + optimizer state included)"
                if on_cuda
                else "not measured on CPU: no per-variant allocator peak (shared RSS, glibc caching)"
            ),
            "step_times_ms": {name: [1000 * t for t in ts] for name, ts in times.items()},
            "checks": checks,
        },
    )


if __name__ == "__main__":
    main()
