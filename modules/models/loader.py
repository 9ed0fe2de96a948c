"""Single-file checkpoints (.safetensors, .ckpt) -> diffusers modules, fully offline.

Configs come from tensor shapes (configs.py), the key conversion from diffusers' own
single-file converters, tokenizers from the vocabulary we ship. Modules are built on the
meta device and take the file's tensors directly, so a 6 GB SDXL file is not first
initialised with random weights.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before diffusers/transformers are imported

import torch

from modules.models import configs
from modules.models.detect import CheckpointError, ModelInfo, detect, read_safetensors_header
from modules.models.families import ModelFamily
from modules.models.tokenizer import load_clip_tokenizer


@dataclass
class Attachments:
    """What features hang on a loaded model, each under its own name and type.

    Tied to the modules (a checkpoint switch that reuses the modules keeps them): the
    memory offloader's hooks, the embeddings registry's hooks, the LoRA module table.
    Tied to the weights (dropped on a switch: the new weights overwrite merged ones): the
    merged LoRAs and the original tensors they replaced."""
    offloader: object | None = None  # device.memory's offloader (--medvram / --lowvram)
    embeddings: object | None = None  # models.embeddings.Registry
    lora_layers: dict | None = None  # models.lora.layer_table: kohya layer name -> (module, part)
    lora: object | None = None  # models.lora.LoraState

    def for_new_weights(self) -> "Attachments":
        """What carries over to another checkpoint's weights in the same modules."""
        return Attachments(offloader=self.offloader, embeddings=self.embeddings, lora_layers=self.lora_layers)


@dataclass
class LoadedModel:
    path: Path
    name: str  # path relative to its model folder, as listed
    short_hash: str
    info: ModelInfo
    unet: torch.nn.Module
    vae: torch.nn.Module
    text_encoders: list  # SD1/SD2: [clip]; SDXL: [clip-L, openclip-bigG]; refiner: [bigG]
    tokenizers: list
    device: torch.device
    dtype: torch.dtype
    attachments: Attachments = field(default_factory=lambda: Attachments())
    arch: str = ""  # the modules' architecture: a checkpoint with the same one reuses them

    @property
    def family(self) -> ModelFamily:
        return self.info.family

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def title(self) -> str:
        return f"{self.name} [{self.short_hash}]"


def read_state_dict(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """All tensors and the metadata; a clear CheckpointError for anything unreadable."""
    if path.suffix == ".safetensors":
        read_safetensors_header(path)  # clear errors for truncated/corrupt files before reading
        from safetensors import safe_open
        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                metadata = f.metadata() or {}
                return {k: f.get_tensor(k) for k in f.keys()}, metadata
        except Exception as e:  # safetensors raises its own error types for damaged files
            raise CheckpointError(f"{path.name}: cannot read safetensors file ({e})") from None
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)  # never unpickle code
    except Exception as e:
        raise CheckpointError(f"{path.name}: cannot load .ckpt safely ({str(e).splitlines()[0]}); "
                              "convert it to .safetensors") from None
    if isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        data = data["state_dict"]
    if not isinstance(data, dict):
        raise CheckpointError(f"{path.name}: not a checkpoint (no state dict inside)")
    return {k: v for k, v in data.items() if isinstance(v, torch.Tensor)}, {}


def _on_meta(factory):
    with torch.device("meta"):
        return factory()


def _fill(module: torch.nn.Module, state: dict[str, torch.Tensor], what: str) -> torch.nn.Module:
    """Load `state` into a meta-built module, exactly: every weight present, none left over."""
    state = {k: v for k, v in state.items() if not k.endswith("position_ids")}
    result = module.load_state_dict(state, strict=False, assign=True)
    missing = [k for k in result.missing_keys if not k.endswith("position_ids")]
    if missing or result.unexpected_keys:
        raise CheckpointError(f"{what} weights do not match the architecture read from the file "
                              f"(missing {missing[:3]}, unexpected {result.unexpected_keys[:3]})")
    for name, buf in list(module.named_buffers()):
        if buf.is_meta:  # non-persistent buffers, such as CLIP's position ids
            owner = module.get_submodule(name.rsplit(".", 1)[0]) if "." in name else module
            leaf = name.rsplit(".", 1)[-1]
            if leaf != "position_ids":
                raise CheckpointError(f"{what}: buffer {name} was not in the file")
            owner.register_buffer(leaf, torch.arange(buf.shape[-1]).expand(buf.shape), persistent=False)
    return module


def _match_text_prefix(model: torch.nn.Module, state: dict) -> dict:
    """transformers 5 dropped the `text_model.` prefix in CLIPTextModel state dicts but
    CLIPTextModelWithProjection keeps it; diffusers' converters emit it: follow the model."""
    state = {k.removeprefix("text_model."): v for k, v in state.items()}
    if any(k.startswith("text_model.") for k in model.state_dict()):
        state = {(k if k.startswith("text_projection") else "text_model." + k): v for k, v in state.items()}
    return state


# a text encoder's kind -> the config read from its shapes
_TEXT_CONFIGS = {"clip_l": configs.clip_l_config, "open_clip": configs.open_clip_config,
                 "open_clip_proj": configs.open_clip_config}


def text_specs(shapes, family: ModelFamily) -> list[tuple[str, str, dict]]:
    """(kind, key prefix, transformers config) of each text encoder in the file."""
    return [(enc.kind, enc.prefix, _TEXT_CONFIGS[enc.kind](shapes, enc.prefix)) for enc in family.text_encoders]


