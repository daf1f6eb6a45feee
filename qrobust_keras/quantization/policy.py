"""QuantPolicy: one object that says how every layer of a model is quantized.

A policy has a default spec per role (kernel, bias, activation, batchnorm) and per-layer ``overrides`` keyed by an
exact layer name or a glob (``"stack3_*"``). Resolution order for a layer: an exact-name override, else the first
matching glob in the order given, else the default. An override value is

* a spec (name, dict with ``type`` or QKeras quantizer): it applies to the layer's main role - the kernel of a
  weight layer, the activation of an activation layer, the parameters of a BatchNorm layer;
* a dict with role keys, e.g. ``{"kernel": "int8", "bias": "float"}``, for full control.

The bias default ``None`` means: ``"int8"`` where the layer's kernel is quantized, ``"float"`` where it is not.
``QuantPolicy("float")`` (or the string ``"float"``) yields plain Keras layers everywhere: the float twin.

Example:

>>> from qrobust_keras.quantization import QuantPolicy
>>> policy = QuantPolicy(kernel="stochastic_ternary", activation="int4",
...                      overrides={"conv_1": "int8", "logits": "int8"})
>>> policy.resolve("conv_1", "kernel"), policy.resolve("stack2_conv_a", "kernel")
('int8', 'stochastic_ternary')
"""

from __future__ import annotations

import fnmatch
from typing import Any, Iterable, Mapping

from qrobust_keras.quantization.specs import QUANTIZER_TYPES, ROLES, SPEC_NAMES, is_float_spec, validate_spec

POLICY_ROLES = ROLES + ("batchnorm",)
_MAIN_ROLE = {"weight": "kernel", "activation": "activation", "batchnorm": "batchnorm"}


def _spec_role(role: str) -> str:
    # BatchNorm parameters are per-channel numbers like a bias, so they take the bias table.
    return "bias" if role == "batchnorm" else role


def _serialize_spec(spec: Any) -> Any:
    if isinstance(spec, (str, dict)) or spec is None:
        return spec
    name = type(spec).__name__
    if name in QUANTIZER_TYPES:
        import inspect

        accepted = set(inspect.signature(QUANTIZER_TYPES[name].__init__).parameters) - {"self"}
        config = {k: v for k, v in spec.get_config().items() if k in accepted}
        return {"type": name, **config}
    raise ValueError(f"cannot serialize quantizer {spec!r}; use a spec name or a dict with 'type'")


