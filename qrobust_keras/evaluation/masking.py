"""Gradient-masking diagnostics: sanity checks that tell real robustness from gradients that hide the attack.

Quantized models often *look* robust because their gradients are zero, shattered or misleading (Bernhard et al.
2019, arXiv 1909.12741). :func:`diagnose_gradient_masking` runs the checks Carlini et al. (2019, "On Evaluating
Adversarial Robustness", arXiv 1902.06705, sec. 5 and its checklist) and Athalye et al. (2018, "Obfuscated Gradients
Give a False Sense of Security", arXiv 1802.00420, sec. 3) recommend, and reports each one as passed or flagged with
its numbers and a one-line explanation.

Example:

>>> import numpy as np
>>> from qrobust_keras._keras import keras
>>> from qrobust_keras.evaluation.masking import diagnose_gradient_masking
>>> model = keras.Sequential([keras.layers.Flatten(input_shape=(8, 8, 1)), keras.layers.Dense(3)])
>>> x = np.random.default_rng(0).uniform(size=(16, 8, 8, 1)).astype("float32")
>>> y = model.predict(x, verbose=0).argmax(1)
>>> report = diagnose_gradient_masking(model, x, y, eps=8 / 255, steps=5, queries=50)
>>> sorted(c.name for c in report.checks)[:2]
['eot', 'gradient_health']
>>> isinstance(report.flagged, bool)
True
"""

from __future__ import annotations

import time
from typing import Any, Callable, Sequence

import numpy as np

from qrobust_keras._checks import check_int, check_number, num_classes
from qrobust_keras.attacks import registry
from qrobust_keras.attacks.gradients import input_gradients
from qrobust_keras.evaluation.common import check_input_shape, check_inputs, check_keras_model, predict_labels
from qrobust_keras.evaluation.masking_report import CHECK_NAMES, GradientMaskingReport, MaskingCheck

__all__ = ["MaskingCheck", "GradientMaskingReport", "diagnose_gradient_masking", "masking_diagnostic",
           "input_gradients", "CHECK_NAMES"]

# The black-box attacks of check 2 (registry names): the score-based ones whose budget the check sets (Square's
# queries, SPSA's steps); the registry's other black-box attacks are label-only or far slower.
_BLACK_BOX = ("square", "spsa")


def _is_stochastic(model: Any) -> bool:
    from qrobust_keras.models.heads import has_stochastic_quantizers

    return bool(has_stochastic_quantizers(model))


