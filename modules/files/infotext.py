"""Infotext: the generation parameters text A1111 stores in a PNG's "parameters" chunk.

The layout, which other tools (sd-parsers, sd-prompt-reader, civitai) read::

    a photo of a cat, highly detailed
    Negative prompt: blurry, lowres
    Steps: 20, Sampler: Euler a, Schedule type: Automatic, CFG scale: 7, Seed: 1, Size: 512x512, Model hash: 0123456789, Model: dreamshaper, Version: v1.10.1

The prompt may span several lines, and so may the negative prompt; the last line holds
``key: value`` items separated by ", ". A value holding ``,``, ``:`` or a newline is
written as a JSON string. ``build_infotext`` writes it, ``parse_infotext`` reads it the
way A1111 does (all values as text), and ``request_fields_from_infotext`` turns it into
typed ``GenerationRequest`` fields for "Send to txt2img" and the API's png-info.
"""
from __future__ import annotations

import io
import json
import os
import re
from pathlib import Path, PurePath
from typing import Any

from modules.generation.request import GenerationRequest
from modules.sampling import samplers

_MODEL_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".gguf")

# One "Key: value" item of the parameters line. The key starts with a letter and holds
# words, spaces, '-' and '/'; the value is a JSON string or the text up to the next comma.
_ITEM = re.compile(r"""
    \s*(?P<key>[A-Za-z][\w \-/]*?)\s*:\s*
    (?P<value>"(?:[^"\\\n]|\\.)*"(?=\s*(?:,|$))|[^,]*)
    \s*(?:,|$)
""", re.VERBOSE)
_SIZE = re.compile(r"^(\d+)x(\d+)$")
_NEGATIVE = "Negative prompt:"


# -- writing -------------------------------------------------------------------------------
def format_value(value: Any) -> str:
    """A parameter value as A1111 writes it: 7.0 -> "7", 7.5 -> "7.5", text as is, and
    text holding ',' ':' or a newline as a JSON string."""
    if isinstance(value, bool):
        text = str(value)
    elif isinstance(value, float):
        text = str(int(value)) if value.is_integer() else repr(value)
    elif isinstance(value, (dict, list, tuple)):
        text = json.dumps(value, ensure_ascii=False)
    else:
        text = str(value)
    if any(c in text for c in ",:\n") or text.startswith('"'):
        return json.dumps(text, ensure_ascii=False)
    return text


def model_name_for_infotext(name: str | os.PathLike | None) -> str | None:
    """``sd15/dreamshaper.safetensors`` -> ``dreamshaper`` (A1111's "Model")."""
    if name is None or str(name) == "":
        return None
    base = PurePath(str(name).replace("\\", "/")).name
    stem, suffix = os.path.splitext(base)
    return stem if suffix.lower() in _MODEL_SUFFIXES else base


def build_infotext(request: GenerationRequest, *, seed: int, subseed: int | None = None,
                   model_name: str | None, model_hash: str | None, width: int, height: int,
                   extra: dict | None = None) -> str:
    """The infotext of one image. ``seed``/``subseed``/``width``/``height`` are the values
    actually used (after -1 became a random seed, and image i of a batch got seed+i).
    ``extra`` items come after the standard ones, in order; a value of None drops the key,
    a key already present is replaced in place, and a value equal to its key is written
    as a bare flag, as A1111 does."""
    params: dict[str, Any] = {
        "Steps": request.steps,
        "Sampler": request.sampler_name,
        "Schedule type": request.scheduler or "Automatic",
        "CFG scale": request.cfg_scale,
        "Seed": seed,
        "Size": f"{width}x{height}",
        "Model hash": model_hash or None,
        "Model": model_name_for_infotext(model_name),
    }
    if request.subseed_strength and float(request.subseed_strength) > 0:
        params["Variation seed"] = request.subseed if subseed is None else subseed
        params["Variation seed strength"] = request.subseed_strength
    if request.clip_skip and int(request.clip_skip) > 1:
        params["Clip skip"] = request.clip_skip
    params.update(extra or {})

    line = ", ".join(key if value == key else f"{key}: {format_value(value)}"
                     for key, value in params.items() if value is not None)
    negative = f"\n{_NEGATIVE} {request.negative_prompt}" if request.negative_prompt else ""
    return f"{request.prompt}{negative}\n{line}".strip()


