"""The Settings tab and POST /sdapi/v1/options change settings through one code path
(the runtime's settings.set): the same checks, the same messages, the same config.json.

The page is built as the server builds it (`webui.ui.app.create`) and driven as a browser
drives it: its load event fills the widgets, the test sets widgets by elem_id and calls
the "Apply settings" event's function with the values of its inputs. The API runs on the
same Runtime through FastAPI's TestClient.
"""
from __future__ import annotations

import json
import textwrap

import gradio as gr
import pytest
from fastapi.testclient import TestClient

from modules.text import conditioning
from modules.runtime import option_rules
from modules.runtime.options import Options
from tests.test_api import args_for
from webui.server import create_app
from webui.ui import app as ui_app
from webui.ui import settings as settings_ui

# an extension as an A1111 author writes its settings
FRAME_SETTINGS = '''
import gradio as gr
from modules import script_callbacks, shared


def on_ui_settings():
    section = ("frame", "Frame")
    shared.opts.add_option("frame_width", shared.OptionInfo(4, "Frame width in pixels", section=section))
    shared.opts.add_option("frame_colour", shared.OptionInfo("red", "Frame colour", gr.Radio,
                                                             {"choices": ["red", "blue"]}, section=section))
    shared.opts.add_option("frame_note", shared.OptionInfo("", "Frame note"))


script_callbacks.on_ui_settings(on_ui_settings)
'''


class Page:
    """One open page: what the browser holds for each component, as a browser drives it."""

    def __init__(self, runtime):
        self.demo = ui_app.create(runtime)
        self.events = {f.api_name: f for f in self.demo.fns.values() if isinstance(f.api_name, str)}
        self.held: dict = {}  # component -> its value in the browser
        self.load()

    def run(self, event, *inputs):
        """Call an event's function with the browser's values of its inputs; keep its outputs."""
        out = event.fn(*inputs, *[self.held[c] for c in event.inputs[len(inputs):]])
        out = out if isinstance(out, (list, tuple)) else [out]
        self.held.update(zip(event.outputs, out))
        return out

    def load(self) -> None:
        """What the browser does when the page opens (or is reloaded)."""
        self.run(self.events["settings_load"])

    @property
    def values(self) -> dict:
        return {c.elem_id: v for c, v in self.held.items() if c.elem_id}

    def widget(self, elem_id: str):
        return next(b for b in self.demo.blocks.values() if getattr(b, "elem_id", None) == elem_id)

    def apply(self, **changes) -> str:
        """Set widgets (elem_id -> value) and press "Apply settings"; returns the status shown."""
        for elem_id, value in changes.items():
            self.held[self.widget(elem_id)] = value
        return self.run(self.events["settings_apply"])[0]

    def move_quick_setting(self, elem_id: str, value):
        """Drag a quick setting at the top of the page; returns what its twin in the tab shows."""
        quick = self.widget(elem_id)
        event = next(f for f in self.demo.fns.values()
                     if f.inputs == [quick] and any(t[1] == "input" for t in f.targets))
        return self.run(event, value)[0]

    def section_of(self, elem_id: str) -> str:
        block = self.widget(elem_id)
        while block is not None and not isinstance(block, gr.Accordion):
            block = block.parent
        return block.label if block is not None else ""


@pytest.fixture
def runtime(make_runtime, tmp_path):
    scripts = tmp_path / "data" / "extensions" / "frame-settings" / "scripts"
    scripts.mkdir(parents=True)
    (scripts / "frame_settings.py").write_text(textwrap.dedent(FRAME_SETTINGS))
    rt = make_runtime()
    yield rt
    rt.jobs.shutdown(wait=True, timeout=30)


@pytest.fixture
def page(runtime):
    return Page(runtime)


@pytest.fixture
def api(runtime, page):  # the page first: it is where extensions declare their settings
    with TestClient(create_app(runtime, args_for())) as client:
        yield client


def saved(runtime) -> dict:
    return json.loads(runtime.settings.path.read_text())


