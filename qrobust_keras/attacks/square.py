"""Square attack (Andriushchenko et al. 2020): a score-based black-box attack, batched, L-inf and L2.

Needs only a function that returns scores (logits or probabilities) for a batch of inputs: a Keras model, an int8
TFLite runner with a ``predict`` method, an ensemble, a plain numpy function. It never computes a gradient.

Example:

>>> import numpy as np
>>> from qrobust_keras.attacks.square import square
>>> w = np.random.default_rng(0).normal(size=(3 * 8 * 8, 4))
>>> predict = lambda x: x.reshape(len(x), -1) @ w          # a linear "model" returning logits
>>> x = np.random.default_rng(1).uniform(size=(5, 8, 8, 3)).astype(np.float32)
>>> y = predict(x).argmax(1)
>>> x_adv, info = square(predict, x, y, eps=0.1, queries=200, verbose=0, return_info=True)
>>> bool(np.abs(x_adv.astype(np.float64) - x).max() <= 0.1) and bool(info.queries.max() <= 200)
True
"""

from __future__ import annotations

from typing import Any

import numpy as np

from qrobust_keras._checks import check_int, check_positive
from qrobust_keras.attacks._blackbox import MarginLoss, scores_fn
from qrobust_keras.attacks.common import AttackInfo, as_int_labels, check_attack_inputs, enforce_constraints
from qrobust_keras.attacks.plumbing import ProgressBar

__all__ = ["square"]

# Schedule of the fraction p of pixels changed per query (arXiv 1912.00049, Sec. 3 and the authors' code): p_init is
# halved at these iterations of a 10,000-iteration run; other budgets rescale the iteration index to 10,000.
_P_BREAKS = np.array([10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000])


def _p_schedule(p_init: float, it: np.ndarray, budget: int) -> np.ndarray:
    scaled = (np.asarray(it, np.int64) * 10000) // max(budget, 1)
    return p_init / 2.0 ** np.searchsorted(_P_BREAKS, scaled, side="left")


def _pseudo_gaussian(s: int) -> np.ndarray:
    """The L2 Square window of side ``s``: two stacked halves of opposite sign, unit L2 norm.

    Each half is a centred "pseudo-Gaussian": concentric rectangles of half-width k = 0, 1, ... each adding
    1/(k+1)^2, so a pixel at Chebyshev distance d (in rings) from the centre carries sum_{k>=d} 1/(k+1)^2.
    """

    def half(h: int, w: int) -> np.ndarray:
        if h == 0 or w == 0:
            return np.zeros((h, w))
        ci, cj = h // 2, w // 2
        d = np.maximum(np.abs(np.arange(h)[:, None] - ci), np.abs(np.arange(w)[None, :] - cj))
        rings = max(ci, cj, h - 1 - ci, w - 1 - cj) + 1
        tail = np.cumsum((1.0 / (np.arange(rings) + 1.0) ** 2)[::-1])[::-1]  # tail[d] = sum_{k>=d} 1/(k+1)^2
        out = tail[d]
        return out / np.linalg.norm(out)

    top = s // 2
    win = np.concatenate([half(top, s), -half(s - top, s)], axis=0)
    return win / np.linalg.norm(win)


