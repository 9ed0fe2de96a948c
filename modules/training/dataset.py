"""Procedural dataset for the demo model: scenes from the shapes world, drawn once."""
from __future__ import annotations

import random

import numpy as np

from modules.training.shapes_world import Scene, draw_scene, random_scene

DATA_VERSION = "shapes-v2"  # v2: captions name the position 80% of the time (was 60%)


def generate(count: int, size: int, seed: int) -> tuple[np.ndarray, list[Scene]]:
    """(count, size, size, 3) uint8 images and the scene each one shows."""
    rng = random.Random(seed)
    scenes = [random_scene(rng) for _ in range(count)]
    images = np.stack([np.asarray(draw_scene(s, size, rng)) for s in scenes])
    return images, scenes
