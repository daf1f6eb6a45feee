"""HopSkipJump, Boundary and ZOO from the Adversarial Robustness Toolbox, behind the library's attack signature.

They need only a predict function: each wraps our query-counting :class:`~qrobust_keras.attacks.common.PredictFn`
in an ART ``BlackBoxClassifierNeuralNetwork`` (HopSkipJump and Boundary see one-hot labels only: decision-based),
runs ART one sample at a time so the queries of every sample are counted, and reports them. ART is an optional
extra: ``pip install qrobust-keras[blackbox]``.

HopSkipJump, Boundary and ZOO search for a *minimal* adversarial perturbation rather than the strongest one within a
budget. The result is projected onto the eps-ball and the clip range (:func:`enforce_constraints`) and scored once
more, so ``info.success`` is the success **at the budget eps**, comparable with the other attacks; the median
norm of the unprojected perturbations is given in ``info.notes``.

Example:

>>> import numpy as np
>>> from qrobust_keras.attacks.art_blackbox import hopskipjump
>>> w = np.random.default_rng(0).normal(size=(3 * 8 * 8, 4))
>>> predict = lambda x: x.reshape(len(x), -1) @ w
>>> x = np.random.default_rng(1).uniform(size=(2, 8, 8, 3)).astype(np.float32)
>>> x_adv, info = hopskipjump(predict, x, predict(x).argmax(1), eps=1.0, max_iter=3, max_eval=100, init_eval=10,
...                           verbose=0, return_info=True)
>>> bool(np.all(np.linalg.norm((x_adv - x).reshape(2, -1), axis=1) <= 1.0)), bool(info.queries.min() > 0)
(True, True)
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from qrobust_keras._checks import check_int, check_positive
from qrobust_keras.attacks._blackbox import (
    MarginLoss,
    one_hot_labels,
    scores_fn,
    seeded_global_numpy,
)
from qrobust_keras.attacks.common import (
    AttackInfo,
    PredictFn,
    check_attack_inputs,
    enforce_constraints,
    perturbation_norms,
)
from qrobust_keras.attacks.plumbing import ProgressBar

__all__ = ["hopskipjump", "boundary", "zoo"]

_INSTALL = "pip install qrobust-keras[blackbox]"


def _require_art():
    """Import ART's black-box classifier, or raise an ImportError that says how to install it."""
    try:
        from art.estimators.classification import BlackBoxClassifierNeuralNetwork
    except ImportError as err:
        raise ImportError("hopskipjump, boundary and zoo wrap the Adversarial Robustness Toolbox (ART), which is not "
                          f"installed; install the optional extra: {_INSTALL}") from err
    return BlackBoxClassifierNeuralNetwork


