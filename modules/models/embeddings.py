"""Textual inversion embeddings: files -> named vectors the text encoders read in place
of a word.

Formats read: A1111 ``.pt``/``.bin`` (``{"string_to_param": {"*": tensor(N, width)}, "step",
"sd_checkpoint", "sd_checkpoint_name", ...}``), kohya/sd-scripts ``.safetensors``
(``emb_params``; SDXL: ``clip_l`` and ``clip_g``), and any file with exactly one tensor
(diffusers' ``learned_embeds``). The name is the file stem, as in A1111.

How the vectors reach the encoder: ``conditioning._chunks`` replaces the tokens of an
embedding's name with N placeholder ids (``PLACEHOLDER_BASE`` + the vector's row in this
model's table), so chunking counts N tokens. A forward pre-hook on each text encoder's
embedding layer (PyTorch's public hook API; nothing is patched) turns placeholder ids
into the table's vectors and every other id into its usual token vector. The registry,
its table and the hook handles live on the LoadedModel (``model.attachments.embeddings``).
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path

import torch

log = logging.getLogger(__name__)

PLACEHOLDER_BASE = 1 << 24  # far above any CLIP vocabulary (49408)
SUFFIXES = (".pt", ".bin", ".safetensors")


class EmbeddingError(ValueError):
    """A file that is not a usable embedding; the message says why."""


@dataclass
class Embedding:
    """One file's vectors: key "" for a single-encoder embedding, or "clip_l"/"clip_g"."""
    name: str
    path: Path
    vectors: dict[str, torch.Tensor]
    step: int | None = None
    sd_checkpoint: str | None = None
    sd_checkpoint_name: str | None = None

    @property
    def count(self) -> int:
        return int(next(iter(self.vectors.values())).shape[0])

    @property
    def width(self) -> int:
        return sum(int(v.shape[-1]) for v in self.vectors.values())

    def describe(self) -> dict:
        """A1111's /sdapi/v1/embeddings item."""
        return {"step": self.step, "sd_checkpoint": self.sd_checkpoint, "sd_checkpoint_name": self.sd_checkpoint_name,
                "shape": self.width, "vectors": self.count}


def _as_2d(tensor: torch.Tensor) -> torch.Tensor:
    tensor = tensor.detach().float()
    return tensor[None] if tensor.ndim == 1 else tensor.reshape(-1, tensor.shape[-1])


