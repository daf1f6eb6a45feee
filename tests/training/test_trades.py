"""Tests of qrobust_keras/training/trades.py: the KL term, the inner maximisation, the loss it adds, robustness."""

import numpy as np
import pytest

import qrobust_keras as qrk
from qrobust_keras._keras import keras, tf
from qrobust_keras.training import TRADES, AdversarialTraining, kl_divergence_from_logits


def _mlp(seed=0, n_in=6):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((n_in,)), keras.layers.Dense(16, activation="relu"),
                              keras.layers.Dense(3, name="logits"), keras.layers.Activation("softmax")])
    model.compile(keras.optimizers.SGD(0.1), "sparse_categorical_crossentropy")
    return model


def test_kl_divergence_matches_numpy():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(5, 4)), rng.normal(size=(5, 4))
    p = np.exp(a) / np.exp(a).sum(1, keepdims=True)
    q = np.exp(b) / np.exp(b).sum(1, keepdims=True)
    expected = (p * np.log(p / q)).sum(1)
    np.testing.assert_allclose(kl_divergence_from_logits(tf.constant(a), tf.constant(b)).numpy(), expected,
                               rtol=1e-6)
    np.testing.assert_allclose(kl_divergence_from_logits(tf.constant(a), tf.constant(a)).numpy(), 0, atol=1e-12)


def test_crafted_points_stay_in_the_ball_and_raise_the_kl_above_random_points():
    model = _mlp()
    x = np.random.default_rng(1).uniform(0, 1, (64, 6)).astype("float32")
    trades = TRADES(eps=0.1, steps=5, seed=0)
    trades.set_model(model)
    trades._logits = qrk.models.logits_model(model)
    x_adv = trades.craft(tf.constant(x), tf.constant([0, 1], tf.int64)).numpy()
    assert np.abs(x_adv - x).max() <= 0.1 + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    logits = trades._logits(x).numpy()
    kl_adv = kl_divergence_from_logits(logits, trades._logits(x_adv)).numpy().mean()
    x_rand = np.clip(x + np.random.default_rng(2).choice([-0.1, 0.1], x.shape), 0, 1).astype("float32")
    kl_rand = kl_divergence_from_logits(logits, trades._logits(x_rand)).numpy().mean()
    assert kl_adv > 3 * kl_rand > 0  # the corners of the ball chosen by the gradient, not at random


def test_one_step_descends_the_clean_loss_plus_beta_times_the_kl():
    """One SGD step under TRADES equals a hand-made step on CE(clean) + beta * mean KL(p(x) || p(x')) with the same
    crafted x'; the history's ``loss`` stays the compiled (clean) loss and ``trades_kl`` logs the KL term."""
    x = np.random.default_rng(3).uniform(0, 1, (32, 6)).astype("float32")
    y = np.random.default_rng(4).integers(0, 3, 32)
    beta, lr = 3.0, 0.5
    model = _mlp()
    model.optimizer.learning_rate.assign(lr)
    by_hand = _mlp()
    trades = TRADES(eps=0.2, beta=beta, seed=5)
    trades.set_model(by_hand)
    trades._logits = logits = qrk.models.logits_model(by_hand)
    key = tf.random.experimental.stateless_fold_in(tf.constant([5, 0x78AD], tf.int64), tf.constant(0, tf.int64))
    x_adv = trades.craft(tf.constant(x), tf.random.experimental.stateless_fold_in(key, tf.constant(0, tf.int64)))
    with tf.GradientTape() as tape:
        ce = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(y, by_hand(x)))
        kl = tf.reduce_mean(kl_divergence_from_logits(logits(x), logits(x_adv)))
        total = ce + beta * kl
    grads = tape.gradient(total, by_hand.trainable_variables)
    expected = [w - lr * g for w, g in zip(by_hand.get_weights(), [g.numpy() for g in grads])]

    h = model.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0,
                  callbacks=[TRADES(eps=0.2, beta=beta, seed=5)])
    assert float(kl) > 1e-3 and h.history["trades_kl"][0] == pytest.approx(float(kl), rel=1e-5)
    assert h.history["loss"][0] == pytest.approx(float(ce), rel=1e-5)
    for got, want in zip(model.get_weights(), expected):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    plain = _mlp()
    plain.optimizer.learning_rate.assign(lr)
    plain.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0)
    assert max(np.abs(a - b).max() for a, b in zip(plain.get_weights(), expected)) > 1e-3  # the KL term moved it


def test_trades_improves_pgd_accuracy_like_adversarial_training(robust_feature_task):
    """On the task of the AdversarialTraining test (one robust feature, 20 weak ones), TRADES keeps the clean
    accuracy and raises PGD accuracy at eps 0.08 well above plain training (measured: 81% -> 98%)."""
    clean0, robust0 = robust_feature_task([])
    clean, robust = robust_feature_task([TRADES(eps=0.08, beta=6.0, seed=0)])
    assert robust0 < 0.9 and robust >= robust0 + 0.1, (robust0, robust)
    assert clean >= clean0 - 0.02, (clean0, clean)


def test_trades_composes_with_adversarial_training_and_jr():
    x = np.random.default_rng(6).uniform(0, 1, (64, 6)).astype("float32")
    y = np.random.default_rng(7).integers(0, 3, 64)
    model = _mlp()
    h = model.fit(x, y, batch_size=16, epochs=1, verbose=0,
                  callbacks=[TRADES(eps=0.1, seed=1), AdversarialTraining(eps=0.1, seed=2),
                             qrk.JacobianRegularization(0.01, seed=3)])
    assert {"trades_kl", "jr"} <= set(h.history) and "train_step" not in vars(model)


def test_training_mode_crafting_leaves_the_moving_statistics():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8), keras.layers.BatchNormalization(),
                              keras.layers.ReLU(), keras.layers.Dense(3, name="logits"),
                              keras.layers.Activation("softmax")])
    x = np.random.default_rng(8).uniform(0, 1, (16, 6)).astype("float32")
    trades = TRADES(eps=0.1, steps=4, seed=0, craft_mode="training")
    trades.set_model(model)
    trades._logits = qrk.models.logits_model(model)
    bn = model.layers[1]
    before = [w.numpy().copy() for w in bn.weights]
    trades.craft(tf.constant(x), tf.constant([0, 1], tf.int64))
    for a, b in zip(before, bn.weights):
        np.testing.assert_array_equal(a, b.numpy())


def test_bad_arguments_and_config_round_trip():
    with pytest.raises(ValueError, match=r"beta must be a finite number > 0.*got beta=0"):
        TRADES(beta=0)
    with pytest.raises(ValueError, match=r"eps must be in \(0, .*eps=8.*8/255"):
        TRADES(eps=8)
    with pytest.raises(ValueError, match=r"craft_mode must be one of .*got craft_mode='eval'"):
        TRADES(craft_mode="eval")
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        TRADES(steps=0)
    t = TRADES(eps=4 / 255, beta=1.0, steps=5, seed=3, craft_mode="training")
    assert TRADES.from_config(t.get_config()).get_config() == t.get_config()
    assert t.step_size == pytest.approx(2.5 * 4 / 255 / 5)
