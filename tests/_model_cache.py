"""Models that test files on several pytest-xdist workers need, trained once per test run and shared as files.

With ``--dist loadfile`` each worker runs whole files, so a session fixture used by files on both workers would
train the same model twice on the same two cores. The first worker to ask trains and saves it; the others wait on
a lock and load it (a save/load round trip reproduces outputs exactly: tests/models/test_io.py).
"""

import fcntl
import os
import pathlib

CACHE_ENV = "QROBUST_TEST_MODEL_CACHE"  # set per run by tests/conftest.py


def shared_model(key: str, train):
    """``train()``'s model, trained by one worker per test run and loaded by the others."""
    from qrobust_keras.models import load_model
    from qrobust_keras.recipes import save_model_atomic

    folder = os.environ.get(CACHE_ENV)
    if not folder:
        return train()
    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{key}.h5"
    with open(folder / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if path.exists():
            return load_model(str(path), compile=False)
        model = train()
        save_model_atomic(model, str(path))
        return model
