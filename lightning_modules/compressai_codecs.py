"""CompressAI models: construction, pretrained weights and a bitstream codec.

``build_compressai_model`` builds one of six CompressAI 1.2.8 architectures, untrained
or with weights. Weights are looked up in this order: an explicit file, the torch hub
cache where CompressAI's zoo stores its downloads, and a download through the zoo.
``CompressAICodec`` wraps a model as a ``Codec``, writing one self-contained bitstream
per image.
"""

from __future__ import annotations

import logging
import pickle
import struct
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
import torch.nn.functional as F
from compressai.models import (
    Cheng2020Anchor,
    Cheng2020Attention,
    CompressionModel,
    FactorizedPrior,
    JointAutoregressiveHierarchicalPriors,
    MeanScaleHyperprior,
    ScaleHyperprior,
)
from compressai.zoo import image as zoo_image
from compressai.zoo import image_models as zoo_image_models
from compressai.zoo.pretrained import load_pretrained as rename_zoo_keys
from torch import Tensor

from lightning_modules.codec_interface import Codec, check_image_batch

__all__ = [
    "ARCHITECTURES",
    "CONTEXT_MODEL_ARCHITECTURES",
    "PAD_MULTIPLE",
    "CompressAICodec",
    "PretrainedWeightsNotFoundError",
    "build_compressai_model",
    "crop_to",
    "hub_checkpoint_path",
    "pack_bitstream",
    "pad_to_multiple",
    "unpack_bitstream",
    "zoo_weights_filename",
]

log = logging.getLogger(__name__)

ARCHITECTURES: dict[str, type[CompressionModel]] = {
    "bmshj2018-factorized": FactorizedPrior,
    "bmshj2018-hyperprior": ScaleHyperprior,
    "mbt2018-mean": MeanScaleHyperprior,
    "mbt2018": JointAutoregressiveHierarchicalPriors,
    "cheng2020-anchor": Cheng2020Anchor,
    "cheng2020-attn": Cheng2020Attention,
}
"""CompressAI registry names and classes supported here."""

_N_ONLY_ARCHITECTURES = frozenset({"cheng2020-anchor", "cheng2020-attn"})

CONTEXT_MODEL_ARCHITECTURES = frozenset({"mbt2018", "cheng2020-anchor", "cheng2020-attn"})
"""Architectures with an autoregressive context model. Their decoder rounds ``y`` minus
the predicted mean, so the decoded image differs slightly from the forward pass."""

METRICS = ("mse", "ms-ssim")
"""Distortion metrics for which CompressAI's zoo has weights."""

PAD_MULTIPLE = 64
"""Inputs are padded to a multiple of this side, the total downsampling of the
hyperprior models (the factorized model needs only 16)."""

PAD_MODES = ("replicate", "zeros")


class PretrainedWeightsNotFoundError(FileNotFoundError):
    """Pretrained weights were requested but no file was found and none could be downloaded."""


def _arch_help() -> str:
    return (
        f"Supported architectures: {', '.join(ARCHITECTURES)}. cheng2020-* take N only; "
        "the others take N and M. Give either quality (CompressAI's zoo sizes) or N/M."
    )


def _check_arch(arch: str) -> None:
    if arch not in ARCHITECTURES:
        raise ValueError(f"Unknown CompressAI architecture {arch!r}. {_arch_help()}")


def _zoo_qualities(arch: str) -> list[int]:
    return sorted(zoo_image.cfgs[arch])


def _check_quality(arch: str, quality: int) -> None:
    qualities = _zoo_qualities(arch)
    if quality not in qualities:
        raise ValueError(
            f"quality={quality!r} is invalid for {arch}; CompressAI's zoo defines "
            f"qualities {qualities[0]}..{qualities[-1]}."
        )


def zoo_weights_filename(arch: str, quality: int, metric: str = "mse") -> str:
    """Return the file name under which CompressAI's zoo caches these weights.

    For example ``bmshj2018-hyperprior-3-6d87be32.pth.tar``. The zoo downloads the
    file into ``hub_checkpoint_path``.
    """
    _check_arch(arch)
    _check_quality(arch, quality)
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}.")
    url = zoo_image.model_urls[arch][metric][quality]
    return Path(urlparse(url).path).name


def hub_checkpoint_path(filename: str) -> Path:
    """Return where torch hub caches a downloaded weight file.

    The folder is ``torch.hub.get_dir()/checkpoints``, which follows ``TORCH_HOME``
    (default ``~/.cache/torch/hub/checkpoints``).
    """
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


