"""The Settings tab (A1111's): every setting in sections, a typed widget each, and
"Apply settings"; and the quick settings at the top of the page (Clip skip).

Both change settings through the runtime's `settings.set`, the code path of POST
/sdapi/v1/options, so the page and the API refuse the same bad values with the same
message, and a refused change changes nothing. The API may change config.json while a
page is open, so the widgets take the saved values every time the page loads, and
"Apply settings" sends only the settings changed on this page since then (a stale widget
does not undo another client's change), then shows every saved value again.
Extensions' settings (`shared.opts.add_option` from `on_ui_settings`) get a section each.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import gradio as gr

from modules.runtime import option_rules
from modules.runtime.option_rules import OptionError

EMPHASIS_INFO = ("Original: weights scale the tokens, then the mean is restored (A1111's); No norm: without "
                 "restoring the mean; Ignore: brackets are read, their weights ignored; None: brackets are text")
LIMITS_NOTE = ("These protect the server from its clients, so the page and the API show them without changing "
               "them: edit `config.json` in the data folder while Kiln is stopped.")

# Kiln's own settings as the tab shows them: section -> (setting, label, help), in order
CORE_SECTIONS: tuple[tuple[str, tuple[tuple[str, str, str], ...]], ...] = (
    ("Saving images", (
        ("samples_save", "Always save all generated images", ""),
        ("grid_save", "Always save all generated image grids", ""),
        ("outdir_samples", "Output folder", "inside the data folder: <mode>-images/, <mode>-grids/"),
    )),
    ("Stable Diffusion", (
        ("CLIP_stop_at_last_layers", "Clip skip", "the Clip skip slider at the top of the page"),
        ("emphasis", "Emphasis mode", EMPHASIS_INFO),
        ("default_prediction_type", "Prediction type of checkpoints that do not say",
         "v_prediction for SD 2.x 768-v checkpoints without a .yaml beside them"),
    )),
    ("SDXL", (
        ("sdxl_crop_top", "Crop top coordinate", ""),
        ("sdxl_crop_left", "Crop left coordinate", ""),
        ("sdxl_refiner_low_aesthetic_score", "SDXL low aesthetic score", "the refiner's negative prompt"),
        ("sdxl_refiner_high_aesthetic_score", "SDXL high aesthetic score", "the refiner's prompt"),
    )),
    ("Live previews", (
        ("live_previews_enable", "Show live previews of the created image", ""),
        ("show_progress_every_n_steps", "Live preview every N sampling steps", "0: no previews"),
    )),
    ("Speed and memory", (
        ("tiled_vae", "Tiled VAE", "decode and encode in tiles: large images (turned on after running out of memory)"),
        ("channels_last", "channels_last memory format", "applies when the next checkpoint loads"),
        ("sd_checkpoint_cache", "Checkpoints to cache in RAM", "switching back to one of them skips the disk"),
    )),
    ("Limits", (
        ("max_pixels", "Largest image (width x height, pixels)", ""),
        ("max_steps", "Most sampling steps", ""),
        ("max_batch_size", "Largest batch size", ""),
        ("max_batch_count", "Most batches", ""),
    )),
)
# settings this tab leaves out, and where a person changes them
ELSEWHERE = {"sd_model_checkpoint": "the checkpoint list at the top of the page",
             "disabled_extensions": "the Extensions tab", "disable_all_extensions": "the Extensions tab"}
EXTENSION_SECTION = "Other extension settings"  # an OptionInfo without a section


@dataclass(frozen=True)
class Setting:
    """One setting as the tab shows it."""
    key: str
    label: str
    section: str
    default: Any  # its type is the widget's type
    info: str = ""
    read_only: bool = False
    component: Any = None  # an extension's own Gradio component class (OptionInfo.component)
    component_args: Any = None  # its arguments: a dict, or a function that returns one


@dataclass
class SettingsTab:
    settings: list[Setting]  # in the order of `widgets`
    widgets: dict[str, gr.components.Component] = field(default_factory=dict)  # setting -> its widget
    status: gr.Markdown | None = None

    @property
    def editable(self) -> list[Setting]:
        return [s for s in self.settings if not s.read_only and s.key in self.widgets]


def _section_title(section) -> str:
    """OptionInfo.section is A1111's (id, title[, category]) tuple."""
    if isinstance(section, (tuple, list)) and len(section) >= 2 and section[1]:
        return str(section[1])
    return EXTENSION_SECTION


def settings_shown(runtime) -> list[Setting]:
    """Kiln's settings in CORE_SECTIONS' order, then the extensions' by section."""
    defaults = option_rules.defaults()
    shown = [Setting(key, label, title, defaults[key], info, key in option_rules.READ_ONLY_OPTIONS)
             for title, rows in CORE_SECTIONS for key, label, info in rows]
    declared = [Setting(key, str(getattr(option, "label", "") or key), _section_title(getattr(option, "section", None)),
                        getattr(option, "default", None), component=getattr(option, "component", None),
                        component_args=getattr(option, "component_args", None))
                for key, option in runtime.settings.declared.items() if key not in defaults and key not in ELSEWHERE]
    sections = list(dict.fromkeys(s.section for s in declared))
    return shown + sorted(declared, key=lambda s: sections.index(s.section))


def elem_id(key: str, quick: dict) -> str:
    """A1111's `setting_<name>`; a setting that is also a quick setting at the top of the
    page leaves that id to the quick one (ids are unique in the page)."""
    return f"setting_{key}_tab" if key in quick else f"setting_{key}"


