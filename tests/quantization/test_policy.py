"""Tests of qrobust_keras/quantization/policy.py: resolution order, overrides, serialization, errors."""

import pytest

from qrobust_keras.quantization import QuantPolicy


def test_defaults_and_bias_rule():
    p = QuantPolicy(kernel="ternary", activation="int4")
    assert p.resolve("conv", "kernel") == "ternary"
    assert p.resolve("conv", "bias") == "int8"
    assert p.resolve("relu", "activation") == "int4"
    assert QuantPolicy().resolve("conv", "bias") == "float"


def test_exact_name_beats_glob_and_first_glob_wins():
    p = QuantPolicy(kernel="int4", overrides={"stack*": "int2", "stack3_*": "binary", "stack3_conv_a": "int8"})
    assert p.resolve("stack3_conv_a", "kernel") == "int8"
    assert p.resolve("stack3_conv_b", "kernel") == "int2"
    assert p.resolve("conv_1", "kernel") == "int4"


def test_bare_override_applies_to_the_main_role_only():
    p = QuantPolicy(kernel="ternary", activation="int4", overrides={"conv_1": "int8", "relu_1": "float"})
    assert p.resolve("conv_1", "kernel") == "int8"
    assert p.resolve("conv_1", "activation", kind="weight") == "int4"
    assert p.resolve("relu_1", "activation") == "float"


def test_role_dict_override():
    p = QuantPolicy(kernel="ternary", overrides={"logits": {"kernel": "int8", "bias": "float"}})
    assert p.resolve("logits", "kernel") == "int8" and p.resolve("logits", "bias") == "float"


def test_from_any_shortcuts():
    assert QuantPolicy.from_any("float").is_float
    assert QuantPolicy.from_any(None).is_float
    p = QuantPolicy.from_any("int4")
    assert p.kernel == "int4" and p.activation == "int4"
    p = QuantPolicy.from_any("binary")
    assert p.kernel == "binary" and p.activation == "float"
    assert not QuantPolicy(overrides={"x": "int8"}).is_float


def test_config_round_trip():
    p = QuantPolicy(kernel="stochastic_ternary", activation="int4",
                    overrides={"conv_1": "int8", "logits": {"kernel": {"type": "quantized_bits", "bits": 6}}})
    assert QuantPolicy.from_config(p.get_config()) == p


@pytest.mark.parametrize("kwargs, match", [
    ({"kernel": "int9"}, "kernel='int9'"),
    ({"activation": {"type": "nope"}}, "type"),
    ({"overrides": ["conv_1"]}, "overrides must be a dict"),
    ({"overrides": {"conv_1": {"kernal": "int8"}}}, "role keys"),
    ({"overrides": {"": "int8"}}, "non-empty"),
    ({"bias": "ternary"}, "cannot quantize a bias")])
def test_bad_policies_give_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        QuantPolicy(**kwargs)


def test_from_any_rejects_unknown_dict_keys():
    with pytest.raises(ValueError, match="unknown keys"):
        QuantPolicy.from_any({"kernels": "int4"})
