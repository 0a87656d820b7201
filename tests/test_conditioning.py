"""Conditioning on tag, decade, artist and language: control tokens, what a model knows, generate, breakdowns."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import compose, song, tiny, write_csv
from omegaconf import OmegaConf

from lyricslab.data.conditioning import (
    ConditionError,
    Conditions,
    condition_splits,
    fields_of,
    repeat_of,
    strip_controls,
    with_prefix,
)
from lyricslab.scoring.scorers import Scores
from lyricslab.text.factory import load_tokenizer, train_tokenizer
from lyricslab.text.windows import Windows

TRAIN = ["<tag:rap><decade:1990s><artist:Lil Compass>[verse]\nCorner store lights and a borrowed pen\n[chorus]\nyo",
         "<tag:pop><decade:2010s><artist:other>[verse]\nGlitter on the pavement, baby blue\n[chorus]\nla la",
         "<tag:rock><lang:es>[verse]\nFuego en la sierra, ruido en la piel"]
CONTROLS = ["<tag:rap>", "<tag:pop>", "<tag:rock>", "<decade:1990s>", "<decade:2010s>", "<artist:Lil Compass>",
            "<artist:other>", "<lang:es>"]


@pytest.mark.parametrize("kind", ["char", "word", "subword"])
def test_control_tokens_are_single_tokens_and_round_trip(kind, tmp_path):
    tok = train_tokenizer(OmegaConf.create({"kind": kind, "vocab_size": 300, "min_freq": 1}), TRAIN)
    assert sorted(tok.control_tokens()) == sorted(CONTROLS)
    for token in CONTROLS:
        ids = tok.encode(token).tolist()
        assert len(ids) == 1 and ids[0] in tok.control_ids() and tok.decode(ids) == token
    # Known and unknown control tokens, mid-text too: every text decodes back to itself.
    for text in [*TRAIN, "<tag:jazz>[verse]\nnew <tag:rap> words", "a<artist:Lil Compass>b <decade:1990s"]:
        assert tok.decode(tok.encode(text)) == text
    assert len(tok.encode("<tag:jazz>")) > 1  # unknown: spelled, so it is no control id
    reloaded = load_tokenizer(tok.save(tmp_path / kind))
    assert reloaded.control_tokens() == tok.control_tokens() and reloaded.control_ids() == tok.control_ids()
    assert reloaded.encode(TRAIN[0]).tolist() == tok.encode(TRAIN[0]).tolist()


def test_control_tokens_are_left_out_of_the_scores():
    """A control token's target adds neither NLL nor a token: bits/char covers the lyrics alone."""
    y = np.array([[5, 9, 6, 7]])
    nll = np.array([[1.0, 50.0, 2.0, 3.0]])  # 9 is a control token the model finds very unlikely
    stats = (nll, np.array([[5, 0, 6, 0]]), np.array([[True, False, True, True]]))
    windows = Windows(np.zeros_like(y), y, np.ones_like(y, dtype=np.float32))
    plain, controlled = Scores(), Scores(unscored_ids=np.array([9]))
    plain.add(stats, windows, False)
    controlled.add(stats, windows, False)
    assert plain.tokens == 4 and plain.nll_sum == 56.0
    assert controlled.tokens == 3 and controlled.nll_sum == 6.0 and controlled.correct == 2


def test_repeat_line_puts_the_prefix_after_every_line_break():
    assert with_prefix("<tag:rap>", "a\nb\n\nc", "line") == "<tag:rap>a\n<tag:rap>b\n<tag:rap>\n<tag:rap>c"
    assert with_prefix("<tag:rap>", "a\nb", "song") == "<tag:rap>a\nb"
    assert with_prefix("", "a\nb", "line") == "a\nb"  # a song that dropped every field
    assert repeat_of(compose([])) == "line"
    # A run trained before `repeat` existed read its prefix once: its bundle's config has no key.
    assert repeat_of(OmegaConf.create({"conditioning": {"fields": ["tag"]}})) == "song"