def image_infotext(request: GenerationRequest, model, *, prompt: str, negative_prompt: str, seed: int,
                   subseed: int | None, width: int | None = None, height: int | None = None,
                   extra: dict | None = None) -> str:
    """The infotext of one generated image (the engine's and A1111's create_infotext
    alike): the request's values with this image's prompts and seeds, the model's name
    and hash, `extra` (what this generation adds: img2img, LoRA hashes ...), then the
    request's own infotext_params (a script's), then Kiln's version."""
    return build_infotext(request.replace(prompt=prompt, negative_prompt=negative_prompt), seed=seed, subseed=subseed,
                          model_name=model.name if model is not None else None,
                          model_hash=model.short_hash if model is not None else None,
                          width=width or request.width, height=height or request.height,
                          extra=(extra or {}) | request.infotext_params | {"Version": "kiln"})


# -- reading -------------------------------------------------------------------------------
def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        try:
            decoded = json.loads(value)
        except ValueError:
            return value
        return decoded if isinstance(decoded, str) else value
    return value


def parse_params_line(line: str) -> dict[str, str]:
    """``"Steps: 20, Sampler: Euler a, Lora hashes: \\"a: 1\\""`` -> a dict of text values."""
    return {m["key"].strip(): _unquote(m["value"].strip()) for m in _ITEM.finditer(line)}


def split_sampler_name(sampler: str, schedule: str | None = None) -> tuple[str, str]:
    """(sampler, schedule type) as the sampler table resolves them (a legacy name such as
    "DPM++ 2M Karras" carries its schedule type, which wins, as in A1111). A name Kiln does
    not know (another tool's) is kept as written."""
    try:
        return samplers.resolve_names(sampler, schedule or "Automatic")
    except samplers.SamplerError:
        return sampler, schedule or "Automatic"


def parse_infotext(text: str) -> dict[str, str]:
    """A1111's reading of an infotext: "Prompt", "Negative prompt" and every parameter
    as text; "Size" becomes "Size-1"/"Size-2"; a missing "Clip skip" is "1" and a
    missing "Schedule type" is "Automatic" (or split off a legacy sampler name)."""
    lines = (text or "").strip().replace("\r\n", "\n").split("\n")
    params: dict[str, str] = {}
    if len(lines) and len(_ITEM.findall(lines[-1])) >= 3 and not lines[-1].startswith(_NEGATIVE):
        params = parse_params_line(lines.pop())

    prompt: list[str] = []
    negative: list[str] = []
    target = prompt
    for line in lines:
        line = line.strip()
        if target is prompt and line.startswith(_NEGATIVE):
            target = negative
            line = line[len(_NEGATIVE):].strip()
        target.append(line)

    result: dict[str, str] = {"Prompt": "\n".join(prompt), "Negative prompt": "\n".join(negative)}
    for key, value in params.items():
        size = _SIZE.match(value)
        if size:
            result[f"{key}-1"], result[f"{key}-2"] = size.group(1), size.group(2)
        else:
            result[key] = value

    result.setdefault("Clip skip", "1")
    if "Sampler" in result:
        result["Sampler"], result["Schedule type"] = split_sampler_name(
            result["Sampler"], result.get("Schedule type"))
    else:
        result.setdefault("Schedule type", "Automatic")
    return result


