"""Tests of qrobust_keras/training/adversarial.py: attack oracle (cleverhans), batch mixing, robustness, composition."""

import numpy as np
import pytest
from cleverhans.tf2.attacks.fast_gradient_method import fast_gradient_method
from cleverhans.tf2.attacks.projected_gradient_descent import projected_gradient_descent

import qrobust_keras as qrk
from qrobust_keras._keras import keras, tf
from qrobust_keras.training import AdversarialTraining
from qrobust_keras.training.adversarial import craft_adversarial


def mlp(n_in=6, n_out=3, seed=0, loss="sparse_categorical_crossentropy"):
    keras.utils.set_random_seed(seed)
    inp = keras.Input((n_in,))
    h = keras.layers.Dense(16, activation="relu", name="fc")(inp)
    out = keras.layers.Dense(n_out, activation="softmax", name="logits")(h)
    model = keras.Model(inp, out)
    model.compile(keras.optimizers.SGD(0.1), loss)
    return model


def _data(n=32, n_in=6, seed=1):
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 1, (n, n_in)).astype("float32"), rng.integers(0, 3, n)


@pytest.mark.parametrize("steps", [1, 5])
def test_pgd_without_random_start_matches_cleverhans(steps):
    model = mlp()
    logits = qrk.models.logits_model(model)
    x, y = _data()
    eps = 0.1
    step_size = eps if steps == 1 else eps / 4
    ours = craft_adversarial(lambda t: logits(t, training=False), x, tf.constant(y), eps, steps, step_size, 0.0, 1.0,
                             tf.constant([0, 0], tf.int64), random_start=False).numpy()
    if steps == 1:
        ref = fast_gradient_method(logits, x, eps, np.inf, clip_min=0.0, clip_max=1.0, y=y).numpy()
    else:
        ref = projected_gradient_descent(logits, x, eps, step_size, steps, np.inf, clip_min=0.0, clip_max=1.0, y=y,
                                         rand_init=False).numpy()
    np.testing.assert_allclose(ours, ref, atol=1e-6)
    assert np.abs(ours - x).max() == pytest.approx(eps, abs=1e-6)


def _transform(model, cb, x, y):
    cb.set_model(model)
    cb.on_train_begin()
    try:
        return cb.transform_batch(tf.constant(x), tf.constant(y), None)[0].numpy()
    finally:
        cb.on_train_end()


def test_transform_replaces_a_ratio_of_the_batch_spread_evenly_within_eps():
    model = mlp()
    x, y = _data(16)
    eps = 0.05
    x_mix = _transform(model, AdversarialTraining("pgd", eps=eps, steps=3, ratio=0.25, seed=0), x, y)
    assert "train_step" not in vars(model)
    rows = np.array([3, 7, 11, 15])  # every fourth row
    rest = np.setdiff1d(np.arange(16), rows)
    np.testing.assert_array_equal(x_mix[rest], x[rest])
    delta = np.abs(x_mix[rows] - x[rows])
    assert delta.max() <= eps + 1e-6 and (delta.max(axis=1) > 0.9 * eps).all()
    assert x_mix.min() >= 0 and x_mix.max() <= 1
    ce = keras.losses.SparseCategoricalCrossentropy(reduction="none")
    assert (ce(y[rows], model(x_mix[rows])).numpy() > ce(y[rows], model(x[rows])).numpy()).all()
    # One-hot labels (categorical_crossentropy models) craft the same examples.
    onehot = mlp(loss="categorical_crossentropy")
    x_oh = _transform(onehot, AdversarialTraining("pgd", eps=eps, steps=3, ratio=0.25, seed=0), x,
                      np.eye(3, dtype="float32")[y])
    np.testing.assert_allclose(x_oh, x_mix, atol=1e-6)


