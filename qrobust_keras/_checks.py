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

Model inputs are checked here too, against the library's input conventions (:data:`IMAGE_RANGE`,
:data:`WAVEFORM_RANGE`), so the attacks, the evaluation, the int8 runner, the MFCC front end and export refuse the
same bad batches with the same message:

>>> import numpy as np
>>> from qrobust_keras._checks import IMAGE_RANGE, check_input_batch
>>> check_input_batch(np.full((2, 4, 4, 3), 255, np.uint8), "x", IMAGE_RANGE)
Traceback (most recent call last):
...
ValueError: x must lie in [0, 1] (images: float pixels in [0, 1]); got values in [255, 255] (divide uint8 pixels by 255)
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

import numpy as np

__all__ = ["check_int", "check_positive", "check_number", "num_classes", "check_input_batch", "image_range_of",
           "check_input_shape", "parse_eps", "parse_eps_list", "IMAGE_RANGE", "WAVEFORM_RANGE"]

_REAL = (int, float, np.integer, np.floating)

IMAGE_RANGE = (0.0, 1.0)
"""Images enter every model of the library as float pixels in [0, 1] (uint8 pixels / 255)."""
WAVEFORM_RANGE = (-1.0, 1.0)
"""Audio enters the MFCC front end as float samples at full scale [-1, 1] (int16 PCM / 32768)."""

_CONVENTIONS = {IMAGE_RANGE: "images: float pixels in [0, 1]", WAVEFORM_RANGE: "waveforms: float samples in [-1, 1]"}


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


def check_input_batch(x: Any, name: str = "x", value_range: tuple[float, float] | None = None, *,
                      tolerance: float = 1e-6, min_ndim: int = 2, sample_shape: tuple | None = None,
                      range_name: str | None = None) -> np.ndarray:
    """Return the batch ``x`` as float32 after checking it is a model input the library can use.

    Checked, in this order: ``x`` is numeric (not bool, object or strings); it has at least ``min_ndim`` axes and
    at least one sample; its sample shape is ``sample_shape`` (``None`` entries match any size) when given; every
    value is finite; every value lies in ``value_range`` up to ``tolerance`` (``None``: any finite value). The
    message names ``name``, what was found and, for the library's conventions, how to rescale: uint8 pixels / 255
    for :data:`IMAGE_RANGE`, int16 PCM / 32768 for :data:`WAVEFORM_RANGE`. ``range_name`` names the arguments the
    range came from (``"[clip_min, clip_max]"``), so the message points at what to change.

    Raises:
        ValueError: naming ``name``, the values or shape found and what is accepted.
    """
    arr = np.asarray(x)
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
        raise ValueError(f"{name} must be a real numeric array; got dtype {arr.dtype}")
    if arr.ndim < min_ndim or arr.size == 0:
        raise ValueError(f"{name} must be a non-empty batch of shape (n, ...) with at least {min_ndim} axes; got "
                         f"shape {arr.shape}")
    if sample_shape is not None:
        want = tuple(sample_shape)
        if arr.ndim != len(want) + 1 or any(w is not None and w != s for w, s in zip(want, arr.shape[1:])):
            shown = ", ".join("None" if w is None else str(w) for w in want)
            single = " (a single sample? add a batch axis: x[None])" if tuple(arr.shape) == want else ""
            raise ValueError(f"{name} must have shape (n, {shown}); got {arr.shape}{single}")
    arr = arr.astype(np.float32, copy=False)
    finite = np.isfinite(arr)
    if not finite.all():
        raise ValueError(f"{name} contains {int(arr.size - np.count_nonzero(finite))} NaN or infinite values; "
                         "model inputs must be finite")
    if value_range is not None:
        low, high = float(value_range[0]), float(value_range[1])
        lo, hi = float(arr.min()), float(arr.max())
        if lo < low - tolerance or hi > high + tolerance:
            what = _CONVENTIONS.get((low, high))
            hint = ""
            if (low, high) == IMAGE_RANGE and hi > 1.5:
                hint = " (divide uint8 pixels by 255)"
            elif (low, high) == WAVEFORM_RANGE and max(abs(lo), abs(hi)) > 1.5:
                hint = " (divide int16 PCM samples by 32768)"
            named = f"{range_name} = " if range_name else ""
            convention = f" ({what})" if what else ""
            raise ValueError(f"{name} must lie in {named}[{low:g}, {high:g}]{convention}; got values in "
                             f"[{lo:g}, {hi:g}]{hint}")
    return arr


def image_range_of(model: Any) -> tuple[float, float] | None:
    """:data:`IMAGE_RANGE` when ``model`` takes RGB images (one input of shape (h, w, 3)), else None (unknown).

    The library's image models all take [0, 1] pixels; other inputs (MFCC features, custom data) have no range the
    library can know, so callers check them only for shape and finiteness unless told a range.
    """
    shape = getattr(model, "input_shape", None)
    if isinstance(shape, tuple) and len(shape) == 4 and shape[-1] == 3:
        return IMAGE_RANGE
    return None


def check_input_shape(model: Any, x: np.ndarray, argument: str = "model") -> None:
    """Raise if ``x``'s sample shape (rank included) does not fit ``model.input_shape`` (``None`` matches any size).

    Raises:
        ValueError: ``"x has sample shape (...) but {argument} expects (...)"``, or the model has several inputs.
    """
    shape = model.input_shape
    if isinstance(shape, list):
        raise ValueError(f"{argument} must have a single input; got input shapes {shape}")
    want = tuple(shape[1:])
    if len(want) != x.ndim - 1 or any(d is not None and d != s for d, s in zip(want, x.shape[1:])):
        raise ValueError(f"x has sample shape {x.shape[1:]} but {argument} expects {want}")


def parse_eps(text: str) -> float:
    """Parse one budget: ``"8/255"``, ``"0.03"``, ``"3e-2"`` or ``"2"`` (only when it is <= 1 after parsing).

    Raises:
        ValueError: text that is not a number or fraction, a zero denominator, or a value outside (0, 1] (images
            are in [0, 1]; ``8`` suggests ``8/255``).
    """
    raw = str(text).strip()
    if not raw:
        raise ValueError("eps is empty; give a number like 0.03 or a fraction like 8/255")
    try:
        if raw.count("/") > 1:
            raise ValueError("more than one '/'")
        if "/" in raw:
            num, den = raw.split("/", 1)
            value = float(Fraction(num.strip()) / Fraction(den.strip()))
        else:
            value = float(Fraction(raw))
    except (ValueError, ZeroDivisionError) as exc:
        raise ValueError(f"eps={raw!r} is not a number or fraction; accepted forms: 8/255, 0.03, 3e-2") from exc
    if not 0 < value <= 1:
        hint = f" (did you mean {raw}/255?)" if value > 1 and "/" not in raw else ""
        raise ValueError(f"eps must be in (0, 1] for inputs in [0, 1]; got eps={raw!r} = {value:g}{hint}")
    return value


def parse_eps_list(text: str) -> list[float]:
    """Comma-separated budgets, e.g. ``"1/255,2/255,8/255"`` -> sorted unique floats."""
    parts = [p for p in str(text).split(",") if p.strip()]
    if not parts:
        raise ValueError(f"--eps needs at least one budget; got {text!r}")
    return sorted(set(parse_eps(p) for p in parts))
