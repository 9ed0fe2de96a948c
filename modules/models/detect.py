"""What a checkpoint is, from its keys and shapes alone (no weights read).

Detection is data: each family is recognised by keys that only it has. The order of
FAMILY_MARKERS matters: the first family whose marker is present wins.
"""
from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path

UNET = "model.diffusion_model."

# family -> a key prefix only that family has
FAMILY_MARKERS: list[tuple[str, str]] = [
    ("sd3", UNET + "joint_blocks."),
    ("flux", UNET + "double_blocks."),
    ("flux", "double_blocks."),
    ("sdxl", "conditioner.embedders.1.model.ln_final.weight"),
    ("sdxl_refiner", "conditioner.embedders.0.model.ln_final.weight"),
    ("sd2", "cond_stage_model.model."),
    ("sd1", "cond_stage_model.transformer."),
]
UNSUPPORTED = {"sd3": "Stable Diffusion 3", "flux": "Flux"}
NATIVE_SIZE = {"sd1": 512, "sd2": 512, "sdxl": 1024, "sdxl_refiner": 1024}
LATENT_SCALE = {"sd1": 0.18215, "sd2": 0.18215, "sdxl": 0.13025, "sdxl_refiner": 0.13025}


class CheckpointError(ValueError):
    """A file we cannot load: says which file and why, never a stack trace."""


@dataclass
class TensorInfo:
    shape: tuple[int, ...]
    dtype: str


@dataclass
class ModelInfo:
    family: str
    inpainting: bool
    prediction_type: str  # "epsilon" or "v_prediction"
    native_size: tuple[int, int]  # width, height
    metadata: dict = field(default_factory=dict)

    @property
    def title(self) -> str:
        name = {"sd1": "SD 1.x", "sd2": "SD 2.x", "sdxl": "SDXL", "sdxl_refiner": "SDXL refiner"}[self.family]
        return name + (" inpainting" if self.inpainting else "") + (" (v-prediction)" if self.prediction_type == "v_prediction" else "")


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
    metadata = header.pop("__metadata__", None) or {}
    tensors = {}
    for key, entry in header.items():
        start, end = entry["data_offsets"]
        if end + 8 + n > size:
            raise CheckpointError(f"{path.name}: file is truncated (tensor {key} ends past the end of the file)")
        tensors[key] = TensorInfo(tuple(entry["shape"]), entry["dtype"])
    return tensors, metadata


def family_of(keys) -> str:
    keyset = keys if isinstance(keys, (set, dict)) else set(keys)
    for family, marker in FAMILY_MARKERS:
        if marker in keyset or any(k.startswith(marker) for k in keyset):
            return family
    raise CheckpointError("not a Stable Diffusion checkpoint: no known text encoder or UNet keys found")


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
    if family in UNSUPPORTED:
        raise CheckpointError(f"{UNSUPPORTED[family]} checkpoints are recognised but not supported yet")
    conv_in = shapes.get(UNET + "input_blocks.0.0.weight")
    if conv_in is None:
        raise CheckpointError("checkpoint has a text encoder but no UNet (model.diffusion_model.*)")
    inpainting = conv_in[1] == 9
    size = NATIVE_SIZE[family]
    res = str(metadata.get("modelspec.resolution", ""))
    if "x" in res:
        w, h = (int(v) for v in res.lower().split("x", 1))
        native = (w, h)
    else:
        pred = prediction_type(path, shapes, metadata, default_prediction)
        native = (768, 768) if family == "sd2" and pred == "v_prediction" else (size, size)
    return ModelInfo(family, inpainting, prediction_type(path, shapes, metadata, default_prediction), native, metadata)
