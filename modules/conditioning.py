"""Text -> the tensors the UNet attends to.

Prompts longer than 75 tokens are cut into 75-token chunks, each encoded as 77 tokens
with its own start/end tokens, and the results concatenated (A1111's behaviour); the
positive and negative prompts of a batch are padded to the same number of chunks.
Each family reads a different layer: SD1 the last (less `clip_skip`), SD2 the
penultimate, SDXL the penultimate of both encoders side by side plus a pooled vector.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

CHUNK = 75


@dataclass
class Conditioning:
    context: torch.Tensor  # (batch, 77 * chunks, width)
    pooled: torch.Tensor | None  # SDXL: (batch, width of the second encoder)


def _chunks(tokenizer, prompt: str) -> list[list[int]]:
    ids = tokenizer(prompt, add_special_tokens=False, truncation=False).input_ids
    return [ids[i:i + CHUNK] for i in range(0, len(ids), CHUNK)] or [[]]


def _chunk_ids(tokenizer, chunk: list[int]) -> list[int]:
    ids = [tokenizer.bos_token_id] + chunk + [tokenizer.eos_token_id]
    return ids + [tokenizer.pad_token_id] * (CHUNK + 2 - len(ids))


def chunk_count(model, prompt: str) -> int:
    return len(_chunks(model.tokenizers[0], prompt))


def _layer(encoder, ids: torch.Tensor, index: int, final_norm: bool):
    out = encoder(ids, output_hidden_states=True)
    hidden = out.hidden_states[index]
    if final_norm:  # transformers 5: CLIPTextModel holds the layers itself, WithProjection wraps them
        hidden = getattr(encoder, "text_model", encoder).final_layer_norm(hidden)
    pooled = getattr(out, "text_embeds", None)
    return hidden, pooled


@torch.no_grad()
def encode(model, prompts: list[str], clip_skip: int = 1, min_chunks: int = 1) -> Conditioning:
    family = model.family
    per_encoder = []
    pooled = None
    for n, (encoder, tokenizer) in enumerate(zip(model.text_encoders, model.tokenizers)):
        chunked = [_chunks(tokenizer, p) for p in prompts]
        count = max(min_chunks, max(len(c) for c in chunked))
        chunked = [c + [[]] * (count - len(c)) for c in chunked]
        outputs = []
        for i in range(count):
            ids = torch.tensor([_chunk_ids(tokenizer, c[i]) for c in chunked], device=model.device)
            if family == "sd1":
                hidden, pool = _layer(encoder, ids, -clip_skip, final_norm=True)
            elif family == "sd2":
                hidden, pool = _layer(encoder, ids, -1 - clip_skip, final_norm=True)
            else:  # SDXL: penultimate layer, no final norm
                hidden, pool = _layer(encoder, ids, -1 - clip_skip, final_norm=False)
            if i == 0 and pool is not None:
                pooled = pool  # A1111 takes the pooled vector of the first chunk
            outputs.append(hidden)
        per_encoder.append(torch.cat(outputs, dim=1))
    context = torch.cat(per_encoder, dim=-1) if len(per_encoder) > 1 else per_encoder[0]
    return Conditioning(context.to(model.dtype), pooled.to(model.dtype) if pooled is not None else None)


def encode_pair(model, prompts: list[str], negatives: list[str], clip_skip: int = 1) -> tuple[Conditioning, Conditioning]:
    """Positive and negative conditioning with the same chunk count (so CFG can batch them)."""
    count = max(chunk_count(model, p) for p in prompts + negatives)
    return encode(model, prompts, clip_skip, count), encode(model, negatives, clip_skip, count)


def sdxl_time_ids(model, width: int, height: int, negative: bool, aesthetic: tuple[float, float] = (6.0, 2.5)) -> torch.Tensor:
    """SDXL micro-conditioning: original size, crop top-left, target size (base) or
    aesthetic score (refiner), with A1111's defaults."""
    if model.family == "sdxl_refiner":
        values = [height, width, 0, 0, aesthetic[1] if negative else aesthetic[0]]
    else:
        values = [height, width, 0, 0, height, width]
    return torch.tensor([values], dtype=model.dtype, device=model.device)
