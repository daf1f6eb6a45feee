"""Fixtures of the export tests: small (Q)Keras models per policy, and ResNet-8s trained briefly on real CIFAR-10."""

import numpy as np
import pytest
from _model_cache import shared_model

import qrobust_keras as qrk
from qrobust_keras.training.step import create_fit_variables
from qrobust_keras._keras import keras
from qrobust_keras.quantization import QuantPolicy
from qrobust_keras.quantization import layers as qlayers

POLICIES = {
    "float": QuantPolicy(),
    "int4": QuantPolicy(kernel="int4", activation="int4"),
    "ternary": QuantPolicy(kernel="ternary", activation="int4"),
    "binary": QuantPolicy(kernel="binary"),
    "stochastic_ternary": QuantPolicy(kernel="stochastic_ternary"),
}


def tiny_model(policy, seed: int = 0) -> keras.Model:
    """conv-BN-act, depthwise-BN-act, 1x1 conv-BN + residual add, act, global pool, dense, softmax on 12x12x3."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((12, 12, 3), name="input")
    x = qlayers.conv2d(8, 3, padding="same", name="conv_1", policy=policy)(inputs)
    x = qlayers.batch_norm(name="bn_1", policy=policy)(x)
    x = qlayers.activation(name="relu_1", policy=policy)(x)
    y = qlayers.depthwise_conv2d(3, padding="same", name="dw", policy=policy)(x)
    y = qlayers.batch_norm(name="dw_bn", policy=policy)(y)
    y = qlayers.activation(name="dw_relu", policy=policy)(y)
    y = qlayers.conv2d(8, 1, name="pw", policy=policy)(y)
    y = qlayers.batch_norm(name="pw_bn", policy=policy)(y)
    x = keras.layers.Add(name="add")([x, y])
    x = qlayers.activation(name="relu_2", policy=policy)(x)
    x = keras.layers.AveragePooling2D(12, name="pool")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = qlayers.dense(5, name="logits", policy=policy)(x)
    model = keras.Model(inputs, keras.layers.Activation("softmax", name="softmax")(x), name="tiny")
    rng = np.random.default_rng(seed)
    for layer in model.layers:  # non-trivial BatchNorm statistics so that folding is exercised
        if "bn" in layer.name:
            c = layer.moving_mean.shape[-1]
            layer.set_weights([rng.uniform(0.5, 1.5, c), rng.uniform(-0.3, 0.3, c), rng.uniform(-0.3, 0.3, c),
                               rng.uniform(0.3, 2.0, c)])
    return model


@pytest.fixture(scope="session")
def tiny_inputs():
    """256 random images on the 1/255 grid (what a camera delivers), [0, 1]."""
    rng = np.random.default_rng(1)
    return (rng.integers(0, 256, size=(256, 12, 12, 3)) / 255.0).astype(np.float32)


_TRAINED: dict = {}
# (learning rate, batch size, epochs): stochastic ternary weights need more, larger steps to leave chance level in
# so few images. Since stochastic quantizers really sample during fit (qrobust_keras._keras), 5 epochs at 3e-3 reach
# 22.8% test accuracy with batch 64 and 26.6% with batch 32 (measured).
_RECIPES = {"int4": (1e-3, 32, 3), "stochastic_ternary": (1e-3, 32, 3)}
# The stochastic-ternary fixture starts from the official float weights (as the int4_at recipe does): trained from
# scratch for 5 epochs at 3e-3 it ended at 38.7%, 32.6% or 27.5% accuracy depending on the CPU and the thread
# count, close to chance; 3 epochs from the float weights reach 50.1% (40.8% with one thread per process).
_WARM_START = {"stochastic_ternary"}
# "stochastic_ternary" here is the policy the stq recipes deploy: stochastic-ternary kernels, int4 activations, int8
# first and last layers (a weights-only stochastic-ternary model has float ReLUs that the int8 file can only
# approximate by calibration).
_POLICIES = {"stochastic_ternary": QuantPolicy(kernel="stochastic_ternary", activation="int4",
                                               overrides={"conv_1": "int8", "logits": "int8"})}


def trained_resnet8(policy_name: str, cifar_small, mlcommons_dir=None) -> keras.Model:
    """A ResNet-8 trained briefly on 3,000 CIFAR-10 images (cached for the session), so it is not random; the
    policies of ``_WARM_START`` start from the official float weights in ``mlcommons_dir``."""
    if policy_name not in _TRAINED:
        def train():
            (x, y), _ = cifar_small
            lr, batch_size, epochs = _RECIPES[policy_name]
            keras.utils.set_random_seed(0)
            model = qrk.models.resnet8(policy=_POLICIES.get(policy_name, policy_name))
            if policy_name in _WARM_START:
                qrk.models.copy_weights_by_name(
                    qrk.models.load_mlcommons("resnet8", mlcommons_dir, fold_input_scale=True), model)
            model.compile(keras.optimizers.Adam(lr), "sparse_categorical_crossentropy")
            create_fit_variables(model, (x[:2], y[:2]))       # one trace of the train step instead of two
            model.fit(x, y, epochs=epochs, batch_size=batch_size, verbose=0)
            return model

        _TRAINED[policy_name] = shared_model(f"export_resnet8_{policy_name}", train)
    return _TRAINED[policy_name]


@pytest.fixture(scope="session")
def resnet8_int4(cifar_small):
    return trained_resnet8("int4", cifar_small)


@pytest.fixture(scope="session")
def resnet8_stochastic_ternary(cifar_small, shared_data):
    return trained_resnet8("stochastic_ternary", cifar_small, shared_data / "models" / "mlcommons")


@pytest.fixture(scope="session")
def exported_int4(resnet8_int4, cifar_small, tmp_path_factory):
    """The trained int4 ResNet-8 exported to int8, with its info; fidelity on the 1,017 exact test images."""
    (x_train, _), (x_test, y_test) = cifar_small
    path = tmp_path_factory.mktemp("export") / "resnet8_int4.tflite"
    info = qrk.export.export_tflite(resnet8_int4, path, x_train[:300], fidelity_data=(x_test, y_test))
    return path, info
