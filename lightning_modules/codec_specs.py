"""Codec instances to evaluate: Pillow and CompressAI zoo ladders, trained runs, external codecs.

A :class:`CodecSpec` describes one instance (one codec at one rate point, one training
seed) and builds the codec only when evaluation reaches it, so one model at a time is in
memory. Trained CodecModule checkpoints are found in ``train.py`` run folders or whole
multirun folders, and each run's ``.hydra/config.yaml`` names the instance
(``<arch>@<experiment_name>``, ``lmbda``, ``seed``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from lightning_modules.codec_interface import Codec
from lightning_modules.compressai_codecs import (
    CompressAICodec,
    build_compressai_model,
    hub_checkpoint_path,
    zoo_weights_filename,
)
from lightning_modules.pillow_codecs import JpegCodec, WebPCodec

log = logging.getLogger(__name__)

__all__ = [
    "CodecSpec",
    "as_list",
    "build_codec_specs",
    "check_no_training_overlap",
    "checkpoint_file",
    "external_specs",
    "find_run_dirs",
    "pillow_specs",
    "rate_point_label",
    "read_run_config",
    "trained_spec",
    "zoo_specs",
]


@dataclass
class CodecSpec:
    """One codec instance to evaluate, built lazily so only one model is in memory at a time.

    Attributes
    ----------
    codec : str
        Display name, the ``codec`` column. Trained runs are ``<arch>@<experiment>``.
    rate_point : str
        Label of the rate setting, for example ``q50`` or ``lmbda0.0067``.
    family : str
        ``pillow``, ``zoo``, ``trained`` or ``external``.
    build : callable
        Returns the :class:`Codec`. It may raise ``FileNotFoundError`` (weights missing),
        which skips the instance with the message in the report.
    quality, lmbda : optional
        The numeric rate setting, for the CSV columns.
    seed : int, optional
        Training seed of a trained codec.
    epoch : int, optional
        Checkpoint epoch of a trained codec.
    source : str
        Where the codec comes from (checkpoint path, weight file, library).
    run_dir : Path, optional
        Training run folder, for the leak check against its split manifest.
    details : dict
        Extra facts for the report (split kind, data set of the run).
    """

    codec: str
    rate_point: str
    family: str
    build: Callable[[], Codec]
    quality: int | None = None
    lmbda: float | None = None
    seed: int | None = None
    epoch: int | None = None
    source: str = ""
    run_dir: Path | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str, str]:
        """(codec, rate_point, seed as text), the key of an instance in every table."""
        return self.codec, self.rate_point, "" if self.seed is None else str(self.seed)


def as_list(value) -> list:
    if value is None:
        return []
    if isinstance(value, (ListConfig, DictConfig)):
        value = OmegaConf.to_container(value, resolve=True)
    if isinstance(value, (str, int, float, Path)):
        return [value]
    return list(value)


def pillow_specs(jpeg_qualities: Iterable[int], webp_qualities: Iterable[int]) -> list[CodecSpec]:
    """Return JPEG and WebP specs at the given Pillow qualities."""
    import PIL

    specs = []
    for codec_class, qualities, name in ((JpegCodec, jpeg_qualities, "jpeg"), (WebPCodec, webp_qualities, "webp")):
        for quality in as_list(qualities):
            quality = int(quality)
            specs.append(CodecSpec(
                codec=name, rate_point=f"q{quality}", family="pillow", quality=quality,
                build=lambda codec_class=codec_class, quality=quality: codec_class(quality),
                source=f"Pillow {PIL.__version__}",
            ))
    return specs


def zoo_specs(entries: Iterable[Mapping[str, Any]], *, allow_download: bool, device: str) -> list[CodecSpec]:
    """Return CompressAI zoo specs: each entry has ``arch``, ``qualities`` and optional ``metric``."""
    specs = []
    for entry in as_list(entries):
        entry = dict(entry)
        if "arch" not in entry or "qualities" not in entry:
            raise ValueError(
                f"codecs.zoo entries need arch and qualities, got {entry}; for example "
                "{arch: bmshj2018-hyperprior, qualities: [1, 2, 3], metric: mse}"
            )
        arch = str(entry["arch"])
        metric = str(entry.get("metric", "mse"))
        name = arch if metric == "mse" else f"{arch}-{metric.replace('-', '')}"
        for quality in as_list(entry["qualities"]):
            quality = int(quality)
            path = hub_checkpoint_path(zoo_weights_filename(arch, quality, metric))
            specs.append(CodecSpec(
                codec=name, rate_point=f"q{quality}", family="zoo", quality=quality,
                build=lambda arch=arch, quality=quality, metric=metric: _zoo_codec(
                    arch, quality, metric, name, allow_download, device),
                source=str(path),
            ))
    return specs


def _zoo_codec(arch: str, quality: int, metric: str, name: str, allow_download: bool, device: str) -> Codec:
    model = build_compressai_model(arch, quality=quality, metric=metric, pretrained=True,
                                   allow_download=allow_download)
    return CompressAICodec(model.to(device), name, {"quality": quality})


def find_run_dirs(path: str | Path) -> list[Path]:
    """Return the training run folders at or below ``path`` (folders with ``checkpoints/``).

    A run folder is what ``train.py`` writes; a multirun folder contains one per job.

    Raises
    ------
    FileNotFoundError
        When ``path`` does not exist or contains no run folder.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"run folder {path} does not exist; give a train.py run or multirun folder")
    if (path / "checkpoints").is_dir():
        return [path]
    runs = sorted({folder.parent for folder in path.rglob("checkpoints") if folder.is_dir()})
    if not runs:
        raise FileNotFoundError(
            f"{path} contains no training run (no checkpoints/ folder below it); give the folder that "
            "train.py printed as 'Run directory', or its multirun folder"
        )
    return runs


