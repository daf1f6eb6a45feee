"""Auto-PGD (APGD-CE and APGD-DLR as in AutoAttack), L-inf and L2, the whole run compiled per batch.

APGD (Croce & Hein 2020, arXiv 2003.01690, Algorithm 1) needs no step-size tuning: it starts with step ``2 eps``,
uses momentum ``alpha = 0.75`` and halves the step of a sample (restarting it from its best point) at checkpoints
where the loss rose in fewer than ``rho = 75%`` of the steps since the previous checkpoint, or where neither the step
was halved nor the best loss improved at the previous checkpoint. Checkpoints follow ``p_0 = 0, p_1 = 0.22,
p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)``.

Example:

>>> import numpy as np
>>> from qrobust_keras._keras import keras
>>> from qrobust_keras.attacks.apgd import apgd
>>> model = keras.Sequential([keras.layers.Flatten(input_shape=(4, 4, 1)), keras.layers.Dense(3)])
>>> x = np.random.default_rng(0).uniform(size=(8, 4, 4, 1)).astype("float32")
>>> x_adv = apgd(model, x, np.zeros(8, int), eps=8 / 255, steps=10, loss="dlr", verbose=0)
>>> bool(np.abs(x_adv - x).max() <= 8 / 255)
True
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from qrobust_keras._checks import check_int, num_classes
from qrobust_keras._keras import keras, tf
from qrobust_keras.attacks import gradients as G
from qrobust_keras.attacks.common import AttackInfo, as_int_labels, batches, enforce_constraints
from qrobust_keras.attacks.plumbing import ProgressBar, prepare

ALPHA = 0.75
RHO = 0.75


def checkpoints(steps: int) -> list[int]:
    """Iteration indices w_j = ceil(p_j * steps) where APGD may halve the step (Croce & Hein 2020, sec. 3.2)."""
    p = [0.0, 0.22]
    while True:
        nxt = p[-1] + max(p[-1] - p[-2] - 0.03, 0.06)
        if nxt > 1.0:
            break
        p.append(nxt)
    marks = sorted({int(math.ceil(q * steps - 1e-9)) for q in p[1:]})
    return [w for w in marks if 0 < w < steps]


def _schedule(steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-iteration (is_checkpoint, window length since the previous checkpoint)."""
    is_check = np.zeros(steps + 1, bool)
    window = np.ones(steps + 1, np.float32)
    prev = 0
    for w in checkpoints(steps):
        is_check[w] = True
        window[w] = w - prev
        prev = w
    return is_check, window


def _build_apgd(model: keras.Model, *, steps: int, norm: str, loss: str, targeted: bool, eot: int,
                x_spec: tf.TensorSpec):
    lm = G.get_logits_model(model)
    n_classes = num_classes(lm)
    loss_grad = G.make_loss_grad(lm, loss=loss, targeted=targeted, eot=eot, n_classes=n_classes,
                                 stochastic=eot > 1, forward=G.traced_logits(model))
    axes = list(range(1, len(x_spec.shape)))
    bshape = lambda v: tf.reshape(v, [-1] + [1] * len(axes))  # noqa: E731
    is_check_np, window_np = _schedule(steps)
    is_check_c = tf.constant(is_check_np)
    window_c = tf.constant(window_np)

    def proj(x, x_adv, eps, lo, hi):
        return tf.clip_by_value(G.project_tf(x, x_adv, eps, norm), lo, hi)

    @tf.function(input_signature=[x_spec, tf.TensorSpec([None], tf.int32), tf.TensorSpec([None], tf.int32),
                                  x_spec, tf.TensorSpec([], tf.float32), tf.TensorSpec([], tf.float32),
                                  tf.TensorSpec([], tf.float32)])
    def run(x, y, y_true, x_start, eps, lo, hi):
        # One loop of steps + 1 evaluations, the first at x_start with no step before it: the model's gradient is
        # traced once (an evaluation before the loop would trace it a second time, seconds on a QKeras model).
        n = tf.shape(x)[0]
        x_cur = x_prev = x_found = x_best = x_start
        grad = g_best = tf.zeros_like(x_start)
        found = tf.zeros([n], tf.bool)
        eta = tf.fill([n], 2.0) * eps
        f_best = f_best_last = tf.fill([n], -np.inf)
        f_prev = tf.fill([n], np.inf)  # no increase counted at the start
        n_incr = tf.zeros([n])
        reduced_last = tf.ones([n], tf.bool)
        for i in tf.range(steps + 1):
            if i > 0:
                alpha = tf.where(i > 1, ALPHA, 1.0)
                z = proj(x, x_cur + bshape(eta) * G.normalize_tf(grad, norm), eps, lo, hi)
                x_next = proj(x, x_cur + alpha * (z - x_cur) + (1.0 - alpha) * (x_cur - x_prev), eps, lo, hi)
                x_prev, x_cur = x_cur, x_next
            f_cur, grad, logits = loss_grad(x_cur, y, y_true)
            success = G.is_success(logits, y if targeted else y_true, targeted)
            x_found = tf.where(bshape(success), x_cur, x_found)
            found = tf.logical_or(found, success)
            n_incr += tf.cast(f_cur > f_prev, tf.float32)
            f_prev = f_cur
            improved = tf.logical_or(f_cur > f_best, tf.equal(i, 0))
            x_best = tf.where(bshape(improved), x_cur, x_best)
            g_best = tf.where(bshape(improved), grad, g_best)
            f_best = tf.where(improved, f_cur, f_best)
            if i == 0:
                f_best_last = f_best
            if tf.logical_and(i > 0, is_check_c[i]):
                oscillating = n_incr <= RHO * window_c[i]
                stalled = tf.logical_and(tf.logical_not(reduced_last), f_best_last >= f_best)
                reduce = tf.logical_or(oscillating, stalled)
                eta = tf.where(reduce, eta / 2.0, eta)
                x_cur = tf.where(bshape(reduce), x_best, x_cur)
                grad = tf.where(bshape(reduce), g_best, grad)
                reduced_last = reduce
                f_best_last = f_best
                n_incr = tf.zeros([n])
        x_out = tf.where(bshape(found), x_found, x_best)
        return x_out, found, f_best

    return run