# ---- the tab ------------------------------------------------------------------------------
def test_settings_tab_sits_before_extensions_and_places_every_setting(runtime, page):
    tabs = [b.label for b in page.demo.blocks.values() if isinstance(b, gr.Tab)]
    assert tabs.index("Settings") + 1 == tabs.index("Extensions")
    shown = {s.key for s in settings_ui.settings_shown(runtime)}
    for name in option_rules.defaults():  # a new setting needs a widget, or a word on where it is set
        assert name in shown or name in settings_ui.ELSEWHERE, name
    assert page.section_of("setting_emphasis") == "Stable Diffusion"
    assert page.section_of("setting_tiled_vae") == "Speed and memory"
    emphasis = page.widget("setting_emphasis")
    assert isinstance(emphasis, gr.Dropdown) and [c[1] for c in emphasis.choices] == list(conditioning.EMPHASIS_MODES)
    assert isinstance(page.widget("setting_live_previews_enable"), gr.Checkbox)
    clip = page.widget("setting_CLIP_stop_at_last_layers_tab")
    assert isinstance(clip, gr.Slider) and (clip.minimum, clip.maximum) == (1, 12)
    assert isinstance(page.widget("setting_sdxl_refiner_high_aesthetic_score"), gr.Number)
    # the limits are shown, and cannot be changed from the page
    apply_inputs = {c.elem_id for c in page.events["settings_apply"].inputs}
    for name in option_rules.READ_ONLY_OPTIONS:
        assert page.values[f"setting_{name}"] == getattr(runtime.options, name)
        assert page.widget(f"setting_{name}").interactive is False and f"setting_{name}" not in apply_inputs


def test_emphasis_applied_in_the_tab_is_what_the_api_returns_and_config_keeps(runtime, page, api):
    assert page.values["setting_emphasis"] == "Original"
    status = page.apply(setting_emphasis="No norm")
    assert "Saved 1 setting" in status and "Emphasis mode" in status and "No norm" in status
    assert api.get("/sdapi/v1/options").json()["emphasis"] == "No norm"
    assert saved(runtime)["emphasis"] == "No norm"
    assert Options.load(runtime.settings.path).emphasis == "No norm"  # what the next start reads
    assert page.apply() == "Nothing changed."


def test_settings_changed_over_the_api_show_when_the_page_loads(page, api):
    r = api.post("/sdapi/v1/options", json={"emphasis": "Ignore", "CLIP_stop_at_last_layers": 3, "sdxl_crop_top": 64,
                                            "tiled_vae": True})
    assert r.status_code == 200, r.text
    assert page.values["setting_emphasis"] == "Original"  # a page opened before shows what it loaded
    page.load()
    assert page.values["setting_emphasis"] == "Ignore"
    assert page.values["setting_sdxl_crop_top"] == 64 and page.values["setting_tiled_vae"] is True
    assert page.values["setting_CLIP_stop_at_last_layers_tab"] == 3
    assert page.values["setting_CLIP_stop_at_last_layers"] == 3  # the quick setting at the top


def test_applying_in_a_page_opened_earlier_keeps_what_the_api_changed_since(runtime, page, api):
    assert api.post("/sdapi/v1/options", json={"emphasis": "Ignore"}).status_code == 200
    status = page.apply(setting_tiled_vae=True)  # the page still shows emphasis "Original"
    assert "Tiled VAE" in status and "Emphasis" not in status
    assert runtime.options.tiled_vae is True and runtime.options.emphasis == "Ignore"
    assert page.values["setting_emphasis"] == "Ignore"  # after applying, the page shows what is saved


def test_clip_skip_in_the_tab_and_the_quick_setting_agree(runtime, page, api):
    status = page.apply(setting_CLIP_stop_at_last_layers_tab=2.0)  # a slider sends a float
    assert "Clip skip" in status and page.values["setting_CLIP_stop_at_last_layers"] == 2  # the top slider follows
    assert runtime.options.CLIP_stop_at_last_layers == 2 and saved(runtime)["CLIP_stop_at_last_layers"] == 2
    assert page.move_quick_setting("setting_CLIP_stop_at_last_layers", 5.0) == 5
    assert page.values["setting_CLIP_stop_at_last_layers_tab"] == 5  # the tab's slider follows
    assert api.get("/sdapi/v1/options").json()["CLIP_stop_at_last_layers"] == 5
    with pytest.raises(gr.Error, match="between 1 and 12"):
        page.move_quick_setting("setting_CLIP_stop_at_last_layers", 40)
    assert runtime.options.CLIP_stop_at_last_layers == 5


