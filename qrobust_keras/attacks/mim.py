"""Momentum iterative method (MI-FGSM), L-inf and L2, the whole loop compiled per batch.

Example:

>>> import numpy as np
>>> from qrobust_keras._keras import keras
>>> from qrobust_keras.attacks.mim import mim
>>> model = keras.Sequential([keras.layers.Flatten(input_shape=(4, 4, 1)), keras.layers.Dense(3)])
>>> x = np.random.default_rng(0).uniform(size=(8, 4, 4, 1)).astype("float32")
>>> x_adv = mim(model, x, np.zeros(8, int), eps=8 / 255, steps=5, verbose=0)
>>> bool(np.abs(x_adv - x).max() <= 8 / 255)
True
"""

from __future__ import annotations

from typing import Any

from qrobust_keras._checks import check_int, check_positive
from qrobust_keras._keras import keras
from qrobust_keras.attacks.pgd import sign_gradient_attack
from qrobust_keras.attacks.plumbing import prepare


def mim(model: keras.Model, x: Any, y: Any = None, eps: float = 8 / 255, norm: Any = "inf", steps: int = 10,
        step_size: float | None = None, targeted: bool = False, clip_min: float = 0.0, clip_max: float = 1.0,
        batch_size: int = 256, seed: int = 0, verbose: int = 1, return_info: bool = False, decay: float = 1.0,
        eot: int = 1):
    """Momentum iterative method (Dong et al. 2018, arXiv 1710.06081) on the pre-softmax logits.

    ``g <- decay * g + grad / mean(|grad|)``; ``x <- clip(P_eps(x + step_size * sign(g)))`` (L2: ``g/||g||_2``).
    Starts from x (no random start), as in the paper and cleverhans.

    Args:
        model, x, y, eps, norm, steps, targeted, clip_min, clip_max, batch_size, seed, verbose, return_info, eot:
            as in :func:`~.pgd.pgd`.
        step_size: default ``eps / steps`` (cleverhans' convention would be eps_iter; the paper uses eps / T).
        decay: momentum decay factor mu (1.0 in the paper).
    """
    model, x, y, norm, _ = prepare(model, x, y, eps, norm, targeted, clip_min, clip_max, batch_size, "mim")
    steps = check_int("steps", steps)
    eot = check_int("eot", eot)
    decay = check_positive("decay", decay, allow_zero=True)
    step_size = eps / steps if step_size is None else check_positive("step_size", step_size)
    x_adv, info = sign_gradient_attack(model, x, y, eps=eps, norm=norm, steps=steps, step_size=step_size,
                                       targeted=targeted, clip_min=clip_min, clip_max=clip_max,
                                       batch_size=batch_size, seed=seed, verbose=verbose, rand_init=False,
                                       restarts=1, decay=decay, eot=eot, name="mim")
    return (x_adv, info) if return_info else x_adv
