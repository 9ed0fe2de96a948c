"""The PNG Info tab: read an image's parameters and send them to txt2img."""
from __future__ import annotations

import gradio as gr

from modules import infotext


def build(txt2img_components: dict, tabs, txt2img_tab_id: str):
    from webui.ui import txt2img

    with gr.Row():
        image = gr.Image(label="Source", type="filepath", sources=["upload", "clipboard"], elem_id="pnginfo_image")
        with gr.Column():
            text = gr.Textbox(label="Parameters", lines=8, interactive=False, elem_id="pnginfo_parameters")
            send = gr.Button("Send to txt2img", elem_id="pnginfo_send_txt2img")

    def read(path):
        if not path:
            return ""
        return infotext.read_infotext(path) or "(no generation parameters in this image)"

    def to_txt2img(text_value):
        fields = infotext.request_fields_from_infotext(text_value or "")
        return txt2img.apply_fields(txt2img_components, fields) + [gr.Tabs(selected=txt2img_tab_id)]

    image.change(read, image, text, queue=False)
    send.click(to_txt2img, text, [txt2img_components[f] for f in txt2img.FIELDS] + [tabs], queue=False)
