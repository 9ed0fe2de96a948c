"""The scripts shipped in extensions/ (X/Y/Z plot, Prompt matrix, Prompts from file),
written against the public script API, through the engine and the API."""
from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from modules.scripts import host_of
from modules import cmd_args
from modules.files import infotext
from modules.generation.request import GenerationRequest, RequestError, ScriptSelection
from webui.server import create_app

SMALL = dict(width=64, height=64, steps=2, sampler_name="Euler")


@pytest.fixture
def runtime(make_runtime):
    rt = make_runtime()
    yield rt
    rt.jobs.shutdown(wait=True, timeout=30)


def pixels(image) -> np.ndarray:
    return np.asarray(image.convert("RGB")).astype(np.int16)


def module_of(runtime, title: str):
    return sys.modules[type(host_of(runtime).runner.find(title, False)).__module__]


def ink(region: Image.Image) -> bool:
    """Dark pixels (label text) in a region of white background."""
    return bool((np.asarray(region.convert("L")) < 128).any())


def xyz(*axes, **kw) -> ScriptSelection:
    """The X/Y/Z plot script with these axes (xyz_args' arguments)."""
    return ScriptSelection("X/Y/Z plot", xyz_args(*axes, **kw))


def xyz_args(x_type, x_values, y_type="Nothing", y_values="", z_type="Nothing", z_values="", lone=True):
    return [x_type, x_values, [], y_type, y_values, [], z_type, z_values, [], True, lone, False, False]


# ---- X/Y/Z plot ------------------------------------------------------------------------------
def test_xyz_value_syntax(runtime):
    mod = module_of(runtime, "X/Y/Z plot")
    assert mod.parse_values("1-5", int) == [1, 2, 3, 4, 5]
    assert mod.parse_values("10-30 (+5)", int) == [10, 15, 20, 25, 30]
    assert mod.parse_values("30-10 (-10)", int) == [30, 20, 10]
    assert mod.parse_values("1-10 [5]", int) == [1, 3, 5, 7, 10]
    assert mod.parse_values("1-2 (+0.5), 7", float) == [1.0, 1.5, 2.0, 7.0]
    assert mod.parse_values('red, "blue, dark", green', str) == ["red", "blue, dark", "green"]
    with pytest.raises(RequestError, match="not a int or a range"):
        mod.parse_values("1-x", int)


