"""A1111's prompt language: schedules, AND, emphasis, extra networks, styles.

Expected values follow A1111's documented behaviour (the docstrings of its
prompt_parser.py, its extra-networks and styles rules), malformed input included.
"""
from __future__ import annotations

import pytest

from modules.text.prompt_syntax import (
    ExtraNetwork, extract_extra_networks, get_schedule, lora_weights, multicond_schedules, parse_attention, split_and,
    text_at_step,
)
from modules.text.styles import Style, apply_styles, load_styles_csv, merge_style, save_styles_csv

# ------------------------------------------------------------------------ schedules


def alternating(a: str, b: str, steps: int) -> list[tuple[int, str]]:
    return [(s, a if s % 2 else b) for s in range(1, steps + 1)]


@pytest.mark.parametrize("prompt, expected", [
    ("test", [(10, "test")]),
    ("", [(10, "")]),
    ("a [b:3]", [(3, "a "), (10, "a b")]),
    ("a [b: 3]", [(3, "a "), (10, "a b")]),
    ("a [b:3 ]", [(3, "a "), (10, "a b")]),
    ("a [[[b]]:2]", [(2, "a "), (10, "a [[b]]")]),
    ("[(a:2):3]", [(3, ""), (10, "(a:2)")]),
    ("a [b : c : 1] d", [(1, "a b  d"), (10, "a  c  d")]),
    ("a[b:[c:d:2]:1]e", [(1, "abe"), (2, "ace"), (10, "ade")]),
    ("a [b:.5] c", [(5, "a  c"), (10, "a b c")]),
    ("[a::5]", [(5, "a"), (10, "")]),
    ("[a:b:0.25]", [(2, "a"), (10, "b")]),        # int(0.25 * 10)
    ("[a:b:0]", [(10, "b")]),                     # step 0 is never reached
    ("[a:b:-3]", [(10, "b")]),
    ("[a:b:25]", [(10, "a")]),                    # clamped to the last step
    ("[a:b:1.5]", [(10, "a")]),                   # "." means a fraction: 15 -> 10
    ("[a:b:1.0]", [(10, "a")]),
    ("[a:b:1]", [(1, "a"), (10, "b")]),
    ("[a:b:1e1]", [(10, "a")]),
    ("a\n[b:2]", [(2, "a\n"), (10, "a\nb")]),
])
def test_schedule_editing(prompt, expected):
    assert get_schedule(prompt, 10) == expected


def test_schedule_fraction_of_twenty_steps():
    assert get_schedule("[a:b:0.5]", 20) == [(10, "a"), (20, "b")]


def test_schedule_a1111_example_of_several_edits():
    prompt = ("fantasy landscape with a [mountain:lake:0.25] and [an oak:a christmas tree:0.75]"
              "[ in foreground::0.6][ in background:0.25] [shoddy:masterful:0.5]")
    start = "fantasy landscape with a "
    assert get_schedule(prompt, 100) == [
        (25, start + "mountain and an oak in foreground shoddy"),
        (50, start + "lake and an oak in foreground in background shoddy"),
        (60, start + "lake and an oak in foreground in background masterful"),
        (75, start + "lake and an oak in background masterful"),
        (100, start + "lake and a christmas tree in background masterful"),
    ]


@pytest.mark.parametrize("prompt, expected", [
    ("[a|(b:1.1)]", alternating("a", "(b:1.1)", 10)),
    ("[fe|]male", alternating("female", "male", 10)),
    ("[fe|||]male", [(s, "female" if s % 4 == 1 else "male") for s in range(1, 11)]),
    ("[|x]", alternating("", "x", 10)),
    ("[a|b|c]", [(s, "abc"[(s - 1) % 3]) for s in range(1, 11)]),
])
def test_schedule_alternation(prompt, expected):
    assert get_schedule(prompt, 10) == expected


def test_alternation_steps_from_one():
    assert get_schedule("[a|b]", 3) == [(1, "a"), (2, "b"), (3, "a")]


