"""A1111's `modules.sd_schedulers`, for extension scripts: the schedule types ("Schedule
type" in the page and the infotext). The engine's table is modules/sampling/samplers.py's."""
from __future__ import annotations

from collections import namedtuple

from modules.sampling import samplers as _engine

Scheduler = namedtuple("Scheduler", ["name", "label", "function", "default_rho", "need_inner_model", "aliases"])

schedulers = [Scheduler(st.name, st.label, st.function, st.default_rho, False, list(st.aliases) or None)
              for st in _engine.SCHEDULE_TYPES.values()]
# A1111 maps the name and the label; Kiln also maps aliases and lower-case spellings
schedulers_map = {key: s for s in schedulers for key in (s.name, s.label, *(s.aliases or []))}
schedulers_map.update({key.lower(): s for key, s in list(schedulers_map.items())})

__all__ = ["Scheduler", "schedulers", "schedulers_map"]