def diagnose_gradient_masking(
    model: Any,
    x: Any,
    y: Any,
    eps: float = 8 / 255,
    float_twin: Any = None,
    *,
    steps: int = 20,
    more_steps_factor: int = 4,
    more_restarts: int = 2,
    black_box: Sequence[str] = ("square",),
    queries: int = 1000,
    spsa_steps: int = 50,
    eot: int | None = None,
    eps_sweep: Sequence[float] | None = None,
    tolerance: float = 0.05,
    unbounded_success: float = 0.95,
    max_zero_gradients: float = 0.05,
    clip_min: float = 0.0,
    clip_max: float = 1.0,
    batch_size: int = 256,
    seed: int = 0,
    verbose: int = 0,
) -> GradientMaskingReport:
    """Run the gradient-masking sanity checks on a Keras classifier.

    All attacks are untargeted L-inf attacks from :mod:`qrobust_keras.attacks` on the samples the model classifies
    correctly; *success* is the fraction of those samples misclassified afterwards (the model's deterministic
    inference-mode prediction). A check is flagged when (``tol`` = ``tolerance``):

    1. ``iterative_vs_single_step``: FGSM succeeds more than PGD-``steps``: ``s_FGSM > s_PGD + tol``. An iterative
       attack contains the single step; losing to it means the loss surface misleads the gradient (Carlini et al.
       2019, sec. 5.3).
    2. ``white_box_vs_black_box``: a gradient-free attack (Square, Andriushchenko et al. 2020, arXiv 1912.00049;
       optionally SPSA, Uesato et al. 2018, arXiv 1802.05666) beats the best white-box attack:
       ``s_BB > max(s_FGSM, s_PGD, s_PGD+) + tol``.
    3. ``white_box_vs_transfer`` (needs ``float_twin``): PGD crafted on the float twin and transferred beats PGD on
       the model itself, on samples both classify correctly: ``s_transfer > s_PGD + tol``.
    4. ``unbounded_eps``: PGD without random start (so success comes from the gradient alone) over a growing eps
       grid up to the whole input range: flagged when success at ``eps = clip_max - clip_min`` stays below
       ``unbounded_success`` or when success drops by more than ``tol`` as eps grows (Athalye et al. 2018, sec. 3.1).
    5. ``more_steps_restarts``: PGD with ``more_steps_factor * steps`` steps and ``more_restarts`` random restarts
       gains more than ``tol`` over PGD-``steps``: the standard attack had not converged, so its number is not an
       upper bound on robustness.
    6. ``gradient_health``: fraction of samples whose cross-entropy input gradient is all zero or non-finite exceeds
       ``max_zero_gradients`` (shattered/vanishing gradients, Athalye et al. 2018, sec. 4.1).
    7. ``eot`` (stochastic models only): PGD with gradients averaged over ``eot`` stochastic passes (Expectation
       over Transformation, Athalye et al. 2018, sec. 4.3) beats plain PGD by more than ``tol``: evaluations without
       EOT underestimate the attack. Not applicable (neither passed nor flagged) for deterministic models.

    Args:
        model: Keras classifier on inputs in [clip_min, clip_max] (softmax outputs are bypassed: logits are used).
        x: inputs, shape (n, ...).
        y: true labels, int (n,) or one-hot.
        eps: L-inf budget in input units ([0, 1] for images), > 0.
        float_twin: optional float model of the same task (the model before quantization) for check 3.
        steps: PGD iterations of the reference white-box attack (step size eps/4, one random start).
        more_steps_factor: multiple of ``steps`` for check 5 (>= 2).
        more_restarts: random restarts for check 5.
        black_box: gradient-free attacks for check 2, names among ``"square"``, ``"spsa"``.
        queries: Square query budget per sample.
        spsa_steps: SPSA iterations (128 samples per gradient estimate).
        eot: EOT passes for check 7; None: 8 when the model has stochastic QKeras quantizers, else not applicable.
        eps_sweep: eps grid of check 4; default ``eps * (1, 2, 4)`` and 1/4, 1/2, 1 of the input range.
        tolerance: absolute success-rate margin before a comparison flags (0.05 = 5 points).
        unbounded_success: success the full-range attack must reach.
        max_zero_gradients: largest accepted fraction of samples with a zero or non-finite gradient.
        clip_min, clip_max: valid input range.
        batch_size: samples per attack batch.
        seed: seeds every attack; same seed -> same report.
        verbose: 1 prints one line per stage.

    Returns:
        A :class:`GradientMaskingReport` (``report.flagged``, ``report.checks``, ``to_markdown()``, ``to_json()``).

    Raises:
        TypeError: ``model`` or ``float_twin`` is not a Keras model.
        ValueError: bad x, y, eps or settings, or a model that classifies none of the samples correctly.
    """
    t0 = time.perf_counter()
    model = check_keras_model(model, "model")
    if float_twin is not None:
        float_twin = check_keras_model(float_twin, "float_twin")
    span = float(clip_max) - float(clip_min)
    x, y = check_inputs(x, y, clip_min, clip_max, num_classes=num_classes(model))
    check_input_shape(model, x, "model")
    if isinstance(eps, (int, float, np.integer, np.floating)) and eps > span and span <= 1:
        raise ValueError(f"eps must be in (0, {span:g}] (input units); got eps={eps!r} (did you mean {eps:g}/255?)")
    eps = check_number("eps", eps, 0.0, span, low_open=True)
    steps = check_int("steps", steps)
    more_steps_factor = check_int("more_steps_factor", more_steps_factor, 2)
    more_restarts = check_int("more_restarts", more_restarts)
    queries = check_int("queries", queries)
    spsa_steps = check_int("spsa_steps", spsa_steps)
    batch_size = check_int("batch_size", batch_size)
    tolerance = check_number("tolerance", tolerance, 0.0, 1.0)
    unbounded_success = check_number("unbounded_success", unbounded_success, 0.0, 1.0)
    max_zero_gradients = check_number("max_zero_gradients", max_zero_gradients, 0.0, 1.0)
    if isinstance(black_box, str):
        black_box = (black_box,)
    black_box = tuple(b.strip().lower() if isinstance(b, str) else b for b in black_box)
    bad = [b for b in black_box if b not in _BLACK_BOX]
    if bad or not black_box:
        raise ValueError(f"black_box must be a non-empty list of {list(_BLACK_BOX)}; got black_box={black_box!r}")
    stochastic = _is_stochastic(model)
    if eot is None:
        eot = 8 if stochastic else 0
    elif isinstance(eot, bool) or not isinstance(eot, (int, np.integer)) or eot < 0 or eot == 1:
        raise ValueError(f"eot must be None, 0 (skip) or an integer >= 2; got eot={eot!r}")
    if eps_sweep is None:
        eps_sweep = [eps, 2 * eps, 4 * eps, span / 4, span / 2, span]
    eps_sweep = [check_number("eps_sweep", e, 0.0, span, low_open=True) for e in eps_sweep]
    eps_sweep = sorted(set(e for e in eps_sweep if e <= span) | {span})

    def say(msg: str) -> None:
        if verbose:
            print(f"diagnose_gradient_masking[{model.name}]: {msg}", flush=True)

    pred = predict_labels(model, x, batch_size)
    correct = pred == y
    n_correct = int(correct.sum())
    if n_correct == 0:
        raise ValueError(f"model classifies none of the {len(x)} samples correctly; the checks attack correctly "
                         "classified samples only (check the labels and the input scaling)")
    xc, yc = x[correct], y[correct]
    common = dict(clip_min=clip_min, clip_max=clip_max, batch_size=batch_size, seed=seed, verbose=0)
    _, fgsm = registry.resolve("fgsm")
    _, pgd = registry.resolve("pgd")

    def fooled(x_adv: np.ndarray) -> np.ndarray:
        return predict_labels(model, x_adv, batch_size) != yc

    say("FGSM and PGD")
    f_fgsm = fooled(fgsm(model, xc, yc, eps=eps, **common))
    f_pgd = fooled(pgd(model, xc, yc, eps=eps, steps=steps, **common))
    say(f"PGD with {more_steps_factor * steps} steps and {more_restarts} restarts")
    f_more = fooled(pgd(model, xc, yc, eps=eps, steps=more_steps_factor * steps, restarts=more_restarts, **common))
    s_fgsm, s_pgd, s_more = float(f_fgsm.mean()), float(f_pgd.mean()), float(f_more.mean())

    checks = [_iterative_vs_single_step(s_fgsm, s_pgd, steps, tolerance)]
    say(f"black-box {', '.join(black_box)}")
    bb_success = {name: fooled(_run_black_box(name, model, xc, yc, eps, queries, spsa_steps, common))
                  for name in black_box}
    checks.append(_white_box_vs_black_box(bb_success, f_fgsm | f_pgd | f_more, max(s_fgsm, s_pgd, s_more),
                                          queries, tolerance))
    if float_twin is not None:
        check_input_shape(float_twin, x, "float_twin")
        say("transfer from the float twin")
    checks.append(_white_box_vs_transfer(model, float_twin, xc, yc, f_pgd, lambda m, xs, ys: pgd(
        m, xs, ys, eps=eps, steps=steps, **common), batch_size, tolerance))
    say(f"eps sweep {['%.4g' % e for e in eps_sweep]}")
    curve = [float(fooled(pgd(model, xc, yc, eps=e, steps=steps, rand_init=False, **common)).mean())
             for e in eps_sweep]
    checks.append(_unbounded_eps(eps_sweep, curve, unbounded_success, tolerance))
    checks.append(_more_steps_restarts(s_pgd, s_more, steps, more_steps_factor, more_restarts, tolerance))
    say("input gradients")
    checks.append(_gradient_health(input_gradients(model, xc, yc, batch_size), max_zero_gradients))
    if eot:
        say(f"PGD with EOT over {eot} stochastic passes")
        s_eot = float(fooled(pgd(model, xc, yc, eps=eps, steps=steps, eot=int(eot), **common)).mean())
        checks.append(_eot(s_pgd, s_eot, int(eot), stochastic, tolerance))
    else:
        checks.append(MaskingCheck("eot", False, {"stochastic_quantizers": stochastic},
                                   "the model has no stochastic quantizers: EOT does not apply", applicable=False))

    settings = {"steps": steps, "step_size": eps / 4, "more_steps_factor": more_steps_factor,
                "more_restarts": more_restarts, "black_box": list(black_box), "queries": queries, "eot": eot,
                "eps_sweep": list(eps_sweep), "tolerance": tolerance, "unbounded_success": unbounded_success,
                "max_zero_gradients": max_zero_gradients, "seed": seed}
    return GradientMaskingReport(checks=checks, model_name=model.name, eps=eps, n_samples=int(len(x)),
                                 n_correct=n_correct, clean_accuracy=n_correct / len(x), settings=settings,
                                 seconds=time.perf_counter() - t0)


