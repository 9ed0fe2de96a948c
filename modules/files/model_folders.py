"""Model folders: where checkpoints, VAEs, LoRAs, embeddings and upscalers live.

The registry is plain data, a dict ``kind -> [folder, ...]`` (``ModelFolders``), built
from three sources and searched in order:

- the data folder in both layouts: A1111 (``models/Stable-diffusion``, ``models/VAE``,
  ``models/Lora``, ``embeddings/`` ...) and ComfyUI (``models/checkpoints``,
  ``models/vae``, ``models/loras`` ...), see ``default_folders``;
- A1111's ``--ckpt-dir`` / ``--vae-dir`` / ``--lora-dir`` / ``--embeddings-dir`` and a
  ComfyUI install's ``models/<kind>`` folders;
- ComfyUI's ``extra_model_paths.yaml``.

A model's name is its path relative to the folder it was found in, posix style
(``sd15/dreamshaper.safetensors``), so the same name works on every OS and in the API.

``HashCache`` keeps sha256 sums of model files in a JSON file, keyed by absolute path,
size and mtime, so a multi-GB checkpoint is hashed once.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

ModelFolders = dict[str, list[Path]]
"""kind -> folders, searched in order. Kinds: checkpoints, vae, loras, embeddings,
upscale_models, plus any other kind named in an extra_model_paths.yaml."""

STANDARD_KINDS = ("checkpoints", "vae", "loras", "embeddings", "upscale_models")

MODEL_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")

# data_dir-relative folders per kind: A1111's layout first, then ComfyUI's.
A1111_LAYOUT: dict[str, tuple[str, ...]] = {
    "checkpoints": ("models/Stable-diffusion",),
    "vae": ("models/VAE",),
    "loras": ("models/Lora", "models/LyCORIS"),
    "embeddings": ("embeddings",),
    "upscale_models": ("models/ESRGAN",),
}
COMFYUI_LAYOUT: dict[str, tuple[str, ...]] = {
    "checkpoints": ("models/checkpoints",),
    "vae": ("models/vae",),
    "loras": ("models/loras",),
    "embeddings": ("models/embeddings",),
    "upscale_models": ("models/upscale_models",),
}

# Kind names other tools use -> ours. ComfyUI's own names for our five kinds are the same
# as ours; "clip" and "unet" are ComfyUI's older names for two of its folders.
KIND_ALIASES = {
    "clip": "text_encoders",
    "unet": "diffusion_models",
}

# Keys of an extra_model_paths.yaml section that are settings, not folder kinds.
_YAML_SETTINGS = ("base_path", "is_default")


class ModelPathsError(ValueError):
    """A model-folder configuration that cannot be used; the message names the file."""


def canonical_kind(kind: str) -> str:
    kind = str(kind).strip()
    return KIND_ALIASES.get(kind.lower(), kind)


def _expand(path: str | os.PathLike) -> Path:
    return Path(os.path.expandvars(os.path.expanduser(os.fspath(path))))


def add_folder(folders: ModelFolders, kind: str, path: str | os.PathLike) -> ModelFolders:
    """Append ``path`` (made absolute, ``~`` expanded) to ``kind`` unless already there."""
    folder = Path(os.path.abspath(_expand(path)))
    entries = folders.setdefault(canonical_kind(kind), [])
    if folder not in entries:
        entries.append(folder)
    return folders


def default_folders(data_dir: str | os.PathLike) -> ModelFolders:
    """The folders of both layouts under ``data_dir`` (missing ones are kept; listing
    skips them, so a folder created later is found without a restart)."""
    folders: ModelFolders = {kind: [] for kind in STANDARD_KINDS}
    root = _expand(data_dir)
    for layout in (A1111_LAYOUT, COMFYUI_LAYOUT):
        for kind, relpaths in layout.items():
            for rel in relpaths:
                add_folder(folders, kind, root / rel)
    return folders


def add_ckpt_dir(folders: ModelFolders, path: str | os.PathLike) -> ModelFolders:
    """A1111's ``--ckpt-dir``."""
    return add_folder(folders, "checkpoints", path)


def add_vae_dir(folders: ModelFolders, path: str | os.PathLike) -> ModelFolders:
    """A1111's ``--vae-dir``."""
    return add_folder(folders, "vae", path)


