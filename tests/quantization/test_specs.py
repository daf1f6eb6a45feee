"""Tests of qrobust_keras/quantization/specs.py: the spec table, roles, dict specs, errors."""

import numpy as np
import pytest

from qrobust_keras._keras import qkeras_quantizers as qq, tf
from qrobust_keras.quantization import SPEC_NAMES, get_quantizer, quantizer_bits, validate_spec


@pytest.mark.parametrize("name, cls, bits", [
    ("int8", qq.quantized_bits, 8), ("int4", qq.quantized_bits, 4), ("int2", qq.quantized_bits, 2),
    ("ternary", qq.ternary, 2), ("stochastic_ternary", qq.stochastic_ternary, 2), ("binary", qq.binary, 1),
    ("stochastic_binary", qq.stochastic_binary, 1)])
def test_kernel_specs_build_the_documented_quantizer(name, cls, bits):
    q = get_quantizer(name, "kernel")
    assert type(q) is cls
    assert quantizer_bits(q) == bits


def test_float_spec_is_none_and_32_bits():
    assert get_quantizer("float") is None and get_quantizer(None) is None
    assert quantizer_bits(None) == 32


@pytest.mark.parametrize("name, levels", [("int4", 15), ("int2", 3), ("ternary", 3), ("binary", 2)])
def test_kernel_quantizer_output_has_the_grid_size_per_channel(name, levels):
    w = tf.constant(np.random.default_rng(0).normal(size=(3, 3, 8, 4)).astype(np.float32))
    qw = get_quantizer(name, "kernel")(w).numpy()
    # QKeras' output carries float noise of a few ulps (STACK.md): compare levels relative to the channel scale.
    for channel in range(qw.shape[-1]):
        scaled = qw[..., channel] / np.abs(qw[..., channel]).max()
        assert len(np.unique(np.round(scaled, 4))) <= levels
    assert len(np.unique(np.round(qw[..., 0] / np.abs(qw[..., 0]).max(), 4))) >= 2


def test_int_activation_quantizer_is_a_clipped_grid():
    q = get_quantizer("int4", "activation")
    out = q(tf.constant([-1.0, 0.1, 0.3, 1.1, 9.0])).numpy()
    assert out[0] == 0.0 and out.max() < 4.0
    assert np.allclose(out / 0.25, np.round(out / 0.25))


def test_bias_role_uses_fixed_scale_grid_and_refuses_ternary():
    q = get_quantizer("int8", "bias")
    assert type(q) is qq.quantized_bits and q.bits == 8 and q.integer == 3
    with pytest.raises(ValueError, match="cannot quantize a bias"):
        get_quantizer("ternary", "bias")


def test_dict_spec_with_full_qkeras_arguments():
    q = get_quantizer({"type": "quantized_bits", "bits": 6, "integer": 0, "alpha": "auto"})
    assert type(q) is qq.quantized_bits and q.bits == 6


@pytest.mark.parametrize("bad, match", [
    ("int3", "valid names"), ({"type": "eval"}, "'type' set to one of"),
    ({"type": "quantized_bits", "bitz": 4}, "unknown arguments"), (3.5, "must be a spec name"),
    ("__import__('os')", "valid names")])
def test_bad_specs_name_the_value_and_what_is_accepted(bad, match):
    with pytest.raises(ValueError, match=match):
        validate_spec(bad)


def test_unknown_name_lists_every_valid_name():
    with pytest.raises(ValueError) as err:
        get_quantizer("int5")
    for name in SPEC_NAMES:
        assert name in str(err.value)
