"""A1111's `modules.processing`: `p` and `Processed`, and `process_images(p)`: what
extension scripts receive, return and call.

`p` (StableDiffusionProcessing) is a thin wrapper over the job's GenerationRequest with
A1111's attribute names; `p.to_request()` turns it back into a GenerationRequest, so one
request type still feeds the engine: p -> request -> the same loop the UI and API use.
Inside the running job (a script's run()) process_images runs the engine at once
(`Runtime.run_engine`); from outside a job it queues one (`Runtime.generate`).

A1111's rules kept here: `p.prompt` / `p.negative_prompt` / `p.seed` may be lists (one
per image, as the prompt matrix sets them); `process_images` builds `p.all_prompts`,
`p.all_seeds` ... from them before the scripts' `process` hook, which may change them;
`p.extra_generation_params` items go into every image's infotext.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import logging

import numpy as np
import torch
from PIL import Image

from modules import script_callbacks
from modules.files import images, infotext
from modules.generation.hooks import Batch, Hooks, JobControl
from modules.generation.pipeline import GenerationResult
from modules.generation.request import GenerationRequest, Limits, PerImage, ScriptSelection
from modules.generation.seeds import per_image, resolve_seed

log = logging.getLogger(__name__)

# GenerationRequest fields p mirrors under the same (A1111) names
_MIRRORED = ("prompt", "negative_prompt", "steps", "sampler_name", "scheduler", "cfg_scale", "width", "height",
             "seed", "subseed", "subseed_strength", "batch_size", "n_iter", "clip_skip", "styles",
             "denoising_strength", "init_images", "mask", "resize_mode", "mask_blur", "inpainting_fill",
             "inpaint_full_res", "inpaint_full_res_padding", "inpainting_mask_invert")


def _runtime():
    """The runtime the edge was handed at start-up (modules/scripts.py's attach)."""
    return script_callbacks.registry.runtime


class StableDiffusionProcessing:
    """The job as scripts see it (A1111's names). Build one from keywords
    (`StableDiffusionProcessingTxt2Img(prompt=..., steps=...)`) or receive it in a hook.

    Kiln's additions: `runtime`, `control` (interrupt/skip flags and progress),
    `request` (the GenerationRequest it came from), `paths` of saved images."""

    def __init__(self, request: GenerationRequest | None = None, **kwargs):
        base = request or GenerationRequest()
        self.request = base
        for name in _MIRRORED:
            value = getattr(base, name)
            setattr(self, name, list(value) if isinstance(value, list) else value)
        self.runtime = _runtime()
        self.control = JobControl()
        self.scripts = None  # the ScriptRunner (always-on hooks run when it is set)
        self.script_args: list = list(base.scripts.args or [])
        self.override_settings: dict = dict(base.override_settings)
        if base.checkpoint:
            self.override_settings["sd_model_checkpoint"] = base.checkpoint
        self.override_settings_restore_afterwards = True
        self.extra_generation_params: dict = dict(base.infotext_params)
        self.do_not_save_samples = not base.save_images
        self.do_not_save_grid = not base.save_grid
        self.all_prompts = self.all_negative_prompts = self.all_seeds = self.all_subseeds = None
        self.prompts = self.negative_prompts = self.seeds = self.subseeds = None
        self.iteration = self.batch_index = 0
        self.is_api = False
        self.enable_hr = self.restore_faces = self.tiling = False
        self.refiner_checkpoint = None
        self.seed_resize_from_w = self.seed_resize_from_h = -1
        self.eta = None
        self.user = None
        outdir = Path(self.runtime.data_dir / self.runtime.options.outdir_samples) if self.runtime else Path("outputs")
        kind = "img2img" if self.is_img2img else "txt2img"
        self.outpath_samples = str(outdir / f"{kind}-images")
        self.outpath_grids = str(outdir / f"{kind}-grids")
        self.sd_model = kwargs.pop("sd_model", None)
        for key, value in kwargs.items():
            setattr(self, key, value)

    @property
    def is_img2img(self) -> bool:
        return bool(getattr(self, "init_images", None)) or self.request.mode == "img2img"

    @property
    def sd_model_name(self):
        return self.sd_model.name if self.sd_model is not None else None

    @property
    def sd_model_hash(self):
        return self.sd_model.short_hash if self.sd_model is not None else None

    def setup_prompts_and_seeds(self) -> None:
        """A1111's setup: per-image prompts and seeds from p.prompt / p.seed (a value or a
        list); -1 seeds become one random seed, image i of the job gets seed + i."""
        each = per_image(self.prompt, self.negative_prompt, self.seed, self.subseed,
                         int(self.batch_size) * int(self.n_iter))
        self.all_prompts, self.all_negative_prompts = each.prompts, each.negative_prompts
        self.all_seeds, self.all_subseeds = each.seeds, each.subseeds

    def to_request(self) -> GenerationRequest:
        """This p as the GenerationRequest the engine runs (fields p does not know, such as
        ones other parts of Kiln add, carry over from the request it came from)."""
        changes = {name: getattr(self, name) for name in _MIRRORED}
        for name, all_name in (("prompt", "all_prompts"), ("negative_prompt", "all_negative_prompts"),
                               ("seed", "all_seeds"), ("subseed", "all_subseeds")):
            if isinstance(changes[name], list):  # the request keeps one value; the lists go per image
                values = getattr(self, all_name) or changes[name]
                changes[name] = values[0] if values else ("" if "prompt" in name else -1)
        overrides = dict(self.override_settings)
        checkpoint = overrides.pop("sd_model_checkpoint", None) or None
        clip_skip = overrides.pop("CLIP_stop_at_last_layers", None)
        if clip_skip:
            changes["clip_skip"] = int(clip_skip)
        each = None
        if self.all_prompts is not None:  # values a script did not set per image come from p's
            own = per_image(self.prompt, self.negative_prompt, self.seed, self.subseed, len(self.all_prompts))
            each = PerImage(list(self.all_prompts), list(self.all_negative_prompts or own.negative_prompts),
                            [int(s) for s in self.all_seeds or own.seeds],
                            [int(s) for s in self.all_subseeds or own.subseeds])
        return dataclasses.replace(
            self.request, **changes, checkpoint=checkpoint, override_settings=overrides,
            mode="img2img" if self.is_img2img else "txt2img", per_image=each,
            infotext_params=self.extra_generation_params,  # the same dict: batch hooks may add to it
            save_images=not self.do_not_save_samples, save_grid=not self.do_not_save_grid,
            scripts=ScriptSelection())  # p's own run is the engine's: its scripts already ran around it

    def validate(self) -> None:
        """Kiln's addition: raise RequestError (the API answers 422, naming the field) for
        a value this job cannot run with, against the runtime's limits."""
        runtime = self.runtime or _runtime()
        self.to_request().validate(runtime.settings.limits if runtime else Limits())

    def __copy__(self):
        """A1111's scripts copy p per sub-job (copy.copy(p)): the dicts and lists that a
        sub-job changes are copied too, so the copy's changes stay its own."""
        clone = object.__new__(type(self))
        clone.__dict__.update(self.__dict__)
        clone.override_settings = dict(self.override_settings)
        clone.extra_generation_params = dict(self.extra_generation_params)
        return clone


class StableDiffusionProcessingTxt2Img(StableDiffusionProcessing):
    pass


class StableDiffusionProcessingImg2Img(StableDiffusionProcessing):
    @property
    def is_img2img(self) -> bool:
        return True


class Processed:
    """What a generation returns to scripts (A1111's names). `images` and `infotexts` are
    parallel; Kiln keeps `paths` parallel to them too (None for an image not saved)."""

    def __init__(self, p: StableDiffusionProcessing, images_list: list, seed: int = -1, info: str = "",
                 subseed: int | None = None, all_prompts=None, all_negative_prompts=None, all_seeds=None,
                 all_subseeds=None, index_of_first_image: int = 0, infotexts=None, comments: str = "",
                 paths=None):
        self.p = p
        self.images = list(images_list)
        self.infotexts = list(infotexts) if infotexts is not None else [info] * len(self.images)
        self.paths: list = list(paths) if paths is not None else [None] * len(self.images)
        self.prompt = p.all_prompts[0] if p.all_prompts else p.prompt
        self.negative_prompt = p.all_negative_prompts[0] if p.all_negative_prompts else p.negative_prompt
        self.all_prompts = list(all_prompts if all_prompts is not None else p.all_prompts or [p.prompt])
        self.all_negative_prompts = list(all_negative_prompts if all_negative_prompts is not None
                                         else p.all_negative_prompts or [p.negative_prompt])
        self.all_seeds = list(all_seeds if all_seeds is not None else p.all_seeds or [seed])
        self.all_subseeds = list(all_subseeds if all_subseeds is not None else p.all_subseeds or [subseed])
        self.seed = seed if seed != -1 or not self.all_seeds else self.all_seeds[0]
        self.subseed = subseed if subseed is not None else (self.all_subseeds[0] if self.all_subseeds else -1)
        self.info = info or (self.infotexts[0] if self.infotexts else "")
        self.comments = comments
        self.index_of_first_image = index_of_first_image
        self.extra_generation_params = dict(p.extra_generation_params)
        for name in ("width", "height", "sampler_name", "scheduler", "cfg_scale", "steps", "batch_size",
                     "subseed_strength", "denoising_strength", "clip_skip", "styles"):
            setattr(self, name, getattr(p, name, None))
        self.sd_model_name, self.sd_model_hash = p.sd_model_name, p.sd_model_hash
        self.grid_path: Path | None = None
        self.interrupted = False
        self.warnings: list[str] = []  # Kiln: shown under the generation info (a missing LoRA ...)
        self.seconds = 0.0

    @classmethod
    def from_result(cls, p, result: GenerationResult) -> "Processed":
        processed = cls(p, result.images, result.seeds[0] if result.seeds else -1, subseed=None,
                        all_prompts=result.prompts or None, all_negative_prompts=result.negative_prompts or None,
                        all_seeds=result.seeds, all_subseeds=result.subseeds, infotexts=result.infotexts,
                        paths=result.paths if len(result.paths) == len(result.images) else None)
        processed.grid_path, processed.interrupted, processed.seconds = result.grid_path, result.interrupted, result.seconds
        processed.warnings = list(getattr(result, "warnings", []))
        return processed

    def to_result(self) -> GenerationResult:
        """As the GenerationResult the UI and API show: every image saved -> its path."""
        paths = self.paths if len(self.paths) == len(self.images) and all(self.paths) else []
        request = self.p.to_request()
        return GenerationResult(list(self.images), list(self.infotexts), list(self.all_seeds),
                                list(self.all_subseeds), paths=[Path(x) for x in paths], grid_path=self.grid_path,
                                request=request, interrupted=self.interrupted, seconds=self.seconds,
                                prompts=list(self.all_prompts), negative_prompts=list(self.all_negative_prompts),
                                warnings=list(self.warnings))

    def js(self) -> str:
        """A1111's JSON of the generation (the API's `info`)."""
        return json.dumps({
            "prompt": self.prompt, "all_prompts": self.all_prompts, "negative_prompt": self.negative_prompt,
            "all_negative_prompts": self.all_negative_prompts, "seed": self.seed, "all_seeds": self.all_seeds,
            "subseed": self.subseed, "all_subseeds": self.all_subseeds, "subseed_strength": self.subseed_strength,
            "width": self.width, "height": self.height, "sampler_name": self.sampler_name,
            "cfg_scale": self.cfg_scale, "steps": self.steps, "batch_size": self.batch_size,
            "extra_generation_params": self.extra_generation_params,
            "index_of_first_image": self.index_of_first_image, "infotexts": self.infotexts,
            "styles": self.styles, "clip_skip": self.clip_skip, "sd_model_name": self.sd_model_name,
            "sd_model_hash": self.sd_model_hash, "version": "kiln"})


def processing_for(request: GenerationRequest, runtime, control: JobControl | None = None,
                   scripts=None) -> StableDiffusionProcessing:
    """The p of a job from the UI or the API (`scripts`: the ScriptRunner whose always-on
    hooks run)."""
    cls = StableDiffusionProcessingImg2Img if request.mode == "img2img" or request.init_images \
        else StableDiffusionProcessingTxt2Img
    p = cls(request)
    p.runtime = runtime
    p.control = control or JobControl()
    p.scripts = scripts
    p.sd_model = runtime.model
    return p


class PostprocessImageArgs:
    """`postprocess_image(p, pp, *args)`: set `pp.image` to replace the picture
    (A1111's scripts.PostprocessImageArgs; modules/scripts.py names it too)."""

    def __init__(self, image):
        self.image = image


class ScriptHooks(Hooks):
    """The engine loop's Hooks for one process_images(p) call: the always-on scripts'
    batch hooks on `p`, and the extensions' per-step and image-saving callbacks."""

    def __init__(self, p, runner, callbacks: script_callbacks.CallbackRegistry | None):
        self.p, self.runner, self.callbacks = p, runner, callbacks
        self.wants_cfg_denoiser = bool(callbacks and callbacks.has("cfg_denoiser"))

    def batch_starting(self, batch: Batch) -> None:
        p = self.p
        p.iteration = batch.number
        p.prompts, p.negative_prompts = list(batch.prompts), list(batch.negative_prompts)
        p.seeds, p.subseeds = list(batch.seeds), list(batch.subseeds)
        if self.runner:
            kw = dict(batch_number=batch.number, prompts=p.prompts, seeds=p.seeds, subseeds=p.subseeds)
            self.runner.before_process_batch(p, **kw)
            self.runner.process_batch(p, **kw)
        n = len(batch.seeds)  # a hook may change the values, not the batch's size
        batch.prompts, batch.negative_prompts = _sized(p.prompts, n), _sized(p.negative_prompts, n)
        batch.seeds, batch.subseeds = [int(s) for s in _sized(p.seeds, n)], [int(s) for s in _sized(p.subseeds, n)]

    def cfg_denoiser(self, x, image_cond, sigma, step, total, cond, uncond):
        params = script_callbacks.CFGDenoiserParams(x, image_cond, sigma, step, total, cond, uncond)
        self.callbacks.cfg_denoiser(params)
        if params.x.shape != x.shape or params.text_cond.shape != cond.shape \
                or params.text_uncond.shape != uncond.shape:
            log.warning("on_cfg_denoiser changed a tensor's shape: ignored for this step")
            return x, cond, uncond
        return params.x, params.text_cond, params.text_uncond

    def batch_done(self, batch: Batch, images: list) -> list:
        if not self.runner or not self.runner.alwayson[self.p.is_img2img]:
            return images
        tensor = torch.from_numpy(np.stack([np.asarray(im.convert("RGB"), dtype=np.float32) / 255 for im in images]))
        tensor = tensor.permute(0, 3, 1, 2).contiguous()
        before = tensor.clone()
        self.runner.postprocess_batch(self.p, tensor, batch_number=batch.number)
        if not torch.equal(before, tensor):  # a script changed the pixels in place
            arr = (tensor.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
            images = [Image.fromarray(np.ascontiguousarray(a)) for a in arr]
        out = []
        for i, image in enumerate(images):
            self.p.batch_index = i
            pp = PostprocessImageArgs(image)
            self.runner.postprocess_image(self.p, pp)
            out.append(pp.image if pp.image is not None else image)
        return out

    def save_image(self, image, folder: Path, suffix: str, text: str) -> Path:
        if not self.callbacks:
            return images.save_image(image, folder, suffix, text)
        params = script_callbacks.ImageSaveParams(image, self.p, str(folder), {"parameters": text})
        self.callbacks.before_image_saved(params)
        path = images.save_image(params.image, folder, suffix, params.pnginfo.get("parameters") or text)
        params.filename = str(path)
        self.callbacks.image_saved(params)
        return path


def _sized(values, n: int) -> list:
    values = list(values) if isinstance(values, (list, tuple)) else [values]
    return (values + values[-1:] * n)[:n] if values else values


def process_images(p: StableDiffusionProcessing) -> Processed:
    """Generate what p describes through the engine, with the always-on scripts' hooks
    (when p.scripts is set) and the extensions' callbacks. Called by a selectable
    script's run(), inside the running job, it runs at once; from outside a job, it
    queues one."""
    runtime = p.runtime or _runtime()
    if runtime is None:
        raise RuntimeError("process_images needs a Kiln runtime (none was handed to the A1111 edge)")
    p.runtime = runtime
    p.setup_prompts_and_seeds()
    if p.scripts is not None:
        p.scripts.before_process(p)
        p.scripts.process(p)
    hooks = ScriptHooks(p, p.scripts, script_callbacks.registry)
    request = p.to_request()
    if runtime.job_running:  # a script inside the job: its progress and control go on
        request.validate(runtime.settings.limits)
        result = runtime.run_engine(request, p.control, hooks)
    else:
        result = runtime.generate(request, p.control, job="scripts", hooks=hooks)
    p.sd_model = runtime.model
    if p.width is None or p.height is None:  # the size the engine chose (native, or the init image's)
        p.width, p.height = result.request.width, result.request.height
    processed = Processed.from_result(p, result)
    if p.scripts is not None:
        p.scripts.postprocess(p, processed)
    return processed


def fix_seed(p: StableDiffusionProcessing) -> None:
    """Turn -1 seeds into fixed random ones (so every sub-job of a script shares them)."""
    p.seed = get_fixed_seed(p.seed)
    p.subseed = get_fixed_seed(p.subseed)


def get_fixed_seed(seed):
    if isinstance(seed, list):
        return seed
    return resolve_seed(-1 if seed is None or seed == "" else int(seed))


def create_infotext(p, all_prompts, all_seeds, all_subseeds, comments=None, iteration=0, position_in_batch=0):
    """A1111's helper, for scripts that label their own images: the infotext of image
    `iteration * batch_size + position_in_batch` of p."""
    i = iteration * int(p.batch_size) + position_in_batch
    negatives = p.all_negative_prompts or [""]
    return infotext.image_infotext(p.to_request(), p.sd_model, prompt=all_prompts[i],
                                   negative_prompt=negatives[min(i, len(negatives) - 1)], seed=all_seeds[i],
                                   subseed=all_subseeds[i] if all_subseeds else None, width=p.width, height=p.height,
                                   extra=dict(p.extra_generation_params))


__all__ = ["StableDiffusionProcessing", "StableDiffusionProcessingTxt2Img", "StableDiffusionProcessingImg2Img",
           "Processed", "process_images", "processing_for", "fix_seed", "get_fixed_seed", "create_infotext",
           "PostprocessImageArgs", "ScriptHooks"]
