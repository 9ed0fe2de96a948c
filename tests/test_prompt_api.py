"""Prompt settings over the API: clip skip and emphasis as A1111 clients send them."""
from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from modules.files import infotext
from tests.test_api import SMALL, args_for, decode
from webui.server import create_app


@pytest.fixture
def client(make_runtime):
    rt = make_runtime()
    with TestClient(create_app(rt, args_for())) as c:
        yield c, rt
    rt.jobs.shutdown(wait=True, timeout=30)


def first_infotext(response) -> str:
    assert response.status_code == 200, response.text
    return json.loads(response.json()["info"])["infotexts"][0]


def pixels(response) -> bytes:
    return decode(response.json()["images"][0]).convert("RGB").tobytes()


def test_clip_skip_from_override_settings_and_options(client):
    c, rt = client
    body = {**SMALL, "prompt": "a red circle", "seed": 5}
    plain = c.post("/sdapi/v1/txt2img", json=body)
    assert "Clip skip" not in first_infotext(plain)
    skipped = c.post("/sdapi/v1/txt2img", json={**body, "override_settings": {"CLIP_stop_at_last_layers": 2}})
    text = first_infotext(skipped)
    assert "Clip skip: 2" in text
    assert infotext.request_fields_from_infotext(text)["clip_skip"] == 2
    assert pixels(skipped) != pixels(plain)
    # the saved option is the default for requests that do not override it (A1111's setting)
    assert c.post("/sdapi/v1/options", json={"CLIP_stop_at_last_layers": 2}).status_code == 200
    assert c.get("/sdapi/v1/options").json()["CLIP_stop_at_last_layers"] == 2
    assert "Clip skip: 2" in first_infotext(c.post("/sdapi/v1/txt2img", json=body))
    bad = c.post("/sdapi/v1/options", json={"CLIP_stop_at_last_layers": 40})
    assert bad.status_code == 422 and "between 1 and 12" in bad.json()["detail"]


def test_emphasis_option_and_override(client):
    c, rt = client
    body = {**SMALL, "prompt": "(red:1.5) circle", "seed": 5}
    assert c.get("/sdapi/v1/options").json()["emphasis"] == "Original"
    assert "Emphasis" not in first_infotext(c.post("/sdapi/v1/txt2img", json=body))
    text = first_infotext(c.post("/sdapi/v1/txt2img", json={**body, "override_settings": {"emphasis": "No norm"}}))
    assert "Emphasis: No norm" in text
    assert rt.options.emphasis == "Original"  # an override is for that request only
    bad = c.post("/sdapi/v1/txt2img", json={**body, "override_settings": {"emphasis": "Loud"}})
    assert bad.status_code == 422 and "Original" in bad.json()["detail"]
    assert c.post("/sdapi/v1/options", json={"emphasis": "Ignore"}).status_code == 200
    assert "Emphasis: Ignore" in first_infotext(c.post("/sdapi/v1/txt2img", json=body))
    assert c.post("/sdapi/v1/options", json={"emphasis": "loud"}).status_code == 422


def test_sdxl_crop_changes_the_picture(make_runtime):
    rt = make_runtime("tiny-sdxl.safetensors")
    with TestClient(create_app(rt, args_for())) as c:
        body = {**SMALL, "prompt": "a red circle", "seed": 5}
        plain = c.post("/sdapi/v1/txt2img", json=body).json()["images"][0]
        cropped = c.post("/sdapi/v1/txt2img", json={**body, "override_settings": {"sdxl_crop_top": 256}})
        assert cropped.status_code == 200 and cropped.json()["images"][0] != plain
        again = c.post("/sdapi/v1/txt2img", json=body).json()["images"][0]
        assert again == plain  # the override did not stick
    rt.jobs.shutdown(wait=True, timeout=30)


def test_sdxl_time_ids_follow_the_settings():
    import torch

    from modules.models.families import by_name
    from modules.text.conditioning import TextSettings, sdxl_time_ids

    class Model:
        dtype, device = torch.float32, torch.device("cpu")

        def __init__(self, family):
            self.family = by_name(family)

    settings = TextSettings(sdxl_crop_top=16, sdxl_crop_left=8, sdxl_refiner_low_aesthetic_score=2.0,
                            sdxl_refiner_high_aesthetic_score=7.0)
    assert sdxl_time_ids(Model("sdxl"), 1024, 768, False).tolist() == [[768, 1024, 0, 0, 768, 1024]]
    assert sdxl_time_ids(Model("sdxl"), 1024, 768, False, settings).tolist() == [[768, 1024, 16, 8, 768, 1024]]
    assert sdxl_time_ids(Model("sdxl_refiner"), 1024, 768, False).tolist() == [[768, 1024, 0, 0, 6.0]]
    assert sdxl_time_ids(Model("sdxl_refiner"), 1024, 768, True).tolist() == [[768, 1024, 0, 0, 2.5]]
    assert sdxl_time_ids(Model("sdxl_refiner"), 1024, 768, True, settings).tolist() == [[768, 1024, 16, 8, 2.0]]
