"""Shared test fixtures: the real data folder, seeds, and small helpers."""

import os
import pathlib
import random
import sys

import numpy as np
import pytest

import qrobust_keras  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from qrobust_keras._keras import tf

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
# tests/_model_cache.py is imported by name from fixture modules (--import-mode=importlib adds no test folder)
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))


def shared_data_path() -> pathlib.Path:
    """`../shared/data` beside the checkout (always present in CI); QROBUST_SHARED_DATA overrides it."""
    env = os.environ.get("QROBUST_SHARED_DATA")
    return pathlib.Path(env) if env else REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> pathlib.Path:
    path = shared_data_path()
    if not path.is_dir():
        pytest.fail(f"real data folder {path} is missing; set QROBUST_SHARED_DATA to the shared/data folder")
    return path


@pytest.fixture(scope="session", autouse=True)
def _shared_model_cache(tmp_path_factory):
    """Where tests/_model_cache.py shares trained models between the xdist workers of this run."""
    from _model_cache import CACHE_ENV

    base = tmp_path_factory.getbasetemp()
    os.environ[CACHE_ENV] = str((base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "shared-models")


@pytest.fixture(autouse=True)
def _seed_everything():
    random.seed(0)
    np.random.seed(0)
    tf.random.set_seed(0)
    yield


@pytest.fixture(scope="session")
def cifar_small(shared_data):
    """3,000 CIFAR-10 training JPEGs (lossy, fine for training) and the 1,017 exact test images, in [0, 1]."""
    paths, _, _ = qrobust_keras.data.list_image_folder(shared_data / "cifar10-jpeg" / "train")
    rng = np.random.default_rng(0)
    pick = sorted(rng.choice(len(paths), 3000, replace=False))
    x_train, y_train, _ = qrobust_keras.data.load_image_folder(shared_data / "cifar10-jpeg" / "train",
                                                     paths=[paths[i] for i in pick])
    x_test, y_test = qrobust_keras.data.read_pickle_batch(shared_data / "cifar10" / "cifar-10-batches-py" / "test_batch")
    return (x_train.astype(np.float32) / 255, y_train), (x_test.astype(np.float32) / 255, y_test)
