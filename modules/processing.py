"""GenerationRequest -> denoising loop -> GenerationResult.

We own the loop (DESIGN.md says why): per-image seeded noise, classifier-free guidance,
per-step callbacks for progress, previews, interrupt and skip. Every image is saved with
its infotext before the result is returned, so nothing finished is lost.
"""
from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image

from modules import conditioning, images, infotext, samplers
from modules.request import GenerationRequest, RequestError


@dataclass
class JobControl:
    """Flags the UI/API set while a job runs; the loop reads them between steps."""
    interrupted: bool = False
    skipped: bool = False
    on_step: Callable[[int, int, torch.Tensor], None] | None = None


@dataclass
class GenerationResult:
    images: list[Image.Image]
    infotexts: list[str]
    seeds: list[int]
    subseeds: list[int]
    paths: list[Path] = field(default_factory=list)
    grid_path: Path | None = None
    request: GenerationRequest | None = None
    interrupted: bool = False
    seconds: float = 0.0

    @property
    def info(self) -> dict:
        r = self.request
        return {"prompt": r.prompt, "negative_prompt": r.negative_prompt, "seed": self.seeds[0] if self.seeds else -1,
                "all_seeds": self.seeds, "subseed": self.subseeds[0] if self.subseeds else -1,
                "all_subseeds": self.subseeds, "infotexts": self.infotexts, "width": r.width, "height": r.height,
                "sampler_name": r.sampler_name, "scheduler": r.scheduler, "cfg_scale": r.cfg_scale,
                "steps": r.steps, "batch_size": r.batch_size, "n_iter": r.n_iter}


def resolve_seed(seed: int) -> int:
    return int(random.randrange(4294967294)) if seed is None or int(seed) == -1 else int(seed)