@pytest.mark.parametrize("prompt, expected", [
    ("[[a|b]:c:3]", [(1, "a"), (2, "b"), (3, "a"), (4, "c")]),
    ("[a:[b|c]:2]", [(1, "a"), (2, "a"), (3, "b"), (4, "c")]),
    ("([a|b]:1.2)", [(1, "(a:1.2)"), (2, "(b:1.2)"), (3, "(a:1.2)"), (4, "(b:1.2)")]),
    ("[a:b:1] [c:d:3]", [(1, "a c"), (3, "b c"), (4, "b d")]),
])
def test_schedule_nesting(prompt, expected):
    assert get_schedule(prompt, 4) == expected


@pytest.mark.parametrize("prompt, expected", [
    ("a [unbalanced", [(10, "a [unbalanced")]),
    # A1111's docstring (marked "not handling this right now") says [(5, "a  c"), ...];
    # its grammar in fact fails on the "|" and, as here, keeps the text for every step.
    ("a [{b|d{:.5] c", [(10, "a [{b|d{:.5] c")]),
    ("((a][:b:c [d:3]", [(3, "((a][:b:c "), (10, "((a][:b:c d")]),
    ("a ] b [c:2]", [(2, "a ] b "), (10, "a ] b c")]),
    ("a | b", [(10, "a | b")]),                    # fails to parse: plain text
    ("a [b|c", [(10, "a [b|c")]),
    ("[a:b:x]", [(10, "[a:b:x]")]),                # not a number: stays text
    ("\\[a:b:3\\]", [(10, "\\[a:b:3\\]")]),        # escaped brackets: no edit
    ("[a\\:b:3]", [(3, ""), (10, "a\\:b")]),       # escaped colon stays in the text
    ("\\(x\\) [y:2]", [(2, "\\(x\\) "), (10, "\\(x\\) y")]),
])
def test_schedule_malformed_and_escaped(prompt, expected):
    assert get_schedule(prompt, 10) == expected


@pytest.mark.parametrize("prompt, steps, hires, old, expected", [
    ("[a:b:1.5]", 10, None, True, [(1, "a"), (10, "b")]),   # old timelines: >= 1 is a step
    ("[a:b:1.0]", 10, None, True, [(1, "a"), (10, "b")]),
    ("[a:b:0.5]", 10, None, True, [(5, "a"), (10, "b")]),
    ("a [b:.5] c", 10, 10, False, [(10, "a b c")]),        # hires pass: the first pass's half
    ("a [b:1.5] c", 10, 10, False, [(5, "a  c"), (10, "a b c")]),
    ("[a:b:15]", 10, 10, False, [(5, "a"), (10, "b")]),     # step 15 = hires step 5
    ("[a:b:15]", 10, 10, True, [(10, "a")]),               # old: counted in the first pass
    ("a | b", 10, 6, False, [(6, "a | b")]),
])
def test_schedule_hires_and_old_timelines(prompt, steps, hires, old, expected):
    assert get_schedule(prompt, steps, hires, old) == expected


def test_text_at_step():
    schedule = get_schedule("[a:b:2]", 4)
    assert [text_at_step(schedule, s) for s in (1, 2, 3, 4, 9)] == ["a", "a", "b", "b", "b"]


# ------------------------------------------------------------------------ AND


@pytest.mark.parametrize("prompt, expected", [
    ("a cat", [("a cat", 1.0)]),
    ("a cat AND a dog:0.5", [("a cat", 1.0), (" a dog", 0.5)]),
    ("a AND b AND c", [("a", 1.0), (" b", 1.0), (" c", 1.0)]),
    ("cat:0.5", [("cat", 0.5)]),                    # a lone prompt takes the weight too
    ("a cat  :  1.5  ", [("a cat", 1.5)]),
    ("a AND b:-2", [("a", 1.0), (" b", -2.0)]),
    ("a AND b:5.", [("a", 1.0), (" b", 5.0)]),
    ("a AND b:.5", [("a", 1.0), (" b", 0.5)]),
    ("b:1e5", [("b:1e5", 1.0)]),
    ("(x:1.2)", [("(x:1.2)", 1.0)]),
    ("ANDROID AND_x and y", [("ANDROID AND_x and y", 1.0)]),
    ("a,AND,b", [("a,", 1.0), (",b", 1.0)]),
    ("a AND", [("a", 1.0), ("", 1.0)]),
    ("a\nAND b", [("a", 1.0), (" b", 1.0)]),
    ("[a AND b:3]", [("[a", 1.0), (" b:3]", 1.0)]),  # splits inside brackets too
    ("", [("", 1.0)]),
])
def test_split_and(prompt, expected):
    assert split_and(prompt) == expected


