"""FAB: the fast adaptive boundary attack (minimum-norm, L-inf and L2), untargeted or targeted, compiled per batch.

FAB (Croce & Hein, "Minimally distorted adversarial examples with a fast adaptive boundary attack", ICML 2020,
arXiv 1907.02044) walks to the decision boundary by projecting onto the linearized boundary and pulling back toward
the original point. With ``x_0`` the clean input and ``x_i`` the iterate, the boundary of class ``s`` against the
true class ``c`` linearized at ``x_i`` is the hyperplane

    pi_s = {z : (f_s - f_c)(x_i) + <grad (f_s - f_c)(x_i), z - x_i> = 0}.

Untargeted FAB takes the ``s != c`` whose hyperplane is closest in the dual norm, ``|f_s - f_c| / ||grad||_q``;
targeted FAB (FAB-T, as in AutoAttack) always takes the target. Each step

    d   = proj_p(x_i, pi_s, C) - x_i          d_0 = proj_p(x_0, pi_s, C) - x_0
    a   = min(||d|| / (||d|| + ||d_0||), alpha_max)
    x_{i+1} = proj_C((1 - a)(x_i + eta d) + a (x_0 + eta d_0))

and, when ``x_{i+1}`` is adversarial, keeps it if it is the closest found and steps back:
``x_{i+1} = (1 - beta) x_0 + beta x_{i+1}`` (paper values ``alpha_max = 0.1``, ``eta = 1.05``, ``beta = 0.9``).
``proj_p(p, pi, C)`` is the exact minimum-``p``-norm projection of ``p`` onto the hyperplane within the input box
``C = [clip_min, clip_max]^d``; both norms reduce to finding the smallest ``r`` with
``sum_j a_j min(b_j, r) >= c`` over sorted breakpoints ``b_j`` (L-inf: ``a = |w|``, ``b`` the distance to the box in
the direction of ``w``; L2: ``a = w^2``, ``b`` that distance over ``|w|``).

FAB minimizes the norm; with a budget ``eps`` a sample counts as broken when the closest adversarial point found is
within ``eps``. The returned ``x_adv`` is that point, or (none within eps) the closest point found, projected onto
the eps-ball (re-scored by the caller, like every attack here).

Example:

>>> import numpy as np
>>> from qrobust_keras._keras import keras
>>> from qrobust_keras.attacks.fab import fab
>>> model = keras.Sequential([keras.layers.Flatten(input_shape=(4, 4, 1)), keras.layers.Dense(3)])
>>> x = np.random.default_rng(0).uniform(size=(8, 4, 4, 1)).astype("float32")
>>> x_adv = fab(model, x, eps=8 / 255, steps=10, verbose=0)
>>> bool(np.abs(x_adv - x).max() <= 8 / 255 + 1e-7)
True
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from qrobust_keras._checks import check_int
from qrobust_keras._keras import keras, tf
from qrobust_keras.attacks import gradients as G
from qrobust_keras.attacks.common import AttackInfo, as_int_labels, batches, enforce_constraints, perturbation_norms
from qrobust_keras.attacks.plumbing import ProgressBar, prepare

__all__ = ["fab", "project_onto_hyperplane"]

ALPHA_MAX = 0.1
ETA = 1.05
BETA = 0.9


def project_onto_hyperplane(w: tf.Tensor, c: tf.Tensor, lower: tf.Tensor, upper: tf.Tensor,
                            norm: str) -> tf.Tensor:
    """The smallest ``delta`` (in ``norm``) with ``<w, delta> = c`` and ``lower <= delta <= upper``, row-wise.

    ``w``, ``lower <= 0 <= upper``: (n, d); ``c``: (n,). When no ``delta`` in the box reaches ``c``, the box point
    that comes closest is returned.
    """
    sign = tf.where(c < 0, -1.0, 1.0)[:, None]
    w = w * sign
    target = tf.abs(c)[:, None]
    reach = tf.where(w > 0, upper, -lower)                 # how far each coordinate may move in the direction of w
    mag = tf.abs(w)
    if norm == "inf":
        a, b = mag, reach
    else:
        a = tf.square(mag)
        b = tf.math.divide_no_nan(reach, mag)
    order = tf.argsort(b, axis=1)
    b_s = tf.gather(b, order, batch_dims=1)
    a_s = tf.gather(a, order, batch_dims=1)
    cum_ab = tf.cumsum(a_s * b_s, axis=1)
    cum_a = tf.cumsum(a_s, axis=1)
    total_a = cum_a[:, -1:]
    h = cum_ab + b_s * (total_a - cum_a)                   # sum_j a_j min(b_j, r) at r = each breakpoint
    k = tf.reduce_sum(tf.cast(h < target, tf.int32), axis=1, keepdims=True)
    d = tf.shape(w)[1]
    prev = tf.maximum(k - 1, 0)
    ab_before = tf.where(k > 0, tf.gather(cum_ab, prev, batch_dims=1), 0.0)
    a_before = tf.where(k > 0, tf.gather(cum_a, prev, batch_dims=1), 0.0)
    r = tf.math.divide_no_nan(target - ab_before, total_a - a_before)
    r = tf.where(k >= d, b_s[:, -1:], r)                   # infeasible: every coordinate at its box limit
    step = tf.minimum(reach, r) if norm == "inf" else tf.minimum(reach, r * mag)
    return tf.sign(w) * step                               # w is already turned toward c >= 0


def _build_fab(model: keras.Model, *, steps: int, norm: str, targeted: bool, n_classes: int,
               x_spec: tf.TensorSpec, alpha_max: float, eta: float, beta: float):
    lm = G.get_logits_model(model)
    # The model's traced forward pass, shared with the other attacks; the untargeted Jacobian keeps the layers
    # inline, because batch_jacobian vectorizes them op by op.
    forward = G.traced_logits(model)
    axes = list(range(1, len(x_spec.shape)))
    bshape = lambda v: tf.reshape(v, [-1] + [1] * len(axes))  # noqa: E731

    def dist(delta):
        flat = tf.reshape(delta, [tf.shape(delta)[0], -1])
        return tf.reduce_max(tf.abs(flat), 1) if norm == "inf" else tf.sqrt(tf.reduce_sum(tf.square(flat), 1))

    def hyperplane(x_cur, y, t):
        """(g, w): value and input gradient of f_s - f_y at x_cur for the chosen class s; g < 0 while correct."""
        with tf.GradientTape() as tape:
            tape.watch(x_cur)
            logits = forward(x_cur) if targeted else lm(x_cur, training=False)
            if targeted:
                diff = tf.gather(logits, t, batch_dims=1) - tf.gather(logits, y, batch_dims=1)
        if targeted:
            return diff, tf.reshape(tape.gradient(diff, x_cur), [tf.shape(x_cur)[0], -1])
        jac = tape.batch_jacobian(logits, x_cur)
        jac = tf.reshape(jac, [tf.shape(x_cur)[0], n_classes, -1])
        g_all = logits - tf.gather(logits, y, batch_dims=1)[:, None]
        w_all = jac - tf.gather(jac, y, batch_dims=1)[:, None, :]
        dual = tf.reduce_sum(tf.abs(w_all), 2) if norm == "inf" else tf.sqrt(tf.reduce_sum(tf.square(w_all), 2))
        gap = tf.abs(g_all) / (dual + 1e-12)
        gap = tf.where(tf.one_hot(y, n_classes) > 0, np.inf, gap)
        s = tf.argmin(gap, axis=1, output_type=tf.int32)
        return tf.gather(g_all, s, batch_dims=1), tf.gather(w_all, s, batch_dims=1)

    @tf.function(input_signature=[x_spec, tf.TensorSpec([None], tf.int32), tf.TensorSpec([None], tf.int32),
                                  x_spec, tf.TensorSpec([], tf.float32), tf.TensorSpec([], tf.float32)])
    def run(x, y, t, x_start, lo, hi):
        n = tf.shape(x)[0]
        flat = lambda v: tf.reshape(v, [n, -1])  # noqa: E731
        x0 = flat(x)
        x_cur = x_start
        x_best = x
        best = tf.fill([n], np.inf)
        for _ in tf.range(steps):
            g, w = hyperplane(x_cur, y, t)
            xc = flat(x_cur)
            d_cur = project_onto_hyperplane(w, -g, lo - xc, hi - xc, norm)
            c_orig = -g - tf.reduce_sum(w * (x0 - xc), 1)
            d_orig = project_onto_hyperplane(w, c_orig, lo - x0, hi - x0, norm)
            n_cur, n_orig = dist(d_cur), dist(d_orig)
            a = tf.minimum(n_cur / (n_cur + n_orig + 1e-12), alpha_max)[:, None]
            x_new = tf.clip_by_value((1.0 - a) * (xc + eta * d_cur) + a * (x0 + eta * d_orig), lo, hi)
            x_new = tf.reshape(x_new, tf.shape(x))
            logits = forward(x_new)
            adv = G.is_success(logits, t if targeted else y, targeted)
            moved = dist(x_new - x)
            closer = tf.logical_and(adv, moved < best)
            x_best = tf.where(bshape(closer), x_new, x_best)
            best = tf.where(closer, moved, best)
            x_cur = tf.where(bshape(adv), (1.0 - beta) * x + beta * x_new, x_new)
        return x_best, best

    return run


def fab(model: keras.Model, x: Any, y: Any = None, eps: float = 8 / 255, norm: Any = "inf", steps: int = 100,
        targeted: bool = False, y_true: Any = None, restarts: int = 1, alpha_max: float = ALPHA_MAX,
        eta: float = ETA, beta: float = BETA, clip_min: float = 0.0, clip_max: float = 1.0, batch_size: int = 256,
        seed: int = 0, verbose: int = 1, return_info: bool = False):
    """FAB (Croce & Hein 2020, arXiv 1907.02044): minimum-norm adversarial examples, reported within ``eps``.

    Args:
        model: a Keras classifier (its logits are used).
        x: inputs in [clip_min, clip_max].
        y: true labels (untargeted), or the target classes when ``targeted`` (None: model predictions).
        eps: the budget a found point must be within to count (and the radius of the returned projection).
        norm: "inf" or "2".
        steps: iterations per restart (100 in AutoAttack).
        targeted: FAB-T: move toward the hyperplane of ``y`` (targets) against ``y_true``.
        y_true: the true labels, required when ``targeted``.
        restarts: the first starts at ``x``, later ones at a random point at distance ``min(best, eps) / 2``.
        alpha_max, eta, beta: the paper's step parameters (0.1, 1.05, 0.9).
        clip_min, clip_max, batch_size, seed, verbose, return_info: as in :func:`~.pgd.pgd`.

    Returns:
        ``x_adv`` (and an :class:`AttackInfo` whose ``success`` is the model's verdict on ``x_adv``).

    Raises:
        ValueError: bad inputs, ``targeted`` without ``y_true``, or parameters out of range.
    """
    model, x, y, norm, n_classes = prepare(model, x, y, eps, norm, targeted, clip_min, clip_max, batch_size, "fab")
    if targeted:
        if y_true is None:
            raise ValueError("fab: targeted=True needs the true labels: pass y_true=")
        y_true = as_int_labels(y_true, len(x), n_classes, name="y_true")
        if np.any(y_true == y):
            raise ValueError("fab: a target class equals the true label (y == y_true) for some samples")
    else:
        y_true = y
    steps = check_int("steps", steps)
    restarts = check_int("restarts", restarts)
    seed = check_int("seed", seed, minimum=0)
    for name, value in (("alpha_max", alpha_max), ("beta", beta)):
        if not 0 < float(value) <= 1:
            raise ValueError(f"fab: {name} must be in (0, 1]; got {name}={value!r}")
    if not float(eta) >= 1:
        raise ValueError(f"fab: eta (overshoot) must be >= 1; got eta={eta!r}")
    key = ("fab", steps, norm, targeted, float(alpha_max), float(eta), float(beta), x.shape[1:])
    run = G.cached(model, key, lambda: _build_fab(model, steps=steps, norm=norm, targeted=targeted,
                                                  n_classes=n_classes, x_spec=G.x_signature(x),
                                                  alpha_max=float(alpha_max), eta=float(eta), beta=float(beta)))
    n = len(x)
    x_best = x.copy()
    best = np.full(n, np.inf)
    bar = ProgressBar(restarts * math.ceil(n / batch_size), verbose, "fab-t" if targeted else "fab")
    for restart in range(restarts):
        start = x
        if restart > 0:
            rng = np.random.default_rng([int(seed), restart, 11])
            radius = np.minimum(best, eps).reshape((n,) + (1,) * (x.ndim - 1)) / 2.0
            u = G.random_start(rng, np.zeros_like(x), 1.0, norm, -1.0, 1.0)
            start = np.clip(x + radius * u, clip_min, clip_max).astype(np.float32)
        for sl in batches(n, batch_size):
            xb, nb = run(tf.constant(x[sl]), tf.constant(y_true[sl].astype(np.int32)),
                         tf.constant(y[sl].astype(np.int32)), tf.constant(start[sl]),
                         tf.constant(clip_min, tf.float32), tf.constant(clip_max, tf.float32))
            xb, nb = xb.numpy(), nb.numpy().astype(np.float64)
            closer = nb < best[sl]
            idx = np.arange(sl.start, sl.stop)[closer]
            x_best[idx], best[idx] = xb[closer], nb[closer]
            bar.update()
    bar.close()
    x_adv = enforce_constraints(x, x_best, eps, norm, clip_min, clip_max)
    pred = G.predict_labels(model, x_adv, batch_size)
    found = np.isfinite(best)
    info = AttackInfo(name="fab-t" if targeted else "fab", gradients=np.full(n, steps * restarts, np.int64),
                      success=pred == y if targeted else pred != y,
                      notes=[G.mode_note(model, 1)],
                      min_norm=np.where(found, perturbation_norms(x, x_best, norm), np.inf))
    return (x_adv, info) if return_info else x_adv
