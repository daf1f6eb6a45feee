"""Quantizer specs by name: one table maps a short name to a QKeras quantizer for a given role.

A *spec* is one of

* a name: ``"float"``, ``"int8"``, ``"int4"``, ``"int2"``, ``"ternary"``, ``"stochastic_ternary"``, ``"binary"``,
  ``"stochastic_binary"``;
* a dict with the full QKeras arguments, ``{"type": "quantized_bits", "bits": 6, "integer": 0, "alpha": "auto"}``;
* a QKeras quantizer object (used as is).

The same name means different QKeras objects depending on the *role* of the tensor it quantizes:

============================ ================================================= ==========================================
name                         kernel (weights, per-output-channel scale)          activation (replaces the ReLU)
============================ ================================================= ==========================================
``int8`` / ``int4`` / ``int2`` ``quantized_bits(b, 0, symmetric=1, alpha="auto")`` ``quantized_relu(b, i)``, i = 3 / 2 / 1
``ternary``                  ``ternary(alpha="auto")``                           ``ternary(alpha=1)``
``stochastic_ternary``       ``stochastic_ternary(alpha="auto")``                refused (see below)
``binary``                   ``binary(alpha="auto")``                            ``binary(alpha=1)``
``stochastic_binary``        ``stochastic_binary(alpha="auto")``                 ``stochastic_binary(alpha=1)``
============================ ================================================= ==========================================

Biases accept only ``float`` and the integer grids: ``int8`` -> ``quantized_bits(8, 3, symmetric=1, alpha=1)``
(step 1/16, range +-8), ``int4`` -> ``quantized_bits(4, 2, ...)``, ``int2`` -> ``quantized_bits(2, 1, ...)``; a bias is
one number per channel, so a per-channel ternary/binary scale would be meaningless for it.

QKeras' ``stochastic_ternary`` needs a data-dependent scale (``alpha="auto"``), so it is a weight quantizer only:
as an activation it would make the scale depend on the batch; use ``ternary`` or ``stochastic_binary`` there.

Stochastic quantizers sample only when called with ``training=True`` (``qrobust_keras._keras`` makes them follow the
Keras ``training`` flag; plain QKeras reads only ``K.learning_phase()``, which ``fit`` never sets); at inference they are the deterministic
ternary/binary quantizer (QKeras behaviour). Every gradient through a quantizer is the straight-through estimate.

Example:

>>> from qrobust_keras.quantization import get_quantizer, quantizer_bits
>>> q = get_quantizer("int4", role="kernel")
>>> quantizer_bits(q)
4
>>> get_quantizer("float") is None
True
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Mapping

from qrobust_keras._keras import qkeras_quantizers as qq

ROLES = ("kernel", "bias", "activation")

SPEC_NAMES = ("float", "int8", "int4", "int2", "ternary", "stochastic_ternary", "binary", "stochastic_binary")

# Integer bits of quantized ReLU activations: after BatchNorm activations are roughly unit-scale, so int8 keeps
# [0, 8) in steps of 1/32, int4 [0, 4) in steps of 1/4, int2 [0, 2) in steps of 1/2.
_ACT_INTEGER_BITS = {8: 3, 4: 2, 2: 1}
_BIAS_INTEGER_BITS = {8: 3, 4: 2, 2: 1}
_INT_BITS = {"int8": 8, "int4": 4, "int2": 2}

_KERNEL_TABLE: dict[str, Callable[[], Any]] = {
    "ternary": lambda: qq.ternary(alpha="auto"),
    "stochastic_ternary": lambda: qq.stochastic_ternary(alpha="auto"),
    "binary": lambda: qq.binary(alpha="auto"),
    "stochastic_binary": lambda: qq.stochastic_binary(alpha="auto"),
}
_ACTIVATION_TABLE: dict[str, Callable[[], Any]] = {
    "ternary": lambda: qq.ternary(alpha=1),
    "binary": lambda: qq.binary(alpha=1),
    "stochastic_binary": lambda: qq.stochastic_binary(alpha=1),
}
for _name, _bits in _INT_BITS.items():
    _KERNEL_TABLE[_name] = (lambda b: lambda: qq.quantized_bits(b, 0, keep_negative=True, symmetric=1, alpha="auto"))(
        _bits)
    _ACTIVATION_TABLE[_name] = (lambda b: lambda: qq.quantized_relu(b, _ACT_INTEGER_BITS[b]))(_bits)
del _name, _bits

# Quantizer classes a dict spec may name, by their QKeras name (a table, never eval).
QUANTIZER_TYPES: dict[str, type] = {
    "quantized_bits": qq.quantized_bits,
    "quantized_relu": qq.quantized_relu,
    "quantized_tanh": qq.quantized_tanh,
    "quantized_po2": qq.quantized_po2,
    "quantized_relu_po2": qq.quantized_relu_po2,
    "ternary": qq.ternary,
    "stochastic_ternary": qq.stochastic_ternary,
    "binary": qq.binary,
    "stochastic_binary": qq.stochastic_binary,
}


def _is_quantizer_object(spec: Any) -> bool:
    return isinstance(spec, tuple(QUANTIZER_TYPES.values())) or (
        callable(spec) and hasattr(spec, "get_config") and not isinstance(spec, (str, dict, type)))


def validate_spec(spec: Any, role: str = "kernel", argument: str = "spec") -> Any:
    """Check a spec without building it; returns it normalized (lower-case names, dicts copied).

    Raises:
        ValueError: unknown name, unknown dict type or arguments, or a spec that the role does not accept.
    """
    if role not in ROLES:
        raise ValueError(f"role must be one of {list(ROLES)}; got role={role!r}")
    if spec is None:
        return "float"
    if isinstance(spec, str):
        name = spec.strip().lower()
        if name not in SPEC_NAMES:
            raise ValueError(f"{argument}={spec!r} is not a quantizer spec; valid names: {list(SPEC_NAMES)}, or a dict "
                             "like {'type': 'quantized_bits', 'bits': 6, 'integer': 0, 'alpha': 'auto'}")
        if role == "activation" and name == "stochastic_ternary":
            raise ValueError(f"{argument}={spec!r} cannot quantize activations: QKeras' stochastic_ternary needs a "
                             "data-dependent scale (alpha='auto'), which would depend on the batch; use 'ternary', "
                             "'stochastic_binary' or an integer grid for activations")
        if role == "bias" and name not in ("float", *_INT_BITS):
            raise ValueError(f"{argument}={spec!r} cannot quantize a bias; bias specs: 'float', 'int8', 'int4', 'int2' "
                             "or a dict")
        return name
    if isinstance(spec, Mapping):
        spec = dict(spec)
        qtype = spec.get("type")
        if qtype not in QUANTIZER_TYPES:
            raise ValueError(f"{argument} dict needs 'type' set to one of {sorted(QUANTIZER_TYPES)}; got "
                             f"type={qtype!r}")
        accepted = set(inspect.signature(QUANTIZER_TYPES[qtype].__init__).parameters) - {"self"}
        unknown = sorted(set(spec) - accepted - {"type"})
        if unknown:
            raise ValueError(f"{argument} dict for {qtype!r} has unknown arguments {unknown}; accepted: "
                             f"{sorted(accepted)}")
        return spec
    if _is_quantizer_object(spec):
        return spec
    raise ValueError(f"{argument} must be a spec name {list(SPEC_NAMES)}, a dict with 'type', or a QKeras quantizer; "
                     f"got {spec!r} of type {type(spec).__name__}")


def is_float_spec(spec: Any) -> bool:
    """True when the spec means "no quantization"."""
    return spec is None or (isinstance(spec, str) and spec.strip().lower() == "float")


def get_quantizer(spec: Any, role: str = "kernel") -> Any:
    """Build the QKeras quantizer for a spec and a role (see the module table).

    Args:
        spec: a spec name, a dict with ``type`` and QKeras arguments, or a QKeras quantizer object.
        role: ``"kernel"``, ``"bias"`` or ``"activation"``.

    Returns:
        A fresh QKeras quantizer, or ``None`` for ``"float"``.

    Raises:
        ValueError: for an unknown spec or a spec the role does not accept.
    """
    spec = validate_spec(spec, role)
    if is_float_spec(spec):
        return None
    if isinstance(spec, str):
        if role == "bias":
            bits = _INT_BITS[spec]
            return qq.quantized_bits(bits, _BIAS_INTEGER_BITS[bits], keep_negative=True, symmetric=1, alpha=1)
        return (_ACTIVATION_TABLE if role == "activation" else _KERNEL_TABLE)[spec]()
    if isinstance(spec, dict):
        kwargs = {k: v for k, v in spec.items() if k != "type"}
        return QUANTIZER_TYPES[spec["type"]](**kwargs)
    return spec


def quantizer_bits(quantizer: Any) -> int:
    """Bits per value a quantizer needs when packed: 32 for float, ``bits`` for QKeras grids, 2 ternary, 1 binary."""
    if quantizer is None:
        return 32
    name = type(quantizer).__name__
    if "ternary" in name:
        return 2
    if "binary" in name:
        return 1
    bits = getattr(quantizer, "bits", None)
    return int(bits) if bits is not None else 32


def quantizer_name(quantizer: Any) -> str:
    """Short human-readable description of a quantizer (``"float"`` for None)."""
    return "float" if quantizer is None else str(quantizer)


def _quantizer_is_stochastic(quantizer: Any) -> bool:
    if quantizer is None:
        return False
    name = quantizer if isinstance(quantizer, str) else type(quantizer).__name__
    if "stochastic" in str(name).lower():
        return True
    return bool(getattr(quantizer, "use_stochastic_rounding", False))


def layer_is_stochastic(layer: Any) -> bool:
    """True when the QKeras ``layer`` uses a stochastic quantizer (random under learning phase 1)."""
    for attr in ("kernel_quantizer_internal", "bias_quantizer_internal", "depthwise_quantizer_internal",
                 "pointwise_quantizer_internal", "quantizer", "activation"):
        if _quantizer_is_stochastic(getattr(layer, attr, None)) and type(layer).__name__.startswith("Q"):
            return True
    return any(_quantizer_is_stochastic(q) for q in getattr(layer, "quantizers", []) or [])


__all__ = ["SPEC_NAMES", "ROLES", "QUANTIZER_TYPES", "validate_spec", "is_float_spec", "get_quantizer",
           "quantizer_bits", "quantizer_name", "layer_is_stochastic"]
