"""Text -> the tensors the UNet attends to.

A1111's emphasis syntax (`(word:1.3)`, `[word]`) weights token vectors; prompts longer
than 75 tokens are cut into 75-token chunks, each encoded as 77 tokens
with its own start/end tokens, and the results concatenated (A1111's behaviour); the
positive and negative prompts of a batch are padded to the same number of chunks.
Each family reads a different layer (its text encoders' `layer` and `final_norm`, see
modules/models/families/): SD1 the last (less `clip_skip`), SD2 the penultimate, SDXL
the penultimate of both encoders side by side plus a pooled vector.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from modules.text import prompt_syntax
from modules.models import embeddings as textual_inversion

CHUNK = 75

# A1111's emphasis modes (its "emphasis" setting), by the names A1111 writes in infotexts:
# "Original" scales token vectors by their weights and restores the chunk's mean; "No norm"
# scales only (said to suit SDXL better); "Ignore" parses the brackets away but uses no
# weights; "None" does not parse at all: brackets, weights and BREAK are plain text.
EMPHASIS_MODES = ("None", "Ignore", "Original", "No norm")


@dataclass(frozen=True)
class TextSettings:
    """The settings (A1111's option names) that shape conditioning, passed from the
    runtime's options into processing; the defaults are A1111's."""
    emphasis: str = "Original"
    sdxl_crop_top: int = 0
    sdxl_crop_left: int = 0
    sdxl_refiner_low_aesthetic_score: float = 2.5
    sdxl_refiner_high_aesthetic_score: float = 6.0


@dataclass
class Conditioning:
    context: torch.Tensor  # (batch, 77 * chunks, width)
    pooled: torch.Tensor | None  # SDXL: (batch, width of the second encoder)


Chunk = tuple[list[int], list[float]]  # token ids (at most 75) and their emphasis weights


def _parsed(prompt: str, emphasis: str = "Original") -> list[tuple[str, float]]:
    """Text runs and weights; emphasis "None" leaves the whole prompt as one plain run."""
    if emphasis == "None":
        return [(prompt, 1.0)]
    return prompt_syntax.parse_attention(prompt)


def _chunks(tokenizer, prompt: str, emphasis: str = "Original",
            ti: textual_inversion.Registry | None = None) -> list[Chunk]:
    """A1111's chunking: emphasis from the prompt syntax, BREAK forces a new chunk, and a
    full chunk backs off to its last comma when that is within the last 20 tokens.
    Embedding names (`ti`) become their N vectors' placeholder ids, kept in one chunk."""
    comma = tokenizer.convert_tokens_to_ids(",</w>")
    chunks: list[Chunk] = []
    ids: list[int] = []
    weights: list[float] = []
    last_comma = -1

    def close():
        nonlocal ids, weights, last_comma
        chunks.append((ids, weights))
        ids, weights, last_comma = [], [], -1

    for text, weight in _parsed(prompt, emphasis):
        if text == "BREAK" and weight == -1:
            close()
            continue
        tokens = tokenizer(text, add_special_tokens=False, truncation=False).input_ids
        if ti is not None:  # textual inversion: a name -> its vectors' placeholder ids
            tokens = ti.expand(tokenizer, tokens)[0]
        for token in tokens:
            if ti is not None and ids and len(ids) + ti.group_length(token) > CHUNK:
                close()  # an embedding's vectors do not straddle two chunks (A1111)
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


def chunk_count(model, prompt: str, emphasis: str = "Original") -> int:
    return len(_chunks(model.tokenizers[0], prompt, emphasis, textual_inversion.registry(model)))


def token_count(tokenizer, prompt: str, steps: int = 20, emphasis: str = "Original",
                negative: bool = False, ti: textual_inversion.Registry | None = None) -> tuple[int, int]:
    """The prompt box's counter as A1111 shows it, "tokens/limit": the tokens of the longest
    text the prompt takes on (extra-network tags removed, every AND part and every step of
    its editing schedule), and the limit those tokens fill up to in 75-token chunks.

    As in A1111 every chunk but the last counts as a full 75 (so BREAK and the comma
    back-off count the padding they cause): 1 chunk -> x/75, 76 tokens -> 76/150. A
    negative prompt is not split at AND (A1111 does not split it)."""
    text, _ = prompt_syntax.extract_extra_networks(prompt)
    steps = max(1, int(steps or 1))
    parts = [text] if negative else [t for t, _ in prompt_syntax.split_and(text)]
    texts = [t for part in parts for _, t in prompt_syntax.get_schedule(part, steps)]
    counts = []
    for t in texts:
        chunks = _chunks(tokenizer, t, emphasis, ti)  # an embedding counts its N vectors
        parsed = _parsed(t, emphasis)
        breaks = [i for i, run in enumerate(parsed) if run == ("BREAK", -1.0)]
        tail_empty = bool(breaks) and not any(
            tokenizer(run, add_special_tokens=False).input_ids for run, _ in parsed[breaks[-1] + 1:])
        # a prompt ending in BREAK has no partial last chunk: all its chunks count in full
        counts.append(CHUNK * len(chunks) if tail_empty else CHUNK * (len(chunks) - 1) + len(chunks[-1][0]))
    tokens = max(counts)
    return tokens, max(1, -(-tokens // CHUNK)) * CHUNK


def _emphasis(hidden: torch.Tensor, weights: torch.Tensor, mode: str = "Original") -> torch.Tensor:
    """Apply emphasis weights to a chunk's hidden states. "Original" (A1111's default):
    scale each token's vector by its weight, then restore the chunk's original mean so the
    overall magnitude is unchanged; "No norm": scale only; "Ignore"/"None": unchanged."""
    if mode in ("None", "Ignore") or bool((weights == 1).all()):
        return hidden
    mean = hidden.mean()
    hidden = hidden * weights[..., None]
    if mode == "No norm":
        return hidden
    return hidden * (mean / hidden.mean())


def _layer(encoder, ids: torch.Tensor, index: int, final_norm: bool):
    out = encoder(ids, output_hidden_states=True)
    hidden = out.hidden_states[index]
    if final_norm:  # transformers 5: CLIPTextModel holds the layers itself, WithProjection wraps them
        hidden = getattr(encoder, "text_model", encoder).final_layer_norm(hidden)
    pooled = getattr(out, "text_embeds", None)
    return hidden, pooled


def deepest_clip_skip(model) -> int:
    """The largest clip skip every text encoder of the model can give: clip skip counts
    hidden states back from the encoder's reading layer, and past the token embeddings
    there is nothing (the demo model's 3-layer encoder allows 4; SD 1.5's, 13)."""
    return min(spec.hidden_index(1) + 1 + encoder.config.num_hidden_layers + 1
               for encoder, spec in zip(model.text_encoders, model.family.text_encoders))


@torch.no_grad()
def encode(model, prompts: list[str], clip_skip: int = 1, min_chunks: int = 1,
           emphasis: str = "Original") -> Conditioning:
    per_encoder = []
    pooled = None
    for encoder, tokenizer, spec in zip(model.text_encoders, model.tokenizers, model.family.text_encoders):
        chunked = [_chunks(tokenizer, p, emphasis, textual_inversion.registry(model)) for p in prompts]
        count = max(min_chunks, max(len(c) for c in chunked))
        chunked = [c + [([], [])] * (count - len(c)) for c in chunked]
        outputs = []
        for i in range(count):
            rows = [_chunk_ids(tokenizer, c[i]) for c in chunked]
            ids = torch.tensor([r[0] for r in rows], device=model.device)
            weights = torch.tensor([r[1] for r in rows], device=model.device)
            hidden, pool = _layer(encoder, ids, spec.hidden_index(clip_skip), spec.final_norm)
            if i == 0 and pool is not None:
                pooled = pool  # A1111 takes the pooled vector of the first chunk
            outputs.append(_emphasis(hidden.float(), weights, emphasis))
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
                     clip_skip: int = 1, emphasis: str = "Original") -> tuple[Scheduled, Scheduled]:
    """Both prompts' schedules, each distinct text encoded once, all with one chunk count
    so that any step's positive and negative can be batched together. AND is not split
    here (see encode_composable)."""
    conds, uncond = _encode_schedules(model, [prompt_syntax.get_schedule(prompt, steps)],
                                      prompt_syntax.get_schedule(negative, steps), n, clip_skip, emphasis)
    return conds[0], uncond


@dataclass
class Composable:
    """Composable diffusion ("a cat AND a dog:0.5", A1111's AND): each sub-prompt with its
    weight and its own editing schedule. The loop batches every sub-prompt's conditioning
    with the negative's in one UNet call and combines the outputs as
    uncond + sum_i weight_i * cfg * (cond_i - uncond)."""
    parts: list[tuple[float, Scheduled]]

    def at(self, step: int) -> list[tuple[float, Conditioning]]:
        return [(weight, scheduled.at(step)) for weight, scheduled in self.parts]


def encode_composable(model, prompt: str, negative: str, steps: int, n: int, clip_skip: int = 1,
                      emphasis: str = "Original") -> tuple[Composable, Scheduled]:
    """The prompt split at AND (each part scheduled on its own, as A1111's
    get_multicond_learned_conditioning) and the negative prompt, which A1111 does not
    split; one chunk count for all of them."""
    multi = prompt_syntax.multicond_schedules(prompt, steps)
    conds, uncond = _encode_schedules(model, [schedule for _, schedule in multi],
                                      prompt_syntax.get_schedule(negative, steps), n, clip_skip, emphasis)
    return Composable([(weight, cond) for (weight, _), cond in zip(multi, conds)]), uncond


def _encode_schedules(model, positives: list[list[tuple[int, str]]], negative: list[tuple[int, str]], n: int,
                      clip_skip: int, emphasis: str) -> tuple[list[Scheduled], Scheduled]:
    texts = [text for schedule in positives + [negative] for _, text in schedule]
    count = max(chunk_count(model, text, emphasis) for text in texts)
    cache: dict[str, Conditioning] = {}

    def cond(text: str) -> Conditioning:
        if text not in cache:
            cache[text] = encode(model, [text] * n, clip_skip, count, emphasis)
        return cache[text]

    def scheduled(schedule):
        return Scheduled([(end, cond(text)) for end, text in schedule])

    return [scheduled(s) for s in positives], scheduled(negative)


def sdxl_time_ids(model, width: int, height: int, negative: bool, settings: TextSettings = TextSettings()) -> torch.Tensor:
    """SDXL micro-conditioning: original size (= the image size, as A1111), crop top-left
    (A1111's sdxl_crop_top/left settings), then the target size (base) or the aesthetic
    score (refiner: the low score for the negative prompt, the high one for the positive)."""
    crop = [settings.sdxl_crop_top, settings.sdxl_crop_left]
    values = [height, width, *crop, *model.family.time_ids_target(width, height, negative, settings)]
    return torch.tensor([values], dtype=model.dtype, device=model.device)
