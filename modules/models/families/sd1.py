"""Stable Diffusion 1.x (1.4, 1.5 and their fine-tunes): OpenAI CLIP ViT-L/14, 512 px."""
from __future__ import annotations

from modules.models.families.base import ModelFamily, PreviewSpace, TextEncoder

# A1111's "Approx cheap" factors for the SD1/SD2 VAE (the two share it)
SD_PREVIEW = PreviewSpace("sd", ((0.298, 0.207, 0.208),
                                 (0.187, 0.286, 0.173),
                                 (-0.158, 0.189, 0.264),
                                 (-0.184, -0.271, -0.473)))


class SD1(ModelFamily):
    name = "sd1"
    title = "SD 1.x"
    markers = ("cond_stage_model.transformer.",)
    native_size = 512
    latent_scale = 0.18215
    # the last layer, layer-normed; clip skip 2 reads the penultimate (A1111's CLIP_stop_at_last_layers)
    text_encoders = (TextEncoder("clip_l", "cond_stage_model.transformer.", pad="<|endoftext|>", layer=-1),)
    preview_space = SD_PREVIEW

    def attention_heads(self, channels):
        # SD1 files use 8 heads at every level (not 64-wide heads as SD2/SDXL)
        return 8
