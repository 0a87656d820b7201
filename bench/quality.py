"""Quality on real lyrics at a fixed budget: the project's default real-data recipe
(`experiment=lyrics_lstm`) trained for 30 minutes of wall time on 2 cores on the dev corpus
(`../shared/data/lyrics_dev.csv`, 784 real songs, `data_size=full`), then scored on the **test
split**: songs the model never saw, split by song with the project's seeded 80/10/10 split, after
dedupe on normalised text. Bits/char is the exact code length of every test character
(full-context scoring: sliding windows for a transformer, carried state for an RNN). The
recipe's figure is the network mixed with its song cache (lyricslab/scoring/song_cache.py: what
the song already said, weights fitted on the val split). The reference is a Kneser-Ney character 8-gram
fitted on the same train split and scored on the same test songs; the target is recipe ÷ n-gram
≤ 0.85. Reported beside it, so nobody mistakes where the gain comes from: the network alone, and
the n-gram with the same song cache.

The comparisons (`python -m bench quality compare`) train each variant for the same shorter budget
(`COMPARE_MINUTES`), on the same data and splits, and differ in one setting only:
- song-level context: the transformer with a 512-character context against 64 characters,
  and the LSTM with its state carried across windows (char-rnn's truncated backprop) against
  shuffled independent windows;
- not yet: the tokenizers (char against subword and word), each one more run of the recipe.

Skipped, with a message, when the dev corpus is absent. Quick mode runs the same code on the
demo corpus with tiny models and a few seconds of budget.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from bench.common import Target, check, compose, out_dir, quick, record

ROOT = Path(__file__).resolve().parents[1]
DEV_CSV = ROOT.parent / "shared" / "data" / "lyrics_dev.csv"
RECIPE = ["experiment=lyrics_lstm"]
MINUTES = 30.0
COMPARE_MINUTES = 4.0
TARGET_RATIO = Target("<=", 0.85, "x")  # test bits/char ÷ the character 8-gram's, same test songs
# ++: ff_dim and units exist in one family each; a quick run of the other just carries the unused key
TINY = ["model.layers=1", "embedding=small", "++model.ff_dim=64", "++model.units=32", "trainer.seq_len=32",
        "trainer.batch_size=8", "trainer.eval_every_minutes=null", "trainer.eval_every_steps=5",
        "samples.max_tokens=40"]

# comparison title -> (variant label, overrides on top of the recipe); each variant differs in one setting
COMPARISONS = {
    "song-level context, transformer": [("context 512 chars", ["experiment=lyrics_transformer"]),
                                        ("context 64 chars", ["experiment=lyrics_transformer",
                                                              "trainer.seq_len=64"])],
    "song-level context, LSTM": [("state carried across windows", ["experiment=lyrics_lstm"]),
                                 ("shuffled windows, no carried state",
                                  ["experiment=lyrics_lstm", "trainer.carry_state=false"])],
    # Tokenizers (char against subword BPE and word with byte fallback) are left out for now: each is
    # another run of the recipe, and this bench already takes about 25 minutes.
}


def train_variant(overrides: list[str], minutes: float, store: Path) -> tuple[dict, str]:
    """Train one variant under `minutes` of budget; its metrics and MLflow run id."""
    from lyricslab.training.train import train

    data = ["data=demo", "data_size=small", *TINY] if quick() else [f"data.path={DEV_CSV}"]
    cfg = compose([*overrides, *data, f"trainer.budget_minutes={minutes}", "trainer.verbose=2",
                   f"tracking.uri=sqlite:///{store}/mlflow.db", f"tracking.artifact_root={store}/artifacts",
                   "tracking.experiment=bench-quality", f"data.cache_dir={out_dir()}/cache"])
    run_ids: list[str] = []
    metrics = train(cfg, on_run_start=run_ids.append)
    return metrics, run_ids[0]


def two_samples(run_id: str) -> str:
    """The run's first two logged samples (prompt, temperature and text), as written to samples.txt."""
    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        text = Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="samples.txt",
                                                        dst_path=tmp)).read_text()
    blocks = [b for b in text.split("\n\n=== ") if b.strip()]
    return "\n\n=== ".join(blocks[:2]).strip()


PARTS = ("compare", "recipe")


def data_line(minutes: float) -> str:
    data = "demo corpus, tiny models (quick mode)" if quick() else f"{DEV_CSV.name} (784 songs), data_size=full"
    return (f"{minutes:g} min of training wall time per model on this machine's {os.cpu_count()} cores; data {data}; "
            f"scored on the test split (unseen songs)")


