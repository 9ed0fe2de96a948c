"""The demo model's world: one flat shape on a flat background.

Plain data and plain functions shared by the dataset generator (which draws the world)
and the evaluation script (which classifies generated images back into it), so the two
can never disagree about what "orange" or "on the left" means.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (240, 220, 40),
    "orange": (245, 140, 30),
    "purple": (140, 60, 180),
    "white": (245, 245, 245),
    "black": (15, 15, 15),
}
SHAPES = ("circle", "square", "triangle")
SIZES = {"small": 0.14, "large": 0.24}  # radius as a share of the image side
POSITIONS = {  # centre as a share of the image side
    "on the left": (0.28, 0.5),
    "on the right": (0.72, 0.5),
    "at the top": (0.5, 0.28),
    "at the bottom": (0.5, 0.72),
    "in the centre": (0.5, 0.5),
}


@dataclass(frozen=True)
class Scene:
    colour: str
    shape: str
    background: str
    size: str
    position: str

    def caption(self, rng: random.Random | None = None) -> str:
        """The full caption, or (with rng) one with optional parts dropped at random."""
        keep = (lambda p: rng.random() < p) if rng else (lambda p: True)
        words = ["a"]
        if keep(0.5):
            words.append(self.size)
        words += [self.colour, self.shape]
        if keep(0.8):  # position is the hardest binding to learn: name it more often
            words.append(self.position)
        if keep(0.6):
            words += ["on a", self.background, "background"]
        return " ".join(words)


def random_scene(rng: random.Random) -> Scene:
    colour, background = rng.sample(sorted(COLOURS), 2)
    return Scene(colour, rng.choice(SHAPES), background, rng.choice(sorted(SIZES)), rng.choice(sorted(POSITIONS)))


def draw_scene(scene: Scene, size: int, rng: random.Random, supersample: int = 4) -> Image.Image:
    """Draw at `supersample` x the size and shrink, which anti-aliases the edges."""
    big = size * supersample
    image = Image.new("RGB", (big, big), COLOURS[scene.background])
    draw = ImageDraw.Draw(image)
    jitter = 0.04
    cx, cy = POSITIONS[scene.position]
    cx = (cx + rng.uniform(-jitter, jitter)) * big
    cy = (cy + rng.uniform(-jitter, jitter)) * big
    r = SIZES[scene.size] * rng.uniform(0.85, 1.15) * big
    fill = COLOURS[scene.colour]
    if scene.shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif scene.shape == "square":
        s = r * 0.9  # a square of the same area reads as the same size as the circle
        draw.rectangle((cx - s, cy - s, cx + s, cy + s), fill=fill)
    else:
        draw.polygon([(cx, cy - r), (cx + r, cy + r * 0.8), (cx - r, cy + r * 0.8)], fill=fill)
    return image.resize((size, size), Image.Resampling.BOX)


# ---- classification of generated images --------------------------------------------

_NAMES = sorted(COLOURS)
_PALETTE = np.array([COLOURS[n] for n in _NAMES], dtype=np.float32)


def nearest_colour(pixels: np.ndarray) -> np.ndarray:
    """Index into sorted colour names of the nearest palette colour, per pixel (N, 3)."""
    d = ((pixels[:, None, :].astype(np.float32) - _PALETTE[None]) ** 2).sum(-1)
    return d.argmin(1)


@dataclass(frozen=True)
class Classified:
    colour: str | None
    background: str
    shape: str | None
    position: str | None


def classify(image: Image.Image) -> Classified:
    """Border pixels give the background; the other pixels that differ from it give the
    shape's colour; the fill ratio of their bounding box tells circle/square/triangle
    (clean shapes fill 0.50-0.57, 0.72-0.86 and 0.98-1.0 of it)."""
    a = np.asarray(image.convert("RGB"))
    h, w, _ = a.shape
    labels = nearest_colour(a.reshape(-1, 3)).reshape(h, w)
    border = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
    bg = int(np.bincount(border, minlength=len(_NAMES)).argmax())
    mask = labels != bg
    if mask.sum() < 0.005 * h * w:
        return Classified(None, _NAMES[bg], None, None)
    colour = int(np.bincount(labels[mask], minlength=len(_NAMES)).argmax())
    # the box of the largest connected patch of the shape's colour: stray pixels elsewhere
    # cannot stretch it. (A box between the 1st and 99th percentiles, used before, cut off
    # the thin apex and corners of a triangle, so a clean triangle read 0.61 against the
    # 0.64 threshold for a circle, while a clean one fills half its box.)
    patches, _ = ndimage.label(labels == colour)
    shape_mask = patches == np.bincount(patches.ravel())[1:].argmax() + 1
    ys, xs = np.nonzero(shape_mask)
    box = (xs.max() - xs.min() + 1) * (ys.max() - ys.min() + 1)
    fill = shape_mask.sum() / box
    shape = "square" if fill > 0.88 else "circle" if fill > 0.64 else "triangle"
    cx, cy = xs.mean() / w, ys.mean() / h
    dx, dy = cx - 0.5, cy - 0.5
    if max(abs(dx), abs(dy)) < 0.11:
        position = "in the centre"
    elif abs(dx) > abs(dy):
        position = "on the left" if dx < 0 else "on the right"
    else:
        position = "at the top" if dy < 0 else "at the bottom"
    return Classified(_NAMES[colour], _NAMES[bg], shape, position)
