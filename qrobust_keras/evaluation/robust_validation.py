"""Robust validation accuracy after every epoch: the monitor that shows catastrophic and robust overfitting.

Single-step adversarial training can collapse within one epoch: the accuracy under multi-step PGD falls to near zero
while the accuracy on the single-step examples the model trains on rises ("catastrophic overfitting", Wong, Rice,
Kolter 2020, arXiv 2001.03994). Multi-step training overfits more slowly: PGD accuracy on held-out data peaks and
then declines ("robust overfitting", Rice, Wong, Kolter 2020, arXiv 2002.11569). Both are invisible in the clean
validation accuracy and the training loss, so the only reliable monitor is the accuracy under a multi-step attack
on held-out samples, measured as training goes. :class:`RobustValidation` adds it to the epoch's logs, where
``History``, ``CSVLogger``, :func:`~qrobust_keras.recipes.fit_recipe`'s ``history.csv`` and ``EarlyStopping`` or
``ModelCheckpoint(monitor="val_pgd_accuracy")`` see it.

Example:

>>> import numpy as np
>>> import qrobust_keras as qrk
>>> from qrobust_keras._keras import keras
>>> model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(3, name="logits"),
...                           keras.layers.Activation("softmax")])
>>> model.compile("adam", "sparse_categorical_crossentropy")
>>> x, y = np.random.rand(64, 8).astype("float32"), np.random.randint(0, 3, 64)
>>> monitor = qrk.RobustValidation(x[:32], y[:32], eps=0.05, steps=5)
>>> history = model.fit(x, y, epochs=2, verbose=0, callbacks=[monitor])
>>> len(history.history["val_pgd_accuracy"])
2
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

from qrobust_keras._checks import check_int
from qrobust_keras._keras import keras
from qrobust_keras.attacks import pgd
from qrobust_keras.attacks.common import as_int_labels
from qrobust_keras.evaluation.common import predict_labels

__all__ = ["RobustValidation"]


class RobustValidation(keras.callbacks.Callback):
    """Keras callback: accuracy under L-inf PGD on fixed validation samples, logged after every ``every`` epochs.

    After the epoch, the model as it would be deployed (inference mode: BatchNorm moving statistics, deterministic
    quantizers) is attacked with :func:`~qrobust_keras.attacks.pgd` (``steps`` steps of ``eps / 4`` from a random
    start, cross-entropy on the logits, gradients through QKeras quantizers by their straight-through surrogate), and
    the fraction of samples still classified correctly is written to the epoch's logs as ``name``. Epochs that are
    skipped log nothing. The attack's random start is the same every epoch (``seed``), so epochs are compared on the
    same draw.

    The cost is ``steps`` forward and backward passes of ``len(x)`` samples per measured epoch: PGD-10 on 256
    CIFAR-10 images is about 3% of an epoch of ``int4_at`` training on 50,000.

    Args:
        x: validation inputs in ``[clip_min, clip_max]``.
        y: their labels (integers or one-hot).
        eps: the L-inf budget in input units (e.g. 8/255 for [0, 1] images).
        steps: PGD steps (default 10).
        every: measure after every ``every``-th epoch (default 1).
        clip_min, clip_max: valid input range.
        seed: seed of the random start.
        name: the log key (default ``"val_pgd_accuracy"``).

    Raises:
        ValueError: empty or mismatched ``x``/``y``, ``eps`` not in (0, clip_max - clip_min], bad ``steps``/``every``.
    """

    def __init__(self, x: Any, y: Any, eps: float, steps: int = 10, every: int = 1, clip_min: float = 0.0,
                 clip_max: float = 1.0, seed: int = 0, name: str = "val_pgd_accuracy"):
        super().__init__()
        x, y = np.asarray(x), np.asarray(y)
        if len(x) == 0 or len(x) != len(y):
            raise ValueError(f"x and y must hold the same number (> 0) of samples; got len(x)={len(x)}, "
                             f"len(y)={len(y)}")
        if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not math.isfinite(eps) \
                or not 0 < eps <= clip_max - clip_min:
            hint = f" (did you mean {eps}/255?)" if isinstance(eps, numbers.Real) and eps > 1 else ""
            raise ValueError(f"eps must be in (0, clip_max - clip_min] = (0, {clip_max - clip_min}]; got "
                             f"eps={eps!r}{hint}")
        self.x, self.y = x, y
        self.eps = float(eps)
        self.steps = check_int("steps", steps, accepted="a positive integer")
        self.every = check_int("every", every, accepted="a positive integer")
        self.clip_min, self.clip_max = float(clip_min), float(clip_max)
        self.seed = int(seed)
        self.name = str(name)

    def get_config(self) -> dict:
        return {"eps": self.eps, "steps": self.steps, "every": self.every, "clip_min": self.clip_min,
                "clip_max": self.clip_max, "seed": self.seed, "name": self.name, "samples": int(len(self.x))}

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every or logs is None:
            return
        x_adv = pgd(self.model, self.x, self.y, eps=self.eps, steps=self.steps, clip_min=self.clip_min,
                    clip_max=self.clip_max, seed=self.seed, verbose=0)
        labels = as_int_labels(self.y, len(self.x))
        logs[self.name] = float(np.mean(predict_labels(self.model, x_adv) == labels))
