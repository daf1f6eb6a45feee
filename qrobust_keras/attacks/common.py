"""Shared plumbing of every attack: argument checks, exact norm/clip constraints, predict-function adapters.

Every public attack is a plain function ``attack(model_or_predict_fn, x, y, eps, ...) -> x_adv`` (cleverhans v4
style). The helpers here make the contract identical across attacks:

* :func:`check_attack_inputs` validates x, y, eps, norm and the clip range and returns float32 inputs and int labels.
* :func:`enforce_constraints` makes ``x_adv`` satisfy the norm bound and the clip range *exactly* in float32.
* :func:`as_predict_fn` turns a Keras model, a ``TFLiteModel``-like object with ``predict`` or a plain callable into
  a batched numpy function returning scores, and counts queries (black-box attacks never touch gradients).

Example:

>>> import numpy as np
>>> from qrobust_keras.attacks.common import enforce_constraints
>>> x = np.full((1, 4), 0.5, np.float32)
>>> x_adv = enforce_constraints(x, x + 0.1, eps=8 / 255, norm="inf")
>>> bool(np.abs(x_adv - x).max() <= 8 / 255)
True
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Iterator

import numpy as np

from qrobust_keras._checks import check_input_batch, check_int

__all__ = ["parse_norm", "as_int_labels", "check_batch", "check_attack_inputs", "project", "float32_inside",
           "enforce_constraints", "perturbation_norms", "batches", "AttackInfo", "PredictFn", "as_predict_fn"]

_NORM_NAMES = {"inf": "inf", "linf": "inf", "l_inf": "inf", "2": "2", "l2": "2"}


def parse_norm(norm: Any) -> str:
    """Return ``"inf"`` or ``"2"`` for the accepted spellings (np.inf, "inf", "linf", 2, "l2").

    Raises:
        ValueError: for anything else.
    """
    if isinstance(norm, (int, float)) and not isinstance(norm, bool):
        if math.isinf(norm):
            return "inf"
        if norm == 2:
            return "2"
    elif isinstance(norm, str) and norm.strip().lower() in _NORM_NAMES:
        return _NORM_NAMES[norm.strip().lower()]
    raise ValueError(f"norm must be one of np.inf, 'inf', 'linf', 2, 'l2'; got norm={norm!r}")


def as_int_labels(y: Any, n: int, num_classes: int | None = None, name: str = "y") -> np.ndarray:
    """Integer class labels from int labels or one-hot/probability rows, checked against ``n`` samples."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] > 1:
        if num_classes is not None and y.shape[1] != num_classes:
            raise ValueError(f"{name} has {y.shape[1]} columns but the model has {num_classes} classes")
        y = y.argmax(axis=1)
    y = y.reshape(-1) if y.ndim == 2 else y
    if y.ndim != 1:
        raise ValueError(f"{name} must be integer labels of shape (n,) or one-hot of shape (n, classes); got {y.shape}")
    if y.shape[0] != n:
        raise ValueError(f"{name} has {y.shape[0]} labels but x has {n} samples; they must match")
    if y.size and not np.issubdtype(y.dtype, np.integer):
        if not np.all(np.equal(np.mod(y, 1), 0)):
            raise ValueError(f"{name} must hold integer class labels; got dtype {y.dtype} with fractional values")
    y = y.astype(np.int64)
    if y.size and y.min() < 0:
        raise ValueError(f"{name} must hold class indices >= 0; got min {y.min()}")
    if num_classes is not None and y.size and y.max() >= num_classes:
        raise ValueError(f"{name} has label {y.max()} but the model has only {num_classes} classes")
    return y


def check_batch(x: Any, clip_min: float = 0.0, clip_max: float = 1.0, name: str = "x") -> np.ndarray:
    """Return ``x`` as float32, checked by :func:`~qrobust_keras._checks.check_input_batch` to be a non-empty
    numeric batch, finite and inside [clip_min, clip_max] (float error of 1e-6 is clipped away).

    Raises:
        ValueError: naming ``name``, the values found and (for 0-255 images) how to rescale them.
    """
    checked = check_input_batch(x, name, (clip_min, clip_max), range_name="[clip_min, clip_max]")
    return np.clip(checked, clip_min, clip_max)


