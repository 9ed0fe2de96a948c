"""The shipped demo model: it loads through the real single-file loader, is the default,
and draws what the prompt asks (a small evaluation through the normal generation path)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from modules.device.devices import DeviceConfig
from modules.models.detect import read_safetensors_header
from modules.generation.request import GenerationRequest
from modules.runtime.runtime import DEMO_CHECKPOINT, REPO_ROOT, Runtime, RuntimeConfig
from modules.training.evaluate import evaluate
from modules.training.shapes_world import COLOURS, nearest_colour

DEMO = REPO_ROOT / "models" / "Stable-diffusion" / DEMO_CHECKPOINT


@pytest.fixture(scope="module")
def runtime(tmp_path_factory):
    rt = Runtime(RuntimeConfig(data_dir=tmp_path_factory.mktemp("demo"),
                               device=DeviceConfig(torch.device("cpu"), torch.float32, "sdpa")))
    rt.checkpoints.load()
    return rt


def test_demo_file_is_a_small_fp16_sd1_checkpoint_with_its_recipe():
    assert DEMO.stat().st_size <= 30 * 2**20
    tensors, metadata = read_safetensors_header(DEMO)
    assert "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight" in tensors
    assert {t.dtype for k, t in tensors.items() if not k.endswith("position_ids")} == {"F16"}
    recipe = json.loads(metadata["kiln.recipe"])
    assert recipe["seed"] == 1234 and recipe["command"].startswith("python -m modules.training.train")
    assert metadata["modelspec.resolution"] == "64x64"


def test_demo_is_the_default_and_sets_the_native_size(runtime):
    model = runtime.model
    assert model.name == DEMO_CHECKPOINT
    assert (model.info.family.name, model.info.native_size) == ("sd1", (64, 64))
    image = runtime.generate(GenerationRequest(prompt="a red circle", steps=4, seed=1, save_images=False)).images[0]
    assert image.size == (64, 64)


def test_prompts_are_followed(runtime):
    """Thresholds sit below what the shipped model scores (this sample: colour 85%,
    background 100%, shape 80%, position 100%), far above chance (colours 1/8, shapes 1/3,
    positions 1/5): a broken tokenizer, loader or sampler fails."""
    score = evaluate(runtime, prompts=10, seeds=2, seed=77)
    print(score)
    # the per-word breakdown accounts for every image (and every positioned one)
    assert sum(score.shapes_drawn.values()) == score.n == 20
    assert sum(score.positions_drawn.values()) == 10
    assert "  square: " in str(score) and "  at the top: " in str(score)
    assert score.colour >= 0.8
    assert score.background >= 0.85
    assert score.shape >= 0.65
    assert score.position >= 0.85


def test_position_words_move_the_shape(runtime):
    """The same seeds, one position word changed: the shape's centre follows the word
    (an early model's text encoder had squashed position words, and the previous model
    drew large shapes asked "at the top" or "at the bottom" in the middle)."""
    names = sorted(COLOURS)

    def centre(position):
        images = runtime.generate(GenerationRequest(prompt=f"a large red square {position} on a blue background",
                                                    steps=20, seed=11, batch_size=4, save_images=False)).images
        points = []
        for image in images:
            labels = nearest_colour(np.asarray(image).reshape(-1, 3)).reshape(64, 64)
            ys, xs = np.nonzero(labels == names.index("red"))
            points.append((xs.mean() / 64, ys.mean() / 64))
        return np.array(points).mean(0)

    left, right = centre("on the left"), centre("on the right")
    assert right[0] - left[0] > 0.3, (left, right)
    assert abs(right[1] - left[1]) < 0.1, (left, right)  # sideways, not up or down
    top, bottom = centre("at the top"), centre("at the bottom")
    assert bottom[1] - top[1] > 0.3, (top, bottom)
    assert abs(bottom[0] - top[0]) < 0.1, (top, bottom)


def test_colour_word_changes_the_picture(runtime):
    def mostly(prompt):
        image = runtime.generate(GenerationRequest(prompt=prompt, steps=20, seed=5, batch_size=2,
                                                   save_images=False)).images
        counts = np.bincount(np.concatenate([nearest_colour(np.asarray(i).reshape(-1, 3)) for i in image]),
                             minlength=len(COLOURS))
        return counts
    names = sorted(COLOURS)
    red = mostly("a large red square in the centre on a white background")
    green = mostly("a large green square in the centre on a white background")
    assert red[names.index("red")] > green[names.index("red")]
    assert green[names.index("green")] > red[names.index("green")]


def test_inpainting_a_red_circle_into_a_blue_picture(runtime):
    init = Image.new("RGB", (64, 64), COLOURS["blue"])
    mask = Image.new("L", (64, 64), 0)
    ImageDraw.Draw(mask).rectangle((16, 16, 47, 47), fill=255)
    result = runtime.generate(GenerationRequest(
        prompt="a large red circle in the centre on a blue background", init_images=[init], mask=mask, mask_blur=2,
        inpainting_fill=2, denoising_strength=1.0, steps=20, seed=3, batch_size=2, save_images=False))
    names = sorted(COLOURS)
    inside = np.asarray(mask) > 0
    for image in result.images:
        a = np.asarray(image)
        labels = nearest_colour(a[inside])
        assert (labels == names.index("red")).mean() > 0.3
        assert np.abs(a.astype(int) - np.asarray(init).astype(int))[:8].max() <= 1  # the top rows are untouched


def test_the_evaluations_classifier_reads_the_training_pictures_right():
    """The judge must be right before its scores mean anything: pictures drawn by the
    dataset generator (anti-aliased, jittered) are classified back into their scene."""
    from modules.training.dataset import generate
    from modules.training.shapes_world import classify

    images, scenes = generate(120, 64, seed=5)
    got = [classify(Image.fromarray(a)) for a in images]
    assert all(g.colour == s.colour for g, s in zip(got, scenes))
    assert all(g.background == s.background for g, s in zip(got, scenes))
    assert all(g.position == s.position for g, s in zip(got, scenes))
    assert all(g.shape == s.shape for g, s in zip(got, scenes))
    # a few stray pixels of the shape's colour elsewhere do not change what the shape is
    for image, scene, before in list(zip(images, scenes, got))[:30]:
        speckled = image.copy()
        speckled[2:4, 2:4] = COLOURS[scene.colour]
        speckled[60, 30] = COLOURS[scene.colour]
        assert classify(Image.fromarray(speckled)) == before


def test_training_noise_hides_the_picture_mean_that_plain_noise_leaks():
    """The demo model learns the background from the prompt only if the noisy input at
    t=999 no longer tells it: multiscale training noise keeps unit variance per value but
    its per-image mean varies several times more than white noise's (1/16 on 16x16)."""
    from modules.training.train import multiscale_noise

    g = torch.Generator().manual_seed(0)
    noise = multiscale_noise((512, 4, 16, 16), 0.5, g)
    white = torch.randn((512, 4, 16, 16), generator=g)
    assert abs(noise.std().item() - 1) < 0.02
    assert noise.mean((2, 3)).std().item() > 4 * white.mean((2, 3)).std().item()
    # and the quadrants' means, which would give away the shape's position
    quadrants = lambda x: x.unfold(2, 8, 8).unfold(3, 8, 8).mean((-1, -2))
    assert quadrants(noise).std().item() > 3 * quadrants(white).std().item()