def read_embedding(path: Path) -> Embedding:
    path = Path(path)
    name = path.stem
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file
            data = load_file(str(path), device="cpu")
        else:
            data = torch.load(path, map_location="cpu", weights_only=True)  # never unpickle code
    except Exception as e:
        raise EmbeddingError(f"{path.name}: cannot read ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    if not isinstance(data, dict):
        raise EmbeddingError(f"{path.name}: not an embedding (no tensors inside)")
    meta = {}
    if isinstance(data.get("string_to_param"), dict):  # A1111
        params = [v for v in data["string_to_param"].values() if isinstance(v, torch.Tensor)]
        if not params:
            raise EmbeddingError(f"{path.name}: string_to_param holds no tensor")
        vectors = {"": _as_2d(params[0])}
        step = data.get("step")
        meta = dict(step=int(step) if isinstance(step, (int, float)) else None,
                    sd_checkpoint=data.get("sd_checkpoint") if isinstance(data.get("sd_checkpoint"), str) else None,
                    sd_checkpoint_name=data.get("sd_checkpoint_name")
                    if isinstance(data.get("sd_checkpoint_name"), str) else None)
    elif isinstance(data.get("clip_l"), torch.Tensor) and isinstance(data.get("clip_g"), torch.Tensor):  # SDXL
        vectors = {"clip_l": _as_2d(data["clip_l"]), "clip_g": _as_2d(data["clip_g"])}
        if vectors["clip_l"].shape[0] != vectors["clip_g"].shape[0]:
            raise EmbeddingError(f"{path.name}: clip_l and clip_g hold different numbers of vectors")
    elif isinstance(data.get("emb_params"), torch.Tensor):  # kohya sd-scripts
        vectors = {"": _as_2d(data["emb_params"])}
    else:
        tensors = [v for v in data.values() if isinstance(v, torch.Tensor)]
        if len(tensors) != 1:
            raise EmbeddingError(f"{path.name}: not an embedding format Kiln knows "
                                 f"(keys: {', '.join(list(map(str, data))[:5])})")
        vectors = {"": _as_2d(tensors[0])}
    if next(iter(vectors.values())).shape[0] == 0:
        raise EmbeddingError(f"{path.name}: holds no vectors")
    return Embedding(name, path, vectors, **meta)


def encoder_widths(model) -> list[int]:
    return [int(_embedding_layer(enc).token_embedding.embedding_dim) for enc in model.text_encoders]


def _embedding_layer(encoder):
    return getattr(encoder, "text_model", encoder).embeddings


def fit(embedding: Embedding, widths: list[int]) -> list[torch.Tensor]:
    """The embedding's vectors for each of a model's text encoders, or EmbeddingError
    saying which widths it has and which the model wants."""
    v = embedding.vectors
    if len(widths) == 2:  # SDXL: CLIP-L and OpenCLIP bigG
        if "clip_l" in v and v["clip_l"].shape[-1] == widths[0] and v["clip_g"].shape[-1] == widths[1]:
            return [v["clip_l"], v["clip_g"]]
    else:
        for key in ("", "clip_l", "clip_g"):
            if key in v and v[key].shape[-1] == widths[0]:
                return [v[key]]
    have = " + ".join(f"{k or 'vectors'} {t.shape[-1]}" for k, t in v.items())
    want = " + ".join(str(w) for w in widths)
    raise EmbeddingError(f"made for a text encoder of width {have}; this model needs {want}")


@dataclass
class Scan:
    """Embedding files checked against a model's encoder widths (None: no model)."""
    loaded: dict[str, Embedding] = field(default_factory=dict)
    skipped: dict[str, tuple[Embedding | None, str]] = field(default_factory=dict)  # name -> (embedding, why)
    vectors: dict[str, list[torch.Tensor]] = field(default_factory=dict)  # per loaded name, per encoder


class Library:
    """Reads embedding files once per (path, size, mtime); shared by the worker and API
    threads (a lock guards the cache)."""

    def __init__(self):
        self._cache: dict[str, tuple[tuple, Embedding | EmbeddingError]] = {}
        self._lock = threading.Lock()

    def read(self, path: Path) -> Embedding:
        st = path.stat()
        stamp = (st.st_size, st.st_mtime_ns)
        with self._lock:
            hit = self._cache.get(str(path))
        if hit and hit[0] == stamp:
            result = hit[1]
        else:
            try:
                result = read_embedding(path)
            except EmbeddingError as e:
                result = e
            with self._lock:
                self._cache[str(path)] = (stamp, result)
        if isinstance(result, EmbeddingError):
            raise result
        return result

    def scan(self, files, widths: list[int] | None) -> Scan:
        """`files`: paths.ModelFile list (searched in order; the first of a name wins)."""
        out = Scan()
        for mf in files:
            name = Path(mf.name).stem
            if name in out.loaded or name in out.skipped:
                continue
            try:
                emb = self.read(mf.path)
            except (EmbeddingError, OSError) as e:
                out.skipped[name] = (None, str(e))
                continue
            if widths is None:
                out.loaded[name] = emb
                continue
            try:
                out.vectors[name] = fit(emb, widths)
                out.loaded[name] = emb
            except EmbeddingError as e:
                out.skipped[name] = (emb, f"{mf.name}: {e}")
        return out


class Registry:
    """The embeddings usable with one model: name -> placeholder ids, the vector table
    per encoder, and the encoder hooks that read it."""

    def __init__(self, model):
        self.scan = Scan()
        self.signature: tuple = ()
        self.first: dict[str, int] = {}  # name -> placeholder id of its first vector
        self.counts: dict[int, int] = {}  # first placeholder id -> vector count
        self.tables: list[torch.Tensor] = [torch.zeros(0) for _ in model.text_encoders]
        self._name_ids: dict[int, dict[int, list[tuple[tuple[int, ...], str]]]] = {}
        self.handles = [_embedding_layer(enc).register_forward_pre_hook(self._hook(n), with_kwargs=True)
                        for n, enc in enumerate(model.text_encoders)]

    def install(self, scan: Scan, signature: tuple) -> None:
        self.scan, self.signature = scan, signature
        self.first, self.counts, self._name_ids = {}, {}, {}
        rows: list[list[torch.Tensor]] = [[] for _ in self.tables]
        offset = 0
        for name, per_encoder in scan.vectors.items():
            self.first[name] = PLACEHOLDER_BASE + offset
            self.counts[PLACEHOLDER_BASE + offset] = per_encoder[0].shape[0]
            for n, vec in enumerate(per_encoder):
                rows[n].append(vec)
            offset += per_encoder[0].shape[0]
        self.tables = [torch.cat(r) if r else torch.zeros(0) for r in rows]

    def _hook(self, n: int):
        def hook(module, args, kwargs):
            ids = kwargs.get("input_ids", args[0] if args else None)
            if ids is None or not bool((ids >= PLACEHOLDER_BASE).any()):
                return None
            mask = ids >= PLACEHOLDER_BASE
            embeds = module.token_embedding(ids.masked_fill(mask, 0))
            table = self.tables[n].to(embeds.device, embeds.dtype)
            embeds[mask] = table[ids[mask] - PLACEHOLDER_BASE]
            kwargs = dict(kwargs, input_ids=None, inputs_embeds=embeds)
            return (), kwargs
        return hook

    def _lookup(self, tokenizer) -> dict[int, list[tuple[tuple[int, ...], str]]]:
        """first token of a name -> [(the name's token ids, name)], longest first."""
        key = id(tokenizer)
        if key not in self._name_ids:
            table: dict[int, list] = {}
            for name in self.first:
                ids = tuple(tokenizer(name, add_special_tokens=False, truncation=False).input_ids)
                if ids:
                    table.setdefault(ids[0], []).append((ids, name))
            for entries in table.values():
                entries.sort(key=lambda e: -len(e[0]))
            self._name_ids[key] = table
        return self._name_ids[key]

    def expand(self, tokenizer, tokens: list[int]) -> tuple[list[int], list[str]]:
        """Token ids with each embedding name replaced by its placeholder ids, and the
        names found (in order)."""
        lookup = self._lookup(tokenizer) if self.first else {}
        if not lookup:
            return tokens, []
        out, used, i = [], [], 0
        while i < len(tokens):
            for ids, name in lookup.get(tokens[i], ()):
                if tuple(tokens[i:i + len(ids)]) == ids:
                    first = self.first[name]
                    out.extend(range(first, first + self.counts[first]))
                    used.append(name)
                    i += len(ids)
                    break
            else:
                out.append(tokens[i])
                i += 1
        return out, used

    def group_length(self, token: int) -> int:
        """N if `token` is the first placeholder of an N-vector embedding, else 0."""
        return self.counts.get(token, 0)

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()


def registry(model) -> Registry | None:
    return model.attachments.embeddings


def refresh(model, library: Library, files) -> Registry:
    """Bring the model's registry up to date with the embedding files (read again only
    when a file was added, removed or changed). Call on the worker, before encoding."""
    reg = model.attachments.embeddings
    if reg is None:
        reg = model.attachments.embeddings = Registry(model)
    signature = tuple(_stamp(mf) for mf in files)
    if signature != reg.signature:
        reg.install(library.scan(files, encoder_widths(model)), signature)
    return reg


def _stamp(mf) -> tuple:
    try:
        st = mf.path.stat()
        return mf.name, st.st_size, st.st_mtime_ns
    except OSError:
        return mf.name, None, None


def used_in(model, texts: list[str]) -> list[str]:
    """Names of the embeddings the texts use, in order of first use."""
    reg = registry(model)
    if reg is None or not reg.first:
        return []
    from modules.text import prompt_syntax
    tokenizer = model.tokenizers[0]
    seen: list[str] = []
    for text in texts:
        for part, _weight in prompt_syntax.parse_attention(text):
            _, names = reg.expand(tokenizer, tokenizer(part, add_special_tokens=False, truncation=False).input_ids)
            seen.extend(n for n in names if n not in seen)
    return seen
