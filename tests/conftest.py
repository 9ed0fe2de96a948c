"""Shared fixtures: tiny checkpoints of every family, written at test time in the
original single-file layout, and a Runtime over a temporary data folder."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

from tests.synthetic import write_checkpoint

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
    from modules.device.devices import DeviceConfig
    from modules.runtime.runtime import Runtime, RuntimeConfig

    def make(ckpt: str | None = "tiny-sd1.safetensors", **kw):
        """A runtime as the app composes one: the engine, handed to the A1111 edge."""
        from modules import scripts

        config = RuntimeConfig(data_dir=tmp_path / "data", device=DeviceConfig(torch.device("cpu"), torch.float32, "sdpa"),
                               ckpt=ckpt, ckpt_dirs=[tiny_ckpt_dir], **kw)
        runtime = Runtime(config)
        scripts.attach(runtime)
        return runtime

    return make


ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tiny_ckpt_dir, tmp_path_factory):
    data = tmp_path_factory.mktemp("ui-data")
    port = free_port()
    log = open(data / "server.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "webui.server", "--port", str(port), "--data-dir", str(data),
                             "--ckpt-dir", str(tiny_ckpt_dir), "--ckpt", "tiny-sd1.safetensors"],
                            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                            env=dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1"))
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2)
            break
        except OSError:
            if proc.poll() is not None:
                pytest.fail("server exited: " + (data / "server.log").read_text())
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("server did not answer in 120 s: " + (data / "server.log").read_text())
    yield url, data
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:  # open event streams can hold a graceful shutdown
        proc.kill()
        proc.wait(timeout=10)
