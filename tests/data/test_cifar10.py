"""Tests of qrobust_keras/data/cifar10.py on the shared exact batches, generated batches and image trees."""

import os
import pickle

import numpy as np
import pytest
from PIL import Image

from qrobust_keras.data import cifar10
from qrobust_keras.data.cifar10 import CLASS_NAMES, load_cifar10, read_pickle_batch
from qrobust_keras.data.errors import CorruptDataError, DataNotFoundError, UnsafePickleError

TEST_COUNTS = [105, 93, 100, 104, 92, 87, 114, 102, 110, 110]  # shared/data/README.md


def _write_batches(folder, n_train=3, n_test=5, seed=0):
    """Batches in the original python-2 layout (str keys, uint8 (n, 3072) channel-major rows), any length."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    made = {}
    for name, n in [(f"data_batch_{i}", n_train) for i in range(1, 6)] + [("test_batch", n_test)]:
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, n)]
        with open(folder / name, "wb") as f:
            pickle.dump({"batch_label": name, "labels": labels, "data": data}, f, protocol=2)
        made[name] = (data, labels)
    return made


@pytest.fixture()
def no_env(monkeypatch, tmp_path):
    monkeypatch.delenv(cifar10.ENV_VAR, raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))


def test_shared_exact_batches(shared_data):
    (x_train, y_train), (x_test, y_test) = load_cifar10(shared_data / "cifar10", verbose=0)
    assert x_train.shape == (5 * 1017, 32, 32, 3) and x_test.shape == (1017, 32, 32, 3)
    assert x_train.dtype == np.uint8 and y_test.dtype == np.int64
    assert np.bincount(y_test).tolist() == TEST_COUNTS
    assert y_test[:10].tolist() == [3, 8, 8, 0, 6, 6, 1, 6, 3, 1]  # the published CIFAR-10 test order
    # Oracle: the unrestricted pickle module on the same file, reshaped the documented way.
    with open(shared_data / "cifar10" / "cifar-10-batches-py" / "test_batch", "rb") as f:
        ref = pickle.load(f, encoding="bytes")
    np.testing.assert_array_equal(x_test, ref[b"data"].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    np.testing.assert_array_equal(y_test, ref[b"labels"])


def test_batches_of_any_length_and_nhwc_layout(tmp_path):
    made = _write_batches(tmp_path / "cifar-10-batches-py", n_train=3, n_test=5)
    (x_train, y_train), (x_test, y_test) = load_cifar10(tmp_path, verbose=0)
    assert x_train.shape == (15, 32, 32, 3) and x_test.shape == (5, 32, 32, 3)
    data, labels = made["test_batch"]
    # pixel (row 2, col 7) of image 4: red at 2*32+7, green at 1024 + that, blue at 2048 + that
    assert x_test[4, 2, 7].tolist() == [data[4, 71], data[4, 1024 + 71], data[4, 2048 + 71]]
    assert y_test.tolist() == labels
    assert y_train.tolist() == sum((made[f"data_batch_{i}"][1] for i in range(1, 6)), [])


def test_env_var_then_keras_cache(tmp_path, monkeypatch, no_env):
    _write_batches(tmp_path / "keras_home" / "datasets" / "cifar-10-batches-py", n_test=2, seed=1)
    assert cifar10.find_cifar10(None) == ("pickle", str(tmp_path / "keras_home" / "datasets" / "cifar-10-batches-py"))
    (_, _), (x_cache, _) = load_cifar10(verbose=0)
    assert len(x_cache) == 2
    _write_batches(tmp_path / "mine" / "cifar10" / "cifar-10-batches-py", n_test=4, seed=2)
    monkeypatch.setenv(cifar10.ENV_VAR, str(tmp_path / "mine"))
    (_, _), (x_env, _) = load_cifar10(verbose=0)
    assert len(x_env) == 4  # QROBUST_DATA_DIR wins over the Keras cache


def test_nothing_found_says_where_and_never_downloads(monkeypatch, no_env):
    def fail(*args, **kwargs):
        raise AssertionError("must not download without download=True")

    from qrobust_keras._keras import keras

    monkeypatch.setattr(keras.utils, "get_file", fail)
    with pytest.raises(DataNotFoundError) as err:
        load_cifar10(verbose=0)
    msg = str(err.value)
    assert "QROBUST_DATA_DIR" in msg and "download=True" in msg and "cifar-10-batches-py" in msg


def test_download_only_when_asked_and_reported(monkeypatch, tmp_path, capsys, no_env):
    calls = []

    def fake_get_file(fname, origin, untar, cache_dir, cache_subdir):
        calls.append((fname, origin, cache_dir))
        _write_batches(tmp_path / "keras_home" / "datasets" / "cifar-10-batches-py", n_test=3)
        return str(tmp_path / "keras_home" / "datasets" / "cifar-10-batches-py")

    from qrobust_keras._keras import keras

    monkeypatch.setattr(keras.utils, "get_file", fake_get_file)
    (_, _), (x_test, _) = load_cifar10(download=True, verbose=0)
    assert len(x_test) == 3 and calls == [("cifar-10-batches-py", cifar10.DOWNLOAD_URL, str(tmp_path / "keras_home"))]
    assert "downloading https://www.cs.toronto.edu" in capsys.readouterr().err


def test_missing_folder_and_missing_batch(tmp_path):
    with pytest.raises(DataNotFoundError, match="does not exist"):
        load_cifar10(tmp_path / "nope", verbose=0)
    _write_batches(tmp_path / "cifar-10-batches-py")
    os.remove(tmp_path / "cifar-10-batches-py" / "data_batch_3")
    with pytest.raises(DataNotFoundError, match="data_batch_3"):
        load_cifar10(tmp_path, verbose=0)


def test_corrupted_and_malicious_batches(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    _write_batches(folder)
    raw = (folder / "test_batch").read_bytes()
    (folder / "test_batch").write_bytes(raw[: len(raw) // 3])
    with pytest.raises(CorruptDataError, match="test_batch"):
        load_cifar10(tmp_path, verbose=0)

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    with open(folder / "test_batch", "wb") as f:
        pickle.dump({"labels": [0], "data": Evil()}, f, protocol=2)
    with pytest.raises(UnsafePickleError, match="system"):
        load_cifar10(tmp_path, verbose=0)
    assert not (tmp_path / "pwned").exists()


def test_wrong_keys_and_shapes(tmp_path):
    path = tmp_path / "b"
    with open(path, "wb") as f:
        pickle.dump({"pixels": np.zeros((2, 3072), np.uint8), "labels": [0, 1]}, f, protocol=2)
    with pytest.raises(CorruptDataError, match=r"lacks key\(s\) \['data'\]"):
        read_pickle_batch(path)
    with open(path, "wb") as f:
        pickle.dump({"data": np.zeros((2, 1024), np.uint8), "labels": [0, 1]}, f, protocol=2)
    with pytest.raises(CorruptDataError, match=r"shape \(n, 3072\)"):
        read_pickle_batch(path)
    with open(path, "wb") as f:
        pickle.dump({"data": np.zeros((2, 3072), np.uint8), "labels": [0, 12]}, f, protocol=2)
    with pytest.raises(CorruptDataError, match="0..9"):
        read_pickle_batch(path)


def test_png_tree_is_bit_exact(shared_data, tmp_path):
    """A lossless class tree written from the exact batch loads back identically (class order, sorted files)."""
    (_, _), (x_test, y_test) = load_cifar10(shared_data / "cifar10", verbose=0)
    rng = np.random.default_rng(0)
    pick = np.sort(rng.choice(len(x_test), 60, replace=False))
    for split in ("train", "test"):
        for k, name in enumerate(CLASS_NAMES):
            folder = tmp_path / split / name
            folder.mkdir(parents=True)
            for j, i in enumerate(pick[y_test[pick] == k]):
                Image.fromarray(x_test[i]).save(folder / f"{j:04d}.png")
    (x_tr, y_tr), (x_te, y_te) = load_cifar10(tmp_path, source="images", verbose=0)
    (_, _), (x_pil, _) = load_cifar10(tmp_path, source="images", decoder="pil", verbose=0)
    np.testing.assert_array_equal(x_pil, x_te)
    order = np.concatenate([pick[y_test[pick] == k] for k in range(10)])
    np.testing.assert_array_equal(x_te, x_test[order])
    np.testing.assert_array_equal(y_te, y_test[order])
    np.testing.assert_array_equal(x_tr, x_te)


def test_shared_jpeg_subset_matches_exact_images(shared_data):
    """The JPEG copies follow the test order within each class: same images up to JPEG loss (~5.8/255)."""
    from qrobust_keras.data.image_folder import list_image_folder, load_image_folder

    (_, _), (x_test, y_test) = load_cifar10(shared_data / "cifar10", verbose=0)
    root = shared_data / "cifar10-jpeg" / "test"
    paths, labels, _ = list_image_folder(root, CLASS_NAMES)
    chosen = [p for k in range(10) for p in np.array(paths)[labels == k][:20]]
    x, y, _ = load_image_folder(root, CLASS_NAMES, paths=chosen)
    x_pil, _, _ = load_image_folder(root, CLASS_NAMES, paths=chosen, decoder="pil")
    np.testing.assert_array_equal(x, x_pil)  # tf.data (INTEGER_ACCURATE) and Pillow decode identically
    exact = np.concatenate([x_test[y_test == k][:20] for k in range(10)])
    assert y.tolist() == sorted(list(range(10)) * 20)
    err = np.abs(x.astype(float) - exact).mean()
    assert 2 < err < 8, err  # mean absolute error in 0..255 levels
    assert cifar10.find_cifar10(shared_data, source="images") == ("images", str(shared_data / "cifar10-jpeg"))
    assert cifar10.find_cifar10(shared_data)[0] == "pickle"  # exact pickles are preferred over lossy JPEGs
