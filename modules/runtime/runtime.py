"""The runtime: the app's state, composed of narrow services, handed explicitly to the
faces (webui/) and to the A1111 edge (modules/scripts.py, modules/shared.py). Nothing
installs it globally.

- `settings`    the saved options and the one way to change them (settings.py)
- `checkpoints` the checkpoint registry, the loaded model, switching (checkpoints.py)
- `jobs`        one FIFO queue and worker for every device job, from the UI and the API
- `extensions`  which extensions are installed and load; install, update, restart
- `networks`    the LoRA and embedding folders prompts refer to

Generation: `submit` / `generate` queue a request; the queued job loads the model, sets
up progress and previews, and hands the request to the `job_runner`. The plain runner
runs the engine once (`run_engine`); the A1111 script host replaces it at start-up to
run extension scripts around the engine (they come back through `run_engine`)."""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch

from modules.device import memory
from modules.device.devices import DeviceConfig
from modules.extensions.install import ACCESS_REFUSED
from modules.extensions.manager import ExtensionManager
from modules.files import model_folders
from modules.generation import pipeline
from modules.generation.hooks import Hooks, JobControl
from modules.generation.pipeline import GenerationResult
from modules.generation.request import GenerationRequest, RequestError
from modules.models import embeddings as textual_inversion
from modules.models import networks as extra_networks
from modules.models.detect import CheckpointError
from modules.models.tokenizer import load_clip_tokenizer
from modules.runtime import previews
from modules.runtime.checkpoints import DEMO_CHECKPOINT, Checkpoints
from modules.runtime.jobs import JobQueue, Progress, Task
from modules.runtime.settings import Settings
from modules.text import conditioning, styles

log = logging.getLogger(__name__)

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


class JobRunner:
    """How a queued generation job turns its request into a result. This one runs the
    engine once; modules/scripts.py's ScriptHost runs A1111 scripts around it."""

    def validate(self, request: GenerationRequest) -> None:
        """Raise RequestError for what this runner cannot run (checked before queueing)."""
        if request.scripts.selected or request.scripts.alwayson:
            raise RequestError("script_name", "no extension scripts are loaded")

    def run(self, runtime: "Runtime", request: GenerationRequest, control: JobControl) -> GenerationResult:
        return runtime.run_engine(request, control)


def model_folders_for(config: RuntimeConfig) -> model_folders.ModelFolders:
    """A1111's and ComfyUI's folders under the data dir, plus the ones the flags name."""
    folders = model_folders.default_folders(config.data_dir)
    # the demo model ships in the repo: list it also when the data dir is elsewhere
    model_folders.add_ckpt_dir(folders, REPO_ROOT / "models" / "Stable-diffusion")
    for d in config.ckpt_dirs:
        model_folders.add_ckpt_dir(folders, d)
    for d in config.lora_dirs:
        model_folders.add_lora_dir(folders, d)
    for d in config.embeddings_dirs:
        model_folders.add_embeddings_dir(folders, d)
    if config.comfyui_dir:
        model_folders.add_comfyui_dir(folders, config.comfyui_dir)
    for yaml_file in config.extra_model_paths:
        model_folders.load_extra_model_paths(folders, yaml_file)
    return folders


