"""A1111's `modules.script_callbacks`: extensions register functions to be called at
fixed points (app start, UI build, every sampler step, around image saving, model load).

A1111's API is module-level functions (`script_callbacks.on_cfg_denoiser(fn)`), so the
functions need one registry they can reach: `registry`, a `CallbackRegistry` that the
edge's script host creates and installs (`install`) when the app hands it the runtime
(modules/scripts.py's attach). It is the one piece of state of the A1111 edge: `shared`
and `processing` reach the runtime through it. The engine never imports this module:
the script host forwards the engine's events (model loaded, restart) to it, and the
loop's Hooks (modules/processing.py's ScriptHooks) dispatch per-step and saving events.

Each callback call is isolated: an exception is recorded in the ErrorLog under the
extension's name and the callback's event, the callback is skipped, the job goes on. A
callback slower than `SLOW_S` is named in the log.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from modules.extensions.discovery import ErrorLog

log = logging.getLogger(__name__)

SLOW_S = 1.0  # a hook or callback slower than this is named in the log (a warning)

EVENTS = ("app_started", "ui_tabs", "ui_settings", "cfg_denoiser", "before_image_saved", "image_saved",
          "model_loaded", "script_unloaded")


@dataclass
class CFGDenoiserParams:
    """What an `on_cfg_denoiser` callback gets, once per sampler step before the UNet call.
    Replacing `x`, `text_cond` or `text_uncond` (tensors of the same shapes) changes what
    this step denoises with."""
    x: Any  # the latents, (batch, channels, h, w)
    image_cond: Any  # inpainting models' extra input channels, or None
    sigma: Any  # the noise level of this step
    sampling_step: int  # 0-based
    total_sampling_steps: int
    text_cond: Any  # the prompt's cross-attention context, (batch, tokens, width)
    text_uncond: Any  # the negative prompt's


@dataclass
class ImageSaveParams:
    """What `on_before_image_saved` / `on_image_saved` callbacks get. Before saving, a
    callback may replace `image` or change `pnginfo["parameters"]` (the infotext)."""
    image: Any  # PIL image
    p: Any  # the StableDiffusionProcessing of the job (None for images saved outside one)
    filename: str  # before saving: the folder; after: the file written
    pnginfo: dict = field(default_factory=dict)  # {"parameters": infotext}


@dataclass
class Callback:
    fn: Callable
    script: str  # the script file that registered it ("" when registered outside loading)
    extension: str  # its extension's name


@dataclass
class Loading:
    """The script file being imported (what basedir() and the callbacks' owners read)."""
    path: Path
    extension: str
    basedir: Path


class CallbackRegistry:
    """Every callback of the loaded extensions, by event, in registration order."""

    def __init__(self, errors: ErrorLog | None = None, runtime=None):
        self.errors = errors or ErrorLog()
        self.runtime = runtime  # the runtime the edge was handed (modules/shared.py reads it)
        self.callbacks: dict[str, list[Callback]] = {event: [] for event in EVENTS}
        self.loading: Loading | None = None

    def add(self, event: str, fn: Callable) -> None:
        loading = self.loading
        self.callbacks[event].append(Callback(fn, str(loading.path) if loading else "",
                                              loading.extension if loading else ""))

    def remove_script(self, script: str) -> None:
        for event in EVENTS:
            self.callbacks[event] = [c for c in self.callbacks[event] if c.script != script]

    def has(self, event: str) -> bool:
        return bool(self.callbacks[event])

    def call(self, event: str, *args) -> list:
        """Call every callback of `event`; returns their results (failed ones left out)."""
        results = []
        for cb in list(self.callbacks[event]):
            started = time.perf_counter()
            try:
                results.append(cb.fn(*args))
            except Exception:
                self.errors.report(cb.extension, f"on_{event} ({Path(cb.script).name or cb.fn.__name__})")
            finally:
                slow(cb.extension, f"on_{event}", time.perf_counter() - started)
        return results

    # named dispatchers, for readers of the Runtime and webui/
    def app_started(self, demo, app) -> None:
        self.call("app_started", demo, app)

    def ui_tabs(self) -> list[tuple[Any, str, str]]:
        """Every (blocks, title, elem_id) the `on_ui_tabs` callbacks return."""
        return [tab for result in self.call("ui_tabs") for tab in (result or [])]

    def ui_settings(self) -> None:
        self.call("ui_settings")

    def cfg_denoiser(self, params: CFGDenoiserParams) -> None:
        self.call("cfg_denoiser", params)

    def before_image_saved(self, params: ImageSaveParams) -> None:
        self.call("before_image_saved", params)

    def image_saved(self, params: ImageSaveParams) -> None:
        self.call("image_saved", params)

    def model_loaded(self, sd_model) -> None:
        self.call("model_loaded", sd_model)

    def script_unloaded(self) -> None:
        self.call("script_unloaded")


def slow(extension: str, hook: str, seconds: float) -> None:
    """The timing log: name a hook that held the job up."""
    if seconds > SLOW_S:
        log.warning("slow extension hook: %s %s took %.1f s", extension or "?", hook, seconds)


registry = CallbackRegistry()  # replaced when the app hands the edge its runtime (scripts.attach)


def install(new: CallbackRegistry) -> None:
    """Make `new` the registry the module-level functions below register into."""
    global registry
    registry = new


# ---- A1111's registration functions ------------------------------------------------------
def on_app_started(callback: Callable) -> None:
    """`callback(demo, app)` once the server is up: `demo` the Gradio Blocks (None with
    --nowebui), `app` the FastAPI app (add routes here)."""
    registry.add("app_started", callback)


def on_ui_tabs(callback: Callable) -> None:
    """`callback()` returns a list of `(gr.Blocks, title, elem_id)`: each becomes a tab."""
    registry.add("ui_tabs", callback)


def on_ui_settings(callback: Callable) -> None:
    """`callback()` while the page is built: add options with shared.opts.add_option."""
    registry.add("ui_settings", callback)


def on_cfg_denoiser(callback: Callable) -> None:
    """`callback(params: CFGDenoiserParams)` every sampler step, before the UNet call."""
    registry.add("cfg_denoiser", callback)


def on_before_image_saved(callback: Callable) -> None:
    """`callback(params: ImageSaveParams)` before a generated image or grid is written."""
    registry.add("before_image_saved", callback)


def on_image_saved(callback: Callable) -> None:
    """`callback(params: ImageSaveParams)` after it is written (`params.filename` is the file)."""
    registry.add("image_saved", callback)


def on_model_loaded(callback: Callable) -> None:
    """`callback(sd_model)` after a checkpoint is loaded (Kiln's LoadedModel)."""
    registry.add("model_loaded", callback)


def on_script_unloaded(callback: Callable) -> None:
    """`callback()` before the scripts are reloaded (free what the script holds)."""
    registry.add("script_unloaded", callback)


def remove_current_script_callbacks() -> None:
    """Drop every callback the script file now being loaded registered (A1111 scripts call
    this at the top so that a reload does not register them twice)."""
    if registry.loading is not None:
        registry.remove_script(str(registry.loading.path))


__all__ = ["CFGDenoiserParams", "ImageSaveParams", "CallbackRegistry", "registry", "install", "on_app_started",
           "on_ui_tabs", "on_ui_settings", "on_cfg_denoiser", "on_before_image_saved", "on_image_saved",
           "on_model_loaded", "on_script_unloaded", "remove_current_script_callbacks"]