def read_run_config(run_dir: Path) -> dict[str, Any]:
    """Return a run's resolved Hydra config (``.hydra/config.yaml``), or {} when it has none.

    Hydra saves the config with its interpolations (``experiment_name:
    ${data.name}_${split.kind}``), so they are resolved here. A value that cannot be
    resolved outside the Hydra app keeps its interpolation text.
    """
    path = Path(run_dir) / ".hydra" / "config.yaml"
    if not path.is_file():
        return {}
    config = OmegaConf.load(path)
    try:
        return OmegaConf.to_container(config, resolve=True) or {}
    except OmegaConfBaseException as error:
        log.warning("Could not resolve every interpolation of %s (%s); using the unresolved values", path, error)
        return OmegaConf.to_container(config, resolve=False) or {}


def checkpoint_file(run_dir: Path, which: str) -> Path:
    folder = run_dir / "checkpoints"
    if which == "last":
        path = folder / "last.ckpt"
    elif which == "best":
        candidates = sorted(folder.glob("best*.ckpt"), key=lambda p: p.stat().st_mtime)
        path = candidates[-1] if candidates else folder / "best-*.ckpt"
    else:
        path = folder / which
    if not path.is_file():
        present = sorted(p.name for p in folder.glob("*.ckpt"))
        raise FileNotFoundError(f"checkpoint {path} not found; {folder} has {present}. Set checkpoint=last, best "
                                "or a file name")
    return path


def trained_spec(checkpoint: Path, run_dir: Path | None = None, *, device: str = "cpu") -> CodecSpec:
    """Return the spec of a trained CodecModule checkpoint, named after its run's experiment."""
    from lightning_modules.codec_module import CodecModule

    checkpoint = Path(checkpoint)
    config = read_run_config(run_dir) if run_dir is not None else {}
    stored = torch.load(str(checkpoint), map_location="cpu", weights_only=False, mmap=True)
    hparams = dict(stored.get("hyper_parameters", {}))
    codec_cfg = config.get("codec") or {}

    arch_name = codec_cfg.get("name") or hparams.get("name") or hparams.get("arch", "codec")
    experiment = config.get("experiment_name") or (run_dir.name if run_dir is not None else checkpoint.stem)
    lmbda = float(codec_cfg.get("lmbda", hparams.get("lmbda", math.nan)))
    seed = config.get("seed")
    split = config.get("split") or {}

    def build() -> Codec:
        module = CodecModule.load_from_checkpoint(str(checkpoint), map_location="cpu", pretrained=False,
                                                  weights_path=None)
        codec = module.as_codec()
        codec.model.to(device)
        codec.name = f"{arch_name}@{experiment}"
        return codec

    return CodecSpec(
        codec=f"{arch_name}@{experiment}", rate_point=f"lmbda{lmbda:g}", family="trained", build=build,
        lmbda=lmbda, seed=None if seed is None else int(seed), epoch=stored.get("epoch"),
        source=str(checkpoint), run_dir=run_dir,
        details={"split_kind": split.get("kind"), "data": (config.get("data") or {}).get("name"),
                 "eval_seed": (config.get("data") or {}).get("eval_seed")},
    )


