"""What value each setting accepts, and checking a change of settings against that.

POST /sdapi/v1/options, the Settings tab and the Clip skip quick setting all change
settings through `Runtime.set_options`, which checks the whole change here before any of
it is applied: a bad value gets the same message from every face, and changes nothing.
The faces read `CHOICES` and `BOUNDS` too (the tab's dropdowns and slider ranges), so what
a widget offers and what the engine accepts cannot drift apart.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any

from modules.text.conditioning import EMPHASIS_MODES
from modules.extensions.discovery import DISABLE_ALL_CHOICES
from modules.runtime.options import Options

# shown but not changed from the page or over the API: the output folder, and the limits
# that protect the server from its clients (a person edits config.json to change them)
READ_ONLY_OPTIONS = frozenset({"outdir_samples", "max_pixels", "max_steps", "max_batch_size", "max_batch_count"})
# GET /sdapi/v1/options reports these, computed from other settings; A1111 clients post
# the whole dict back, so they are accepted and ignored
DERIVED_OPTIONS = frozenset({"sd_checkpoint_hash", "outdir_txt2img_samples", "outdir_img2img_samples",
                             "outdir_txt2img_grids", "outdir_img2img_grids"})
CHOICES: dict[str, tuple[str, ...]] = {
    "emphasis": EMPHASIS_MODES,
    "default_prediction_type": ("epsilon", "v_prediction"),
    "disable_all_extensions": DISABLE_ALL_CHOICES,
}
# (lowest, highest) a number may be; None: no bound on that side
BOUNDS: dict[str, tuple[float | None, float | None]] = {
    "CLIP_stop_at_last_layers": (1, 12),  # CLIP ViT-L has 12 layers
    "show_progress_every_n_steps": (0, None),  # 0 = no live previews
    "sd_checkpoint_cache": (0, None),
    "sdxl_crop_top": (0, None),
    "sdxl_crop_left": (0, None),
}


class OptionError(ValueError):
    """A setting refused: `key` names it, `message` says why, for a person to read."""

    def __init__(self, key: str, message: str):
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message


@dataclass
class OptionChange:
    """A checked change of settings, ready to apply."""
    fields: dict[str, Any] = field(default_factory=dict)  # Options' own fields
    extra: dict[str, Any] = field(default_factory=dict)  # extensions' settings (Options.extra)
    checkpoint: str | None = None  # sd_model_checkpoint: a checkpoint to switch to (not yet resolved)


def defaults() -> dict[str, Any]:
    """Options' fields and their defaults (the type of a default is the type of the setting)."""
    blank = Options()
    return {f.name: getattr(blank, f.name) for f in dataclasses.fields(Options) if f.name != "extra"}


def coerce(key: str, value: Any, default: Any, field_name: str | None = None) -> Any:
    """`value` as setting `key` holds it: of the type of `default`, within its choices and
    bounds. OptionError (naming `field_name`, or `key`) when it cannot be."""
    where = field_name or key
    if key == "disabled_extensions":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise OptionError(where, f"must be a list of extension names, got {value!r}")
        return value
    kind = type(default)
    if kind is bool:
        if not isinstance(value, bool):
            raise OptionError(where, f"must be true or false, got {value!r}")
    elif kind is int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)  # JSON clients and number widgets send 2.0 for 2
        if isinstance(value, bool) or not isinstance(value, int):
            raise OptionError(where, f"must be a whole number, got {value!r}")
    elif kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise OptionError(where, f"must be a number, got {value!r}")
        value = float(value)
    elif kind is str:
        if not isinstance(value, str):
            raise OptionError(where, f"must be text, got {value!r}")
    choices = CHOICES.get(key)
    if choices is not None and value not in choices:
        raise OptionError(where, f"must be one of {', '.join(choices)}, got {value!r}")
    low, high = BOUNDS.get(key, (None, None))
    if low is not None and high is not None:
        if not low <= value <= high:
            raise OptionError(where, f"must be between {low} and {high}, got {value}")
    elif low is not None and value < low:
        raise OptionError(where, f"must be {low} or more, got {value}")
    elif high is not None and value > high:
        raise OptionError(where, f"must be {high} or less, got {value}")
    return value


# What config.json may hold per setting: A1111 clients store small values of their own
# there; a value past these would make every later read of the settings fail or crawl.
MAX_VALUE_BYTES = 64 * 1024
MAX_VALUE_DEPTH = 16


def _depth(value: Any) -> int:
    """How deeply lists and objects nest in `value` (without recursion: a 900-level value
    must not overflow the stack of the check meant to refuse it)."""
    deepest, todo = 0, [(value, 1)]
    while todo:
        item, depth = todo.pop()
        if isinstance(item, (list, tuple, dict)):
            deepest = max(deepest, depth)
            if depth <= MAX_VALUE_DEPTH:
                todo += [(v, depth + 1) for v in (item.values() if isinstance(item, dict) else item)]
    return deepest


def storable(key: Any, value: Any) -> None:
    """OptionError unless `key` and `value` can be written to config.json and read back:
    text that is valid Unicode (no lone surrogates), nesting at most MAX_VALUE_DEPTH deep,
    at most MAX_VALUE_BYTES once written."""
    name = key if isinstance(key, str) else repr(key)
    if not isinstance(key, str) or not key.strip():
        raise OptionError(name, "a setting's name must be non-empty text")
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        raise OptionError(name.encode("utf-8", "backslashreplace").decode(), "the name is not valid Unicode text") from None
    if _depth(value) > MAX_VALUE_DEPTH:
        raise OptionError(key, f"nests deeper than {MAX_VALUE_DEPTH} levels")
    try:
        size = len(json.dumps(value, ensure_ascii=False).encode("utf-8"))
    except UnicodeEncodeError:
        raise OptionError(key, "holds text that is not valid Unicode (a lone surrogate)") from None
    except (TypeError, ValueError) as e:
        raise OptionError(key, f"cannot be stored in config.json ({e})") from None
    if size > MAX_VALUE_BYTES:
        raise OptionError(key, f"is {size} bytes once stored; the limit is {MAX_VALUE_BYTES}")


def check(options: Options, values: dict[str, Any], declared: dict[str, Any] | None = None) -> OptionChange:
    """Check every value of `values` (A1111's setting names) against `options`, before any is
    applied. `declared`: extensions' settings and their defaults (shared.opts.add_option);
    their values must have the default's type. Names nobody declared are kept as sent
    (A1111 clients store their own keys in config.json)."""
    known = defaults()
    declared = declared or {}
    change = OptionChange()
    for key, value in values.items():
        storable(key, value)
        if key == "sd_model_checkpoint":
            if not isinstance(value, str) or not value.strip():
                raise OptionError(key, "must be a checkpoint title or name")
            change.checkpoint = value
        elif key in DERIVED_OPTIONS:
            continue
        elif key in READ_ONLY_OPTIONS:
            if value != getattr(options, key):
                raise OptionError(key, "cannot be changed from the page or the API (edit config.json)")
        elif key in known:
            change.fields[key] = coerce(key, value, known[key])
        elif key in declared:
            change.extra[key] = coerce(key, value, declared[key])
        else:
            change.extra[key] = value
    return change


__all__ = ["OptionError", "OptionChange", "storable", "MAX_VALUE_BYTES", "MAX_VALUE_DEPTH", "READ_ONLY_OPTIONS", "DERIVED_OPTIONS", "CHOICES", "BOUNDS", "defaults",
           "coerce", "check"]