def test_multicond_schedules():
    assert multicond_schedules("[a:b:2] AND c:0.5", 4) == [
        (1.0, [(2, "a"), (4, "b")]),
        (0.5, [(4, " c")]),
    ]


# ------------------------------------------------------------------------ emphasis

A = 1 / 1.1


@pytest.mark.parametrize("text, expected", [
    ("normal text", [("normal text", 1.0)]),
    ("an (important) word", [("an ", 1.0), ("important", 1.1), (" word", 1.0)]),
    ("(unbalanced", [("unbalanced", 1.1)]),
    ("\\(literal\\]", [("(literal]", 1.0)]),
    ("(unnecessary)(parens)", [("unnecessaryparens", 1.1)]),
    ("a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).", [
        ("a ", 1.0),
        ("house", 1.5730000000000004),
        (" ", 1.1),
        ("on", 1.0),
        (" a ", 1.1),
        ("hill", 0.55),
        (", sun, ", 1.1),
        ("sky", 1.4641000000000006),
        (".", 1.1),
    ]),
    ("", [("", 1.0)]),
    ("()", [("", 1.0)]),
    ("[x]", [("x", A)]),
    ("[[x]]", [("x", 0.8264462809917354)]),
    ("((x))", [("x", 1.2100000000000002)]),
    ("(x:1.3)", [("x", 1.3)]),
    ("(x: 1.5 )", [("x", 1.5)]),
    ("(x:-1)", [("x", -1.0)]),
    ("(a)(b:1.1)", [("ab", 1.1)]),
    ("(a[b)c]", [("a", 1.1), ("b", 1.0), ("c", A)]),
    ("[unbalanced", [("unbalanced", A)]),
    ("((a) b", [("a", 1.2100000000000002), (" b", 1.1)]),
])
def test_attention(text, expected):
    assert parse_attention(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("a) b", [("a) b", 1.0)]),                  # closing with nothing open: text
    ("a] b", [("a] b", 1.0)]),
    ("[a)", [("a)", A)]),
    ("a:b", [("a:b", 1.0)]),
    ("a:1.2) b", [("a:1.2) b", 1.0)]),          # a weight with no "(" is text
    ("(a:b)", [("a:b", 1.1)]),
    ("\\\\", [("\\", 1.0)]),                    # \\ is one backslash
    ("a\\b", [("ab", 1.0)]),                    # a lone backslash is dropped
    ("\\:", [(":", 1.0)]),
    ("\\((x)", [("(", 1.0), ("x", 1.1)]),
    ("(a:1.2.3)", [("a:1.2.3", 1.1)]),          # A1111 raises; we read it as text
])
def test_attention_malformed(text, expected):
    assert parse_attention(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("a BREAK b", [("a", 1.0), ("BREAK", -1), ("b", 1.0)]),
    ("a\nBREAK\nb", [("a", 1.0), ("BREAK", -1), ("b", 1.0)]),
    ("BREAK", [("", 1.0), ("BREAK", -1), ("", 1.0)]),
    ("a BREAK BREAK b", [("a", 1.0), ("BREAK", -1), ("", 1.0), ("BREAK", -1), ("b", 1.0)]),
    ("aBREAK b, breaking", [("aBREAK b, breaking", 1.0)]),
    ("(a BREAK b)", [("a", 1.1), ("BREAK", -1.1), ("b", 1.1)]),  # inside brackets it is weighted
    ("(x) BREAK [y]", [("x", 1.1), ("", 1.0), ("BREAK", -1), ("", 1.0), ("y", A)]),
])
def test_attention_break(text, expected):
    assert parse_attention(text) == expected


