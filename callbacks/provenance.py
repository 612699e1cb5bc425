"""provenance.json: what produced a run directory."""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = (
    "torch", "torchvision", "lightning", "compressai", "torchmetrics", "numpy", "scipy",
    "pandas", "hydra-core", "wandb", "timm", "torch-fidelity", "lpips", "datasets", "pillow",
    "statsmodels",
)


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def git_commit(directory: Path) -> dict[str, Any]:
    """Return the commit of the repository holding ``directory`` and whether it is dirty."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=directory, capture_output=True, text=True, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=directory, capture_output=True, text=True, check=True,
        ).stdout
        return {"commit": commit, "dirty": bool(status.strip())}
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "dirty": None}


def package_versions() -> dict[str, str | None]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def write_provenance(
    run_dir: Path,
    config: dict[str, Any],
    *,
    manifest_sha256: str | None = None,
    weight_files: list[str | Path] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``provenance.json`` into ``run_dir`` and return its path."""
    weights = {}
    for file in weight_files or []:
        path = Path(file)
        weights[str(path)] = sha256_file(path) if path.is_file() else None
    record = {
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "git": git_commit(Path(__file__).resolve().parent),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": package_versions(),
        "config": config,
        "split_manifest_sha256": manifest_sha256,
        "weight_files": weights,
    }
    if extra:
        record.update(extra)
    path = Path(run_dir) / "provenance.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2, sort_keys=True, default=str) + "\n")
    return path
