import os

from lightning_modules.loggers import resolve_wandb_mode


def test_empty_wandb_mode_means_auto(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", "/nonexistent")
    monkeypatch.setenv("HOME", "/nonexistent")
    assert resolve_wandb_mode("auto") == "offline"
    assert "WANDB_MODE" not in os.environ


def test_wandb_mode_env_overrides_auto(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert resolve_wandb_mode("auto") == "disabled"
