"""LoRA (and LoCon) networks merged into a loaded model's weights, with exact restore.

A kohya/A1111 LoRA file holds, per patched layer, ``<name>.lora_down.weight`` (rank x in),
``<name>.lora_up.weight`` (out x rank) and optionally ``<name>.alpha``; the layer's
weight moves by ``up @ down * alpha / rank * multiplier``. LoCon files do the same for
convolutions with 4-D weights (a k x k ``down`` followed by a 1x1 ``up``).

Layer names come in three spellings, all mapped to our diffusers/transformers modules by
a table built from the model itself, so any block layout (also our tiny test models) is
matched exactly:

- ``lora_unet_down_blocks_0_attentions_0_proj_in``: diffusers module path, dots as
  underscores (kohya's SD1 trainer);
- ``lora_unet_input_blocks_4_1_proj_in``: the original (LDM) module path (kohya's SDXL
  trainer, many converted files), found through ldm_layout.unet_to_ldm;
- ``lora_te_text_model_encoder_layers_0_self_attn_q_proj`` (SDXL: ``lora_te1_`` for
  CLIP-L, ``lora_te2_`` for OpenCLIP bigG).

We merge into the weights rather than wrap layers (PEFT), so sampling costs nothing
extra, and keep a copy of every original tensor we touch: switching to another set of
LoRAs first copies those back, so removing a LoRA restores the base model bit for bit.
All of this state lives on the LoadedModel (``model.attachments.lora``).

diffusers' kohya converters (loaders/lora_conversion_utils) assume the full-size SDXL
block layout and emit PEFT key names; they cannot map our models' own module paths, so
the name table here is ours.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch

from modules.models import ldm_layout

log = logging.getLogger(__name__)

_UNET = "lora_unet_"
_PARTS = ("lora_down.weight", "lora_up.weight", "alpha", "lora_mid.weight")
# the same parts as diffusers (old) and PEFT name them
_PART_SPELLINGS = {"lora.down.weight": "lora_down.weight", "lora.up.weight": "lora_up.weight",
                   "lora_A.weight": "lora_down.weight", "lora_B.weight": "lora_up.weight",
                   **{p: p for p in _PARTS}}
# diffusers-format module prefixes -> kohya's
_PREFIXES = {"unet.": _UNET, "text_encoder.": "lora_te1_", "text_encoder_2.": "lora_te2_"}


class LoraError(ValueError):
    """A LoRA file that cannot be used; the message names the file."""


@dataclass
class Activation:
    """One LoRA to apply: its file and A1111's two multipliers (text encoder, UNet)."""
    name: str  # as written in the prompt
    path: Path
    te: float = 1.0
    unet: float = 1.0


@dataclass
class LoraState:
    """What is merged into a model now. `key` names the applied set; `backups` hold the
    original tensors of every patched parameter (on the CPU, to spare GPU memory);
    `merges` counts how often the weights were actually changed (tests and the
    benchmark read it: applying the same set again must not change it)."""
    key: tuple = ()
    backups: dict[str, tuple[torch.nn.Parameter, torch.Tensor]] = field(default_factory=dict)
    merges: int = 0
    warnings: list[str] = field(default_factory=list)  # about the applied set: layers this model lacks, ...


def _snake(path: str) -> str:
    return path.replace(".", "_")


def _weight_modules(module: torch.nn.Module) -> dict[str, torch.nn.Module]:
    return {n: m for n, m in module.named_modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))}


def layer_table(model) -> dict[str, tuple[torch.nn.Module, str]]:
    """kohya layer name -> (module, "te" or "unet"), built once per model."""
    table = model.attachments.lora_layers
    if table is not None:
        return table
    table = {}
    unet_modules = _weight_modules(model.unet)
    for name, module in unet_modules.items():
        table[_UNET + _snake(name)] = (module, "unet")
    # the LDM spelling: convert the weight keys and read the module path back off them
    weights = {f"{name}.weight": None for name in unet_modules}
    ldm = ldm_layout.unet_to_ldm(weights, model.unet.config.layers_per_block)
    for (diffusers_key, ldm_key) in zip(weights, ldm):
        path = ldm_key.removeprefix(ldm_layout.UNET_PREFIX).removesuffix(".weight")
        table.setdefault(_UNET + _snake(path), (unet_modules[diffusers_key.removesuffix(".weight")], "unet"))
    encoders = model.text_encoders
    prefixes = [["lora_te_", "lora_te1_"], ["lora_te2_"]] if len(encoders) == 2 else [["lora_te_", "lora_te1_", "lora_te2_"]]
    for encoder, names in zip(encoders, prefixes):
        for name, module in _weight_modules(encoder).items():
            path = "text_model." + name.removeprefix("text_model.")  # transformers 5 drops it on CLIPTextModel
            for prefix in names:
                table[prefix + _snake(path)] = (module, "te")
    model.attachments.lora_layers = table
    return table


