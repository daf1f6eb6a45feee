"""gradients: stochastic-quantizer mode (BatchNorm stays in inference), logits, losses."""

import numpy as np
import pytest

from qrobust_keras._keras import keras, layers, qkeras, tf
from qrobust_keras.attacks import gradients as G
from qrobust_keras.attacks import compiled_forward as CF
from qrobust_keras.attacks.compiled_forward import BucketedXLA


def _model(stochastic):
    quantizer = "stochastic_ternary" if stochastic else "ternary"
    inp = keras.Input((8,))
    h = qkeras.QDense(16, kernel_quantizer=quantizer, name="q1")(inp)
    h = layers.BatchNormalization(name="bn")(h)
    h = layers.Dense(3)(h)
    model = keras.Model(inp, layers.Activation("softmax")(h))
    model.get_layer("bn").moving_mean.assign(tf.fill([16], 0.3))
    model.get_layer("bn").moving_variance.assign(tf.fill([16], 4.0))
    return model


def test_stochastic_scope_samples_quantizers_but_keeps_batchnorm_in_inference():
    x = tf.constant(np.random.default_rng(0).uniform(size=(16, 8)).astype("float32"))
    det = _model(False)
    with G.stochastic_scope(True):
        same = det(x, training=False)
    # No stochastic quantizer: the scope changes nothing, so BatchNorm used its moving statistics.
    np.testing.assert_array_equal(same.numpy(), det(x, training=False).numpy())
    assert not np.allclose(det(x, training=True).numpy(), same.numpy(), atol=1e-3)  # batch statistics differ

    sto = _model(True)
    assert G.has_stochastic_quantizers(sto) and not G.has_stochastic_quantizers(det)
    with G.stochastic_scope(True):
        a, b = sto(x, training=False).numpy(), sto(x, training=False).numpy()
    assert not np.array_equal(a, b)  # the quantizer samples
    # training=True samples too: qrobust_keras._keras makes QKeras' stochastic quantizers follow the training flag.
    assert not np.array_equal(sto(x, training=True).numpy(), sto(x, training=True).numpy())


def test_gradients_are_taken_on_logits():
    model = _model(False)
    fn = G.loss_and_grad_fn(model, loss="ce")
    x = np.random.default_rng(1).uniform(size=(4, 8)).astype("float32")
    loss, _, logits = fn(x, np.array([0, 1, 2, 0]))
    z = G.get_logits_model(model)(x).numpy()
    np.testing.assert_allclose(logits.numpy(), z, rtol=1e-6)
    assert not np.allclose(z.sum(1), 1.0)  # pre-softmax
    ce = -np.log(np.exp(z) / np.exp(z).sum(1, keepdims=True))[np.arange(4), [0, 1, 2, 0]]
    np.testing.assert_allclose(loss.numpy(), ce, rtol=1e-5)


def test_dlr_and_cw_losses():
    z = tf.constant([[3.0, 1.0, 0.0, -1.0], [0.0, 2.0, 1.0, 0.5]])
    y = tf.constant([0, 0])
    dlr = G.per_sample_loss(z, y, "dlr", False, 4).numpy()
    np.testing.assert_allclose(dlr, [-(3 - 1) / (3 - 0), -(0 - 2) / (2 - 0.5)], rtol=1e-6)
    cw = G.per_sample_loss(z, y, "cw", False, 4, confidence=1.0).numpy()
    np.testing.assert_allclose(cw, [-2.0, 1.0])
    t = G.targeted_dlr_loss(z, y, tf.constant([1, 1]), 4).numpy()
    np.testing.assert_allclose(t, [-(3 - 1) / (3 - 0.5 * (0 - 1)), -(0 - 2) / (2 - 0.5 * (0.5 + 0))], rtol=1e-6)


def _conv_model(kernel_quantizer):
    inp = keras.Input((8, 8, 3))
    h = qkeras.QConv2D(8, 3, padding="same", kernel_quantizer=kernel_quantizer, name="qc")(inp)
    h = qkeras.QActivation("quantized_relu(4)")(h)
    h = layers.Flatten()(h)
    return keras.Model(inp, layers.Dense(4)(h))


