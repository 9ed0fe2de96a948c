"""A1111's JSON shapes that are not a request or an image: the `info` of a generation
(Processed.js()), the sampler and scheduler lists. The engine's types stay free of wire
formats; the page's "details" show the same `info`."""
from __future__ import annotations

import time

from modules.files import infotext
from modules.generation.pipeline import GenerationResult
from modules.sampling.samplers import SAMPLERS, SCHEDULE_TYPES


def generation_info(result: GenerationResult, task=None) -> dict:
    """A1111's `Processed.js()` fields for a result (`task`: the queue's, for its id and time)."""
    r = result.request
    n = len(result.seeds)
    first = infotext.parse_infotext(result.infotexts[0]) if result.infotexts else {}
    started = task.started if task is not None and task.started else time.time()
    # A1111 reports the prompts as typed (without styles): a client resending info["prompt"]
    # with info["styles"] does not apply them twice
    prompt = r.prompt if r.prompt_before_styles is None else r.prompt_before_styles
    negative = r.negative_prompt if r.negative_prompt_before_styles is None else r.negative_prompt_before_styles
    return {
        "prompt": prompt, "negative_prompt": negative,
        "seed": result.seeds[0] if result.seeds else -1, "all_seeds": result.seeds,
        "subseed": result.subseeds[0] if result.subseeds else -1, "all_subseeds": result.subseeds,
        "infotexts": result.infotexts, "width": r.width, "height": r.height, "sampler_name": r.sampler_name,
        "scheduler": r.scheduler, "cfg_scale": r.cfg_scale, "steps": r.steps, "batch_size": r.batch_size,
        "n_iter": r.n_iter, "warnings": list(result.warnings),
        "all_prompts": result.prompts or [r.prompt] * n,
        "all_negative_prompts": result.negative_prompts or [r.negative_prompt] * n,
        "subseed_strength": r.subseed_strength, "seed_resize_from_w": -1, "seed_resize_from_h": -1,
        "denoising_strength": r.denoising_strength if r.mode == "img2img" else None,
        "extra_generation_params": dict(r.infotext_params), "index_of_first_image": 0,
        "styles": list(r.styles),
        "job_timestamp": time.strftime("%Y%m%d%H%M%S", time.localtime(started)), "clip_skip": r.clip_skip,
        "is_using_inpainting_conditioning": False, "restore_faces": False, "face_restoration_model": None,
        "sd_model_name": first.get("Model"), "sd_model_hash": first.get("Model hash"), "sd_vae_name": None,
        "sd_vae_hash": None, "version": "kiln", "interrupted": result.interrupted,
        "task_id": task.id if task is not None else None,
    }


def sampler_list() -> list[dict]:
    """A1111's /sdapi/v1/samplers items."""
    items = []
    for s in SAMPLERS.values():
        options = {}
        if s.sigma_based and s.automatic != "Uniform":
            options["scheduler"] = SCHEDULE_TYPES[s.automatic].name
        if s.discard_penultimate:
            options["discard_next_to_last_sigma"] = True
        if s.second_order:
            options["second_order"] = True
        if s.brownian_noise:
            options["brownian_noise"] = True
        if s.ancestral:
            options["uses_ensd"] = True
        items.append({"name": s.name, "aliases": list(s.aliases), "options": options})
    return items


def scheduler_list() -> list[dict]:
    """A1111's /sdapi/v1/schedulers items."""
    return [{"name": st.name, "label": st.label, "aliases": list(st.aliases) or None,
             "default_rho": st.default_rho, "need_inner_model": st.name in ("uniform", "sgm_uniform", "simple",
                                                                            "normal", "ddim", "beta")}
            for st in SCHEDULE_TYPES.values()]
