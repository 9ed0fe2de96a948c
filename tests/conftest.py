"""Shared fixtures: tiny checkpoints of every family, written at test time in the
original single-file layout, and a Runtime over a temporary data folder."""
from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

from modules.models.synthetic import write_checkpoint

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def tiny_ckpt_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("ckpts")
    write_checkpoint(folder / "tiny-sd1.safetensors", "sd1", seed=1)
    write_checkpoint(folder / "tiny-sd2-v.safetensors", "sd2", seed=2, metadata={"modelspec.prediction_type": "v"})
    write_checkpoint(folder / "tiny-sdxl.safetensors", "sdxl", seed=3)
    write_checkpoint(folder / "inpaint" / "tiny-sd1-inpainting.safetensors", "sd1", inpainting=True, seed=4)
    return folder


@pytest.fixture
def make_runtime(tmp_path, tiny_ckpt_dir):
    from modules.devices import DeviceConfig
    from modules.runtime import Runtime, RuntimeConfig

    def make(ckpt: str | None = "tiny-sd1.safetensors", **kw):
        config = RuntimeConfig(data_dir=tmp_path / "data", device=DeviceConfig(torch.device("cpu"), torch.float32, "sdpa"),
                               ckpt=ckpt, ckpt_dirs=[tiny_ckpt_dir], **kw)
        return Runtime(config)

    return make
