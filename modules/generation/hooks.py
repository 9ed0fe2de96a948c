"""The loop's controls and extension points: what a running job can be told (JobControl)
and where code outside the engine may step in (Hooks). The engine calls them at fixed
places and knows nothing else about who fills them in (the A1111 script host in
modules/scripts.py is one such filler)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from PIL import Image

from modules.files import images


@dataclass
class JobControl:
    """Flags the UI/API set while a job runs; the loop reads them between steps."""
    interrupted: bool = False
    skipped: bool = False
    on_step: Callable[[int, int, torch.Tensor], None] | None = None


@dataclass
class Batch:
    """One batch of the loop as hooks see it: its number and per-image prompts and seeds.
    A hook may change the lists in place (or replace them); the loop reads them back."""
    number: int
    prompts: list[str]
    negative_prompts: list[str]
    seeds: list[int]
    subseeds: list[int]


class Hooks:
    """The loop's extension points, called at fixed places (this base does nothing).
    modules/scripts.py's ScriptHooks fills them in with extensions' scripts and
    callbacks; the engine knows nothing else about extensions."""

    wants_cfg_denoiser = False  # True: call cfg_denoiser every step (costs a context rebuild)

    def batch_starting(self, batch: Batch) -> None:
        """Before a batch's conditioning is encoded: prompts and seeds may change."""

    def cfg_denoiser(self, x: torch.Tensor, image_cond, sigma, step: int, total: int,
                     cond: torch.Tensor, uncond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Before the UNet call of a step: returns (x, cond context, uncond context) to use.
        `cond` holds every AND sub-prompt's context, one after the other."""
        return x, cond, uncond

    def batch_done(self, batch: Batch, images: list[Image.Image]) -> list[Image.Image]:
        """After decoding a batch: returns the images to keep (postprocessed)."""
        return images

    def save_image(self, image: Image.Image, folder: Path, suffix: str, text: str) -> Path:
        return images.save_image(image, folder, suffix, text)
