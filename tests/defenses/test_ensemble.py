"""Tests of qrobust_keras.defenses.ensemble: combine rules against numpy, gradients through every member, the
vote surrogate, adaptive vs transfer evaluation, config round trip, errors."""


import numpy as np
import pytest

from qrobust_keras._keras import keras, tf
from qrobust_keras.attacks.pgd import pgd
from qrobust_keras.defenses import MixedPrecisionEnsemble, evaluate_ensemble
from qrobust_keras.models.heads import logits_model

import _diag_fixtures as fx  # noqa: E402  (put on sys.path by conftest.py)


@pytest.fixture(scope="module")
def members(shared_data):
    return {"float": fx.trained("float", shared_data), "int4": fx.trained("quant", shared_data),
            "ternary": fx.trained("stochastic", shared_data, epochs=3)}


@pytest.fixture(scope="module")
def data(shared_data):
    _, _, x_test, y_test = fx.cifar(shared_data)
    return x_test[:48], y_test[:48]


def _softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def test_mean_softmax_matches_numpy(members, data):
    x, _ = data
    ens = MixedPrecisionEnsemble(members)
    probs = [m.predict(x, verbose=0).astype(np.float64) for m in members.values()]
    np.testing.assert_allclose(ens.predict_fn(x), np.mean(probs, axis=0), atol=2e-6)
    assert ens.layers[-1].name == "softmax" and ens.get_layer("logits").combine == "mean_softmax"
    assert ens.member_names == ["float", "int4", "ternary"]
    assert logits_model(ens).output.node.layer.name == "logits"


def test_vote_forward_is_majority_and_gradient_is_soft_vote(members, data):
    x, _ = data
    ens = MixedPrecisionEnsemble(members, combine="vote", temperature=2.0)
    votes = np.stack([m.predict(x, verbose=0).argmax(1) for m in members.values()])
    fractions = np.stack([np.mean(votes == k, axis=0) for k in range(10)], axis=1)
    out = ens.predict_fn(x)
    np.testing.assert_allclose(out, fractions, atol=2e-3)           # q = (v + 1e-3 s) / (1 + 1e-3)
    top = fractions.max(1)
    clear = (fractions == top[:, None]).sum(1) == 1
    np.testing.assert_array_equal(out.argmax(1)[clear], fractions.argmax(1)[clear])
    # Gradient: that of log of the mean softmax at temperature 2 (the documented surrogate), not zero.
    xt = tf.constant(x[:4])
    lms = [logits_model(m) for m in members.values()]
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(xt)
        z_ens = logits_model(ens)(xt)[:, 3]
        soft = tf.add_n([tf.nn.softmax(lm(xt) / 2.0) for lm in lms]) / 3.0
        z_ref = tf.math.log(soft)[:, 3]
    g_ens, g_ref = tape.gradient(z_ens, xt).numpy(), tape.gradient(z_ref, xt).numpy()
    assert np.abs(g_ens).max() > 0
    np.testing.assert_allclose(g_ens, g_ref, rtol=1e-3, atol=1e-6 * np.abs(g_ref).max())


@pytest.mark.parametrize("combine", ["mean_softmax", "vote"])
def test_gradients_reach_every_member(members, data, combine):
    x, y = data
    ens = MixedPrecisionEnsemble(members, combine=combine)
    lm = logits_model(ens)
    xt = tf.constant(x[:8])
    with tf.GradientTape() as tape:
        tape.watch(xt)
        loss = tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(y[:8], lm(xt)))
    weights = [m.trainable_weights for m in ens.members]
    grads = tape.gradient(loss, [xt] + [w for ws in weights for w in ws])
    assert np.abs(grads[0].numpy()).sum() > 0
    i = 1
    for name, ws in zip(ens.member_names, weights):
        member_grads = grads[i:i + len(ws)]
        i += len(ws)
        assert all(g is not None for g in member_grads), name
        assert sum(float(tf.reduce_sum(tf.abs(g))) for g in member_grads) > 0, name
    # The members inside are the models passed in (shared weights), not copies.
    assert ens.members[0].get_layer("conv1") is members["float"].get_layer("conv1")


