"""`create_fit_variables`: one trace of the train step per fit, nothing trained, the same metrics."""

import numpy as np
import pytest

import qrobust_keras as qrk
from qrobust_keras._keras import keras
from qrobust_keras.training.step import create_fit_variables


def _model():
    keras.utils.set_random_seed(0)
    model = qrk.models.resnet8(policy="int4", filters=4)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def test_the_train_step_traces_once_and_trains_the_same_weights():
    rng = np.random.default_rng(0)
    x, y = rng.random((48, 32, 32, 3), dtype=np.float32), rng.integers(0, 10, 48)
    plain, prepared = _model(), _model()
    before = [w.copy() for w in prepared.get_weights()]
    create_fit_variables(prepared, (x[:2], y[:2]))
    for a, b in zip(before, prepared.get_weights()):
        np.testing.assert_array_equal(a, b)            # nothing trained, BatchNorm statistics untouched
    h_plain = plain.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0).history
    h_prep = prepared.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0).history
    # tf_keras creates the optimizer slots and metric accumulators inside the first trace, which forces a second one
    assert plain.train_function.experimental_get_tracing_count() == 2
    assert prepared.train_function.experimental_get_tracing_count() == 1
    assert h_prep["accuracy"] == h_plain["accuracy"]                  # metrics were reset, "accuracy" resolved alike
    np.testing.assert_allclose(h_prep["loss"], h_plain["loss"], rtol=1e-5)
    for a, b in zip(plain.get_weights(), prepared.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_an_uncompiled_model_is_refused():
    with pytest.raises(ValueError, match="compiled"):
        create_fit_variables(qrk.models.resnet8(policy="float", filters=4), (np.zeros((1, 32, 32, 3)), [0]))
