"""Data checks before training: label space, labels matched across splits, image modes, collator labels,
shuffled subsets, image verification and one-line errors for bad files (issue 11)."""

from __future__ import annotations

import io
import logging
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from datasets import ClassLabel, Dataset, DatasetDict
from datasets import Image as DatasetsImage
from PIL import Image

from mixpro_hf.collator import stack_examples
from mixpro_hf.data import (
    DataArguments,
    align_splits,
    attach_transform,
    digits_dataset,
    ensure_image_feature,
    find_column,
    label_names,
    load_image_datasets,
    load_splits,
    split_datasets,
    to_rgb8,
    verify_images,
)

CIFAR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cifar10"


def png_bytes(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def small_images(n: int, seed: int = 0, mode: str = "RGB", sizes: tuple[int, ...] = (8,)) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        size = sizes[i % len(sizes)]
        out.append(Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).convert(mode))
    return out


def image_dataset(labels: list, names: list[str] | None = None, images: list[Image.Image] | None = None) -> Dataset:
    """A dataset of 8x8 images with ``labels`` (a ClassLabel when ``names`` is given)."""
    images = images if images is not None else small_images(len(labels))
    ds = Dataset.from_dict({"image": images, "label": labels})
    return ds.cast_column("label", ClassLabel(names=names)) if names else ds


def write_parquet(path: Path, images: list[Image.Image], labels: list, image_key: str = "img") -> Path:
    """Parquet without 🤗 metadata (as pyarrow/pandas users write it): images are ``{bytes, path}`` structs."""
    table = pa.table({image_key: [{"bytes": png_bytes(i), "path": None} for i in images], "label": labels})
    pq.write_table(table, path)
    return path


def column(ds: Dataset, name: str = "label") -> list:
    return list(ds.select_columns([name]).to_dict()[name])


# ---------------------------------------------------------------------------------------------- label space


def test_a_stray_integer_label_is_refused_not_a_million_classes():
    ds = image_dataset([0, 1, 2, 1, 0, 1_000_000])
    with pytest.raises(ValueError, match=r"1000000.*--num_labels") as err:
        label_names(ds, "label")
    assert "'label'" in str(err.value) and "\n" not in str(err.value)


def test_gaps_in_integer_labels_are_refused_unless_num_labels_is_given():
    ds = image_dataset([0, 7, 0, 7])
    with pytest.raises(ValueError, match=r"ids 7 .*0\.\.1"):
        label_names(ds, "label")
    assert label_names(ds, "label", num_labels=10) == [str(i) for i in range(10)]
    with pytest.raises(ValueError, match=r"ids 7 outside \[0, 5\).*--num_labels 5"):
        label_names(ds, "label", num_labels=5)


def test_negative_and_missing_integer_labels_are_refused():
    with pytest.raises(ValueError, match="-1"):
        label_names(image_dataset([0, 1, -1]), "label")
    with pytest.raises(ValueError, match="missing labels"):
        label_names(image_dataset([0, 1, None]), "label")


def test_contiguous_integer_labels_and_classlabel_names():
    assert label_names(image_dataset([2, 0, 1, 1]), "label") == ["0", "1", "2"]
    ds = image_dataset([0, 1, 0], names=["cat", "dog", "bird"])
    assert label_names(ds, "label") == ["cat", "dog", "bird"], "ClassLabel names, also those no row uses"
    with pytest.raises(ValueError, match="--num_labels 2 does not match the 3 ClassLabel names"):
        label_names(ds, "label", num_labels=2)


@pytest.mark.parametrize("values", [[0.0, 1.5, 1.0], [True, False, True]])
def test_float_and_bool_label_columns_are_refused(values):
    with pytest.raises(ValueError, match="labels must be integer class ids"):
        label_names(image_dataset(values), "label")


def test_string_labels_become_sorted_class_names_in_every_split():
    train = image_dataset(["dog", "cat", "dog", "bird"])
    validation = image_dataset(["cat", "dog"])
    train, validation, test, names = align_splits(train, validation, None, "label")
    assert names == ["bird", "cat", "dog"] and test is None
    assert column(train) == [2, 1, 2, 0]
    assert column(validation) == [1, 2], "validation strings take the training ids"
    assert validation.features["label"].names == names


def test_a_string_label_training_does_not_have_is_refused_with_both_lists():
    with pytest.raises(ValueError, match=r"'fox'.*training names \['cat', 'dog'\].*test names \['cat', 'fox'\]"):
        align_splits(image_dataset(["cat", "dog"]), image_dataset(["cat"]), image_dataset(["fox", "cat"]), "label")


