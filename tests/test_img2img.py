"""img2img, inpainting and outpainting on tiny checkpoints."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from modules.generation import img2img
from modules.generation.hooks import JobControl
from modules.generation.request import GenerationRequest, RequestError


def picture(w=96, h=64) -> Image.Image:
    """A picture with structure: a gradient with a few shapes."""
    x = np.linspace(0, 255, w)[None, :, None]
    y = np.linspace(0, 255, h)[:, None, None]
    arr = np.concatenate([np.broadcast_to(x, (h, w, 1)), np.broadcast_to(y, (h, w, 1)), np.full((h, w, 1), 90.0)], 2)
    im = Image.fromarray(arr.astype(np.uint8))
    d = ImageDraw.Draw(im)
    d.ellipse((10, 10, 40, 40), fill=(250, 250, 20))
    d.rectangle((60, 30, 90, 60), fill=(20, 20, 200))
    return im


def box_mask(size, box) -> Image.Image:
    m = Image.new("L", size, 0)
    ImageDraw.Draw(m).rectangle(box, fill=255)
    return m


def arr(im) -> np.ndarray:
    return np.asarray(im.convert("RGB")).astype(np.int16)


@pytest.fixture
def runtime(make_runtime):
    rt = make_runtime()
    rt.checkpoints.load()
    return rt


def test_strength_zero_returns_the_init_image(runtime):
    init = picture()
    result = runtime.generate(GenerationRequest(prompt="x", init_images=[init], denoising_strength=0.0, steps=5,
                                                width=96, height=64, seed=1))
    assert np.array_equal(arr(result.images[0]), arr(init))
    assert result.paths[0].parent.parent.name == "img2img-images"
    assert "Denoising strength: 0," in result.infotexts[0]


@pytest.mark.parametrize("strength,expected", [(0.3, 7), (0.5, 11), (0.75, 16), (1.0, 20)])
def test_denoising_steps_follow_the_strength(runtime, strength, expected):
    """A1111: strength s runs int(s * steps) + 1 of the steps-step schedule (all at 1)."""
    calls = []
    control = JobControl(on_step=lambda step, total, _: calls.append(total))
    runtime.generate(GenerationRequest(prompt="x", init_images=[picture(64, 64)], denoising_strength=strength, steps=20,
                                       width=64, height=64, seed=1, sampler_name="Euler"), control)
    assert len(calls) == expected == calls[0]


@pytest.mark.parametrize("mode", [0, 1, 2, 3])
def test_each_resize_mode_gives_the_requested_size(runtime, mode):
    out = runtime.generate(GenerationRequest(prompt="x", init_images=[picture(100, 50)], resize_mode=mode, steps=3,
                                             denoising_strength=0.5, width=64, height=48, seed=1)).images[0]
    assert out.size == (64, 48)


def _outside(mask_blurred: Image.Image) -> np.ndarray:
    return np.asarray(mask_blurred) == 0


@pytest.mark.parametrize("ckpt", ["tiny-sd1.safetensors", "inpaint/tiny-sd1-inpainting.safetensors"])
@pytest.mark.parametrize("fill", [0, 1, 2, 3])
def test_inpaint_leaves_pixels_outside_the_blurred_mask_alone(make_runtime, ckpt, fill):
    rt = make_runtime(ckpt=ckpt)
    init = picture(96, 64)
    mask = box_mask(init.size, (40, 16, 63, 47))
    request = GenerationRequest(prompt="a red circle", init_images=[init], mask=mask, mask_blur=4, inpainting_fill=fill,
                                denoising_strength=0.9, steps=4, width=96, height=64, seed=5)
    result = rt.generate(request)
    out = arr(result.images[0])
    _, blurred = img2img.prepare_mask(mask, init.size, False, 4)
    outside = _outside(blurred)
    assert np.abs(out - arr(init))[outside].max() <= 1
    inside = np.asarray(mask) > 0
    assert np.abs(out - arr(init))[inside].mean() > 5  # the masked area was repainted
    text = result.infotexts[0]
    for item in ("Mask blur: 4", f"Masked content: {img2img.MASKED_CONTENT[fill]}", "Inpaint area: Whole picture",
                 "Mask mode: Inpaint masked", "Denoising strength: 0.9"):
        assert item in text


def test_inpaint_not_masked_inverts(runtime):
    init = picture(64, 64)
    mask = box_mask(init.size, (16, 16, 47, 47))
    out = arr(runtime.generate(GenerationRequest(prompt="x", init_images=[init], mask=mask, inpainting_mask_invert=1,
                                                 mask_blur=0, steps=3, denoising_strength=1.0, width=64, height=64,
                                                 seed=2)).images[0])
    inside = np.asarray(mask) > 0
    assert np.abs(out - arr(init))[inside].max() <= 1
    assert np.abs(out - arr(init))[~inside].mean() > 5


def test_only_masked_inpaints_a_small_region_of_a_larger_image(runtime):
    init = picture(192, 128)
    mask = box_mask(init.size, (100, 40, 115, 55))
    result = runtime.generate(GenerationRequest(prompt="x", init_images=[init], mask=mask, inpaint_full_res=True,
                                                inpaint_full_res_padding=8, mask_blur=2, steps=3, denoising_strength=1.0,
                                                width=64, height=64, seed=4))
    out = result.images[0]
    assert out.size == init.size  # only masked keeps the picture's own size
    _, blurred = img2img.prepare_mask(mask, init.size, False, 2)
    assert np.abs(arr(out) - arr(init))[_outside(blurred)].max() <= 1
    assert np.abs(arr(out) - arr(init))[np.asarray(mask) > 0].mean() > 5
    assert "Inpaint area: Only masked" in result.infotexts[0] and "Masked area padding: 8" in result.infotexts[0]


def test_brush_layer_mask_uses_alpha(runtime):
    init = picture(64, 64)
    layer = Image.new("RGBA", init.size, (0, 0, 0, 0))
    ImageDraw.Draw(layer).rectangle((20, 20, 40, 40), fill=(255, 255, 255, 255))
    out = arr(runtime.generate(GenerationRequest(prompt="x", init_images=[init], mask=layer, mask_blur=0, steps=3,
                                                 denoising_strength=1.0, width=64, height=64, seed=2)).images[0])
    inside = np.asarray(layer.getchannel("A")) > 0
    assert np.abs(out - arr(init))[~inside].max() <= 1 and np.abs(out - arr(init))[inside].mean() > 5


def test_outpaint_extends_the_picture_and_keeps_it(runtime):
    init = picture(64, 64)
    canvas, mask = img2img.outpaint_canvas(init, 16, ("left", "down"))
    assert canvas.size == (80, 80)
    result = runtime.generate(GenerationRequest(prompt="x", init_images=[canvas], mask=mask, mask_blur=2, inpainting_fill=0,
                                                denoising_strength=1.0, steps=3, width=80, height=80, seed=9))
    out = arr(result.images[0])
    _, blurred = img2img.prepare_mask(mask, canvas.size, False, 2)
    kept = _outside(blurred)
    assert kept.sum() > 0.4 * 64 * 64
    assert np.abs(out - arr(canvas))[kept].max() <= 1
    assert np.array_equal(arr(canvas)[0:64, 16:80], arr(init))  # the old picture sits at the top right


def test_img2img_needs_an_image_and_a_sane_strength(runtime):
    with pytest.raises(RequestError, match="init_images"):
        runtime.generate(GenerationRequest(prompt="x", mode="img2img", steps=2, width=64, height=64))
    with pytest.raises(RequestError, match="denoising_strength"):
        runtime.generate(GenerationRequest(prompt="x", init_images=[picture()], denoising_strength=1.5, steps=2))
