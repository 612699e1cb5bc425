"""CodecModule: optimizers, loss, real coding, checkpoints, export and configs."""

import copy
import inspect
import math
from pathlib import Path

import hydra.utils
import lightning as L
import pytest
import torch
from compressai.losses import RateDistortionLoss
from compressai.models import FactorizedPrior
from omegaconf import OmegaConf
from torch.utils.data import DataLoader, Dataset
from torchmetrics.image import MultiScaleStructuralSimilarityIndexMeasure

from fairness.image_metrics import ms_ssim_betas, psnr_per_image
from lightning_modules.codec_module import CodecModule, split_main_aux_parameters
from lightning_modules.compressai_codecs import (
    CompressAICodec,
    build_compressai_model,
    pad_to_multiple,
)

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs" / "codec"
IMAGE_SIZE = 64


class FaceLikeDataset(Dataset):
    """Smooth random images in the datamodules' batch format."""

    def __init__(self, length: int, size: int = IMAGE_SIZE, seed: int = 0) -> None:
        self.length = length
        self.size = size
        self.seed = seed

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        generator = torch.Generator().manual_seed(self.seed * 1000 + index)
        coarse = torch.rand(1, 3, 8, 8, generator=generator)
        image = torch.nn.functional.interpolate(
            coarse, size=(self.size, self.size), mode="bilinear", align_corners=False
        )[0]
        return {
            "image": image.clamp(0, 1),
            "group": torch.tensor(index % 2),
            "attributes": {"gender": torch.tensor(index % 2), "age": torch.tensor(-1)},
            "sample_id": f"synthetic:{self.seed}:{index}",
        }


class OutputRecorder(L.Callback):
    """Stores training and validation step outputs, as the fairness callback receives them."""

    def __init__(self) -> None:
        self.train_outputs = []
        self.val_outputs = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.train_outputs.append(outputs)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self.val_outputs.append(
            {"epoch": trainer.current_epoch, "sanity": trainer.sanity_checking, **outputs}
        )



def _tiny_module(**overrides) -> CodecModule:
    torch.manual_seed(0)
    arguments = dict(
        arch="bmshj2018-factorized", quality=None, N=8, M=8, lmbda=0.01,
        lr=1e-3, aux_lr=1e-2, lr_scheduler="none",
    )
    arguments.update(overrides)
    return CodecModule(**arguments)


def _trainer(tmp_path, callbacks=(), **overrides) -> L.Trainer:
    arguments = dict(
        accelerator="cpu", devices=1, max_epochs=1, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        num_sanity_val_steps=0, default_root_dir=tmp_path, callbacks=list(callbacks),
    )
    arguments.update(overrides)
    return L.Trainer(**arguments)


def _loader(length: int = 8, batch_size: int = 4, seed: int = 0) -> DataLoader:
    return DataLoader(FaceLikeDataset(length, seed=seed), batch_size=batch_size)


def _batch(size: int = IMAGE_SIZE, batch_size: int = 2) -> dict:
    return next(iter(DataLoader(FaceLikeDataset(batch_size, size=size), batch_size=batch_size)))


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """A tiny module trained on 3 batches and validated, with its checkpoint."""
    tmp_path = tmp_path_factory.mktemp("fit")
    module = _tiny_module()
    recorder = OutputRecorder()
    trainer = _trainer(tmp_path, callbacks=[recorder], limit_train_batches=3)
    trainer.fit(module, _loader(12), _loader(4))

    checkpoint = tmp_path / "last.ckpt"
    trainer.save_checkpoint(checkpoint)
    return {"module": module, "trainer": trainer, "recorder": recorder, "checkpoint": checkpoint}


# Optimizers.


def test_parameter_split_disjoint_and_complete():
    module = _tiny_module(arch="bmshj2018-hyperprior")

    main, aux = split_main_aux_parameters(module.model)

    names = {id(p): n for n, p in module.model.named_parameters()}
    assert {names[id(p)] for p in aux} == {"entropy_bottleneck.quantiles"}
    assert not {id(p) for p in main} & {id(p) for p in aux}
    assert len(main) + len(aux) == len(list(module.model.parameters()))


