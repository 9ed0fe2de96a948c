"""Device memory: where the model's parts live (--medvram, --lowvram), the VAE's safety
nets (tiled when memory is short, fp32 when fp16 overflows) and out-of-memory recovery.

--medvram keeps every component (text encoders, UNet, VAE) in RAM and moves only the one
about to run onto the GPU, the previous one back: A1111's medvram. --lowvram does the
same one block at a time (a UNet down/up block's resnets and attentions, a CLIP layer):
our own per-block move, with forward pre-hooks (torch's public hook API), since
accelerate is not a dependency. Both cost speed (weights cross the PCIe bus every
step) for memory.
"""
from __future__ import annotations

import gc
import logging

import torch

log = logging.getLogger(__name__)

MEMORY_MODES = ("normal", "medvram", "lowvram")
OOM_ADVICE = ("try a smaller size or batch, the --medvram or --lowvram flag, "
              "or the 'Tiled VAE' setting (tiled_vae)")


class OutOfMemory(RuntimeError):
    """A job ran out of device memory; the memory was released and the next job runs."""


def empty_cache(device: torch.device | None = None) -> None:
    """Drop unreferenced tensors and hand the CUDA allocator's cached blocks back."""
    gc.collect()
    if torch.cuda.is_available() and (device is None or torch.device(device).type == "cuda"):
        torch.cuda.empty_cache()


def is_oom(e: BaseException) -> bool:
    return isinstance(e, torch.OutOfMemoryError)  # torch.cuda.OutOfMemoryError is the same class


def out_of_memory(e: BaseException, device: torch.device | None = None) -> OutOfMemory:
    """Free what the failed job held and say what would help."""
    empty_cache(device)
    first = str(e).splitlines()[0] if str(e) else "out of memory"
    return OutOfMemory(f"Out of GPU memory ({first[:200]}); {OOM_ADVICE}")


# ---- component placement ------------------------------------------------------------

class Offloader:
    """Moves modules onto the compute device right before they run (forward pre-hooks)
    and the previously active one back to `store`. One of these per loaded model."""

    def __init__(self, compute: torch.device, store: torch.device = torch.device("cpu")):
        self.compute, self.store = torch.device(compute), torch.device(store)
        self.active: torch.nn.Module | None = None
        self.activations = 0
        self.ran: list[torch.nn.Module] = []  # each unit that has been activated (once)
        self.handles = []

    def activate(self, module: torch.nn.Module) -> None:
        if self.active is module:
            return
        if self.active is not None:
            self.active.to(self.store)
        module.to(self.compute)
        self.active = module
        if self.activations == 0 or all(m is not module for m in self.ran):
            self.ran.append(module)
        self.activations += 1

    def attach(self, unit: torch.nn.Module, triggers) -> None:
        """Activate `unit` whenever any of `triggers` (it or modules inside it) runs."""
        for m in triggers:
            self.handles.append(m.register_forward_pre_hook(lambda *_: self.activate(unit)))

    def detach(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()


def blocks(module: torch.nn.Module, limit: int) -> list[torch.nn.Module]:
    """Split a module into disjoint runnable pieces of at most about `limit` parameters:
    a module that holds weights itself, or is small enough, stays whole; a bigger one, and
    any ModuleList (which has no forward of its own), is replaced by its children."""
    own = any(p is not None for p in module._parameters.values())
    size = sum(p.numel() for p in module.parameters())
    children = list(module.children())
    container = isinstance(module, (torch.nn.ModuleList, torch.nn.ModuleDict))  # never run themselves: no hooks fire
    if not container and (own or size <= limit or not children):
        return [module] if size or own else []
    return [b for c in children for b in blocks(c, limit)]


def components(model) -> list[torch.nn.Module]:
    return [*model.text_encoders, model.unet, model.vae]


def set_memory_mode(model, mode: str, compute: torch.device) -> Offloader | None:
    """Place a freshly built model (all on the CPU) for `mode`; returns its Offloader."""
    if mode not in MEMORY_MODES:
        raise ValueError(f"unknown memory mode {mode!r}")
    if mode == "normal":
        for c in components(model):
            c.to(compute)
        return None
    off = Offloader(compute)
    for c in components(model):
        if mode == "medvram":  # the component itself, and its children (entered separately, as the VAE's are)
            off.attach(c, [c, *c.children()])
        else:
            limit = max(1, sum(p.numel() for p in c.parameters()) // 16)
            for b in blocks(c, limit):
                off.attach(b, [b])
    log.info("%s: %d modules move to %s as they run", mode, len(off.handles), compute)
    return off


# ---- the VAE ------------------------------------------------------------------------

def set_tiling(vae, on: bool) -> None:
    """diffusers' tiled VAE: decodes and encodes in overlapping tiles (less memory for
    large images, slight seams possible)."""
    if on and not getattr(vae, "use_tiling", False):
        vae.enable_tiling()
    elif not on and getattr(vae, "use_tiling", False):
        vae.disable_tiling()


def _retry_tiled(fn, vae, device):
    """Run fn(); when it runs out of memory untiled, free memory and run it tiled once."""
    try:
        return fn()
    except torch.OutOfMemoryError:
        if getattr(vae, "use_tiling", False):
            raise
        empty_cache(device)
        log.warning("VAE out of memory: retrying with tiled VAE")
        vae.enable_tiling()
        try:
            return fn()
        finally:
            vae.disable_tiling()


def vae_decode(model, latents: torch.Tensor) -> torch.Tensor:
    """Scaled latents -> pixels in [-1, 1] (float32, on the CPU). fp16 VAEs can overflow
    (NaN/inf: black images); then the decode runs again in fp32 and the VAE stays in
    fp32 from then on (A1111's automatic --no-half-vae)."""
    vae = model.vae

    def run():
        x = (latents / vae.config.scaling_factor).to(model.device, vae.dtype)
        return vae.decode(x).sample.float().cpu()

    out = _retry_tiled(run, vae, model.device)
    if vae.dtype != torch.float32 and not torch.isfinite(out).all():
        log.warning("VAE produced NaN/inf in %s: decoding in float32 from now on (--no-half-vae)",
                    str(vae.dtype).removeprefix("torch."))
        vae.to(torch.float32)
        out = _retry_tiled(run, vae, model.device)
    return out


def vae_encode(model, pixels: torch.Tensor) -> torch.Tensor:
    """Pixels in [-1, 1] -> scaled latents (the distribution's mean, float32, CPU)."""
    vae = model.vae

    def run():
        x = pixels.to(model.device, vae.dtype)
        return vae.encode(x).latent_dist.mean.float().cpu() * vae.config.scaling_factor

    return _retry_tiled(run, vae, model.device)
