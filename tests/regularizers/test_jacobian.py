"""Tests of qrobust_keras/regularizers/jacobian.py: estimators, penalty gradients, the callback, QKeras, errors."""

import numpy as np
import pytest

import qrobust_keras as qrk
from qrobust_keras._keras import keras, qkeras, tf
from qrobust_keras.models.io import load_model
from qrobust_keras.regularizers import JacobianRegularization, jacobian_norm, jacobian_penalty, resolve_layers


def small_conv_model(seed=0):
    """Conv + BatchNorm + Dense(tanh) + Dense(softmax): 'all' = conv, fc, logits (logits via the linear view)."""
    keras.utils.set_random_seed(seed)
    inp = keras.Input((5, 5, 2))
    h = keras.layers.Conv2D(3, 3, activation="tanh", name="conv")(inp)
    h = keras.layers.BatchNormalization(name="bn")(h)
    h = keras.layers.Flatten()(h)
    h = keras.layers.Dense(5, activation="tanh", name="fc")(h)
    out = keras.layers.Dense(3, activation="softmax", name="logits")(h)
    return keras.Model(inp, out)


def mlp(seed=0, n_in=6):
    keras.utils.set_random_seed(seed)
    inp = keras.Input((n_in,))
    h = keras.layers.Dense(8, activation="tanh", name="fc")(inp)
    logits = keras.layers.Dense(3, name="logits")(h)
    out = keras.layers.Activation("softmax", name="softmax")(logits)
    model = keras.Model(inp, out)
    model.compile(keras.optimizers.SGD(0.1), "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def qkeras_model(seed=0):
    keras.utils.set_random_seed(seed)
    inp = keras.Input((6, 6, 1))
    h = qkeras.QConv2D(4, 3, kernel_quantizer=qkeras.quantized_bits(4, 0, 1),
                       bias_quantizer=qkeras.quantized_bits(4, 0, 1), name="qconv")(inp)
    h = qkeras.QActivation("quantized_relu(4,2)", name="qact")(h)
    h = keras.layers.Flatten()(h)
    h = qkeras.QDense(3, kernel_quantizer=qkeras.quantized_bits(4, 0, 1),
                      bias_quantizer=qkeras.quantized_bits(4, 0, 1), name="logits")(h)
    out = keras.layers.Activation("softmax", name="softmax")(h)
    return keras.Model(inp, out)


def reference_sq_norms(model, names, x):
    """||d h_l(x_i)/d x_i||_F^2 per sample and layer from tf's full per-sample Jacobian (independent oracle).

    "logits" is the pre-softmax output (the model's last Dense has activation="softmax").
    """
    tensors = [qrk.models.logits_model(model).outputs[0] if n == "logits" else model.get_layer(n).output
               for n in names]
    probe = keras.Model(model.inputs, tensors)
    out = np.zeros((len(x), len(names)))
    for i in range(len(x)):
        xi = tf.constant(x[i:i + 1])
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(xi)
            hs = probe(xi, training=False)
        for j, h in enumerate(hs):
            out[i, j] = float(tf.reduce_sum(tf.square(tape.jacobian(h, xi))))
    return out


# ---------------------------------------------------------------------------------------------------------------------
# Layer resolution and exact norms
# ---------------------------------------------------------------------------------------------------------------------
def test_resolve_layers_output_all_dict():
    model = small_conv_model()
    out = resolve_layers(model, "output")
    assert [n for n, _, _ in out] == ["logits"] and out[0][2] == pytest.approx(0.01)
    # The logits are the pre-softmax view of Dense(activation="softmax"), not its softmax output.
    assert out[0][1] is not model.get_layer("logits").output
    assert [n for n, _, _ in resolve_layers(model, "all", 0.5)] == ["conv", "fc", "logits"]
    assert [(n, lam) for n, _, lam in resolve_layers(model, {"fc": 0.25, "conv": 2.0})] == [("fc", 0.25), ("conv", 2.0)]
    q = qkeras_model()
    assert [n for n, _, _ in resolve_layers(q, "all")] == ["qconv", "qact", "logits"]


def test_exact_norm_matches_per_sample_tf_jacobian():
    model = small_conv_model()
    x = np.random.default_rng(1).uniform(0, 1, (6, 5, 5, 2)).astype("float32")
    model(x, training=True)  # move BN statistics away from the identity
    ref = reference_sq_norms(model, ["conv", "fc", "logits"], x)
    got = jacobian_norm(model, x, layers="all", exact=True, batch_size=4)
    np.testing.assert_allclose([got["conv"], got["fc"], got["logits"]], np.sqrt(ref).mean(0), rtol=1e-4)
    # The penalty with n_proj=-1: sum_l lambda_l * 1/2 * mean_i ||J_l||^2.
    r = float(jacobian_penalty(model, x, {"conv": 0.5, "logits": 2.0}, n_proj=-1))
    assert r == pytest.approx(0.5 * (0.5 * ref[:, 0].mean() + 2.0 * ref[:, 2].mean()), rel=1e-4)


# ---------------------------------------------------------------------------------------------------------------------
# The random-projection estimator is unbiased
# ---------------------------------------------------------------------------------------------------------------------
CONVERGENCE_DRAWS = 300
DICT_LAYERS = {"conv": 0.2, "fc": 0.5, "logits": 0.1}  # lambda^2 != lambda: a sqrt(lambda) slip shows


@pytest.mark.parametrize("layers,estimator,projection", [
    ("output", "fused", "rademacher"), ("all", "fused", "rademacher"), (DICT_LAYERS, "fused", "rademacher"),
    ("output", "per_layer", "rademacher"), ("all", "per_layer", "rademacher"), (DICT_LAYERS, "per_layer", "rademacher"),
    ("all", "fused", "sphere"), (DICT_LAYERS, "per_layer", "sphere"),
], ids=lambda v: "dict" if isinstance(v, dict) else v)
def test_projection_estimate_converges_to_exact(layers, estimator, projection):
    """Mean of 300 one-projection estimates is within 4 standard errors and 6% of the exact penalty.

    A single draw is far off (relative std 10-60%); the mean of independent unbiased draws must approach the exact
    value at rate 1/sqrt(draws). A biased estimator (e.g. a missing factor C or sqrt(lambda)) fails by >> 6%.
    """
    model = small_conv_model()
    x = np.random.default_rng(2).uniform(0, 1, (8, 5, 5, 2)).astype("float32")
    weight = None if isinstance(layers, dict) else 1.0
    exact = float(jacobian_penalty(model, x, layers, weight=weight, n_proj=-1))
    draw = tf.function(lambda s: jacobian_penalty(model, x, layers, weight=weight, n_proj=1, estimator=estimator,
                                                  seed=s, projection=projection))
    draws = np.array([float(draw(tf.constant(s, tf.int64))) for s in range(CONVERGENCE_DRAWS)])
    mean, se = draws.mean(), draws.std(ddof=1) / np.sqrt(len(draws))
    assert draws.std() > 0.05 * exact  # really random, so the check below is about convergence
    assert abs(mean - exact) < 4 * se
    assert abs(mean - exact) < 0.06 * exact


def test_more_projections_reduce_the_spread():
    model = small_conv_model()
    x = np.random.default_rng(3).uniform(0, 1, (4, 5, 5, 2)).astype("float32")
    spreads = {}
    for n_proj in (1, 8):
        f = tf.function(lambda s, n=n_proj: jacobian_penalty(model, x, "all", weight=1.0, n_proj=n, seed=s))
        spreads[n_proj] = np.std([float(f(tf.constant(s, tf.int64))) for s in range(60)])
    assert spreads[8] < 0.6 * spreads[1]  # ideal: 1/sqrt(8) = 0.35


# ---------------------------------------------------------------------------------------------------------------------
# Gradients of the penalty reach every regularized layer (double backprop)
# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("estimator,n_proj", [("fused", 1), ("per_layer", 1), ("fused", -1)])
def test_gradients_reach_every_regularized_layer(estimator, n_proj):
    model = small_conv_model()
    x = np.random.default_rng(4).uniform(0, 1, (4, 5, 5, 2)).astype("float32")
    with tf.GradientTape() as tape:
        r = jacobian_penalty(model, x, "all", weight=1.0, n_proj=n_proj, estimator=estimator, seed=3)
    grads = tape.gradient(r, model.trainable_variables)
    by_name = {v.name: g for v, g in zip(model.trainable_variables, grads)}
    for layer in ("conv", "fc", "logits"):
        g = by_name[f"{layer}/kernel:0"]
        assert g is not None and float(tf.norm(g)) > 1e-6, layer


def test_penalty_gradient_matches_finite_differences():
    model = small_conv_model()
    x = np.random.default_rng(5).uniform(0, 1, (3, 5, 5, 2)).astype("float32")
    kernel = model.get_layer("conv").kernel
    with tf.GradientTape() as tape:
        r = jacobian_penalty(model, x, "all", weight=1.0, n_proj=-1)
    g = tape.gradient(r, kernel).numpy()
    idx = np.unravel_index(np.argmax(np.abs(g)), g.shape)
    base, h = kernel.numpy(), 1e-2
    vals = []
    for sign in (1, -1):
        w = base.copy()
        w[idx] += sign * h
        kernel.assign(w)
        vals.append(float(jacobian_penalty(model, x, "all", weight=1.0, n_proj=-1)))
    kernel.assign(base)
    assert g[idx] == pytest.approx((vals[0] - vals[1]) / (2 * h), rel=0.03)


# ---------------------------------------------------------------------------------------------------------------------
# The callback inside fit
# ---------------------------------------------------------------------------------------------------------------------
def _batch(n=16, n_in=6, seed=6):
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 1, (n, n_in)).astype("float32"), rng.integers(0, 3, n), rng.uniform(0.5, 2, n)


