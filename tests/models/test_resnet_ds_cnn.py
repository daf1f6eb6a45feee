"""Tests of qrobust_keras/models/resnet.py and ds_cnn.py: parameter counts, twin topology, policies, errors."""

import numpy as np
import pytest

import qrobust_keras as qrk
from qrobust_keras._keras import keras

POLICIES = ["float", "int8", "int4", "ternary", "stochastic_ternary", "binary",
            qrk.quantization.QuantPolicy(kernel="stochastic_ternary", activation="int4",
                                         overrides={"conv_1": "int8", "logits": "int8"})]


def _structure(model):
    return [(layer.name, [n.name for n in np.atleast_1d(layer._inbound_nodes[0].inbound_layers)])
            for layer in model.layers]


@pytest.mark.parametrize("builder, params", [(qrk.models.resnet8, 78_666), (qrk.models.ds_cnn, 24_908)])
def test_parameter_counts_and_identical_topology_for_every_policy(builder, params):
    float_model = builder(policy="float")
    assert float_model.count_params() == params
    for policy in POLICIES:
        model = builder(policy=policy)
        assert model.count_params() == params
        twin = builder(policy=policy, quantize_add_inputs=False) if builder is qrk.models.resnet8 else model
        assert _structure(twin) == _structure(float_model)


@pytest.mark.parametrize("policy, grid", [("int4", (5, 0.25)), ("int8", (2, 1 / 32)), ("int2", (6, 0.5)),
                                          (POLICIES[-1], (5, 0.25))])
def test_resnet8_rounds_residual_branches_on_the_activation_grid(policy, grid):
    """Every convolution entering an add is put on the grid of the quantized ReLU after the add, with int8 range."""
    model = qrk.models.resnet8(policy=policy)
    names = [layer.name for layer in model.layers if layer.name.endswith("_q")]
    assert names == ["stack1_branch_q", "stack2_shortcut_q", "stack2_branch_q", "stack3_shortcut_q",
                     "stack3_branch_q"]
    integer, step = grid
    q = model.get_layer("stack2_branch_q").quantizer
    assert (type(q).__name__, q.bits, q.integer, q.keep_negative, q.alpha) == ("quantized_bits", 8, integer, True, 1)
    v = np.array([-200.0, -3.3 * step, 0.4 * step, 1.6 * step, 200.0], np.float32)
    np.testing.assert_allclose(q(v).numpy(), np.array([-128, -3, 0, 2, 127]) * step)
    inputs = model.get_layer("stack2_add")._inbound_nodes[0].inbound_layers
    assert [layer.name for layer in inputs] == ["stack2_shortcut_q", "stack2_branch_q"]


@pytest.mark.parametrize("policy", ["float", "ternary", "binary", "stochastic_ternary"])
def test_no_branch_quantizers_without_an_activation_grid(policy):
    assert not [layer for layer in qrk.models.resnet8(policy=policy).layers if layer.name.endswith("_q")]
    assert not [layer for layer in qrk.models.resnet8(policy="int4", quantize_add_inputs=False).layers
                if layer.name.endswith("_q")]


def test_resnet8_quantized_layers_follow_policy_and_overrides():
    model = qrk.models.resnet8(policy=POLICIES[-1])
    assert "quantized_bits(8" in str(model.get_layer("conv_1").kernel_quantizer_internal)
    assert "stochastic_ternary" in str(model.get_layer("stack2_conv_b").kernel_quantizer_internal)
    assert type(model.get_layer("stack1_relu")).__name__ == "QActivation"
    assert model.get_layer("logits").activation.__name__ == "linear"
    assert model.layers[-1].name == "softmax"


def test_resnet8_outputs_probabilities_and_has_logits_layer():
    model = qrk.models.resnet8(policy="int4")
    x = np.random.default_rng(0).uniform(0, 1, (3, 32, 32, 3)).astype(np.float32)
    p = model(x, training=False).numpy()
    assert p.shape == (3, 10) and np.allclose(p.sum(1), 1, atol=1e-5)
    logits = qrk.models.logits_model(model)(x, training=False).numpy()
    assert np.allclose(np.exp(logits) / np.exp(logits).sum(1, keepdims=True), p, atol=1e-5)


