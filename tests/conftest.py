"""Shared test fixtures: the real data folder, seeds, and small helpers."""

import os
import pathlib
import random

import numpy as np
import pytest

import qrobust_keras  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from qrobust_keras._keras import tf

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


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


@pytest.fixture(autouse=True)
def _seed_everything():
    random.seed(0)
    np.random.seed(0)
    tf.random.set_seed(0)
    yield
