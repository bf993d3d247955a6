"""Bad input, round three (issue 30): blank class names are missing labels wherever labels are read, and
``--config_overrides`` reads what configs hold (lists, booleans, floats, strings, None) or names the bad entry."""

from __future__ import annotations

import json

import pytest
from conftest import TINY_OVERRIDES
from datasets import ClassLabel, Dataset, Features, Image, Value
from test_evaluate import _image_folder
from test_train_script import fast, random_images, write_parquet
from transformers import SwinConfig, ViTConfig

from mixpro_hf import evaluate_cli, train
from mixpro_hf.class_labels import align_splits
from mixpro_hf.config_overrides import apply_config_overrides, parse_config_overrides, split_entries
from mixpro_hf.streaming import _stream_label_names


def error_line(capsys: pytest.CaptureFixture[str], prog: str) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith(f"{prog}: error")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# ---------------------------------------------------------------------- blank class names


@pytest.mark.parametrize("blank", ["", "   ", "\t"])
def test_blank_class_names_are_missing_labels_in_training(tmp_path, capsys, blank):
    labels = ["cat", "dog", blank, "cat", "dog", None, "cat", "dog"]
    path = write_parquet(tmp_path / "train.parquet", random_images(8), labels)
    assert train.main(fast(tmp_path, "--train_file", str(path))) == 2
    line = error_line(capsys, "mixpro-train")
    assert "label column 'label' of the training split has 2 missing labels (None, or a blank" in line, line
    assert not (tmp_path / "out").exists(), "nothing written"


def test_blank_class_names_in_evaluation_data(tmp_path, capsys):
    train_path = write_parquet(tmp_path / "train.parquet", random_images(8), ["cat", "dog"] * 4)
    test_path = write_parquet(tmp_path / "test.parquet", random_images(4, seed=1), ["cat", " ", "dog", ""])
    assert train.main(fast(tmp_path, "--train_file", str(train_path), "--test_file", str(test_path))) == 2
    assert "of the test split has 2 missing labels" in error_line(capsys, "mixpro-train")


def test_mixpro_evaluate_refuses_blank_class_names(tmp_path, capsys):
    from conftest import make_tiny_vit
    from transformers import ViTImageProcessor

    model_dir = tmp_path / "model"
    names = ["cat", "dog", "bird", "fox"]
    make_tiny_vit(id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)}).save_pretrained(
        model_dir
    )
    ViTImageProcessor(size={"height": 16, "width": 16}).save_pretrained(model_dir)
    data = write_parquet(tmp_path / "eval.parquet", random_images(4), ["cat", "", "dog", "  "], image_key="image")
    out = tmp_path / "results"
    assert evaluate_cli.main([str(model_dir), "--dataset", str(data), "--output_dir", str(out)]) == 2
    assert "has 2 missing labels (None, or a blank" in error_line(capsys, "mixpro-evaluate")
    assert not out.exists()


def test_mixpro_evaluate_refuses_missing_integer_ids(tmp_path, capsys):
    """Integer labels without names: a missing id was a NaN and a traceback-like ``cannot convert float NaN``."""
    from conftest import make_tiny_vit

    model_dir = tmp_path / "model"
    make_tiny_vit().save_pretrained(model_dir)
    from transformers import ViTImageProcessor

    ViTImageProcessor(size={"height": 16, "width": 16}).save_pretrained(model_dir)
    data = write_parquet(tmp_path / "ids.parquet", random_images(3), [0, None, 1], image_key="image")
    assert evaluate_cli.main([str(model_dir), "--dataset", str(data), "--output_dir", str(tmp_path / "r")]) == 2
    assert "label column 'label' of data set" in (line := error_line(capsys, "mixpro-evaluate")), line
    assert "has 1 missing labels" in line


def test_a_blank_classlabel_name_an_image_folder_and_a_stream(tmp_path):
    rows = Dataset.from_dict({"label": [0, 1, 2, 1]}).cast_column("label", ClassLabel(names=[" ", "cat", "dog"]))
    with pytest.raises(
        ValueError, match=r"has 1 missing labels \(None, or the blank class name ' ' of ClassLabel id 0"
    ):
        align_splits(rows, None, None, "label")
    from mixpro_hf.data import load_image_folders

    folders = _image_folder(tmp_path / "folders", ["cat", " "], 2, 0)  # a class folder named by a space
    raw = load_image_folders({"train": str(folders)}, {})
    with pytest.raises(ValueError, match="has 2 missing labels"):
        align_splits(raw["train"], None, None, "label")
    features = Features({"image": Image(), "label": ClassLabel(names=["cat", ""])})
    with pytest.raises(ValueError, match=r"class name '' \(id 1\) is blank"):
        _stream_label_names(features, "label", None)
    assert _stream_label_names(Features({"label": Value("int64")}), "label", 3) == ["0", "1", "2"]


# ---------------------------------------------------------------------- --config_overrides