def test_quantiles_move_only_through_aux_loss():
    module = _tiny_module()
    optimizer, aux_optimizer = module.configure_optimizers()
    quantiles = module.model.entropy_bottleneck.quantiles
    main_parameters, _ = split_main_aux_parameters(module.model)
    x = _batch()["image"]

    module.train()
    terms = module.rate_distortion_loss(x, module(x))
    aux_loss = module.model.aux_loss()

    # The rate-distortion loss sends no gradient to the quantiles, and the
    # auxiliary loss none to the other parameters.
    (rd_grad,) = torch.autograd.grad(terms["loss"], quantiles, retain_graph=True, allow_unused=True)
    assert rd_grad is None or torch.count_nonzero(rd_grad) == 0
    aux_grads = torch.autograd.grad(aux_loss, main_parameters, retain_graph=True, allow_unused=True)
    assert all(g is None or torch.count_nonzero(g) == 0 for g in aux_grads)

    (terms["loss"] + aux_loss).backward()
    before = copy.deepcopy(module.model.state_dict())

    aux_optimizer.step()
    after_aux = copy.deepcopy(module.model.state_dict())
    changed = {k for k in before if not torch.equal(before[k], after_aux[k])}
    assert changed == {"entropy_bottleneck.quantiles"}

    optimizer.step()
    after_main = module.model.state_dict()
    assert torch.equal(after_main["entropy_bottleneck.quantiles"], after_aux["entropy_bottleneck.quantiles"])
    assert not torch.equal(after_main["g_a.0.weight"], after_aux["g_a.0.weight"])


def test_aux_loss_falls_during_fit(fitted):
    aux_losses = [out["aux_loss"].item() for out in fitted["recorder"].train_outputs]

    assert len(aux_losses) == 3
    assert aux_losses[-1] < aux_losses[0]


def test_global_step_counts_both_optimizers(fitted):
    # 3 batches, 2 optimizer steps each.
    assert fitted["trainer"].global_step == 6


def test_max_steps_counts_two_per_batch(tmp_path):
    module = _tiny_module(real_coding_every_n_epochs=0)
    recorder = OutputRecorder()
    trainer = _trainer(
        tmp_path, callbacks=[recorder], max_steps=6, max_epochs=10,
        limit_train_batches=3, limit_val_batches=1,
    )

    trainer.fit(module, _loader(12), _loader(4))

    assert len(recorder.train_outputs) == 3
    assert trainer.global_step == 6
    # Training stops at max_steps, so that epoch's validation is the last and codes.
    assert [(o["epoch"], "bits" in o) for o in recorder.val_outputs] == [(0, True)]


def test_grad_clip_limits_main_gradient_norm(tmp_path):
    module = _tiny_module(grad_clip=0.01)
    norms = []

    class NormRecorder(L.Callback):
        def on_before_optimizer_step(self, trainer, pl_module, optimizer):
            if optimizer is trainer.optimizers[0]:
                grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
                norms.append(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])).item())

    _trainer(tmp_path, callbacks=[NormRecorder()], limit_train_batches=2, limit_val_batches=0).fit(
        module, _loader(8)
    )
    assert len(norms) == 2
    assert all(norm <= 0.01 + 1e-6 for norm in norms)


# Loss.


def test_mse_loss_matches_compressai_rate_distortion_loss():
    module = _tiny_module(lmbda=0.0067).eval()
    x = _batch()["image"]

    with torch.no_grad():
        terms = module.rate_distortion_loss(x, module(x))
        reference = RateDistortionLoss(lmbda=0.0067)(module.model(x), x)

    assert terms["loss"].item() == pytest.approx(reference["loss"].item(), rel=1e-5)
    assert terms["bpp_est"].mean().item() == pytest.approx(reference["bpp_loss"].item(), rel=1e-5)
    assert terms["mse"].mean().item() == pytest.approx(reference["mse_loss"].item(), rel=1e-5)