# One function per check, in the order of CHECK_NAMES: each turns measured success rates into a verdict.

def _iterative_vs_single_step(s_fgsm: float, s_pgd: float, steps: int, tolerance: float) -> MaskingCheck:
    flag = s_fgsm > s_pgd + tolerance
    return MaskingCheck(
        "iterative_vs_single_step", flag, {"fgsm_success": s_fgsm, "pgd_success": s_pgd, "pgd_steps": steps},
        (f"FGSM fools more samples than PGD-{steps}: the gradient direction misleads iterative steps (masking)"
         if flag else f"PGD-{steps} is at least as strong as FGSM, as it should be"))


def _run_black_box(name: str, model: Any, xc: np.ndarray, yc: np.ndarray, eps: float, queries: int,
                   spsa_steps: int, common: dict) -> np.ndarray:
    _, attack = registry.resolve(name)
    if name == "square":
        return attack(model, xc, yc, eps=eps, queries=queries, **common)
    return attack(model, xc, yc, eps=eps, steps=spsa_steps, **{k: v for k, v in common.items() if k != "batch_size"})


def _white_box_vs_black_box(fooled_by: dict, f_white: np.ndarray, s_white_best: float, queries: int,
                            tolerance: float) -> MaskingCheck:
    f_bb_any = np.logical_or.reduce(list(fooled_by.values()))
    s_bb = max(float(f.mean()) for f in fooled_by.values())
    flag = s_bb > s_white_best + tolerance
    return MaskingCheck(
        "white_box_vs_black_box", flag,
        {**{f"{name}_success": float(f.mean()) for name, f in fooled_by.items()},
         "best_white_box_success": s_white_best, "fooled_only_by_black_box": float((f_bb_any & ~f_white).mean()),
         "square_queries": queries},
        ("a gradient-free attack beats every gradient attack: the gradients are masked" if flag else
         "the best white-box attack is at least as strong as the black-box attack(s)"))


