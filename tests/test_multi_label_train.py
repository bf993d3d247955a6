"""Multi-label runs end to end (Parquet / JSON / stream → mixpro-train, the no-Trainer loop, pipeline(), the
reported mAP) and ``--loss bce`` on single-label data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_OVERRIDES
from datasets import ClassLabel, Dataset, List
from datasets import Image as DatasetsImage
from PIL import Image

from mixpro_hf import train

NAMES = ["bottom-left", "bottom-right", "top-left", "top-right"]


def quadrant_images(n: int, seed: int = 0) -> tuple[list[Image.Image], list[list[str]]]:
    """Images whose labels are their bright quadrants (any subset, the empty one too)."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    corners = {"top-left": (0, 0), "top-right": (0, 8), "bottom-left": (8, 0), "bottom-right": (8, 8)}
    for _ in range(n):
        array = rng.integers(0, 60, (16, 16, 3), dtype=np.uint8)
        present = [name for name in NAMES if rng.random() < 0.4]
        for name in present:
            r, c = corners[name]
            array[r : r + 8, c : c + 8] += 150
        images.append(Image.fromarray(array))
        labels.append(present)
    return images, labels


def write_split(path: Path, n: int, seed: int, form: str = "class_label") -> Path:
    """A Parquet (🤗 features kept: ``Sequence(ClassLabel)``) or JSON Lines file of quadrant images."""
    images, labels = quadrant_images(n, seed)
    if form == "class_label":
        data = Dataset.from_dict({"image": images, "label": labels})
        data = data.cast_column("image", DatasetsImage()).cast_column("label", List(ClassLabel(names=NAMES)))
        data.to_parquet(str(path))
        return path
    folder = path.parent
    rows = []
    for i, (image, present) in enumerate(zip(images, labels, strict=True)):
        image.save(folder / f"{path.stem}-{i}.png")
        label = [float(name in present) for name in NAMES] if form == "multi_hot" else present
        rows.append(json.dumps({"image_path": f"{path.stem}-{i}.png", "label": label}))
    path.write_text("\n".join(rows) + "\n")
    return path