def test_line_prefix_forces_the_controls_after_a_line_end_and_nowhere_else():
    import keras

    from lyricslab.sampling.generation import LinePrefix
    from lyricslab.text.tokenizers import EOS_ID

    tok = train_tokenizer(OmegaConf.create({"kind": "char", "vocab_size": 300, "min_freq": 1}), TRAIN)
    forced = LinePrefix.of(tok, "<tag:rap><decade:1990s>")
    first, second = forced.ids.tolist()
    a, nl = int(tok.encode("a")[0]), int(tok.encode("\n")[0])
    prompt = np.array([[a, a, nl, 0],  # a line just ended: the prefix's first token
                       [a, nl, first, 0],  # inside the prefix: its second
                       [nl, first, second, 0],  # the prefix is written: free again
                       [a, a, a, 0],  # mid-line: free
                       [a, a, EOS_ID, 0]], dtype=np.int32)  # a new song opens with the prefix too
    logits = np.random.default_rng(0).normal(size=(5, tok.vocab_size)).astype(np.float32)
    out = keras.ops.convert_to_numpy(forced.force(keras.ops.convert_to_tensor(logits), prompt, 3))
    assert out.argmax(axis=1)[[0, 1, 4]].tolist() == [first, second, first]
    assert (np.sort(out[0])[-2] < -1e8)  # the forced token is the only one left
    np.testing.assert_array_equal(out[[2, 3]], logits[[2, 3]])
    with pytest.raises(ValueError, match="itself ends a line"):
        LinePrefix.of(tok, "<tag:rap>\n")


def rows_for(*specs):
    return [dict(id=i, tag=tag, artist=artist, features=features, year=year, language=lang)
            for i, (tag, artist, features, year, lang) in enumerate(specs)]


def test_top_artists_by_train_songs_with_features_and_other():
    rows = rows_for(("rap", "A", '{"B"}', "1994", "en"), ("rap", "A", "{}", "1999", "en"),
                    ("pop", "C", '{"B","D"}', "2011", "en"), ("pop", "B", "{}", "2015.0", "es"),
                    ("rock", "E", "{}", "", "en"))
    plain = Conditions.fit(rows, ["tag", "decade", "artist"], top_artists=1, features_as_artists=False)
    assert plain.known["artist"] == ["A", "other"] and plain.counts["artist"] == {"other": 3, "A": 2}
    assert plain.known["decade"] == ["1990s", "2010s", "other"]  # a missing year is `other`
    assert plain.prefix(rows[0]) == "<tag:rap><decade:1990s><artist:A>"
    assert plain.prefix(rows[2]) == "<tag:pop><decade:2010s><artist:other>"
    featured = Conditions.fit(rows, ["artist"], top_artists=2, features_as_artists=True)
    assert featured.counts["artist"]["B"] == 3 and featured.known["artist"] == ["A", "B", "other"]
    assert featured.prefix(rows[0]) == "<artist:A><artist:B>"  # main artist, then known featured ones
    assert featured.prefix(rows[2]) == "<artist:other><artist:B>"
    # A value the train split never had: `other` where the model knows it, left out where it doesn't.
    unseen = {"id": 99, "tag": "jazz", "artist": "Z", "features": None, "year": "1950"}
    assert plain.prefix(unseen) == "<decade:other><artist:other>"


def test_drop_leaves_fields_out_of_some_songs_the_same_way_every_time():
    rows = rows_for(*[("rap", "A", "{}", "1994", "en")] * 400)
    cond = Conditions.fit(rows, ["tag", "decade"], 5, False)
    first = [cond.prefix(r, drop=0.25) for r in rows]
    assert first == [cond.prefix(r, drop=0.25) for r in rows]
    kept = sum(p.count("<tag:") for p in first) / len(rows)
    assert 0.65 < kept < 0.85 and all(cond.prefix(r) == "<tag:rap><decade:1990s>" for r in rows)