def _read_state_dict(path: Path) -> dict[str, Tensor]:
    """Load a plain state_dict, or the ``state_dict`` of a checkpoint, from ``path``."""
    if not path.is_file():
        raise FileNotFoundError(f"Weight file {str(path)!r} does not exist.")

    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise ValueError(
            f"{str(path)!r} could not be loaded with torch.load(weights_only=True): {error} "
            "Save a plain state_dict with torch.save(model.state_dict(), path)."
        ) from error
    if isinstance(loaded, dict) and "state_dict" in loaded:
        loaded = loaded["state_dict"]
    if not isinstance(loaded, dict):
        raise ValueError(
            f"{str(path)!r} contains a {type(loaded).__name__}, expected a state_dict."
        )

    # A CodecModule checkpoint stores the network under the attribute "model".
    if loaded and all(key.startswith("model.") for key in loaded):
        loaded = {key[len("model."):]: value for key, value in loaded.items()}
    return rename_zoo_keys(loaded)


def _model_from_state_dict(arch: str, state_dict: dict[str, Tensor]) -> CompressionModel:
    model_class = ARCHITECTURES[arch]
    try:
        return model_class.from_state_dict(state_dict)
    except (KeyError, RuntimeError) as error:
        raise ValueError(
            f"The weights do not fit a {arch} model ({model_class.__name__}): {error}"
        ) from error


def _check_size_matches(model: CompressionModel, arch: str, N: int | None, M: int | None) -> None:
    for label, requested in (("N", N), ("M", M)):
        actual = getattr(model, label, None)
        if requested is not None and actual is not None and int(requested) != int(actual):
            raise ValueError(
                f"{arch} weights have {label}={actual}, but {label}={requested} was "
                f"requested. Drop {label} to take the size from the weights."
            )


def _download_zoo_model(arch: str, quality: int, metric: str, expected: Path) -> CompressionModel:
    """Download zoo weights, or raise PretrainedWeightsNotFoundError if that fails."""
    url = zoo_image.model_urls[arch][metric][quality]
    log.info("Downloading %s weights (quality %d, %s) from %s", arch, quality, metric, url)
    try:
        return zoo_image_models[arch](quality=quality, metric=metric, pretrained=True, progress=False)
    except OSError as error:
        raise PretrainedWeightsNotFoundError(
            f"Pretrained {arch} weights (quality {quality}, metric {metric}) were requested, "
            f"but {str(expected)!r} does not exist and the download from {url} failed "
            f"({type(error).__name__}: {error}). On a machine with internet access, "
            f"download {url} and copy it to {str(expected)!r} (set TORCH_HOME to use "
            "another cache), or pass weights_path=<file>."
        ) from error


def build_compressai_model(
    arch: str,
    *,
    quality: int | None = None,
    N: int | None = None,
    M: int | None = None,
    pretrained: bool = False,
    weights_path: str | Path | None = None,
    metric: str = "mse",
    allow_download: bool = True,
) -> CompressionModel:
    """Build a CompressAI model, untrained or with weights.

    Parameters
    ----------
    arch : str
        One of ``ARCHITECTURES``: bmshj2018-factorized, bmshj2018-hyperprior,
        mbt2018-mean, mbt2018, cheng2020-anchor, cheng2020-attn.
    quality : int, optional
        Zoo quality (1..8, cheng2020 1..6). It sets N and M to the zoo's sizes and,
        with ``pretrained``, selects the zoo weights. It does not set a lambda.
    N, M : int, optional
        Channel counts; they override the zoo sizes. cheng2020 takes N only.
    pretrained : bool
        Load CompressAI's zoo weights for ``quality`` and ``metric``. The lookup order
        is ``weights_path``, then ``hub_checkpoint_path(zoo_weights_filename(...))``,
        then a download through ``compressai.zoo`` if ``allow_download``.
    weights_path : str or Path, optional
        A state_dict file (CompressAI format, or a CodecModule checkpoint). When given,
        it is loaded whether or not ``pretrained`` is set; sizes come from the file.
    metric : {"mse", "ms-ssim"}
        Which zoo weights to load.
    allow_download : bool
        Try the zoo download when the cache has no file.

    Returns
    -------
    CompressionModel
        The model, in training mode as PyTorch constructs it.

    Raises
    ------
    ValueError
        For an unknown architecture, a quality outside the zoo's range, M for
        cheng2020, missing sizes, or weights whose sizes differ from N/M.
    PretrainedWeightsNotFoundError
        If pretrained weights were requested, no file exists and no download succeeded.
        Random weights are never returned in that case.
    """
    _check_arch(arch)
    if arch in _N_ONLY_ARCHITECTURES and M is not None:
        raise ValueError(f"{arch} takes N only, got M={M}. {_arch_help()}")
    if quality is not None:
        _check_quality(arch, quality)
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}.")

    if weights_path is not None:
        state_dict = _read_state_dict(Path(weights_path))
        model = _model_from_state_dict(arch, state_dict)
        _check_size_matches(model, arch, N, M)
        log.info("Loaded %s weights from %s", arch, weights_path)
        return model

    if pretrained:
        if quality is None:
            raise ValueError(
                f"pretrained=True needs quality to select the zoo weights for {arch} "
                f"(qualities {_zoo_qualities(arch)}), or pass weights_path."
            )
        cached = hub_checkpoint_path(zoo_weights_filename(arch, quality, metric))
        if cached.is_file():
            model = _model_from_state_dict(arch, _read_state_dict(cached))
            log.info("Loaded %s weights from the torch hub cache %s", arch, cached)
        elif allow_download:
            model = _download_zoo_model(arch, quality, metric, cached)
        else:
            url = zoo_image.model_urls[arch][metric][quality]
            raise PretrainedWeightsNotFoundError(
                f"Pretrained {arch} weights (quality {quality}, metric {metric}) were "
                f"requested, but {str(cached)!r} does not exist and downloads are off. "
                f"Download {url} to that path, or pass weights_path=<file>."
            )
        _check_size_matches(model, arch, N, M)
        return model

    zoo_sizes = zoo_image.cfgs[arch][quality] if quality is not None else (None, None)
    N = N if N is not None else zoo_sizes[0]
    if arch in _N_ONLY_ARCHITECTURES:
        if N is None:
            raise ValueError(f"{arch} needs quality or N. {_arch_help()}")
        return ARCHITECTURES[arch](N=int(N))

    M = M if M is not None else zoo_sizes[1]
    if N is None or M is None:
        raise ValueError(f"{arch} needs quality or both N and M. {_arch_help()}")
    return ARCHITECTURES[arch](N=int(N), M=int(M))


