"""Prompt styles (styles.csv): applied on generate, listed and applied by the API."""
from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from modules.text import styles
from modules.text.styles import Style
from modules.generation.request import GenerationRequest, RequestError
from tests.test_api import SMALL, args_for
from webui.server import create_app

CSV = 'name,prompt,negative_prompt\nfilm,"{prompt}, film grain",blurry\nbright,"vivid colours",\n'


@pytest.fixture
def runtime(make_runtime):
    rt = make_runtime()
    rt.data_dir.mkdir(parents=True, exist_ok=True)
    (rt.data_dir / "styles.csv").write_text(CSV, encoding="utf-8")
    yield rt
    rt.jobs.shutdown(wait=True, timeout=30)


def test_expand_applies_styles_in_order(tmp_path):
    (tmp_path / "styles.csv").write_text(CSV, encoding="utf-8")
    request = GenerationRequest(prompt="a red circle", negative_prompt="ugly", styles=["film", "bright"])
    out = styles.expand(request, tmp_path)
    assert out.prompt == "a red circle, film grain, vivid colours"
    assert out.negative_prompt == "ugly, blurry"
    assert styles.expand(request.replace(styles=[]), tmp_path).prompt == "a red circle"
    with pytest.raises(RequestError, match="unknown style 'nope'.*have: bright, film"):
        styles.expand(request.replace(styles=["film", "nope"]), tmp_path)


def test_save_and_delete_styles(tmp_path):
    styles.save_style(tmp_path, Style("warm", "warm light", "cold"))
    styles.save_style(tmp_path, Style("noir", "{prompt}, black and white"))
    styles.save_style(tmp_path, Style("warm", "golden hour", ""))  # replaced in place
    assert [(s.name, s.prompt) for s in styles.load(tmp_path)] == [("warm", "golden hour"),
                                                                  ("noir", "{prompt}, black and white")]
    assert [s.name for s in styles.delete_style(tmp_path, "warm")] == ["noir"]
    with pytest.raises(RequestError, match="no style named"):
        styles.delete_style(tmp_path, "warm")
    with pytest.raises(RequestError, match="needs a name"):
        styles.save_style(tmp_path, Style("  ", "x"))


def test_generate_writes_the_expanded_prompt(runtime):
    result = runtime.generate(GenerationRequest(prompt="a red circle", styles=["film"], seed=1, steps=2, width=64,
                                                height=64, sampler_name="Euler"))
    text = result.infotexts[0]
    assert text.startswith("a red circle, film grain\nNegative prompt: blurry\n")
    same = runtime.generate(GenerationRequest(prompt="a red circle, film grain", negative_prompt="blurry", seed=1,
                                              steps=2, width=64, height=64, sampler_name="Euler"))
    assert list(result.images[0].getdata()) == list(same.images[0].getdata())


def test_api_lists_and_applies_styles(runtime):
    with TestClient(create_app(runtime, args_for())) as client:
        assert client.get("/sdapi/v1/prompt-styles").json() == [
            {"name": "film", "prompt": "{prompt}, film grain", "negative_prompt": "blurry"},
            {"name": "bright", "prompt": "vivid colours", "negative_prompt": ""}]
        r = client.post("/sdapi/v1/txt2img", json={**SMALL, "prompt": "a cat", "styles": ["film", "bright"], "seed": 4})
        assert r.status_code == 200, r.text
        info = json.loads(r.json()["info"])
        assert info["infotexts"][0].startswith("a cat, film grain, vivid colours\nNegative prompt: blurry\n")
        assert info["styles"] == ["film", "bright"]
        assert (info["prompt"], info["negative_prompt"]) == ("a cat", "")  # as typed, as A1111
        assert info["all_prompts"] == ["a cat, film grain, vivid colours"]
        bad = client.post("/sdapi/v1/txt2img", json={**SMALL, "prompt": "a cat", "styles": ["nope"]})
        assert bad.status_code == 422 and "unknown style 'nope'" in bad.json()["detail"]
        assert client.post("/sdapi/v1/txt2img", json={**SMALL, "seed": 1}).status_code == 200  # still serving


@pytest.mark.parametrize("names", [["film"], ["bright"], ["film", "bright"], ["bright", "film"], []])
def test_extract_undoes_expand(tmp_path, names):
    (tmp_path / "styles.csv").write_text(CSV + "empty,,\n", encoding="utf-8")
    expanded = styles.expand(GenerationRequest(prompt="a red circle", negative_prompt="ugly", styles=names), tmp_path)
    assert styles.extract(expanded.prompt, expanded.negative_prompt, styles.load(tmp_path)) == \
        (names, "a red circle", "ugly")


def test_extract_needs_both_prompts_to_match():
    film = Style("film", "{prompt}, film grain", "blurry")
    assert styles.extract("a cat, film grain", "ugly", [film]) == ([], "a cat, film grain", "ugly")
    assert styles.extract("a cat, film grain", "ugly, blurry", [film]) == (["film"], "a cat", "ugly")


def test_png_info_finds_the_styles_of_an_expanded_prompt(runtime):
    from tests.test_api import b64png, gradient

    text = "a cat, film grain\nNegative prompt: ugly, blurry\nSteps: 2, Sampler: Euler, Seed: 1, Size: 64x64"
    with TestClient(create_app(runtime, args_for())) as client:
        parameters = client.post("/sdapi/v1/png-info", json={"image": b64png(gradient(8, 8), text)}).json()["parameters"]
    assert parameters["Styles array"] == ["film"]
    assert (parameters["Prompt"], parameters["Negative prompt"]) == ("a cat", "ugly")
