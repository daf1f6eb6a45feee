"""Mixed-precision ensemble: members of different bit-widths combined into one differentiable Keras model.

Bernhard et al. (2019, arXiv 1909.12741) exploit the poor transfer of attacks between models of different
bit-widths with an ensemble of float and quantized models. An ensemble evaluated only with attacks transferred from
one member looks robust; Tramer et al. (2020, "On Adaptive Attacks to Adversarial Example Defenses",
arXiv 2002.08347, sec. 5.6) broke such an ensemble (EMPIR, mixed-precision members) by attacking the *whole*
ensemble at once. :class:`MixedPrecisionEnsemble` is therefore a real Keras model whose gradients flow through every
member, so every white-box attack of the library attacks it adaptively; :func:`evaluate_ensemble` reports the
adaptive attack (with EOT where members are stochastic) beside the transfer attacks.

Example:

>>> import numpy as np
>>> from qrobust_keras._keras import keras
>>> from qrobust_keras.defenses import MixedPrecisionEnsemble
>>> def net(seed):
...     keras.utils.set_random_seed(seed)
...     return keras.Sequential([keras.layers.Flatten(input_shape=(4, 4, 1)), keras.layers.Dense(3)])
>>> ensemble = MixedPrecisionEnsemble([net(1), net(2)], combine="mean_softmax")
>>> probs = ensemble.predict_fn(np.zeros((2, 4, 4, 1), np.float32))
>>> probs.shape, bool(np.allclose(probs.sum(axis=1), 1.0, atol=1e-5))
((2, 3), True)
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any, Mapping, Sequence

import numpy as np

from qrobust_keras._keras import keras, tf
from qrobust_keras.models.heads import logits_model

__all__ = ["COMBINE_MODES", "EnsembleCombine", "MixedPrecisionEnsemble", "EnsembleRobustness", "evaluate_ensemble"]

COMBINE_MODES = ("mean_softmax", "vote")


@keras.saving.register_keras_serializable(package="qrobust_keras")
class EnsembleCombine(keras.layers.Layer):
    """Combine member logits into ensemble logits (log-probabilities); the softmax after it gives the scores.

    * ``"mean_softmax"``: ``p = (1/M) sum_m softmax(z_m)``; output ``log p`` computed stably as
      ``logsumexp_m(log_softmax(z_m)) - log M``. Its gradient is the exact gradient of the ensemble.
    * ``"vote"``: forward value: the majority vote, ``q = (v + delta * s) / (1 + delta)`` with
      ``v_k = (1/M) #{m : argmax z_m = k}`` the vote fractions, ``s = (1/M) sum_m softmax(z_m / T)`` the soft vote
      and ``delta = 1e-3`` (ties between vote counts go to the larger soft vote). The hard vote has zero gradient
      almost everywhere, so the backward pass uses the differentiable surrogate ``log s`` (a straight-through /
      BPDA surrogate, Athalye et al. 2018, arXiv 1802.00420, sec. 4.1): output ``log s + stop_gradient(log q -
      log s)``. Attacks therefore follow the soft vote at temperature ``T`` while the prediction is the hard vote.
    """

    def __init__(self, combine: str = "mean_softmax", temperature: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.combine = combine
        self.temperature = float(temperature)

    def call(self, member_logits):
        z = tf.stack(member_logits, axis=0)  # (M, n, classes)
        m = tf.cast(tf.shape(z)[0], z.dtype)
        if self.combine == "mean_softmax":
            return tf.reduce_logsumexp(tf.nn.log_softmax(z, axis=-1), axis=0) - tf.math.log(m)
        log_soft = tf.reduce_logsumexp(tf.nn.log_softmax(z / self.temperature, axis=-1), axis=0) - tf.math.log(m)
        votes = tf.reduce_mean(tf.one_hot(tf.argmax(z, axis=-1), tf.shape(z)[-1], dtype=z.dtype), axis=0)
        delta = 1e-3
        q = (votes + delta * tf.exp(log_soft)) / (1.0 + delta)
        return log_soft + tf.stop_gradient(tf.math.log(q) - log_soft)

    def get_config(self):
        return {**super().get_config(), "combine": self.combine, "temperature": self.temperature}


class _Holder:
    """A plain attribute bag: Keras' automatic tracking ignores objects that are not layers, lists or dicts."""

    def __init__(self, **kwargs):
        self.__dict__.update(kwargs)


