"""_checks: the shared argument checks accept what they say and name the argument in every refusal."""

import numpy as np
import pytest

from qrobust_keras._checks import check_int, check_number, check_positive, num_classes


def test_check_int_accepts_python_and_numpy_integers_and_refuses_the_rest():
    assert check_int("steps", np.int64(3)) == 3 and type(check_int("steps", np.int64(3))) is int
    assert check_int("seed", 0, minimum=0) == 0
    for bad in (0, -1, True, 2.0, "3", None):
        with pytest.raises(ValueError, match=rf"steps must be an integer >= 1; got steps={bad!r}"):
            check_int("steps", bad)
    with pytest.raises(ValueError, match=r"^filters must be a positive integer; got filters=0$"):
        check_int("filters", 0, accepted="a positive integer")


def test_check_positive_and_check_number():
    assert check_positive("step_size", np.float32(0.5)) == 0.5
    assert check_positive("confidence", 0, allow_zero=True) == 0.0
    for bad in (0, -1.0, float("inf"), float("nan"), True, "1"):
        with pytest.raises(ValueError, match="step_size must be a finite number > 0; got step_size="):
            check_positive("step_size", bad)
    with pytest.raises(ValueError, match=r"confidence must be a finite number >= 0; got confidence=-1"):
        check_positive("confidence", -1, allow_zero=True)
    assert check_number("eps", 0.5, 0.0, 1.0, low_open=True) == 0.5
    with pytest.raises(ValueError, match=r"eps must be a finite number in \(0, 1\]; got eps=0.0"):
        check_number("eps", 0.0, 0.0, 1.0, low_open=True)


def test_num_classes_needs_a_single_output():
    class Model:
        output_shape = (None, 7)

    class TwoHeads:
        output_shape = [(None, 3), (None, 2)]

    assert num_classes(Model()) == 7
    with pytest.raises(ValueError, match="model must have a single output"):
        num_classes(TwoHeads())
