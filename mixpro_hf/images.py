"""Images as the model reads them, and the check that every image can be read before training.

:func:`ensure_image_feature` decodes ``{"bytes", "path"}`` structs and columns of image file paths as
``datasets.Image``; :func:`to_rgb8` turns every supported PIL mode into 8-bit RGB (16-bit and float grey scaled,
transparency composited onto white); :func:`image_problem` says why one stored image cannot be used, and
:func:`verify_images` decodes every image of a split once, stopping on (or, with ``--skip_bad_images``, dropping)
a missing, corrupt or unusable one.
"""

from __future__ import annotations

import io
import logging
import os
from typing import Any

import numpy as np
import pyarrow as pa
from datasets import ClassLabel, Dataset, Value
from datasets import Image as DatasetsImage
from PIL import Image

from .class_labels import STRING_DTYPES, few_values

logger = logging.getLogger(__name__)

# Images with transparency are composited onto white, as 🤗 Transformers' ``convert_to_rgb`` does.
ALPHA_BACKGROUND = (255, 255, 255)


def _one_line(err: BaseException) -> str:
    """``Type: message`` of ``err`` (and of its cause, which datasets' generation errors hide) on one line."""
    text = f"{type(err).__name__}: {err}"
    if err.__cause__ is not None:
        text += f" ({type(err.__cause__).__name__}: {err.__cause__})"
    return " ".join(text.split())


def ensure_image_feature(dataset: Dataset, image_column: str) -> Dataset:
    """Decode ``{"bytes", "path"}`` structs (Parquet written without 🤗 metadata) and columns of image file
    paths (strings; relative paths are taken from the working directory) as images."""
    feature = dataset.features[image_column]
    if isinstance(feature, DatasetsImage):
        return dataset
    if isinstance(feature, dict) and {"bytes", "path"} <= set(feature):
        return dataset.cast_column(image_column, DatasetsImage())
    if isinstance(feature, Value) and feature.dtype in STRING_DTYPES:
        return dataset.cast_column(image_column, DatasetsImage())
    numbers = isinstance(feature, ClassLabel) or (isinstance(feature, Value) and "binary" not in feature.dtype)
    if numbers:  # one number per row is not an image
        dtype = getattr(feature, "dtype", type(feature).__name__)
        rows = dataset.select_columns([image_column]).with_format("arrow")[:1] if isinstance(dataset, Dataset) else None
        example = rows[image_column].to_pylist() if rows is not None else []
        raise ValueError(
            f"image column {image_column!r} holds {dtype} values (e.g. {example[0] if example else None!r}), not "
            "images: it needs images, image bytes, image file paths or pixel arrays (pick the column with "
            "--image_column_name)"
        )
    return dataset


# Modes PIL converts to RGB faithfully; transparency is handled before (``_ALPHA_MODES``, ``info["transparency"]``).
_DIRECT_MODES = frozenset({"L", "1", "P", "CMYK", "YCbCr", "LAB", "HSV", "RGBX"})
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa"})
_GRAY16_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})


def _gray_to_rgb8(gray: np.ndarray) -> Image.Image:
    gray = np.ascontiguousarray(gray, dtype=np.uint8)
    return Image.fromarray(np.repeat(gray[..., None], 3, axis=-1))


def _refuse_mode(image: Image.Image, detail: str) -> None:
    raise ValueError(
        f"image mode {image.mode!r} {detail}: convert the images to 8-bit RGB, L or RGBA, or 16-bit grey (I;16)"
    )


