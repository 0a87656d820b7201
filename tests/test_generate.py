"""Generation: incremental decoding matches the full model, runs generate deterministically, errors are clear."""

import re

import numpy as np
import pytest
from conftest import compose, tiny
from omegaconf import OmegaConf

from lyricslab import compare, generate
from lyricslab.models import build_model
from lyricslab.models.compiled import compiled
from lyricslab.models.decoding import make_cache
from lyricslab.sampling.generation import generate as generate_text
from lyricslab.text.factory import train_tokenizer


@pytest.mark.parametrize("model", ["lstm", "gru", "simple_rnn", "transformer"])
def test_incremental_decoding_matches_full_refeed(model):
    cfg = compose([*tiny(model), "model.layers=2"])
    net = build_model(cfg, 40)
    x = np.random.default_rng(1).integers(3, 40, size=(2, 16)).astype("int32")
    full = np.asarray(net(x, training=False))
    cache = make_cache(net)
    length = 5  # prefill 5 tokens (the rest is padding, as in real use), then step one at a time
    padded = x.copy()
    padded[:, length:] = 0
    state = cache.prefill(padded, length)
    for index in range(length, x.shape[1] + 1):
        logits, _, state = cache.next(x, state, index)
        np.testing.assert_allclose(np.asarray(logits), full[:, index - 1], atol=1e-4)


def last_logits(net):
    """The full model's logits for the last position, compiled by the running backend."""
    return compiled(lambda x: net(x, training=False)[:, -1], net.variables, shapes_vary=True)


def window_refeed_greedy(net, start, n, max_tokens, window_start):
    """Greedy decoding the naive way: each step re-runs the full model on the window [window_start(p), p]."""
    forward = last_logits(net)
    ids = np.tile(start, (n, 1))
    for p in range(len(start) - 1, len(start) + max_tokens - 1):
        logits = np.asarray(forward(ids[:, int(window_start(p)):p + 1]))
        ids = np.concatenate([ids, logits.argmax(-1)[:, None].astype(np.int32)], axis=1)
    return ids


@pytest.fixture(scope="module")
def context16_transformer():
    import keras

    keras.utils.set_random_seed(0)
    return build_model(compose([*tiny("transformer"), "trainer.seq_len=16"]), 40)


def test_transformer_cache_slides_its_window_past_the_context(context16_transformer):
    """Teacher-forced: past the context, each step's logits are the full model's on the current window."""
    net, cache = context16_transformer, make_cache(context16_transformer)
    assert (cache.context, cache.stride, cache.keep) == (16, 4, 12)
    x = np.random.default_rng(2).integers(3, 40, size=(2, 50)).astype("int32")
    forward = last_logits(net)
    step = compiled(cache.next, net.variables)  # as the sampling loop runs it: one graph, the index an input
    state = cache.prefill(x, 5)
    for index in range(5, 51):
        p = index - 1
        start = int(cache.window_start(p))
        assert 0 <= p - start < 16 and (p < 16 or p - start >= cache.keep)  # holds p and >= 12 tokens before it
        logits, _, state = step(x, state, np.int32(index))
        full = np.asarray(forward(x[:, start:index]))
        np.testing.assert_allclose(np.asarray(logits), full, atol=1e-4, err_msg=f"position {p}")


@pytest.mark.parametrize("stride", [None, 1])
def test_transformer_generates_past_its_context(context16_transformer, stride):
    """max_tokens=50 from a context-16 transformer gives 50 new tokens, each a function of its window."""
    from lyricslab.models.decoding import make_sampler
    from lyricslab.sampling.generation import generate_ids

    net = context16_transformer
    cache = make_cache(net, stride)
    start = np.array([2, 5, 7, 9], dtype=np.int32)
    rows = generate_ids(net, start, 2, 50, make_sampler("greedy"), cache=cache, stop_at_eos=False)
    assert rows.shape == (2, 54)
    if stride == 1:  # the window is exactly the last `context` tokens: plain sliding-window re-feed
        def last_context(p):
            return max(0, p - 15)
        reference = window_refeed_greedy(net, start, 2, 50, last_context)
    else:
        reference = window_refeed_greedy(net, start, 2, 50, cache.window_start)
    np.testing.assert_array_equal(rows, reference)


