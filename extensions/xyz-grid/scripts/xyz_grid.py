"""X/Y/Z plot: one generation per combination of up to three axes' values, in a
labelled grid. Written against the public script API only (modules.scripts,
modules.processing, modules.shared, modules.images), as any extension would be.

Values: a comma list (CSV: quote a value holding a comma), where numbers may be ranges:
`1-5` (every whole number), `10-30 (+5)` (a step), `1-10 [5]` (five values evenly
spaced); "Prompt S/R" searches the prompt for its first value and replaces it by each.

Arguments, in A1111's order: x_type, x_values, x_values_dropdown, y_type, y_values,
y_values_dropdown, z_type, z_values, z_values_dropdown, draw_legend, include_lone_images,
include_sub_grids, no_fixed_seeds, vary_seeds_x, vary_seeds_y, vary_seeds_z, margin_size,
csv_mode. An axis type is an axis's label ("Steps") or, as A1111's API clients send it,
its index in A1111's axis list for the tab (A1111_AXES below): the axes Kiln has map to
them, the others are a clear error naming the axis.
"""
from __future__ import annotations

import copy
import csv
import io
import itertools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from modules import images, scripts, sd_models, sd_samplers, sd_schedulers
from modules.processing import Processed, fix_seed, process_images
from modules.scripts import RequestError
from modules.shared import opts, state


# ---- axes ------------------------------------------------------------------------------------
def _set(field: str) -> Callable:
    def apply(p, value, values):
        setattr(p, field, value)
    return apply


def _prompt_sr(p, value, values):
    search = values[0]
    p.prompt = p.prompt.replace(search, value)
    p.negative_prompt = p.negative_prompt.replace(search, value)


def _prompt_order(p, value, values):
    """The listed tokens keep the places where they stand in the prompt; `value` (one
    order of them) says which token goes in each place, first place first."""
    places = sorted((p.prompt.find(token), token) for token in value)
    parts, end = [], 0
    for (start, token), new in zip(places, value):
        parts += [p.prompt[end:start], new]
        end = start + len(token)
    p.prompt = "".join(parts) + p.prompt[end:]


def _checkpoint(p, value, values):
    p.override_settings["sd_model_checkpoint"] = value


def _clip_skip(p, value, values):
    p.override_settings["CLIP_stop_at_last_layers"] = value


def _size(p, value, values):
    p.width, p.height = (int(n) for n in value.split("x"))


def _confirm_sr(p, values):
    if values and values[0] not in p.prompt and values[0] not in p.negative_prompt:
        raise RequestError("script_args", f"Prompt S/R did not find {values[0]!r} in prompt or negative prompt")


def _confirm_order(p, values):
    missing = [token for token in values if token not in p.prompt]
    if missing:
        raise RequestError("script_args", f"Prompt order did not find {missing[0]!r} in the prompt")


def _sampler_names(p, values):
    out = []
    for v in values:
        config = sd_samplers.find_sampler_config(v)
        if config is None:
            raise RequestError("script_args", f"X/Y/Z plot: Unknown sampler {v!r}. "
                                              f"Valid samplers: {', '.join(sd_samplers.visible_sampler_names())}")
        out.append(config.name)
    return out


def _schedule_names(p, values):
    out = []
    for v in values:
        scheduler = sd_schedulers.schedulers_map.get(v) or sd_schedulers.schedulers_map.get(v.strip().lower())
        if scheduler is None:
            labels = ", ".join(s.label for s in sd_schedulers.schedulers)
            raise RequestError("script_args", f"X/Y/Z plot: Unknown schedule type {v!r}. Valid schedule types: {labels}")
        out.append(scheduler.label)
    return out


def _checkpoint_names(p, values):
    out = []
    for v in values:
        info = sd_models.get_closet_checkpoint_match(v)
        if info is None:
            raise RequestError("script_args", f"X/Y/Z plot: checkpoint not found: {v!r} "
                                              f"(have: {', '.join(sd_models.checkpoint_tiles()) or 'none'})")
        out.append(info.name)
    return out


_SIZE = re.compile(r"^\s*(\d+)\s*[xX]\s*(\d+)\s*$")