def add_lora_dir(folders: ModelFolders, path: str | os.PathLike) -> ModelFolders:
    """A1111's ``--lora-dir``."""
    return add_folder(folders, "loras", path)


def add_embeddings_dir(folders: ModelFolders, path: str | os.PathLike) -> ModelFolders:
    """A1111's ``--embeddings-dir``."""
    return add_folder(folders, "embeddings", path)


def add_comfyui_dir(folders: ModelFolders, comfy_root: str | os.PathLike) -> ModelFolders:
    """A ComfyUI install's ``models/<kind>`` folders: our five kinds always, plus every
    other folder found under ``models/`` (controlnet, clip_vision, ...) as its own kind."""
    root = _expand(comfy_root)
    models = root / "models"
    if not models.is_dir():
        raise ModelPathsError(f"{root}: not a ComfyUI folder (no models/ folder in it)")
    for kind in STANDARD_KINDS:
        add_folder(folders, kind, models / kind)
    for entry in sorted(models.iterdir()):
        if entry.is_dir() and not entry.name.startswith("."):
            add_folder(folders, entry.name, entry)
    return folders


def load_extra_model_paths(folders: ModelFolders, yaml_path: str | os.PathLike) -> ModelFolders:
    """Add the folders of a ComfyUI ``extra_model_paths.yaml``.

    Top-level keys are free labels (``a111:``, ``comfyui:`` ...). In each section,
    ``base_path`` (relative to the yaml's folder, ``~`` expanded) is the root of the other
    paths, ``is_default`` is ignored, and every other key is a folder kind whose value is
    one path or a ``|`` block of several, one per line. Without ``base_path``, relative
    paths are relative to the yaml's folder.
    """
    import yaml  # only needed here

    yaml_file = _expand(yaml_path)
    where = str(yaml_file)
    try:
        text = yaml_file.read_text(encoding="utf-8")
    except OSError as error:
        raise ModelPathsError(f"{where}: cannot read: {error.strerror or error}") from error
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ModelPathsError(f"{where}: not valid YAML: {error}") from error
    if config is None:
        return folders
    if not isinstance(config, dict):
        raise ModelPathsError(f"{where}: expected sections such as 'comfyui:' at the top level")

    yaml_dir = Path(os.path.abspath(yaml_file)).parent
    for label, section in config.items():
        if section is None:
            continue
        if not isinstance(section, dict):
            raise ModelPathsError(f"{where}: section '{label}' must map folder kinds to paths")
        base = section.get("base_path")
        if base is not None:
            if not isinstance(base, str):
                raise ModelPathsError(f"{where}: '{label}.base_path' must be a path")
            base_dir = _expand(base.strip())
            if not base_dir.is_absolute():
                base_dir = yaml_dir / base_dir
        else:
            base_dir = yaml_dir
        for kind, value in section.items():
            if kind in _YAML_SETTINGS:
                continue
            if isinstance(value, str):
                lines = value.splitlines()
            elif isinstance(value, list) and all(isinstance(v, str) for v in value):
                lines = value
            else:
                raise ModelPathsError(
                    f"{where}: '{label}.{kind}' must be a path or a '|' block of paths, got {value!r}")
            for line in lines:
                line = line.strip()
                if line:
                    add_folder(folders, str(kind), os.path.normpath(base_dir / _expand(line)))
    return folders


@dataclass(frozen=True, order=True)
class ModelFile:
    name: str  # relative to its folder, posix style: "sd15/dreamshaper.safetensors"
    path: Path  # absolute

    @property
    def stem(self) -> str:
        """The file name without folder and extension: what A1111 calls the model name."""
        return Path(self.name).stem


def _file_id(path: str | os.PathLike):
    """What makes two paths the same file, also on case-insensitive file systems
    (models/VAE and models/vae) and through symlinks."""
    try:
        st = os.stat(path)
        if st.st_ino:
            return st.st_dev, st.st_ino
    except OSError:
        pass
    return os.path.normcase(os.path.realpath(path))


