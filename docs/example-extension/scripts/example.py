"""Kiln example extension: an always-on script that draws a frame around every generated
image (when ticked), and a tab that shows how many images it framed.

Copy this folder into extensions/ (or <data-dir>/extensions/, or use the Extensions tab's
"Install from URL" with this folder's full path), then Apply and restart UI.
"""
from PIL import ImageDraw

from modules import script_callbacks, scripts, shared

COLOURS = {"red": (220, 30, 30), "white": (255, 255, 255), "black": (0, 0, 0)}
FRAMED = {"images": 0}  # module state lives as long as the script is loaded


class FrameScript(scripts.Script):
    def title(self):
        return "Example frame"  # the accordion's title; the API's alwayson_scripts key

    def show(self, is_img2img):
        return scripts.AlwaysVisible  # on every generation, in txt2img, img2img and inpaint

    def ui(self, is_img2img):
        import gradio as gr  # here, not at the top: engine-only runs load scripts without the UI

        # the values of these components arrive as the hooks' extra arguments, in this order
        enabled = gr.Checkbox(label="Draw a frame", value=False, elem_id=self.elem_id("enabled"))
        colour = gr.Dropdown(list(COLOURS), value="red", label="Colour", elem_id=self.elem_id("colour"))
        width = gr.Slider(1, 16, value=4, step=1, label="Width (pixels)", elem_id=self.elem_id("width"))
        return [enabled, colour, width]

    def process(self, p, enabled, colour, width):
        # before anything is generated: what goes into every image's infotext
        if enabled:
            p.extra_generation_params["Example frame"] = f"{colour} {int(width)}px"

    def postprocess_image(self, p, pp, enabled, colour, width):
        # each image, before it is saved: replace pp.image to change what is saved and shown
        if not enabled:
            return
        image = pp.image.convert("RGB")
        w = int(width)
        ImageDraw.Draw(image).rectangle((0, 0, image.width - 1, image.height - 1), outline=COLOURS[colour], width=w)
        pp.image = image
        FRAMED["images"] += 1


def count_text():
    return f"Framed **{FRAMED['images']}** image(s) since Kiln started. Output folder: `{shared.opts.outdir_samples}`."


def on_ui_tabs():
    import gradio as gr  # only the web UI calls this

    with gr.Blocks(analytics_enabled=False) as tab:
        gr.Markdown("Tick **Draw a frame** in the *Example frame* section of txt2img, then generate.")
        count = gr.Markdown(count_text(), elem_id="kiln_example_count")
        refresh = gr.Button("Refresh", elem_id="kiln_example_refresh")
        refresh.click(count_text, None, count, api_name="kiln_example_count")
    return [(tab, "Example", "kiln_example_tab")]  # (blocks, tab title, element id)


script_callbacks.on_ui_tabs(on_ui_tabs)