def test_fit_step_equals_manual_sgd_step_with_sample_weight():
    """One fit step == w - lr * d/dw [compiled loss (weighted) + lambda * R_exact] computed by hand."""
    x, y, sw = _batch()
    ref = mlp()
    model = mlp()
    with tf.GradientTape() as tape:
        loss = ref.compute_loss(x, tf.constant(y), ref(x, training=True), tf.constant(sw, tf.float32))
        loss = loss + jacobian_penalty(ref, x, "all", weight=0.3, n_proj=-1, training=True)
    grads = tape.gradient(loss, ref.trainable_variables)
    expected = [w.numpy() - 0.1 * g.numpy() for w, g in zip(ref.trainable_variables, grads)]
    hist = model.fit(x, y, sample_weight=sw, batch_size=16, epochs=1, shuffle=False, verbose=0,
                     callbacks=[JacobianRegularization(0.3, "all", n_proj=-1)])
    for got, want in zip(model.trainable_variables, expected):
        np.testing.assert_allclose(got.numpy(), want, atol=2e-6)
    assert set(hist.history) == {"loss", "accuracy", "jr", "jr/fc", "jr/logits"}
    assert hist.history["jr"][0] == pytest.approx(
        float(jacobian_penalty(ref, x, "all", weight=0.3, n_proj=-1, training=True)), rel=1e-3)


