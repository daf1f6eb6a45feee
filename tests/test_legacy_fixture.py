"""Files saved by earlier versions of the library still load: the legacy fixture of tests/fixtures/.

``tests/fixtures/make_legacy_model.py`` saved, with the code of 2025-12 (before issue 24 moved modules), a tiny
ensemble holding every custom layer and every quantizer spec, a fixed input with its inference-mode outputs, and the
serialized configs of the ``fit`` callbacks. Moving a class must not change what these files resolve to.
"""

import inspect
import json
import pathlib

import numpy as np

import qrobust_keras as qrk
from qrobust_keras._keras import keras

FIXTURES = pathlib.Path(__file__).resolve().parent / "fixtures"


def _quantizer_names(model) -> set:
    names = set()
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            names |= _quantizer_names(layer)
            continue
        for attr in ("kernel_quantizer_internal", "depthwise_quantizer_internal", "bias_quantizer_internal",
                     "gamma_quantizer_internal", "beta_quantizer_internal", "activation"):
            quantizer = getattr(layer, attr, None)
            if quantizer is not None and hasattr(quantizer, "get_config"):
                names.add(type(quantizer).__name__)
    return names


def _layer_classes(model) -> set:
    classes = set()
    for layer in model.layers:
        classes.add(type(layer).__name__)
        if isinstance(layer, keras.Model):
            classes |= _layer_classes(layer)
    return classes


def test_legacy_model_loads_with_identical_outputs():
    model = qrk.load_model(FIXTURES / "legacy_model.h5")
    x = np.load(FIXTURES / "legacy_model_input.npy")
    expected = np.load(FIXTURES / "legacy_model_output.npy")
    assert {"MFCC", "EnsembleCombine", "QConv2D", "QDepthwiseConv2D", "QDense", "QBatchNormalization",
            "QActivation", "Conv2D", "Dense", "BatchNormalization"} <= _layer_classes(model)
    assert {"quantized_bits", "quantized_relu", "ternary", "stochastic_ternary", "binary",
            "stochastic_binary"} <= _quantizer_names(model)
    got = model.predict(x, verbose=0)
    # Inference mode is deterministic (stochastic quantizers infer as ternary/binary); the tolerance only absorbs
    # float round-off between CPUs (oneDNN kernels), far below any quantization step.
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(got.argmax(axis=1), expected.argmax(axis=1))


def test_legacy_callback_configs_resolve_to_the_same_classes():
    configs = json.loads((FIXTURES / "legacy_callbacks.json").read_text())
    expected = {"AdversarialTraining": qrk.AdversarialTraining, "TRADES": qrk.TRADES,
                "JacobianRegularization": qrk.JacobianRegularization}
    assert sorted(c["class_name"] for c in configs) == sorted(expected)
    for config in configs:
        callback = keras.saving.deserialize_keras_object(config)
        assert type(callback) is expected[config["class_name"]]
        assert keras.saving.get_registered_name(type(callback)) == config["registered_name"]
        # Every saved argument comes back as saved; an argument added since then (e.g. JacobianRegularization's
        # fd_step) takes its constructor default, so the old config still means what it meant.
        got = callback.get_config()
        assert {key: got[key] for key in config["config"]} == config["config"]
        signature = inspect.signature(type(callback).__init__).parameters
        for key in set(got) - set(config["config"]):
            assert got[key] == signature[key].default, (config["class_name"], key)
