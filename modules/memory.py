"""Device memory: freeing it and telling a user what to do when it runs out."""
from __future__ import annotations

import gc

import torch


def empty_cache(device: torch.device | None = None) -> None:
    """Drop unreferenced tensors and hand the CUDA allocator's cached blocks back."""
    gc.collect()
    if torch.cuda.is_available() and (device is None or torch.device(device).type == "cuda"):
        torch.cuda.empty_cache()
