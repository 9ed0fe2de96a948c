"""Live previews: latents -> a rough RGB picture, without the VAE.

A1111's "Approx cheap": each output pixel is a fixed linear mix of the latent's four
channels (a 4x3 matrix fitted once against the VAE's decoder). SD1 and SD2 share a VAE
and so one matrix; SDXL's VAE has its own. A latent space we have no matrix for (a VAE
of another shape, such as the demo model's or the test models') gets its channels
stretched to the visible range instead: no colours to trust, but the shapes show.

The result is at latent resolution (1/8 of the image), scaled up for display.
"""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from modules.models import families
from modules.models.families.sd1 import SD_PREVIEW
from modules.models.families.sdxl import SDXL_PREVIEW

# rows: latent channels 0-3; columns: R, G, B (published "Approx cheap" coefficients);
# each family names its latent space (`preview_space`), these two are SD1/SD2's and SDXL's
SD_LATENT_RGB = SD_PREVIEW.rgb
SDXL_LATENT_RGB = SDXL_PREVIEW.rgb

# The published SD / SDXL VAEs: the matrices above only fit latents from these.
_STANDARD_VAE_BLOCKS = (128, 256, 512, 512)


def latent_space(model) -> str | None:
    """The name of the model family's preview space ("sd", "sdxl") when the model's VAE is
    the published one of its family (so the matrix fits); None otherwise (normalise instead)."""
    vae = getattr(model, "vae", None)
    config = getattr(vae, "config", None)
    if config is None or getattr(config, "latent_channels", 4) != 4:
        return None
    if tuple(getattr(config, "block_out_channels", ())) != _STANDARD_VAE_BLOCKS:
        return None
    space = getattr(getattr(model, "family", None), "preview_space", None)
    return space.name if space is not None else None


def _factors(space: str | None):
    """The latent -> RGB matrix of a preview space named by a registered family."""
    spaces = {f.preview_space.name: f.preview_space.rgb for f in families.FAMILIES if f.preview_space is not None}
    return spaces.get(space)


def approx_rgb(latents: torch.Tensor, space: str | None) -> torch.Tensor:
    """(B, C, h, w) latents -> (B, 3, h, w) RGB in 0..1."""
    x = latents.detach().float().cpu()
    if x.ndim == 3:
        x = x[None]
    factors = _factors(space)
    if factors is not None and x.shape[1] == len(factors):
        coefs = torch.tensor(factors)
        rgb = torch.einsum("bchw,cr->brhw", x, coefs)
        return ((rgb + 1) / 2).clamp(0, 1)
    # unknown latent space: the first three channels (repeated if fewer), each image
    # and channel stretched to 0..1 between its 1st and 99th percentile
    rgb = x[:, :3] if x.shape[1] >= 3 else x[:, :1].repeat(1, 3, 1, 1)
    flat = rgb.flatten(2)
    lo = torch.quantile(flat, 0.01, dim=2)[..., None, None]
    hi = torch.quantile(flat, 0.99, dim=2)[..., None, None]
    return ((rgb - lo) / (hi - lo).clamp_min(1e-6)).clamp(0, 1)


def preview_images(latents: torch.Tensor, space: str | None, scale: int = 8) -> list[Image.Image]:
    """One PIL preview per latent of the batch, scaled up `scale` times (bilinear)."""
    rgb = approx_rgb(latents, space)
    arr = (rgb * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    out = []
    for a in arr:
        im = Image.fromarray(np.ascontiguousarray(a))
        if scale > 1:
            im = im.resize((im.width * scale, im.height * scale), Image.Resampling.BILINEAR)
        out.append(im)
    return out


def preview(latents: torch.Tensor, space: str | None, scale: int = 8) -> Image.Image:
    """The preview of a batch: one image, or a grid of them (as A1111 shows)."""
    from modules.files.images import image_grid

    images = preview_images(latents, space, scale)
    return images[0] if len(images) == 1 else image_grid(images)


def is_due(step: int, total: int, every: int) -> bool:
    """Whether step `step` (1-based) of `total` gets a preview when previewing every
    `every` steps (0: never)."""
    return every > 0 and step % every == 0


__all__ = ["approx_rgb", "preview", "preview_images", "latent_space", "is_due", "SD_LATENT_RGB", "SDXL_LATENT_RGB"]