def test_lazy_every_second_step_equals_manual_steps():
    """every=2: step 0 adds 2 * lambda * R, step 1 is a plain step (Karras et al. 2020 lazy regularization)."""
    x, y, _ = _batch(32)
    ref, model = mlp(), mlp()
    for i, factor in enumerate((2 * 0.3, 0.0)):
        xb, yb = x[16 * i:16 * (i + 1)], y[16 * i:16 * (i + 1)]
        with tf.GradientTape() as tape:
            loss = ref.compute_loss(xb, tf.constant(yb), ref(xb, training=True))
            loss = loss + factor * jacobian_penalty(ref, xb, "all", weight=1.0, n_proj=-1, training=True)
        grads = tape.gradient(loss, ref.trainable_variables)
        ref.optimizer.apply_gradients(zip(grads, ref.trainable_variables))
        if i == 0:
            r0 = float(jacobian_penalty(model, xb, "all", weight=0.3, n_proj=-1, training=True))
    h = model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0,
                  callbacks=[JacobianRegularization(0.3, "all", n_proj=-1, every=2)])
    for got, want in zip(model.get_weights(), ref.get_weights()):
        np.testing.assert_allclose(got, want, atol=2e-6)
    assert h.history["jr"][0] == pytest.approx(2 * r0 / 2, rel=1e-3)  # mean over both steps of the added penalty


