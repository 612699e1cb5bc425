"""Experiment loggers: W&B (offline unless an API key is configured) and CSV beside it."""

from __future__ import annotations

import logging
import netrc
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import CSVLogger, Logger

log = logging.getLogger(__name__)


def wandb_credentials_present() -> bool:
    """Return True when W&B can authenticate without asking (env key or ``wandb login``)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        hosts = netrc.netrc().hosts
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False
    return any("wandb" in host for host in hosts)


def resolve_wandb_mode(mode: str) -> str:
    """Map ``auto`` to online or offline; W&B never prompts for a key in either."""
    if mode not in ("auto", "online", "offline", "disabled"):
        raise ValueError(f"logger.wandb.mode must be auto, online, offline or disabled, got {mode!r}")
    env_mode = os.environ.get("WANDB_MODE")
    if env_mode == "":
        # An exported but empty WANDB_MODE makes wandb 0.31 fail with a settings
        # validation error; empty means "not set" here.
        del os.environ["WANDB_MODE"]
        env_mode = None
    if mode == "auto" and env_mode in ("offline", "online", "disabled", "dryrun"):
        return "offline" if env_mode == "dryrun" else env_mode
    if mode == "auto":
        return "online" if wandb_credentials_present() else "offline"
    if mode == "online" and not wandb_credentials_present():
        raise ValueError("logger.wandb.mode=online but no W&B API key is configured; run `wandb login` or use mode=offline")
    return mode


def build_loggers(
    logger_cfg: Mapping[str, Any],
    run_dir: Path,
    *,
    run_name: str,
    config: dict[str, Any],
    wandb_config: dict[str, Any],
) -> list[Logger]:
    """Return the CSV logger and, when enabled, a W&B logger writing under ``run_dir``."""
    loggers: list[Logger] = []
    if logger_cfg.get("csv", {}).get("enabled", True):
        loggers.append(CSVLogger(save_dir=str(run_dir), name="csv", version=""))
    wandb_cfg = logger_cfg.get("wandb", {})
    if wandb_cfg.get("enabled", False):
        mode = resolve_wandb_mode(str(wandb_cfg.get("mode", "auto")))
        if mode != "disabled":
            loggers.append(_wandb_logger(wandb_cfg, run_dir, mode, run_name, config, wandb_config))
    return loggers


def _wandb_logger(wandb_cfg, run_dir: Path, mode: str, run_name: str, config, wandb_config) -> Logger:
    import wandb
    from lightning.pytorch.loggers import WandbLogger

    os.environ.setdefault("WANDB_SILENT", "true")
    logger = WandbLogger(
        project=str(wandb_cfg.get("project", "fairbits")),
        group=str(wandb_cfg.get("group") or "") or None,
        name=run_name,
        tags=list(wandb_cfg.get("tags") or []),
        save_dir=str(run_dir),
        mode=mode,
        config={**wandb_config, "full_config": config},
        settings=wandb.Settings(console="off", silent=True),
    )
    # Lightning 2.6.6 always passes anonymous=None to wandb.init, and wandb 0.31 warns that
    # the setting has no effect on every run; the run is the same without it.
    logger._wandb_init.pop("anonymous", None)
    # Epoch is the x axis of every per-group chart: validation metrics are per epoch.
    experiment = logger.experiment
    if hasattr(experiment, "define_metric"):
        experiment.define_metric("epoch")
        experiment.define_metric("val/*", step_metric="epoch")
    log.info("W&B run %s (%s) in %s", run_name, mode, run_dir / "wandb")
    return logger


def finish_wandb() -> None:
    """Close the active W&B run so offline files are complete even after an error."""
    try:
        import wandb
    except ImportError:
        return
    if wandb.run is not None:
        wandb.finish()


class _DropLitLoggerTip(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in str(record.msg)


def route_lightning_logs_to_root() -> None:
    """Let Hydra's root handlers (console and the run's .log file) print Lightning's logs.

    Lightning attaches its own console handler when it is imported before logging is
    configured, so under Hydra every line appeared twice. Its advert for the litlogger
    package, printed at every fit, is dropped.
    """
    import lightning  # noqa: F401  (attaches the handlers this function removes)

    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_DropLitLoggerTip())
