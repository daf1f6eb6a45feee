"""TRADES (Zhang et al. 2019, arXiv 1901.08573) as a Keras callback: a clean-accuracy loss plus a robustness term.

Adversarial training (:class:`~qrobust_keras.training.AdversarialTraining`) fits the labels of adversarial
examples. TRADES keeps the ordinary loss on the clean batch and adds a term that asks the prediction not to move
within the eps-ball:

    L = CE(f(x), y) + beta * mean_i KL( p(x_i) || p(x'_i) ),  x'_i = argmax_{|x' - x_i|_inf <= eps} KL(p(x_i) || p(x'))

where p is the softmax of the logits and x' is found by PGD on the KL divergence from a start of x plus Gaussian
noise of standard deviation 0.001 (the reference implementation's). ``beta`` sets the clean/robust trade-off: the
paper uses 6 on CIFAR-10 (1 keeps more clean accuracy). The gradient flows through both distributions of the KL
term, as in the reference code.

Example (a small classifier on random data; the KL term is logged as ``trades_kl``):

>>> import numpy as np
>>> import qrobust_keras as qrk
>>> from qrobust_keras._keras import keras
>>> x, y = np.random.rand(64, 8).astype("float32"), np.random.randint(0, 4, 64)
>>> net = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"),
...                         keras.layers.Dense(4, name="logits"), keras.layers.Softmax()])
>>> net.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
>>> trades = qrk.training.TRADES(eps=4 / 255, beta=6.0, seed=0)
>>> sorted(net.fit(x, y, batch_size=32, verbose=0, callbacks=[trades]).history)
['loss', 'trades_kl']
"""

from __future__ import annotations

import contextlib
import numbers

from qrobust_keras._keras import keras, tf
from qrobust_keras.models.heads import logits_model
from qrobust_keras.training.adversarial import attack_key, batchnorm_statistics_frozen, check_attack_arguments, \
    signed_gradient_ascent, step_key
from qrobust_keras.training.distribute import replica_rows_of_draw
from qrobust_keras.training.step import StepContext, TrainStepHook

__all__ = ["TRADES", "kl_divergence_from_logits"]


def kl_divergence_from_logits(logits_p, logits_q):
    """Per-sample ``KL(softmax(logits_p) || softmax(logits_q)) = sum_k p_k (log p_k - log q_k)`` (stable: computed
    with log-softmax)."""
    log_p = tf.nn.log_softmax(logits_p, axis=-1)
    log_q = tf.nn.log_softmax(logits_q, axis=-1)
    return tf.reduce_sum(tf.exp(log_p) * (log_p - log_q), axis=-1)