def _initial_adversarial(predict: PredictFn, x: np.ndarray, label: int, targeted: bool, pool: np.ndarray,
                         pool_pred: np.ndarray, tries: int, rng: np.random.Generator, clip_min: float,
                         clip_max: float) -> np.ndarray | None:
    """A seeded starting point for the decision-based attacks, moved close to ``x`` by bisection on the segment.

    Untargeted: uniform noise until one is misclassified. Targeted: another input of the batch that the model
    already assigns to the target, else noise. ART draws this start from an unseeded generator; doing it here keeps
    the attacks reproducible.
    """
    ok = (lambda p: p == label) if targeted else (lambda p: p != label)
    start = None
    cands = np.flatnonzero(ok(pool_pred))
    if targeted and cands.size:
        start = pool[cands[0]]
    for _ in range(0 if start is not None else (tries + 9) // 10):
        noise = rng.uniform(clip_min, clip_max, size=(10,) + x.shape).astype(np.float32)
        hit = np.flatnonzero(ok(predict(noise).argmax(1)))
        if hit.size:
            start = noise[hit[0]]
            break
    if start is None:
        return None
    lo, hi = 0.0, 1.0  # blend x + a (start - x): a = hi is adversarial
    for _ in range(10):
        mid = (lo + hi) / 2
        if ok(predict((x + mid * (start - x))[None]).argmax(1)[0]):
            hi = mid
        else:
            lo = mid
    return (x + hi * (start - x)).astype(np.float32)


def _run(name: str, make_attack: Callable, model_or_predict_fn: Any, x: Any, y: Any, eps: float, norm: Any,
         targeted: bool, clip_min: float, clip_max: float, batch_size: int, seed: int, verbose: int,
         return_info: bool, label_only: bool, init_size: int | None):
    x_in, labels, norm = check_attack_inputs(x, y, eps, norm, clip_min, clip_max)
    batch_size = check_int("batch_size", batch_size)
    seed = check_int("seed", seed, minimum=0)
    bbnn = _require_art()
    predict = scores_fn(model_or_predict_fn, batch_size)
    loss = MarginLoss(labels, targeted)
    n = len(x_in)
    clean = predict(x_in)
    loss(clean)  # checks the labels against the number of classes
    classes = clean.shape[1]
    clean_pred = clean.argmax(1)
    used = np.ones(n, np.int64)
    view = one_hot_labels(predict) if label_only else predict
    clf = bbnn(view, tuple(x_in.shape[1:]), classes, channels_first=False,
               clip_values=(float(clip_min), float(clip_max)))
    attack = make_attack(clf)
    x_min = x_in.copy()
    found = loss.success(clean)  # already fooled: keep x
    rng = np.random.default_rng(seed)
    bar = ProgressBar(n, verbose, name, unit="sample")
    for i in range(n):
        if found[i]:
            bar.update(1)
            continue
        before = predict.queries
        kwargs = {}
        with seeded_global_numpy(seed * 100003 + i):
            if init_size is not None:
                init = _initial_adversarial(predict, x_in[i], int(labels[i]), targeted, x_in, clean_pred, init_size,
                                            rng, clip_min, clip_max)
                if init is None:
                    used[i] += predict.queries - before
                    bar.update(1)
                    continue
                kwargs["x_adv_init"] = init[None]
            onehot = np.eye(classes, dtype=np.float32)[labels[i:i + 1]]
            out = attack.generate(x_in[i:i + 1], onehot, **kwargs)
        x_min[i] = np.asarray(out, np.float32)[0]
        used[i] += predict.queries - before
        bar.update(1)
    bar.close()
    min_norms = perturbation_norms(x_in, x_min, norm)
    x_adv = enforce_constraints(x_in, x_min, eps, norm, clip_min, clip_max)
    todo = ~found
    success = found.copy()
    if np.any(todo):
        success[todo] = loss.success(predict(x_adv[todo]), np.flatnonzero(todo))
        used[todo] += 1
    if not return_info:
        return x_adv
    moved = todo & (min_norms > 0)
    median = float(np.median(min_norms[moved])) if moved.any() else float("nan")
    info = AttackInfo(name=name, queries=used, success=success, notes=[
        f"ART {name} (minimal-perturbation attack) projected to the {'L-inf' if norm == 'inf' else 'L2'} ball of "
        f"eps={eps:g}: success is measured at the budget",
        f"median {'L-inf' if norm == 'inf' else 'L2'} norm of the unprojected perturbations: {median:.4g}",
        "queries count every input scored, the clean one and the final check included"
        + ("; the attack saw labels only" if label_only else "")])
    return x_adv, info


def hopskipjump(
    model_or_predict_fn: Any,
    x: np.ndarray,
    y: np.ndarray,
    eps: float,
    norm: Any = "2",
    max_iter: int = 50,
    max_eval: int = 10000,
    init_eval: int = 100,
    init_size: int = 100,
    targeted: bool = False,
    clip_min: float = 0.0,
    clip_max: float = 1.0,
    batch_size: int = 64,
    seed: int = 0,
    verbose: int = 1,
    return_info: bool = False,
) -> np.ndarray | tuple[np.ndarray, AttackInfo]:
    """HopSkipJump (decision-based; ART ``HopSkipJump``), projected to the budget.

    Args:
        model_or_predict_fn: Keras model, object with ``predict``, or callable returning scores (only the top label
            is used).
        x: inputs (n, ...), in [clip_min, clip_max].
        y: true labels (untargeted) or targets (targeted), int (n,) or one-hot.
        eps: budget in input units; the minimal perturbation found is projected to it.
        norm: "2" or "inf": the geometry HopSkipJump optimises in and the ball it is projected to.
        max_iter: HopSkipJump iterations (ART default 50).
        max_eval: maximum queries per gradient-direction estimate (ART default 10,000).
        init_eval: initial queries per estimate (ART default 100).
        init_size: random draws for the starting adversarial point.
        targeted: treat ``y`` as target classes (the start is another input of ``x`` already in the target class,
            else noise).
        clip_min, clip_max: valid input range.
        batch_size: ART's inference batch size.
        seed: seeds the starting points and ART's random directions (numpy's global RNG is restored afterwards).
        verbose: 1 progress bar, 0 silent.
        return_info: also return an :class:`AttackInfo` (per-sample queries, success at eps).

    Returns:
        ``x_adv``, or ``(x_adv, info)``.

    Raises:
        ImportError: ART is not installed (``pip install qrobust-keras[blackbox]``).
        ValueError: bad eps, norm, x, y or counts.

    References:
        Chen, Jordan, Wainwright. HopSkipJumpAttack: a query-efficient decision-based attack. IEEE S&P 2020,
        arXiv 1904.02144.
    """
    max_iter = check_int("max_iter", max_iter)
    max_eval = check_int("max_eval", max_eval)
    init_eval = check_int("init_eval", init_eval)
    init_size = check_int("init_size", init_size)
    if init_eval > max_eval:
        raise ValueError(f"init_eval must be <= max_eval; got init_eval={init_eval}, max_eval={max_eval}")

    def make(clf):
        from art.attacks.evasion import HopSkipJump

        return HopSkipJump(clf, batch_size=batch_size, targeted=bool(targeted),
                           norm=np.inf if _norm_of(norm) == "inf" else 2, max_iter=max_iter, max_eval=max_eval,
                           init_eval=init_eval, init_size=init_size, verbose=False)

    return _run("hopskipjump", make, model_or_predict_fn, x, y, eps, norm, targeted, clip_min, clip_max, batch_size,
                seed, verbose, return_info, label_only=True, init_size=init_size)


def boundary(
    model_or_predict_fn: Any,
    x: np.ndarray,
    y: np.ndarray,
    eps: float,
    norm: Any = "2",
    max_iter: int = 5000,
    delta: float = 0.01,
    epsilon: float = 0.01,
    step_adapt: float = 0.667,
    num_trial: int = 25,
    sample_size: int = 20,
    init_size: int = 100,
    targeted: bool = False,
    clip_min: float = 0.0,
    clip_max: float = 1.0,
    batch_size: int = 64,
    seed: int = 0,
    verbose: int = 1,
    return_info: bool = False,
) -> np.ndarray | tuple[np.ndarray, AttackInfo]:
    """Boundary attack (decision-based, L2 random walk; ART ``BoundaryAttack``), projected to the budget.

    ``targeted`` is passed to ART explicitly: ART's ``BoundaryAttack`` is targeted by default.

    Args:
        model_or_predict_fn: Keras model, object with ``predict``, or callable returning scores (only the top label
            is used).
        x, y, eps, targeted, clip_min, clip_max, batch_size, seed, verbose, return_info: as in :func:`hopskipjump`.
        norm: the ball the (L2-minimal) result is projected to: "2" or "inf".
        max_iter: Boundary iterations (ART default 5,000).
        delta: initial orthogonal step size; epsilon: initial step towards the input; step_adapt: their adaptation
            factor; num_trial, sample_size: trials and samples per step (ART defaults).
        init_size: random draws for the starting adversarial point.

    Returns:
        ``x_adv``, or ``(x_adv, info)``.

    Raises:
        ImportError: ART is not installed (``pip install qrobust-keras[blackbox]``).
        ValueError: bad eps, norm, x, y or parameters.

    References:
        Brendel, Rauber, Bethge. Decision-based adversarial attacks. ICLR 2018, arXiv 1712.04248.
    """
    max_iter = check_int("max_iter", max_iter)
    num_trial = check_int("num_trial", num_trial)
    sample_size = check_int("sample_size", sample_size)
    init_size = check_int("init_size", init_size)
    delta = check_positive("delta", delta)
    epsilon = check_positive("epsilon", epsilon)
    step_adapt = check_positive("step_adapt", step_adapt)
    if step_adapt >= 1:
        raise ValueError(f"step_adapt must be in (0, 1); got step_adapt={step_adapt!r}")

    def make(clf):
        from art.attacks.evasion import BoundaryAttack

        return BoundaryAttack(clf, batch_size=batch_size, targeted=bool(targeted), delta=delta, epsilon=epsilon,
                              step_adapt=step_adapt, max_iter=max_iter, num_trial=num_trial,
                              sample_size=sample_size, init_size=init_size, verbose=False)

    return _run("boundary", make, model_or_predict_fn, x, y, eps, norm, targeted, clip_min, clip_max, batch_size,
                seed, verbose, return_info, label_only=True, init_size=init_size)


def zoo(
    model_or_predict_fn: Any,
    x: np.ndarray,
    y: np.ndarray,
    eps: float,
    norm: Any = "2",
    max_iter: int = 10,
    learning_rate: float = 0.01,
    binary_search_steps: int = 1,
    initial_const: float = 1e-3,
    confidence: float = 0.0,
    nb_parallel: int = 128,
    variable_h: float = 1e-4,
    use_resize: bool = False,
    use_importance: bool = False,
    targeted: bool = False,
    clip_min: float = 0.0,
    clip_max: float = 1.0,
    batch_size: int = 64,
    seed: int = 0,
    verbose: int = 1,
    return_info: bool = False,
) -> np.ndarray | tuple[np.ndarray, AttackInfo]:
    """ZOO (score-based zeroth-order C&W-L2 with coordinate-wise finite differences; ART ``ZooAttack``), projected.

    Args:
        model_or_predict_fn: Keras model (queried through its logits), object with ``predict``, or callable
            returning scores.
        x, y, eps, targeted, clip_min, clip_max, seed, verbose, return_info: as in :func:`hopskipjump`.
        norm: the ball the (L2-minimal) result is projected to: "2" or "inf".
        max_iter, learning_rate, binary_search_steps, initial_const, confidence: the C&W optimisation (ART defaults).
        nb_parallel: coordinates updated per iteration; variable_h: finite-difference step.
        use_resize, use_importance: ZOO's attack-space reduction and importance sampling (off by default: they
            need image inputs of at least 32 x 32).
        batch_size: ART's inference batch size.

    Returns:
        ``x_adv``, or ``(x_adv, info)``.

    Raises:
        ImportError: ART is not installed (``pip install qrobust-keras[blackbox]``).
        ValueError: bad eps, norm, x, y or parameters.

    References:
        Chen, Zhang, Sharma, Yi, Hsieh. ZOO: zeroth order optimization based black-box attacks. AISec 2017,
        arXiv 1708.03999.
    """
    max_iter = check_int("max_iter", max_iter)
    binary_search_steps = check_int("binary_search_steps", binary_search_steps)
    nb_parallel = check_int("nb_parallel", nb_parallel)
    learning_rate = check_positive("learning_rate", learning_rate)
    initial_const = check_positive("initial_const", initial_const)
    confidence = check_positive("confidence", confidence, allow_zero=True)
    variable_h = check_positive("variable_h", variable_h)

    def make(clf):
        from art.attacks.evasion import ZooAttack

        return ZooAttack(clf, confidence=confidence, targeted=bool(targeted), learning_rate=learning_rate,
                         max_iter=max_iter, binary_search_steps=binary_search_steps, initial_const=initial_const,
                         abort_early=True, use_resize=use_resize, use_importance=use_importance,
                         nb_parallel=nb_parallel, batch_size=1, variable_h=variable_h, verbose=False)

    return _run("zoo", make, model_or_predict_fn, x, y, eps, norm, targeted, clip_min, clip_max, batch_size, seed,
                verbose, return_info, label_only=False, init_size=None)


def _norm_of(norm: Any) -> str:
    from qrobust_keras.attacks.common import parse_norm

    return parse_norm(norm)
