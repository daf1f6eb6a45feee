"""Adversarial training as a Keras callback: part of every batch is replaced by PGD, FGSM or N-FGSM examples crafted
in-graph.

Example:

>>> import numpy as np
>>> import qrobust_keras as qrk
>>> from qrobust_keras._keras import keras
>>> model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(3, name="logits"),
...                           keras.layers.Activation("softmax")])
>>> model.compile("adam", "sparse_categorical_crossentropy")
>>> x, y = np.random.rand(64, 8).astype("float32"), np.random.randint(0, 3, 64)
>>> at = qrk.AdversarialTraining(attack="pgd", eps=2 / 255, steps=3, ratio=0.5)
>>> _ = model.fit(x, y, epochs=1, verbose=0, callbacks=[at])
"""

from __future__ import annotations

import contextlib
import math
import numbers

import numpy as np

from qrobust_keras._checks import check_int
from qrobust_keras._keras import keras, tf
from qrobust_keras._replicas import global_rows, replica_rows_of_draw
from qrobust_keras.models.heads import batchnorm_statistics_frozen, logits_model
from qrobust_keras.training.step import TrainStepHook

__all__ = ["AdversarialTraining", "attacked_rows", "craft_adversarial", "batchnorm_statistics_frozen"]

_ATTACKS = ("pgd", "fgsm", "nfgsm")
_CRAFT_MODES = ("inference", "training")


def _attack_loss(logits, y):
    """Summed cross-entropy on logits; y sparse (ints, any shape with B elements) or one-hot/probabilities."""
    num_classes = logits.shape[-1]
    if y.shape.rank is not None and y.shape.rank == logits.shape.rank and y.shape[-1] == num_classes \
            and num_classes is not None and num_classes > 1:
        return tf.reduce_sum(tf.nn.softmax_cross_entropy_with_logits(tf.cast(y, logits.dtype), logits))
    if num_classes == 1:  # binary classifier with one logit (sigmoid head)
        labels = tf.cast(tf.reshape(y, tf.shape(logits)), logits.dtype)
        return tf.reduce_sum(tf.nn.sigmoid_cross_entropy_with_logits(labels, logits))
    labels = tf.cast(tf.reshape(y, [-1]), tf.int32)
    return tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))


def craft_adversarial(logits_fn, x, y, eps, steps, step_size, clip_min, clip_max, key, random_start=True):
    """L-inf PGD (Madry et al. 2018, arXiv 1706.06083) on the cross-entropy of ``logits_fn`` (in graph).

    ``steps=1`` with ``random_start`` and ``step_size = 1.25 eps`` is FGSM with random start (Wong, Rice, Kolter
    2020, arXiv 2001.03994). ``key`` is a stateless seed of shape [2]. Returns ``stop_gradient(x_adv)``.
    """
    x = tf.convert_to_tensor(x)
    if random_start:
        delta = tf.random.stateless_uniform(tf.shape(x), seed=key, minval=-eps, maxval=eps, dtype=x.dtype)
        x_start = tf.clip_by_value(x + delta, clip_min, clip_max)
    else:
        x_start = x
    return signed_gradient_ascent(lambda t: _attack_loss(logits_fn(t), y), x, x_start, eps, steps, step_size,
                                  clip_min, clip_max)


def signed_gradient_ascent(loss_fn, x, x_start, eps, steps, step_size, clip_min, clip_max):
    """The L-inf PGD iteration (in graph): from ``x_start``, ``steps`` times ``x' <- clip(proj_eps(x' + step_size *
    sign(grad loss_fn(x'))))``, projected onto the eps-ball around ``x`` and ``[clip_min, clip_max]``.

    ``loss_fn`` maps a batch to a scalar to maximise (cross-entropy for PGD, the KL divergence for TRADES).
    Returns ``stop_gradient(x_adv)``.
    """
    x_adv = x_start
    for _ in range(steps):
        with tf.GradientTape() as tape:
            tape.watch(x_adv)
            loss = loss_fn(x_adv)
        grad = tape.gradient(loss, x_adv)
        x_adv = x_adv + step_size * tf.sign(grad)
        x_adv = tf.clip_by_value(tf.clip_by_value(x_adv, x - eps, x + eps), clip_min, clip_max)
    return tf.stop_gradient(x_adv)


