"""Transferability matrix: how often adversarial examples crafted on one model fool another.

Protocol of Bernhard et al. (2019, arXiv 1909.12741, sec. 4): for a source model S and a target T, the success rate
counts only the samples that *both* models classify correctly (hence identically); examples are crafted on S with
the true labels and fed to T. The diagonal (S = T) is the direct white-box success rate on the samples S classifies
correctly. Quantized models receive transferred attacks poorly, which Bernhard et al. trace to value shift and
gradient misalignment (see :mod:`~qrobust_keras.evaluation.value_shift` and
:mod:`~qrobust_keras.evaluation.misalignment`).

Example:

>>> import numpy as np
>>> from qrobust_keras._keras import keras
>>> from qrobust_keras.evaluation.transferability import transferability
>>> def net(seed):
...     keras.utils.set_random_seed(seed)
...     return keras.Sequential([keras.layers.Flatten(input_shape=(4, 4, 1)), keras.layers.Dense(3)])
>>> x = np.random.default_rng(0).uniform(size=(32, 4, 4, 1)).astype("float32")
>>> a, b = net(1), net(2)
>>> y = a.predict(x, verbose=0).argmax(1)
>>> result = transferability({"a": a, "b": b}, x, y, attack="pgd", eps=0.1, attack_kwargs={"steps": 5})
>>> result.success.shape
(2, 2)
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Mapping

import numpy as np

from qrobust_keras._files import new_figure, save_figure
from qrobust_keras._checks import check_int, check_number, num_classes
from qrobust_keras.attacks import registry
from qrobust_keras.evaluation.common import (
    check_input_shape,
    check_inputs,
    check_keras_model,
    dump_json,
    markdown_table,
    predict_labels,
)

__all__ = ["TransferabilityMatrix", "transferability"]


@dataclasses.dataclass
class TransferabilityMatrix:
    """Attack success from every source model (rows) to every target model (columns).

    Attributes:
        names: model names, the order of rows and columns.
        success: float array (k, k); ``success[i, j]`` is the fraction of samples classified correctly by both
            model i and model j that the examples crafted on model i make model j misclassify. NaN when no sample
            qualifies.
        counts: int array (k, k): number of samples each entry is computed on.
        clean_accuracy: per model, on all given samples.
        attack: attack name; eps: its L-inf budget; attack_kwargs: other settings passed to it.
    """

    names: list
    success: np.ndarray
    counts: np.ndarray
    clean_accuracy: np.ndarray
    attack: str
    eps: float
    attack_kwargs: dict

    @property
    def diagonal(self) -> np.ndarray:
        """Direct white-box success of each model (the attack run on the model itself)."""
        return np.diag(self.success).copy()

    def to_dict(self) -> dict:
        return {"names": list(self.names), "success": self.success, "counts": self.counts,
                "clean_accuracy": self.clean_accuracy, "attack": self.attack, "eps": self.eps,
                "attack_kwargs": {k: (v if isinstance(v, (int, float, str, bool)) else repr(v))
                                  for k, v in self.attack_kwargs.items()}}

    def to_json(self, path: Any = None) -> str:
        """JSON text (NaN -> null); written atomically to ``path`` when given."""
        return dump_json(self.to_dict(), path)

    def to_markdown(self) -> str:
        """Markdown table: rows = source (crafted on), columns = target (evaluated on)."""
        head = (f"Attack success of `{self.attack}` (eps = {self.eps:.4g}), crafted on the row model and evaluated "
                "on the column model, on samples both classify correctly (diagonal: direct white-box success).\n\n")
        rows = [[f"**{src}**"] + [self.success[i, j] for j in range(len(self.names))]
                for i, src in enumerate(self.names)]
        table = markdown_table(["source \\ target"] + list(self.names), rows)
        acc = ", ".join(f"{n} {a:.3f}" for n, a in zip(self.names, self.clean_accuracy))
        return head + table + f"\n\nClean accuracy: {acc}.\n"

    def heatmap(self, path: str | os.PathLike, title: str | None = None, dpi: int = 120) -> str:
        """Save the matrix as a PNG heatmap (matplotlib, Agg canvas, atomic write); returns the path."""
        k = len(self.names)
        fig = new_figure((1.2 + 0.9 * k, 1.0 + 0.8 * k))
        ax = fig.add_subplot(1, 1, 1)
        data = np.ma.masked_invalid(self.success)
        im = ax.imshow(data, vmin=0.0, vmax=1.0, cmap="viridis")
        ax.set_xticks(range(k), labels=self.names, rotation=45, ha="right")
        ax.set_yticks(range(k), labels=self.names)
        ax.set_xlabel("target (evaluated on)")
        ax.set_ylabel("source (crafted on)")
        for i in range(k):
            for j in range(k):
                v = self.success[i, j]
                ax.text(j, i, "n/a" if not np.isfinite(v) else f"{v:.2f}", ha="center", va="center",
                        color="white" if np.isfinite(v) and v < 0.6 else "black", fontsize=8)
        fig.colorbar(im, ax=ax, label="attack success")
        ax.set_title(title or f"{self.attack} transfer, eps={self.eps:.3g}")
        fig.tight_layout()
        return save_figure(fig, path, dpi=dpi)


def transferability(
    models: Mapping[str, Any],
    x: Any,
    y: Any,
    attack: Any = "pgd",
    eps: float = 8 / 255,
    attack_kwargs: Mapping[str, Any] | None = None,
    clip_min: float = 0.0,
    clip_max: float = 1.0,
    batch_size: int = 256,
    seed: int = 0,
    verbose: int = 0,
) -> TransferabilityMatrix:
    """Source x target attack-success matrix (Bernhard et al. 2019 protocol).

    For every source model S, ``x_adv_S = attack(S, x, y, eps, seed=seed, ...)`` is crafted once on all samples; the
    entry for target T is ``mean(T(x_adv_S) != y)`` over the samples with ``S(x) == y`` and ``T(x) == y``.

    Args:
        models: ``{name: Keras model}``, at least one; all take the same inputs and output the same classes.
        x: inputs in [clip_min, clip_max], shape (n, ...). Use exact (not JPEG) images for adversarial numbers.
        y: true labels, int (n,) or one-hot.
        attack: a registered attack name or alias (:func:`qrobust_keras.attacks.registry.list_attacks`: ``"fgsm"``,
            ``"pgd"``, ``"apgd-ce"``, ``"square"``, ``"spsa"``...) or a callable
            ``attack(model, x, y, eps=..., seed=..., ...) -> x_adv``.
        eps: L-inf budget in input units.
        attack_kwargs: extra arguments of the attack (``steps``, ``eot``, ``queries``...).
        clip_min, clip_max: valid input range.
        batch_size: samples per batch.
        seed: attack seed (the same for every source).
        verbose: 1 prints one line per source model.

    Returns:
        A :class:`TransferabilityMatrix` (``success``, ``counts``, ``to_markdown()``, ``heatmap(path)``).

    Raises:
        ValueError: empty or non-dict ``models``, mismatched models, bad x/y/eps, unknown attack name.
        TypeError: a model that is not a Keras model, an attack that is neither a name nor a callable.
    """
    if not isinstance(models, Mapping) or not models:
        raise ValueError(f"models must be a non-empty dict {{name: Keras model}}; got {type(models).__name__}"
                         f"{' of length 0' if isinstance(models, Mapping) else ''}")
    names = [str(k) for k in models]
    mlist = [check_keras_model(m, f"models[{k!r}]") for k, m in models.items()]
    classes = {num_classes(m) for m in mlist}
    if len(classes) != 1:
        raise ValueError(f"all models must output the same number of classes; got "
                         f"{dict(zip(names, [num_classes(m) for m in mlist]))}")
    x, y = check_inputs(x, y, clip_min, clip_max, num_classes=classes.pop())
    for name, m in zip(names, mlist):
        check_input_shape(m, x, f"models[{name!r}]")
    span = float(clip_max) - float(clip_min)
    eps = check_number("eps", eps, 0.0, span)
    batch_size = check_int("batch_size", batch_size)
    attack_name, attack_fn = registry.resolve(attack)
    kwargs = dict(attack_kwargs or {})
    for reserved in ("eps", "seed", "clip_min", "clip_max", "x", "y"):
        if reserved in kwargs:
            raise ValueError(f"attack_kwargs must not contain {reserved!r}; pass it as transferability's own "
                             "argument")
    kwargs.setdefault("verbose", 0)
    if isinstance(attack, str) and attack_name != "spsa":  # SPSA's batch_size multiplies its samples per step
        kwargs.setdefault("batch_size", batch_size)

    k = len(mlist)
    correct = np.stack([predict_labels(m, x, batch_size) == y for m in mlist])
    success = np.full((k, k), np.nan)
    counts = np.zeros((k, k), np.int64)
    for i, (name, src) in enumerate(zip(names, mlist)):
        if verbose:
            print(f"transferability: crafting {attack_name} on {name} ({i + 1}/{k})", flush=True)
        if not correct[i].any():
            continue
        # Craft only where the source is correct: every entry of row i uses a subset of these samples.
        idx = np.flatnonzero(correct[i])
        x_adv = np.asarray(attack_fn(src, x[idx], y[idx], eps=eps, seed=seed, clip_min=clip_min,
                                     clip_max=clip_max, **kwargs), np.float32)
        if x_adv.shape != x[idx].shape:
            raise ValueError(f"attack returned shape {x_adv.shape} for inputs of shape {x[idx].shape}")
        for j, tgt in enumerate(mlist):
            both = correct[j][idx]
            counts[i, j] = int(both.sum())
            if counts[i, j]:
                success[i, j] = float((predict_labels(tgt, x_adv[both], batch_size) != y[idx][both]).mean())
    return TransferabilityMatrix(names=names, success=success, counts=counts, clean_accuracy=correct.mean(axis=1),
                                 attack=attack_name, eps=eps, attack_kwargs=kwargs)
