"""`mixpro-evaluate` and its library: patch dropping (Fig. 3), class subsets, the command on image folders."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_tiny_vit
from PIL import Image

from mixpro_hf.class_subsets import class_subset
from mixpro_hf.evaluate_cli import main
from mixpro_hf.metrics import ood_metrics, robustness_metrics
from mixpro_hf.robustness import attention_priority, drop_patches, occlusion_correct, random_drop_accuracy

NAMES = ["cat", "dog", "eel", "fox"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The tiny forwards run ~20x faster on one thread on a loaded 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------------------------------------------
# patch dropping


def _patch_zero(images: torch.Tensor, patch: int) -> torch.Tensor:
    """(B, N) bool: which patches are entirely 0."""
    b, c, h, w = images.shape
    cells = images.view(b, c, h // patch, patch, w // patch, patch).abs().sum(dim=(1, 3, 5))
    return (cells == 0).view(b, -1)


def test_drop_patches_zeroes_whole_patches_seeded_and_keeps_the_input():
    images = torch.rand(5, 3, 16, 16) + 0.1
    before = images.clone()
    out = drop_patches(images, 0.3, 4, torch.Generator().manual_seed(0))
    assert torch.equal(images, before)
    zero = _patch_zero(out, 4)
    assert zero.sum(1).tolist() == [round(0.3 * 16)] * 5
    assert (out[images != out] == 0).all()  # only whole dropped patches changed
    again = drop_patches(images, 0.3, 4, torch.Generator().manual_seed(0))
    assert torch.equal(out, again)
    assert not torch.equal(zero[0], zero[1])  # independent per image
    with pytest.raises(ValueError, match="not a multiple of the patch size 5"):
        drop_patches(images, 0.3, 5)
    with pytest.raises(ValueError, match=r"drop ratio must be a number in \[0, 1\], got 1.5"):
        drop_patches(images, 1.5, 4)


def test_salient_dropping_removes_the_most_attended_patches_first():
    images = torch.ones(2, 3, 8, 8)
    attention = torch.tensor([[0.1, 0.4, 0.3, 0.2], [0.7, 0.1, 0.1, 0.1]])
    salient = _patch_zero(drop_patches(images, 0.5, 4, priority=-attention), 4)
    assert salient[0].tolist() == [False, True, True, False] and salient[1, 0]
    non_salient = _patch_zero(drop_patches(images, 0.25, 4, priority=attention), 4)
    assert non_salient[0].tolist() == [True, False, False, False]


def test_attention_priority_resizes_to_the_model_grid():
    attention = torch.zeros(1, 16)
    attention[0, 0] = 1.0  # top-left of a 4x4 grid
    resized = attention_priority(attention, (4, 4), (2, 2))
    assert resized.shape == (1, 4) and resized.argmax().item() == 0
    assert torch.equal(attention_priority(attention, (4, 4), (4, 4)), attention)
    with pytest.raises(ValueError, match="not the 3x3 grid"):
        attention_priority(attention, (3, 3), (2, 2))


def test_occlusion_correct_ratio_zero_is_clean_and_random_is_nested_and_averaged():
    model = make_tiny_vit().eval()
    images, labels = torch.randn(12, 3, 16, 16), torch.arange(12) % 4
    with torch.no_grad():
        clean = model(pixel_values=images).logits.argmax(1) == labels
    result = occlusion_correct(
        model, images, labels, 4, [0.0, 0.5, 0.9], saliency=torch.rand(12, 16), repeats=3,
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    assert set(result) == {"random", "salient", "non_salient"}
    for curve in result.values():
        assert curve.shape == (12, 3)
        assert torch.equal(curve[:, 0], clean.float())
    thirds = result["random"] * 3
    assert torch.allclose(thirds, thirds.round())  # a mean of 3 repeats
    only_random = occlusion_correct(model, images, labels, 4, [0.5], generator=torch.Generator().manual_seed(0))
    assert set(only_random) == {"random"}


def test_random_drop_accuracy_is_the_benchmarks_protocol():
    model = make_tiny_vit().eval()
    images, labels = torch.randn(10, 3, 16, 16), np.arange(10) % 4
    top1 = random_drop_accuracy(model, images, labels, 4, ratios=(0.0, 0.4), seed=7)
    dropped = drop_patches(images, 0.4, 4, torch.Generator().manual_seed(7 + 40))
    with torch.no_grad():
        expected = float((model(pixel_values=dropped).logits.argmax(1).numpy() == labels).mean())
    assert top1["0.4"] == expected and set(top1) == {"0.0", "0.4"}


# ---------------------------------------------------------------------------------------------------
# class subsets


def test_class_subset_by_name_order_and_generic_labels():
    id2label = dict(enumerate(NAMES))
    assert class_subset(NAMES, id2label) is None
    assert class_subset(["Fox", "dog"], id2label) == [3, 1]
    assert class_subset(["0", "1"], {0: "LABEL_0", 1: "LABEL_1", 2: "LABEL_2"}) == [0, 1]
    with pytest.raises(ValueError, match=r"2 of the 3 classes of data are not labels of m: 'gnu', 'yak'"):
        class_subset(["gnu", "dog", "yak"], id2label, dataset="data", model="m")


def test_class_subset_maps_wordnet_ids_onto_imagenet_descriptions():
    pytest.importorskip("timm.data", reason="timm's ImageNet synset table")
    from timm.data import ImageNetInfo

    info = ImageNetInfo("imagenet-1k")
    id2label = {i: info.index_to_description(i) for i in range(1000)}  # as 🤗 ImageNet checkpoints
    wnids = [info.index_to_label_name(i) for i in (1, 0, 999)]
    assert class_subset(wnids, id2label) == [1, 0, 999]
    assert class_subset(wnids, {i: info.index_to_label_name(i) for i in range(1000)}) == [1, 0, 999]


# ---------------------------------------------------------------------------------------------------
# the command


def _image_folder(root: Path, names: list[str], per_class: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    for i in range(per_class * len(names)):
        folder = root / names[i % len(names)]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from transformers import ViTImageProcessor

    root = tmp_path_factory.mktemp("evaluate")
    paths = {
        "data": _image_folder(root / "data", NAMES, 6, 0),
        "ood": _image_folder(root / "ood", ["other"], 10, 1),
        "subset": _image_folder(root / "subset", ["fox", "dog"], 4, 2),
        "unknown": _image_folder(root / "unknown", ["gnu", "dog"], 2, 3),
    }
    for seed in (0, 1):
        model = make_tiny_vit(seed=seed, id2label=dict(enumerate(NAMES)), label2id={n: i for i, n in enumerate(NAMES)})
        paths[f"model{seed}"] = root / ("none" if seed == 0 else "mixpro")
        model.save_pretrained(paths[f"model{seed}"])
        ViTImageProcessor(size={"height": 16, "width": 16}).save_pretrained(paths[f"model{seed}"])
    return paths


def _direct_logits(model_dir: Path, folder: Path, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Logits of the saved model on every image of an image folder, computed without the command."""
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    model = AutoModelForImageClassification.from_pretrained(model_dir).eval()
    processor = AutoImageProcessor.from_pretrained(model_dir)
    files = sorted(folder.rglob("*.png"))
    images = [Image.open(f).convert("RGB") for f in files]
    with torch.no_grad():
        logits = model(**processor(images=images, return_tensors="pt")).logits.double().numpy()
    return logits, np.array([names.index(f.parent.name) for f in files])


