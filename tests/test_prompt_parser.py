"""modules.prompt_parser: A1111's function names and return shapes for extensions.

Expected values are A1111's own doctests in its modules/prompt_parser.py (v1.10),
copied as literals: an extension written against A1111 sees the same lists."""
from __future__ import annotations

import pytest

from modules import prompt_parser


def schedule(prompt, steps=10, hires=None):
    return prompt_parser.get_learned_conditioning_prompt_schedules([prompt], steps, hires)[0]


@pytest.mark.parametrize("prompt, expected", [
    ("test", [[10, 'test']]),
    ("a [b:3]", [[3, 'a '], [10, 'a b']]),
    ("a [[[b]]:2]", [[2, 'a '], [10, 'a [[b]]']]),
    ("[(a:2):3]", [[3, ''], [10, '(a:2)']]),
    ("a [b : c : 1] d", [[1, 'a b  d'], [10, 'a  c  d']]),
    ("a[b:[c:d:2]:1]e", [[1, 'abe'], [2, 'ace'], [10, 'ade']]),
    ("a [unbalanced", [[10, 'a [unbalanced']]),
    ("a [b:.5] c", [[5, 'a  c'], [10, 'a b c']]),
    ("((a][:b:c [d:3]", [[3, '((a][:b:c '], [10, '((a][:b:c d']]),
    ("[fe|||]male", [[1, 'female'], [2, 'male'], [3, 'male'], [4, 'male'], [5, 'female'], [6, 'male'],
                     [7, 'male'], [8, 'male'], [9, 'female'], [10, 'male']]),
])
def test_schedules_are_a1111s_doctests(prompt, expected):
    assert schedule(prompt) == expected


def test_hires_schedules_and_one_entry_per_prompt():
    assert schedule("a [b:.5] c", 10, 10) == [[10, 'a b c']]
    assert schedule("a [b:1.5] c", 10, 10) == [[5, 'a  c'], [10, 'a b c']]
    both = prompt_parser.get_learned_conditioning_prompt_schedules(["x", "[y:2]", "x"], 4)
    assert both == [[[4, "x"]], [[2, ""], [4, "y"]], [[4, "x"]]]


@pytest.mark.parametrize("text, expected", [
    ('normal text', [['normal text', 1.0]]),
    ('an (important) word', [['an ', 1.0], ['important', 1.1], [' word', 1.0]]),
    ('(unbalanced', [['unbalanced', 1.1]]),
    ('\\(literal\\]', [['(literal]', 1.0]]),
    ('(unnecessary)(parens)', [['unnecessaryparens', 1.1]]),
    ('a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).',
     [['a ', 1.0], ['house', 1.5730000000000004], [' ', 1.1], ['on', 1.0], [' a ', 1.1], ['hill', 0.55],
      [', sun, ', 1.1], ['sky', 1.4641000000000006], ['.', 1.1]]),
    ('a BREAK b', [['a', 1.0], ['BREAK', -1], ['b', 1.0]]),
])
def test_parse_prompt_attention_is_a1111s(text, expected):
    assert prompt_parser.parse_prompt_attention(text) == expected


def test_multicond_prompt_list():
    res, flat, index = prompt_parser.get_multicond_prompt_list(["a cat AND a dog:0.5", "a cat", "x AND a cat"])
    assert res == [[(0, 1.0), (1, 0.5)], [(0, 1.0)], [(2, 1.0), (3, 1.0)]]
    assert flat == ["a cat", " a dog", "x", " a cat"]  # leading spaces kept, trailing dropped, as A1111
    assert index == {text: i for i, text in enumerate(flat)}


def test_regexes_match_what_a1111s_do():
    assert [m.group(0) for m in prompt_parser.re_attention.finditer("a (b:1.2) \\(c")] == \
        ["a ", "(", "b", ":1.2)", " ", "\\(", "c"]
    assert prompt_parser.re_break.split("a BREAK b") == ["a", "b"]
    assert prompt_parser.re_AND.split("a AND b") == ["a ", " b"]
    assert prompt_parser.re_weight.search(" b:0.5").groups() == (" b", "0.5")
