"""Rate-distortion training of a CompressAI model as a LightningModule.

The loss is ``lmbda * 255**2 * MSE + bpp_est`` (CompressAI's ``RateDistortionLoss``) or,
with ``distortion="ms-ssim"``, ``lmbda * (1 - MS-SSIM) + bpp_est``. Two optimizers step
on every batch: the main one over the network and the auxiliary one over the entropy
bottleneck's ``quantiles``, which only the auxiliary loss trains.

The module logs overall values only. ``validation_step`` returns per-image outputs for
the fairness callback, which computes the per-group metrics.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import lightning as L
import torch
from compressai.entropy_models import EntropyBottleneck, GaussianConditional
from lightning.pytorch.trainer.states import TrainerFn
from torch import Tensor, nn
from torchmetrics import MeanMetric

from fairness.image_metrics import ms_ssim_per_image, psnr_per_image
from lightning_modules.compressai_codecs import (
    PAD_MODES,
    PAD_MULTIPLE,
    CompressAICodec,
    build_compressai_model,
    crop_to,
    pad_to_multiple,
)

__all__ = ["CodecModule", "resize_entropy_coder_buffers", "split_main_aux_parameters"]

log = logging.getLogger(__name__)

DISTORTIONS = ("mse", "ms-ssim")
LR_SCHEDULERS = ("plateau", "none")

# Buffers that ``update()`` fills with tables whose shapes depend on the weights.
_ENTROPY_BUFFERS = {
    EntropyBottleneck: ("_quantized_cdf", "_offset", "_cdf_length"),
    GaussianConditional: ("_quantized_cdf", "_offset", "_cdf_length", "scale_table"),
}


def split_main_aux_parameters(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """Split parameters into the main set and the auxiliary ``*.quantiles`` set.

    The two sets are disjoint and together hold every trainable parameter, so each
    parameter has exactly one optimizer.
    """
    main, aux = [], []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        if name.endswith(".quantiles"):
            aux.append(parameter)
        else:
            main.append(parameter)
    return main, aux


def resize_entropy_coder_buffers(module: nn.Module, state_dict: dict[str, Tensor]) -> None:
    """Reshape the entropy coder tables in ``module`` to their shapes in ``state_dict``.

    ``CompressionModel.load_state_dict`` does this itself, but loading through a parent
    module (as Lightning does) skips that override and fails with a size mismatch once
    ``update()`` has filled the tables. The values are then copied by ``load_state_dict``.
    """
    for module_name, submodule in module.named_modules():
        for module_type, buffer_names in _ENTROPY_BUFFERS.items():
            if not isinstance(submodule, module_type):
                continue
            for buffer_name in buffer_names:
                key = f"{module_name}.{buffer_name}" if module_name else buffer_name
                if key not in state_dict:
                    continue
                current = getattr(submodule, buffer_name)
                target_shape = state_dict[key].shape
                if current.shape != target_shape:
                    # A new tensor, not resize_(), because the old one may be an
                    # inference tensor, which cannot be changed in place.
                    resized = torch.zeros(target_shape, dtype=current.dtype, device=current.device)
                    setattr(submodule, buffer_name, resized)


class CodecModule(L.LightningModule):
    """Train a CompressAI model for rate-distortion and validate it with real coding.

    Parameters
    ----------
    arch : str
        CompressAI architecture: bmshj2018-factorized, bmshj2018-hyperprior,
        mbt2018-mean, mbt2018, cheng2020-anchor or cheng2020-attn.
    quality : int, optional
        Zoo quality. It sets N and M to the zoo's sizes and selects the zoo weights
        when ``pretrained``; the rate is set by ``lmbda``.
    N, M : int, optional
        Channel counts, overriding ``quality``. cheng2020 takes N only.
    lmbda : float
        Rate-distortion trade-off. With MSE, CompressAI's zoo used 0.0018 (quality 1)
        to 0.18 (quality 8); see docs/lambda_ladder.md.
    distortion : {"mse", "ms-ssim"}
        Distortion term of the loss, also the zoo metric for ``pretrained``.
    lr, aux_lr : float
        Adam learning rates of the main and the auxiliary optimizer.
    lr_scheduler : {"plateau", "none"}
        ``plateau`` multiplies the main learning rate by ``plateau_factor`` once
        ``val/loss`` has not improved for more than ``plateau_patience`` validations
        (``torch.optim.lr_scheduler.ReduceLROnPlateau``). The auxiliary rate is fixed.
    plateau_factor : float
        Factor applied to the main learning rate on a plateau.
    plateau_patience : int
        Validations without improvement that the scheduler tolerates.
    grad_clip : float, optional
        Maximum L2 norm of the main gradients; None or 0 disables clipping. Set it
        here, not on the Trainer, which rejects clipping under manual optimization.
    pretrained : bool
        Start from CompressAI's zoo weights for ``quality``.
    weights_path : str, optional
        Start from this state_dict file instead. ``load_from_checkpoint`` builds the
        module again before it loads the checkpoint's weights, so on a machine without
        the start weights pass ``pretrained=False, weights_path=None`` to it.
    real_coding_every_n_epochs : int
        Entropy-code the validation images every n epochs and always in the last
        epoch; 0 codes only in the last epoch. ``trainer.validate`` always codes.
    ms_ssim_data_range : float
        Data range for MS-SSIM, 1.0 for images in [0, 1].
    pad_mode : {"replicate", "zeros"}
        How inputs are padded to a multiple of 64, in training and in coding.
    name : str, optional
        Display name of the codec, default ``arch``.

    Notes
    -----
    Both optimizers step on every batch, and Lightning 2.6 counts each step in
    ``trainer.global_step``. So ``global_step`` is 2 x the number of training batches,
    and ``Trainer(max_steps=2 * n)`` trains on n batches. When ``max_steps`` ends
    training in the middle of an epoch, Lightning runs no final validation, so no
    real coding happens either. Choose ``max_steps`` at an epoch boundary.
    """

    def __init__(
        self,
        arch: str = "bmshj2018-hyperprior",
        quality: int | None = 3,
        N: int | None = None,
        M: int | None = None,
        lmbda: float = 0.0067,
        distortion: str = "mse",
        lr: float = 1e-4,
        aux_lr: float = 1e-3,
        lr_scheduler: str = "plateau",
        plateau_factor: float = 0.5,
        plateau_patience: int = 10,
        grad_clip: float | None = 1.0,
        pretrained: bool = False,
        weights_path: str | None = None,
        real_coding_every_n_epochs: int = 1,
        ms_ssim_data_range: float = 1.0,
        pad_mode: str = "replicate",
        name: str | None = None,
    ) -> None:
        super().__init__()
        if distortion not in DISTORTIONS:
            raise ValueError(f"distortion must be one of {DISTORTIONS}, got {distortion!r}.")
        lr_scheduler = "none" if lr_scheduler is None else str(lr_scheduler)
        if lr_scheduler not in LR_SCHEDULERS:
            raise ValueError(f"lr_scheduler must be one of {LR_SCHEDULERS}, got {lr_scheduler!r}.")
        if pad_mode not in PAD_MODES:
            raise ValueError(f"pad_mode must be one of {PAD_MODES}, got {pad_mode!r}.")
        if lmbda <= 0:
            raise ValueError(f"lmbda must be positive, got {lmbda}.")
        if real_coding_every_n_epochs < 0:
            raise ValueError(
                "real_coding_every_n_epochs must be >= 0 (0 codes only in the last epoch), "
                f"got {real_coding_every_n_epochs}."
            )
        if grad_clip is not None and grad_clip < 0:
            raise ValueError(f"grad_clip must be >= 0 or None, got {grad_clip}.")

        self.save_hyperparameters()
        self.automatic_optimization = False

        self.model = build_compressai_model(
            arch,
            quality=quality,
            N=N,
            M=M,
            pretrained=pretrained,
            weights_path=weights_path,
            metric=distortion,
        )
        self.codec_name = name or arch
        self.rate_point = {"lmbda": float(lmbda)}

        # Epoch mean of val/loss for the plateau scheduler. Metric states are not saved.
        self.val_loss_mean = MeanMetric()
        self._real_coding_now = False
        self._validation_codec: CompressAICodec | None = None

    # Forward pass and loss.

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """Run the network on a padded copy of ``x`` and crop the result.

        Returns
        -------
        dict
            ``x_hat`` ``[B, 3, H, W]``, not clamped; ``bits_est`` ``[B]``, the summed
            ``-log2`` likelihoods of all latents; and ``bpp_est`` ``[B]``, that divided
            by the unpadded ``H * W``.
        """
        height, width = x.shape[-2:]
        output = self.model(pad_to_multiple(x, PAD_MULTIPLE, self.hparams.pad_mode))

        x_hat = crop_to(output["x_hat"], height, width)
        bits_est = sum(
            (-torch.log2(likelihoods)).flatten(1).sum(dim=1)
            for likelihoods in output["likelihoods"].values()
        )
        return {"x_hat": x_hat, "bits_est": bits_est, "bpp_est": bits_est / (height * width)}

    def rate_distortion_loss(self, x: Tensor, output: dict[str, Tensor]) -> dict[str, Tensor]:
        """Compute the batch loss and its terms from ``forward``'s output.

        Returns ``loss`` (scalar) and per-image ``mse`` and ``bpp_est`` ``[B]``, plus
        ``ms_ssim`` ``[B]`` for the MS-SSIM loss. The distortion uses the unclamped
        reconstruction so that the gradient does not vanish at 0 and 1.
        """
        x_hat = output["x_hat"]
        mse = (x_hat - x).pow(2).flatten(1).mean(dim=1)
        terms = {"mse": mse, "bpp_est": output["bpp_est"]}

        if self.hparams.distortion == "mse":
            distortion = self.hparams.lmbda * 255.0**2 * mse.mean()
        else:
            ms_ssim = ms_ssim_per_image(x, x_hat, data_range=self.hparams.ms_ssim_data_range)
            terms["ms_ssim"] = ms_ssim
            distortion = self.hparams.lmbda * (1.0 - ms_ssim.mean())

        terms["loss"] = distortion + output["bpp_est"].mean()
        return terms

    # Training.

    def configure_optimizers(self) -> Any:
        main_parameters, aux_parameters = split_main_aux_parameters(self.model)
        optimizer = torch.optim.Adam(main_parameters, lr=self.hparams.lr)
        aux_optimizer = torch.optim.Adam(aux_parameters, lr=self.hparams.aux_lr)

        if self.hparams.lr_scheduler == "plateau":
            # Stepped by hand in on_validation_epoch_end, as manual optimization requires.
            scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer,
                mode="min",
                factor=self.hparams.plateau_factor,
                patience=self.hparams.plateau_patience,
            )
            return [optimizer, aux_optimizer], [scheduler]
        return [optimizer, aux_optimizer]

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Tensor]:
        optimizer, aux_optimizer = self.optimizers()
        x = batch["image"]

        output = self(x)
        terms = self.rate_distortion_loss(x, output)
        aux_loss = self.model.aux_loss()

        # One backward of the sum: under DDP a second backward for the auxiliary loss
        # fails because the quantiles take no part in the main loss. The parameter sets
        # are disjoint and the auxiliary loss detaches the density model, so the sum
        # gives each optimizer exactly the gradient of its own loss.
        optimizer.zero_grad()
        aux_optimizer.zero_grad()
        self.manual_backward(terms["loss"] + aux_loss)
        if self.hparams.grad_clip:
            self.clip_gradients(
                optimizer,
                gradient_clip_val=self.hparams.grad_clip,
                gradient_clip_algorithm="norm",
            )
        optimizer.step()
        aux_optimizer.step()

        batch_size = x.shape[0]
        self.log("train/loss", terms["loss"], prog_bar=True, batch_size=batch_size)
        self.log("train/bpp_est", terms["bpp_est"].mean(), batch_size=batch_size)
        self.log("train/mse", terms["mse"].mean(), batch_size=batch_size)
        self.log("train/aux_loss", aux_loss, batch_size=batch_size)
        return {"loss": terms["loss"].detach(), "aux_loss": aux_loss.detach()}

    # Validation.

    def is_real_coding_epoch(self) -> bool:
        """Return whether this validation entropy-codes the images.

        True every ``real_coding_every_n_epochs`` epochs during ``fit``, in the last
        epoch of ``fit`` (by ``max_epochs`` or ``max_steps``, or once training is
        asked to stop), and always outside ``fit``. False during the sanity check.

        NOTE: EarlyStopping decides after the validation, so the epoch it stops on is
        coded only if it falls on the schedule. Run ``trainer.validate`` on the final
        checkpoint to get real bits for it.
        """
        trainer = self._trainer
        if trainer is None:
            return True
        if trainer.sanity_checking:
            return False
        if trainer.state.fn != TrainerFn.FITTING:
            return True

        every_n = self.hparams.real_coding_every_n_epochs
        epoch = trainer.current_epoch
        if every_n > 0 and (epoch + 1) % every_n == 0:
            return True

        max_epochs = trainer.max_epochs
        if max_epochs is not None and max_epochs >= 0 and epoch >= max_epochs - 1:
            return True
        max_steps = trainer.max_steps
        if max_steps is not None and max_steps > 0 and trainer.global_step >= max_steps:
            return True
        return bool(trainer.should_stop)

    def on_validation_epoch_start(self) -> None:
        self._real_coding_now = self.is_real_coding_epoch()
        self._validation_codec = None
        if not self._real_coding_now:
            return

        # The CDF tables must match the current weights. Build them as normal tensors
        # even inside Lightning's inference mode, so training can later use them.
        with torch.inference_mode(False), torch.no_grad():
            self.model.update(force=True)
        self._validation_codec = CompressAICodec(
            self.model,
            self.codec_name,
            self.rate_point,
            update_entropy_coder=False,
            pad_mode=self.hparams.pad_mode,
        )

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        """Score one batch and return per-image outputs on the CPU.

        Returns
        -------
        dict
            ``sample_id`` (list of str), ``group`` ``[B]``, ``attributes`` (dict of
            ``[B]``), ``x``, ``x_hat`` (forward reconstruction clamped to [0, 1]) and
            ``bpp_est`` ``[B]``. On real-coding epochs also ``bits`` ``[B]`` (8 x the
            bytes of each bitstream, header included) and ``x_hat_decoded``, which
            differs from ``x_hat`` for models with a context model.
        """
        x = batch["image"]
        batch_size, _, height, width = x.shape

        output = self(x)
        terms = self.rate_distortion_loss(x, output)
        x_hat = output["x_hat"].clamp(0.0, 1.0)
        psnr = psnr_per_image(x, x_hat)

        self.log("val/loss", terms["loss"], sync_dist=True, batch_size=batch_size)
        self.log("val/bpp_est", terms["bpp_est"].mean(), sync_dist=True, batch_size=batch_size)
        self.log("val/psnr", psnr.mean(), sync_dist=True, batch_size=batch_size)
        self.val_loss_mean.update(terms["loss"].detach(), weight=batch_size)

        result: dict[str, Any] = {
            "sample_id": list(batch["sample_id"]),
            "group": batch["group"].detach().cpu(),
            "attributes": {
                name: values.detach().cpu() for name, values in batch["attributes"].items()
            },
            "x": x.detach().cpu(),
            "x_hat": x_hat.detach().cpu(),
            "bpp_est": terms["bpp_est"].detach().cpu(),
        }

        if self._real_coding_now and self._validation_codec is not None:
            blobs = self._validation_codec.compress(x)
            x_hat_decoded = self._validation_codec.decompress(blobs).to(x.device)
            bits = torch.tensor([8.0 * len(blob) for blob in blobs], device=x.device)
            psnr_decoded = psnr_per_image(x, x_hat_decoded)

            self.log("val/bpp", (bits / (height * width)).mean(), sync_dist=True,
                     batch_size=batch_size)
            self.log("val/psnr_decoded", psnr_decoded.mean(), sync_dist=True,
                     batch_size=batch_size)
            result["bits"] = bits.cpu()
            result["x_hat_decoded"] = x_hat_decoded.detach().cpu()
        return result

    def on_validation_epoch_end(self) -> None:
        self._validation_codec = None
        trainer = self.trainer
        if trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING:
            self.val_loss_mean.reset()
            return

        val_loss = self.val_loss_mean.compute()
        self.val_loss_mean.reset()
        scheduler = self.lr_schedulers()
        if scheduler is not None:
            scheduler.step(val_loss)

    # Checkpoints and export.

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        resize_entropy_coder_buffers(self, checkpoint["state_dict"])

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        # Some paths skip on_load_checkpoint: ddp_spawn sends the trained weights back
        # to the main process as a bare state_dict, for example.
        resize_entropy_coder_buffers(self, state_dict)
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def export_compressai_state_dict(self, path: str | Path) -> Path:
        """Write the network as a plain CompressAI state_dict and return the path.

        The entropy coder tables are refreshed with ``update(force=True)`` first, so
        ``ARCHITECTURES[arch](N, M).load_state_dict(torch.load(path))`` gives a model
        that can code at once. The file has no Lightning keys. Under DDP, call this on
        one process only.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with torch.inference_mode(False), torch.no_grad():
            self.model.update(force=True)
        state_dict = {key: value.detach().cpu() for key, value in self.model.state_dict().items()}
        torch.save(state_dict, path)
        log.info("Wrote CompressAI state_dict of %s to %s", self.hparams.arch, path)
        return path

    def as_codec(self) -> CompressAICodec:
        """Return a ``CompressAICodec`` over a copy of the network, for evaluation."""
        return CompressAICodec(
            copy.deepcopy(self.model),
            self.codec_name,
            self.rate_point,
            pad_mode=self.hparams.pad_mode,
        )
