"""Datasets by name: ``load_dataset("cifar10" | "svhn" | "speech_commands", ...)`` -> :class:`DataSpec`.

The one place that maps a dataset name to its loader, its splits and its input convention (images uint8 in
0..255 that models read as ``x / 255``; Speech Commands as MFCC features). The ``qrobust`` command, the demo and
the examples all load data through it.

Example (the project's shared data beside a checkout):

>>> from qrobust_keras.data.datasets import load_dataset
>>> data = load_dataset("cifar10", "../shared/data/cifar10", n_test=100, verbose=0, need_train=False)
>>> data.test[0].shape, data.test[0].dtype, data.describe()["n_test"]
((100, 32, 32, 3), dtype('uint8'), 100)
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

__all__ = ["DATASETS", "DataSpec", "load_dataset", "subset", "to_float"]

DATASETS = ("cifar10", "svhn", "speech_commands")


class DataSpec:
    """A loaded dataset: ``train``/``test`` as ``(x, y)`` (images uint8, features float32) and where it came from."""

    def __init__(self, name: str, train: tuple, test: tuple, source: str, synthetic: bool = False):
        self.name, self.train, self.test, self.source, self.synthetic = name, train, test, source, synthetic

    def describe(self) -> dict[str, Any]:
        """JSON-ready description (recorded in run folders and reports)."""
        return {"dataset": self.name, "source": self.source, "synthetic": self.synthetic,
                "n_train": int(len(self.train[0])), "n_test": int(len(self.test[0]))}


def subset(xy: tuple, n: int | None, seed: int) -> tuple:
    """The first ``n`` samples of a seeded permutation of ``xy``, kept in their original order (all when ``n`` is
    None or at least the size)."""
    x, y = xy
    if n is None or n >= len(x):
        return x, y
    idx = np.sort(np.random.default_rng(seed).permutation(len(x))[:n])
    return x[idx], y[idx]


def to_float(x: np.ndarray) -> np.ndarray:
    """Model inputs as float32: uint8 images scaled to [0, 1], anything else cast."""
    return (x.astype(np.float32) / 255.0) if x.dtype == np.uint8 else x.astype(np.float32)


def load_dataset(dataset: str, data_dir: str | None, *, source: str = "auto", n_train: int | None = None,
                 n_test: int | None = None, seed: int = 0, verbose: int = 1, need_train: bool = True,
                 download: bool = False) -> DataSpec:
    """Load ``cifar10`` / ``svhn`` / ``speech_commands``.

    CIFAR-10 follows :func:`qrobust_keras.data.find_cifar10` (``data_dir``, ``$QROBUST_DATA_DIR``, the Keras cache;
    ``source`` picks pickles or images); ``download=True`` fetches it with Keras when none is found. Speech
    Commands is split by speaker (train 70% / validation 10% / test 20% of the clips, seed 0) with MFCC features.
    ``n_train``/``n_test`` keep a random subset (:func:`subset`, seeds ``seed`` and ``seed + 1``).

    Raises:
        qrobust_keras.data.DataNotFoundError: nothing found (the message says where it looked), or the download
            failed.
        ValueError: an unknown dataset name.
    """
    from qrobust_keras import data as qdata

    if dataset == "cifar10":
        try:
            kind, path = qdata.find_cifar10(data_dir, source)
        except qdata.DataNotFoundError:
            if not download or data_dir is not None or source == "images":
                raise
            kind, path = "pickle", qdata.download_cifar10(verbose)
        train, test = qdata.load_cifar10(path, source=kind, verbose=verbose) if need_train or kind == "pickle" \
            else (None, None)
        if train is None:  # images, test only
            x, y, _ = qdata.load_image_folder(os.path.join(path, "test"), qdata.CIFAR10_CLASSES)
            train, test = (x[:0], y[:0]), (x, y)
        src = f"{'python batches' if kind == 'pickle' else 'images'} in {path}"
    elif dataset == "svhn":
        if data_dir is None:
            raise qdata.DataNotFoundError("SVHN needs --data-dir: a folder with train_32x32.mat and test_32x32.mat "
                                          "(http://ufldl.stanford.edu/housenumbers/)")
        if need_train:
            train, test = qdata.load_svhn(data_dir)
        else:
            test = qdata.load_svhn(data_dir, split="test")
            train = (test[0][:0], test[1][:0])
        src = f"SVHN .mat files in {data_dir}"
    elif dataset == "speech_commands":
        if data_dir is None:
            raise qdata.DataNotFoundError("Speech Commands needs --data-dir: the dataset folder or a folder holding "
                                          "test_set_v0.02")
        x, y, paths = qdata.load_speech_commands(data_dir, split="all", return_paths=True, verbose=verbose)
        parts = qdata.speaker_disjoint_split(paths, validation_fraction=0.1, test_fraction=0.2, seed=0)
        train = (x[parts["train"]].astype(np.float32), y[parts["train"]])
        test = (x[parts["test"]].astype(np.float32), y[parts["test"]])
        src = f"speaker-disjoint split (70/10/20, seed 0) of the clips in {data_dir}, MFCC features"
    else:
        raise ValueError(f"dataset must be one of {', '.join(DATASETS)}; got dataset={dataset!r}")
    train = subset(train, n_train, seed)
    test = subset(test, n_test, seed + 1)
    return DataSpec(dataset, train, test, src)
