"""The model families Kiln knows, in detection order.

Adding a family is adding one file beside this one (a `ModelFamily` subclass, see
base.py) and one line in FAMILIES below; detection, the loader, the text encoders,
the UNet's added conditioning and previews then follow from its attributes.

FAMILIES holds one instance of each family. The order matters: a checkpoint is of the
first family one of whose markers it has (a key equal to, or starting with, the marker),
so a family whose files also carry another family's marker must come before it.
"""
from __future__ import annotations

from modules.models.errors import CheckpointError
from modules.models.families.base import UNET, ModelFamily, PreviewSpace, TextEncoder
from modules.models.families.sd1 import SD1
from modules.models.families.sd2 import SD2
from modules.models.families.sdxl import SDXL
from modules.models.families.sdxl_refiner import SDXLRefiner
from modules.models.families.unsupported import SD3, Flux

FAMILIES: list[ModelFamily] = [
    SD3(),
    Flux(),
    SDXL(),
    SDXLRefiner(),
    SD2(),
    SD1(),
]


def by_name(name: str) -> ModelFamily:
    """The registered family whose id is `name` ("sd1", "sdxl", ...)."""
    for family in FAMILIES:
        if family.name == name:
            return family
    raise KeyError(f"unknown model family {name!r} (known: {', '.join(f.name for f in FAMILIES)})")


def family_of(keys) -> ModelFamily:
    """The family of a checkpoint from its key names alone (supported or not)."""
    keyset = keys if isinstance(keys, (set, dict)) else set(keys)
    for family in FAMILIES:
        for marker in family.markers:
            if marker in keyset or any(k.startswith(marker) for k in keyset):
                return family
    raise CheckpointError("not a Stable Diffusion checkpoint: no known text encoder or UNet keys found")


__all__ = ["FAMILIES", "UNET", "CheckpointError", "ModelFamily", "PreviewSpace", "TextEncoder", "by_name",
           "family_of", "SD1", "SD2", "SDXL", "SDXLRefiner", "SD3", "Flux"]