# 2 prompts x 2 temperatures, long enough for several lines: lyric metrics need lines to count.
SAMPLES = ['samples.prompts=["[verse]\\n","[chorus]\\nOh"]', "samples.temperatures=[0.7,1.0]", "samples.max_tokens=150"]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    from lyricslab.training.train import train

    root = tmp_path_factory.mktemp("gen")
    store = [f"tracking.uri=sqlite:///{root}/mlruns/mlflow.db", f"tracking.artifact_root={root}/mlruns/art",
             f"data.cache_dir={root}/cache"]
    cfg = compose([*tiny("lstm"), "trainer.epochs=2", *SAMPLES, *store])
    metrics = train(cfg)
    import mlflow

    return mlflow.last_active_run().info.run_id, f"sqlite:///{root}/mlruns/mlflow.db", metrics, cfg


def generated_parts(output: str, prompt: str) -> list[str]:
    """What the model wrote in each song of `generate`'s output, after the echoed prompt."""
    songs = re.split(r"^=== song \d+ \(.*\) ===\n", output, flags=re.MULTILINE)[1:]
    assert songs and all(song.startswith(prompt) for song in songs), output[:300]
    return [song[len(prompt):].rstrip("\n") for song in songs]


def test_generate_from_a_run_is_deterministic_with_a_seed(trained_run, tmp_path, capsys):
    run_id, uri, _, _ = trained_run
    args = [f"run_id={run_id}", f"tracking.uri={uri}", "structure=chorus", "prompt=Oh", "max_tokens=40"]
    assert generate.main([*args, "seed=3", "n=2", "--out", str(tmp_path / "a.txt")]) == 0
    assert generate.main([*args, "seed=3", "n=2", f"out={tmp_path / 'b.txt'}"]) == 0
    prefix = [f"run_id={run_id[:8]}", *args[1:]]  # the 8 characters the leaderboard prints are enough
    assert generate.main([*prefix, "seed=4", f"out={tmp_path / 'c.txt'}"]) == 0
    assert generate.main([*prefix[1:], "run_id=zz", f"out={tmp_path / 'd.txt'}"]) == 2  # no run starts with zz
    same = generated_parts((tmp_path / "a.txt").read_text(), "[Chorus]\nOh")
    again = generated_parts((tmp_path / "b.txt").read_text(), "[Chorus]\nOh")
    other = generated_parts((tmp_path / "c.txt").read_text(), "[Chorus]\nOh")
    assert len(same) == 2 and all(len(text) >= 5 for text in same)  # the model wrote something
    assert same == again  # same seed, same songs
    assert other[0] != same[0] and same[0] != same[1]  # another seed, other songs
    assert other[0] == same[1]  # song i of a call uses seed + i
    # Greedy ignores the seed: the same song for any seed.
    assert generate.main([*args, "sampler=greedy", "temperature=0", "seed=1"]) == 0
    assert generate.main([*args, "sampler=greedy", "temperature=0", "seed=2"]) == 0
    greedy = generated_parts(capsys.readouterr().out, "[Chorus]\nOh")
    assert len(greedy) == 2 and greedy[0] == greedy[1] and greedy[0] not in (same[0], same[1])


LYRIC_WORD = re.compile(r"[a-z0-9']+")
HEADER_LINE = re.compile(r"\s*\[[^\]\n]+\]\s*")


def human_excerpt(songs: list[str], first: int, chars: int) -> str:
    """Song `first` and the ones after it, joined by newlines, cut to `chars` characters of whole words."""
    text = "\n".join(songs[first:] + songs[:first])
    head = text[:chars]
    if head[-1:].isalnum() and (len(text) <= chars or text[chars].isalnum()):
        head = head.rstrip("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789'")
    return head