def test_xyz_steps_by_sampler_grid(runtime):
    result = runtime.generate(GenerationRequest(prompt="a red circle", seed=3, **SMALL,
                                                scripts=xyz("Steps", "1-3", "Sampler", "Euler, DPM++ 2M")))
    grid, subs = result.images[0], result.images[1:]
    assert len(subs) == 6 and len(result.infotexts) == 7
    # A1111's order: x fastest; each image's infotext tells its cell
    for i, text in enumerate(result.infotexts[1:]):
        params = infotext.parse_infotext(text)
        assert params["Steps"] == str(1 + i % 3) and params["Sampler"] == ["Euler", "DPM++ 2M"][i // 3]
    grid_params = infotext.parse_infotext(result.infotexts[0])
    assert grid_params["X Type"] == "Steps" and grid_params["X Values"] == "1, 2, 3"
    assert grid_params["Y Type"] == "Sampler"
    # a label band on top (3 column labels) and on the left (2 row labels), cells pasted exactly
    left, top = grid.width - 3 * 64, grid.height - 2 * 64
    assert left > 0 and top > 0
    for i, sub in enumerate(subs):
        x, y = left + (i % 3) * 64, top + (i // 3) * 64
        assert np.array_equal(pixels(grid.crop((x, y, x + 64, y + 64))), pixels(sub))
    assert [ink(grid.crop((left + c * 64, 0, left + (c + 1) * 64, top))) for c in range(3)] == [True] * 3
    assert [ink(grid.crop((0, top + r * 64, left, top + (r + 1) * 64))) for r in range(2)] == [True] * 2
    assert not ink(grid.crop((0, 0, left, top)))  # the corner stays blank
    # the cell with 2 steps of DPM++ 2M is that generation, alone
    alone = runtime.generate(GenerationRequest(prompt="a red circle", seed=3, **{**SMALL, "sampler_name": "DPM++ 2M"}))
    assert np.array_equal(pixels(subs[4]), pixels(alone.images[0]))
    # the grid was saved with its infotext
    saved = sorted((runtime.data_dir / "outputs" / "txt2img-grids").rglob("*xyz_grid.png"))
    assert len(saved) == 1 and "X Type: Steps" in infotext.read_infotext(saved[0])


def test_xyz_three_axes_and_prompt_sr(runtime):
    result = runtime.generate(GenerationRequest(prompt="a red circle", seed=3, **SMALL,
        scripts=xyz("Prompt S/R", "red, blue", "CFG Scale", "3, 7", "Seed", "1, 2", lone=True)))
    assert len(result.images) == 1 + 8
    prompts = [infotext.parse_infotext(t)["Prompt"] for t in result.infotexts[1:]]
    assert prompts == ["a red circle", "a blue circle"] * 4
    seeds = [infotext.parse_infotext(t)["Seed"] for t in result.infotexts[1:]]
    assert seeds == ["1"] * 4 + ["2"] * 4
    grid = result.images[0]
    assert grid.width > 2 * (2 * 64) and grid.height > 2 * 64  # two sub-grids side by side


def test_xyz_only_the_grid_without_sub_images(runtime):
    result = runtime.generate(GenerationRequest(prompt="x", seed=1, **SMALL,
        scripts=ScriptSelection("x/y/z plot", xyz_args("Steps", "1, 2", lone=False))))
    assert len(result.images) == 1 and result.images[0].width == 2 * 64


@pytest.mark.parametrize("args,message", [
    (xyz_args("Sampler", "Euler, Wobbly"), "Unknown sampler 'Wobbly'"),
    (xyz_args("Prompt S/R", "green, blue"), "did not find 'green'"),
    (xyz_args("Flavour", "1"), "unknown axis 'Flavour'"),
    (xyz_args("Checkpoint name", "no-such-model"), "checkpoint not found"),
    (xyz_args("Eta", "0, 1"), "axis 'Eta' is not supported by Kiln"),  # A1111's, but Kiln's sampler has no eta
    (xyz_args("Denoising", "0.5"), "axis 'Denoising' is not supported by Kiln in txt2img"),  # no hires. fix
    (xyz_args("Size", "64x64, 60x64"), "Size '60x64': must be a positive multiple of 8"),
    (xyz_args("Size", "64 by 64"), "Size '64 by 64' is not WIDTHxHEIGHT"),
    (xyz_args("Prompt order", "red, green"), "Prompt order did not find 'green'"),
])
def test_xyz_bad_values_are_request_errors(runtime, args, message):
    with pytest.raises(RequestError, match=message):
        runtime.generate(GenerationRequest(prompt="a red circle", seed=1, **SMALL,
                                           scripts=ScriptSelection("X/Y/Z plot", args)))


def test_xyz_prompt_order_and_size_axes(runtime):
    result = runtime.generate(GenerationRequest(prompt="a red circle, blue background", seed=3, **SMALL,
                                                scripts=xyz("Prompt order", "red, blue", "Size", "64x64, 64x128")))
    params = [infotext.parse_infotext(t) for t in result.infotexts[1:]]
    # the listed tokens trade places in the prompt: every order, x fastest
    assert [p["Prompt"] for p in params] == ["a red circle, blue background", "a blue circle, red background"] * 2
    assert [(p["Size-1"], p["Size-2"]) for p in params] == [("64", "64")] * 2 + [("64", "128")] * 2
    assert [im.size for im in result.images[1:]] == [(64, 64)] * 2 + [(64, 128)] * 2
    grid = infotext.parse_infotext(result.infotexts[0])
    assert grid["X Type"] == "Prompt order" and grid["X Values"] == "red, blue"
    assert grid["Y Type"] == "Size" and grid["Y Values"] == "64x64, 64x128"
    # every row as tall as the tallest picture: the 64x64 ones sit centred in 64x128 tiles
    picture = result.images[0]
    assert picture.width - 2 * 64 > 0 and picture.height - 2 * 128 > 0
    left, top = picture.width - 2 * 64, picture.height - 2 * 128
    tile = pixels(picture.crop((left, top, left + 64, top + 128)))
    assert (tile[:32] == 255).all() and (tile[-32:] == 255).all()
    assert np.array_equal(tile[32:96], pixels(result.images[1]))


def test_xyz_ui_sends_labels_that_pick_the_same_axes_as_a1111_indices(runtime):
    import gradio as gr

    mod = module_of(runtime, "X/Y/Z plot")
    for is_img2img in (False, True):
        script = host_of(runtime).runner.find("X/Y/Z plot", is_img2img)
        with gr.Blocks():
            x_type = script.ui(is_img2img)[0]
        labels = [c[0] if isinstance(c, (list, tuple)) else c for c in x_type.choices]
        assert labels[0] == "Nothing" and ("Denoising" in labels) == is_img2img
        a1111 = mod.a1111_labels(is_img2img)
        for label in labels:
            # what the page sends for a choice picks that axis, and A1111's index for it too
            assert mod.find_axis(x_type.preprocess(label), is_img2img).label == label
            assert mod.find_axis(a1111.index(label), is_img2img).label == label


def test_xyz_checkpoint_axis_switches_and_restores(runtime):
    runtime.checkpoints.load()
    result = runtime.generate(GenerationRequest(prompt="x", seed=1, **SMALL,
                                                scripts=xyz("Checkpoint name", "tiny-sd1, tiny-sd2-v")))
    models = [infotext.parse_infotext(t)["Model"] for t in result.infotexts[1:]]
    assert models == ["tiny-sd1", "tiny-sd2-v"]
    assert runtime.model.name == "tiny-sd1.safetensors"


# ---- Prompt matrix -----------------------------------------------------------------------------
def test_prompt_matrix_makes_every_combination(runtime):
    result = runtime.generate(GenerationRequest(prompt="a circle|red|large|on a blue background", seed=5,
                                                batch_size=3, **SMALL,
        scripts=ScriptSelection("Prompt matrix", [False, False, "positive", "comma", 0])))
    grid, subs = result.images[0], result.images[1:]
    assert len(subs) == 2 ** 3
    prompts = [infotext.parse_infotext(t)["Prompt"] for t in result.infotexts[1:]]
    assert prompts[0] == "a circle" and prompts[7] == "a circle, red, large, on a blue background"
    assert prompts[5] == "a circle, red, on a blue background"
    assert result.seeds == [5] * 8  # the same seed for all (different_seeds off)
    # 4 columns (red, large) x 2 rows (on a blue background), labels on top and left
    left, top = grid.width - 4 * 64, grid.height - 2 * 64
    assert left > 0 and top > 0
    for i, sub in enumerate(subs):
        x, y = left + (i % 4) * 64, top + (i // 4) * 64
        assert np.array_equal(pixels(grid.crop((x, y, x + 64, y + 64))), pixels(sub))
    # batches of 3 with mixed prompts give the same pictures as one prompt at a time
    alone = runtime.generate(GenerationRequest(prompt="a circle, red, on a blue background", seed=5, **SMALL))
    assert np.array_equal(pixels(subs[5]), pixels(alone.images[0]))


def test_prompt_matrix_different_seeds_and_negative(runtime):
    result = runtime.generate(GenerationRequest(prompt="a circle", negative_prompt="blurry|dark", seed=5, **SMALL,
        scripts=ScriptSelection("Prompt matrix", [True, True, "negative", "space", 0])))
    assert result.seeds == [5, 6]
    negatives = [infotext.parse_infotext(t)["Negative prompt"] for t in result.infotexts[1:]]
    assert negatives == ["blurry", "dark blurry"]


# ---- Prompts from file -----------------------------------------------------------------------
def test_prompts_from_file_runs_each_line_with_its_args(runtime):
    lines = "\n".join([
        "a red circle",
        '--prompt "a blue square" --steps 3 --seed 5',
        "",
        '--prompt "a green triangle" --negative_prompt "blurry" --cfg_scale 3.5 --sampler_name "DPM++ 2M" --batch_size 2',
    ])
    result = runtime.generate(GenerationRequest(prompt="", seed=9, **SMALL,
        scripts=ScriptSelection("Prompts from file or textbox", [False, False, "start", lines])))
    params = [infotext.parse_infotext(t) for t in result.infotexts]
    assert [p["Prompt"] for p in params] == ["a red circle", "a blue square", "a green triangle", "a green triangle"]
    assert [p["Steps"] for p in params] == ["2", "3", "2", "2"]
    assert [p["Seed"] for p in params] == ["9", "5", "9", "10"]
    assert params[2]["Negative prompt"] == "blurry" and params[2]["CFG scale"] == "3.5"
    assert params[2]["Sampler"] == "DPM++ 2M" and params[0]["Sampler"] == "Euler"
    assert len(result.paths) == 4 and all(p.exists() for p in result.paths)


def test_prompts_from_file_joins_the_prompt_box_and_iterates_seeds(runtime):
    result = runtime.generate(GenerationRequest(prompt="on a blue background", seed=9, **SMALL,
        scripts=ScriptSelection("Prompts from file or textbox", [True, False, "start", "a red circle\na green square"])))
    params = [infotext.parse_infotext(t) for t in result.infotexts]
    assert [p["Prompt"] for p in params] == ["a red circle on a blue background", "a green square on a blue background"]
    assert [p["Seed"] for p in params] == ["9", "10"]


def test_prompts_from_file_bad_line_is_a_request_error(runtime):
    with pytest.raises(RequestError, match="unknown option --flavour"):
        runtime.generate(GenerationRequest(prompt="", seed=1, **SMALL,
            scripts=ScriptSelection("Prompts from file or textbox", [False, False, "start", "ok\n--flavour sweet"])))


# ---- the API -----------------------------------------------------------------------------------
@pytest.fixture
def client(runtime):
    with TestClient(create_app(runtime, cmd_args.parse(["--nowebui"]))) as c:
        yield c


def test_api_lists_the_builtin_scripts(client):
    listed = client.get("/sdapi/v1/scripts").json()
    for tab in ("txt2img", "img2img"):
        assert {"x/y/z plot", "prompt matrix", "prompts from file or textbox"} <= set(listed[tab])
    info = {s["name"]: s for s in client.get("/sdapi/v1/script-info").json() if not s["is_img2img"]}
    assert [a["label"] for a in info["x/y/z plot"]["args"]][:3] == ["X type", "X values", "X values"]


def test_api_xyz_plot_and_bad_values(client):
    r = client.post("/sdapi/v1/txt2img", json={
        "prompt": "a red circle", "seed": 1, **SMALL, "script_name": "x/y/z plot",
        "script_args": ["CFG Scale", "3, 7", [], "Nothing", "", [], "Nothing", "", [], True, True]})
    assert r.status_code == 200, r.text
    data = r.json()
    assert len(data["images"]) == 3
    info = json.loads(data["info"])
    assert "X Type: CFG Scale" in info["infotexts"][0] and "CFG scale: 7" in info["infotexts"][2]
    r = client.post("/sdapi/v1/txt2img", json={
        "prompt": "a red circle", **SMALL, "script_name": "x/y/z plot",
        "script_args": ["Sampler", "Wobbly", []]})
    assert r.status_code == 422 and "Unknown sampler 'Wobbly'" in r.json()["detail"]


def b64png(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def test_api_xyz_a1111_axis_indices_txt2img(client):
    # A1111 1.10's txt2img list: 4 Steps, 5 Hires steps, 6 CFG Scale (Kiln's own list has no Hires steps)
    r = client.post("/sdapi/v1/txt2img", json={
        "prompt": "a red circle", "seed": 1, **SMALL, "script_name": "x/y/z plot",
        "script_args": [4, "1, 3", [], 6, "3, 7", [], 0, "", [], True, True]})
    assert r.status_code == 200, r.text
    info = json.loads(r.json()["info"])
    params = [infotext.parse_infotext(t) for t in info["infotexts"][1:]]
    assert [p["Steps"] for p in params] == ["1", "3", "1", "3"]
    assert [p["CFG scale"] for p in params] == ["3", "3", "7", "7"]
    grid = infotext.parse_infotext(info["infotexts"][0])
    assert grid["X Type"] == "Steps" and grid["Y Type"] == "CFG Scale"


@pytest.mark.parametrize("x_type,message", [
    (5, "X/Y/Z plot: axis 'Hires steps' is not supported by Kiln"),
    (25, "X/Y/Z plot: axis 'Denoising' is not supported by Kiln in txt2img"),
    ("Sigma Churn", "X/Y/Z plot: axis 'Sigma Churn' is not supported by Kiln"),
    (42, "axis index 42 is out of range: A1111's txt2img axes are 0-41"),
    (-1, "axis index -1 is out of range"),
])
def test_api_xyz_unsupported_a1111_axis_is_422_naming_it(client, x_type, message):
    r = client.post("/sdapi/v1/txt2img", json={
        "prompt": "a red circle", "seed": 1, **SMALL, "script_name": "x/y/z plot",
        "script_args": [x_type, "1, 2", [], 0, "", []]})
    assert r.status_code == 422 and message in r.json()["detail"], r.text


def test_api_xyz_a1111_axis_indices_img2img(client):
    # A1111 1.10's img2img list differs from txt2img's: 5 CFG Scale, 6 Image CFG Scale, 24 Denoising
    init = Image.new("RGB", (64, 64), (200, 40, 40))
    r = client.post("/sdapi/v1/img2img", json={
        "prompt": "a red circle", "seed": 1, **SMALL, "init_images": [b64png(init)],
        "script_name": "x/y/z plot", "script_args": [24, "0.25, 0.75", [], 5, "2, 6", [], 0, "", [], True, True]})
    assert r.status_code == 200, r.text
    info = json.loads(r.json()["info"])
    params = [infotext.parse_infotext(t) for t in info["infotexts"][1:]]
    assert [p["Denoising strength"] for p in params] == ["0.25", "0.75", "0.25", "0.75"]
    assert [p["CFG scale"] for p in params] == ["2", "2", "6", "6"]
    r = client.post("/sdapi/v1/img2img", json={
        "prompt": "a red circle", "seed": 1, **SMALL, "init_images": [b64png(init)],
        "script_name": "x/y/z plot", "script_args": [6, "1, 2", []]})
    assert r.status_code == 422 and "axis 'Image CFG Scale' is not supported by Kiln" in r.json()["detail"]


def test_builtin_scripts_load_without_importing_gradio(tmp_path):
    """An engine-only run (the API with --nowebui, evaluation, benchmarks) loads the
    built-in scripts without paying for gradio: they import it in ui()."""
    code = (
        "import json, sys, torch\n"
        "from pathlib import Path\n"
        "from modules.device.devices import DeviceConfig\n"
        "from modules.runtime.runtime import Runtime, RuntimeConfig\n"
        "from modules.scripts import attach, host_of\n"
        f"rt = Runtime(RuntimeConfig(data_dir=Path({str(tmp_path)!r}), "
        "device=DeviceConfig(torch.device('cpu'), torch.float32, 'sdpa')))\n"
        "attach(rt)\n"
        "print(json.dumps({'scripts': sorted(s.name for s in host_of(rt).runner.scripts[False]),"
        " 'gradio': 'gradio' in sys.modules}))\n"
        "rt.jobs.shutdown(wait=True, timeout=10)\n")
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(root), "HF_HUB_OFFLINE": "1"})
    assert out.returncode == 0, out.stderr
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert {"x/y/z plot", "prompt matrix", "prompts from file or textbox"} <= set(loaded["scripts"])
    assert loaded["gradio"] is False
