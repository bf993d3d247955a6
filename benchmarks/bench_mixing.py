"""Cost of mixing one batch: MaskMix, CutMix, Mixup and a reference-style MaskMix loop vs timm's blend.

The baseline is timm's in-place Mixup blend of the same batch,
``x.mul_(lam).add_(x.flip(0).mul_(1 - lam))``. All variants are timed interleaved in one process
(round-robin, median of the rounds), so machine noise hits them alike.

    python benchmarks/bench_mixing.py                 # CPU, 128 x 3 x 224 x 224, writes mixing_cpu.json
    python benchmarks/bench_mixing.py --device cuda   # GPU, writes mixing_cuda.json
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import write_result  # noqa: E402
from mixpro_hf import cutmix, maskmix, mixup  # noqa: E402


def reference_loop_maskmix(x: torch.Tensor, patch_size: int, mask_scale: int) -> torch.Tensor:
    """Our re-implementation of the authors' MaskMix step: a per-sample NumPy loop builds pixel masks."""
    batch, _, height, width = x.shape
    mask_size = patch_size * mask_scale
    side = math.ceil(height / mask_size)
    cells = side * side
    kept = math.ceil(cells * np.random.beta(1.0, 1.0))
    masks = []
    for _ in range(batch):
        flat = np.zeros(cells, dtype=np.float32)
        flat[np.random.permutation(cells)[:kept]] = 1
        grid = flat.reshape(side, side).repeat(mask_size, 0).repeat(mask_size, 1)[:height, :width]
        masks.append(grid)
    mask = torch.from_numpy(np.stack(masks)).unsqueeze(1).to(x.device)
    perm = torch.randperm(batch, device=x.device)
    return x * mask + x[perm] * (1 - mask)


def timm_blend(x: torch.Tensor) -> torch.Tensor:
    lam = 0.7
    return x.mul_(lam).add_(x.flip(0).mul_(1.0 - lam))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--patch", type=int, default=16)
    parser.add_argument("--mask-scale", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args()

    device = torch.device(args.device)
    x = torch.rand(args.batch, 3, args.size, args.size, device=device)
    gen = torch.Generator(device=device).manual_seed(0)
    np.random.seed(0)
    variants: dict[str, Callable[[], object]] = {
        "timm_blend": lambda: timm_blend(x),
        "maskmix": lambda: maskmix(x, patch_size=args.patch, mask_scale=args.mask_scale, generator=gen),
        "cutmix": lambda: cutmix(x, generator=gen, patch_size=args.patch),
        "mixup": lambda: mixup(x, generator=gen, patch_size=args.patch),
        "reference_loop_maskmix": lambda: reference_loop_maskmix(x, args.patch, args.mask_scale),
    }

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    times: dict[str, list[float]] = {name: [] for name in variants}
    for round_index in range(args.warmup + args.rounds):
        for name, fn in variants.items():
            sync()
            start = time.perf_counter()
            fn()
            sync()
            if round_index >= args.warmup:
                times[name].append(time.perf_counter() - start)

    median_ms = {name: 1000 * statistics.median(t) for name, t in times.items()}
    ratio = {name: median_ms[name] / median_ms["timm_blend"] for name in variants}
    print(f"batch {args.batch}x3x{args.size}x{args.size} float32 on {device}, {args.rounds} interleaved rounds")
    for name in variants:
        print(f"  {name:24s} {median_ms[name]:9.2f} ms   {ratio[name]:5.2f}x timm blend")
    target = 1.5
    verdict = "PASS" if ratio["maskmix"] <= target else "FAIL"
    print(f"MaskMix / timm blend = {ratio['maskmix']:.2f}x (target <= {target}x): {verdict}")
    write_result(
        f"mixing_{device.type}",
        {
            "benchmark": "mixing cost per batch",
            "settings": vars(args),
            "median_ms": median_ms,
            "ratio_to_timm_blend": ratio,
            "maskmix_target_ratio": target,
            "maskmix_within_target": ratio["maskmix"] <= target,
        },
    )


if __name__ == "__main__":
    main()
