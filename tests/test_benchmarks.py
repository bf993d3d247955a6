"""Tests of the benchmark scripts: CIFAR-10 harness pieces, a tiny synthetic run, and the README tables."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from benchmarks import cifar10, digits, make_tables

REPO_ROOT = Path(__file__).resolve().parents[1]

DATA_DIR = REPO_ROOT.parent / "shared" / "data" / "cifar10"


def _patch_zero_counts(images: torch.Tensor, patch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image: number of all-zero patches and number of partly-zero patches."""
    b, c, h, w = images.shape
    patches = images.reshape(b, c, h // patch, patch, w // patch, patch).permute(0, 2, 4, 1, 3, 5)
    patches = patches.reshape(b, (h // patch) * (w // patch), -1)
    zero = patches == 0
    return zero.all(-1).sum(1), (zero.any(-1) & ~zero.all(-1)).sum(1)


@pytest.mark.parametrize("ratio", [0.0, 0.1, 0.3, 0.5, 0.9, 1.0])
def test_drop_patches_zeroes_exact_fraction_of_whole_patches(ratio: float) -> None:
    images = torch.rand(6, 3, 32, 32) + 0.5  # no zero pixel to begin with
    out = cifar10.drop_patches(images, ratio, 4, torch.Generator().manual_seed(0))
    full, partial = _patch_zero_counts(out, 4)
    assert torch.equal(full, torch.full((6,), round(ratio * 64)))
    assert int(partial.sum()) == 0
    kept = out != 0
    assert torch.equal(out[kept], images[kept])  # untouched elsewhere
    assert (images > 0).all()  # input not modified


def test_drop_patches_differs_per_image_and_is_seeded() -> None:
    images = torch.ones(4, 3, 32, 32)
    a = cifar10.drop_patches(images, 0.5, 4, torch.Generator().manual_seed(1))
    b = cifar10.drop_patches(images, 0.5, 4, torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    assert not torch.equal(a[0], a[1])
    with pytest.raises(ValueError, match="ratio"):
        cifar10.drop_patches(images, 1.5, 4, torch.Generator())


def test_augment_batch_shapes_seed_and_content() -> None:
    images = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    a = cifar10.augment_batch(images, torch.Generator().manual_seed(3))
    b = cifar10.augment_batch(images, torch.Generator().manual_seed(3))
    c = cifar10.augment_batch(images, torch.Generator().manual_seed(4))
    assert a.shape == images.shape and a.dtype == torch.uint8
    assert torch.equal(a, b) and not torch.equal(a, c)
    # no padding, no flip: the identity; no padding with flip: each image is itself or its mirror
    assert torch.equal(cifar10.augment_batch(images, torch.Generator(), padding=0, flip=False), images)
    flipped = cifar10.augment_batch(images, torch.Generator().manual_seed(0), padding=0)
    for out, img in zip(flipped, images, strict=True):
        assert torch.equal(out, img) or torch.equal(out, img.flip(-1))
    # with padding: each output is a 32x32 window of the zero-padded image
    padded = torch.nn.functional.pad(images, (4, 4, 4, 4))
    for out, pad in zip(
        cifar10.augment_batch(images, torch.Generator().manual_seed(5), flip=False), padded, strict=True
    ):
        assert any(torch.equal(out, pad[:, i : i + 32, j : j + 32]) for i in range(9) for j in range(9))


def test_balanced_subset_of_sorted_labels() -> None:
    labels = torch.arange(10).repeat_interleave(100)  # sorted by class, as the Parquet export is
    keep = cifar10.balanced_subset(labels, 50)
    assert keep.shape == (50,) and len(set(keep.tolist())) == 50
    assert torch.equal(torch.bincount(labels[keep], minlength=10), torch.full((10,), 5))
    assert torch.equal(keep, cifar10.balanced_subset(labels, 50))
    assert torch.equal(cifar10.balanced_subset(labels, None), torch.arange(1000))


def test_parse_method_overrides_and_smoke_flag() -> None:
    settings = cifar10.Settings()
    config = cifar10.parse_method("mixpro:alpha_strategy=linear,maskmix_prob=1.0,alpha_grad=false", settings)
    assert (config.mix_method, config.alpha_strategy, config.maskmix_prob, config.alpha_grad) == (
        "mixpro",
        "linear",
        1.0,
        False,
    )
    assert config.mask_scale == settings.mask_scale and config.label_smoothing_factor == 0.1
    with pytest.raises(ValueError, match="'nonsense' is not a key of MixProConfig"):
        cifar10.parse_method("mixpro:nonsense=1", settings)
    with pytest.raises(ValueError, match=r"'mask_scle' is not a key of MixProConfig; closest: mask_scale"):
        cifar10.parse_method("mixpro:mask_scle=1", settings)
    # a word where a boolean is was read as False before: now refused, naming the entry
    with pytest.raises(ValueError, match=r"alpha_grad='maybe': MixProConfig.alpha_grad is True, so it expects True"):
        cifar10.parse_method("mixpro:alpha_grad=maybe", settings)
    with pytest.raises(ValueError, match=r"'mask_scale' is not key=value; expected key=value"):
        cifar10.parse_method("mixpro:mask_scale", settings)
    with pytest.raises(SystemExit) as exit_info:
        cifar10.main(["--methods", "mixpro:maskmix_prob=high"])
    assert exit_info.value.code == 2
    assert not cifar10.is_smoke(cifar10.Settings(epochs=8, batch=512), 50_000, 10_000)
    assert cifar10.is_smoke(cifar10.Settings(epochs=8, batch=512, max_steps=30), 50_000, 10_000)
    assert cifar10.is_smoke(cifar10.Settings(epochs=8, batch=512, layers=2), 50_000, 10_000)
    assert cifar10.is_smoke(cifar10.Settings(epochs=8, batch=512), 50_000, 1_000)


def test_tiny_run_on_synthetic_data_gives_per_method_results() -> None:
    gen = torch.Generator().manual_seed(0)
    data = {
        "train_x": torch.randint(0, 256, (48, 3, 32, 32), dtype=torch.uint8, generator=gen),
        "train_y": torch.randint(0, 10, (48,), generator=gen),
        "test_x": torch.randint(0, 256, (20, 3, 32, 32), dtype=torch.uint8, generator=gen),
        "test_y": torch.randint(0, 10, (20,), generator=gen),
    }
    settings = cifar10.Settings(layers=1, hidden=32, heads=2, batch=16, max_steps=2, lr=1e-3, eval_batch=20)
    methods = ["none", "mixpro:maskmix_prob=1.0"]
    results = cifar10.run_experiment(data, methods, [0, 1], settings, torch.device("cpu"))
    assert list(results) == methods
    for entry in results.values():
        assert [run["seed"] for run in entry["runs"]] == [0, 1]
        for run in entry["runs"]:
            assert run["steps"] == 2 and 0.0 <= run["accuracy"] <= run["top5_accuracy"] <= 1.0
            assert list(run["robustness_top1"]) == [f"{r:.1f}" for r in cifar10.DROP_RATIOS]
            assert run["robustness_top1"]["0.0"] == run["accuracy"]
        assert set(entry["mean"]) == set(entry["std"]) and "drop_0.5" in entry["mean"]
    # same seed, same method: the same result
    again = cifar10.run_experiment(data, ["none"], [0], settings, torch.device("cpu"))
    assert again["none"]["runs"][0]["accuracy"] == results["none"]["runs"][0]["accuracy"]
    assert again["none"]["runs"][0]["final_train_loss"] == pytest.approx(results["none"]["runs"][0]["final_train_loss"])


def test_decode_real_parquet_rows() -> None:
    path = DATA_DIR / "test.parquet"
    if not path.is_file():
        pytest.skip(f"CIFAR-10 Parquet file not found at {path} (the shared data directory is absent)")
    images, labels = cifar10.decode_parquet(path, limit=5)
    assert images.shape == (5, 3, 32, 32) and images.dtype == torch.uint8
    assert labels.shape == (5,) and labels.dtype == torch.int64
    assert int(labels.min()) >= 0 and int(labels.max()) < 10
    assert images.float().std() > 10  # real pictures, not blank


def test_resolve_data_dir_names_the_missing_path(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match=str(tmp_path / "nowhere")):
        cifar10.resolve_data_dir(tmp_path / "nowhere")


# ---------------------------------------------------------------------------------------------
# make_tables


def _write_results(directory: Path) -> None:
    env = {"device": "cpu", "commit": "abc1234", "torch": "2.x"}
    directory.mkdir()
    (directory / "train_step_cpu.json").write_text(
        json.dumps(
            {
                "environment": env,
                "benchmark": "train step",
                "settings": {"model": "vit-s", "batch": 16, "bf16": False, "steps": 5},
                "median_ms": {"cutmix": 100.0, "mixpro": 102.0},
                "images_per_s": {"cutmix": 160.0, "mixpro": 156.9},
                "ratio_to_cutmix": {"cutmix": 1.0, "mixpro": 1.02},
                "peak_memory_mb": {"cutmix": None, "mixpro": None},
                "checks": {"mixpro_over_cutmix": {"value": 1.02, "target": "<= 1.05", "pass": True}},
            }
        )
    )
    summary = {
        "mean": {"accuracy": 0.5, "top5_accuracy": 0.9, "ece": 0.1, "drop_0.5": 0.3},
        "std": {"accuracy": 0.01, "top5_accuracy": 0.0, "ece": 0.02, "drop_0.5": 0.05},
    }
    (directory / "cifar10_accuracy_cpu_smoke.json").write_text(
        json.dumps(
            {
                "environment": env,
                "benchmark": "cifar10 accuracy",
                "smoke": True,
                "settings": {"layers": 2, "hidden": 64, "heads": 2, "total_steps": 30, "batch": 64, "seeds": [0, 1]},
                "results": {"mixpro": {"runs": [], **summary}},
            }
        )
    )


def test_make_tables_rewrites_between_markers_and_check_detects_staleness(tmp_path: Path) -> None:
    results = tmp_path / "results"
    _write_results(results)
    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n\nbefore\n\n{make_tables.START}\nold text\n{make_tables.END}\n\nafter\n")
    args = ["--results-dir", str(results), "--readme", str(readme)]
    assert make_tables.main([*args, "--check"]) == 1
    assert make_tables.main(args) == 0
    text = readme.read_text()
    assert text.startswith("# title\n\nbefore\n") and text.endswith("\n\nafter\n") and "old text" not in text
    section = text.split(make_tables.START)[1].split(make_tables.END)[0]
    assert "| mixpro | 102.0 | 156.9 | 1.020 | n/a |" in section
    assert "SMOKE RUN" in section and "| mixpro | 50.00 ± 1.00 |" in section
    assert "commit `abc1234`" in section and "device cpu" in section
    assert make_tables.main([*args, "--check"]) == 0
    # a changed result makes the README stale
    path = results / "train_step_cpu.json"
    payload = json.loads(path.read_text())
    payload["median_ms"]["mixpro"] = 150.0
    path.write_text(json.dumps(payload))
    assert make_tables.main([*args, "--check"]) == 1


def test_make_tables_without_markers_prints_and_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    results = tmp_path / "results"
    _write_results(results)
    readme = tmp_path / "README.md"
    readme.write_text("# no markers here\n")
    assert make_tables.main(["--results-dir", str(results), "--readme", str(readme)]) == 2
    captured = capsys.readouterr()
    assert "Training step" in captured.out and "markers" in captured.err
    assert readme.read_text() == "# no markers here\n"


def _digits_part(seeds: list[int], commit: str = "abc1234", epochs: str = "60") -> dict:
    """A digits comparison file of ``seeds`` (two methods, metrics = seed / 10)."""
    runs = [
        {"method": m, "seed": s, "accuracy": s / 10, "top5_accuracy": 1.0, "ece": 0.1, "ece_calibrated": 0.05,
         "temperature": 0.5, "eval_accuracy": 0.9, "robustness_top1": {"0.0": s / 10, "0.5": 0.3}}
        for s in seeds
        for m in ("none", "mixpro")
    ]  # fmt: skip
    result = digits.payload(runs, ["none", "mixpro"], seeds)
    result["settings"]["digits_flags"] = {"num_train_epochs": epochs}
    return {"environment": {"commit": commit, "device": "cpu"}, **result}


def test_digits_merge_joins_parts_split_by_seed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(digits, "RESULTS_DIR", tmp_path)
    (tmp_path / "a.json").write_text(json.dumps(_digits_part([0, 1, 2])))
    (tmp_path / "b.json").write_text(json.dumps(_digits_part([3, 4])))
    merged = digits.merge(["a", "b"], "merged")
    written = json.loads((tmp_path / "merged.json").read_text())
    assert written["environment"]["commit"] == "abc1234"  # the parts' commit, not the merging checkout's
    assert merged["complete"] and merged["settings"]["seeds"] == [0, 1, 2, 3, 4]
    assert [r["seed"] for r in written["results"]["mixpro"]["runs"]] == [0, 1, 2, 3, 4]
    assert written["results"]["none"]["mean"]["accuracy"] == pytest.approx(0.2)
    (tmp_path / "c.json").write_text(json.dumps(_digits_part([3, 4], epochs="20")))
    with pytest.raises(SystemExit, match="digits_flags"):
        digits.merge(["a", "c"], "bad")
    (tmp_path / "d.json").write_text(json.dumps(_digits_part([3, 4], commit="def5678")))
    with pytest.raises(SystemExit, match="commit"):
        digits.merge(["a", "d"], "bad")
