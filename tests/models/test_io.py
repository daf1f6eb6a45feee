"""Tests of qrobust_keras/models/io.py: save/load round trips in every format for every policy."""

import numpy as np
import pytest

import qrobust_keras as qrk


@pytest.fixture(scope="module")
def trained_models():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (16, 32, 32, 3)).astype(np.float32)
    models = {}
    for kernel in ["float", "int4", "ternary", "binary", "stochastic_ternary"]:
        policy = qrk.quantization.QuantPolicy(kernel=kernel, activation="float" if kernel == "float" else "int4")
        model = qrk.models.resnet8(policy=policy)
        model.compile("adam", "sparse_categorical_crossentropy")
        # non-trivial weights and BatchNorm statistics, set directly (a fit would spend its time tracing)
        model.set_weights([rng.uniform(0.5, 1.5, w.shape).astype(w.dtype) if "moving_variance" in v.name else
                           (w + rng.normal(0, 0.05, w.shape)).astype(w.dtype)
                           for v, w in zip(model.weights, model.get_weights())])
        models[kernel] = model
    return x, models


@pytest.mark.parametrize("kernel", ["float", "int4", "ternary", "binary", "stochastic_ternary"])
@pytest.mark.parametrize("fmt", ["model.h5", "model.keras", "saved_model"])
def test_round_trip_reproduces_outputs_exactly(trained_models, tmp_path, kernel, fmt):
    x, models = trained_models
    model = models[kernel]
    path = tmp_path / fmt
    model.save(path)
    loaded = qrk.load_model(path)
    assert np.array_equal(loaded(x, training=False).numpy(), model(x, training=False).numpy())
    assert [type(layer).__name__ for layer in loaded.layers] == [type(layer).__name__ for layer in model.layers]


def test_bad_paths(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        qrk.load_model(tmp_path / "missing.h5")
    (tmp_path / "model.txt").write_text("x")
    with pytest.raises(ValueError, match="unknown suffix"):
        qrk.load_model(tmp_path / "model.txt")
    with pytest.raises(ValueError, match="without saved_model.pb"):
        qrk.load_model(tmp_path)


def test_qkeras_clone_and_model_quantize_work(trained_models):
    from qrobust_keras._keras import qkeras

    x, models = trained_models
    clone = qkeras.utils.clone_model(models["int4"])
    assert np.array_equal(clone(x, training=False).numpy(), models["int4"](x, training=False).numpy())
    assert qkeras.utils.model_save_quantized_weights(clone)
    quantized = qkeras.utils.model_quantize(qrk.models.resnet8(), {"QConv2D": {
        "kernel_quantizer": "quantized_bits(4,0,1)", "bias_quantizer": "quantized_bits(4,0,1)"}}, 4)
    assert type(quantized.get_layer("conv_1")).__name__ == "QConv2D"