def _member_key(key: Any, i: int) -> str:
    text = re.sub(r"[^0-9A-Za-z_]", "_", str(key))
    return f"member_{i}_{text}" if text else f"member_{i}"


@keras.saving.register_keras_serializable(package="qrobust_keras")
class MixedPrecisionEnsemble(keras.Model):
    """An ensemble of classifiers as one functional Keras model: input -> members' logits -> combine -> softmax.

    Gradients flow through every member, so ``qrk.attacks.pgd(ensemble, ...)`` is an adaptive white-box attack on
    the whole ensemble; with stochastic members pass ``eot=`` to the attack. The model ends in
    ``EnsembleCombine(name="logits")`` -> ``Activation("softmax", name="softmax")`` like every library model, so
    :func:`qrobust_keras.models.logits_model` and the attacks find its logits.

    Args:
        models: a list of Keras classifiers, or a dict ``{name: model}`` (names label the members); at least two,
            same input shape and number of classes. Members ending in a softmax contribute their pre-softmax
            logits. The members' weights are shared, not copied.
        combine: ``"mean_softmax"`` (mean of the members' probabilities) or ``"vote"`` (majority vote with a
            soft-vote gradient surrogate; see :class:`EnsembleCombine`).
        temperature: temperature T of the soft-vote surrogate (``"vote"`` only), > 0.
        name: model name.

    Raises:
        ValueError: fewer than two members, mismatched shapes/classes, unknown ``combine``, bad temperature.
        TypeError: a member is not a Keras model.

    References:
        Bernhard et al. 2019 (arXiv 1909.12741); Sen et al. 2020, EMPIR (arXiv 2004.10162); Tramer et al. 2020
        (arXiv 2002.08347) for the adaptive evaluation.
    """

    def __init__(self, models: Sequence[Any] | Mapping[str, Any], combine: str = "mean_softmax",
                 temperature: float = 1.0, name: str = "mixed_precision_ensemble", **kwargs):
        if isinstance(models, Mapping):
            keys, members = [str(k) for k in models], list(models.values())
        elif isinstance(models, (list, tuple)):
            keys, members = [getattr(m, "name", str(i)) for i, m in enumerate(models)], list(models)
        else:
            raise ValueError(f"models must be a list or dict of Keras models; got {type(models).__name__}")
        if len(members) < 2:
            raise ValueError(f"models must hold at least two members; got {len(members)}")
        for key, m in zip(keys, members):
            if not isinstance(m, keras.Model):
                raise TypeError(f"every member must be a Keras model; member {key!r} is {type(m).__name__}")
        if combine not in COMBINE_MODES:
            raise ValueError(f"combine must be one of {COMBINE_MODES}; got combine={combine!r}")
        ok = isinstance(temperature, (int, float, np.floating, np.integer)) and not isinstance(temperature, bool)
        if not ok or not math.isfinite(float(temperature)) or temperature <= 0:
            raise ValueError(f"temperature must be a finite number > 0; got temperature={temperature!r}")
        shapes = {tuple(m.input_shape[1:]) if not isinstance(m.input_shape, list) else None for m in members}
        if None in shapes or len(shapes) != 1:
            raise ValueError("all members must have one input of the same shape; got "
                             f"{dict(zip(keys, [m.input_shape for m in members]))}")
        classes = {m.output_shape[-1] if not isinstance(m.output_shape, list) else None for m in members}
        if None in classes or len(classes) != 1:
            raise ValueError("all members must have one output with the same number of classes; got "
                             f"{dict(zip(keys, [m.output_shape for m in members]))}")
        inputs = keras.Input(shape=shapes.pop(), name="input")
        member_logits = []
        for i, (key, m) in enumerate(zip(keys, members)):
            lm = logits_model(m)
            # A fresh wrapper per member gives unique layer names while sharing the member's layers and weights.
            wrapper = keras.Model(lm.inputs, lm.outputs, name=_member_key(key, i))
            member_logits.append(wrapper(inputs))
        logits = EnsembleCombine(combine, float(temperature), name="logits")(member_logits)
        outputs = keras.layers.Activation("softmax", name="softmax")(logits)
        super().__init__(inputs=inputs, outputs=outputs, name=name, **kwargs)
        # Kept in a plain holder so Keras does not track the members as extra layers (the last layer must stay the
        # softmax, where logits_model and the attacks look for it).
        self._store = _Holder(config={"combine": combine, "temperature": float(temperature), "member_names": keys},
                              members=tuple(members), forward=None)

    @property
    def combine(self) -> str:
        return self._store.config["combine"]

    @property
    def member_names(self) -> list:
        return list(self._store.config["member_names"])

    @property
    def members(self) -> list:
        """The member logit models inside the ensemble (weights shared with the models passed in)."""
        return [self.get_layer(_member_key(k, i)) for i, k in enumerate(self.member_names)]

    def predict_fn(self, x: Any, batch_size: int = 256) -> np.ndarray:
        """Ensemble scores (probabilities; vote fractions for ``"vote"``) of a batch, inference mode, numpy."""
        if self._store.forward is None:
            self._store.forward = tf.function(lambda t: self(t, training=False), reduce_retracing=True)
        x = np.asarray(x, np.float32)
        if x.ndim < 2:
            raise ValueError(f"x must be a batch of shape (n, ...); got shape {x.shape}")
        outs = [self._store.forward(tf.constant(x[i:i + batch_size])).numpy() for i in range(0, len(x), batch_size)]
        return np.concatenate(outs) if outs else np.zeros((0, self.output_shape[-1]), np.float32)

    def member_predictions(self, x: Any, batch_size: int = 256) -> np.ndarray:
        """Argmax labels of every member, shape (members, n)."""
        from qrobust_keras.attacks.common import as_predict_fn

        x = np.asarray(x, np.float32)
        return np.stack([as_predict_fn(m, batch_size)(x).argmax(axis=1) for m in self.members])

    def get_config(self):
        return {"name": self.name, "combine": self.combine, "temperature": self._store.config["temperature"],
                "models": {k: keras.saving.serialize_keras_object(m)
                           for k, m in zip(self.member_names, self._store.members)}}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        # keras.layers.deserialize reads both the new serialization (.keras) and the legacy one of .h5 files,
        # whose members carry class_name "Functional" without a module
        models = {k: keras.layers.deserialize(v, custom_objects=custom_objects)
                  for k, v in config.pop("models").items()}
        return cls(models, **config)


