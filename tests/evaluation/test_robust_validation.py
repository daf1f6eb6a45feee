"""Tests of qrobust_keras/evaluation/robust_validation.py: the logged value is PGD accuracy, it reaches history.csv."""

import json

import numpy as np
import pytest

import qrobust_keras as qrk
from qrobust_keras._keras import keras
from qrobust_keras.evaluation import RobustValidation


def _model(seed=0):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(16, activation="relu"),
                              keras.layers.Dense(3, name="logits"), keras.layers.Activation("softmax")])
    model.compile(keras.optimizers.Adam(0.05), "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def _data(n=96, seed=1):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, (n, 6)).astype("float32")
    return x, (x[:, 0] * 3).astype(int).clip(0, 2)  # the label is a step function of one feature


def test_the_logged_value_is_the_accuracy_under_pgd_every_nth_epoch():
    x, y = _data()
    model = _model()
    monitor = RobustValidation(x[:48], y[:48], eps=0.1, steps=10, every=2, seed=3)
    history = model.fit(x, y, epochs=4, verbose=0, callbacks=[monitor])
    logged = history.history["val_pgd_accuracy"]
    assert len(logged) == 2  # epochs 2 and 4 only
    x_adv = qrk.attacks.pgd(model, x[:48], y[:48], eps=0.1, steps=10, seed=3, verbose=0)
    expected = float(np.mean(model.predict(x_adv, verbose=0).argmax(-1) == y[:48]))
    assert logged[-1] == pytest.approx(expected)
    clean = float(np.mean(model.predict(x[:48], verbose=0).argmax(-1) == y[:48]))
    assert logged[-1] < clean  # an eps of 0.1 around a threshold at 1/3 and 2/3 breaks some samples
    # one-hot labels give the same number
    onehot = RobustValidation(x[:48], np.eye(3)[y[:48]], eps=0.1, steps=10, seed=3)
    onehot.set_model(model)
    logs = {}
    onehot.on_epoch_end(0, logs)
    assert logs["val_pgd_accuracy"] == pytest.approx(expected)
    assert onehot.get_config()["samples"] == 48


def test_bad_arguments_are_refused():
    x, y = _data(8)
    with pytest.raises(ValueError, match=r"eps must be in \(0, clip_max - clip_min\] = \(0, 1.0\]; got eps=8 "
                                         r"\(did you mean 8/255\?\)"):
        RobustValidation(x, y, eps=8)
    with pytest.raises(ValueError, match=r"same number \(> 0\) of samples; got len\(x\)=8, len\(y\)=7"):
        RobustValidation(x, y[:7], eps=0.1)
    with pytest.raises(ValueError, match="every must be a positive integer; got every=0"):
        RobustValidation(x, y, eps=0.1, every=0)


def test_fit_recipe_writes_val_pgd_accuracy_to_the_history(tmp_path):
    from qrobust_keras.recipes import fit_recipe, get_recipe, read_history

    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 256, size=(64, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, size=64)
    recipe = get_recipe("int4_at", epochs=2, batch_size=32, at_method="nfgsm", at_eps=8 / 255, init_weights="none")
    out = str(tmp_path / "run")
    fit_recipe(recipe, (x, y), (x[:16], y[:16]), out, verbose=0, robust_val_eps=8 / 255, robust_val_samples=8)
    rows = read_history(f"{out}/history.csv")
    assert [r["epoch"] for r in rows] == [0, 1]
    assert all(0.0 <= r["val_pgd_accuracy"] <= 1.0 for r in rows)
    config = json.loads(open(f"{out}/run_config.json").read())
    assert config["robust_validation"]["samples"] == 8
    with pytest.raises(ValueError, match=r"robust_val_eps=0.1 needs validation samples"):
        fit_recipe(get_recipe("mlcommons", epochs=1), (x, y), None, str(tmp_path / "run2"), verbose=0,
                   robust_val_eps=0.1)
