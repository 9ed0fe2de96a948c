"""txt2img through the runtime on tiny checkpoints: seeds, batches, files, metadata."""
from __future__ import annotations

import numpy as np
import pytest

from modules.files import infotext
from modules.sampling import samplers
from modules.generation.hooks import JobControl
from modules.generation.request import GenerationRequest, RequestError

SMALL = dict(width=64, height=64, steps=4)


def pixels(image) -> np.ndarray:
    return np.asarray(image).astype(np.int16)


@pytest.fixture
def runtime(make_runtime):
    rt = make_runtime()
    rt.checkpoints.load()
    return rt


def test_same_seed_same_image_and_other_seed_differs(runtime):
    a = runtime.generate(GenerationRequest(prompt="a red circle", seed=42, **SMALL)).images[0]
    b = runtime.generate(GenerationRequest(prompt="a red circle", seed=42, **SMALL)).images[0]
    c = runtime.generate(GenerationRequest(prompt="a red circle", seed=43, **SMALL)).images[0]
    assert np.array_equal(pixels(a), pixels(b))
    assert np.abs(pixels(a) - pixels(c)).max() > 10


@pytest.mark.parametrize("sampler", ["Euler a", "DPM++ 2M", "DPM++ 2M SDE"])
def test_batch_image_i_equals_single_run_with_seed_plus_i(runtime, sampler):
    batch = runtime.generate(GenerationRequest(prompt="a blue square", seed=100, batch_size=3, sampler_name=sampler, **SMALL))
    assert batch.seeds == [100, 101, 102]
    single = runtime.generate(GenerationRequest(prompt="a blue square", seed=102, sampler_name=sampler, **SMALL))
    assert np.abs(pixels(batch.images[2]) - pixels(single.images[0])).max() <= 1


def test_batch_count_continues_the_seeds(runtime):
    result = runtime.generate(GenerationRequest(prompt="x", seed=7, batch_size=2, n_iter=2, **SMALL))
    assert result.seeds == [7, 8, 9, 10] and len(result.images) == 4
    single = runtime.generate(GenerationRequest(prompt="x", seed=9, **SMALL))
    assert np.abs(pixels(result.images[2]) - pixels(single.images[0])).max() <= 1


def test_random_seed_is_recorded(runtime):
    result = runtime.generate(GenerationRequest(prompt="x", seed=-1, **SMALL))
    assert result.seeds[0] >= 0 and f"Seed: {result.seeds[0]}," in result.infotexts[0]


def test_variation_strength_one_gives_the_variation_seeds_picture(runtime):
    base = dict(prompt="a green triangle", sampler_name="Euler", **SMALL)
    blended = runtime.generate(GenerationRequest(seed=5, subseed=9, subseed_strength=1.0, **base)).images[0]
    plain9 = runtime.generate(GenerationRequest(seed=9, **base)).images[0]
    plain5 = runtime.generate(GenerationRequest(seed=5, **base)).images[0]
    assert np.abs(pixels(blended) - pixels(plain9)).max() <= 1
    assert np.abs(pixels(blended) - pixels(plain5)).max() > 10
    half = runtime.generate(GenerationRequest(seed=5, subseed=9, subseed_strength=0.5, **base))
    assert "Variation seed: 9, Variation seed strength: 0.5" in half.infotexts[0]


def test_images_are_saved_with_infotext_that_round_trips(runtime):
    request = GenerationRequest(prompt="a large red circle, on a blue background", negative_prompt="blurry: bad",
                                seed=123, batch_size=2, sampler_name="DPM++ 2M", scheduler="Karras", cfg_scale=6.5, **SMALL)
    result = runtime.generate(request)
    assert [p.name for p in result.paths] == ["00000-123.png", "00001-124.png"]
    assert result.paths[0].parent.parent.name == "txt2img-images"
    assert result.grid_path is not None and result.grid_path.parent.parent.name == "txt2img-grids"
    text = infotext.read_infotext(result.paths[1])
    assert text == result.infotexts[1]
    fields = infotext.request_fields_from_infotext(text)
    expected = dict(prompt=request.prompt, negative_prompt=request.negative_prompt, seed=124, steps=4,
                    sampler_name="DPM++ 2M", scheduler="Karras", cfg_scale=6.5, width=64, height=64)
    assert {k: fields[k] for k in expected} == expected
    assert "Model hash: " + runtime.model.short_hash in text and "Model: tiny-sd1," in text


def test_interrupt_stops_and_keeps_what_was_made(runtime):
    control = JobControl()

    def on_step(step, total, _latents):
        if step == 2:
            control.interrupted = True

    control.on_step = on_step
    result = runtime.generate(GenerationRequest(prompt="x", seed=1, n_iter=3, **SMALL), control)
    assert result.interrupted and len(result.images) == 1 and result.paths[0].exists()


def test_bad_requests_say_which_field(runtime):
    with pytest.raises(samplers.SamplerError, match="Euler a"):
        runtime.generate(GenerationRequest(prompt="x", sampler_name="Eulerz", **SMALL))
    with pytest.raises(RequestError) as e:
        runtime.generate(GenerationRequest(prompt="x", width=65, height=64, steps=4))
    assert e.value.field == "width"
    with pytest.raises(RequestError, match="steps"):
        runtime.generate(GenerationRequest(prompt="x", steps=0, width=64, height=64))
    with pytest.raises(RequestError, match="pixels"):
        runtime.generate(GenerationRequest(prompt="x", width=32768, height=32768, steps=1))


@pytest.mark.parametrize("name,size", [
    ("tiny-sd2-v.safetensors", (64, 48)),
    ("tiny-sdxl.safetensors", (48, 64)),
    ("inpaint/tiny-sd1-inpainting.safetensors", (64, 64)),
])
def test_every_family_generates(make_runtime, name, size):
    rt = make_runtime(ckpt=name)
    result = rt.generate(GenerationRequest(prompt="a cat", seed=1, width=size[0], height=size[1], steps=3))
    image = result.images[0]
    assert image.size == size
    assert pixels(image).std() > 1  # a picture, not a flat or black frame


def test_long_prompt_is_chunked_not_cut(runtime):
    """Words past token 75 still change the picture (A1111 encodes 75-token chunks)."""
    head = "a red circle, " * 20
    a = runtime.generate(GenerationRequest(prompt=head + "blue", seed=3, **SMALL)).images[0]
    b = runtime.generate(GenerationRequest(prompt=head + "green", seed=3, **SMALL)).images[0]
    assert np.abs(pixels(a) - pixels(b)).max() > 0


def test_per_request_checkpoint_is_restored_afterwards(runtime):
    result = runtime.generate(GenerationRequest(prompt="x", seed=1, checkpoint="tiny-sdxl.safetensors", **SMALL))
    assert "Model: tiny-sdxl," in result.infotexts[0]
    assert runtime.model.name == "tiny-sd1.safetensors"
