"""CIFAR-10 from the files users have: python-pickle batches (any length), a class-folder image tree, the Keras cache.

The pickle batches are read with a restricted unpickler (:mod:`qrobust_keras.data.safe_pickle`) and may hold any
number of images (the shared copies hold 1,017 per batch; ``keras.datasets.cifar10`` insists on 10,000). Nothing is
downloaded unless ``download=True`` is passed.

Search order for ``data_dir=None``: ``$QROBUST_DATA_DIR``, then the Keras cache
(``$KERAS_HOME`` or ``~/.keras``, ``datasets/cifar-10-batches-py``). Inside a folder the exact pickles are preferred
over JPEG copies.

Example (on the project's shared copies, ``../shared/data`` beside a checkout):

>>> from qrobust_keras.data import load_cifar10
>>> (x_train, y_train), (x_test, y_test) = load_cifar10("../shared/data/cifar10")  # uint8 NHWC, int64 labels
>>> x_test.shape, y_test[:5]
((1017, 32, 32, 3), array([3, 8, 8, 0, 6]))
"""

from __future__ import annotations

import os
import sys

import numpy as np

from qrobust_keras.data.errors import CorruptDataError, DataNotFoundError
from qrobust_keras.data.image_folder import load_image_folder
from qrobust_keras.data.safe_pickle import safe_load

__all__ = ["CLASS_NAMES", "DOWNLOAD_URL", "ENV_VAR", "download_cifar10", "find_cifar10", "keras_cache_dir", "load_cifar10",
           "read_pickle_batch"]

CLASS_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
DOWNLOAD_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
ENV_VAR = "QROBUST_DATA_DIR"
PICKLE_DIR = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
SOURCES = ("auto", "pickle", "images")


