"""Extension scripts in the page: the "Script" dropdown with each selectable script's
ui() in a group shown only when chosen, and the always-on scripts' ui() in accordions.

The only place ui() is called (modules/ never imports gradio). The components' initial
values are handed to the ScriptRunner as the scripts' default arguments, which the API
uses for arguments a client does not send; `describe` does the same without a page
(--nowebui) and gives /sdapi/v1/script-info its argument list.
"""
from __future__ import annotations

import gradio as gr

from modules.generation.request import ScriptSelection
from modules.scripts import Script, ScriptRunner

NONE = "None"


def _components(runner: ScriptRunner, script: Script, is_img2img: bool) -> list:
    try:
        made = script.ui(is_img2img)
    except Exception:
        runner.errors.report(script.extension, f"ui ({runner.title(script)})")
        return []
    if made is None:
        return []
    return [c for c in (made if isinstance(made, (list, tuple)) else [made]) if isinstance(c, gr.components.Component)]


def _value(component):
    value = getattr(component, "value", None)
    return value() if callable(value) else value


class ScriptControls:
    """A tab's script components: `inputs` go at the end of the tab's inputs; `split`
    turns their values into the request's ScriptSelection."""

    def __init__(self, runner: ScriptRunner, is_img2img: bool, tab: str):
        self.runner, self.is_img2img = runner, is_img2img
        self.alwayson: list[tuple[Script, list]] = []
        self.selectable: list[tuple[Script, list]] = []
        for script in runner.alwayson[is_img2img]:
            with gr.Accordion(runner.title(script), open=False, elem_id=script.elem_id("accordion")) as box:
                comps = _components(runner, script, is_img2img)
            box.visible = bool(comps)  # a script without controls shows nothing
            runner.set_defaults(script, [_value(c) for c in comps])
            self.alwayson.append((script, comps))
        titles = runner.titles(is_img2img)
        self.dropdown = gr.Dropdown([NONE] + titles, value=NONE, label="Script", elem_id=f"{tab}_script",
                                    visible=bool(titles))
        groups = []
        for script in runner.selectable[is_img2img]:
            with gr.Group(visible=False, elem_id=script.elem_id("group")) as group:
                comps = _components(runner, script, is_img2img)
            runner.set_defaults(script, [_value(c) for c in comps])
            self.selectable.append((script, comps))
            groups.append(group)

        def show(choice):
            return [gr.update(visible=runner.title(s) == choice) for s, _ in self.selectable]

        if groups:
            self.dropdown.change(show, self.dropdown, groups, queue=False, api_name=False)
        self.inputs = [self.dropdown] + [c for _, comps in self.alwayson + self.selectable for c in comps]

    def split(self, values: list) -> ScriptSelection:
        """The inputs' values -> the request's ScriptSelection."""
        values = list(values)
        choice, i = values[0], 1
        alwayson = {}
        for script, comps in self.alwayson:
            alwayson[self.runner.title(script)] = {"args": values[i:i + len(comps)]}
            i += len(comps)
        script_name, script_args = None, []
        for script, comps in self.selectable:
            if self.runner.title(script) == choice:
                script_name, script_args = choice, values[i:i + len(comps)]
            i += len(comps)
        return ScriptSelection(script_name, script_args, alwayson)


def describe(runner: ScriptRunner) -> list[dict]:
    """Every script's arguments (A1111's /sdapi/v1/script-info), calling ui() in a
    throw-away Blocks for scripts whose defaults are not known yet."""
    out = []
    for is_img2img in (False, True):
        for script in runner.scripts[is_img2img]:
            with gr.Blocks():
                comps = _components(runner, script, is_img2img)
            if id(script) not in runner.defaults:
                runner.set_defaults(script, [_value(c) for c in comps])
            args = [{"label": getattr(c, "label", None), "value": _value(c),
                     "minimum": getattr(c, "minimum", None), "maximum": getattr(c, "maximum", None),
                     "step": getattr(c, "step", None), "choices": _choices(c)} for c in comps]
            out.append({"name": script.name, "is_alwayson": script.alwayson, "is_img2img": is_img2img, "args": args})
    return out


def ensure_defaults(runner: ScriptRunner) -> None:
    """Default arguments for every script (without a page, for --nowebui)."""
    if any(id(s) not in runner.defaults for mode in (False, True) for s in runner.scripts[mode]):
        describe(runner)


def _choices(component):
    choices = getattr(component, "choices", None)
    if not choices:
        return None
    return [c[1] if isinstance(c, (list, tuple)) else c for c in choices]
