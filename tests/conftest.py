import os

# Tests never reach W&B servers or the Hugging Face Hub, and never prompt.
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HYDRA_FULL_ERROR", "1")