def test_class_weight_tf_data_and_validation():
    x, y, _ = _batch(64)
    cw = {0: 2.0, 1: 0.5, 2: 1.0}
    sw = np.array([cw[int(c)] for c in y])
    runs = {}
    for kind in ("class_weight", "sample_weight", "tf.data"):
        model = mlp()
        cb = JacobianRegularization(0.2, "all", n_proj=-1)
        if kind == "class_weight":
            h = model.fit(x, y, class_weight=cw, batch_size=16, epochs=2, shuffle=False, verbose=0, callbacks=[cb],
                          validation_data=(x, y))
        elif kind == "sample_weight":
            h = model.fit(x, y, sample_weight=sw, batch_size=16, epochs=2, shuffle=False, verbose=0, callbacks=[cb],
                          validation_data=(x, y))
        else:
            ds = tf.data.Dataset.from_tensor_slices((x, y, sw)).batch(16)
            h = model.fit(ds, epochs=2, verbose=0, callbacks=[cb], validation_data=tf.data.Dataset.from_tensor_slices(
                (x, y)).batch(32))
        runs[kind] = (model.get_weights(), h.history)
    for kind in ("sample_weight", "tf.data"):
        for a, b in zip(runs["class_weight"][0], runs[kind][0]):
            np.testing.assert_allclose(a, b, atol=1e-6)
        np.testing.assert_allclose(runs["class_weight"][1]["jr"], runs[kind][1]["jr"], rtol=1e-5)
    assert "val_loss" in runs["tf.data"][1] and "val_jr" not in runs["tf.data"][1]


def test_restores_train_step_and_repeated_fit_and_saving(tmp_path):
    x, y, _ = _batch(32)
    model, plain = mlp(), mlp()
    cb = JacobianRegularization(0.1, ["fc"], n_proj=2, estimator="per_layer", seed=1)
    h1 = model.fit(x, y, epochs=1, batch_size=16, verbose=0, callbacks=[cb])
    h2 = model.fit(x, y, epochs=2, batch_size=16, verbose=0, callbacks=[cb])  # same callback again
    assert len(h1.history["jr/fc"]) == 1 and len(h2.history["jr/fc"]) == 2 and h2.history["jr/fc"][1] > 0
    assert "train_step" not in vars(model) and model.train_function is None
    assert qrk.training.active_hooks(model) == []
    # The restored step is the model's own: a plain fit now matches a model that never saw the callback.
    plain.set_weights(model.get_weights())
    model.fit(x, y, epochs=1, batch_size=16, shuffle=False, verbose=0)
    plain.fit(x, y, epochs=1, batch_size=16, shuffle=False, verbose=0)
    for a, b in zip(model.get_weights(), plain.get_weights()):
        np.testing.assert_array_equal(a, b)
    for ext in ("h5", "keras"):
        path = str(tmp_path / f"m.{ext}")
        model.save(path)
        np.testing.assert_array_equal(load_model(path).predict(x, verbose=0), model.predict(x, verbose=0))


