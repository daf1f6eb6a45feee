"""Fast gradient sign method (FGSM) and its L2 variant (fast gradient method), one compiled step per batch.

Example:

>>> import numpy as np
>>> from qrobust_keras._keras import keras
>>> from qrobust_keras.attacks.fgsm import fgsm
>>> model = keras.Sequential([keras.layers.Flatten(input_shape=(4, 4, 1)), keras.layers.Dense(3)])
>>> x = np.random.default_rng(0).uniform(size=(8, 4, 4, 1)).astype("float32")
>>> x_adv = fgsm(model, x, np.zeros(8, int), eps=8 / 255, verbose=0)
>>> bool(np.abs(x_adv - x).max() <= 8 / 255)
True
"""

from __future__ import annotations

from typing import Any

from qrobust_keras._checks import check_int
from qrobust_keras._keras import keras
from qrobust_keras.attacks.pgd import sign_gradient_attack
from qrobust_keras.attacks.plumbing import prepare


def fgsm(model: keras.Model, x: Any, y: Any = None, eps: float = 8 / 255, norm: Any = "inf",
         targeted: bool = False, clip_min: float = 0.0, clip_max: float = 1.0, batch_size: int = 256,
         seed: int = 0, verbose: int = 1, return_info: bool = False, eot: int = 1, steps: int = 1,
         step_size: float | None = None):
    """Fast gradient sign method (Goodfellow et al. 2015, arXiv 1412.6572) on the pre-softmax logits.

    ``x_adv = clip(x + eps * sign(grad_x CE(z(x), y)))`` for L-inf; ``x + eps * grad / ||grad||_2`` for L2.
    Targeted: ``x - eps * sign(grad_x CE(z(x), t))``.

    Args:
        model: Keras classifier.
        x: inputs in [clip_min, clip_max].
        y: true labels, the targets when ``targeted``, or None (model predictions).
        eps: budget in input units; the single step has length eps.
        norm: "inf" or "2".
        targeted, clip_min, clip_max, batch_size, seed, verbose, return_info, eot: as in :func:`~.pgd.pgd`.
        steps: must be 1 (accepted for the shared signature).
        step_size: must be None or eps (accepted for the shared signature).

    Returns:
        ``x_adv`` (and an :class:`AttackInfo` when ``return_info``).
    """
    model, x, y, norm, _ = prepare(model, x, y, eps, norm, targeted, clip_min, clip_max, batch_size, "fgsm")
    if steps != 1:
        raise ValueError(f"fgsm takes exactly one step; got steps={steps!r} (use bim or pgd for more)")
    if step_size is not None and step_size != eps:
        raise ValueError(f"fgsm steps exactly eps; got step_size={step_size!r} with eps={eps!r}")
    eot = check_int("eot", eot)
    x_adv, info = sign_gradient_attack(model, x, y, eps=eps, norm=norm, steps=1, step_size=eps, targeted=targeted,
                                       clip_min=clip_min, clip_max=clip_max, batch_size=batch_size, seed=seed,
                                       verbose=verbose, rand_init=False, restarts=1, decay=None, eot=eot,
                                       name="fgsm")
    return (x_adv, info) if return_info else x_adv
