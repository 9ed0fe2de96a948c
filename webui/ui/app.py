"""The Gradio Blocks page: checkpoint row, tabs, footer."""
from __future__ import annotations

import platform

import gradio as gr

from modules.models.detect import CheckpointError
from modules.runtime import DEMO_CHECKPOINT
from webui.ui import png_info, txt2img
from webui.ui.common import GPU, user_error

DEMO_NOTE = ("**Demo model loaded**: a tiny model that draws one flat shape on a flat background "
             "(try *a large red circle on a blue background*). Add real checkpoints to "
             "`models/Stable-diffusion` (or share ComfyUI's folder with `--comfyui-dir`) and pick them above.")


def create(runtime) -> gr.Blocks:
    with gr.Blocks(title="Kiln") as demo:
        with gr.Row():
            checkpoint = gr.Dropdown(label="Stable Diffusion checkpoint", choices=[], elem_id="sd_model_checkpoint",
                                     scale=4)
            refresh = gr.Button("🔄", elem_id="refresh_checkpoints", scale=0, min_width=40)
        note = gr.Markdown(visible=False, elem_id="demo_note")
        with gr.Tabs() as tabs:
            with gr.Tab("txt2img", id="txt2img"):
                t2i = txt2img.build(runtime)
            with gr.Tab("PNG Info", id="png_info"):
                png_info.build(t2i, tabs, "txt2img")
        gr.Markdown(footer(runtime), elem_id="footer")

        def titles():
            return [runtime.title(f) for f in runtime.list_checkpoints()]

        def state():
            m = runtime.model
            value = m.title if m else None
            demo_loaded = bool(m and m.name.endswith(DEMO_CHECKPOINT))
            return m, value, demo_loaded

        def on_load():
            m, value, demo_loaded = state()
            w, h = m.info.native_size if m else (512, 512)
            return (gr.update(choices=titles(), value=value), gr.update(value=DEMO_NOTE, visible=demo_loaded),
                    gr.update(value=w), gr.update(value=h))

        def on_change(title):
            if not title or (runtime.model and title == runtime.model.title):
                return gr.update(), gr.update(), gr.update(), gr.update()
            try:
                runtime.switch_checkpoint(title)
            except CheckpointError as e:
                raise user_error(e) from None
            return on_load()

        outputs = [checkpoint, note, t2i["width"], t2i["height"]]
        demo.load(on_load, None, outputs, queue=False)
        checkpoint.input(on_change, checkpoint, outputs, concurrency_id=GPU)
        refresh.click(lambda: gr.update(choices=titles()), None, checkpoint, queue=False)
    return demo


def footer(runtime) -> str:
    import torch

    return (f"Kiln · {runtime.device.description} · python {platform.python_version()} · "
            f"torch {torch.__version__} · gradio {gr.__version__}")