def _resnet8_params(c1, c2, c3, classes=10):
    """Parameters of ResNet-8 with stacks of c1, c2, c3 filters, counted by hand: 3x3 convolutions with bias,
    BatchNorm with 4 vectors, 1x1 shortcuts where the width changes, a dense classifier."""
    conv = lambda k, cin, cout: k * k * cin * cout + cout  # noqa: E731
    params = conv(3, 3, c1) + 4 * c1
    for cin, cout in ((c1, c1), (c1, c2), (c2, c3)):
        params += conv(3, cin, cout) + conv(3, cout, cout) + 8 * cout
        params += conv(1, cin, cout) if cin != cout else 0
    return params + c3 * classes + classes


@pytest.mark.parametrize("filters, stacks", [(16, (16, 32, 64)), (26, (26, 52, 104)), ((8, 24, 40), (8, 24, 40))])
def test_resnet8_width(filters, stacks):
    """``filters=f`` builds stacks of f, 2f, 4f filters (the MLCommons script's num_filters), a tuple sets each."""
    model = qrk.models.resnet8(policy="int4", filters=filters)
    assert model.count_params() == _resnet8_params(*stacks)
    assert [model.get_layer(f"stack{s}_conv_b").kernel.shape[-1] for s in (1, 2, 3)] == list(stacks)
    assert model.get_layer("conv_1").kernel.shape[-1] == stacks[0]
    assert [model.get_layer(f"stack{s}_shortcut").kernel.shape for s in (2, 3)] == [
        (1, 1, stacks[0], stacks[1]), (1, 1, stacks[1], stacks[2])]


def test_ds_cnn_width():
    model = qrk.models.ds_cnn(policy="int8", filters=96)
    assert [model.get_layer(n).kernel.shape[-1] for n in ("conv_1", "block4_pw")] == [96, 96]
    assert model.get_layer("block1_dw").depthwise_kernel.shape == (3, 3, 96, 1)
    # 10x4 conv + BN, four (depthwise 3x3 + BN + pointwise + BN), dense: counted by hand
    assert model.count_params() == (40 * 96 + 96 + 4 * 96) + 4 * (10 * 96 + 4 * 96 + 96 * 96 + 96 + 4 * 96) \
        + 96 * 12 + 12
    with pytest.raises(ValueError, match="filters must be a positive integer; got filters=0"):
        qrk.models.ds_cnn(filters=0)


def test_resnet8_other_shapes_and_classes():
    model = qrk.models.resnet8(num_classes=4, input_shape=(16, 16, 1))
    assert model.output_shape == (None, 4)


def test_unmatched_override_is_an_error():
    with pytest.raises(ValueError, match=r"\['conv1'\] match no layer"):
        qrk.models.resnet8(policy=qrk.quantization.QuantPolicy(kernel="int4", overrides={"conv1": "int8"}))


@pytest.mark.parametrize("kwargs, match", [
    ({"num_classes": 0}, "num_classes"), ({"input_shape": (32, 32)}, "input_shape"),
    ({"policy": "int3"}, "valid names"),
    ({"quantize_add_inputs": "yes"}, "quantize_add_inputs must be True or False"),
    ({"filters": 0}, r"filters must be a positive integer f .*got filters=0"),
    ({"filters": (16, 32)}, r"or three positive integers, one per stack; got filters=\(16, 32\)"),
    ({"filters": 16.0}, "got filters=16.0")])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        qrk.models.resnet8(**kwargs)


def test_logits_model_of_a_dense_softmax_user_model_shares_weights():
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(inputs))
    logits = qrk.models.logits_model(model)
    x = np.random.default_rng(1).normal(size=(5, 4)).astype(np.float32)
    w, b = model.layers[-1].get_weights()
    assert np.allclose(logits(x).numpy(), x @ w + b, atol=1e-5)
    assert qrk.models.ends_in_softmax(model) and not qrk.models.ends_in_softmax(logits)
    tensor, name, rebuilt = qrk.models.logits_tensor(model)
    assert name == model.layers[-1].name and rebuilt is model.layers[-1]
    tensor, name, rebuilt = qrk.models.logits_tensor(qrk.models.resnet8())
    assert name == "logits" and rebuilt is None and tuple(tensor.shape) == (None, 10)
