"""Text -> the tensors the UNet attends to.

A1111's emphasis syntax (`(word:1.3)`, `[word]`) weights token vectors; prompts longer
than 75 tokens are cut into 75-token chunks, each encoded as 77 tokens
with its own start/end tokens, and the results concatenated (A1111's behaviour); the
positive and negative prompts of a batch are padded to the same number of chunks.
Each family reads a different layer: SD1 the last (less `clip_skip`), SD2 the
penultimate, SDXL the penultimate of both encoders side by side plus a pooled vector.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from modules import prompts as prompt_syntax

CHUNK = 75


@dataclass
class Conditioning:
    context: torch.Tensor  # (batch, 77 * chunks, width)
    pooled: torch.Tensor | None  # SDXL: (batch, width of the second encoder)


Chunk = tuple[list[int], list[float]]  # token ids (at most 75) and their emphasis weights


def _chunks(tokenizer, prompt: str) -> list[Chunk]:
    """A1111's chunking: emphasis from the prompt syntax, BREAK forces a new chunk, and a
    full chunk backs off to its last comma when that is within the last 20 tokens."""
    comma = tokenizer.convert_tokens_to_ids(",</w>")
    chunks: list[Chunk] = []
    ids: list[int] = []
    weights: list[float] = []
    last_comma = -1

    def close():
        nonlocal ids, weights, last_comma
        chunks.append((ids, weights))
        ids, weights, last_comma = [], [], -1

    for text, weight in prompt_syntax.parse_attention(prompt):
        if text == "BREAK" and weight == -1:
            close()
            continue
        for token in tokenizer(text, add_special_tokens=False, truncation=False).input_ids:
            if token == comma:
                last_comma = len(ids)
            elif len(ids) == CHUNK:
                if 0 <= last_comma and CHUNK - last_comma <= 20:  # move the words after the comma on
                    carry = ids[last_comma + 1:], weights[last_comma + 1:]
                    ids, weights = ids[:last_comma + 1], weights[:last_comma + 1]
                    close()
                    ids, weights = list(carry[0]), list(carry[1])
                else:
                    close()
            if len(ids) == CHUNK:
                close()
            ids.append(token)
            weights.append(weight)
    if ids or not chunks:
        close()
    return chunks


def _chunk_ids(tokenizer, chunk: Chunk) -> tuple[list[int], list[float]]:
    tokens, weights = chunk
    ids = [tokenizer.bos_token_id] + tokens + [tokenizer.eos_token_id]
    pad = CHUNK + 2 - len(ids)
    return ids + [tokenizer.pad_token_id] * pad, [1.0] + weights + [1.0] * (1 + pad)


def chunk_count(model, prompt: str) -> int:
    return len(_chunks(model.tokenizers[0], prompt))


def _emphasis(hidden: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """A1111's "Original" emphasis: scale each token's vector by its weight, then restore
    the chunk's original mean so the overall magnitude is unchanged."""
    if bool((weights == 1).all()):
        return hidden
    mean = hidden.mean()
    hidden = hidden * weights[..., None]
    return hidden * (mean / hidden.mean())


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
        chunked = [c + [([], [])] * (count - len(c)) for c in chunked]
        outputs = []
        for i in range(count):
            rows = [_chunk_ids(tokenizer, c[i]) for c in chunked]
            ids = torch.tensor([r[0] for r in rows], device=model.device)
            weights = torch.tensor([r[1] for r in rows], device=model.device)
            if family == "sd1":
                hidden, pool = _layer(encoder, ids, -clip_skip, final_norm=True)
            elif family == "sd2":
                hidden, pool = _layer(encoder, ids, -1 - clip_skip, final_norm=True)
            else:  # SDXL: penultimate layer, no final norm
                hidden, pool = _layer(encoder, ids, -1 - clip_skip, final_norm=False)
            if i == 0 and pool is not None:
                pooled = pool  # A1111 takes the pooled vector of the first chunk
            outputs.append(_emphasis(hidden.float(), weights))
        per_encoder.append(torch.cat(outputs, dim=1))
    context = torch.cat(per_encoder, dim=-1) if len(per_encoder) > 1 else per_encoder[0]
    return Conditioning(context.to(model.dtype), pooled.to(model.dtype) if pooled is not None else None)


@dataclass
class Scheduled:
    """Prompt editing ([a:b:when]) and alternation ([a|b]): the conditioning valid up to
    and including each (1-based) step."""
    parts: list[tuple[int, Conditioning]]

    def at(self, step: int) -> Conditioning:
        for end, cond in self.parts:
            if step <= end:
                return cond
        return self.parts[-1][1]


def encode_scheduled(model, prompt: str, negative: str, steps: int, n: int,
                     clip_skip: int = 1) -> tuple[Scheduled, Scheduled]:
    """Both prompts' schedules, each distinct text encoded once, all with one chunk count
    so that any step's positive and negative can be batched together."""
    pos = prompt_syntax.get_schedule(prompt, steps)
    neg = prompt_syntax.get_schedule(negative, steps)
    count = max(chunk_count(model, text) for _, text in pos + neg)
    cache: dict[str, Conditioning] = {}

    def cond(text: str) -> Conditioning:
        if text not in cache:
            cache[text] = encode(model, [text] * n, clip_skip, count)
        return cache[text]

    return Scheduled([(end, cond(t)) for end, t in pos]), Scheduled([(end, cond(t)) for end, t in neg])


def sdxl_time_ids(model, width: int, height: int, negative: bool, aesthetic: tuple[float, float] = (6.0, 2.5)) -> torch.Tensor:
    """SDXL micro-conditioning: original size, crop top-left, target size (base) or
    aesthetic score (refiner), with A1111's defaults."""
    if model.family == "sdxl_refiner":
        values = [height, width, 0, 0, aesthetic[1] if negative else aesthetic[0]]
    else:
        values = [height, width, 0, 0, height, width]
    return torch.tensor([values], dtype=model.dtype, device=model.device)