def counted_by_hand(texts: list[str], train: list[str]) -> dict[str, float]:
    """Words per lyric line, lines per section, distinct-1/2 and the 8-gram copy rate, counted the plain way."""
    lines, sections, words, bigrams, grams, copied = [], 0, [], [], 0, 0
    train_grams = set()
    for song in train:
        w = LYRIC_WORD.findall(song.lower())
        train_grams.update(tuple(w[i:i + 8]) for i in range(len(w) - 7))
    for text in texts:
        open_section = False
        for line in text.splitlines():
            if not line.strip() or HEADER_LINE.fullmatch(line):
                open_section = False
            else:
                sections += not open_section
                open_section = True
                lines.append(len(LYRIC_WORD.findall(line.lower())))
        w = LYRIC_WORD.findall(text.lower())
        words += w
        bigrams += list(zip(w, w[1:]))
        eights = [tuple(w[i:i + 8]) for i in range(len(w) - 7)]
        grams += len(eights)
        copied += sum(g in train_grams for g in eights)
    return {"words_per_line": sum(lines) / len(lines), "lines_per_section": len(lines) / sections,
            "distinct_1": len(set(words)) / len(words), "distinct_2": len(set(bigrams)) / len(bigrams),
            "copy_rate": copied / grams}


def test_training_logs_lyric_metrics_against_human_text_of_the_same_count_and_length(trained_run):
    """ref_* are the metrics of 4 validation excerpts as long as the (equal-length) samples: the logged
    figures are those of some 4 of the 6 validation songs' openings, cut to the samples' length and
    counted in the test by hand, and of no 4 training or test songs."""
    from itertools import combinations

    from lyricslab.data import load_splits

    _, _, metrics, cfg = trained_run
    chars = int(metrics["lyric_metric_chars"])
    # Every sample ran the full 150 tokens (not stopped at <eos>): with characters as tokens,
    # the shortest is the prompt plus 150 characters, less structure tags (one token, 7+ characters).
    assert 100 <= chars <= len("[verse]\n") + 150 + 6 * 150
    splits = load_splits(cfg.data, cfg.data_size.songs)
    logged = {k: metrics[f"ref_{k}"] for k in ("words_per_line", "lines_per_section", "distinct_1", "distinct_2",
                                                "copy_rate")}

    def matching(songs):
        return [picks for picks in combinations(range(len(songs)), 4)
                if counted_by_hand([human_excerpt(songs, i, chars) for i in picks], splits.train)
                == pytest.approx(logged, rel=1e-9)]
    assert len(splits.val) == 6 and len(matching(splits.val)) == 1
    assert not matching(splits.test)
    assert metrics["ref_structure_validity"] == 1.0  # human songs: every header has lyrics under it
    assert 0 < metrics["distinct_1"] and metrics["words_per_line"] > 0
    # copy_rate on this corpus: 1 for text lifted from the training songs, ~0 for their words shuffled.
    from lyricslab.scoring.lyric_metrics import sample_metrics

    lifted = [splits.train[0][:400], splits.train[1][:400]]
    assert sample_metrics(lifted, splits.train, splits.val)["copy_rate"] == 1.0
    shuffled = " ".join(np.random.default_rng(0).permutation(splits.train[0].split()))
    assert sample_metrics([shuffled], splits.train, splits.val)["copy_rate"] < 0.05


