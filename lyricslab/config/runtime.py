"""Start Keras on the chosen backend, without TensorFlow's start-up chatter on the user's console.

Keras reads its backend once, at import (KERAS_BACKEND), so the choice (`backend=` in any
command's config, defaulting to KERAS_BACKEND, then tensorflow) is made here, before anything
imports keras, and a backend that is not installed is a one-line ConfigError.

TensorFlow's C++ side writes absl and CUDA probing lines ("Could not find cuda drivers",
"failed call to cuInit", oneDNN notes) straight to file descriptor 2 at import and at device
discovery, before TF_CPP_MIN_LOG_LEVEL can act on some of them. So the import runs with fd 2
sent to a temporary file; afterwards every captured line that is not known noise is written
back, so real errors still show. LYRICSLAB_VERBOSE=1 turns the filter off.
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
import tempfile

from lyricslab.config.errors import ConfigError

# The backends lyricslab runs on, and the module each needs. torch is left out: it is untested here.
BACKENDS = {"tensorflow": "tensorflow", "jax": "jax"}
INSTALL_HINT = {"tensorflow": "pip install tensorflow", "jax": "pip install 'lyricslab[jax]' (on a GPU: pip install 'jax[cuda12]')"}

NOISE = re.compile(
    r"All log messages before absl::InitializeLog|cudart_stub|cuInit|cuda_(platform|executor|dnn|fft|blas)"
    r"|oneDNN custom operations|This TensorFlow binary is optimized|rebuild TensorFlow with the appropriate"
    r"|Unable to register cu(DNN|FFT|BLAS)|computation_placer|TF-TRT Warning|port\.cc:\d+\]")

_done = False


def verbose() -> bool:
    return os.environ.get("LYRICSLAB_VERBOSE", "") not in ("", "0", "false")


def choose_backend(name: str | None = None) -> str:
    """The backend Keras will run on: `name`, else KERAS_BACKEND, else tensorflow; set in KERAS_BACKEND.

    Raises ConfigError for an unknown or missing backend, or when Keras already runs on another one
    in this process (the backend cannot change after import)."""
    chosen = str(name or os.environ.get("KERAS_BACKEND") or "tensorflow").strip().lower()
    if chosen not in BACKENDS:
        raise ConfigError(f"backend must be one of {', '.join(BACKENDS)}, not {chosen!r}")
    if importlib.util.find_spec(BACKENDS[chosen]) is None:
        raise ConfigError(f"backend={chosen} is not installed here: {INSTALL_HINT[chosen]}, or pick "
                          f"backend={'jax' if chosen == 'tensorflow' else 'tensorflow'}")
    keras = sys.modules.get("keras")
    running = keras.backend.backend() if keras is not None and hasattr(keras, "backend") else None
    if running is not None and running != chosen:
        raise ConfigError(f"Keras already runs on {running} in this process; start a new one with backend={chosen}")
    os.environ["KERAS_BACKEND"] = chosen
    return chosen


def start_keras(backend: str | None = None) -> str:
    """Choose the backend (see choose_backend), then import keras once, dropping TensorFlow's known
    start-up noise from stderr. Returns the backend's name."""
    chosen = choose_backend(backend)
    quiet_tensorflow()
    return chosen


def quiet_tensorflow() -> None:
    """Import tensorflow (when installed: keras_hub's tokenizers import it on any backend) and keras
    once, dropping their known start-up noise from stderr."""
    global _done
    if _done:
        return
    _done = True
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if verbose():
        import keras  # noqa: F401
        return
    try:
        fd = sys.stderr.fileno()
        saved = os.dup(fd)
    except (AttributeError, OSError, ValueError):  # no real stderr (some notebooks): nothing to protect
        import keras  # noqa: F401
        return
    captured = tempfile.TemporaryFile()
    sys.stderr.flush()
    os.dup2(captured.fileno(), fd)
    try:
        if importlib.util.find_spec("tensorflow") is not None:
            import tensorflow as tf

            tf.config.list_physical_devices()  # device discovery prints the CUDA lines now, not mid-training
        import keras  # noqa: F401
    finally:
        sys.stderr.flush()
        os.dup2(saved, fd)
        os.close(saved)
        captured.seek(0)
        kept = [line for line in captured.read().decode("utf-8", "replace").splitlines()
                if line.strip() and not NOISE.search(line)]
        captured.close()
        if kept:
            print("\n".join(kept), file=sys.stderr)
