"""Tests of qrobust_keras/quantization/layers.py: every spec builds and trains one step through every builder."""

import numpy as np
import pytest

from qrobust_keras._keras import keras, qkeras
from qrobust_keras.quantization import SPEC_NAMES, QuantPolicy
from qrobust_keras.quantization import layers as qlayers


def _small_model(policy):
    inputs = keras.Input((8, 8, 3))
    x = qlayers.conv2d(4, 3, padding="same", name="conv", policy=policy)(inputs)
    x = qlayers.batch_norm(name="bn", policy=policy)(x)
    x = qlayers.activation(name="relu", policy=policy)(x)
    x = qlayers.depthwise_conv2d(3, padding="same", kernel_regularizer=keras.regularizers.l2(1e-4), name="dw",
                                 policy=policy)(x)
    x = qlayers.activation(name="relu_2", policy=policy)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = qlayers.dense(3, name="logits", policy=policy)(x)
    return keras.Model(inputs, keras.layers.Activation("softmax")(x))


@pytest.mark.parametrize("spec", SPEC_NAMES)
def test_every_spec_builds_and_trains_one_step(spec):
    act = "ternary" if spec == "stochastic_ternary" else spec  # stochastic_ternary is a weight quantizer only
    model = _small_model(QuantPolicy(kernel=spec, activation=act))
    expected = keras.layers.Conv2D if spec == "float" else qkeras.QConv2D
    assert type(model.get_layer("conv")) is expected
    model.compile(keras.optimizers.SGD(0.1), "sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    x, y = rng.uniform(0, 1, (16, 8, 8, 3)).astype(np.float32), rng.integers(0, 3, 16)
    before = [w.copy() for w in model.get_weights()]
    loss = model.train_on_batch(x, y)
    assert np.isfinite(loss)
    changed = [not np.array_equal(a, b) for a, b in zip(before, model.get_weights())]
    assert any(changed), "one training step must change the weights (straight-through gradients)"
    assert np.all(np.isfinite(model.predict(x, verbose=0)))


def test_float_policy_builds_plain_keras_layers():
    model = _small_model("float")
    assert not any(type(layer).__module__.startswith("qkeras") for layer in model.layers)


def test_depthwise_and_bn_quantizers_follow_the_policy():
    model = _small_model(QuantPolicy(kernel="int4", batchnorm="int8", overrides={"dw": "ternary"}))
    assert type(model.get_layer("dw")) is qkeras.QDepthwiseConv2D
    assert "ternary" in str(model.get_layer("dw").depthwise_quantizer_internal)
    assert type(model.get_layer("bn")) is qkeras.QBatchNormalization


def test_missing_layer_name_is_refused():
    with pytest.raises(ValueError, match="name must be a non-empty layer name"):
        qlayers.conv2d(4, 3, name="", policy="int4")
