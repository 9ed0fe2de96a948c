"""Saving images with their infotext, A1111's file naming, and grids."""
from __future__ import annotations

import datetime
import math
import re
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from modules.files.infotext import write_png_with_infotext

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


# ---- labelled grids (X/Y/Z plot, prompt matrix) ------------------------------------------------
@dataclass
class GridLabel:
    """One line of a grid label; an inactive one (a prompt matrix part left out) is drawn
    grey and struck through."""
    text: str
    active: bool = True


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)  # Pillow's bundled scalable font
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _wrap(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> list[str]:
    """Words -> lines no wider than `width` (a single longer word keeps its own line)."""
    lines, line = [], ""
    for word in str(text).split():
        trial = f"{line} {word}".strip()
        if not line or draw.textlength(trial, font=font) <= width:
            line = trial
        else:
            lines.append(line)
            line = word
    return lines + [line] if line else lines or [""]


def labelled_grid(cells: list[Image.Image], cols: int, col_labels: list[list[GridLabel]] | None = None,
                  row_labels: list[list[GridLabel]] | None = None, margin: int = 0) -> Image.Image:
    """Cells in a grid of `cols` columns (`margin` pixels apart) on white, with each
    column's label lines above it and each row's to its left, centred."""
    rows = max(1, math.ceil(len(cells) / cols))
    w, h = cells[0].size
    size = max(12, (w + h) // 25)
    font, line_h, pad = _font(size), size + size // 3, size // 2
    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))

    def lines_of(labels: list[GridLabel], width: int) -> list[tuple[str, bool]]:
        return [(line, lab.active) for lab in labels for line in _wrap(draw, lab.text, font, width)]

    col_lines = [lines_of(labels, w - pad) for labels in col_labels] if col_labels else []
    row_w = max(w * 3 // 4, size * 8)
    row_lines = [lines_of(labels, row_w) for labels in row_labels] if row_labels else []
    top = max(len(lines) for lines in col_lines) * line_h + 2 * pad if col_lines else 0
    left = row_w + 2 * pad if row_lines else 0
    grid = Image.new("RGB", (left + cols * w + (cols - 1) * margin, top + rows * h + (rows - 1) * margin), "white")
    for i, cell in enumerate(cells):
        grid.paste(cell.convert("RGB"), (left + (i % cols) * (w + margin), top + (i // cols) * (h + margin)))
    pen = ImageDraw.Draw(grid)

    def write(lines: list[tuple[str, bool]], cx: float, cy: float) -> None:
        y = cy - len(lines) * line_h / 2
        for text, active in lines:
            tw = pen.textlength(text, font=font)
            x = cx - tw / 2
            pen.text((x, y), text, font=font, fill="black" if active else (153, 153, 153))
            if not active:
                mid = y + line_h / 2
                pen.line((x, mid, x + tw, mid), fill=(153, 153, 153), width=max(1, size // 12))
            y += line_h

    for c, lines in enumerate(col_lines[:cols]):
        write(lines, left + c * (w + margin) + w / 2, top / 2)
    for r, lines in enumerate(row_lines[:rows]):
        write(lines, left / 2, top + r * (h + margin) + h / 2)
    return grid
