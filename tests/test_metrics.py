"""Tests of fcn_captcha.metrics; every expected value is worked out by hand in a comment."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from fcn_captcha.decoder import Char, Reading
from fcn_captcha.metrics import edit_distance, format_metrics, reading_metrics, shortened_run, substitutions


@pytest.mark.parametrize("a, b, d", [
    ("", "", 0),
    ("", "ABC", 3),          # three insertions
    ("ABC", "", 3),
    ("ABC", "ABC", 0),
    ("kitten", "sitting", 3),  # k->s, e->i, +g
    ("flaw", "lawn", 2),     # -f, +n
    ("AB12", "BA12", 2),     # no transpositions in Levenshtein: two substitutions
    ("777", "77", 1),
    ("NN", "N", 1),
])
def test_edit_distance(a, b, d):
    assert edit_distance(a, b) == d
    assert edit_distance(b, a) == d


def brute_force_distance(a: str, b: str) -> int:
    """Independent recursive definition (memo-less; short strings only)."""
    if not a or not b:
        return len(a) + len(b)
    return min(brute_force_distance(a[1:], b) + 1, brute_force_distance(a, b[1:]) + 1,
               brute_force_distance(a[1:], b[1:]) + (a[0] != b[0]))


def test_edit_distance_against_recursion():
    rng = np.random.default_rng(0)
    for _ in range(200):
        a = "".join(rng.choice(list("AB7"), rng.integers(0, 6)))
        b = "".join(rng.choice(list("AB7"), rng.integers(0, 6)))
        assert edit_distance(a, b) == brute_force_distance(a, b)


@pytest.mark.parametrize("truth, read, subs", [
    ("AB12", "AB12", []),
    ("AB12", "A812", [("B", "8")]),
    ("AB1C", "A81", [("B", "8")]),       # B->8 and C missing: lengths differ
    ("O0", "00", [("O", "0")]),
    ("O0Q", "00", [("Q", "0")]),         # two best alignments: the backtrace from the end
                                         # takes the substitution Q->0 and the deletion of O
    ("AB", "XABY", []),                  # only insertions
    ("ABCD", "WXYZ", [("A", "W"), ("B", "X"), ("C", "Y"), ("D", "Z")]),
    ("I1", "1I", [("I", "1"), ("1", "I")]),
])
def test_substitutions(truth, read, subs):
    assert substitutions(truth, read) == subs
    # the alignment is a valid one: substitutions never exceed the distance
    assert len(subs) <= edit_distance(truth, read)


def test_reading_metrics_hand_computed():
    truth = ["AB12", "AB12", "AB12", "XY", "7777"]
    read = ["AB12", "A812", "A81", "", "77777"]
    # exact: 1/5. edit distances: 0, 1, 2, 2, 1 -> char acc per image 1, .75, .5, 0, .75
    # lengths differ in images 3, 4, 5. substitutions: B->8 twice (images 2 and 3).
    m = reading_metrics(read, truth)
    assert m["count"] == 5
    assert m["sequence_accuracy"] == pytest.approx(0.2)
    assert m["character_accuracy"] == pytest.approx((1 + 0.75 + 0.5 + 0 + 0.75) / 5)
    assert m["mean_edit_distance"] == pytest.approx(6 / 5)
    assert m["length_error_rate"] == pytest.approx(3 / 5)
    assert m["confusions"] == [("B", "8", 2)]


def test_character_accuracy_is_floored_at_zero():
    # distance 5 to a 2-symbol truth: 1 - 5/2 < 0 -> 0
    m = reading_metrics(["ABCDE"], ["XY"])
    assert m["character_accuracy"] == 0.0
    # empty truth: 1 when read empty, 0 otherwise
    assert reading_metrics(["", "A"], ["", ""])["character_accuracy"] == 0.5


def test_confusions_sorted_and_cut():
    truth = ["O", "O", "O", "I", "I", "S", "B"]
    read = ["0", "0", "0", "1", "1", "5", "8"]
    m = reading_metrics(read, truth, top_confusions=3)
    # counts: O->0 x3, I->1 x2, then B->8 and S->5 x1 each, ties by symbols: B before S
    assert m["confusions"] == [("O", "0", 3), ("I", "1", 2), ("B", "8", 1)]
    assert reading_metrics(read, truth, top_confusions=0)["confusions"] == []


def test_accepts_readings():
    reads = [Reading("A1", (Char("A", 3.0, 4.0, 0.9), Char("1", 20.0, 4.0, 0.8))), Reading("B")]
    m = reading_metrics(reads, ["A1", "8"])
    assert m["sequence_accuracy"] == 0.5
    assert m["confusions"] == [("8", "B", 1)]


def test_bad_inputs():
    with pytest.raises(ValueError, match="2 predictions but 3 true texts"):
        reading_metrics(["A", "B"], ["A", "B", "C"])
    with pytest.raises(ValueError, match="str or a Reading"):
        reading_metrics([3], ["A"])


def test_empty_lists():
    m = reading_metrics([], [])
    assert m["count"] == 0 and m["confusions"] == []
    assert math.isnan(m["sequence_accuracy"]) and math.isnan(m["character_accuracy"])
    assert "images 0" in format_metrics(m) and "n/a" in format_metrics(m)


def test_format_metrics():
    m = reading_metrics(["AB12", "A812", "A81", "", "77777"], ["AB12", "AB12", "AB12", "XY", "7777"])
    text = format_metrics(m)
    assert text.splitlines() == [
        "images 5: sequence accuracy 20.00%, character accuracy 60.00%, length errors 60.00%",
        "confusions (true->read): B->8 x2",
    ]
    assert format_metrics(reading_metrics(["A"], ["A"])).endswith("confusions (true->read): none")


def test_symmetric_cases_small_exhaustive():
    # every pair of strings over "AB" up to length 3: distance 0 iff equal, and the
    # sequence accuracy of a list against itself is 1
    words = ["".join(p) for n in range(4) for p in itertools.product("AB", repeat=n)]
    for a in words:
        for b in words:
            assert (edit_distance(a, b) == 0) == (a == b)
    assert reading_metrics(words, words)["sequence_accuracy"] == 1.0


def test_shortened_run_names_a_run_read_shorter_and_nothing_else():
    assert shortened_run("gllazc", "glazc") == "ll"
    assert shortened_run("fffehga", "fehga") == "fff"
    assert shortened_run("aabb", "abb") == "aa"  # the first run read shorter
    # a symbol gone, swapped, added or a run gone entirely: no merge explains it
    for truth, read in (("glazc", "gazc"), ("gllazc", "glaz"), ("ab", "abb"), ("aab", "b"), ("ab", "ab"), ("", "")):
        assert shortened_run(truth, read) == "", (truth, read)
