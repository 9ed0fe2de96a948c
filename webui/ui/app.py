"""The Gradio Blocks page: checkpoint row, tabs, footer."""
from __future__ import annotations

import platform

import gradio as gr

from modules.scripts import host_of
from modules.models.detect import CheckpointError
from modules.runtime.checkpoints import DEMO_CHECKPOINT
from webui.ui import extensions, generation, png_info, settings
from webui.ui import styles as styles_ui
from webui.ui.common import GPU, user_error

DEMO_NOTE = ("**Demo model loaded**: a tiny model that draws one flat shape on a flat background "
             "(try *a large red circle on a blue background*). Add real checkpoints to "
             "`models/Stable-diffusion` (or share ComfyUI's folder with `--comfyui-dir`) and pick them above.")


def create(runtime) -> gr.Blocks:
    host_of(runtime).callbacks.ui_settings()  # extensions declare their settings (shared.opts.add_option)
    extension_tabs = host_of(runtime).callbacks.ui_tabs()  # built outside the page, rendered in it (as A1111)
    with gr.Blocks(title="Kiln") as demo:
        with gr.Row():
            checkpoint = gr.Dropdown(label="Stable Diffusion checkpoint", choices=[], elem_id="sd_model_checkpoint",
                                     scale=4)
            refresh = gr.Button("🔄", elem_id="refresh_checkpoints", scale=0, min_width=40)
            # A1111's "Clip skip" setting as a quick setting: every generation takes the value shown
            clip_skip = gr.Slider(1, 12, value=runtime.options.CLIP_stop_at_last_layers, step=1, label="Clip skip",
                                  elem_id="setting_CLIP_stop_at_last_layers", scale=1, min_width=160)
        note = gr.Markdown(visible=False, elem_id="demo_note")
        with gr.Tabs() as tabs:
            built = {}
            for mode in ("txt2img", "img2img", "inpaint"):
                with gr.Tab(mode, id=mode):
                    built[mode] = generation.build(runtime, mode, clip_skip)
            with gr.Tab("PNG Info", id="png_info"):
                png_info.build(built["txt2img"], tabs, clip_skip, runtime)
            for blocks, title, elem_id in extension_tabs:  # extensions' on_ui_tabs
                try:
                    with gr.Tab(title, id=elem_id, elem_id=f"tab_{elem_id}"):
                        blocks.render()
                except Exception:
                    runtime.extensions.errors.report("", f"on_ui_tabs tab {title!r}")
            with gr.Tab("Settings", id="settings"):
                # the tab also loads and saves the quick settings at the top
                settings.build(runtime, demo, {"CLIP_stop_at_last_layers": clip_skip})
            with gr.Tab("Extensions", id="extensions"):
                extensions.build(runtime)
        styles_ui.wire(runtime, list(built.values()), demo)
        for tab in built.values():  # "Send to img2img / inpaint" under every gallery
            for target, button in tab.send_buttons.items():
                button.click(_sender(target), [tab.gallery, tab.selected],
                             [built[target].image_input, tabs], queue=False, api_name=False)
        gr.Markdown(footer(runtime), elem_id="footer")

        def titles():
            return [runtime.checkpoints.title(f) for f in runtime.checkpoints.list()]

        def state():
            m = runtime.model
            value = m.title if m else None
            demo_loaded = bool(m and m.name.endswith(DEMO_CHECKPOINT))
            return m, value, demo_loaded

        sizes = [c for tab in built.values() for c in (tab.fields["width"], tab.fields["height"])]

        def on_load():
            m, value, demo_loaded = state()
            w, h = m.info.native_size if m else (512, 512)
            return [gr.update(choices=titles(), value=value), gr.update(value=DEMO_NOTE, visible=demo_loaded)] + \
                [gr.update(value=w), gr.update(value=h)] * len(built)

        def on_change(title):
            if not title or (runtime.model and title == runtime.model.title):
                return [gr.update()] * (2 + len(sizes))
            try:
                runtime.checkpoints.switch(title)
            except CheckpointError as e:
                raise user_error(e) from None
            return on_load()

        outputs = [checkpoint, note] + sizes
        demo.load(on_load, None, outputs, queue=False, api_name=False)
        checkpoint.input(on_change, checkpoint, outputs, concurrency_id=GPU, api_name="switch_checkpoint")
        refresh.click(lambda: gr.update(choices=titles()), None, checkpoint, queue=False, api_name=False)
    return demo


def _sender(target: str):
    def send(gallery_value, index):
        image = generation.gallery_image(gallery_value, index)
        if image is None:
            raise gr.Error("Generate an image first", print_exception=False)
        return image, gr.Tabs(selected=target)
    return send


def footer(runtime) -> str:
    import torch

    return (f"Kiln · {runtime.device.description} · python {platform.python_version()} · "
            f"torch {torch.__version__} · gradio {gr.__version__}")
