"""Quality on real lyrics at a fixed budget, on two corpora: the contemporary dev corpus
(`../shared/data/lyrics_dev.csv`, 784 songs) and the 2.9x larger Billboard one (`billboard_dev.csv`,
2,863 songs, 1950-2015), each with `data_size=full`. On each, the LSTM recipe
(`experiment=lyrics_lstm`) and the transformer recipe (`experiment=lyrics_transformer`) train for
30 minutes of wall time on this machine's cores and are scored on the **test split**: songs the
model never saw, split by song with the project's seeded 80/10/10 split, after dedupe on
normalised text. Bits/char is the exact code length of every test character (full-context
scoring). The reference is a Kneser-Ney character 8-gram fitted on the same train split and scored
on the same test songs, alone and with the same song cache (what the song already said, weights
fitted on val), so every ratio compares like with like:
- the recipe's best figure ÷ (8-gram + the same cache) ≤ 0.90; the network alone ÷ the 8-gram ≤ 0.92;
- the transformer recipe's network ÷ the 8-gram ≤ 1;
- the recipe's training tokens/s ≥ 1.5x the reference recipe's (REFERENCE: the LSTM recipe on
  TensorFlow, as it was when these targets were set), measured side by side in child processes,
  and its MFU ≥ 45%;
- its samples, written as `generate` writes them, against as many human excerpts of the same
  length from held-out songs: rhyme density at least the human one, repeated lines within ±30%
  of the human share, at most 2% of word 8-grams copied from the training songs, sections at least
  as well formed, and no character outside the training text's common set.

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
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.common import Target, check, compose, out_dir, quick, record

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
DEV_CSV = DATA / "lyrics_dev.csv"
# The corpora each target is met on: the contemporary dev corpus and the 2.9x larger Billboard one.
CORPORA = {"lyrics_dev": DEV_CSV, "billboard_dev": DATA / "billboard_dev.csv"}
RECIPE = ["experiment=lyrics_lstm"]
TRANSFORMER = ["experiment=lyrics_transformer"]
# The speed reference: the LSTM recipe as it was when the quality targets were set (TensorFlow).
REFERENCE = ["experiment=lyrics_lstm", "backend=tensorflow"]
MINUTES = 30.0
COMPARE_MINUTES = 4.0
# Each a ratio measured in one run on one machine (see the module docstring).
TARGET_LIKE_FOR_LIKE = Target("<=", 0.90, "x")  # recipe (network + cache + mixtures) ÷ (8-gram + the same cache)
TARGET_NETWORK = Target("<=", 0.92, "x")  # the network alone ÷ the 8-gram alone
TARGET_TRANSFORMER = Target("<=", 1.0, "x")  # the transformer recipe's network ÷ the 8-gram alone
TARGET_SPEED = Target(">=", 1.5, "x")  # the recipe's training tokens/s ÷ REFERENCE's, side by side
TARGET_MFU = Target(">=", 0.45, "%")
# Samples against human excerpts of the same count and length, as differences (a human figure can be 0):
TARGET_RHYME = Target(">=", 0.0, "%")  # rhyme density, samples − human
TARGET_REPEATS = Target("<=", 0.0, "%")  # |repeated lines, samples − human| − 30% of the human share
TARGET_COPY = Target("<=", 0.02, "%")  # samples' word 8-grams found in the training songs
TARGET_STRUCTURE = Target(">=", 0.0, "%")  # well-formed sections, samples − human
TARGET_CHARSET = Target("<=", 0, "")  # sample characters outside the training text's common set
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


def train_variant(overrides: list[str], minutes: float, store: Path, csv: Path = DEV_CSV) -> tuple[dict, str]:
    """Train one variant under `minutes` of budget on `csv`, through `python -m lyricslab.run` in a child
    process (Keras picks its backend once per process, and each recipe names its own); its logged
    metrics and MLflow run id."""
    import mlflow

    data = ["data=demo", "data_size=small", *TINY] if quick() else [f"data.path={csv}"]
    uri = f"sqlite:///{store}/mlflow.db"
    args = [*overrides, *data, f"trainer.budget_minutes={minutes}", "trainer.verbose=2", f"tracking.uri={uri}",
            f"tracking.artifact_root={store}/artifacts", "tracking.experiment=bench-quality",
            f"data.cache_dir={out_dir()}/cache"]
    compose(args)  # checks the overrides here, and stores them with the result
    done = subprocess.run([sys.executable, "-m", "lyricslab.run", *args], cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"python -m lyricslab.run {' '.join(overrides)} failed (exit {done.returncode})")
    mlflow.set_tracking_uri(uri)  # two_samples and outside_charset read the run's artifacts
    run = mlflow.search_runs(experiment_names=["bench-quality"], order_by=["attributes.start_time DESC"],
                             max_results=1, output_format="list")[0]
    return dict(run.data.metrics), run.info.run_id


def two_samples(run_id: str) -> str:
    """The run's first two logged samples (prompt, temperature and text), as written to samples.txt."""
    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        text = Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="samples.txt",
                                                        dst_path=tmp)).read_text()
    blocks = [b for b in text.split("\n\n=== ") if b.strip()]
    return "\n\n=== ".join(blocks[:2]).strip()


