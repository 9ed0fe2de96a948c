"""The A1111-compatible API (/sdapi/v1), the job queue behind it, live previews and auth.

Most tests drive `create_app(runtime, args)` with FastAPI's TestClient; the queue,
progress and disconnect tests run a real uvicorn server on a free port. The tiny
checkpoints make 64x64 images in a fraction of a second; `slow_unet` stretches a job
where a test needs to watch it run.
"""
from __future__ import annotations

import base64
import io
import json
import socket
import struct
import threading
import time
import zlib
from hashlib import sha256

import httpx
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image, PngImagePlugin

from modules import cmd_args
from modules.files import infotext
from modules.runtime import previews
from modules.runtime.jobs import JobQueue, Progress
from webui.server import create_app

SMALL = {"width": 64, "height": 64, "steps": 3}


# ---- helpers --------------------------------------------------------------------------------
def b64png(image: Image.Image, text: str | None = None, prefix: bool = False) -> str:
    info = PngImagePlugin.PngInfo()
    if text:
        info.add_text("parameters", text)
    buf = io.BytesIO()
    image.save(buf, format="PNG", pnginfo=info)
    data = base64.b64encode(buf.getvalue()).decode()
    return "data:image/png;base64," + data if prefix else data


def decode(data: str) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(data)))
    image.load()
    return image


def gradient(w: int, h: int) -> Image.Image:
    x = torch.linspace(0, 255, w).round().to(torch.uint8)
    y = torch.linspace(0, 255, h).round().to(torch.uint8)
    arr = torch.stack([x[None, :].expand(h, w), y[:, None].expand(h, w), torch.full((h, w), 90, dtype=torch.uint8)], -1)
    return Image.fromarray(arr.numpy())


