"""Diffusers / transformers configs derived from tensor shapes.

A real SD1.5 file and a tiny test file go through the same functions: every dimension
is read from a weight's shape. What shapes cannot tell (attention heads, norm groups)
follows the family's published convention.
"""
from __future__ import annotations

import re

from modules.models.detect import UNET
from modules.models.families import ModelFamily

Shapes = dict[str, tuple[int, ...]]


def _indices(shapes: Shapes, prefix: str) -> list[int]:
    """Sorted distinct integers that follow `prefix` in any key."""
    pat = re.compile(re.escape(prefix) + r"(\d+)\.")
    return sorted({int(m.group(1)) for k in shapes if (m := pat.match(k))})


def unet_config(shapes: Shapes, family: ModelFamily, sample_size: int) -> dict:
    conv_in = shapes[UNET + "input_blocks.0.0.weight"]
    model_channels = conv_in[0]
    inputs = _indices(shapes, UNET + "input_blocks.")
    downsamplers = [i for i in inputs if UNET + f"input_blocks.{i}.0.op.weight" in shapes]
    per_level = downsamplers[0] if downsamplers else len(inputs)  # resnets + 1 per level
    layers = per_level - 1
    levels = len(downsamplers) + 1
    channels, attn, depth = [], [], []
    for level in range(levels):
        first = 1 + level * per_level
        channels.append(shapes[UNET + f"input_blocks.{first}.0.out_layers.3.weight"][0])
        blocks = _indices(shapes, UNET + f"input_blocks.{first}.1.transformer_blocks.")
        attn.append(bool(blocks))
        depth.append(len(blocks) or 1)
    mid_depth = len(_indices(shapes, UNET + "middle_block.1.transformer_blocks.")) or 1
    any_attn = next(k for k in shapes if k.endswith("attn2.to_k.weight"))
    proj_in = next(k for k in shapes if k.endswith(".proj_in.weight"))
    linear_proj = len(shapes[proj_in]) == 2
    config = dict(
        sample_size=sample_size,
        in_channels=conv_in[1],
        out_channels=shapes[UNET + "out.2.weight"][0],
        block_out_channels=tuple(channels),
        layers_per_block=layers,
        down_block_types=tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attn),
        up_block_types=tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn)),
        cross_attention_dim=shapes[UNET + any_attn.removeprefix(UNET)][1],
        attention_head_dim=family.attention_heads(channels),
        use_linear_projection=linear_proj,
        transformer_layers_per_block=family.transformer_layers(depth, mid_depth),
        norm_num_groups=32,
        upcast_attention=family.upcast_attention,
    )
    if UNET + "label_emb.0.0.weight" in shapes:  # SDXL's pooled text + size conditioning
        config.update(addition_embed_type="text_time", addition_time_embed_dim=256,
                      projection_class_embeddings_input_dim=shapes[UNET + "label_emb.0.0.weight"][1])
    return config


def vae_config(shapes: Shapes, scaling_factor: float, sample_size: int) -> dict:
    p = "first_stage_model."
    levels = _indices(shapes, p + "encoder.down.")
    channels = tuple(shapes[p + f"encoder.down.{i}.block.0.conv2.weight"][0] for i in levels)
    return dict(
        in_channels=shapes[p + "encoder.conv_in.weight"][1],
        out_channels=shapes[p + "decoder.conv_out.weight"][0],
        latent_channels=shapes[p + "post_quant_conv.weight"][0],
        block_out_channels=channels,
        layers_per_block=len(_indices(shapes, p + "encoder.down.0.block.")),
        down_block_types=("DownEncoderBlock2D",) * len(channels),
        up_block_types=("UpDecoderBlock2D",) * len(channels),
        norm_num_groups=32,
        sample_size=sample_size,
        scaling_factor=scaling_factor,
    )


def clip_l_config(shapes: Shapes, prefix: str) -> dict:
    """OpenAI CLIP text model stored with transformers' key names (SD1, SDXL's first)."""
    p = prefix + "text_model."
    vocab, hidden = shapes[p + "embeddings.token_embedding.weight"]
    return dict(
        vocab_size=vocab, hidden_size=hidden, num_attention_heads=max(1, hidden // 64),
        max_position_embeddings=shapes[p + "embeddings.position_embedding.weight"][0],
        num_hidden_layers=len(_indices(shapes, p + "encoder.layers.")),
        intermediate_size=shapes[p + "encoder.layers.0.mlp.fc1.weight"][0],
        hidden_act="quick_gelu", bos_token_id=49406, eos_token_id=49407, pad_token_id=49407,
    )


def open_clip_config(shapes: Shapes, prefix: str) -> dict:
    """OpenCLIP text tower stored with open_clip's key names (SD2, SDXL's second)."""
    vocab, hidden = shapes[prefix + "token_embedding.weight"]
    config = dict(
        vocab_size=vocab, hidden_size=hidden, num_attention_heads=hidden // 64,
        max_position_embeddings=shapes[prefix + "positional_embedding"][0],
        num_hidden_layers=len(_indices(shapes, prefix + "transformer.resblocks.")),
        intermediate_size=shapes[prefix + "transformer.resblocks.0.mlp.c_fc.weight"][0],
        hidden_act="gelu", bos_token_id=49406, eos_token_id=49407, pad_token_id=0,
    )
    if prefix + "text_projection" in shapes:
        config["projection_dim"] = shapes[prefix + "text_projection"][1]
    return config
