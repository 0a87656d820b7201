"""Lyric-quality metrics on hand-written cases with known answers."""

import pytest

from lyricslab.scoring.lyric_metrics import (
    CopyIndex,
    cut,
    cut_to_shortest,
    distinct,
    lyric_metrics,
    reference_excerpts,
    repetition,
    rhyme_density,
    rhymes,
    sample_metrics,
    structure_validity,
)


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
    cut = "[Verse]\nline one here\n\n[Chorus]"  # an excerpt that stops right after a header: cut, not empty
    assert structure_validity([good, bad, "no headers at all", cut]) == pytest.approx(2 / 4)
    m = lyric_metrics([good], CopyIndex([]))
    assert m["words_per_line"] == pytest.approx((3 + 2 + 2) / 3)
    assert m["lines_per_section"] == pytest.approx(1.5)
    assert m["copy_rate"] == 0.0


# Original placeholder songs (written for these tests), as the splits hold them: lower-case tags.
HUMAN = [
    "[verse]\nthe kettle sings before the dawn\nthe kitchen light is warm and on\nI count the cups upon the shelf\n"
    "and keep the quiet for myself\n\n[chorus]\nhold on hold on the morning is near\nhold on hold on the road is clear",
    "[verse]\nsalt on the window rain on the pier\nthe ferry horn is all I hear\n\n[chorus]\nsail away sail away\n"
    "over the bay over the bay\n\n[bridge]\npaper lanterns drifting low\nwhere the evening rivers go",
    "[intro]\nhum hum hum\n\n[verse]\nbicycle bells on a gravel lane\nsunflowers nodding after the rain\n"
    "a tin can radio plays our song\nwe hum the parts we get wrong",
    "[verse]\nchalk on the pavement letters in blue\nsomebody drew a door for you\n\n"
    "[chorus]\nknock knock who is there\n"
    "only the wind in your hair",
]


def test_cut_keeps_whole_words_only():
    assert cut("hold on hold on", 7) == "hold on"  # a space follows: "on" is whole
    assert cut("hold on hold on", 10) == "hold on "  # would split "hold": dropped
    assert cut("hold on\n", 50) == "hold on\n" and cut("hold on", 0) == ""
    assert cut("hold on", 50) == "hold "  # the text may stop mid-word (a sample's last token): dropped
    assert cut("it's [chorus]\nla", 12) == "it's [chorus"  # ']' follows


def test_samples_are_cut_to_the_shortest_and_references_match_in_count_and_length():
    samples = ["[Verse]\n" + "a b c d e f g h\n" * 9, "[Chorus]\nla la la\nla la la\nla la la\n",
               "[Verse]\nx y z\n" * 5]
    texts, chars = cut_to_shortest(samples)
    assert chars == len(samples[1]) and texts == [s[:chars] for s in samples]  # all end on a newline
    refs = reference_excerpts(HUMAN, count=3, chars=120)
    assert len(set(refs)) == 3 and refs == reference_excerpts(HUMAN, count=3, chars=120)  # distinct songs, fixed seed
    assert all(any(r == cut(song, 120) for song in HUMAN) for r in refs)  # each from a song's start
    assert all(110 < len(r) <= 120 for r in refs)
    # Longer than any song: it runs on into the next song after a newline, as a sample runs past <eos>.
    chars = max(len(song) for song in HUMAN) + 40
    for r in reference_excerpts(HUMAN, count=4, chars=chars):
        i = next(i for i, song in enumerate(HUMAN) if r.startswith(song + "\n"))
        assert r == cut(HUMAN[i] + "\n" + HUMAN[(i + 1) % 4] + "\n" + HUMAN[(i + 2) % 4], chars)
    assert len(set(reference_excerpts(HUMAN, count=6, chars=20))) == 4  # more excerpts than songs: each song first


