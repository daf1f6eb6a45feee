"""Transfer attack: craft adversarial examples on a surrogate (source) model, evaluate them on a target.

The target can be anything that scores inputs (a Keras model, an int8 TFLite runner, a plain function): it is only
queried, twice per sample (clean and adversarial). The success measure follows Bernhard et al. (arXiv 1909.12741):
the transfer rate is computed on the samples that both models classify correctly.

Example:

>>> import numpy as np
>>> from qrobust_keras.attacks.transfer import transfer
>>> def fgsm_on_linear(w):                      # a tiny white-box attack for two linear "models"
...     def attack(model, x, y, eps, **kw):
...         return np.clip(x - eps * np.sign(w[:, y].T - w.mean(1)), 0, 1).astype(np.float32)
...     return attack
>>> rng = np.random.default_rng(0)
>>> w = rng.normal(size=(12, 3)); w2 = w + 0.1 * rng.normal(size=(12, 3))
>>> x = rng.uniform(size=(50, 12)).astype(np.float32); y = (x @ w).argmax(1)
>>> x_adv, info = transfer(None, lambda a: a @ w2, x, y, attack=fgsm_on_linear(w), eps=0.1, verbose=0,
...                        return_info=True)
>>> 0.0 <= info.transfer_rate <= 1.0
True
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import numpy as np

from qrobust_keras.attacks.common import (
    AttackInfo,
    as_int_labels,
    as_predict_fn,
    check_attack_inputs,
    enforce_constraints,
)

__all__ = ["transfer", "TransferInfo"]

_RESERVED = ("eps", "norm", "targeted", "clip_min", "clip_max", "seed", "verbose", "return_info", "batch_size")


@dataclasses.dataclass
class TransferInfo(AttackInfo):
    """What :func:`transfer` reports (an :class:`AttackInfo` with the transfer statistics).

    Attributes:
        success: per sample, the *target* is fooled by ``x_adv`` (untargeted: prediction != y; targeted: == y).
        source_success: per sample, the source (surrogate) is fooled by ``x_adv``.
        eligible: per sample, the Bernhard et al. protocol subset: both models classify the clean input correctly
            (untargeted), or both predict the same class, which is not the target (targeted).
        transfer_rate: fraction of eligible samples whose ``x_adv`` fools the target (the headline number).
        transfer_rate_given_source_fooled: the same, among eligible samples whose ``x_adv`` fools the source.
        source_success_rate: fraction of eligible samples whose ``x_adv`` fools the source (white-box strength).
        n_eligible: number of eligible samples.
    """

    source_success: np.ndarray | None = None
    eligible: np.ndarray | None = None
    transfer_rate: float = float("nan")
    transfer_rate_given_source_fooled: float = float("nan")
    source_success_rate: float = float("nan")
    n_eligible: int = 0


def _resolve_attack(attack: str | Callable) -> tuple[str, Callable, Any]:
    if callable(attack):
        return getattr(attack, "__name__", "custom"), attack, None
    if not isinstance(attack, str):
        raise TypeError(f"attack must be an attack name (e.g. 'pgd') or a callable; got {type(attack).__name__}")
    from qrobust_keras.attacks import registry

    spec = registry.get_attack(attack)  # ValueError naming the accepted attacks
    return spec.name, spec.load(), spec


def transfer(
    source_model: Any,
    target: Any,
    x: np.ndarray,
    y: np.ndarray,
    attack: str | Callable = "pgd",
    eps: float = 8 / 255,
    norm: Any = "inf",
    attack_kwargs: dict | None = None,
    targeted: bool = False,
    clip_min: float = 0.0,
    clip_max: float = 1.0,
    batch_size: int = 256,
    seed: int = 0,
    verbose: int = 1,
    return_info: bool = False,
) -> np.ndarray | tuple[np.ndarray, TransferInfo]:
    """Craft ``x_adv`` with ``attack`` on ``source_model`` and evaluate it on ``target``.

    Args:
        source_model: the surrogate the attack sees (a Keras model for white-box attacks).
        target: the attacked model: Keras model, object with ``predict(x) -> scores``, or callable; only queried.
        x: inputs (n, ...), in [clip_min, clip_max].
        y: true labels (untargeted) or target classes (targeted), int (n,) or one-hot.
        attack: a registered attack name (``"pgd"``, ``"fgsm"``, ``"mim"``, ``"apgd-ce"``, ...; its defaults for
            image-scale data from :mod:`qrobust_keras.attacks.registry`), or a callable
            ``attack(source_model, x, y, eps=, norm=, targeted=, clip_min=, clip_max=, batch_size=, seed=,
            verbose=)`` returning ``x_adv``.
        eps: budget in input units (L-inf or L2 per ``norm``).
        norm: "inf" or "2".
        attack_kwargs: extra keyword arguments for the attack (override the registry defaults), e.g.
            ``{"steps": 50}``; must not repeat the shared arguments above.
        targeted: craft towards the classes ``y``.
        clip_min, clip_max: valid input range.
        batch_size: batch size of the attack and of the target's queries.
        seed: seed passed to the attack.
        verbose: passed to the attack.
        return_info: also return a :class:`TransferInfo`.

    Returns:
        ``x_adv`` (float32, satisfying the eps bound and clip range exactly), or ``(x_adv, info)``.

    Raises:
        ValueError: bad x, y, eps, norm, clip range, unknown attack name, or ``attack_kwargs`` repeating a shared
            argument.

    References:
        Papernot, McDaniel, Goodfellow 2016, arXiv 1605.07277 (transferability). Bernhard, Moellic, Dutertre 2019,
        arXiv 1909.12741 (transfer between float and quantized models; evaluation on commonly correct samples).
    """
    x_in, labels, norm = check_attack_inputs(x, y, eps, norm, clip_min, clip_max)
    attack_kwargs = dict(attack_kwargs or {})
    clash = sorted(set(attack_kwargs) & set(_RESERVED))
    if clash:
        raise ValueError(f"attack_kwargs must not repeat transfer's own arguments {clash}; pass them to transfer "
                         "directly")
    name, fn, spec = _resolve_attack(attack)
    if spec is not None:
        if norm not in spec.norms:
            raise ValueError(f"attack {name!r} supports norm {' or '.join(spec.norms)}; got norm={norm!r}")
        from qrobust_keras.attacks.registry import attack_kwargs as registry_defaults

        attack_kwargs = registry_defaults(name, eps, "image", attack_kwargs)

    x_adv = fn(source_model, x_in, labels, eps=eps, norm=norm, targeted=targeted, clip_min=clip_min,
               clip_max=clip_max, batch_size=batch_size, seed=seed, verbose=verbose, **attack_kwargs)
    if isinstance(x_adv, tuple):  # an attack that returns (x_adv, info) anyway
        x_adv = x_adv[0]
    x_adv = enforce_constraints(x_in, np.asarray(x_adv, np.float32).reshape(x_in.shape), eps, norm, clip_min,
                                clip_max)
    if not return_info:
        return x_adv

    tgt = as_predict_fn(target, batch_size)
    clean_t = tgt(x_in)
    as_int_labels(labels, len(labels), clean_t.shape[1], name="y")
    pred_t_clean, pred_t_adv = clean_t.argmax(1), tgt(x_adv).argmax(1)
    src = as_predict_fn(source_model, batch_size) if source_model is not None else None
    if src is not None:
        pred_s_clean, pred_s_adv = src(x_in).argmax(1), src(x_adv).argmax(1)
    else:  # a callable attack without a model: the source side is unknown
        pred_s_clean, pred_s_adv = pred_t_clean, np.full_like(pred_t_adv, -1)
    if targeted:
        success, source_success = pred_t_adv == labels, pred_s_adv == labels
        eligible = (pred_s_clean == pred_t_clean) & (pred_t_clean != labels)
    else:
        success, source_success = pred_t_adv != labels, pred_s_adv != labels
        eligible = (pred_s_clean == labels) & (pred_t_clean == labels)
    n_el = int(eligible.sum())
    both = eligible & source_success

    def rate(mask: np.ndarray, of: np.ndarray) -> float:
        return float(of[mask].mean()) if mask.any() else float("nan")

    info = TransferInfo(
        name=f"transfer({name})", queries=np.full(len(x_in), 2, np.int64), success=success,
        source_success=source_success if src is not None else None, eligible=eligible,
        transfer_rate=rate(eligible, success), transfer_rate_given_source_fooled=rate(both, success),
        source_success_rate=rate(eligible, source_success) if src is not None else float("nan"), n_eligible=n_el,
        notes=[f"crafted on the source with {name} (eps={eps:g}, norm={norm}); the target was only queried "
               "(2 queries per sample: clean and adversarial)",
               "transfer_rate: target fooled among the samples both models classify correctly (Bernhard et al. "
               "2019, arXiv 1909.12741)"])
    return x_adv, info