def test_coarse_noise_can_grow_with_the_timestep():
    """--low-noise-ramp: one weight per sample. Each sample keeps unit variance; a zero
    weight is plain white noise, a full one has the coarse-scale mean of the test above."""
    from modules.training.train import multiscale_noise

    g = torch.Generator().manual_seed(0)
    weights = torch.tensor([0.0, 0.5]).repeat_interleave(256)
    noise = multiscale_noise((512, 4, 16, 16), weights, g)
    white, coarse = noise[:256], noise[256:]
    assert abs(white.std().item() - 1) < 0.02 and abs(coarse.std().item() - 1) < 0.02
    assert white.mean((2, 3)).std().item() < 0.1  # white noise: 1/16
    assert coarse.mean((2, 3)).std().item() > 4 * white.mean((2, 3)).std().item()


def test_polishing_the_decoder_keeps_the_latents_the_unet_learned():
    """The decoder phase runs after the UNet's: the encoder must not move, or the UNet's
    latents would no longer mean the pictures they meant; the decoder must."""
    from modules.training.dataset import generate
    from modules.training.train import build_models, polish_decoder

    torch.manual_seed(0)
    _, vae, _ = build_models(64)
    images, _ = generate(8, 64, seed=3)
    guided = (torch.randn(3, 4, 8, 8), np.array([0, 5, 7]))
    before = {k: v.clone() for k, v in vae.state_dict().items()}
    saved = {}
    polish_decoder(vae, images, steps=2, batch=4, seed=1, state={}, save=lambda **kw: saved.update(kw), guided=guided)
    after = vae.state_dict()
    changed = {k.split(".")[0] for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"decoder", "post_quant_conv"}
    assert saved["decoder_step"] == 2  # resumable: the last step is saved


