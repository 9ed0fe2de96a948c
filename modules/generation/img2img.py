"""img2img, inpainting and outpainting: the loop's inputs and the results pasted back.

The pixel side (PIL/numpy): resize modes, mask preparation (invert, blur), A1111's
masked-content "fill", the "only masked" crop region, outpaint padding, and pasting the
result back so that pixels outside the blurred mask stay exactly as they were. Then
`prepare_img2img` turns a batch's init images and mask into init latents, the latent mask
and an inpainting model's extra channels, and `finish_img2img` pastes the decoded images
back over the originals.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image, ImageFilter, ImageOps

from modules.generation.loop import InitLatents
from modules.generation.request import GenerationRequest
from modules.generation.vae import encode, txt2img_image_cond

RESIZE_MODES = ("Just resize", "Crop and resize", "Resize and fill", "Just resize (latent upscale)")
MASKED_CONTENT = ("fill", "original", "latent noise", "latent nothing")
INPAINT_AREAS = ("Whole picture", "Only masked")
MASK_MODES = ("Inpaint masked", "Inpaint not masked")


def resize_image(mode: int, image: Image.Image, width: int, height: int) -> Image.Image:
    """A1111's resize modes 0-3 (3, latent upscale, resizes the latents instead: here the
    image is only converted)."""
    image = image.convert("RGB")
    if mode in (0, 3) or image.size == (width, height):
        return image if mode == 3 else image.resize((width, height), Image.Resampling.LANCZOS)
    if mode == 1:  # crop and resize: cover, then centre-crop
        return ImageOps.fit(image, (width, height), Image.Resampling.LANCZOS)
    # resize and fill: fit inside, then stretch the edge rows/columns into the empty bands
    scale = min(width / image.width, height / image.height)
    w, h = max(1, round(image.width * scale)), max(1, round(image.height * scale))
    fitted = image.resize((w, h), Image.Resampling.LANCZOS)
    canvas = Image.new("RGB", (width, height))
    x, y = (width - w) // 2, (height - h) // 2
    canvas.paste(fitted, (x, y))
    if x > 0:
        canvas.paste(fitted.crop((0, 0, 1, h)).resize((x, h)), (0, y))
        canvas.paste(fitted.crop((w - 1, 0, w, h)).resize((width - x - w, h)), (x + w, y))
    if y > 0:
        canvas.paste(fitted.crop((0, 0, w, 1)).resize((w, y)), (x, 0))
        canvas.paste(fitted.crop((0, h - 1, w, h)).resize((w, height - y - h)), (x, y + h))
    return canvas


def mask_to_l(mask: Image.Image) -> Image.Image:
    """A mask as L (white = repaint). An RGBA mask (a brush layer, as the browser sends
    it) is read from its alpha channel unless that is fully opaque."""
    if mask.mode in ("RGBA", "LA"):
        alpha = mask.getchannel("A")
        if alpha.getextrema() != (255, 255):
            return alpha
    return mask.convert("L")


def prepare_mask(mask: Image.Image, size: tuple[int, int], invert: bool, blur: int) -> tuple[Image.Image, Image.Image]:
    """(sharp, blurred) masks in L mode at `size`; white = repaint."""
    sharp = mask_to_l(mask).resize(size, Image.Resampling.NEAREST)
    sharp = sharp.point(lambda v: 255 if v >= 128 else 0)
    if invert:
        sharp = ImageOps.invert(sharp)
    blurred = sharp.filter(ImageFilter.GaussianBlur(blur)) if blur > 0 else sharp
    return sharp, blurred


def fill_masked(image: Image.Image, mask: Image.Image) -> Image.Image:
    """A1111's "fill": the masked area takes the surrounding colours. Normalised blurs
    (blur of the known pixels divided by blur of the known-ness) from wide to narrow;
    each masked pixel keeps the narrowest blur that reaches it."""
    src = np.asarray(image.convert("RGB"), dtype=np.float32)
    known = (np.asarray(mask.convert("L")) < 128).astype(np.float32)

    def blur(a: np.ndarray, radius: int) -> np.ndarray:
        """Two passes of a box filter (close to a Gaussian), in float."""
        t = torch.from_numpy(np.ascontiguousarray(a if a.ndim == 3 else a[..., None])).permute(2, 0, 1)[None]
        k = 2 * radius + 1
        for _ in range(2):
            t = torch.nn.functional.avg_pool2d(t, k, stride=1, padding=radius, count_include_pad=True)
        out = t[0].permute(1, 2, 0).numpy()
        return out if a.ndim == 3 else out[..., 0]

    filled = np.broadcast_to(src[known > 0].mean(0) if known.any() else np.full(3, 127.0), src.shape).copy()
    for radius in (128, 32, 8, 2):
        weight = blur(known, radius)
        reached = weight > 1e-3
        colour = blur(src * known[..., None], radius) / np.maximum(weight, 1e-3)[..., None]
        filled[reached] = colour[reached]
    result = np.where(known[..., None] > 0, src, filled)
    return Image.fromarray(np.clip(result, 0, 255).round().astype(np.uint8))


@dataclass(frozen=True)
class Region:
    """A crop box (left, top, right, bottom) for "Only masked" inpainting."""
    box: tuple[int, int, int, int]


def masked_region(mask: Image.Image, padding: int, width: int, height: int) -> Region | None:
    """The mask's bounding box plus padding, grown to the target aspect ratio and kept
    inside the image (A1111's "only masked"). None for an empty mask."""
    bbox = mask.getbbox()
    if bbox is None:
        return None
    W, H = mask.size
    x1, y1, x2, y2 = bbox
    x1, y1, x2, y2 = max(0, x1 - padding), max(0, y1 - padding), min(W, x2 + padding), min(H, y2 + padding)
    ratio = width / height
    w, h = x2 - x1, y2 - y1
    if w / h < ratio:  # too tall: widen
        grow = min(W, round(h * ratio)) - w
        x1 = max(0, x1 - grow // 2)
        x2 = min(W, x1 + w + grow)
        x1 = max(0, x2 - (w + grow))
    else:  # too wide: heighten
        grow = min(H, round(w / ratio)) - h
        y1 = max(0, y1 - grow // 2)
        y2 = min(H, y1 + h + grow)
        y1 = max(0, y2 - (h + grow))
    return Region((x1, y1, x2, y2))


def paste_back(original: Image.Image, generated: Image.Image, blurred_mask: Image.Image,
               region: Region | None = None) -> Image.Image:
    """Composite the generated pixels over the original through the blurred mask: where
    the mask is 0 the original pixel is kept exactly."""
    original = original.convert("RGB")
    if region is not None:
        x1, y1, x2, y2 = region.box
        full = original.copy()
        full.paste(generated.resize((x2 - x1, y2 - y1), Image.Resampling.LANCZOS), (x1, y1))
        generated = full
    return Image.composite(generated.convert("RGB"), original, blurred_mask.convert("L"))


def outpaint_canvas(image: Image.Image, pixels: int, sides: tuple[str, ...], overlap: int = 8,
                    multiple: int = 8) -> tuple[Image.Image, Image.Image]:
    """Pad `image` by `pixels` on the given sides (left/right/up/down), rounded so the new
    size is a multiple of `multiple`; return (padded image, mask of the new border plus a
    small overlap into the old picture). The new border starts as stretched edge pixels."""
    image = image.convert("RGB")
    w, h = image.size
    left = pixels if "left" in sides else 0
    right = pixels if "right" in sides else 0
    up = pixels if "up" in sides else 0
    down = pixels if "down" in sides else 0
    new_w, new_h = w + left + right, h + up + down
    extra_w, extra_h = (-new_w) % multiple, (-new_h) % multiple
    right += extra_w if right or not left else 0
    left += extra_w if left and not right else 0
    down += extra_h if down or not up else 0
    up += extra_h if up and not down else 0
    new_w, new_h = w + left + right, h + up + down
    canvas = image.resize((new_w, new_h), Image.Resampling.BILINEAR)  # rough colours in the new border
    canvas.paste(image, (left, up))
    mask = Image.new("L", (new_w, new_h), 255)
    keep = (left + (overlap if left else 0), up + (overlap if up else 0),
            left + w - (overlap if right else 0), up + h - (overlap if down else 0))
    mask.paste(0, keep)
    return canvas, mask


# ---- img2img's inputs for the loop, and its outputs pasted back ----------------------------
@dataclass
class Img2ImgBatch:
    """One batch's img2img inputs, prepared from the init images (and mask)."""
    init: InitLatents
    image_cond: torch.Tensor | None
    originals: list[Image.Image]  # what strength 0 returns and what the result is pasted over
    blurred_masks: list[Image.Image] | None = None  # at the originals' size
    regions: list = field(default_factory=list)  # "only masked" crop boxes

    def part(self, a: int, b: int) -> "Img2ImgBatch":
        """Images a..b of the batch (the whole batch when that is all of it)."""
        if a == 0 and b == len(self.originals):
            return self
        mask = self.init.mask[a:b] if self.init.mask is not None else None
        return Img2ImgBatch(InitLatents(self.init.latents[a:b], mask),
                            self.image_cond[a:b] if self.image_cond is not None else None, self.originals[a:b],
                            self.blurred_masks[a:b] if self.blurred_masks is not None else None,
                            self.regions[a:b] if self.regions else [])


@torch.no_grad()
def prepare_img2img(model, request: GenerationRequest, sources: list[Image.Image], noise: torch.Tensor,
                    width: int, height: int) -> Img2ImgBatch:
    mode = int(request.resize_mode)
    factor = model.vae_scale_factor
    if request.mask is None:
        originals = [resize_image(0 if mode == 3 else mode, src, width, height) for src in sources]
        if mode == 3:  # latent upscale: encode at the source size, resize the latents
            latents = torch.cat([
                torch.nn.functional.interpolate(
                    encode(model, [src.convert("RGB").resize((max(factor, src.width // factor * factor),
                                                              max(factor, src.height // factor * factor)))]),
                    size=(height // factor, width // factor), mode="bilinear", align_corners=False)
                for src in sources])
        else:
            latents = encode(model, originals)
        return Img2ImgBatch(InitLatents(latents), txt2img_image_cond(model, len(sources), width, height), originals)

    invert, blur = bool(request.inpainting_mask_invert), int(request.mask_blur)
    processed, sharps, blurred_full, regions, originals = [], [], [], [], []
    for src in sources:
        if request.inpaint_full_res:  # "only masked": work on the masked region at full size
            original = src.convert("RGB")
            sharp_full, blurred = prepare_mask(request.mask, original.size, invert, blur)
            # an empty mask repaints nothing: its region is the whole picture (pasted back unchanged)
            region = masked_region(sharp_full, int(request.inpaint_full_res_padding), width, height) \
                or Region((0, 0, *original.size))
            box = region.box
            proc = original.crop(box).resize((width, height), Image.Resampling.LANCZOS)
            sharp = sharp_full.crop(box).resize((width, height), Image.Resampling.NEAREST)
        else:  # the mask goes through the same resize as the picture
            original = resize_image(mode if mode != 3 else 0, src, width, height)
            mask = resize_image(mode if mode != 3 else 0, mask_to_l(request.mask), width, height)
            sharp, blurred = prepare_mask(mask.convert("L"), (width, height), invert, blur)
            region, proc = None, original
        if int(request.inpainting_fill) == 0:
            proc = fill_masked(proc, sharp)
        processed.append(proc)
        sharps.append(sharp)
        blurred_full.append(blurred)
        regions.append(region)
        originals.append(original)
    latents = encode(model, processed)
    lat_size = (height // factor, width // factor)
    # the latent mask follows A1111: the blurred mask at latent size, rounded to 0/1
    blurred_proc = [b.crop(r.box).resize((width, height)) if r else b for b, r in zip(blurred_full, regions)]
    mask = torch.stack([torch.from_numpy(np.asarray(b.resize(lat_size[::-1], Image.Resampling.BILINEAR),
                                                    dtype=np.float32) / 255).round() for b in blurred_proc])[:, None]
    fill = int(request.inpainting_fill)
    if fill == 2:  # latent noise
        latents = latents * (1 - mask) + noise * mask
    elif fill == 3:  # latent nothing
        latents = latents * (1 - mask)
    image_cond = None
    if model.info.inpainting:
        sharp_lat = torch.stack([torch.from_numpy(np.asarray(m.resize(lat_size[::-1], Image.Resampling.BILINEAR),
                                                             dtype=np.float32) / 255).round() for m in sharps])[:, None]
        grey_masked = [Image.composite(Image.new("RGB", p.size, (128, 128, 128)), p, m) for p, m in zip(processed, sharps)]
        image_cond = torch.cat([sharp_lat, encode(model, grey_masked)], dim=1)
    return Img2ImgBatch(InitLatents(latents, mask), image_cond, originals, blurred_full, regions)


def finish_img2img(batch: Img2ImgBatch, decoded: list[Image.Image]) -> list[Image.Image]:
    """Paste inpainted pixels back over the originals through the blurred mask."""
    if batch.blurred_masks is None:
        return decoded
    return [paste_back(o, d, m, r) for o, d, m, r in zip(batch.originals, decoded, batch.blurred_masks, batch.regions)]


def img2img_infotext(request: GenerationRequest) -> dict:
    extra = {"Denoising strength": request.denoising_strength}
    if request.init_images and int(request.resize_mode) == 3:
        extra["Resize mode"] = RESIZE_MODES[3]
    if request.mask is not None:
        extra.update({
            "Mask blur": request.mask_blur,
            "Masked content": MASKED_CONTENT[int(request.inpainting_fill)],
            "Inpaint area": INPAINT_AREAS[int(bool(request.inpaint_full_res))],
            "Masked area padding": request.inpaint_full_res_padding,
            "Mask mode": MASK_MODES[int(bool(request.inpainting_mask_invert))],
        })
    return extra
