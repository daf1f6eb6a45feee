"""What every attack function does before and around its loop: the shared checks of the white-box attacks
(:func:`prepare`) and one progress bar for all attacks (:class:`ProgressBar`).

Example:

>>> import numpy as np
>>> from qrobust_keras._keras import keras
>>> from qrobust_keras.attacks.plumbing import ProgressBar, prepare
>>> model = keras.Sequential([keras.layers.Flatten(input_shape=(4, 4, 1)), keras.layers.Dense(3)])
>>> x = np.full((2, 4, 4, 1), 0.5, np.float32)
>>> model, x, y, norm, n_classes = prepare(model, x, None, 8 / 255, "linf", False, 0.0, 1.0, 256, "pgd")
>>> norm, n_classes, y.shape
('inf', 3, (2,))
>>> bar = ProgressBar(total=2, verbose=0, name="pgd")   # verbose=0: silent
>>> bar.update(2); bar.close()
"""

from __future__ import annotations

from typing import Any

import numpy as np

from qrobust_keras._checks import check_input_shape, check_int, num_classes
from qrobust_keras.attacks.common import check_attack_inputs

__all__ = ["prepare", "ProgressBar"]


def prepare(model: Any, x: Any, y: Any, eps: float, norm: Any, targeted: bool, clip_min: float, clip_max: float,
            batch_size: int, attack: str) -> tuple[Any, np.ndarray, np.ndarray, str, int]:
    """Shared checks of the white-box attacks.

    Args:
        model: the attacked model (must be a Keras model: gradients are needed).
        x, y, eps, norm, targeted, clip_min, clip_max, batch_size: the attack's arguments of the same names;
            ``y=None`` means the model's own predictions (untargeted only).
        attack: the attack's name, for messages.

    Returns:
        ``(model, x, y, norm, n_classes)``: x as float32, y as int64 labels, norm as ``"inf"`` or ``"2"``.

    Raises:
        TypeError: ``model`` is not a Keras model (the message points to the black-box attacks).
        ValueError: bad x, y, eps, norm, clip range or batch_size, or x of another sample shape than the model's.
    """
    from qrobust_keras.attacks import gradients as G

    model = G.require_keras_model(model, attack)
    n_classes = num_classes(model)
    check_int("batch_size", batch_size)
    if y is None:
        if targeted:
            raise ValueError(f"{attack}: targeted=True needs y (the target classes); got y=None")
        x_arr = np.asarray(x)
        placeholder = np.zeros(len(x_arr) if x_arr.ndim else 0, np.int64)  # x itself is checked first
        x, _, norm = check_attack_inputs(x_arr, placeholder, eps, norm, clip_min, clip_max)
        check_input_shape(G.get_logits_model(model), x, "the model")
        y = G.predict_labels(model, x, batch_size)
    else:
        x, y, norm = check_attack_inputs(x, y, eps, norm, clip_min, clip_max, num_classes=n_classes)
        check_input_shape(G.get_logits_model(model), x, "the model")
    return model, x, y, norm, n_classes


class ProgressBar:
    """Progress of an attack over ``total`` units (batches or samples): a Keras progress bar headed by the attack's
    name when ``verbose`` is 1 (2: one line at the end), nothing when it is 0.

    Args:
        total: units of work (``update`` calls add up to it).
        verbose: 0 silent, 1 live bar, 2 one line when done.
        name: the attack's name, printed above the bar.
        unit: what one unit is (``"batch"``, ``"sample"``).
    """

    def __init__(self, total: int, verbose: int, name: str, unit: str = "batch"):
        self.done = 0
        self._bar = None
        if verbose:
            from qrobust_keras._keras import keras

            print(f"{name}:")
            self._bar = keras.utils.Progbar(total, verbose=1 if verbose == 1 else 2, unit_name=unit)

    def update(self, n: int = 1) -> None:
        """Count ``n`` more units done."""
        self.done += n
        if self._bar is not None:
            self._bar.update(self.done)

    def close(self) -> None:
        """Finish the bar (also when the attack stopped early, e.g. every sample fooled)."""
        if self._bar is not None and self.done < (self._bar.target or 0):
            self._bar.update(self.done, finalize=True)
