"""Checkpoints with random weights in the original single-file layout.

Tests use tiny ones (every family, seconds to build); the benchmark uses full-size ones
(the published SD1.5 / SDXL architectures, so the FLOPs are real) without downloading
anything. Both are written exactly as real files are, so they exercise the real loader.
"""
from __future__ import annotations

from pathlib import Path

import torch

from modules.models import ldm_layout
from modules.models.families import ModelFamily, by_name

# (family name, size) -> unet kwargs, vae kwargs, text encoder kwargs (one per encoder of the family)
_TINY_VAE = dict(block_out_channels=(32, 32), layers_per_block=1, norm_num_groups=32)
_FULL_VAE = dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2, norm_num_groups=32)
_TINY_CLIP = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=1)
_CLIP_L = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12)
_BIG_G = dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=20, projection_dim=1280)
_OPEN_CLIP_H = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16)

SPECS = {
    ("sd1", "tiny"): dict(
        unet=dict(block_out_channels=(32, 64), layers_per_block=1, attention_head_dim=8, cross_attention_dim=64,
                  down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D")),
        vae=_TINY_VAE, text=[_TINY_CLIP]),
    ("sd2", "tiny"): dict(
        unet=dict(block_out_channels=(64, 128), layers_per_block=1, attention_head_dim=(1, 2), cross_attention_dim=64,
                  use_linear_projection=True, upcast_attention=True,
                  down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D")),
        vae=_TINY_VAE, text=[_TINY_CLIP]),
    ("sdxl", "tiny"): dict(
        unet=dict(block_out_channels=(64, 128), layers_per_block=1, attention_head_dim=(1, 2), cross_attention_dim=128,
                  use_linear_projection=True, transformer_layers_per_block=(1, 2),
                  addition_embed_type="text_time", addition_time_embed_dim=256, projection_class_embeddings_input_dim=64 + 6 * 256,
                  down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D")),
        vae=_TINY_VAE, text=[_TINY_CLIP, dict(_TINY_CLIP, projection_dim=64)]),
    ("sd1", "full"): dict(
        unet=dict(block_out_channels=(320, 640, 1280, 1280), layers_per_block=2, attention_head_dim=8, cross_attention_dim=768),
        vae=_FULL_VAE, text=[_CLIP_L]),
    ("sd2", "full"): dict(
        unet=dict(block_out_channels=(320, 640, 1280, 1280), layers_per_block=2, attention_head_dim=(5, 10, 20, 20),
                  cross_attention_dim=1024, use_linear_projection=True, upcast_attention=True),
        vae=_FULL_VAE, text=[_OPEN_CLIP_H]),
    ("sdxl", "full"): dict(
        unet=dict(block_out_channels=(320, 640, 1280), layers_per_block=2, attention_head_dim=(5, 10, 20),
                  cross_attention_dim=2048, use_linear_projection=True, transformer_layers_per_block=(1, 2, 10),
                  addition_embed_type="text_time", addition_time_embed_dim=256, projection_class_embeddings_input_dim=2816,
                  down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                  up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D")),
        vae=_FULL_VAE, text=[_CLIP_L, _BIG_G]),
}


def _family(family: str | ModelFamily) -> ModelFamily:
    return by_name(family) if isinstance(family, str) else family


def build_modules(family: str | ModelFamily, size: str = "tiny", *, inpainting: bool = False, seed: int = 0,
                  meta: bool = False):
    """(unet, vae, [text encoders]) with random weights; on the meta device if `meta`."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    family = _family(family)
    spec = SPECS[(family.name, size)]
    torch.manual_seed(seed)
    act = "quick_gelu"

    def make():
        unet = UNet2DConditionModel(in_channels=9 if inpainting else 4, out_channels=4, norm_num_groups=32, **spec["unet"])
        n = len(spec["vae"]["block_out_channels"])
        vae = AutoencoderKL(latent_channels=4, down_block_types=("DownEncoderBlock2D",) * n,
                            up_block_types=("UpDecoderBlock2D",) * n, **spec["vae"])
        texts = []
        for t, encoder in zip(spec["text"], family.text_encoders, strict=True):
            open_clip = encoder.kind != "clip_l"  # OpenCLIP: gelu, pads with id 0
            cfg = CLIPTextConfig(vocab_size=49408, max_position_embeddings=77, hidden_act="gelu" if open_clip else act,
                                 bos_token_id=49406, eos_token_id=49407, pad_token_id=0 if open_clip else 49407, **t)
            texts.append((CLIPTextModelWithProjection if "projection_dim" in t else CLIPTextModel)(cfg))
        return unet, vae, texts

    if meta:
        with torch.device("meta"):
            return make()
    return make()


def to_ldm_state(family: str | ModelFamily, unet, vae, texts) -> dict[str, torch.Tensor]:
    """Each text encoder goes where its family's loader will look for it (its `prefix`)."""
    state = {}
    state.update(ldm_layout.unet_to_ldm(unet.state_dict(), unet.config.layers_per_block))
    state.update(ldm_layout.vae_to_ldm(vae.state_dict(), len(vae.config.block_out_channels)))
    sd1_prefix = "cond_stage_model.transformer."
    for text, encoder in zip(texts, _family(family).text_encoders, strict=True):
        if encoder.kind == "clip_l":
            clip_l = ldm_layout.sd1_text_to_ldm(text.state_dict())  # SD1's prefix
            state.update({encoder.prefix + k.removeprefix(sd1_prefix): v for k, v in clip_l.items()})
        else:
            state.update(ldm_layout.open_clip_text_to_ldm(text.state_dict(), encoder.prefix))
    return state


def write_checkpoint(path: Path, family: str | ModelFamily, size: str = "tiny", *, inpainting: bool = False, seed: int = 0,
                     metadata: dict | None = None, dtype: torch.dtype = torch.float16) -> Path:
    from safetensors.torch import save_file

    unet, vae, texts = build_modules(family, size, inpainting=inpainting, seed=seed)
    state = {k: (v.to(dtype) if v.dtype.is_floating_point else v).contiguous()
             for k, v in to_ldm_state(family, unet, vae, texts).items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path), metadata=metadata or {})
    return path