def test_xla_forward_is_used_for_deterministic_qkeras_models_only(monkeypatch):
    monkeypatch.delenv("QROBUST_XLA_FORWARD", raising=False)
    float_model = keras.Sequential([layers.Dense(3, input_shape=(4,))])
    assert G.xla_forward_enabled(_conv_model("quantized_bits(4, 0, alpha=1)"))
    assert not G.xla_forward_enabled(float_model)
    assert not G.xla_forward_enabled(_conv_model("stochastic_ternary"))
    monkeypatch.setenv("QROBUST_XLA_FORWARD", "1")
    assert G.xla_forward_enabled(float_model)
    monkeypatch.setenv("QROBUST_XLA_FORWARD", "0")
    assert not G.xla_forward_enabled(_conv_model("quantized_bits(4, 0, alpha=1)"))
    monkeypatch.setenv("QROBUST_XLA_FORWARD", "yes")
    with pytest.raises(ValueError, match="QROBUST_XLA_FORWARD must be 0, 1 or auto; got 'yes'"):
        G.xla_forward_enabled(float_model)


def test_xla_forward_pads_to_buckets_and_matches_the_plain_graph(monkeypatch):
    monkeypatch.delenv("QROBUST_XLA_FORWARD", raising=False)
    monkeypatch.setattr(CF, "XLA_COMPILE_GUESS_S", 0.0)  # compile every batch size at once
    assert [BucketedXLA.bucket(n) for n in (1, 8, 9, 17, 32, 33, 64, 65, 256, 257, 600)] == \
        [8, 8, 16, 32, 32, 64, 64, 96, 256, 512, 768]
    model = _conv_model("quantized_bits(4, 0, alpha=1)")
    fwd = G.forward_fn(model)
    assert isinstance(fwd, BucketedXLA)
    x = np.random.default_rng(0).uniform(size=(300, 8, 8, 3)).astype("float32")
    for n in (1, 5, 33, 300):  # each padded to its bucket; the padding rows must not reach the output
        ours = fwd(x[:n]).numpy()
        plain = model(x[:n], training=False).numpy()
        assert ours.shape == plain.shape
        np.testing.assert_allclose(ours, plain, atol=1e-4)
        np.testing.assert_array_equal(ours.argmax(1), plain.argmax(1))
    assert fwd.uses_xla


def test_xla_forward_falls_back_when_xla_cannot_compile():
    calls = []

    def failing(t):
        raise tf.errors.UnimplementedError(None, None, "no XLA kernel")

    def plain(t):
        calls.append(int(t.shape[0]))
        return t * 2.0

    fwd = BucketedXLA(failing, plain, compile_after_s=0)
    np.testing.assert_array_equal(fwd(np.ones((3, 2), np.float32)).numpy(), np.full((3, 2), 2.0))
    np.testing.assert_array_equal(fwd(np.ones((5, 2), np.float32)).numpy(), np.full((5, 2), 2.0))
    assert calls == [3, 5] and not fwd.uses_xla  # unpadded, and XLA is not tried again


def test_xla_forward_is_dropped_when_it_computes_another_network():
    # An XLA graph whose scores differ from the plain graph's (as a ternary threshold rounded the other way would):
    # the first call checks and returns the plain scores, and XLA is never used again.
    xla_calls = []

    def drifting(t):
        xla_calls.append(int(t.shape[0]))
        return tf.concat([t[:, :1] + 0.5, t[:, 1:]], axis=1)

    fwd = BucketedXLA(drifting, lambda t: t * 1.0, compile_after_s=0)
    x = np.array([[0.0, 0.2], [1.0, 0.0], [0.3, 0.1]], np.float32)
    np.testing.assert_array_equal(fwd(x).numpy(), x)
    np.testing.assert_array_equal(fwd(x).numpy(), x)
    assert xla_calls == [8] and not fwd.uses_xla
    same = BucketedXLA(lambda t: t + 1e-6, lambda t: t * 1.0, compile_after_s=0)
    np.testing.assert_allclose(same(x).numpy(), x + 1e-6)
    assert same.uses_xla


