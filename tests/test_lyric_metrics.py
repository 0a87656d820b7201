"""Lyric-quality metrics on hand-written cases with known answers."""

import pytest

from lyricslab.lyric_metrics import (CopyIndex, distinct, lyric_metrics, repetition, rhyme_density, rhymes,
                                     structure_validity)


@pytest.mark.parametrize("a,b,expected", [("night", "light", True), ("fire", "higher", True), ("cat", "hat", True),
                                          ("night", "table", False), ("river", "stone", False),
                                          ("night", "night", False),  # the same word is repetition, not rhyme
                                          ("zorbleflame", "glimflame", True)])  # unknown words: spelling fallback
def test_rhyming_pairs(a, b, expected):
    assert rhymes(a, b) is expected


def test_rhyme_density_counts_consecutive_and_alternate_lines():
    couplets = "[verse]\nI walk along the road tonight\nthe city glows in silver light\n"
    assert rhyme_density([couplets]) == 1.0
    alternate = "[verse]\nthe night is cold\nI miss the sea\nthe story told\nyou said to me\n"
    assert rhyme_density([alternate]) == pytest.approx(2 / 3)  # lines 1 and 2 find partners two lines down
    assert rhyme_density(["[verse]\nthe river runs\nthe table stands\n"]) == 0.0


def test_copy_rate_sees_memorised_text():
    train = ["one two three four five six seven eight nine ten eleven twelve"]
    index = CopyIndex(train)
    assert index.copy_rate(["one two three four five six seven eight nine ten"]) == 1.0
    assert index.copy_rate(["twelve eleven ten nine eight seven six five four three"]) == 0.0
    half = "one two three four five six seven eight apple pear plum fig grape kiwi lime"
    assert 0 < index.copy_rate([half]) < 1


def test_repetition_and_distinct():
    loop = "la la la la la la la la"
    assert repetition([loop]) == pytest.approx(4 / 5)  # 5 four-grams, all the same
    assert repetition(["every word here is new to the song"]) == 0.0
    assert distinct(["a b c d"], 1) == 1.0 and distinct(["a a a a"], 1) == 0.25
    assert distinct(["a b a b"], 2) == pytest.approx(2 / 3)


def test_structure_validity_and_line_stats():
    good = "[Verse]\nline one here\nline two\n\n[Chorus]\nla la"
    bad = "[Verse]\n[Chorus]\nla"
    assert structure_validity([good, bad, "no headers at all"]) == pytest.approx(1 / 3)
    m = lyric_metrics([good], CopyIndex([]))
    assert m["words_per_line"] == pytest.approx((3 + 2 + 2) / 3)
    assert m["lines_per_section"] == pytest.approx(1.5)
    assert m["copy_rate"] == 0.0