def test_ms_ssim_loss_matches_torchmetrics():
    module = _tiny_module(distortion="ms-ssim", lmbda=2.4).eval()
    x = _batch()["image"]

    with torch.no_grad():
        output = module(x)
        terms = module.rate_distortion_loss(x, output)
    metric = MultiScaleStructuralSimilarityIndexMeasure(data_range=1.0, betas=ms_ssim_betas(3))
    ms_ssim = metric(output["x_hat"], x).item()

    expected = 2.4 * (1.0 - ms_ssim) + output["bpp_est"].mean().item()
    assert terms["loss"].item() == pytest.approx(expected, rel=1e-5)


def test_bpp_est_divides_by_unpadded_pixels():
    module = _tiny_module(arch="bmshj2018-hyperprior").eval()
    x = _batch(size=IMAGE_SIZE)["image"][..., :48, :40]

    with torch.no_grad():
        output = module(x)
        reference = module.model(pad_to_multiple(x, 64, "replicate"))

    bits = sum((-torch.log2(l)).flatten(1).sum(1) for l in reference["likelihoods"].values())
    assert output["x_hat"].shape == x.shape
    assert torch.allclose(output["bpp_est"], bits / (48 * 40))


# Validation outputs and real coding.


def test_validation_outputs_contract(fitted):
    outputs = [o for o in fitted["recorder"].val_outputs if not o["sanity"]]
    module = fitted["module"]

    assert len(outputs) == 1
    output = outputs[0]
    assert output["sample_id"] == [f"synthetic:0:{i}" for i in range(4)]
    assert output["group"].tolist() == [0, 1, 0, 1]
    assert output["attributes"]["age"].tolist() == [-1, -1, -1, -1]
    for key in ("x", "x_hat", "x_hat_decoded"):
        assert output[key].shape == (4, 3, IMAGE_SIZE, IMAGE_SIZE)
        assert output[key].device.type == "cpu"
        assert not output[key].requires_grad
    assert output["x_hat"].min() >= 0
    assert output["x_hat"].max() <= 1
    assert output["bpp_est"].shape == (4,)

    # bits must be 8 x the bytes of an independent encode of the same images.
    blobs = module.as_codec().compress(output["x"])
    assert output["bits"].tolist() == [8.0 * len(blob) for blob in blobs]
    # Factorized decoding reproduces the forward pass.
    assert torch.allclose(output["x_hat_decoded"], output["x_hat"], atol=1e-4)


def test_validation_logs_overall_metrics(fitted):
    metrics = fitted["trainer"].callback_metrics
    output = [o for o in fitted["recorder"].val_outputs if not o["sanity"]][0]

    expected_psnr = psnr_per_image(output["x"], output["x_hat"]).mean().item()
    expected_bpp = (output["bits"] / IMAGE_SIZE**2).mean().item()
    assert metrics["val/psnr"].item() == pytest.approx(expected_psnr, rel=1e-5)
    assert metrics["val/bpp"].item() == pytest.approx(expected_bpp, rel=1e-6)
    assert metrics["val/bpp_est"].item() == pytest.approx(output["bpp_est"].mean().item(), rel=1e-5)
    for name in ("val/loss", "train/loss", "train/bpp_est", "train/mse", "train/aux_loss"):
        assert math.isfinite(metrics[name].item()), name
    assert not any(name.count("/") > 1 for name in metrics)


def test_real_coding_schedule(tmp_path):
    module = _tiny_module(real_coding_every_n_epochs=2)
    recorder = OutputRecorder()
    trainer = _trainer(
        tmp_path, callbacks=[recorder], max_epochs=3, limit_train_batches=1,
        limit_val_batches=1, num_sanity_val_steps=1,
    )

    trainer.fit(module, _loader(4), _loader(4))

    coded = {(o["sanity"], o["epoch"]): "bits" in o for o in recorder.val_outputs}
    # No coding in the sanity check, every 2nd epoch, and always in the last epoch.
    assert coded == {(True, 0): False, (False, 0): False, (False, 1): True, (False, 2): True}


