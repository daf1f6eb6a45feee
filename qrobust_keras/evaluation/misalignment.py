"""Gradient misalignment: do two models' input gradients point the same way?

Bernhard et al. (2019, arXiv 1909.12741) attribute the poor transfer between float and quantized models partly to
*gradient misalignment*: the quantized model's loss gradient points elsewhere than the float one's, so a step along
one barely raises the other's loss. Their exact measure is not available; this module implements the library's
working definition.

**Definition.** With g_m(x) = d/dx CE(z_m(x), y) the input gradient of the cross-entropy on model m's pre-softmax
logits (inference mode; through QKeras quantizers this is the straight-through estimate):

* cosine similarity per sample: ``cos(x) = <g_a, g_b> / (||g_a||_2 ||g_b||_2)`` (undefined, reported as NaN, when
  either gradient is zero);
* sign agreement per sample: the fraction of input coordinates where ``sign(g_a) == sign(g_b)`` (zeros count as
  their own sign). This is what matters for FGSM/BIM transfer: their steps are ``eps * sign(g)``.

A model compared with itself gives cosine 1 and sign agreement 1.

Example:

>>> import numpy as np
>>> from qrobust_keras._keras import keras
>>> from qrobust_keras.evaluation.misalignment import gradient_misalignment
>>> model = keras.Sequential([keras.layers.Flatten(input_shape=(4, 4, 1)), keras.layers.Dense(3)])
>>> x = np.random.default_rng(0).uniform(size=(8, 4, 4, 1)).astype("float32")
>>> result = gradient_misalignment(model, model, x, np.zeros(8, int))
>>> round(result.mean_cosine, 5), result.mean_sign_agreement
(1.0, 1.0)
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from qrobust_keras._checks import check_int, num_classes
from qrobust_keras.evaluation.common import (
    check_input_shape,
    check_inputs,
    check_keras_model,
    dump_json,
    markdown_table,
)

__all__ = ["GradientMisalignment", "gradient_misalignment"]


@dataclasses.dataclass
class GradientMisalignment:
    """Per-sample gradient alignment of two models.

    Attributes:
        name_a, name_b: model names.
        cosine: float64 (n,), NaN where a gradient is zero or non-finite.
        sign_agreement: float64 (n,) in [0, 1].
        zero_gradients_a, zero_gradients_b: number of samples whose gradient is all zero.
    """

    name_a: str
    name_b: str
    cosine: np.ndarray
    sign_agreement: np.ndarray
    zero_gradients_a: int
    zero_gradients_b: int

    @property
    def mean_cosine(self) -> float:
        """Mean cosine over samples where it is defined (NaN if none)."""
        finite = self.cosine[np.isfinite(self.cosine)]
        return float(finite.mean()) if finite.size else float("nan")

    @property
    def mean_sign_agreement(self) -> float:
        return float(self.sign_agreement.mean())

    def to_dict(self) -> dict:
        return {"model_a": self.name_a, "model_b": self.name_b, "mean_cosine": self.mean_cosine,
                "median_cosine": float(np.nanmedian(self.cosine)) if np.isfinite(self.cosine).any() else None,
                "mean_sign_agreement": self.mean_sign_agreement, "n_samples": int(self.cosine.size),
                "undefined_cosine": int(np.sum(~np.isfinite(self.cosine))),
                "zero_gradients_a": self.zero_gradients_a, "zero_gradients_b": self.zero_gradients_b}

    def to_json(self, path: Any = None) -> str:
        return dump_json(self.to_dict(), path)

    def to_markdown(self) -> str:
        d = self.to_dict()
        return markdown_table(["model a", "model b", "mean cosine", "median cosine", "sign agreement", "samples"],
                              [[self.name_a, self.name_b, d["mean_cosine"], d["median_cosine"] or float("nan"),
                                d["mean_sign_agreement"], d["n_samples"]]]) + "\n"


def gradient_misalignment(model_a: Any, model_b: Any, x: Any, y: Any, clip_min: float = 0.0,
                          clip_max: float = 1.0, batch_size: int = 256) -> GradientMisalignment:
    """Cosine similarity and sign agreement of the two models' input gradients, per sample.

    Args:
        model_a, model_b: Keras classifiers with the same input shape and number of classes.
        x: inputs in [clip_min, clip_max], shape (n, ...).
        y: true labels, int (n,) or one-hot; both gradients are of the cross-entropy of these labels.
        clip_min, clip_max: valid input range (checked only).
        batch_size: samples per backward pass.

    Returns:
        A :class:`GradientMisalignment`.

    Raises:
        TypeError: a model is not a Keras model. ValueError: bad x/y or mismatched models.
    """
    from qrobust_keras.attacks.gradients import input_gradients

    model_a = check_keras_model(model_a, "model_a")
    model_b = check_keras_model(model_b, "model_b")
    if num_classes(model_a) != num_classes(model_b):
        raise ValueError(f"model_a and model_b must have the same number of classes; got {num_classes(model_a)} "
                         f"and {num_classes(model_b)}")
    x, y = check_inputs(x, y, clip_min, clip_max, num_classes=num_classes(model_a))
    check_input_shape(model_a, x, "model_a")
    check_input_shape(model_b, x, "model_b")
    batch_size = check_int("batch_size", batch_size)
    ga = input_gradients(model_a, x, y, batch_size).reshape(len(x), -1).astype(np.float64)
    gb = ga if model_b is model_a else input_gradients(model_b, x, y, batch_size).reshape(len(x), -1).astype(
        np.float64)
    na, nb = np.linalg.norm(ga, axis=1), np.linalg.norm(gb, axis=1)
    ok = (na > 0) & (nb > 0) & np.isfinite(na) & np.isfinite(nb)
    cosine = np.full(len(x), np.nan)
    cosine[ok] = np.sum(ga[ok] * gb[ok], axis=1) / (na[ok] * nb[ok])
    cosine = np.clip(cosine, -1.0, 1.0)
    agree = np.mean(np.sign(ga) == np.sign(gb), axis=1)
    return GradientMisalignment(name_a=model_a.name, name_b=model_b.name, cosine=cosine, sign_agreement=agree,
                                zero_gradients_a=int(np.sum(na == 0)), zero_gradients_b=int(np.sum(nb == 0)))
