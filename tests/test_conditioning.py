"""Prompt syntax reaching the text encoder: emphasis, BREAK, long prompts, prompt editing."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from modules import conditioning
from modules.request import GenerationRequest


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