def test_two_checkpoints_on_image_folders_offline(setup, tmp_path, monkeypatch, capsys):
    def no_network(*args, **kwargs):
        raise AssertionError("mixpro-evaluate opened a network connection for local inputs")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    out = tmp_path / "out"
    argv = [str(setup["model0"]), str(setup["model1"]), "--dataset", str(setup["data"]), "--ood_dataset"]
    argv += [str(setup["ood"]), "--output_dir", str(out), "--batch_size", "10", "--occlusion_ratios", "0", "0.5"]
    argv += ["--occlusion_repeats", "2", "--update_card", "True"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    table = (out / "results.md").read_text()
    assert table in printed
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    assert [row.split("|")[1].strip() for row in rows] == ["`none`", "`mixpro`"]
    assert "OOD AUPRC" in table and "top-1, 50% dropped: salient" in table
    assert (out / "occlusion.png").stat().st_size > 10_000

    record = json.loads((out / "none__data.json").read_text())
    logits, labels = _direct_logits(setup["model0"], setup["data"], NAMES)
    expected = robustness_metrics(logits, labels)
    for key, value in expected.items():
        assert record["metrics"][key] == pytest.approx(value, abs=1e-6), key
    ood_logits, _ = _direct_logits(setup["model0"], setup["ood"], ["other"])
    for key, value in ood_metrics(logits, ood_logits).items():
        assert record["ood"][key] == pytest.approx(value, abs=1e-6), key
    assert record["num_examples"] == 24 and record["ood"]["num_examples"] == 10
    occlusion = record["occlusion"]
    assert occlusion["ratios"] == [0.0, 0.5] and occlusion["patch_size"] == 4
    assert occlusion["saliency"].startswith("own class-token attention")
    assert all(curve[0] == pytest.approx(expected["accuracy"]) for curve in occlusion["top1"].values())
    assert record["class_subset"] is None and record["metrics"]["rms_calibration_error"] is None

    card = (setup["model0"] / "README.md").read_text()
    assert "model-index" in card and "ood_auprc" in card and "top1_salient_drop_0.5" in card
    assert f"value: {record['metrics']['accuracy']}" in card

    # a second run into the same folder is refused, nothing is overwritten
    before = (out / "results.md").read_text()
    assert main(argv) == 2
    assert "already holds results" in capsys.readouterr().err.splitlines()[-1]
    assert (out / "results.md").read_text() == before


def test_class_subset_restricts_the_logits(setup, tmp_path):
    out = tmp_path / "subset"
    argv = [str(setup["model0"]), "--dataset", str(setup["subset"]), "--output_dir", str(out), "--occlusion", "False"]
    assert main(argv) == 0
    record = json.loads((out / "none__subset.json").read_text())
    assert record["class_subset"] == {"num_classes": 2, "model_ids": [1, 3]}  # dog, fox (folders sorted)
    logits, labels = _direct_logits(setup["model0"], setup["subset"], ["dog", "fox"])
    assert record["metrics"]["accuracy"] == pytest.approx((logits[:, [1, 3]].argmax(1) == labels).mean())
    assert "occlusion" not in record and not (out / "occlusion.png").exists()
    argv = [str(setup["model0"]), "--dataset", str(setup["data"]), "--output_dir", str(tmp_path / "few")]
    assert main([*argv, "--occlusion", "False", "--max_samples", "10"]) == 0
    assert json.loads((tmp_path / "few" / "none__data.json").read_text())["num_examples"] == 10


@pytest.mark.parametrize(
    "case, message",
    [
        ("unknown_classes", "1 of the 2 classes of '"),
        ("unknown_model", "model 'no/such/model' not found"),
        ("missing_folder", "data set './no-such-folder' not found"),
        ("missing_model_folder", "model './no-such-model' not found"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(setup, tmp_path, capsys, case, message):
    model, dataset = str(setup["model0"]), str(setup["data"])
    if case == "unknown_classes":
        dataset = str(setup["unknown"])
    elif case == "unknown_model":
        model = "no/such/model"
    elif case == "missing_folder":
        dataset = "./no-such-folder"
    else:
        model = "./no-such-model"
    assert main([model, "--dataset", dataset, "--output_dir", str(tmp_path / "o")]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]  # not datasets' bars
    assert len(errors) == 1 and errors[0].startswith("mixpro-evaluate: error: ") and message in errors[0]
    err = errors[0]
    if case == "unknown_classes":
        assert "'gnu'" in err
    assert not (tmp_path / "o").exists()


def test_flag_errors_exit_2(setup, tmp_path, capsys):
    argv = [str(setup["model0"]), "--dataset", str(setup["data"]), "--output_dir", str(tmp_path)]
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--occlusion_ratios", "0.5", "1.2"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.splitlines()[-1]
    assert err.startswith("mixpro-evaluate: error:") and "--occlusion_ratios must be shares in [0, 1)" in err


def test_two_cpu_processes_give_the_single_process_numbers(setup, tmp_path):
    """``accelerate launch -m mixpro_hf.evaluate_cli``: 24 images in batches of 5 over 2 processes (the last batch
    padded by Accelerate and dropped again), the same metrics and attention-ranked curves as one process."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = str(sock.getsockname()[1])
    argv = [str(setup["model0"]), "--dataset", str(setup["data"]), "--batch_size", "5"]
    argv += ["--occlusion_ratios", "0", "0.5", "--occlusion_repeats", "1"]
    assert main([*argv, "--output_dir", str(tmp_path / "one")]) == 0
    accelerate = str(Path(sys.executable).with_name("accelerate"))
    launch = [accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--main_process_port", port]
    launch += ["--mixed_precision", "no", "--dynamo_backend", "no", "-m", "mixpro_hf.evaluate_cli"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true"}
    result = subprocess.run(
        [*launch, *argv, "--output_dir", str(tmp_path / "two")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("| `none` |") == 1  # the table printed once, by the main process
    one = json.loads((tmp_path / "one" / "none__data.json").read_text())
    two = json.loads((tmp_path / "two" / "none__data.json").read_text())
    assert two["environment"]["num_processes"] == 2 and two["num_examples"] == 24
    for key, value in one["metrics"].items():
        assert two["metrics"][key] == pytest.approx(value, abs=1e-6), key
    for mode in ("salient", "non_salient"):
        assert two["occlusion"]["top1"][mode] == pytest.approx(one["occlusion"]["top1"][mode])


def test_make_tables_puts_the_generated_table_into_the_readme_section(tmp_path):
    from benchmarks import make_tables

    results = tmp_path / "results"
    results.mkdir()
    payload = {
        "benchmark": make_tables.EVALUATE_BENCHMARK,
        "environment": {"device": "cpu", "commit": "abc1234", "torch": "2"},
        "settings": {"train_command": "mixpro-train --mix_method M", "num_train_epochs": 30,
                     "evaluate_command": "mixpro-evaluate none mixpro --dataset digits-test"},
        "table": "caption\n\n| model | top-1 |\n|---|---|\n| `none` | 90.00 |\n",
        "plot": "evaluate_digits/occlusion.png",
    }  # fmt: skip
    (results / "evaluate_digits.json").write_text(json.dumps(payload))
    readme = tmp_path / "README.md"
    readme.write_text(
        f"{make_tables.START}\n{make_tables.END}\n\n## Robustness\n\n"
        f"{make_tables.EVALUATE_START}\nold\n{make_tables.EVALUATE_END}\n"
    )
    args = ["--results-dir", str(results), "--readme", str(readme), "--card", str(tmp_path / "card.md")]
    assert make_tables.main([*args, "--check"]) == 1
    assert make_tables.main(args) == 0
    section = readme.read_text().split(make_tables.EVALUATE_START)[1].split(make_tables.EVALUATE_END)[0]
    assert "| `none` | 90.00 |" in section and "E = 30" in section and "old" not in section
    assert "benchmarks/results/evaluate_digits/occlusion.png" in section
    assert "without a table" not in readme.read_text()
    assert make_tables.main([*args, "--check"]) == 0


def test_data_file_with_integer_labels_and_a_streamed_folder(setup, tmp_path, capsys):
    from datasets import Dataset
    from datasets import Image as DatasetsImage

    files = sorted(setup["data"].rglob("*.png"))
    ids = [NAMES.index(f.parent.name) for f in files]
    table = Dataset.from_dict({"image": [str(f) for f in files], "label": ids}).cast_column("image", DatasetsImage())
    table.to_parquet(tmp_path / "data.parquet")
    model = str(setup["model0"])
    common = ["--occlusion", "False", "--batch_size", "7"]
    assert main([model, "--dataset", str(tmp_path / "data.parquet"), "--output_dir", str(tmp_path / "a"), *common]) == 0
    from_file = json.loads((tmp_path / "a" / "none__data.parquet.json").read_text())
    assert main([model, "--dataset", str(setup["data"]), "--output_dir", str(tmp_path / "b"), "--streaming", "True"]
                + common) == 0  # fmt: skip
    streamed = json.loads((tmp_path / "b" / "none__data.json").read_text())
    logits, labels = _direct_logits(setup["model0"], setup["data"], NAMES)
    for record in (from_file, streamed):
        assert record["num_examples"] == 24
        assert record["metrics"]["accuracy"] == pytest.approx((logits.argmax(1) == labels).mean())
        assert record["metrics"]["nll"] == pytest.approx(robustness_metrics(logits, labels)["nll"], abs=1e-6)
    # an integer id the model does not have
    Dataset.from_dict({"image": [str(files[0])], "label": [7]}).cast_column("image", DatasetsImage()).to_parquet(
        tmp_path / "bad.parquet"
    )
    capsys.readouterr()
    assert main([model, "--dataset", str(tmp_path / "bad.parquet"), "--output_dir", str(tmp_path / "c")]) == 2
    assert "has label id 7, outside the 4 classes of model" in capsys.readouterr().err.splitlines()[-1]


def test_saliency_model_on_another_grid_ranks_the_patches(setup, tmp_path):
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    torch.manual_seed(0)
    config = ViTConfig(
        **{**dict(image_size=16, patch_size=8, hidden_size=32, num_hidden_layers=1), "num_attention_heads": 2}
    )
    saliency_dir = tmp_path / "dino-like"
    ViTModel(config).save_pretrained(saliency_dir)  # a backbone without classifier, as facebook/dino-vits16
    ViTImageProcessor(size={"height": 16, "width": 16}).save_pretrained(saliency_dir)
    argv = [str(setup["model0"]), "--dataset", str(setup["data"]), "--output_dir", str(tmp_path / "out")]
    argv += ["--occlusion_ratios", "0", "0.5", "--occlusion_repeats", "1", "--saliency_model", str(saliency_dir)]
    assert main(argv) == 0
    occlusion = json.loads((tmp_path / "out" / "none__data.json").read_text())["occlusion"]
    assert occlusion["saliency"] == str(saliency_dir)
    assert set(occlusion["top1"]) == {"random", "salient", "non_salient"}
    # the same images, ranked by the saliency model's 2x2 attention resized to the model's 4x4 grid
    from mixpro_hf.attention import capture_cls_attention

    images = [Image.open(f).convert("RGB") for f in sorted(setup["data"].rglob("*.png"))]
    pixels = ViTImageProcessor(size={"height": 16, "width": 16})(images=images, return_tensors="pt")["pixel_values"]
    saliency_model = ViTModel.from_pretrained(saliency_dir).eval()
    with torch.no_grad(), capture_cls_attention(saliency_model) as capture:
        saliency_model(pixel_values=pixels)
    priority = attention_priority(capture.attention, (2, 2), (4, 4))
    model = make_tiny_vit(seed=0).eval()
    labels = torch.tensor([NAMES.index(f.parent.name) for f in sorted(setup["data"].rglob("*.png"))])
    with torch.no_grad():
        salient = model(pixel_values=drop_patches(pixels, 0.5, 4, priority=-priority)).logits.argmax(1) == labels
    assert occlusion["top1"]["salient"][1] == pytest.approx(salient.float().mean().item())


def test_a_hub_model_id(setup, hub, tmp_path, monkeypatch):
    from huggingface_hub import HfApi

    api = HfApi(endpoint=hub.endpoint, token="hf_test")
    api.create_repo("tester/tiny-vit")
    api.upload_folder(
        repo_id="tester/tiny-vit", folder_path=str(setup["model1"]), allow_patterns=["*.json", "*.safetensors"]
    )
    monkeypatch.setenv("HF_TOKEN", "hf_test")
    argv = ["tester/tiny-vit", str(setup["model1"]), "--dataset", str(setup["data"]), "--output_dir", str(tmp_path)]
    assert main([*argv, "--occlusion", "False", "--update_card", "True"]) == 0
    from_hub = json.loads((tmp_path / "tester--tiny-vit__data.json").read_text())
    local = json.loads((tmp_path / "mixpro__data.json").read_text())
    assert from_hub["model"] == "tester/tiny-vit" and from_hub["metrics"] == local["metrics"]
    assert "README.md" not in hub.files("tester/tiny-vit")  # --update_card changes local cards only
