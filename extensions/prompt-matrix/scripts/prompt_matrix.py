"""Prompt matrix: `a busy street|illustration|cinematic lighting` makes one image per
combination of the parts after the first (2^n for n parts), with the first part always
in, and a grid whose column and row labels show which parts each image has (the ones
left out are struck through). A1111's behaviour and arguments: put_at_start,
different_seeds, prompt_type ("positive" / "negative"), variations_delimiter ("comma" /
"space"), margin_size.
"""
from __future__ import annotations

import math
from pathlib import Path

from modules import images
from modules import scripts
from modules.processing import fix_seed, process_images
from modules.shared import opts, state


def combinations(prompt: str, put_at_start: bool = False, delimiter: str = ", ") -> tuple[list[str], list[str]]:
    """(the parts after the first, every combination's prompt); combination i holds part
    k when bit k of i is set."""
    parts = [part.strip().strip(",").strip() for part in prompt.split("|")]
    base, variable = parts[0], parts[1:]
    prompts = []
    for i in range(1 << len(variable)):
        chosen = [text for k, text in enumerate(variable) if i & (1 << k)]
        prompts.append(delimiter.join(x for x in (chosen + [base] if put_at_start else [base] + chosen) if x))
    return variable, prompts


class Script(scripts.Script):
    def title(self):
        return "Prompt matrix"

    def ui(self, is_img2img):
        import gradio as gr  # here, not at the top: the engine alone (API, benchmarks) never pays for it

        gr.HTML("<p>Split the prompt with <code>|</code>: the first part is in every image, the others in "
                "every combination.</p>")
        with gr.Row():
            put_at_start = gr.Checkbox(label="Put variable parts at start of prompt", value=False,
                                       elem_id=self.elem_id("put_at_start"))
            different_seeds = gr.Checkbox(label="Use different seed for each picture", value=False,
                                          elem_id=self.elem_id("different_seeds"))
        with gr.Row():
            prompt_type = gr.Radio(["positive", "negative"], label="Select prompt", value="positive",
                                   elem_id=self.elem_id("prompt_type"))
            variations_delimiter = gr.Radio(["comma", "space"], label="Select joining char", value="comma",
                                            elem_id=self.elem_id("variations_delimiter"))
        margin_size = gr.Slider(0, 500, value=0, step=2, label="Grid margins (px)", elem_id=self.elem_id("margin"))
        return [put_at_start, different_seeds, prompt_type, variations_delimiter, margin_size]

    def run(self, p, put_at_start=False, different_seeds=False, prompt_type="positive",
            variations_delimiter="comma", margin_size=0):
        fix_seed(p)
        negative = prompt_type == "negative"
        source = p.negative_prompt if negative else p.prompt
        delimiter = ", " if variations_delimiter == "comma" else " "
        parts, prompts = combinations(source, bool(put_at_start), delimiter)
        if negative:
            p.negative_prompt = prompts
            p.prompt = [p.prompt] * len(prompts)
        else:
            p.prompt = prompts
        p.seed = [p.seed + (i if different_seeds else 0) for i in range(len(prompts))]
        p.n_iter = math.ceil(len(prompts) / int(p.batch_size))
        p.do_not_save_grid = True
        state.job_count = p.n_iter

        processed = process_images(p)
        if len(processed.images) < len(prompts):  # interrupted: no grid
            return processed
        # the low half of the bits across, the high half down (A1111's layout)
        across = (len(parts) + 1) // 2
        cols, rows = 1 << across, 1 << (len(parts) - across)
        col_labels = [[images.GridLabel(parts[k], bool(c & (1 << k))) for k in range(across)] for c in range(cols)]
        row_labels = [[images.GridLabel(parts[across + k], bool(r & (1 << k))) for k in range(len(parts) - across)]
                      for r in range(rows)]
        grid = images.labelled_grid(processed.images, cols, col_labels if across else None,
                                    row_labels if len(parts) > across else None, int(margin_size))
        grid_path = None
        if opts.grid_save and not p.do_not_save_samples:
            folder = Path(p.outpath_grids)
            grid_path = images.save_image(grid, images.dated_folder(folder.parent, folder.name), "prompt_matrix",
                                          processed.infotexts[0])
        processed.images.insert(0, grid)
        processed.infotexts.insert(0, processed.infotexts[0])
        processed.paths.insert(0, grid_path)
        processed.index_of_first_image = 1
        return processed
