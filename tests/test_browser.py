"""End to end in a real browser: headless Chromium (Debian's package) driven by Playwright.

Skipped, with the reason, where no Chromium is installed and none can be installed.
Screenshots of each tab land in tests/artifacts/."""
from __future__ import annotations

import os
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image, ImageDraw

from tests.conftest import ROOT

ARTIFACTS = ROOT / "tests" / "artifacts"


def fill(page, mode: str, prompt: str, **numbers) -> None:
    """Type the prompt and set sliders through their number boxes, as a person would."""
    page.locator(f"#{mode}_prompt textarea").fill(prompt)
    for name, value in numbers.items():
        page.locator(f"#{mode}_{name} input[type=number]").fill(str(value))


def find_chromium() -> str | None:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found or os.geteuid() != 0 or not shutil.which("apt-get"):
        return found
    try:  # the test set-up installs what it needs where it can (Debian's chromium package)
        subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], check=True, timeout=900,
                       capture_output=True, env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
    except (subprocess.SubprocessError, OSError):
        return None
    return shutil.which("chromium")


@pytest.fixture(scope="module")
def page(server):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    chromium = find_chromium()
    if not chromium:
        pytest.skip("no Chromium here and it could not be installed (apt-get install chromium): browser tests skipped")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    url, _ = server
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        pg = browser.new_page(viewport={"width": 1400, "height": 1000})
        pg.console_errors = []
        pg.on("console", lambda m: pg.console_errors.append(m.text) if m.type == "error" else None)
        pg.goto(url)
        pg.wait_for_selector("#txt2img_prompt textarea", timeout=60000)
        yield pg
        browser.close()


def test_page_loads_without_console_errors_and_every_tab_renders(page):
    for tab in ("txt2img", "img2img", "inpaint", "PNG Info", "Extensions"):
        page.get_by_role("tab", name=tab).click()
        page.wait_for_timeout(500)
        page.screenshot(path=str(ARTIFACTS / f"tab-{tab.replace(' ', '_').lower()}.png"), full_page=True)
    page.get_by_role("tab", name="txt2img").click()
    assert page.console_errors == []


def test_type_a_prompt_press_generate_and_an_image_appears(page, server):
    _, data = server
    fill(page, "txt2img", "a red circle", steps=3, width=64, height=64)
    page.locator("#txt2img_generate").click()
    page.wait_for_selector("#txt2img_gallery img", timeout=90000)
    page.screenshot(path=str(ARTIFACTS / "txt2img-result.png"), full_page=True)
    assert "Steps: 3," in page.locator("#txt2img_info textarea").input_value()
    assert list((data / "outputs" / "txt2img-images").rglob("*.png"))


def test_inpaint_a_brush_stroke_changes_only_the_area_near_it(page, server, tmp_path):
    _, data = server
    source = Image.new("RGB", (128, 128), (40, 80, 220))
    ImageDraw.Draw(source).ellipse((20, 20, 60, 60), fill=(240, 220, 40))
    source.save(tmp_path / "in.png")
    before = set((data / "outputs").rglob("img2img-images/*/*.png"))
    page.get_by_role("tab", name="inpaint").click()
    page.locator("#inpaint_editor input[type=file]").set_input_files(str(tmp_path / "in.png"))
    page.wait_for_timeout(1500)
    page.locator("#inpaint_editor button[aria-label=Brush]").click()
    box = page.locator("#inpaint_editor canvas").first.bounding_box()
    x, y = box["x"] + box["width"] * 0.7, box["y"] + box["height"] * 0.7  # lower right of the picture
    page.mouse.move(x - 20, y)
    page.mouse.down()
    page.mouse.move(x + 20, y, steps=10)
    page.mouse.up()
    fill(page, "inpaint", "a red circle", steps=3, width=128, height=128)
    page.locator("#inpaint_generate").click()
    page.wait_for_selector("#inpaint_gallery img", timeout=90000)
    page.screenshot(path=str(ARTIFACTS / "inpaint-result.png"), full_page=True)
    (result,) = set((data / "outputs").rglob("img2img-images/*/*.png")) - before
    changed = np.abs(np.asarray(Image.open(result).convert("RGB")).astype(int) - np.asarray(source).astype(int)).max(2) > 1
    ys, xs = np.nonzero(changed)
    assert 0 < changed.mean() < 0.5  # a stroke's worth of picture, not all of it
    assert xs.min() > 40 and ys.min() > 40  # the upper left, far from the stroke, is untouched


def test_token_counter_updates_as_you_type(page):
    page.get_by_role("tab", name="txt2img").click()
    counter = page.locator("#txt2img_token_counter")
    box = page.locator("#txt2img_prompt textarea")
    box.fill("")
    box.press_sequentially("a red circle", delay=20)
    page.wait_for_function("document.querySelector('#txt2img_token_counter').innerText.trim() == '3/75'",
                           timeout=15000)
    box.fill("cat " * 76)
    page.wait_for_function("document.querySelector('#txt2img_token_counter').innerText.trim() == '76/150'",
                           timeout=15000)
    page.screenshot(path=str(ARTIFACTS / "token-counter.png"), full_page=False)
    assert counter.inner_text().strip() == "76/150"
    box.fill("")
