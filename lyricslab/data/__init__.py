"""Reading, filtering, normalising, sampling and caching song lyrics."""

from lyricslab.data.errors import DataError
from lyricslab.data.prepare import Splits, load_splits

__all__ = ["DataError", "Splits", "load_splits"]
