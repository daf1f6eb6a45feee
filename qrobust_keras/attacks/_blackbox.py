"""Private helpers shared by the black-box attacks (square, spsa, the ART wrappers, transfer).

Score functions: a black-box attack sees the model only through a :class:`~qrobust_keras.attacks.common.PredictFn`
that returns scores of shape (n, classes). Scores may be logits or probabilities; :class:`MarginLoss` turns either into
the same margin (probabilities are mapped to log-probabilities, which equal the logits up to a per-row constant, so
the margin of ``log p`` *is* the logit margin).

Example:

>>> import numpy as np
>>> from qrobust_keras.attacks._blackbox import MarginLoss
>>> loss = MarginLoss(np.array([0]), targeted=False)
>>> float(loss(np.array([[2.0, 1.0, -1.0]]))[0])
1.0
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import numpy as np

from qrobust_keras.attacks.common import PredictFn, as_int_labels, as_predict_fn

_TINY = 1e-30


def scores_fn(model_or_fn: Any, batch_size: int = 256) -> PredictFn:
    """A query-counting score function for a black-box attack.

    Keras models that end in a softmax are queried through their pre-softmax logits
    (:func:`qrobust_keras.models.heads.logits_model`), which keeps the margin loss free of float32 saturation; every
    other model or callable is wrapped as is by :func:`~qrobust_keras.attacks.common.as_predict_fn`. No gradient is
    ever computed.
    """
    if isinstance(model_or_fn, PredictFn):
        return model_or_fn
    from qrobust_keras._keras import keras

    if isinstance(model_or_fn, keras.Model):
        from qrobust_keras.models.heads import logits_model

        return as_predict_fn(logits_model(model_or_fn), batch_size)
    return as_predict_fn(model_or_fn, batch_size)


def looks_like_probabilities(scores: np.ndarray) -> bool:
    """True when the scores are probabilities: every entry in [0, 1] and every row summing to 1.

    The sum may be off by up to ``classes / 256`` (at least 1e-3): an int8 softmax output rounds each probability
    to a multiple of 1/256.
    """
    scores = np.asarray(scores, np.float64)
    if scores.ndim != 2 or not scores.size:
        return False
    tol = max(1e-3, scores.shape[1] / 256.0)
    return bool(scores.min() >= 0.0 and scores.max() <= 1.0 and np.all(np.abs(scores.sum(axis=1) - 1.0) <= tol))


class MarginLoss:
    """Margin loss on scores, to be minimised by an attack; success is the argmax criterion.

    untargeted: ``L = z_y - max_{j != y} z_j`` (negative once the label flips);
    targeted:   ``L = max_{j != t} z_j - z_t`` (negative once the target wins),
    where ``z`` are logits, or log-probabilities when the scores are probabilities (decided once, on the first call,
    by :func:`looks_like_probabilities`, so one attack never mixes the two). This is the margin loss of Square
    (arXiv 1912.00049, Sec. 3) and of SPSA (arXiv 1802.05666, Sec. 3.2).

    Args:
        labels: int labels (true classes, or target classes when ``targeted``), shape (n,).
        targeted: whether the labels are targets.
    """

    def __init__(self, labels: np.ndarray, targeted: bool = False):
        self.labels = np.asarray(labels, np.int64)
        self.targeted = bool(targeted)
        self.probabilities: bool | None = None

    def logits(self, scores: np.ndarray) -> np.ndarray:
        scores = np.asarray(scores, np.float64)
        if self.probabilities is None:
            if scores.ndim != 2:
                raise ValueError(f"the model must return scores of shape (n, classes); got shape {scores.shape}")
            as_int_labels(self.labels, len(self.labels), scores.shape[1], name="y")
            self.probabilities = looks_like_probabilities(scores)
        return np.log(np.maximum(scores, _TINY)) if self.probabilities else scores

    def __call__(self, scores: np.ndarray, idx: np.ndarray | None = None) -> np.ndarray:
        """Loss per row of ``scores`` for the samples ``idx`` (all samples when None); float64, shape (m,)."""
        z = self.logits(scores)
        lab = self.labels if idx is None else self.labels[idx]
        rows = np.arange(len(z))
        z_lab = z[rows, lab]
        other = z.copy()
        other[rows, lab] = -np.inf
        best_other = other.max(axis=1)
        return best_other - z_lab if self.targeted else z_lab - best_other

    def success(self, scores: np.ndarray, idx: np.ndarray | None = None) -> np.ndarray:
        """Per-row success: argmax != label (untargeted) or argmax == target (targeted)."""
        pred = np.asarray(scores).argmax(axis=1)
        lab = self.labels if idx is None else self.labels[idx]
        return pred == lab if self.targeted else pred != lab


def one_hot_labels(predict: PredictFn) -> PredictFn:
    """A label-only view of ``predict``: one-hot rows of the argmax (queries counted on ``predict``).

    Decision-based attacks (HopSkipJump, Boundary) get this view, so they provably use nothing but the top label.
    """

    def fn(x: np.ndarray) -> np.ndarray:
        scores = predict(x)
        out = np.zeros_like(scores)
        out[np.arange(len(scores)), scores.argmax(axis=1)] = 1.0
        return out

    return PredictFn(fn, batch_size=predict.batch_size, name=f"labels({predict.name})")


@contextlib.contextmanager
def seeded_global_numpy(seed: int) -> Iterator[None]:
    """Seed numpy's global RNG for code that draws from it (ART), restoring the caller's state afterwards."""
    state = np.random.get_state()
    np.random.seed(seed % (2**32))
    try:
        yield
    finally:
        np.random.set_state(state)