def check_attack_arguments(eps, steps, step_size, clip_min, clip_max, seed, craft_mode) -> tuple[int, float]:
    """Validate the in-training attack's arguments (shared by :class:`AdversarialTraining` and
    :class:`~qrobust_keras.training.TRADES`); returns ``(steps, step_size)`` with the defaults filled in: 3 steps
    of ``2.5 * eps / steps``. Raises ValueError naming the argument, the value and what is accepted."""
    if craft_mode not in _CRAFT_MODES:
        raise ValueError(f"craft_mode must be one of {_CRAFT_MODES}; got craft_mode={craft_mode!r}")
    for name, value in (("clip_min", clip_min), ("clip_max", clip_max)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number; got {name}={value!r}")
    if not clip_min < clip_max:
        raise ValueError(f"clip_min must be < clip_max; got clip_min={clip_min!r}, clip_max={clip_max!r}")
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not 0 < eps <= clip_max - clip_min:
        hint = f" (did you mean {eps}/255?)" if isinstance(eps, numbers.Real) and eps > 1 else ""
        raise ValueError(f"eps must be in (0, clip_max - clip_min] = (0, {clip_max - clip_min}]; got eps={eps!r}{hint}")
    steps = 3 if steps is None else steps
    steps = check_int("steps", steps, accepted="a positive integer")
    step_size = 2.5 * eps / steps if step_size is None else step_size
    if isinstance(step_size, bool) or not isinstance(step_size, numbers.Real) or not step_size > 0:
        raise ValueError(f"step_size must be a number > 0 in input units; got step_size={step_size!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)):
        raise ValueError(f"seed must be an integer or None; got seed={seed!r}")
    return int(steps), float(step_size)


def attacked_rows(local_n, ratio: float):
    """Indices, in this replica's part of the batch, of the rows adversarial training attacks.

    Row ``i`` of the global batch is attacked when ``floor((i + 1) ratio) > floor(i ratio)``: a fraction ``ratio`` of
    the rows, spread evenly (every second row at 0.5, rows 4, 9, 14, ... at 0.2). The rule looks only at a row's
    place in the global batch (:func:`~qrobust_keras._replicas.global_rows`), so replicas of a ``tf.distribute``
    strategy, each with its own share, together attack exactly the rows one process attacks, and each replica
    attacks about ``ratio`` of its share (a first-rows rule would leave some replicas nothing to attack).
    """
    offset, _ = global_rows(local_n)
    i = tf.cast(tf.range(offset, offset + tf.cast(local_n, tf.int32)), tf.float64)
    ratio = tf.constant(float(ratio), tf.float64)
    # the margin keeps products like 10 * 0.3 = 3.0000000000000004 on the side their exact value is on
    picked = tf.floor((i + 1.0) * ratio + 1e-9) > tf.floor(i * ratio + 1e-9)
    return tf.cast(tf.where(picked)[:, 0], tf.int32)


def attack_key(seed: int | None, salt: int):
    """The stateless base key of an in-training attack: ``[seed, salt]`` (seed drawn from numpy when None)."""
    seed = seed if seed is not None else int(np.random.randint(0, 2**31 - 1))
    return tf.constant([seed, salt], tf.int64)


def step_key(key, step, replica_id):
    """``key`` folded with the optimizer step and the replica id: fresh, reproducible randomness per step."""
    key = tf.random.experimental.stateless_fold_in(key, tf.cast(step, tf.int64))
    return tf.random.experimental.stateless_fold_in(key, tf.cast(replica_id, tf.int64))


@keras.saving.register_keras_serializable(package="qrobust_keras")
class AdversarialTraining(TrainStepHook):
    """Keras callback: train on batches where a fraction ``ratio`` of the samples is replaced by adversarial ones.

    Each step, the rows :func:`attacked_rows` picks (a fraction ``ratio`` spread evenly over the global batch) are
    attacked in-graph with an L-inf attack on the cross-entropy of the logits (taken before the softmax; gradients
    through QKeras quantizers are the straight-through surrogate); the model then takes its usual training step on
    the mixed batch with its compiled loss, ``sample_weight`` and ``class_weight`` (labels and weights stay with their
    samples). Mixing clean and adversarial examples in one batch follows Kurakin, Goodfellow, Bengio 2017 (arXiv
    1611.01236); ``ratio=1`` is Madry et al.'s pure adversarial training (arXiv 1706.06083).

    * ``attack="pgd"``: random start uniform in the eps-ball, ``steps`` signed-gradient steps of ``step_size``
      (default ``2.5 * eps / steps``), projection onto the eps-ball and ``[clip_min, clip_max]``.
    * ``attack="fgsm"``: FGSM with random start (Wong, Rice, Kolter 2020, arXiv 2001.03994), one step of
      ``step_size`` (default ``1.25 * eps``).
    * ``attack="nfgsm"``: N-FGSM (de Jorge et al. 2022, arXiv 2202.01181): a start drawn uniformly from the ball of
      radius ``noise * eps`` (default ``noise=2``), one signed-gradient step of ``step_size`` (default ``eps``) and
      *no* projection back onto the eps-ball (only onto ``[clip_min, clip_max]``), so
      ``||x_adv - x||_inf <= noise * eps + step_size``. The stronger noise and the missing projection are what keep
      single-step training from catastrophic overfitting at large budgets (the paper: 8/255 and 16/255 on CIFAR-10)
      at the cost of one gradient, against ``steps`` for PGD.

    ``craft_mode`` chooses the network the examples are crafted against:

    * ``"inference"``: BatchNorm moving statistics and deterministic quantizers (``stochastic_ternary`` infers as
      ``ternary``), the network as deployed.
    * ``"training"``: the network the optimizer is about to update: BatchNorm normalizes by the attacked samples'
      batch statistics (the moving statistics are left untouched, :func:`batchnorm_statistics_frozen`) and
      stochastic quantizers draw a fresh sample at every attack step, as in Madry et al.'s reference code, which
      attacks the training graph. Prefer it for stochastic quantized models: during adversarial training their
      moving statistics lag far behind (a stochastic-ternary ResNet-8 scored 48% clean with them after PGD training
      at 4/255, 76% once they were re-estimated), so inference-mode examples are crafted against a network that
      neither trains nor deploys. Crafting against the training-mode network instead raised that model's worst
      case by 2.8-3.1 points at 1/255-4/255 for the same clean accuracy; combined with Jacobian regularization it
      moved the model along the clean/robust trade-off instead (docs/reproduction.md).

    The cost is ``steps`` extra forward+backward passes on the attacked part of the batch. Combine it with
    :class:`~qrobust_keras.training.JacobianRegularization` in the same ``fit`` in any order: adversarial
    examples are made first, and the Jacobian penalty is then computed on the mixed batch.

    Args:
        attack: ``"pgd"``, ``"fgsm"`` or ``"nfgsm"``.
        eps: L-inf budget in input units ([0, 1] for images: 2/255, 8/255, ...).
        steps: PGD iterations (default 3); must be 1 or None for FGSM and N-FGSM.
        step_size: size of each signed-gradient step in input units (defaults above).
        ratio: fraction of each batch replaced by adversarial examples, in [0, 1].
        clip_min, clip_max: valid input range.
        random_start: start from a uniform random point in the eps-ball (default True).
        seed: seed of the random starts (default: drawn from numpy's global generator when training starts).
        craft_mode: ``"inference"`` or ``"training"`` (above).
        noise: N-FGSM only: the radius of the random start in units of ``eps`` (default 2, the paper's ``k``).

    Raises:
        ValueError: unknown attack or craft_mode, eps not in (0, clip_max - clip_min], bad steps/step_size/ratio/clip
            range, ``noise`` given for another attack than N-FGSM or not > 0.
    """

    stage = 0

    def __init__(
        self,
        attack: str = "pgd",
        eps: float = 2 / 255,
        steps: int | None = None,
        step_size: float | None = None,
        ratio: float = 0.5,
        clip_min: float = 0.0,
        clip_max: float = 1.0,
        random_start: bool = True,
        seed: int | None = None,
        craft_mode: str = "inference",
        noise: float | None = None,
    ):
        super().__init__()
        if attack not in _ATTACKS:
            raise ValueError(f"attack must be one of {_ATTACKS}; got attack={attack!r}")
        if attack in ("fgsm", "nfgsm"):
            if steps not in (None, 1):
                raise ValueError(f"attack={attack!r} takes one step; got steps={steps!r} (use attack='pgd')")
            steps = 1
            scale = 1.25 if attack == "fgsm" else 1.0
            step_size = scale * eps if step_size is None and isinstance(eps, numbers.Real) else step_size
        if attack != "nfgsm" and noise is not None:
            raise ValueError(f"noise is the N-FGSM start radius; got noise={noise!r} with attack={attack!r} (its "
                             "random start is uniform in the eps-ball)")
        noise = 2.0 if attack == "nfgsm" and noise is None else noise
        if noise is not None and (isinstance(noise, bool) or not isinstance(noise, numbers.Real)
                                  or not math.isfinite(noise) or not noise > 0):
            raise ValueError(f"noise must be a number > 0 (the start radius in units of eps); got noise={noise!r}")
        steps, step_size = check_attack_arguments(eps, steps, step_size, clip_min, clip_max, seed, craft_mode)
        if isinstance(ratio, bool) or not isinstance(ratio, numbers.Real) or not 0 <= ratio <= 1:
            raise ValueError(f"ratio must be in [0, 1] (fraction of each batch made adversarial); got ratio={ratio!r}")
        self.attack = attack
        self.eps = float(eps)
        self.steps = int(steps)
        self.step_size = float(step_size)
        self.ratio = float(ratio)
        self.clip_min = float(clip_min)
        self.clip_max = float(clip_max)
        self.random_start = bool(random_start)
        self.seed = seed
        self.craft_mode = craft_mode
        self.noise = None if noise is None else float(noise)

    def get_config(self) -> dict:
        return {
            "attack": self.attack, "eps": self.eps, "steps": self.steps, "step_size": self.step_size,
            "ratio": self.ratio, "clip_min": self.clip_min, "clip_max": self.clip_max,
            "random_start": self.random_start, "seed": self.seed, "craft_mode": self.craft_mode, "noise": self.noise,
        }

    @classmethod
    def from_config(cls, config: dict) -> "AdversarialTraining":
        return cls(**config)

    def on_train_begin(self, logs=None):
        self._logits = logits_model(self.model)
        self._key = attack_key(self.seed, 0x0AD7)
        super().on_train_begin(logs)

    def transform_batch(self, x, y, sample_weight):
        if self.ratio == 0.0:
            return x, y, sample_weight
        if isinstance(x, (list, tuple, dict)) or not x.dtype.is_floating:
            raise TypeError(
                "AdversarialTraining needs a single float input tensor (images or features); got "
                f"{type(x).__name__} {getattr(x, 'dtype', '')}"
            )
        if y is None:
            raise ValueError("AdversarialTraining needs labels y to craft adversarial examples; the data has none")
        model = self.model
        key = step_key(self._key, model.optimizer.iterations, 0)
        batch = tf.shape(x)[0]
        rows = attacked_rows(batch, self.ratio)
        training = self.craft_mode == "training"
        frozen = batchnorm_statistics_frozen(model) if training else contextlib.nullcontext()
        eps = tf.cast(self.eps, x.dtype)
        # N-FGSM starts in a wider ball and is not projected back onto the eps-ball: a ball that holds every point
        # one step can reach from its start leaves only the clip to the input range
        start_radius = eps * self.noise if self.attack == "nfgsm" else eps
        ball = start_radius + self.step_size if self.attack == "nfgsm" else eps
        x_part, y_part = tf.gather(x, rows), tf.gather(y, rows)
        if self.random_start:
            # this replica's rows of the draw one process makes for the global batch, so that under a tf.distribute
            # strategy every attacked sample starts where it starts in one process
            delta = tf.gather(replica_rows_of_draw(
                lambda shape: tf.random.stateless_uniform(shape, seed=key, minval=-start_radius, maxval=start_radius,
                                                          dtype=x.dtype),
                tf.shape(x)), rows)
            start = tf.clip_by_value(x_part + delta, self.clip_min, self.clip_max)
        else:
            start = x_part
        with frozen:
            x_adv = signed_gradient_ascent(
                lambda t: _attack_loss(self._logits(t, training=training), y_part), x_part, start, ball, self.steps,
                tf.cast(self.step_size, x.dtype), self.clip_min, self.clip_max)
        return tf.tensor_scatter_nd_update(x, rows[:, None], x_adv), y, sample_weight