def test_sample_metrics_compare_with_human_text_of_the_sample_length():
    """Every figure below is counted by hand from the texts, not computed with the module's functions."""
    song_a = "[verse]\nred fox runs far\nblue owl sees a star\n\n[chorus]\nla la la la\nla la la la\n"
    song_b = "[verse]\nsnow falls on the town\ncold wind in the square\nwe walk home\n"
    samples = ["[verse]\n" + "la la la\n" * 7, "[chorus]\n" + "hold on hold on\n" * 3 + "hold"]
    m = sample_metrics(samples, [song_a], [song_a, song_b])
    assert m["lyric_metric_chars"] == 61  # the shorter sample: 9 + 3 * 16 + 4 characters
    # Two songs for two samples: both are used, each cut to 61 characters, whole words only:
    #   A: [verse] red fox runs far / blue owl sees a star || [chorus] la la     (3 lines, 11 words, 2 sections)
    #   B: [verse] snow falls on the town / cold wind in the square / we        ("we walk" cut to "we ")
    assert m["ref_words_per_line"] == pytest.approx(22 / 6)
    assert m["ref_lines_per_section"] == pytest.approx(6 / 3)
    # distinct-n, repetition and copy rate read every word, header names too: A has 13, B 12.
    assert m["ref_distinct_1"] == pytest.approx(22 / 25)  # "verse", "la" and "the" twice each
    assert m["ref_distinct_2"] == pytest.approx(1.0)
    assert m["ref_repetition"] == 0.0
    assert m["ref_rhyme_density"] == pytest.approx(1 / 3)  # far/star; none in B's two candidate pairs
    assert m["ref_structure_validity"] == 1.0
    assert m["ref_copy_rate"] == pytest.approx(6 / 11)  # A's six 8-grams are in the training text, B's five are not
    # The samples, cut to 61 characters: six lines "la la la" (the 7th cut off); "hold on hold on" x 3 ("hold" dropped).
    assert m["words_per_line"] == pytest.approx(30 / 9) and m["lines_per_section"] == pytest.approx(9 / 2)
    assert m["distinct_1"] == pytest.approx(5 / 32)  # verse, la x 18, chorus, hold on x 6
    assert m["repetition"] == pytest.approx((1 - 2 / 16 + 1 - 3 / 10) / 2)  # 16 four-grams, 2 distinct; 10, 3
    assert m["copy_rate"] == pytest.approx(11 / 18)  # the 11 "la" x 8 grams are in A (eight la's in a row); 7 others
    # Longer samples mean longer references: length-dependent metrics move with them.
    train = HUMAN[:2]
    short = sample_metrics([HUMAN[2][:90], HUMAN[3][:120]], train, HUMAN)
    long_samples = [HUMAN[2] + "\n" + HUMAN[3], HUMAN[3] + "\n" + HUMAN[0]]
    longer = sample_metrics(long_samples, train, HUMAN)
    assert short["lyric_metric_chars"] == 90
    assert longer["lyric_metric_chars"] == min(len(t) for t in long_samples)
    assert longer["ref_distinct_2"] < short["ref_distinct_2"]
    assert longer["ref_lines_per_section"] != short["ref_lines_per_section"]


def test_copy_rate_of_training_excerpts_and_shuffled_junk():
    import random

    train = HUMAN
    copied = sample_metrics([HUMAN[0][:150], HUMAN[1][:150]], train, HUMAN)
    assert copied["copy_rate"] == 1.0
    junk = [w for song in HUMAN for w in song.split()]
    random.Random(0).shuffle(junk)
    shuffled = sample_metrics([" ".join(junk[:40]), " ".join(junk[40:80])], train, HUMAN)
    assert shuffled["copy_rate"] < 0.05
    for key in ("rhyme_density", "distinct_1", "distinct_2", "repetition", "structure_validity", "copy_rate"):
        assert 0 <= copied[key] <= 1 and 0 <= shuffled[f"ref_{key}"] <= 1, key
