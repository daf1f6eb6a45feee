"""Projected gradient descent (PGD) and the basic iterative method (BIM), L-inf and L2, compiled per batch.

The whole loop of one restart (all ``steps``) runs inside one cached ``tf.function``; restarts keep, per sample, an
adversarial example from any restart that fooled the model, else the restart with the highest final loss.

Example:

>>> import numpy as np
>>> from qrobust_keras._keras import keras
>>> from qrobust_keras.attacks.pgd import pgd
>>> model = keras.Sequential([keras.layers.Flatten(input_shape=(4, 4, 1)), keras.layers.Dense(3)])
>>> x = np.random.default_rng(0).uniform(size=(8, 4, 4, 1)).astype("float32")
>>> x_adv = pgd(model, x, np.zeros(8, int), eps=8 / 255, steps=5, verbose=0)
>>> bool(np.abs(x_adv - x).max() <= 8 / 255)
True
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from qrobust_keras._checks import check_int, check_positive, num_classes
from qrobust_keras._keras import keras, tf
from qrobust_keras.attacks import gradients as G
from qrobust_keras.attacks.common import AttackInfo, batches, enforce_constraints
from qrobust_keras.attacks.plumbing import ProgressBar, prepare


def _build_loop(model: keras.Model, *, norm: str, loss: str, targeted: bool, eot: int, decay: float | None,
                x_spec: tf.TensorSpec):
    """Compile ``(x, y, x_start, eps, step_size, steps) -> (x_last, x_found, found)`` running all ``steps``: the
    last iterate, and per sample the last earlier iterate that fooled the model and whether there was one.

    The step count is an input of the loop (a ``tf.while_loop``), not part of the graph, so FGSM, BIM and PGD of
    any length share one trace per model: tracing a quantized model's gradient costs seconds, running a step
    milliseconds."""
    lm = G.get_logits_model(model)
    n_classes = num_classes(lm)
    stochastic = eot > 1
    loss_grad = G.make_loss_grad(lm, loss=loss, targeted=targeted, eot=eot, n_classes=n_classes,
                                 stochastic=stochastic, forward=G.traced_logits(model))
    axes = list(range(1, len(x_spec.shape)))

    @tf.function(input_signature=[x_spec, tf.TensorSpec([None], tf.int32), x_spec,
                                  tf.TensorSpec([], tf.float32), tf.TensorSpec([], tf.float32),
                                  tf.TensorSpec([], tf.int32)])
    def run(x, y, x_start, eps, step_size, steps):
        x_adv = x_start
        found = tf.zeros(tf.shape(x)[:1], tf.bool)
        x_found = x_adv
        momentum = tf.zeros_like(x)
        for _ in tf.range(steps):
            _, grad, logits = loss_grad(x_adv, y, y)
            success = G.is_success(logits, y, targeted)
            x_found = tf.where(tf.reshape(success, [-1] + [1] * len(axes)), x_adv, x_found)
            found = tf.logical_or(found, success)
            if decay is not None:
                # MI-FGSM (Dong et al. 2018): accumulate L1-normalized gradients.
                grad = grad / tf.maximum(tf.reduce_mean(tf.abs(grad), axis=axes, keepdims=True), 1e-12)
                momentum = decay * momentum + grad
                grad = momentum
            x_adv = x_adv + step_size * G.normalize_tf(grad, norm)
            x_adv = tf.clip_by_value(G.project_tf(x, x_adv, eps, norm), clip_lo, clip_hi)
        # The last iterate is scored outside, by the model's shared forward function (forward_fn): scoring it
        # here would trace the model a second time, seconds on a QKeras model, for one forward pass per batch.
        return x_adv, x_found, found

    clip_lo = tf.Variable(0.0, trainable=False, dtype=tf.float32)
    clip_hi = tf.Variable(1.0, trainable=False, dtype=tf.float32)
    return run, clip_lo, clip_hi


def sign_gradient_attack(model: keras.Model, x: np.ndarray, y: np.ndarray, *, eps: float, norm: str, steps: int,
                         step_size: float, targeted: bool, clip_min: float, clip_max: float, batch_size: int,
                         seed: int, verbose: int, rand_init: bool, restarts: int, decay: float | None, eot: int,
                         name: str, loss: str = "ce") -> tuple[np.ndarray, AttackInfo]:
    """Engine of fgsm/bim/pgd/mim on validated inputs: iterated steepest-ascent steps, projection, restarts."""
    seed = check_int("seed", seed, minimum=0)
    key = ("sign", norm, loss, targeted, eot, decay, x.shape[1:])
    build = lambda: _build_loop(model, norm=norm, loss=loss, targeted=targeted, eot=eot,  # noqa: E731
                                decay=decay, x_spec=G.x_signature(x))
    if eot > 1:
        G.set_eot_seed(seed, eot)
        run, lo, hi = build()  # fresh function: the stochastic quantizers restart their random streams
    else:
        run, lo, hi = G.cached(model, key, build)
    lo.assign(clip_min)
    hi.assign(clip_max)
    forward = G.forward_fn(model)
    n_classes = num_classes(G.get_logits_model(model))
    final_loss_name = "ce" if loss == "dlr" and targeted else loss
    n = len(x)
    best = G.BestOverRestarts(x)
    bar = ProgressBar(restarts * math.ceil(n / batch_size), verbose, name)
    for restart in range(restarts):
        if rand_init:
            start = G.random_start(np.random.default_rng([int(seed), restart]), x, eps, norm, clip_min, clip_max)
        else:
            start = x
        for sl in batches(n, batch_size):
            yb = tf.constant(y[sl].astype(np.int32))
            x_last, x_found, found = run(tf.constant(x[sl]), yb, tf.constant(start[sl]), tf.constant(eps, tf.float32),
                                         tf.constant(step_size, tf.float32), tf.constant(steps, tf.int32))
            logits = forward(x_last)
            final_loss = G.per_sample_loss(logits, yb, final_loss_name, targeted, n_classes).numpy()
            success = G.is_success(logits, yb, targeted).numpy()
            found = found.numpy()
            keep_last = success | ~found  # a success at the end, or nothing better found on the way
            x_out = np.where(keep_last.reshape((-1,) + (1,) * (x.ndim - 1)), x_last.numpy(), x_found.numpy())
            best.update(sl, x_out, found | success, final_loss.astype(np.float64))
            bar.update()
    x_adv = enforce_constraints(x, best.x, eps, norm, clip_min, clip_max)
    success = G.predict_labels(model, x_adv, batch_size)
    success = success == y if targeted else success != y
    info = AttackInfo(name=name, gradients=np.full(n, steps * restarts * eot, np.int64), success=success,
                      notes=[G.mode_note(model, eot)])
    return x_adv, info


def pgd(model: keras.Model, x: Any, y: Any = None, eps: float = 8 / 255, norm: Any = "inf", steps: int = 20,
        step_size: float | None = None, targeted: bool = False, clip_min: float = 0.0, clip_max: float = 1.0,
        batch_size: int = 256, seed: int = 0, verbose: int = 1, return_info: bool = False, rand_init: bool = True,
        restarts: int = 1, eot: int = 1, loss: str = "ce"):
    """Projected gradient descent (Madry et al. 2018, arXiv 1706.06083) on the pre-softmax logits.

    Each step: ``x <- clip(P_eps(x + step_size * d))`` with ``d = sign(grad)`` (L-inf) or ``grad / ||grad||_2``
    (L2) of the cross-entropy (maximized; targeted: the target's cross-entropy is minimized). The per-sample
    result is the last iterate, or the last iterate that fooled the model when a later one no longer does.

    Args:
        model: Keras classifier (softmax outputs are bypassed: logits are used).
        x: inputs in [clip_min, clip_max], shape (n, ...).
        y: true labels (n,) or one-hot; the target classes when ``targeted``; None: the model's predictions.
        eps: perturbation budget in input units (L-inf: per pixel, [0, 1] for images; L2: Euclidean).
        norm: "inf" or "2".
        steps: iterations per restart.
        step_size: step length in input units; default ``eps / 4``.
        targeted: move towards the classes ``y`` instead of away from them.
        clip_min, clip_max: valid input range.
        batch_size: samples per compiled call.
        seed: seeds the random start (numpy) and, with ``eot > 1``, TensorFlow's global RNG.
        verbose: 0 silent, 1 progress bar over batches.
        return_info: also return an :class:`AttackInfo`.
        rand_init: start from a uniform random point of the eps-ball (else from x: BIM).
        restarts: independent random restarts; per sample the best one is kept.
        eot: gradients averaged over ``eot`` stochastic forward passes (Expectation over Transformation,
            Athalye et al. 2018, arXiv 1802.00420) of stochastic QKeras quantizers.
        loss: "ce" (cross-entropy), "cw" (Carlini-Wagner margin) or "dlr".

    Returns:
        ``x_adv`` (float32, same shape as x) satisfying the norm bound and clip range exactly; with
        ``return_info`` a tuple ``(x_adv, AttackInfo)``.

    Raises:
        ValueError: bad eps, norm, range, labels, steps or step_size.
        TypeError: ``model`` is not a Keras model (use a black-box attack).
    """
    model, x, y, norm, n_classes = prepare(model, x, y, eps, norm, targeted, clip_min, clip_max, batch_size, "pgd")
    steps = check_int("steps", steps)
    restarts = check_int("restarts", restarts)
    eot = check_int("eot", eot)
    if loss not in G.LOSSES:
        raise ValueError(f"loss must be one of {G.LOSSES}; got loss={loss!r}")
    if loss == "dlr" and targeted:
        raise ValueError("pgd with loss='dlr' is untargeted only; use apgd(..., loss='dlr', targeted=True, y_true=...)")
    if loss == "dlr" and n_classes < 3:
        raise ValueError(f"the DLR loss needs >= 3 classes; the model has {n_classes} (use loss='ce')")
    step_size = eps / 4 if step_size is None else check_positive("step_size", step_size)
    x_adv, info = sign_gradient_attack(model, x, y, eps=eps, norm=norm, steps=steps, step_size=step_size,
                                       targeted=targeted, clip_min=clip_min, clip_max=clip_max,
                                       batch_size=batch_size, seed=seed, verbose=verbose, rand_init=rand_init,
                                       restarts=restarts, decay=None, eot=eot, name="pgd", loss=loss)
    return (x_adv, info) if return_info else x_adv


def bim(model: keras.Model, x: Any, y: Any = None, eps: float = 8 / 255, norm: Any = "inf", steps: int = 10,
        step_size: float | None = None, targeted: bool = False, clip_min: float = 0.0, clip_max: float = 1.0,
        batch_size: int = 256, seed: int = 0, verbose: int = 1, return_info: bool = False, eot: int = 1):
    """Basic iterative method (Kurakin et al. 2016, arXiv 1607.02533): PGD started from x, no restarts.

    Args are those of :func:`pgd`; ``step_size`` defaults to ``eps / 4`` (the paper's ``eps / steps`` with
    ``min(eps + 4, 1.25 eps)`` iterations reaches the border only at the end; ``eps/4`` converges faster).
    """
    model, x, y, norm, _ = prepare(model, x, y, eps, norm, targeted, clip_min, clip_max, batch_size, "bim")
    steps = check_int("steps", steps)
    eot = check_int("eot", eot)
    step_size = eps / 4 if step_size is None else check_positive("step_size", step_size)
    x_adv, info = sign_gradient_attack(model, x, y, eps=eps, norm=norm, steps=steps, step_size=step_size,
                                       targeted=targeted, clip_min=clip_min, clip_max=clip_max,
                                       batch_size=batch_size, seed=seed, verbose=verbose, rand_init=False,
                                       restarts=1, decay=None, eot=eot, name="bim")
    return (x_adv, info) if return_info else x_adv
