"""Small shared helpers of the model builders (policy checks after building)."""

from __future__ import annotations

from typing import Any

from qrobust_keras._keras import keras
from qrobust_keras.quantization import QuantPolicy


def check_overrides_matched(policy: QuantPolicy, model: keras.Model) -> None:
    """Raise when an override key matches no layer of the built model (a typo would silently do nothing)."""
    names = [layer.name for layer in model.layers]
    unmatched = sorted(set(policy.overrides) - policy.matched_overrides(names))
    if unmatched:
        raise ValueError(f"policy overrides {unmatched} match no layer of model {model.name!r}; layer names are "
                         f"{names}")


def check_input_shape(input_shape: Any, rank: int = 3) -> tuple:
    shape = tuple(input_shape) if isinstance(input_shape, (tuple, list)) else None
    if shape is None or len(shape) != rank or not all(isinstance(d, int) and d > 0 for d in shape):
        raise ValueError(f"input_shape must be {rank} positive integers (height, width, channels); got "
                         f"input_shape={input_shape!r}")
    return shape
