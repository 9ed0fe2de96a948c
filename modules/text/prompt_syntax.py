"""A1111's prompt language as plain data: schedules, AND, emphasis, extra networks, styles.

The order A1111 applies them in, and the order a caller should follow::

    prompt, negative = apply_styles(prompt, negative, styles)     # styles.csv entries
    prompt, networks = extract_extra_networks(prompt)             # <lora:name:0.8> ...
    for weight, schedule in multicond_schedules(prompt, steps):   # "a AND b:0.5"
        for end_step, text in schedule:                           # [a:b:0.5], [a|b]
            parse_attention(text)                                 # (x:1.2), [x], BREAK

The negative prompt is scheduled with ``get_schedule`` alone: A1111 does not split it on
AND. Every function here reproduces A1111's results, malformed input included; where
A1111 raises on bad input (a weight such as ``(a:1.2.3)``) we keep going instead, as
noted at the function.

No torch here: the conditioning code turns these texts and weights into tensors.
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from typing import Union

import lark

# --------------------------------------------------------------------------------------
# Prompt editing and alternation: [a:b:when], [a:when], [a::when], [a|b|c]
# --------------------------------------------------------------------------------------

# The same language as A1111's schedule grammar, rule for rule: a parse that A1111
# resolves one way must resolve the same way here. Top level text may also hold stray
# brackets and colons (``start``), so an unbalanced prompt still parses; a prompt that
# does not parse at all (a stray "|" at the top level, say) is used as plain text.
_GRAMMAR = r"""
!start: (text | /[][():]/+)*
text: (emphasis | edit | alternation | plain | WHITESPACE)*
!emphasis: "(" text ")"
         | "(" text ":" text ")"
         | "[" text "]"
edit: "[" [text ":"] text ":" [WHITESPACE] NUMBER [WHITESPACE] "]"
alternation: "[" text ("|" [text])+ "]"
WHITESPACE: /\s+/
plain: /([^\\\[\]():|]|\\.)+/
%import common.SIGNED_NUMBER -> NUMBER
"""


@dataclass(frozen=True)
class _Edit:
    """``[before:after:when]``; ``before`` is None for ``[after:when]``."""
    before: "_Node | None"
    after: "_Node"
    when: str  # the number as written ("10", "0.5"): its form decides its meaning


@dataclass(frozen=True)
class _Alternation:
    options: tuple["_Node", ...]


_Node = Union[str, tuple, _Edit, _Alternation]  # a tuple is a sequence of nodes


class _ToNodes(lark.Transformer):
    """Parse tree -> a small tree of str, tuples, _Edit and _Alternation."""

    def start(self, children):
        return tuple(str(c) if isinstance(c, lark.Token) else c for c in children)

    text = emphasis = start

    def plain(self, children):
        return str(children[0])  # escapes such as "\(" stay: emphasis parsing reads them

    def edit(self, children):
        before, after, _space, number, _space2 = children
        return _Edit(before, after, str(number))

    def alternation(self, children):
        return _Alternation(tuple(c if c is not None else "" for c in children))


@functools.cache
def _parser() -> lark.Lark:
    return lark.Lark(_GRAMMAR)


# The Earley parse's cost grows much faster than the prompt's length (250 "(" take over a
# second, 200 "(word:1.1)" groups in one parse nearly a minute), so the prompt is parsed
# piece by piece, and a piece may hold only so many brackets. Both limits are far beyond
# what prompts written by people need; GenerationRequest.validate checks them on arrival.
MAX_PROMPT_CHARS = 20_000
MAX_PROMPT_BRACKETS = 500
MAX_PIECE_BRACKETS = 32
_CLOSES = {")": "(", "]": "["}


def _brackets(text: str) -> int:
    return sum(text.count(c) for c in "()[]")


def pieces(prompt: str) -> list[str]:
    """The prompt cut after each top-level comma, where every bracket before the cut is
    closed by its own kind: no rule of the grammar can span such a cut (``plain`` text
    can, but its pieces render to the same text), so A1111's parse of the whole is the
    pieces' parses one after another. Unbalanced brackets or a top-level "|" (which makes
    the whole prompt plain text) give one piece: the whole prompt."""
    stack: list[str] = []
    cuts, start, i = [], 0, 0
    while i < len(prompt):
        c = prompt[i]
        if c == "\\":
            i += 2
            continue
        if c in "([":
            stack.append(c)
        elif c in ")]":
            if not stack or stack[-1] != _CLOSES[c]:
                return [prompt]
            stack.pop()
        elif c == "|" and not stack:
            return [prompt]
        elif c == "," and not stack:
            cuts.append(prompt[start:i + 1])
            start = i + 1
        i += 1
    if stack:
        return [prompt]
    return cuts + [prompt[start:]]


def check(prompt: str) -> None:
    """ValueError, saying what to change, for a prompt whose parse would hold the server:
    longer than MAX_PROMPT_CHARS, more than MAX_PROMPT_BRACKETS brackets, or a piece (the
    text between top-level commas; the whole prompt when its brackets do not pair up) with
    more than MAX_PIECE_BRACKETS. Linear in the prompt's length: run it on arrival."""
    if len(prompt) > MAX_PROMPT_CHARS:
        raise ValueError(f"is {len(prompt)} characters long; the limit is {MAX_PROMPT_CHARS}")
    total = _brackets(prompt)
    if total > MAX_PROMPT_BRACKETS:
        raise ValueError(f"has {total} brackets; the limit is {MAX_PROMPT_BRACKETS}")
    for piece in pieces(prompt):
        brackets = _brackets(piece)
        if brackets > MAX_PIECE_BRACKETS:
            raise ValueError(f"has {brackets} brackets between two commas (or brackets that do not pair up); "
                             f"the limit is {MAX_PIECE_BRACKETS}, in {piece[:40]!r}")


