"""One contract for every training loop: the weight-decay rule, the learnable α and the ``mixpro/*`` statistics
are the same in ``MixProTrainer``, the no-Trainer Accelerate example and the CIFAR-10 benchmark (issue 9)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
import transformers as tf
from conftest import TINY_CONFIG, TINY_OVERRIDES

from benchmarks import cifar10
from mixpro_hf import MixProTrainer, MixProTrainingArguments, decay_parameter_names, mean_mix_stats
from mixpro_hf.recipe import ALPHA_STRATEGIES

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "config_cls,model_cls,extra",
    [
        (tf.ViTConfig, tf.ViTForImageClassification, {}),
        (tf.DeiTConfig, tf.DeiTForImageClassificationWithTeacher, {}),
        (tf.Dinov2WithRegistersConfig, tf.Dinov2WithRegistersForImageClassification, {"num_register_tokens": 2}),
    ],
)
def test_weight_decay_rule_is_deits(config_cls, model_cls, extra):
    model = model_cls(config_cls(**TINY_CONFIG, **extra))
    decayed = set(decay_parameter_names(model))
    names = dict(model.named_parameters())
    never = [
        n
        for n in names
        if n.endswith(
            ("cls_token", "distillation_token", "register_tokens", "position_embeddings", "mask_token", ".bias")
        )
    ]
    never += [n for n, p in names.items() if "norm" in n.lower()]
    assert never and not decayed & set(never)
    assert all(names[n].ndim > 1 for n in decayed)
    weights = [n for n, p in names.items() if p.ndim == 2 and n not in never]
    assert weights and set(weights) <= decayed  # every matrix of the attention, MLP and head is decayed


def test_trainer_optimizer_follows_the_rule(tmp_path, tiny_vit, toy_dataset):
    args = MixProTrainingArguments(
        output_dir=str(tmp_path),
        weight_decay=0.05,
        use_cpu=True,
        report_to=[],
        mask_scale=2,
        alpha_strategy="learnable",
    )
    trainer = MixProTrainer(model=tiny_vit(), args=args, train_dataset=toy_dataset(8))
    optimizer = trainer.create_optimizer()
    by_id = {id(p): group["weight_decay"] for group in optimizer.param_groups for p in group["params"]}
    params = dict(trainer.model.named_parameters())
    assert by_id[id(params["vit.embeddings.cls_token"])] == 0.0
    assert by_id[id(params["vit.embeddings.position_embeddings"])] == 0.0
    assert by_id[id(params["classifier.weight"])] == 0.05
    assert by_id[id(trainer.learnable_alpha)] == 0.0


def test_mix_stats_average_each_statistic_over_the_batches_that_have_it():
    batches = [
        {"lam_area": torch.tensor(0.5), "lam": torch.tensor(0.5)},
        {
            "lam_area": torch.tensor(0.7),
            "lam": torch.tensor(0.6),
            "lam_attn": torch.tensor(0.9),
            "alpha": torch.tensor(0.2),
        },
    ]
    logs = mean_mix_stats(batches, learnable_alpha=torch.tensor(0.0))
    assert logs == {
        "mixpro/lam_area": 0.6,
        "mixpro/lam": 0.55,
        "mixpro/lam_attn": 0.9,
        "mixpro/alpha": 0.2,
        "mixpro/learnable_alpha": 0.5,
    }


def _no_trainer_main():
    path = REPO_ROOT / "examples" / "run_image_classification_no_trainer.py"
    spec = importlib.util.spec_from_file_location("no_trainer", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


@pytest.mark.parametrize("strategy", ALPHA_STRATEGIES)
def test_every_alpha_strategy_trains_in_every_loop(tmp_path, strategy, tiny_vit, toy_dataset):
    # the Trainer
    args = MixProTrainingArguments(
        output_dir=str(tmp_path / "trainer"),
        max_steps=2,
        logging_steps=1,
        use_cpu=True,
        report_to=[],
        save_strategy="no",
        mask_scale=2,
        maskmix_prob=1.0,
        alpha_strategy=strategy,
        per_device_train_batch_size=8,
        disable_tqdm=True,
    )
    trainer = MixProTrainer(model=tiny_vit(), args=args, train_dataset=toy_dataset(16))
    trainer.train()
    logged = [e for e in trainer.state.log_history if "mixpro/alpha" in e]
    assert len(logged) == 2 and all(0 <= e["mixpro/alpha"] <= 1 for e in logged)
    assert ("mixpro/learnable_alpha" in logged[-1]) == (strategy == "learnable")

    # the no-Trainer Accelerate loop
    out = tmp_path / "loop"
    _no_trainer_main()(
        [
            "--output_dir",
            str(out),
            "--config_overrides",
            TINY_OVERRIDES,
            "--max_train_samples",
            "64",
            "--max_eval_samples",
            "32",
            "--max_steps",
            "2",
            "--mask_scale",
            "2",
            "--maskmix_prob",
            "1.0",
            "--alpha_strategy",
            strategy,
            "--per_device_train_batch_size",
            "16",
            "--logging_steps",
            "1",
            "--disable_tqdm",
            "True",
            "--use_cpu",
            "True",
        ]
    )
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    assert len(history) == 2 and all(0 <= e["mixpro/alpha"] <= 1 for e in history)
    assert ("mixpro/learnable_alpha" in history[-1]) == (strategy == "learnable")

    # the CIFAR-10 benchmark's loop, on random images
    settings = cifar10.Settings(
        layers=1,
        hidden=16,
        heads=2,
        max_steps=2,
        batch=8,
        bf16=False,
        eval_batch=16,
        drop_ratios=(0.0,),
        alpha_strategy=strategy,
        maskmix_prob=1.0,
    )
    data = {
        "train_x": torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8),
        "train_y": torch.arange(16) % 10,
        "test_x": torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8),
        "test_y": torch.arange(16) % 10,
    }
    run = cifar10.train_one("mixpro", 0, data, settings, torch.device("cpu"))
    assert 0 <= run["mix_stats"]["mixpro/alpha"] <= 1
    assert ("mixpro/learnable_alpha" in run["mix_stats"]) == (strategy == "learnable")


def test_pal_refuses_a_classifier_that_does_not_read_the_class_token(tmp_path, toy_dataset):
    beit = dict(TINY_CONFIG, use_mean_pooling=True)
    args = MixProTrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[], mask_scale=2)
    with pytest.raises(ValueError, match="use_mean_pooling=True"):
        MixProTrainer(model=tf.BeitForImageClassification(tf.BeitConfig(**beit)), args=args)
    beit["use_mean_pooling"] = False
    MixProTrainer(model=tf.BeitForImageClassification(tf.BeitConfig(**beit)), args=args, train_dataset=toy_dataset(8))


@pytest.mark.parametrize("model_type", ["vit", "deit", "beit", "dinov2"])
def test_models_from_scratch_get_the_recipes_drop_path(model_type):
    from mixpro_hf.drop_path import drop_path_rates
    from mixpro_hf.modeling import ModelArguments, build_model

    overrides = TINY_OVERRIDES.replace(",intermediate_size=64", "") if model_type == "dinov2" else TINY_OVERRIDES
    model, _ = build_model(ModelArguments(model_type=model_type, config_overrides=overrides), ["a", "b"])
    if model_type in ("vit", "deit"):
        assert drop_path_rates(model) == pytest.approx([0.0, 0.1])
    else:
        assert model.config.drop_path_rate == 0.1
    assert getattr(model.config, "use_mean_pooling", False) is False
