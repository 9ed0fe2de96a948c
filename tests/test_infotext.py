import io

import pytest
from PIL import Image

from modules.files.infotext import (build_infotext, format_value, model_name_for_infotext,
                              infotext_hints, parse_infotext, read_infotext, request_fields_from_infotext,
                              split_sampler_name, write_png_with_infotext)
from modules.generation.request import GenerationRequest

A1111_TEXT = (
    "masterpiece, best quality, (a cat:1.2) sitting on a chair, <lora:add_detail:0.8>\n"
    "wearing a hat\n"
    "Negative prompt: lowres, bad anatomy, worst quality\n"
    "blurry\n"
    "Steps: 28, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 6.5, Seed: 3141592653, "
    "Size: 512x768, Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Denoising strength: 0.45, "
    "Clip skip: 2, Lora hashes: \"add_detail: 7c6bad76eb54\", "
    "Hires upscaler: \"4x-UltraSharp, tiled\", Version: v1.10.1"
)


def request(**kw):
    base = dict(prompt="a photo of a cat", negative_prompt="", steps=20, sampler_name="Euler a",
                scheduler="Automatic", cfg_scale=7.0, seed=-1)
    base.update(kw)
    return GenerationRequest(**base)


def test_layout_matches_a1111():
    text = build_infotext(request(negative_prompt="blurry"), seed=1, subseed=5, model_name="sd15/dreamshaper.safetensors",
                          model_hash="0123456789", width=512, height=512, extra={"Version": "v1.10.1"})
    assert text == (
        "a photo of a cat\n"
        "Negative prompt: blurry\n"
        "Steps: 20, Sampler: Euler a, Schedule type: Automatic, CFG scale: 7, Seed: 1, Size: 512x512, "
        "Model hash: 0123456789, Model: dreamshaper, Version: v1.10.1")


def test_optional_items():
    text = build_infotext(request(cfg_scale=7.5, subseed_strength=0.25, clip_skip=2), seed=7, subseed=99,
                          model_name=None, model_hash=None, width=640, height=384,
                          extra={"Denoising strength": 0.75, "Lora hashes": "a: 123", "Gone": None,
                                 "Steps": 30, "Tiling": "Tiling"})
    assert "Negative prompt" not in text
    assert text.splitlines()[-1] == (
        "Steps: 30, Sampler: Euler a, Schedule type: Automatic, CFG scale: 7.5, Seed: 7, Size: 640x384, "
        "Variation seed: 99, Variation seed strength: 0.25, Clip skip: 2, Denoising strength: 0.75, "
        'Lora hashes: "a: 123", Tiling')
    plain = build_infotext(request(), seed=7, model_name="m", model_hash="h", width=8, height=8)
    assert "Variation seed" not in plain and "Clip skip" not in plain


@pytest.mark.parametrize("value,expected", [
    (7.0, "7"), (7.5, "7.5"), (20, "20"), (0.45, "0.45"), ("Euler a", "Euler a"),
    ("a, b", '"a, b"'), ("k: v", '"k: v"'), ("two\nlines", '"two\\nlines"'), ('"q"', '"\\"q\\""'),
    ("café, naïve", '"café, naïve"'),
])
def test_format_value(value, expected):
    assert format_value(value) == expected


def test_model_name_is_the_file_stem():
    assert model_name_for_infotext("sd15/dreamshaper_8.safetensors") == "dreamshaper_8"
    assert model_name_for_infotext("v1-5-pruned-emaonly.fp16") == "v1-5-pruned-emaonly.fp16"
    assert model_name_for_infotext("C:\\models\\x.ckpt") == "x"
    assert model_name_for_infotext(None) is None