def _new_text_encoder(kind: str, cfg: dict):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    cls = CLIPTextModelWithProjection if kind == "open_clip_proj" else CLIPTextModel
    return _on_meta(lambda: cls(CLIPTextConfig(**cfg)))


def _text_state(model, state, kind: str, prefix: str) -> dict:
    """The file's weights of one text encoder, with `model`'s key names."""
    from diffusers.loaders.single_file_utils import convert_ldm_clip_checkpoint, convert_open_clip_checkpoint

    if kind == "clip_l":
        sd = {k: v for k, v in state.items() if k.startswith(prefix)}
        return _match_text_prefix(model, convert_ldm_clip_checkpoint(sd, remove_prefix=prefix))
    converted = _match_text_prefix(model, convert_open_clip_checkpoint(model, state, prefix=prefix))
    if kind == "open_clip":
        converted.pop("text_projection.weight", None)
    return converted


def build_text_encoders(state, shapes, family: ModelFamily):
    encoders = []
    for kind, prefix, cfg in text_specs(shapes, family):
        model = _new_text_encoder(kind, cfg)
        encoders.append(_fill(model, _text_state(model, state, kind, prefix), "text encoder"))
    return encoders


def _load_into(module: torch.nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    """Copy `state` into an already built module of the same architecture (switching
    checkpoints): every key and shape is checked before the first weight is touched, so
    a mismatch leaves the module as it was."""
    state = {k: v for k, v in state.items() if not k.endswith("position_ids")}
    own = {k: v for k, v in module.state_dict().items() if not k.endswith("position_ids")}
    if state.keys() != own.keys() or any(own[k].shape != v.shape for k, v in state.items()):
        raise CheckpointError(f"{what} weights do not match the loaded architecture")
    with torch.no_grad():
        for k, v in state.items():
            own[k].copy_(v)  # in place: same storage, dtype, device and memory format


def load_checkpoint(path: Path, *, name: str, short_hash: str, device: torch.device, dtype: torch.dtype,
                    cache_dir: Path, default_prediction: str = "epsilon", reuse: LoadedModel | None = None,
                    state: tuple[dict, dict] | None = None) -> LoadedModel:
    """Read a checkpoint and build its model.

    `reuse`: the loaded model; when the new file has the same architecture, its modules
    are kept and only the weights are copied in (A1111 does the same), which is faster
    and does not allocate a second model. `state`: the file's (tensors, metadata) when
    the caller already has them (the checkpoint RAM cache); those tensors are never
    aliased by the model, so the caller may keep them.
    """
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint

    path = Path(path)
    if state is None and not path.exists():
        raise CheckpointError(f"{name}: file not found")
    shared = state is not None
    state, metadata = state if shared else read_state_dict(path)
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    info = detect(shapes, metadata, path, default_prediction)
    vae_cfg = configs.vae_config(shapes, info.family.latent_scale, info.native_size[0])
    factor = 2 ** (len(vae_cfg["block_out_channels"]) - 1)
    unet_cfg = configs.unet_config(shapes, info.family, info.native_size[0] // factor)
    specs = text_specs(shapes, info.family)
    # the native size only sets config defaults, not the modules: leave it out of the key
    arch = repr((info.family, {k: v for k, v in unet_cfg.items() if k != "sample_size"},
                 {k: v for k, v in vae_cfg.items() if k != "sample_size"}, specs, str(device), str(dtype)))
    tokenizers = [load_clip_tokenizer(str(cache_dir), enc.pad) for enc in info.family.text_encoders]

    if reuse is not None and reuse.arch == arch:
        # validate everything first (_load_into checks before it copies), then copy
        unet_sd = convert_ldm_unet_checkpoint(state, unet_cfg)
        vae_sd = convert_ldm_vae_checkpoint(state, vae_cfg)
        text_sds = [_text_state(enc, state, kind, prefix) for enc, (kind, prefix, _) in zip(reuse.text_encoders, specs)]
        _load_into(reuse.unet, unet_sd, "UNet")
        _load_into(reuse.vae, vae_sd, "VAE")
        for enc, sd in zip(reuse.text_encoders, text_sds):
            _load_into(enc, sd, "text encoder")
        del state, unet_sd, vae_sd, text_sds
        return LoadedModel(path, name, short_hash, info, reuse.unet, reuse.vae, reuse.text_encoders, tokenizers,
                           device, dtype, arch=arch)

    own = (lambda sd: {k: v.clone() for k, v in sd.items()}) if shared else (lambda sd: sd)
    unet = _fill(_on_meta(lambda: UNet2DConditionModel(**unet_cfg)),
                 own(convert_ldm_unet_checkpoint(state, unet_cfg)), "UNet")
    vae = _fill(_on_meta(lambda: AutoencoderKL(**vae_cfg)), own(convert_ldm_vae_checkpoint(state, vae_cfg)), "VAE")
    encoders = []
    for kind, prefix, cfg in specs:
        enc = _new_text_encoder(kind, cfg)
        encoders.append(_fill(enc, own(_text_state(enc, state, kind, prefix)), "text encoder"))
    del state
    vae_dtype = torch.float32 if info.family.vae_fp32 else dtype  # e.g. SDXL's VAE overflows in fp16
    unet.to(device, dtype).eval().requires_grad_(False)
    vae.to(device, vae_dtype).eval().requires_grad_(False)
    for enc in encoders:
        enc.to(device, dtype).eval().requires_grad_(False)
    return LoadedModel(path, name, short_hash, info, unet, vae, encoders, tokenizers, device, dtype, arch=arch)
