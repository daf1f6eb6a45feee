"""Carlini-Wagner L2 attack: our own implementation (cleverhans 4.0's fails, issue 1205), compiled per batch.

The binary search over the trade-off constant c and the Adam iterations in tanh space all run inside one cached
``tf.function`` per batch.

Example:

>>> import numpy as np
>>> from qrobust_keras._keras import keras
>>> from qrobust_keras.attacks import cw_l2
>>> model = keras.Sequential([keras.layers.Flatten(input_shape=(4, 4, 1)), keras.layers.Dense(3)])
>>> x = np.random.default_rng(0).uniform(size=(8, 4, 4, 1)).astype("float32")
>>> x_adv = cw_l2(model, x, np.zeros(8, int), steps=20, binary_search_steps=2, verbose=0)
>>> x_adv.shape
(8, 4, 4, 1)
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from qrobust_keras._checks import check_int, check_positive, num_classes
from qrobust_keras._keras import keras, tf
from qrobust_keras.attacks import gradients as G
from qrobust_keras.attacks.common import AttackInfo, batches, enforce_constraints, parse_norm
from qrobust_keras.attacks.plumbing import ProgressBar, prepare


def _build_cw(model: keras.Model, *, steps: int, search_steps: int, targeted: bool, confidence: float,
              x_spec: tf.TensorSpec):
    lm = G.get_logits_model(model)
    forward = G.traced_logits(model)  # traced once per model, shared with the other attacks
    n_classes = num_classes(lm)
    axes = list(range(1, len(x_spec.shape)))
    bshape = lambda v: tf.reshape(v, [-1] + [1] * len(axes))  # noqa: E731

    @tf.function(input_signature=[x_spec, tf.TensorSpec([None], tf.int32), tf.TensorSpec([], tf.float32),
                                  tf.TensorSpec([], tf.float32), tf.TensorSpec([], tf.float32),
                                  tf.TensorSpec([], tf.float32)])
    def run(x, y, initial_const, lr, clip_lo, clip_hi):
        span = clip_hi - clip_lo
        w0 = tf.atanh(tf.clip_by_value((x - clip_lo) / span * 2.0 - 1.0, -1.0 + 1e-6, 1.0 - 1e-6))
        n = tf.shape(x)[0]
        const = tf.fill([n], initial_const)
        lower = tf.zeros([n])
        upper = tf.fill([n], 1e10)
        best_l2 = tf.fill([n], np.float32(np.inf))
        best_x = x
        for _ in tf.range(search_steps):
            w = w0
            m = tf.zeros_like(x)
            v = tf.zeros_like(x)
            success_round = tf.zeros([n], tf.bool)
            for t in tf.range(1, steps + 1):
                with tf.GradientTape() as tape:
                    tape.watch(w)
                    xa = (tf.tanh(w) + 1.0) / 2.0 * span + clip_lo
                    logits = forward(xa)
                    l2 = tf.reduce_sum(tf.square(xa - x), axis=axes)
                    margin = G.per_sample_loss(logits, y, "cw", targeted, n_classes, confidence)
                    total = tf.reduce_sum(l2 - const * margin)
                grad = tape.gradient(total, w)
                success = tf.logical_and(G.is_success(logits, y, targeted), margin >= confidence)
                improved = tf.logical_and(success, l2 < best_l2)
                best_l2 = tf.where(improved, l2, best_l2)
                best_x = tf.where(bshape(improved), xa, best_x)
                success_round = tf.logical_or(success_round, success)
                # Adam (Kingma & Ba 2015), as in the paper, on the tanh-space variable w.
                m = 0.9 * m + 0.1 * grad
                v = 0.999 * v + 0.001 * tf.square(grad)
                tf_ = tf.cast(t, tf.float32)
                m_hat = m / (1.0 - tf.pow(0.9, tf_))
                v_hat = v / (1.0 - tf.pow(0.999, tf_))
                w = w - lr * m_hat / (tf.sqrt(v_hat) + 1e-8)
            upper = tf.where(success_round, tf.minimum(upper, const), upper)
            lower = tf.where(success_round, lower, tf.maximum(lower, const))
            bisect = (lower + upper) / 2.0
            const = tf.where(success_round | (upper < 1e9), bisect, const * 10.0)
        found = tf.math.is_finite(best_l2)
        return tf.where(bshape(found), best_x, x), found, const

    return run


def cw_l2(model: keras.Model, x: Any, y: Any = None, eps: float | None = None, norm: Any = "2", steps: int = 100,
          step_size: float = 0.01, targeted: bool = False, clip_min: float = 0.0, clip_max: float = 1.0,
          batch_size: int = 256, seed: int = 0, verbose: int = 1, return_info: bool = False,
          binary_search_steps: int = 5, initial_const: float = 0.01, confidence: float = 0.0):
    """Carlini & Wagner L2 attack (arXiv 1608.04644) on the pre-softmax logits z.

    Minimizes ``||x' - x||_2^2 + c * max(z_y - max_{i!=y} z_i, -confidence)`` (targeted:
    ``max(max_{i!=t} z_i - z_t, -confidence)``) over ``x' = (tanh(w) + 1)/2 * (clip_max - clip_min) + clip_min`` with
    Adam, for ``binary_search_steps`` values of c found by binary search per sample (x10 until the first success,
    then bisection). Per sample the smallest-L2 example that succeeds with the required confidence is returned;
    samples never fooled are returned unchanged.

    Args:
        model: Keras classifier.
        x: inputs in [clip_min, clip_max].
        y: true labels, the targets when ``targeted``, or None (model predictions).
        eps: optional L2 budget; when given, results are projected onto the eps-ball (a minimal example larger
            than eps is shrunk onto it and may no longer fool the model). None: unbounded (the classic attack).
        norm: must be "2".
        steps: Adam iterations per binary-search step.
        step_size: Adam learning rate (the paper's 1e-2).
        targeted, clip_min, clip_max, batch_size, verbose, return_info: as in :func:`~.pgd.pgd`.
        seed: unused (the attack is deterministic); accepted for the shared signature.
        binary_search_steps: number of values of c tried.
        initial_const: first value of c.
        confidence: required logit margin kappa.

    Returns:
        ``x_adv`` (and an :class:`AttackInfo` when ``return_info``).
    """
    if parse_norm(norm) != "2":
        raise ValueError(f"cw_l2 is an L2 attack; got norm={norm!r} (use pgd or apgd for L-inf)")
    check_eps = 0.0 if eps is None else eps
    model, x, y, _, n_classes = prepare(model, x, y, check_eps, "2", targeted, clip_min, clip_max, batch_size,
                                        "cw_l2")
    if n_classes < 2:
        raise ValueError(f"cw_l2 needs a classifier with >= 2 classes; the model has {n_classes}")
    steps = check_int("steps", steps)
    search = check_int("binary_search_steps", binary_search_steps)
    lr = check_positive("step_size", step_size)
    initial_const = check_positive("initial_const", initial_const)
    confidence = check_positive("confidence", confidence, allow_zero=True)
    run = G.cached(model, ("cw", steps, search, targeted, float(confidence), x.shape[1:]),
                   lambda: _build_cw(model, steps=steps, search_steps=search, targeted=targeted,
                                     confidence=float(confidence), x_spec=G.x_signature(x)))
    out = np.empty_like(x)
    bar = ProgressBar(math.ceil(len(x) / batch_size), verbose, "cw_l2")
    for sl in batches(len(x), batch_size):
        x_b, _, _ = run(tf.constant(x[sl]), tf.constant(y[sl].astype(np.int32)), tf.constant(initial_const,
                        tf.float32), tf.constant(lr, tf.float32), tf.constant(clip_min, tf.float32),
                        tf.constant(clip_max, tf.float32))
        out[sl] = x_b.numpy()
        bar.update()
    if eps is None:
        x_adv = np.clip(out, clip_min, clip_max).astype(np.float32)
    else:
        x_adv = enforce_constraints(x, out, eps, "2", clip_min, clip_max)
    pred = G.predict_labels(model, x_adv, batch_size)
    info = AttackInfo(name="cw_l2", gradients=np.full(len(x), steps * search, np.int64),
                      success=pred == y if targeted else pred != y, notes=[G.mode_note(model, 1)])
    return (x_adv, info) if return_info else x_adv
