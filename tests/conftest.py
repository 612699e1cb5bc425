import os
import tempfile

# Tests never reach W&B servers or the Hugging Face Hub, and never prompt.
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HYDRA_FULL_ERROR", "1")
# Decoded-image caches of test runs go to a throwaway folder, not the user's cache.
os.environ.setdefault("FAIRBITS_CACHE", tempfile.mkdtemp(prefix="fairbits-test-cache-"))
