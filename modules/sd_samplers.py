"""A1111's `modules.sd_samplers`, for extension scripts: the sampler list and lookup by
name or alias. The engine's table and its one copy of name resolution live in
modules/sampling/samplers.py; this file only names them."""
from __future__ import annotations

from collections import namedtuple

from modules.sampling import samplers as _engine

SamplerData = namedtuple("SamplerData", ["name", "constructor", "aliases", "options"])

all_samplers = [SamplerData(s.name, s.scheduler_class, list(s.aliases), {}) for s in _engine.SAMPLERS.values()]
samplers = all_samplers
samplers_for_img2img = all_samplers
# lower-case name or alias -> the sampler's name (A1111 matches names this way)
samplers_map = {key.lower(): s.name for s in all_samplers for key in (s.name, *s.aliases)}


def find_sampler_config(name: str | None) -> SamplerData | None:
    """The sampler called `name` (or an alias), or None."""
    wanted = samplers_map.get(str(name or "").strip().lower())
    return next((s for s in all_samplers if s.name == wanted), None)


def visible_sampler_names() -> list[str]:
    return [s.name for s in all_samplers]


__all__ = ["SamplerData", "all_samplers", "samplers", "samplers_for_img2img", "samplers_map", "find_sampler_config",
           "visible_sampler_names"]
