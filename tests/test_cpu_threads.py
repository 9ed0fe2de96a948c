"""Small CPU generations run on one thread (faster there: the ops are too small to split),
large ones on all, and the process's thread count is always given back."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from modules.device import devices
from modules.generation import pipeline
from modules.generation.hooks import JobControl
from modules.generation.request import GenerationRequest


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def fake_model(parameters: int, device: str = "cpu"):
    return SimpleNamespace(device=torch.device(device), unet=torch.nn.Linear(parameters, 1, bias=False))


def threads_inside(model, images: int, positions: int, **kw) -> int:
    with devices.cpu_threads_for(model, images, positions, **kw):
        return torch.get_num_threads()


def test_small_jobs_take_one_thread_large_ones_all(two_threads):
    model = fake_model(1000)
    small = int(devices.SMALL_CPU_JOB // 1000 // 2) - 1  # positions that keep 2 images under the limit
    assert threads_inside(model, 2, small) == 1
    assert torch.get_num_threads() == 2  # given back
    assert threads_inside(model, 2, small * 4) == 2
    assert threads_inside(model, 2, small, enabled=False) == 2
    assert threads_inside(fake_model(1000, "meta"), 2, small) == 2  # not a CPU model: left alone


def test_the_thread_count_comes_back_after_an_error(two_threads):
    with pytest.raises(RuntimeError):
        with devices.cpu_threads_for(fake_model(10), 2, 16):
            assert torch.get_num_threads() == 1
            raise RuntimeError("a failing step")
    assert torch.get_num_threads() == 2


def test_a_small_generation_samples_on_one_thread(make_runtime, two_threads):
    """The tiny model at 64x64 is a small job: every sampling step ran on one thread."""
    runtime = make_runtime()
    model = runtime.checkpoints.load()
    seen = []
    control = JobControl(on_step=lambda *_: seen.append(torch.get_num_threads()))
    request = GenerationRequest(prompt="a red circle", steps=3, width=64, height=64, save_images=False)
    pipeline.generate(model, request, outdir=runtime.data_dir, control=control)
    assert seen == [1, 1, 1]
    assert torch.get_num_threads() == 2
    seen.clear()
    pipeline.generate(model, request, outdir=runtime.data_dir, control=control, auto_threads=False)
    assert seen == [2, 2, 2]