def _sizes(p, values):
    """"WIDTHxHEIGHT" values, each checked as the job's own size would be (multiples of 8,
    the pixel limit) before the first cell runs."""
    out = []
    for v in values:
        match = _SIZE.match(v)
        if not match:
            raise RequestError("script_args", f"X/Y/Z plot: Size {v!r} is not WIDTHxHEIGHT (such as 512x768)")
        width, height = int(match[1]), int(match[2])
        try:
            sized = copy.copy(p)
            sized.width, sized.height = width, height
            sized.validate()
        except RequestError as e:
            raise RequestError("script_args", f"X/Y/Z plot: Size {v!r}: {e.message}") from None
        out.append(f"{width}x{height}")
    return out


@dataclass
class Axis:
    label: str  # A1111's label: the API's axis type and the name in A1111_AXES
    kind: type  # int, float or str
    apply: Callable
    confirm: Callable | None = None
    normalise: Callable | None = None  # (p, values) -> canonical values (or a RequestError)
    choices: Callable | None = None  # for the dropdown
    img2img_only: bool = False
    bare_label: bool = False  # the label shows the value alone (Prompt S/R)
    orders: bool = False  # the cells are every order of the listed values (Prompt order)

    def format(self, value) -> str:
        if isinstance(value, tuple):
            return ", ".join(value)
        if isinstance(value, float):
            value = round(value, 8)
            value = int(value) if value.is_integer() else value
        return str(value) if self.bare_label else f"{self.label}: {value}"


# The axes Kiln can plot, in A1111's order. Only fields the engine honours are here: an
# axis whose values change nothing in Kiln's generation (Eta, Sigma Churn, RNG source,
# and Styles, which a script's sub-job does not apply again) would plot one picture many
# times, so it is left out and named as unsupported instead.
AXES = [
    Axis("Nothing", str, lambda p, v, vs: None),
    Axis("Seed", int, _set("seed")),
    Axis("Var. seed", int, _set("subseed")),
    Axis("Var. strength", float, _set("subseed_strength")),
    Axis("Steps", int, _set("steps")),
    Axis("CFG Scale", float, _set("cfg_scale")),
    Axis("Prompt S/R", str, _prompt_sr, confirm=_confirm_sr, bare_label=True),
    Axis("Prompt order", str, _prompt_order, confirm=_confirm_order, orders=True),
    Axis("Sampler", str, _set("sampler_name"), normalise=_sampler_names, choices=sd_samplers.visible_sampler_names),
    Axis("Checkpoint name", str, _checkpoint, normalise=_checkpoint_names),
    Axis("Schedule type", str, _set("scheduler"), normalise=_schedule_names,
         choices=lambda: [s.label for s in sd_schedulers.schedulers]),
    Axis("Clip skip", int, _clip_skip),
    # A1111's txt2img Denoising changes only the hires. fix pass, which Kiln does not have
    Axis("Denoising", float, _set("denoising_strength"), img2img_only=True),
    Axis("Size", str, _size, normalise=_sizes),
]

# A1111 1.10's axis list, in its order: the labels of `axis_options` in
# AUTOMATIC1111/stable-diffusion-webui, scripts/xyz_grid.py, with the tab an axis is
# limited to (AxisOptionTxt2Img / AxisOptionImg2Img; None: both). A1111's page and API
# take an axis type as an index into this list filtered to the tab, so an integer from
# an A1111 client means A1111_AXES filtered the same way (a1111_labels).
A1111_AXES = [
    ("Nothing", None), ("Seed", None), ("Var. seed", None), ("Var. strength", None), ("Steps", None),
    ("Hires steps", "txt2img"), ("CFG Scale", None), ("Image CFG Scale", "img2img"), ("Prompt S/R", None),
    ("Prompt order", None), ("Sampler", "txt2img"), ("Hires sampler", "txt2img"), ("Sampler", "img2img"),
    ("Checkpoint name", None), ("Negative Guidance minimum sigma", None), ("Sigma Churn", None),
    ("Sigma min", None), ("Sigma max", None), ("Sigma noise", None), ("Schedule type", None),
    ("Schedule min sigma", None), ("Schedule max sigma", None), ("Schedule rho", None),
    ("Beta schedule alpha", None), ("Beta schedule beta", None), ("Eta", None), ("Clip skip", None),
    ("Denoising", None), ("Initial noise multiplier", None), ("Extra noise", None), ("Hires upscaler", "txt2img"),
    ("Cond. Image Mask Weight", "img2img"), ("VAE", None), ("Styles", None), ("UniPC Order", None),
    ("Face restore", None), ("Token merging ratio", None), ("Token merging ratio high-res", None),
    ("Always discard next-to-last sigma", None), ("SGM noise multiplier", None), ("Refiner checkpoint", None),
    ("Refiner switch at", None), ("RNG source", None), ("FP8 mode", None), ("Size", None),
]