@dataclasses.dataclass
class EnsembleRobustness:
    """Robust accuracy of an ensemble under adaptive and transfer attacks (see :func:`evaluate_ensemble`).

    Attributes:
        rows: list of dicts with ``attack``, ``kind`` ("clean", "adaptive", "black-box", "transfer"),
            ``robust_accuracy`` (fraction of all samples still classified correctly), ``settings``.
        eps: L-inf budget; n_samples: samples evaluated.
        worst_case: fraction of samples classified correctly under every attack (per-sample worst case).
    """

    rows: list
    eps: float
    n_samples: int
    worst_case: float = float("nan")

    def robust_accuracy(self, attack: str) -> float:
        for row in self.rows:
            if row["attack"] == attack:
                return row["robust_accuracy"]
        raise KeyError(f"no row {attack!r}; rows: {[r['attack'] for r in self.rows]}")


    def to_dict(self) -> dict:
        return {"eps": self.eps, "n_samples": self.n_samples, "worst_case": self.worst_case, "rows": self.rows}

    def to_markdown(self) -> str:
        from qrobust_keras.evaluation.common import markdown_table

        body = markdown_table(["attack", "kind", "robust accuracy", "settings"],
                              [[r["attack"], r["kind"], r["robust_accuracy"], r["settings"]] for r in self.rows])
        return (f"Ensemble robustness, eps = {self.eps:.4g}, {self.n_samples} samples; per-sample worst case over "
                f"all attacks: {self.worst_case:.3f}\n\n{body}\n")


