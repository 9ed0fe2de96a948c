"""CLIP tokenizers built offline from the BPE vocabulary we ship.

`clip_vocab/bpe_simple_vocab_16e6.txt.gz` is OpenAI's CLIP vocabulary (MIT, (c) OpenAI),
as shipped inside the open-clip-torch package. transformers' CLIPTokenizer wants
vocab.json + merges.txt in a folder, so we derive them once into a cache folder and
load with from_pretrained (building CLIPTokenizer from file arguments silently gives a
2-token vocabulary; see DESIGN.md).
"""
from __future__ import annotations

import functools
import gzip
import json
import os
from pathlib import Path

VOCAB_GZ = Path(__file__).parent / "clip_vocab" / "bpe_simple_vocab_16e6.txt.gz"
N_MERGES = 49152 - 256 - 2  # OpenAI CLIP keeps this many merges: 49408 tokens in all


def _byte_alphabet() -> list[str]:
    """The printable stand-in for each byte value, in GPT-2/CLIP byte-level BPE order."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    extra = 0
    chars = {}
    for b in range(256):
        if b in keep:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in keep] + [chars[b] for b in range(256) if b not in keep]


def tokenizer_files(cache_dir: Path) -> Path:
    """Write vocab.json and merges.txt (if missing) and return their folder."""
    folder = cache_dir / "clip-tokenizer"
    if (folder / "vocab.json").exists() and (folder / "merges.txt").exists():
        return folder
    lines = gzip.open(VOCAB_GZ, "rt", encoding="utf-8").read().split("\n")
    merges = [tuple(line.split()) for line in lines[1:N_MERGES + 1]]
    alphabet = _byte_alphabet()
    tokens = alphabet + [c + "</w>" for c in alphabet] + ["".join(m) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f"vocab.json.{os.getpid()}"
    tmp.write_text(json.dumps({t: i for i, t in enumerate(tokens)}), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n", encoding="utf-8")
    tmp.replace(folder / "vocab.json")  # last, so a half-written folder is never taken as done
    return folder


@functools.lru_cache(maxsize=4)
def load_clip_tokenizer(cache_dir: str, pad_token: str = "<|endoftext|>"):
    """SD1 pads with <|endoftext|>; SD2 and SDXL's second encoder (OpenCLIP) pad with "!"."""
    from transformers import CLIPTokenizer

    folder = tokenizer_files(Path(cache_dir))
    return CLIPTokenizer.from_pretrained(str(folder), model_max_length=77, pad_token=pad_token)