def test_fields_and_language_token():
    cfg = compose(["conditioning.fields=[tag,decade]"])
    assert fields_of(cfg) == ["tag", "decade"]  # data.language=en: one language, no <lang:>
    assert fields_of(compose(["conditioning.fields=[tag]", "data.language=[en,es]"])) == ["tag", "lang"]
    assert fields_of(compose(["data.language=null"])) == ["lang"]
    assert fields_of(compose(["data.language=[en,es]", "conditioning.language_token=false"])) == []
    assert fields_of(compose([])) == []  # off by default
    with pytest.raises(ConditionError, match="unknown field"):
        fields_of(compose(["conditioning.fields=[genre]"]))


def test_requests_become_control_tokens_or_one_line_errors():
    cond = Conditions(["tag", "decade", "artist"], {"tag": ["pop", "rap"], "decade": ["1990s", "2010s"],
                                                    "artist": ["Lil Compass", "other"]})
    assert cond.request_prefix({"genre": "rap", "year": "1994"}) == "<tag:rap><decade:1990s>"
    assert cond.request_prefix({"artist": "lil compass", "decade": "2010"}) == "<decade:2010s><artist:Lil Compass>"
    assert cond.request_prefix({}) == ""
    with pytest.raises(ConditionError, match=r"unknown genre 'jazz'; this model knows: pop, rap$"):
        cond.request_prefix({"genre": "jazz"})
    with pytest.raises(ConditionError, match="not lang"):
        cond.request_prefix({"lang": "es"})
    with pytest.raises(ConditionError, match="year must be a year"):
        cond.request_prefix({"year": "nineties"})
    with pytest.raises(ConditionError, match="trained without conditioning"):
        Conditions([]).request_prefix({"genre": "rap"})


def test_language_list_keeps_both_languages_and_adds_the_lang_token(tmp_path):
    from lyricslab.data import load_splits

    both = compose([f"data.cache_dir={tmp_path}", "data.language=[en,es]", "conditioning.fields=[tag]"])
    splits = load_splits(both.data, None)
    assert set(splits.frame["language"]) == {"en", "es"}
    assert splits.report["removed_by"]["data.language=[en, es]"] == 0
    spanish = load_splits(compose([f"data.cache_dir={tmp_path}", "data.language=es"]).data, None)
    assert set(spanish.frame["language"]) == {"es"} and len(spanish.frame) == 7
    conditioned = condition_splits(both, splits)
    test_langs = splits.frame[splits.frame["split"] == "test"]["language"].tolist()
    assert "es" in test_langs  # the demo corpus has Spanish songs in every split
    for text, lang in zip(conditioned.texts["test"], test_langs):
        assert text.startswith("<tag:") and f"<lang:{lang}>" in text and strip_controls(text) in splits.test
    assert conditioned.cache_path != splits.cache_path  # conditioned token streams are cached apart


# ---- one tiny conditioned model, shared by the tests below ----------------------------------------------------

def synthetic_rows() -> list[dict]:
    """Rap songs say `yo`, country songs say `la`: what follows the tag is all the tag decides."""
    rows = []
    for i in range(40):
        rap = i % 2 == 0
        word = "yo" if rap else "la"
        lyrics = "[Verse]\n" + f"{word} {word} {word}\n" * 3  # short: most windows hold a song start
        rows.append(song(i, tag="rap" if rap else "country", lyrics=lyrics, language="es" if i % 4 < 2 else "en",
                         artist=f"Band {i % 3}"))
    return rows


@pytest.fixture(scope="module")
def conditioned_run(tmp_path_factory):
    import mlflow

    from lyricslab.training.train import train

    root = tmp_path_factory.mktemp("cond")
    csv = write_csv(root / "songs.csv", synthetic_rows())
    uri = f"sqlite:///{root}/mlruns/mlflow.db"
    cfg = compose([*tiny("lstm"), "data=genius", f"data.path={csv}", "data.dedupe=false", "data.min_chars=10",
                   "data.language=[en,es]", "data.test_fraction=0.25", "conditioning.fields=[tag]",
                   "trainer.epochs=3", "trainer.eval_every_steps=40", "optimizer.learning_rate=0.01",
                   f"tracking.uri={uri}", f"tracking.artifact_root={root}/mlruns/art", f"data.cache_dir={root}/cache"])
    metrics = train(cfg)
    return mlflow.last_active_run().info.run_id, uri, metrics, cfg


