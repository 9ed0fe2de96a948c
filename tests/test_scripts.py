"""The A1111 script API: an extension written in A1111's style, unchanged, loads and works
through the engine, the API and the page; broken extensions are reported by name and do
not break generation."""
from __future__ import annotations

import base64
import io
import json
import logging
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from modules.scripts import host_of
from modules import cmd_args, script_callbacks, scripts
from modules.files import infotext
from modules.generation.request import GenerationRequest, RequestError, ScriptSelection
from webui.server import create_app

SMALL = dict(width=64, height=64, steps=3, sampler_name="Euler")

# An extension as an A1111 author writes it: module-level registration functions,
# gradio imported by the script itself, Script subclasses found by the loader.
A1111_STYLE = '''
import gradio as gr
from PIL import ImageOps

from modules import scripts, script_callbacks, shared
from modules.processing import Processed, process_images

script_callbacks.remove_current_script_callbacks()  # A1111 practice: a reload does not register twice
BASEDIR = scripts.basedir()
LOADED = []         # models on_model_loaded saw
UNLOADED = []       # on_script_unloaded calls
STEPS = []          # (sampling_step, total) of every on_cfg_denoiser call
SWAP = {"on": False}  # when on: the prompt's conditioning is replaced by the negative prompt's
SAVED = []          # files on_image_saved saw


class RunTwice(scripts.Script):
    def title(self):
        return "Run twice"

    def show(self, is_img2img):
        return not is_img2img

    def ui(self, is_img2img):
        seeds = gr.Textbox(label="Seeds", value="1,2")
        suffix = gr.Textbox(label="Suffix", value="")
        return [seeds, suffix]

    def run(self, p, seeds, suffix):
        shared.state.job_count = len(seeds.split(","))
        images, infotexts, all_seeds = [], [], []
        for seed in seeds.split(","):
            p.seed = int(seed)
            p.prompt = p.prompt + suffix
            processed = process_images(p)
            images += processed.images
            infotexts += processed.infotexts
            all_seeds += processed.all_seeds
        return Processed(p, images, all_seeds[0], infotexts[0], all_seeds=all_seeds, infotexts=infotexts)


class Tagger(scripts.Script):
    def title(self):
        return "Prompt tagger"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def ui(self, is_img2img):
        enabled = gr.Checkbox(label="Enable tagger", value=False)
        tag = gr.Textbox(label="Tag", value="tagged")
        return [enabled, tag]

    def process(self, p, enabled, tag):
        if enabled:
            p.all_prompts = [f"{prompt}, {tag}" for prompt in p.all_prompts]
            p.extra_generation_params["Tagger"] = tag

    def postprocess_image(self, p, pp, enabled, tag):
        if enabled and tag == "invert":
            pp.image = ImageOps.invert(pp.image.convert("RGB"))


def count_steps(params):
    STEPS.append((params.sampling_step, params.total_sampling_steps))
    if SWAP["on"]:
        params.text_cond = params.text_uncond.clone()


def on_saved(params):
    SAVED.append(params.filename)


def tab():
    with gr.Blocks(analytics_enabled=False) as blocks:
        gr.Markdown("hello from an extension")
    return [(blocks, "Test tab", "test_tab")]


def app_started(demo, app):
    @app.get("/test-ext/ping")
    def ping():
        return {"pong": demo is None}


script_callbacks.on_app_started(app_started)
script_callbacks.on_model_loaded(lambda sd_model: LOADED.append(sd_model.name))
script_callbacks.on_script_unloaded(lambda: UNLOADED.append(1))
script_callbacks.on_cfg_denoiser(count_steps)
script_callbacks.on_image_saved(on_saved)
script_callbacks.on_ui_tabs(tab)
'''

BROKEN_IMPORT = "import no_such_module_anywhere\n"
BROKEN_PROCESS = '''
from modules import scripts


class Boom(scripts.Script):
    def title(self):
        return "Boom"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def process(self, p, *args):
        raise RuntimeError("boom in process")
'''


def write_extension(root: Path, name: str, files: dict[str, str]) -> Path:
    folder = root / name
    for rel, text in files.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return folder


