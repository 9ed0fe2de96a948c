"""A1111's `modules.sd_models`, for extension scripts: find a checkpoint by name, title,
file stem or short hash, in the runtime the edge was handed."""
from __future__ import annotations

from dataclasses import dataclass

from modules import script_callbacks
from modules.models.detect import CheckpointError


@dataclass
class CheckpointInfo:
    """A1111's CheckpointInfo, the fields scripts read."""
    title: str
    name: str  # relative to its folder: "sd15/model.safetensors"
    model_name: str  # the name without its extension
    filename: str  # the full path


def _runtime():
    return script_callbacks.registry.runtime


def get_closet_checkpoint_match(search_string: str) -> CheckpointInfo | None:
    """The checkpoint `search_string` names (A1111's spelling of "closest"), or None."""
    runtime = _runtime()
    if runtime is None or not search_string:
        return None
    try:
        mf = runtime.checkpoints.resolve(search_string)
    except CheckpointError:
        return None
    return CheckpointInfo(runtime.checkpoints.title(mf), mf.name, mf.stem, str(mf.path))


def checkpoint_tiles() -> list[str]:
    """Every checkpoint's title, as the page's dropdown lists them."""
    runtime = _runtime()
    return [runtime.checkpoints.title(mf) for mf in runtime.checkpoints.list()] if runtime else []


__all__ = ["CheckpointInfo", "get_closet_checkpoint_match", "checkpoint_tiles"]