def test_real_coding_every_epoch_zero_means_last_only(tmp_path):
    module = _tiny_module(real_coding_every_n_epochs=0)
    recorder = OutputRecorder()
    trainer = _trainer(tmp_path, callbacks=[recorder], max_epochs=2, limit_train_batches=1, limit_val_batches=1)

    trainer.fit(module, _loader(4), _loader(4))

    assert ["bits" in o for o in recorder.val_outputs] == [False, True]


def test_context_model_reports_decoded_image(tmp_path):
    module = _tiny_module(arch="mbt2018")
    recorder = OutputRecorder()

    _trainer(tmp_path, callbacks=[recorder]).validate(module, _loader(2, batch_size=2), verbose=False)

    output = recorder.val_outputs[0]
    codec = CompressAICodec(copy.deepcopy(module.model), "mbt2018", {})
    reference = codec.decompress(codec.compress(output["x"]))
    assert torch.allclose(output["x_hat_decoded"], reference, atol=1e-5)
    assert output["bits"].shape == (2,)


def test_plateau_scheduler_steps_each_validation(tmp_path):
    module = _tiny_module(lr_scheduler="plateau", plateau_patience=0, plateau_factor=0.5)
    val_losses = []

    class ValLossRecorder(L.Callback):
        def on_validation_end(self, trainer, pl_module):
            if not trainer.sanity_checking:
                val_losses.append(trainer.callback_metrics["val/loss"].item())

    trainer = _trainer(
        tmp_path, callbacks=[ValLossRecorder()], max_epochs=3, limit_train_batches=1,
        limit_val_batches=1, num_sanity_val_steps=1,
    )
    trainer.fit(module, _loader(4), _loader(4))

    scheduler = trainer.lr_scheduler_configs[0].scheduler
    assert isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
    # One step per validation epoch with that epoch's val/loss; the sanity check does not count.
    assert len(val_losses) == 3
    assert scheduler.last_epoch == 3
    assert scheduler.best == pytest.approx(min(val_losses), rel=1e-6)
    # With patience 0, every epoch without a new best halves the learning rate.
    misses = sum(loss >= min(val_losses[:i]) for i, loss in enumerate(val_losses) if i > 0)
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(1e-3 * 0.5**misses)
    assert trainer.optimizers[1].param_groups[0]["lr"] == pytest.approx(1e-2)