# ------------------------------------------------------------------------ extra networks


@pytest.mark.parametrize("prompt, text, networks", [
    ("a <lora:foo:0.8>, b", "a , b", [ExtraNetwork("lora", "foo", ["0.8"])]),
    ("<lora:foo:0.5:0.3><hypernet:bar>x", "x",
     [ExtraNetwork("lora", "foo", ["0.5", "0.3"]), ExtraNetwork("hypernet", "bar", [])]),
    ("<my_net:a:b:c=1> y", " y", [ExtraNetwork("my_net", "a", ["b", "c=1"])]),
    ("<lora:sub/dir name:1>", "", [ExtraNetwork("lora", "sub/dir name", ["1"])]),
    ("<lora::1>", "", [ExtraNetwork("lora", "", ["1"])]),
    ("a <b> c <lora:> <lo ra:x>", "a <b> c <lora:> <lo ra:x>", []),
    ("[<lora:x:1>:3]", "[:3]", [ExtraNetwork("lora", "x", ["1"])]),
])
def test_extract_extra_networks(prompt, text, networks):
    assert extract_extra_networks(prompt) == (text, networks)


@pytest.mark.parametrize("tag, weights", [
    ("<lora:x>", (1.0, 1.0)),
    ("<lora:x:0.8>", (0.8, 0.8)),
    ("<lora:x:0.8:0.3>", (0.8, 0.3)),
    ("<lora:x:te=0.5>", (0.5, 0.5)),
    ("<lora:x:0.8:unet=0.2>", (0.8, 0.2)),
    ("<lora:x:unet=0.2:0.7>", (0.7, 0.2)),
    ("<lora:x:1:0.5:te=0.25>", (0.25, 0.5)),
    ("<lora:x:0.8:0.3:16>", (0.8, 0.3)),
])
def test_lora_weights(tag, weights):
    _, [item] = extract_extra_networks(tag)
    assert lora_weights(item) == weights


def test_lora_weight_not_a_number():
    _, [item] = extract_extra_networks("<lora:x:abc>")
    with pytest.raises(ValueError):
        lora_weights(item)


def test_extra_network_named_and_positional():
    item = ExtraNetwork("lora", "x", ["0.5", "te=1", "a=b=c"])
    assert item.positional == ["x", "0.5", "a=b=c"]
    assert item.named == {"te": "1"}


# ------------------------------------------------------------------------ styles


@pytest.mark.parametrize("style, prompt, expected", [
    ("{prompt}, masterpiece", "cat", "cat, masterpiece"),
    ("oil painting", "cat ", "cat, oil painting"),
    (" oil painting ", "", "oil painting"),
    ("", " cat ", "cat"),                        # even an empty style strips the prompt
    ("", "", ""),
    ("a {prompt} b {prompt}", " cat", "a  cat b  cat"),
])
def test_merge_style(style, prompt, expected):
    assert merge_style(style, prompt) == expected


def test_apply_styles_in_order():
    styles = [Style("one", "{prompt}, detailed", "blurry"), Style("two", "oil", "{prompt}, lowres")]
    assert apply_styles("cat", "", styles) == ("cat, detailed, oil", "blurry, lowres")
    assert apply_styles("cat", "bad", []) == ("cat", "bad")