def png_declaring(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height, with almost no pixel data behind it."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def args_for(*flags: str):
    return cmd_args.parse(["--nowebui", *flags] if "--api" not in flags else list(flags))


def slow_unet(runtime, delay: float = 0.05):
    """Load the model and make every UNet call take `delay` seconds longer."""
    runtime.checkpoints.load()
    unet = runtime.model.unet
    forward = unet.forward

    def slow(*a, **k):
        time.sleep(delay)
        return forward(*a, **k)

    unet.forward = slow


def wait_for(predicate, timeout: float = 60.0, interval: float = 0.01):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("timed out waiting")


# ---- fixtures -------------------------------------------------------------------------------
@pytest.fixture
def runtime(make_runtime):
    rt = make_runtime()
    yield rt
    rt.jobs.shutdown(wait=True, timeout=30)


@pytest.fixture
def client(runtime):
    with TestClient(create_app(runtime, args_for())) as c:
        yield c


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def live(runtime):
    """A real uvicorn server in this process: (base url, runtime)."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(runtime, args_for()), host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, timeout=30)
    yield f"http://127.0.0.1:{port}", runtime
    server.should_exit = True
    runtime.jobs.wait_idle(60)
    thread.join(30)


# ---- txt2img ---------------------------------------------------------------------------------
def test_txt2img_response_shape_images_and_info(client, runtime):
    body = {"prompt": "a red circle", "negative_prompt": "blurry", "seed": 1234, "batch_size": 2, "n_iter": 2,
            "sampler_name": "Euler a", "cfg_scale": 6.5, **SMALL, "width": 64, "height": 48,
            "some_future_field": {"x": 1}, "restore_faces": False}
    r = client.post("/sdapi/v1/txt2img", json=body)
    assert r.status_code == 200, r.text
    data = r.json()
    assert set(data) == {"images", "parameters", "info"}
    assert len(data["images"]) == 4
    info = json.loads(data["info"])
    assert info["seed"] == 1234 and info["all_seeds"] == [1234, 1235, 1236, 1237]
    assert len(info["all_subseeds"]) == 4 and info["all_prompts"] == ["a red circle"] * 4
    assert (info["width"], info["height"], info["steps"], info["batch_size"]) == (64, 48, 3, 2)
    assert info["sampler_name"] == "Euler a" and info["cfg_scale"] == 6.5
    assert info["sd_model_name"] == "tiny-sd1" and len(info["sd_model_hash"]) == 10
    assert len(info["infotexts"]) == 4 and info["index_of_first_image"] == 0
    for i, encoded in enumerate(data["images"]):
        image = decode(encoded)
        assert image.format == "PNG" and image.size == (64, 48)
        text = image.text["parameters"]
        assert text == info["infotexts"][i]
        parsed = infotext.parse_infotext(text)
        assert parsed["Seed"] == str(1234 + i) and parsed["Prompt"] == "a red circle"
        assert parsed["Negative prompt"] == "blurry" and parsed["Size-1"] == "64" and parsed["Size-2"] == "48"
    # parameters: the request as sent, A1111's defaults filled in, unknown fields left out
    params = data["parameters"]
    assert params["prompt"] == "a red circle" and params["seed"] == 1234 and params["n_iter"] == 2
    assert params["save_images"] is False and params["send_images"] is True and params["sampler_index"] == "Euler"
    assert "some_future_field" not in params
    # A1111's API default: save_images false -> nothing written
    assert not list((runtime.data_dir / "outputs").rglob("*.png"))


def test_defaults_are_a1111s_and_save_images_saves(client, runtime):
    r = client.post("/sdapi/v1/txt2img", json={"prompt": "x", "steps": 2, "width": 64, "height": 64, "seed": 7,
                                               "save_images": True, "send_images": False})
    assert r.status_code == 200, r.text
    assert r.json()["images"] == []
    saved = sorted((runtime.data_dir / "outputs" / "txt2img-images").rglob("*.png"))
    assert [p.name.split("-", 1)[1] for p in saved] == ["7.png"]
    assert "Seed: 7," in infotext.read_infotext(saved[0])
    # unsent fields take A1111's defaults: sampler Euler (sampler_index), cfg 7, 512 wide
    params = r.json()["parameters"]
    assert (params["cfg_scale"], params["sampler_name"], params["sampler_index"]) == (7.0, None, "Euler")
    assert "Sampler: Euler," in json.loads(r.json()["info"])["infotexts"][0]


def test_null_fields_take_defaults(client):
    r = client.post("/sdapi/v1/txt2img", json={**SMALL, "seed": 3, "negative_prompt": None, "styles": None,
                                               "sampler_name": None, "cfg_scale": None, "override_settings": None})
    assert r.status_code == 200, r.text
    assert json.loads(r.json()["info"])["cfg_scale"] == 7.0


def test_sampler_index_legacy_name(client):
    r = client.post("/sdapi/v1/txt2img", json={**SMALL, "seed": 1, "sampler_index": "DPM++ 2M Karras"})
    assert r.status_code == 200, r.text
    text = json.loads(r.json()["info"])["infotexts"][0]
    assert "Sampler: DPM++ 2M," in text and "Schedule type: Karras," in text
    # sampler_name wins over sampler_index
    r = client.post("/sdapi/v1/txt2img", json={**SMALL, "seed": 1, "sampler_name": "Heun", "sampler_index": "LMS"})
    assert "Sampler: Heun," in json.loads(r.json()["info"])["infotexts"][0]


def test_infotext_field_fills_unsent_fields(client):
    text = "from infotext\nSteps: 2, Sampler: LMS, CFG scale: 5, Seed: 99, Size: 64x64"
    r = client.post("/sdapi/v1/txt2img", json={"infotext": text, "prompt": "sent prompt"})
    assert r.status_code == 200, r.text
    info = json.loads(r.json()["info"])
    assert info["prompt"] == "sent prompt" and info["seed"] == 99 and info["steps"] == 2
    assert info["sampler_name"] == "LMS" and info["cfg_scale"] == 5


def test_override_checkpoint_is_used_then_restored(client, runtime):
    assert client.post("/sdapi/v1/txt2img", json={**SMALL, "seed": 1}).status_code == 200
    assert runtime.model.name == "tiny-sd1.safetensors"
    r = client.post("/sdapi/v1/txt2img", json={**SMALL, "seed": 1, "override_settings": {
        "sd_model_checkpoint": "tiny-sd2-v", "CLIP_stop_at_last_layers": 2}})
    assert r.status_code == 200, r.text
    info = json.loads(r.json()["info"])
    assert info["sd_model_name"] == "tiny-sd2-v" and "Clip skip: 2" in info["infotexts"][0]
    assert runtime.model.name == "tiny-sd1.safetensors"
    assert client.get("/sdapi/v1/options").json()["sd_model_checkpoint"].startswith("tiny-sd1.safetensors [")
    # override_settings_restore_afterwards=false: the choice sticks
    r = client.post("/sdapi/v1/txt2img", json={**SMALL, "seed": 1, "override_settings_restore_afterwards": False,
                                               "override_settings": {"sd_model_checkpoint": "tiny-sd2-v.safetensors"}})
    assert r.status_code == 200, r.text
    assert runtime.model.name == "tiny-sd2-v.safetensors"
    assert json.loads((runtime.data_dir / "config.json").read_text())["sd_model_checkpoint"] == "tiny-sd2-v.safetensors"


# ---- bad input -----------------------------------------------------------------------------
BAD_TXT2IMG = [
    ({"sampler_name": "Eulerz"}, 404, "sampler_name"),
    ({"sampler_index": "Nope"}, 404, "sampler_index"),
    ({"scheduler": "Wobbly"}, 422, "scheduler"),
    ({"width": 65}, 422, "width"),
    ({"height": 0}, 422, "height"),
    ({"steps": 0}, 422, "steps"),
    ({"steps": 100000}, 422, "steps"),
    ({"steps": "many"}, 422, "steps"),
    ({"batch_size": 1000}, 422, "batch_size"),
    ({"cfg_scale": "high"}, 422, "cfg_scale"),
    ({"seed": -5}, 422, "seed"),
    ({"override_settings": {"sd_model_checkpoint": "no-such-model"}}, 404, "override_settings.sd_model_checkpoint"),
    ({"script_name": "No such script"}, 422, "script_name"),
    ({"alwayson_scripts": {"ADetailer": {"args": []}}}, 422, "alwayson_scripts"),
    ({"enable_hr": True}, 422, "enable_hr"),
]


@pytest.mark.parametrize("bad,status,field", BAD_TXT2IMG, ids=[b[2] + "-" + str(b[1]) for b in BAD_TXT2IMG])
def test_bad_values_are_4xx_naming_the_field(client, bad, status, field):
    r = client.post("/sdapi/v1/txt2img", json={**SMALL, "seed": 1, **bad})
    assert r.status_code == status, r.text
    body = r.json()
    assert body["field"] == field and field.split(".")[-1] in body["detail"]
    assert body["error"]


def test_malformed_json_is_422_and_the_server_keeps_serving(client):
    r = client.post("/sdapi/v1/txt2img", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["error"] == "ValidationError"
    r = client.post("/sdapi/v1/txt2img", json={**SMALL, "seed": 2})
    assert r.status_code == 200 and json.loads(r.json()["info"])["seed"] == 2


def test_prompts_that_would_hold_the_server_are_422_at_once_and_it_keeps_serving(client, runtime):
    """The probe's denial of service: 1 MB of "(" held the one queue for minutes. Now the
    prompt is checked when the request arrives: a 422 naming the field, nothing queued."""
    for field, text in (("prompt", "(" * 1_000_000), ("prompt", "[a:" * 300_000),
                        ("negative_prompt", "(((((" * 20), ("prompt", "a cat \ud800 on a mat")):
        body = json.dumps({**SMALL, "seed": 1, field: text})  # \ud800: a lone surrogate, as JSON allows
        r = client.post("/sdapi/v1/txt2img", content=body.encode(), headers={"content-type": "application/json"})
        assert r.status_code == 422, r.text[:200]
        assert r.json()["field"] == field
        assert runtime.jobs.history() == [] and runtime.jobs.pending() == []  # never queued
    r = client.post("/sdapi/v1/txt2img", json={**SMALL, "seed": 2, "prompt": "(a red circle:1.2), [big|small]"})
    assert r.status_code == 200


def test_clip_skip_past_the_text_encoder_is_clamped_with_a_warning(client):
    """The probe's clip skip 5 on a shallow encoder was a 500 on every later txt2img once
    saved. The tiny checkpoint's 2-layer encoder allows 3: the job runs with 3 and says so."""
    assert client.post("/sdapi/v1/options", json={"CLIP_stop_at_last_layers": 5}).status_code == 200
    for _ in range(2):  # the saved setting keeps working
        r = client.post("/sdapi/v1/txt2img", json={**SMALL, "seed": 1, "prompt": "a red circle"})
        assert r.status_code == 200, r.text
        info = json.loads(r.json()["info"])
        assert any("Clip skip 5" in w and "3 was used" in w for w in info["warnings"])
        assert "Clip skip: 3," in info["infotexts"][0]


def test_settings_that_config_json_cannot_hold_are_422_and_options_keep_working(client, runtime):
    """The probe's POST that broke GET /options for good: a lone surrogate in a key or a
    value, a 900-level nested value, a huge value. Each is refused before anything is
    applied; the settings and config.json stay readable."""
    nested: list = []
    for _ in range(900):
        nested = [nested]
    surrogate = '{"zz_sur\\ud800": "x"}', '{"zz_key": "x\\udfff"}'
    bodies = [text.encode() for text in surrogate] + [json.dumps({"zz_deep": nested}).encode(),
                                                       json.dumps({"zz_big": "x" * (1024 * 1024)}).encode()]
    for body in bodies:
        r = client.post("/sdapi/v1/options", content=body, headers={"content-type": "application/json"})
        assert r.status_code == 422, r.text[:200]
        assert r.json()["field"].startswith("zz_")
    assert client.get("/sdapi/v1/options").status_code == 200
    assert client.post("/sdapi/v1/options", json={"zz_client_key": [1, {"a": "b"}]}).status_code == 200
    saved = json.loads((runtime.data_dir / "config.json").read_text(encoding="utf-8"))
    assert saved["zz_client_key"] == [1, {"a": "b"}] and not any(k.startswith(("zz_sur", "zz_deep", "zz_big"))
                                                                 for k in saved)


def test_a_damaged_checkpoint_is_a_4xx_naming_the_file_and_the_model_stays(client, runtime):
    """The probe's corrupt headers gave raw Python messages ("pop expected at most 1
    argument") and a 500. Now: a 422 with the file's name and a plain sentence."""
    folder = runtime.data_dir / "models" / "Stable-diffusion"
    folder.mkdir(parents=True, exist_ok=True)
    assert client.post("/sdapi/v1/txt2img", json={**SMALL, "seed": 1}).status_code == 200
    for name, header in (("list.safetensors", b"[1, 2]"), ("entry.safetensors", b'{"w": {"dtype": "F32"}}')):
        (folder / name).write_bytes(len(header).to_bytes(8, "little") + header + b"\0" * 64)
        r = client.post("/sdapi/v1/txt2img", json={**SMALL, "seed": 1, "override_settings": {
            "sd_model_checkpoint": name.removesuffix(".safetensors")}})
        assert r.status_code == 422, r.text
        assert name in r.json()["detail"] and "corrupt safetensors header" in r.json()["detail"]
    assert runtime.model.name == "tiny-sd1.safetensors"
    assert client.post("/sdapi/v1/txt2img", json={**SMALL, "seed": 1}).status_code == 200


def test_an_empty_mask_in_only_masked_mode_at_another_size_returns_the_picture(client):
    """The probe's all-black mask, "only masked", mask and picture of different sizes:
    a 500 ("images do not match"). Nothing is masked, so the picture comes back unchanged."""
    init = gradient(96, 64)
    r = client.post("/sdapi/v1/img2img", json={**SMALL, "seed": 1, "init_images": [b64png(init)],
                                               "mask": b64png(Image.new("RGB", (48, 32), (0, 0, 0))),
                                               "inpaint_full_res": True, "denoising_strength": 0.8})
    assert r.status_code == 200, r.text
    out = decode(r.json()["images"][0]).convert("RGB")
    assert out.size == (96, 64) and out.tobytes() == init.convert("RGB").tobytes()


def test_bad_images_are_4xx_and_the_server_keeps_serving(client, runtime):
    good = b64png(gradient(64, 64))
    cases = [
        ({"init_images": ["not base64!!"]}, 400, "init_images[0]"),
        ({"init_images": [base64.b64encode(b"hello, not an image").decode()]}, 400, "init_images[0]"),
        ({"init_images": [good[: len(good) // 2]]}, 400, "init_images[0]"),  # truncated
        ({"init_images": [base64.b64encode(png_declaring(100000, 100000)).decode()]}, 413, "init_images[0]"),
        ({"init_images": [base64.b64encode(png_declaring(3000, 3000)).decode()]}, 413, "init_images[0]"),
        ({"init_images": [good], "mask": "data:image/png;base64,@@@"}, 400, "mask"),
        ({"init_images": []}, 422, "init_images"),
        ({"init_images": [good], "denoising_strength": 1.5}, 422, "denoising_strength"),
        ({"init_images": [good], "resize_mode": 9}, 422, "resize_mode"),
        ({"init_images": ["http://127.0.0.1/x.png"]}, 400, "init_images[0]"),
    ]
    for bad, status, field in cases:
        r = client.post("/sdapi/v1/img2img", json={**SMALL, "seed": 1, **bad})
        assert r.status_code == status, (bad.keys(), r.text)
        assert r.json()["field"] == field, r.text
    # a real image over the configured pixel limit is refused before decoding
    runtime.options.max_pixels = 48 * 48
    r = client.post("/sdapi/v1/png-info", json={"image": good})
    assert r.status_code == 413 and "64x64" in r.json()["detail"]
    runtime.options.max_pixels = 2048 * 2048
    r = client.post("/sdapi/v1/txt2img", json={**SMALL, "seed": 3})
    assert r.status_code == 200


# ---- img2img (A1111 semantics) ----------------------------------------------------------------
def test_img2img_strength_zero_returns_the_init_image(client):
    init = gradient(64, 64)
    r = client.post("/sdapi/v1/img2img", json={**SMALL, "seed": 1, "init_images": [b64png(init, prefix=True)],
                                               "denoising_strength": 0})
    assert r.status_code == 200, r.text
    out = decode(r.json()["images"][0]).convert("RGB")
    assert out.size == (64, 64)
    diff = (torch.tensor(list(out.getdata()), dtype=torch.float) - torch.tensor(list(init.getdata()), dtype=torch.float))
    assert diff.abs().mean() < 1.0
    assert r.json()["parameters"]["init_images"] is None  # not echoed unless include_init_images


def test_img2img_output_has_the_requested_size(client):
    r = client.post("/sdapi/v1/img2img", json={"steps": 3, "seed": 1, "width": 64, "height": 48,
                                               "init_images": [b64png(gradient(96, 80))], "denoising_strength": 0.5})
    assert r.status_code == 200, r.text
    info = json.loads(r.json()["info"])
    assert decode(r.json()["images"][0]).size == (64, 48)
    assert info["denoising_strength"] == 0.5 and "Denoising strength: 0.5" in info["infotexts"][0]


def test_unsent_size_is_the_models_native_size_or_the_init_images(client, runtime):
    # A1111 would draw 512x512 on any model; the 64-pixel demo model gets 64x64 (the tiny
    # test checkpoints say 512 and would take minutes on a CPU), an init image keeps its size
    demo = {"sd_model_checkpoint": "kiln-demo-shapes"}
    r = client.post("/sdapi/v1/txt2img", json={"prompt": "x", "steps": 2, "seed": 1, "override_settings": demo})
    assert r.status_code == 200, r.text
    native = runtime.checkpoints.load("kiln-demo-shapes").info.native_size
    assert tuple(native) == (64, 64) and decode(r.json()["images"][0]).size == (64, 64)
    assert "Size: 64x64," in json.loads(r.json()["info"])["infotexts"][0]
    r = client.post("/sdapi/v1/img2img", json={"steps": 2, "seed": 1, "init_images": [b64png(gradient(96, 80))],
                                               "denoising_strength": 0.5, "override_settings": demo})
    assert r.status_code == 200, r.text
    assert decode(r.json()["images"][0]).size == (96, 80)
    info = json.loads(r.json()["info"])
    assert (info["width"], info["height"]) == (96, 80)  # the size used, not the null that was sent


def test_inpainting_leaves_unmasked_pixels_unchanged(client):
    init = gradient(64, 64)
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (0, 0, 24, 64))  # repaint the left part only
    r = client.post("/sdapi/v1/img2img", json={**SMALL, "seed": 1, "init_images": [b64png(init)],
                                               "mask": b64png(mask.convert("RGB")), "mask_blur": 0,
                                               "denoising_strength": 0.9, "inpainting_fill": 1})
    assert r.status_code == 200, r.text
    out = decode(r.json()["images"][0]).convert("RGB")
    assert out.size == (64, 64)
    assert out.crop((32, 0, 64, 64)).tobytes() == init.crop((32, 0, 64, 64)).tobytes()
    assert out.crop((0, 0, 24, 64)).tobytes() != init.crop((0, 0, 24, 64)).tobytes()


# ---- progress, interrupt, queue ------------------------------------------------------------------
def test_idle_progress(client):
    data = client.get("/sdapi/v1/progress").json()
    assert data["progress"] == 0 and data["eta_relative"] == 0 and data["current_image"] is None
    state = data["state"]
    for key in ("job", "job_count", "job_no", "sampling_step", "sampling_steps", "interrupted", "skipped",
                "job_timestamp"):
        assert key in state
    assert state["job_count"] == 0 and state["interrupted"] is False


def test_progress_and_preview_during_a_running_job(live):
    url, runtime = live
    with httpx.Client(base_url=url, timeout=120) as http:
        assert http.post("/sdapi/v1/options", json={"show_progress_every_n_steps": 1}).status_code == 200
        slow_unet(runtime, 0.05)
        out = {}
        job = threading.Thread(target=lambda: out.update(r=http.post("/sdapi/v1/txt2img", json={
            "prompt": "x", "steps": 8, "n_iter": 2, "width": 64, "height": 64, "seed": 1})))
        job.start()

        def running():
            data = http.get("/sdapi/v1/progress").json()
            return data if data["state"]["sampling_step"] > 0 and data["current_image"] else None

        data = wait_for(running)
        state = data["state"]
        assert state["job"] == "txt2img" and state["job_count"] == 2 and state["sampling_steps"] == 8
        assert 0 < data["progress"] <= 1 and data["eta_relative"] >= 0 and data["textinfo"]
        preview = decode(data["current_image"])
        assert preview.size == (64, 64) and preview.mode == "RGB"
        assert http.get("/sdapi/v1/progress", params={"skip_current_image": True}).json()["current_image"] is None
        job.join(120)
    assert out["r"].status_code == 200 and len(out["r"].json()["images"]) == 2
    assert runtime.progress.active is False


def test_interrupt_stops_a_multi_batch_job(live):
    url, runtime = live
    slow_unet(runtime, 0.05)
    with httpx.Client(base_url=url, timeout=120) as http:
        out = {}
        job = threading.Thread(target=lambda: out.update(r=http.post("/sdapi/v1/txt2img", json={
            "prompt": "x", "steps": 8, "n_iter": 4, "width": 64, "height": 64, "seed": 1})))
        job.start()
        wait_for(lambda: http.get("/sdapi/v1/progress").json()["state"]["sampling_step"] > 0)
        assert http.post("/sdapi/v1/interrupt").status_code == 200
        job.join(120)
        r = out["r"]
        assert r.status_code == 200, r.text
        assert 1 <= len(r.json()["images"]) < 4
        assert json.loads(r.json()["info"])["interrupted"] is True
        # the next job is not interrupted
        r = http.post("/sdapi/v1/txt2img", json={**SMALL, "n_iter": 2, "seed": 1})
        assert len(r.json()["images"]) == 2 and json.loads(r.json()["info"])["interrupted"] is False


def test_interrupt_and_skip_when_idle_are_harmless(client):
    assert client.post("/sdapi/v1/interrupt").status_code == 200
    assert client.post("/sdapi/v1/skip").status_code == 200
    r = client.post("/sdapi/v1/txt2img", json={**SMALL, "seed": 1, "n_iter": 2})
    assert len(r.json()["images"]) == 2


def test_concurrent_requests_run_one_at_a_time_in_fifo_order(live):
    url, runtime = live
    slow_unet(runtime, 0.03)
    with httpx.Client(base_url=url, timeout=120) as http:
        out = {}

        def post(key, seed, task_id):
            out[key] = http.post("/sdapi/v1/txt2img", json={"prompt": key, "steps": 6, "n_iter": 2, "width": 64,
                                                            "height": 64, "seed": seed, "force_task_id": task_id})

        a = threading.Thread(target=post, args=("a", 10, "task(a)"))
        a.start()
        wait_for(lambda: http.get("/sdapi/v1/progress").json()["state"]["id_task"] == "task(a)")
        b = threading.Thread(target=post, args=("b", 20, "task(b)"))
        b.start()
        pending = wait_for(lambda: (p := http.get("/internal/pending-tasks").json())["size"] == 1 and p)
        assert pending["tasks"][0]["id"] == "task(b)" and pending["tasks"][0]["position"] == 1
        assert pending["running"]["id"] == "task(a)"
        queued = http.post("/internal/progress", json={"id_task": "task(b)"}).json()
        assert queued["queued"] is True and queued["active"] is False and queued["queue_position"] == 1
        assert http.get("/sdapi/v1/progress").json()["state"]["queued"] == 1
        a.join(120)
        b.join(120)
        done = http.post("/internal/progress", json={"id_task": "task(b)"}).json()
        assert done["completed"] is True and done["queued"] is False
    assert out["a"].status_code == 200 and out["b"].status_code == 200
    assert json.loads(out["a"].json()["info"])["all_seeds"] == [10, 11]
    assert json.loads(out["b"].json()["info"])["all_seeds"] == [20, 21]
    history = {t.id: t for t in runtime.jobs.history()}
    assert history["task(a)"].finished <= history["task(b)"].started


def test_a_client_that_disconnects_does_not_stop_the_worker(live):
    url, runtime = live
    slow_unet(runtime, 0.05)
    host, port = url.rsplit("//", 1)[1].split(":")
    body = json.dumps({"prompt": "gone", "steps": 6, "n_iter": 2, "width": 64, "height": 64, "seed": 42,
                       "save_images": True}).encode()
    with socket.create_connection((host, int(port))) as s:
        s.sendall(b"POST /sdapi/v1/txt2img HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        with httpx.Client(base_url=url, timeout=60) as http:
            wait_for(lambda: http.get("/sdapi/v1/progress").json()["state"]["sampling_step"] > 0)
    # the socket is closed: the job goes on, saves its images, and the server keeps serving
    assert runtime.jobs.wait_idle(120)
    saved = sorted(p.name for p in (runtime.data_dir / "outputs" / "txt2img-images").rglob("*.png"))
    assert [name.split("-", 1)[1] for name in saved] == ["42.png", "43.png"]
    with httpx.Client(base_url=url, timeout=60) as http:
        r = http.post("/sdapi/v1/txt2img", json={**SMALL, "seed": 5})
        assert r.status_code == 200 and json.loads(r.json()["info"])["seed"] == 5


def test_a_failing_job_does_not_kill_the_worker(client, runtime):
    runtime.checkpoints.load()
    unet = runtime.model.unet
    forward = unet.forward
    unet.forward = lambda *a, **k: (_ for _ in ()).throw(RuntimeError("boom"))
    r = client.post("/sdapi/v1/txt2img", json={**SMALL, "seed": 1})
    assert r.status_code == 500 and "boom" in r.json()["detail"]
    unet.forward = forward
    assert client.post("/sdapi/v1/txt2img", json={**SMALL, "seed": 1}).status_code == 200
    assert runtime.progress.active is False and runtime.control is None


# ---- options --------------------------------------------------------------------------------------
def test_options_get_post_persist_and_switch_checkpoint(client, runtime):
    opts = client.get("/sdapi/v1/options").json()
    for key in ("sd_model_checkpoint", "CLIP_stop_at_last_layers", "samples_save", "show_progress_every_n_steps",
                "outdir_txt2img_samples"):
        assert key in opts
    r = client.post("/sdapi/v1/options", json={"show_progress_every_n_steps": 3, "some_extension_option": [1, 2]})
    assert r.status_code == 200, r.text
    saved = json.loads((runtime.data_dir / "config.json").read_text())
    assert saved["show_progress_every_n_steps"] == 3 and saved["some_extension_option"] == [1, 2]
    assert client.get("/sdapi/v1/options").json()["some_extension_option"] == [1, 2]
    for bad, field in (({"show_progress_every_n_steps": "often"}, "show_progress_every_n_steps"),
                       ({"samples_save": "yes"}, "samples_save"),
                       ({"max_pixels": 10**12}, "max_pixels"),
                       ({"outdir_samples": "/etc"}, "outdir_samples")):
        r = client.post("/sdapi/v1/options", json=bad)
        assert r.status_code == 422 and r.json()["field"] == field, r.text
    r = client.post("/sdapi/v1/options", json={"sd_model_checkpoint": "nope.safetensors"})
    assert r.status_code == 404 and r.json()["field"] == "sd_model_checkpoint"
    # the model switches through the queue, and the choice is remembered
    r = client.post("/sdapi/v1/options", json={"sd_model_checkpoint": "tiny-sd2-v.safetensors"})
    assert r.status_code == 200, r.text
    assert runtime.model.name == "tiny-sd2-v.safetensors"
    assert json.loads((runtime.data_dir / "config.json").read_text())["sd_model_checkpoint"] == "tiny-sd2-v.safetensors"
    assert client.get("/sdapi/v1/options").json()["sd_model_checkpoint"].startswith("tiny-sd2-v.safetensors [")
    r = client.post("/sdapi/v1/txt2img", json={**SMALL, "seed": 1})
    assert json.loads(r.json()["info"])["sd_model_name"] == "tiny-sd2-v"
    assert [t.name for t in runtime.jobs.history()][-2:] == ["load checkpoint", "txt2img"]


# ---- auth ---------------------------------------------------------------------------------------------
def test_api_auth(runtime):
    with TestClient(create_app(runtime, args_for("--api-auth", "alice:s3cret,bob:hunter2"))) as c:
        r = c.get("/sdapi/v1/samplers")
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Basic"
        assert c.get("/sdapi/v1/samplers", auth=("alice", "wrong")).status_code == 401
        assert c.get("/sdapi/v1/samplers", auth=("mallory", "s3cret")).status_code == 401
        assert c.get("/sdapi/v1/samplers", auth=("alice", "s3cret")).status_code == 200
        assert c.get("/sdapi/v1/progress", auth=("bob", "hunter2")).status_code == 200
        assert c.post("/sdapi/v1/txt2img", json=SMALL).status_code == 401
        assert c.post("/sdapi/v1/txt2img", json={**SMALL, "seed": 1}, auth=("bob", "hunter2")).status_code == 200
        flags = c.get("/sdapi/v1/cmd-flags", auth=("bob", "hunter2")).json()
        assert "s3cret" not in json.dumps(flags) and flags["api_auth"] == "alice:***,bob:***"


def test_gradio_auth_alone_guards_the_api_too(runtime):
    with TestClient(create_app(runtime, args_for("--gradio-auth", "u:p"))) as c:
        assert c.get("/sdapi/v1/sd-models").status_code == 401
        assert c.get("/sdapi/v1/sd-models", auth=("u", "p")).status_code == 200


def test_api_routes_are_not_shadowed_by_the_ui(runtime):
    with TestClient(create_app(runtime, cmd_args.parse(["--api"]))) as c:
        r = c.get("/sdapi/v1/samplers")
        assert r.status_code == 200 and any(s["name"] == "Euler a" for s in r.json())
        assert c.get("/docs").status_code == 200
        page = c.get("/")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]


def test_without_api_flag_there_are_no_api_routes(runtime):
    app = create_app(runtime, cmd_args.parse([]))
    assert not [r for r in app.routes if getattr(r, "path", "").startswith("/sdapi")]


# ---- lists and models ------------------------------------------------------------------------------------
def test_sd_models_lists_the_tiny_checkpoints_with_hashes(client, tiny_ckpt_dir):
    models = {m["model_name"]: m for m in client.get("/sdapi/v1/sd-models").json()}
    assert {"tiny-sd1", "tiny-sd2-v", "tiny-sdxl", "inpaint_tiny-sd1-inpainting"} <= set(models)
    m = models["tiny-sd1"]
    digest = sha256((tiny_ckpt_dir / "tiny-sd1.safetensors").read_bytes()).hexdigest()
    assert m["sha256"] == digest and m["hash"] == digest[:10]
    assert m["title"] == f"tiny-sd1.safetensors [{digest[:10]}]"
    assert m["filename"] == str(tiny_ckpt_dir / "tiny-sd1.safetensors")
    assert models["inpaint_tiny-sd1-inpainting"]["title"].startswith("inpaint/tiny-sd1-inpainting.safetensors [")
    # a title works as an override
    r = client.post("/sdapi/v1/txt2img", json={**SMALL, "seed": 1,
                                               "override_settings": {"sd_model_checkpoint": models["tiny-sdxl"]["title"]}})
    assert r.status_code == 200 and json.loads(r.json()["info"])["sd_model_name"] == "tiny-sdxl"


def test_list_routes_answer(client):
    samplers = client.get("/sdapi/v1/samplers").json()
    assert {"Euler a", "DPM++ 2M", "DDIM"} <= {s["name"] for s in samplers}
    assert all(set(s) == {"name", "aliases", "options"} for s in samplers)
    assert "karras" in {s["name"] for s in client.get("/sdapi/v1/schedulers").json()}
    assert [u["name"] for u in client.get("/sdapi/v1/upscalers").json()][:3] == ["None", "Lanczos", "Nearest"]
    assert {"name": "Latent"} in client.get("/sdapi/v1/latent-upscale-modes").json()
    for route in ("sd-vae", "loras", "prompt-styles", "script-info", "extensions"):
        r = client.get(f"/sdapi/v1/{route}")
        assert r.status_code == 200 and isinstance(r.json(), list), route
    assert client.get("/sdapi/v1/embeddings").json() == {"loaded": {}, "skipped": {}}
    scripts = client.get("/sdapi/v1/scripts").json()
    assert set(scripts) == {"txt2img", "img2img"} and all(isinstance(v, list) for v in scripts.values())
    memory = client.get("/sdapi/v1/memory").json()
    assert memory["ram"]["total"] > 0 and "cuda" in memory
    for route in ("refresh-checkpoints", "refresh-vae", "refresh-loras"):
        assert client.post(f"/sdapi/v1/{route}").status_code == 200
    assert client.get("/openapi.json").json()["paths"]["/sdapi/v1/txt2img"]["post"]


def test_prompt_styles_read_styles_csv(client, runtime):
    runtime.data_dir.mkdir(parents=True, exist_ok=True)
    (runtime.data_dir / "styles.csv").write_text('name,prompt,negative_prompt\nfilm,"{prompt}, grain",blurry\n')
    assert client.get("/sdapi/v1/prompt-styles").json() == [
        {"name": "film", "prompt": "{prompt}, grain", "negative_prompt": "blurry"}]


def test_unload_and_reload_checkpoint(client, runtime):
    client.post("/sdapi/v1/options", json={"sd_model_checkpoint": "tiny-sd2-v.safetensors"})
    assert client.post("/sdapi/v1/unload-checkpoint").status_code == 200
    assert runtime.model is None
    assert client.post("/sdapi/v1/reload-checkpoint").status_code == 200
    assert runtime.model.name == "tiny-sd2-v.safetensors"
    client.post("/sdapi/v1/unload-checkpoint")
    r = client.post("/sdapi/v1/txt2img", json={**SMALL, "seed": 1})  # loads it again by itself
    assert json.loads(r.json()["info"])["sd_model_name"] == "tiny-sd2-v"


# ---- png-info and extras ------------------------------------------------------------------------------------
def test_png_info_parses_an_infotext(client):
    text = ('a cat, "quoted"\nNegative prompt: dog\nSteps: 20, Sampler: DPM++ 2M Karras, CFG scale: 7.5, '
            'Seed: 42, Size: 512x768, Model hash: 0123456789, Lora hashes: "a: 1, b: 2"')
    image = Image.new("RGB", (16, 16))
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", text)
    info.add_text("Comment", "hello")
    buf = io.BytesIO()
    image.save(buf, format="PNG", pnginfo=info)
    r = client.post("/sdapi/v1/png-info", json={"image": base64.b64encode(buf.getvalue()).decode()})
    assert r.status_code == 200, r.text
    data = r.json()
    assert data["info"] == text and data["items"] == {"Comment": "hello"}
    p = data["parameters"]
    assert p["Prompt"] == 'a cat, "quoted"' and p["Negative prompt"] == "dog" and p["Steps"] == "20"
    assert p["Sampler"] == "DPM++ 2M" and p["Schedule type"] == "Karras" and p["Size-2"] == "768"
    assert p["Lora hashes"] == "a: 1, b: 2"
    empty = client.post("/sdapi/v1/png-info", json={"image": b64png(image)}).json()
    assert empty["info"] == "" and empty["parameters"] == {}


def test_extra_single_image_upscales_2x_with_lanczos(client):
    source = gradient(40, 24)
    r = client.post("/sdapi/v1/extra-single-image", json={
        "image": b64png(source, "a prompt\nSteps: 3, Sampler: Euler, Seed: 1", prefix=True),
        "upscaler_1": "Lanczos", "upscaling_resize": 2})
    assert r.status_code == 200, r.text
    data = r.json()
    assert set(data) == {"html_info", "image"}
    out = decode(data["image"])
    assert out.size == (80, 48)
    assert out.convert("RGB").tobytes() == source.resize((80, 48), Image.Resampling.LANCZOS).tobytes()
    assert out.text["parameters"].startswith("a prompt")  # the source's infotext is kept
    assert "Postprocess upscaler: Lanczos" in out.text["postprocessing"] == data["html_info"]


def test_extras_modes_and_errors(client):
    source = b64png(gradient(40, 20))
    r = client.post("/sdapi/v1/extra-single-image", json={"image": source, "upscaler_1": "Nearest", "resize_mode": 1,
                                                          "upscaling_resize_w": 50, "upscaling_resize_h": 50})
    assert decode(r.json()["image"]).size == (50, 50)  # cover, then centre-crop
    r = client.post("/sdapi/v1/extra-single-image", json={"image": source, "upscaler_1": "Lanczos", "resize_mode": 1,
                                                          "upscaling_resize_w": 50, "upscaling_resize_h": 50,
                                                          "upscaling_crop": False})
    assert decode(r.json()["image"]).size == (100, 50)
    r = client.post("/sdapi/v1/extra-single-image", json={"image": source})  # upscaler "None": unchanged
    assert decode(r.json()["image"]).size == (40, 20)
    r = client.post("/sdapi/v1/extra-batch-images", json={
        "upscaler_1": "Lanczos", "upscaling_resize": 1.5,
        "imageList": [{"data": source, "name": "a.png"}, {"data": b64png(gradient(10, 10)), "name": "b.png"}]})
    assert r.status_code == 200 and [decode(i).size for i in r.json()["images"]] == [(60, 30), (15, 15)]
    for bad, status, field in (({"upscaler_1": "ESRGAN_4x"}, 404, "upscaler_1"),
                               ({"upscaler_1": "Lanczos", "upscaling_resize": 1000}, 413, "upscaling_resize"),
                               ({"upscaling_resize": -1}, 422, "upscaling_resize"),
                               ({"gfpgan_visibility": 0.5}, 422, "gfpgan_visibility"),
                               ({"image": "%%%"}, 400, "image")):
        r = client.post("/sdapi/v1/extra-single-image", json={"image": source, **bad})
        assert r.status_code == status and r.json()["field"] == field, (bad, r.text)


# ---- the engine side: queue and previews ----------------------------------------------------------------------
def test_job_queue_is_fifo_and_survives_errors():
    queue = JobQueue()
    order = []
    gate = threading.Event()
    first = queue.submit(lambda: (gate.wait(10), order.append("first"))[1], name="first")
    second = queue.submit(lambda: order.append("second") or 2, name="second")
    failing = queue.submit(lambda: 1 / 0, name="failing")
    third = queue.submit(lambda: queue.run(lambda: "inline", name="nested"), name="third")
    dropped = queue.submit(lambda: order.append("dropped"), name="dropped")
    wait_for(lambda: queue.current is first)
    assert queue.position(second.id) == 1 and queue.position(first.id) == 0
    assert [t.name for t in queue.pending()] == ["second", "failing", "third", "dropped"]
    assert queue.cancel(dropped.id) and not queue.cancel(first.id)
    gate.set()
    assert second.result(10) == 2
    with pytest.raises(ZeroDivisionError):
        failing.result(10)
    assert third.result(10) == "inline"  # a task may run another at once, not wait for itself
    assert order == ["first", "second"] and dropped.status == "cancelled" and failing.status == "failed"
    assert queue.wait_idle(10)
    queue.shutdown()


def test_progress_counts_batches_and_eta():
    p = Progress.begin("txt2img", "task(x)", job_count=2)
    for step in (1, 2, 3, 4):
        p.on_step(step, 4)
    assert p.fraction == 0.5 and p.job_no == 0
    p.on_step(1, 4)
    assert p.job_no == 1 and p.fraction == pytest.approx(0.625)
    p.started -= 10
    assert p.eta() == pytest.approx(10 / 0.625 - 10, rel=0.01)
    assert p.state()["job_count"] == 2 and Progress().fraction == 0


def test_cheap_previews():
    # SD's matrix: the latent of a flat colour maps to that colour's approximation
    latent = torch.zeros(1, 4, 2, 3)
    latent[:, 0] = 1.0
    rgb = previews.approx_rgb(latent, "sd")
    expected = (torch.tensor(previews.SD_LATENT_RGB[0]) + 1) / 2
    assert torch.allclose(rgb[0, :, 0, 0], expected)
    assert not torch.allclose(previews.approx_rgb(latent, "sdxl"), rgb)
    # unknown latent spaces are stretched to the visible range
    odd = torch.randn(2, 4, 8, 8) * 50 + 300
    stretched = previews.approx_rgb(odd, None)
    assert stretched.min() >= 0 and stretched.max() <= 1 and stretched.std() > 0.1
    grid = previews.preview(odd, None, scale=2)
    assert grid.size == (32, 16)  # two 16x16 previews side by side
    assert previews.is_due(5, 20, 5) and not previews.is_due(4, 20, 5) and not previews.is_due(5, 20, 0)


def test_preview_matrix_only_for_the_published_vaes(runtime):
    runtime.checkpoints.load()
    assert previews.latent_space(runtime.model) is None  # the tiny VAE is not SD's
