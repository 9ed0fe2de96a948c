"""The runtime: the one place that holds global mutable state.

Options, model folders, the loaded model, and the job in progress live here, and the UI
and the API reach them through one Runtime object passed to them explicitly.
"""
from __future__ import annotations

import collections
import dataclasses
import logging
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from modules.text import conditioning, styles
from modules.device import devices, memory
from modules.extensions import git as extension_git, install as extension_install, discovery as extensions
from modules.models import networks as extra_networks
from modules.runtime import option_rules, previews
from modules.files import model_folders as paths
from modules.generation import pipeline as processing
from modules import script_callbacks, scripts
from modules.device.devices import DeviceConfig, apply_attention
from modules.runtime.jobs import JobQueue, Progress, Task
from modules.models import embeddings as textual_inversion
from modules.models.detect import CheckpointError
from modules.models.loader import LoadedModel, load_checkpoint, read_state_dict
from modules.runtime.options import Options
from modules.generation.request import GenerationRequest, Limits, RequestError

log = logging.getLogger(__name__)

# LoadedModel.extras entries tied to the modules (hooks, module tables), not to the weights:
# a checkpoint switch that reuses the modules keeps them. LoRA backups ("lora") are the old
# checkpoint's weights and are dropped (the new weights overwrite the merged ones).
MODULE_EXTRAS = ("offloader", "embeddings", "lora_layers")
DEMO_CHECKPOINT = "kiln-demo-shapes.safetensors"
REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class RuntimeConfig:
    data_dir: Path
    device: DeviceConfig
    ckpt: str | None = None  # --ckpt: the checkpoint to open first
    ckpt_dirs: list[Path] = field(default_factory=list)
    lora_dirs: list[Path] = field(default_factory=list)  # --lora-dir
    embeddings_dirs: list[Path] = field(default_factory=list)  # --embeddings-dir
    comfyui_dir: Path | None = None
    extra_model_paths: list[Path] = field(default_factory=list)
    # extensions may be installed, updated, enabled from the page (False when the server
    # listens beyond localhost without --enable-insecure-extension-access)
    extension_access: bool = True
    disable_all_extensions: str | None = None  # --disable-all-extensions / --disable-extra-extensions override the setting
    restart_command: list[str] | None = None  # argv that starts this server again ("Apply and restart UI")