def recipe() -> dict:
    """The default recipe at the full budget: test bits/char against the n-gram, MFU, tokens, samples."""
    store = out_dir() / "quality-mlruns"
    minutes = 0.05 if quick() else MINUTES
    metrics, run_id = train_variant(RECIPE, minutes, store)
    ngram = metrics["baseline_ngram_test_bpc"]
    ratio = metrics["test_bpc_song_cache"] / ngram
    checks = [check(f"{RECIPE[0]} with its song cache, {minutes:g} min: test bits/char ÷ character 8-gram's",
                    ratio, TARGET_RATIO)]
    figures: dict[str, object] = {
        "test bits/char, the recipe (network + song cache)": metrics["test_bpc_song_cache"],
        "test bits/char, the network alone (full context)": metrics["test_bpc"],
        "character 8-gram test bits/char (same songs)": ngram,
        "character 8-gram + the same song cache, test bits/char": metrics["baseline_ngram_test_song_cache_bpc"],
        "network alone ÷ 8-gram": metrics["test_bpc"] / ngram,
        "recipe ÷ (8-gram + song cache): what the network adds over counting": (
            metrics["test_bpc_song_cache"] / metrics["baseline_ngram_test_song_cache_bpc"]),
        "best val bits/char (restored round)": metrics["best_val_bpc"],
        "test bits/char, non-overlapping windows (the old measure)": metrics["test_bpc_windowed"],
        "MFU, % of the matmul peak (the run's logged mfu, lyricslab.training.flops.mfu)": 100 * metrics["mfu"],
        "training tokens processed": int(metrics["train_tokens"]),
        "training tokens/s": metrics["train_tokens_per_sec"],
        "rounds run / best round": f"{int(metrics['rounds_run'])} / {int(metrics['best_round'])}",
        "budget used (min)": metrics["budget_used_minutes"],
        "parameters": int(metrics["params"]),
    }
    lyric = ("rhyme_density", "distinct_1", "distinct_2", "repetition", "words_per_line", "lines_per_section",
             "structure_validity", "copy_rate")
    figures.update({f"lyric metric {k}: samples / human (same length and count)": f"{metrics[k]:.3g} / "
                    f"{metrics.get('ref_' + k, float('nan')):.3g}" for k in lyric if k in metrics})
    texts = {f"Two samples ({RECIPE[0]}, {minutes:g} min)": two_samples(run_id)}
    return record("quality", "Quality on real lyrics", data_line(minutes), checks, figures, texts)


def compare() -> dict:
    """Song-level context: each variant trained for the same shorter budget, differing from its
    neighbour in one setting only (see COMPARISONS in bench/quality.py)."""
    store = out_dir() / "quality-mlruns"
    minutes = 0.02 if quick() else COMPARE_MINUTES
    every = [f"trainer.eval_every_minutes={minutes:g}"]  # one validation, at the end: rounds cost budget
    figures: dict[str, object] = {}
    done: dict[tuple[str, ...], dict] = {}
    for title, variants in COMPARISONS.items():
        for label, overrides in variants:
            key = tuple(overrides)
            if key not in done:
                print(f"\n[quality] {title}: {label} ({minutes:g} min)", flush=True)
                done[key] = train_variant([*overrides, *([] if quick() else every)], minutes, store)[0]
            m = done[key]
            figures[f"{title}: {label}, test bits/char"] = m["test_bpc"]
            figures[f"{title}: {label}, ÷ 8-gram"] = m["test_bpc"] / m["baseline_ngram_test_bpc"]
            if "test_bpc_song_cache" in m:
                figures[f"{title}: {label}, with the song cache, test bits/char"] = m["test_bpc_song_cache"]
            figures[f"{title}: {label}, training tokens"] = int(m["train_tokens"])
            # Recorded after every variant, so an interrupted run keeps what it measured.
            entry = record("quality.compare", "Quality comparisons at one budget", data_line(minutes), [], figures)
    return entry


def run(parts: tuple[str, ...] = PARTS) -> None:
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        raise SystemExit(f"error: unknown quality benchmark {unknown[0]!r}; choose from {', '.join(PARTS)}")
    if not quick() and not DEV_CSV.exists():
        print(f"quality: skipped, the dev corpus {DEV_CSV} is absent")
        return
    for part in parts:
        {"compare": compare, "recipe": recipe}[part]()


if __name__ == "__main__":
    import sys

    run(tuple(a for a in sys.argv[1:] if a != "--quick") or PARTS)
