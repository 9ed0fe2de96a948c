"""The web UI, started as a user starts it, driven over HTTP with gradio_client."""
from __future__ import annotations

import urllib.request

import pytest

from modules.files import infotext


def test_page_is_served_on_loopback(server):
    url, _ = server
    html = urllib.request.urlopen(url, timeout=10).read().decode()
    assert "<title>Kiln</title>" in html or "Kiln" in html


def test_generate_from_the_ui_saves_a_png_with_parameters(server):
    from gradio_client import Client

    url, data = server
    client = Client(url, verbose=False)
    gallery, info, details = client.predict(
        "a red circle", "ugly", "Euler a", "Automatic", 4, 64, 64, 1, 2, 7, 1234, -1, 0, api_name="/txt2img")
    assert len(gallery) == 3  # the grid, then the two images
    assert "Seed: 1234," in info and "Steps: 4," in info and "Negative prompt: ugly" in info
    saved = sorted((data / "outputs" / "txt2img-images").rglob("*.png"))
    assert [p.name for p in saved] == ["00000-1234.png", "00001-1235.png"]
    assert "Seed: 1235," in infotext.read_infotext(saved[1])
    assert details["all_seeds"] == [1234, 1235]


def test_bad_input_is_a_message_and_the_server_keeps_serving(server):
    from gradio_client import Client

    url, _ = server
    client = Client(url, verbose=False)
    with pytest.raises(Exception, match="Unknown sampler|unknown sampler|Eulerz"):
        client.predict("x", "", "Eulerz", "Automatic", 4, 64, 64, 1, 1, 7, 1, -1, 0, api_name="/txt2img")
    gallery, info, _ = client.predict("x", "", "Euler", "Automatic", 2, 64, 64, 1, 1, 7, 5, -1, 0, api_name="/txt2img")
    assert "Seed: 5," in info


def test_img2img_batch_processes_a_folder(server, tmp_path):
    from gradio_client import Client
    from PIL import Image

    url, _ = server
    src, dst = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    for name, colour in (("a", "red"), ("b", "blue")):
        Image.new("RGB", (64, 64), colour).save(src / f"{name}.png")
    (src / "notes.txt").write_text("not an image")
    client = Client(url, verbose=False)
    client.predict("x", "", "Euler", "Automatic", 2, 64, 64, 1, 1, 7, 3, -1, 0, "Just resize", 0.5, str(src), str(dst),
                   api_name="/img2img_batch")
    assert sorted(p.name for p in dst.iterdir()) == ["a.png", "b.png"]
    assert "Denoising strength: 0.5" in infotext.read_infotext(dst / "a.png")


def test_token_counter_follows_the_prompt_without_the_queue(server):
    from gradio_client import Client

    url, _ = server
    client = Client(url, verbose=False)
    count = lambda text, api, steps=20, styles=(): client.predict(text, steps, list(styles), api_name=api)  # noqa: E731
    assert ">3/75<" in count("a red circle", "/txt2img_token_counter")
    assert ">76/150<" in count("cat " * 76, "/txt2img_token_counter")
    assert ">2/75<" in count("a <lora:x:1> cat", "/img2img_token_counter")
    assert ">5/75<" in count("a AND b c d", "/inpaint_negative_token_counter")  # negative: no AND split


def test_styles_clip_skip_and_the_style_editor(server):
    from gradio_client import Client

    url, data = server
    client = Client(url, verbose=False)
    client.predict("film", "{prompt}, film grain", "blurry", [], [], [], api_name="/txt2img_save_style")
    assert "film" in (data / "styles.csv").read_text(encoding="utf-8-sig")
    # the counter includes the chosen styles' text: "a cat, film grain"
    assert ">5/75<" in client.predict("a cat", 20, ["film"], api_name="/txt2img_token_counter")
    _, info, _ = client.predict("a cat", "", "Euler", "Automatic", 2, 64, 64, 1, 1, 7, 9, -1, 0, ["film"], 2,
                                api_name="/txt2img")
    assert info.startswith("a cat, film grain\nNegative prompt: blurry\n")
    assert "Clip skip: 2," in info
    with pytest.raises(Exception, match="'gone'"):  # a style that is not there: a message
        client.predict("a cat", "", "Euler", "Automatic", 2, 64, 64, 1, 1, 7, 9, -1, 0, ["gone"], 1,
                       api_name="/txt2img")
    # PNG Info's "Send to txt2img" selects the style and takes its text out of the prompts (A1111's "apply if any")
    sent = [v.get("value") if isinstance(v, dict) else v for v in client.predict(info, api_name="/send_to_txt2img")]
    assert sent[0] == "a cat" and sent[1] == "" and sent[-1] == ["film"] and sent[-2] == 2
    client.predict("film", [], [], [], api_name="/img2img_delete_style")
    assert "film" not in (data / "styles.csv").read_text(encoding="utf-8-sig")


def test_missing_lora_is_a_warning_under_generation_info(server):
    from gradio_client import Client

    url, _ = server
    client = Client(url, verbose=False)
    gallery, info, details = client.predict("x <lora:nowhere:0.8>", "", "Euler", "Automatic", 2, 64, 64, 1, 1, 7, 5, -1,
                                            0, [], 1, api_name="/txt2img")
    assert len(gallery) == 1 and "Warning: LoRA not found: nowhere" in info
    assert details["warnings"] == ["LoRA not found: nowhere"]
