"""Tests of qrobust_keras/data/safe_pickle.py: numpy arrays load, code-running pickles are refused."""

import os
import pickle

import numpy as np
import pytest

from qrobust_keras.data.errors import CorruptDataError, UnsafePickleError
from qrobust_keras.data.safe_pickle import safe_loads


class _RunsShell:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _Evaluates:
    def __reduce__(self):
        return (eval, ("1 + 1",))


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_numpy_arrays_and_plain_values_round_trip(protocol):
    rng = np.random.default_rng(0)
    obj = {"data": rng.integers(0, 256, (7, 3072), dtype=np.uint8), "labels": [3, 1, 4, 1, 5, 9, 2],
           "scale": np.float32(0.5), "names": ("a", "b"), "f64": rng.normal(size=(2, 3))}
    back = safe_loads(pickle.dumps(obj, protocol=protocol))
    np.testing.assert_array_equal(back["data"], obj["data"])
    np.testing.assert_array_equal(back["f64"], obj["f64"])
    assert back["labels"] == obj["labels"] and back["names"] == ("a", "b") and back["scale"] == np.float32(0.5)


def test_shell_command_pickle_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"data": _RunsShell(marker)}, protocol=2)
    with pytest.raises(UnsafePickleError, match=r"refusing to load global (posix|os|nt)\.system"):
        safe_loads(payload)
    assert not marker.exists()
    pickle.loads(payload)  # the same bytes do run code through the unrestricted unpickler: the test is meaningful
    assert marker.exists()


def test_eval_pickle_is_refused():
    with pytest.raises(UnsafePickleError, match="builtins.eval"):
        safe_loads(pickle.dumps(_Evaluates(), protocol=4))


def test_truncated_and_garbage_pickles_are_corrupt_data():
    good = pickle.dumps({"data": np.zeros((4, 3072), np.uint8)}, protocol=2)
    with pytest.raises(CorruptDataError, match="truncated or corrupted"):
        safe_loads(good[: len(good) // 2])
    with pytest.raises(CorruptDataError):
        safe_loads(b"this is not a pickle at all")
