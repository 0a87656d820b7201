"""Scoring: exact full-context bits/char, the n-gram baseline, the song cache, lyric metrics, per-tag breakdowns."""
