"""Argument checks shared by the whole package: each raises a ValueError that names the argument, the value received
and what is accepted, and returns the value normalized (``int``/``float``).

Example:

>>> from qrobust_keras._checks import check_int, check_number, check_positive
>>> check_int("steps", 10), check_positive("step_size", 0.5), check_number("tolerance", 0.2, 0.0, 1.0)
(10, 0.5, 0.2)
>>> check_int("steps", 0)
Traceback (most recent call last):
...
ValueError: steps must be an integer >= 1; got steps=0
>>> check_int("filters", 0, accepted="a positive integer")
Traceback (most recent call last):
...
ValueError: filters must be a positive integer; got filters=0
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["check_int", "check_positive", "check_number", "num_classes"]

_REAL = (int, float, np.integer, np.floating)


def check_int(name: str, value: Any, minimum: int = 1, accepted: str | None = None) -> int:
    """An integer (Python or numpy, not bool) >= ``minimum``, returned as ``int``.

    Args:
        name: the argument's name, for the message.
        value: the value received.
        minimum: the smallest value accepted (1: ``steps``, ``batch_size``; 0: ``seed``).
        accepted: how the message words what is accepted (default ``"an integer >= {minimum}"``).

    Raises:
        ValueError: ``"{name} must be an integer >= {minimum}; got {name}={value!r}"``.
    """
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be {accepted or f'an integer >= {minimum}'}; got {name}={value!r}")
    return int(value)


def check_positive(name: str, value: Any, allow_zero: bool = False) -> float:
    """A finite real number > 0 (>= 0 with ``allow_zero``), returned as ``float``.

    Raises:
        ValueError: ``"{name} must be a finite number > 0; got {name}={value!r}"``.
    """
    ok = isinstance(value, _REAL) and not isinstance(value, bool)
    if not ok or not math.isfinite(float(value)) or value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name} must be a finite number {'>= 0' if allow_zero else '> 0'}; got {name}={value!r}")
    return float(value)


def check_number(name: str, value: Any, low: float | None = None, high: float | None = None,
                 low_open: bool = False) -> float:
    """A finite real number inside [low, high] (``low_open``: > low), returned as ``float``.

    Raises:
        ValueError: ``"{name} must be a finite number in [low, high]; got {name}={value!r}"``.
    """
    ok = isinstance(value, _REAL) and not isinstance(value, bool)
    if ok:
        value = float(value)
        ok = math.isfinite(value) and (low is None or (value > low if low_open else value >= low)) and (
            high is None or value <= high)
    if not ok:
        lo = "(" if low_open else "["
        rng = f"{lo}{'-inf' if low is None else f'{low:g}'}, {'inf' if high is None else f'{high:g}'}]"
        raise ValueError(f"{name} must be a finite number in {rng}; got {name}={value!r}")
    return value


def num_classes(model: Any) -> int:
    """Number of classes of a single-output classifier (the last dimension of its output).

    Raises:
        ValueError: the model has several outputs.
    """
    shape = model.output_shape
    if isinstance(shape, list):
        raise ValueError(f"model must have a single output; got output shapes {shape}")
    return int(shape[-1])