def pad_to_multiple(x: Tensor, multiple: int = PAD_MULTIPLE, mode: str = "replicate") -> Tensor:
    """Pad ``[B, C, H, W]`` at the bottom and right so that H and W are multiples.

    ``replicate`` repeats the last row and column, which adds no edge and so costs few
    bits. ``zeros`` pads with black, as CompressAI's evaluation script does.
    """
    if mode not in PAD_MODES:
        raise ValueError(f"pad mode must be one of {PAD_MODES}, got {mode!r}.")
    height, width = x.shape[-2:]
    pad_bottom = (-height) % multiple
    pad_right = (-width) % multiple
    if pad_bottom == 0 and pad_right == 0:
        return x
    if mode == "replicate":
        return F.pad(x, (0, pad_right, 0, pad_bottom), mode="replicate")
    return F.pad(x, (0, pad_right, 0, pad_bottom), mode="constant", value=0.0)


def crop_to(x: Tensor, height: int, width: int) -> Tensor:
    """Undo ``pad_to_multiple``: keep the top-left ``height x width`` pixels."""
    return x[..., :height, :width]


# Bitstream layout, big-endian. The header starts with the image height and width and
# the latent height and width that the model's decompress takes (uint16 each), then the
# number of strings (uint8). Next comes the byte length of every string but the last, as
# an unsigned LEB128 varint, and then the strings. The end of the bitstream implies the
# last length, so a two-string hyperprior header is 10-12 bytes.
_HEADER = struct.Struct(">HHHHB")
_UINT16_MAX = 2**16 - 1


def _encode_varint(value: int) -> bytes:
    encoded = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            encoded.append(byte | 0x80)
        else:
            encoded.append(byte)
            return bytes(encoded)


def _decode_varint(blob: bytes, offset: int) -> tuple[int, int]:
    value = 0
    shift = 0
    while True:
        if offset >= len(blob):
            raise ValueError("Truncated bitstream: a string length runs past the end.")
        byte = blob[offset]
        offset += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, offset


def pack_bitstream(
    strings: list[bytes], image_size: tuple[int, int], latent_shape: tuple[int, int]
) -> bytes:
    """Serialise one image's entropy-coded strings with the header needed to decode them."""
    values = (*image_size, *latent_shape)
    if any(not 0 <= int(v) <= _UINT16_MAX for v in values):
        raise ValueError(f"Image and latent sizes must fit in uint16, got {values}.")
    if not 1 <= len(strings) <= 255:
        raise ValueError(f"Expected 1..255 strings per image, got {len(strings)}.")

    header = _HEADER.pack(*(int(v) for v in values), len(strings))
    lengths = b"".join(_encode_varint(len(s)) for s in strings[:-1])
    return header + lengths + b"".join(strings)