class Runtime:
    def __init__(self, config: RuntimeConfig):
        self.config = config
        self.data_dir = Path(config.data_dir)
        self.device = config.device
        self.folders = model_folders_for(config)
        self.settings = Settings(self.data_dir / "config.json")
        self.jobs = JobQueue()  # every device job, from the UI and the API, in order
        self.checkpoints = Checkpoints(self.folders, self.settings, self.device, self.jobs, self.data_dir,
                                       preferred=config.ckpt)
        self.settings.switch_checkpoint = self._choose_checkpoint
        self.networks = extra_networks.Networks(self.folders)  # LoRAs and embeddings
        self.extensions = ExtensionManager(REPO_ROOT, self.data_dir, self.settings, self.jobs,
                                           access=config.extension_access,
                                           disable_all=config.disable_all_extensions,
                                           restart_command=config.restart_command)
        if not config.extension_access:  # the API's settings obey the Extensions tab's rule
            self.settings.locked = {key: ACCESS_REFUSED for key in ("disabled_extensions", "disable_all_extensions")}
        self.job_runner: JobRunner = JobRunner()
        self.progress = Progress()  # the running generation (what /progress and the UI read)
        self.control: JobControl | None = None  # the running generation's flags

    # ---- what most readers want -------------------------------------------------------
    @property
    def options(self):
        return self.settings.options

    @property
    def model(self):
        return self.checkpoints.model

    def _choose_checkpoint(self, wanted: str) -> str:
        name = self.checkpoints.resolve(wanted).name
        loaded = self.model.name if self.model else None
        if name != loaded or self.options.sd_model_checkpoint != name:
            self.checkpoints.switch(name)
        return name

    # ---- generation ----------------------------------------------------------------
    def prepare(self, request: GenerationRequest) -> GenerationRequest:
        """Check a request before it waits in the queue: its fields, its styles (an unknown
        one is a RequestError now), what the job runner can run. Styles are merged in."""
        request = styles.expand(request.validate(self.settings.limits), self.data_dir)
        self.job_runner.validate(request)
        return request

    def submit(self, request: GenerationRequest, control: JobControl | None = None, job: str = "job", *,
               task_id: str | None = None, keep_checkpoint: bool = False, hooks: Hooks | None = None) -> Task:
        """Validate now (a bad request never waits in the queue), queue, return the Task.
        `keep_checkpoint`: a request.checkpoint stays loaded (and chosen) afterwards.
        `hooks`: run the engine once with them instead of the job runner."""
        return self.jobs.submit(self._job(request, control, job, keep_checkpoint, hooks), name=job, task_id=task_id)

    def generate(self, request: GenerationRequest, control: JobControl | None = None, job: str = "job", *,
                 task_id: str | None = None, keep_checkpoint: bool = False,
                 hooks: Hooks | None = None) -> GenerationResult:
        """submit() and wait for the result (a job that generates runs it at once: the queue's rule)."""
        return self.jobs.run(self._job(request, control, job, keep_checkpoint, hooks), name=job, task_id=task_id)

    def _job(self, request: GenerationRequest, control: JobControl | None, job: str, keep_checkpoint: bool,
             hooks: Hooks | None):
        """The queue's task for a request, checked now (prepare) so a bad one never waits."""
        request, control = self.prepare(request), control or JobControl()
        return lambda: self.run_job(request, control, job, keep_checkpoint, hooks)

    @property
    def job_running(self) -> bool:
        """True on the worker thread while a generation job runs (a script inside it)."""
        return self.control is not None and self.jobs.in_worker()

    def run_job(self, request: GenerationRequest, control: JobControl, job: str = "job",
                keep_checkpoint: bool = False, hooks: Hooks | None = None) -> GenerationResult:
        """One generation job, on the worker: load (or switch) the model, sample with
        progress and previews, put back the checkpoint a request borrowed."""
        task = self.jobs.current
        progress = Progress.begin(job, task.id if task else None, request.n_iter, control)
        progress.textinfo = "Loading checkpoint"
        outer = control.on_step
        options = self.options
        every = int(options.show_progress_every_n_steps or 0) if options.live_previews_enable else 0
        self.control, self.progress = control, progress
        previous = self.model.name if self.model else None
        try:
            model = self.checkpoints.load(request.checkpoint or previous or self.checkpoints.unloaded_name)
            space = previews.latent_space(model)

            def on_step(step, total, latents):
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
            memory.set_tiling(model.vae, bool(options.tiled_vae))
            if hooks is not None:
                return self.run_engine(request, control, hooks)
            return self.job_runner.run(self, request, control)
        except torch.OutOfMemoryError as e:  # free the device and tell the user what helps; the next job runs
            raise memory.out_of_memory(e, self.device.device) from None
        finally:
            control.on_step = outer
            self.control = None
            self.progress = Progress()
            current = self.model.name if self.model else None
            if request.checkpoint and keep_checkpoint and current:
                self.options.sd_model_checkpoint = current
                self.settings.save()
            elif previous and previous != current:  # the request's or a script's sub-job's checkpoint
                try:
                    self.checkpoints.load(previous)  # a per-request choice does not stick
                except CheckpointError:
                    log.exception("could not restore %s after a per-request checkpoint", previous)

    def run_engine(self, request: GenerationRequest, control: JobControl,
                   hooks: Hooks | None = None) -> GenerationResult:
        """The engine once, inside the running job: the job's progress and control go on;
        a checkpoint the request names is loaded (the job puts the previous one back)."""
        model = self.checkpoints.load(request.checkpoint or self.checkpoints.current_name())
        return pipeline.generate(model, request, outdir=self.data_dir / self.options.outdir_samples,
                                 control=control, save_grid=self.options.grid_save,
                                 settings=self.text_settings(request), networks=self.networks, hooks=hooks)

    def text_settings(self, request: GenerationRequest) -> conditioning.TextSettings:
        """The conditioning options for a request: the saved options, then the request's
        `override_settings` (A1111's per-request settings)."""
        overrides = request.override_settings
        return conditioning.TextSettings(**{
            f.name: overrides.get(f.name, getattr(self.options, f.name))
            for f in dataclasses.fields(conditioning.TextSettings)})

    def token_count(self, prompt: str, steps: int = 20, style_names: list[str] | None = None,
                    negative: bool = False) -> tuple[int, int]:
        """The prompt box counter (A1111's "12/75"), styles included. Needs only a tokenizer:
        the loaded model's, or the bundled CLIP one; never the job queue or the device."""
        model = self.model
        tokenizer = model.tokenizers[0] if model is not None else load_clip_tokenizer(str(self.checkpoints.cache_dir))
        if style_names:
            try:
                request = styles.expand(GenerationRequest(prompt=prompt, negative_prompt=prompt,
                                                          styles=list(style_names)), self.data_dir)
                prompt = request.negative_prompt if negative else request.prompt
            except RequestError:
                pass  # a style deleted meanwhile: count the prompt as typed
        ti = textual_inversion.registry(model) if model is not None else None
        return conditioning.token_count(tokenizer, prompt, steps, self.options.emphasis, negative, ti)

    def interrupt(self) -> None:
        if self.control:
            self.control.interrupted = True

    def skip(self) -> None:
        if self.control:
            self.control.skipped = True


__all__ = ["Runtime", "RuntimeConfig", "JobRunner", "RequestError", "CheckpointError", "DEMO_CHECKPOINT"]
