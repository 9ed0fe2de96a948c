"""The PNG Info tab: read an image's parameters and send them to txt2img."""
from __future__ import annotations

import gradio as gr

from modules import infotext
from webui.ui import generation


def build(txt2img: generation.Tab, tabs, clip_skip=None):
    with gr.Row():
        image = gr.Image(label="Source", type="filepath", sources=["upload", "clipboard"], elem_id="pnginfo_image")
        with gr.Column():
            text = gr.Textbox(label="Parameters", lines=8, interactive=False, elem_id="pnginfo_parameters")
            send = gr.Button("Send to txt2img", elem_id="pnginfo_send_txt2img")

    def read(path):
        if not path:
            return ""
        return infotext.read_infotext(path) or "(no generation parameters in this image)"

    late = [clip_skip] if clip_skip is not None else []

    def to_txt2img(text_value):
        fields = infotext.request_fields_from_infotext(text_value or "")
        clip = [gr.update(value=fields.get("clip_skip", 1))] if late else []  # a missing "Clip skip" means 1 (A1111)
        return generation.apply_fields(txt2img, fields) + [gr.Tabs(selected="txt2img")] + clip

    image.change(read, image, text, queue=False, api_name="png_info")
    send.click(to_txt2img, text, [txt2img.fields[f] for f in generation.COMMON] + [tabs] + late, queue=False,
               api_name="send_to_txt2img")
