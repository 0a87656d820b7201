class DataError(Exception):
    """Bad or unusable input data; the message says how to fix it in one line."""