def evaluate_ensemble(ensemble: MixedPrecisionEnsemble, x: Any, y: Any, eps: float = 8 / 255, steps: int = 20,
                      eot: int | None = None, sources: Mapping[str, Any] | None = None, queries: int = 0,
                      batch_size: int = 256, seed: int = 0) -> EnsembleRobustness:
    """Attack the ensemble adaptively (PGD on the whole ensemble, EOT where members are stochastic) and by transfer.

    Rows: clean accuracy; ``adaptive_pgd`` (PGD-``steps`` through all members; gradients averaged over ``eot``
    stochastic passes); ``square`` (black-box, when ``queries`` > 0); ``transfer_from_<name>`` for every source
    model (default: the members), PGD crafted on the source alone. Robust accuracy is over all samples.

    Args:
        ensemble: a :class:`MixedPrecisionEnsemble` (any Keras classifier works).
        x, y: inputs in [0, 1] and true labels.
        eps: L-inf budget. steps: PGD iterations.
        eot: EOT passes; None: 8 if a member has stochastic quantizers, else 1.
        sources: ``{name: model}`` to transfer from; default the ensemble's members.
        queries: Square query budget (0 skips the black-box row).
        batch_size, seed: as in the attacks.

    Returns:
        An :class:`EnsembleRobustness`.
    """
    from qrobust_keras._checks import num_classes
    from qrobust_keras.models.heads import has_stochastic_quantizers
    from qrobust_keras.attacks.pgd import pgd
    from qrobust_keras.evaluation.common import check_inputs, predict_labels

    if not isinstance(ensemble, keras.Model):
        raise TypeError(f"ensemble must be a Keras model; got {type(ensemble).__name__}")
    x, y = check_inputs(x, y, num_classes=num_classes(ensemble))
    if eot is None:
        eot = 8 if has_stochastic_quantizers(ensemble) else 1
    if sources is None:
        if isinstance(ensemble, MixedPrecisionEnsemble):
            sources = dict(zip(ensemble.member_names, ensemble._store.members))
        else:
            sources = {}
    correct_all = predict_labels(ensemble, x, batch_size) == y
    rows = [{"attack": "clean", "kind": "clean", "robust_accuracy": float(correct_all.mean()), "settings": ""}]
    still = correct_all.copy()

    def add(name, kind, x_adv, settings):
        ok = predict_labels(ensemble, x_adv, batch_size) == y
        still[:] = still & ok
        rows.append({"attack": name, "kind": kind, "robust_accuracy": float(ok.mean()), "settings": settings})

    add("adaptive_pgd", "adaptive",
        pgd(ensemble, x, y, eps=eps, steps=steps, eot=int(eot), batch_size=batch_size, seed=seed, verbose=0),
        f"PGD-{steps} on the whole ensemble, eot={eot}")
    if queries:
        from qrobust_keras.attacks.square import square

        add("square", "black-box", square(ensemble, x, y, eps=eps, queries=int(queries), batch_size=batch_size,
                                          seed=seed, verbose=0), f"Square, {queries} queries")
    for name, src in sources.items():
        src_eot = 8 if has_stochastic_quantizers(src) and eot > 1 else 1
        add(f"transfer_from_{name}", "transfer",
            pgd(src, x, y, eps=eps, steps=steps, eot=src_eot, batch_size=batch_size, seed=seed, verbose=0),
            f"PGD-{steps} on {name} alone, eot={src_eot}")
    return EnsembleRobustness(rows=rows, eps=float(eps), n_samples=int(len(x)), worst_case=float(still.mean()))
