"""The style editor (an accordion under each tab's prompts) and its wiring to every
tab's Styles drop-down. The file and the rules are modules/styles.py's."""
from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from modules.text import styles
from modules.text.styles import Style
from modules.generation.request import RequestError


@dataclass
class Editor:
    name: gr.Dropdown
    prompt: gr.Textbox
    negative: gr.Textbox
    copy: gr.Button
    save: gr.Button
    delete: gr.Button


def editor(mode: str) -> Editor:
    """The editor's components (wired later by `wire`, once every tab exists)."""
    with gr.Accordion("Style editor", open=False, elem_id=f"{mode}_style_editor"):
        with gr.Row():
            name = gr.Dropdown(label="Style name (pick one to edit, or type a new name)", choices=[], value=None,
                               allow_custom_value=True, elem_id=f"{mode}_style_name", scale=3)
            copy = gr.Button("📋 From the prompts", elem_id=f"{mode}_style_copy", scale=1, size="sm")
        prompt = gr.Textbox(label="Style prompt ({prompt} marks where the prompt goes; otherwise it is appended)",
                            lines=2, elem_id=f"{mode}_style_prompt")
        negative = gr.Textbox(label="Style negative prompt", lines=2, elem_id=f"{mode}_style_negative")
        with gr.Row():
            save = gr.Button("💾 Save style", elem_id=f"{mode}_style_save", size="sm")
            delete = gr.Button("🗑️ Delete style", elem_id=f"{mode}_style_delete", size="sm")
    return Editor(name, prompt, negative, copy, save, delete)


def wire(runtime, tabs, demo: gr.Blocks) -> None:
    """Connect each tab's editor; saving or deleting refreshes every Styles drop-down and
    every editor's list of names."""
    dropdowns = [t.styles for t in tabs]
    names = [t.style_editor.name for t in tabs]

    def refresh(found: list[Style], keep: list[list[str]]):
        choices = [s.name for s in found]
        return [gr.update(choices=choices, value=[v for v in (chosen or []) if v in choices])
                for chosen in keep] + [gr.update(choices=choices)] * len(names)

    def load(name):
        try:
            found = {s.name: s for s in styles.load(runtime.data_dir)}
        except RequestError as e:
            raise gr.Error(e.message, print_exception=False) from None
        style = found.get(name)
        return (style.prompt, style.negative_prompt) if style else (gr.update(), gr.update())

    def save(name, prompt, negative, *chosen):
        try:
            found = styles.save_style(runtime.data_dir, Style(name or "", prompt or "", negative or ""))
        except RequestError as e:
            raise gr.Error(e.message, print_exception=False) from None
        gr.Info(f"Saved style {name.strip()!r}")
        return refresh(found, chosen)

    def delete(name, *chosen):
        try:
            found = styles.delete_style(runtime.data_dir, name or "")
        except RequestError as e:
            raise gr.Error(e.message, print_exception=False) from None
        return refresh(found, chosen)

    def on_page_load(*chosen):
        try:
            found = styles.load(runtime.data_dir)
        except RequestError:
            found = []
        return refresh(found, chosen)

    for tab in tabs:
        e = tab.style_editor
        e.name.input(load, e.name, [e.prompt, e.negative], queue=False, api_name=False)
        e.copy.click(lambda p, n: (p, n), [tab.fields["prompt"], tab.fields["negative_prompt"]],
                     [e.prompt, e.negative], queue=False, api_name=False)
        e.save.click(save, [e.name, e.prompt, e.negative] + dropdowns, dropdowns + names, queue=False,
                     api_name=f"{tab.mode}_save_style")
        e.delete.click(delete, [e.name] + dropdowns, dropdowns + names, queue=False, api_name=f"{tab.mode}_delete_style")
    demo.load(on_page_load, dropdowns, dropdowns + names, queue=False, api_name=False)