def next_token_probs(bundle, text: str) -> np.ndarray:
    import keras

    from lyricslab.sampling.generation import prompt_ids

    ids = prompt_ids(bundle.tokenizer, text)[None, :]
    return np.asarray(keras.ops.softmax(bundle.model(ids, training=False)[0, -1]))


def test_conditioning_changes_the_next_token_distribution(conditioned_run):
    import mlflow

    from lyricslab.tracking.bundle import load_run

    run_id, uri, _, _ = conditioned_run
    mlflow.set_tracking_uri(uri)
    bundle = load_run(run_id)
    tok = bundle.tokenizer
    y, l = tok.encode("y")[0], tok.encode("l")[0]
    for lang in ("en", "es"):  # the prefix as training put it: before the song and after each line break
        rap = next_token_probs(bundle, with_prefix(f"<tag:rap><lang:{lang}>", "[verse]\n", "line"))
        country = next_token_probs(bundle, with_prefix(f"<tag:country><lang:{lang}>", "[verse]\n", "line"))
        assert rap[y] > country[y] + 0.5 and country[l] > rap[l] + 0.5, (rap[[y, l]], country[[y, l]])


def test_the_run_lists_what_the_model_knows_and_breaks_test_bpc_down(conditioned_run):
    import mlflow

    run_id, uri, metrics, cfg = conditioned_run
    mlflow.set_tracking_uri(uri)
    known = json.loads(Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="conditioning.json"))
                       .read_text())
    assert known["fields"] == ["tag", "lang"] and known["known"] == {"tag": ["country", "rap"], "lang": ["en", "es"]}
    # Each group's figure by brute force: its test songs (control prefixes in, lyrics' characters counted),
    # the saved model run over the scorer's rows in one call each, control tokens left unscored.
    import math

    import keras

    from lyricslab.data import load_splits
    from lyricslab.text.tokenizers import EOS_ID
    from lyricslab.tracking.bundle import load_run

    bundle = load_run(run_id)
    splits = load_splits(cfg.data, cfg.data_size.songs)
    test = splits.frame[splits.frame["split"] == "test"]
    texts = dict(zip(test.index, condition_splits(cfg, splits).texts["test"]))

    def bpc(index) -> float:
        stream = np.concatenate([[EOS_ID], bundle.tokenizer.encode_songs([texts[i] for i in index])]).astype(np.int32)
        rows = min(cfg.trainer.batch_size, math.ceil((len(stream) - 1) / cfg.trainer.seq_len))
        length = math.ceil((len(stream) - 1) / (rows * cfg.trainer.seq_len)) * cfg.trainer.seq_len
        x = np.resize(stream[:-1], rows * length).reshape(rows, length)  # past the end: filler, not scored
        y = np.resize(stream[1:], rows * length).reshape(rows, length)
        log_probs = keras.ops.convert_to_numpy(keras.ops.log_softmax(bundle.model(x), axis=-1)).astype(np.float64)
        nll = -np.take_along_axis(log_probs, y[..., None], axis=-1)[..., 0].ravel()[:len(stream) - 1]
        scored = ~np.isin(stream[1:], bundle.tokenizer.control_ids())
        return nll[scored].sum() / math.log(2) / sum(len(test.loc[i, "lyrics"]) + 1 for i in index)

    assert metrics["test_bpc"] == pytest.approx(bpc(test.index), rel=1e-4)
    for column, values in (("tag", ("rap", "country")), ("language", ("en", "es"))):
        for value in values:
            index = test.index[test[column] == value]
            assert len(index) >= 1 and metrics[f"test_songs_{column}_{value}"] == len(index)
            assert metrics[f"test_bpc_{column}_{value}"] == pytest.approx(bpc(index), rel=1e-4), (column, value)
    logged = mlflow.get_run(run_id).data.metrics
    assert "test_bpc_language_es" in logged and "test_bpc_tag_rap" in logged