@pytest.fixture
def runtime(make_runtime, tmp_path):
    ext_root = tmp_path / "data" / "extensions"
    write_extension(ext_root, "a1111-style", {"scripts/test_script.py": A1111_STYLE})
    rt = make_runtime()
    yield rt
    rt.jobs.shutdown(wait=True, timeout=30)


def module_of(runtime, title: str, is_img2img: bool = False, alwayson: bool = False):
    script = host_of(runtime).runner.find(title, is_img2img, alwayson)
    return sys.modules[type(script).__module__]


def pixels(image) -> np.ndarray:
    return np.asarray(image.convert("RGB")).astype(np.int16)


# ---- the engine --------------------------------------------------------------------------
def test_scripts_load_with_their_titles_and_kinds(runtime, tmp_path):
    assert "Run twice" in host_of(runtime).runner.titles(False)
    assert "Run twice" not in host_of(runtime).runner.titles(True)  # show() said txt2img only
    assert host_of(runtime).runner.find("prompt tagger", True, alwayson=True) is not None
    mod = module_of(runtime, "Run twice")
    assert Path(mod.BASEDIR) == tmp_path / "data" / "extensions" / "a1111-style"
    assert not runtime.extensions.errors.errors


def test_selectable_script_runs_through_the_engine(runtime):
    result = runtime.generate(GenerationRequest(prompt="a red circle", **SMALL,
                                                scripts=ScriptSelection(name="RUN TWICE", args=["5,9", ""])))
    assert result.seeds == [5, 9] and len(result.images) == 2
    single = runtime.generate(GenerationRequest(prompt="a red circle", seed=9, **SMALL))
    assert np.array_equal(pixels(result.images[1]), pixels(single.images[0]))
    assert "Seed: 9," in result.infotexts[1]


def test_unknown_script_name_is_a_request_error(runtime):
    with pytest.raises(RequestError, match="Script 'Nope' not found"):
        runtime.generate(GenerationRequest(prompt="x", **SMALL, scripts=ScriptSelection(name="Nope")))


def test_alwayson_process_edits_the_prompt_and_infotext(runtime):
    plain = runtime.generate(GenerationRequest(prompt="a red circle", seed=3, **SMALL))
    tagged = runtime.generate(GenerationRequest(prompt="a red circle", seed=3, **SMALL,
                                                scripts=ScriptSelection(alwayson={"Prompt tagger": {"args": [True,
                                                                        "blue"]}})))
    params = infotext.parse_infotext(tagged.infotexts[0])
    assert params["Prompt"] == "a red circle, blue" and params["Tagger"] == "blue"
    same = runtime.generate(GenerationRequest(prompt="a red circle, blue", seed=3, **SMALL))
    assert np.array_equal(pixels(tagged.images[0]), pixels(same.images[0]))
    assert not np.array_equal(pixels(tagged.images[0]), pixels(plain.images[0]))


def test_alwayson_postprocess_image_replaces_the_saved_picture(runtime):
    plain = runtime.generate(GenerationRequest(prompt="x", seed=4, **SMALL))
    inverted = runtime.generate(GenerationRequest(prompt="x", seed=4, **SMALL,
                                                  scripts=ScriptSelection(alwayson={"Prompt tagger": {"args": [True,
                                                                          "invert"]}})))
    same_prompt = runtime.generate(GenerationRequest(prompt="x, invert", seed=4, **SMALL))
    assert np.array_equal(pixels(inverted.images[0]), 255 - pixels(same_prompt.images[0]))
    saved = Image.open(inverted.paths[0])
    assert np.array_equal(pixels(saved), pixels(inverted.images[0]))
    assert not np.array_equal(pixels(plain.images[0]), pixels(inverted.images[0]))