def external_specs(entries: Iterable[Any]) -> list[CodecSpec]:
    """Return specs for external codecs: Hydra targets, or Codec objects passed directly."""
    import hydra

    specs = []
    for entry in as_list(entries):
        built = entry if isinstance(entry, Codec) else hydra.utils.instantiate(entry)
        codecs = built if isinstance(built, (list, tuple)) else [built]
        for codec in codecs:
            if not isinstance(codec, Codec):
                raise TypeError(
                    f"codecs.external target {entry} returned a {type(codec).__name__}; it must return a "
                    "lightning_modules.codec_interface.Codec (or a list of them)"
                )
            rate = dict(codec.rate_point)
            specs.append(CodecSpec(
                codec=codec.name, rate_point=rate_point_label(rate), family="external",
                build=lambda codec=codec: codec, quality=rate.get("quality"), lmbda=rate.get("lmbda"),
                source=type(codec).__module__ + "." + type(codec).__qualname__,
            ))
    return specs


def rate_point_label(rate_point: Mapping[str, Any]) -> str:
    """Format a codec's rate point dict as a short label: ``q50``, ``lmbda0.0067`` or ``k=v``."""
    if set(rate_point) == {"quality"}:
        return f"q{rate_point['quality']}"
    if set(rate_point) == {"lmbda"}:
        return f"lmbda{float(rate_point['lmbda']):g}"
    return ",".join(f"{key}={value}" for key, value in sorted(rate_point.items()))


def build_codec_specs(cfg: Mapping[str, Any], *, device: str = "cpu") -> list[CodecSpec]:
    """Return every codec instance the evaluation config requests, baselines first."""
    codecs = cfg.get("codecs") or {}
    specs = pillow_specs(codecs.get("jpeg") or [], codecs.get("webp") or [])
    specs += zoo_specs(codecs.get("zoo") or [], allow_download=bool(codecs.get("zoo_allow_download", False)),
                       device=device)
    which = str(cfg.get("checkpoint", "last"))
    for run in as_list(cfg.get("runs")):
        for run_dir in find_run_dirs(run):
            specs.append(trained_spec(checkpoint_file(run_dir, which), run_dir, device=device))
    for checkpoint in as_list(cfg.get("checkpoints")):
        checkpoint = Path(checkpoint).expanduser()
        if not checkpoint.is_file():
            raise FileNotFoundError(f"checkpoint {checkpoint} not found")
        run_dir = checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else None
        specs.append(trained_spec(checkpoint, run_dir, device=device))
    specs += external_specs(codecs.get("external") or [])

    seen: dict[tuple[str, str, str], str] = {}
    for spec in specs:
        if spec.key in seen:
            raise ValueError(
                f"two codecs have the same key {spec.key} (codec, rate point, seed): {seen[spec.key]} and {spec.source}; "
                "give the runs distinct experiment_name or seed"
            )
        seen[spec.key] = spec.source
    return specs


def check_no_training_overlap(specs: Sequence[CodecSpec], sample_ids: Iterable[str], partition: str) -> None:
    """Raise when a trained codec saw evaluated images in training (read from its split manifest)."""
    if partition == "train":
        return
    evaluated = set(sample_ids)
    for spec in specs:
        if spec.run_dir is None:
            continue
        manifest_path = spec.run_dir / "split_manifest.csv"
        if not manifest_path.is_file():
            log.warning("Run %s has no split_manifest.csv; cannot check that it never trained on %s images",
                        spec.run_dir, partition)
            continue
        manifest = pd.read_csv(manifest_path, usecols=["sample_id", "in_training"], dtype={"sample_id": str})
        trained = set(manifest.loc[manifest["in_training"] == 1, "sample_id"])
        overlap = trained & evaluated
        if overlap:
            raise ValueError(
                f"run {spec.run_dir} trained on {len(overlap)} images of the evaluated {partition} partition "
                f"(for example {sorted(overlap)[:3]}); evaluate with the run's data.eval_seed "
                f"({spec.details.get('eval_seed')}) or on another partition"
            )
