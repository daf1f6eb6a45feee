"""Tests of qrobust_keras/models/mlcommons.py: the official weights in our builders, on real data."""

import numpy as np
import pytest

import qrobust_keras as qrk
from qrobust_keras._keras import keras


@pytest.fixture(scope="module")
def mlcommons_dir(shared_data):
    return shared_data / "models" / "mlcommons"


def test_resnet8_official_weights_reach_reference_accuracy_on_exact_test_images(shared_data, mlcommons_dir):
    model = qrk.models.load_mlcommons("resnet8", mlcommons_dir)
    x, y = qrk.data.read_pickle_batch(shared_data / "cifar10" / "cifar-10-batches-py" / "test_batch")
    assert x.shape == (1017, 32, 32, 3)
    pred = model.predict(x.astype(np.float32) / 255.0, batch_size=256, verbose=0).argmax(1)
    accuracy = float(np.mean(pred == y))
    assert accuracy >= 0.875, accuracy          # the official file reaches 88.0% on these images
    official = keras.models.load_model(str(mlcommons_dir / "pretrainedResnet.h5"), compile=False)
    official_pred = official.predict(x.astype(np.float32), batch_size=256, verbose=0).argmax(1)
    assert np.array_equal(pred, official_pred)


def test_ds_cnn_official_weights_are_copied_exactly(mlcommons_dir):
    model = qrk.models.load_mlcommons("kws", mlcommons_dir)
    official = keras.models.load_model(str(mlcommons_dir / "kws_ref_model"), compile=False)
    x = np.random.default_rng(3).normal(0, 10, (16, 49, 10, 1)).astype(np.float32)
    assert np.allclose(model(x, training=False).numpy(), official(x, training=False).numpy(), atol=1e-6)
    assert model.count_params() == 24_908
    assert [layer.name for layer in model.layers] == [layer.name for layer in qrk.models.ds_cnn().layers]


def test_loader_accepts_the_file_itself(mlcommons_dir):
    model = qrk.models.load_mlcommons("resnet8", mlcommons_dir / "pretrainedResnet.h5")
    assert model.get_layer("input_scale").scale == 255.0


def test_folded_input_scale_keeps_the_reference_outputs_on_exact_test_images(shared_data, mlcommons_dir):
    """fold_input_scale=True: the same layers as every library ResNet-8 (no Rescaling), the same predictions."""
    scaled = qrk.models.load_mlcommons("resnet8", mlcommons_dir)
    folded = qrk.models.load_mlcommons("resnet8", mlcommons_dir, fold_input_scale=True)
    assert [layer.name for layer in folded.layers] == [layer.name for layer in qrk.models.resnet8().layers]
    x, _ = qrk.data.read_pickle_batch(shared_data / "cifar10" / "cifar-10-batches-py" / "test_batch")
    x = x.astype(np.float32) / 255.0
    a, b = scaled.predict(x, batch_size=256, verbose=0), folded.predict(x, batch_size=256, verbose=0)
    assert np.abs(a - b).max() < 1e-4
    assert np.array_equal(a.argmax(1), b.argmax(1))
    assert not np.allclose(scaled.get_layer("bn_1").get_weights()[0], folded.get_layer("bn_1").get_weights()[0])
    kws = qrk.models.load_mlcommons("kws", mlcommons_dir, fold_input_scale=True)  # scale 1: nothing to fold
    assert kws.get_layer("conv_1").name == "conv_1"


def test_fold_is_exact_where_the_variance_is_below_epsilon():
    """The fold must hold when var / s^2 is far below BatchNorm's epsilon (where rescaling the variance alone fails)."""
    from qrobust_keras.models.mlcommons import fold_input_scale_into_bn

    rng = np.random.default_rng(0)
    model = qrk.models.resnet8(policy="float", input_scale=255.0)
    for layer in model.layers:
        if layer.weights:
            weights = [rng.normal(0, 0.3, w.shape).astype(np.float32) for w in layer.get_weights()]
            if isinstance(layer, keras.layers.BatchNormalization):
                weights[3] = np.abs(weights[3]) + 0.5  # moving variance
            layer.set_weights(weights)
    bn = model.get_layer("bn_1")
    gamma, beta, mean, _ = bn.get_weights()
    bn.set_weights([gamma, beta, mean * 50, rng.uniform(0.01, 5.0, mean.shape).astype(np.float32)])
    folded = fold_input_scale_into_bn(model)
    x = rng.uniform(0, 1, (8, 32, 32, 3)).astype(np.float32)
    want, got = model(x, training=False).numpy(), folded(x, training=False).numpy()
    assert np.abs(want - got).max() < 1e-5
    with pytest.raises(ValueError, match="no 'input_scale' layer"):
        fold_input_scale_into_bn(folded)


def test_missing_files_and_bad_names(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="name must be one of"):
        qrk.models.load_mlcommons("mobilenet", tmp_path)
    with pytest.raises(FileNotFoundError, match="pretrainedResnet.h5"):
        qrk.models.load_mlcommons("resnet8", tmp_path)
    monkeypatch.delenv("QROBUST_MLCOMMONS_DIR", raising=False)
    with pytest.raises(ValueError, match="path is required"):
        qrk.models.load_mlcommons("resnet8")


def test_a_different_architecture_is_rejected(tmp_path):
    inputs = keras.Input((32, 32, 3))
    wrong = keras.Model(inputs, keras.layers.Dense(10)(keras.layers.Flatten()(keras.layers.Conv2D(4, 3)(inputs))))
    wrong.save(tmp_path / "pretrainedResnet.h5")
    with pytest.raises(RuntimeError, match="expected 9 Conv2D layers"):
        qrk.models.load_mlcommons("resnet8", tmp_path)
