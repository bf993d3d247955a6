"""``--calibrate`` (issue 15): temperature scaling fitted on the validation logits, reported before and after."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import TINY_OVERRIDES

from mixpro_hf import train
from mixpro_hf.model_card import METRICS


def calibrated_run(tmp_path: Path) -> list[str]:
    """Flags of a short run on the embedded digits with ``--calibrate True``, evaluated on the full validation
    split (216 images) so that the fitted temperature is stable."""
    return [
        "--output_dir", str(tmp_path / "out"),
        "--config_overrides", TINY_OVERRIDES,
        "--max_train_samples", "256",
        "--num_train_epochs", "2",
        "--per_device_train_batch_size", "32",
        "--learning_rate", "3e-3",
        "--eval_strategy", "no",
        "--save_strategy", "no",
        "--disable_tqdm", "True",
        "--report_to", "none",
        "--use_cpu", "True",
        "--dataloader_num_workers", "0",
        "--calibrate", "True",
    ]  # fmt: skip


def test_calibrate_reports_temperature_and_ece_before_and_after(tmp_path: Path) -> None:
    results = train.run(calibrated_run(tmp_path))
    saved = json.loads((tmp_path / "out" / "all_results.json").read_text())
    assert saved == results
    assert results["eval_temperature"] > 0
    for key in ("eval_ece", "eval_ece_calibrated", "test_ece", "test_ece_calibrated", "test_accuracy"):
        assert isinstance(results[key], float), key
    # the temperature minimises the validation NLL: on validation the ECE does not get worse
    assert results["eval_ece_calibrated"] <= results["eval_ece"] + 1e-9
    card = (tmp_path / "out" / "README.md").read_text()
    assert METRICS["ece_calibrated"][1] in card and METRICS["temperature"][1] in card


def test_without_calibrate_no_temperature_is_reported(tmp_path: Path) -> None:
    flags = calibrated_run(tmp_path)
    results = train.run(flags[: flags.index("--calibrate")])
    assert "eval_temperature" not in results and "test_ece_calibrated" not in results
