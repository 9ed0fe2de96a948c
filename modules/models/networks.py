"""A1111's extra networks in the prompt: ``<lora:name:weight>`` (also
``<lora:name:te_weight:unet_weight>`` and ``te=``/``unet=``), plus the textual inversion
embeddings a prompt names.

prompts.extract_extra_networks takes the tags out of the prompt (A1111: the rest is
encoded; the infotext keeps the prompt as written). ``activate`` runs on the worker before a batch is
encoded: it merges the wanted LoRAs into the model (models/lora.py; the same set as last
time costs nothing, none restores the base weights), brings the model's embedding
registry up to date, and returns the infotext fields (``Lora hashes``, ``TI hashes``) and
the warnings a person should see (a LoRA that is not there, a tag Kiln does not know).
A missing or unusable network never fails the job.

``Networks`` is the runtime's view of the LoRA and embedding folders: names, aliases,
A1111's short hashes.
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

from modules.files import model_folders as paths
from modules.text import prompt_syntax
from modules.models import embeddings, lora

log = logging.getLogger(__name__)

LORA_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")


def addnet_sha256(path: Path) -> str:
    """A1111's LoRA hash for .safetensors (sd-webui-additional-networks' "addnet" hash):
    the sha256 of the tensor data after the header, so editing metadata keeps the hash."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        header = int.from_bytes(f.read(8), "little")
        f.seek(8 + header)
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


class Networks:
    """LoRA and embedding files of the model folders (listed afresh on each use, so
    files added later are found without a restart), and their hashes."""

    def __init__(self, folders: paths.ModelFolders):
        self.folders = folders
        self.embedding_library = embeddings.Library()
        self._hashes: dict[tuple, str] = {}

    def loras(self) -> list[paths.ModelFile]:
        return paths.list_models(self.folders, "loras", LORA_SUFFIXES)

    def embedding_files(self) -> list[paths.ModelFile]:
        return paths.list_models(self.folders, "embeddings", embeddings.SUFFIXES)

    @staticmethod
    def metadata(mf: paths.ModelFile) -> dict:
        if mf.path.suffix.lower() != ".safetensors":
            return {}
        from modules.models.detect import read_safetensors_header
        try:
            return dict(read_safetensors_header(mf.path)[1])
        except Exception:  # a damaged file is still listed
            return {}

    def alias(self, mf: paths.ModelFile) -> str:
        return self.metadata(mf).get("ss_output_name") or mf.stem

    def find_lora(self, name: str) -> paths.ModelFile | None:
        """By file stem (A1111's name), path relative to the folder with or without the
        extension, or the alias stored in the file (ss_output_name)."""
        files = self.loras()
        for mf in files:
            if name in (mf.stem, mf.name, str(Path(mf.name).with_suffix(""))):
                return mf
        for mf in files:
            if self.alias(mf) == name:
                return mf
        return None

    def _cached(self, kind: str, path: Path, compute) -> str:
        st = path.stat()
        key = (kind, str(path), st.st_size, st.st_mtime_ns)
        if key not in self._hashes:
            self._hashes[key] = compute(path)
        return self._hashes[key]

    def lora_hash(self, mf: paths.ModelFile) -> str:
        """A1111's LoRA short hash: the file's `sshs_model_hash` or its addnet sha256
        (whole-file sha256 for other formats), first 12 hex digits."""
        stored = self.metadata(mf).get("sshs_model_hash")
        if stored:
            return stored[:12]
        if mf.path.suffix.lower() == ".safetensors":
            return self._cached("addnet", mf.path, addnet_sha256)[:12]
        return self._cached("sha256", mf.path, _file_sha256)[:12]

    def embedding_hash(self, path: Path) -> str:
        """A1111's TI hash: the whole file's sha256, first 12 hex digits."""
        return self._cached("sha256", path, _file_sha256)[:12]


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _infotext_name(name: str) -> str:
    return name.replace(":", "").replace(",", "")  # A1111 drops what would break the list


@dataclass
class Activated:
    prompt: str  # the prompt without its tags: what gets encoded
    infotext: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def activate(networks: Networks | None, model, prompt: str, negative_prompt: str = "") -> Activated:
    """Apply the prompt's LoRAs (and only those) and refresh the embeddings; see the
    module docstring. `networks` None (no model folders): tags are still removed, any
    LoRA is reported missing and the model returns to its base weights."""
    clean, calls = prompt_syntax.extract_extra_networks(prompt)
    result = Activated(clean)
    wanted: list[lora.Activation] = []
    hashes: dict[str, str] = {}
    for call in calls:
        if call.kind.lower() != "lora":
            what = "hypernetworks are" if call.kind == "hypernet" else f"extra network type '{call.kind}' is"
            result.warnings.append(f"<{call.kind}:{call.name}>: {what} not supported by Kiln; ignored")
            continue
        mf = networks.find_lora(call.name) if networks else None
        if mf is None:
            result.warnings.append(f"LoRA not found: {call.name}")
            continue
        try:
            te, unet = prompt_syntax.lora_weights(call)
        except ValueError as e:
            result.warnings.append(f"<lora:{call.name}>: {e}; ignored")
            continue
        wanted.append(lora.Activation(call.name, mf.path, te, unet))
        try:
            hashes[_infotext_name(call.name)] = networks.lora_hash(mf)
        except OSError as e:
            log.warning("cannot hash %s: %s", mf.path, e)
    try:
        state = lora.activate(model, wanted)
    except lora.LoraError as e:
        result.warnings.append(f"LoRA not applied: {e}")
        state = lora.activate(model, [])
    result.warnings.extend(state.warnings)
    if hashes:
        result.infotext["Lora hashes"] = ", ".join(f"{k}: {v}" for k, v in hashes.items())

    if networks is not None:
        embeddings.refresh(model, networks.embedding_library, networks.embedding_files())
        used = embeddings.used_in(model, [clean, negative_prompt])
        registry = embeddings.registry(model)
        ti = {}
        for name in used:
            try:
                ti[_infotext_name(name)] = networks.embedding_hash(registry.scan.loaded[name].path)
            except OSError as e:
                log.warning("cannot hash embedding %s: %s", name, e)
        if ti:
            result.infotext["TI hashes"] = ", ".join(f"{k}: {v}" for k, v in ti.items())
    for warning in result.warnings:
        log.warning(warning)
    return result
