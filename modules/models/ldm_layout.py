"""Diffusers state dicts -> the original single-file (LDM) key layout.

Loading goes the other way through diffusers' own converters (loaders/single_file_utils);
this direction exists so that models we make ourselves (the demo model, test fixtures,
benchmark checkpoints) are written exactly as A1111/ComfyUI files are, and then prove
the real loader every time they are loaded. diffusers ships no such function (only a
script outside the package), so this small table is ours.
"""
from __future__ import annotations

import torch

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
SD1_TEXT_PREFIX = "cond_stage_model.transformer.text_model."

_UNET_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
                "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
_VAE_ATTN = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _rename_first(rest: str, table: dict[str, str]) -> str:
    for old, new in table.items():
        if rest.startswith(old + "."):
            return new + rest[len(old):]
    return rest


def unet_to_ldm(state: dict[str, torch.Tensor], layers_per_block: int) -> dict[str, torch.Tensor]:
    per_level = layers_per_block + 1  # LDM numbers the downsampler as a block of its own
    top = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
           "add_embedding.linear_1": "label_emb.0.0", "add_embedding.linear_2": "label_emb.0.2",
           "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2"}
    up_has_attn = {k.split(".")[1] for k in state if k.startswith("up_blocks.") and ".attentions." in k}
    out = {}
    for key, value in state.items():
        p = key.split(".")
        rest = ".".join(p[4:])
        if p[0] == "down_blocks":
            level, kind, idx = int(p[1]), p[2], int(p[3])
            if kind == "resnets":
                new = f"input_blocks.{1 + level * per_level + idx}.0.{_rename_first(rest, _UNET_RESNET)}"
            elif kind == "attentions":
                new = f"input_blocks.{1 + level * per_level + idx}.1.{rest}"
            else:  # downsamplers.0.conv
                new = f"input_blocks.{(level + 1) * per_level}.0.op.{'.'.join(p[5:])}"
        elif p[0] == "up_blocks":
            level, kind, idx = int(p[1]), p[2], int(p[3])
            if kind == "resnets":
                new = f"output_blocks.{level * per_level + idx}.0.{_rename_first(rest, _UNET_RESNET)}"
            elif kind == "attentions":
                new = f"output_blocks.{level * per_level + idx}.1.{rest}"
            else:  # upsamplers.0.conv: after the resnet, and after the attention if the level has one
                slot = 2 if p[1] in up_has_attn else 1
                new = f"output_blocks.{level * per_level + layers_per_block}.{slot}.{'.'.join(p[4:])}"
        elif p[0] == "mid_block":
            kind, idx = p[1], int(p[2])
            rest = ".".join(p[3:])
            if kind == "attentions":
                new = f"middle_block.1.{rest}"
            else:
                new = f"middle_block.{2 * idx}.{_rename_first(rest, _UNET_RESNET)}"
        else:
            new = _rename_first(key, top)
        out[UNET_PREFIX + new] = value
    return out


def vae_to_ldm(state: dict[str, torch.Tensor], num_levels: int) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        p = key.split(".")
        side = p[0]  # encoder / decoder / quant_conv / post_quant_conv
        if len(p) > 2 and p[1] in ("down_blocks", "up_blocks"):
            level = int(p[2]) if p[1] == "down_blocks" else num_levels - 1 - int(p[2])
            group = "down" if p[1] == "down_blocks" else "up"
            if p[3] == "resnets":
                rest = ".".join(p[5:]).replace("conv_shortcut", "nin_shortcut")
                new = f"{side}.{group}.{level}.block.{p[4]}.{rest}"
            else:  # downsamplers / upsamplers
                new = f"{side}.{group}.{level}.{'downsample' if group == 'down' else 'upsample'}.{'.'.join(p[5:])}"
        elif len(p) > 2 and p[1] == "mid_block":
            if p[2] == "resnets":
                new = f"{side}.mid.block_{int(p[3]) + 1}.{'.'.join(p[4:])}"
            else:
                new = f"{side}.mid.attn_1.{_rename_first('.'.join(p[4:]), _VAE_ATTN)}"
                if value.ndim == 2:  # LDM stores these projections as 1x1 convolutions
                    value = value[:, :, None, None]
        else:
            new = key.replace("conv_norm_out", "norm_out")
        out[VAE_PREFIX + new] = value
    return out


def sd1_text_to_ldm(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers 5 keys carry no `text_model.` prefix; SD1 files do."""
    out = {SD1_TEXT_PREFIX + k.removeprefix("text_model."): v for k, v in state.items()}
    positions = out[SD1_TEXT_PREFIX + "embeddings.position_embedding.weight"].shape[0]
    out.setdefault(SD1_TEXT_PREFIX + "embeddings.position_ids", torch.arange(positions)[None])
    return out


def open_clip_text_to_ldm(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """A transformers CLIPTextModel(WithProjection) state dict -> OpenCLIP's key names
    (SD2's `cond_stage_model.model.`, SDXL's `conditioner.embedders.1.model.`)."""
    state = {k.removeprefix("text_model."): v for k, v in state.items()}
    out = {
        prefix + "token_embedding.weight": state["embeddings.token_embedding.weight"],
        prefix + "positional_embedding": state["embeddings.position_embedding.weight"],
        prefix + "ln_final.weight": state["final_layer_norm.weight"],
        prefix + "ln_final.bias": state["final_layer_norm.bias"],
    }
    if "text_projection.weight" in state:
        out[prefix + "text_projection"] = state["text_projection.weight"].T.contiguous()
    layer_names = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "self_attn.out_proj": "attn.out_proj",
                   "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj"}
    layers = sorted({int(k.split(".")[2]) for k in state if k.startswith("encoder.layers.")})
    for i in layers:
        src, dst = f"encoder.layers.{i}.", f"{prefix}transformer.resblocks.{i}."
        for kind in ("weight", "bias"):
            out[dst + f"attn.in_proj_{kind}"] = torch.cat(
                [state[src + f"self_attn.{p}_proj.{kind}"] for p in ("q", "k", "v")])
            for old, new in layer_names.items():
                out[dst + f"{new}.{kind}"] = state[src + f"{old}.{kind}"]
    return out
