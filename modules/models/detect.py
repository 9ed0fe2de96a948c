"""What a checkpoint is, from its keys and shapes alone (no weights read).

Detection is data: each family (modules/models/families/) is recognised by keys that
only it has; the registry's order decides when several match.
"""
from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path

from modules.models.errors import CheckpointError
from modules.models.families import UNET, ModelFamily, family_of

__all__ = ["UNET", "CheckpointError", "ModelInfo", "TensorInfo", "detect", "family_of", "prediction_type",
           "read_safetensors_header"]


@dataclass
class TensorInfo:
    shape: tuple[int, ...]
    dtype: str


@dataclass
class ModelInfo:
    family: ModelFamily  # the registry's instance (families.FAMILIES)
    inpainting: bool
    prediction_type: str  # "epsilon" or "v_prediction"
    native_size: tuple[int, int]  # width, height
    metadata: dict = field(default_factory=dict)

    @property
    def title(self) -> str:
        return self.family.title + (" inpainting" if self.inpainting else "") + (" (v-prediction)" if self.prediction_type == "v_prediction" else "")


def read_safetensors_header(path: Path) -> tuple[dict[str, TensorInfo], dict[str, str]]:
    """Tensor shapes and the metadata block, reading only the JSON header."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{path.name}: file is too short to be a safetensors file")
        (n,) = struct.unpack("<Q", head)
        if n <= 0 or n > min(size - 8, 100 * 2**20):
            raise CheckpointError(f"{path.name}: not a safetensors file (bad header length)")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CheckpointError(f"{path.name}: corrupt safetensors header ({e})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path.name}: corrupt safetensors header (not a table of tensors)")
    metadata = header.pop("__metadata__", None) or {}
    tensors = {}
    for key, entry in header.items():
        try:
            start, end = entry["data_offsets"]
            info = TensorInfo(tuple(int(d) for d in entry["shape"]), str(entry["dtype"]))
            end = int(end)
        except (TypeError, KeyError, ValueError):
            raise CheckpointError(f"{path.name}: corrupt safetensors header (tensor {key!r} is not described "
                                  "by a shape, a dtype and offsets)") from None
        if end + 8 + n > size:
            raise CheckpointError(f"{path.name}: file is truncated (tensor {key} ends past the end of the file)")
        tensors[key] = info
    return tensors, metadata


def prediction_type(path: Path | None, keys, metadata: dict, default: str = "epsilon") -> str:
    """v-prediction cannot be read from shapes: a `v_pred` key, modelspec metadata, a .yaml
    beside the file, then the caller's default (a setting)."""
    if "v_pred" in keys:
        return "v_prediction"
    spec = str(metadata.get("modelspec.prediction_type", "")).lower()
    if spec in ("v", "v_prediction", "v-prediction"):
        return "v_prediction"
    if spec in ("epsilon", "eps"):
        return "epsilon"
    if path is not None:
        yaml_file = path.with_suffix(".yaml")
        if yaml_file.exists():
            text = yaml_file.read_text(errors="replace")
            if "parameterization" in text and ('"v"' in text or "'v'" in text or ": v\n" in text or text.rstrip().endswith(": v")):
                return "v_prediction"
            return "epsilon"
    return default


def detect(shapes: dict[str, tuple[int, ...]], metadata: dict, path: Path | None = None,
           default_prediction: str = "epsilon") -> ModelInfo:
    family = family_of(shapes)
    if not family.supported:
        raise CheckpointError(family.refusal)
    conv_in = shapes.get(UNET + "input_blocks.0.0.weight")
    if conv_in is None:
        raise CheckpointError("checkpoint has a text encoder but no UNet (model.diffusion_model.*)")
    inpainting = conv_in[1] == 9
    pred = prediction_type(path, shapes, metadata, default_prediction)
    res = str(metadata.get("modelspec.resolution", ""))
    if "x" in res:
        w, h = (int(v) for v in res.lower().split("x", 1))
        native = (w, h)
    else:
        native = family.native_size_for(pred)
    return ModelInfo(family, inpainting, pred, native, metadata)
