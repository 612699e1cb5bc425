"""Tiny labelled face folders and test codecs for the evaluate.py tests (never real people)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFilter

from lightning_modules.codec_interface import Codec
from lightning_modules.pillow_codecs import decode_image_bytes, tensor_to_uint8_images

GROUPS = ("Blue", "Green", "Red")
GENDERS = ("Female", "Male")


def _texture(rng: np.random.Generator, size: int, dominant: int) -> np.ndarray:
    # A smooth gradient with fine stripes and noise, so that blur and JPEG both cost PSNR.
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    base = 60.0 + 80.0 * x + 40.0 * y + 25.0 * np.sin(2 * np.pi * rng.uniform(3, 6) * x)
    image = np.stack([base * 0.5, base * 0.5, base * 0.5], axis=-1)
    image[..., dominant] += 70.0
    image += rng.normal(0.0, 12.0, size=image.shape)
    return image.clip(0, 255).astype(np.uint8)


def write_colour_faces(root: Path, *, test_per_group: int = 8, val_per_group: int = 2, size: int = 32,
                       seed: int = 0) -> dict:
    """Write PNG images whose dominant channel is their group, and return a ``data`` config.

    Group ``Red`` images are red-dominant, ``Green`` green and ``Blue`` blue. Images are
    written at ``size`` px with ``face_crop`` 1.0, so the loader keeps the pixels unchanged.
    """
    rng = np.random.default_rng(seed)
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    lines = ["file,group,gender,partition"]
    channel = {"Red": 0, "Green": 1, "Blue": 2}
    for group in GROUPS:
        for index in range(test_per_group + val_per_group):
            file = f"images/{group.lower()}_{index:02d}.png"
            Image.fromarray(_texture(rng, size, channel[group]), mode="RGB").save(root / file)
            partition = "test" if index < test_per_group else "val"
            lines.append(f"{file},{group},{GENDERS[index % 2]},{partition}")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    return {
        "name": "csv", "root": str(root), "csv_path": "labels.csv", "file_column": "file", "group_column": "group",
        "group_names": list(GROUPS), "attribute_columns": ["gender"], "attribute_labels": {"gender": list(GENDERS)},
        "partition_column": "partition", "identity_column": None, "default_face_crop": 1.0, "group_scheme": "native",
        "image_size": size, "face_crop": None, "eval_seed": 0, "eval_fraction": 0.1, "eval_per_group": None,
        "verify_images": True, "on_bad_image": "error", "disk_cache": False, "progress": False,
        "batch_size": 8, "eval_batch_size": 8, "num_workers": 0, "cache_in_memory": True,
    }


def evaluation_config(data: dict, **overrides) -> dict:
    """Return a small evaluate.yaml-like config: no baselines, few resamples, no bars."""
    config = {
        "data": data, "partition": "test", "runs": [], "checkpoint": "last", "checkpoints": [],
        "codecs": {"jpeg": [], "webp": [], "zoo": [], "zoo_allow_download": False, "external": []},
        "anchor": "jpeg", "n_matched_points": 3, "compare": [], "compare_codecs": None, "classifier_ckpt": None,
        "realism": {"enabled": False, "fid_min_per_group": 200, "kid_subset_size": 1000, "kid_subsets": 10,
                    "axis": "fid"},
        "lpips": {"enabled": False}, "min_group_size": 100, "confidence": 0.95, "n_resamples": 199,
        "images_per_group": 1, "batch_size": 8, "device": "cpu", "progress": False, "seed": 0,
        "wandb": {"enabled": False, "mode": "offline", "project": "fairbits-tests"},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    return config


def is_blue(array: np.ndarray) -> bool:
    """Return whether an ``H x W x 3`` uint8 image is blue-dominant."""
    means = array.reshape(-1, 3).mean(axis=0)
    return bool(means[2] > means[0] and means[2] > means[1])


class BlurBlueJpeg(Codec):
    """JPEG whose decoder blurs blue-dominant images: a planted, group-specific loss of quality.

    The bitstream is the plain JPEG file, so bpp equals JPEG's at the same quality.
    """

    def __init__(self, quality: int, radius: float = 1.2, name: str = "jpeg_blur") -> None:
        self.name = name
        self.quality = int(quality)
        self.radius = radius
        self.rate_point = {"quality": self.quality}

    def compress(self, images: torch.Tensor) -> list[bytes]:
        blobs = []
        for array in tensor_to_uint8_images(images):
            buffer = io.BytesIO()
            Image.fromarray(array).save(buffer, format="JPEG", quality=self.quality, subsampling="4:2:0",
                                        optimize=False, progressive=False)
            blobs.append(buffer.getvalue())
        return blobs

    def decompress(self, blobs: list[bytes]) -> torch.Tensor:
        decoded = []
        for blob in blobs:
            with Image.open(io.BytesIO(blob)) as image:
                image = image.convert("RGB")
                if is_blue(np.asarray(image)):
                    image = image.filter(ImageFilter.GaussianBlur(self.radius))
                decoded.append(np.asarray(image, dtype=np.uint8))
        return torch.from_numpy(np.stack(decoded)).permute(0, 3, 1, 2).float() / 255.0


class PlainJpeg(BlurBlueJpeg):
    """Plain Pillow JPEG under another codec name, for comparisons of equal codecs."""

    def __init__(self, quality: int, name: str = "jpeg_plain") -> None:
        super().__init__(quality, name=name)

    def decompress(self, blobs: list[bytes]) -> torch.Tensor:
        return decode_image_bytes(blobs)


class GreennessClassifier:
    """A stand-in attribute classifier: predicts ``Male`` when the green channel dominates red.

    It counts the images it classifies, so tests can check that originals are classified once.
    """

    def __init__(self) -> None:
        self.attributes = {"gender": list(GENDERS)}
        self.images_seen = 0

    def predict(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        self.images_seen += images.shape[0]
        means = images.mean(dim=(2, 3))
        return {"gender": (means[:, 1] > means[:, 0]).to(torch.int64)}


class PooledColourFeatures(torch.nn.Module):
    """A stand-in feature extractor: 4 x 4 average-pooled colours (48-d), counting its images."""

    def __init__(self) -> None:
        super().__init__()
        self.pool = torch.nn.AdaptiveAvgPool2d(4)
        self.images_seen = 0

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.images_seen += images.shape[0]
        return self.pool(images.float()).flatten(1)
