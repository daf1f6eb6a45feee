"""Tests of qrobust_keras/models/io.py's refusals: truncated, corrupt or mislabelled model files and the official
MLCommons ResNet-8 (0-255 pixels) raise ModelFileError naming the path; the library's own files still load."""

import shutil
import zipfile

import numpy as np
import pytest

import qrobust_keras as qrk
from qrobust_keras._keras import keras
from qrobust_keras.models import ModelFileError


@pytest.fixture(scope="module")
def trained_int4():
    """A ResNet-8 int4 after one epoch on random [0, 1] images (non-trivial weights and BatchNorm statistics)."""
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (16, 32, 32, 3)).astype(np.float32)
    model = qrk.models.resnet8(policy="int4")
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x, rng.integers(0, 10, 16), epochs=1, batch_size=8, verbose=0)
    return x, model


@pytest.fixture(scope="module")
def mlcommons_dir(shared_data):
    path = shared_data / "models" / "mlcommons"
    if not (path / "pretrainedResnet.h5").is_file():
        pytest.fail(f"the official MLCommons file {path / 'pretrainedResnet.h5'} is missing from the shared data")
    return path


@pytest.fixture(scope="module")
def official(mlcommons_dir):
    """The official file read by Keras itself (no checks), as load_mlcommons reads it."""
    return keras.models.load_model(str(mlcommons_dir / "pretrainedResnet.h5"), compile=False)


# ---------------------------------------------------------------------------------------------------------------------
# truncated, corrupt or mislabelled files
# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, content, fragments", [
    ("garbage.h5", b"not a model at all" * 10, ["is not an HDF5 file", "180 bytes", "truncated or corrupt",
                                                "model.save('model.h5')"]),
    ("empty.h5", b"", ["is not an HDF5 file", "0 bytes", "empty file"]),
    ("garbage.keras", b"not a model at all" * 10, ["is not a zip archive", "truncated or corrupt",
                                                   "model.save('model.keras')"]),
    ("zipped.h5", b"PK\x03\x04" + b"\x00" * 40, ["is a zip archive, not an HDF5 file", "rename it to .keras"]),
])
def test_garbage_files_name_the_path_and_the_expected_format(tmp_path, name, content, fragments):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ModelFileError) as err:
        qrk.load_model(path)
    message = str(err.value)
    assert f"path={str(path)!r}" in message
    for fragment in fragments:
        assert fragment in message
    assert "file signature not found" not in message
    assert isinstance(err.value, ValueError)


