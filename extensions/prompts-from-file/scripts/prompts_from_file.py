"""Prompts from file or textbox: one generation per line. A plain line is a prompt; a
line of `--name value` pairs sets those fields for that line, A1111's way:

    a red circle on a blue background
    --prompt "a green square" --negative_prompt "blurry" --steps 10 --seed 5 --sampler_name "DPM++ 2M"

A line's prompt goes after (or before, "start") the prompt in the prompt box. Arguments,
in A1111's order: checkbox_iterate (a new seed for every line), checkbox_iterate_batch
(one random seed for all lines), prompt_position ("start" / "end"), prompt_txt.
"""
from __future__ import annotations

import copy
import shlex

from modules import scripts
from modules.processing import Processed, fix_seed, process_images
from modules.scripts import RequestError
from modules.shared import state


def _text(value: str) -> str:
    return value


def _int(value: str) -> int:
    return int(value)


def _float(value: str) -> float:
    return float(value)


def _bool(value: str) -> bool:
    if value.lower() not in ("true", "false"):
        raise ValueError(f"must be true or false, got {value!r}")
    return value.lower() == "true"


TAGS = {
    "sd_model": _text, "prompt": _text, "negative_prompt": _text,
    "styles": lambda v: [v], "seed": _int, "subseed": _int, "subseed_strength": _float, "sampler_name": _text,
    "scheduler": _text, "batch_size": _int, "n_iter": _int, "steps": _int, "cfg_scale": _float, "width": _int,
    "height": _int, "denoising_strength": _float, "clip_skip": _int, "do_not_save_samples": _bool,
    "do_not_save_grid": _bool,
}


def parse_line(line: str) -> dict:
    """`--name value` pairs (shell quoting) -> {name: typed value}; a plain line -> {prompt}."""
    if not line.lstrip().startswith("--"):
        return {"prompt": line.strip()}
    try:
        tokens = shlex.split(line)
    except ValueError as e:
        raise RequestError("script_args", f"Prompts from file: {e} in line {line!r}") from None
    args = {}
    i = 0
    while i < len(tokens):
        name = tokens[i]
        if not name.startswith("--"):
            raise RequestError("script_args", f"Prompts from file: expected --name, got {name!r} in line {line!r}")
        name = name[2:]
        if name not in TAGS:
            raise RequestError("script_args", f"Prompts from file: unknown option --{name} in line {line!r}")
        if i + 1 >= len(tokens):
            raise RequestError("script_args", f"Prompts from file: missing value for --{name} in line {line!r}")
        try:
            args[name] = TAGS[name](tokens[i + 1])
        except ValueError as e:
            raise RequestError("script_args", f"Prompts from file: --{name} {tokens[i + 1]!r}: {e}") from None
        i += 2
    return args


class Script(scripts.Script):
    def title(self):
        return "Prompts from file or textbox"

    def ui(self, is_img2img):
        import gradio as gr  # here, not at the top: the engine alone (API, benchmarks) never pays for it

        checkbox_iterate = gr.Checkbox(label="Iterate seed every line", value=False,
                                       elem_id=self.elem_id("checkbox_iterate"))
        checkbox_iterate_batch = gr.Checkbox(label="Use same random seed for all lines", value=False,
                                             elem_id=self.elem_id("checkbox_iterate_batch"))
        prompt_position = gr.Radio(["start", "end"], label="Insert prompts at the", value="start",
                                   elem_id=self.elem_id("prompt_position"))
        prompt_txt = gr.Textbox(label="List of prompt inputs", value="", lines=4, elem_id=self.elem_id("prompt_txt"))
        upload = gr.File(label="Upload prompt inputs", type="binary", file_types=[".txt"],
                         elem_id=self.elem_id("file"))
        upload.change(lambda data: data.decode("utf-8", "replace") if data else gr.update(), upload, prompt_txt,
                      queue=False, api_name=False)
        return [checkbox_iterate, checkbox_iterate_batch, prompt_position, prompt_txt]

    def run(self, p, checkbox_iterate=False, checkbox_iterate_batch=False, prompt_position="start", prompt_txt=""):
        lines = [line for line in (prompt_txt or "").splitlines() if line.strip()]
        jobs = [parse_line(line) for line in lines]  # every line checked before the first runs
        if not jobs:
            raise RequestError("script_args", "Prompts from file: no prompts (one per line)")
        if checkbox_iterate or checkbox_iterate_batch:
            fix_seed(p)
        state.job_count = sum(int(job.get("n_iter", p.n_iter)) for job in jobs)

        images, infotexts, paths, all_prompts, all_seeds = [], [], [], [], []
        for job in jobs:
            if state.interrupted:
                break
            pc = copy.copy(p)
            for name, value in job.items():
                if name == "sd_model":
                    pc.override_settings["sd_model_checkpoint"] = value
                else:
                    setattr(pc, name, value)
            for name in ("prompt", "negative_prompt"):  # joined with what the prompt box holds
                if job.get(name) and getattr(p, name):
                    parts = [job[name], getattr(p, name)] if prompt_position == "start" else [getattr(p, name), job[name]]
                    setattr(pc, name, " ".join(parts))
            processed = process_images(pc)
            images += processed.images
            infotexts += processed.infotexts
            paths += processed.paths
            all_prompts += processed.all_prompts
            all_seeds += processed.all_seeds
            if checkbox_iterate:
                p.seed = p.seed + int(p.batch_size) * int(p.n_iter)
        return Processed(p, images, all_seeds[0] if all_seeds else p.seed, infotexts[0] if infotexts else "",
                         all_prompts=all_prompts, all_seeds=all_seeds, infotexts=infotexts, paths=paths)
