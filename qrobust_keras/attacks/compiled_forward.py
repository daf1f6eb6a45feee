"""The compiled inference forward pass the attacks share, with XLA for QKeras models once it pays.

One function per model scores every batch of every attack (``gradients.forward_fn`` caches it on the model). For a
deterministic QKeras model it is a :class:`BucketedXLA`: batches padded to a few sizes, each size compiled by XLA
only after it has spent as long in the plain graph as a compile costs, and XLA dropped if it computes other scores.

Example:

>>> import numpy as np
>>> from qrobust_keras._keras import keras
>>> from qrobust_keras.attacks.compiled_forward import BucketedXLA, compiled_inference
>>> forward = compiled_inference(keras.Sequential([keras.layers.Dense(3, input_shape=(4,))]))
>>> forward(np.zeros((5, 4), np.float32)).shape
TensorShape([5, 3])
>>> [BucketedXLA.bucket(n) for n in (3, 20, 100, 300)]
[8, 32, 128, 512]
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable

import numpy as np

from qrobust_keras._keras import keras, tf
from qrobust_keras.models.heads import has_stochastic_quantizers, leaf_layers

__all__ = ["plain_inference", "compiled_inference", "xla_forward_enabled", "BucketedXLA", "XLA_COMPILE_GUESS_S"]


def _input_spec(net: keras.Model) -> tf.TensorSpec | None:
    shape = net.input_shape
    if isinstance(shape, tuple) and all(d is None or isinstance(d, int) for d in shape):
        return tf.TensorSpec((None,) + tuple(shape[1:]), tf.float32)
    return None


def plain_inference(net: keras.Model) -> Callable:
    """The inference-mode forward pass of ``net`` as one ``tf.function`` for every batch size (not XLA)."""
    # A single-input model gets the signature (None, *input shape): one trace for every batch size. Without it,
    # reduce_retracing traces twice (the first batch's exact shape, then a relaxed one), seconds for a quantized net.
    spec = _input_spec(net)
    if spec is None:
        return tf.function(lambda t: net(t, training=False), reduce_retracing=True)
    return tf.function(lambda t: net(t, training=False), input_signature=[spec])


def compiled_inference(net: keras.Model, plain: Callable | None = None) -> Callable:
    """The inference-mode forward pass of ``net`` as one compiled function for every batch size: ``plain`` (by
    default :func:`plain_inference`), or for deterministic QKeras models (:func:`xla_forward_enabled`) a
    :class:`BucketedXLA` over it."""
    plain = plain_inference(net) if plain is None else plain
    spec = _input_spec(net)
    if spec is not None and xla_forward_enabled(net):
        return BucketedXLA(tf.function(lambda t: net(t, training=False), input_signature=[spec], jit_compile=True),
                           plain)
    return plain


def xla_forward_enabled(model: keras.Model) -> bool:
    """Whether the inference forward pass of ``model`` is compiled by XLA (see :class:`BucketedXLA`).

    Yes for deterministic QKeras models: XLA fuses a quantizer's chain of elementwise ops (scale, round, clip) into
    the convolution around it, which made the int4 ResNet-8's forward pass 2.1-2.3x faster on 2 CPU cores (batches of
    16 to 256, logits within 3e-6 of the unfused graph). No for float models (0.76-0.96x: Keras' oneDNN kernels are
    already fused) and for models with stochastic quantizers (their random streams would change). The environment
    variable ``QROBUST_XLA_FORWARD=0`` turns it off, ``=1`` forces it on.
    """
    setting = os.environ.get("QROBUST_XLA_FORWARD", "auto").strip().lower()
    if setting in ("0", "1"):
        return setting == "1"
    if setting != "auto":
        raise ValueError(f"QROBUST_XLA_FORWARD must be 0, 1 or auto; got {setting!r}")
    quantized = any(type(layer).__module__.startswith("qkeras") for layer in leaf_layers(model))
    return quantized and not has_stochastic_quantizers(model)


# Seconds an XLA compile of one batch size is expected to cost before one has been measured (about 1 s for a QKeras
# ResNet-8 on 2 CPU cores); see BucketedXLA.
XLA_COMPILE_GUESS_S = 1.0


class BucketedXLA:
    """An XLA-compiled forward pass whose batches are zero-padded to a few sizes (8, 16, 32, then multiples of 32 up
    to 256, then of 256): XLA compiles once per input shape, and the attacks call the forward pass with every batch
    size up to their own (Square's pool shrinks sample by sample). Rows are independent in inference mode, so the
    padding rows change nothing; they are cut off the output.

    XLA is compiled for a batch size only once it pays (ski rental, as a tiering JIT does): each size runs through
    the plain compiled graph until the time spent there (its first call, which traces the graph, not counted)
    reaches what a compile costs (``compile_after_s``, at first
    :data:`XLA_COMPILE_GUESS_S`, then the compile time last measured; 0 compiles every size on its first use, as
    before this tiering, which ``bench/first_call.py`` compares against). A compile costs about 1 s and saves about half
    of a plain call, so an attack that scores each batch once (PGD: 1 of its 11 passes) no longer pays seconds of
    compiling on its first call, and one that calls the forward pass thousands of times (Square) still gets XLA
    after about 1 s. Either way the total is at most about twice that of the better choice made in hindsight.

    The first XLA batch is also run through the plain graph, and XLA is kept only if the two agree (same argmax,
    logits within 1e-4 + 1e-5 relative): a quantizer whose threshold comes from a reduction over the kernel (ternary)
    can round a weight the other way under XLA's different summation order, which would attack a different network
    (measured on the stochastic-ternary ResNet-8: logits 0.055 apart). If XLA cannot compile the model or disagrees,
    the plain compiled function is used from then on."""

    def __init__(self, xla_fn: Callable, plain_fn: Callable, compile_after_s: float | None = None):
        self._xla, self._plain = xla_fn, plain_fn
        self._checked = False
        self._compile_after_s = XLA_COMPILE_GUESS_S if compile_after_s is None else float(compile_after_s)
        self._plain_s: dict[int, float] = {}  # seconds spent in the plain graph, per bucket not yet compiled
        self._plain_traced = False  # the first plain call traces the graph: a cost XLA would not save
        self._compiled: set[int] = set()

    @staticmethod
    def bucket(n: int) -> int:
        if n <= 32:
            return max(8, 1 << max(n - 1, 0).bit_length())
        step = 32 if n <= 256 else 256
        return -(-n // step) * step

    def __call__(self, t: Any) -> tf.Tensor:
        t = tf.convert_to_tensor(t, tf.float32)
        if self._xla is None:
            return self._plain(t)
        n = int(t.shape[0])
        size = self.bucket(n)
        spent = self._plain_s.get(size, 0.0)
        if size not in self._compiled and spent < self._compile_after_s:
            start = time.perf_counter()
            out = self._plain(t)
            tf.nest.map_structure(lambda o: o.numpy(), out)  # wait for the result: the time is what counts
            if self._plain_traced:
                self._plain_s[size] = spent + time.perf_counter() - start
            self._plain_traced = True
            return out
        padded = t if size == n else tf.concat([t, tf.zeros((size - n,) + tuple(t.shape[1:]), t.dtype)], axis=0)
        start = time.perf_counter()
        try:
            out = self._xla(padded)
        except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError):
            self._xla = None  # an op XLA cannot compile: fall back for good
            return self._plain(t)
        if size not in self._compiled:
            self._compiled.add(size)
            if self._compile_after_s > 0:  # 0 asks for every size compiled at once: keep that choice
                self._compile_after_s = time.perf_counter() - start
        out = out if size == n else tf.nest.map_structure(lambda o: o[:n], out)
        if not self._checked:
            self._checked = True
            plain = self._plain(t)
            if not all(_same_scores(a, b) for a, b in zip(tf.nest.flatten(out), tf.nest.flatten(plain))):
                self._xla = None
                return plain
        return out

    @property
    def uses_xla(self) -> bool:
        """Whether XLA is still allowed (not refused by the compiler or by the check); it runs a batch size only
        once that size has been used long enough."""
        return self._xla is not None


def _same_scores(a: tf.Tensor, b: tf.Tensor) -> bool:
    a, b = a.numpy(), b.numpy()
    if a.shape != b.shape or not np.allclose(a, b, rtol=1e-5, atol=1e-4):
        return False
    return a.ndim < 2 or bool(np.array_equal(a.argmax(-1), b.argmax(-1)))