@pytest.mark.parametrize("value", [0, -3, True, 1.5])
def test_num_labels_and_sample_counts_must_be_at_least_one(value):
    for name in ("max_train_samples", "max_eval_samples", "num_labels"):
        with pytest.raises(ValueError, match=f"--{name} must be a whole number >= 1"):
            DataArguments(**{name: value})
    assert DataArguments(max_train_samples=1, max_eval_samples=3, num_labels=2).num_labels == 2


# ------------------------------------------------------------------------------------ labels across splits


def test_validation_classlabel_in_another_order_is_matched_by_name():
    train = image_dataset([0, 1, 1], names=["cat", "dog"])
    validation = image_dataset([0, 0, 1], names=["dog", "cat"])  # dog, dog, cat
    test = image_dataset([0], names=["dog"])  # a split with only some classes
    train, validation, test, names = align_splits(train, validation, test, "label")
    assert names == ["cat", "dog"]
    assert column(validation) == [1, 1, 0], "every dog stays a dog"
    assert validation.features["label"].names == ["cat", "dog"]
    assert column(test) == [1] and test.features["label"].names == ["cat", "dog"]
    assert column(train) == [0, 1, 1]


def test_a_label_name_training_does_not_have_is_refused_with_both_lists():
    train = image_dataset([0, 1], names=["cat", "dog"])
    validation = image_dataset([0, 1], names=["bird", "cat"])
    with pytest.raises(
        ValueError, match=r"validation split has label names 'bird'.*\['cat', 'dog'\].*\['bird', 'cat'\]"
    ):
        align_splits(train, validation, None, "label")


def test_integer_validation_and_test_labels_must_lie_in_the_training_label_space():
    train = image_dataset([0, 1, 2, 0])
    with pytest.raises(ValueError, match=r"validation split holds ids 3, 9 outside \[0, 3\)"):
        align_splits(train, image_dataset([0, 3, 9, 3]), None, "label")
    with pytest.raises(ValueError, match=r"test split holds ids -1 outside \[0, 2\)"):
        align_splits(image_dataset([0, 1], names=["a", "b"]), None, image_dataset([-1, -1], names=["a", "b"]), "label")
    *_, names = align_splits(train, image_dataset([2, 2]), image_dataset([0]), "label")
    assert names == ["0", "1", "2"]


def test_image_folders_validation_with_some_classes_keeps_training_ids(tmp_path):
    for split, classes in (("train", ("cat", "dog")), ("val", ("dog",))):
        for label in classes:
            folder = tmp_path / split / label
            folder.mkdir(parents=True)
            for i, image in enumerate(small_images(3, seed=len(label))):
                image.save(folder / f"{i}.png")
    args = DataArguments(train_dir=str(tmp_path / "train"), validation_dir=str(tmp_path / "val"))
    data = load_splits(args)
    assert data.label_names == ["cat", "dog"]
    assert column(data.validation) == [1, 1, 1], "the validation folder's only class is 'dog', id 1 in training"


