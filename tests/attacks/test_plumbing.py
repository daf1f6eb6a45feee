"""plumbing: the white-box attacks' shared checks and the one progress bar of all attacks."""

import numpy as np
import pytest

from qrobust_keras._keras import keras
from qrobust_keras.attacks.plumbing import ProgressBar, prepare


def _model():
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.layers.Flatten(input_shape=(4, 4, 1)), keras.layers.Dense(3)])


def test_prepare_fills_labels_and_refuses_bad_inputs():
    model = _model()
    x = np.random.default_rng(0).uniform(size=(5, 4, 4, 1)).astype(np.float32)
    _, x_out, y, norm, n_classes = prepare(model, x, None, 8 / 255, np.inf, False, 0.0, 1.0, 2, "pgd")
    np.testing.assert_array_equal(y, model.predict(x, verbose=0).argmax(axis=1))
    assert norm == "inf" and n_classes == 3 and x_out.dtype == np.float32
    with pytest.raises(TypeError, match="pgd is a white-box attack"):
        prepare(lambda a: a, x, None, 8 / 255, "inf", False, 0.0, 1.0, 2, "pgd")
    with pytest.raises(ValueError, match="targeted=True needs y"):
        prepare(model, x, None, 8 / 255, "inf", True, 0.0, 1.0, 2, "pgd")
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1; got batch_size=0"):
        prepare(model, x, None, 8 / 255, "inf", False, 0.0, 1.0, 0, "pgd")
    with pytest.raises(ValueError, match=r"x has sample shape \(2, 8, 1\) but the model expects \(4, 4, 1\)"):
        prepare(model, x.reshape(5, 2, 8, 1), np.zeros(5, int), 8 / 255, "inf", False, 0.0, 1.0, 2, "pgd")


def test_progress_bar_counts_units_and_is_silent_at_verbose_0(capsys):
    bar = ProgressBar(4, verbose=0, name="square", unit="sample")
    bar.update(3)
    bar.update()
    bar.close()
    assert bar.done == 4 and capsys.readouterr().out == ""
    bar = ProgressBar(4, verbose=2, name="square", unit="sample")
    bar.update(2)
    bar.close()  # stopped early: the bar still ends
    out = capsys.readouterr().out
    assert out.startswith("square:\n") and "2/4" in out