def _white_box_vs_transfer(model: Any, float_twin: Any, xc: np.ndarray, yc: np.ndarray, f_pgd: np.ndarray,
                           pgd_on: Callable, batch_size: int, tolerance: float) -> MaskingCheck:
    if float_twin is None:
        return MaskingCheck("white_box_vs_transfer", False, {},
                            "no float_twin given; pass the float model to compare with transfer", applicable=False)
    twin_ok = predict_labels(float_twin, xc, batch_size) == yc
    if not twin_ok.any():
        return MaskingCheck("white_box_vs_transfer", False, {"n_both_correct": 0},
                            "the float twin classifies none of these samples correctly; no transfer comparison "
                            "possible", applicable=False)
    x_tr = pgd_on(float_twin, xc[twin_ok], yc[twin_ok])
    s_tr = float((predict_labels(model, x_tr, batch_size) != yc[twin_ok]).mean())
    s_direct = float(f_pgd[twin_ok].mean())
    flag = s_tr > s_direct + tolerance
    return MaskingCheck(
        "white_box_vs_transfer", flag,
        {"transfer_success": s_tr, "pgd_success": s_direct, "n_both_correct": int(twin_ok.sum())},
        ("PGD transferred from the float twin beats PGD on the model itself: its own gradients are masked"
         if flag else "PGD on the model itself beats the transfer from the float twin"))