@pytest.mark.parametrize("name, bad, message", [
    ("emphasis", "Loud", "Emphasis mode: must be one of None, Ignore, Original, No norm, got 'Loud'"),
    ("show_progress_every_n_steps", "often", "Live preview every N sampling steps: must be a whole number"),
    ("sd_checkpoint_cache", -1, "Checkpoints to cache in RAM: must be 0 or more, got -1"),
    ("sdxl_refiner_high_aesthetic_score", "high", "SDXL high aesthetic score: must be a number"),
])
def test_a_bad_value_is_refused_with_its_message_and_changes_nothing(runtime, page, api, name, bad, message):
    before_file = runtime.settings.path.read_bytes() if runtime.settings.path.exists() else None
    before = api.get("/sdapi/v1/options").json()
    # a good change beside the bad one is not saved either
    with pytest.raises(gr.Error, match=message.replace("(", r"\(")) as refused:
        page.apply(**{f"setting_{name}": bad, "setting_sdxl_crop_left": 32})
    assert "Nothing was saved" in str(refused.value)
    assert runtime.options.sdxl_crop_left == 0 and getattr(runtime.options, name) == before[name]
    assert (runtime.settings.path.read_bytes() if runtime.settings.path.exists() else None) == before_file
    # the API refuses it through the same checks, with the same words
    r = api.post("/sdapi/v1/options", json={name: bad, "sdxl_crop_left": 32})
    assert r.status_code == 422 and r.json()["field"] == name
    assert message.split(": ", 1)[1] in r.json()["detail"]
    assert api.get("/sdapi/v1/options").json() == before


def test_limits_cannot_be_changed_from_either_face(runtime, api):
    r = api.post("/sdapi/v1/options", json={"max_steps": -5})
    assert r.status_code == 422 and r.json()["field"] == "max_steps" and "config.json" in r.json()["detail"]
    with pytest.raises(option_rules.OptionError, match="max_steps"):
        runtime.settings.set({"max_steps": -5, "emphasis": "Ignore"})
    assert runtime.options.max_steps == 150 and runtime.options.emphasis == "Original"
    # a client posting back what it read (A1111 clients do) changes nothing and is accepted
    assert api.post("/sdapi/v1/options", json=api.get("/sdapi/v1/options").json()).status_code == 200


def test_an_extension_setting_shows_in_its_section_and_saves_into_extra(runtime, page, api):
    width, colour = page.widget("setting_frame_width"), page.widget("setting_frame_colour")
    assert isinstance(width, gr.Number) and width.label == "Frame width in pixels"
    assert isinstance(colour, gr.Radio) and [c[1] for c in colour.choices] == ["red", "blue"]  # its own component
    assert page.section_of("setting_frame_width") == page.section_of("setting_frame_colour") == "Frame"
    assert page.section_of("setting_frame_note") == settings_ui.EXTENSION_SECTION
    assert page.values["setting_frame_width"] == 4 and page.values["setting_frame_colour"] == "red"  # defaults

    status = page.apply(setting_frame_width=7, setting_frame_colour="blue")
    assert "Frame width in pixels" in status and "Frame colour" in status and "Frame note" not in status
    assert runtime.options.extra["frame_width"] == 7 and runtime.options.extra["frame_colour"] == "blue"
    assert saved(runtime)["frame_width"] == 7
    assert api.get("/sdapi/v1/options").json()["frame_width"] == 7

    with pytest.raises(gr.Error, match="Frame width in pixels: must be a whole number"):
        page.apply(setting_frame_width="wide")
    r = api.post("/sdapi/v1/options", json={"frame_width": "wide"})  # the declared type holds for the API too
    assert r.status_code == 422 and r.json()["field"] == "frame_width"
    assert runtime.options.extra["frame_width"] == 7
    page.load()
    assert page.values["setting_frame_width"] == 7