def test_round_trip_every_field():
    original = request(
        prompt="masterpiece, best quality, a cat\n(wearing a hat:1.2), BREAK\nin the rain",
        negative_prompt="lowres, blurry\nbad hands",
        steps=33, sampler_name="DPM++ 2M SDE", scheduler="Karras", cfg_scale=6.5,
        seed=1234567890, subseed=42, subseed_strength=0.3, clip_skip=2,
        width=768, height=512, checkpoint="sd15/dream, shaper.safetensors",
    )
    text = build_infotext(original, seed=original.seed, subseed=original.subseed,
                          model_name=original.checkpoint, model_hash="abcdef0123",
                          width=original.width, height=original.height,
                          extra={"Denoising strength": 0.5, "Lora hashes": "add_detail: 7c6bad76eb54, x: 1"})
    assert 'Model: "dream, shaper"' in text
    assert 'Lora hashes: "add_detail: 7c6bad76eb54, x: 1"' in text

    parsed = parse_infotext(text)
    assert parsed["Lora hashes"] == "add_detail: 7c6bad76eb54, x: 1"

    fields = request_fields_from_infotext(text)
    assert fields == {
        "prompt": original.prompt, "negative_prompt": original.negative_prompt,
        "steps": 33, "sampler_name": "DPM++ 2M SDE", "scheduler": "Karras", "cfg_scale": 6.5,
        "seed": 1234567890, "width": 768, "height": 512, "subseed": 42, "subseed_strength": 0.3,
        "clip_skip": 2, "checkpoint": "dream, shaper",
    }
    assert infotext_hints(text) == {"model_hash": "abcdef0123", "denoising_strength": 0.5}
    rebuilt = GenerationRequest(**fields).validate()
    for name in ("prompt", "negative_prompt", "steps", "sampler_name", "scheduler", "cfg_scale", "seed",
                 "subseed", "subseed_strength", "clip_skip", "width", "height"):
        assert getattr(rebuilt, name) == getattr(original, name), name
    assert type(rebuilt.steps) is int and type(rebuilt.cfg_scale) is float


def test_round_trip_minimal():
    text = build_infotext(request(prompt="", cfg_scale=7.0), seed=5, model_name=None, model_hash=None,
                          width=512, height=512)
    fields = request_fields_from_infotext(text)
    assert fields["prompt"] == "" and fields["negative_prompt"] == ""
    assert fields["cfg_scale"] == 7.0 and fields["clip_skip"] == 1 and fields["seed"] == 5
    assert "subseed" not in fields and "checkpoint" not in fields and infotext_hints(text) == {}


def test_known_a1111_text():
    assert parse_infotext(A1111_TEXT) == {
        "Prompt": "masterpiece, best quality, (a cat:1.2) sitting on a chair, <lora:add_detail:0.8>\nwearing a hat",
        "Negative prompt": "lowres, bad anatomy, worst quality\nblurry",
        "Steps": "28",
        "Sampler": "DPM++ 2M",
        "Schedule type": "Karras",
        "CFG scale": "6.5",
        "Seed": "3141592653",
        "Size-1": "512",
        "Size-2": "768",
        "Model hash": "6ce0161689",
        "Model": "v1-5-pruned-emaonly",
        "Denoising strength": "0.45",
        "Clip skip": "2",
        "Lora hashes": "add_detail: 7c6bad76eb54",
        "Hires upscaler": "4x-UltraSharp, tiled",
        "Version": "v1.10.1",
    }
    fields = request_fields_from_infotext(A1111_TEXT)
    assert fields["seed"] == 3141592653 and fields["width"] == 512 and fields["height"] == 768
    assert fields["checkpoint"] == "v1-5-pruned-emaonly"
    assert infotext_hints(A1111_TEXT) == {"model_hash": "6ce0161689", "denoising_strength": 0.45}


def test_legacy_sampler_names_split():
    parsed = parse_infotext("cat\nSteps: 20, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 1, Size: 512x512")
    assert (parsed["Sampler"], parsed["Schedule type"]) == ("DPM++ 2M", "Karras")
    assert parsed["Clip skip"] == "1"
    old = parse_infotext("cat\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1")
    assert (old["Sampler"], old["Schedule type"]) == ("Euler a", "Automatic")
    assert split_sampler_name("DPM++ 2M SDE Exponential") == ("DPM++ 2M SDE", "Exponential")
    assert split_sampler_name("DPM++ SDE SGM Uniform") == ("DPM++ SDE", "SGM Uniform")
    # the legacy name's schedule wins, as A1111's get_sampler_and_scheduler (the API and
    # the engine resolve names by the same rule)
    assert split_sampler_name("DPM2 a Karras", "Exponential") == ("DPM2 a", "Karras")
    assert split_sampler_name("Wobbly Karras") == ("Wobbly Karras", "Automatic")  # another tool's: as written
    assert split_sampler_name("DDIM") == ("DDIM", "Automatic")


