"""The PNG Info tab: read an image's parameters and send them to txt2img."""
from __future__ import annotations

import gradio as gr

from modules.files import infotext
from modules.text import styles
from modules.generation.request import RequestError
from webui.ui import generation


def build(txt2img: generation.Tab, tabs, clip_skip=None, runtime=None):
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
    late += [txt2img.styles] if runtime is not None and txt2img.styles is not None else []

    def to_txt2img(text_value):
        fields = infotext.request_fields_from_infotext(text_value or "")
        extra = [gr.update(value=fields.get("clip_skip", 1))] if clip_skip is not None else []  # missing: 1 (A1111)
        if len(late) > len(extra):
            # A1111's "apply if any": saved styles found in the prompts are selected and taken out of them
            try:
                known = styles.load(runtime.data_dir)
            except RequestError:
                known = []
            names, prompt, negative = styles.extract(fields.get("prompt", ""), fields.get("negative_prompt", ""), known)
            if names:
                fields.update(prompt=prompt, negative_prompt=negative)
            extra.append(gr.update(value=names) if names else gr.update())
        return generation.apply_fields(txt2img, fields) + [gr.Tabs(selected="txt2img")] + extra

    image.change(read, image, text, queue=False, api_name="png_info")
    send.click(to_txt2img, text, [txt2img.fields[f] for f in generation.COMMON] + [tabs] + late, queue=False,
               api_name="send_to_txt2img")
