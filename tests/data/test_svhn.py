"""Tests of qrobust_keras/data/svhn.py on files written in the official SVHN .mat layout (MATLAB v5)."""

import numpy as np
import pytest
import scipy.io

from qrobust_keras.data.errors import CorruptDataError, DataNotFoundError
from qrobust_keras.data.svhn import load_svhn, read_svhn_mat


def _write_svhn(path, n, seed, y_dtype=np.uint8):
    """X: (32, 32, 3, n) uint8, y: (n, 1) with 10 for the digit 0 - the layout of train_32x32.mat."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    digits = rng.integers(0, 10, n)
    digits[:3] = [0, 1, 9]
    y = np.where(digits == 0, 10, digits).astype(y_dtype).reshape(n, 1)
    scipy.io.savemat(path, {"X": np.transpose(images, (1, 2, 3, 0)), "y": y}, format="5")
    return images, digits


@pytest.mark.parametrize("y_dtype", [np.uint8, np.float64])
def test_real_layout_round_trip(tmp_path, y_dtype):
    images, digits = _write_svhn(tmp_path / "test_32x32.mat", 17, 0, y_dtype)
    assert scipy.io.matlab.matfile_version(str(tmp_path / "test_32x32.mat"))[0] == 1  # MATLAB v5 ("1" in scipy)
    x, y = load_svhn(tmp_path, split="test")
    assert x.shape == (17, 32, 32, 3) and x.dtype == np.uint8 and y.dtype == np.int64
    np.testing.assert_array_equal(x, images)
    np.testing.assert_array_equal(y, digits)
    assert y[:3].tolist() == [0, 1, 9]  # label 10 in the file is the digit 0


def test_both_splits(tmp_path):
    train_images, train_digits = _write_svhn(tmp_path / "train_32x32.mat", 9, 1)
    test_images, _ = _write_svhn(tmp_path / "test_32x32.mat", 4, 2)
    (x_tr, y_tr), (x_te, _) = load_svhn(tmp_path)
    np.testing.assert_array_equal(x_tr, train_images)
    np.testing.assert_array_equal(y_tr, train_digits)
    np.testing.assert_array_equal(x_te, test_images)


def test_wrong_keys(tmp_path):
    scipy.io.savemat(tmp_path / "test_32x32.mat", {"images": np.zeros((32, 32, 3, 2), np.uint8),
                                                    "y": np.ones((2, 1))})
    with pytest.raises(CorruptDataError, match=r"lacks the SVHN keys 'X'.*found keys \['images', 'y'\]"):
        load_svhn(tmp_path, split="test")


def test_wrong_shapes_and_labels(tmp_path):
    path = tmp_path / "a.mat"
    scipy.io.savemat(path, {"X": np.zeros((2, 32, 32, 3), np.uint8), "y": np.ones((2, 1))})
    with pytest.raises(CorruptDataError, match=r"shape \(32, 32, 3, n\)"):
        read_svhn_mat(path)
    scipy.io.savemat(path, {"X": np.zeros((32, 32, 3, 2), np.uint8), "y": np.array([[1], [11]])})
    with pytest.raises(CorruptDataError, match="1..10"):
        read_svhn_mat(path)
    scipy.io.savemat(path, {"X": np.zeros((32, 32, 3, 2), np.uint8), "y": np.ones((3, 1))})
    with pytest.raises(CorruptDataError, match="3 labels for 2 images"):
        read_svhn_mat(path)


def test_missing_and_garbage(tmp_path):
    with pytest.raises(DataNotFoundError, match="does not exist"):
        load_svhn(tmp_path / "nope")
    with pytest.raises(DataNotFoundError, match="train_32x32.mat"):
        load_svhn(tmp_path, split="train")
    (tmp_path / "test_32x32.mat").write_bytes(b"MATLAB 5.0 MAT-file" + bytes(50))
    with pytest.raises(CorruptDataError, match="not a readable MATLAB"):
        load_svhn(tmp_path, split="test")
    with pytest.raises(ValueError, match="split must be one of"):
        load_svhn(tmp_path, split="valid")