def test_xla_is_compiled_for_a_batch_size_only_once_the_plain_graph_has_cost_a_compile(monkeypatch):
    # A fake clock: a plain call takes 0.4 s, an XLA call 0.5 s (its compile). Ski rental: each batch size runs
    # plain until it has spent the expected compile time there (first the guess, 1 s; then the measured 0.5 s).
    clock = [0.0]
    calls = []

    def plain(t):
        clock[0] += 0.4
        calls.append(("plain", int(t.shape[0])))
        return t * 2.0

    def xla(t):
        clock[0] += 0.5
        calls.append(("xla", int(t.shape[0])))
        return t * 2.0

    monkeypatch.setattr(CF, "time", type("FakeTime", (), {"perf_counter": staticmethod(lambda: clock[0])}))
    fwd = BucketedXLA(xla, plain, compile_after_s=1.0)
    x = np.ones((20, 2), np.float32)
    for _ in range(5):
        np.testing.assert_array_equal(fwd(x[:5]).numpy(), np.full((5, 2), 2.0))
    # The first plain call traces (not counted), 3 more reach 1.2 s >= 1 s, then XLA runs the padded batch (and the
    # plain graph once more, to check that both compute the same scores).
    assert calls == [("plain", 5)] * 4 + [("xla", 8), ("plain", 5)]
    calls.clear()
    for _ in range(3):
        fwd(x[:20])
    assert calls == [("plain", 20)] * 2 + [("xla", 32)]  # the measured compile, 0.5 s, is the new threshold
    calls.clear()
    fwd(x[:5])
    assert calls == [("xla", 8)] and fwd.uses_xla


@pytest.mark.parametrize("eot", [1, 3])
def test_a_model_without_a_gradient_path_gets_zero_gradients_and_attacks_still_run(eot):
    # stop_gradient cuts every path from the input to the logits: shattered gradients. The loss gradient is
    # zero (not None), with and without EOT, so PGD runs, stays inside the ball and leaves the masking
    # diagnostics and the black-box attacks to expose the model, instead of crashing inside sign().
    from qrobust_keras.attacks import pgd

    inp = keras.Input((4,))
    out = layers.Dense(3)(layers.Lambda(tf.stop_gradient)(inp))
    model = keras.Model(inp, out)
    x = np.random.default_rng(1).uniform(size=(6, 4)).astype("float32")
    y = np.array([0, 1, 2, 0, 1, 2])
    np.testing.assert_array_equal(G.input_gradients(model, x, y, eot=eot), np.zeros_like(x))
    _, grad, _ = G.loss_and_grad_fn(model, "ce", False, eot)(x, y)
    np.testing.assert_array_equal(grad.numpy(), np.zeros_like(x))
    x_adv = pgd(model, x, y, eps=0.1, steps=3, eot=eot, verbose=0)
    assert np.abs(x_adv - x).max() <= 0.1 + 1e-6


def test_every_attack_differentiates_the_one_traced_forward_pass():
    # Tracing a QKeras model's layers costs seconds; the attacks call the model's traced forward pass
    # (traced_logits) inside their own compiled loops, so the layers' Python code runs once per model, not once
    # per attack. A layer that counts its Python calls shows it.
    from qrobust_keras import attacks

    class Counting(layers.Layer):
        calls = 0

        def call(self, t):
            Counting.calls += 1
            return t

    inp = keras.Input((6,))
    model = keras.Model(inp, layers.Dense(4)(Counting()(inp)))
    Counting.calls = 0
    x = np.random.default_rng(2).uniform(size=(10, 6)).astype("float32")
    y = np.arange(10) % 4
    attacks.pgd(model, x, y, eps=0.1, steps=2, verbose=0)
    attacks.apgd(model, x[:7], y[:7], eps=0.1, steps=3, verbose=0)
    target = (y + 1) % 4
    attacks.apgd(model, x, target, eps=0.1, steps=3, loss="dlr", targeted=True, y_true=y, verbose=0)
    attacks.cw_l2(model, x, y, steps=2, binary_search_steps=1, verbose=0)
    attacks.fab(model, x, target, eps=0.1, steps=2, targeted=True, y_true=y, verbose=0)
    G.input_gradients(model, x, y)
    assert Counting.calls == 1
