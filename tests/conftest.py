import atexit
import os
import shutil
import tempfile

# Tests never reach W&B servers or the Hugging Face Hub, and never prompt.
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HYDRA_FULL_ERROR", "1")
# Decoded-image caches of test runs go to a throwaway folder, not the user's cache.
if "FAIRBITS_CACHE" not in os.environ:
    os.environ["FAIRBITS_CACHE"] = tempfile.mkdtemp(prefix="fairbits-test-cache-")
    atexit.register(shutil.rmtree, os.environ["FAIRBITS_CACHE"], ignore_errors=True)

import torch  # noqa: E402

# Tests use tiny models, for which OpenMP threads cost more than they save on a
# 2-core machine that other processes share.
torch.set_num_threads(1)
