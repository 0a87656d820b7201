"""lyricslab: train song-lyrics language models and search their hyperparameters."""

__version__ = "0.1.0"