def _tab(is_img2img: bool) -> str:
    return "img2img" if is_img2img else "txt2img"


def axes_for(is_img2img: bool) -> list[Axis]:
    return [a for a in AXES if is_img2img or not a.img2img_only]


def a1111_labels(is_img2img: bool) -> list[str]:
    """A1111's axis labels on this tab: an A1111 client's axis index points into this."""
    return [label for label, tab in A1111_AXES if tab in (None, _tab(is_img2img))]


def find_axis(value, is_img2img: bool) -> Axis:
    """The axis an axis type means: a label (any case), or an index into A1111's list
    for the tab; a RequestError names an A1111 axis Kiln does not plot."""
    axes = axes_for(is_img2img)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        labels = a1111_labels(is_img2img)
        if not 0 <= value < len(labels):
            raise RequestError("script_args", f"X/Y/Z plot: axis index {value} is out of range: A1111's "
                                              f"{_tab(is_img2img)} axes are 0-{len(labels) - 1}")
        value = labels[value]
    if isinstance(value, str):
        wanted = value.strip().lower()
        for axis in axes:
            if axis.label.lower() == wanted:
                return axis
        for label, _tab_only in A1111_AXES:
            if label.lower() == wanted:
                other_tab = any(a.label == label for a in AXES)  # Denoising in txt2img
                where = f" in {_tab(is_img2img)}" if other_tab else ""
                raise RequestError("script_args", f"X/Y/Z plot: axis {label!r} is not supported by Kiln{where}")
    raise RequestError("script_args", f"X/Y/Z plot: unknown axis {value!r} (have: {', '.join(a.label for a in axes)})")


# ---- values ----------------------------------------------------------------------------------
_NUM = r"([+-]?\s*\d+(?:\.\d*)?)"
_STEP_RANGE = re.compile(rf"^\s*{_NUM}\s*-\s*{_NUM}\s*(?:\(\s*([+-]\s*\d+(?:\.\d*)?)\s*\))?\s*$")
_COUNT_RANGE = re.compile(rf"^\s*{_NUM}\s*-\s*{_NUM}\s*\[\s*(\d+)\s*\]\s*$")


def _num(text: str, kind: type):
    return kind(float(text.replace(" ", ""))) if kind is int else float(text.replace(" ", ""))


def split_values(text: str) -> list[str]:
    """A CSV line: quotes keep commas inside a value."""
    rows = list(csv.reader(io.StringIO(text or ""), skipinitialspace=True))
    return [v.strip() for v in (rows[0] if rows else []) if v.strip()]


def parse_values(text: str, kind: type) -> list:
    """`1-5`, `10-30 (+5)`, `1-10 [5]` and plain values (comma separated)."""
    out: list = []
    for item in split_values(text):
        if kind is str:
            out.append(item)
            continue
        count = _COUNT_RANGE.match(item)
        stepped = _STEP_RANGE.match(item)
        try:
            if count:
                start, end, n = _num(count[1], float), _num(count[2], float), int(count[3])
                values = np.linspace(start, end, num=n)
                out += [int(v) for v in values] if kind is int else [round(float(v), 8) for v in values]
            elif stepped:
                start, end = _num(stepped[1], kind), _num(stepped[2], kind)
                step = _num(stepped[3], kind) if stepped[3] else (1 if end >= start else -1)
                if step == 0 or (end - start) * step < 0:
                    raise ValueError
                n = int((end - start) / step + 1e-9) + 1
                out += [kind(round(start + i * step, 8)) for i in range(n)]
            else:
                out.append(_num(item, kind))
        except ValueError:
            raise RequestError("script_args", f"X/Y/Z plot: {item!r} is not a {kind.__name__} or a range") from None
    return out


