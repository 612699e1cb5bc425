"""The optional measuring instruments of an evaluation: attribute classifier, InceptionV3, LPIPS.

Each loads from an explicit file or the standard caches and is never downloaded. When
one is missing, its metrics are reported unavailable after one warning, unless the
config demands it (``true``), which makes a missing file an error.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

log = logging.getLogger(__name__)

__all__ = ["AttributePredictor", "Measurements", "fid_from_features", "load_measurements"]


class AttributePredictor:
    """Protocol of an attribute classifier: ``attributes`` and ``predict(images) -> {name: [B] int64}``."""

    attributes: Mapping[str, Sequence[str]]

    def predict(self, images: Tensor) -> dict[str, Tensor]:  # pragma: no cover - protocol only
        raise NotImplementedError


@dataclass
class Measurements:
    """The optional measuring instruments, each ``None`` when unavailable.

    Attributes
    ----------
    feature_extractor : nn.Module, optional
        Maps ``[B, 3, H, W]`` images in [0, 1] to ``[B, d]`` features (InceptionV3 pool
        features for FID, KID and ``feat_dist``).
    lpips_model : nn.Module, optional
        LPIPS with real backbone weights.
    classifier : AttributePredictor, optional
        Attribute classifier, scored on originals and reconstructions.
    unavailable : dict
        Metric family -> reason it is not reported.
    weight_files : list of Path
        Weight files used, for provenance.json.
    """

    feature_extractor: Any = None
    lpips_model: Any = None
    classifier: Any = None
    unavailable: dict[str, str] = field(default_factory=dict)
    weight_files: list[Path] = field(default_factory=list)


def load_measurements(cfg: Mapping[str, Any], attributes: Mapping[str, Sequence[str]], device: str) -> Measurements:
    """Load the classifier, InceptionV3 and LPIPS that the config requests.

    ``realism.enabled`` and ``lpips.enabled`` are ``auto`` (use the weights when found,
    else report the metric unavailable after one warning), ``true`` (missing weights are
    an error) or ``false``. Without ``classifier_ckpt`` the attribute metrics are
    reported unavailable.
    """
    measurements = Measurements()
    _load_classifier(cfg, attributes, device, measurements)
    _load_realism(cfg, device, measurements)
    _load_lpips(cfg, device, measurements)
    return measurements


def _mode(value) -> str:
    text = str(value).lower()
    if text in ("true", "1", "yes", "on"):
        return "true"
    if text in ("false", "0", "no", "off", "none", "null"):
        return "false"
    if text != "auto":
        raise ValueError(f"expected auto, true or false, got {value!r}")
    return text


def _load_classifier(cfg, attributes, device, measurements: Measurements) -> None:
    path = cfg.get("classifier_ckpt")
    if not path:
        reason = "no classifier_ckpt given"
        measurements.unavailable["attribute metrics"] = reason
        log.warning("Attribute metrics unavailable: %s. Pass classifier_ckpt=<checkpoint> to score them.", reason)
        return
    try:
        from lightning_modules.classifier_loading import load_classifier
    except ImportError as error:
        measurements.unavailable["attribute metrics"] = f"classifier loading is not installed ({error})"
        log.warning("Attribute metrics unavailable: %s", error)
        return
    measurements.classifier = load_classifier(path, attributes, device=device)
    measurements.weight_files.append(Path(path))


def _load_realism(cfg, device, measurements: Measurements) -> None:
    realism_cfg = cfg.get("realism") or {}
    mode = _mode(realism_cfg.get("enabled", "auto"))
    if mode == "false":
        measurements.unavailable["realism (fid, kid, feat_dist)"] = "realism.enabled=false"
        return
    try:
        from fairness.realism import load_inception
    except ImportError as error:
        if mode == "true":
            raise
        measurements.unavailable["realism (fid, kid, feat_dist)"] = f"fairness.realism is missing ({error})"
        log.warning("FID, KID and feat_dist unavailable: %s", error)
        return
    extractor = load_inception(realism_cfg.get("inception_path"), device=device)
    if extractor is None:
        if mode == "true":
            raise FileNotFoundError("realism.enabled=true but no InceptionV3 weights were found; see the warning "
                                    "above for the file and how to get it")
        measurements.unavailable["realism (fid, kid, feat_dist)"] = "InceptionV3 weights not found"
        return
    measurements.feature_extractor = extractor
    measurements.weight_files.append(Path(extractor.weights_path))


def _load_lpips(cfg, device, measurements: Measurements) -> None:
    lpips_cfg = cfg.get("lpips") or {}
    mode = _mode(lpips_cfg.get("enabled", "auto"))
    if mode == "false":
        measurements.unavailable["lpips"] = "lpips.enabled=false"
        return
    from fairness.realism import load_lpips

    model = load_lpips(str(lpips_cfg.get("net", "alex")), lpips_cfg.get("path"), device=device)
    if model is None:
        if mode == "true":
            raise FileNotFoundError("lpips.enabled=true but the LPIPS backbone weights were not found")
        measurements.unavailable["lpips"] = "LPIPS backbone weights not found"
        return
    measurements.lpips_model = model
    measurements.weight_files.append(Path(model.weights_path))


def fid_from_features(real: np.ndarray, fake: np.ndarray) -> float:
    """Compute the Frechet distance between two feature sets (see
    :func:`fairness.realism.frechet_distance_of_features`, fast when n < d)."""
    from fairness.realism import frechet_distance_of_features

    return frechet_distance_of_features(real, fake)
