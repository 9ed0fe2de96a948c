"""Stable Diffusion 2.x (2.0, 2.1, 512 and 768-v): OpenCLIP ViT-H/14."""
from __future__ import annotations

from modules.models.families.base import ModelFamily, TextEncoder
from modules.models.families.sd1 import SD_PREVIEW


class SD2(ModelFamily):
    name = "sd2"
    title = "SD 2.x"
    markers = ("cond_stage_model.model.",)
    native_size = 512  # the v-prediction models are 768: see native_size_for
    latent_scale = 0.18215
    # the penultimate layer (SD2 was trained on it), layer-normed
    text_encoders = (TextEncoder("open_clip", "cond_stage_model.model.", pad="!", layer=-2),)
    # SD2.1's attention overflows in fp16 without upcasting (black images)
    upcast_attention = True
    preview_space = SD_PREVIEW  # SD1's VAE

    def native_size_for(self, prediction_type):
        # SD2's v-prediction models (768-v) were trained at 768, its epsilon ones at 512
        return (768, 768) if prediction_type == "v_prediction" else super().native_size_for(prediction_type)