def test_cfg_denoiser_sees_every_step_and_can_change_the_conditioning(runtime):
    mod = module_of(runtime, "Run twice")
    mod.STEPS.clear()
    base = runtime.generate(GenerationRequest(prompt="a large red circle", seed=11, **SMALL))
    assert mod.STEPS == [(0, 3), (1, 3), (2, 3)]
    mod.SWAP["on"] = True
    try:
        swapped = runtime.generate(GenerationRequest(prompt="a large red circle", seed=11, **SMALL))
    finally:
        mod.SWAP["on"] = False
    empty = runtime.generate(GenerationRequest(prompt="", seed=11, **SMALL))
    assert np.abs(pixels(swapped.images[0]) - pixels(empty.images[0])).max() <= 1
    assert np.abs(pixels(swapped.images[0]) - pixels(base.images[0])).max() > 10


def test_image_saved_callback_gets_the_file(runtime):
    mod = module_of(runtime, "Run twice")
    mod.SAVED.clear()
    result = runtime.generate(GenerationRequest(prompt="x", seed=1, **SMALL))
    assert mod.SAVED == [str(result.paths[0])]


def test_model_loaded_callback_and_reload(runtime):
    mod = module_of(runtime, "Run twice")
    runtime.checkpoints.load()
    assert mod.LOADED == ["tiny-sd1.safetensors"]
    scripts.attach(runtime)  # a reload: the old scripts hear of it; the new ones register once
    assert mod.UNLOADED == [1]
    assert len(host_of(runtime).callbacks.callbacks["cfg_denoiser"]) == 1
    new = module_of(runtime, "Run twice")
    new.STEPS.clear()
    runtime.generate(GenerationRequest(prompt="x", seed=1, **SMALL))
    assert len(new.STEPS) == 3 and new is not mod


def test_broken_extensions_are_reported_and_generation_goes_on(make_runtime, tmp_path):
    root = tmp_path / "data" / "extensions"
    write_extension(root, "broken-import", {"scripts/bad.py": BROKEN_IMPORT})
    write_extension(root, "broken-process", {"scripts/boom.py": BROKEN_PROCESS})
    rt = make_runtime()
    try:
        errors = rt.extensions.errors
        (imp,) = errors.for_extension("broken-import")
        assert imp.where == "import scripts/bad.py" and "no_such_module_anywhere" in imp.message
        result = rt.generate(GenerationRequest(prompt="a red circle", seed=2, **SMALL))
        assert len(result.images) == 1 and result.paths[0].exists()
        (boom,) = errors.for_extension("broken-process")
        assert boom.where.startswith("process") and "boom in process" in boom.message
    finally:
        rt.jobs.shutdown(wait=True, timeout=30)


def test_disabled_extension_is_not_loaded(make_runtime, tmp_path):
    write_extension(tmp_path / "data" / "extensions", "a1111-style", {"scripts/test_script.py": A1111_STYLE})
    (tmp_path / "data").mkdir(exist_ok=True)
    (tmp_path / "data" / "config.json").write_text(json.dumps({"disabled_extensions": ["a1111-style"]}))
    rt = make_runtime()
    assert "Run twice" not in host_of(rt).runner.titles(False)
    assert [e.enabled for e in rt.extensions.loaded if e.name == "a1111-style"] == [False]


def test_slow_hook_is_named_in_the_log(runtime, monkeypatch, caplog):
    monkeypatch.setattr(script_callbacks, "SLOW_S", -1.0)  # every hook counts as slow
    with caplog.at_level(logging.WARNING, logger="modules.script_callbacks"):
        runtime.generate(GenerationRequest(prompt="x", seed=1, **SMALL))
    assert any("a1111-style" in r.getMessage() and "process" in r.getMessage() for r in caplog.records)


def test_shared_facade_reads_the_runtime(runtime):
    from modules import shared

    runtime.checkpoints.load()
    assert shared.opts.outdir_samples == runtime.options.outdir_samples
    assert shared.opts.samples_format == "png"
    shared.opts.my_extension_setting = 5
    assert runtime.options.extra["my_extension_setting"] == 5
    assert shared.sd_model is runtime.model
    assert shared.state.interrupted is False


# ---- the API ------------------------------------------------------------------------------
@pytest.fixture
def client(runtime):
    with TestClient(create_app(runtime, cmd_args.parse(["--nowebui"]))) as c:
        yield c


def decode(data: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(data)))


