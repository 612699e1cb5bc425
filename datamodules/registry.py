"""Dataset loaders by ``data.name``; each takes the ``data`` config and returns a FaceTable."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from datamodules.table import FaceTable

Loader = Callable[[Mapping[str, Any]], FaceTable]
LOADERS: dict[str, Loader] = {}


def register(name: str) -> Callable[[Loader], Loader]:
    """Register a loader under ``data.name``; later registrations replace earlier ones."""

    def wrap(loader: Loader) -> Loader:
        LOADERS[name] = loader
        return loader

    return wrap


def _require_root(cfg: Mapping[str, Any]) -> str:
    root = cfg.get("root")
    if not root:
        raise ValueError(f"data.name={cfg.get('name')} needs data.root=/path/to/the/dataset")
    return str(root)


@register("fairface")
def _fairface(cfg: Mapping[str, Any]) -> FaceTable:
    from datamodules.fairface import load_fairface, load_fairface_hf

    if cfg.get("source", "folder") == "hf":
        return load_fairface_hf(config=str(cfg.get("hf_config", "1.25")), cache_dir=cfg.get("hf_cache_dir"))
    return load_fairface(_require_root(cfg))


@register("celeba")
def _celeba(cfg: Mapping[str, Any]) -> FaceTable:
    from datamodules.celeba import load_celeba

    attributes = cfg.get("attributes")
    group_names = cfg.get("group_names")
    return load_celeba(
        _require_root(cfg),
        attributes=list(attributes) if attributes is not None else None,
        group_csv=cfg.get("group_csv"),
        group_names=list(group_names) if group_names else None,
    )


@register("rfw")
def _rfw(cfg: Mapping[str, Any]) -> FaceTable:
    from datamodules.rfw import load_rfw

    return load_rfw(_require_root(cfg), phenotype_csv=cfg.get("phenotype_csv"))


@register("utkface")
def _utkface(cfg: Mapping[str, Any]) -> FaceTable:
    from datamodules.utkface import load_utkface

    return load_utkface(_require_root(cfg), age_format=str(cfg.get("age_format", "bins")))


@register("csv")
def _csv(cfg: Mapping[str, Any]) -> FaceTable:
    from datamodules.csv_dataset import load_csv_dataset

    if not cfg.get("csv_path"):
        raise ValueError("data.name=csv needs data.csv_path=/path/to/labels.csv")
    group_names = cfg.get("group_names")
    labels = cfg.get("attribute_labels") or {}
    return load_csv_dataset(
        _require_root(cfg),
        cfg["csv_path"],
        file_column=str(cfg.get("file_column", "file")),
        group_column=cfg.get("group_column", "group"),
        attribute_columns=list(cfg.get("attribute_columns") or []),
        partition_column=cfg.get("partition_column"),
        identity_column=cfg.get("identity_column"),
        group_names=list(group_names) if group_names else None,
        attribute_labels={str(k): list(v) for k, v in dict(labels).items()},
        face_crop=float(cfg.get("default_face_crop", 1.0)),
        name=str(cfg.get("dataset_name", "csv")),
    )


@register("synthetic")
def _synthetic(cfg: Mapping[str, Any]) -> FaceTable:
    from datamodules.synthetic import load_synthetic

    return load_synthetic(
        n_per_group=int(cfg.get("n_per_group", 100)),
        seed=int(cfg.get("generator_seed", 0)),
    )


def load_table(cfg: Mapping[str, Any]) -> FaceTable:
    """Return the FaceTable that ``cfg`` (the ``data`` config group) names."""
    name = cfg.get("name")
    if name not in LOADERS:
        raise ValueError(f"unknown data.name {name!r}; expected one of {sorted(LOADERS)}")
    return LOADERS[name](cfg)