def unpack_bitstream(blob: bytes) -> tuple[list[bytes], tuple[int, int], tuple[int, int]]:
    """Parse a bitstream written by ``pack_bitstream``.

    Returns
    -------
    strings : list of bytes
    image_size : (int, int)
        Height and width of the unpadded image.
    latent_shape : (int, int)
        The ``shape`` argument of the model's ``decompress``.
    """
    if len(blob) < _HEADER.size:
        raise ValueError(
            f"Bitstream of {len(blob)} bytes is shorter than its {_HEADER.size}-byte header."
        )
    height, width, latent_h, latent_w, count = _HEADER.unpack_from(blob, 0)
    if count == 0:
        raise ValueError("Invalid bitstream: the header lists 0 strings.")

    offset = _HEADER.size
    lengths = []
    for _ in range(count - 1):
        length, offset = _decode_varint(blob, offset)
        lengths.append(length)
    last_length = len(blob) - offset - sum(lengths)
    if last_length < 0:
        raise ValueError("Truncated bitstream: the strings are shorter than the header lengths.")
    lengths.append(last_length)

    strings = []
    for length in lengths:
        strings.append(bytes(blob[offset:offset + length]))
        offset += length
    return strings, (height, width), (latent_h, latent_w)


def _device_of(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


class CompressAICodec(Codec):
    """A CompressAI model as a ``Codec`` with real entropy coding.

    Images are padded to a multiple of 64 (``pad_mode``), coded with the model's
    ``compress``, and each image's strings are packed with a small header (see
    ``pack_bitstream``). ``decompress`` decodes and crops back to the original size.
    ``bpp = 8 * len(blob) / (H * W)`` of the unpadded image.

    Parameters
    ----------
    model : CompressionModel
        The network. The codec switches it to eval mode and, when ``update_entropy_coder``
        is set, calls ``model.update(force=True)`` once so the CDF tables match the
        current weights.
    name : str
        Display name, usually the architecture.
    rate_point : dict
        For example ``{"quality": 3}`` for zoo weights or ``{"lmbda": 0.0067}``.
    update_entropy_coder : bool
        Set False only when the caller has just run ``update(force=True)`` itself.
    pad_mode : {"replicate", "zeros"}
        How to pad to a multiple of 64. It must match the padding used in training for
        ``bpp_est`` to predict the real rate.

    Notes
    -----
    Models with a context model (``CONTEXT_MODEL_ARCHITECTURES``) decode to a slightly
    different image than their forward pass; report the decoded image as the result.
    """

    def __init__(
        self,
        model: CompressionModel,
        name: str,
        rate_point: dict[str, Any],
        *,
        update_entropy_coder: bool = True,
        pad_mode: str = "replicate",
    ) -> None:
        if pad_mode not in PAD_MODES:
            raise ValueError(f"pad_mode must be one of {PAD_MODES}, got {pad_mode!r}.")
        self.model = model
        self.name = name
        self.rate_point = dict(rate_point)
        self.pad_mode = pad_mode

        self.model.eval()
        if update_entropy_coder:
            with torch.no_grad():
                self.model.update(force=True)

    # NOTE: CompressAI decodes reliably only when encoder and decoder compute identical
    # scale indexes. On GPU, non-deterministic kernels can break that for the hyperprior
    # models; run coding on CPU when the decoded images look corrupted.
    @torch.no_grad()
    def compress(self, images: Tensor) -> list[bytes]:
        check_image_batch(images)
        height, width = images.shape[-2:]
        device = _device_of(self.model)

        x = pad_to_multiple(images.to(device, torch.float32), PAD_MULTIPLE, self.pad_mode)
        # Entropy coding needs float32 indexes; mixed precision would change them.
        with torch.autocast(device_type=device.type, enabled=False):
            coded = self.model.compress(x)

        latent_shape = tuple(int(v) for v in coded["shape"])
        blobs = []
        for index in range(images.shape[0]):
            strings = [per_image[index] for per_image in coded["strings"]]
            blobs.append(pack_bitstream(strings, (height, width), latent_shape))
        return blobs

    @torch.no_grad()
    def decompress(self, blobs: list[bytes]) -> Tensor:
        if len(blobs) == 0:
            raise ValueError("blobs is empty; pass at least one bitstream to decode.")

        parsed = [unpack_bitstream(blob) for blob in blobs]
        image_size, latent_shape = parsed[0][1], parsed[0][2]
        for index, (_, size, shape) in enumerate(parsed):
            if size != image_size or shape != latent_shape:
                raise ValueError(
                    f"Bitstream {index} is for a {size} image with latent {shape}, but "
                    f"bitstream 0 for {image_size} with latent {latent_shape}; decode "
                    "images of different sizes in separate calls."
                )

        # CompressAI takes one list per string kind (y, z), each with one entry per image.
        string_count = len(parsed[0][0])
        strings = [[strings[kind] for strings, _, _ in parsed] for kind in range(string_count)]

        device = _device_of(self.model)
        with torch.autocast(device_type=device.type, enabled=False):
            decoded = self.model.decompress(strings, torch.Size(latent_shape))
        x_hat = crop_to(decoded["x_hat"], *image_size)
        return x_hat.clamp(0.0, 1.0).to(torch.float32)