def keras_cache_dir() -> str:
    """Where ``keras.datasets.cifar10.load_data`` keeps the batches: ``$KERAS_HOME|~/.keras/datasets/...``."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return os.path.join(home, "datasets", PICKLE_DIR)


def _is_pickle_dir(path: str) -> bool:
    return os.path.isfile(os.path.join(path, TEST_BATCH)) or os.path.isfile(os.path.join(path, TRAIN_BATCHES[0]))


def _is_image_tree(path: str) -> bool:
    return all(os.path.isdir(os.path.join(path, part)) for part in ("train", "test")) and any(
        os.path.isdir(os.path.join(path, "test", c)) for c in CLASS_NAMES)


def _candidates(root: str) -> list[tuple[str, str]]:
    """(kind, path) layouts found in ``root``, best first (exact pickles before lossy images)."""
    found = []
    for sub in ("", PICKLE_DIR, os.path.join("cifar10", PICKLE_DIR), os.path.join("cifar-10", PICKLE_DIR),
                os.path.join(PICKLE_DIR + "_extracted", PICKLE_DIR)):
        path = os.path.join(root, sub) if sub else root
        if _is_pickle_dir(path):
            found.append(("pickle", os.path.normpath(path)))
    for sub in ("", "cifar10-jpeg", "cifar10-png", "cifar10-images", "cifar10"):
        path = os.path.join(root, sub) if sub else root
        if _is_image_tree(path):
            found.append(("images", os.path.normpath(path)))
    return found


def find_cifar10(data_dir: str | os.PathLike | None = None, source: str = "auto") -> tuple[str, str]:
    """Locate CIFAR-10: returns ``(kind, path)`` with kind ``"pickle"`` or ``"images"``.

    Args:
        data_dir: a folder holding (or being) ``cifar-10-batches-py`` or a ``train/``+``test/`` class tree; ``None``
            searches ``$QROBUST_DATA_DIR`` then the Keras cache.
        source: ``"auto"`` (pickles first), ``"pickle"`` or ``"images"``.

    Raises:
        DataNotFoundError: nothing usable found; the message lists where it looked and where to put the files.
    """
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}; got source={source!r}")
    if data_dir is not None:
        roots = [os.path.expanduser(os.fspath(data_dir))]
        if not os.path.isdir(roots[0]):
            raise DataNotFoundError(f"data_dir={roots[0]!r} does not exist. {_where_to_put()}")
    else:
        roots = [os.path.expanduser(os.environ[ENV_VAR])] if os.environ.get(ENV_VAR) else []
        roots.append(os.path.dirname(keras_cache_dir()))
    for root in roots:
        for kind, path in _candidates(root):
            if source in ("auto", kind):
                return kind, path
    looked = ", ".join(repr(r) for r in roots)
    what = {"auto": "CIFAR-10", "pickle": "CIFAR-10 pickle batches", "images": "a CIFAR-10 image tree"}[source]
    env = "" if data_dir is not None or os.environ.get(ENV_VAR) else f" (${ENV_VAR} is not set)"
    raise DataNotFoundError(f"{what} not found in {looked}{env}. {_where_to_put()}")


def _where_to_put() -> str:
    return (f"Put the python batches (data_batch_1..5, test_batch from {DOWNLOAD_URL}) in "
            f"<dir>/{PICKLE_DIR}/, or JPEG/PNG images in <dir>/train/<class>/ and <dir>/test/<class>/, and pass "
            f"data_dir=<dir> or set {ENV_VAR}=<dir>; or call load_cifar10(download=True) to let Keras download "
            f"about 163 MB into {os.path.dirname(keras_cache_dir())}")


def read_pickle_batch(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 python batch of any length: ``(uint8 (n, 32, 32, 3), int64 (n,))``.

    Raises:
        DataNotFoundError: missing file. UnsafePickleError: the pickle names a non-numpy global.
        CorruptDataError: unreadable pickle, missing ``data``/``labels`` keys, or inconsistent shapes/values.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DataNotFoundError(f"CIFAR-10 batch {path!r} is missing")
    with open(path, "rb") as f:
        batch = safe_load(f, encoding="latin1", name=path)
    if not isinstance(batch, dict):
        raise CorruptDataError(f"{path!r} holds a {type(batch).__name__}; expected the CIFAR-10 batch dict with "
                               "keys 'data' and 'labels'")
    batch = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in batch.items()}
    missing = [k for k in ("data", "labels") if k not in batch]
    if missing:
        raise CorruptDataError(f"{path!r} lacks key(s) {missing}; found keys {sorted(map(str, batch))}")
    data, labels = batch["data"], np.asarray(batch["labels"])
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise CorruptDataError(f"{path!r}: 'data' must be a uint8 array of shape (n, 3072); got "
                               f"{type(data).__name__} {getattr(data, 'dtype', '')} {getattr(data, 'shape', '')}")
    if labels.shape != (data.shape[0],) or labels.dtype.kind not in "iu" or (
            labels.size and (labels.min() < 0 or labels.max() > 9)):
        raise CorruptDataError(f"{path!r}: 'labels' must be {data.shape[0]} integers in 0..9; got shape "
                               f"{labels.shape}, dtype {labels.dtype}")
    x = np.ascontiguousarray(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    return x, labels.astype(np.int64)


def _load_pickles(path: str) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    missing = [b for b in TRAIN_BATCHES + (TEST_BATCH,) if not os.path.isfile(os.path.join(path, b))]
    if missing:
        raise DataNotFoundError(f"CIFAR-10 folder {path!r} lacks {missing}; expected data_batch_1..5 and test_batch")
    train = [read_pickle_batch(os.path.join(path, b)) for b in TRAIN_BATCHES]
    test = read_pickle_batch(os.path.join(path, TEST_BATCH))
    return (np.concatenate([t[0] for t in train]), np.concatenate([t[1] for t in train])), test


def _load_images(path: str, num_workers: int | None, decoder: str):
    parts = []
    for split in ("train", "test"):
        x, y, _ = load_image_folder(os.path.join(path, split), CLASS_NAMES, (32, 32), num_workers, decoder=decoder)
        parts.append((x, y))
    return parts[0], parts[1]


def load_cifar10(data_dir: str | os.PathLike | None = None, *, source: str = "auto", download: bool = False,
                 num_workers: int | None = None, decoder: str = "tf", verbose: int = 1):
    """Load CIFAR-10 as ``((x_train, y_train), (x_test, y_test))``: uint8 NHWC ``(n, 32, 32, 3)``, int64 labels.

    Args:
        data_dir: folder holding (or being) ``cifar-10-batches-py`` (python pickles, any batch length) or a class
            tree ``train/<class>/*.jpg|png`` + ``test/<class>/...`` (classes named as :data:`CLASS_NAMES`; images in
            class order, sorted by file name within a class). ``None``: ``$QROBUST_DATA_DIR``, then the Keras cache.
        source: ``"auto"`` (exact pickles before lossy images), ``"pickle"`` or ``"images"``.
        download: if nothing is found, download the official archive (about 163 MB) with Keras into the Keras cache
            (reported on stderr). Never happens otherwise.
        num_workers: Pillow decoding threads for the image tree (``decoder="pil"``).
        decoder: image decoder, ``"tf"`` (tf.data, default) or ``"pil"``; both give the same pixels (see
            :func:`qrobust_keras.data.load_image_folder`). All 60,000 JPEGs load in about 10 s on 2 cores.
        verbose: 1 says on stderr which files were read.

    Returns:
        ``((x_train, y_train), (x_test, y_test))``.

    Raises:
        DataNotFoundError: nothing found (the message says where to put the files), or batches missing.
        UnsafePickleError: a batch pickle references code (refused, nothing executed).
        CorruptDataError: a truncated/corrupted batch or image.
    """
    try:
        kind, path = find_cifar10(data_dir, source)
    except DataNotFoundError:
        if not download or source == "images":
            raise
        kind, path = "pickle", download_cifar10(verbose)
    if verbose:
        print(f"qrobust_keras: reading CIFAR-10 {'python batches' if kind == 'pickle' else 'images'} from {path}",
              file=sys.stderr)
    return _load_pickles(path) if kind == "pickle" else _load_images(path, num_workers, decoder)


def download_cifar10(verbose: int = 1) -> str:
    """Download the official CIFAR-10 python batches with Keras' loader into the Keras cache; returns their folder.

    The only network access of the library, and only on request (``download=True``, ``qrobust ... --download``).

    Raises:
        DataNotFoundError: the download failed (no network, a proxy, a full disk); the message gives the reason and
            how to get the files another way.
    """
    from qrobust_keras._keras import keras

    target = keras_cache_dir()
    if _is_pickle_dir(target):
        return target
    # always reported, whatever ``verbose``: the library's only network access must never be silent
    print(f"qrobust_keras: CIFAR-10 not found locally; downloading {DOWNLOAD_URL} (about 163 MB) into "
          f"{os.path.dirname(target)}", file=sys.stderr)
    try:
        path = keras.utils.get_file(PICKLE_DIR, origin=DOWNLOAD_URL, untar=True,
                                    cache_dir=os.path.dirname(os.path.dirname(target)), cache_subdir="datasets")
    except Exception as exc:  # noqa: BLE001 - urllib, HTTP, tar and disk errors all mean: no data, say why
        raise DataNotFoundError(
            f"could not download CIFAR-10 from {DOWNLOAD_URL} ({type(exc).__name__}: {exc}). Without network "
            f"access, download cifar-10-python.tar.gz on another machine, unpack it and pass its folder as "
            f"data_dir / --data-dir (or set {ENV_VAR})") from None
    for candidate in (path, os.path.join(path, PICKLE_DIR), target):
        if _is_pickle_dir(candidate):
            return candidate
    raise DataNotFoundError(f"the download finished but no CIFAR-10 batches were found in {path!r}")
