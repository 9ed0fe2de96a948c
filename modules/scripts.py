"""A1111's `modules.scripts`: the Script class extension authors subclass, the loader
that imports `extensions/*/scripts/*.py`, and the ScriptRunner that calls scripts' hooks
from the engine's loop.

A script file is imported as its own module (a unique name per file); every `Script`
subclass defined in it is collected, and the callbacks it registers
(modules/script_callbacks.py) are remembered with its extension's name. A file that
fails to import is recorded in the ErrorLog (extension name + traceback) and loading goes
on with the next one.

Two kinds of script, as in A1111:
- selectable: `show()` returns True; picked by title in the "Script" dropdown or the API's
  `script_name`; its `run(p, *args)` replaces the normal generation (it usually calls
  `processing.process_images` itself, once or many times) and returns a `Processed`;
- always-on: `show()` returns `AlwaysVisible`; its hooks run on every generation:
  `setup`, `process`, `before_process_batch`, `process_batch`, `postprocess_batch`,
  `postprocess_image`, `postprocess`.

Every hook call is isolated: an exception is recorded in the ErrorLog (extension + hook),
that hook is skipped and the job goes on. A hook slower than script_callbacks.SLOW_S is
named in the log. This module never imports gradio: `ui()` is called by webui/ only,
which hands the components' default values back (`ScriptRunner.set_defaults`).
"""
from __future__ import annotations

import importlib.util
import logging
import re
import sys
import time
from pathlib import Path

from modules import processing, script_callbacks
from modules.extensions.discovery import ErrorLog, Extension, script_order
from modules.generation.hooks import JobControl
from modules.generation.pipeline import GenerationResult
from modules.generation.request import GenerationRequest, RequestError
from modules.processing import PostprocessImageArgs
from modules.runtime.runtime import JobRunner, Runtime

log = logging.getLogger(__name__)


class _AlwaysVisible:
    def __repr__(self) -> str:
        return "AlwaysVisible"


AlwaysVisible = _AlwaysVisible()  # what show() returns for an always-on script


class PostprocessBatchListArgs:
    def __init__(self, images):
        self.images = images


class Script:
    """The base of every script. Override what you need; every method has a default.

    Attributes Kiln sets: `filename` (the script file), `extension` (its extension's
    name), `is_txt2img` / `is_img2img` (which tab this instance serves; a script gets one
    instance per tab), `args_from` / `args_to` (its slice of `p.script_args`), `name`
    (the lower-case title), `alwayson`."""
    filename: str | None = None
    extension: str = ""
    args_from: int | None = None
    args_to: int | None = None
    alwayson = False
    is_txt2img = False
    is_img2img = False
    name: str | None = None
    group = None
    infotext_fields = None
    paste_field_names = None
    api_info = None

    def title(self) -> str:
        """The name in the Script dropdown and the API's `script_name`."""
        raise NotImplementedError

    def show(self, is_img2img: bool):
        """True: selectable in that tab; False: not shown; AlwaysVisible: always-on."""
        return True

    def ui(self, is_img2img: bool):
        """Build Gradio components (import gradio in your script) and return them as a
        list: their values are passed to run / the hooks as *args, in this order."""
        return []

    def run(self, p, *args):
        """Selectable scripts: do the job (usually via processing.process_images(p)) and
        return a processing.Processed."""
        return None

    def setup(self, p, *args):
        """Always-on: first, before the prompts and seeds are set up."""

    def before_process(self, p, *args):
        """Always-on: before `process`."""

    def process(self, p, *args):
        """Always-on: before anything is generated; may change p.prompt, p.all_prompts,
        p.all_seeds, p.extra_generation_params (written into the infotext)."""

    def before_process_batch(self, p, *args, **kwargs):
        """Always-on: before a batch; kwargs: batch_number, prompts, seeds, subseeds.
        Changing p.prompts changes this batch's prompts."""

    def process_batch(self, p, *args, **kwargs):
        """Always-on: right after before_process_batch, same kwargs."""

    def postprocess_batch(self, p, *args, **kwargs):
        """Always-on: after a batch is decoded; kwargs: images (a tensor, batch x 3 x h x w,
        0..1, may be changed in place), batch_number."""

    def postprocess_image(self, p, pp: PostprocessImageArgs, *args):
        """Always-on: each image before it is saved; set pp.image to replace it."""

    def postprocess(self, p, processed, *args):
        """Always-on: after everything; `processed` is the Processed the caller gets."""

    def describe(self) -> str:
        return ""

    def elem_id(self, item_id: str) -> str:
        """A1111's element ids: txt2img_script_<title>_<item_id>."""
        tab = "img2img" if self.is_img2img else "txt2img"
        title = re.sub(r"[^a-z_0-9]", "", re.sub(r"\s", "_", (self.name or "").lower()))
        return f"{tab}_script_{title}_{item_id}"


