"""GenerationRequest -> GenerationResult: the batch driver.

For each batch: per-image prompts and seeds, the hooks' say, seeded noise, img2img's
inputs, the text conditioning, the denoising loop (loop.py), decoding, and every image
saved with its infotext before the result is returned, so nothing finished is lost.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from modules.files import images, infotext
from modules.generation.hooks import Batch, Hooks, JobControl
from modules.generation.img2img import finish_img2img, img2img_infotext, prepare_img2img
from modules.generation.loop import sample
from modules.generation.request import GenerationRequest, RequestError
from modules.generation.seeds import make_noise, per_image
from modules.generation.vae import decode, txt2img_image_cond
from modules.models import networks as extra_networks
from modules.sampling import samplers
from modules.text import conditioning, prompt_syntax


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
    deepest = conditioning.deepest_clip_skip(model)
    clip_skip_warning = None
    if int(request.clip_skip) > deepest:  # A1111 lets clip skip run past a small encoder; we clamp and say so
        clip_skip_warning = (f"Clip skip {request.clip_skip} is deeper than this model's text encoder goes: "
                             f"{deepest} was used")
        request = request.replace(clip_skip=deepest)
    total = request.batch_size * request.n_iter
    each = request.per_image or per_image(request.prompt, request.negative_prompt, request.seed, request.subseed, total)
    total = min(total, len(each.prompts))  # a script's per-image prompts: as many images as prompts
    all_prompts, all_negative_prompts = each.prompts, each.negative_prompts
    all_seeds, all_subseeds = each.seeds, each.subseeds
    result = GenerationResult([], [], all_seeds[:total], all_subseeds[:total], request=request)
    folder = images.dated_folder(outdir, f"{request.mode}-images")
    latent_shape = (model.vae.config.latent_channels, height // factor, width // factor)
    extra_info = img2img_infotext(request) if is_img2img else {}
    extra_info.update(_settings_infotext(request, settings))
    # extra networks: <lora:...> tags out of the prompt, LoRAs merged (or removed), embeddings refreshed
    # (with a script's per-image prompts, the first image's networks, as A1111 takes a batch's from its first)
    networks_used = extra_networks.activate(networks, model, all_prompts[0] if all_prompts else request.prompt,
                                            request.negative_prompt)
    result.warnings = networks_used.warnings + ([clip_skip_warning] if clip_skip_warning else [])
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
            text = infotext.image_infotext(request, model, prompt=pos, negative_prompt=neg, seed=s, subseed=ss,
                                           extra=extra_info)
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