def test_nfgsm_is_one_unprojected_step_from_a_start_in_the_wider_ball():
    """N-FGSM (de Jorge et al. 2022): without the random start it is FGSM with its step size and no projection onto
    the eps-ball (cleverhans' FGSM at the step size is the oracle); with it, the start lies in the ball of radius
    noise * eps, so examples leave the eps-ball but stay within (noise + 1) eps."""
    model = mlp()
    x, y = _data(16)
    eps = 0.05
    ref = fast_gradient_method(qrk.models.logits_model(model), x, 3 * eps, np.inf, clip_min=0.0, clip_max=1.0,
                               y=y).numpy()
    one_step = _transform(model, AdversarialTraining("nfgsm", eps=eps, step_size=3 * eps, ratio=1.0,
                                                     random_start=False), x, y)
    np.testing.assert_allclose(one_step, ref, atol=1e-6)
    assert np.abs(one_step - x).max() == pytest.approx(3 * eps, abs=1e-6)  # PGD would project it back to eps
    cb = AdversarialTraining("nfgsm", eps=eps, ratio=1.0, seed=0)
    assert (cb.steps, cb.step_size, cb.noise) == (1, pytest.approx(eps), 2.0)
    delta = np.abs(_transform(model, cb, x, y) - x)
    assert delta.max() <= 3 * eps + 1e-6 and (delta > 1.5 * eps).mean() > 0.1
    assert AdversarialTraining.from_config(cb.get_config()).get_config() == cb.get_config()
    with pytest.raises(ValueError, match=r"noise must be a number > 0.*noise=0"):
        AdversarialTraining("nfgsm", noise=0)
    with pytest.raises(ValueError, match=r"noise is the N-FGSM start radius; got noise=2 with attack='pgd'"):
        AdversarialTraining("pgd", noise=2)
    with pytest.raises(ValueError, match=r"attack='nfgsm' takes one step; got steps=3"):
        AdversarialTraining("nfgsm", steps=3)


def _bn_mlp(seed=0):
    """An MLP whose BatchNorm moving statistics are far from its data's: training and inference mode differ."""
    keras.utils.set_random_seed(seed)
    inp = keras.Input((6,))
    h = keras.layers.Dense(16, name="fc")(inp)
    h = keras.layers.BatchNormalization(name="bn")(h)
    h = keras.layers.Activation("relu")(h)
    model = keras.Model(inp, keras.layers.Dense(3, activation="softmax", name="logits")(h))
    model.compile(keras.optimizers.SGD(0.1), "sparse_categorical_crossentropy")
    bn = model.get_layer("bn")
    bn.moving_mean.assign(np.linspace(-1.0, 1.0, 16, dtype="float32"))
    bn.moving_variance.assign(np.full(16, 4.0, "float32"))
    return model


def test_craft_mode_training_attacks_the_batch_statistics_network_and_keeps_the_moving_statistics():
    model = _bn_mlp()
    x, y = _data(64)
    eps = 0.1
    bn = model.get_layer("bn")
    moving = [v.numpy().copy() for v in (bn.moving_mean, bn.moving_variance)]
    crafted = {mode: _transform(model, AdversarialTraining("pgd", eps=eps, steps=5, ratio=1.0, seed=0,
                                                           craft_mode=mode), x, y)
               for mode in ("inference", "training")}
    # the attack's training-mode forward passes leave the statistics that inference uses untouched
    np.testing.assert_array_equal(bn.moving_mean.numpy(), moving[0])
    np.testing.assert_array_equal(bn.moving_variance.numpy(), moving[1])
    assert bn.momentum == 0.99
    for x_adv in crafted.values():
        assert np.abs(x_adv - x).max() <= eps + 1e-6
    ce = keras.losses.SparseCategoricalCrossentropy()

    def loss(xb, training):
        with qrk.training.batchnorm_statistics_frozen(model):
            return float(ce(y, model(xb, training=training)))

    # each mode's examples hurt the network they were crafted against more than the other mode's examples do
    assert loss(crafted["training"], True) > loss(crafted["inference"], True) > loss(x, True)
    assert loss(crafted["inference"], False) > loss(crafted["training"], False)
    # also in a traced function (as inside fit); outside the block a training-mode call does update the statistics
    @tf.function
    def traced(xb):
        with qrk.training.batchnorm_statistics_frozen(model):
            return model(xb, training=True)

    traced(tf.constant(x))
    np.testing.assert_array_equal(bn.moving_mean.numpy(), moving[0])
    model(x, training=True)
    assert not np.allclose(bn.moving_mean.numpy(), moving[0])
    assert AdversarialTraining(craft_mode="training").get_config()["craft_mode"] == "training"


