"""Compiled gradient machinery shared by the white-box attacks: logits access, losses, EOT gradients, caching.

Every iterative white-box attack compiles its *whole* inner loop (all steps of one restart) into one
``tf.function`` with a ``None`` batch dimension, so a batch costs one graph call and one trace per model and
configuration. Compiled loops are cached on the model and reused across calls, batches and eps values.

Inference vs stochastic mode: QKeras' stochastic quantizers (``stochastic_ternary``, ``stochastic_binary``) read the
global Keras learning phase (``K.learning_phase()``); ``qrobust_keras._keras`` also makes them sample under
``training=True``, but that would put BatchNorm/Dropout in training mode too. For EOT (``eot > 1``) the attacks
therefore call the model with ``training=False`` inside ``learning_phase_scope(1)``: the quantizers sample while
BatchNorm uses its moving statistics and Dropout is off. Without EOT the model runs in plain inference mode.

Example:

>>> import numpy as np
>>> from qrobust_keras._keras import keras
>>> from qrobust_keras.attacks.gradients import loss_and_grad_fn
>>> model = keras.Sequential([keras.layers.Dense(3, input_shape=(4,))])
>>> fn = loss_and_grad_fn(model, loss="ce", targeted=False, eot=1)
>>> loss, grad, logits = fn(np.zeros((2, 4), np.float32), np.array([0, 1]))
>>> grad.shape
TensorShape([2, 4])
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Any, Callable

import numpy as np

from qrobust_keras._checks import num_classes
from qrobust_keras._keras import keras, tf
from qrobust_keras.attacks.compiled_forward import compiled_inference, plain_inference, xla_forward_enabled
from qrobust_keras.models.heads import has_stochastic_quantizers, logits_model

__all__ = ["LOSSES", "require_keras_model", "cached", "get_logits_model", "stochastic_scope", "mode_note",
           "per_sample_loss", "targeted_dlr_loss", "is_success", "make_loss_grad", "loss_and_grad_fn",
           "input_gradients", "project_tf", "normalize_tf", "random_start", "x_signature", "forward_fn", "scores_fn",
           "predict_labels", "set_eot_seed", "BestOverRestarts", "xla_forward_enabled"]

_CACHE_ATTR = "_qrobust_attack_cache"

LOSSES = ("ce", "dlr", "cw")


def require_keras_model(model: Any, attack: str) -> keras.Model:
    """Return ``model`` if it is a Keras model, else raise a TypeError that points to the black-box attacks."""
    if isinstance(model, keras.Model):
        return model
    raise TypeError(
        f"{attack} is a white-box attack and needs gradients: pass a Keras model; got "
        f"{type(model).__name__}. For predict functions, TFLite runners or other gradient-free models use a "
        "black-box attack: square, spsa, hopskipjump, boundary, zoo (or transfer from a Keras surrogate).")


def _model_cache(model: keras.Model) -> dict:
    # Stored on the model itself, bypassing Keras' attribute tracking: the compiled functions reference the model,
    # so a weak-keyed global table would keep every model alive; as an attribute the cache dies with the model.
    table = model.__dict__.get(_CACHE_ATTR)
    if table is None:
        table = {}
        object.__setattr__(model, _CACHE_ATTR, table)
    return table


def cached(model: keras.Model, key: tuple, build: Callable[[], Any]) -> Any:
    """Return ``build()`` cached per model under ``key`` (the cache lives and dies with the model)."""
    table = _model_cache(model)
    if key not in table:
        table[key] = build()
    return table[key]


def get_logits_model(model: keras.Model) -> keras.Model:
    """Pre-softmax logits view of ``model`` (cached per model)."""
    return cached(model, ("logits_model",), lambda: logits_model(model))


@contextlib.contextmanager
def stochastic_scope(enabled: bool):
    """Learning phase 1 (stochastic QKeras quantizers) while the model is called with ``training=False``."""
    if not enabled:
        yield
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with keras.backend.learning_phase_scope(1):
            yield


def mode_note(model: keras.Model, eot: int) -> str:
    """The sentence attacks put in ``AttackInfo.notes`` about the forward mode used for gradients."""
    if eot > 1:
        if has_stochastic_quantizers(model):
            return (f"gradients averaged over eot={eot} stochastic forward passes (QKeras stochastic quantizers "
                    "sampling via learning phase 1; BatchNorm and Dropout in inference mode)")
        return (f"eot={eot} requested but the model has no stochastic quantizers: the {eot} passes are identical "
                "inference-mode passes")
    return "gradients of the deterministic inference-mode model (training=False; stochastic quantizers, if any, " \
           "act as their deterministic versions)"


def per_sample_loss(logits: tf.Tensor, y: tf.Tensor, loss: str, targeted: bool, n_classes: int,
                    confidence: float = 0.0) -> tf.Tensor:
    """Per-sample loss that the attack *maximizes*.

    * ``"ce"``: cross-entropy of the true class; targeted: minus the cross-entropy of the target class.
    * ``"dlr"``: Difference of Logits Ratio (Croce & Hein 2020, arXiv 2003.01690, eq. 6),
      ``-(z_y - max_{i!=y} z_i) / (z_pi1 - z_pi3 + 1e-12)``; targeted:
      ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4)/2 + 1e-12)`` with y the true label (passed separately).
    * ``"cw"``: Carlini-Wagner margin ``min(max_{i!=y} z_i - z_y, confidence)``; targeted
      ``min(z_t - max_{i!=t} z_i, confidence)``.
    """
    y = tf.cast(y, tf.int32)
    onehot = tf.one_hot(y, n_classes, dtype=logits.dtype)
    if loss == "ce":
        ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits)
        return -ce if targeted else ce
    z_y = tf.reduce_sum(logits * onehot, axis=1)
    z_other = tf.reduce_max(logits - onehot * 1e9, axis=1)
    if loss == "cw":
        margin = z_y - z_other if targeted else z_other - z_y
        return tf.minimum(margin, confidence)
    if loss == "dlr":
        top = tf.sort(logits, axis=1, direction="DESCENDING")
        if targeted:
            raise ValueError("targeted DLR needs the true labels: use targeted_dlr_loss")
        return -(z_y - z_other) / (top[:, 0] - top[:, 2] + 1e-12)
    raise ValueError(f"loss must be one of {LOSSES}; got loss={loss!r}")


def targeted_dlr_loss(logits: tf.Tensor, y_true: tf.Tensor, target: tf.Tensor, n_classes: int) -> tf.Tensor:
    """Targeted DLR (Croce & Hein 2020, sec. 5): ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4)/2 + 1e-12)``."""
    z_y = tf.reduce_sum(logits * tf.one_hot(tf.cast(y_true, tf.int32), n_classes, dtype=logits.dtype), axis=1)
    z_t = tf.reduce_sum(logits * tf.one_hot(tf.cast(target, tf.int32), n_classes, dtype=logits.dtype), axis=1)
    top = tf.sort(logits, axis=1, direction="DESCENDING")
    return -(z_y - z_t) / (top[:, 0] - 0.5 * (top[:, 2] + top[:, 3]) + 1e-12)


def is_success(logits: tf.Tensor, y: tf.Tensor, targeted: bool) -> tf.Tensor:
    """Per-sample bool: prediction differs from y (untargeted) or equals the target y (targeted)."""
    pred = tf.argmax(logits, axis=1, output_type=tf.int32)
    y = tf.cast(y, tf.int32)
    return tf.equal(pred, y) if targeted else tf.not_equal(pred, y)


def make_loss_grad(lm: keras.Model, *, loss: str, targeted: bool, eot: int, n_classes: int,
                   stochastic: bool, forward: Callable | None = None) -> Callable:
    """Graph-mode function ``(x, y, y_true) -> (loss, grad, logits)``; loss/grad averaged over ``eot`` passes.

    ``logits`` are those of the deterministic inference model at ``x`` (a separate pass when ``stochastic``).
    ``y_true`` is only used by targeted DLR. ``forward``: the model's traced deterministic forward pass
    (:func:`traced_logits`); the deterministic passes call it instead of ``lm``, so the layers' Python code is traced
    once per model for every attack and the clean predictions, and an attack's own trace only differentiates it.
    """
    deterministic = (lambda t: lm(t, training=False)) if forward is None else forward

    def one(x, y, y_true):
        with tf.GradientTape() as tape:
            tape.watch(x)
            if stochastic:
                with stochastic_scope(True):
                    logits = lm(x, training=False)
            else:
                logits = deterministic(x)
            if loss == "dlr" and targeted:
                per = targeted_dlr_loss(logits, y_true, y, n_classes)
            else:
                per = per_sample_loss(logits, y, loss, targeted, n_classes)
            total = tf.reduce_sum(per)
        # No differentiable path from the input (e.g. a stop_gradient or a non-differentiable op) gives zeros,
        # not None: every attack then runs (and fails, as it should on shattered gradients; the masking
        # diagnostics and Square report that) instead of crashing inside sign() or the EOT sum.
        grad = tape.gradient(total, x, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        return per, grad, logits

    def fn(x, y, y_true):
        if not stochastic:
            return one(x, y, y_true)
        per_sum = tf.zeros(tf.shape(x)[:1], x.dtype)
        grad_sum = tf.zeros_like(x)
        for _ in tf.range(eot):
            per, grad, _ = one(x, y, y_true)
            per_sum += per
            grad_sum += grad
        logits = deterministic(x)
        return per_sum / eot, grad_sum / eot, logits

    return fn


def loss_and_grad_fn(model: keras.Model, loss: str = "ce", targeted: bool = False, eot: int = 1) -> Callable:
    """Eager-callable ``(x, y) -> (per-sample loss, input gradient, logits)`` on the logits of ``model``."""
    lm = get_logits_model(model)
    inner = make_loss_grad(lm, loss=loss, targeted=targeted, eot=eot, n_classes=num_classes(lm),
                           stochastic=eot > 1, forward=traced_logits(model))
    compiled = tf.function(inner, reduce_retracing=True)

    def call(x, y, y_true=None):
        y = tf.constant(np.asarray(y, np.int32))
        return compiled(tf.constant(np.asarray(x, np.float32)), y, y if y_true is None else tf.constant(
            np.asarray(y_true, np.int32)))

    return call


def input_gradients(model: keras.Model, x: np.ndarray, y: np.ndarray, batch_size: int = 256,
                    eot: int = 1) -> np.ndarray:
    """Input gradients ``d CE(z(x), y) / dx`` of the cross-entropy on the pre-softmax logits ``z`` (float32).

    The model runs in inference mode, so QKeras quantizers contribute their straight-through estimates. With
    ``eot > 1`` the gradient is averaged over ``eot`` passes with stochastic quantizers sampling (Expectation over
    Transformation, Athalye et al. 2018, arXiv 1802.00420, sec. 4.3). A gradient that does not exist (no
    differentiable path from the input to the logits) is returned as zeros. Compiled once per model and ``eot``.
    """
    eot = int(eot)
    fn = cached(model, ("input_gradients", eot), lambda: loss_and_grad_fn(model, "ce", False, eot))
    out = np.zeros(np.shape(x), np.float32)
    for start in range(0, len(x), batch_size):
        rows = slice(start, start + batch_size)
        out[rows] = fn(x[rows], y[rows])[1].numpy()
    return out


def project_tf(x: tf.Tensor, x_adv: tf.Tensor, eps: tf.Tensor, norm: str) -> tf.Tensor:
    """Project ``x_adv`` onto the eps-ball around ``x`` in graph (float32; exactness is restored in numpy)."""
    delta = x_adv - x
    if norm == "inf":
        return x + tf.clip_by_value(delta, -eps, eps)
    axes = list(range(1, len(x.shape)))
    norms = tf.sqrt(tf.reduce_sum(tf.square(delta), axis=axes, keepdims=True))
    factor = tf.minimum(1.0, eps / tf.maximum(norms, 1e-12))
    return x + delta * factor


def normalize_tf(g: tf.Tensor, norm: str) -> tf.Tensor:
    """Steepest-ascent direction of unit norm: ``sign(g)`` for L-inf, ``g / ||g||_2`` for L2."""
    if norm == "inf":
        return tf.sign(g)
    axes = list(range(1, len(g.shape)))
    norms = tf.sqrt(tf.reduce_sum(tf.square(g), axis=axes, keepdims=True))
    return g / tf.maximum(norms, 1e-12)


def random_start(rng: np.random.Generator, x: np.ndarray, eps: float, norm: str, clip_min: float,
                 clip_max: float) -> np.ndarray:
    """Uniform random point of the eps-ball around each x (then clipped), as in Madry et al. 2018 (1706.06083)."""
    if norm == "inf":
        delta = rng.uniform(-eps, eps, size=x.shape)
    else:
        flat = rng.standard_normal(size=(len(x), x[0].size))
        flat /= np.maximum(np.linalg.norm(flat, axis=1, keepdims=True), 1e-30)
        radius = eps * rng.uniform(0, 1, size=(len(x), 1)) ** (1.0 / x[0].size)
        delta = (flat * radius).reshape(x.shape)
    return np.clip(x + delta.astype(np.float32), clip_min, clip_max).astype(np.float32)


def x_signature(x: np.ndarray) -> tf.TensorSpec:
    return tf.TensorSpec([None] + list(x.shape[1:]), tf.float32)


def traced_logits(model: keras.Model) -> Callable:
    """The inference-mode forward pass to the logits as one plain ``tf.function``, cached per model: what the
    attacks differentiate (inside their own compiled loops) and what :func:`forward_fn` runs when not XLA."""
    return cached(model, ("traced_logits",), lambda: plain_inference(get_logits_model(model)))


def forward_fn(model: keras.Model) -> Callable:
    """Compiled inference-mode forward pass to the logits, cached per model (traced once; XLA once it pays for
    QKeras models, see :mod:`~qrobust_keras.attacks.compiled_forward`)."""
    return cached(model, ("forward",), lambda: compiled_inference(get_logits_model(model), traced_logits(model)))


def scores_fn(model: keras.Model) -> Callable:
    """Compiled inference-mode forward pass to the model's own outputs (e.g. softmax scores), cached per model."""
    return cached(model, ("scores",), lambda: compiled_inference(model))