def test_guided_latents_are_paired_with_the_pictures_they_started_from(tmp_path):
    """Started at the last timestep, the sampler barely moves a latent: each result must sit
    next to the real latent of the picture it names (the decoder learns that picture from it)."""
    from modules.models.tokenizer import load_clip_tokenizer
    from modules.training.dataset import generate
    from modules.training.train import build_models, guided_latents

    torch.manual_seed(0)
    text, _, unet = build_models(64)
    _, scenes = generate(20, 64, seed=4)
    latents = torch.randn(20, 4, 8, 8)
    z, index = guided_latents(text.eval(), unet.eval(), load_clip_tokenizer(str(tmp_path)), latents, scenes, count=6, seed=2,
                              batch=4, start_t=(1, 2))
    assert z.shape == (6, 4, 8, 8) and index.shape == (6,)
    distances = torch.cdist(z.flatten(1), latents.flatten(1))
    assert (distances.argmin(1).numpy() == index).all()
    assert (distances.min(1).values < 0.2 * distances.median(1).values).all()


def test_img2img_at_cfg_7_keeps_a_square_square(runtime):
    """Guidance overshoots what the unconditional model, less sure of the shape, rounds off,
    and the sampler draws four-pointed stars. The previous model, whose decoder had only
    seen real latents, kept 7 of these 12 squares. A user's square must stay a square."""
    import random

    from modules.training.shapes_world import Scene, classify, draw_scene

    kept = 0
    for i, (colour, background) in enumerate([("red", "blue"), ("white", "green"), ("yellow", "black"),
                                              ("orange", "purple"), ("black", "white"), ("blue", "yellow")]):
        for size in ("small", "large"):
            scene = Scene(colour, "square", background, size, "in the centre")
            init = draw_scene(scene, 64, random.Random(i))
            result = runtime.generate(GenerationRequest(
                prompt=scene.caption(), init_images=[init], denoising_strength=0.3, steps=20, sampler_name="Euler a",
                cfg_scale=7, seed=i, save_images=False))
            kept += classify(result.images[0]).shape == "square"
    assert kept >= 9


def test_evaluating_a_missing_checkpoint_fails_instead_of_scoring_the_default(tmp_path):
    from modules.training.evaluate import main

    with pytest.raises(SystemExit) as exit_:
        main(["--ckpt", str(tmp_path / "typo.safetensors"), "--prompts", "1", "--seeds", "1"])
    assert "checkpoint not found" in str(exit_.value) and "typo.safetensors" in str(exit_.value)
