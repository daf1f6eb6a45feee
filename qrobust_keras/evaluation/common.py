"""Plumbing shared by the honest-evaluation diagnostics (masking, transferability, value shift, misalignment) and
the ensemble defense: input checks with messages that name the argument, compiled inference labels, markdown tables
and JSON files. Attacks by name come from :mod:`qrobust_keras.attacks.registry`, numeric argument checks from
:mod:`qrobust_keras._checks`.

Example:

>>> from qrobust_keras.evaluation.common import markdown_table
>>> print(markdown_table(["a", "b"], [[1, 0.5]]))
| a | b |
|---|---|
| 1 | 0.500 |
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, Sequence

import numpy as np

from qrobust_keras._checks import check_input_shape  # re-exported: the check lives in one place
from qrobust_keras._files import atomic_write

__all__ = ["check_keras_model", "check_inputs", "check_input_shape", "predict_labels", "success_rate", "fmt",
           "markdown_table", "jsonable", "dump_json"]


def check_keras_model(model: Any, argument: str = "model") -> Any:
    """Return ``model`` if it is a Keras model (gradients are needed), else raise a TypeError naming ``argument``."""
    from qrobust_keras._keras import keras

    if not isinstance(model, keras.Model):
        raise TypeError(f"{argument} must be a Keras model (the diagnostics need input gradients); got "
                        f"{type(model).__name__}")
    return model


def check_inputs(x: Any, y: Any, clip_min: float = 0.0, clip_max: float = 1.0, x_name: str = "x",
                 num_classes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Validate a batch ``x`` (finite, inside the clip range) and its labels; return float32 x and int64 y."""
    from qrobust_keras.attacks.common import as_int_labels, check_batch

    if not clip_min < clip_max:
        raise ValueError(f"clip_min must be < clip_max; got clip_min={clip_min!r}, clip_max={clip_max!r}")
    x = check_batch(x, clip_min, clip_max, x_name)
    if y is None:
        raise ValueError("y must be the true labels, int (n,) or one-hot (n, classes); got y=None")
    return x, as_int_labels(y, x.shape[0], num_classes)


def predict_labels(model: Any, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Argmax labels of a Keras ``model`` in inference mode (compiled forward pass cached per model, no Progbar)."""
    from qrobust_keras.attacks.gradients import predict_labels as _predict

    return _predict(model, np.asarray(x, np.float32), batch_size)


def success_rate(pred: np.ndarray, y: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Fraction of samples (inside ``mask``) whose prediction differs from y; NaN when the mask is empty."""
    wrong = pred != y
    if mask is not None:
        wrong = wrong[mask]
    return float(wrong.mean()) if wrong.size else float("nan")


def fmt(value: Any, digits: int = 3) -> str:
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (float, np.floating)):
        return "n/a" if not math.isfinite(float(value)) else f"{float(value):.{digits}f}"
    return str(value)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub markdown table; floats with 3 decimals, NaN as n/a."""
    lines = ["| " + " | ".join(map(str, headers)) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def jsonable(obj: Any) -> Any:
    """Numpy scalars/arrays and NaN made JSON-safe (NaN and inf -> None)."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(float(obj)) else None
    return obj


def dump_json(obj: Any, path: str | os.PathLike | None = None) -> str:
    """JSON text of ``obj`` (made safe by :func:`jsonable`); written atomically to ``path`` when given."""
    text = json.dumps(jsonable(obj), indent=2)
    if path is not None:
        atomic_write(path, text)
    return text
