"""The Table 1 presets: each builds the paper's architecture (parameter count within 2 % of Table 1, counted on the
meta device: no weights allocated) and sets its family's recipe for the flags not given."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForImageClassification

from mixpro_hf.arguments import parse_args
from mixpro_hf.modeling import ModelArguments, build_model, model_geometry
from mixpro_hf.presets import MODEL_PRESETS, preset_config
from mixpro_hf.recipe import MixProConfig
from mixpro_hf.step import check_model_for_mixing


@pytest.mark.parametrize("name", list(MODEL_PRESETS))
def test_preset_parameter_count_matches_the_paper(name: str) -> None:
    preset = MODEL_PRESETS[name]
    with torch.device("meta"):
        model = AutoModelForImageClassification.from_config(preset_config(name))
    count = sum(p.numel() for p in model.parameters()) / 1e6
    assert abs(count / preset.paper_params - 1) < 0.02, (name, count, preset.paper_params)
    # the preset's geometry passes the checks of a MixPro run at 224² (its mask_scale on its token grid)
    mixpro = MixProConfig(mix_method="mixpro", mask_scale=int(preset.recipe["mask_scale"]))
    patch_size, image_size = model_geometry(model)
    assert image_size == 224 and patch_size == {"vit": 14, "pvt": 32, "ca_swin": 32}.get(preset.kind, 16)
    check_model_for_mixing(model, mixpro, patch_size, image_size)


def test_table_one_is_covered() -> None:
    in_table = {p.name for p in MODEL_PRESETS.values() if p.in_table}
    assert in_table == {
        *("deit-t", "deit-s", "deit-b", "pvt-t", "pvt-s", "pvt-m", "pvt-l", "cait-xxs36"),
        *("xcit-t24", "xcit-s12", "xcit-m24", "xcit-l24", "ca-swin-t", "ca-swin-s"),
    }
    assert preset_config("deit-t").layer_norm_eps == 1e-6 and preset_config("pvt-s").layer_norm_eps == 1e-6


def _parsed(*flags: str):
    return parse_args(["--train_file", "train.parquet", *flags])


def test_family_recipes_fill_the_flags_not_given() -> None:
    _, _, cait = _parsed("--model_preset", "cait-xxs36")
    model_args, _, _ = _parsed("--model_preset", "cait-xxs36")
    assert cait.num_train_epochs == 400 and cait.warmup_steps == pytest.approx(20 / 400)
    assert model_args.drop_path_rate == 0.1 and cait.mask_scale == 4 and cait.max_grad_norm == 0.0
    _, _, swin = _parsed("--model_preset", "ca-swin-t")
    assert swin.max_grad_norm == 5.0 and swin.mask_scale == 2 and swin.num_train_epochs == 300
    _, _, pvt = _parsed("--model_preset", "pvt-l")
    assert pvt.max_grad_norm == 1.0 and pvt.mask_scale == 2
    model_args, _, deit = _parsed("--model_preset", "deit-s", "--num_train_epochs", "3", "--mask_scale", "2")
    assert deit.num_train_epochs == 3 and deit.mask_scale == 2 and model_args.drop_path_rate == 0.1
    with pytest.raises(SystemExit):
        _parsed("--model_preset", "deit-xl")


def test_timm_preset_builds_with_overrides_and_drop_path() -> None:
    args = ModelArguments(
        model_preset="xcit-t24", config_overrides="img_size=32,depth=1,embed_dim=32,num_heads=2", drop_path_rate=0.1
    )
    model, processor = build_model(args, ["a", "b"])
    timm_model = model.timm_model
    assert timm_model.patch_embed.img_size == (32, 32) and len(timm_model.blocks) == 1
    rates = [m.drop_prob for m in timm_model.modules() if type(m).__name__ == "DropPath"]
    assert rates and max(rates) == pytest.approx(0.1)
    assert processor.size == {"height": 32, "width": 32} and model.config.num_labels == 2
    with pytest.raises(ValueError, match="--model_preset builds a model from scratch"):
        build_model(ModelArguments(model_preset="deit-t", model_name_or_path="some/model"), ["a", "b"])


def test_mixpro_train_runs_a_timm_preset(tmp_path) -> None:
    from mixpro_hf import train

    overrides = "img_size=32,patch_size=4,depth=1,depth_token_only=1,embed_dim=32,num_heads=2"
    flags = ["--model_preset", "cait-xxs36", "--config_overrides", overrides, "--output_dir", str(tmp_path / "out")]
    flags += ["--max_train_samples", "32", "--max_eval_samples", "16", "--max_steps", "2", "--do_train", "True"]
    flags += ["--per_device_train_batch_size", "8", "--report_to", "none", "--use_cpu", "True"]
    flags += ["--dataloader_num_workers", "0", "--disable_tqdm", "True", "--maskmix_prob", "1"]
    results = train.run(flags)
    assert results["train_loss"] > 0
    record = json.loads((tmp_path / "out" / "mixpro_run.json").read_text())
    assert record["model_args"]["model_preset"] == "cait-xxs36"
    # the embedded digits job's own training flags (its clipping 5.0, its 60 epochs) over the preset's recipe
    assert record["training_args"]["max_grad_norm"] == 5.0
    model = AutoModelForImageClassification.from_pretrained(tmp_path / "out")
    assert model.config.model_args["drop_path_rate"] == 0.1 and model.timm_model.patch_embed.img_size == (32, 32)


def test_a_family_without_sdpa_builds_from_scratch(tmp_path) -> None:
    from test_families import FAMILIES  # the tiny 🤗 PVT of the family tests

    FAMILIES["hf-pvt"].build("eager").config.save_pretrained(tmp_path)
    model, processor = build_model(ModelArguments(config_name=str(tmp_path)), ["a", "b", "c"])  # sdpa asked
    assert type(model).__name__ == "PvtForImageClassification" and processor.size == {"height": 64, "width": 64}
    assert model_geometry(model) == (8, 64) and model.config.drop_path_rate == 0.1