def test_adversarial_training_improves_pgd_accuracy(robust_feature_task):
    """A robust feature plus 20 weak ones: plain training leans on the weak ones and breaks under eps=0.08."""
    clean0, robust0 = robust_feature_task([])
    assert clean0 > 0.97 and robust0 < 0.9
    for attack in ("pgd", "fgsm", "nfgsm"):
        clean, robust = robust_feature_task([AdversarialTraining(attack, eps=0.08, seed=0)])
        assert robust >= robust0 + 0.1, (attack, robust0, robust)
        assert clean >= clean0 - 0.02, (attack, clean0, clean)


def test_combination_with_jacobian_regularization_is_order_independent():
    x, y = _data(64)

    def run(callbacks):
        m = mlp()
        h = m.fit(x, y, epochs=2, batch_size=16, shuffle=False, verbose=0, callbacks=callbacks)
        assert "train_step" not in vars(m)
        return m.get_weights(), h.history

    def jr():
        return qrk.JacobianRegularization(0.2, "all", seed=3)

    def at():
        return AdversarialTraining("pgd", eps=0.1, steps=2, seed=4)

    w_ab, h_ab = run([jr(), at()])
    w_ba, h_ba = run([at(), jr()])
    for a, b in zip(w_ab, w_ba):
        np.testing.assert_array_equal(a, b)
    assert h_ab == h_ba and h_ab["jr"][0] > 0
    # Both are active in the combination: it differs from either one alone.
    for alone in ([jr()], [at()]):
        w, _ = run(alone)
        assert max(np.abs(a - b).max() for a, b in zip(w, w_ab)) > 1e-4


def test_bad_arguments_give_clear_errors():
    with pytest.raises(ValueError, match=r"attack must be one of.*'cw'"):
        AdversarialTraining("cw")
    with pytest.raises(ValueError, match=r"eps must be in \(0, .*eps=8.*8/255"):
        AdversarialTraining(eps=8)
    with pytest.raises(ValueError, match="eps must be in"):
        AdversarialTraining(eps=0)
    with pytest.raises(ValueError, match=r"attack='fgsm' takes one step; got steps=5"):
        AdversarialTraining("fgsm", steps=5)
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        AdversarialTraining("pgd", steps=0)
    with pytest.raises(ValueError, match=r"ratio must be in \[0, 1\].*ratio=1.5"):
        AdversarialTraining(ratio=1.5)
    with pytest.raises(ValueError, match="clip_min must be < clip_max"):
        AdversarialTraining(clip_min=1.0, clip_max=0.0)
    with pytest.raises(ValueError, match="step_size must be a number > 0"):
        AdversarialTraining(step_size=-0.1)
    with pytest.raises(ValueError, match=r"craft_mode must be one of \('inference', 'training'\); got "
                                         r"craft_mode='eval'"):
        AdversarialTraining(craft_mode="eval")
    cb = AdversarialTraining("pgd", eps=0.1, steps=4)
    assert cb.step_size == pytest.approx(2.5 * 0.1 / 4)
    assert AdversarialTraining.from_config(cb.get_config()).get_config() == cb.get_config()


@pytest.mark.parametrize("ratio, n, expected", [
    (0.5, 8, [1, 3, 5, 7]), (1.0, 4, [0, 1, 2, 3]), (0.2, 15, [4, 9, 14]), (0.3, 10, [3, 6, 9]), (0.0, 5, [])])
def test_attacked_rows_spread_a_fraction_ratio_evenly(ratio, n, expected):
    from qrobust_keras.training.adversarial import attacked_rows

    assert attacked_rows(n, ratio).numpy().tolist() == expected
