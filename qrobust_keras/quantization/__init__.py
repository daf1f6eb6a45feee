"""Quantizer specs by name, the QuantPolicy, and layer builders that read it."""

from qrobust_keras.quantization import layers
from qrobust_keras.quantization.layers import activation, batch_norm, conv2d, dense, depthwise_conv2d
from qrobust_keras.quantization.policy import POLICY_ROLES, QuantPolicy
from qrobust_keras.quantization.specs import (QUANTIZER_TYPES, ROLES, SPEC_NAMES, get_quantizer, is_float_spec,
                                               quantizer_bits, quantizer_name, validate_spec)

__all__ = ["QuantPolicy", "POLICY_ROLES", "SPEC_NAMES", "ROLES", "QUANTIZER_TYPES", "get_quantizer", "is_float_spec",
           "quantizer_bits", "quantizer_name", "validate_spec", "layers", "conv2d", "depthwise_conv2d", "dense",
           "activation", "batch_norm"]