def predict_labels(model: keras.Model, x: np.ndarray, batch_size: int) -> np.ndarray:
    """Argmax labels of the inference-mode model (compiled, cached per model)."""
    fwd = forward_fn(model)
    out = [fwd(tf.constant(x[i:i + batch_size], tf.float32)).numpy().argmax(axis=1)
           for i in range(0, len(x), batch_size)]
    return np.concatenate(out).astype(np.int64)


def set_eot_seed(seed: int, eot: int) -> None:
    """Seed TensorFlow's global RNG so the stochastic quantizers of a fresh compiled loop sample reproducibly."""
    if eot > 1:
        tf.random.set_seed(int(seed))


class BestOverRestarts:
    """Per-sample best result over the restarts of an iterative attack.

    A successful result replaces any unsuccessful one; among unsuccessful results the one with the higher final loss
    is kept; the first success is never replaced.
    """

    def __init__(self, x: np.ndarray):
        self.x = x.copy()
        self.found = np.zeros(len(x), bool)
        self.loss = np.full(len(x), -np.inf)

    def update(self, rows: slice, x_out: np.ndarray, found: np.ndarray, loss: np.ndarray) -> None:
        """Merge one restart's results for ``x[rows]``."""
        idx = np.arange(rows.start, rows.stop)
        open_ = ~self.found[idx]
        take = (found & open_) | (~found & open_ & (loss > self.loss[idx]))
        self.x[idx[take]] = x_out[take]
        self.loss[idx[take]] = loss[take]
        self.found[idx] |= found
