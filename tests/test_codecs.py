"""Codec adapters: Pillow JPEG/WebP, CompressAI models, bitstreams and weight lookup."""

import io
import urllib.error

import compressai.zoo.image
import numpy as np
import pytest
import torch
from compressai.models import FactorizedPrior
from PIL import Image

from lightning_modules.codec_interface import Codec, check_image_batch
from lightning_modules.compressai_codecs import (
    ARCHITECTURES,
    CompressAICodec,
    PretrainedWeightsNotFoundError,
    build_compressai_model,
    hub_checkpoint_path,
    pack_bitstream,
    pad_to_multiple,
    unpack_bitstream,
    zoo_weights_filename,
)
from lightning_modules.pillow_codecs import (
    JPEG_QUALITY_LADDER,
    WEBP_QUALITY_LADDER,
    JpegCodec,
    WebPCodec,
)



def _smooth_images(batch: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    """Low-frequency colour fields, closer to photos than white noise."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(batch, 3, 4, 4, generator=generator)
    images = torch.nn.functional.interpolate(
        coarse, size=(height, width), mode="bicubic", align_corners=False
    )
    return images.clamp(0.0, 1.0)


def _tiny_model(arch: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if arch.startswith("cheng2020"):
        return build_compressai_model(arch, N=8)
    return build_compressai_model(arch, N=8, M=8)


# Pillow codecs.


@pytest.mark.parametrize("quality", [10, 75])
def test_jpeg_bpp_matches_pillow_file_size(quality):
    images = _smooth_images(2, 64, 48)
    codec = JpegCodec(quality)

    blobs = codec.compress(images)

    for index, blob in enumerate(blobs):
        array = (images[index].permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, format="JPEG", quality=quality, subsampling="4:2:0")
        expected_bpp = 8.0 * buffer.getbuffer().nbytes / (64 * 48)
        assert Codec.bits_per_pixel(blob, 64, 48) == pytest.approx(expected_bpp)
        assert blob == buffer.getvalue()


def test_jpeg_decode_matches_pillow_decode():
    images = _smooth_images(2, 32, 32)
    codec = JpegCodec(90)

    x_hat, bits = codec.round_trip(images)

    blobs = codec.compress(images)
    for index, blob in enumerate(blobs):
        reference = np.asarray(Image.open(io.BytesIO(blob)).convert("RGB"), dtype=np.float32) / 255.0
        assert np.array_equal(x_hat[index].permute(1, 2, 0).numpy(), reference)
        assert bits[index].item() == 8 * len(blob)
    assert x_hat.shape == images.shape
    assert (x_hat - images).abs().mean().item() < 0.02


def test_webp_bpp_and_round_trip():
    images = _smooth_images(2, 64, 64)
    codec = WebPCodec(50)

    blobs = codec.compress(images)
    x_hat = codec.decompress(blobs)

    for index, blob in enumerate(blobs):
        assert blob[:4] == b"RIFF"
        assert blob[8:12] == b"WEBP"
        array = (images[index].permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, format="WEBP", quality=50, method=6)
        assert len(blob) == buffer.getbuffer().nbytes
    assert x_hat.shape == images.shape
    assert (x_hat - images).abs().mean().item() < 0.05


def test_pillow_rate_falls_with_quality():
    images = _smooth_images(1, 64, 64)
    for codec_class, ladder in ((JpegCodec, JPEG_QUALITY_LADDER), (WebPCodec, WEBP_QUALITY_LADDER)):
        low = len(codec_class(ladder[0]).compress(images)[0])
        high = len(codec_class(ladder[-1]).compress(images)[0])
        assert low < high, codec_class.__name__


def test_pillow_codec_rejects_bad_quality():
    with pytest.raises(ValueError, match="1..100"):
        JpegCodec(0)
    with pytest.raises(ValueError, match="0..100"):
        WebPCodec(101)


def test_check_image_batch_rejects_bad_input():
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        check_image_batch(torch.rand(2, 1, 8, 8))
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        check_image_batch(torch.rand(2, 3, 8, 8) * 255.0)
    with pytest.raises(ValueError, match="float"):
        check_image_batch(torch.zeros(2, 3, 8, 8, dtype=torch.uint8))


# CompressAI codecs.


@pytest.mark.parametrize("arch", ["bmshj2018-factorized", "bmshj2018-hyperprior"])
def test_compressai_round_trip_equals_forward(arch):
    model = _tiny_model(arch).eval()
    images = _smooth_images(3, 64, 64)
    codec = CompressAICodec(model, arch, {"lmbda": 0.01})

    blobs = codec.compress(images)
    x_hat_decoded = codec.decompress(blobs)
    with torch.no_grad():
        x_hat_forward = model(images)["x_hat"].clamp(0, 1)

    assert x_hat_decoded.shape == images.shape
    assert torch.allclose(x_hat_decoded, x_hat_forward, atol=1e-4)
    for blob in blobs:
        assert codec.bits_per_pixel(blob, 64, 64) == 8 * len(blob) / (64 * 64)


@pytest.mark.parametrize("arch", ["bmshj2018-factorized", "bmshj2018-hyperprior"])
def test_compressai_blob_is_strings_plus_header(arch):
    model = _tiny_model(arch).eval()
    images = _smooth_images(2, 64, 64)
    codec = CompressAICodec(model, arch, {"lmbda": 0.01})

    blobs = codec.compress(images)
    with torch.no_grad():
        reference = model.compress(images)

    for index, blob in enumerate(blobs):
        strings = [per_image[index] for per_image in reference["strings"]]
        header_bytes = len(blob) - sum(len(s) for s in strings)
        assert 9 <= header_bytes <= 12
        parsed_strings, image_size, latent_shape = unpack_bitstream(blob)
        assert parsed_strings == strings
        assert image_size == (64, 64)
        assert latent_shape == tuple(reference["shape"])


@pytest.mark.parametrize("arch", ["mbt2018-mean", "mbt2018", "cheng2020-anchor", "cheng2020-attn"])
def test_compressai_decode_matches_compressai(arch):
    model = _tiny_model(arch).eval()
    images = _smooth_images(2, 64, 64)
    codec = CompressAICodec(model, arch, {"quality": 1})

    x_hat = codec.decompress(codec.compress(images))
    with torch.no_grad():
        coded = model.compress(images)
        reference = model.decompress(coded["strings"], coded["shape"])["x_hat"]

    assert x_hat.shape == images.shape
    assert torch.allclose(x_hat, reference, atol=1e-5)


def test_compressai_pads_and_crops_odd_sizes():
    model = _tiny_model("bmshj2018-hyperprior").eval()
    images = _smooth_images(2, 50, 36)
    codec = CompressAICodec(model, "hyperprior", {"lmbda": 0.01})

    blobs = codec.compress(images)
    x_hat = codec.decompress(blobs)

    with torch.no_grad():
        padded = pad_to_multiple(images, 64, "replicate")
        x_hat_forward = model(padded)["x_hat"][..., :50, :36].clamp(0, 1)
    assert padded.shape[-2:] == (64, 64)
    assert torch.equal(padded[..., 49:, :36], images[..., 49:50, :].expand(-1, -1, 15, -1))
    assert x_hat.shape == images.shape
    assert torch.allclose(x_hat, x_hat_forward, atol=1e-4)
    assert unpack_bitstream(blobs[0])[1] == (50, 36)


def test_compressai_zero_padding_mode():
    padded = pad_to_multiple(_smooth_images(1, 40, 64), 64, "zeros")

    assert padded.shape[-2:] == (64, 64)
    assert torch.count_nonzero(padded[..., 40:, :]) == 0
    with pytest.raises(ValueError, match="pad mode"):
        pad_to_multiple(padded, 64, "reflect")


def test_compressai_decompress_rejects_mixed_sizes():
    model = _tiny_model("bmshj2018-factorized").eval()
    codec = CompressAICodec(model, "factorized", {"lmbda": 0.01})
    blob_small = codec.compress(_smooth_images(1, 32, 32))[0]
    blob_large = codec.compress(_smooth_images(1, 64, 64))[0]

    with pytest.raises(ValueError, match="different sizes"):
        codec.decompress([blob_small, blob_large])


def test_bitstream_pack_unpack_long_strings():
    strings = [b"a" * 300, b"", b"b" * 70000]

    blob = pack_bitstream(strings, (128, 96), (2, 3))

    assert unpack_bitstream(blob) == (strings, (128, 96), (2, 3))
    with pytest.raises(ValueError, match="Truncated"):
        unpack_bitstream(blob[:12])


# Model construction and weights.


def test_build_rejects_unknown_arch():
    with pytest.raises(ValueError, match="bmshj2018-hyperprior") as error:
        build_compressai_model("balle2018", N=8, M=8)
    for arch in ARCHITECTURES:
        assert arch in str(error.value)


def test_build_cheng2020_rejects_m():
    with pytest.raises(ValueError, match="takes N only"):
        build_compressai_model("cheng2020-anchor", N=8, M=8)


def test_build_rejects_bad_quality_and_missing_size():
    with pytest.raises(ValueError, match="1..6"):
        build_compressai_model("cheng2020-attn", quality=7)
    with pytest.raises(ValueError, match="needs quality or both N and M"):
        build_compressai_model("mbt2018-mean", N=8)


def test_build_quality_sets_zoo_sizes():
    model = build_compressai_model("bmshj2018-factorized", quality=1)

    assert (model.N, model.M) == compressai.zoo.image.cfgs["bmshj2018-factorized"][1]


@pytest.fixture
def offline_zoo(monkeypatch, tmp_path):
    """An empty TORCH_HOME and a zoo download that fails as it does without network."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    attempts = []

    def fail_download(url, *args, **kwargs):
        attempts.append(url)
        raise urllib.error.URLError("network is unreachable")

    def forbid_network(*args, **kwargs):
        raise AssertionError("a network download was attempted")

    monkeypatch.setattr(compressai.zoo.image, "load_state_dict_from_url", fail_download)
    monkeypatch.setattr(torch.hub, "download_url_to_file", forbid_network)
    return attempts


def test_pretrained_missing_offline_raises(offline_zoo):
    filename = zoo_weights_filename("bmshj2018-hyperprior", 3)
    expected_path = hub_checkpoint_path(filename)

    with pytest.raises(PretrainedWeightsNotFoundError) as error:
        build_compressai_model("bmshj2018-hyperprior", quality=3, pretrained=True)

    message = str(error.value)
    assert filename == "bmshj2018-hyperprior-3-6d87be32.pth.tar"
    assert str(expected_path) in message
    assert "weights_path" in message
    assert len(offline_zoo) == 1
    assert offline_zoo[0].endswith(filename)


def test_pretrained_without_download_never_calls_zoo(offline_zoo):
    with pytest.raises(PretrainedWeightsNotFoundError, match="downloads are off"):
        build_compressai_model("mbt2018", quality=2, pretrained=True, allow_download=False)
    assert offline_zoo == []


def test_pretrained_loads_from_hub_cache(offline_zoo):
    torch.manual_seed(1)
    reference = FactorizedPrior(128, 192)
    cached = hub_checkpoint_path(zoo_weights_filename("bmshj2018-factorized", 1))
    cached.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), cached)

    model = build_compressai_model("bmshj2018-factorized", quality=1, pretrained=True)

    assert offline_zoo == []
    for (name, value), (_, expected) in zip(model.state_dict().items(), reference.state_dict().items()):
        assert torch.equal(value, expected), name


def test_weights_path_loads_and_checks_size(tmp_path):
    reference = _tiny_model("bmshj2018-hyperprior")
    path = tmp_path / "weights.pth"
    torch.save(reference.state_dict(), path)

    model = build_compressai_model("bmshj2018-hyperprior", weights_path=path)

    assert torch.equal(model.g_a[0].weight, reference.g_a[0].weight)
    with pytest.raises(ValueError, match="N=8"):
        build_compressai_model("bmshj2018-hyperprior", N=16, weights_path=path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_compressai_model("bmshj2018-hyperprior", weights_path=tmp_path / "missing.pth")