@pytest.mark.parametrize("args,message", [
    (["run_id=nope"], "no MLflow run 'nope'"),
    (["temperature=0"], "use sampler=greedy"),
    ([], "exactly one of run_id"),
    (["n=x"], "n must be a whole number"),
])
def test_generate_errors_are_one_clear_line(trained_run, args, message, capsys):
    run_id, uri, _, _ = trained_run
    needs_source = args and not any(a.startswith("run_id") for a in args)
    base = [f"run_id={run_id}"] if needs_source else []
    assert generate.main([*base, *args, f"tracking.uri={uri}"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_generate_refuses_a_run_without_a_model(trained_run, capsys):
    import mlflow

    _, uri, _, _ = trained_run
    mlflow.set_tracking_uri(uri)
    with mlflow.start_run() as run:
        mlflow.log_param("x", 1)
    assert generate.main([f"run_id={run.info.run_id}", f"tracking.uri={uri}"]) == 2
    assert "has no model artifact" in capsys.readouterr().err


def test_leaderboard_rows_match_the_runs(trained_run, tmp_path, capsys):
    run_id, uri, metrics, _ = trained_run
    import mlflow

    mlflow.set_tracking_uri(uri)
    with mlflow.start_run(experiment_id=mlflow.get_run(run_id).info.experiment_id) as old:
        # A run from before best_val_bpc: only the per-epoch val_bpc series (its last value shows).
        mlflow.log_params({"model.name": "gru", "tokenizer.kind": "char"})
        for epoch, value in enumerate([9.0, 0.05, 0.1]):
            mlflow.log_metric("val_bpc", value, step=epoch)
    table = compare.leaderboard("lyricslab", top=5)
    row = table[table["run"] == run_id[:8]].iloc[0]
    assert row["model"] == "lstm" and row["tokenizer"] == "char"
    assert row["best_val_bpc"] == pytest.approx(metrics["best_val_bpc"])
    assert row["test_bpc"] == pytest.approx(metrics["test_bpc"])
    assert row["test_f1"] == pytest.approx(metrics["test_f1_macro"])
    assert row["rhyme"] == pytest.approx(metrics["rhyme_density"])
    assert table["run"].iloc[0] == old.info.run_id[:8] and table["best_val_bpc"].iloc[0] == 0.1  # lowest first
    assert row["vs_ngram"] == pytest.approx(metrics["test_bpc"] / metrics["baseline_ngram_test_bpc"])
    baseline = table[table["run"] == "baseline"]  # the n-gram is a row of its own, once per data set
    assert len(baseline) == 1 and baseline.iloc[0]["model"] == "kneser-ney 8-gram"
    assert baseline.iloc[0]["test_bpc"] == pytest.approx(metrics["baseline_ngram_test_bpc"])
    assert list(compare.leaderboard("lyricslab", top=5, sort="val_bpc")["run"]) == list(table["run"])

    assert compare.main([f"tracking.uri={uri}", f"out={tmp_path}"]) == 0
    assert "warning" not in capsys.readouterr().err
    markdown = (tmp_path / "leaderboard.md").read_text()
    assert markdown.startswith("| run | model | tokenizer | params | best_val_bpc | test_bpc | test_perplexity |")
    assert "per token" in markdown.split("|\n\n")[-1]  # the legend under the table
    assert (tmp_path / "leaderboard.csv").read_text().startswith("run,model,tokenizer,params,best_val_bpc,")
    assert compare.main([f"tracking.uri={uri}", f"out={tmp_path}", "sort=f1"]) == 0  # allowed, with a warning
    err = capsys.readouterr().err
    assert "warning: sort=f1 ranks runs by the test split (test_f1)" in err and "model selection" in err
    assert compare.main([f"tracking.uri={uri}", "sort=nope"]) == 2
    assert "sort must be one of" in capsys.readouterr().err


def test_word_tokenizer_generation_decodes_text():
    tok = train_tokenizer(OmegaConf.create({"kind": "word", "vocab_size": 100}), ["[verse]\nhello there world"])
    net = build_model(compose(tiny("gru")), tok.vocab_size)
    out = generate_text(net, tok, "[verse]\n", n=1, max_tokens=5, temperature=1.0, seed=0)
    assert out[0].startswith("[Verse]\n")


def test_row_temperatures_batch_matches_separate_calls_statistically():
    """A near-zero row temperature must act greedily while a high one stays random, in one batched call."""
    import keras

    from lyricslab.sampling.generation import generate_at_temperatures

    keras.utils.set_random_seed(0)
    tok = train_tokenizer(OmegaConf.create({"kind": "char"}), ["[verse]\nabcdefghij klmnop"])
    net = build_model(compose(tiny("lstm")), tok.vocab_size)
    # An untrained LSTM's logits are ~0.01 apart or closer, so even temperature 1e-4 leaves near-ties
    # random; scaled up, the likeliest token is clearly ahead (as in a trained model).
    reverse = net.get_layer("embedding").reverse_embeddings
    reverse.assign(reverse * 1000.0)
    cold_hot = generate_at_temperatures(net, tok, "[verse]\n", [1e-4, 1e-4, 5.0], max_tokens=30, seed=0)
    greedy = generate_text(net, tok, "[verse]\n", max_tokens=30, sampler="greedy")[0]
    assert cold_hot[0] == cold_hot[1] == greedy
    assert cold_hot[2] != greedy
    with pytest.raises(ValueError, match="sampler=greedy"):
        generate_at_temperatures(net, tok, "x", [0.0], max_tokens=3)


def test_generate_reads_tokenizer_from_the_run_root_and_reports_a_missing_one(trained_run, tmp_path, capsys):
    """Runs that keep only model.keras under model/ (tokenizer and config at the root) still generate."""
    import mlflow

    run_id, uri, _, _ = trained_run
    mlflow.set_tracking_uri(uri)
    local = mlflow.artifacts.download_artifacts(run_id=run_id, dst_path=str(tmp_path / "dl"))
    with mlflow.start_run() as old_layout:
        mlflow.log_artifact(f"{local}/model/model.keras", "model")
        mlflow.log_artifacts(f"{local}/tokenizer", "tokenizer")
        mlflow.log_artifact(f"{local}/config.yaml")
    assert generate.main([f"run_id={old_layout.info.run_id}", f"tracking.uri={uri}", "max_tokens=8"]) == 0
    with mlflow.start_run() as no_tokenizer:
        mlflow.log_artifact(f"{local}/model/model.keras", "model")
    assert generate.main([f"run_id={no_tokenizer.info.run_id}", f"tracking.uri={uri}"]) == 2
    assert "has no tokenizer/ or config.yaml" in capsys.readouterr().err


def char_tokenizer():
    return train_tokenizer(OmegaConf.create({"kind": "char"}), ["[verse]\nthe quick brown fox jumps\n[chorus]\nla la"])


def sequence_log_prob(net, rows, start_len):
    """Total log-probability the full (float32) model gives each row's generated tokens."""
    logits = np.asarray(net(rows[:, :-1], training=False), dtype=np.float64)
    log_p = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) - \
        logits.max(-1, keepdims=True)
    picked = np.take_along_axis(log_p, rows[:, 1:, None], axis=-1)[..., 0]
    return picked[:, start_len - 1:].sum(axis=1)


def test_top_k_1_and_a_tiny_top_p_are_greedy():
    import keras

    keras.utils.set_random_seed(0)
    tok = char_tokenizer()
    net = build_model(compose(tiny("transformer")), tok.vocab_size)
    greedy = generate_text(net, tok, "[verse]\n", max_tokens=20, sampler="greedy", stop_at_eos=False)
    sampled = generate_text(net, tok, "[verse]\n", max_tokens=20, temperature=1.0, seed=0, stop_at_eos=False)
    assert sampled != greedy  # so the equalities below are not trivially true
    assert generate_text(net, tok, "[verse]\n", max_tokens=20, temperature=1.0, top_k=1, seed=0,
                         stop_at_eos=False) == greedy
    assert generate_text(net, tok, "[verse]\n", max_tokens=20, temperature=1.0, top_p=1e-6, seed=0,
                         stop_at_eos=False) == greedy
    # top_k=2 only ever picks one of the two likeliest tokens, and is not always greedy.
    from lyricslab.models.decoding import make_sampler
    from lyricslab.sampling.generation import generate_ids, prompt_ids

    start = prompt_ids(tok, "[verse]\n")
    rows = generate_ids(net, start, 4, 20, make_sampler("random", 1.0, top_k=2, seed=0), stop_at_eos=False)
    logits = np.asarray(net(rows[:, :-1], training=False))[:, len(start) - 1:]
    top2 = np.argsort(logits, axis=-1)[..., -2:]
    assert (top2 == rows[:, len(start):, None]).any(-1).all()
    assert (top2[..., 0] == rows[:, len(start):]).any()  # the second-likeliest was picked at least once


def test_sampling_with_a_trusted_song_cache_continues_what_the_song_repeats():
    """Weights of 1 hand every step with an earlier match to the cache: a random, untrained network then
    keeps singing the refrain its prompt started, at any temperature and seed."""
    import keras

    from lyricslab.scoring.song_cache import LENGTH_EDGES, SongCache

    keras.utils.set_random_seed(0)
    tok = char_tokenizer()
    net = build_model(compose(tiny("transformer")), tok.vocab_size)
    trusted = SongCache(weights=[0.0, 0.0] + [1.0] * (2 * len(LENGTH_EDGES) - 2))
    prompt = "[verse]\nla la la la"
    for temperature, seed in ((1.0, 0), (0.5, 3)):
        song = generate_text(net, tok, prompt, max_tokens=9, temperature=temperature, seed=seed, stop_at_eos=False,
                             song_cache=trusted)[0]
        assert song.endswith("la la la la la la la")
    plain = generate_text(net, tok, prompt, max_tokens=9, temperature=1.0, seed=0, stop_at_eos=False)[0]
    assert not plain.endswith("la la la la la la la")


def test_beam_search_with_one_beam_is_greedy_and_with_four_beats_sampling():
    import keras

    from lyricslab.models.decoding import make_sampler
    from lyricslab.sampling.generation import generate_ids

    keras.utils.set_random_seed(0)
    net = build_model(compose(tiny("transformer")), 40)
    start = np.array([2, 5, 7, 9], dtype=np.int32)
    greedy = generate_ids(net, start, 1, 20, make_sampler("greedy"), stop_at_eos=False)
    one_beam = generate_ids(net, start, 1, 20, make_sampler("beam", num_beams=1), stop_at_eos=False)
    np.testing.assert_array_equal(one_beam, greedy)
    beam = generate_ids(net, start, 1, 20, make_sampler("beam", num_beams=4), stop_at_eos=False)
    sampled = generate_ids(net, start, 8, 20, make_sampler("random", 1.0, seed=0), stop_at_eos=False)
    beam_lp, sampled_lp = sequence_log_prob(net, beam, 4)[0], sequence_log_prob(net, sampled, 4)
    assert beam_lp > sampled_lp.max() + 1.0, (beam_lp, sampled_lp)


def eos_biased_lstm(vocab_size: int, eos_probability: float):
    """A tiny LSTM whose next token is <eos> with the given probability at every step, else uniform."""
    from lyricslab.text.tokenizers import EOS_ID

    net = build_model(compose(tiny("lstm")), vocab_size)
    projection, embedding = net.get_layer("projection"), net.get_layer("embedding")
    dim = projection.kernel.shape[1]
    projection.kernel.assign(np.zeros(projection.kernel.shape))
    projection.bias.assign(np.ones(dim))  # the output layer always sees a vector of ones
    weights = np.zeros((dim, vocab_size))
    weights[:, EOS_ID] = np.log(eos_probability * (vocab_size - 1) / (1 - eos_probability)) / dim
    embedding.reverse_embeddings.assign(weights)
    return net


def test_a_song_stops_at_end_of_song_and_shows_no_eos():
    from lyricslab.models.decoding import make_sampler
    from lyricslab.sampling.generation import generate_ids, prompt_ids
    from lyricslab.text.tokenizers import EOS_ID, PAD_ID

    tok = char_tokenizer()
    net = eos_biased_lstm(tok.vocab_size, 0.3)
    start = prompt_ids(tok, "[verse]\nla")
    rows = generate_ids(net, start, 1, 60, make_sampler("random", 1.0, seed=0))
    generated = rows[0, len(start):]
    end = int(np.flatnonzero(generated == EOS_ID)[0])
    assert 0 < end < 59 and (generated[end + 1:] == PAD_ID).all()  # the loop stopped at the first <eos>
    song = generate_text(net, tok, "[verse]\nla", max_tokens=60, temperature=1.0, seed=0)[0]
    assert song == "[Verse]\nla" + tok.decode(generated[:end])  # cut before <eos>: no end-of-song text
    assert "<eos>" not in song and not song.endswith("\n")
    # Without the stop the row runs on past <eos> for all 60 tokens.
    full = generate_ids(net, start, 1, 60, make_sampler("random", 1.0, seed=0), stop_at_eos=False)[0, len(start):]
    np.testing.assert_array_equal(full[:end + 1], generated[:end + 1])
    assert (full[end + 1:] != PAD_ID).sum() > 30


@pytest.mark.parametrize("model", ["lstm", "transformer"])
def test_bf16_models_decode_like_the_full_model(model):
    """Under mixed_bfloat16 (as trainer.precision=bf16 trains), cached greedy decoding picks the
    tokens the naive full-model re-feed picks, up to bf16 rounding; past the context too."""
    import keras

    from lyricslab.models.decoding import make_sampler
    from lyricslab.sampling.generation import generate_ids

    keras.mixed_precision.set_dtype_policy("mixed_bfloat16")
    try:
        keras.utils.set_random_seed(0)
        net = build_model(compose([*tiny(model), "trainer.seq_len=16"]), 40)
        assert net.get_layer("embedding").compute_dtype == "bfloat16"
        start = np.array([2, 5, 7, 9], dtype=np.int32)
        rows = generate_ids(net, start, 2, 30, make_sampler("greedy"), stop_at_eos=False)
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
    assert rows.shape == (2, 34)
    cache, forward = make_cache(net), last_logits(net)
    for p in range(len(start) - 1, rows.shape[1] - 1):
        window = int(cache.window_start(p)) if model == "transformer" else 0
        logits = np.asarray(forward(rows[:, window:p + 1]), dtype=np.float64)
        chosen = np.take_along_axis(logits, rows[:, p + 1:p + 2], axis=1)[:, 0]
        tolerance = 0.02 * np.abs(logits).max()  # bf16 keeps ~3 significant digits
        assert (chosen >= logits.max(axis=1) - tolerance).all(), f"position {p + 1}"


def test_evaluate_on_a_csv_reproduces_the_runs_test_split(trained_run, tmp_path, capsys):
    """The run's own test songs, as a CSV, score exactly the run's test metrics and baseline."""
    import mlflow
    import pandas as pd

    from lyricslab import evaluate
    from lyricslab.data import load_splits
    from lyricslab.data.prepare import demo_path

    run_id, uri, metrics, cfg = trained_run
    splits = load_splits(cfg.data, cfg.data_size.songs)
    test_ids = set(splits.frame.loc[splits.frame["split"] == "test", "id"].astype(str))
    raw = pd.read_csv(demo_path(), dtype=str, keep_default_na=False)
    raw[raw["id"].isin(test_ids)].to_csv(tmp_path / "held_out.csv", index=False)

    assert evaluate.main([f"run_id={run_id}", f"tracking.uri={uri}", f"csv={tmp_path / 'held_out.csv'}"]) == 0
    out = capsys.readouterr()
    assert "| held_out | value |" in out.out and "logged as eval_held_out_*" in out.err
    logged = mlflow.MlflowClient(uri).get_run(run_id).data.metrics
    assert logged["eval_held_out_songs"] == len(test_ids)
    assert logged["eval_held_out_bpc"] == pytest.approx(metrics["test_bpc"], rel=1e-4)
    assert logged["eval_held_out_accuracy"] == pytest.approx(metrics["test_accuracy"], rel=1e-4)
    assert logged["eval_held_out_baseline_ngram_bpc"] == pytest.approx(metrics["baseline_ngram_test_bpc"], rel=1e-6)
    # The run's saved song-cache weights give evaluate the run's own cached test figure.
    assert logged["eval_held_out_bpc_song_cache"] == pytest.approx(metrics["test_bpc_song_cache"], rel=1e-4)
    assert metrics["test_bpc_song_cache"] < metrics["test_bpc"]  # the demo songs repeat their choruses
    assert 0 <= logged["eval_held_out_copy_rate"] <= 1 and "eval_held_out_ref_distinct_2" in logged

    # Where those weights come from: EM on the validation split, scored anew here with the saved model;
    # a cache fitted on the test songs themselves would report a better (leaked) test figure.
    from lyricslab.scoring.scorers import full_context_scorer
    from lyricslab.scoring.song_cache import fit_and_score
    from lyricslab.text.tokenizers import EOS_ID
    from lyricslab.text.windows import with_start
    from lyricslab.tracking.bundle import load_run

    mlflow.set_tracking_uri(uri)
    bundle = load_run(run_id)
    scorer = full_context_scorer(bundle.model, bundle.cfg.trainer)
    scored = {}
    for name, songs in (("val", splits.val), ("test", splits.test)):
        stream = bundle.tokenizer.encode_songs(songs)
        scored[name] = (with_start(stream), np.exp(-scorer(stream).token_nll))
    test_chars = sum(len(song) + 1 for song in splits.test)
    on_val, bits = fit_and_score(scored, EOS_ID, bundle.song_cache.max_context, fit_on="val")
    _, leaked = fit_and_score(scored, EOS_ID, bundle.song_cache.max_context, fit_on="test")
    np.testing.assert_allclose(bundle.song_cache.weights, on_val.weights, atol=1e-5)
    assert metrics["test_bpc_song_cache"] == pytest.approx(bits["test"] / test_chars, rel=1e-4)
    assert metrics["test_bpc_song_cache"] > leaked["test"] / test_chars * 1.001  # here about 0.3% above it


@pytest.mark.parametrize("args, message", [
    (["csv=x.csv"], "pass exactly one of run_id="),
    (["run_id=abc"], "pass csv="),
    (["run_id=abc", "csv=x.csv", "samples=maybe"], "samples must be true or false"),
    (["run_id=abc", "csv=x.csv", "bogus=1"], "evaluate has no key 'bogus'"),
])
def test_evaluate_bad_arguments_are_one_line_errors(args, message, capsys):
    from lyricslab import evaluate

    assert evaluate.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err


def test_evaluate_missing_csv_is_a_one_line_error(trained_run, tmp_path, capsys):
    from lyricslab import evaluate

    run_id, uri, _, _ = trained_run
    assert evaluate.main([f"run_id={run_id}", f"tracking.uri={uri}", f"csv={tmp_path / 'nope.csv'}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: data file not found")


def test_rhyme_aware_candidates_raise_the_rhyme_density_of_a_tiny_models_songs(trained_run, tmp_path):
    """generate's default keeps the best-rhyming of 8 songs written at once: on a fixed seed its songs
    rhyme more than plain sampling's (candidates=1), and a song that loops one line never wins."""
    from lyricslab.sampling.rerank import best_song
    from lyricslab.scoring.lyric_metrics import rhyme_density

    run_id, uri, _, _ = trained_run
    args = [f"run_id={run_id}", f"tracking.uri={uri}", "max_tokens=200", "n=6", "seed=0"]
    for candidates in (1, 8):
        assert generate.main([*args, f"candidates={candidates}", f"out={tmp_path / f'{candidates}.txt'}"]) == 0
    plain = generated_parts((tmp_path / "1.txt").read_text(), "[Verse]\n")
    picked = generated_parts((tmp_path / "8.txt").read_text(), "[Verse]\n")
    assert rhyme_density(picked) > rhyme_density(plain)
    looped = "[Verse]\n" + "la la la\n" * 12
    assert best_song([looped, "[Verse]\nno rhyme here\nnone at all\n"]) == 1  # a loop never wins
    assert best_song(["[Verse]\nred sky\ngreen grass\n", "[Verse]\nthe night\nso bright\n"]) == 1
    assert generate.main([*args, "candidates=0"]) == 2