def test_overrides_read_what_configs_hold():
    assert split_entries("depths=[1,1,2,2], num_heads=(1,2,4,8),hidden_act='gelu',") == [
        "depths=[1,1,2,2]",
        "num_heads=(1,2,4,8)",
        "hidden_act='gelu'",
    ]
    values = parse_config_overrides("a=[1,1,2,2],b=True,c=false,d=1e-6,e=gelu,f=None,g='x,y',h=-3")
    assert values == {"a": [1, 1, 2, 2], "b": True, "c": False, "d": 1e-6, "e": "gelu", "f": None, "g": "x,y", "h": -3}
    config = SwinConfig()
    applied = apply_config_overrides(config, "depths=[1,1,2,2],num_heads=[1,2,4,8],embed_dim=24,qkv_bias=False")
    assert config.depths == [1, 1, 2, 2] and config.num_heads == [1, 2, 4, 8] and applied["qkv_bias"] is False
    vit = ViTConfig()
    apply_config_overrides(vit, "layer_norm_eps=1,image_size=32.0,hidden_act=gelu_new,pooler_output_size=None")
    assert (vit.layer_norm_eps, vit.image_size, vit.hidden_act, vit.pooler_output_size) == (1.0, 32, "gelu_new", None)
    assert isinstance(vit.layer_norm_eps, float) and isinstance(vit.image_size, int)
    with pytest.raises(ValueError, match=r"^--config_overrides: encoder_stride=None: Field 'encoder_stride' expected"):
        apply_config_overrides(vit, "encoder_stride=None")  # the config's own validation, in one line


@pytest.mark.parametrize(
    "overrides, message",
    [
        (f"{TINY_OVERRIDES},patch_size", "--config_overrides: 'patch_size' is not key=value; expected key=value"),
        (f"{TINY_OVERRIDES},=3", "--config_overrides: '=3' is not key=value"),
        (f"{TINY_OVERRIDES},encoder_stride=[4,4", "'encoder_stride=[4,4': '[4,4' is not a value"),
        (f"{TINY_OVERRIDES},patch_sze=4", "'patch_sze' is not a key of ViTConfig; closest: patch_size"),
        (f"{TINY_OVERRIDES},qkv_bias=maybe", "qkv_bias='maybe': ViTConfig.qkv_bias is True, so it expects True or"),
        (f"{TINY_OVERRIDES},num_channels=3.5", "num_channels=3.5: ViTConfig.num_channels is 3, so it expects int"),
        (f"{TINY_OVERRIDES},hidden_size=48", "hidden_size is given twice (hidden_size=32 and 'hidden_size=48')"),
    ],
)
def test_a_bad_override_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, overrides, message):
    argv = fast(tmp_path)
    argv[argv.index("--config_overrides") + 1] = overrides
    assert train.main(argv) == 2
    line = error_line(capsys, "mixpro-train")
    assert message in line, line
    assert not (tmp_path / "out").exists()


def test_a_list_override_through_the_cli(tmp_path):
    """``depths=[...]`` (CA-Swin and PVT presets shrink this way) and a boolean reach the model that trains."""
    overrides = "image_size=32,patch_size=4,embed_dim=16,depths=[1,1],num_heads=[1,2],window_size=4,qkv_bias=False"
    argv = fast(tmp_path, "--model_preset", "ca-swin-t", "--max_train_samples", "32", "--do_eval", "False")
    argv[argv.index("--config_overrides") + 1] = overrides
    argv += ["--do_predict", "False", "--save_strategy", "no"]
    assert train.main(argv) == 0
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["depths"] == [1, 1] and config["num_heads"] == [1, 2] and config["qkv_bias"] is False


# ---------------------------------------------------------------------- --lr_scheduler_kwargs (another key=value flag)


@pytest.mark.parametrize(
    "value, message",
    [
        ('{"min_lr_rat": 0.1}', "'min_lr_rat' is not a key of the cosine_with_min_lr schedule; closest: min_lr_rate"),
        ("{min_lr_rate: 0.1}", "--lr_scheduler_kwargs '{min_lr_rate: 0.1}' is not a JSON object (Expecting property"),
        ("min_lr_rate", "--lr_scheduler_kwargs: 'min_lr_rate' is not key=value; expected key=value"),
    ],
)
def test_bad_scheduler_kwargs_are_one_line(tmp_path, capsys, value, message):
    """🤗 kept a string that is not JSON as it is (the schedule then got a string, or nothing) and let an unknown
    key fail at the first step."""
    argv = fast(tmp_path, "--lr_schedule", "lr_scheduler_type", "--lr_scheduler_type", "cosine_with_min_lr")
    try:
        code = train.main([*argv, "--lr_scheduler_kwargs", value])
    except SystemExit as exit_:  # the argument parser's own one line (and its usage line)
        code = exit_.code
    assert code == 2
    assert message in error_line(capsys, "mixpro-train")
    assert not (tmp_path / "out").exists()


def test_scheduler_kwargs_as_key_value():
    from mixpro_hf.training_args import MixProTrainingArguments

    args = MixProTrainingArguments(
        output_dir="unused",
        lr_scheduler_type="cosine_with_min_lr",
        lr_scheduler_kwargs="min_lr_rate=0.1,num_cycles=0.5",
    )
    assert args.lr_scheduler_kwargs == {"min_lr_rate": 0.1, "num_cycles": 0.5}
    with pytest.raises(ValueError, match="'num_cycles': the linear schedule takes no keyword arguments"):
        MixProTrainingArguments(output_dir="unused", lr_scheduler_type="linear", lr_scheduler_kwargs="num_cycles=2")
