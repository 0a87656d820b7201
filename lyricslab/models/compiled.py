"""Functions compiled by whichever backend Keras runs on, and numpy calls from inside them.

Keras compiles `fit`, `predict` and `evaluate` itself, but scoring with carried state and the
sampling loop call layers directly, so they need the backend's own compiler: `tf.function` on
TensorFlow, `jax.jit` on JAX. Keras has no public backend-neutral wrapper for that, hence this
module. On JAX a jitted function must be pure, so the Keras variables it reads are passed in as
arguments through a `keras.StatelessScope` (as Keras' own JAX trainer does): the compiled code
always sees the variables' current values, and the `updated` ones (a sampler's seed) are
written back after each call.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import keras
import numpy as np


def backend() -> str:
    return keras.backend.backend()


def compiled(fn: Callable, variables: Sequence[Any] = (), updated: Sequence[Any] = (),
             shapes_vary: bool = False) -> Callable:
    """`fn` compiled for the running backend. `variables`: every Keras variable `fn` reads (JAX only;
    TensorFlow tracks them itself); `updated`: those of them that `fn` assigns. `shapes_vary`: called
    with a new input shape nearly every time (a window that grows by a token per call): TensorFlow
    then traces a shape-generic graph, while jax.jit, which compiles once per shape, is left out."""
    if backend() == "tensorflow":
        import tensorflow as tf

        return tf.function(fn, reduce_retracing=True)
    if backend() != "jax" or shapes_vary:  # eager: correct, and faster than a compile per call
        return fn
    import jax

    updated = list(updated)
    known = {id(v) for v in variables}
    tracked = [*variables, *(v for v in updated if id(v) not in known)]

    def pure(values, args):
        with keras.StatelessScope(state_mapping=list(zip(tracked, values))) as scope:
            out = fn(*args)
        return out, [scope.get_current_value(v) for v in updated]

    jitted = jax.jit(pure)

    def call(*args):
        out, new = jitted([v.value for v in tracked], args)
        for variable, value in zip(updated, new):
            variable.assign(value)
        return out

    return call


def host_call(fn: Callable[..., np.ndarray], like: Any, *args: Any) -> Any:
    """`fn(*numpy args)` called from inside compiled code; its result has the shape and dtype of `like`.

    For work that has no tensor form (the song cache scans each row's song as Python lists)."""
    if backend() == "tensorflow":
        import tensorflow as tf

        out = tf.py_function(lambda *a: fn(*(x.numpy() for x in a)), list(args), like.dtype)
        return tf.ensure_shape(out, like.shape)
    if backend() == "jax":
        import jax

        shape = jax.ShapeDtypeStruct(like.shape, like.dtype)
        return jax.pure_callback(lambda *a: fn(*(np.asarray(x) for x in a)), shape, *args)
    return keras.ops.convert_to_tensor(fn(*(keras.ops.convert_to_numpy(x) for x in args)))
