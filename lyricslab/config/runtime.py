"""Import TensorFlow and Keras without their start-up chatter on the user's console.

TensorFlow's C++ side writes absl and CUDA probing lines ("Could not find cuda drivers",
"failed call to cuInit", oneDNN notes) straight to file descriptor 2 at import and at device
discovery, before TF_CPP_MIN_LOG_LEVEL can act on some of them. So the import runs with fd 2
sent to a temporary file; afterwards every captured line that is not known noise is written
back, so real errors still show. LYRICSLAB_VERBOSE=1 turns the filter off.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile

NOISE = re.compile(
    r"All log messages before absl::InitializeLog|cudart_stub|cuInit|cuda_(platform|executor|dnn|fft|blas)"
    r"|oneDNN custom operations|This TensorFlow binary is optimized|rebuild TensorFlow with the appropriate"
    r"|Unable to register cu(DNN|FFT|BLAS)|computation_placer|TF-TRT Warning|port\.cc:\d+\]")

_done = False


def verbose() -> bool:
    return os.environ.get("LYRICSLAB_VERBOSE", "") not in ("", "0", "false")


def quiet_tensorflow() -> None:
    """Import tensorflow and keras once, dropping their known start-up noise from stderr."""
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
