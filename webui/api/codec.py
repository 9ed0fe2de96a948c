"""base64 images in and out of the API, decoded safely.

Decoding checks before it spends memory: the base64 text's length, then the pixel
count the image header declares (Pillow's `Image.open` reads only the header), then
decodes. Only common raster formats are opened. Errors are `ApiError`s that name the
field: 400 for text that is not base64 or not an image, 413 for an image too large.
"""
from __future__ import annotations

import base64
import binascii
import io
import warnings

from PIL import Image, PngImagePlugin, UnidentifiedImageError

from webui.api.errors import ApiError

FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP")  # JPEG covers MPO (phone photos)


def _strip(data: str, field: str) -> str:
    text = data.strip()
    if text.startswith(("http://", "https://")):
        raise ApiError(400, field, "URLs are not fetched: send the image itself, base64-encoded")
    if text.startswith("data:"):
        header, sep, text = text.partition(",")
        if not sep or not header.endswith(";base64"):
            raise ApiError(400, field, "a data: URL must be base64 (data:image/png;base64,...)")
    return "".join(text.split())  # line breaks (MIME style) are allowed


def decode_base64(data: str, field: str, max_bytes: int) -> bytes:
    if not isinstance(data, str) or not data.strip():
        raise ApiError(422, field, "no image given")
    text = _strip(data, field)
    if len(text) * 3 // 4 > max_bytes:
        raise ApiError(413, field, f"the image data is more than {max_bytes} bytes")
    text = text.replace("-", "+").replace("_", "/")  # base64url too
    text += "=" * (-len(text) % 4)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, field, "is not valid base64") from None


def decode_image(data: str, field: str, max_pixels: int) -> Image.Image:
    """A loaded PIL image from base64 text (bare or as a data: URL), at most
    `max_pixels` pixels; its first frame if animated."""
    raw = decode_base64(data, field, max_bytes=max(16 * 2**20, 8 * max_pixels))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(raw), formats=FORMATS)
            width, height = image.size
            if width * height > max_pixels:
                raise ApiError(413, field, f"the image is {width}x{height}: more than the limit of {max_pixels} pixels")
            image.load()
    except ApiError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ApiError(413, field, "the image is too large to decode safely") from None
    except UnidentifiedImageError:
        raise ApiError(400, field, f"is not an image (expected one of {', '.join(FORMATS)})") from None
    except (OSError, ValueError, SyntaxError, EOFError) as e:
        raise ApiError(400, field, f"the image is damaged or truncated ({e})") from None
    return image


def encode_png(image: Image.Image, infotext: str | None = None, extra_text: dict | None = None) -> str:
    """base64 PNG (no data: prefix, as A1111 answers) with the infotext in its
    "parameters" chunk and `extra_text` as further text chunks."""
    info = PngImagePlugin.PngInfo()
    texts = dict(extra_text or {})
    if infotext:
        texts["parameters"] = infotext
    for key, value in texts.items():
        value = str(value)
        try:
            value.encode("latin-1")
            info.add_text(key, value)
        except UnicodeEncodeError:
            info.add_itxt(key, value)
    buffer = io.BytesIO()
    if image.mode not in ("RGB", "RGBA", "L", "LA", "P", "1", "I", "I;16"):
        image = image.convert("RGBA" if "A" in image.getbands() else "RGB")
    image.save(buffer, format="PNG", pnginfo=info)
    return base64.b64encode(buffer.getvalue()).decode("ascii")
