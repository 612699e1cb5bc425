"""Dataset loaders by ``data.name``; each takes the ``data`` config and returns a FaceTable."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from datamodules.table import FaceTable

Loader = Callable[[Mapping[str, Any]], FaceTable]
LOADERS: dict[str, Loader] = {}


def register(name: str) -> Callable[[Loader], Loader]:
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