def test_styles_csv_round_trip(tmp_path):
    path = tmp_path / "styles.csv"
    styles = [
        Style("Cinematic", "{prompt}, film grain, \"anamorphic\"", "cartoon, 3d"),
        Style("multi", "line one\nline two", ""),
        Style("日本語", "桜", "雨"),
    ]
    save_styles_csv(path, styles)
    raw = path.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbfname,prompt,negative_prompt\r\n")
    assert load_styles_csv(path) == styles
    assert not (tmp_path / "styles.csv.bak").exists()

    save_styles_csv(path, styles[:1])
    assert load_styles_csv(tmp_path / "styles.csv.bak") == styles
    assert load_styles_csv(path) == styles[:1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["styles.csv", "styles.csv.bak"]


def test_load_styles_csv_a1111_quirks(tmp_path):
    path = tmp_path / "styles.csv"
    path.write_text(
        "name, prompt, negative_prompt\n"
        "# a comment,x,y\n"
        "a, one, two\n"
        "short,only prompt\n"
        "a,replaced,\n",
        encoding="utf-8",
    )
    # skipinitialspace: the header and values lose their leading spaces
    assert load_styles_csv(path) == [Style("a", "replaced", ""), Style("short", "only prompt", "")]


def test_load_styles_csv_old_layout_and_missing(tmp_path):
    old = tmp_path / "old.csv"
    old.write_text("name,text\nwarm,\"warm light, sunset\"\n", encoding="utf-8")
    assert load_styles_csv(old) == [Style("warm", "warm light, sunset", "")]
    assert load_styles_csv(tmp_path / "none.csv") == []


# ------------------------------------------------------------------------ bounded parsing

def _whole_parse_schedule(prompt: str, steps: int) -> list[tuple[int, str]]:
    """get_schedule as it was before pieces: one Earley parse of the whole prompt."""
    import lark

    from modules.text import prompt_syntax as ps

    timeline = ps._Timeline(steps)
    try:
        tree = ps._ToNodes().transform(ps._parser().parse(prompt))
    except lark.exceptions.LarkError:
        return [(steps, prompt)]
    return [(end, timeline.render(tree, end)) for end in sorted(timeline.switches(tree) | {steps})]


def test_parsing_piece_by_piece_gives_the_whole_parse():
    """Random prompts of words, brackets, colons, numbers, bars, escapes and commas: the
    piece-by-piece parse (bounded cost) gives exactly the schedule of one whole parse."""
    import random

    from modules.text.prompt_syntax import pieces

    rng = random.Random(1234)
    atoms = ["cat", " dog", ", ", ",", "(", ")", "[", "]", ":", "|", "0.5", "3", ":1.2", " ", "\\(", "AND"]
    groups = ["(cat:1.2)", "[dog:cat:0.5]", "[red|blue|green]", "((big))", "[a:3]", "[a::0.2]", "(x, y)", "[(a):b:2]",
              "\\(not a group)", "plain words", "a:b", "[c]", "(d:e:f)"]
    split = 0
    for i in range(400):
        if i % 2:  # anything, mostly unbalanced
            prompt = "".join(rng.choice(atoms) for _ in range(rng.randint(1, 14)))
        else:  # groups people write, joined by commas (with some stray brackets)
            prompt = rng.choice([", ", ",", " "]).join(rng.choice(groups + atoms[:4]) for _ in range(rng.randint(1, 8)))
        assert get_schedule(prompt, 10) == _whole_parse_schedule(prompt, 10), prompt
        split += len(pieces(prompt)) > 1
    assert split > 100  # a good part of them were really cut into pieces


def test_a_prompt_that_would_hold_the_server_is_refused_before_parsing():
    from modules.text.prompt_syntax import MAX_PIECE_BRACKETS, check, pieces

    for bad in ("(" * 1_000_000, "[a:" * 400_000, "(" * (MAX_PIECE_BRACKETS + 1), "(a:1.1), " * 300):
        with pytest.raises(ValueError, match="limit"):
            check(bad)
    long_but_fine = ", ".join(f"(word{i}:1.1)" for i in range(120)) + ", a [cat:dog:0.5] [red|blue]"
    check(long_but_fine)  # 120 weighted words, an edit and an alternation: what people write
    assert len(pieces(long_but_fine)) == 121
    assert get_schedule(long_but_fine, 4) == _whole_parse_schedule(long_but_fine, 4)
