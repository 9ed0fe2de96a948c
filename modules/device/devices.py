"""Device, dtype and attention backend: chosen once from the flags, logged, shown."""
from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

import torch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeviceConfig:
    device: torch.device
    dtype: torch.dtype
    attention: str  # "sdpa" or "xformers"
    memory: str = "normal"  # "medvram" / "lowvram": parts of the model move to the GPU only to run (memory.py)
    compile: bool = False  # --compile: torch.compile the UNet and VAE decoder (CUDA only)

    @property
    def description(self) -> str:
        name = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "CPU"
        extra = (f", {self.memory}" if self.memory != "normal" else "") + (", compiled" if self.compile else "")
        return f"{name}, {str(self.dtype).removeprefix('torch.')}, attention: {self.attention}{extra}"


def choose(*, use_cpu: bool = False, precision: str = "auto", no_half: bool = False,
           xformers: bool = False, medvram: bool = False, lowvram: bool = False,
           compile: bool = False) -> DeviceConfig:
    """fp16 on CUDA (bf16/fp32 by flag), fp32 on the CPU; SDPA unless xformers is asked
    for and importable on CUDA."""
    cuda = torch.cuda.is_available() and not use_cpu
    device = torch.device("cuda" if cuda else "cpu")
    if not cuda or no_half or precision == "full":
        dtype = torch.float32
    elif precision == "bf16":
        dtype = torch.bfloat16
    else:
        dtype = torch.float16
    attention = "sdpa"
    if xformers:
        if not cuda:
            log.warning("--xformers needs a CUDA GPU; using PyTorch SDPA")
        else:
            try:
                import xformers.ops  # noqa: F401
                attention = "xformers"
            except ImportError:
                log.warning("--xformers given but xformers is not installed; using PyTorch SDPA")
    memory = "lowvram" if lowvram else "medvram" if medvram else "normal"
    if memory != "normal" and not cuda:
        log.info("--%s: nothing to offload on the CPU; ignored", memory)
        memory = "normal"
    if compile and not cuda:
        log.info("--compile: torch.compile is used on CUDA only; running uncompiled on the CPU")
        compile = False
    config = DeviceConfig(device, dtype, attention, memory, compile)
    log.info("device: %s", config.description)
    return config


def apply_attention(model, attention: str) -> None:
    """Set the attention implementation on a freshly loaded model's UNet and VAE."""
    from diffusers.models.attention_processor import AttnProcessor2_0

    for module in (model.unet, model.vae):
        if attention == "xformers":
            module.enable_xformers_memory_efficient_attention()
        else:
            module.set_attn_processor(AttnProcessor2_0())


def optimize(model, *, channels_last: bool = False, compile: bool = False) -> None:
    """Optional fast paths on a loaded model: channels_last memory format for the UNet and
    VAE convolutions, and torch.compile of the UNet and of the VAE decoder (CUDA only:
    on the CPU compiling costs minutes and gains little, so the flag is only logged)."""
    if channels_last:
        model.unet.to(memory_format=torch.channels_last)
        model.vae.to(memory_format=torch.channels_last)
    if compile:
        if model.device.type != "cuda":
            log.info("--compile: torch.compile is used on CUDA only; running uncompiled on %s", model.device.type)
        else:
            model.unet.compile()  # nn.Module.compile: compiles forward in place, same object
            model.vae.decoder.compile()


# Below this much work per UNet call (parameters x images x latent positions), one CPU
# thread samples faster than several: each op is too small to split, and the threads'
# hand-offs cost more than they save. `python3 -m benchmarks.speed --threads-sweep
# --models demo` on this 2-core CPU, s/image on 1 thread against 2: 0.24 / 0.66 at 4.9e8
# (64x64, batch 1), 0.54 / 0.93 at 2.0e9 (128x128, batch 1), 0.45 / 0.55 at 4.0e9
# (batch 2), 0.40 / 0.39 at 7.9e9 (batch 4); the previous demo model (16x16 latents) had
# its crossing at the same place: 0.43 / 0.55 at 4.0e9, 0.41 / 0.37 at 7.9e9.
SMALL_CPU_JOB = 5e9


def unet_work(model, images: int, latent_positions: int) -> float:
    """The size of one UNet call, as SMALL_CPU_JOB counts it."""
    return sum(p.numel() for p in model.unet.parameters()) * images * latent_positions


def small_cpu_job(model, images: int, latent_positions: int) -> bool:
    """Whether a UNet call of this size samples faster on one CPU thread."""
    return unet_work(model, images, latent_positions) < SMALL_CPU_JOB


@contextlib.contextmanager
def cpu_threads_for(model, images: int, latent_positions: int, enabled: bool = True):
    """Run a small CPU job on one thread, anything else as configured. torch's thread
    count is process-wide; that is safe here because one job runs at a time (the job
    queue's lock), and the old count is put back afterwards."""
    if not enabled or model.device.type != "cpu" or torch.get_num_threads() == 1 \
            or not small_cpu_job(model, images, latent_positions):
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