def test_api_script_name_and_args(client):
    r = client.post("/sdapi/v1/txt2img", json={"prompt": "a blue square", "script_name": "run twice",
                                               "script_args": ["7,8"], **SMALL})
    assert r.status_code == 200, r.text
    info = json.loads(r.json()["info"])
    assert info["all_seeds"] == [7, 8] and len(r.json()["images"]) == 2


def test_api_alwayson_scripts_and_defaults(client):
    r = client.post("/sdapi/v1/txt2img", json={"prompt": "a blue square", "seed": 1, **SMALL,
                                               "alwayson_scripts": {"prompt tagger": {"args": [True]}}})
    assert r.status_code == 200, r.text
    info = json.loads(r.json()["info"])
    assert info["all_prompts"] == ["a blue square, tagged"]  # the tag took its ui() default
    assert "Tagger: tagged" in info["infotexts"][0]


@pytest.mark.parametrize("body,field,message", [
    ({"script_name": "No such script"}, "script_name", "Script 'No such script' not found"),
    ({"alwayson_scripts": {"ADetailer": {"args": []}}}, "alwayson_scripts", "always on script ADetailer not found"),
])
def test_api_unknown_scripts_are_422(client, body, field, message):
    r = client.post("/sdapi/v1/txt2img", json={"prompt": "x", **SMALL, **body})
    assert r.status_code == 422 and r.json()["field"] == field and message in r.json()["detail"]


def test_app_started_callback_adds_routes(client):
    assert client.get("/test-ext/ping").json() == {"pong": True}  # demo is None with --nowebui


def test_api_lists_scripts_and_their_args(client):
    listed = client.get("/sdapi/v1/scripts").json()
    assert "run twice" in listed["txt2img"] and "run twice" not in listed["img2img"]
    assert "prompt tagger" in listed["img2img"]
    info = client.get("/sdapi/v1/script-info").json()
    twice = next(s for s in info if s["name"] == "run twice")
    assert twice["is_alwayson"] is False and [a["label"] for a in twice["args"]] == ["Seeds", "Suffix"]
    assert twice["args"][0]["value"] == "1,2"


# ---- the page ------------------------------------------------------------------------------
def test_page_has_the_script_dropdown_and_the_extension_tab(runtime):
    import gradio as gr

    from webui.ui import app as ui_app

    demo = ui_app.create(runtime)
    blocks = list(demo.blocks.values())
    dropdowns = [b for b in blocks if isinstance(b, gr.Dropdown) and b.label == "Script"]
    assert len(dropdowns) == 3  # txt2img, img2img, inpaint
    choices = [[c[0] for c in d.choices] for d in dropdowns]
    assert choices[0][0] == "None" and "Run twice" in choices[0] and "X/Y/Z plot" in choices[0]
    assert "Run twice" not in choices[1]  # txt2img only
    assert any(isinstance(b, gr.Tab) and b.label == "Test tab" for b in blocks)
    assert any(isinstance(b, gr.Markdown) and "hello from an extension" in str(b.value) for b in blocks)
    assert any(isinstance(b, gr.Checkbox) and b.label == "Enable tagger" for b in blocks)


def test_a_plain_job_goes_straight_to_the_engine_with_the_same_pixels(make_runtime, tmp_path):
    """Without the A1111 edge the runtime's own job runner runs the engine once; with the
    script host attached (and no script chosen) the job goes through A1111's p and
    process_images. Both give the same picture and the same infotext."""
    from modules.runtime.runtime import JobRunner, Runtime

    hosted = make_runtime()
    plain = Runtime(hosted.config)  # the same folders and checkpoint, no edge
    assert type(plain.job_runner) is JobRunner and isinstance(hosted.job_runner, scripts.ScriptHost)
    request = GenerationRequest(prompt="a red circle", seed=7, save_images=False, **SMALL)
    a, b = plain.generate(request), hosted.generate(request)
    assert np.array_equal(np.asarray(a.images[0]), np.asarray(b.images[0]))
    assert a.infotexts == b.infotexts
    with pytest.raises(RequestError, match="script"):  # the plain runner has no scripts to run
        plain.generate(request.replace(scripts=ScriptSelection("Run twice")))
    plain.jobs.shutdown(wait=False)
