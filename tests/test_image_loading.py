"""Image decoding to RGB, the face crop, bad-file errors and the on-disk image cache."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image, ImageOps

from datamodules.dataset import FaceDataset
from datamodules.image_cache import CACHE_VERSION, DiskImageCache, default_cache_dir
from datamodules.images import ImageLoadError, center_crop_resize, open_image, to_rgb
from datamodules.table import FaceTable
from tests.dataset_layouts import face_array, write_image

RGB = face_array(7, size=(20, 16))


def as_array(image: Image.Image) -> np.ndarray:
    assert image.mode == "RGB"
    return np.asarray(image).astype(np.int64)


# ---------------------------------------------------------------- modes to RGB


def test_to_rgb_grayscale_repeats_channel():
    gray = RGB[..., 0]
    result = as_array(to_rgb(Image.fromarray(gray, mode="L")))
    for channel in range(3):
        assert np.array_equal(result[..., channel], gray)


def test_to_rgb_bilevel_is_black_or_white():
    bits = Image.fromarray(RGB[..., 0] > 128).convert("1")
    result = as_array(to_rgb(bits))
    expected = np.where(RGB[..., 0] > 128, 255, 0)
    assert np.array_equal(result[..., 1], expected)


def test_to_rgb_rgba_composites_on_white():
    alpha = np.zeros(RGB.shape[:2], dtype=np.uint8)
    alpha[:, :10] = 255
    alpha[:, 10:15] = 128
    rgba = Image.fromarray(np.dstack([RGB, alpha]), mode="RGBA")
    result = as_array(to_rgb(rgba))
    weight = alpha[..., None].astype(np.float64) / 255.0
    expected = RGB * weight + 255.0 * (1 - weight)
    assert np.abs(result - expected).max() <= 1
    assert (result[:, 15:] == 255).all()


def test_to_rgb_gray_alpha_composites_on_white():
    gray = RGB[..., 1]
    alpha = np.full(gray.shape, 255, dtype=np.uint8)
    alpha[0, 0] = 0
    result = as_array(to_rgb(Image.fromarray(np.dstack([gray, alpha]), mode="LA")))
    assert result[0, 0].tolist() == [255, 255, 255]
    assert result[1, 1].tolist() == [gray[1, 1]] * 3


def test_to_rgb_palette_matches_palette_colours():
    palette_image = Image.fromarray(RGB).quantize(colors=16)
    palette = np.array(palette_image.getpalette()[: 16 * 3]).reshape(16, 3)
    indices = np.asarray(palette_image)
    assert np.array_equal(as_array(to_rgb(palette_image)), palette[indices])


def test_to_rgb_palette_transparency_is_white():
    palette_image = Image.fromarray(RGB).quantize(colors=8)
    transparent = int(np.asarray(palette_image)[0, 0])
    palette_image.info["transparency"] = transparent
    result = as_array(to_rgb(palette_image))
    mask = np.asarray(palette_image) == transparent
    assert (result[mask] == 255).all()
    assert not (result[~mask] == 255).all()


def test_to_rgb_cmyk_tiff_round_trip(tmp_path):
    path = tmp_path / "cmyk.tif"
    Image.fromarray(RGB).convert("CMYK").save(path)
    with Image.open(path) as stored:
        assert stored.mode == "CMYK"
    assert np.array_equal(as_array(open_image(path)), RGB)


def test_to_rgb_cmyk_jpeg_close_to_source(tmp_path):
    path = tmp_path / "cmyk.jpg"
    Image.fromarray(RGB).convert("CMYK").save(path, quality=100)
    decoded = as_array(open_image(path))
    # Lossy coding of four channels: compare the mean error, not exact pixels.
    assert np.abs(decoded - RGB).mean() < 6


def test_to_rgb_sixteen_bit_gray_scales_by_257(tmp_path):
    values = (RGB[..., 2].astype(np.uint16) * 257)
    path = tmp_path / "gray16.png"
    assert cv2.imwrite(str(path), values)
    with Image.open(path) as stored:
        assert stored.mode.startswith("I")
    result = as_array(open_image(path))
    assert np.array_equal(result[..., 0], RGB[..., 2])


def test_to_rgb_rgb48_png_high_byte(tmp_path):
    rng = np.random.default_rng(3)
    values = rng.integers(0, 65536, size=(12, 10, 3), dtype=np.uint16)
    path = tmp_path / "rgb16.png"
    assert cv2.imwrite(str(path), values)  # OpenCV writes BGR
    result = as_array(open_image(path))
    expected = (values[..., ::-1] >> 8).astype(np.int64)
    assert np.abs(result - expected).max() <= 1


def test_to_rgb_int_mode_sixteen_bit():
    values = RGB[..., 0].astype(np.int32) * 257
    result = as_array(to_rgb(Image.fromarray(values, mode="I")))
    assert np.array_equal(result[..., 0], RGB[..., 0])


def test_to_rgb_float_unit_range():
    values = RGB[..., 1].astype(np.float32) / 255.0
    result = as_array(to_rgb(Image.fromarray(values, mode="F")))
    assert np.abs(result[..., 0] - RGB[..., 1]).max() <= 1


def test_to_rgb_ycbcr_matches_pillow():
    ycbcr = Image.fromarray(RGB).convert("YCbCr")
    assert np.array_equal(as_array(to_rgb(ycbcr)), np.asarray(ycbcr.convert("RGB")))


def test_open_image_applies_exif_rotation(tmp_path):
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    Image.fromarray(RGB).save(path, exif=exif, quality=95)
    with Image.open(path) as raw:
        expected = np.asarray(ImageOps.exif_transpose(raw).convert("RGB"))
    result = open_image(path)
    assert result.size == (RGB.shape[0], RGB.shape[1])
    assert np.array_equal(np.asarray(result), expected)


# ---------------------------------------------------------------- crop and resize


def test_center_crop_full_square_is_plain_resize():
    square = Image.fromarray(face_array(1, size=(32, 32)))
    result = center_crop_resize(square, 1.0, 16)
    expected = square.resize((16, 16), Image.Resampling.BICUBIC, reducing_gap=3.0)
    assert np.array_equal(np.asarray(result), np.asarray(expected))


def test_center_crop_keeps_centre_of_short_side():
    # White around the centre, black border: the centre half (box 8..24 x 12..28) is
    # white, with 6 px of white margin for the bicubic filter's support.
    array = np.zeros((40, 32, 3), dtype=np.uint8)
    array[6:34, 2:30] = 255
    cropped = np.asarray(center_crop_resize(Image.fromarray(array), 0.5, 8))
    assert cropped.shape == (8, 8, 3)
    assert (cropped == 255).all()
    whole = np.asarray(center_crop_resize(Image.fromarray(array), 1.0, 8))
    assert whole.min() < 128


@pytest.mark.parametrize("face_crop", [0.0, 1.5])
def test_center_crop_rejects_bad_fraction(face_crop):
    with pytest.raises(ValueError, match="data.face_crop"):
        center_crop_resize(Image.fromarray(RGB), face_crop, 16)


# ---------------------------------------------------------------- bad files


def test_open_missing_file_names_it(tmp_path):
    with pytest.raises(ImageLoadError, match="not found.*absent.jpg"):
        open_image(tmp_path / "absent.jpg")


def test_open_zero_byte_file_names_it(tmp_path):
    path = tmp_path / "empty.jpg"
    path.touch()
    with pytest.raises(ImageLoadError, match=r"empty.jpg is empty \(0 bytes\)"):
        open_image(path)


@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_open_truncated_file_names_it(tmp_path, suffix):
    path = write_image(tmp_path / f"cut{suffix}", 3)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageLoadError, match=rf"cut\{suffix} is truncated"):
        open_image(path)


def test_open_non_image_names_it(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("this is not a JPEG")
    with pytest.raises(ImageLoadError, match="cannot decode image file .*notes.jpg"):
        open_image(path)


def test_open_symlink_loop_names_it(tmp_path):
    os.symlink(tmp_path / "b.jpg", tmp_path / "a.jpg")
    os.symlink(tmp_path / "a.jpg", tmp_path / "b.jpg")
    with pytest.raises(ImageLoadError, match="a.jpg is a symlink loop"):
        open_image(tmp_path / "a.jpg")


def test_open_directory_names_it(tmp_path):
    (tmp_path / "folder.jpg").mkdir()
    with pytest.raises(ImageLoadError, match="folder.jpg is a directory"):
        open_image(tmp_path / "folder.jpg")


# ---------------------------------------------------------------- disk cache


def _row(file: str) -> pd.Series:
    return pd.Series({"sample_id": file, "file": file, "pool": "all", "group": "g"})


def test_disk_cache_round_trip(tmp_path):
    write_image(tmp_path / "data" / "a.png", 1)
    cache = DiskImageCache(tmp_path / "cache", tmp_path / "data")
    array = face_array(5, size=(16, 16))
    assert cache.get(_row("a.png"), 16, 0.8) is None
    cache.put(_row("a.png"), 16, 0.8, array)
    assert np.array_equal(cache.get(_row("a.png"), 16, 0.8), array)
    assert cache.contains("a.png", 16, 0.8)
    assert (cache.hits, cache.misses) == (1, 1)
    assert len(list((tmp_path / "cache").rglob("*.npy"))) == 1


def test_disk_cache_misses_on_other_crop_or_size(tmp_path):
    write_image(tmp_path / "data" / "a.png", 1)
    cache = DiskImageCache(tmp_path / "cache", tmp_path / "data")
    cache.put(_row("a.png"), 16, 0.8, face_array(5, size=(16, 16)))
    assert cache.get(_row("a.png"), 16, 0.9) is None
    assert cache.get(_row("a.png"), 32, 0.8) is None


def test_disk_cache_misses_after_file_changes(tmp_path):
    path = write_image(tmp_path / "data" / "a.png", 1)
    cache = DiskImageCache(tmp_path / "cache", tmp_path / "data")
    cache.put(_row("a.png"), 16, 1.0, face_array(5, size=(16, 16)))
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    assert cache.get(_row("a.png"), 16, 1.0) is None


def test_disk_cache_key_depends_on_root_and_version(tmp_path):
    for name in ("one", "two"):
        write_image(tmp_path / name / "a.png", 1)
    first = DiskImageCache(tmp_path / "cache", tmp_path / "one").key("a.png", 16, 1.0)
    second = DiskImageCache(tmp_path / "cache", tmp_path / "two").key("a.png", 16, 1.0)
    assert first != second
    assert CACHE_VERSION >= 1


def test_disk_cache_ignores_damaged_entry(tmp_path):
    write_image(tmp_path / "data" / "a.png", 1)
    cache = DiskImageCache(tmp_path / "cache", tmp_path / "data")
    cache.put(_row("a.png"), 16, 1.0, face_array(5, size=(16, 16)))
    entry = cache.entry_path(cache.key("a.png", 16, 1.0))
    entry.write_bytes(b"not numpy")
    assert cache.get(_row("a.png"), 16, 1.0) is None


def test_disk_cache_unwritable_folder_warns_once(tmp_path, caplog):
    write_image(tmp_path / "data" / "a.png", 1)
    blocker = tmp_path / "cache"
    blocker.write_text("a file where the cache folder should be")
    cache = DiskImageCache(blocker, tmp_path / "data")
    with caplog.at_level(logging.WARNING, logger="datamodules.image_cache"):
        cache.put(_row("a.png"), 16, 1.0, face_array(5, size=(16, 16)))
        cache.put(_row("a.png"), 16, 1.0, face_array(5, size=(16, 16)))
    warnings = [r for r in caplog.records if "cannot write the image cache" in r.getMessage()]
    assert len(warnings) == 1


def test_default_cache_dir_reads_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("FAIRBITS_CACHE", str(tmp_path / "explicit"))
    assert default_cache_dir() == tmp_path / "explicit"
    monkeypatch.delenv("FAIRBITS_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "fairbits"


def test_face_dataset_reads_disk_cache(tmp_path):
    root = tmp_path / "data"
    for k in range(3):
        write_image(root / f"{k}.jpg", k)
    samples = pd.DataFrame({"sample_id": [f"{k}.jpg" for k in range(3)], "file": [f"{k}.jpg" for k in range(3)],
                            "pool": "all", "group": "g"})

    def decode(row):
        return open_image(root / row["file"])

    def fail(row):
        raise AssertionError(f"decoded {row['file']} although it is cached")

    first_table = FaceTable("t", samples, ["g"], {}, decode, root=root)
    cache = DiskImageCache(tmp_path / "cache", root)
    first = FaceDataset(first_table, samples, image_size=16, face_crop=0.9, image_cache=cache)
    images = [first[k]["image"] for k in range(3)]

    second_table = FaceTable("t", samples, ["g"], {}, fail, root=root)
    second = FaceDataset(second_table, samples, image_size=16, face_crop=0.9,
                         image_cache=DiskImageCache(tmp_path / "cache", root))
    for k in range(3):
        assert torch.equal(second[k]["image"], images[k])
    reference = center_crop_resize(open_image(root / "1.jpg"), 0.9, 16)
    assert torch.equal(images[1], torch.from_numpy(np.asarray(reference).copy()).permute(2, 0, 1).float() / 255)


def test_layout_images_are_deterministic(tmp_path):
    write_image(tmp_path / "x.png", 11)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "x.png")), face_array(11))
    assert Path(tmp_path / "x.png").stat().st_size > 0
