"""What a model family is: everything that differs between SD1, SD2, SDXL, ... in one class.

One subclass per family (as ComfyUI's supported_models.py), holding the family's
published conventions as class attributes: what shapes in a file cannot tell (attention
heads, which CLIP layer is read, the VAE's scaling factor) and how to recognise the file
in the first place. The engine asks the family (`model.family.latent_scale`,
`model.family.text_encoders`, ...) and never compares family names.

The registry (families/__init__.py) holds one instance of each subclass;
`ModelInfo.family` and `LoadedModel.family` are that instance. Instances of one class are
interchangeable: they compare equal and hash alike. Comparing a family to a string raises
TypeError, so a leftover `family == "sdxl"` fails loudly instead of being silently False;
use `family.name` where the id is really wanted (logs, tests).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

UNET = "model.diffusion_model."  # the UNet's key prefix in the original (LDM) layout


@dataclass(frozen=True)
class TextEncoder:
    """One text encoder of a family, as it sits in a single-file checkpoint.

    Args:
        kind: which transformers class and key converter: "clip_l" (OpenAI CLIP stored
            with transformers' names), "open_clip" (OpenCLIP's names, no projection),
            "open_clip_proj" (OpenCLIP with its text projection, whose pooled output
            SDXL feeds the UNet).
        prefix: the key prefix of its weights in the file.
        pad: the tokenizer's pad token. The published models were trained with these:
            OpenAI's CLIP pads with the end token, OpenCLIP with "!" (id 0).
        layer: the hidden state read at clip skip 1 (-1: the last layer, -2: the
            penultimate). SD1 reads the last, SD2 and SDXL the penultimate.
        final_norm: whether the final layer norm is applied to that hidden state (SD1
            and SD2 do; SDXL feeds the UNet the raw penultimate layer).
    """
    kind: str
    prefix: str
    pad: str
    layer: int = -1
    final_norm: bool = True

    def hidden_index(self, clip_skip: int) -> int:
        """The index into `hidden_states` for A1111's clip skip (1 = no skip): each step of
        clip skip reads one layer further from the end."""
        return self.layer + 1 - clip_skip


@dataclass(frozen=True)
class PreviewSpace:
    """A latent space with a fitted latent -> RGB matrix (A1111's "Approx cheap").

    Args:
        name: the id previews pass around ("sd", "sdxl"); families that share a VAE share it.
        rgb: rows are latent channels, columns R, G, B.
    """
    name: str
    rgb: tuple[tuple[float, float, float], ...]


class ModelFamily:
    """Base class of a family. Subclasses set the class attributes; the methods carry the
    few rules that are more than a number. The defaults are the SD2/SDXL conventions where
    a family has no reason to differ."""

    # identity and detection
    name: ClassVar[str] = ""  # the id: "sd1", "sdxl", ... (logs, tests, synthetic checkpoints)
    title: ClassVar[str] = ""  # for people: "SD 1.x"
    markers: ClassVar[tuple[str, ...]] = ()  # key prefixes only this family's files have
    supported: ClassVar[bool] = True  # False: recognised, so refused with a clear message

    # sizes and the VAE
    native_size: ClassVar[int | None] = None  # the training resolution (square)
    latent_scale: ClassVar[float | None] = None  # the VAE's scaling factor
    vae_fp32: ClassVar[bool] = False  # keep the VAE in fp32 whatever the model's dtype

    # text
    text_encoders: ClassVar[tuple[TextEncoder, ...]] = ()  # in the order their outputs are concatenated
    added_conditioning: ClassVar[bool] = False  # the UNet also takes pooled text + time ids (added_cond_kwargs)

    # UNet conventions shapes cannot tell
    upcast_attention: ClassVar[bool] = False

    # live previews
    preview_space: ClassVar[PreviewSpace | None] = None

    @property
    def refusal(self) -> str:
        """Why an unsupported family's file is not loaded (shown to the user)."""
        return f"{self.title} checkpoints are recognised but not supported yet"

    def native_size_for(self, prediction_type: str) -> tuple[int, int]:
        """(width, height) to generate at when the file's metadata does not say."""
        return (self.native_size, self.native_size)

    def attention_heads(self, channels: list[int]) -> int | list[int]:
        """diffusers' `attention_head_dim` (really the head count): 64-wide heads."""
        return [c // 64 for c in channels]

    def transformer_layers(self, depth: list[int], mid_depth: int) -> int | tuple[int, ...]:
        """diffusers' `transformer_layers_per_block` from the transformer blocks counted
        per level (`depth`) and in the middle block: one per attention block by default."""
        return 1

    def time_ids_target(self, width: int, height: int, negative: bool, settings) -> list[float]:
        """The end of SDXL-style time ids, after original size and crop (see SDXL)."""
        raise TypeError(f"{self.title} models take no time ids")

    def __eq__(self, other):
        if isinstance(other, str):
            raise TypeError(f"compare a model family with another family or by .name, not with {other!r}")
        if not isinstance(other, ModelFamily):
            return NotImplemented
        return type(self) is type(other)

    def __hash__(self):
        return hash(type(self))

    def __repr__(self) -> str:  # stable: it is part of the loader's architecture key
        return f"{type(self).__name__}()"
