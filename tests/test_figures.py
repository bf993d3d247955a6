"""The run figures: MaskMix samples across classes with real, mixed masks (MixPro Fig. 6) and a readable α
curve (Fig. 2a)."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import make_tiny_vit
from datasets import ClassLabel, Dataset, Features, Image
from matplotlib.figure import Figure
from PIL import Image as PILImage

import mixpro_hf.figures as figures
from mixpro_hf.data import attach_transform
from mixpro_hf.figures import (
    alpha_curve_figure,
    dataset_labels,
    maskmix_rows,
    maskmix_samples_figure,
    mixed_maskmix_mask,
    plot_alpha_curve,
    select_sample_pairs,
)
from mixpro_hf.pipeline import Prepared, write_figures

NAMES = ["cat", "dog", "airplane", "automobile"]


def _titles(fig: Figure) -> list[str]:
    return [ax.get_title() for ax in fig.axes if ax.get_title()]


def _legend_texts(fig: Figure) -> list[str]:
    return [text.get_text() for legend in fig.legends for text in legend.get_texts()]


# ----------------------------------------------------------------------------------------------
# choosing the rows


def test_sorted_labels_give_rows_of_distinct_classes_each_with_a_partner_of_another_class():
    labels = torch.arange(10).repeat_interleave(30)  # sorted, as the Parquet exports are
    indices, partners = select_sample_pairs(labels, seed=0, count=6)
    assert len(indices) == len(partners) == 6
    assert len(set(labels[indices].tolist())) == 6, "every row is a different class"
    assert (partners != indices).all(), "a partner is never the sample itself"
    assert (labels[partners] != labels[indices]).all(), "a partner is of another class"
    assert sorted(partners.tolist()) == sorted(indices.tolist()), "partners are the other rows (a derangement)"


def test_selection_is_deterministic_from_the_seed_and_varies_with_it():
    labels = torch.arange(10).repeat_interleave(30)
    first = select_sample_pairs(labels, seed=3)
    assert all(torch.equal(a, b) for a, b in zip(first, select_sample_pairs(labels, seed=3), strict=True))
    others = [select_sample_pairs(labels, seed=s)[0] for s in range(4, 8)]
    assert any(not torch.equal(first[0], other) for other in others)


@pytest.mark.parametrize(
    ("labels", "count", "rows"),
    [
        (torch.arange(4).repeat_interleave(5), 6, 4),  # fewer classes than rows: one row per class
        (torch.tensor([0, 0, 0, 1, 1, 1]), 6, 2),  # two classes: the two rows swap partners
        (torch.arange(5).repeat_interleave(3), 1, 1),  # a single row: a partner of another class
    ],
)
def test_partners_are_other_samples_of_other_classes_for_any_class_count(labels, count, rows):
    indices, partners = select_sample_pairs(labels, seed=1, count=count)
    assert len(indices) == rows
    assert len(set(labels[indices].tolist())) == rows
    assert (partners != indices).all()
    assert (labels[partners] != labels[indices]).all()


def test_a_single_class_gives_distinct_samples_never_paired_with_themselves():
    indices, partners = select_sample_pairs(torch.zeros(10, dtype=torch.long), seed=0, count=6)
    assert len(set(indices.tolist())) == 6 and (partners != indices).all()
    with pytest.raises(ValueError, match="two samples"):
        select_sample_pairs([3], seed=0)


# ----------------------------------------------------------------------------------------------
# the mixed images


@pytest.mark.parametrize("seed", range(12))
def test_every_row_is_mixed_by_a_real_maskmix_mask(seed):
    # 4 cells: without the redraw, a quarter of the rows would keep all their cells (λ_area = 1)
    x = torch.randn(6, 3, 16, 16, generator=torch.Generator().manual_seed(seed))
    partner = x.roll(-1, 0)
    rows = maskmix_rows(make_tiny_vit(seed=0), x, partner, patch_size=4, mask_scale=2, seed=seed)
    assert ((rows.lam_area > 0) & (rows.lam_area < 1)).all(), rows.lam_area
    own = rows.patch_mask
    cells = own.view(6, 2, 2, 2, 2)  # (B, cell row, 2 patches, cell col, 2 patches): constant inside a cell
    assert (cells == cells[:, :, :1, :, :1]).all(), "the mask is made of mask_scale x mask_scale cells"
    keep = own.repeat_interleave(4, 1).repeat_interleave(4, 2).unsqueeze(1)
    assert torch.equal(rows.pixel_values, torch.where(keep, x, partner)), "eq. 7: own pixels where M, else partner's"
    assert rows.attention is not None and rows.attention.shape == (6, 16)
    assert rows.lam_attn is not None and ((rows.lam_attn > 0) & (rows.lam_attn < 1)).all()


def test_mask_redraw_keeps_every_row_mixed_and_refuses_a_single_cell():
    own = mixed_maskmix_mask(256, (2, 2), 1, torch.Generator().manual_seed(0))
    share = own.flatten(1).float().mean(1)
    assert ((share > 0) & (share < 1)).all()
    with pytest.raises(ValueError, match="single mask cell"):
        mixed_maskmix_mask(2, (2, 2), 2, torch.Generator().manual_seed(0))


# ----------------------------------------------------------------------------------------------
# the MaskMix figure


@pytest.fixture
def sample_figure() -> Figure:
    labels = torch.arange(4).repeat_interleave(3)
    x = torch.randn(12, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    indices, partners = select_sample_pairs(labels, seed=0)
    fig = maskmix_samples_figure(
        make_tiny_vit(seed=0),
        x[indices],
        4,
        1,
        seed=0,
        partner_pixel_values=x[partners],
        labels=labels[indices],
        partner_labels=labels[partners],
        label_names=NAMES,
    )
    yield fig
    figures._pyplot().close(fig)


def test_titles_name_the_classes_and_every_row_is_mixed(sample_figure):
    titles = _titles(sample_figure)
    samples = [t.removeprefix("sample: ") for t in titles if t.startswith("sample: ")]
    partners = [t.removeprefix("partner: ") for t in titles if t.startswith("partner: ")]
    assert sorted(samples) == sorted(NAMES), "one row per class, titled with its name"
    assert all(s != p for s, p in zip(samples, partners, strict=True))
    mixed = [t for t in titles if t.startswith("MaskMix")]
    assert len(mixed) == 4
    for title, name in zip(mixed, samples, strict=True):
        lam = float(re.search(r"λ_area=([0-9.]+)", title).group(1))
        assert 0 < lam < 1 and f"({name})" in title
    assert sum("λ_attn=" in t for t in titles) == 4


def test_attention_column_has_a_colour_bar_and_a_legend_explains_outline_and_lambda_attn(sample_figure):
    colorbars = [ax for ax in sample_figure.axes if ax.get_label() == "<colorbar>"]
    assert len(colorbars) == 1
    assert "attention" in colorbars[0].get_ylabel()
    legend = " ".join(_legend_texts(sample_figure))
    assert "own cells" in legend and "λ_attn" in legend and "eq. 5" in legend and "λ_area" in legend
    outline_handles = [h for legend in sample_figure.legends for h in legend.legend_handles if h.get_color() == "cyan"]
    assert outline_handles, "the legend shows the cyan outline"


def test_tiny_images_are_drawn_pixel_sharp(sample_figure):
    images = [image for ax in sample_figure.axes for image in ax.get_images()]
    assert images and all(image.get_interpolation() == "nearest" for image in images)


def test_default_pairing_never_pairs_a_sample_with_itself_and_no_model_gives_no_attention_column():
    x = torch.randn(3, 3, 16, 16)
    fig = maskmix_samples_figure(None, x, 4, 1, labels=[0, 1, 2], label_names=NAMES)
    titles = _titles(fig)
    assert [t for t in titles if t.startswith("partner")] == ["partner: dog", "partner: airplane", "partner: cat"]
    assert not any("λ_attn" in t for t in titles)
    assert not [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    figures._pyplot().close(fig)


def test_figure_at_224_pixels_has_the_same_layout():
    x = torch.randn(2, 3, 224, 224)
    model = make_tiny_vit(seed=0, image_size=224, patch_size=16)
    fig = maskmix_samples_figure(model, x, 16, 4, labels=[0, 1], label_names=NAMES)
    assert len([ax for ax in fig.axes if ax.get_label() == "<colorbar>"]) == 1
    assert sum(t.startswith("MaskMix") for t in _titles(fig)) == 2
    figures._pyplot().close(fig)


# ----------------------------------------------------------------------------------------------
# the α curve

HISTORY = [
    {"step": s, "loss": 1.0, "mixpro/lam_area": 0.6, "mixpro/lam": 0.6, "mixpro/lam_attn": 0.5, "mixpro/alpha": 0.1 * s}
    for s in (5, 10, 15)
]


def test_alpha_curve_lines_are_distinct_and_say_what_they_average():
    fig = alpha_curve_figure(HISTORY)
    lines = fig.axes[0].get_lines()
    labels = {line.get_label() for line in lines}
    assert labels == {
        "α (PAL batches)",
        "λ_attn (attention-labelled batches)",
        "λ (all batches)",
        "λ_area (all batches)",
    }
    styles = {(line.get_color(), line.get_linestyle(), line.get_marker()) for line in lines}
    assert len({s[0] for s in styles}) == 4 and len({s[2] for s in styles}) == 4
    by_label = {line.get_label(): line for line in lines}
    lam, lam_area = by_label["λ (all batches)"], by_label["λ_area (all batches)"]
    assert lam.get_linestyle() != lam_area.get_linestyle(), "λ stays visible where it equals λ_area"
    assert lam.get_zorder() > lam_area.get_zorder() and lam_area.get_markersize() > lam.get_markersize()
    assert set(_legend_texts(fig)) == labels
    assert not any("No α curve" in t for t in _titles(fig))
    figures._pyplot().close(fig)


def test_a_single_logged_step_still_draws_every_value_with_a_marker():
    fig = alpha_curve_figure(HISTORY[:1])
    lines = fig.axes[0].get_lines()
    assert len(lines) == 4
    assert all(len(line.get_xdata()) == 1 and line.get_marker() not in (None, "", "None") for line in lines)
    low, high = fig.axes[0].get_xlim()
    assert low < 5 < high
    figures._pyplot().close(fig)


@pytest.mark.parametrize(
    ("history", "why"),
    [
        ([{"step": 5, "mixpro/lam_area": 0.7, "mixpro/lam": 0.7}], "area labels"),  # mix_method=mixup
        ([{"step": 5, "mixpro/lam_area": 0.7, "mixpro/lam": 0.6, "mixpro/lam_attn": 0.5}], "TransMix"),
        ([{"step": 30, "train_loss": 1.2}], "no mixpro/* statistics"),  # nothing logged during training
    ],
)
def test_history_without_alpha_gets_a_figure_saying_why(tmp_path, history, why):
    fig = alpha_curve_figure(history)
    text = " ".join(_titles(fig)).replace("\n", " ")
    assert "No α curve" in text and why in text
    figures._pyplot().close(fig)
    path = plot_alpha_curve(history, tmp_path / "alpha_curve.png")
    assert path.is_file() and path.stat().st_size > 0


# ----------------------------------------------------------------------------------------------
# write_figures on a sorted evaluation set


def _sorted_image_set(per_class: int = 5) -> Dataset:
    labels = [k for k in range(len(NAMES)) for _ in range(per_class)]
    images = [PILImage.fromarray(np.full((16, 16, 3), 40 * k + i, dtype=np.uint8)) for i, k in enumerate(labels)]
    features = Features({"image": Image(), "label": ClassLabel(names=NAMES)})
    return Dataset.from_dict({"image": images, "label": labels}, features=features)


def _to_tensor(image: PILImage.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 127.5 - 1.0).permute(2, 0, 1)


def test_dataset_labels_are_read_without_the_image_transform():
    calls = []

    def transform(image: PILImage.Image) -> torch.Tensor:
        calls.append(1)
        return _to_tensor(image)

    dataset = attach_transform(_sorted_image_set(), transform, "image", "label")
    assert dataset_labels(dataset).tolist() == [k for k in range(4) for _ in range(5)]
    assert not calls


def test_write_figures_shows_one_row_per_class_of_a_sorted_eval_set(tmp_path: Path, monkeypatch):
    seen = {}
    plot = figures.plot_maskmix_samples

    def spy(*args, **kwargs):
        seen.update(kwargs, pixel_values=args[1])
        return plot(*args, **kwargs)

    monkeypatch.setattr(figures, "plot_maskmix_samples", spy)
    eval_set = attach_transform(_sorted_image_set(), _to_tensor, "image", "label")
    processor = SimpleNamespace(image_mean=[0.5] * 3, image_std=[0.5] * 3)
    prepared = Prepared(
        model=make_tiny_vit(seed=0),
        processor=processor,
        train_set=eval_set,
        eval_set=eval_set,
        test_set=None,
        label_names=NAMES,
        patch_size=4,
        image_size=16,
    )
    write_figures(prepared, HISTORY, tmp_path, mask_scale=4, seed=0)
    assert (tmp_path / "maskmix_samples.png").is_file() and (tmp_path / "alpha_curve.png").is_file()
    labels, partners = seen["labels"], seen["partner_labels"]
    assert sorted(labels.tolist()) == [0, 1, 2, 3] and (labels != partners).all()
    assert seen["label_names"] == NAMES
    assert not torch.equal(seen["pixel_values"], seen["partner_pixel_values"])
