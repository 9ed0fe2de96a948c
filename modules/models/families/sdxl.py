"""SDXL base: CLIP ViT-L and OpenCLIP bigG side by side, pooled text and size conditioning, 1024 px."""
from __future__ import annotations

from modules.models.families.base import ModelFamily, PreviewSpace, TextEncoder

# A1111's "Approx cheap" factors for SDXL's VAE
SDXL_PREVIEW = PreviewSpace("sdxl", ((0.3448, 0.4168, 0.4395),
                                     (-0.1953, -0.0290, 0.0250),
                                     (0.1074, 0.0886, -0.0163),
                                     (-0.3730, -0.2499, -0.2088)))


class SDXL(ModelFamily):
    name = "sdxl"
    title = "SDXL"
    markers = ("conditioner.embedders.1.model.ln_final.weight",)
    native_size = 1024
    latent_scale = 0.13025
    vae_fp32 = True  # SDXL's VAE overflows in fp16 (black images)
    # both encoders' penultimate layers, not layer-normed, concatenated (768 + 1280 wide);
    # the second one's projection gives the pooled vector
    text_encoders = (TextEncoder("clip_l", "conditioner.embedders.0.transformer.", pad="<|endoftext|>",
                                 layer=-2, final_norm=False),
                     TextEncoder("open_clip_proj", "conditioner.embedders.1.model.", pad="!",
                                 layer=-2, final_norm=False))
    added_conditioning = True  # text_embeds (pooled) + time_ids
    preview_space = SDXL_PREVIEW

    def transformer_layers(self, depth, mid_depth):
        # SDXL stacks several transformer blocks per level (1, 2, 10); the middle block
        # may have its own count, which diffusers reads from the last entry
        if mid_depth != depth[-1]:
            return tuple(depth[:-1]) + (mid_depth,)
        return tuple(depth)

    def time_ids_target(self, width, height, negative, settings):
        # the base model is conditioned on the target size (= the image size, as A1111)
        return [height, width]