def _to_int(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        number = float(value)
        if not number.is_integer():
            raise
        return int(number)


# infotext key -> (GenerationRequest field, type)
REQUEST_FIELDS: tuple[tuple[str, str, type], ...] = (
    ("Prompt", "prompt", str),
    ("Negative prompt", "negative_prompt", str),
    ("Steps", "steps", int),
    ("Sampler", "sampler_name", str),
    ("Schedule type", "scheduler", str),
    ("CFG scale", "cfg_scale", float),
    ("Seed", "seed", int),
    ("Size-1", "width", int),
    ("Size-2", "height", int),
    ("Variation seed", "subseed", int),
    ("Variation seed strength", "subseed_strength", float),
    ("Clip skip", "clip_skip", int),
    ("Model", "checkpoint", str),  # a name hint: the file stem, matched against the registry
)
# infotext key -> what it hints that is not a request field of its own here (the model's
# hash; the strength, which belongs to img2img and hires. fix, not to a txt2img paste)
HINT_FIELDS: tuple[tuple[str, str, type], ...] = (
    ("Model hash", "model_hash", str),
    ("Denoising strength", "denoising_strength", float),
)


def _typed(parsed: dict[str, str], table) -> dict[str, Any]:
    """The table's keys present in `parsed`, converted (a value that does not convert is left out)."""
    out: dict[str, Any] = {}
    for key, name, kind in table:
        if key not in parsed:
            continue
        try:
            out[name] = _to_int(parsed[key]) if kind is int else kind(parsed[key])
        except (TypeError, ValueError):
            continue
    return out


def request_fields_from_infotext(text: str) -> dict[str, Any]:
    """GenerationRequest keyword arguments, typed, from an infotext: only the fields it
    names (a value that does not convert is left out). ``checkpoint`` is the model name
    hint, matched against the registry by whoever uses it."""
    return _typed(parse_infotext(text), REQUEST_FIELDS)


def infotext_hints(text: str) -> dict[str, Any]:
    """``model_hash`` and ``denoising_strength`` when the infotext names them."""
    return _typed(parse_infotext(text), HINT_FIELDS)


# -- PNG -----------------------------------------------------------------------------------
def write_png_with_infotext(image, path: str | os.PathLike, infotext: str | None) -> Path:
    """Save ``image`` (a PIL image) as PNG with ``infotext`` in a "parameters" tEXt chunk
    (iTXt, UTF-8, when the text is not latin-1)."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    if infotext:
        try:
            infotext.encode("latin-1")
            info.add_text("parameters", infotext)
        except UnicodeEncodeError:
            info.add_itxt("parameters", infotext)
    path = Path(path)
    image.save(path, format="PNG", pnginfo=info)
    return path


def _decode_user_comment(raw: bytes | str) -> str | None:
    """EXIF UserComment (how A1111 stores infotext in JPEG and WebP): an 8-byte charset
    prefix, then the text."""
    if isinstance(raw, str):
        return raw.strip("\0") or None
    prefix, body = raw[:8], raw[8:]
    if prefix == b"UNICODE\0":
        # A1111 (via piexif) writes UTF-16 big-endian; some tools write little-endian.
        even_zeros = body[0::2].count(0)
        odd_zeros = body[1::2].count(0)
        text = body.decode("utf-16-le" if odd_zeros > even_zeros else "utf-16-be", errors="replace")
    elif prefix.startswith(b"ASCII") or prefix == b"\0" * 8:
        text = body.decode("utf-8", errors="replace")
    else:
        text = raw.decode("utf-8", errors="replace")
    return text.strip("\0") or None


def _infotext_of(image) -> str | None:
    text = getattr(image, "text", None)  # PNG: tEXt, zTXt and iTXt chunks (loads late ones)
    if isinstance(text, dict) and text.get("parameters"):
        return str(text["parameters"])
    if image.info.get("parameters"):
        return str(image.info["parameters"])
    try:
        raw = image.getexif().get_ifd(0x8769).get(0x9286)  # Exif IFD -> UserComment
    except Exception:  # a broken EXIF block is no infotext, not a crash
        return None
    return _decode_user_comment(raw) if raw else None


def read_infotext(image_or_path) -> str | None:
    """The infotext of a PIL image, or of an image file (path, bytes or file object);
    None when it has none."""
    from PIL import Image

    if isinstance(image_or_path, Image.Image):
        return _infotext_of(image_or_path)
    source = io.BytesIO(image_or_path) if isinstance(image_or_path, (bytes, bytearray)) else image_or_path
    with Image.open(source) as image:
        return _infotext_of(image)
