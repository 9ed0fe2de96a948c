"""SDXL refiner: SDXL's UNet conventions with OpenCLIP bigG alone and an aesthetic score."""
from __future__ import annotations

from modules.models.families.base import TextEncoder
from modules.models.families.sdxl import SDXL


class SDXLRefiner(SDXL):
    name = "sdxl_refiner"
    title = "SDXL refiner"
    markers = ("conditioner.embedders.0.model.ln_final.weight",)
    text_encoders = (TextEncoder("open_clip_proj", "conditioner.embedders.0.model.", pad="!",
                                 layer=-2, final_norm=False),)

    def time_ids_target(self, width, height, negative, settings):
        # the refiner is conditioned on an aesthetic score instead of the target size:
        # A1111's low score for the negative prompt, the high one for the positive
        if negative:
            return [settings.sdxl_refiner_low_aesthetic_score]
        return [settings.sdxl_refiner_high_aesthetic_score]
