"""Fixtures of the training tests: a small task on which robustness has to be learned."""

import numpy as np
import pytest
from cleverhans.tf2.attacks.projected_gradient_descent import projected_gradient_descent

import qrobust_keras as qrk
from qrobust_keras._keras import keras

@pytest.fixture(scope="module")
def robust_feature_task():
    """``train(callbacks) -> (clean accuracy, PGD-10 accuracy at eps 0.08)`` of an MLP trained 10 epochs on one
    robust feature (class means 0.25 / 0.75) plus 20 weak ones (means 0.45 / 0.55): plain training leans on the
    weak ones and breaks under the attack; training that targets robustness must keep the robust one."""
    rng = np.random.default_rng(0)

    def data(n):
        y = rng.integers(0, 2, n)
        s = 2.0 * y - 1
        robust = 0.5 + 0.25 * s[:, None] + rng.normal(0, 0.08, (n, 1))
        weak = 0.5 + 0.05 * s[:, None] + rng.normal(0, 0.1, (n, 20))
        return np.clip(np.concatenate([robust, weak], 1), 0, 1).astype("float32"), y

    (xtr, ytr), (xte, yte) = data(1024), data(500)
    eps = 0.08

    def train(callbacks):
        keras.utils.set_random_seed(0)
        m = keras.Sequential([keras.Input((21,)), keras.layers.Dense(16, activation="relu"),
                              keras.layers.Dense(2, name="logits"), keras.layers.Activation("softmax")])
        m.compile(keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy")
        m.fit(xtr, ytr, epochs=10, batch_size=64, verbose=0, callbacks=callbacks)
        x_adv = projected_gradient_descent(qrk.models.logits_model(m), xte, eps, eps / 4, 10, np.inf, clip_min=0.0,
                                           clip_max=1.0, y=yte, rand_init=True).numpy()
        return [float((m.predict(v, verbose=0).argmax(1) == yte).mean()) for v in (xte, x_adv)]

    return train