def _chunks(prompt: str, brackets: int = 16) -> list[str]:
    """Consecutive pieces joined while they hold at most `brackets` brackets together:
    each parse has a fixed cost, so plain text and small groups go in together."""
    chunks, current, held = [], "", 0
    for piece in pieces(prompt):
        n = _brackets(piece)
        if current and held + n > brackets:
            chunks.append(current)
            current, held = "", 0
        current, held = current + piece, held + n
    return chunks + [current] if current else chunks


def _parse(prompt: str) -> _Node:
    """The prompt's tree, parsed chunk by chunk (see pieces); LarkError when a chunk, and
    so the whole prompt, does not parse."""
    to_nodes = _ToNodes()
    return tuple(to_nodes.transform(_parser().parse(chunk)) for chunk in _chunks(prompt))


@dataclass(frozen=True)
class _Timeline:
    """How edit numbers become steps (A1111's scheduling rules).

    New timelines (A1111's default): a number written with a "." is a fraction of the
    steps, any other is a step count. Old timelines: a number below 1 is a fraction.
    In the hires pass, fractions count from 1.0 and step counts from the first pass's
    steps.
    """
    steps: int
    int_offset: int = 0
    frac_offset: float = 0.0
    old: bool = False

    def step(self, when: str) -> int:
        """The last 1-based step on which an edit still shows its ``before`` text."""
        value = float(when)
        if self.old:
            value = value * self.steps if value < 1 else value
        elif "." in when:
            value = (value - self.frac_offset) * self.steps
        else:
            value = value - self.int_offset
        # A1111: min(steps, int(value)). Clamping below as well avoids int(-inf) and
        # changes nothing: every value <= 0 is a step that sampling never reaches.
        return int(max(-1.0, min(float(self.steps), value)))

    def switches(self, node: _Node) -> set[int]:
        """Every step at which some part of the prompt changes, in all branches."""
        if isinstance(node, str):
            return set()
        if isinstance(node, tuple):
            return set().union(*map(self.switches, node))
        if isinstance(node, _Alternation):
            return set(range(1, self.steps + 1)).union(*map(self.switches, node.options))
        found = {s for s in [self.step(node.when)] if s >= 1}
        parts = [node.after] if node.before is None else [node.before, node.after]
        return found.union(*map(self.switches, parts))

    def render(self, node: _Node, step: int) -> str:
        """The text of the prompt at a 1-based step."""
        if isinstance(node, str):
            return node
        if isinstance(node, tuple):
            return "".join(self.render(n, step) for n in node)
        if isinstance(node, _Alternation):
            return self.render(node.options[(step - 1) % len(node.options)], step)
        if step <= self.step(node.when):
            return "" if node.before is None else self.render(node.before, step)
        return self.render(node.after, step)