def apgd(model: keras.Model, x: Any, y: Any = None, eps: float = 8 / 255, norm: Any = "inf", steps: int = 100,
         step_size: float | None = None, targeted: bool = False, clip_min: float = 0.0, clip_max: float = 1.0,
         batch_size: int = 256, seed: int = 0, verbose: int = 1, return_info: bool = False, loss: str = "ce",
         restarts: int = 1, eot: int = 1, y_true: Any = None):
    """Auto-PGD (Croce & Hein 2020, arXiv 2003.01690) with the cross-entropy (APGD-CE) or DLR loss (APGD-DLR).

    DLR: ``-(z_y - max_{i!=y} z_i) / (z_pi1 - z_pi3)`` with z sorted decreasingly (needs >= 3 classes); targeted
    DLR ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4)/2)`` (needs >= 4 classes and the true labels ``y_true``).
    Per sample the result is an iterate that fooled the model if any did, else the highest-loss iterate.

    Args:
        model, x, eps, norm, targeted, clip_min, clip_max, batch_size, verbose, return_info, restarts, eot:
            as in :func:`~.pgd.pgd`.
        y: true labels, or the target classes when ``targeted`` (None: model predictions).
        steps: iterations per restart (100 in AutoAttack).
        step_size: must be None: APGD adapts its step (initially 2 eps); accepted for the shared signature.
        seed: seeds the random starting point ``x + eps * u / ||u||_inf``, u uniform in [-1, 1]
            (L2: ``x + eps * g / ||g||_2``, g Gaussian), as in AutoAttack.
        loss: "ce" or "dlr".
        y_true: the true labels, needed only by targeted DLR.

    Returns:
        ``x_adv`` (and an :class:`AttackInfo` when ``return_info``).
    """
    model, x, y, norm, n_classes = prepare(model, x, y, eps, norm, targeted, clip_min, clip_max, batch_size, "apgd")
    if loss not in ("ce", "dlr"):
        raise ValueError(f"apgd loss must be 'ce' or 'dlr'; got loss={loss!r}")
    if step_size is not None:
        raise ValueError(f"apgd adapts its step size (starting at 2*eps); got step_size={step_size!r}, pass None")
    if loss == "dlr" and n_classes < 3:
        raise ValueError(f"the DLR loss needs >= 3 classes; the model has {n_classes} (use loss='ce')")
    if targeted and loss == "dlr":
        if n_classes < 4:
            raise ValueError(f"targeted DLR needs >= 4 classes; the model has {n_classes}")
        if y_true is None:
            raise ValueError("targeted DLR needs the true labels: pass y_true=")
        y_true = as_int_labels(y_true, len(x), n_classes, name="y_true")
    else:
        y_true = y
    steps = check_int("steps", steps)
    restarts = check_int("restarts", restarts)
    eot = check_int("eot", eot)
    seed = check_int("seed", seed, minimum=0)
    key = ("apgd", steps, norm, loss, targeted, eot, x.shape[1:])
    build = lambda: _build_apgd(model, steps=steps, norm=norm, loss=loss, targeted=targeted,  # noqa: E731
                                eot=eot, x_spec=G.x_signature(x))
    if eot > 1:
        G.set_eot_seed(seed, eot)
        run = build()
    else:
        run = G.cached(model, key, build)
    n = len(x)
    best = G.BestOverRestarts(x)
    bar = ProgressBar(restarts * math.ceil(n / batch_size), verbose, f"apgd-{loss}")
    for restart in range(restarts):
        rng = np.random.default_rng([int(seed), restart, 7])
        if norm == "inf":
            u = rng.uniform(-1.0, 1.0, size=x.shape)
            u /= np.maximum(np.abs(u.reshape(n, -1)).max(axis=1), 1e-12).reshape((n,) + (1,) * (x.ndim - 1))
        else:
            u = rng.standard_normal(size=x.shape)
            u /= np.maximum(np.linalg.norm(u.reshape(n, -1), axis=1), 1e-12).reshape((n,) + (1,) * (x.ndim - 1))
        start = np.clip(x + eps * u.astype(np.float32), clip_min, clip_max).astype(np.float32)
        for sl in batches(n, batch_size):
            x_out, found, f_best = run(tf.constant(x[sl]), tf.constant(y[sl].astype(np.int32)),
                                       tf.constant(y_true[sl].astype(np.int32)), tf.constant(start[sl]),
                                       tf.constant(eps, tf.float32), tf.constant(clip_min, tf.float32),
                                       tf.constant(clip_max, tf.float32))
            x_out, found, f_best = x_out.numpy(), found.numpy(), f_best.numpy().astype(np.float64)
            best.update(sl, x_out, found, f_best)
            bar.update()
    x_adv = enforce_constraints(x, best.x, eps, norm, clip_min, clip_max)
    pred = G.predict_labels(model, x_adv, batch_size)
    info = AttackInfo(name=f"apgd-{loss}", gradients=np.full(n, (steps + 1) * restarts * eot, np.int64),
                      success=pred == y if targeted else pred != y, notes=[G.mode_note(model, eot)])
    return (x_adv, info) if return_info else x_adv
