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
