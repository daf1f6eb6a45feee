"""SPSA attack (Uesato et al. 2018): gradient-free L-inf attack with a finite-difference gradient estimate and Adam.

Batched over samples, needing only a function that returns scores; it never computes a gradient. Fixes the gradient
scaling bug of cleverhans' tf2 ``spsa`` (cleverhans issue 1087, see :func:`spsa`).

Example:

>>> import numpy as np
>>> from qrobust_keras.attacks.spsa import spsa
>>> w = np.random.default_rng(0).normal(size=(3 * 8 * 8, 4))
>>> predict = lambda x: x.reshape(len(x), -1) @ w          # a linear "model" returning logits
>>> x = np.random.default_rng(1).uniform(size=(4, 8, 8, 3)).astype(np.float32)
>>> y = predict(x).argmax(1)
>>> x_adv, info = spsa(predict, x, y, eps=0.1, steps=20, spsa_samples=32, verbose=0, return_info=True)
>>> bool(np.abs(x_adv.astype(np.float64) - x).max() <= 0.1), int(info.queries.max()) <= 20 * 33
(True, True)
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from qrobust_keras._checks import check_int, check_positive
from qrobust_keras.attacks._blackbox import MarginLoss, scores_fn
from qrobust_keras.attacks.common import (
    AttackInfo,
    as_int_labels,
    batches,
    check_attack_inputs,
    enforce_constraints,
)
from qrobust_keras.attacks.plumbing import ProgressBar

__all__ = ["spsa"]

_ADAM_BETA1, _ADAM_BETA2, _ADAM_EPS = 0.9, 0.999, 1e-7  # tf.keras Adam defaults, as in cleverhans' SPSAAdam
_MAX_INPUTS = 8192  # perturbed inputs held in memory at once (8192 CIFAR images: 100 MB in float32)


def _spsa_gradient(
    loss_fn: Callable[[np.ndarray], np.ndarray],
    x: np.ndarray,
    delta: float,
    samples: int,
    iters: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """SPSA estimate of the gradient of ``loss_fn`` at each row of ``x``.

    ``g(x) = 1/(iters * samples/2) * sum_i (L(x + delta v_i) - L(x - delta v_i)) / (2 delta) * v_i`` with
    Rademacher directions ``v_i`` (entries +-1), ``samples/2`` antithetic pairs per iteration. For a linear
    ``L(x) = w.x`` every term equals ``(w.v) v`` and ``E[(w.v) v] = w``: the estimate is unbiased.

    Args:
        loss_fn: maps a stack of m inputs shaped like the rows of ``x`` (grouped per row, ``samples`` at a time) to
            m losses.
        x: (b, ...) points, float32.
        delta: finite-difference step in input units.
        samples: evaluations per iteration and row (even).
        iters: iterations averaged.
        rng: numpy Generator.

    Returns:
        (b, ...) float64 gradient estimates.
    """
    b = x.shape[0]
    half = samples // 2
    grad = np.zeros(x.shape, np.float64)
    for _ in range(iters):
        v = rng.integers(0, 2, size=(b, half) + x.shape[1:], dtype=np.int8).astype(np.float32) * 2 - 1
        pts = np.concatenate([x[:, None] + delta * v, x[:, None] - delta * v], axis=1)  # (b, 2*half, ...)
        losses = np.asarray(loss_fn(pts.reshape((b * 2 * half,) + x.shape[1:])), np.float64).reshape(b, 2 * half)
        diff = (losses[:, :half] - losses[:, half:]) / (2.0 * delta)  # (b, half)
        grad += np.einsum("bh,bh...->b...", diff, v.astype(np.float64)) / half
    return grad / iters


def spsa(
    model_or_predict_fn: Any,
    x: np.ndarray,
    y: np.ndarray,
    eps: float,
    norm: Any = "inf",
    steps: int = 100,
    step_size: float = 0.01,
    delta: float = 0.01,
    spsa_samples: int = 128,
    spsa_iters: int = 1,
    targeted: bool = False,
    clip_min: float = 0.0,
    clip_max: float = 1.0,
    rand_init: bool = True,
    early_stop: bool = True,
    batch_size: int = 8,
    seed: int = 0,
    verbose: int = 1,
    return_info: bool = False,
) -> np.ndarray | tuple[np.ndarray, AttackInfo]:
    """SPSA attack: Adam on an SPSA gradient estimate of the margin loss, projected on the L-inf ball.

    Minimises ``L = z_y - max_{j!=y} z_j`` (targeted: ``max_{j!=t} z_j - z_t``) on the model's scores (logits;
    probabilities are mapped to log-probabilities; Keras models ending in softmax are queried through their logits).
    Each step estimates the gradient at the current point (:func:`_spsa_gradient`, ``spsa_samples * spsa_iters``
    queries), takes an Adam step of size ``step_size`` (beta1 0.9, beta2 0.999, epsilon 1e-7), projects on the
    eps-ball and the clip range, and scores the new point (1 query). With ``early_stop`` a sample stops at its first
    successful point and that point is returned.

    Gradient scaling (cleverhans issue 1087): cleverhans' tf2 ``SPSAAdam._compute_gradients`` computes
    ``mean(L(x + delta_x) * delta_x) / delta`` with ``delta_x = delta * v`` over the mirrored samples, which is
    ``mean(L * v)``: ``delta`` times the SPSA estimate ``mean((L(x+delta v) - L(x-delta v)) / (2 delta) * v)``
    (default 0.01, so 100x too small), and it *sums* rather than averages over ``spsa_iters``. Adam is almost
    invariant to a constant gradient scale, so the direction survives, but the scale is wrong wherever it matters
    (Adam's epsilon, any non-adaptive optimiser, users reading the estimate). Here the finite difference is divided
    by ``2 delta`` and the iterations are averaged, so the estimate is unbiased for linear losses (tested).
    A second problem of cleverhans 4.0 under tf-keras >= 2.11: ``SPSAAdam(lr=...)`` passes the removed ``lr``
    argument, which tf-keras ignores with a warning, so cleverhans' SPSA silently runs at Adam's default 0.001
    whatever ``learning_rate`` is given (10x smaller than its default 0.01). Ours uses ``step_size`` as given.

    Args:
        model_or_predict_fn: Keras model, object with ``predict(x) -> scores``, or callable ``f(x) -> scores``.
        x: inputs (n, ...), in [clip_min, clip_max].
        y: true labels (untargeted) or targets (targeted): int (n,) or one-hot.
        eps: L-inf budget in input units ([0, 1] for images).
        norm: only "inf" (the SPSA paper's threat model).
        steps: Adam steps (cleverhans ``nb_iter``).
        step_size: Adam learning rate, in input units (cleverhans ``learning_rate``).
        delta: finite-difference step in input units.
        spsa_samples: queries per gradient estimate (even; antithetic pairs).
        spsa_iters: gradient estimates averaged per step.
        targeted: treat ``y`` as target classes.
        clip_min, clip_max: valid input range.
        rand_init: start from a uniform point of the eps-ball (as cleverhans does) instead of ``x``.
        early_stop: stop each sample at its first success.
        batch_size: samples attacked together; each step scores ``batch_size * spsa_samples`` inputs (built at most
            8,192 at a time, sent to Keras models in chunks of 1,024).
        seed: seed of the attack's random generator; same seed and batch_size -> identical output.
        verbose: 1 shows a progress bar, 0 is silent.
        return_info: also return an :class:`AttackInfo`.

    Returns:
        ``x_adv`` (float32), or ``(x_adv, info)`` with per-sample ``queries`` (at most
        ``steps * (spsa_samples * spsa_iters + 1)``) and ``success`` (the model's verdict on ``x_adv``).

    Raises:
        ValueError: bad eps, norm (only L-inf), x, y, steps, step_size, delta, spsa_samples (even, >= 2),
            spsa_iters, batch_size or seed.

    References:
        Uesato, O'Donoghue, van den Oord, Kohli. Adversarial Risk and the Dangers of Evaluating Against Weak Attacks.
        ICML 2018, arXiv 1802.05666. Spall 1992 (SPSA). Kingma, Ba 2015, arXiv 1412.6980 (Adam).
    """
    x_in, labels, norm = check_attack_inputs(x, y, eps, norm, clip_min, clip_max)
    if norm != "inf":
        raise ValueError("spsa supports only the L-inf threat model of Uesato et al.; got norm='2' (use "
                         "square(norm=2) for a score-based L2 attack)")
    steps = check_int("steps", steps)
    step_size = check_positive("step_size", step_size)
    delta = check_positive("delta", delta)
    spsa_samples = check_int("spsa_samples", spsa_samples, minimum=2)
    if spsa_samples % 2:
        raise ValueError(f"spsa_samples must be even (antithetic pairs); got spsa_samples={spsa_samples}")
    spsa_iters = check_int("spsa_iters", spsa_iters)
    batch_size = check_int("batch_size", batch_size)
    seed = check_int("seed", seed, minimum=0)

    n = len(x_in)
    predict = scores_fn(model_or_predict_fn, 1024)
    loss = MarginLoss(labels, targeted)
    rng = np.random.default_rng(seed)
    x_adv = x_in.copy()
    used = np.zeros(n, np.int64)
    success = np.zeros(n, bool)
    bar = ProgressBar(n, verbose, "spsa", unit="sample")
    checked = False

    for sl in batches(n, batch_size):
        xb = x_in[sl]
        ids = np.arange(sl.start, sl.stop)
        if rand_init and eps > 0:
            start = xb + rng.uniform(-eps, eps, size=xb.shape).astype(np.float32)
        else:
            start = xb
        cur = enforce_constraints(xb, start, eps, "inf", clip_min, clip_max)
        m1 = np.zeros(xb.shape, np.float64)
        m2 = np.zeros(xb.shape, np.float64)
        active = np.ones(len(xb), bool)
        for t in range(1, steps + 1):
            act = np.flatnonzero(active)
            if act.size == 0:
                break
            rows = ids[act]

            def batch_loss(pts: np.ndarray, rows=rows) -> np.ndarray:
                scores = predict(pts)
                return loss(scores, np.repeat(rows, len(pts) // len(rows)))

            # estimate in chunks of at most _MAX_INPUTS perturbed inputs, so memory stays bounded for any batch_size
            per = max(1, _MAX_INPUTS // spsa_samples)
            g = np.concatenate([
                _spsa_gradient(lambda pts, r=rows[j:j + per]: batch_loss(pts, r), cur[act[j:j + per]], delta,
                               spsa_samples, spsa_iters, rng) for j in range(0, len(act), per)])
            m1[act] = _ADAM_BETA1 * m1[act] + (1 - _ADAM_BETA1) * g
            m2[act] = _ADAM_BETA2 * m2[act] + (1 - _ADAM_BETA2) * g * g
            m_hat = m1[act] / (1 - _ADAM_BETA1 ** t)
            v_hat = m2[act] / (1 - _ADAM_BETA2 ** t)
            step = cur[act].astype(np.float64) - step_size * m_hat / (np.sqrt(v_hat) + _ADAM_EPS)
            cur[act] = enforce_constraints(xb[act], step.astype(np.float32), eps, "inf", clip_min, clip_max)
            scores = predict(cur[act])
            if not checked:
                as_int_labels(labels, n, scores.shape[1], name="y")
                checked = True
            used[rows] += spsa_samples * spsa_iters + 1
            succ = loss.success(scores, rows)
            success[rows] = succ
            if early_stop:
                active[act[succ]] = False
        x_adv[sl] = cur
        bar.update(len(xb))
    bar.close()
    if not return_info:
        return x_adv
    return x_adv, AttackInfo(name="spsa", queries=used, success=success, notes=[
        f"SPSA L-inf eps={eps:g}, {steps} steps, {spsa_samples}x{spsa_iters} samples, delta={delta:g}, "
        f"Adam lr={step_size:g}", "black-box: forward queries only; margin loss on "
        + ("log-probabilities" if loss.probabilities else "logits")])
