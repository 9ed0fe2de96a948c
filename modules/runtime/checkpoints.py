"""The checkpoint service: which checkpoints there are, which one is loaded, switching
between them (through the job queue), and A1111's RAM cache of recently used files.

On any failure to load, the previous model stays loaded and a CheckpointError says why.
Listeners (`on_loaded`) hear of every newly loaded model: the A1111 edge forwards them to
extensions' on_model_loaded callbacks."""
from __future__ import annotations

import collections
import gc
import logging
import time
from pathlib import Path
from typing import Callable

import torch

from modules.device import devices, memory
from modules.device.devices import DeviceConfig, apply_attention
from modules.files import model_folders
from modules.models.errors import CheckpointError, CheckpointNotFound
from modules.models.loader import LoadedModel, load_checkpoint, read_state_dict
from modules.runtime.jobs import JobQueue
from modules.runtime.settings import Settings

log = logging.getLogger(__name__)

DEMO_CHECKPOINT = "kiln-demo-shapes.safetensors"


class Checkpoints:
    def __init__(self, folders: model_folders.ModelFolders, settings: Settings, device: DeviceConfig,
                 jobs: JobQueue, data_dir: Path, preferred: str | None = None):
        self.folders = folders
        self.settings = settings
        self.device = device
        self.jobs = jobs
        self.cache_dir = data_dir / ".cache"
        self.hashes = model_folders.HashCache(data_dir / "cache.json")
        self.preferred = preferred  # --ckpt: the checkpoint to open first
        self.model: LoadedModel | None = None
        self.last_load_error: str | None = None
        self.unloaded_name: str | None = None  # what unload() freed (reload() loads it)
        self.states: collections.OrderedDict = collections.OrderedDict()  # sd_checkpoint_cache
        self.on_loaded: list[Callable[[LoadedModel], None]] = []

    # ---- the registry --------------------------------------------------------------
    def list(self) -> list[model_folders.ModelFile]:
        return model_folders.list_models(self.folders, "checkpoints", (".safetensors", ".ckpt"))

    def title(self, mf: model_folders.ModelFile) -> str:
        """`name [hash]` once the hash is known (hashing every big file up front is slow)."""
        return model_folders.checkpoint_title(mf, (self.hashes.cached_sha256(mf.path) or "")[:10] or None)

    def resolve(self, name: str) -> model_folders.ModelFile:
        """Accept a name, a title `name [hash]`, a file stem or a short hash (A1111 does)."""
        wanted = name.strip()
        bare = wanted.split(" [", 1)[0]
        files = self.list()
        for mf in files:
            if bare in (mf.name, mf.stem, Path(mf.name).name) or wanted == self.title(mf):
                return mf
        for mf in files:
            cached = self.hashes.cached_sha256(mf.path)
            if cached and len(bare) >= 8 and cached.startswith(bare.lower()):
                return mf
        raise CheckpointNotFound(f"checkpoint not found: {name!r} (have: {', '.join(f.name for f in files) or 'none'})")

    def default(self) -> model_folders.ModelFile | None:
        for wanted in (self.preferred, self.settings.options.sd_model_checkpoint, DEMO_CHECKPOINT):
            if wanted:
                try:
                    return self.resolve(wanted)
                except CheckpointError:
                    continue
        files = self.list()
        return files[0] if files else None

    # ---- loading -------------------------------------------------------------------
    def load(self, name: str | None = None) -> LoadedModel:
        """Load (or keep) a checkpoint, on the calling thread (a job's, or start-up's)."""
        mf = self.resolve(name) if name else self.default()
        if mf is None:
            raise CheckpointError("no checkpoints found: put a .safetensors file in models/Stable-diffusion")
        if self.model is not None and Path(self.model.path) == Path(mf.path):
            return self.model
        options = self.settings.options
        started = time.time()
        try:
            short = self.hashes.short_hash(mf.path)
            reuse = self.model
            offload = self.device.memory != "normal"  # built in RAM; parts move to the GPU as they run
            model = load_checkpoint(mf.path, name=mf.name, short_hash=short,
                                    device=torch.device("cpu") if offload else self.device.device,
                                    dtype=self.device.dtype, cache_dir=self.cache_dir,
                                    default_prediction=options.default_prediction_type, reuse=reuse,
                                    state=self._cached_state(mf.path))
            if reuse is None or model.unet is not reuse.unet:  # freshly built modules (not reused)
                self._prepare(model)
            else:  # the same modules: what is tied to them carries over, what is tied to the old weights does not
                model.attachments = reuse.attachments.for_new_weights()
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
        for listener in self.on_loaded:
            listener(model)
        return model

    def _prepare(self, model: LoadedModel) -> None:
        """Speed and memory settings on freshly built modules (reused ones keep theirs)."""
        apply_attention(model, self.device.attention)
        devices.optimize(model, channels_last=bool(self.settings.options.channels_last), compile=self.device.compile)
        if self.device.memory != "normal":
            model.attachments.offloader = memory.set_memory_mode(model, self.device.memory, self.device.device)

    def _cached_state(self, path: Path):
        """The checkpoint RAM cache (option sd_checkpoint_cache, A1111's name): the file
        contents of the N most recently loaded checkpoints, so switching back skips the
        disk. None when the cache is off (the loader reads the file itself)."""
        size = max(0, int(self.settings.options.sd_checkpoint_cache or 0))
        cache = self.states
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

    # ---- switching, through the job queue (never under a running job) ----------------
    def switch(self, name: str) -> LoadedModel:
        """Load and remember the choice (the setting sd_model_checkpoint)."""
        model = self.jobs.run(lambda: self.load(name), name="load checkpoint")
        self.settings.options.sd_model_checkpoint = model.name
        self.settings.save()
        return model

    def unload(self) -> None:
        """Free the loaded model; the next job loads it again."""
        def unload():
            if self.model is not None:
                self.unloaded_name = self.model.name
            self.model = None
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()

        self.jobs.run(unload, name="unload checkpoint")

    def reload(self) -> LoadedModel:
        """Load the chosen checkpoint again (after unload)."""
        return self.jobs.run(lambda: self.load(self.current_name()), name="load checkpoint")

    def current_name(self) -> str | None:
        """The loaded checkpoint's name, or the one unload() freed."""
        return self.model.name if self.model else self.unloaded_name
