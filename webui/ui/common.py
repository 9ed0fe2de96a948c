"""Widgets and helpers shared by the tabs."""
from __future__ import annotations

import gradio as gr

from modules.sampling import samplers
from modules.models.detect import CheckpointError
from modules.generation.request import RequestError

GPU = "gpu"  # every event that uses the device shares this concurrency id (one at a time)
USER_ERRORS = (RequestError, CheckpointError, samplers.SamplerError)


def user_error(e: Exception) -> gr.Error:
    """A message for the person, never a stack trace."""
    return gr.Error(str(e), print_exception=False)


def sampler_dropdowns(default_sampler: str = "Euler a"):
    with gr.Row():
        sampler = gr.Dropdown(samplers.sampler_names(), value=default_sampler, label="Sampling method",
                              elem_id="sampler")
        schedule = gr.Dropdown(samplers.schedule_types_for(default_sampler), value="Automatic", label="Schedule type",
                               elem_id="schedule_type")
    sampler.change(lambda s: gr.update(choices=samplers.schedule_types_for(s), value="Automatic"), sampler, schedule,
                   queue=False)
    return sampler, schedule


def seed_row():
    with gr.Row():
        seed = gr.Number(label="Seed", value=-1, precision=0, elem_id="seed", scale=4)
        random_seed = gr.Button("🎲", elem_id="random_seed", scale=0, min_width=40)
        reuse_seed = gr.Button("♻️", elem_id="reuse_seed", scale=0, min_width=40)
    with gr.Accordion("Variation seed", open=False):
        with gr.Row():
            subseed = gr.Number(label="Variation seed", value=-1, precision=0, elem_id="subseed")
            subseed_strength = gr.Slider(0, 1, value=0, step=0.01, label="Variation strength", elem_id="subseed_strength")
    random_seed.click(lambda: -1, None, seed, queue=False)
    return seed, reuse_seed, subseed, subseed_strength
