"""Test doubles for the fairness measures: a codec that blurs one group and a fixed feature extractor."""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn


def blur(images: torch.Tensor) -> torch.Tensor:
    """Remove detail: average 4 x 4 blocks, then upsample bilinearly."""
    small = F.avg_pool2d(images, 4)
    return F.interpolate(small, size=images.shape[-2:], mode="bilinear", align_corners=False)


class TransformCodec(L.LightningModule):
    """Return the fairness callback's per-image outputs for ``x_hat = x``, blurred for one group."""

    def __init__(self, blur_group: int | None = None) -> None:
        super().__init__()
        self.blur_group = blur_group
        self.weight = nn.Parameter(torch.zeros(()))

    def training_step(self, batch, batch_idx):
        return (self.weight - 1.0) ** 2

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def validation_step(self, batch, batch_idx):
        x = batch["image"]
        x_hat = x.clone()
        if self.blur_group is not None:
            chosen = batch["group"] == self.blur_group
            if chosen.any():
                x_hat[chosen] = blur(x[chosen])
        return {"sample_id": list(batch["sample_id"]), "group": batch["group"], "attributes": batch["attributes"],
                "x": x, "x_hat": x_hat, "bpp_est": torch.zeros(x.shape[0])}


class FixedFeatures(nn.Module):
    """A small fixed feature extractor standing in for InceptionV3: 256-d pooled ReLU maps."""

    def __init__(self) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=generator) * 0.5)
            self.conv.bias.zero_()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(F.relu(self.conv(images)), 4).flatten(1)