def test_prompt_only_and_odd_text():
    assert parse_infotext("just a prompt, with: a colon")["Prompt"] == "just a prompt, with: a colon"
    parsed = parse_infotext("")
    assert parsed["Prompt"] == "" and parsed["Negative prompt"] == ""
    crlf = parse_infotext("cat\r\nNegative prompt: dog\r\nSteps: 3, Sampler: Euler, CFG scale: 2, Seed: 9")
    assert (crlf["Prompt"], crlf["Negative prompt"], crlf["Steps"]) == ("cat", "dog", "3")
    bad = request_fields_from_infotext("x\nSteps: many, Sampler: Euler, CFG scale: 7, Seed: 1.5, Size: 512x512")
    assert "steps" not in bad and "seed" not in bad and bad["cfg_scale"] == 7.0 and bad["width"] == 512


def _image():
    return Image.new("RGB", (16, 16), (200, 40, 40))


@pytest.mark.parametrize("prompt", ["a red square, flat colour", "ein Quadrat, Größe: klein 日本"])
def test_png_round_trip_pillow_and_sd_parsers(tmp_path, prompt):
    from sd_parsers import ParserManager

    req = request(prompt=prompt, negative_prompt="blurry, lowres", steps=25, sampler_name="DPM++ 2M",
                  scheduler="Karras", cfg_scale=7.5)
    text = build_infotext(req, seed=123456, model_name="demo.safetensors", model_hash="0123456789",
                          width=16, height=16, extra={"Version": "kiln"})
    path = write_png_with_infotext(_image(), tmp_path / "out.png", text)

    with Image.open(path) as im:
        assert im.text["parameters"] == text
        assert read_infotext(im) == text
    assert read_infotext(path) == text
    assert read_infotext(str(path)) == text
    assert read_infotext(path.read_bytes()) == text
    chunks = path.read_bytes()
    assert (b"tEXtparameters" in chunks) == (prompt.isascii())

    info = ParserManager().parse(path)
    assert info is not None and info.generator.name == "AUTOMATIC1111"
    assert info.full_prompt == prompt
    assert info.full_negative_prompt == "blurry, lowres"
    sampler = info.samplers[0]
    assert sampler.name == "DPM++ 2M"
    assert sampler.parameters["seed"] == "123456"
    assert sampler.parameters["steps"] == "25"
    assert sampler.parameters["cfg_scale"] == "7.5"
    assert sampler.parameters["scheduler"] == "Karras"
    assert sampler.model.name == "demo" and sampler.model.hash == "0123456789"


def test_read_infotext_none_and_exif(tmp_path):
    plain = tmp_path / "plain.png"
    _image().save(plain)
    assert read_infotext(plain) is None
    write_png_with_infotext(_image(), tmp_path / "empty.png", None)
    assert read_infotext(tmp_path / "empty.png") is None

    # A1111 keeps infotext in JPEG/WebP as EXIF UserComment, UTF-16 big-endian after "UNICODE\0"
    text = "cat, hat\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1"
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0x9286] = b"UNICODE\0" + text.encode("utf-16-be")
    buf = io.BytesIO()
    _image().save(buf, format="JPEG", exif=exif)
    assert read_infotext(buf.getvalue()) == text
    assert parse_infotext(read_infotext(buf.getvalue()))["Prompt"] == "cat, hat"


def test_infotext_module_imports_no_ui():
    import ast
    from modules.files import infotext
    tree = ast.parse(open(infotext.__file__, encoding="utf-8").read())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert not {m for m in imported if m.split(".")[0] in ("gradio", "webui")}