def to_rgb8(image: Image.Image) -> Image.Image:
    """``image`` as 8-bit RGB, its values scaled from the range of its mode; a one-line ``ValueError`` naming the
    mode when that range is unknown.

    - ``RGB``: unchanged. ``L``, ``1``, ``P``, ``CMYK``, ``YCbCr``, ``LAB``, ``HSV``, ``RGBX``: PIL's conversion.
    - Transparency (``RGBA``, ``LA``, ``PA``, ``RGBa``, or a ``transparency`` entry as palette and grey PNGs have):
      composited onto white (``ALPHA_BACKGROUND``), as 🤗 Transformers' ``convert_to_rgb`` does; dropping the
      alpha channel would show whatever colour the transparent pixels happen to store.
    - 16-bit grey (``I;16``, ``I;16L``, ``I;16B``, ``I;16N``): ``0..65535`` scaled to ``0..255`` (32768 -> 128);
      PIL's ``convert("RGB")`` clips every value above 255 to white.
    - 32-bit integer grey (``I``, as PIL reads 16-bit PNG/TIFF data in some versions): read as 16-bit data; values
      must lie in ``0..65535``, others are refused (their range is unknown).
    - 32-bit float grey (``F``): an image whose values all lie in ``[0, 1]`` is scaled by 255, else values in
      ``[0, 255]`` are kept (rounded); negative, larger, NaN or infinite values are refused.
    - any other mode (``La``, ``I;16S``, ...) is refused.
    """
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in _GRAY16_MODES or mode in ("I", "F"):
        values = np.asarray(image)
        if values.size == 0:
            return Image.new("RGB", image.size)
        if mode in _GRAY16_MODES:
            return _gray_to_rgb8((values.astype(np.uint32) * 255 + 32767) // 65535)
        low, high = values.min(), values.max()
        if mode == "I":
            if low < 0 or high > 65535:
                _refuse_mode(image, f"(32-bit integers) has values in [{low}, {high}], outside 16-bit 0..65535")
            return _gray_to_rgb8((values.astype(np.int64) * 255 + 32767) // 65535)
        if not (np.isfinite(low) and np.isfinite(high)) or low < 0 or high > 255:
            _refuse_mode(image, f"(32-bit floats) has values in [{low}, {high}]; expected [0, 1] or [0, 255]")
        scale = 255.0 if high <= 1.0 else 1.0
        return _gray_to_rgb8(np.clip(np.rint(values.astype(np.float64) * scale), 0, 255))
    if mode in _ALPHA_MODES or (mode in _DIRECT_MODES and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*ALPHA_BACKGROUND, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode in _DIRECT_MODES:
        return image.convert("RGB")
    _refuse_mode(image, "is not supported")
    raise AssertionError("unreachable")


def _needs_value_check(mode: str) -> bool:
    """Whether :func:`to_rgb8` can refuse an image of ``mode`` (by its values or its mode)."""
    return mode in ("I", "F") or not (
        mode == "RGB" or mode in _DIRECT_MODES or mode in _ALPHA_MODES or mode in _GRAY16_MODES
    )


def image_problem(value: dict[str, Any] | None) -> str | None:
    """Why a stored image (datasets' undecoded ``{"bytes", "path"}``) cannot be trained on, or None.

    The image is decoded in full (``load``); JPEGs at 1/8 scale (``draft``), which still decodes every block, so
    truncated or corrupt data is found, about ten times faster. Images whose values :func:`to_rgb8` refuses are
    reported too.
    """
    if value is None:
        return "no image (None)"
    data, path = value.get("bytes"), value.get("path")
    try:
        if data is not None:
            image = Image.open(io.BytesIO(data))
        elif not path:
            return "no image (neither bytes nor a path)"
        elif "://" in path:  # a URL (or fsspec path): datasets fetches it as it will in training
            image = DatasetsImage().decode_example({"bytes": None, "path": path})
        elif not os.path.isfile(path):
            return f"image file {path!r} not found"
        else:
            image = Image.open(path)
        with image:
            if image.format == "JPEG":
                image.draft(image.mode, (1, 1))
            image.load()
            if _needs_value_check(image.mode):
                to_rgb8(image)
    except Exception as err:  # PIL raises OSError, SyntaxError, ValueError, DecompressionBombError, ...
        named = f" {path!r}" if path else ""
        return f"cannot decode image{named}: {_one_line(err)}"
    return None


def _file_rows(dataset: Dataset, positions: list[int]) -> list[int]:
    """The rows of the loaded split behind ``positions`` of ``dataset`` (which shuffles and selections map)."""
    indices = getattr(dataset, "_indices", None)  # datasets' row mapping; absent when nothing was selected
    if indices is None:
        return positions
    try:
        return [int(i) for i in indices.column(0).take(pa.array(positions, pa.int64())).to_pylist()]
    except Exception:  # a datasets version with another layout: report the positions
        return positions


def verify_images(
    dataset: Dataset,
    image_column: str,
    *,
    skip_bad_images: bool = False,
    split: str | None = None,
    batch_size: int = 1000,
) -> Dataset:
    """Decode every image of ``dataset`` once (:func:`image_problem`), before training.

    A missing, corrupt or unusable image stops the run with a one-line ``ValueError`` naming its row (in the
    loaded split, before any shuffle or subset) and path; with ``skip_bad_images`` such rows are dropped and
    their count and first rows logged (all rows bad: an error). A column that is not a ``datasets.Image``
    (e.g. arrays) is returned unchanged. About 10 s for CIFAR-10's 50,000 PNGs on one core.
    """
    if not isinstance(dataset.features[image_column], DatasetsImage):
        return dataset
    where = f" of the {split} split" if split else ""
    stored = dataset.select_columns([image_column]).cast_column(image_column, DatasetsImage(decode=False))
    bad: list[tuple[int, str]] = []
    for start in range(0, len(stored), batch_size):
        for offset, value in enumerate(stored[start : start + batch_size][image_column]):
            problem = image_problem(value)
            if problem is None:
                continue
            if not skip_bad_images:
                row = _file_rows(dataset, [start + offset])[0]
                raise ValueError(
                    f"image column {image_column!r}{where}, row {row}: {problem}; fix or remove it, or pass "
                    "--skip_bad_images True"
                )
            bad.append((start + offset, problem))
    if not bad:
        return dataset
    positions = [position for position, _ in bad]
    rows = _file_rows(dataset, positions)
    if len(bad) == len(dataset):
        raise ValueError(f"none of the {len(dataset)} images{where} can be used; row {rows[0]}: {bad[0][1]}")
    logger.warning(
        "skipped %d of %d images%s that cannot be used (--skip_bad_images): rows %s; row %d: %s",
        len(bad),
        len(dataset),
        where,
        few_values(rows),
        rows[0],
        bad[0][1],
    )
    keep = np.setdiff1d(np.arange(len(dataset)), np.asarray(positions))
    return dataset.select(keep)
