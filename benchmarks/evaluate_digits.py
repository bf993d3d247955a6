"""``mixpro-evaluate`` on two digits checkpoints, without MixPro and with it: the README's example, generated.

Trains the embedded default job (``mixpro-train``: a 3-block ViT on scikit-learn's 8x8 digits, 60 epochs) twice with
the same seed, ``--mix_method none`` and ``--mix_method mixpro`` (one seed: an example of what the command reports,
not a comparison of the methods; ``benchmarks/digits.py`` compares them over seeds), then runs

    mixpro-evaluate none mixpro --dataset digits-test --ood_dataset photo-crops --output_dir results/evaluate_digits

on the 360 held-out test digits written as an image folder (one sub-folder per class), with 360 grey 8x8 crops of
scikit-learn's two sample photographs as the out-of-distribution set. Writes ``results/evaluate_digits/`` (the
command's JSON per model, ``results.md``, ``occlusion.png``) and ``results/evaluate_digits.json`` (settings and the
table, for ``make_tables.py``, which puts the table into the README's "Robustness evaluation" section).

    python benchmarks/evaluate_digits.py                      # about 5 minutes on 2 CPU cores
    python benchmarks/evaluate_digits.py --num_train_epochs 2  # a quick look (the README says the budget)
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
from benchmarks.common import RESULTS_DIR, write_result  # noqa: E402
from mixpro_hf.data import digits_dataset  # noqa: E402
from mixpro_hf.evaluate_cli import RESULTS_TABLE  # noqa: E402
from mixpro_hf.evaluate_cli import main as evaluate_main  # noqa: E402

METHODS = ("none", "mixpro")
SEED = 0
NAME = "evaluate_digits"


def write_test_digits(folder: Path, seed: int = SEED) -> int:
    """The test split of the default job (``digits_dataset(seed)``, held out of training) as an image folder."""
    test = digits_dataset(seed)["test"]
    names = test.features["label"].names
    for i, row in enumerate(test):
        target = folder / names[row["label"]]
        target.mkdir(parents=True, exist_ok=True)
        row["image"].save(target / f"{i:04d}.png")
    return len(test)


def write_photo_crops(folder: Path, count: int = 360, seed: int = SEED) -> int:
    """``count`` grey 8x8 images (random 32x32 crops, downscaled) of scikit-learn's two sample photographs:
    natural images that are no digit, the out-of-distribution set."""
    from sklearn.datasets import load_sample_images

    photos = [np.asarray(Image.fromarray(p).convert("L")) for p in load_sample_images().images]
    rng = np.random.default_rng(seed)
    target = folder / "photo"
    target.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        photo = photos[i % len(photos)]
        top, left = rng.integers(0, photo.shape[0] - 32), rng.integers(0, photo.shape[1] - 32)
        crop = Image.fromarray(photo[top : top + 32, left : left + 32]).resize((8, 8), Image.Resampling.BICUBIC)
        crop.save(target / f"{i:04d}.png")
    return count


def train(method: str, output_dir: Path, epochs: float) -> float:
    """``mixpro-train`` (the default job) with ``--mix_method method``; its wall time."""
    beside = Path(sys.executable).with_name("mixpro-train")
    command = [str(beside) if beside.exists() else "mixpro-train", "--mix_method", method, "--seed", str(SEED)]
    command += ["--num_train_epochs", str(epochs), "--output_dir", str(output_dir), "--eval_strategy", "no"]
    command += ["--save_strategy", "no", "--report_to", "none", "--disable_tqdm", "True"]
    start = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, cwd=REPO_ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"mixpro-train --mix_method {method} exited {proc.returncode}\n{proc.stderr[-3000:]}")
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num_train_epochs", type=float, default=60.0, help="training budget of each checkpoint")
    parser.add_argument("--work_dir", type=Path, default=REPO_ROOT / "outputs" / NAME, help="checkpoints and images")
    args = parser.parse_args(argv)
    if args.work_dir.exists():
        shutil.rmtree(args.work_dir)  # this script's own scratch folder
    data, ood = args.work_dir / "digits-test", args.work_dir / "photo-crops"
    num_test, num_ood = write_test_digits(data), write_photo_crops(ood)
    train_seconds = {}
    for method in METHODS:
        train_seconds[method] = train(method, args.work_dir / method, args.num_train_epochs)
        print(f"trained {method} in {train_seconds[method]:.0f} s")
    out = RESULTS_DIR.resolve() / NAME
    command = [*METHODS, "--dataset", data.name, "--ood_dataset", ood.name, "--output_dir", str(out)]
    command += ["--overwrite_output_dir", "True", "--batch_size", "128"]
    start = time.perf_counter()
    here = Path.cwd()
    os.chdir(args.work_dir)  # short names in the results: the checkpoints "none" and "mixpro", "digits-test"
    try:
        status = evaluate_main(command)
    finally:
        os.chdir(here)
    if status != 0:
        raise SystemExit("mixpro-evaluate failed")
    write_result(
        NAME,
        {
            "benchmark": "mixpro-evaluate digits",
            "settings": {
                "methods": list(METHODS),
                "seed": SEED,
                "num_train_epochs": args.num_train_epochs,
                "train_command": f"mixpro-train --mix_method M --seed {SEED} --num_train_epochs E",
                "evaluate_command": "mixpro-evaluate "
                + " ".join(command).replace(str(out), f"benchmarks/results/{NAME}"),
                "num_test_images": num_test,
                "num_ood_images": num_ood,
            },
            "train_seconds": train_seconds,
            "evaluate_seconds": time.perf_counter() - start,
            "table": (out / RESULTS_TABLE).read_text(),
            "plot": f"{NAME}/occlusion.png",
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