def check_attack_inputs(
    x: Any,
    y: Any,
    eps: float,
    norm: Any = "inf",
    clip_min: float = 0.0,
    clip_max: float = 1.0,
    num_classes: int | None = None,
) -> tuple[np.ndarray, np.ndarray, str]:
    """Validate the arguments shared by all attacks.

    Args:
        x: inputs, shape (n, ...), finite, inside [clip_min, clip_max].
        y: int labels (n,) or one-hot (n, classes); for targeted attacks the target classes.
        eps: perturbation budget in input units, 0 <= eps <= (clip_max - clip_min) for L-inf.
        norm: "inf" or "2" (see :func:`parse_norm`).
        clip_min, clip_max: valid input range.
        num_classes: when known, labels are checked against it.

    Returns:
        ``(x as float32, y as int64, norm as "inf"|"2")``.

    Raises:
        ValueError: naming the argument, the value and what is accepted.
    """
    norm = parse_norm(norm)
    if not (isinstance(clip_min, (int, float, np.floating, np.integer)) and isinstance(
            clip_max, (int, float, np.floating, np.integer))) or not clip_min < clip_max:
        raise ValueError(f"clip_min must be < clip_max; got clip_min={clip_min!r}, clip_max={clip_max!r}")
    x = check_batch(x, clip_min, clip_max)
    eps_ok = isinstance(eps, (int, float, np.floating, np.integer)) and not isinstance(eps, bool)
    if not eps_ok or not math.isfinite(float(eps)) or eps < 0:
        raise ValueError(f"eps must be a finite number >= 0 in input units; got eps={eps!r}")
    span = clip_max - clip_min
    if norm == "inf" and eps > span:
        hint = f" (did you mean {eps:g}/255?)" if eps >= 1 and span <= 1 else ""
        raise ValueError(f"eps must be in [0, {span:g}] for inputs clipped to [{clip_min}, {clip_max}]; "
                         f"got eps={eps!r}{hint}")
    if norm == "2" and eps > span * math.sqrt(x[0].size):
        raise ValueError(f"eps={eps!r} exceeds the L2 diameter of the input box ({span * math.sqrt(x[0].size):g})")
    labels = as_int_labels(y, x.shape[0], num_classes)
    return x, labels, norm


def _nudge_inside(bound: np.ndarray, x: np.ndarray, eps: float) -> np.ndarray:
    """Move float32 bounds one ulp towards x where rounding put them farther than eps (in float64)."""
    bad = np.abs(bound.astype(np.float64) - x.astype(np.float64)) > eps
    while np.any(bad):
        bound = np.where(bad, np.nextafter(bound, x), bound)
        bad = np.abs(bound.astype(np.float64) - x.astype(np.float64)) > eps
    return bound


def project(x: np.ndarray, x_adv: np.ndarray, eps: float, norm: str = "inf") -> np.ndarray:
    """Project ``x_adv`` onto the eps-ball around ``x`` (no clipping). Both float32; returns float32."""
    norm = parse_norm(norm)
    delta = x_adv.astype(np.float64) - x.astype(np.float64)
    if norm == "inf":
        delta = np.clip(delta, -eps, eps)
    else:
        flat = delta.reshape(delta.shape[0], -1)
        norms = np.linalg.norm(flat, axis=1)
        factor = np.minimum(1.0, eps / np.maximum(norms, 1e-30))
        delta = (flat * factor[:, None]).reshape(delta.shape)
    return (x.astype(np.float64) + delta).astype(np.float32)


def float32_inside(clip_min: float, clip_max: float) -> tuple[np.float32, np.float32]:
    """The float32 range closest to [clip_min, clip_max] that lies inside it (float32(0.8) > 0.8, for one)."""
    lo, hi = np.float32(clip_min), np.float32(clip_max)
    if float(lo) < clip_min:
        lo = np.nextafter(lo, np.float32(np.inf))
    if float(hi) > clip_max:
        hi = np.nextafter(hi, np.float32(-np.inf))
    return lo, hi


def enforce_constraints(
    x: np.ndarray, x_adv: np.ndarray, eps: float, norm: str = "inf", clip_min: float = 0.0, clip_max: float = 1.0
) -> np.ndarray:
    """Return ``x_adv`` projected on the eps-ball and clipped, satisfying both bounds exactly in float32.

    Guarantees ``||x_adv - x|| <= eps`` (computed in float64 from the float32 arrays) and
    ``clip_min <= x_adv <= clip_max`` (also in float64: bounds like 0.8 that float32 cannot hold are rounded
    inwards). Non-finite entries of ``x_adv`` are replaced by ``x``.
    """
    norm = parse_norm(norm)
    x = np.asarray(x, np.float32)
    x_adv = np.asarray(x_adv, np.float32)
    x_adv = np.where(np.isfinite(x_adv), x_adv, x)
    clip_min, clip_max = float32_inside(clip_min, clip_max)
    if norm == "inf":
        # Bounds from the exact float64 value x - eps, rounded to float32: at most half an ulp (of the bound's own
        # magnitude) outside, which one nextafter step repairs. (Subtracting in float32 can land on 0 or a
        # denormal whose ulp is ~1e-45, and nudging from there would take forever.)
        x64 = x.astype(np.float64)
        lo = _nudge_inside((x64 - eps).astype(np.float32), x, eps)
        hi = _nudge_inside((x64 + eps).astype(np.float32), x, eps)
        return np.clip(np.clip(x_adv, lo, hi), clip_min, clip_max).astype(np.float32)
    # L2: clipping to the box only moves coordinates towards x (x is inside the box), so it cannot raise the norm.
    out = np.clip(project(x, x_adv, eps, "2"), clip_min, clip_max).astype(np.float32)
    flat = (out.astype(np.float64) - x.astype(np.float64)).reshape(len(x), -1)
    over = np.linalg.norm(flat, axis=1) > eps
    shrink = 1.0 - 1e-6
    while np.any(over):
        delta = (out[over].astype(np.float64) - x[over].astype(np.float64)) * shrink
        out[over] = (x[over].astype(np.float64) + delta).astype(np.float32)
        flat = (out.astype(np.float64) - x.astype(np.float64)).reshape(len(x), -1)
        over = np.linalg.norm(flat, axis=1) > eps
        shrink *= shrink
    return out


