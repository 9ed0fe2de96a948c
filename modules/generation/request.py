"""GenerationRequest: the one description of a job, built by the UI and the API alike.

Field names follow A1111's API (StableDiffusionProcessing) so that the API can build it
from a JSON body by name, the infotext can round-trip it, and extensions see familiar
names. Validation lives here so both faces give the same error for the same mistake.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from modules.text import prompt_syntax


class RequestError(ValueError):
    """A bad value in a request: names the field so the UI and API can say which."""

    def __init__(self, field_name: str, message: str):
        super().__init__(f"{field_name}: {message}")
        self.field = field_name
        self.message = message


@dataclass(frozen=True)
class Limits:
    """Settings that bound one request; the defaults keep a CPU server responsive."""
    max_pixels: int = 2048 * 2048
    max_steps: int = 150
    max_batch_size: int = 8
    max_batch_count: int = 100


@dataclass
class PerImage:
    """One value per image of the job (A1111's p.all_prompts, all_seeds ...), as a script
    sets them (a prompt matrix varies the prompt, X/Y/Z plot the seed). The job makes as
    many images as there are prompts (at most batch_size x n_iter)."""
    prompts: list[str]
    negative_prompts: list[str]
    seeds: list[int]
    subseeds: list[int]


@dataclass
class ScriptSelection:
    """Which add-on scripts a job runs around the engine: A1111's `script_name`,
    `script_args` and `alwayson_scripts`. The engine's loop never reads it; the job
    runner does (the A1111 script host in modules/scripts.py checks and runs them)."""
    name: str | None = None  # the selectable script (its title, any case); None: none
    args: list = field(default_factory=list)  # its arguments, in its ui() order
    alwayson: dict = field(default_factory=dict)  # {"<title>": {"args": [...]}}

    @property
    def selected(self) -> bool:
        return bool(self.name) and self.name.lower() != "none"


@dataclass
class GenerationRequest:
    prompt: str = ""
    negative_prompt: str = ""
    steps: int = 20
    sampler_name: str = "Euler a"
    scheduler: str = "Automatic"  # A1111's "Schedule type"
    cfg_scale: float = 7.0
    width: int | None = None  # None: the model's native size
    height: int | None = None
    seed: int = -1
    subseed: int = -1
    subseed_strength: float = 0.0
    batch_size: int = 1
    n_iter: int = 1  # A1111's "batch count"
    clip_skip: int = 1
    styles: list[str] = field(default_factory=list)
    checkpoint: str | None = None  # None: the loaded model
    mode: str = "txt2img"  # "img2img" when init_images is given
    save_images: bool = True
    # img2img / inpainting (A1111's API names)
    init_images: list = field(default_factory=list)  # PIL images
    mask: object = None  # PIL image; white = repaint
    denoising_strength: float = 0.75
    resize_mode: int = 0  # img2img.RESIZE_MODES
    mask_blur: int = 4
    inpainting_fill: int = 1  # img2img.MASKED_CONTENT: fill, original, latent noise, latent nothing
    inpaint_full_res: bool = False  # "Only masked"
    inpaint_full_res_padding: int = 32
    inpainting_mask_invert: int = 0  # 1: inpaint not masked
    # settings for this request only (A1111's override_settings: option name -> value; the
    # runtime applies the text-encoding ones, see Runtime.text_settings)
    override_settings: dict = field(default_factory=dict)
    # the prompts as typed, before styles were merged in (A1111 reports these in `info`);
    # None: no styles were applied
    prompt_before_styles: str | None = None
    negative_prompt_before_styles: str | None = None
    per_image: PerImage | None = None  # one prompt / seed per image, set by a script; None: from prompt / seed
    infotext_params: dict = field(default_factory=dict)  # more infotext items for every image, in order
    save_grid: bool = True  # False: no grid for this request (A1111's do_not_save_grid)
    scripts: ScriptSelection = field(default_factory=ScriptSelection)

    def replace(self, **changes) -> "GenerationRequest":
        return dataclasses.replace(self, **changes)

    def validate(self, limits: Limits = Limits()) -> "GenerationRequest":
        """Raise RequestError for the first bad field; return self for chaining."""
        for name in ("prompt", "negative_prompt"):
            text = getattr(self, name)
            if not isinstance(text, str):
                raise RequestError(name, "must be text")
            try:
                text.encode("utf-8")
                prompt_syntax.check(text)  # bounded parse cost: checked before the job queues
            except UnicodeEncodeError:
                raise RequestError(name, "holds a lone surrogate (such as \\ud800), which is not text") from None
            except ValueError as e:
                raise RequestError(name, str(e)) from None
        if not 1 <= int(self.steps) <= limits.max_steps:
            raise RequestError("steps", f"must be between 1 and {limits.max_steps}, got {self.steps}")
        if not 0 <= float(self.cfg_scale) <= 100:
            raise RequestError("cfg_scale", f"must be between 0 and 100, got {self.cfg_scale}")
        for name in ("width", "height"):
            value = getattr(self, name)
            if value is not None and (int(value) < 8 or int(value) % 8):
                raise RequestError(name, f"must be a positive multiple of 8, got {value}")
        if self.width and self.height and self.width * self.height > limits.max_pixels:
            raise RequestError("width", f"{self.width}x{self.height} is more than the limit of {limits.max_pixels} pixels")
        if not 1 <= int(self.batch_size) <= limits.max_batch_size:
            raise RequestError("batch_size", f"must be between 1 and {limits.max_batch_size}, got {self.batch_size}")
        if not 1 <= int(self.n_iter) <= limits.max_batch_count:
            raise RequestError("n_iter", f"must be between 1 and {limits.max_batch_count}, got {self.n_iter}")
        if not 0 <= float(self.subseed_strength) <= 1:
            raise RequestError("subseed_strength", f"must be between 0 and 1, got {self.subseed_strength}")
        if self.init_images or self.mode == "img2img":
            if not self.init_images:
                raise RequestError("init_images", "img2img needs an init image")
            if not 0 <= float(self.denoising_strength) <= 1:
                raise RequestError("denoising_strength", f"must be between 0 and 1, got {self.denoising_strength}")
            if int(self.resize_mode) not in range(4):
                raise RequestError("resize_mode", f"must be 0-3, got {self.resize_mode}")
            if int(self.inpainting_fill) not in range(4):
                raise RequestError("inpainting_fill", f"must be 0-3, got {self.inpainting_fill}")
            if not 0 <= int(self.mask_blur) <= 256:
                raise RequestError("mask_blur", f"must be between 0 and 256, got {self.mask_blur}")
            for i, image in enumerate(self.init_images):
                if getattr(image, "width", 0) * getattr(image, "height", 0) > limits.max_pixels:
                    raise RequestError("init_images", f"image {i} is {image.width}x{image.height}: more than the limit "
                                                      f"of {limits.max_pixels} pixels")
        if not 1 <= int(self.clip_skip) <= 12:
            raise RequestError("clip_skip", f"must be between 1 and 12, got {self.clip_skip}")
        return self
