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

from modules.text import conditioning
from modules.device import devices, memory
from modules.models import networks as extra_networks
from modules.files import images, infotext
from modules.generation import img2img
from modules.sampling import samplers
from modules.text import prompt_syntax
from modules.generation.request import GenerationRequest, RequestError


@dataclass
class JobControl:
    """Flags the UI/API set while a job runs; the loop reads them between steps."""
    interrupted: bool = False
    skipped: bool = False
    on_step: Callable[[int, int, torch.Tensor], None] | None = None


@dataclass
class Batch:
    """One batch of the loop as hooks see it: its number and per-image prompts and seeds.
    A hook may change the lists in place (or replace them); the loop reads them back."""
    number: int
    prompts: list[str]
    negative_prompts: list[str]
    seeds: list[int]
    subseeds: list[int]


class Hooks:
    """The loop's extension points, called at fixed places (this base does nothing).
    modules/scripts.py's ScriptHooks fills them in with extensions' scripts and
    callbacks; the engine knows nothing else about extensions."""

    wants_cfg_denoiser = False  # True: call cfg_denoiser every step (costs a context rebuild)

    def batch_starting(self, batch: Batch) -> None:
        """Before a batch's conditioning is encoded: prompts and seeds may change."""

    def cfg_denoiser(self, x: torch.Tensor, image_cond, sigma, step: int, total: int,
                     cond: torch.Tensor, uncond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Before the UNet call of a step: returns (x, cond context, uncond context) to use.
        `cond` holds every AND sub-prompt's context, one after the other."""
        return x, cond, uncond

    def batch_done(self, batch: Batch, images: list[Image.Image]) -> list[Image.Image]:
        """After decoding a batch: returns the images to keep (postprocessed)."""
        return images

    def save_image(self, image: Image.Image, folder: Path, suffix: str, text: str) -> Path:
        return images.save_image(image, folder, suffix, text)


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
    warnings: list[str] = field(default_factory=list)  # e.g. a LoRA not found: shown, never fatal
    prompts: list[str] = field(default_factory=list)  # per image (scripts may vary them)
    negative_prompts: list[str] = field(default_factory=list)

    @property
    def info(self) -> dict:
        r = self.request
        typed = r.extra.get("prompts_before_styles") or {}  # A1111 reports the prompts without styles here
        return {"prompt": typed.get("prompt", r.prompt), "negative_prompt": typed.get("negative_prompt", r.negative_prompt),
                "seed": self.seeds[0] if self.seeds else -1,
                "all_seeds": self.seeds, "subseed": self.subseeds[0] if self.subseeds else -1,
                "all_subseeds": self.subseeds, "infotexts": self.infotexts, "width": r.width, "height": r.height,
                "sampler_name": r.sampler_name, "scheduler": r.scheduler, "cfg_scale": r.cfg_scale,
                "steps": r.steps, "batch_size": r.batch_size, "n_iter": r.n_iter, "warnings": list(self.warnings)}


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


def _unet_kwargs(model, conds: list[conditioning.Conditioning], uncond: conditioning.Conditioning, width, height, n,
                 settings: conditioning.TextSettings = conditioning.TextSettings()):
    """SDXL's added conditioning for a batch of every positive (sub-)prompt, then the negative."""
    if not model.family.startswith("sdxl"):
        return {}
    time_ids = torch.cat([conditioning.sdxl_time_ids(model, width, height, False, settings).repeat(n * len(conds), 1),
                          conditioning.sdxl_time_ids(model, width, height, True, settings).repeat(n, 1)])
    pooled = torch.cat([c.pooled for c in conds] + [uncond.pooled])
    return {"added_cond_kwargs": {"text_embeds": pooled, "time_ids": time_ids}}


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


@torch.no_grad()
def txt2img_image_cond(model, n: int, width: int, height: int) -> torch.Tensor | None:
    """For inpainting models in txt2img: everything masked, over a mid-grey image (as A1111)."""
    if not model.info.inpainting:
        return None
    latent = memory.vae_encode(model, torch.zeros(1, 3, height, width))
    mask = torch.ones(1, 1, *latent.shape[2:])
    return torch.cat([mask, latent], dim=1).repeat(n, 1, 1, 1)


@torch.no_grad()
def encode(model, images: list[Image.Image]) -> torch.Tensor:
    """Pixels -> scaled latents (the latent distribution's mean, as A1111's img2img)."""
    arr = np.stack([np.asarray(im.convert("RGB"), dtype=np.float32) for im in images]) / 127.5 - 1
    return memory.vae_encode(model, torch.from_numpy(arr).permute(0, 3, 1, 2))


@torch.no_grad()
def decode(model, latents: torch.Tensor) -> list[Image.Image]:
    x = memory.vae_decode(model, latents)  # tiled when memory is short, fp32 when fp16 overflows
    arr = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return [Image.fromarray(np.ascontiguousarray(a)) for a in arr]


@dataclass
class Img2ImgBatch:
    """One batch's img2img inputs, prepared from the init images (and mask)."""
    init: InitLatents
    image_cond: torch.Tensor | None
    originals: list[Image.Image]  # what strength 0 returns and what the result is pasted over
    blurred_masks: list[Image.Image] | None = None  # at the originals' size
    regions: list = field(default_factory=list)  # "only masked" crop boxes

    def part(self, a: int, b: int) -> "Img2ImgBatch":
        """Images a..b of the batch (the whole batch when that is all of it)."""
        if a == 0 and b == len(self.originals):
            return self
        mask = self.init.mask[a:b] if self.init.mask is not None else None
        return Img2ImgBatch(InitLatents(self.init.latents[a:b], mask),
                            self.image_cond[a:b] if self.image_cond is not None else None, self.originals[a:b],
                            self.blurred_masks[a:b] if self.blurred_masks is not None else None,
                            self.regions[a:b] if self.regions else [])



@torch.no_grad()
def prepare_img2img(model, request: GenerationRequest, sources: list[Image.Image], noise: torch.Tensor,
                    width: int, height: int) -> Img2ImgBatch:
    mode = int(request.resize_mode)
    factor = model.vae_scale_factor
    if request.mask is None:
        originals = [img2img.resize_image(0 if mode == 3 else mode, src, width, height) for src in sources]
        if mode == 3:  # latent upscale: encode at the source size, resize the latents
            latents = torch.cat([
                torch.nn.functional.interpolate(
                    encode(model, [src.convert("RGB").resize((max(factor, src.width // factor * factor),
                                                              max(factor, src.height // factor * factor)))]),
                    size=(height // factor, width // factor), mode="bilinear", align_corners=False)
                for src in sources])
        else:
            latents = encode(model, originals)
        return Img2ImgBatch(InitLatents(latents), txt2img_image_cond(model, len(sources), width, height), originals)

    invert, blur = bool(request.inpainting_mask_invert), int(request.mask_blur)
    processed, sharps, blurred_full, regions, originals = [], [], [], [], []
    for src in sources:
        if request.inpaint_full_res:  # "only masked": work on the masked region at full size
            original = src.convert("RGB")
            sharp_full, blurred = img2img.prepare_mask(request.mask, original.size, invert, blur)
            region = img2img.masked_region(sharp_full, int(request.inpaint_full_res_padding), width, height)
            box = region.box if region else (0, 0, *original.size)
            proc = original.crop(box).resize((width, height), Image.Resampling.LANCZOS)
            sharp = sharp_full.crop(box).resize((width, height), Image.Resampling.NEAREST)
        else:  # the mask goes through the same resize as the picture
            original = img2img.resize_image(mode if mode != 3 else 0, src, width, height)
            mask = img2img.resize_image(mode if mode != 3 else 0, img2img.mask_to_l(request.mask), width, height)
            sharp, blurred = img2img.prepare_mask(mask.convert("L"), (width, height), invert, blur)
            region, proc = None, original
        if int(request.inpainting_fill) == 0:
            proc = img2img.fill_masked(proc, sharp)
        processed.append(proc)
        sharps.append(sharp)
        blurred_full.append(blurred)
        regions.append(region)
        originals.append(original)
    latents = encode(model, processed)
    lat_size = (height // factor, width // factor)
    # the latent mask follows A1111: the blurred mask at latent size, rounded to 0/1
    blurred_proc = [b.crop(r.box).resize((width, height)) if r else b for b, r in zip(blurred_full, regions)]
    mask = torch.stack([torch.from_numpy(np.asarray(b.resize(lat_size[::-1], Image.Resampling.BILINEAR),
                                                    dtype=np.float32) / 255).round() for b in blurred_proc])[:, None]
    fill = int(request.inpainting_fill)
    if fill == 2:  # latent noise
        latents = latents * (1 - mask) + noise * mask
    elif fill == 3:  # latent nothing
        latents = latents * (1 - mask)
    image_cond = None
    if model.info.inpainting:
        sharp_lat = torch.stack([torch.from_numpy(np.asarray(m.resize(lat_size[::-1], Image.Resampling.BILINEAR),
                                                             dtype=np.float32) / 255).round() for m in sharps])[:, None]
        grey_masked = [Image.composite(Image.new("RGB", p.size, (128, 128, 128)), p, m) for p, m in zip(processed, sharps)]
        image_cond = torch.cat([sharp_lat, encode(model, grey_masked)], dim=1)
    return Img2ImgBatch(InitLatents(latents, mask), image_cond, originals, blurred_full, regions)


def _prompt_runs(batch: Batch) -> list[tuple[int, int]]:
    """(start, end) of each run of images with the same prompt and negative prompt: one run
    for an ordinary batch; a script's mixed prompts (prompt matrix) sample run by run, which
    gives the same pictures since every image has its own noise and generator."""
    pairs = list(zip(batch.prompts, batch.negative_prompts))
    runs, start = [], 0
    for i in range(1, len(pairs) + 1):
        if i == len(pairs) or pairs[i] != pairs[start]:
            runs.append((start, i))
            start = i
    return runs


def finish_img2img(batch: Img2ImgBatch, decoded: list[Image.Image]) -> list[Image.Image]:
    """Paste inpainted pixels back over the originals through the blurred mask."""
    if batch.blurred_masks is None:
        return decoded
    return [img2img.paste_back(o, d, m, r) for o, d, m, r in zip(batch.originals, decoded, batch.blurred_masks, batch.regions)]


def _img2img_infotext(request: GenerationRequest) -> dict:
    extra = {"Denoising strength": request.denoising_strength}
    if request.init_images and int(request.resize_mode) == 3:
        extra["Resize mode"] = img2img.RESIZE_MODES[3]
    if request.mask is not None:
        extra.update({
            "Mask blur": request.mask_blur,
            "Masked content": img2img.MASKED_CONTENT[int(request.inpainting_fill)],
            "Inpaint area": img2img.INPAINT_AREAS[int(bool(request.inpaint_full_res))],
            "Masked area padding": request.inpaint_full_res_padding,
            "Mask mode": img2img.MASK_MODES[int(bool(request.inpainting_mask_invert))],
        })
    return extra


def _settings_infotext(request: GenerationRequest, settings: conditioning.TextSettings) -> dict:
    """A1111 records a non-default emphasis mode only when a prompt has brackets to weigh."""
    if settings.emphasis != "Original" and any(c in request.prompt + request.negative_prompt for c in "(["):
        return {"Emphasis": settings.emphasis}
    return {}


def generate(model, request: GenerationRequest, *, outdir: Path, control: JobControl | None = None,
             save_grid: bool = True, settings: conditioning.TextSettings = conditioning.TextSettings(),
             networks: extra_networks.Networks | None = None, hooks: Hooks | None = None,
             auto_threads: bool = True) -> GenerationResult:
    """Run a txt2img or img2img request on a loaded model; save every image before
    returning. `settings`: the runtime's conditioning options (emphasis, SDXL crop...);
    `networks`: the LoRA/embedding folders the prompt's names refer to; `hooks`: the
    extensions' (modules/scripts.py); `auto_threads`: see sample() (the benchmark
    turns it off to time both thread counts)."""
    control = control or JobControl()
    hooks = hooks or Hooks()
    started = time.time()
    is_img2img = bool(request.init_images)
    width = request.width or (request.init_images[0].width if is_img2img else model.info.native_size[0])
    height = request.height or (request.init_images[0].height if is_img2img else model.info.native_size[1])
    factor = model.vae_scale_factor
    if is_img2img and not request.width:  # an init image's own size, rounded to what the model takes
        width, height = max(factor, width // factor * factor), max(factor, height // factor * factor)
    request = request.replace(width=width, height=height, mode="img2img" if is_img2img else request.mode)
    if width % factor or height % factor:
        raise RequestError("width", f"width and height must be multiples of {factor} for this model")
    samplers.validate(request.sampler_name, request.scheduler)
    total = request.batch_size * request.n_iter
    if request.all_prompts is not None:  # a script's per-image prompts: as many images as prompts
        total = min(total, len(request.all_prompts))
    all_prompts = list(request.all_prompts or [request.prompt] * total)
    all_negative_prompts = list(request.all_negative_prompts or [request.negative_prompt] * total)
    seed, subseed = resolve_seed(request.seed), resolve_seed(request.subseed)
    all_seeds = list(request.all_seeds or [seed + i for i in range(total)])
    all_subseeds = list(request.all_subseeds or [subseed + i for i in range(total)])
    result = GenerationResult([], [], all_seeds[:total], all_subseeds[:total], request=request)
    folder = images.dated_folder(outdir, f"{request.mode}-images")
    latent_shape = (model.vae.config.latent_channels, height // factor, width // factor)
    extra_info = _img2img_infotext(request) if is_img2img else {}
    extra_info.update(_settings_infotext(request, settings))
    # extra networks: <lora:...> tags out of the prompt, LoRAs merged (or removed), embeddings refreshed
    # (with a script's per-image prompts, the first image's networks, as A1111 takes a batch's from its first)
    networks_used = extra_networks.activate(networks, model, all_prompts[0] if all_prompts else request.prompt,
                                            request.negative_prompt)
    result.warnings = networks_used.warnings
    extra_info |= networks_used.infotext
    for batch in range(request.n_iter):
        if control.interrupted:
            break
        control.skipped = False
        first = batch * request.batch_size
        if first >= total:
            break
        part = slice(first, min(first + request.batch_size, total))
        info = Batch(batch, all_prompts[part], all_negative_prompts[part], all_seeds[part], all_subseeds[part])
        hooks.batch_starting(info)
        seeds, subseeds = info.seeds, info.subseeds
        noise, gens = make_noise(seeds, subseeds, request.subseed_strength, latent_shape)
        if is_img2img:
            sources = [request.init_images[(first + i) % len(request.init_images)] for i in range(len(seeds))]
            prepared = prepare_img2img(model, request, sources, noise, width, height)
        if is_img2img and float(request.denoising_strength) == 0:
            outputs = [o.copy() for o in prepared.originals]  # nothing to denoise: the input, exactly
        else:
            outputs = []
            for a, b in _prompt_runs(info):  # images of a batch that share their prompts share a sampler call
                positive = prompt_syntax.extract_extra_networks(info.prompts[a])[0]  # the <lora:...> tags out
                cond, uncond = conditioning.encode_composable(model, positive, info.negative_prompts[a],
                                                              request.steps, b - a, request.clip_skip,
                                                              settings.emphasis)
                if is_img2img:
                    run = prepared.part(a, b)
                    latents = sample(model, request, noise[a:b], gens[a:b], cond, uncond, control, width, height,
                                     run.image_cond, run.init, settings=settings, hooks=hooks,
                                     auto_threads=auto_threads)
                    outputs += finish_img2img(run, decode(model, latents))
                else:
                    latents = sample(model, request, noise[a:b], gens[a:b], cond, uncond, control, width, height,
                                     txt2img_image_cond(model, b - a, width, height), settings=settings, hooks=hooks,
                                     auto_threads=auto_threads)
                    outputs += decode(model, latents)
        outputs = hooks.batch_done(info, outputs)
        for img, s, ss, pos, neg in zip(outputs, seeds, subseeds, info.prompts, info.negative_prompts):
            text = infotext.build_infotext(request.replace(prompt=pos, negative_prompt=neg), seed=s, subseed=ss,
                                           model_name=model.name, model_hash=model.short_hash, width=width,
                                           height=height,
                                           extra=extra_info | request.extra_generation_params | {"Version": "kiln"})
            if request.save_images:
                result.paths.append(hooks.save_image(img, folder, str(s), text))
            result.images.append(img)
            result.infotexts.append(text)
            result.prompts.append(pos)
            result.negative_prompts.append(neg)
    result.interrupted = control.interrupted
    if save_grid and request.save_grid and request.save_images and len(result.images) > 1:
        grid = images.image_grid(result.images)
        result.grid_path = hooks.save_image(grid, images.dated_folder(outdir, f"{request.mode}-grids"), "grid",
                                            result.infotexts[0])
    result.seconds = time.time() - started
    return result