def flags(out: Path, *extra: str) -> list[str]:
    return [
        "--output_dir", str(out), "--config_overrides", TINY_OVERRIDES, "--num_train_epochs", "2",
        "--per_device_train_batch_size", "8", "--per_device_eval_batch_size", "16", "--mask_scale", "2",
        "--learning_rate", "3e-3", "--disable_tqdm", "True", "--report_to", "none", "--use_cpu", "True",
        "--dataloader_num_workers", "0", "--save_strategy", "no", "--auto_augment", "none",
        "--random_erasing", "0", *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One multi-label MixPro run on list-labelled Parquet files, and the trainer that ran it."""
    import mixpro_hf.train as train_module

    folder = tmp_path_factory.mktemp("multi_label")
    train_file = write_split(folder / "train.parquet", 96, seed=0)
    validation_file = write_split(folder / "validation.parquet", 32, seed=1)
    trainers = []
    make = train_module.make_trainer
    train_module.make_trainer = lambda *a, **k: trainers.append(make(*a, **k)) or trainers[-1]
    try:
        out = folder / "out"
        argv = flags(out, "--train_file", str(train_file), "--validation_file", str(validation_file))
        results = train.run([*argv, "--mix_method", "mixpro"])
    finally:
        train_module.make_trainer = make
    return out, results, trainers[0], validation_file


def test_list_labelled_parquet_trains_with_mixpro_and_reports_map(trained):
    from sklearn.metrics import average_precision_score

    out, results, trainer, _ = trained
    config = json.loads((out / "config.json").read_text())
    assert config["problem_type"] == "multi_label_classification"
    assert [config["id2label"][str(i)] for i in range(4)] == NAMES
    record = json.loads((out / "mixpro_run.json").read_text())
    assert record["training_args"]["loss"] == "bce", "the run records the loss that ran (auto resolved)"
    prediction = trainer.predict(trainer.eval_dataset)
    logits, targets = prediction.predictions, prediction.label_ids
    assert targets.shape == (32, 4)
    assert results["eval_map"] == pytest.approx(average_precision_score(targets, logits, average="macro"))
    assert set(results) >= {"eval_micro_f1", "eval_macro_f1", "eval_ap/top-left"}
    history = trainer.state.log_history
    assert any("mixpro/alpha" in entry for entry in history), "PAL ran on the multi-label batches"
    card = (out / "README.md").read_text()
    assert "- type: map" in card and "`loss` | `bce` |" in card


def test_pipeline_returns_independent_sigmoid_scores(trained):
    import torch
    from transformers import AutoImageProcessor, AutoModelForImageClassification, pipeline

    out, _, _, _ = trained
    image = quadrant_images(1, seed=5)[0][0]
    scores = pipeline("image-classification", model=str(out), device="cpu")(image, top_k=4)
    model = AutoModelForImageClassification.from_pretrained(out).eval()
    processor = AutoImageProcessor.from_pretrained(out)
    with torch.no_grad():
        probabilities = model(**processor(image, return_tensors="pt")).logits.sigmoid()[0]
    by_name = {entry["label"]: entry["score"] for entry in scores}
    expected = {NAMES[i]: float(p) for i, p in enumerate(probabilities)}
    assert by_name == pytest.approx(expected, abs=2e-3)
    assert abs(sum(by_name.values()) - 1.0) > 0.05, "sigmoid scores, not a softmax"


def test_evaluation_only_run_of_the_multi_label_model(trained, tmp_path):
    out, results, _, validation_file = trained
    argv = [
        "--model_name_or_path", str(out), "--do_train", "False", "--do_eval", "True", "--validation_file",
        str(validation_file), "--output_dir", str(tmp_path / "eval"), "--report_to", "none", "--use_cpu", "True",
        "--per_device_eval_batch_size", "16",
    ]  # fmt: skip
    again = train.run(argv)
    # the evaluation data are read as a multi-label model's (lists of labels); the saved processor reproduces the
    # training run's evaluation transform to rounding, which reorders the near-tied scores of this barely trained model
    assert again["eval_map"] == pytest.approx(results["eval_map"], abs=0.05)
    assert again["eval_loss"] == pytest.approx(results["eval_loss"], abs=1e-3)


@pytest.mark.parametrize("form", ["names", "multi_hot"])
def test_json_lines_with_name_lists_or_multi_hot_vectors_train(tmp_path, form):
    train_file = write_split(tmp_path / "train.jsonl", 40, seed=0, form=form)
    results = train.run([*flags(tmp_path / "out", "--train_file", str(train_file)), "--max_steps", "2"])
    assert 0.0 <= results["eval_map"] <= 1.0
    id2label = json.loads((tmp_path / "out" / "config.json").read_text())["id2label"]
    assert list(id2label.values()) == (sorted(NAMES) if form == "names" else ["0", "1", "2", "3"])


def test_streamed_list_labels_train(tmp_path):
    train_file = write_split(tmp_path / "train.parquet", 48, seed=0)
    argv = [*flags(tmp_path / "out", "--train_file", str(train_file), "--streaming", "True"), "--max_steps", "2"]
    results = train.run([*argv, "--max_eval_samples", "16"])
    assert 0.0 <= results["eval_map"] <= 1.0


def test_bad_multi_label_input_is_refused_before_training(tmp_path, capsys):
    data = Dataset.from_dict({"image": quadrant_images(8)[0], "label": [[0.0, 1.0, 0.5]] * 8})
    data.cast_column("image", DatasetsImage()).to_parquet(str(tmp_path / "bad.parquet"))
    capsys.readouterr()
    out = tmp_path / "out"
    code = train.main(flags(out, "--train_file", str(tmp_path / "bad.parquet")))
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("mixpro-train")]
    assert code == 2 and errors == ["mixpro-train: error: label column 'label' holds multi-hot values 0.5: a "
                                    "multi-hot vector holds only 0 and 1"]  # fmt: skip
    assert not out.exists()
    train_file = write_split(tmp_path / "train.parquet", 16, seed=0)
    assert train.main(flags(out, "--train_file", str(train_file), "--loss", "ce")) == 2
    assert "cannot train multi-label" in capsys.readouterr().err
    assert train.main(flags(out, "--train_file", str(train_file), "--calibrate", "True")) == 2
    assert "--calibrate" in capsys.readouterr().err


def test_single_label_bce_run_and_its_pipeline(tmp_path):
    from transformers import pipeline

    out = tmp_path / "out"
    argv = flags(out, "--max_train_samples", "64", "--max_eval_samples", "32", "--max_steps", "3")
    results = train.run([*argv, "--loss", "bce", "--bce_target_threshold", "0.2", "--mix_method", "mixpro"])
    assert 0.0 <= results["eval_accuracy"] <= 1.0
    settings = json.loads((out / "mixpro_run.json").read_text())["training_args"]
    assert settings["loss"] == "bce" and settings["bce_target_threshold"] == 0.2
    assert "`loss` | `bce` |" in (out / "README.md").read_text()
    assert json.loads((out / "config.json").read_text()).get("problem_type") in (None, "single_label_classification")
    image = Image.fromarray(np.zeros((8, 8), np.uint8))
    scores = pipeline("image-classification", model=str(out), device="cpu")(image, top_k=10)
    assert len(scores) == 10
    assert sum(entry["score"] for entry in scores) == pytest.approx(1.0, abs=1e-4), "softmax, as evaluated (top-1)"


def test_no_trainer_loop_trains_multi_label(tmp_path):
    import importlib.util

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location(
        "no_trainer", root / "examples/run_image_classification_no_trainer.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    train_file = write_split(tmp_path / "train.parquet", 40, seed=0)
    metrics = module.main([*flags(tmp_path / "out", "--train_file", str(train_file)), "--max_steps", "2"])
    assert 0.0 <= metrics["eval_map"] <= 1.0
    assert json.loads((tmp_path / "out" / "config.json").read_text())["problem_type"] == "multi_label_classification"


def test_mixpro_evaluate_scores_a_multi_label_model_in_map(trained, tmp_path, capsys):
    from mixpro_hf.evaluate_cli import main as evaluate

    out, _, _, validation_file = trained
    argv = [str(out), "--dataset", str(validation_file), "--output_dir", str(tmp_path / "eval"), "--cpu", "True"]
    argv += ["--occlusion_ratios", "0", "0.5", "--occlusion_repeats", "2", "--update_card", "True"]
    assert evaluate(argv) == 0
    record = json.loads(next((tmp_path / "eval").glob("*.json")).read_text())
    assert record["multi_label"] and record["num_examples"] == 32
    assert set(record["metrics"]) >= {"map", "micro_f1", "macro_f1", "ap/top-left"}
    curves = record["occlusion"]["map"]
    assert set(curves) == {"random", "salient", "non_salient"}
    assert all(curve[0] == pytest.approx(record["metrics"]["map"]) for curve in curves.values())
    assert "mAP, 50% dropped: salient" in (tmp_path / "eval" / "results.md").read_text()
    assert (tmp_path / "eval" / "occlusion.png").is_file()
    assert "map_random_drop_0.5" in (out / "README.md").read_text()
    # a single-label data set for a multi-label model: refused in one line
    single = Dataset.from_dict({"image": quadrant_images(4)[0], "label": [0, 1, 2, 3]})
    single.cast_column("image", DatasetsImage()).to_parquet(str(tmp_path / "single.parquet"))
    capsys.readouterr()
    argv = [
        str(out),
        "--dataset",
        str(tmp_path / "single.parquet"),
        "--output_dir",
        str(tmp_path / "e2"),
        "--cpu",
        "True",
    ]
    assert evaluate(argv) == 2
    assert "is a multi-label classifier" in capsys.readouterr().err