def list_models(folders: ModelFolders, kind: str,
                suffixes: tuple[str, ...] = MODEL_SUFFIXES) -> list[ModelFile]:
    """Every model file of ``kind``, recursing into subfolders, sorted by name.

    Hidden files and folders are skipped, missing folders ignored, and a file reached
    twice (a folder listed twice, nested folders, a symlink) is listed once.
    """
    wanted = tuple(s.lower() for s in suffixes)
    seen_files: set = set()
    found: list[ModelFile] = []
    for folder in folders.get(canonical_kind(kind), []):
        if not folder.is_dir():
            continue
        seen_dirs: set = set()
        for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
            dir_id = _file_id(dirpath)
            if dir_id in seen_dirs:  # a symlink loop
                dirnames[:] = []
                continue
            seen_dirs.add(dir_id)
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for filename in sorted(filenames):
                if filename.startswith(".") or not filename.lower().endswith(wanted):
                    continue
                path = Path(dirpath) / filename
                if not path.is_file():
                    continue
                file_id = _file_id(path)
                if file_id in seen_files:
                    continue
                seen_files.add(file_id)
                found.append(ModelFile(path.relative_to(folder).as_posix(), path))
    found.sort(key=lambda m: (m.name.lower(), m.name))
    return found


def checkpoint_title(model_file: ModelFile | str, short_hash: str | None) -> str:
    """A1111's checkpoint title: ``sd15/dreamshaper.safetensors [0123456789]``
    (the name alone when the hash is not known yet)."""
    name = model_file.name if isinstance(model_file, ModelFile) else str(model_file)
    return f"{name} [{short_hash}]" if short_hash else name


class HashCache:
    """sha256 of model files, cached by (absolute path, size, mtime_ns) in a JSON file.

    ``cache_file=None`` keeps the cache in memory only. Safe to share between the
    threads of a web server: the table and the file are guarded by one lock and the file
    is replaced atomically, so a crash never leaves half a cache.
    """

    CHUNK = 1024 * 1024
    VERSION = 1

    def __init__(self, cache_file: str | os.PathLike | None):
        self.cache_file = Path(cache_file) if cache_file is not None else None
        self._lock = threading.Lock()
        self._entries: dict[str, dict] | None = None

    # -- the table -------------------------------------------------------------------
    def _load(self) -> dict[str, dict]:
        if self._entries is None:
            self._entries = {}
            if self.cache_file is not None and self.cache_file.exists():
                try:
                    data = json.loads(self.cache_file.read_text(encoding="utf-8"))
                    entries = data.get("sha256", {}) if isinstance(data, dict) else {}
                    if isinstance(entries, dict):
                        self._entries = {k: v for k, v in entries.items() if isinstance(v, dict)}
                except (OSError, ValueError) as error:
                    log.warning("%s: unreadable hash cache, starting afresh (%s)", self.cache_file, error)
        return self._entries

    def _save(self) -> None:
        if self.cache_file is None:
            return
        data = {"version": self.VERSION, "sha256": self._entries}
        self.cache_file.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=self.cache_file.name + ".", suffix=".tmp",
                                   dir=self.cache_file.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(data, f, indent=1, sort_keys=True)
            os.replace(tmp, self.cache_file)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise

    @staticmethod
    def _key(path: str | os.PathLike) -> tuple[str, int, int]:
        absolute = os.path.abspath(path)
        st = os.stat(absolute)
        return absolute, st.st_size, st.st_mtime_ns

    # -- the API ---------------------------------------------------------------------
    def cached_sha256(self, path: str | os.PathLike) -> str | None:
        """The sum if it is cached and the file is unchanged; never reads the file."""
        absolute, size, mtime_ns = self._key(path)
        with self._lock:
            entry = self._load().get(absolute)
        if entry and entry.get("size") == size and entry.get("mtime_ns") == mtime_ns:
            return entry.get("sha256")
        return None

    def sha256(self, path: str | os.PathLike) -> str:
        """The full hex sha256 of the file, read once per (path, size, mtime)."""
        cached = self.cached_sha256(path)
        if cached:
            return cached
        absolute, size, mtime_ns = self._key(path)
        digest = hashlib.sha256()
        with open(absolute, "rb") as f:
            while chunk := f.read(self.CHUNK):
                digest.update(chunk)
        value = digest.hexdigest()
        with self._lock:
            self._load()[absolute] = {"size": size, "mtime_ns": mtime_ns, "sha256": value}
            self._save()
        return value

    def short_hash(self, path: str | os.PathLike) -> str:
        """A1111's "Model hash": the first 10 hex digits of the sha256."""
        return self.sha256(path)[:10]
