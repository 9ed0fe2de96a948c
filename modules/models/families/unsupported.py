"""Families we recognise but cannot run yet: their files are refused by name instead of
failing somewhere in the loader with a shape error."""
from __future__ import annotations

from modules.models.families.base import UNET, ModelFamily


class SD3(ModelFamily):
    name = "sd3"
    title = "Stable Diffusion 3"
    markers = (UNET + "joint_blocks.",)  # MMDiT
    supported = False


class Flux(ModelFamily):
    name = "flux"
    title = "Flux"
    markers = (UNET + "double_blocks.", "double_blocks.")  # full checkpoints, and bare transformer files
    supported = False