def _unbounded_eps(eps_sweep: Sequence[float], curve: list, unbounded_success: float,
                   tolerance: float) -> MaskingCheck:
    drop = max([curve[i] - min(curve[i:]) for i in range(len(curve))] + [0.0])
    flag_low = curve[-1] < unbounded_success
    flag_drop = drop > tolerance
    numbers = {"success_at_full_range": curve[-1], "largest_drop": drop,
               **{f"success_eps_{e:.4g}": s for e, s in zip(eps_sweep, curve)}}
    if flag_low:
        why = (f"PGD without random start reaches only {curve[-1]:.3f} success with eps = the whole input range "
               f"(expected >= {unbounded_success}): the gradient does not lead anywhere (masking)")
    elif flag_drop:
        why = f"success falls by {drop:.3f} as eps grows: larger budgets must not weaken the attack (masking)"
    else:
        why = "success grows with eps and the unbounded attack fools (almost) every sample"
    return MaskingCheck("unbounded_eps", flag_low or flag_drop, numbers, why)


def _more_steps_restarts(s_pgd: float, s_more: float, steps: int, factor: int, restarts: int,
                         tolerance: float) -> MaskingCheck:
    gain = s_more - s_pgd
    flag = gain > tolerance
    return MaskingCheck(
        "more_steps_restarts", flag,
        {"pgd_success": s_pgd, "pgd_more_success": s_more, "gain": gain, "more_steps": factor * steps,
         "more_restarts": restarts},
        (f"{factor}x steps and {restarts} restart(s) raise success by {gain:.3f}: PGD-{steps} had not converged, "
         "so its robust accuracy is not an upper bound" if flag else
         f"{factor}x steps and restarts add at most {tolerance} success: the attack has converged"))


def _gradient_health(grads: np.ndarray, max_zero_gradients: float) -> MaskingCheck:
    flat = grads.reshape(len(grads), -1)
    nonfinite = ~np.all(np.isfinite(flat), axis=1)
    zero = np.all(flat == 0, axis=1) & ~nonfinite
    frac_bad = float((zero | nonfinite).mean())
    flag = frac_bad > max_zero_gradients
    return MaskingCheck(
        "gradient_health", flag,
        {"zero_gradient_samples": float(zero.mean()), "nonfinite_gradient_samples": float(nonfinite.mean()),
         "zero_gradient_elements": float(np.mean(flat == 0)),
         "median_gradient_l1": float(np.median(np.abs(np.where(np.isfinite(flat), flat, 0)).sum(axis=1)))},
        (f"{frac_bad:.3f} of the samples have an all-zero or non-finite input gradient: gradient attacks cannot "
         "move them (shattered/vanishing gradients)" if flag else
         "input gradients are finite and non-zero for (almost) every sample"))


def _eot(s_pgd: float, s_eot: float, eot: int, stochastic: bool, tolerance: float) -> MaskingCheck:
    diff = s_eot - s_pgd
    flag = diff > tolerance
    return MaskingCheck(
        "eot", flag, {"pgd_success": s_pgd, "pgd_eot_success": s_eot, "eot": eot, "difference": diff,
                      "stochastic_quantizers": stochastic},
        (f"averaging gradients over {eot} stochastic passes raises success by {diff:.3f}: evaluate this model "
         "with EOT" if flag else f"EOT over {eot} passes changes success by {diff:+.3f} (within {tolerance})"))



def masking_diagnostic(**kwargs: Any):
    """A diagnostic for ``evaluate_robustness(..., diagnostics={"gradient_masking": masking_diagnostic()})``.

    The returned function runs :func:`diagnose_gradient_masking` at the largest eps of the report (unless ``eps``
    is given in ``kwargs``) and returns a compact JSON dict whose ``"flags"`` list (one line per flagged check)
    :class:`~qrobust_keras.evaluation.RobustnessReport` shows as warnings.

    Args:
        **kwargs: arguments of :func:`diagnose_gradient_masking` (``float_twin``, ``steps``, ``queries``...).
    """

    def run(model: Any, x: Any, y: Any, report: Any) -> dict:
        eps = kwargs.get("eps", max(report.eps))
        rest = {k: v for k, v in kwargs.items() if k != "eps"}
        return diagnose_gradient_masking(model, x, y, eps=eps, **rest).to_diagnostic()

    return run