def _windows(rng: np.random.Generator, m: int, s: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column index arrays (m, s) of m random s x s windows inside an h x w image."""
    r = rng.integers(0, h - s + 1, size=m)
    c = rng.integers(0, w - s + 1, size=m)
    ar = np.arange(s)
    return r[:, None] + ar, c[:, None] + ar


def square(
    model_or_predict_fn: Any,
    x: np.ndarray,
    y: np.ndarray,
    eps: float,
    norm: Any = "inf",
    queries: int = 1000,
    p_init: float | None = None,
    targeted: bool = False,
    clip_min: float = 0.0,
    clip_max: float = 1.0,
    batch_size: int = 256,
    seed: int = 0,
    verbose: int = 1,
    return_info: bool = False,
    restarts: int = 1,
) -> np.ndarray | tuple[np.ndarray, AttackInfo]:
    """Square attack: random square-shaped updates at the boundary of the eps-ball, kept when the margin drops.

    Minimises the margin loss ``L = z_y - max_{j!=y} z_j`` (targeted: ``max_{j!=t} z_j - z_t``) on the scores the
    model returns (logits; probabilities are mapped to log-probabilities, whose margin equals the logit margin;
    Keras models ending in softmax are queried through their logits). A new sample costs two queries: its clean
    input (a sample the model already gets wrong is returned unchanged) and the initial perturbation, kept only if
    it lowers the margin (as ART does; the authors' code keeps it always, which measured 2-3 points weaker on our
    small CIFAR-10 test model). L-inf: start at vertical stripes of +-eps, then
    each query sets one random window of side ``s`` (per channel one sign) to +-eps. L2: start at a grid of
    pseudo-Gaussian bumps, then each query moves mass from a second random window into a new pseudo-Gaussian window
    and renormalises to ``||delta||_2 = eps``. The window side shrinks with the paper's schedule:
    ``s = round(sqrt(p * H * W))`` with ``p = p_init / 2^k``, halving at iterations 10, 50, 200, 500, 1000, 2000,
    4000, 6000, 8000 of 10,000 (rescaled to ``queries``).

    Batched: samples are attacked together with one model call of at most ``batch_size`` inputs per iteration (a
    newly entered sample takes two: clean and initial perturbation); a sample leaves as soon as it is fooled or
    has used its budget, and pending samples take its place, so model calls stay full. The returned point of every sample is exactly the point the model scored.

    Args:
        model_or_predict_fn: Keras model, object with ``predict(x) -> scores`` (e.g. an int8 TFLite runner), or a
            callable ``f(x) -> scores`` of shape (n, classes). Only forward queries are made.
        x: inputs, shape (n, H, W, C) or (n, H, W), in [clip_min, clip_max].
        y: true labels (untargeted) or target labels (targeted): int (n,) or one-hot (n, classes).
        eps: budget in input units ([0, 1] for images); L-inf or L2 according to ``norm``.
        norm: "inf" or "2" (np.inf, "linf", 2, "l2" accepted).
        queries: per-sample query budget (>= 1), counting every input the model scores for that sample, the clean
            input and the initial perturbation included (so ``queries - 2`` square steps).
        p_init: initial fraction of pixels changed per query; default 0.05 (L-inf) and 0.1 (L2), the paper's values.
        targeted: treat ``y`` as target classes.
        clip_min, clip_max: valid input range.
        batch_size: samples attacked together (= inputs per model call).
        seed: seed of the attack's own random generator; same seed and batch_size -> identical output.
        verbose: 1 shows a progress bar over samples, 0 is silent.
        return_info: also return an :class:`AttackInfo`.
        restarts: runs in all; every run after the first attacks again, from a fresh initial perturbation and
            random windows (generator seeded ``[seed, r]``), only the samples no earlier run fooled. ART's AutoAttack
            runs Square with 5 restarts; Square's random search is where a second start helps most on models whose
            gradients mislead (see docs/attacks.md).

    Returns:
        ``x_adv`` (float32, same shape as ``x``), or ``(x_adv, info)`` with ``info.queries`` (per-sample queries used
        over all runs, <= ``restarts * queries``) and ``info.success`` (per-sample, the model's own verdict on the returned ``x_adv``).

    Raises:
        ValueError: bad eps, norm, clip range, x (NaN, outside the range, wrong rank), labels, queries, p_init,
            batch_size or seed, or a predict function that returns no (n, classes) scores.

    References:
        Andriushchenko, Croce, Flammarion, Hein. Square Attack: a query-efficient black-box adversarial attack via
        random search. ECCV 2020, arXiv 1912.00049.
    """
    x_in, labels, norm = check_attack_inputs(x, y, eps, norm, clip_min, clip_max)
    if x_in.ndim not in (3, 4):
        raise ValueError(f"x must be images of shape (n, H, W, C) or (n, H, W) for the square attack; got shape "
                         f"{x_in.shape}")
    queries = check_int("queries", queries)
    batch_size = check_int("batch_size", batch_size)
    seed = check_int("seed", seed, minimum=0)
    if p_init is None:
        p_init = 0.05 if norm == "inf" else 0.1
    p_init = check_positive("p_init", p_init)
    if p_init > 1:
        raise ValueError(f"p_init must be in (0, 1]; got p_init={p_init!r}")
    restarts = check_int("restarts", restarts)
    predict = scores_fn(model_or_predict_fn, batch_size)

    if eps == 0:  # nothing to search: score the clean inputs once
        scores = predict(x_in)
        as_int_labels(labels, len(x_in), scores.shape[1], name="y")
        if not return_info:
            return x_in.copy()
        return x_in.copy(), AttackInfo(name="square", queries=np.ones(len(x_in), np.int64),
                                       success=MarginLoss(labels, targeted).success(scores),
                                       notes=["eps=0: clean inputs scored once"])
    run = dict(eps=eps, norm=norm, queries=queries, p_init=p_init, targeted=targeted, clip_min=clip_min,
               clip_max=clip_max, batch_size=batch_size, verbose=verbose)
    x_adv, used, success, loss = _square_run(predict, x_in, labels, np.random.default_rng(seed), **run)
    for restart in range(1, restarts):
        left = np.flatnonzero(~success)
        if not left.size:
            break
        x_r, used_r, success_r, _ = _square_run(predict, x_in[left], labels[left],
                                                np.random.default_rng([seed, restart]), **run)
        used[left] += used_r
        x_adv[left[success_r]] = x_r[success_r]
        success[left] = success_r
    if not return_info:
        return x_adv
    info = AttackInfo(name="square", queries=used, success=success, notes=[
        f"Square {'L-inf' if norm == 'inf' else 'L2'} eps={eps:g}, {queries} queries per sample and run, "
        f"p_init={p_init:g}" + (f", {restarts} restarts" if restarts > 1 else ""),
        "black-box: forward queries only; margin loss on "
        + ("log-probabilities" if loss.probabilities else "logits")])
    return x_adv, info


def _square_run(predict, x_in, labels, rng, *, eps, norm, queries, p_init, targeted, clip_min, clip_max,
                batch_size, verbose):
    """One Square run over all of ``x_in``: ``(x_adv, queries used, success, loss)``."""
    xs = x_in if x_in.ndim == 4 else x_in[..., None]
    n, h, w, c = xs.shape
    loss = MarginLoss(labels, targeted)

    x_best = xs.copy()
    loss_best = np.full(n, np.inf)
    used = np.zeros(n, np.int64)
    success = np.zeros(n, bool)
    if norm == "inf":
        # Per-sample exact ends of the box [x - eps, x + eps] cut to the clip range: every candidate takes its values
        # from these two arrays, so it satisfies both bounds exactly without per-query projection.
        lo, hi = _box_ends(xs, eps, clip_min, clip_max)
    pending = list(range(n - 1, -1, -1))  # pop() from the end -> samples enter in index order
    pool: list[int] = []
    bar = ProgressBar(n, verbose, "square", unit="sample")
    checked_classes = False

    per_new = 2 if queries >= 2 else 1  # a new sample is scored clean and at its initial perturbation
    while pending or pool:
        rows_now = len(pool)  # every sample already in the pool costs one row this iteration
        while pending and (not pool or rows_now + per_new <= batch_size):
            pool.append(pending.pop())
            rows_now += per_new
        idx = np.asarray(pool, np.int64)
        first = used[idx] == 0  # new samples: score the clean input and the initial perturbation
        cand = x_best[idx]  # fancy indexing: a copy
        fi = np.flatnonzero(first)
        init = None
        if fi.size and queries >= 2:
            init = (_init_linf if norm == "inf" else _init_l2)(
                rng, xs[idx[fi]], eps, clip_min, clip_max, *((lo[idx[fi]], hi[idx[fi]]) if norm == "inf" else ()))
        rest = np.flatnonzero(~first)
        if rest.size:
            it = used[idx[rest]] - 2  # iterations done after the clean and the initial point
            p = _p_schedule(p_init, it, queries)
            side = np.sqrt(p * h * w)
            if norm == "inf":
                s_all = np.clip(np.round(side).astype(np.int64), 1, max(min(h, w) - 1, 1))
            else:
                s_all = np.maximum(np.round(side).astype(np.int64), 3)
                s_all = s_all + (s_all % 2 == 0)
                s_all = np.minimum(s_all, min(h, w))
            for s in np.unique(s_all):
                sel = rest[s_all == s]
                if norm == "inf":
                    _step_linf(rng, cand, sel, idx[sel], lo, hi, int(s))
                else:
                    cand[sel] = _step_l2(rng, xs[idx[sel]], x_best[idx[sel]], eps, int(s), clip_min, clip_max)
        batch = cand if init is None else np.concatenate([cand, init])
        scores_all = predict(batch if x_in.ndim == 4 else batch[..., 0])
        if not checked_classes:
            as_int_labels(labels, n, scores_all.shape[1], name="y")
            checked_classes = True
        rows = [(idx, cand, scores_all[:len(idx)])]
        if init is not None:
            rows.append((idx[fi], init, scores_all[len(idx):]))
        for ids, pts, scores in rows:  # clean/current proposals first, then the initial perturbations
            used[ids] += 1
            c_loss = loss(scores, ids)
            c_succ = loss.success(scores, ids)
            take = ~success[ids] & ((c_loss < loss_best[ids]) | c_succ)
            x_best[ids[take]] = pts[take]
            loss_best[ids[take]] = c_loss[take]
            success[ids[take]] = c_succ[take]
        finished = success[idx] | (used[idx] >= queries)
        if np.any(finished):
            done = set(idx[finished].tolist())
            pool = [i for i in pool if i not in done]
            bar.update(len(done))
    bar.close()
    return (x_best if x_in.ndim == 4 else x_best[..., 0]), used, success, loss


def _box_ends(x: np.ndarray, eps: float, clip_min: float, clip_max: float) -> tuple[np.ndarray, np.ndarray]:
    """float32 ``x - eps`` and ``x + eps``, rounded inwards where float32 rounding would overshoot eps (checked in
    float64, as :func:`enforce_constraints` checks), then cut to the clip range. One float32 step always suffices."""
    x64 = x.astype(np.float64)
    hi64, lo64 = x64 + eps, x64 - eps
    hi, lo = hi64.astype(np.float32), lo64.astype(np.float32)
    hi = np.where(hi.astype(np.float64) > hi64, np.nextafter(hi, np.float32(-np.inf)), hi)
    lo = np.where(lo.astype(np.float64) < lo64, np.nextafter(lo, np.float32(np.inf)), lo)
    return np.clip(lo, clip_min, clip_max).astype(np.float32), np.clip(hi, clip_min, clip_max).astype(np.float32)


def _init_linf(rng, x, eps, clip_min, clip_max, lo, hi) -> np.ndarray:
    """Vertical stripes: every column of every channel at +eps or -eps (exact box ends ``lo``/``hi``)."""
    m, _, w, c = x.shape
    up = rng.random((m, 1, w, c)) < 0.5
    return np.where(up, hi, lo)


def _step_linf(rng, cand, rows, ids, lo, hi, s) -> None:
    """L-inf Square proposals, in place: in ``cand[rows]`` (the current points of samples ``ids``) one random s x s
    window per sample, with one random sign per channel, is set to the exact box ends ``hi``/``lo``."""
    m = len(rows)
    _, h, w, c = cand.shape
    r, cl = _windows(rng, m, s, h, w)
    rr, cc = r[:, :, None], cl[:, None, :]
    cur = cand[rows[:, None, None], rr, cc]  # (m, s, s, c)
    gi = ids[:, None, None]
    lo_w, hi_w = lo[gi, rr, cc], hi[gi, rr, cc]
    up = rng.random((m, 1, 1, c)) < 0.5
    new = np.where(up, hi_w, lo_w)
    # As in the authors' code: redraw the signs where the window would not change (up to 10 times).
    for _ in range(10):
        same = np.all(np.abs(new - cur) < 1e-7, axis=(1, 2, 3))
        if not np.any(same):
            break
        up[same] = rng.random((int(same.sum()), 1, 1, c)) < 0.5
        new = np.where(up, hi_w, lo_w)
    cand[rows[:, None, None], rr, cc] = new


def _init_l2(rng, x, eps, clip_min, clip_max) -> np.ndarray:
    """A grid of pseudo-Gaussian bumps (side min(H, W) // 5) with random signs per channel, scaled to norm eps."""
    m, h, w, c = x.shape
    s = max(min(h, w) // 5, 1)
    delta = np.zeros(x.shape, np.float64)
    top, left = (h - s * (h // s)) // 2, (w - s * (w // s)) // 2
    for i in range(h // s):
        for j in range(w // s):
            win = _pseudo_gaussian(s)
            flip = rng.random(m) < 0.5
            wins = np.where(flip[:, None, None], win.T[None], win[None])  # per-sample random transpose
            sign = np.where(rng.random((m, 1, 1, c)) < 0.5, -1.0, 1.0)
            r0, c0 = top + i * s, left + j * s
            delta[:, r0:r0 + s, c0:c0 + s, :] += wins[..., None] * sign
    return _l2_candidate(x, delta, eps, clip_min, clip_max)


def _sqnorm(a: np.ndarray) -> np.ndarray:
    """Per-sample squared L2 norm, accumulated in float64."""
    flat = a.reshape(len(a), -1)
    return np.einsum("ij,ij->i", flat, flat, dtype=np.float64)


def _l2_candidate(x, delta, eps, clip_min, clip_max) -> np.ndarray:
    """``clip(x + delta * eps / ||delta||_2)``, float32, with the norm bound checked (and enforced) in float64."""
    delta = np.asarray(delta, np.float32)
    norms = np.sqrt(_sqnorm(delta))
    scale = (eps / np.maximum(norms, 1e-12)).astype(np.float32).reshape((-1,) + (1,) * (delta.ndim - 1))
    cand = np.clip(x + delta * scale, clip_min, clip_max)
    diff = cand.astype(np.float64) - x
    over = _sqnorm(diff) > eps * eps
    if np.any(over):
        cand[over] = enforce_constraints(x[over], cand[over], eps, "2", clip_min, clip_max)
    return cand


def _step_l2(rng, x, x_best, eps, s, clip_min, clip_max) -> np.ndarray:
    """One L2 Square proposal per sample (arXiv 1912.00049, Alg. 3).

    The mass of two random windows W1, W2 is redistributed: W2 is emptied and W1 gets the old W1 direction plus a
    new pseudo-Gaussian of random sign (per channel), scaled so that W1 carries the mass of W1 and W2 together plus
    the unused budget; the whole perturbation is then rescaled to norm eps.
    """
    m, h, w, c = x.shape
    delta = x_best - x  # float32
    ii = np.arange(m)[:, None, None]
    r1, c1 = _windows(rng, m, s, h, w)
    r2, c2 = _windows(rng, m, s, h, w)
    w1 = (ii, r1[:, :, None], c1[:, None, :])
    w2 = (ii, r2[:, :, None], c2[:, None, :])
    d1 = delta[w1].astype(np.float64)  # (m, s, s, c)
    d2 = delta[w2].astype(np.float64)
    sq1 = np.sum(d1 ** 2, axis=(1, 2), keepdims=True)  # per channel (m, 1, 1, c)
    # pixels of W2 that also lie in W1 are counted once in the union
    in1 = (((r2 >= r1[:, :1]) & (r2 < r1[:, :1] + s))[:, :, None]
           & ((c2 >= c1[:, :1]) & (c2 < c1[:, :1] + s))[:, None, :])[..., None]
    sq_union = sq1 + np.sum(np.where(in1, 0.0, d2 ** 2), axis=(1, 2), keepdims=True)
    sq_img = _sqnorm(delta).reshape(m, 1, 1, 1)
    win = _pseudo_gaussian(s)
    flip = rng.random(m) < 0.5
    wins = np.where(flip[:, None, None], win.T[None], win[None])[..., None]
    sign = np.where(rng.random((m, 1, 1, c)) < 0.5, -1.0, 1.0)
    new = wins * sign + d1 / (1e-10 + np.sqrt(sq1))
    new_norm = np.sqrt(np.sum(new ** 2, axis=(1, 2), keepdims=True))
    target = np.sqrt(np.maximum(eps ** 2 - sq_img, 0.0) / c + sq_union)
    new = new / np.maximum(new_norm, 1e-12) * target
    delta[w2] = 0.0
    delta[w1] = new
    return _l2_candidate(x, delta, eps, clip_min, clip_max)