def test_truncated_h5_and_keras_files_are_called_truncated(trained_int4, tmp_path):
    _, model = trained_int4
    for suffix in ("h5", "keras"):
        whole = tmp_path / f"whole.{suffix}"
        model.save(whole)
        data = whole.read_bytes()
        cut = tmp_path / f"cut.{suffix}"
        cut.write_bytes(data[: len(data) // 2])
        with pytest.raises(ModelFileError, match="truncated") as err:
            qrk.load_model(cut)
        assert f"path={str(cut)!r}" in str(err.value)
        if suffix == "h5":  # h5py's own diagnosis is kept (eof = the bytes present)
            assert "an HDF5 model file" in str(err.value) and f"eof = {len(data) // 2}" in str(err.value)
        else:
            assert "central directory" in str(err.value) and "HDF5" not in str(err.value)


def test_zip_without_keras_config_is_not_a_keras_archive(tmp_path):
    path = tmp_path / "notes.keras"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("notes.txt", "hello")
    with pytest.raises(ModelFileError, match="without config.json") as err:
        qrk.load_model(path)
    assert "['notes.txt']" in str(err.value)


def test_corrupt_saved_model_folders_name_the_folder(trained_int4, tmp_path):
    _, model = trained_int4
    model.save(tmp_path / "good")
    broken_pb, cut_vars = tmp_path / "broken_pb", tmp_path / "cut_vars"
    shutil.copytree(tmp_path / "good", broken_pb)
    (broken_pb / "saved_model.pb").write_bytes(b"garbage" * 100)
    shutil.copytree(tmp_path / "good", cut_vars)
    shard = cut_vars / "variables" / "variables.data-00000-of-00001"
    shard.write_bytes(shard.read_bytes()[:1000])
    for folder in (broken_pb, cut_vars):
        with pytest.raises(ModelFileError, match="could not be read as a SavedModel folder") as err:
            qrk.load_model(folder)
        assert f"path={str(folder)!r}" in str(err.value) and "truncated or corrupt" in str(err.value)


def test_the_library_files_still_load_in_every_format(trained_int4, tmp_path):
    x, model = trained_int4
    for name in ("model.h5", "model.keras", "saved_model"):
        model.save(tmp_path / name)
        loaded = qrk.load_model(tmp_path / name)
        assert np.array_equal(loaded(x, training=False).numpy(), model(x, training=False).numpy())


def test_an_hdf5_file_after_a_user_block_is_accepted(trained_int4, tmp_path):
    """HDF5 allows its signature at 512, 1024, ... bytes; the check must not refuse such a file before h5py reads it."""
    import h5py

    path = tmp_path / "user_block.h5"
    with h5py.File(path, "w", userblock_size=512) as f:
        f["x"] = np.zeros(3)
    from qrobust_keras.models.io import _check_file_format

    assert _check_file_format(str(path)) == "an HDF5 model file"


# ---------------------------------------------------------------------------------------------------------------------
# the official MLCommons files
# ---------------------------------------------------------------------------------------------------------------------
def test_official_resnet8_file_is_refused_with_the_way_to_load_it(mlcommons_dir):
    path = mlcommons_dir / "pretrainedResnet.h5"
    with pytest.raises(ModelFileError) as err:
        qrk.load_model(path)
    message = str(err.value)
    assert f"path={str(path)!r}" in message and "official MLCommons Tiny ResNet-8" in message
    assert "0-255 pixels" in message and "[0, 1] images" in message
    assert f"qrk.models.load_mlcommons('resnet8', {str(mlcommons_dir)!r})" in message
    assert f"--init-weights mlcommons:{mlcommons_dir}" in message
    assert "2,640" in message  # the evidence: the mean moving variance of its first BatchNormalization


def test_official_resnet8_is_refused_in_every_format(official, tmp_path):
    """The check reads the loaded model, not the file name: a copy saved as .keras or SavedModel is the same model,
    and the load_mlcommons call the message suggests (on the copy itself) works."""
    for name in ("copy.keras", "copy_saved_model"):
        official.save(tmp_path / name)
        with pytest.raises(ModelFileError, match="official MLCommons Tiny ResNet-8") as err:
            qrk.load_model(tmp_path / name)
        assert f"qrk.models.load_mlcommons('resnet8', {str(tmp_path / name)!r})" in str(err.value)
    model = qrk.models.load_mlcommons("resnet8", tmp_path / "copy.keras")
    x = np.random.default_rng(0).uniform(0, 1, (4, 32, 32, 3)).astype(np.float32)
    assert np.allclose(model(x, training=False).numpy(), official(x * 255, training=False).numpy(), atol=1e-5)


def test_same_architecture_trained_on_unit_images_loads(official, tmp_path):
    """The MLCommons layout with [0, 1]-sized statistics in the first BatchNormalization (what the 0-255 file becomes
    when its input scale is folded) is not the 0-255 file, and loads."""
    clone = keras.models.clone_model(official)
    clone.set_weights(official.get_weights())
    bn = next(layer for layer in clone.layers if type(layer).__name__ == "BatchNormalization")
    gamma, beta, mean, var = bn.get_weights()
    bn.set_weights([gamma, beta, mean / 255.0, var / 255.0 ** 2])
    clone.save(tmp_path / "unit.h5")
    loaded = qrk.load_model(tmp_path / "unit.h5", compile=False)
    assert [layer.name for layer in loaded.layers] == [layer.name for layer in official.layers]


def test_models_built_from_the_official_weights_by_the_library_load(mlcommons_dir, shared_data, tmp_path):
    """load_mlcommons(...).save(path) then load_model(path): the documented way to evaluate the reference."""
    x, y = qrk.data.read_pickle_batch(shared_data / "cifar10" / "cifar-10-batches-py" / "test_batch")
    x = x[:256].astype(np.float32) / 255.0
    for fold in (False, True):
        model = qrk.models.load_mlcommons("resnet8", mlcommons_dir, fold_input_scale=fold)
        path = tmp_path / f"mlcommons_resnet8_{fold}.h5"
        model.save(path)
        loaded = qrk.load_model(path, compile=False)
        pred = loaded.predict(x, batch_size=256, verbose=0)
        assert np.allclose(pred, model.predict(x, batch_size=256, verbose=0), atol=1e-6)
        assert float(np.mean(pred.argmax(1) == y[:256])) > 0.8  # the reference reaches 88% on these images


def test_official_ds_cnn_is_not_refused_it_takes_the_library_features(mlcommons_dir):
    """The DS-CNN reference expects the library's MFCC features unscaled (load_mlcommons copies it with scale 1), so
    loading the SavedModel directly gives the same outputs as load_mlcommons: nothing to refuse."""
    folder = mlcommons_dir / "kws_ref_model"
    if not (folder / "saved_model.pb").is_file():
        pytest.fail(f"the official MLCommons DS-CNN {folder} is missing from the shared data")
    direct = qrk.load_model(folder, compile=False)
    ours = qrk.models.load_mlcommons("ds_cnn", mlcommons_dir)
    x = np.random.default_rng(3).normal(0, 10, (8, 49, 10, 1)).astype(np.float32)
    assert np.allclose(direct(x, training=False).numpy(), ours(x, training=False).numpy(), atol=1e-5)
