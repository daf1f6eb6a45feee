"""Multi-target attacks as AutoAttack runs them: APGD-T and FAB-T against each of the top wrong classes.

AutoAttack's standard version (Croce & Hein 2020, arXiv 2003.01690) runs its targeted attacks once per target class:
the classes with the 2nd, 3rd, ... highest clean logit (9 targets on CIFAR-10, i.e. every wrong class), each target
only on the samples that the earlier targets did not break. APGD-T uses the targeted DLR loss, FAB-T the boundary
of the target class. A sample counts as broken when the model's label on its adversarial example differs from the
true label (any wrong class, not only the target).

Example:

>>> import numpy as np
>>> from qrobust_keras._keras import keras
>>> from qrobust_keras.attacks.targeted import apgd_t
>>> model = keras.Sequential([keras.layers.Flatten(input_shape=(4, 4, 1)), keras.layers.Dense(5)])
>>> x = np.random.default_rng(0).uniform(size=(8, 4, 4, 1)).astype("float32")
>>> x_adv = apgd_t(model, x, eps=8 / 255, steps=10, n_target_classes=3, verbose=0)
>>> bool(np.abs(x_adv - x).max() <= 8 / 255)
True
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from qrobust_keras._checks import check_int
from qrobust_keras.attacks import gradients as G
from qrobust_keras.attacks.common import AttackInfo
from qrobust_keras.attacks.plumbing import prepare

__all__ = ["apgd_t", "fab_t", "top_wrong_classes"]


def top_wrong_classes(model: Any, x: np.ndarray, y: np.ndarray, k: int, batch_size: int = 256) -> np.ndarray:
    """(n, k): per sample the k classes other than ``y`` with the highest clean logits, highest first."""
    fwd = G.forward_fn(model)
    logits = np.concatenate([fwd(x[i:i + batch_size]).numpy() for i in range(0, len(x), batch_size)])
    logits[np.arange(len(x)), y] = -np.inf
    return np.argsort(-logits, axis=1, kind="stable")[:, :k]


def _over_targets(attack: Callable, name: str, model: Any, x: Any, y: Any, eps: float, norm: Any,
                  n_target_classes: int, clip_min: float, clip_max: float, batch_size: int, verbose: int,
                  return_info: bool, **kwargs: Any):
    model, x, y, norm, n_classes = prepare(model, x, y, eps, norm, False, clip_min, clip_max, batch_size, name)
    n_target_classes = check_int("n_target_classes", n_target_classes)
    if n_target_classes > n_classes - 1:
        raise ValueError(f"{name}: n_target_classes must be at most classes - 1 = {n_classes - 1}; got "
                         f"n_target_classes={n_target_classes}")
    targets = top_wrong_classes(model, x, y, n_target_classes, batch_size)
    x_adv = x.copy()
    broken = np.zeros(len(x), bool)
    gradients = np.zeros(len(x), np.int64)
    notes: list[str] = []
    for k in range(n_target_classes):
        todo = np.flatnonzero(~broken)
        if todo.size == 0:
            break
        xa, info = attack(model, x[todo], targets[todo, k], eps=eps, norm=norm, targeted=True, y_true=y[todo],
                          clip_min=clip_min, clip_max=clip_max, batch_size=batch_size, verbose=verbose,
                          return_info=True, **kwargs)
        fooled = G.predict_labels(model, xa, batch_size) != y[todo]
        x_adv[todo] = xa
        broken[todo[fooled]] = True
        gradients[todo] += info.gradients
        notes += [note for note in info.notes if note not in notes]
    info = AttackInfo(name=name, gradients=gradients, success=broken,
                      notes=notes + [f"{n_target_classes} target classes (highest clean logits first), each "
                                     "on the samples earlier targets did not break"])
    return (x_adv, info) if return_info else x_adv


def apgd_t(model: Any, x: Any, y: Any = None, eps: float = 8 / 255, norm: Any = "inf", steps: int = 100,
           n_target_classes: int = 9, restarts: int = 1, eot: int = 1, clip_min: float = 0.0, clip_max: float = 1.0,
           batch_size: int = 256, seed: int = 0, verbose: int = 1, return_info: bool = False, targeted: bool = False,
           step_size: float | None = None):
    """APGD-T: targeted APGD on the DLR loss against each of the ``n_target_classes`` top wrong classes.

    Args:
        y: the true labels (None: the model's predictions).
        steps, restarts, eot: per target, as in :func:`~.apgd.apgd` (AutoAttack standard: 100, 1, 1).
        n_target_classes: targets tried per sample (AutoAttack: 9), at most classes - 1 (targeted DLR needs >= 4
            classes).
        targeted, step_size: accepted for the shared signature; must be False / None (the targets are chosen here).
        Others as in :func:`~.apgd.apgd`.

    Returns:
        ``x_adv`` (and an :class:`AttackInfo` whose ``success`` marks the samples some target broke).
    """
    from qrobust_keras.attacks.apgd import apgd

    if targeted or step_size is not None:
        raise ValueError("apgd-t picks its own targets and step size; pass targeted=False and step_size=None")
    return _over_targets(apgd, "apgd-t", model, x, y, eps, norm, n_target_classes, clip_min, clip_max, batch_size,
                         verbose, return_info, steps=steps, restarts=restarts, eot=eot, seed=seed, loss="dlr")


def fab_t(model: Any, x: Any, y: Any = None, eps: float = 8 / 255, norm: Any = "inf", steps: int = 100,
          n_target_classes: int = 9, restarts: int = 1, clip_min: float = 0.0, clip_max: float = 1.0,
          batch_size: int = 256, seed: int = 0, verbose: int = 1, return_info: bool = False, targeted: bool = False):
    """FAB-T: targeted FAB (:func:`~.fab.fab`) toward each of the ``n_target_classes`` top wrong classes.

    Args:
        y: the true labels (None: the model's predictions).
        steps, restarts: per target (AutoAttack standard: 100, 1).
        n_target_classes: targets tried per sample (AutoAttack: 9), at most classes - 1.
        targeted: accepted for the shared signature; must be False (the targets are chosen here).
        Others as in :func:`~.fab.fab`.

    Returns:
        ``x_adv`` (and an :class:`AttackInfo` whose ``success`` marks the samples some target broke within eps).
    """
    from qrobust_keras.attacks.fab import fab

    if targeted:
        raise ValueError("fab-t picks its own targets; pass targeted=False")
    return _over_targets(fab, "fab-t", model, x, y, eps, norm, n_target_classes, clip_min, clip_max, batch_size,
                         verbose, return_info, steps=steps, restarts=restarts, seed=seed)
