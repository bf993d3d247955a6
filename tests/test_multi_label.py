"""Multi-label data and the BCE loss: targets, mixing (against timm 1.0.31), PAL, the label checks, the metrics."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from datasets import ClassLabel, Dataset, List

from mixpro_hf import MixProCollator, MixProConfig, mixed_loss, mixed_target, progressive_factor
from mixpro_hf.labels import binarize_target, smooth_multi_hot
from mixpro_hf.mixing import MixOutput, maskmix
from mixpro_hf.multi_label import align_multi_label_splits, multi_hot
from mixpro_hf.multi_label_metrics import multi_label_metrics

C = 5


def multi_hot_batch(batch: int = 8, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    target = (torch.rand(batch, C, generator=g) < 0.4).float()
    target[0] = 0.0  # an image with no label
    return target


# ---------------------------------------------------------------------- targets and mixing, against timm


@pytest.mark.parametrize("cutmix", [False, True])
def test_mixed_target_equals_timm_multi_label_mixup(cutmix):
    timm_mixup = pytest.importorskip("timm.data.mixup")
    if "multi_label" not in timm_mixup.Mixup.__init__.__code__.co_varnames:
        pytest.fail("timm >= 1.0.31 (Mixup(multi_label=True)) is needed: pip install -e '.[dev]'")
    np.random.seed(3)
    mixer = timm_mixup.Mixup(
        mixup_alpha=0.0 if cutmix else 0.8,
        cutmix_alpha=1.0 if cutmix else 0.0,
        label_smoothing=0.1,
        num_classes=C,
        multi_label=True,
    )
    images = torch.randn(8, 3, 16, 16)
    target = multi_hot_batch()
    mixed_images, timm_target = mixer(images.clone(), target.clone())
    flipped = images.flip(0)
    # λ from the images: the own share of the pixels (CutMix) or the Mixup weight
    if cutmix:
        lam = (mixed_images[0] == images[0]).float().mean().item()
    else:
        lam = ((mixed_images - flipped) / (images - flipped)).median().item()
    assert 0.0 < lam < 1.0
    ours = mixed_target(target, torch.arange(8).flip(0), torch.full((8,), lam), C, smoothing=0.1)
    torch.testing.assert_close(ours, timm_target, atol=1e-5, rtol=0)


def test_multi_label_smoothing_goes_towards_one_half():
    target = torch.tensor([[1.0, 0.0]])
    torch.testing.assert_close(smooth_multi_hot(target, 0.2), torch.tensor([[0.9, 0.1]]))
    torch.testing.assert_close(smooth_multi_hot(target, 0.0), target)


def test_binarize_is_strict():
    target = torch.tensor([[0.0, 0.2, 0.5, 0.7]])
    assert binarize_target(target, 0.2).tolist() == [[0.0, 0.0, 1.0, 1.0]]
    assert binarize_target(target, 0.0).tolist() == [[0.0, 1.0, 1.0, 1.0]], "DeiT III: gt(0)"
    assert binarize_target(target, None) is target


def test_progressive_factor_uses_the_probability_of_the_loss():
    logits, target = torch.randn(4, C), torch.rand(4, C)
    expected = F.cosine_similarity(logits.sigmoid(), target, dim=-1).clamp(0, 1)
    torch.testing.assert_close(progressive_factor(logits, target, activation="sigmoid"), expected)
    assert not torch.allclose(progressive_factor(logits, target), expected), "softmax by default (the paper)"
    with pytest.raises(ValueError, match="activation"):
        progressive_factor(logits, target, activation="tanh")


# ---------------------------------------------------------------------- the loss contract


def _pal_batch(batch: int = 8) -> MixOutput:
    return maskmix(
        torch.randn(batch, 3, 16, 16), patch_size=4, mask_scale=1, generator=torch.Generator().manual_seed(0)
    )


def test_bce_area_loss_is_bce_on_the_timm_target():
    labels = multi_hot_batch()
    mix = MixOutput(
        torch.zeros(8, 3, 16, 16), torch.arange(8).flip(0), torch.ones(8, 4, 4), torch.linspace(0.2, 0.9, 8), "mixup"
    )
    logits = torch.randn(8, C)
    config = MixProConfig(mix_method="mixup_cutmix", label_smoothing_factor=0.1)
    result = mixed_loss(logits, labels, mix, config)
    target = mix.lam_area[:, None] * (labels * 0.9 + 0.05) + (1 - mix.lam_area[:, None]) * (labels.flip(0) * 0.9 + 0.05)
    torch.testing.assert_close(result.loss, F.binary_cross_entropy_with_logits(logits, target))
    threshold = MixProConfig(mix_method="mixup_cutmix", loss="bce", bce_target_threshold=0.3)
    binarised = mixed_loss(logits, labels, mix, threshold).loss
    torch.testing.assert_close(binarised, F.binary_cross_entropy_with_logits(logits, (target > 0.3).float()))


def test_pal_on_multi_hot_targets_mixes_them_with_its_lambda():
    labels, mix = multi_hot_batch(), _pal_batch()
    logits, attention = torch.randn(8, C), torch.rand(8, 16)
    config = MixProConfig(mix_method="mixpro", label_smoothing_factor=0.1)
    result = mixed_loss(logits, labels, mix, config, attention)
    assert result.mode == "pal"
    lam = result.lam
    assert not torch.allclose(lam, mix.lam_area), "PAL's λ differs from the area λ"
    # hard form (the default): unsmoothed targets; BCE is linear in the target, so this is λ·BCE(y_i) + (1-λ)·BCE(y_j)
    own = F.binary_cross_entropy_with_logits(logits, labels, reduction="none").mean(1)
    other = F.binary_cross_entropy_with_logits(logits, labels[mix.partner], reduction="none").mean(1)
    torch.testing.assert_close(result.loss, (lam * own + (1 - lam) * other).mean())
    # α compares the sigmoid probabilities with the smoothed area-mixed target (eq. 8)
    area = mixed_target(labels, mix.partner, mix.lam_area, C, 0.1)
    alpha = F.cosine_similarity(logits.sigmoid(), area, dim=-1).clamp(0, 1)
    torch.testing.assert_close(result.stats["alpha"], alpha.mean())


def test_single_label_bce_uses_sigmoid_alpha_and_the_one_hot_target():
    labels, mix = torch.tensor([0, 1, 2, 3, 4, 0, 1, 2]), _pal_batch()
    logits, attention = torch.randn(8, C), torch.rand(8, 16)
    soft = MixProConfig(mix_method="mixpro", loss="bce", loss_form="soft", label_smoothing_factor=0.1)
    result = mixed_loss(logits, labels, mix, soft, attention)
    target = mixed_target(labels, mix.partner, result.lam, C, 0.1)  # timm's one-hot smoothing s/C
    torch.testing.assert_close(result.loss, F.binary_cross_entropy_with_logits(logits, target))
    area = mixed_target(labels, mix.partner, mix.lam_area, C, 0.1)
    alpha = F.cosine_similarity(logits.sigmoid(), area, dim=-1).clamp(0, 1)
    torch.testing.assert_close(result.stats["alpha"], alpha.mean())
    ce = mixed_loss(logits, labels, mix, MixProConfig(mix_method="mixpro", loss_form="soft"), attention)
    assert not torch.allclose(ce.loss, result.loss)


def test_ce_on_multi_label_targets_and_bad_settings_are_refused():
    labels, mix = multi_hot_batch(), _pal_batch()
    with pytest.raises(ValueError, match=r"loss='ce' .*cannot train multi-label"):
        mixed_loss(torch.randn(8, C), labels, mix, MixProConfig(mix_method="maskmix", loss="ce"))
    with pytest.raises(ValueError, match="shape"):
        mixed_loss(torch.randn(8, C + 1), labels, mix, MixProConfig(mix_method="maskmix"))
    with pytest.raises(ValueError, match=r"values in \[0, 1\]"):
        mixed_loss(torch.randn(8, C), labels * 2, mix, MixProConfig(mix_method="maskmix"))
    with pytest.raises(ValueError, match="loss is 'ce'"):
        MixProConfig(loss="ce", bce_target_threshold=0.2)
    with pytest.raises(ValueError, match="bce_target_threshold must be"):
        MixProConfig(loss="bce", bce_target_threshold=1.0)
    with pytest.raises(ValueError, match="loss="):
        MixProConfig(loss="focal")
    with pytest.raises(ValueError, match="single-label run trains with ce"):  # auto on class ids: ce
        mixed_loss(torch.randn(8, C), torch.zeros(8, dtype=torch.long), mix, MixProConfig(bce_target_threshold=0.1))


def test_collator_stacks_multi_hot_vectors_and_checks_them():
    collate = MixProCollator(MixProConfig(mix_method="mixup"), patch_size=4, num_labels=3, seed=0)
    features = [{"pixel_values": torch.randn(3, 8, 8), "labels": np.array([1, 0, i % 2], np.float32)} for i in range(4)]
    batch = collate(features)
    assert batch["labels"].dtype == torch.float32 and batch["labels"].shape == (4, 3)
    with pytest.raises(ValueError, match=r"shape \(batch, 3\)"):
        MixProCollator(patch_size=4, num_labels=3)([{"pixel_values": torch.randn(3, 8, 8), "labels": [1.0, 0.0]}] * 2)
    with pytest.raises(ValueError, match="different lengths"):
        MixProCollator(patch_size=4)([{"pixel_values": torch.randn(3, 8, 8), "labels": v} for v in ([1.0], [1.0, 0.0])])


# ---------------------------------------------------------------------- the label space of list columns


def _splits(train_labels, validation_labels=None, feature=None):
    def make(labels):
        dataset = Dataset.from_dict({"label": labels})
        return dataset.cast_column("label", feature) if feature is not None else dataset

    return make(train_labels), None if validation_labels is None else make(validation_labels)


def _align(train_labels, validation_labels=None, feature=None, num_labels=None):
    train, validation = _splits(train_labels, validation_labels, feature)
    return align_multi_label_splits(train, validation, None, "label", num_labels)


def test_every_list_form_gives_lists_of_ids():
    names = ["car", "cat", "dog"]
    train, validation, _, got = _align([["dog", "cat"], [], ["car"]], [["cat"], []])
    assert got == names and train["label"] == [[2, 1], [], [0]] and validation["label"] == [[1], []]
    assert train.features["label"] == List(ClassLabel(names=names))
    feature = List(ClassLabel(names=["b", "a"]))
    train, validation, _, got = _align([[0], [1, 0]], [["a"]], feature=feature)
    assert got == ["b", "a"] and validation["label"] == [[1]]
    assert _align([[0, 2], [1]])[3] == ["0", "1", "2"]
    assert _align([[0], [1]], num_labels=2)[3] == ["0", "1"]
    train, validation, _, got = _align([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]], [[0.0, 0.0, 1.0]])
    assert got == ["0", "1", "2"] and train["label"] == [[0, 2], [1]] and validation["label"] == [[2]]
    train, _, _, _ = _align([[True, False], [False, True]])
    assert train["label"] == [[0], [1]]
    # a ClassLabel in another order is matched by name
    train, validation = _splits([["x"], ["y"]]), None
    validation = Dataset.from_dict({"label": [[0]]}).cast_column("label", List(ClassLabel(names=["y", "x"])))
    assert align_multi_label_splits(train[0], validation, None, "label")[1]["label"] == [[1]]


@pytest.mark.parametrize(
    ("train", "validation", "num_labels", "message"),
    [
        ([[0], [1, 5]], None, 3, r"ids 5 outside \[0, 3\)"),
        ([[0], [1, 7]], None, None, "not among 0..2"),
        ([["a"], ["b"]], [["c"]], None, "label names 'c' that the training split does not have"),
        ([[0], [0]], None, 2, "never lists the classes '1'"),
        ([[1.0, 0.0], [0.0, 1.0, 0.0]], None, None, "row 1 has 3"),
        ([[1.0, 0.5], [0.0, 1.0]], None, None, "multi-hot values 0.5"),
        ([[1.0, 0.0], [0.0, 1.0]], [[1.0, 0.0, 0.0]], None, "row 0 has 3"),
        ([[1, 0, 1], [0, 1, 0]], None, None, "lists an id twice in row 0"),
        ([[0], None], None, None, "1 missing label lists"),
        ([[0, 1]], [[0, 2]], None, r"ids 2 outside \[0, 2\)"),
        ([["a"], ["b"]], ["a"], None, "but the training split is multi-label"),
        ([[0.0, 1.0], [1.0, 0.0]], None, 3, "row 0 has 2"),
    ],
)
def test_bad_multi_label_input_is_one_line(train, validation, num_labels, message):
    with pytest.raises(ValueError, match=message) as info:
        _align(train, validation, num_labels=num_labels)
    assert "\n" not in str(info.value)


def test_multi_hot_rows():
    assert multi_hot([[0, 2], [], [1]], 3).tolist() == [[1, 0, 1], [0, 0, 0], [0, 1, 0]]
    with pytest.raises(ValueError, match=r"label ids 3 are outside \[0, 3\)"):
        multi_hot([[3]], 3)


# ---------------------------------------------------------------------- metrics


def test_multi_label_metrics_follow_sklearn_and_skip_classes_without_positives():
    from sklearn.metrics import average_precision_score, f1_score

    rng = np.random.default_rng(0)
    targets = (rng.random((40, 4)) < 0.4).astype(np.float32)
    targets[:, 3] = 0.0  # no positive in this evaluation set
    logits = rng.normal(size=(40, 4)) + 2 * targets
    metrics = multi_label_metrics(logits, targets, ["a", "b", "c", "d"])
    assert metrics["map"] == pytest.approx(average_precision_score(targets[:, :3], logits[:, :3]))
    assert metrics["map_classes"] == 3 and "ap/d" not in metrics
    assert metrics["ap/b"] == pytest.approx(average_precision_score(targets[:, 1], logits[:, 1]))
    predicted = (logits >= 0).astype(int)
    assert metrics["micro_f1"] == pytest.approx(f1_score(targets, predicted, average="micro"))
    assert metrics["macro_f1"] == pytest.approx(f1_score(targets[:, :3], predicted[:, :3], average="macro"))


def test_embedded_multi_label_digits():
    from mixpro_hf.data import DataArguments, load_splits

    splits = load_splits(DataArguments(dataset_name="digits_multilabel"), seed=0)
    assert splits.multi_label and splits.label_names == [str(i) for i in range(10)]
    assert len(splits.train) + len(splits.validation) == 1437 and len(splits.test) == 360
    labels = splits.test["label"]
    assert {len(row) for row in labels} == {1, 2}
    image = np.asarray(splits.test[0]["image"])
    assert image.shape == (16, 16) and image[:4].max() == 0 and image[12:].max() == 0


def test_make_tables_renders_the_multi_label_table_between_its_markers():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from benchmarks import make_tables

    entry = {"runs": [], "mean": {"map": 0.9, "micro_f1": 0.8, "macro_f1": 0.7, "train_seconds": 12.0}}
    entry["std"] = {"map": 0.01, "micro_f1": 0.02, "macro_f1": 0.03}
    payload = {
        "benchmark": make_tables.MULTILABEL_BENCHMARK,
        "environment": {"device": "cpu", "commit": "abc", "torch": "2"},
        "settings": {"data": "two digits", "flags": ["--num_train_epochs", "60"], "extra_flags": [],
                     "seeds": [0], "seeds_planned": [0, 1]},
        "complete": False,
        "results": {"mixpro": entry},
    }  # fmt: skip
    block = make_tables.digits_multilabel_block([("digits_multilabel.json", payload)])
    assert "| mixpro | 90.0 ± 1.0 | 80.0 ± 2.0 | 70.0 ± 3.0 | 12 |" in block
    assert "incomplete: 1 of 2 seeds" in block and "60 epochs" in block
    readme = f"a\n{make_tables.MULTILABEL_START}\nold\n{make_tables.MULTILABEL_END}\nb"
    replaced = make_tables.replace_section(readme, block, make_tables.MULTILABEL_START, make_tables.MULTILABEL_END)
    assert "old" not in replaced and "| mixpro |" in replaced