PARTS = ("compare", "recipe")


def data_line(minutes: float, corpora: dict[str, Path] | None = None) -> str:
    names = ", ".join(csv.name for csv in (corpora or {"lyrics_dev": DEV_CSV}).values())
    data = "demo corpus, tiny models (quick mode)" if quick() else f"{names}, data_size=full"
    return (f"{minutes:g} min of training wall time per model on this machine's {os.cpu_count()} cores; data {data}; "
            f"scored on the test split (unseen songs)")


def sample_checks(label: str, metrics: dict, run_id: str) -> list[dict]:
    """The sample targets: the recipe's samples (written as `generate` writes them) against human
    excerpts of the same count and length from held-out songs (lyricslab.scoring.lyric_metrics)."""
    def minus_human(key: str) -> float | None:
        return metrics[key] - metrics[f"ref_{key}"] if key in metrics and f"ref_{key}" in metrics else None

    repeats = minus_human("repeated_lines")
    return [check(f"{label}: samples' rhyme density − human's", minus_human("rhyme_density"), TARGET_RHYME),
            check(f"{label}: |samples' repeated lines − human's| − 30% of human's",
                  None if repeats is None else abs(repeats) - 0.3 * metrics["ref_repeated_lines"], TARGET_REPEATS),
            check(f"{label}: samples' word 8-grams copied from training songs", metrics.get("copy_rate"),
                  TARGET_COPY),
            check(f"{label}: samples' well-formed sections − human's", minus_human("structure_validity"),
                  TARGET_STRUCTURE),
            check(f"{label}: sample characters outside the training text's common set", outside_charset(run_id),
                  TARGET_CHARSET)]


def outside_charset(run_id: str) -> float | None:
    """Characters of the run's samples.txt (headers and the separator lines left out) outside its charset."""
    import json

    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        try:
            folder = Path(mlflow.artifacts.download_artifacts(run_id=run_id, dst_path=tmp))
        except Exception:  # noqa: BLE001  (a run without artifacts: no figure, the check shows n/a)
            return None
        charset = folder / "model" / "charset.json"
        if not charset.exists():
            return None
        chars = set(json.loads(charset.read_text(encoding="utf-8"))["chars"]) | {"\n"}
        lines = (folder / "samples.txt").read_text(encoding="utf-8").splitlines()
    text = "".join(line for line in lines if not line.startswith("=== ") and not line.startswith("["))
    return float(sum(ch not in chars for ch in text))