def basedir() -> str:
    """The folder of the extension whose script is being loaded (call it at import time);
    Kiln's folder otherwise."""
    loading = script_callbacks.registry.loading
    return str(loading.basedir) if loading else str(Path(__file__).resolve().parent.parent)


# ---- loading ---------------------------------------------------------------------------
def _module_name(extension: str, path: Path) -> str:
    clean = re.sub(r"\W", "_", f"{extension}_{path.stem}")
    return f"kiln_scripts.{clean}"


def _import(path: Path, name: str, extension_dir: Path):
    """Import one script file as module `name`. The extension's folder is on sys.path
    while it imports (A1111 does the same), so a script can import its own helpers."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    sys.path.insert(0, str(extension_dir))
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    finally:
        try:
            sys.path.remove(str(extension_dir))
        except ValueError:
            pass
    return module


def load_scripts(extensions: list[Extension], errors: ErrorLog,
                 registry: script_callbacks.CallbackRegistry) -> "ScriptRunner":
    """Import every script file of `extensions` (the active ones, in load order; script
    order from metadata.ini as A1111); callbacks go to `registry`, failures to `errors`."""
    classes: list[tuple[type, Path, str]] = []
    order, problems = script_order([e for e in extensions if e.enabled])
    for problem in problems:
        errors.add(problem.extension, problem.where, problem.message)
    for ext, path in order:
        registry.loading = script_callbacks.Loading(path, ext.name, ext.path)
        started = time.perf_counter()
        try:
            module = _import(path, _module_name(ext.name, path), ext.path)
        except Exception:
            errors.report(ext.name, f"import scripts/{path.name}")
            registry.remove_script(str(path))  # a half-imported file registers nothing
            continue
        finally:
            registry.loading = None
            script_callbacks.slow(ext.name, f"import scripts/{path.name}", time.perf_counter() - started)
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, Script) and value is not Script \
                    and value.__module__ == module.__name__:
                classes.append((value, path, ext.name))
    return ScriptRunner(classes, errors)


# ---- running ---------------------------------------------------------------------------
class ScriptRunner:
    """The loaded scripts, one instance per tab (is_img2img False / True), and their
    hooks called in load order."""

    def __init__(self, classes: list[tuple[type, Path, str]] = (), errors: ErrorLog | None = None):
        self.errors = errors or ErrorLog()
        self.scripts: dict[bool, list[Script]] = {False: [], True: []}
        self.selectable: dict[bool, list[Script]] = {False: [], True: []}
        self.alwayson: dict[bool, list[Script]] = {False: [], True: []}
        self.defaults: dict[int, list] = {}  # id(script) -> its ui() components' values (webui/ fills it)
        for is_img2img in (False, True):
            for cls, path, extension in classes:
                try:
                    script = cls()
                    script.filename, script.extension = str(path), extension
                    script.is_img2img, script.is_txt2img = is_img2img, not is_img2img
                    script.name = str(script.title()).lower()
                    visible = script.show(is_img2img)
                except Exception:
                    self.errors.report(extension, f"{cls.__name__}.show")
                    continue
                if visible is AlwaysVisible:
                    script.alwayson = True
                    self.alwayson[is_img2img].append(script)
                elif visible:
                    self.selectable[is_img2img].append(script)
                else:
                    continue
                self.scripts[is_img2img].append(script)

    # ---- looking up ----------------------------------------------------------------
    def titles(self, is_img2img: bool) -> list[str]:
        """The selectable scripts' titles (the Script dropdown's choices after None)."""
        return [self.title(s) for s in self.selectable[is_img2img]]

    def title(self, script: Script) -> str:
        try:
            return str(script.title())
        except Exception:
            return script.name or Path(script.filename or "?").stem

    def find(self, name: str, is_img2img: bool, alwayson: bool = False) -> Script | None:
        """A script by title, any case (A1111's API matches lower-case titles)."""
        wanted = (name or "").strip().lower()
        for script in (self.alwayson if alwayson else self.selectable)[is_img2img]:
            if script.name == wanted:
                return script
        return None

    def validate(self, request: GenerationRequest) -> None:
        """RequestError (a 422 in the API) for a script name that is not loaded."""
        is_img2img = request.mode == "img2img" or bool(request.init_images)
        chosen = request.scripts
        if chosen.selected and self.find(chosen.name, is_img2img) is None:
            raise RequestError("script_name", f"Script '{chosen.name}' not found")
        if not isinstance(chosen.alwayson, dict):
            raise RequestError("alwayson_scripts", "must be an object {title: {args: [...]}}")
        for name, value in chosen.alwayson.items():
            if self.find(name, is_img2img, alwayson=True) is None:
                raise RequestError("alwayson_scripts", f"always on script {name} not found")
            if not isinstance(value, dict) or not isinstance(value.get("args", []), list):
                raise RequestError("alwayson_scripts", f"{name}: must be {{\"args\": [...]}}")

    def set_defaults(self, script: Script, values: list) -> None:
        self.defaults[id(script)] = list(values)

    # ---- arguments -----------------------------------------------------------------
    def bind_args(self, p, request: GenerationRequest) -> Script | None:
        """Lay out A1111's flat `p.script_args` (always-on scripts' args in load order,
        then the selected script's) and set each script's args_from/args_to. Arguments not
        sent take the script's ui() defaults. Returns the selected script, if any."""
        is_img2img = p.is_img2img
        chosen = request.scripts
        sent = {str(k).lower(): (v or {}).get("args", []) for k, v in (chosen.alwayson or {}).items()}
        flat: list = []
        for script in self.alwayson[is_img2img]:
            values = list(self.defaults.get(id(script), []))
            given = list(sent.get(script.name, []))
            values[:len(given)] = given
            script.args_from, script.args_to = len(flat), len(flat) + len(values)
            flat += values
        selected = None
        if chosen.selected:
            selected = self.find(chosen.name, is_img2img)
            if selected is None:
                raise RequestError("script_name", f"Script '{chosen.name}' not found")
            values = list(self.defaults.get(id(selected), []))
            given = list(chosen.args or [])
            values[:len(given)] = given
            selected.args_from, selected.args_to = len(flat), len(flat) + len(values)
            flat += values
        p.script_args = flat
        return selected

    # ---- hooks ---------------------------------------------------------------------
    def _call(self, script: Script, hook: str, *args, **kwargs):
        started = time.perf_counter()
        try:
            return getattr(script, hook)(*args, **kwargs)
        except Exception:
            self.errors.report(script.extension, f"{hook} ({self.title(script)})")
            return None
        finally:
            script_callbacks.slow(script.extension, f"{hook} ({self.title(script)})", time.perf_counter() - started)

    def _each(self, hook: str, p, *args, **kwargs) -> None:
        for script in self.alwayson[p.is_img2img]:
            self._call(script, hook, p, *args, *p.script_args[script.args_from:script.args_to], **kwargs)

    def setup(self, p) -> None:
        self._each("setup", p)

    def before_process(self, p) -> None:
        self._each("before_process", p)

    def process(self, p) -> None:
        self._each("process", p)

    def before_process_batch(self, p, **kwargs) -> None:
        self._each("before_process_batch", p, **kwargs)

    def process_batch(self, p, **kwargs) -> None:
        self._each("process_batch", p, **kwargs)

    def postprocess_batch(self, p, images, **kwargs) -> None:
        self._each("postprocess_batch", p, images=images, **kwargs)

    def postprocess_image(self, p, pp: PostprocessImageArgs) -> None:
        self._each("postprocess_image", p, pp)

    def postprocess(self, p, processed) -> None:
        self._each("postprocess", p, processed)

    def run(self, p, script: Script):
        """The selected script's run(). Its failure is recorded and fails the job (there
        is nothing else to return). Not in the timing log: run() is the job itself."""
        try:
            return script.run(p, *p.script_args[script.args_from:script.args_to])
        except Exception as e:
            if isinstance(e, RequestError):  # a bad value in the script's arguments: the user's to fix
                raise
            self.errors.report(script.extension, f"run ({self.title(script)})")
            raise ScriptError(f"script {self.title(script)!r} failed: {type(e).__name__}: {e}") from e


class ScriptError(RuntimeError):
    """A selectable script's run() raised."""


class ScriptHost(JobRunner):
    """The A1111 edge attached to one runtime: the active extensions' scripts and
    callbacks, and the job runner that runs a job the way A1111 does: the selected
    script's run(), or process_images, with the always-on scripts' hooks."""

    def __init__(self, runtime: Runtime):
        self.runtime = runtime
        errors = runtime.extensions.errors
        self.callbacks = script_callbacks.CallbackRegistry(errors, runtime=runtime)
        script_callbacks.install(self.callbacks)  # A1111's module-level on_* functions register here
        self.runner = load_scripts(runtime.extensions.active, errors, self.callbacks)

    def validate(self, request: GenerationRequest) -> None:
        self.runner.validate(request)

    def run(self, runtime: Runtime, request: GenerationRequest, control: JobControl) -> GenerationResult:
        p = processing.processing_for(request, runtime, control, self.runner)
        selected = self.runner.bind_args(p, request)
        self.runner.setup(p)
        processed = self.runner.run(p, selected) if selected is not None else None
        if processed is None:
            processed = processing.process_images(p)
        return processed.to_result()

    def model_loaded(self, model) -> None:
        self.callbacks.model_loaded(model)

    def unloaded(self) -> None:
        self.callbacks.script_unloaded()


def attach(runtime: Runtime) -> ScriptHost:
    """Hand `runtime` to the A1111 edge (at start-up): load the active extensions'
    scripts and callbacks, make them the runtime's job runner, and let `shared`,
    `processing` and the on_* functions reach it. Attaching again (a reload) tells the
    old scripts first (on_script_unloaded)."""
    old = runtime.job_runner
    if isinstance(old, ScriptHost):
        old.unloaded()
        runtime.checkpoints.on_loaded.remove(old.model_loaded)
        runtime.extensions.before_restart.remove(old.unloaded)
        runtime.extensions.scan()  # a reload sees extensions added or enabled meanwhile
    runtime.settings.declared = {}  # the scripts declare their settings again as they load
    host = ScriptHost(runtime)
    runtime.job_runner = host
    runtime.checkpoints.on_loaded.append(host.model_loaded)
    runtime.extensions.before_restart.append(host.unloaded)
    return host


def host_of(runtime: Runtime) -> ScriptHost:
    """The script host attached to `runtime` (the faces' way to the scripts and callbacks)."""
    host = runtime.job_runner
    if not isinstance(host, ScriptHost):
        raise RuntimeError("no A1111 script host is attached to this runtime (modules.scripts.attach)")
    return host


__all__ = ["Script", "AlwaysVisible", "PostprocessImageArgs", "PostprocessBatchListArgs", "basedir", "ScriptRunner",
           "ScriptError", "ScriptHost", "load_scripts", "attach", "host_of", "RequestError"]