@keras.saving.register_keras_serializable(package="qrobust_keras")
class TRADES(TrainStepHook):
    """Keras callback: add the TRADES robustness term ``beta * KL(p(x) || p(x'))`` to the loss of every batch.

    The model's compiled loss stays on the clean batch (with ``sample_weight`` and ``class_weight``); the KL term
    is the unweighted mean over the batch. Each step costs ``steps`` forward+backward passes on the batch to craft
    x' plus one training-mode forward pass on x' (so about twice a half-batch :class:`AdversarialTraining` step at
    the same ``steps``). It composes with :class:`~qrobust_keras.training.JacobianRegularization` and
    :class:`AdversarialTraining` in the same ``fit`` (they share one train step).

    ``craft_mode`` chooses the network x' is crafted against, as in :class:`AdversarialTraining`: ``"inference"``
    (moving statistics, deterministic quantizers; the reference code crafts in eval mode) or ``"training"``
    (batch statistics with the moving statistics frozen, sampled stochastic quantizers). The KL term itself is
    always computed with the training-mode network the optimizer updates.

    Args:
        eps: L-inf budget in input units ([0, 1] for images).
        beta: weight of the KL term (> 0; the paper's CIFAR-10 value is 6).
        steps: PGD iterations on the KL divergence (default 3; the paper uses 10).
        step_size: size of each signed-gradient step (default ``2.5 * eps / steps``).
        clip_min, clip_max: valid input range.
        seed: seed of the start noise (default: drawn from numpy's global generator when training starts).
        craft_mode: ``"inference"`` or ``"training"``.

    Raises:
        ValueError: eps not in (0, clip_max - clip_min], beta not > 0, bad steps/step_size/clip range/seed/craft_mode.
    """

    def __init__(
        self,
        eps: float = 8 / 255,
        beta: float = 6.0,
        steps: int | None = None,
        step_size: float | None = None,
        clip_min: float = 0.0,
        clip_max: float = 1.0,
        seed: int | None = None,
        craft_mode: str = "inference",
    ):
        super().__init__()
        steps, step_size = check_attack_arguments(eps, steps, step_size, clip_min, clip_max, seed, craft_mode)
        if isinstance(beta, bool) or not isinstance(beta, numbers.Real) or not 0 < beta < float("inf"):
            raise ValueError(f"beta must be a finite number > 0 (weight of the KL term; the paper uses 6); "
                             f"got beta={beta!r}")
        self.eps, self.beta, self.steps, self.step_size = float(eps), float(beta), steps, step_size
        self.clip_min, self.clip_max, self.seed, self.craft_mode = float(clip_min), float(clip_max), seed, craft_mode

    def get_config(self) -> dict:
        return {"eps": self.eps, "beta": self.beta, "steps": self.steps, "step_size": self.step_size,
                "clip_min": self.clip_min, "clip_max": self.clip_max, "seed": self.seed, "craft_mode": self.craft_mode}

    @classmethod
    def from_config(cls, config: dict) -> "TRADES":
        return cls(**config)

    def on_train_begin(self, logs=None):
        self._logits = logits_model(self.model)
        self._key = attack_key(self.seed, 0x78AD)
        self._kl = keras.metrics.Mean(name="trades_kl")
        super().on_train_begin(logs)

    def on_epoch_begin(self, epoch, logs=None):
        self._kl.reset_state()

    def feature_tensors(self, model: keras.Model) -> dict:
        # the clean logits of the shared training-mode forward pass (no second pass on the clean batch)
        return {"logits": logits_model(model).output}

    def craft(self, x, key):
        """x' for the batch ``x``: PGD on ``KL(p(x) || p(x'))`` with the craft network (in graph)."""
        training = self.craft_mode == "training"
        frozen = batchnorm_statistics_frozen(self.model) if training else contextlib.nullcontext()
        with frozen:
            reference = tf.stop_gradient(self._logits(x, training=training))
            # the noise one process would draw for the global batch: equal updates under a strategy
            noise = 0.001 * replica_rows_of_draw(
                lambda shape: tf.random.stateless_normal(shape, seed=key, dtype=x.dtype), tf.shape(x))
            start = tf.clip_by_value(x + noise, self.clip_min, self.clip_max)
            return signed_gradient_ascent(
                lambda t: tf.reduce_sum(kl_divergence_from_logits(reference, self._logits(t, training=training))),
                x, start, tf.cast(self.eps, x.dtype), self.steps, tf.cast(self.step_size, x.dtype), self.clip_min,
                self.clip_max)

    def penalty(self, ctx: StepContext):
        x = ctx.x
        if isinstance(x, (list, tuple, dict)) or not x.dtype.is_floating:
            raise TypeError(f"TRADES needs a single float input tensor (images or features); got {type(x).__name__} "
                            f"{getattr(x, 'dtype', '')}")
        key = step_key(self._key, ctx.step, 0)  # one key for the global batch (see craft)
        with ctx.outer_tape.stop_recording():
            x_adv = self.craft(x, key)
        kl = tf.reduce_mean(kl_divergence_from_logits(ctx.features["logits"], self._logits(x_adv, training=True)))
        self._kl.update_state(tf.stop_gradient(kl))
        return self.beta * kl

    def logged_values(self) -> dict:
        return {"trades_kl": self._kl.result()}
