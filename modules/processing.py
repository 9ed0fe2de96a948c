"""A1111's `p` and `Processed`, and `process_images(p)`: what extension scripts receive,
return and call. modules/processing.py re-exports them under A1111's names.

`p` (StableDiffusionProcessing) is a thin wrapper over the job's GenerationRequest with
A1111's attribute names; `p.to_request()` turns it back into a GenerationRequest, so one
request type still feeds the engine: p -> request -> the same loop the UI and API use
(`Runtime.generate`, which runs at once when called from inside the running job).

A1111's rules kept here: `p.prompt` / `p.negative_prompt` / `p.seed` may be lists (one
per image, as the prompt matrix sets them); `process_images` builds `p.all_prompts`,
`p.all_seeds` ... from them before the scripts' `process` hook, which may change them;
`p.extra_generation_params` items go into every image's infotext.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from modules.generation.pipeline import GenerationResult, JobControl, resolve_seed
from modules.generation.request import GenerationRequest

# GenerationRequest fields p mirrors under the same (A1111) names
_MIRRORED = ("prompt", "negative_prompt", "steps", "sampler_name", "scheduler", "cfg_scale", "width", "height",
             "seed", "subseed", "subseed_strength", "batch_size", "n_iter", "clip_skip", "styles",
             "denoising_strength", "init_images", "mask", "resize_mode", "mask_blur", "inpainting_fill",
             "inpaint_full_res", "inpaint_full_res_padding", "inpainting_mask_invert")


def _runtime():
    from modules import script_callbacks

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
        self.script_args: list = list(base.script_args or [])
        self.override_settings: dict = {}
        if base.checkpoint:
            self.override_settings["sd_model_checkpoint"] = base.checkpoint
        self.override_settings_restore_afterwards = True
        self.extra_generation_params: dict = dict(base.extra_generation_params)
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
        total = int(self.batch_size) * int(self.n_iter)
        self.all_prompts = list(self.prompt) if isinstance(self.prompt, list) else [self.prompt] * total
        n = len(self.all_prompts)
        neg = self.negative_prompt
        self.all_negative_prompts = list(neg) if isinstance(neg, list) else [neg] * n
        if isinstance(self.seed, list):
            self.all_seeds = [int(s) for s in self.seed]
        else:
            seed = resolve_seed(self.seed)
            self.all_seeds = [seed + i for i in range(n)]
        if isinstance(self.subseed, list):
            self.all_subseeds = [int(s) for s in self.subseed]
        else:
            subseed = resolve_seed(self.subseed)
            self.all_subseeds = [subseed + i for i in range(n)]

    def to_request(self) -> GenerationRequest:
        """This p as the GenerationRequest the engine runs (fields p does not know, such as
        ones other parts of Kiln add, carry over from the request it came from)."""
        changes = {name: getattr(self, name) for name in _MIRRORED}
        for name, all_name in (("prompt", "all_prompts"), ("negative_prompt", "all_negative_prompts"),
                               ("seed", "all_seeds"), ("subseed", "all_subseeds")):
            if isinstance(changes[name], list):  # the request keeps one value; the lists go per image
                values = getattr(self, all_name) or changes[name]
                changes[name] = values[0] if values else ("" if "prompt" in name else -1)
        checkpoint = self.override_settings.get("sd_model_checkpoint") or None
        clip_skip = self.override_settings.get("CLIP_stop_at_last_layers")
        if clip_skip:
            changes["clip_skip"] = int(clip_skip)
        return dataclasses.replace(
            self.request, **changes, checkpoint=checkpoint,
            mode="img2img" if self.is_img2img else "txt2img",
            all_prompts=_list(self.all_prompts), all_negative_prompts=_list(self.all_negative_prompts),
            all_seeds=_list(self.all_seeds), all_subseeds=_list(self.all_subseeds),
            extra_generation_params=self.extra_generation_params,  # the same dict: batch hooks may add to it
            save_images=not self.do_not_save_samples, save_grid=not self.do_not_save_grid,
            script_name=None, script_args=[], alwayson_scripts={})

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


def _list(values):
    return list(values) if values is not None else None


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


def processing_for(request: GenerationRequest, runtime, control: JobControl | None = None) -> StableDiffusionProcessing:
    """The p of a job from the UI or the API."""
    cls = StableDiffusionProcessingImg2Img if request.mode == "img2img" or request.init_images \
        else StableDiffusionProcessingTxt2Img
    p = cls(request)
    p.runtime = runtime
    p.control = control or JobControl()
    p.scripts = runtime.scripts
    p.sd_model = runtime.model
    return p


def process_images(p: StableDiffusionProcessing) -> Processed:
    """Generate what p describes through the engine, with the always-on scripts' hooks
    (when p.scripts is set) and the extensions' callbacks. Called by a selectable
    script's run(), inside the running job, it runs at once."""
    from modules.scripts import ScriptHooks

    runtime = p.runtime or _runtime()
    if runtime is None:
        raise RuntimeError("process_images needs a Kiln runtime (none has loaded the scripts)")
    p.runtime = runtime
    p.setup_prompts_and_seeds()
    if p.scripts is not None:
        p.scripts.before_process(p)
        p.scripts.process(p)
    hooks = ScriptHooks(p, p.scripts, runtime.callbacks)
    result = runtime.generate(p.to_request(), p.control, job="scripts", hooks=hooks)
    p.sd_model = runtime.model
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
    from modules.files import infotext

    i = iteration * int(p.batch_size) + position_in_batch
    request = p.to_request().replace(prompt=all_prompts[i], negative_prompt=(p.all_negative_prompts or [""])[
        min(i, len(p.all_negative_prompts or [""]) - 1)])
    model = p.sd_model
    return infotext.build_infotext(request, seed=all_seeds[i], subseed=all_subseeds[i] if all_subseeds else None,
                                   model_name=model.name if model else None,
                                   model_hash=model.short_hash if model else None, width=p.width, height=p.height,
                                   extra=dict(p.extra_generation_params) | {"Version": "kiln"})


__all__ = ["StableDiffusionProcessing", "StableDiffusionProcessingTxt2Img", "StableDiffusionProcessingImg2Img",
           "Processed", "process_images", "processing_for", "fix_seed", "get_fixed_seed", "create_infotext"]