class Runtime:
    def __init__(self, config: RuntimeConfig):
        self.config = config
        self.data_dir = Path(config.data_dir)
        self.folders = paths.default_folders(self.data_dir)
        # the demo model ships in the repo: list it also when the data dir is elsewhere
        paths.add_ckpt_dir(self.folders, REPO_ROOT / "models" / "Stable-diffusion")
        for d in config.ckpt_dirs:
            paths.add_ckpt_dir(self.folders, d)
        for d in config.lora_dirs:
            paths.add_lora_dir(self.folders, d)
        for d in config.embeddings_dirs:
            paths.add_embeddings_dir(self.folders, d)
        if config.comfyui_dir:
            paths.add_comfyui_dir(self.folders, config.comfyui_dir)
        for yaml_file in config.extra_model_paths:
            paths.load_extra_model_paths(self.folders, yaml_file)
        self.options_path = self.data_dir / "config.json"
        self.options = Options.load(self.options_path)
        self.cache_dir = self.data_dir / ".cache"
        self.hashes = paths.HashCache(self.data_dir / "cache.json")
        self.networks = extra_networks.Networks(self.folders)  # LoRAs and embeddings
        self.device = config.device
        self.model: LoadedModel | None = None
        self.checkpoint_states: collections.OrderedDict = collections.OrderedDict()  # sd_checkpoint_cache
        self.inject_fault = None  # tests: a callable run at every sampling step (e.g. raising OutOfMemoryError)
        self.gpu = threading.Lock()  # one job on the device at a time (the worker holds it)
        self.jobs = JobQueue(lock=self.gpu)  # every device job, from the UI and the API, in order
        self.progress = Progress()  # the running generation (what /progress and the UI read)
        self.control: processing.JobControl | None = None
        self.last_load_error: str | None = None
        self.unloaded_name: str | None = None  # what unload_checkpoint freed (reload_checkpoint loads it)
        self.extension_errors = extensions.ErrorLog()  # what failed in which extension (the Extensions tab shows it)
        self.extensions: list[extensions.Extension] = []  # every installed one, with its enabled state
        self.active_extensions: list[extensions.Extension] = []  # the ones that load, in load order
        self.restart_pending = False  # installed or enabled/disabled something since the start
        # extensions' settings, declared with shared.opts.add_option: key -> OptionInfo (A1111's
        # opts.data_labels); the Settings tab shows them and set_options checks their values
        self.extension_options: dict[str, object] = {}
        # the active extensions' callbacks and scripts (modules/scripts.py), filled by load_extensions
        self.callbacks = script_callbacks.CallbackRegistry(self.extension_errors, runtime=self)
        self.scripts = scripts.ScriptRunner([], self.extension_errors)
        self.load_extensions()

    # ---- extensions ----------------------------------------------------------------
    def load_extensions(self) -> None:
        """Find the extensions and which of them load, in load order (metadata.ini); load
        order problems and failed install.py runs go to the error log. Then load the
        active ones' scripts into one ScriptRunner; their callbacks go to a fresh registry,
        installed as script_callbacks.registry for A1111's module-level functions (a
        reload tells the old scripts first: on_script_unloaded)."""
        self.extensions, self.active_extensions = extensions.load(
            REPO_ROOT, self.data_dir, self.options.disabled_extensions, self.disable_all_extensions,
            self.extension_errors)
        extension_install.report_failed_installs(self.data_dir, self.extension_errors,
                                                 {e.name for e in self.active_extensions})
        self.callbacks.script_unloaded()
        self.extension_options = {}  # the scripts declare them again as they load
        self.callbacks = script_callbacks.CallbackRegistry(self.extension_errors, runtime=self)
        script_callbacks.install(self.callbacks)
        self.scripts = scripts.load_scripts(self.active_extensions, self.extension_errors, self.callbacks)

    # ---- checkpoints -------------------------------------------------------------
    def list_checkpoints(self) -> list[paths.ModelFile]:
        return paths.list_models(self.folders, "checkpoints", (".safetensors", ".ckpt"))

    def title(self, mf: paths.ModelFile) -> str:
        """`name [hash]` once the hash is known (hashing every big file up front is slow)."""
        return paths.checkpoint_title(mf, (self.hashes.cached_sha256(mf.path) or "")[:10] or None)

    def resolve_checkpoint(self, name: str) -> paths.ModelFile:
        """Accept a name, a title `name [hash]`, a file stem or a short hash (A1111 does)."""
        wanted = name.strip()
        bare = wanted.split(" [", 1)[0]
        files = self.list_checkpoints()
        for mf in files:
            if bare in (mf.name, mf.stem, Path(mf.name).name) or wanted == self.title(mf):
                return mf
        for mf in files:
            cached = self.hashes.cached_sha256(mf.path)
            if cached and len(bare) >= 8 and cached.startswith(bare.lower()):
                return mf
        raise CheckpointError(f"checkpoint not found: {name!r} (have: {', '.join(f.name for f in files) or 'none'})")

    def default_checkpoint(self) -> paths.ModelFile | None:
        for wanted in (self.config.ckpt, self.options.sd_model_checkpoint, DEMO_CHECKPOINT):
            if wanted:
                try:
                    return self.resolve_checkpoint(wanted)
                except CheckpointError:
                    continue
        files = self.list_checkpoints()
        return files[0] if files else None

    def load_model(self, name: str | None = None) -> LoadedModel:
        """Load (or keep) a checkpoint. On any failure the previous model stays loaded and
        a CheckpointError says why."""
        mf = self.resolve_checkpoint(name) if name else self.default_checkpoint()
        if mf is None:
            raise CheckpointError("no checkpoints found: put a .safetensors file in models/Stable-diffusion")
        if self.model is not None and Path(self.model.path) == Path(mf.path):
            return self.model
        started = time.time()
        try:
            short = self.hashes.short_hash(mf.path)
            reuse = self.model
            offload = self.device.memory != "normal"  # built in RAM; parts move to the GPU as they run
            model = load_checkpoint(mf.path, name=mf.name, short_hash=short,
                                    device=torch.device("cpu") if offload else self.device.device,
                                    dtype=self.device.dtype, cache_dir=self.cache_dir,
                                    default_prediction=self.options.default_prediction_type, reuse=reuse,
                                    state=self._cached_state(mf.path))
            if reuse is None or model.unet is not reuse.unet:  # freshly built modules (not reused)
                self._prepare(model)
            else:  # the same modules: what is tied to them carries over, what is tied to the old weights does not
                model.extras.update({k: v for k, v in reuse.extras.items() if k in MODULE_EXTRAS})
            model.device = self.device.device
        except CheckpointError as e:
            self.last_load_error = str(e)
            raise
        except Exception as e:  # anything else a damaged file can raise: still a clear message
            self.last_load_error = f"{mf.name}: cannot load ({type(e).__name__}: {e})"
            log.exception("loading %s failed", mf.name)
            raise CheckpointError(self.last_load_error) from None
        self.model = model
        self.last_load_error = None
        log.info("loaded %s (%s) in %.1fs", model.title, model.info.title, time.time() - started)
        self.callbacks.model_loaded(model)
        return model

    def _prepare(self, model: LoadedModel) -> None:
        """Speed and memory settings on freshly built modules (reused ones keep theirs)."""
        apply_attention(model, self.device.attention)
        devices.optimize(model, channels_last=bool(self.options.channels_last), compile=self.device.compile)
        if self.device.memory != "normal":
            model.extras["offloader"] = memory.set_memory_mode(model, self.device.memory, self.device.device)

    def _cached_state(self, path: Path):
        """The checkpoint RAM cache (option sd_checkpoint_cache, A1111's name): the file
        contents of the N most recently loaded checkpoints, so switching back skips the
        disk. None when the cache is off (the loader reads the file itself)."""
        size = max(0, int(self.options.sd_checkpoint_cache or 0))
        cache = self.checkpoint_states
        key = str(Path(path).resolve())
        if size == 0:
            cache.clear()
            return None
        if key in cache:
            cache.move_to_end(key)
            return cache[key]
        cache[key] = read_state_dict(Path(path))
        while len(cache) > size:
            cache.popitem(last=False)
        return cache[key]

    def switch_checkpoint(self, name: str) -> LoadedModel:
        """Load through the job queue (never under a running job) and remember the choice."""
        model = self.jobs.run(lambda: self.load_model(name), name="load checkpoint")
        self.options.sd_model_checkpoint = model.name
        self.save_options()
        return model

    def unload_checkpoint(self) -> None:
        """Free the loaded model (through the queue); the next job loads it again."""
        def unload():
            if self.model is not None:
                self.unloaded_name = self.model.name
            self.model = None
            import gc

            import torch
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()

        self.jobs.run(unload, name="unload checkpoint")

    def reload_checkpoint(self) -> LoadedModel:
        """Load the chosen checkpoint again (after unload_checkpoint)."""
        def reload():
            return self.load_model(self.model.name if self.model else self.unloaded_name)

        return self.jobs.run(reload, name="load checkpoint")

    def save_options(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.options.save(self.options_path)

    # ---- settings ------------------------------------------------------------------
    def set_options(self, values: dict) -> dict[str, tuple]:
        """Change settings (A1111's names) and save them: the one way the API, the Settings
        tab and the quick settings change them. Every value is checked before any is
        applied, so a bad one raises OptionError (a checkpoint that is not there,
        CheckpointError) and changes nothing. A new sd_model_checkpoint is loaded first,
        through the job queue. Returns name -> (old value, new value) of what changed."""
        declared = {key: getattr(info, "default", None) for key, info in self.extension_options.items()}
        change = option_rules.check(self.options, values, declared)
        changed: dict[str, tuple] = {}
        if change.checkpoint is not None:
            name = self.resolve_checkpoint(change.checkpoint).name
            before = self.options.sd_model_checkpoint
            if name != (self.model.name if self.model else None) or before != name:
                self.switch_checkpoint(name)
            if before != self.options.sd_model_checkpoint:
                changed["sd_model_checkpoint"] = (before, self.options.sd_model_checkpoint)
        for key, value in change.fields.items():
            before = getattr(self.options, key)
            if before != value:
                changed[key] = (before, value)
            setattr(self.options, key, value)
        for key, value in change.extra.items():
            before = self.options.extra.get(key, declared.get(key))
            if before != value:
                changed[key] = (before, value)
            self.options.extra[key] = value
        self.save_options()
        return changed

    def option_value(self, key: str):
        """A setting's current value: Options' field, else the saved extension value, else
        the default its extension declared (None for a name nobody declared)."""
        if key in option_rules.defaults():
            return getattr(self.options, key)
        if key in self.options.extra:
            return self.options.extra[key]
        return getattr(self.extension_options.get(key), "default", None)

    # ---- extensions: the manager (install, enable, update, restart) ------------------
    @property
    def disable_all_extensions(self) -> str:
        return self.config.disable_all_extensions or self.options.disable_all_extensions

    def installed_extensions(self) -> list[extensions.Extension]:
        """What is on disk now, with the saved enabled state (it differs from
        `self.extensions` after an install or "Apply" until the restart)."""
        return extensions.installed(REPO_ROOT, self.data_dir, self.options.disabled_extensions)

    def install_extension(self, source: str, name: str = "", branch: str = "") -> extension_install.InstallResult:
        """Install from a git URL or a local folder into <data-dir>/extensions, run its
        install.py; it loads after a restart. InstallError with a message when refused."""
        result = extension_install.install(
            source, extensions.install_folder(self.data_dir), name, branch, allowed=self.config.extension_access,
            python=sys.executable, stamps=extension_install.InstallStamps.load(self.data_dir))
        self.restart_pending = True
        return result

    def check_extension_updates(self) -> list[extension_git.UpdateCheck]:
        extension_install.check_access(self.config.extension_access)
        return [extension_git.check_for_update(e.name, e.path) for e in self.installed_extensions()
                if not e.builtin and extension_git.is_checkout(e.path)]

    def apply_extensions(self, enabled: dict[str, bool], disable_all: str | None = None,
                         update: list[str] = ()) -> list[str]:
        """Save which extensions are enabled (config.json) and fast-forward the ones in
        `update`; all of it takes effect at the next restart. Returns messages."""
        extension_install.check_access(self.config.extension_access)
        by_name = {e.name: e for e in self.installed_extensions()}
        unknown = [n for n in list(enabled) + list(update) if n not in by_name]
        if unknown:
            raise extension_install.InstallError(f"no extension named {', '.join(map(repr, unknown))}")
        messages = [extension_install.update(by_name[n]) for n in update]
        # an updated extension's install.py runs now: the restart does not go through launch.py
        stamps = extension_install.InstallStamps.load(self.data_dir)
        for name in update:
            run = extension_install.run_installer(by_name[name], sys.executable, stamps)
            if run.ran:
                messages.append(f"{name}: install.py " + ("ran." if run.ok else f"failed (exit {run.returncode})."))
        extension_install.set_enabled(self.options, enabled, disable_all)
        self.save_options()
        self.restart_pending = True
        return messages

    def restart(self, delay_s: float = 0.5) -> bool:
        """Start this server process again (A1111's "Reload UI"): `os.execv` of the command
        it was started with, queued behind the jobs already waiting, after `delay_s` so the
        answer to the request that asked for it still goes out. False when the command is
        unknown (an embedded Runtime): then the person restarts Kiln."""
        command = self.config.restart_command
        if not command:
            return False

        def execv():
            time.sleep(delay_s)
            self.callbacks.script_unloaded()  # extensions' on_script_unloaded, as before any reload
            log.info("restarting: %s", " ".join(command))
            for handler in logging.getLogger().handlers:
                handler.flush()
            sys.stdout.flush()
            sys.stderr.flush()
            os.execv(command[0], command)

        self.jobs.submit(execv, name="restart")
        return True

    # ---- generation ----------------------------------------------------------------
    @property
    def limits(self) -> Limits:
        o = self.options
        return Limits(o.max_pixels, o.max_steps, o.max_batch_size, o.max_batch_count)

    def generate(self, request: GenerationRequest, control: processing.JobControl | None = None,
                 job: str = "job", *, task_id: str | None = None, keep_checkpoint: bool = False,
                 hooks: processing.Hooks | None = None) -> processing.GenerationResult:
        """Queue the request behind the jobs already waiting and wait for its result.
        `hooks` (from script_processing.process_images, inside a job): run the engine
        with them, without running the scripts again."""
        if self.jobs.in_worker():  # called from inside a job: run it now
            request.validate(self.limits)
            control = control or processing.JobControl()
            if hooks is not None and self.control is not None:  # a sub-job of the running generation
                return self._engine(request, control, hooks)  # (its styles were applied when the job began)
            request = styles.expand(request, self.data_dir)
            self.scripts.validate(request)
            return self._generate_now(request, control, job, keep_checkpoint, hooks)
        return self.submit(request, control, job, task_id=task_id, keep_checkpoint=keep_checkpoint,
                           hooks=hooks).result()

    def submit(self, request: GenerationRequest, control: processing.JobControl | None = None, job: str = "job", *,
               task_id: str | None = None, keep_checkpoint: bool = False,
               hooks: processing.Hooks | None = None) -> Task:
        """Validate now (a bad request never waits in the queue), queue, return the Task.
        `keep_checkpoint`: a request.checkpoint stays loaded (and chosen) afterwards."""
        request = styles.expand(request.validate(self.limits), self.data_dir)  # an unknown style: RequestError now
        self.scripts.validate(request)
        control = control or processing.JobControl()
        return self.jobs.submit(lambda: self._generate_now(request, control, job, keep_checkpoint, hooks),
                                name=job, task_id=task_id)

    def _generate_now(self, request: GenerationRequest, control: processing.JobControl, job: str,
                      keep_checkpoint: bool = False, hooks: processing.Hooks | None = None) -> processing.GenerationResult:
        """Run on the worker: load (or switch) the model, sample with progress and
        previews, restore a per-request checkpoint. Without `hooks` (a job from the UI or
        the API) the scripts decide what runs (modules/scripts.py); with them (an
        extension's process_images from outside a job) the engine runs once."""
        task = self.jobs.current
        progress = Progress.begin(job, task.id if task else None, request.n_iter, control)
        progress.textinfo = "Loading checkpoint"
        outer = control.on_step
        every = int(self.options.show_progress_every_n_steps or 0) if self.options.live_previews_enable else 0
        self.control, self.progress = control, progress
        previous = self.model.name if self.model else None
        try:
            model = self.load_model(request.checkpoint or previous or self.unloaded_name)
            space = previews.latent_space(model)

            def on_step(step, total, latents):
                if self.inject_fault:
                    self.inject_fault("step")
                progress.on_step(step, total)
                progress.latents = latents
                if previews.is_due(step, total, every):
                    try:
                        progress.preview = previews.preview(latents, space, model.vae_scale_factor)
                        progress.preview_step = progress.overall_step
                    except Exception:  # a preview is never worth a failed job
                        log.exception("live preview failed")
                if outer:
                    outer(step, total, latents)

            control.on_step = on_step
            progress.textinfo = None
            memory.set_tiling(model.vae, bool(self.options.tiled_vae))
            if hooks is not None:
                return self._engine(request, control, hooks)
            return scripts.run_request(self, request, control)  # its process_images come back to _engine
        except torch.OutOfMemoryError as e:  # free the device and tell the user what helps; the next job runs
            raise memory.out_of_memory(e, self.device.device) from None
        finally:
            control.on_step = outer
            self.control = None
            self.progress = Progress()
            current = self.model.name if self.model else None
            if request.checkpoint and keep_checkpoint and current:
                self.options.sd_model_checkpoint = current
                self.save_options()
            elif previous and previous != current:  # the request's or a script's sub-job's checkpoint
                try:
                    self.load_model(previous)  # a per-request choice does not stick
                except CheckpointError:
                    log.exception("could not restore %s after a per-request checkpoint", previous)

    def token_count(self, prompt: str, steps: int = 20, style_names: list[str] | None = None,
                    negative: bool = False) -> tuple[int, int]:
        """The prompt box counter (A1111's "12/75"), styles included. Needs only a tokenizer:
        the loaded model's, or the bundled CLIP one; never the job queue or the device."""
        from modules.models.tokenizer import load_clip_tokenizer

        model = self.model
        tokenizer = model.tokenizers[0] if model is not None else load_clip_tokenizer(str(self.cache_dir))
        if style_names:
            try:
                request = styles.expand(GenerationRequest(prompt=prompt, negative_prompt=prompt,
                                                          styles=list(style_names)), self.data_dir)
                prompt = request.negative_prompt if negative else request.prompt
            except RequestError:
                pass  # a style deleted meanwhile: count the prompt as typed
        ti = textual_inversion.registry(model) if model is not None else None
        return conditioning.token_count(tokenizer, prompt, steps, self.options.emphasis, negative, ti)

    def text_settings(self, request: GenerationRequest) -> conditioning.TextSettings:
        """The conditioning options for a request: the saved options, then the request's
        `override_settings` (A1111's per-request settings, put in request.extra by the API)."""
        overrides = request.extra.get("override_settings") or {}
        return conditioning.TextSettings(**{
            f.name: overrides.get(f.name, getattr(self.options, f.name))
            for f in dataclasses.fields(conditioning.TextSettings)})

    def _engine(self, request: GenerationRequest, control: processing.JobControl,
                hooks: processing.Hooks) -> processing.GenerationResult:
        """One run of the loop inside the running job (a script's process_images): the
        job's progress and control go on; a checkpoint it names is loaded (the job puts
        the previous one back at its end)."""
        model = self.load_model(request.checkpoint or (self.model.name if self.model else None) or self.unloaded_name)
        return processing.generate(model, request, outdir=self.data_dir / self.options.outdir_samples,
                                   control=control, save_grid=self.options.grid_save,
                                   settings=self.text_settings(request), networks=self.networks, hooks=hooks)

    def interrupt(self) -> None:
        if self.control:
            self.control.interrupted = True

    def skip(self) -> None:
        if self.control:
            self.control.skipped = True


__all__ = ["Runtime", "RuntimeConfig", "RequestError", "CheckpointError", "DEMO_CHECKPOINT"]
