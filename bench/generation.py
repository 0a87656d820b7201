"""Generation speed: incremental decoding (state / KV cache) vs. naive re-feeding of the whole
window at every step (the keras.io approach), for one 400-token song, on the default LSTM and a
transformer with a 512-token context. Both run to 400 tokens (no early <eos>). Target >= 10x."""

from __future__ import annotations

from bench.common import Target, check, interleaved, quick, record, timed

TARGET_SPEEDUP = Target(">=", 10, "x")


def run() -> dict:
    from omegaconf import OmegaConf

    from bench.throughput import compose
    from lyricslab.decoding import make_cache, make_sampler
    from lyricslab.generation import generate_ids, generate_naive, prompt_ids
    from lyricslab.models import build_model
    from lyricslab.tokenizers import train_tokenizer

    tok = train_tokenizer(OmegaConf.create({"kind": "char"}), ["[verse]\nthe quick brown fox\n[chorus]\nla la"])
    tokens = 40 if quick() else 400
    checks, figures = [], {}
    for name, extra in (("lstm", []), ("transformer", ["trainer.seq_len=512"])):
        cfg = compose([f"model={name}", *extra])
        model = build_model(cfg, tok.vocab_size)
        cache = make_cache(model)
        sampler = make_sampler("random", 1.0, seed=0)
        start = prompt_ids(tok, "[verse]\n")
        context = cfg.model.context if name == "transformer" else None

        def incremental():
            return timed(lambda: generate_ids(model, start, 1, tokens, sampler, cache=cache, stop_at_eos=False))

        def naive():
            return timed(lambda: generate_naive(model, tok, "[verse]\n", [1.0], tokens, context=context,
                                                stop_at_eos=False))

        incremental(), naive()  # warm up
        t_inc, t_naive = interleaved(incremental, naive, rounds=3)
        figures[f"{name}: tokens/s incremental"] = tokens / t_inc
        figures[f"{name}: tokens/s naive re-feed"] = tokens / t_naive
        checks.append(check(f"{name}: speed-up", t_naive / t_inc, TARGET_SPEEDUP))
    return record("generation", "Generation speed", f"one {tokens}-token song", checks, figures)


if __name__ == "__main__":
    run()