def perturbation_norms(x: np.ndarray, x_adv: np.ndarray, norm: str = "inf") -> np.ndarray:
    """Per-sample L-inf or L2 norm of ``x_adv - x`` (float64)."""
    delta = (np.asarray(x_adv, np.float64) - np.asarray(x, np.float64)).reshape(len(x), -1)
    return np.abs(delta).max(axis=1) if parse_norm(norm) == "inf" else np.linalg.norm(delta, axis=1)


def batches(n: int, batch_size: int) -> Iterator[slice]:
    """Slices covering range(n) in chunks of ``batch_size``."""
    check_int("batch_size", batch_size, accepted="a positive integer")
    for start in range(0, n, batch_size):
        yield slice(start, min(start + batch_size, n))


@dataclasses.dataclass
class AttackInfo:
    """What an attack reports besides ``x_adv`` (returned when called with ``return_info=True``).

    Attributes:
        name: attack name.
        queries: per-sample number of model queries (black-box attacks), or None for gradient attacks.
        gradients: per-sample number of gradient evaluations (white-box attacks), or None.
        success: per-sample bool, True where the final ``x_adv`` fools the model (untargeted: label differs from y;
            targeted: label equals the target), as measured by the attack itself.
        notes: free-form remarks (e.g. "stochastic quantizers evaluated in inference mode").
        min_norm: minimum-norm attacks (FAB): per-sample norm of the closest adversarial point found (inf: none).
    """

    name: str
    queries: np.ndarray | None = None
    gradients: np.ndarray | None = None
    success: np.ndarray | None = None
    notes: list[str] = dataclasses.field(default_factory=list)
    min_norm: np.ndarray | None = None


class PredictFn:
    """A batched numpy scoring function with a query counter (see :func:`as_predict_fn`).

    Calling it with an array of shape (m, ...) returns float32 scores of shape (m, classes) and adds ``m`` to
    :attr:`queries`.
    """

    def __init__(self, fn: Callable[[np.ndarray], Any], batch_size: int = 256, name: str = "predict_fn"):
        self._fn = fn
        self.batch_size = batch_size
        self.name = name
        self.queries = 0

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float32)
        outs = [np.asarray(self._fn(x[s]), np.float32) for s in batches(len(x), self.batch_size)]
        self.queries += len(x)
        out = np.concatenate(outs, axis=0) if outs else np.zeros((0, 0), np.float32)
        if out.ndim != 2 or out.shape[0] != len(x):
            raise ValueError(f"{self.name} must return scores of shape (n, classes); got {out.shape} for {len(x)} "
                             "inputs")
        return out


def as_predict_fn(model_or_fn: Any, batch_size: int = 256) -> PredictFn:
    """Wrap a Keras model, an object with ``predict(x)`` (e.g. ``export.TFLiteModel``) or a callable.

    Keras models are called in inference mode through a compiled function (no Keras Progbar, no per-call overhead
    of ``model.predict``). The wrapper never computes gradients.

    Raises:
        TypeError: if ``model_or_fn`` is none of those.
    """
    if isinstance(model_or_fn, PredictFn):
        return model_or_fn
    from qrobust_keras._keras import keras, tf

    if isinstance(model_or_fn, keras.Model):
        from qrobust_keras.attacks.gradients import scores_fn

        forward = scores_fn(model_or_fn)           # compiled once per model, shared by every attack on it
        return PredictFn(lambda a: forward(tf.constant(a, tf.float32)).numpy(), batch_size, name=model_or_fn.name)
    if hasattr(model_or_fn, "predict") and callable(model_or_fn.predict):
        return PredictFn(model_or_fn.predict, batch_size, name=type(model_or_fn).__name__)
    if callable(model_or_fn):
        return PredictFn(model_or_fn, batch_size, name=getattr(model_or_fn, "__name__", "predict_fn"))
    raise TypeError("model must be a Keras model, an object with a predict(x) method, or a callable returning "
                    f"scores; got {type(model_or_fn).__name__}")
