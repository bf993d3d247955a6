"""CIFAR-10 from scratch: the accuracy harness for the paper's comparisons (Tables 1, 6, 7, 10) and §4.3.1.

Every method trains the same ViT (DeiT-Tiny size by default: hidden 192, 12 layers, 3 heads, MLP 768,
32x32 images, 4x4 patches, 8x8 = 64 patch tokens) with the same recipe and budget: AdamW (lr
``1e-3 * batch / 1024`` unless ``--lr``; weight decay 0.05), cosine schedule with linear warm-up,
label smoothing 0.1, random crop (padding 4) + horizontal flip. Only the mixing differs
(:func:`mixpro_hf.recipe.mix_batch`, generator ``batch_generator(seed, 0, step)``), and the loss is
:func:`mixpro_hf.step.forward_mixed` (PAL / TransMix attention captured with SDPA kept).

A method is a ``MixProConfig`` method name, optionally with overrides for the ablations, e.g.
``mixpro:alpha_strategy=linear`` (Table 10), ``maskmix:mask_scale=1`` (Table 7),
``mixpro:maskmix_prob=1.0``. The default ``--mask-scale 2`` gives a 4x4 = 16-cell mask on the 8x8 patch
grid, the same cell count as the paper's 4x cells on ImageNet's 14x14 grid.

Data: the 🤗 ``datasets`` Parquet export (``img`` {bytes, path} JPEG, ``label``) is decoded once into a
uint8 tensor ``(N, 3, 32, 32)``, cached under ``--cache-dir`` (``.data/``, git-ignored), moved to the
device whole (150 MB), and augmented there in batch (one gather does crop + flip).

Evaluation on the test images (``--max-test`` takes a fixed, class-balanced subset: the export is sorted
by label): top-1, top-5, ECE
(:func:`mixpro_hf.metrics.classification_metrics`), and top-1 under random patch dropping (paper
§4.3.1, after Naseer et al. 2021): a random 0, 10, ..., 90 % of the 4x4 patches of each normalised
test image are set to 0; the drops are drawn from a fixed seed, so every model sees the same ones.

Writes ``results/cifar10_accuracy_<device>[_smoke].json`` (every run, mean and sample std (ddof=1)
over seeds per method, settings, ``"smoke"``) and ``results/cifar10_robustness_<device>[_smoke].png``.
A run is flagged ``smoke`` (and the files get the ``_smoke`` suffix) when it trains fewer than 5
epochs' worth of images, subsamples the train or test set, or shrinks the model; ``--smoke`` forces it.

CPU smoke run (minutes, not evidence)::

    python benchmarks/cifar10.py --layers 2 --hidden 64 --heads 2 --max-steps 30 --batch 64 --lr 1e-3 \\
        --max-test 1000 --methods none mixup_cutmix transmix maskmix mixpro --seeds 0 1

GPU run (one H100, about 8 minutes for 5 methods x 2 seeds; the budget is an ESTIMATE, not measured:
DeiT-Tiny at 32x32 is about 2 GFLOP per training image, assumed ~12k images/s with bf16 autocast and no
compile, so 8 epochs = 400k images is ~35 s per run, plus ~5 s of evaluation, plus a few seconds of JPEG
decoding once)::

    python benchmarks/cifar10.py --device cuda --epochs 8 --batch 512 \\
        --methods none mixup_cutmix transmix maskmix mixpro --seeds 0 1

Check the printed images/s of the first run: if it is far from the estimate, scale ``--epochs``.
"""

from __future__ import annotations

import argparse
import io
import math
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
from benchmarks.common import RESULTS_DIR, write_result  # noqa: E402
from mixpro_hf import (  # noqa: E402
    MixProConfig,
    batch_generator,
    capture_cls_attention,
    classification_metrics,
    forward_mixed,
    learnable_alpha_parameter,
    mean_mix_stats,
    mix_batch,
    optimizer_param_groups,
)
from mixpro_hf.config_overrides import typed_overrides  # noqa: E402
from mixpro_hf.robustness import DROP_RATIOS, drop_patches  # noqa: E402

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
DEFAULT_METHODS = ("none", "mixup_cutmix", "transmix", "maskmix", "mixpro")
FULL_MODEL = (12, 192, 3)  # layers, hidden, heads of DeiT-Tiny
SMOKE_EPOCHS = 5.0


