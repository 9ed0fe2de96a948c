"""The txt2img tab."""
from __future__ import annotations

import json

import gradio as gr

from modules.processing import JobControl
from modules.request import GenerationRequest
from webui.ui.common import GPU, USER_ERRORS, sampler_dropdowns, seed_row, user_error

FIELDS = ("prompt", "negative_prompt", "sampler_name", "scheduler", "steps", "width", "height", "n_iter",
          "batch_size", "cfg_scale", "seed", "subseed", "subseed_strength")


def build(runtime) -> dict:
    """Build the tab inside the current Blocks; return its input components by request field."""
    with gr.Row():
        with gr.Column(scale=4):
            prompt = gr.Textbox(label="Prompt", lines=3, elem_id="txt2img_prompt",
                                placeholder="a large red circle on a blue background")
            negative = gr.Textbox(label="Negative prompt", lines=2, elem_id="txt2img_neg_prompt")
        with gr.Column(scale=1, min_width=180):
            generate = gr.Button("Generate", variant="primary", elem_id="txt2img_generate")
            with gr.Row():
                interrupt = gr.Button("Interrupt", elem_id="txt2img_interrupt")
                skip = gr.Button("Skip", elem_id="txt2img_skip")
    with gr.Row():
        with gr.Column():
            sampler, schedule = sampler_dropdowns()
            steps = gr.Slider(1, 150, value=20, step=1, label="Sampling steps", elem_id="txt2img_steps")
            with gr.Row():
                width = gr.Slider(64, 2048, value=512, step=8, label="Width", elem_id="txt2img_width")
                height = gr.Slider(64, 2048, value=512, step=8, label="Height", elem_id="txt2img_height")
            with gr.Row():
                n_iter = gr.Slider(1, 100, value=1, step=1, label="Batch count", elem_id="txt2img_batch_count")
                batch_size = gr.Slider(1, 8, value=1, step=1, label="Batch size", elem_id="txt2img_batch_size")
            cfg = gr.Slider(1, 30, value=7, step=0.5, label="CFG Scale", elem_id="txt2img_cfg_scale")
            seed, reuse_seed, subseed, subseed_strength = seed_row()
        with gr.Column():
            gallery = gr.Gallery(label="Output", format="png", columns=2, elem_id="txt2img_gallery", type="filepath")
            info = gr.Textbox(label="Generation info", lines=4, interactive=False, elem_id="txt2img_info")
            html_info = gr.JSON(visible=False)
    components = dict(zip(FIELDS, (prompt, negative, sampler, schedule, steps, width, height, n_iter, batch_size,
                                   cfg, seed, subseed, subseed_strength)))

    def run(*values, progress=gr.Progress()):
        fields = dict(zip(FIELDS, values))
        for k in ("steps", "width", "height", "n_iter", "batch_size", "seed", "subseed"):
            fields[k] = int(fields[k]) if fields[k] is not None else -1
        request = GenerationRequest(**fields)
        control = JobControl(on_step=lambda s, t, _l: progress((s, t), desc="Sampling"))
        try:
            result = runtime.generate(request, control, job="ui")
        except USER_ERRORS as e:
            raise user_error(e) from None
        shown = ([str(result.grid_path)] if result.grid_path else []) + [str(p) for p in result.paths]
        if not shown:  # saving turned off: show the images themselves
            shown = result.images
        text = result.infotexts[0] if result.infotexts else ""
        if result.interrupted:
            text += "\n(interrupted)"
        return shown, text, result.info

    generate.click(run, list(components.values()), [gallery, info, html_info], concurrency_id=GPU,
                   concurrency_limit=1, api_name="txt2img")
    prompt.submit(run, list(components.values()), [gallery, info, html_info], concurrency_id=GPU, api_name=False)
    interrupt.click(runtime.interrupt, queue=False)
    skip.click(runtime.skip, queue=False)
    reuse_seed.click(lambda data: (data or {}).get("seed", -1), html_info, seed, queue=False)
    components["_gallery"] = gallery
    return components


def apply_fields(components: dict, fields: dict) -> list:
    """Updates for the tab's components from request fields (Send to txt2img)."""
    return [gr.update(value=fields[name]) if name in fields else gr.update() for name in FIELDS]


__all__ = ["build", "apply_fields", "FIELDS", "json"]
