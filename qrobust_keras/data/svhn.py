"""SVHN (cropped digits, format 2) from the official ``train_32x32.mat`` / ``test_32x32.mat`` / ``extra_32x32.mat``.

The files are MATLAB v5 with ``X`` of shape ``(32, 32, 3, n)`` uint8 and ``y`` of shape ``(n, 1)`` holding 1..10,
where 10 stands for the digit 0. They are read with ``scipy.io.loadmat`` and returned NHWC with labels 0..9.

Example:

>>> from qrobust_keras.data import load_svhn
>>> x_test, y_test = load_svhn("~/data/svhn", split="test")        # doctest: +SKIP
>>> (x_train, y_train), (x_test, y_test) = load_svhn("~/data/svhn")  # doctest: +SKIP

The format in miniature, a two-image ``test_32x32.mat`` written with scipy:

>>> import os, tempfile
>>> import numpy as np, scipy.io
>>> tmp = tempfile.TemporaryDirectory()
>>> scipy.io.savemat(os.path.join(tmp.name, "test_32x32.mat"),
...                  {"X": np.zeros((32, 32, 3, 2), np.uint8), "y": np.array([[10], [3]], np.uint8)})
>>> x_test, y_test = load_svhn(tmp.name, split="test")
>>> x_test.shape, y_test                                           # NHWC uint8, label 10 is the digit 0
((2, 32, 32, 3), array([0, 3]))
>>> tmp.cleanup()
"""

from __future__ import annotations

import os

import numpy as np

from qrobust_keras.data.errors import CorruptDataError, DataNotFoundError

__all__ = ["SVHN_FILES", "SVHN_URL", "load_svhn", "read_svhn_mat"]

SVHN_FILES = {"train": "train_32x32.mat", "test": "test_32x32.mat", "extra": "extra_32x32.mat"}
SVHN_URL = "http://ufldl.stanford.edu/housenumbers/"


def read_svhn_mat(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """One SVHN ``.mat`` file: ``(uint8 (n, 32, 32, 3), int64 (n,))`` with label 10 mapped to 0.

    Raises:
        DataNotFoundError: missing file.
        CorruptDataError: not a MATLAB v4/v5 file (v7.3/HDF5 files must be re-saved), missing ``X``/``y`` keys,
            wrong shapes or label values outside 1..10 (0..9 is accepted too).
    """
    from scipy.io import loadmat
    from scipy.io.matlab import MatReadError

    path = os.path.expanduser(os.fspath(path))
    if not os.path.isfile(path):
        raise DataNotFoundError(f"SVHN file {path!r} is missing; download it from {SVHN_URL} (format 2, 32x32)")
    try:
        mat = loadmat(path)
    except NotImplementedError as exc:  # scipy's message for v7.3 (HDF5) files
        raise CorruptDataError(f"{path!r} is a MATLAB v7.3 (HDF5) file; the official SVHN files are MATLAB v5. "
                               f"Re-download them from {SVHN_URL} ({exc})") from exc
    except (MatReadError, ValueError, TypeError, OSError, EOFError, IndexError, KeyError) as exc:
        raise CorruptDataError(f"{path!r} is not a readable MATLAB .mat file: {type(exc).__name__}: {exc}") from exc
    keys = sorted(k for k in mat if not k.startswith("__"))
    if "X" not in mat or "y" not in mat:
        raise CorruptDataError(f"{path!r} lacks the SVHN keys 'X' (32x32x3xN images) and 'y' (Nx1 labels); found "
                               f"keys {keys}")
    x, y = np.asarray(mat["X"]), np.asarray(mat["y"]).reshape(-1)
    if x.ndim != 4 or x.shape[:3] != (32, 32, 3):
        raise CorruptDataError(f"{path!r}: 'X' must have shape (32, 32, 3, n); got {x.shape}")
    if y.shape[0] != x.shape[3]:
        raise CorruptDataError(f"{path!r}: 'y' has {y.shape[0]} labels for {x.shape[3]} images")
    if x.dtype != np.uint8:
        if x.size and (x.min() < 0 or x.max() > 255 or np.any(x != np.round(x))):
            raise CorruptDataError(f"{path!r}: 'X' must hold integer pixels in 0..255; got dtype {x.dtype}")
        x = x.astype(np.uint8)
    if y.size and (np.any(y != np.round(y)) or y.min() < 0 or y.max() > 10):
        raise CorruptDataError(f"{path!r}: 'y' must hold integer labels in 1..10 (10 = digit 0); got values in "
                               f"[{y.min()}, {y.max()}]")
    y = y.astype(np.int64) % 10
    return np.ascontiguousarray(np.transpose(x, (3, 0, 1, 2))), y


def load_svhn(data_dir: str | os.PathLike, split: str | None = None):
    """Load SVHN from a folder holding the official ``*_32x32.mat`` files.

    Args:
        data_dir: folder with ``train_32x32.mat``, ``test_32x32.mat`` (and optionally ``extra_32x32.mat``).
        split: ``"train"``, ``"test"`` or ``"extra"`` returns ``(x, y)``; ``None`` returns
            ``((x_train, y_train), (x_test, y_test))`` like :func:`load_cifar10`.

    Returns:
        uint8 NHWC images and int64 labels in 0..9.

    Raises:
        DataNotFoundError: missing folder/file. CorruptDataError: unreadable file or wrong keys/shapes.
    """
    if split is not None and split not in SVHN_FILES:
        raise ValueError(f"split must be one of {sorted(SVHN_FILES)} or None; got split={split!r}")
    root = os.path.expanduser(os.fspath(data_dir))
    if not os.path.isdir(root):
        raise DataNotFoundError(f"data_dir={root!r} does not exist; put {SVHN_FILES['train']} and "
                                f"{SVHN_FILES['test']} (from {SVHN_URL}) there")
    if split is not None:
        return read_svhn_mat(os.path.join(root, SVHN_FILES[split]))
    return read_svhn_mat(os.path.join(root, SVHN_FILES["train"])), read_svhn_mat(
        os.path.join(root, SVHN_FILES["test"]))