def get_schedule(prompt: str, steps: int, hires_steps: int | None = None,
                 old_scheduling: bool = False) -> list[tuple[int, str]]:
    """The prompt's text per step, as ``(end_step, text)`` pairs, steps counted from 1.

    Each text holds for the steps after the previous pair's end_step up to and including
    its own (A1111's get_learned_conditioning_prompt_schedules for one prompt)::

        get_schedule("a [b:c:0.5]", 20) == [(10, "a b"), (20, "a c")]
        get_schedule("[a|b]", 3) == [(1, "a"), (2, "b"), (3, "a")]

    ``hires_steps`` gives the schedule of a hires-fix second pass (numbers then count
    past the first pass: ``[a:b:1.5]`` switches halfway through it). ``old_scheduling``
    is A1111's "Use old prompt editing timelines" setting.
    """
    if hires_steps is None or old_scheduling:
        timeline = _Timeline(steps, old=old_scheduling)
    else:
        timeline = _Timeline(hires_steps, int_offset=steps, frac_offset=1.0)
    try:
        tree = _parse(prompt)
    except lark.exceptions.LarkError:
        return [(timeline.steps, prompt)]
    ends = sorted(timeline.switches(tree) | {timeline.steps})
    return [(end, timeline.render(tree, end)) for end in ends]


def text_at_step(schedule: list[tuple[int, str]], step: int) -> str:
    """The schedule's text for a 1-based step (the last text past its end)."""
    for end, text in schedule:
        if step <= end:
            return text
    return schedule[-1][1]


# --------------------------------------------------------------------------------------
# Composable diffusion: "a cat AND a dog:0.5"
# --------------------------------------------------------------------------------------

_AND = re.compile(r"\bAND\b")
# The text, then optionally ":weight" at the very end; trailing whitespace is dropped,
# leading whitespace kept (as A1111 does).
_SUBPROMPT = re.compile(r"^(.*?)(?:\s*:\s*([-+]?(?:\d+\.?|\d*\.\d+)))?\s*$", re.S)


def split_and(prompt: str) -> list[tuple[str, float]]:
    """Sub-prompts and their weights: ``"a cat AND a dog:0.5"`` -> [("a cat", 1.0), (" a dog", 0.5)].

    Splits at every whole word AND (inside brackets too, as A1111 does). A single
    prompt ending in ":number" also takes that as its weight: ``"cat:0.5"`` -> [("cat", 0.5)].
    """
    result = []
    for part in _AND.split(prompt):
        text, weight = _SUBPROMPT.match(part).groups()
        result.append((text, float(weight) if weight is not None else 1.0))
    return result


def multicond_schedules(prompt: str, steps: int, hires_steps: int | None = None,
                        old_scheduling: bool = False) -> list[tuple[float, list[tuple[int, str]]]]:
    """Per sub-prompt of ``split_and``: its weight and its ``get_schedule``."""
    return [(weight, get_schedule(text, steps, hires_steps, old_scheduling))
            for text, weight in split_and(prompt)]


# --------------------------------------------------------------------------------------
# Emphasis: (x) (x:1.3) [x] \( BREAK
# --------------------------------------------------------------------------------------

_ATTENTION_TOKEN = re.compile(r"""
      \\[()\[\]\\]?               # an escape, or a lone backslash (dropped)
    | :\s*(?P<weight>[+-]?[.\d]+)\s*\)   # ":1.3)" closes a weighted "("
    | [()\[\]]
    | [^\\()\[\]:]+               # plain text
    | :                           # a colon that is just text
""", re.X)
_BREAK = re.compile(r"\s*\bBREAK\b\s*", re.S)

ROUND_MULTIPLIER = 1.1
SQUARE_MULTIPLIER = 1 / 1.1