def speed() -> tuple[list[dict], dict[str, object]]:
    """The recipe's training tokens/s against REFERENCE's, each in a child process on its own backend,
    alternating (bench/backends.py measures the same way); and the recipe's MFU."""
    from bench.backends import child

    backend_of = {name: str(compose(overrides).backend) for name, overrides in (("recipe", RECIPE),
                                                                               ("reference", REFERENCE))}
    seen: dict[str, list[dict]] = {"recipe": [], "reference": []}
    for i in range(1 if quick() else 2):
        for name in (("recipe", "reference") if i % 2 == 0 else ("reference", "recipe")):
            overrides = RECIPE if name == "recipe" else REFERENCE
            seen[name].append(child("lstm", backend_of[name], list(overrides)))
    best = {name: max(runs, key=lambda r: r["tokens_per_s"]) for name, runs in seen.items()}
    peak = max(r["peak"] for runs in seen.values() for r in runs)
    mfu = best["recipe"]["flops_per_token"] * best["recipe"]["tokens_per_s"] / peak
    checks = [check("training tokens/s, the recipe ÷ the reference (side by side)",
                    best["recipe"]["tokens_per_s"] / best["reference"]["tokens_per_s"], TARGET_SPEED),
              check("MFU of the recipe's training steps", mfu, TARGET_MFU)]
    figures = {f"training tokens/s, {name} ({' '.join(RECIPE if name == 'recipe' else REFERENCE)}, "
               f"{backend_of[name]})": best[name]["tokens_per_s"] for name in best}
    return checks, figures


def recipe() -> dict:
    """The recipes at the full budget on each corpus: the quality targets (like for like, the network
    alone, the transformer recipe), the speed targets, and the sample targets; two samples per corpus."""
    store = out_dir() / "quality-mlruns"
    minutes = 0.05 if quick() else MINUTES
    corpora = {"demo": DEV_CSV} if quick() else {name: csv for name, csv in CORPORA.items() if csv.exists()}
    checks, figures, texts = [], {}, {}
    for name, csv in corpora.items():
        metrics, run_id = train_variant(RECIPE, minutes, store, csv)
        ngram, cached = metrics["baseline_ngram_test_bpc"], metrics["baseline_ngram_test_song_cache_bpc"]
        best = min(metrics[k] for k in ("test_bpc", "test_bpc_song_cache", "test_bpc_mixture") if k in metrics)
        checks.append(check(f"{name}: the recipe's best ÷ (8-gram + the same song cache), test split", best / cached,
                            TARGET_LIKE_FOR_LIKE))
        checks.append(check(f"{name}: the network alone ÷ the 8-gram alone, test split", metrics["test_bpc"] / ngram,
                            TARGET_NETWORK))
        figures.update({
            f"{name}: test bits/char, the recipe's best (network, cache and mixtures)": best,
            f"{name}: test bits/char, the network alone (full context)": metrics["test_bpc"],
            f"{name}: test bits/char, network + song cache": metrics["test_bpc_song_cache"],
            f"{name}: test bits/char, network + 8-gram + song cache (weights fitted on val)":
                metrics.get("test_bpc_mixture", float("nan")),
            f"{name}: test bits/char, character 8-gram": ngram,
            f"{name}: test bits/char, character 8-gram + the same song cache": cached,
            f"{name}: training tokens/s (the run's own)": metrics["train_tokens_per_sec"],
            f"{name}: training tokens processed": int(metrics["train_tokens"]),
            f"{name}: MFU, % of the matmul peak (the run's logged mfu)": 100 * metrics["mfu"],
        })
        lyric = ("rhyme_density", "repeated_lines", "copy_rate", "structure_validity", "distinct_1", "distinct_2",
                 "repetition", "words_per_line", "lines_per_section")
        figures.update({f"{name}: lyric metric {k}, samples / human (same length and count)":
                        f"{metrics[k]:.3g} / {metrics.get('ref_' + k, float('nan')):.3g}" for k in lyric if k in metrics})
        checks += sample_checks(name, metrics, run_id)
        texts[f"Two samples ({' '.join(RECIPE)}, {name}, {minutes:g} min)"] = two_samples(run_id)
        transformer, _ = train_variant(TRANSFORMER, minutes, store, csv)
        checks.append(check(f"{name}: the transformer recipe's network ÷ the 8-gram alone, test split",
                            transformer["test_bpc"] / transformer["baseline_ngram_test_bpc"], TARGET_TRANSFORMER))
        figures[f"{name}: test bits/char, {' '.join(TRANSFORMER)} network alone"] = transformer["test_bpc"]
        figures[f"{name}: {' '.join(TRANSFORMER)} training tokens processed"] = int(transformer["train_tokens"])
    speed_checks, speed_figures = speed()
    checks += speed_checks
    figures.update(speed_figures)
    return record("quality", "Quality on real lyrics", data_line(minutes, corpora), checks, figures, texts)


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