# ---- the script -------------------------------------------------------------------------------
class Script(scripts.Script):
    def title(self):
        return "X/Y/Z plot"

    def show(self, is_img2img):
        return True

    def ui(self, is_img2img):
        import gradio as gr  # here, not at the top: the engine alone (API, benchmarks) never pays for it

        labels = [a.label for a in axes_for(is_img2img)]
        fields = []
        for axis_name, default in (("x", 1), ("y", 0), ("z", 0)):
            with gr.Row():
                # the label is sent, not its place: an integer axis type means A1111's list
                kind = gr.Dropdown(labels, value=labels[default], label=f"{axis_name.upper()} type",
                                   elem_id=self.elem_id(f"{axis_name}_type"))
                values = gr.Textbox(label=f"{axis_name.upper()} values", value="", lines=1,
                                    elem_id=self.elem_id(f"{axis_name}_values"))
                dropdown = gr.Dropdown([], value=[], multiselect=True, label=f"{axis_name.upper()} values",
                                       visible=False, elem_id=self.elem_id(f"{axis_name}_values_dropdown"))

            def switch(label):
                axis = find_axis(label, is_img2img)
                choices = axis.choices() if axis.choices else []
                return gr.update(), gr.update(choices=choices, value=[], visible=bool(choices))

            kind.change(switch, kind, [values, dropdown], queue=False, api_name=False)
            fields += [kind, values, dropdown]
        with gr.Row():
            draw_legend = gr.Checkbox(label="Draw legend", value=True, elem_id=self.elem_id("draw_legend"))
            include_lone_images = gr.Checkbox(label="Include Sub Images", value=False,
                                              elem_id=self.elem_id("include_lone_images"))
            include_sub_grids = gr.Checkbox(label="Include Sub Grids", value=False,
                                            elem_id=self.elem_id("include_sub_grids"))
            no_fixed_seeds = gr.Checkbox(label="Keep -1 for seeds", value=False, elem_id=self.elem_id("no_fixed_seeds"))
        with gr.Row():
            vary = [gr.Checkbox(label=f"Vary seeds for {a}", value=False, elem_id=self.elem_id(f"vary_seeds_{a.lower()}"))
                    for a in "XYZ"]
            margin_size = gr.Slider(0, 500, value=0, step=2, label="Grid margins (px)", elem_id=self.elem_id("margin"))
            csv_mode = gr.Checkbox(label="Use text inputs instead of dropdowns", value=False,
                                   elem_id=self.elem_id("csv_mode"))
        return fields + [draw_legend, include_lone_images, include_sub_grids, no_fixed_seeds, *vary, margin_size,
                         csv_mode]

    def _values(self, p, axis: Axis, text, dropdown, csv_mode) -> list:
        if axis.label == "Nothing":
            return [None]
        if axis.choices and not csv_mode and dropdown:
            values = [str(v) for v in dropdown]
        else:
            values = parse_values(text if isinstance(text, str) else ",".join(map(str, text or [])), axis.kind)
        if not values:
            raise RequestError("script_args", f"X/Y/Z plot: no values for {axis.label}")
        if axis.normalise:
            values = axis.normalise(p, values)
        if axis.confirm:
            axis.confirm(p, values)
        return values

    def run(self, p, x_type=1, x_values="", x_values_dropdown=None, y_type=0, y_values="", y_values_dropdown=None,
            z_type=0, z_values="", z_values_dropdown=None, draw_legend=True, include_lone_images=False,
            include_sub_grids=False, no_fixed_seeds=False, vary_seeds_x=False, vary_seeds_y=False,
            vary_seeds_z=False, margin_size=0, csv_mode=False):
        axes = [find_axis(t, p.is_img2img) for t in (x_type, y_type, z_type)]
        values = [self._values(p, axis, text, dropdown, csv_mode)
                  for axis, text, dropdown in zip(axes, (x_values, y_values, z_values),
                                                  (x_values_dropdown, y_values_dropdown, z_values_dropdown))]
        if not no_fixed_seeds:
            fix_seed(p)
            for i, axis in enumerate(axes):  # -1 on a seed axis: one random seed for the whole plot
                if axis.label in ("Seed", "Var. seed"):
                    values[i] = [fix_seed_value(v) for v in values[i]]
        # what each axis plots: its values, or every order of them (Prompt order)
        xs, ys, zs = (list(itertools.permutations(vs)) if axis.orders else vs for axis, vs in zip(axes, values))
        state.job_count = len(xs) * len(ys) * len(zs) * int(p.n_iter)

        cells, lone, lone_info, lone_paths, seeds, prompts = [], [], [], [], [], []
        grid_info = None
        for iz, z in enumerate(zs):
            for iy, y in enumerate(ys):
                for ix, x in enumerate(xs):
                    if state.interrupted:
                        break
                    pc = copy.copy(p)
                    pc.styles = list(pc.styles)
                    for axis, value, vs in zip(axes, (x, y, z), values):
                        axis.apply(pc, value, vs)
                    for vary, index in ((vary_seeds_x, ix), (vary_seeds_y, iy), (vary_seeds_z, iz)):
                        if vary and isinstance(pc.seed, int):
                            pc.seed += index
                    if ix == iy == iz == 0:  # the first cell's infotext becomes the grid's
                        for name, axis, vs in zip("XYZ", axes, values):
                            if axis.label != "Nothing":
                                pc.extra_generation_params[f"{name} Type"] = axis.label
                                pc.extra_generation_params[f"{name} Values"] = ", ".join(map(str, vs))
                    pc.do_not_save_grid = True
                    processed = process_images(pc)
                    if not processed.images:
                        continue
                    if grid_info is None:
                        grid_info = processed.infotexts[0]
                    cells.append(processed.images[0])
                    lone += processed.images
                    lone_info += processed.infotexts
                    lone_paths += processed.paths
                    seeds += processed.all_seeds
                    prompts += processed.all_prompts
        if not cells:
            return Processed(p, [], p.seed, "")
        while len(cells) < len(xs) * len(ys) * len(zs):  # interrupted: the rest of the grid stays black
            cells.append(cells[0].copy().point(lambda _v: 0))

        def labels(axis, vs):
            if not draw_legend or axis.label == "Nothing":
                return None
            return [[images.GridLabel(axis.format(v))] for v in vs]

        per_z = len(xs) * len(ys)
        cells = same_size(cells)
        sub_grids = [images.labelled_grid(cells[i * per_z:(i + 1) * per_z], len(xs), labels(axes[0], xs),
                                          labels(axes[1], ys), int(margin_size)) for i in range(len(zs))]
        grid = sub_grids[0] if len(zs) == 1 else images.labelled_grid(same_size(sub_grids), len(zs),
                                                                      labels(axes[2], zs), None, int(margin_size))
        grid_path = None
        if opts.grid_save and not p.do_not_save_samples:
            folder = Path(p.outpath_grids)
            grid_path = images.save_image(grid, images.dated_folder(folder.parent, folder.name), "xyz_grid", grid_info)

        out_images, out_info, out_paths = [grid], [grid_info], [grid_path]
        if include_sub_grids and len(zs) > 1:
            out_images += sub_grids
            out_info += [grid_info] * len(sub_grids)
            out_paths += [None] * len(sub_grids)
        if include_lone_images:
            out_images += lone
            out_info += lone_info
            out_paths += lone_paths
        return Processed(p, out_images, seeds[0], grid_info, all_seeds=seeds, all_prompts=prompts,
                         infotexts=out_info, paths=out_paths, index_of_first_image=1)


def same_size(pictures: list) -> list:
    """Pictures of different sizes (a Size axis) centred on white tiles of the largest
    width and height, so that a grid's rows and columns line up; equal ones unchanged."""
    width, height = max(pic.width for pic in pictures), max(pic.height for pic in pictures)
    out = []
    for pic in pictures:
        if pic.size != (width, height):
            tile = Image.new("RGB", (width, height), "white")
            tile.paste(pic.convert("RGB"), ((width - pic.width) // 2, (height - pic.height) // 2))
            pic = tile
        out.append(pic)
    return out


def fix_seed_value(value):
    from modules.processing import get_fixed_seed
    return get_fixed_seed(value)