def test_load_splits_takes_the_label_space_from_the_whole_training_split(tmp_path):
    # 30 rows of 3 classes: a 5-row subset need not hold every class, the label space still has 3
    path = write_parquet(tmp_path / "train.parquet", small_images(30), [i // 10 for i in range(30)])
    data = load_splits(DataArguments(train_file=str(path), max_train_samples=2, max_eval_samples=2))
    assert data.label_names == ["0", "1", "2"] and len(data.train) == 2 and len(data.validation) == 2


# ---------------------------------------------------------------------------------------------- image modes


def rgb_values(image: Image.Image) -> np.ndarray:
    assert image.mode == "RGB"
    return np.asarray(image).astype(int)


@pytest.mark.parametrize("mode", ["I;16", "I;16B", "I;16L"])
def test_sixteen_bit_grey_is_scaled_not_clipped(mode):
    values = np.array([[0, 32768], [65535, 257]], dtype=np.uint16)
    dtype = ">u2" if mode == "I;16B" else "<u2"
    image = Image.frombytes(mode, (2, 2), values.astype(dtype).tobytes())
    out = rgb_values(to_rgb8(image))
    assert out[..., 0].tolist() == [[0, 128], [255, 1]]
    assert (out[..., 0] == out[..., 2]).all()


def test_sixteen_bit_png_through_parquet_and_the_transform(tmp_path):
    grey = Image.fromarray(np.full((8, 8), 32768, np.uint16))
    assert Image.open(io.BytesIO(png_bytes(grey))).mode == "I;16"
    path = write_parquet(tmp_path / "train.parquet", [grey] * 4, [0, 1, 0, 1])
    data = load_splits(DataArguments(train_file=str(path), train_val_split=0.5))
    out = attach_transform(data.train, lambda im: torch.from_numpy(np.asarray(im).copy()), "img", "label")
    pixels = out[0]["pixel_values"]
    assert pixels.shape == (8, 8, 3) and int(pixels.min()) == 128 == int(pixels.max()), "mid-grey, not 99 % white"


def test_thirty_two_bit_integer_and_float_grey():
    assert rgb_values(to_rgb8(Image.fromarray(np.full((2, 2), 32768, np.int32))))[0, 0, 0] == 128
    with pytest.raises(ValueError, match=r"image mode 'I' .*70000"):
        to_rgb8(Image.fromarray(np.full((2, 2), 70000, np.int32)))
    assert rgb_values(to_rgb8(Image.fromarray(np.full((2, 2), 0.5, np.float32))))[0, 0, 0] == 128
    assert rgb_values(to_rgb8(Image.fromarray(np.full((2, 2), 200.0, np.float32))))[0, 0, 0] == 200
    for bad in (-1.0, 300.0, np.nan):
        with pytest.raises(ValueError, match=r"image mode 'F' .*expected \[0, 1\] or \[0, 255\]"):
            to_rgb8(Image.fromarray(np.full((2, 2), bad, np.float32)))


def test_transparency_is_composited_on_white():
    rgba = Image.fromarray(np.array([[[0, 0, 0, 0], [0, 0, 0, 255], [200, 0, 0, 128]]], np.uint8), "RGBA")
    assert rgb_values(to_rgb8(rgba))[0].tolist() == [[255, 255, 255], [0, 0, 0], [227, 127, 127]]
    la = Image.fromarray(np.array([[[10, 0], [10, 255]]], np.uint8), "LA")
    assert rgb_values(to_rgb8(la))[0, :, 0].tolist() == [255, 10]
    palette = Image.new("P", (2, 1))
    palette.putpalette([10, 20, 30, 200, 100, 50])
    palette.putpixel((1, 0), 1)
    palette.info["transparency"] = 0
    assert rgb_values(to_rgb8(palette))[0].tolist() == [[255, 255, 255], [200, 100, 50]]
    reopened = Image.open(io.BytesIO(png_bytes(palette)))
    assert reopened.mode == "P" and rgb_values(to_rgb8(reopened))[0, 0].tolist() == [255, 255, 255]


def test_eight_bit_modes_and_refused_modes():
    grey = Image.fromarray(np.array([[0, 77, 255]], np.uint8))
    assert rgb_values(to_rgb8(grey))[0, :, 1].tolist() == [0, 77, 255]
    bits = Image.new("1", (2, 1))
    bits.putpixel((1, 0), 1)
    assert rgb_values(to_rgb8(bits))[0, :, 0].tolist() == [0, 255]
    assert rgb_values(to_rgb8(Image.new("CMYK", (1, 1), (0, 0, 0, 0))))[0, 0].tolist() == [255, 255, 255]
    assert rgb_values(to_rgb8(Image.new("P", (1, 1), 0)))[0, 0].tolist() == [0, 0, 0]
    rgb = Image.new("RGB", (1, 1), (1, 2, 3))
    assert to_rgb8(rgb) is rgb
    with pytest.raises(ValueError, match="image mode 'La' is not supported"):
        to_rgb8(Image.new("La", (1, 1)))


# ------------------------------------------------------------------------------------------ collator labels


def pixel_examples(labels: list) -> list[dict]:
    return [{"pixel_values": torch.zeros(3, 4, 4), "labels": label} for label in labels]


@pytest.mark.parametrize(
    "bad", [1.7, 1.0, np.float32(2.0), True, np.bool_(True), "3", None, torch.tensor(1.5), torch.tensor([1])]
)
def test_collator_refuses_non_integer_labels(bad):
    with pytest.raises(ValueError, match=r"label .* of example 1 .*not an integer class id"):
        stack_examples(pixel_examples([0, bad]))


def test_collator_accepts_python_numpy_and_tensor_integers():
    batch = stack_examples(pixel_examples([0, np.int64(1), np.uint8(2), torch.tensor(3), np.array(4)]))
    assert batch["labels"].dtype == torch.long and batch["labels"].tolist() == [0, 1, 2, 3, 4]


# ------------------------------------------------------------------------------------------ shuffled subsets


def test_subsets_are_seeded_shuffles_of_every_split(tmp_path):
    sorted_labels = [i // 10 for i in range(40)]  # label-sorted, as CIFAR-10's Parquet export
    files = {}
    for split in ("train", "validation", "test"):
        files[split] = str(write_parquet(tmp_path / f"{split}.parquet", small_images(40), sorted_labels))
    args = DataArguments(
        train_file=files["train"],
        validation_file=files["validation"],
        test_file=files["test"],
        max_train_samples=8,
        max_eval_samples=8,
    )
    train, validation, test = split_datasets(load_image_datasets(args), args, seed=3)
    for ds in (train, validation, test):
        assert len(ds) == 8 and len(set(column(ds))) > 1, column(ds)
    again = split_datasets(load_image_datasets(args), args, seed=3)
    assert [column(ds) for ds in again] == [column(ds) for ds in (train, validation, test)]
    data = load_splits(args, seed=3)
    assert column(data.test) == column(test) and len(set(column(data.validation))) > 1


# ---------------------------------------------------------------------------------------- image verification


def corrupt_dataset(tmp_path: Path) -> Dataset:
    images = [{"bytes": png_bytes(i), "path": None} for i in small_images(6)]
    images[3] = {"bytes": b"not an image", "path": None}
    jpeg = png_bytes(small_images(1, mode="RGB", sizes=(64,))[0], fmt="JPEG")
    images[4] = {"bytes": jpeg[: len(jpeg) // 2], "path": None}  # truncated JPEG
    images[5] = {"bytes": None, "path": str(tmp_path / "gone.png")}
    ds = Dataset.from_dict({"image": images, "label": [0, 1, 0, 1, 0, 1]})
    return ensure_image_feature(ds, "image")


def test_a_corrupt_image_is_named_by_its_row_before_training(tmp_path):
    ds = corrupt_dataset(tmp_path)
    with pytest.raises(ValueError, match=r"image column 'image' of the train split, row 3: cannot decode image") as e:
        verify_images(ds, "image", split="train")
    assert "--skip_bad_images True" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ValueError, match="row 4: cannot decode image.*truncated"):
        verify_images(ds.select([0, 1, 2, 4]), "image")
    with pytest.raises(ValueError, match=r"row 5: image file '.*gone\.png' not found"):
        verify_images(ds.select([5, 0]), "image")


def test_skip_bad_images_drops_and_logs_them(tmp_path, caplog):
    ds = corrupt_dataset(tmp_path)
    with caplog.at_level(logging.WARNING, logger="mixpro_hf.images"):
        kept = verify_images(ds, "image", skip_bad_images=True)
    assert len(kept) == 3 and column(kept) == [0, 1, 0]
    assert "skipped 3 of 6 images" in caplog.text and "rows 3, 4, 5" in caplog.text
    with pytest.raises(ValueError, match="none of the 2 images can be used"):
        verify_images(ds.select([3, 5]), "image", skip_bad_images=True)


def test_verify_reports_unusable_image_values(tmp_path):
    bad = Image.fromarray(np.full((4, 4), 70000, np.int32))
    ds = Dataset.from_dict({"image": small_images(2) + [bad], "label": [0, 1, 0]})
    with pytest.raises(ValueError, match=r"row 2: cannot decode image: ValueError: image mode 'I'"):
        verify_images(ds, "image")


def test_load_splits_verifies_unless_told_not_to(tmp_path):
    path = tmp_path / "train.parquet"
    images = [{"bytes": png_bytes(i), "path": None} for i in small_images(10)]
    images[7] = {"bytes": b"\x89PNG broken", "path": None}
    pq.write_table(pa.table({"img": images, "label": [i % 2 for i in range(10)]}), path)
    args = dict(train_file=str(path), train_val_split=0.5)
    with pytest.raises(ValueError, match="row 7: cannot decode image"):
        load_splits(DataArguments(**args), seed=1)
    data = load_splits(DataArguments(**args, skip_bad_images=True), seed=1)
    assert len(data.train) + len(data.validation) == 9
    data = load_splits(DataArguments(**args, verify_images=False), seed=1)
    assert len(data.train) + len(data.validation) == 10


@pytest.mark.skipif(not CIFAR.is_dir(), reason=f"CIFAR-10 Parquet files not found at {CIFAR}")
def test_verifying_cifar10_takes_well_under_a_minute():
    from datasets import load_dataset

    train = load_dataset("parquet", data_files={"train": str(CIFAR / "train.parquet")}, split="train")
    start = time.perf_counter()
    assert len(verify_images(train, "img")) == 50_000
    assert time.perf_counter() - start < 60


# ------------------------------------------------------------------------------------ files and their errors


def test_an_empty_parquet_file_is_named(tmp_path):
    path = tmp_path / "empty.parquet"
    struct = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    pq.write_table(pa.table({"img": pa.array([], struct), "label": pa.array([], pa.int64())}), path)
    with pytest.raises(ValueError, match=r"data file '.*empty\.parquet' \(train\) has no rows") as err:
        load_image_datasets(DataArguments(train_file=str(path)))
    assert "Hub" not in str(err.value)
    garbage = tmp_path / "garbage.parquet"
    garbage.write_bytes(b"not parquet at all")
    with pytest.raises(ValueError, match=r"'.*garbage\.parquet' is not a readable Parquet file"):
        load_image_datasets(DataArguments(train_file=str(path.parent / "garbage.parquet")))


def test_unknown_extension_is_refused(tmp_path):
    path = tmp_path / "train.txt"
    path.write_text("x")
    with pytest.raises(ValueError, match="extension 'txt'"):
        load_image_datasets(DataArguments(train_file=str(path)))


def write_image_csv(folder: Path, rows: list[tuple[str, str]], name: str = "train.csv") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text("image,label\n" + "".join(f"{image},{label}\n" for image, label in rows))
    return path


def test_csv_of_image_paths_relative_to_the_csv(tmp_path, monkeypatch):
    data_dir = tmp_path / "data"
    (data_dir / "imgs").mkdir(parents=True)
    rows = []
    for i, image in enumerate(small_images(6, mode="L")):
        image.save(data_dir / "imgs" / f"{i}.png")
        rows.append((f"imgs/{i}.png", "cat" if i % 2 else "dog"))
    train_csv = write_image_csv(data_dir, rows)
    test_csv = write_image_csv(data_dir, rows[:2], "test.csv")
    monkeypatch.chdir(tmp_path)  # paths are resolved against the CSV's folder, not the working directory
    data = load_splits(DataArguments(train_file=str(train_csv), test_file=str(test_csv), train_val_split=0.5))
    assert data.image_column == "image" and data.label_names == ["cat", "dog"]
    assert isinstance(data.train.features["image"], DatasetsImage)
    assert isinstance(data.train[0]["image"], Image.Image)
    assert column(data.test) == [1, 0], "dog, cat"
    out = attach_transform(data.test, lambda im: np.asarray(im), "image", "label")
    assert np.asarray(out[0]["pixel_values"]).shape == (8, 8, 3)


def test_csv_with_a_missing_image_names_the_path(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    csv = write_image_csv(tmp_path, [("a.png", "0"), ("missing.png", "1"), ("a.png", "1")])
    with pytest.raises(ValueError, match=r"row 1: image file '.*missing\.png' not found"):
        load_splits(DataArguments(train_file=str(csv), validation_file=str(csv)))


# ------------------------------------------------------------------------------------ what worked keeps working


def test_parquet_grayscale_rgba_and_mixed_sizes(tmp_path):
    train = write_parquet(
        tmp_path / "train.parquet", small_images(12, mode="L", sizes=(6, 8, 10)), [i % 3 for i in range(12)]
    )
    test = write_parquet(tmp_path / "test.parquet", small_images(4, 1, "RGBA"), [0, 1, 2, 0])
    data = load_splits(DataArguments(train_file=str(train), test_file=str(test)))
    assert data.image_column == "img" and data.label_names == ["0", "1", "2"]
    assert len(data.train) + len(data.validation) == 12 and len(data.test) == 4
    out = attach_transform(data.test, lambda im: np.asarray(im), "img", "label")
    assert out[0]["pixel_values"].shape == (8, 8, 3) and out[0]["labels"] == 0


def test_embedded_digits_and_column_helpers():
    raw = digits_dataset(seed=0)
    assert isinstance(raw, DatasetDict) and len(raw["train"]) + len(raw["test"]) == 1797
    data = load_splits(DataArguments(max_train_samples=20, max_eval_samples=10, verify_images=False))
    assert data.label_names == [str(i) for i in range(10)] and len(data.train) == 20 and len(data.test) == 10
    assert find_column(["a", "img"], None, ("image", "img"), "image") == "img"
    with pytest.raises(ValueError, match="image column 'x' not found"):
        find_column(["img"], "x", ("img",), "image")


def test_validation_is_split_off_train_when_there_is_none():
    raw = DatasetDict(train=image_dataset([i % 2 for i in range(20)]))
    train, validation, test = split_datasets(raw, DataArguments(train_val_split=0.25), seed=0)
    assert (len(train), len(validation), test) == (15, 5, None)
    with pytest.raises(ValueError, match="no validation split"):
        split_datasets(raw, DataArguments(train_val_split=0.0), seed=0)
