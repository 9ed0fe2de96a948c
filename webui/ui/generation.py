"""The generation tabs (txt2img, img2img, inpaint): one builder, the same controls, the
same GenerationRequest, the same runtime.generate."""
from __future__ import annotations

from pathlib import Path

import gradio as gr
from PIL import Image, ImageChops

from modules.files import infotext
from modules.generation import img2img
from modules.generation.hooks import JobControl
from modules.generation.request import GenerationRequest, RequestError
from modules.scripts import host_of
from modules.text import styles
from webui.api.wire import generation_info
from webui.ui import styles as styles_ui
from webui.ui.common import GPU, USER_ERRORS, sampler_dropdowns, seed_row, user_error
from webui.ui.scripts import ScriptControls

COMMON = ("prompt", "negative_prompt", "sampler_name", "scheduler", "steps", "width", "height", "n_iter",
          "batch_size", "cfg_scale", "seed", "subseed", "subseed_strength")
INTS = ("steps", "width", "height", "n_iter", "batch_size", "seed", "subseed", "resize_mode", "mask_blur",
        "inpainting_fill", "inpainting_mask_invert", "inpaint_full_res_padding")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


class Tab:
    """A built tab: its request components (by field name) and its outputs."""

    def __init__(self, mode: str):
        self.mode = mode
        self.fields: dict[str, gr.components.Component] = {}
        self.gallery = self.info = self.details = self.selected = None
        self.send_buttons: dict[str, gr.Button] = {}
        self.image_input = None  # img2img's init image / inpaint's editor
        self.styles = None  # the Styles multi-select beside the prompt
        self.style_editor = None  # webui.ui.styles.Editor
        self.token_counters = ()  # (prompt, negative prompt) counters


def _editor_image_and_mask(value) -> tuple[Image.Image | None, Image.Image | None]:
    """Gradio's ImageEditor value -> (picture, brush mask from the layers' alpha)."""
    if value is None:
        return None, None
    if isinstance(value, Image.Image):
        return value.convert("RGB"), None
    background = value.get("background")
    if background is None:
        return None, None
    mask = None
    for layer in value.get("layers") or []:
        if layer is not None:  # brush strokes are opaque pixels of a transparent layer
            alpha = layer.convert("RGBA").getchannel("A")
            mask = alpha if mask is None else ImageChops.lighter(mask, alpha)
    return background.convert("RGB"), mask