def slerp(t: float, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spherical blend of two noises (A1111's variation seeds)."""
    an, bn = a / a.norm(), b / b.norm()
    dot = (an * bn).sum().clamp(-1, 1)
    if dot.abs() > 0.9995:
        return (1 - t) * a + t * b
    omega = torch.acos(dot)
    return (torch.sin((1 - t) * omega) * a + torch.sin(t * omega) * b) / torch.sin(omega)


def make_noise(seeds: list[int], subseeds: list[int], strength: float, shape: tuple[int, ...]):
    """One noise tensor per image from its own seed (CPU RNG, so results do not depend on
    the device), plus the generators, which go on to drive the sampler's own noise."""
    gens, noises = [], []
    for seed, subseed in zip(seeds, subseeds):
        g = torch.Generator("cpu").manual_seed(seed)
        noise = torch.randn(shape, generator=g)
        if strength > 0:
            sub = torch.randn(shape, generator=torch.Generator("cpu").manual_seed(subseed))
            noise = slerp(strength, noise, sub)
        noises.append(noise)
        gens.append(g)
    return torch.stack(noises), gens


def _unet_kwargs(model, cond: conditioning.Conditioning, uncond: conditioning.Conditioning, width, height, n):
    if not model.family.startswith("sdxl"):
        return {}
    time_ids = torch.cat([conditioning.sdxl_time_ids(model, width, height, False).repeat(n, 1),
                          conditioning.sdxl_time_ids(model, width, height, True).repeat(n, 1)])
    return {"added_cond_kwargs": {"text_embeds": torch.cat([cond.pooled, uncond.pooled]), "time_ids": time_ids}}


@torch.no_grad()
def sample(model, request: GenerationRequest, noise: torch.Tensor, generators, cond, uncond, control: JobControl,
           width: int, height: int, image_cond: torch.Tensor | None = None) -> torch.Tensor:
    """The denoising loop: noise -> latents, with CFG and a callback per step.
    `image_cond` (mask + masked-image latent) feeds the extra input channels of
    inpainting models."""
    sch = samplers.create_scheduler(request.sampler_name, request.scheduler, request.steps,
                                    prediction_type=model.info.prediction_type, device="cpu")
    device, dtype = model.device, model.dtype
    n = noise.shape[0]
    latents = noise * sch.init_noise_sigma
    context = torch.cat([cond.context, uncond.context])
    extra = _unet_kwargs(model, cond, uncond, width, height, n)
    total = len(sch.timesteps)
    for i, t in enumerate(sch.timesteps):
        if control.interrupted or control.skipped:
            break
        x = sch.scale_model_input(torch.cat([latents, latents]), t)
        if image_cond is not None:
            x = torch.cat([x, torch.cat([image_cond, image_cond])], dim=1)
        out = model.unet(x.to(device, dtype), t.to(device), encoder_hidden_states=context, **extra).sample.float().cpu()
        pos, neg = out.chunk(2)
        guided = neg + request.cfg_scale * (pos - neg)
        latents = sch.step(guided, t, latents, generator=generators).prev_sample
        if control.on_step:
            control.on_step(i + 1, total, latents)
    return latents


@torch.no_grad()
def txt2img_image_cond(model, n: int, width: int, height: int) -> torch.Tensor | None:
    """For inpainting models in txt2img: everything masked, over a mid-grey image (as A1111)."""
    if not model.info.inpainting:
        return None
    grey = torch.zeros(1, 3, height, width, device=model.device, dtype=model.vae.dtype)
    latent = model.vae.encode(grey).latent_dist.mean.float().cpu() * model.vae.config.scaling_factor
    mask = torch.ones(1, 1, *latent.shape[2:])
    return torch.cat([mask, latent], dim=1).repeat(n, 1, 1, 1)


@torch.no_grad()
def decode(model, latents: torch.Tensor) -> list[Image.Image]:
    vae = model.vae
    x = vae.decode((latents / vae.config.scaling_factor).to(model.device, vae.dtype)).sample.float().cpu()
    arr = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return [Image.fromarray(np.ascontiguousarray(a)) for a in arr]


def generate(model, request: GenerationRequest, *, outdir: Path, control: JobControl | None = None,
             save_grid: bool = True) -> GenerationResult:
    """Run a txt2img request on a loaded model; save every image before returning."""
    control = control or JobControl()
    started = time.time()
    width = request.width or model.info.native_size[0]
    height = request.height or model.info.native_size[1]
    request = request.replace(width=width, height=height)
    factor = model.vae_scale_factor
    if width % factor or height % factor:
        raise RequestError("width", f"width and height must be multiples of {factor} for this model")
    samplers.validate(request.sampler_name, request.scheduler)
    seed = resolve_seed(request.seed)
    subseed = resolve_seed(request.subseed)
    total = request.batch_size * request.n_iter
    all_seeds = [seed + i for i in range(total)]
    all_subseeds = [subseed + i for i in range(total)]
    result = GenerationResult([], [], all_seeds, all_subseeds, request=request)
    folder = images.dated_folder(outdir, f"{request.mode}-images")
    latent_shape = (model.vae.config.latent_channels, height // factor, width // factor)
    for batch in range(request.n_iter):
        if control.interrupted:
            break
        control.skipped = False
        seeds = all_seeds[batch * request.batch_size:(batch + 1) * request.batch_size]
        subseeds = all_subseeds[batch * request.batch_size:(batch + 1) * request.batch_size]
        cond, uncond = conditioning.encode_pair(model, [request.prompt] * len(seeds),
                                                [request.negative_prompt] * len(seeds), request.clip_skip)
        noise, gens = make_noise(seeds, subseeds, request.subseed_strength, latent_shape)
        latents = sample(model, request, noise, gens, cond, uncond, control, width, height,
                         txt2img_image_cond(model, len(seeds), width, height))
        for img, s, ss in zip(decode(model, latents), seeds, subseeds):
            text = infotext.build_infotext(request, seed=s, subseed=ss, model_name=model.name, model_hash=model.short_hash,
                                           width=width, height=height, extra={"Version": "kiln"})
            if request.save_images:
                result.paths.append(images.save_image(img, folder, str(s), text))
            result.images.append(img)
            result.infotexts.append(text)
    result.interrupted = control.interrupted
    if save_grid and request.save_images and len(result.images) > 1:
        grid = images.image_grid(result.images)
        result.grid_path = images.save_image(grid, images.dated_folder(outdir, f"{request.mode}-grids"), "grid",
                                             result.infotexts[0])
    result.seconds = time.time() - started
    return result