class QuantileSaver(L.Callback):
    """Saves each rank's quantiles at the end of training, to compare across processes."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def on_train_end(self, trainer, pl_module):
        quantiles = pl_module.model.entropy_bottleneck.quantiles.detach().cpu()
        torch.save(quantiles, self.folder / f"quantiles_rank{trainer.global_rank}.pt")


@pytest.mark.slow
@pytest.mark.ddp
def test_ddp_two_ranks_keep_quantiles_identical(tmp_path):
    torch.manual_seed(0)
    module = _tiny_module()
    initial_quantiles = module.model.entropy_bottleneck.quantiles.detach().clone()
    trainer = _trainer(
        tmp_path, callbacks=[QuantileSaver(tmp_path)], devices=2, strategy="ddp_spawn",
        limit_train_batches=2, limit_val_batches=1,
    )

    trainer.fit(module, _loader(16), _loader(8))

    rank0 = torch.load(tmp_path / "quantiles_rank0.pt")
    rank1 = torch.load(tmp_path / "quantiles_rank1.pt")
    assert torch.equal(rank0, rank1)
    assert not torch.equal(rank0, initial_quantiles)
    # ddp_spawn returns the weights, with the filled coding tables, to this process.
    assert torch.equal(module.model.entropy_bottleneck.quantiles.detach(), rank0)
    assert module.model.entropy_bottleneck._quantized_cdf.numel() > 0
    assert "val/bpp" in trainer.callback_metrics


# Checkpoints and export.


def test_checkpoint_reload_gives_identical_validation(fitted, tmp_path):
    checkpoint = torch.load(fitted["checkpoint"], map_location="cpu", weights_only=False)
    cdf_key = "model.entropy_bottleneck._quantized_cdf"
    fresh = _tiny_module()
    # The checkpoint contains filled coding tables, which a fresh module cannot take as-is.
    assert checkpoint["state_dict"][cdf_key].numel() > 0
    assert fresh.state_dict()[cdf_key].numel() == 0
    with pytest.raises(RuntimeError, match="size mismatch"):
        torch.nn.Module.load_state_dict(fresh, checkpoint["state_dict"])

    recorder_original, recorder_loaded, recorder_resumed = OutputRecorder(), OutputRecorder(), OutputRecorder()
    original = _trainer(tmp_path, callbacks=[recorder_original]).validate(
        fitted["module"], _loader(4), verbose=False
    )[0]
    loaded_module = CodecModule.load_from_checkpoint(fitted["checkpoint"])
    loaded = _trainer(tmp_path, callbacks=[recorder_loaded]).validate(
        loaded_module, _loader(4), verbose=False
    )[0]
    resumed = _trainer(tmp_path, callbacks=[recorder_resumed]).validate(
        _tiny_module(), _loader(4), ckpt_path=fitted["checkpoint"], verbose=False
    )[0]

    assert set(original) == {"val/loss", "val/bpp_est", "val/psnr", "val/bpp", "val/psnr_decoded"}
    assert loaded == original
    assert resumed == original
    for recorder in (recorder_loaded, recorder_resumed):
        assert torch.equal(recorder.val_outputs[0]["bits"], recorder_original.val_outputs[0]["bits"])
        assert torch.equal(recorder.val_outputs[0]["x_hat"], recorder_original.val_outputs[0]["x_hat"])


def test_export_loads_into_fresh_compressai_model(fitted, tmp_path):
    module = fitted["module"]
    path = module.export_compressai_state_dict(tmp_path / "factorized.pth")

    state_dict = torch.load(path, map_location="cpu", weights_only=True)
    assert not any(key.startswith("model.") for key in state_dict)
    model = FactorizedPrior(8, 8)
    model.load_state_dict(state_dict)
    model.eval()

    x = _batch(batch_size=3)["image"]
    module.eval()
    with torch.no_grad():
        expected = module.model(x)["x_hat"]
        actual = model(x)["x_hat"]
        decoded_fresh = model.decompress(**model.compress(x))["x_hat"]
        decoded_module = module.model.decompress(**module.model.compress(x))["x_hat"]
    assert torch.equal(actual, expected)
    assert torch.equal(decoded_fresh, decoded_module)


def test_checkpoint_loads_as_weights_path(fitted):
    module = fitted["module"]

    model = build_compressai_model("bmshj2018-factorized", weights_path=fitted["checkpoint"])

    assert (model.N, model.M) == (8, 8)
    for name, value in module.model.state_dict().items():
        assert torch.equal(model.state_dict()[name], value), name


def test_as_codec_leaves_module_untouched(fitted):
    module = fitted["module"]
    module.train()

    codec = module.as_codec()

    assert module.training
    assert codec.model is not module.model
    assert codec.rate_point == {"lmbda": 0.01}
    assert codec.name == "bmshj2018-factorized"


# Arguments and configs.


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"distortion": "l1"}, "distortion"),
        ({"lr_scheduler": "cosine"}, "lr_scheduler"),
        ({"lmbda": 0.0}, "lmbda"),
        ({"real_coding_every_n_epochs": -1}, "real_coding_every_n_epochs"),
        ({"pad_mode": "reflect"}, "pad_mode"),
        ({"arch": "cheng2020-anchor", "M": 8}, "takes N only"),
    ],
)
def test_invalid_arguments_raise(overrides, message):
    with pytest.raises(ValueError, match=message):
        _tiny_module(**overrides)


@pytest.mark.parametrize("config_path", sorted(CONFIG_DIR.glob("*.yaml")), ids=lambda p: p.stem)
def test_codec_config_instantiates(config_path):
    config = OmegaConf.load(config_path)
    parameters = inspect.signature(CodecModule.__init__).parameters

    assert config._target_ == "lightning_modules.codec_module.CodecModule"
    assert set(config) - {"_target_"} == set(parameters) - {"self"}
    assert config.name == config.arch

    module = hydra.utils.instantiate(config)
    assert isinstance(module, CodecModule)
    assert module.hparams.arch == config.arch
    assert module.codec_name == config.name