def test_jr_values_reach_callback_logs():
    """Callbacks (TensorBoard, CSVLogger, ...) get jr and jr/<layer> in the batch and epoch logs they write.

    (TensorBoard itself is not installed in the test environment: tensorflow 2.21 does not depend on it.)
    """

    class Record(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.batch_logs, self.epoch_logs = [], []

        def on_train_batch_end(self, batch, logs=None):
            self.batch_logs.append({k: float(v) for k, v in logs.items()})

        def on_epoch_end(self, epoch, logs=None):
            self.epoch_logs.append(dict(logs))

    x, y, _ = _batch(32)
    rec = Record()
    mlp().fit(x, y, epochs=2, batch_size=16, verbose=0, callbacks=[JacobianRegularization(0.1, "all", seed=0), rec])
    assert len(rec.batch_logs) == 4 and len(rec.epoch_logs) == 2
    for logs in rec.batch_logs + rec.epoch_logs:
        assert {"jr", "jr/fc", "jr/logits"} <= set(logs) and logs["jr"] > 0 and logs["jr/fc"] > 0


def test_warmup_schedule_and_fused_layer_logs():
    x, y, _ = _batch(32)
    cb = JacobianRegularization(0.5, "all", warmup_epochs=2, log_layers_every=1, seed=0)
    assert [cb.scale(e) for e in range(4)] == [0.0, 0.5, 1.0, 1.0]
    model, plain = mlp(), mlp()
    h = model.fit(x, y, epochs=1, batch_size=16, shuffle=False, verbose=0, callbacks=[cb])
    plain.fit(x, y, epochs=1, batch_size=16, shuffle=False, verbose=0)
    # Epoch 0 has lambda 0: identical to training without JR.
    for a, b in zip(model.get_weights(), plain.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-6)
    assert h.history["jr"] == [0.0]
    # Fused per-layer logs estimate 1/2 mean ||J_l||^2 (one projection per batch): within 50% of the exact value.
    exact = jacobian_norm(model, x, "all", exact=True)
    h = model.fit(x, y, epochs=3, initial_epoch=1, batch_size=32, verbose=0, callbacks=[cb])
    assert h.history["jr"][0] > 0
    assert h.history["jr/fc"][0] == pytest.approx(0.5 * exact["fc"] ** 2, rel=0.5)


def test_jr_lowers_input_jacobian_norm_at_equal_accuracy():
    """Learnable 3-class task with a margin: JR ('output' and fused 'all') cuts ||J||_F >= 2x, accuracy within 2 pts."""
    rng = np.random.default_rng(0)
    w = rng.normal(size=(10, 3))

    def data(n):
        x = rng.uniform(0, 1, size=(4 * n, 10)).astype("float32")
        s = np.sort((x - 0.5) @ w, 1)
        keep = (s[:, -1] - s[:, -2]) > 0.15
        return x[keep][:n], ((x[keep] - 0.5) @ w).argmax(1)[:n]

    (xtr, ytr), (xte, yte) = data(1024), data(1000)

    def train(callbacks):
        keras.utils.set_random_seed(0)
        m = keras.Sequential([keras.Input((10,)), keras.layers.Dense(32, activation="relu", name="fc"),
                              keras.layers.Dense(3, name="logits"), keras.layers.Activation("softmax")])
        m.compile(keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy")
        m.fit(xtr, ytr, epochs=20, batch_size=64, verbose=0, callbacks=callbacks)
        acc = float((m.predict(xte, verbose=0).argmax(1) == yte).mean())
        return acc, jacobian_norm(m, xte, exact=True)["logits"]

    acc0, norm0 = train([])
    assert acc0 > 0.95
    for cb in (JacobianRegularization(0.002, "output", seed=0), JacobianRegularization(0.002, "all", seed=0)):
        acc, norm = train([cb])
        assert norm0 / norm >= 2.0, (cb.layers, norm0, norm)
        assert abs(acc - acc0) <= 0.02, (cb.layers, acc0, acc)


# ---------------------------------------------------------------------------------------------------------------------
# QKeras (straight-through Jacobian)
# ---------------------------------------------------------------------------------------------------------------------
def test_qkeras_model_estimator_gradients_fit_and_h5(tmp_path):
    model = qkeras_model()
    x = np.random.default_rng(7).uniform(0, 1, (8, 6, 6, 1)).astype("float32")
    exact = float(jacobian_penalty(model, x, "all", weight=1.0, n_proj=-1))
    assert exact > 0  # the STE makes the piecewise-constant quantized network differentiable
    f = tf.function(lambda s: jacobian_penalty(model, x, "all", weight=1.0, n_proj=1, seed=s))
    draws = np.array([float(f(tf.constant(s, tf.int64))) for s in range(200)])
    assert abs(draws.mean() - exact) < max(4 * draws.std(ddof=1) / np.sqrt(200), 1e-6)
    assert abs(draws.mean() - exact) < 0.08 * exact
    with tf.GradientTape() as tape:
        r = jacobian_penalty(model, x, "all", weight=1.0, n_proj=1, seed=0)
    grads = dict(zip([v.name for v in model.trainable_variables], tape.gradient(r, model.trainable_variables)))
    assert float(tf.norm(grads["qconv/kernel:0"])) > 0 and float(tf.norm(grads["logits/kernel:0"])) > 0
    model.compile(keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy")
    y = np.arange(8) % 3
    h = model.fit(x, y, epochs=2, batch_size=4, verbose=0, callbacks=[JacobianRegularization(0.05, "all")])
    assert {"jr", "jr/qconv", "jr/qact", "jr/logits"} <= set(h.history) and np.isfinite(h.history["jr"]).all()
    path = str(tmp_path / "q.h5")
    model.save(path)
    np.testing.assert_allclose(load_model(path).predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)


# ---------------------------------------------------------------------------------------------------------------------
# Bad arguments
# ---------------------------------------------------------------------------------------------------------------------
def test_bad_arguments_give_clear_errors():
    with pytest.raises(ValueError, match=r"weight must be >= 0.*-0.1"):
        JacobianRegularization(weight=-0.1)
    with pytest.raises(ValueError, match=r"layers\['fc'\] must be >= 0"):
        JacobianRegularization(layers={"fc": -1.0})
    with pytest.raises(ValueError, match=r"n_proj must be a positive integer.*or -1.*n_proj=0"):
        JacobianRegularization(n_proj=0)
    with pytest.raises(ValueError, match=r"projection must be one of.*'gauss'"):
        JacobianRegularization(projection="gauss")
    with pytest.raises(ValueError, match=r"estimator must be one of.*'exact'"):
        JacobianRegularization(estimator="exact")
    with pytest.raises(ValueError, match=r"layers must be 'output', 'all'.*'fc'.*pass \['fc'\]"):
        JacobianRegularization(layers="fc")
    with pytest.raises(ValueError, match="cannot be combined with a dict"):
        JacobianRegularization(weight=0.1, layers={"fc": 0.1})
    with pytest.raises(ValueError, match=r"every must be an integer >= 1.*every=0"):
        JacobianRegularization(every=0)
    with pytest.raises(ValueError, match="warmup_epochs must be an integer >= 0"):
        JacobianRegularization(warmup_epochs=-1)
    model = mlp()
    x, y, _ = _batch()
    with pytest.raises(ValueError, match=r"unknown layer 'conv9'.*has layers \[.*'fc'.*'logits'"):
        model.fit(x, y, verbose=0, callbacks=[JacobianRegularization(layers=["fc", "conv9"])])
    assert "train_step" not in vars(model)  # the failed callback installed nothing
    with pytest.raises(ValueError, match="listed twice"):
        resolve_layers(model, ["fc", "fc"])
    with pytest.raises(ValueError, match="input layer"):
        resolve_layers(model, [model.layers[0].name])
    with pytest.raises(ValueError, match="n_proj"):
        jacobian_norm(model, x, n_proj=0)
    two_heads = keras.Model(model.inputs, [model.output, model.get_layer("fc").output])
    with pytest.raises(ValueError, match="layers='output' needs a single-output model.*2 outputs"):
        resolve_layers(two_heads, "output")
    assert [n for n, _, _ in resolve_layers(two_heads, "all")] == ["fc", "logits"]