def test_adaptive_attack_beats_transfer(members, data):
    x, y = data
    ens = MixedPrecisionEnsemble(members)
    r = evaluate_ensemble(ens, x, y, eps=2 / 255, steps=10, eot=2)
    acc = {row["attack"]: row["robust_accuracy"] for row in r.rows}
    assert set(acc) == {"clean", "adaptive_pgd", "transfer_from_float", "transfer_from_int4",
                        "transfer_from_ternary"}
    assert acc["clean"] > 0.3
    assert acc["adaptive_pgd"] < 0.25                                 # attacking the whole ensemble breaks it
    transfer = [acc[k] for k in acc if k.startswith("transfer")]
    # Transfer from single members overstates robustness: the adaptive attack is at least as strong as each.
    assert acc["adaptive_pgd"] <= min(transfer) and acc["adaptive_pgd"] < max(transfer)
    assert r.worst_case <= acc["adaptive_pgd"]
    # The row equals a direct PGD run on the ensemble with the same settings.
    x_adv = pgd(ens, x, y, eps=2 / 255, steps=10, eot=2, seed=0, verbose=0)
    assert acc["adaptive_pgd"] == float(np.mean(ens.predict_fn(x_adv).argmax(1) == y))
    assert "adaptive_pgd" in r.to_markdown()


def test_config_round_trip_float_members():
    def net(seed):
        keras.utils.set_random_seed(seed)
        inp = keras.Input((6,))
        out = keras.layers.Activation("softmax", name="softmax")(keras.layers.Dense(3, name="logits")(inp))
        return keras.Model(inp, out, name=f"net{seed}")

    ens = MixedPrecisionEnsemble({"a": net(1), "b": net(2)}, combine="vote", temperature=3.0)
    clone = MixedPrecisionEnsemble.from_config(ens.get_config())
    clone.set_weights(ens.get_weights())
    x = np.random.default_rng(0).uniform(size=(5, 6)).astype(np.float32)
    np.testing.assert_array_equal(clone.predict_fn(x), ens.predict_fn(x))
    assert clone.combine == "vote" and clone.member_names == ["a", "b"]


@pytest.mark.parametrize("suffix", [".h5", ".keras"])
def test_a_saved_ensemble_of_quantized_members_loads_with_the_same_outputs(suffix, tmp_path):
    # legacy .h5 files store the bare class name and members as "Functional": loading used to fail
    import qrobust_keras as qrk

    keras.utils.set_random_seed(0)
    ens = MixedPrecisionEnsemble({"int4": qrk.models.resnet8(policy="int4"), "int8": qrk.models.resnet8(policy="int8")})
    x = np.random.default_rng(0).uniform(size=(3, 32, 32, 3)).astype(np.float32)
    path = str(tmp_path / f"ens{suffix}")
    ens.save(path)
    loaded = qrk.models.load_model(path)
    assert isinstance(loaded, MixedPrecisionEnsemble) and loaded.member_names == ["int4", "int8"]
    np.testing.assert_allclose(loaded.predict(x, verbose=0), ens.predict(x, verbose=0), atol=1e-6)


def test_errors(members):
    m = members["float"]
    with pytest.raises(ValueError, match="at least two members; got 1"):
        MixedPrecisionEnsemble([m])
    with pytest.raises(ValueError, match=r"combine must be one of \('mean_softmax', 'vote'\); got combine='max'"):
        MixedPrecisionEnsemble([m, m], combine="max")
    with pytest.raises(ValueError, match="temperature must be a finite number > 0; got temperature=0"):
        MixedPrecisionEnsemble([m, m], combine="vote", temperature=0)
    with pytest.raises(TypeError, match="member 'x' is str"):
        MixedPrecisionEnsemble({"a": m, "x": "int4.tflite"})
    small = keras.Sequential([keras.layers.Flatten(input_shape=(16, 16, 3)), keras.layers.Dense(10)])
    with pytest.raises(ValueError, match="same shape"):
        MixedPrecisionEnsemble([m, small])
    with pytest.raises(ValueError, match="models must be a list or dict"):
        MixedPrecisionEnsemble(m)