class QuantPolicy:
    """How every layer of a model is quantized.

    Args:
        kernel: default spec of weight kernels (Conv2D, DepthwiseConv2D, Dense). See
            :mod:`qrobust_keras.quantization.specs` for names.
        bias: default spec of biases; ``None`` = ``"int8"`` where the kernel is quantized, else ``"float"``.
        activation: default spec of activations (replacing ReLU); ``"float"`` keeps a plain ReLU.
        batchnorm: spec of BatchNorm parameters; ``"float"`` (default) keeps plain BatchNormalization, which int8
            export folds into the preceding convolution.
        overrides: ``{layer name or glob: spec or {role: spec}}``.

    Raises:
        ValueError: for unknown specs, roles or malformed overrides (naming the offending key).
    """

    def __init__(self, kernel: Any = "float", bias: Any = None, activation: Any = "float", batchnorm: Any = "float",
                 overrides: Mapping[str, Any] | None = None):
        self.kernel = validate_spec(kernel, "kernel", "kernel")
        self.bias = None if bias is None else validate_spec(bias, "bias", "bias")
        self.activation = validate_spec(activation, "activation", "activation")
        self.batchnorm = validate_spec(batchnorm, "bias", "batchnorm")
        if overrides is not None and not isinstance(overrides, Mapping):
            raise ValueError(f"overrides must be a dict {{layer name or glob: spec}}; got {type(overrides).__name__}")
        self.overrides: dict[str, Any] = {}
        for key, value in (overrides or {}).items():
            if not isinstance(key, str) or not key:
                raise ValueError(f"overrides keys must be non-empty layer names or globs; got {key!r}")
            self.overrides[key] = self._validate_override(key, value)

    @staticmethod
    def _validate_override(key: str, value: Any) -> Any:
        if isinstance(value, Mapping) and "type" not in value:
            unknown = sorted(set(value) - set(POLICY_ROLES))
            if unknown or not value:
                raise ValueError(f"overrides[{key!r}] dict must have role keys from {list(POLICY_ROLES)} (or 'type' for "
                                 f"a QKeras quantizer dict); got keys {sorted(value)}")
            return {role: None if (role == "bias" and spec is None) else
                    validate_spec(spec, _spec_role(role), f"overrides[{key!r}][{role!r}]")
                    for role, spec in value.items()}
        # A bare spec is checked as a kernel spec here; role-specific limits are checked when it is resolved.
        return validate_spec(value, "kernel", f"overrides[{key!r}]")

    @classmethod
    def from_any(cls, policy: Any) -> "QuantPolicy":
        """Accept a QuantPolicy, a spec name, a config dict, or None (= float).

        A name sets the kernels; integer names (int8/int4/int2) also set the activations, while ternary/binary names
        quantize weights only (activations stay float ReLU, like the w-only models of Bernhard et al. 2019).
        """
        if isinstance(policy, QuantPolicy):
            return policy
        if policy is None:
            return cls()
        if isinstance(policy, str):
            name = validate_spec(policy, "kernel", "policy")
            return cls(kernel=name, activation=name if name.startswith("int") or name == "float" else "float")
        if isinstance(policy, Mapping):
            unknown = sorted(set(policy) - {"kernel", "bias", "activation", "batchnorm", "overrides"})
            if unknown:
                raise ValueError(f"policy dict has unknown keys {unknown}; accepted: kernel, bias, activation, "
                                 "batchnorm, overrides")
            return cls(**policy)
        raise ValueError(f"policy must be a QuantPolicy, a spec name {list(SPEC_NAMES)}, a dict or None; got "
                         f"{policy!r}")

    def _override_for(self, layer_name: str) -> Any:
        if layer_name in self.overrides:
            return self.overrides[layer_name]
        for pattern, value in self.overrides.items():
            if fnmatch.fnmatchcase(layer_name, pattern):
                return value
        return None

    def matched_overrides(self, layer_names: Iterable[str]) -> set[str]:
        """The override keys that match at least one of ``layer_names``."""
        names = list(layer_names)
        return {key for key in self.overrides if any(fnmatch.fnmatchcase(n, key) for n in names)}

    def resolve(self, layer_name: str, role: str, kind: str | None = None) -> Any:
        """Spec for ``role`` of layer ``layer_name``.

        Args:
            layer_name: the Keras layer name.
            role: ``"kernel"``, ``"bias"``, ``"activation"`` or ``"batchnorm"``.
            kind: ``"weight"``, ``"activation"`` or ``"batchnorm"``: which role a bare-spec override applies to
                (defaults to the kind implied by ``role``).
        """
        if role not in POLICY_ROLES:
            raise ValueError(f"role must be one of {list(POLICY_ROLES)}; got role={role!r}")
        kind = kind or {"kernel": "weight", "bias": "weight"}.get(role, role)
        override = self._override_for(layer_name)
        if isinstance(override, dict) and "type" not in override:
            if role in override and not (role == "bias" and override[role] is None):
                return override[role]
        elif override is not None and _MAIN_ROLE[kind] == role:
            return validate_spec(override, _spec_role(role), f"overrides for layer {layer_name!r}")
        if role == "bias":
            if self.bias is not None:
                return self.bias
            kernel = self.resolve(layer_name, "kernel", kind)
            return "float" if is_float_spec(kernel) else "int8"
        return getattr(self, role)

    @property
    def is_float(self) -> bool:
        """True when no role and no override quantizes anything."""
        specs = [self.kernel, self.bias, self.activation, self.batchnorm]
        for value in self.overrides.values():
            specs.extend(value.values() if isinstance(value, dict) and "type" not in value else [value])
        return all(is_float_spec(s) for s in specs)

    def get_config(self) -> dict:
        overrides = {}
        for key, value in self.overrides.items():
            if isinstance(value, dict) and "type" not in value:
                overrides[key] = {role: _serialize_spec(spec) for role, spec in value.items()}
            else:
                overrides[key] = _serialize_spec(value)
        return {"kernel": _serialize_spec(self.kernel), "bias": _serialize_spec(self.bias),
                "activation": _serialize_spec(self.activation), "batchnorm": _serialize_spec(self.batchnorm),
                "overrides": overrides}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "QuantPolicy":
        return cls(**config)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, QuantPolicy) and self.get_config() == other.get_config()

    def __repr__(self) -> str:
        cfg = self.get_config()
        return "QuantPolicy(" + ", ".join(f"{k}={v!r}" for k, v in cfg.items() if v not in (None, {})) + ")"


__all__ = ["QuantPolicy", "POLICY_ROLES"]