def read_lora(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    path = Path(path)
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors import safe_open
            with safe_open(str(path), framework="pt", device="cpu") as f:
                return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
        data = torch.load(path, map_location="cpu", weights_only=True)  # never unpickle code
    except Exception as e:
        raise LoraError(f"{path.name}: cannot read LoRA file ({type(e).__name__}: {e})") from None
    if isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        data = data["state_dict"]
    if not isinstance(data, dict):
        raise LoraError(f"{path.name}: not a LoRA file (no tensors inside)")
    return {k: v for k, v in data.items() if isinstance(v, torch.Tensor)}, {}


def _delta(parts: dict[str, torch.Tensor], weight: torch.Tensor, multiplier: float) -> torch.Tensor:
    """The weight change of one layer (float32, on the weight's device)."""
    down = parts["lora_down.weight"].to(weight.device, torch.float32)
    rank = down.shape[0]
    scale = float(parts["alpha"]) / rank if "alpha" in parts else 1.0
    # the scale goes into the small factor, not the full-size product: one pass less
    up = parts["lora_up.weight"].to(weight.device, torch.float32) * (scale * multiplier)
    if "lora_mid.weight" in parts:  # LoCon with a Tucker core: down (1x1), mid (k x k), up (1x1)
        mid = parts["lora_mid.weight"].to(weight.device, torch.float32)
        delta = torch.einsum("oa,abkl,bi->oikl", up.flatten(1), mid, down.flatten(1))
    elif down.ndim == 4 and down.shape[2:] != (1, 1):  # a k x k convolution after a 1x1 one
        delta = torch.einsum("or,rikl->oikl", up.flatten(1), down)
    else:
        delta = up.flatten(1) @ down.flatten(1)
    if delta.numel() != weight.numel():
        raise ValueError(f"shape {tuple(delta.shape)} does not fit the layer's {tuple(weight.shape)}")
    return delta.reshape(weight.shape)


def _group(state: dict[str, torch.Tensor]) -> tuple[dict[str, dict[str, torch.Tensor]], set[str]]:
    """{layer name: {part: tensor}} and the names of parts we do not understand."""
    layers: dict[str, dict[str, torch.Tensor]] = {}
    unknown: set[str] = set()
    for key, value in state.items():
        part = next((p for p in _PART_SPELLINGS if key.endswith("." + p)), None)
        if part is None:
            unknown.add(key.partition(".")[2] or key)
            continue
        name = key[:-len(part) - 1]
        for prefix, kohya in _PREFIXES.items():  # a diffusers-format file: same layers, dotted paths
            if name.startswith(prefix):
                path = name[len(prefix):]
                if kohya != _UNET:
                    path = "text_model." + path.removeprefix("text_model.")
                name = kohya + _snake(path)
        layers.setdefault(name, {})[_PART_SPELLINGS[part]] = value
    return {n: p for n, p in layers.items() if "lora_down.weight" in p and "lora_up.weight" in p}, unknown


def _state(model) -> LoraState:
    if model.attachments.lora is None:
        model.attachments.lora = LoraState()
    return model.attachments.lora


def restore(model) -> int:
    """Copy every backed-up original tensor back; return how many there were."""
    state: LoraState = _state(model)
    with torch.no_grad():
        for param, original in state.backups.values():
            param.copy_(original)
    count = len(state.backups)
    state.backups.clear()
    state.key = ()
    return count


def _file_key(path: Path) -> tuple:
    st = path.stat()
    return str(path), st.st_size, st.st_mtime_ns


def activate(model, wanted: list[Activation]) -> LoraState:
    """Make the model's weights base + exactly the LoRAs in `wanted`. The same set (same
    files, unchanged on disk, same multipliers) as last time does nothing. Raises
    LoraError for a file that cannot be read (the model is then left at its base)."""
    state: LoraState = _state(model)
    live = [a for a in wanted if a.te != 0 or a.unet != 0]  # weight 0: the base model, exactly
    key = tuple((_file_key(a.path), float(a.te), float(a.unet)) for a in live)
    if key == state.key:
        return state
    had = restore(model)
    state.warnings = []
    if not live:
        if had:
            state.merges += 1
        return state
    table = layer_table(model)
    try:
        _merge(model, state, table, live)
    except BaseException:
        restore(model)  # never leave half a set merged
        raise
    state.key = key
    state.merges += 1
    return state


def _merge(model, state: LoraState, table, live: list[Activation]) -> None:
    """Add each LoRA's change to the weights, layer by layer (a full-size float32 delta
    exists for one layer at a time), backing up each weight before its first change."""
    for act in live:
        tensors, _ = read_lora(act.path)
        layers, unknown = _group(tensors)
        if not layers:
            state.warnings.append(f"LoRA {act.name}: no layers Kiln can read in {act.path.name} "
                                  f"(parts such as {', '.join(sorted(unknown)[:3])}); ignored")
            continue
        if unknown:
            log.warning("%s: ignoring parts this LoRA loader does not handle: %s", act.path.name, sorted(unknown)[:5])
        missing = 0
        for name, parts in layers.items():
            target = table.get(name)
            if target is None:
                missing += 1
                continue
            module, kind = target
            multiplier = act.te if kind == "te" else act.unet
            if multiplier == 0:
                continue
            weight = module.weight
            with torch.no_grad():
                try:
                    delta = _delta(parts, weight, multiplier)
                except ValueError as e:
                    raise LoraError(f"{act.path.name}: layer {name}: {e} (made for another model?)") from None
                if id(weight) not in state.backups:
                    state.backups[id(weight)] = (weight, weight.detach().to("cpu", copy=True))
                if weight.dtype == torch.float32:
                    weight.add_(delta)
                else:
                    weight.copy_(delta.add_(weight))  # sum in float32, rounded once
        if missing:
            state.warnings.append(f"LoRA {act.name}: {missing} of its {len(layers)} layers do not exist in this "
                                  "model (made for another model type?)")