def typed_widget(setting: Setting, elem: str) -> gr.components.Component | None:
    """A widget of the setting's type; None for a type the tab cannot edit (a list)."""
    common = dict(label=setting.label, info=setting.info or None, elem_id=elem, interactive=not setting.read_only)
    default = setting.default
    choices = option_rules.CHOICES.get(setting.key)
    if choices:
        return gr.Dropdown(list(choices), value=default, **common)
    if isinstance(default, bool):
        return gr.Checkbox(value=default, **common)
    if isinstance(default, (int, float)):
        low, high = option_rules.BOUNDS.get(setting.key, (None, None))
        whole = isinstance(default, int)
        if low is not None and high is not None:
            return gr.Slider(low, high, value=default, step=1 if whole else None, precision=0 if whole else None,
                             **common)
        return gr.Number(value=default, precision=0 if whole else None, minimum=low, maximum=high, **common)
    if isinstance(default, str):
        return gr.Textbox(value=default, **common)
    return None


def widget_for(runtime, setting: Setting, elem: str) -> gr.components.Component | None:
    """The component an extension asked for (OptionInfo.component, component_args), else a
    typed one; a component that cannot be built goes to the Extensions tab's errors."""
    if setting.component is not None:
        try:
            args = setting.component_args() if callable(setting.component_args) else dict(setting.component_args or {})
            return setting.component(**{"label": setting.label, "value": setting.default, "elem_id": elem, **args})
        except Exception:
            runtime.extensions.errors.report("", f"Settings tab: the component of setting {setting.key!r}")
    return typed_widget(setting, elem)


# ---- handlers (plain functions: the tests call them as the page does) ----------------------
def current_values(runtime, settings: list[Setting]) -> list:
    return [runtime.settings.value(s.key) for s in settings]


def _shown(value) -> str:
    return f"`{value}`" if value not in (None, "") else "(empty)"


def changes_markdown(changed: dict[str, tuple], labels: dict[str, str]) -> str:
    if not changed:
        return "Nothing changed."
    lines = [f"- **{labels.get(k, k)}**: {_shown(old)} → {_shown(new)}" for k, (old, new) in changed.items()]
    return f"Saved {len(changed)} setting{'s' * (len(changed) > 1)}:\n" + "\n".join(lines)


def apply(runtime, settings: list[Setting], values, loaded: dict | None = None) -> str:
    """Save the widgets' values: those that differ from `loaded` (what the page showed when
    it loaded), or all without it. The message lists what changed. A bad value: gr.Error,
    and nothing is saved."""
    labels = {s.key: s.label for s in settings}
    sent = {s.key: v for s, v in zip(settings, values) if loaded is None or s.key not in loaded or v != loaded[s.key]}
    try:
        changed = runtime.settings.set(sent)
    except OptionError as e:
        raise gr.Error(f"{labels.get(e.key, e.key)}: {e.message}. Nothing was saved.", print_exception=False) from None
    return changes_markdown(changed, labels)


def quick_setting_saver(runtime, key: str, has_twin: bool):
    """The handler of a quick setting at the top of the page: saves the value at once and
    returns it for the same setting's widget in the tab (when the tab has one)."""
    def save(value):
        try:
            runtime.settings.set({key: value})
        except OptionError as e:
            raise gr.Error(e.message, print_exception=False) from None
        return runtime.settings.value(key) if has_twin else None
    return save


# ---- the tab ---------------------------------------------------------------------------------
def build(runtime, demo: gr.Blocks, quick: dict[str, gr.components.Component]) -> SettingsTab:
    """The tab, inside `demo`. `quick`: the quick settings at the top of the page (setting
    -> widget): they load with the tab, save when moved, and follow "Apply settings"."""
    tab = SettingsTab(settings_shown(runtime))
    with gr.Row():
        apply_button = gr.Button("Apply settings", variant="primary", elem_id="settings_submit")
    tab.status = gr.Markdown(elem_id="settings_result")
    by_section: dict[str, list[Setting]] = {}
    for s in tab.settings:
        by_section.setdefault(s.section, []).append(s)
    for title, settings in by_section.items():
        with gr.Accordion(title, open=True, elem_id=f"settings_section_{title.lower().replace(' ', '_')}"):
            if title == "Limits":
                gr.Markdown(LIMITS_NOTE)
            for s in settings:
                elem = elem_id(s.key, quick)
                widget = widget_for(runtime, s, elem)
                if widget is not None:
                    tab.widgets[s.key] = widget
    gr.Markdown("Set elsewhere: " + "; ".join(f"`{k}` in {where}" for k, where in ELSEWHERE.items()) + ".",
                elem_id="settings_elsewhere")
    tab.settings = [s for s in tab.settings if s.key in tab.widgets]

    editable = tab.editable
    loaded = gr.State({})  # setting -> the value this page shows as saved
    shown = [tab.widgets[s.key] for s in tab.settings] + list(quick.values()) + [loaded]

    def saved_values():
        values = current_values(runtime, tab.settings)
        return values + [runtime.settings.value(k) for k in quick] + [{s.key: v for s, v in zip(tab.settings, values)}]

    def apply_values(loaded_values, *values):
        return [apply(runtime, editable, values, loaded_values)] + saved_values()

    demo.load(saved_values, None, shown, queue=False, api_name="settings_load")
    apply_button.click(apply_values, [loaded] + [tab.widgets[s.key] for s in editable], [tab.status] + shown,
                       api_name="settings_apply")
    for key, widget in quick.items():
        twin = tab.widgets.get(key)
        widget.input(quick_setting_saver(runtime, key, twin is not None), widget, [twin] if twin is not None else [],
                     queue=False, api_name=False)
    return tab
