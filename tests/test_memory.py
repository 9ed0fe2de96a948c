"""Memory paths on the CPU: out-of-memory recovery, --medvram/--lowvram placement,
the VAE's fp32 and tiled fallbacks. (Moving weights to and from a GPU needs a GPU: here
compute and store are both the CPU, so these check the hooks and the fallbacks, and that
pictures do not change.)"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from modules.device import memory
from modules.generation.vae import decode
from modules.device.devices import DeviceConfig
from modules.generation.hooks import JobControl
from modules.generation.request import GenerationRequest
from modules.runtime.runtime import Runtime, RuntimeConfig


def request(**kw) -> GenerationRequest:
    return GenerationRequest(**{"prompt": "a red circle", "steps": 3, "width": 32, "height": 32, "seed": 7,
                                "save_images": False, **kw})


def pixels(rt: Runtime, **kw) -> np.ndarray:
    return np.asarray(rt.generate(request(**kw)).images[0])


def test_out_of_memory_fails_the_job_with_advice_and_the_next_job_runs(make_runtime):
    rt = make_runtime()
    calls = []

    def oom_at_step_2(step, total, latents):  # in the middle of sampling
        calls.append(step)
        if len(calls) == 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    with pytest.raises(memory.OutOfMemory) as err:
        rt.generate(request(), JobControl(on_step=oom_at_step_2))
    message = str(err.value)
    assert "Out of GPU memory" in message and "--medvram" in message and "--lowvram" in message
    assert "tiled_vae" in message and "20.00 GiB" in message
    assert rt.progress.job is None or rt.control is None  # nothing left marked as running
    assert pixels(rt).shape == (32, 32, 3)  # the next job runs


@pytest.mark.parametrize("mode", ["medvram", "lowvram"])
def test_offload_modes_give_the_same_picture_and_move_every_weight(tmp_path, tiny_ckpt_dir, mode):
    def make(memory_mode, sub):
        return Runtime(RuntimeConfig(data_dir=tmp_path / sub, ckpt="tiny-sd1.safetensors", ckpt_dirs=[tiny_ckpt_dir],
                                     device=DeviceConfig(torch.device("cpu"), torch.float32, "sdpa", memory_mode)))

    plain = pixels(make("normal", "a"))
    rt = make(mode, "b")
    out = pixels(rt)
    assert np.array_equal(out, plain)
    off = rt.model.attachments.offloader
    assert off.activations > 0
    # every weight belongs to a unit that was moved to the compute device to run
    covered = {id(p) for unit in off.ran for p in unit.parameters()}
    for component in memory.components(rt.model):
        missed = [n for n, p in component.named_parameters() if id(p) not in covered]
        if component is rt.model.vae:  # txt2img does not encode
            missed = [n for n in missed if not n.startswith(("encoder.", "quant_conv."))]
        assert not missed
    if mode == "lowvram":
        assert len(off.ran) > 3 * len(memory.components(rt.model))  # block by block, not whole parts


def test_fp16_vae_overflow_falls_back_to_fp32_not_a_black_image(make_runtime):
    rt = make_runtime()
    model = rt.model or rt.checkpoints.load()
    latents = torch.randn(1, 4, 16, 16)
    reference = decode(model, latents)[0]
    # weights whose activations overflow fp16 (65504) but are fine in fp32: the decoder's
    # group norms bring them back to scale. Rounded to fp16 once, so both runs share them.
    with torch.no_grad():
        model.vae.post_quant_conv.weight.mul_(1e4)
        model.vae.post_quant_conv.bias.mul_(1e4)
    model.vae.to(torch.float16).to(torch.float32)
    fp32 = np.asarray(decode(model, latents)[0])
    model.vae.to(torch.float16)
    out = np.asarray(decode(model, latents)[0])
    assert model.vae.dtype == torch.float32  # it overflowed, and that is remembered for the next image
    assert np.array_equal(out, fp32) and out.max() > 0  # the fp32 picture, not a black one
    assert reference.size == (32, 32)


def test_vae_out_of_memory_retries_tiled(make_runtime):
    rt = make_runtime()
    model = rt.model or rt.checkpoints.load()
    latents = torch.randn(1, 4, 16, 16)
    expected = np.asarray(decode(model, latents)[0])
    tiled_runs = []

    def short_of_memory(module, args):
        if not model.vae.use_tiling:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        tiled_runs.append(True)

    handle = model.vae.decoder.register_forward_pre_hook(short_of_memory)
    try:
        out = np.asarray(decode(model, latents)[0])
    finally:
        handle.remove()
    assert tiled_runs and np.array_equal(out, expected)
    assert not model.vae.use_tiling  # the setting is not changed behind the user's back


def test_tiled_vae_setting_turns_tiling_on_for_jobs(make_runtime):
    rt = make_runtime()
    rt.options.tiled_vae = True
    first = pixels(rt)
    assert rt.model.vae.use_tiling
    rt.options.tiled_vae = False
    assert np.array_equal(pixels(rt), first)  # small images fit one tile: the same picture
    assert not rt.model.vae.use_tiling