def test_evaluate_rebuilds_the_prefixes_and_matches_the_test_split(conditioned_run):
    """Scoring the run's own test songs through evaluate gives its test_bpc: the bundle's tokenizer and
    config rebuild exactly the control prefixes training used."""
    import mlflow

    from lyricslab.data import load_splits
    from lyricslab.evaluate import evaluate
    from lyricslab.tracking.bundle import load_run

    run_id, uri, metrics, cfg = conditioned_run
    mlflow.set_tracking_uri(uri)
    splits = load_splits(cfg.data, cfg.data_size.songs)
    rows = splits.frame[splits.frame["split"] == "test"].to_dict("records")
    result, _ = evaluate(load_run(run_id), [r["lyrics"] for r in rows], with_samples=False, rows=rows)
    assert result["bpc"] == pytest.approx(metrics["test_bpc"], rel=1e-5)
    assert result["bpc_language_es"] == pytest.approx(metrics["test_bpc_language_es"], rel=1e-5)
    assert result["bpc_tag_rap"] == pytest.approx(metrics["test_bpc_tag_rap"], rel=1e-5)


def test_generate_takes_a_genre_and_rejects_an_unknown_one(conditioned_run, capsys):
    from lyricslab import generate

    run_id, uri, _, _ = conditioned_run
    args = [f"run_id={run_id}", f"tracking.uri={uri}", "max_tokens=30", "sampler=greedy", "lang=en"]
    assert generate.main([*args, "genre=rap"]) == 0
    rap = capsys.readouterr().out
    assert "genre=rap" in rap and "<tag:" not in rap and "yo" in rap
    assert generate.main([*args, "genre=country"]) == 0
    assert "la" in capsys.readouterr().out
    assert generate.main([*args, "genre=jazz"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: unknown genre 'jazz'; this model knows: country, rap"
    assert generate.main([*args, "artist=Band 1"]) == 2
    assert "conditioned on tag, lang, not artist" in capsys.readouterr().err


def test_generation_writes_the_prefix_after_every_line(conditioned_run):
    import mlflow

    from lyricslab.models.decoding import make_sampler
    from lyricslab.sampling.generation import LinePrefix, generate_ids, prompt_ids
    from lyricslab.tracking.bundle import load_run

    run_id, uri, _, _ = conditioned_run
    mlflow.set_tracking_uri(uri)
    bundle = load_run(run_id)
    prefix = "<tag:country><lang:en>"
    start = prompt_ids(bundle.tokenizer, with_prefix(prefix, "[verse]\n", "line"))
    rows = generate_ids(bundle.model, start, 2, 80, make_sampler("random", 1.0, seed=3), stop_at_eos=False,
                        line_prefix=LinePrefix.of(bundle.tokenizer, prefix))
    for row in rows:
        lines = bundle.tokenizer.decode(row[1:]).split("\n")  # <eos> reads as a line break too
        assert len(lines) > 4 and all(line.startswith(prefix) for line in lines[:-1]), lines


@pytest.mark.parametrize("override, message", [
    ("conditioning.fields=[genre]", "conditioning.fields: unknown field"),
    ("conditioning.fields=[decade,year]", "pick decade or year"),
    ("conditioning.top_artists=-1", "top_artists must be a whole number"),
    ("conditioning.drop=1.5", r"conditioning.drop must be a number in \[0, 1\)"),
    ("conditioning.repeat=verse", r"conditioning.repeat must be one of \['line', 'song'\]"),
    ("breakdown=[artist]", "breakdown: unknown column"),
    ("data.language=[]", "data.language must be a language code"),
])
def test_bad_conditioning_settings_fail_before_training(override, message):
    from lyricslab.training.checks import ConfigError, check_config

    with pytest.raises(ConfigError, match=message):
        check_config(compose([override]))
    check_config(compose(["conditioning.fields=[tag,decade,artist]", "data.language=[en,es]"]))  # a good one passes