# ----------------------------------------------------------------------------------------------
# data


def resolve_data_dir(data_dir: str | Path) -> Path:
    """``data_dir`` resolved against the repository root; exits with a clear message if it is missing."""
    path = Path(data_dir)
    if not path.is_absolute():
        path = (REPO_ROOT / path).resolve()
    missing = [name for name in ("train.parquet", "test.parquet") if not (path / name).is_file()]
    if missing:
        raise SystemExit(
            f"CIFAR-10 Parquet files not found: {', '.join(str(path / m) for m in missing)} "
            f"(--data-dir {data_dir!s} resolved to {path}; expected the 🤗 datasets export with columns img, label)"
        )
    return path


def decode_parquet(path: str | Path, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode a CIFAR-10 Parquet file (``img`` {bytes, path} JPEG/PNG, ``label``) into tensors.

    Returns:
        ``images`` uint8 ``(N, 3, 32, 32)`` and ``labels`` int64 ``(N,)``; ``limit`` keeps the first rows.
    """
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    from PIL import Image

    table = pq.read_table(path, columns=["img", "label"])
    if limit is not None:
        table = table.slice(0, limit)
    blobs = pc.struct_field(table.column("img"), "bytes").to_pylist()
    labels = torch.tensor(table.column("label").to_pylist(), dtype=torch.int64)
    pixels = np.empty((len(blobs), 32, 32, 3), dtype=np.uint8)
    for index, blob in enumerate(blobs):
        image = np.asarray(Image.open(io.BytesIO(blob)).convert("RGB"))
        if image.shape != (32, 32, 3):
            raise ValueError(f"{path}: row {index} is {image.shape[1]}x{image.shape[0]}, expected 32x32 CIFAR images")
        pixels[index] = image
    return torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous(), labels


def load_split(data_dir: Path, split: str, cache_dir: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Decoded ``split`` (``train``/``test``), from the ``.pt`` cache when it matches the Parquet file."""
    source = data_dir / f"{split}.parquet"
    stat = source.stat()
    key = {"source": str(source), "size": stat.st_size, "mtime": int(stat.st_mtime)}
    cache = cache_dir / f"cifar10_{split}_uint8.pt"
    if cache.is_file():
        cached = torch.load(cache, weights_only=True)
        if cached.get("key") == key:
            return cached["images"], cached["labels"]
    start = time.perf_counter()
    images, labels = decode_parquet(source)
    print(f"decoded {len(labels)} {split} images in {time.perf_counter() - start:.1f} s -> {cache}")
    cache_dir.mkdir(parents=True, exist_ok=True)
    torch.save({"key": key, "images": images, "labels": labels}, cache)
    return images, labels


def balanced_subset(labels: torch.Tensor, count: int | None, seed: int = 0) -> torch.Tensor:
    """Indices of ``count`` samples (all if None), shuffled with ``seed`` and balanced over the classes
    (the Parquet exports are sorted by label, so the first rows would all be one class)."""
    total = labels.shape[0]
    if count is None or count >= total:
        return torch.arange(total)
    perm = torch.randperm(total, generator=torch.Generator().manual_seed(seed))
    one_hot = F.one_hot(labels[perm])
    rank = (one_hot.cumsum(0) * one_hot).sum(1)  # 1-based rank of each sample within its class
    return perm[torch.argsort(rank, stable=True)[:count]].sort().values


# ----------------------------------------------------------------------------------------------
# device-side augmentation and evaluation transforms


def augment_batch(
    images: torch.Tensor, generator: torch.Generator, padding: int = 4, flip: bool = True
) -> torch.Tensor:
    """Random crop with zero padding + random horizontal flip, per sample, in one gather.

    Args:
        images: ``(B, C, H, W)`` on any device (uint8 or float).
        generator: CPU generator for the per-sample offsets and flips (tiny draws; the same seed gives
            the same crops on every device).
    Returns:
        ``(B, C, H, W)``, same dtype and device.
    """
    batch, _, height, width = images.shape
    device = images.device
    offsets = torch.randint(0, 2 * padding + 1, (batch, 2), generator=generator).to(device)
    flips = (
        (torch.rand(batch, generator=generator) < 0.5).to(device)
        if flip
        else torch.zeros(batch, dtype=torch.bool, device=device)
    )
    padded = F.pad(images, (padding, padding, padding, padding))
    rows = offsets[:, :1] + torch.arange(height, device=device)  # (B, H)
    base = torch.arange(width, device=device)
    cols = offsets[:, 1:] + torch.where(flips.unsqueeze(1), width - 1 - base, base)  # (B, W)
    index = torch.arange(batch, device=device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[index, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
    return out.permute(0, 3, 1, 2).contiguous()


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 ``(B, 3, H, W)`` -> float32, scaled to [0, 1] and normalised with the CIFAR-10 mean/std."""
    mean = torch.tensor(CIFAR_MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR_STD, device=images.device).view(1, 3, 1, 1)
    return (images.float() / 255.0 - mean) / std


# ----------------------------------------------------------------------------------------------
# model, settings, one run


@dataclass
class Settings:
    """Model, recipe and budget shared by every method (one JSON record of the run)."""

    layers: int = 12
    hidden: int = 192
    heads: int = 3
    mlp: int | None = None  # default 4 * hidden
    patch_size: int = 4
    epochs: float = 8.0
    max_steps: int | None = None
    batch: int = 512
    lr: float | None = None  # default 1e-3 * batch / 1024
    weight_decay: float = 0.05
    warmup_frac: float = 0.05
    label_smoothing: float = 0.1
    maskmix_prob: float = 0.5
    mask_scale: int = 2
    alpha_strategy: str = "cosine"
    bf16: bool = True  # autocast, CUDA only
    compile: bool = False
    eval_batch: int = 1000
    drop_ratios: tuple[float, ...] = DROP_RATIOS
    drop_seed: int = 1234

    @property
    def base_lr(self) -> float:
        return self.lr if self.lr is not None else 1e-3 * self.batch / 1024

    def total_steps(self, num_train: int) -> int:
        per_epoch = max(1, num_train // self.batch)
        steps = max(1, math.ceil(self.epochs * per_epoch))
        return min(steps, self.max_steps) if self.max_steps is not None else steps


def parse_method(spec: str, settings: Settings) -> MixProConfig:
    """``"mixpro"`` or ``"mixpro:alpha_strategy=linear,maskmix_prob=1.0"`` -> its :class:`MixProConfig`."""
    name, _, rest = spec.partition(":")
    values: dict[str, Any] = {
        "mix_method": name,
        "label_smoothing_factor": settings.label_smoothing,
        "maskmix_prob": settings.maskmix_prob,
        "mask_scale": settings.mask_scale,
        "alpha_strategy": settings.alpha_strategy,
    }
    defaults = MixProConfig()
    current = {f.name: getattr(defaults, f.name) for f in fields(MixProConfig)}
    if rest.strip():  # the --config_overrides reader: lists, booleans, numbers; a bad entry or key is one line
        values.update(typed_overrides(rest, current, "MixProConfig", flag=f"method {spec!r}"))
    return MixProConfig(**values)


def build_model(settings: Settings, num_labels: int = 10, image_size: int = 32) -> nn.Module:
    """A ViT classifier (random init) of the settings' size; SDPA attention."""
    import transformers as tf

    config = tf.ViTConfig(
        hidden_size=settings.hidden,
        num_hidden_layers=settings.layers,
        num_attention_heads=settings.heads,
        intermediate_size=settings.mlp or 4 * settings.hidden,
        image_size=image_size,
        patch_size=settings.patch_size,
        num_labels=num_labels,
        attn_implementation="sdpa",
    )
    return tf.ViTForImageClassification(config)


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, settings: Settings, drop_ratio: float = 0.0) -> np.ndarray:
    """Logits (float32 NumPy) of uint8 test images, optionally with a fraction of patches dropped."""
    model.eval()
    generator = torch.Generator().manual_seed(settings.drop_seed + int(round(drop_ratio * 100)))
    out = []
    use_bf16 = settings.bf16 and images.device.type == "cuda"
    for start in range(0, images.shape[0], settings.eval_batch):
        x = normalize(images[start : start + settings.eval_batch])
        if drop_ratio > 0:
            x = drop_patches(x, drop_ratio, settings.patch_size, generator)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_bf16):
            logits = model(pixel_values=x).logits
        out.append(logits.float().cpu())
    return torch.cat(out).numpy()


def train_one(
    spec: str,
    seed: int,
    data: dict[str, torch.Tensor],
    settings: Settings,
    device: torch.device,
    log_every: int = 0,
    evaluate: bool = True,
    stop_after_s: float | None = None,
    mark_every: int = 0,
) -> dict[str, Any]:
    """Train one model with method ``spec`` and ``seed`` on ``data`` (``train_x`` uint8 (N,3,32,32),
    ``train_y``, ``test_x``, ``test_y``, already on ``device``) and evaluate it.

    ``evaluate=False`` skips the test-set evaluation; ``stop_after_s`` ends training that many seconds after
    the warm-up steps (a throughput probe, not a complete run: ``"complete"`` is then False); ``mark_every``
    records the wall clock (``time.time()``) every that many steps in ``"step_marks"``, so that concurrent
    processes can be compared over a common window. ``"steady_images_per_s"`` leaves out the first steps (CUDA warm-up,
    ``torch.compile``), whose cost is ``"startup_seconds"``."""
    config = parse_method(spec, settings)
    train_x, train_y = data["train_x"], data["train_y"]
    torch.manual_seed(seed)
    model = build_model(settings, image_size=train_x.shape[-1]).to(device)
    learnable_alpha = learnable_alpha_parameter(config, device)
    extra = [learnable_alpha] if learnable_alpha is not None else []
    optimizer = torch.optim.AdamW(
        optimizer_param_groups(model, settings.weight_decay, extra), lr=settings.base_lr, fused=device.type == "cuda"
    )
    total = settings.total_steps(train_x.shape[0])
    warmup = max(1, round(settings.warmup_frac * total))

    def lr_lambda(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda)
    net: nn.Module = model
    if settings.compile:
        net = torch.compile(model)
        if config.uses_attention:  # register the capture hooks before the first compiled call
            with capture_cls_attention(net):
                pass
    use_bf16 = settings.bf16 and device.type == "cuda"
    per_epoch = max(1, train_x.shape[0] // settings.batch)
    order = torch.empty(0, dtype=torch.long)
    losses: list[torch.Tensor] = []
    stats: list[dict[str, torch.Tensor]] = []
    model.train()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    warm_steps = min(10, max(1, total // 10))
    warm_time = start
    marks: list[tuple[int, float]] = []
    steps_done = 0
    for step in range(total):
        if step == warm_steps:
            sync()
            warm_time = time.perf_counter()
        if mark_every and step % mark_every == 0:
            marks.append((step, time.time()))
        if stop_after_s is not None and step > warm_steps and time.perf_counter() - warm_time > stop_after_s:
            break
        epoch, position = divmod(step, per_epoch)
        if position == 0:
            order = torch.randperm(train_x.shape[0], generator=batch_generator(seed, 2, epoch)).to(device)
        index = order[position * settings.batch : (position + 1) * settings.batch]
        images = normalize(augment_batch(train_x[index], batch_generator(seed, 1, step)))
        labels = train_y[index]
        mix = mix_batch(images, config, settings.patch_size, batch_generator(seed, 0, step)).to(device)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_bf16):
            result, _ = forward_mixed(
                net,
                {"pixel_values": mix.pixel_values},
                labels,
                mix,
                config,
                progress=step / total,
                learnable_alpha=learnable_alpha,
            )
        optimizer.zero_grad(set_to_none=True)
        result.loss.backward()
        optimizer.step()
        scheduler.step()
        losses.append(result.loss.detach())
        stats.append(result.stats)
        if log_every and (step + 1) % log_every == 0:
            print(f"    step {step + 1}/{total} loss {float(result.loss):.4f}", flush=True)
        steps_done = step + 1
    sync()
    end = time.perf_counter()
    if mark_every:
        marks.append((steps_done, time.time()))
    train_seconds = end - start
    steady_steps = steps_done - warm_steps
    steady_rate = steady_steps * settings.batch / (end - warm_time) if steady_steps > 0 else None
    loss_curve = torch.stack(losses).float().cpu()
    tail = loss_curve[-max(1, len(loss_curve) // 10) :]
    run: dict[str, Any] = {"method": spec, "seed": seed, "complete": steps_done == total}
    if evaluate:
        eval_start = time.perf_counter()
        test_x, test_y = data["test_x"], data["test_y"].cpu().numpy()
        metrics = classification_metrics(predict(net, test_x, settings), test_y)
        robustness = {}
        for ratio in settings.drop_ratios:
            logits = predict(net, test_x, settings, ratio) if ratio > 0 else None
            robustness[f"{ratio:.1f}"] = (
                metrics["accuracy"] if logits is None else float((logits.argmax(1) == test_y).mean())
            )
        run.update(metrics, robustness_top1=robustness, eval_seconds=time.perf_counter() - eval_start)
    run.update(
        steps=steps_done,
        final_train_loss=float(tail.mean()),
        mix_stats=mean_mix_stats(stats, learnable_alpha),
        train_seconds=train_seconds,
        images_per_s=steps_done * settings.batch / train_seconds,
        steady_images_per_s=steady_rate,
        steady_seconds=end - warm_time,
        startup_seconds=(train_seconds - steps_done * settings.batch / steady_rate if steady_rate else train_seconds),
    )
    if mark_every:
        run["step_marks"] = marks
    return run


def summarize(runs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Mean and sample std (ddof=1; 0 for one seed) of the metrics over a method's runs."""
    keys = ["accuracy", "top5_accuracy", "ece"] + [f"drop_{r}" for r in runs[0]["robustness_top1"]]

    def value(run: dict[str, Any], key: str) -> float:
        return run["robustness_top1"][key[5:]] if key.startswith("drop_") else run[key]

    mean = {k: statistics.fmean(value(r, k) for r in runs) for k in keys}
    std = {k: statistics.stdev([value(r, k) for r in runs]) if len(runs) > 1 else 0.0 for k in keys}
    return {"mean": mean, "std": std}


def run_experiment(
    data: dict[str, torch.Tensor],
    methods: Sequence[str],
    seeds: Sequence[int],
    settings: Settings,
    device: torch.device,
    log_every: int = 0,
) -> dict[str, Any]:
    """Train and evaluate every method x seed (same data, recipe and budget); per-method runs and summary."""
    data = {k: v.to(device) for k, v in data.items()}
    results: dict[str, Any] = {}
    for spec in methods:
        parse_method(spec, settings)  # fail early on a bad spec
    for spec in methods:
        runs = []
        for seed in seeds:
            run = train_one(spec, seed, data, settings, device, log_every)
            print(
                f"  {spec:14s} seed {seed}: top-1 {run['accuracy']:.4f} top-5 {run['top5_accuracy']:.4f} "
                f"ECE {run['ece']:.4f} top-1@50% drop {run['robustness_top1']['0.5']:.4f} "
                f"({run['steps']} steps, {run['images_per_s']:.0f} img/s)",
                flush=True,
            )
            runs.append(run)
        results[spec] = {"runs": runs, **summarize(runs)}
    return results


def is_smoke(
    settings: Settings, num_train: int, num_test: int, full_train: int = 50_000, full_test: int = 10_000
) -> bool:
    """Whether a run is too small to be evidence (see the module docstring)."""
    images_seen = settings.total_steps(num_train) * settings.batch
    return (
        images_seen < SMOKE_EPOCHS * full_train
        or num_train < full_train
        or num_test < full_test
        or (settings.layers, settings.hidden, settings.heads) != FULL_MODEL
    )


def plot_robustness(results: dict[str, Any], path: Path, title: str) -> None:
    """Top-1 vs drop ratio, one line per method (mean over seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for spec, entry in results.items():
        ratios = sorted(entry["runs"][0]["robustness_top1"], key=float)
        ax.plot(
            [100 * float(r) for r in ratios], [100 * entry["mean"][f"drop_{r}"] for r in ratios], marker="o", label=spec
        )
    ax.set_xlabel("patches dropped (%)")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(f"wrote {path}")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default="../shared/data/cifar10", help="relative to the repository root")
    parser.add_argument("--cache-dir", default=".data", help="decoded-tensor cache, relative to the repository root")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=("cpu", "cuda"))
    parser.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--hidden", type=int, default=192)
    parser.add_argument("--heads", type=int, default=3)
    parser.add_argument("--mlp", type=int, default=None, help="default 4 * hidden")
    parser.add_argument("--epochs", type=float, default=8.0)
    parser.add_argument("--max-steps", type=int, default=None)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--lr", type=float, default=None, help="default 1e-3 * batch / 1024")
    parser.add_argument("--weight-decay", type=float, default=0.05)
    parser.add_argument("--warmup-frac", type=float, default=0.05, help="linear warm-up, fraction of the steps")
    parser.add_argument("--maskmix-prob", type=float, default=0.5)
    parser.add_argument("--mask-scale", type=int, default=2)
    parser.add_argument("--alpha-strategy", default="cosine")
    parser.add_argument("--no-bf16", action="store_true", help="float32 on CUDA too")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument("--max-train", type=int, default=None, help="N training images, class-balanced (smoke runs)")
    parser.add_argument("--max-test", type=int, default=None, help="N test images, class-balanced (smoke runs)")
    parser.add_argument("--smoke", action="store_true", help="flag the results as a smoke run whatever the budget")
    parser.add_argument("--log-every", type=int, default=0)
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available")
    settings = Settings(
        layers=args.layers,
        hidden=args.hidden,
        heads=args.heads,
        mlp=args.mlp,
        epochs=args.epochs,
        max_steps=args.max_steps,
        batch=args.batch,
        lr=args.lr,
        weight_decay=args.weight_decay,
        warmup_frac=args.warmup_frac,
        maskmix_prob=args.maskmix_prob,
        mask_scale=args.mask_scale,
        alpha_strategy=args.alpha_strategy,
        bf16=not args.no_bf16,
        compile=args.compile,
    )
    for spec in args.methods:  # a bad method spec: one line (exit 2) before any data is read
        try:
            parse_method(spec, settings)
        except ValueError as err:
            parser.error(str(err))
    data_dir = resolve_data_dir(args.data_dir)
    cache_dir = Path(args.cache_dir) if Path(args.cache_dir).is_absolute() else REPO_ROOT / args.cache_dir
    train_x, train_y = load_split(data_dir, "train", cache_dir)
    test_x, test_y = load_split(data_dir, "test", cache_dir)
    full_train, full_test = len(train_y), len(test_y)
    keep = balanced_subset(train_y, args.max_train)
    train_x, train_y = train_x[keep], train_y[keep]
    keep = balanced_subset(test_y, args.max_test)
    test_x, test_y = test_x[keep], test_y[keep]
    smoke = args.smoke or is_smoke(settings, len(train_y), len(test_y), full_train, full_test)
    total = settings.total_steps(len(train_y))
    print(
        f"CIFAR-10 on {device}: {len(train_y)} train / {len(test_y)} test images, ViT {settings.layers}L "
        f"{settings.hidden}d {settings.heads}h, {total} steps of {settings.batch} (lr {settings.base_lr:.2e}), "
        f"{'SMOKE run' if smoke else 'full run'}"
    )
    data = {"train_x": train_x, "train_y": train_y, "test_x": test_x, "test_y": test_y}
    results = run_experiment(data, args.methods, args.seeds, settings, device, args.log_every)

    name = f"cifar10_accuracy_{device.type}{'_smoke' if smoke else ''}"
    for spec, entry in results.items():
        mean, std = entry["mean"], entry["std"]
        print(
            f"{spec:14s} top-1 {100 * mean['accuracy']:.2f} ± {100 * std['accuracy']:.2f}  "
            f"top-5 {100 * mean['top5_accuracy']:.2f}  ECE {100 * mean['ece']:.2f}  "
            f"top-1@50% drop {100 * mean['drop_0.5']:.2f}"
        )
    write_result(
        name,
        {
            "benchmark": "cifar10 accuracy",
            "smoke": smoke,
            "settings": {
                **asdict(settings),
                "base_lr": settings.base_lr,
                "total_steps": total,
                "num_train": len(train_y),
                "num_test": len(test_y),
                "methods": args.methods,
                "seeds": args.seeds,
                "device": str(device),
                "data_dir": str(data_dir),
            },
            "results": results,
        },
    )
    plot_robustness(
        results,
        RESULTS_DIR / f"cifar10_robustness_{device.type}{'_smoke' if smoke else ''}.png",
        f"CIFAR-10 random patch dropping{' (SMOKE run, not evidence)' if smoke else ''}\n"
        f"{total} steps of {settings.batch}, mean of seeds {args.seeds}",
    )


if __name__ == "__main__":
    main()
