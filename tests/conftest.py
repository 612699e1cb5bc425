import os
import tempfile

# Tests never reach W&B servers or the Hugging Face Hub, and never prompt.
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HYDRA_FULL_ERROR", "1")
# Decoded-image caches of test runs go to a throwaway folder, not the user's cache.
os.environ.setdefault("FAIRBITS_CACHE", tempfile.mkdtemp(prefix="fairbits-test-cache-"))

import torch  # noqa: E402

# Tests use tiny models, for which OpenMP threads cost more than they save on a
# 2-core machine that other processes share.
torch.set_num_threads(1)
