"""Prompt styles: A1111's styles.csv in the data folder, applied to a request's prompts.

A style is a name, a prompt text and a negative text. Applying it puts the request's
prompt into the style's ``{prompt}`` placeholder, or appends the style after ", "
(`merge_style`). The runtime applies a request's styles before it is queued, so the
sampler, the infotext and the saved files see the expanded prompts, as in A1111.
"""
from __future__ import annotations

import csv
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from modules.generation.request import GenerationRequest, RequestError

FILE_NAME = "styles.csv"


# ---- the file ---------------------------------------------------------------------------
STYLE_FIELDS = ("name", "prompt", "negative_prompt")


@dataclass(frozen=True)
class Style:
    name: str
    prompt: str = ""
    negative_prompt: str = ""


def merge_style(style_text: str, prompt: str) -> str:
    """A style with ``{prompt}`` has it replaced by the prompt; any other is appended
    after ", ", both stripped, empty sides left out."""
    if "{prompt}" in style_text:
        return style_text.replace("{prompt}", prompt)
    return ", ".join(part for part in (prompt.strip(), style_text.strip()) if part)


def apply_styles(prompt: str, negative: str, styles: list[Style]) -> tuple[str, str]:
    """Apply styles in order to the prompt and, with their negative texts, the negative."""
    for style in styles:
        prompt = merge_style(style.prompt, prompt)
        negative = merge_style(style.negative_prompt, negative)
    return prompt, negative


def load_styles_csv(path: str | os.PathLike) -> list[Style]:
    """Styles from an A1111 styles.csv (name, prompt, negative_prompt; the old
    name, text layout too). Rows whose name starts with "#" are comments; a later row
    replaces an earlier one of the same name. A missing file gives no styles."""
    path = Path(path)
    if not path.is_file():
        return []
    styles: dict[str, Style] = {}
    with open(path, encoding="utf-8-sig", newline="") as file:
        for row in csv.DictReader(file, skipinitialspace=True):
            name = row.get("name") or ""
            if not row or name.startswith("#"):
                continue
            prompt = row["prompt"] if "prompt" in row else row.get("text")
            styles[name] = Style(name, prompt or "", row.get("negative_prompt") or "")
    return list(styles.values())


def save_styles_csv(path: str | os.PathLike, styles: list[Style], backup: bool = True) -> None:
    """Write styles.csv as A1111 does (UTF-8 with BOM, header row), through a temporary
    file; the previous file is kept as ``<path>.bak`` unless ``backup`` is False."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(suffix=".csv", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8-sig", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=STYLE_FIELDS)
            writer.writeheader()
            for style in styles:
                writer.writerow({"name": style.name, "prompt": style.prompt,
                                 "negative_prompt": style.negative_prompt})
        if backup and path.exists():
            os.replace(path, path.with_name(path.name + ".bak"))
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


# ---- applying them to a request -----------------------------------------------------------


def styles_path(data_dir: Path) -> Path:
    return Path(data_dir) / FILE_NAME


def load(data_dir: Path) -> list[Style]:
    """The styles of styles.csv (none when the file is missing); an unreadable file is a
    RequestError, so a request naming styles gets a message rather than a crash."""
    try:
        return load_styles_csv(styles_path(data_dir))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise RequestError("styles", f"{FILE_NAME} cannot be read: {e}") from None


def find(styles: list[Style], names: list[str]) -> list[Style]:
    """The named styles, in the order given; an unknown name is a RequestError."""
    by_name = {s.name: s for s in styles}
    missing = [n for n in names if n not in by_name]
    if missing:
        have = ", ".join(sorted(by_name)) or f"none: add them to {FILE_NAME}"
        raise RequestError("styles", f"unknown style {', '.join(map(repr, missing))} (have: {have})")
    return [by_name[n] for n in names]


def expand(request: GenerationRequest, data_dir: Path) -> GenerationRequest:
    """The request with its styles applied to the prompt and the negative prompt."""
    names = [n for n in (request.styles or []) if n]
    if not names:
        return request
    prompt, negative = apply_styles(request.prompt, request.negative_prompt, find(load(data_dir), names))
    # the prompts as typed are kept: A1111's result info reports them as "prompt", so a
    # client resending info["prompt"] with info["styles"] does not apply them twice
    return request.replace(prompt=prompt, negative_prompt=negative, prompt_before_styles=request.prompt,
                           negative_prompt_before_styles=request.negative_prompt)


def _strip_style_text(style_text: str, prompt: str) -> str | None:
    """The prompt without one style's text, or None when the style is not in it: the
    inverse of merge_style (a ``{prompt}`` style must wrap the prompt; any other must end
    it, with the ", " before it dropped)."""
    prompt, style_text = prompt.strip(), style_text.strip()
    if "{prompt}" in style_text:
        before, _, after = style_text.partition("{prompt}")
        if len(prompt) >= len(before) + len(after) and prompt.startswith(before) and prompt.endswith(after):
            return prompt[len(before):len(prompt) - len(after)]
        return None
    if not prompt.endswith(style_text):
        return None
    rest = prompt[:len(prompt) - len(style_text)]
    return rest[:-2] if rest.endswith(", ") else rest


def extract(prompt: str, negative: str, known: list[Style]) -> tuple[list[str], str, str]:
    """The styles an expanded prompt pair was made with, and the prompts before them
    (A1111's reading of a pasted infotext): styles are peeled off from the last applied
    while one matches both prompts; returns (names in the order to apply, prompt, negative)."""
    found: list[str] = []
    left = [s for s in known if s.prompt or s.negative_prompt]
    while True:
        for style in left:
            stripped = _strip_style_text(style.prompt, prompt)
            stripped_negative = _strip_style_text(style.negative_prompt, negative) if stripped is not None else None
            if stripped_negative is not None:
                prompt, negative = stripped, stripped_negative
                found.append(style.name)
                left.remove(style)
                break
        else:
            return found[::-1], prompt, negative


def save_style(data_dir: Path, style: Style) -> list[Style]:
    """Add the style, or replace the one of the same name in place; return all styles."""
    name = style.name.strip()
    if not name:
        raise RequestError("name", "a style needs a name")
    style = Style(name, style.prompt, style.negative_prompt)
    styles = load(data_dir)
    if any(s.name == name for s in styles):
        styles = [style if s.name == name else s for s in styles]
    else:
        styles.append(style)
    save_styles_csv(styles_path(data_dir), styles)
    return styles


def delete_style(data_dir: Path, name: str) -> list[Style]:
    styles = load(data_dir)
    kept = [s for s in styles if s.name != name]
    if len(kept) == len(styles):
        raise RequestError("name", f"no style named {name!r}")
    save_styles_csv(styles_path(data_dir), kept)
    return kept
