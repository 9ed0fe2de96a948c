"""Prompt syntax reaching the text encoder: emphasis, BREAK, long prompts, prompt editing."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from modules.text import conditioning
from modules.generation.request import GenerationRequest


@pytest.fixture(scope="module")
def model(tiny_ckpt_dir, tmp_path_factory):
    from modules.models.loader import load_checkpoint

    return load_checkpoint(tiny_ckpt_dir / "tiny-sd1.safetensors", name="tiny-sd1.safetensors", short_hash="0",
                           device=torch.device("cpu"), dtype=torch.float32, cache_dir=tmp_path_factory.mktemp("c"))


def ctx(model, prompt, chunks=1):
    return conditioning.encode(model, [prompt], 1, chunks).context


def test_emphasis_scales_tokens_and_keeps_the_mean(model):
    plain = ctx(model, "red circle")
    assert torch.allclose(ctx(model, "(red:1.0) circle"), plain)
    strong = ctx(model, "(red:1.5) circle")
    assert not torch.allclose(strong, plain)
    assert torch.allclose(strong.mean(), plain.mean(), atol=1e-6)
    assert not torch.allclose(ctx(model, "[red] circle"), plain)


def test_break_and_long_prompts_make_chunks(model):
    tok = model.tokenizers[0]
    assert len(conditioning._chunks(tok, "a cat BREAK a dog")) == 2
    assert ctx(model, "a cat BREAK a dog").shape[1] == 154
    assert len(conditioning._chunks(tok, "cat " * 80)) == 2
    # a chunk that fills up backs off to a comma within its last 20 tokens
    words = "cat " * 70 + ", " + "dog " * 10
    first, second = conditioning._chunks(tok, words)
    assert len(first[0]) == 71 and len(second[0]) == 10


def test_prompt_editing_switches_the_conditioning_at_its_step(model):
    cond, uncond = conditioning.encode_scheduled(model, "[red:blue:0.5] circle", "", 20, 1)
    assert torch.allclose(cond.at(10).context, ctx(model, "red circle"))
    assert torch.allclose(cond.at(11).context, ctx(model, "blue circle"))
    alt, _ = conditioning.encode_scheduled(model, "[red|blue] circle", "", 4, 1)
    assert torch.allclose(alt.at(1).context, ctx(model, "red circle"))
    assert torch.allclose(alt.at(2).context, ctx(model, "blue circle"))


def test_prompt_editing_changes_the_picture(make_runtime):
    rt = make_runtime()
    run = lambda p: np.asarray(rt.generate(GenerationRequest(prompt=p, seed=1, steps=6, width=64, height=64,  # noqa: E731
                                                             sampler_name="Euler")).images[0]).astype(int)
    edited, red, blue = run("[red:blue:0.5] circle"), run("red circle"), run("blue circle")
    assert np.abs(edited - red).max() > 0 and np.abs(edited - blue).max() > 0


# ---------------------------------------------------------------- emphasis modes


def test_emphasis_modes_on_hidden_states():
    hidden = torch.arange(1.0, 13.0).reshape(1, 3, 4)  # 3 tokens, mean 6.5
    weights = torch.tensor([[1.0, 2.0, 1.0]])
    original = conditioning._emphasis(hidden, weights, "Original")
    no_norm = conditioning._emphasis(hidden, weights, "No norm")
    assert torch.allclose(original.mean(), hidden.mean())  # the chunk's mean is restored
    assert torch.allclose(no_norm[0, 1], hidden[0, 1] * 2) and torch.equal(no_norm[0, ::2], hidden[0, ::2])
    assert not torch.allclose(original, no_norm)
    for mode in ("Ignore", "None"):
        assert torch.equal(conditioning._emphasis(hidden, weights, mode), hidden)


def test_emphasis_modes_in_the_encoder(model):
    def enc(prompt, mode):
        return conditioning.encode(model, [prompt], 1, 1, emphasis=mode).context

    plain = ctx(model, "red circle")
    weighted = "(red:1.5) circle"
    for mode in ("Original", "No norm"):
        assert not torch.allclose(enc(weighted, mode), plain)
    # "Ignore" drops the brackets and the weights; "None" reads them as plain text
    assert torch.allclose(enc(weighted, "Ignore"), plain)
    literal = enc(weighted, "None")
    assert not torch.allclose(literal, plain)
    assert torch.allclose(literal, enc("\\(red:1.5\\) circle", "Original"))
    assert enc("a cat BREAK a dog", "None").shape[1] == 77  # BREAK is a word, not a chunk break
    assert enc("a cat BREAK a dog", "Ignore").shape[1] == 154


def test_emphasis_setting_reaches_the_picture_and_the_infotext(make_runtime):
    rt = make_runtime("tiny-sdxl.safetensors")  # SDXL's hidden states are not layer-normed: the modes differ
    request = GenerationRequest(prompt="(red:1.6) circle", seed=2, steps=3, width=64, height=64,
                                sampler_name="Euler", save_images=False)
    first = rt.generate(request)
    assert "Emphasis" not in first.infotexts[0]  # the default is not written (A1111)
    rt.options.emphasis = "No norm"
    second = rt.generate(request)
    assert "Emphasis: No norm" in second.infotexts[0]
    assert np.abs(np.asarray(first.images[0]).astype(int) - np.asarray(second.images[0]).astype(int)).max() > 0
    plain = rt.generate(request.replace(prompt="red circle"))
    assert "Emphasis" not in plain.infotexts[0]  # nothing to weigh: A1111 leaves it out


# ---------------------------------------------------------------- AND (composable diffusion)


def test_and_weights_each_sub_prompt_with_its_own_schedule(model):
    cond, uncond = conditioning.encode_composable(model, "[red:blue:2] circle AND square:0.5", "ugly", 4, 1)
    (w1, first), (w2, second) = cond.at(1)
    assert (w1, w2) == (1.0, 0.5)
    assert torch.allclose(first.context, ctx(model, "red circle"))
    assert torch.allclose(second.context, ctx(model, " square"))
    assert torch.allclose(cond.at(3)[0][1].context, ctx(model, "blue circle"))
    assert torch.allclose(uncond.at(1).context, ctx(model, "ugly"))
    _, neg = conditioning.encode_composable(model, "x", "a AND b", 4, 1)
    assert torch.allclose(neg.at(1).context, ctx(model, "a AND b"))  # the negative is not split (A1111)


def test_and_in_the_picture(make_runtime):
    rt = make_runtime()

    def run(prompt, **kw):
        request = GenerationRequest(prompt=prompt, seed=3, steps=4, width=64, height=64, sampler_name="Euler",
                                    batch_size=2, save_images=False, **kw)
        return np.stack([np.asarray(im).astype(int) for im in rt.generate(request).images])

    alone = run("red circle")
    assert np.abs(run("red circle AND blue square") - alone).max() > 0
    assert np.abs(run("red circle AND blue square:0") - alone).max() <= 1  # weight 0: the same picture
    assert np.abs(run("red circle AND blue square:0.5") - run("red circle AND blue square")).max() > 0


# ---------------------------------------------------------------- token counter


@pytest.mark.parametrize("prompt, negative, expected", [
    ("a red circle", False, (3, 75)),
    ("", False, (0, 75)),
    ("cat " * 75, False, (75, 75)),
    ("cat " * 76, False, (76, 150)),  # one token over: a second chunk
    ("cat " * 151, False, (151, 225)),
    ("a <lora:style:0.8> cat", False, (2, 75)),  # extra-network tags are not text
    ("[cat:cat cat cat:5] dog", False, (4, 75)),  # the longest text of the schedule
    ("a AND b c d", False, (3, 75)),  # the longest AND part
    ("a AND b c d", True, (5, 75)),  # the negative prompt is not split
    ("a BREAK b", False, (76, 150)),  # a chunk ended by BREAK counts in full (A1111)
    ("a BREAK", False, (75, 75)),
])
def test_token_count(model, prompt, negative, expected):
    assert conditioning.token_count(model.tokenizers[0], prompt, 20, negative=negative) == expected


def test_token_count_without_a_model_uses_the_bundled_tokenizer(make_runtime):
    rt = make_runtime()
    assert rt.model is None
    assert rt.token_count("a red circle") == (3, 75)
    rt.data_dir.mkdir(parents=True, exist_ok=True)
    (rt.data_dir / "styles.csv").write_text("name,prompt,negative_prompt\nx,one two three,bad\n")
    assert rt.token_count("a red circle", 20, ["x"]) == (7, 75)  # "a red circle, one two three"
    assert rt.token_count("", 20, ["x"], negative=True) == (1, 75)
    assert rt.model is None  # counting loaded nothing
