"""Extras: upscaling a finished image (A1111's "Extras" tab and /extra-* API routes).

Built-in upscalers are plain resamplers ("Lanczos", "Nearest"); "None" leaves the image
as it is. Model upscalers (ESRGAN and friends) are not built in yet.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from PIL import Image

# name -> Pillow filter; None: no upscaling
UPSCALERS: dict[str, Image.Resampling | None] = {
    "None": None,
    "Lanczos": Image.Resampling.LANCZOS,
    "Nearest": Image.Resampling.NEAREST,
}


class UpscaleError(ValueError):
    """A bad upscaling setting; `field` names it (A1111's API field names)."""

    def __init__(self, field_name: str, message: str, kind: str = "invalid"):
        super().__init__(f"{field_name}: {message}")
        self.field = field_name
        self.message = message
        self.kind = kind  # "invalid", "unknown" (no such upscaler) or "too_large"


@dataclass
class UpscaleSettings:
    """A1111's extras fields: resize_mode 0 scales by `upscaling_resize`; 1 scales to
    `upscaling_resize_w` x `upscaling_resize_h` (cover, then centre-crop when
    `upscaling_crop`)."""
    resize_mode: int = 0
    upscaling_resize: float = 2.0
    upscaling_resize_w: int = 512
    upscaling_resize_h: int = 512
    upscaling_crop: bool = True
    upscaler_1: str = "None"
    upscaler_2: str = "None"
    extras_upscaler_2_visibility: float = 0.0


def upscaler_names() -> list[str]:
    return list(UPSCALERS)


def find_upscaler(name: str | None, field_name: str = "upscaler_1") -> str:
    """The canonical name of an upscaler (case-insensitive); "None" for None/""."""
    if name is None or str(name).strip() in ("", "None", "none"):
        return "None"
    for known in UPSCALERS:
        if known.lower() == str(name).strip().lower():
            return known
    raise UpscaleError(field_name, f"unknown upscaler {name!r}; available: {', '.join(UPSCALERS)}", "unknown")


def target_size(size: tuple[int, int], s: UpscaleSettings) -> tuple[tuple[int, int], tuple[int, int] | None]:
    """(size after scaling, crop size or None)."""
    w, h = size
    if s.resize_mode == 1:
        if s.upscaling_resize_w < 1 or s.upscaling_resize_h < 1:
            raise UpscaleError("upscaling_resize_w", "target width and height must be at least 1")
        by = max(s.upscaling_resize_w / w, s.upscaling_resize_h / h)
        scaled = (max(1, round(w * by)), max(1, round(h * by)))
        crop = (s.upscaling_resize_w, s.upscaling_resize_h) if s.upscaling_crop else None
        return scaled, crop
    if s.resize_mode != 0:
        raise UpscaleError("resize_mode", f"must be 0 (scale by) or 1 (scale to), got {s.resize_mode}")
    by = float(s.upscaling_resize)
    if not math.isfinite(by) or by <= 0:
        raise UpscaleError("upscaling_resize", f"must be a positive number, got {s.upscaling_resize}")
    return (max(1, round(w * by)), max(1, round(h * by))), None


def _resize(image: Image.Image, name: str, size: tuple[int, int]) -> Image.Image:
    if image.size == size:
        return image.copy()
    return image.resize(size, UPSCALERS[name])


def upscale(image: Image.Image, s: UpscaleSettings, max_pixels: int | None = None) -> tuple[Image.Image, dict]:
    """The upscaled image and the infotext items describing what was done ({} when
    upscaler_1 is "None": the image is returned as it is)."""
    first = find_upscaler(s.upscaler_1, "upscaler_1")
    second = find_upscaler(s.upscaler_2, "upscaler_2")
    if not 0 <= float(s.extras_upscaler_2_visibility) <= 1:
        raise UpscaleError("extras_upscaler_2_visibility", "must be between 0 and 1")
    if first == "None":
        return image.copy(), {}
    scaled, crop = target_size(image.size, s)
    final = crop or scaled
    if max_pixels and max(scaled[0] * scaled[1], final[0] * final[1]) > max_pixels:
        field_name = "upscaling_resize" if s.resize_mode == 0 else "upscaling_resize_w"
        raise UpscaleError(field_name, f"the result would be {scaled[0]}x{scaled[1]}: more than the limit of "
                                       f"{max_pixels} pixels", "too_large")
    source = image if image.mode in ("RGB", "RGBA", "L") else image.convert("RGBA" if "A" in image.getbands() else "RGB")
    out = _resize(source, first, scaled)
    if second != "None" and s.extras_upscaler_2_visibility > 0:
        other = _resize(source, second, scaled)
        out = Image.blend(out, other, float(s.extras_upscaler_2_visibility))
    if crop:
        left, top = (scaled[0] - crop[0]) // 2, (scaled[1] - crop[1]) // 2
        out = out.crop((left, top, left + crop[0], top + crop[1]))
    items: dict = ({"Postprocess upscale by": s.upscaling_resize} if s.resize_mode == 0 else
                   {"Postprocess upscale to": f"{out.width}x{out.height}"})
    items["Postprocess upscaler"] = first
    if second != "None" and s.extras_upscaler_2_visibility > 0:
        items["Postprocess upscaler 2"] = second
        items["Postprocess upscaler 2 visibility"] = s.extras_upscaler_2_visibility
    return out, items


__all__ = ["UPSCALERS", "UpscaleError", "UpscaleSettings", "upscale", "upscaler_names", "find_upscaler"]
