"""A1111's `modules/prompt_parser.py` interface, for extensions written against A1111.

Extensions (dynamic prompts, regional prompters, prompt visualisers) import these names
and expect A1111's return shapes: lists of ``[end_step, text]`` and ``[text, weight]``
pairs (lists, not tuples), the multicond index triple. The semantics live in
`modules.text.prompt_syntax`; this module only adapts shapes. Kiln code uses `modules.text.prompt_syntax`.
"""
from __future__ import annotations

import re

from modules.text import prompt_syntax as prompts

# The same patterns A1111 exposes (extensions use them to find emphasis and BREAK).
re_attention = re.compile(r"""
\\\(|
\\\)|
\\\[|
\\]|
\\\\|
\\|
\(|
\[|
:\s*([+-]?[.\d]+)\s*\)|
\)|
]|
[^\\()\[\]:]+|
:
""", re.X)
re_break = re.compile(r"\s*\bBREAK\b\s*", re.S)
re_AND = re.compile(r"\bAND\b")  # noqa: N816 (A1111's name)
re_weight = re.compile(r"^((?:\s|.)*?)(?:\s*:\s*([-+]?(?:\d+\.?|\d*\.\d+)))?\s*$")


def get_learned_conditioning_prompt_schedules(prompts_list, base_steps, hires_steps=None, use_old_scheduling=False):
    """Per prompt, its schedule as ``[[end_step, text], ...]``::

        get_learned_conditioning_prompt_schedules(["a [b:3]"], 10) == [[[3, "a "], [10, "a b"]]]
    """
    cache: dict[str, list] = {}
    for prompt in prompts_list:
        if prompt not in cache:
            cache[prompt] = [[end, text] for end, text in
                             prompts.get_schedule(prompt, base_steps, hires_steps, use_old_scheduling)]
    return [cache[prompt] for prompt in prompts_list]


def parse_prompt_attention(text):
    """``[[text, weight], ...]``; BREAK is ``["BREAK", -1]``::

        parse_prompt_attention("an (important) word") == [["an ", 1.0], ["important", 1.1], [" word", 1.0]]
    """
    return [["BREAK", -1] if (t, w) == ("BREAK", -1.0) else [t, w] for t, w in prompts.parse_attention(text)]


def get_multicond_prompt_list(prompts_list):
    """A1111's AND split of a batch of prompts: ``(res_indexes, prompt_flat_list,
    prompt_indexes)``. ``res_indexes[i]`` lists ``(index, weight)`` per sub-prompt of
    prompt i; ``prompt_flat_list`` holds each distinct sub-prompt text once, in order
    of first appearance; ``prompt_indexes`` maps a text to its index there."""
    res_indexes = []
    prompt_flat_list: list[str] = []
    prompt_indexes: dict[str, int] = {}
    for prompt in prompts_list:
        indexes = []
        for text, weight in prompts.split_and(prompt):
            if text not in prompt_indexes:
                prompt_indexes[text] = len(prompt_flat_list)
                prompt_flat_list.append(text)
            indexes.append((prompt_indexes[text], weight))
        res_indexes.append(indexes)
    return res_indexes, prompt_flat_list, prompt_indexes


__all__ = ["get_learned_conditioning_prompt_schedules", "parse_prompt_attention", "get_multicond_prompt_list",
           "re_attention", "re_break", "re_AND", "re_weight"]