def parse_attention(text: str) -> list[tuple[str, float]]:
    """Text runs and their attention weights, exactly as A1111's parse_prompt_attention.

    ``(x)`` multiplies by 1.1, ``(x:w)`` by w, ``[x]`` by 1/1.1, nested brackets
    multiply; ``\\( \\) \\[ \\] \\\\`` are literal characters and any other backslash is
    dropped; brackets left open at the end apply to the rest of the text; a closing
    bracket with nothing open is dropped. ``BREAK`` outside brackets becomes
    ``("BREAK", -1.0)``. Adjacent runs of equal weight are merged; empty text gives
    ``[("", 1.0)]``. Where A1111 raises (a weight such as ``1.2.3``), the colon and the
    number are read as text and the ")" as a plain closing bracket.
    """
    runs: list[list] = []  # [text, weight], mutable while brackets close
    open_round: list[int] = []
    open_square: list[int] = []

    def multiply_from(start: int, factor: float) -> None:
        for run in runs[start:]:
            run[1] *= factor

    def add_text(chunk: str) -> None:
        for i, part in enumerate(_BREAK.split(chunk)):
            if i:
                runs.append(["BREAK", -1.0])
            runs.append([part, 1.0])

    for match in _ATTENTION_TOKEN.finditer(text):
        token, weight = match.group(0), match.group("weight")
        if token.startswith("\\"):
            runs.append([token[1:], 1.0])
        elif token == "(":
            open_round.append(len(runs))
        elif token == "[":
            open_square.append(len(runs))
        elif weight is not None and open_round:
            try:
                factor = float(weight)
            except ValueError:  # ":1.2.3)": A1111 raises here
                add_text(token[:-1])
                factor = ROUND_MULTIPLIER
            multiply_from(open_round.pop(), factor)
        elif token == ")" and open_round:
            multiply_from(open_round.pop(), ROUND_MULTIPLIER)
        elif token == "]" and open_square:
            multiply_from(open_square.pop(), SQUARE_MULTIPLIER)
        else:
            add_text(token)

    for start in open_round:
        multiply_from(start, ROUND_MULTIPLIER)
    for start in open_square:
        multiply_from(start, SQUARE_MULTIPLIER)

    if not runs:
        return [("", 1.0)]
    merged = [runs[0]]
    for run in runs[1:]:
        if run[1] == merged[-1][1]:
            merged[-1][0] += run[0]
        else:
            merged.append(run)
    return [(t, w) for t, w in merged]


# --------------------------------------------------------------------------------------
# Extra networks: <lora:name:0.8>, <lora:name:0.5:1>, <hypernet:name>, <kind:args>
# --------------------------------------------------------------------------------------

_EXTRA_NETWORK = re.compile(r"<(\w+):([^>]+)>")


@dataclass
class ExtraNetwork:
    """One ``<kind:name:arg:...>`` tag. ``args`` are the raw texts after the name."""
    kind: str
    name: str
    args: list[str] = field(default_factory=list)

    @property
    def items(self) -> list[str]:
        return [self.name, *self.args]

    @property
    def positional(self) -> list[str]:
        """Items without "=" (A1111: an item splitting into exactly two at "=" is named)."""
        return [item for item in self.items if len(item.split("=", 2)) != 2]

    @property
    def named(self) -> dict[str, str]:
        return dict(item.split("=", 2) for item in self.items if len(item.split("=", 2)) == 2)


def extract_extra_networks(prompt: str) -> tuple[str, list[ExtraNetwork]]:
    """Remove every ``<kind:args>`` tag; return the rest of the text and the tags in order.

    Nothing else is touched: ``"a <lora:x:1>, b"`` -> ``"a , b"``. (A1111 takes a
    batch's networks from its first prompt only; that choice is the caller's.)
    """
    found: list[ExtraNetwork] = []

    def take(match: re.Match) -> str:
        name, *args = match.group(2).split(":")
        found.append(ExtraNetwork(match.group(1), name, args))
        return ""

    return _EXTRA_NETWORK.sub(take, prompt), found


def lora_weights(item: ExtraNetwork) -> tuple[float, float]:
    """(text encoder, UNet) multipliers of a ``<lora:...>`` tag, A1111's rules.

    ``<lora:x>`` 1.0 both; ``<lora:x:0.8>`` 0.8 both; ``<lora:x:0.8:0.3>`` te 0.8,
    unet 0.3; ``te=`` / ``unet=`` named items override (unet defaults to te). A weight
    that is not a number raises ValueError.
    """
    positional, named = item.positional, item.named
    te = float(positional[1]) if len(positional) > 1 else 1.0
    te = float(named.get("te", te))
    unet = float(positional[2]) if len(positional) > 2 else te
    unet = float(named.get("unet", unet))
    return te, unet
