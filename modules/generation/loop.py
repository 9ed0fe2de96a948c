"""The denoising loop: noise (txt2img) or noised init latents (img2img) -> latents.

We own the loop (as A1111 and ComfyUI do): per-step prompt schedules, classifier-free
guidance over AND sub-prompts in one UNet batch, inpainting's re-imposed known region,
and a callback per step for progress, previews, interrupt and skip. diffusers gives the
model classes and the scheduler math (modules/sampling/)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from modules.device import devices
from modules.generation.hooks import Hooks, JobControl
from modules.generation.request import GenerationRequest
from modules.sampling import samplers
from modules.text import conditioning


@dataclass
class InitLatents:
    """img2img's starting point for a batch: the init image latents and, for inpainting,
    the latent mask (1 = repaint) whose outside is re-imposed after every step."""
    latents: torch.Tensor
    mask: torch.Tensor | None = None


def to_work(x: torch.Tensor | None, work: torch.device) -> torch.Tensor | None:
    """CPU tensors (seeded noise, init latents) to the device the loop runs on, through
    pinned memory so the copy does not wait for the GPU."""
    if x is None or x.device == work:
        return x
    return x.pin_memory().to(work, non_blocking=True) if work.type == "cuda" else x.to(work)


def _unet_kwargs(model, conds: list[conditioning.Conditioning], uncond: conditioning.Conditioning, width, height, n,
                 settings: conditioning.TextSettings = conditioning.TextSettings()):
    """SDXL's added conditioning for a batch of every positive (sub-)prompt, then the negative."""
    if not model.family.added_conditioning:
        return {}
    time_ids = torch.cat([conditioning.sdxl_time_ids(model, width, height, False, settings).repeat(n * len(conds), 1),
                          conditioning.sdxl_time_ids(model, width, height, True, settings).repeat(n, 1)])
    pooled = torch.cat([c.pooled for c in conds] + [uncond.pooled])
    return {"added_cond_kwargs": {"text_embeds": pooled, "time_ids": time_ids}}


@torch.no_grad()
def sample(model, request: GenerationRequest, noise: torch.Tensor, generators, cond, uncond, control: JobControl,
           width: int, height: int, image_cond: torch.Tensor | None = None,
           init: InitLatents | None = None,
           settings: conditioning.TextSettings = conditioning.TextSettings(),
           hooks: Hooks | None = None, auto_threads: bool = True) -> torch.Tensor:
    """The denoising loop: noise (txt2img) or noised init latents (img2img) -> latents,
    with CFG and a callback per step. `image_cond` (mask + masked-image latent) feeds the
    extra input channels of inpainting models. `cond` is a conditioning.Scheduled or, for
    AND, a conditioning.Composable: every sub-prompt and the negative go through the UNet
    in one batch, combined as uncond + sum_i w_i * cfg * (cond_i - uncond) (A1111).
    `auto_threads`: a small CPU job runs on one thread (devices.cpu_threads_for)."""
    if isinstance(cond, conditioning.Scheduled):
        cond = conditioning.Composable([(1.0, cond)])
    denoise = float(request.denoising_strength) if init is not None else 1.0
    device = model.device
    # on CUDA, latents and the scheduler's math stay on the GPU: no host-device sync per
    # step (previews sync only every N steps). On the CPU nothing moves (seeds' results
    # are those of the CPU reference).
    work = device if device.type == "cuda" else torch.device("cpu")
    sch = samplers.create_scheduler(request.sampler_name, request.scheduler, request.steps,
                                    prediction_type=model.info.prediction_type, device=work, denoise=denoise)
    noise = to_work(noise, work)
    image_cond = to_work(image_cond, work)
    if init is not None:
        init = InitLatents(to_work(init.latents, work), to_work(init.mask, work))
    n = noise.shape[0]
    if init is None:
        latents = noise * sch.init_noise_sigma
    else:
        latents = samplers.noise_latents(sch, init.latents, noise)
    with devices.cpu_threads_for(model, 2 * n, latents.shape[-2] * latents.shape[-1], auto_threads):
        return _denoise(model, request, sch, latents, noise, generators, cond, uncond, control, width, height,
                        image_cond, init, settings, hooks)


def _denoise(model, request: GenerationRequest, sch, latents: torch.Tensor, noise: torch.Tensor, generators, cond,
             uncond, control: JobControl, width: int, height: int, image_cond: torch.Tensor | None,
             init: InitLatents | None, settings: conditioning.TextSettings, hooks: Hooks | None) -> torch.Tensor:
    """sample()'s loop over the scheduler's timesteps."""
    device, dtype = model.device, model.dtype
    n = noise.shape[0]
    timesteps = sch.timesteps
    total = len(timesteps)
    current = None  # the conditionings the batched context was built from
    for i, t in enumerate(timesteps):
        if control.interrupted or control.skipped:
            break
        step = i * request.steps // total + 1  # the prompt schedule's step (second-order samplers count twice)
        # ---- composable diffusion (AND): one UNet call for every sub-prompt + the negative
        weighted, u = cond.at(step), uncond.at(step)
        conds = [c for _, c in weighted]
        if current is None or len(current) != len(conds) + 1 or any(a is not b for a, b in zip(current, conds + [u])):
            current = conds + [u]  # rebuild only when the schedule switches
            context = torch.cat([c.context for c in current])
            extra = _unet_kwargs(model, conds, u, width, height, n, settings)
        if hooks is not None and hooks.wants_cfg_denoiser:  # extensions' on_cfg_denoiser, this step only
            sigmas = getattr(sch, "sigmas", None)
            sigma = sigmas[i] if sigmas is not None and i < len(sigmas) else t
            latents, cc, uc = hooks.cfg_denoiser(latents, image_cond, sigma, i, total, context[:-n], context[-n:])
            context = torch.cat([cc, uc])
            current = None  # rebuild next step: the callbacks saw this step's tensors only
        parts = len(conds) + 1
        x = sch.scale_model_input(torch.cat([latents] * parts), t)
        if image_cond is not None:
            x = torch.cat([x, torch.cat([image_cond] * parts)], dim=1)
        out = model.unet(x.to(device, dtype), t.to(device), encoder_hidden_states=context, **extra).sample.float()
        outs = out.split(n)
        neg = outs[-1]
        guided = neg
        for (weight, _), pos in zip(weighted, outs):
            guided = guided + (pos - neg) * (weight * request.cfg_scale)
        # ---- end composable diffusion
        latents = sch.step(guided, t, latents, generator=generators).prev_sample
        if init is not None and init.mask is not None:
            # outside the mask the known picture, noised to the level the next step expects
            known = sch.add_noise(init.latents, noise, timesteps[i + 1:i + 2]) if i + 1 < total else init.latents
            latents = init.mask * latents + (1 - init.mask) * known
        if control.on_step:
            control.on_step(i + 1, total, latents)
    return latents.cpu()