def build(runtime, mode: str, clip_skip: gr.components.Component | None = None) -> Tab:
    """One generation tab. `clip_skip` is the page's quick setting beside the checkpoint:
    an input of every generation, so the request carries the value shown."""
    tab = Tab(mode)
    f = tab.fields
    with gr.Row():
        with gr.Column(scale=4):
            with gr.Row():
                f["prompt"] = gr.Textbox(label="Prompt", lines=3, elem_id=f"{mode}_prompt", scale=20,
                                         placeholder="a large red circle on a blue background")
                prompt_count = gr.HTML(token_counter_html(0, 75), elem_id=f"{mode}_token_counter", min_width=60,
                                       padding=False)
            with gr.Row():
                f["negative_prompt"] = gr.Textbox(label="Negative prompt", lines=2, elem_id=f"{mode}_neg_prompt",
                                                  scale=20)
                negative_count = gr.HTML(token_counter_html(0, 75), elem_id=f"{mode}_negative_token_counter",
                                         min_width=60, padding=False)
            tab.token_counters = (prompt_count, negative_count)
        with gr.Column(scale=1, min_width=180):
            generate = gr.Button("Generate", variant="primary", elem_id=f"{mode}_generate")
            with gr.Row():
                interrupt = gr.Button("Interrupt", elem_id=f"{mode}_interrupt")
                skip = gr.Button("Skip", elem_id=f"{mode}_skip")
            tab.styles = gr.Dropdown(label="Styles", choices=style_names(runtime), value=[], multiselect=True,
                                     elem_id=f"{mode}_styles")
    tab.style_editor = styles_ui.editor(mode)
    with gr.Row():
        with gr.Column():
            extra_inputs = []
            batch_dirs = None
            if mode == "img2img":
                with gr.Tabs():
                    with gr.Tab("Single image"):
                        tab.image_input = gr.Image(label="Image for img2img", type="pil", format="png",
                                                   elem_id="img2img_image", sources=["upload", "clipboard"])
                    with gr.Tab("Batch"):
                        batch_in = gr.Textbox(label="Input directory", elem_id="img2img_batch_input_dir")
                        batch_out = gr.Textbox(label="Output directory", elem_id="img2img_batch_output_dir")
                        batch_go = gr.Button("Process the folder", elem_id="img2img_batch_generate")
                        batch_dirs = (batch_in, batch_out, batch_go)
            elif mode == "inpaint":
                tab.image_input = gr.ImageEditor(label="Image: paint the area to repaint", type="pil", format="png",
                                                 elem_id="inpaint_editor", sources=["upload", "clipboard"],
                                                 brush=gr.Brush(colors=["#ffffff"], color_mode="fixed"),
                                                 layers=False, transforms=())
                mask_upload = gr.Image(label="Mask (optional: white = repaint)", type="pil", image_mode="L",
                                       elem_id="inpaint_mask", sources=["upload"], height=160)
                extra_inputs += [tab.image_input, mask_upload]
            if mode == "img2img":
                extra_inputs.append(tab.image_input)
            if mode != "txt2img":
                f["resize_mode"] = gr.Radio(list(img2img.RESIZE_MODES), value=img2img.RESIZE_MODES[0], type="index",
                                            label="Resize mode", elem_id=f"{mode}_resize_mode")
            if mode == "inpaint":
                with gr.Row():
                    f["mask_blur"] = gr.Slider(0, 64, value=4, step=1, label="Mask blur", elem_id="inpaint_mask_blur")
                    f["inpaint_full_res_padding"] = gr.Slider(0, 256, value=32, step=4, label="Only masked padding, pixels",
                                                              elem_id="inpaint_padding")
                f["inpainting_mask_invert"] = gr.Radio(list(img2img.MASK_MODES), value=img2img.MASK_MODES[0], type="index",
                                                       label="Mask mode", elem_id="inpaint_mask_mode")
                f["inpainting_fill"] = gr.Radio(list(img2img.MASKED_CONTENT), value="original", type="index",
                                                label="Masked content", elem_id="inpaint_masked_content")
                f["inpaint_full_res"] = gr.Radio(list(img2img.INPAINT_AREAS), value=img2img.INPAINT_AREAS[0], type="index",
                                                 label="Inpaint area", elem_id="inpaint_area")
                with gr.Accordion("Outpainting", open=False):
                    outpaint_px = gr.Slider(0, 256, value=0, step=8, label="Extend by, pixels", elem_id="outpaint_pixels")
                    outpaint_sides = gr.CheckboxGroup(["left", "right", "up", "down"], value=["right"],
                                                      label="Sides", elem_id="outpaint_sides")
                extra_inputs += [outpaint_px, outpaint_sides]
            f["sampler_name"], f["scheduler"] = sampler_dropdowns()
            f["steps"] = gr.Slider(1, 150, value=20, step=1, label="Sampling steps", elem_id=f"{mode}_steps")
            with gr.Row():
                f["width"] = gr.Slider(64, 2048, value=512, step=8, label="Width", elem_id=f"{mode}_width")
                f["height"] = gr.Slider(64, 2048, value=512, step=8, label="Height", elem_id=f"{mode}_height")
            with gr.Row():
                f["n_iter"] = gr.Slider(1, 100, value=1, step=1, label="Batch count", elem_id=f"{mode}_batch_count")
                f["batch_size"] = gr.Slider(1, 8, value=1, step=1, label="Batch size", elem_id=f"{mode}_batch_size")
            f["cfg_scale"] = gr.Slider(1, 30, value=7, step=0.5, label="CFG Scale", elem_id=f"{mode}_cfg_scale")
            if mode != "txt2img":
                f["denoising_strength"] = gr.Slider(0, 1, value=0.75, step=0.01, label="Denoising strength",
                                                    elem_id=f"{mode}_denoising_strength")
            f["seed"], reuse_seed, f["subseed"], f["subseed_strength"] = seed_row()
            scripts = ScriptControls(host_of(runtime).runner, mode != "txt2img", mode)  # the Script dropdown, always-on scripts
        with gr.Column():
            tab.gallery = gr.Gallery(label="Output", format="png", columns=2, elem_id=f"{mode}_gallery", type="filepath")
            with gr.Row():
                for target in ("img2img", "inpaint"):
                    tab.send_buttons[target] = gr.Button(f"Send to {target}", elem_id=f"{mode}_send_to_{target}", size="sm")
            tab.info = gr.Textbox(label="Generation info", lines=4, interactive=False, elem_id=f"{mode}_info")
            tab.details = gr.JSON(visible=False)
            tab.selected = gr.State(0)

    names = list(f)
    ordered = [f[n] for n in COMMON] + [f[n] for n in names if n not in COMMON]
    order = list(COMMON) + [n for n in names if n not in COMMON]

    # inputs added after the first release go last, so API callers' positional arguments keep working
    late = [tab.styles] + ([clip_skip] if clip_skip is not None else [])

    def make_request(values) -> GenerationRequest:
        values, late_values = list(values[:len(values) - len(late)]), list(values[len(values) - len(late):])
        fields = dict(zip(order, values[:len(order)]))
        fields["styles"] = list(late_values[0] or [])
        if clip_skip is not None:
            fields["clip_skip"] = int(late_values[1] or 1)
        for k in INTS:
            if k in fields:
                fields[k] = int(fields[k]) if fields[k] is not None else -1
        if "inpaint_full_res" in fields:
            fields["inpaint_full_res"] = bool(fields["inpaint_full_res"])
        rest = list(values[len(order):])
        if mode == "img2img":
            if rest[0] is None:
                raise gr.Error("Upload an image to img2img first", print_exception=False)
            fields["init_images"] = [rest[0]]
        elif mode == "inpaint":
            editor, uploaded, pixels, sides = rest
            picture, painted = _editor_image_and_mask(editor)
            if picture is None:
                raise gr.Error("Upload an image to inpaint first", print_exception=False)
            mask = uploaded.convert("L") if uploaded is not None else painted
            if pixels and sides:
                picture, mask = img2img.outpaint_canvas(picture, int(pixels), tuple(sides))
                fields["width"], fields["height"] = picture.size
            elif mask is None or mask.getbbox() is None:
                raise gr.Error("Paint over the area to repaint, or upload a mask", print_exception=False)
            fields["init_images"], fields["mask"] = [picture], mask
        return GenerationRequest(**fields)

    def run(*values, progress=gr.Progress()):
        control = JobControl(on_step=lambda s, t, _l: progress((s, t), desc="Sampling"))
        cut = len(values) - len(scripts.inputs)  # the script components' values come last
        try:
            request = make_request(values[:cut]).replace(scripts=scripts.split(values[cut:]))
            result = runtime.generate(request, control, job=f"ui-{mode}")
        except USER_ERRORS as e:
            raise user_error(e) from None
        shown = ([str(result.grid_path)] if result.grid_path else []) + [str(p) for p in result.paths]
        text = result.infotexts[0] if result.infotexts else ""
        if result.interrupted:
            text += "\n(interrupted)"
        if result.warnings:  # e.g. a LoRA that is not there: the images were made without it
            text += "".join(f"\nWarning: {w}" for w in result.warnings)
        return shown or result.images, text, generation_info(result), 1 if result.grid_path else 0

    inputs = ordered + extra_inputs + late + scripts.inputs
    outputs = [tab.gallery, tab.info, tab.details, tab.selected]
    generate.click(run, inputs, outputs, concurrency_id=GPU, concurrency_limit=1, api_name=mode)
    f["prompt"].submit(run, inputs, outputs, concurrency_id=GPU, api_name=False)
    interrupt.click(runtime.interrupt, queue=False, api_name=False)
    skip.click(runtime.skip, queue=False, api_name=False)
    reuse_seed.click(lambda data: (data or {}).get("seed", -1), tab.details, f["seed"], queue=False, api_name=False)
    tab.gallery.select(_selected_index, None, tab.selected, queue=False, api_name=False)

    # ---- token counters: tokenising only (no job queue, no device), the last keystroke wins
    def counter(negative: bool):
        def count(text, steps, chosen):
            return token_counter_html(*runtime.token_count(text or "", int(steps or 1), chosen or [], negative))
        return count

    for box, shown, negative in ((f["prompt"], prompt_count, False), (f["negative_prompt"], negative_count, True)):
        name = f"{mode}_{'negative_' if negative else ''}token_counter"
        count_inputs = [box, f["steps"], tab.styles]
        box.change(counter(negative), count_inputs, shown, queue=False, trigger_mode="always_last",
                   show_progress="hidden", api_name=name)
        for other in (f["steps"], tab.styles):
            other.change(counter(negative), count_inputs, shown, queue=False, trigger_mode="always_last",
                         show_progress="hidden", api_name=False)

    if batch_dirs:
        batch_in, batch_out, batch_go = batch_dirs

        def run_batch(*values, progress=gr.Progress()):
            src, dst = Path(values[len(order)] or ""), Path(values[len(order) + 1] or "")
            if not src.is_dir():
                raise gr.Error(f"Input directory not found: {src}", print_exception=False)
            dst.mkdir(parents=True, exist_ok=True)
            files = sorted(p for p in src.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
            done = []
            for i, path in enumerate(files):
                progress((i, len(files)), desc=path.name)
                request = make_request(list(values[:len(order)]) + [Image.open(path).convert("RGB")]
                                       + list(values[len(values) - len(late):]))
                try:
                    result = runtime.generate(request.replace(save_images=False), job="ui-img2img-batch")
                except USER_ERRORS as e:
                    raise user_error(e) from None
                for j, (image, text) in enumerate(zip(result.images, result.infotexts)):
                    out = dst / (f"{path.stem}.png" if len(result.images) == 1 else f"{path.stem}-{j}.png")
                    infotext.write_png_with_infotext(image, out, text)
                    done.append(str(out))
            return done, f"{len(files)} images from {src} -> {dst}", None, 0

        batch_go.click(run_batch, ordered + [batch_in, batch_out] + late, outputs, concurrency_id=GPU, api_name="img2img_batch")
    return tab


def token_counter_html(tokens: int, limit: int) -> str:
    """A1111's counter text; over one chunk it turns amber, as the prompt is then split."""
    over = " token-counter-over" if tokens > 75 else ""
    return f"<span class='token-counter{over}' title='tokens / limit of the chunks in use'>{tokens}/{limit}</span>"


def style_names(runtime) -> list[str]:
    try:
        return [s.name for s in styles.load(runtime.data_dir)]
    except RequestError:
        return []  # an unreadable styles.csv: no choices; generating with styles names the error


def _selected_index(evt: gr.SelectData) -> int:
    return evt.index


def gallery_image(gallery_value, index: int) -> Image.Image | None:
    """The picture at `index` of a gallery value (a list of paths or (path, caption))."""
    if not gallery_value:
        return None
    item = gallery_value[min(int(index or 0), len(gallery_value) - 1)]
    path = item[0] if isinstance(item, (tuple, list)) else item.get("image", {}).get("path") if isinstance(item, dict) else item
    return Image.open(path).convert("RGB") if isinstance(path, (str, Path)) else path


def apply_fields(tab: Tab, fields: dict) -> list:
    """Updates for the tab's common components from request fields (Send to txt2img)."""
    return [gr.update(value=fields[name]) if name in fields else gr.update() for name in COMMON]


__all__ = ["build", "apply_fields", "gallery_image", "Tab", "COMMON", "infotext"]
