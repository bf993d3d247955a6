"""Input pipeline throughput on this CPU: images/s per data-loader worker for the paper's 224² training recipe.

The recipe is ``mixpro_hf.transforms.build_transforms``' training pipeline (RandomResizedCrop to 224, flip,
RandAugment ``rand-m9-mstd0.5-inc1``, normalise, random erasing 0.25 "pixel") behind JPEG decoding, run by a
``torch.utils.data.DataLoader`` (batch 64) over a 🤗 ``datasets.Dataset`` with the transform attached
(``mixpro_hf.data.attach_transform``), with 0, 1 and 2 workers.

JPEG source: CIFAR-10 test images (``../shared/data/cifar10``) upscaled to 224² and re-encoded (quality 90); when
the files are absent, synthetic 224² images. ImageNet JPEGs are larger (~110 kB, ~500x375), so decoding costs
more: decoding alone of a synthetic 500x375 JPEG (quality 90) is timed too, to extrapolate.

    python benchmarks/bench_input_pipeline.py            # writes results/input_pipeline_cpu.json
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import write_result  # noqa: E402
from mixpro_hf.data import DataArguments, attach_transform  # noqa: E402
from mixpro_hf.transforms import build_transforms  # noqa: E402

CIFAR_TEST = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10" / "test.parquet"
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def jpeg(image: Image.Image, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def source_images(count: int, size: int) -> tuple[list[bytes], str]:
    """``count`` JPEGs of ``size``² (CIFAR-10 upscaled when available, else smooth random images)."""
    if CIFAR_TEST.is_file():
        import pyarrow.parquet as pq

        table = pq.read_table(CIFAR_TEST, columns=["img"]).slice(0, count)
        images = [Image.open(io.BytesIO(row["bytes"])).convert("RGB") for row in table.column("img").to_pylist()]
        source = f"CIFAR-10 test images upscaled (bicubic) to {size}x{size}, JPEG quality 90"
    else:
        rng = np.random.default_rng(0)
        images = [Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)) for _ in range(count)]
        source = f"synthetic smooth images upscaled to {size}x{size}, JPEG quality 90"
    return [jpeg(img.resize((size, size), Image.BICUBIC)) for img in images], source


def imagenet_like_jpeg() -> bytes:
    """A 500x375 JPEG (quality 90) with natural-image-like structure: smooth gradients plus noise."""
    rng = np.random.default_rng(0)
    base = np.asarray(Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)).resize((500, 375)))
    noisy = np.clip(base.astype(np.int16) + rng.integers(-20, 21, base.shape), 0, 255).astype(np.uint8)
    return jpeg(Image.fromarray(noisy))


def decode_rate(data: bytes, repeats: int) -> float:
    """Images/s of ``PIL.Image.open(...).convert('RGB')`` on one core."""
    start = time.perf_counter()
    for _ in range(repeats):
        Image.open(io.BytesIO(data)).convert("RGB")
    return repeats / (time.perf_counter() - start)


def loader_rate(dataset: Any, workers: int, batch: int, epochs: int) -> float:
    """Images/s of a DataLoader over ``dataset`` (first batch excluded: worker start-up)."""
    from torch.utils.data import DataLoader

    rates = []
    for _ in range(epochs):
        loader = DataLoader(
            dataset,
            batch_size=batch,
            shuffle=True,
            num_workers=workers,
            collate_fn=lambda rows: torch.stack([r["pixel_values"] for r in rows]),
            persistent_workers=False,
        )
        iterator = iter(loader)
        next(iterator)
        start, seen = time.perf_counter(), 0
        for pixels in iterator:
            seen += pixels.shape[0]
        rates.append(seen / (time.perf_counter() - start))
    return statistics.median(rates)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=384, help="images per pass (default 384: 6 batches of 64)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=2, help="passes per worker count (median)")
    parser.add_argument("--name", default="input_pipeline_cpu")
    args = parser.parse_args(argv)

    from datasets import Dataset
    from datasets import Image as DatasetsImage

    torch.set_num_threads(1)
    load = os.getloadavg()
    data, source = source_images(args.images, 224)
    dataset = Dataset.from_dict({"image": [{"bytes": d, "path": None} for d in data], "label": [0] * len(data)})
    dataset = dataset.cast_column("image", DatasetsImage())
    train_tf, _ = build_transforms(224, MEAN, STD, DataArguments())
    dataset = attach_transform(dataset, train_tf, "image", "label")

    small_decode = decode_rate(data[0], 300)
    big = imagenet_like_jpeg()
    big_decode = decode_rate(big, 100)
    # augmentation alone, on already-decoded 224² images
    decoded = [Image.open(io.BytesIO(d)).convert("RGB") for d in data[:128]]
    start = time.perf_counter()
    for img in decoded:
        train_tf(img)
    augment_rate = len(decoded) / (time.perf_counter() - start)

    per_workers = {}
    for workers in args.workers:
        rate = loader_rate(dataset, workers, args.batch, args.epochs)
        per_workers[str(workers)] = round(rate, 1)
        print(f"{workers} workers: {rate:7.1f} images/s")
    one_worker = per_workers.get("1") or per_workers.get("0")
    # per image: 1/rate = decode + augment; ImageNet-size decode replaces the 224² decode
    imagenet_per_worker = 1.0 / (1.0 / one_worker - 1.0 / small_decode + 1.0 / big_decode)
    payload = {
        "benchmark": "input pipeline",
        "settings": {
            "recipe": "RandomResizedCrop 224 (bicubic), hflip, RandAugment rand-m9-mstd0.5-inc1, normalise, "
            "RandomErasing 0.25 pixel (mixpro_hf.transforms.build_transforms)",
            "source": source,
            "source_jpeg_kb": round(statistics.mean(len(d) for d in data) / 1024, 1),
            "images": args.images,
            "batch": args.batch,
            "torch_threads_per_process": 1,
            "load_average_1_5_15": [round(x, 2) for x in load],
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
        },
        "images_per_s_by_workers": per_workers,
        "decode_only_images_per_s": {
            "224x224 source": round(small_decode, 1),
            f"500x375 synthetic, {len(big) // 1024} kB": round(big_decode, 1),
        },
        "augment_only_images_per_s": round(augment_rate, 1),
        "imagenet_estimate_images_per_s_per_worker": round(imagenet_per_worker, 1),
    }
    print(f"decode 224² {small_decode:.0f}/s, decode 500x375 {big_decode:.0f}/s, augment alone {augment_rate:.0f}/s")
    print(f"ImageNet-size estimate: {imagenet_per_worker:.0f} images/s per worker")
    write_result(args.name, payload)
    return 0


if __name__ == "__main__":
    sys.exit(main())
