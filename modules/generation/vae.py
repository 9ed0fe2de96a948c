"""Pixels <-> latents for the loop: encode (img2img), decode (every image), and the
extra input channels inpainting models take in txt2img."""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from modules.device import memory


@torch.no_grad()
def txt2img_image_cond(model, n: int, width: int, height: int) -> torch.Tensor | None:
    """For inpainting models in txt2img: everything masked, over a mid-grey image (as A1111)."""
    if not model.info.inpainting:
        return None
    latent = memory.vae_encode(model, torch.zeros(1, 3, height, width))
    mask = torch.ones(1, 1, *latent.shape[2:])
    return torch.cat([mask, latent], dim=1).repeat(n, 1, 1, 1)


@torch.no_grad()
def encode(model, images: list[Image.Image]) -> torch.Tensor:
    """Pixels -> scaled latents (the latent distribution's mean, as A1111's img2img)."""
    arr = np.stack([np.asarray(im.convert("RGB"), dtype=np.float32) for im in images]) / 127.5 - 1
    return memory.vae_encode(model, torch.from_numpy(arr).permute(0, 3, 1, 2))


@torch.no_grad()
def decode(model, latents: torch.Tensor) -> list[Image.Image]:
    x = memory.vae_decode(model, latents)  # tiled when memory is short, fp32 when fp16 overflows
    arr = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return [Image.fromarray(np.ascontiguousarray(a)) for a in arr]
