"""Saving images with their infotext, A1111's file naming, and grids."""
from __future__ import annotations

import datetime
import math
import re
from pathlib import Path

from PIL import Image

from modules.infotext import write_png_with_infotext

_NUMBERED = re.compile(r"^(\d+)-")


def dated_folder(root: Path, kind: str) -> Path:
    """outputs/txt2img-images/2026-11-23 and friends."""
    return Path(root) / kind / datetime.date.today().isoformat()


def _next_number(folder: Path) -> int:
    numbers = [int(m.group(1)) for p in folder.iterdir() if (m := _NUMBERED.match(p.name))]
    return max(numbers, default=-1) + 1


def save_image(image: Image.Image, folder: Path, stem_suffix: str, infotext: str) -> Path:
    """Save as NNNNN-<suffix>.png with the infotext; never overwrites (exclusive create)."""
    folder.mkdir(parents=True, exist_ok=True)
    number = _next_number(folder)
    while True:
        path = folder / f"{number:05d}-{stem_suffix}.png"
        try:
            with open(path, "xb"):
                pass
        except FileExistsError:
            number += 1
            continue
        write_png_with_infotext(image, path, infotext)
        return path


def image_grid(images: list[Image.Image], rows: int | None = None) -> Image.Image:
    """A1111's default layout: as square as possible."""
    n = len(images)
    rows = rows or max(1, round(math.sqrt(n)))
    cols = math.ceil(n / rows)
    w, h = images[0].size
    grid = Image.new("RGB", (cols * w, rows * h), "black")
    for i, im in enumerate(images):
        grid.paste(im, ((i % cols) * w, (i // cols) * h))
    return grid
