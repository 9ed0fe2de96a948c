"""Prompt styles: A1111's styles.csv in the data folder, applied to a request's prompts.

A style is a name, a prompt text and a negative text. Applying it puts the request's
prompt into the style's ``{prompt}`` placeholder, or appends the style after ", "
(`modules.text.prompt_syntax.merge_style`). The runtime applies a request's styles before it is
queued, so the sampler, the infotext and the saved files see the expanded prompts, as
in A1111. Reading and writing the CSV are `modules.text.prompt_syntax`' load/save_styles_csv.
"""
from __future__ import annotations

from pathlib import Path

from modules.text.prompt_syntax import Style, apply_styles, load_styles_csv, save_styles_csv
from modules.generation.request import GenerationRequest, RequestError

FILE_NAME = "styles.csv"
PROMPTS_BEFORE_STYLES = "prompts_before_styles"  # key in GenerationRequest.extra


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
    # the prompts as typed stay in `extra`: A1111's result info reports them as "prompt",
    # so a client resending info["prompt"] with info["styles"] does not apply them twice
    before = {"prompt": request.prompt, "negative_prompt": request.negative_prompt}
    return request.replace(prompt=prompt, negative_prompt=negative, extra={**request.extra, PROMPTS_BEFORE_STYLES: before})


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
