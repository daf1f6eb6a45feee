"""JacobianRegularization, AdversarialTraining (random starts, N-FGSM), TRADES and RobustValidation under
MirroredStrategy on two logical CPU devices: the same updates (and logs) as one device on the same global batch.

Logical devices must be configured before TensorFlow initializes its devices, so the comparison runs in a fresh
Python process. Deterministic settings (exact Jacobian n_proj=-1, random draws taken as each replica's rows of one
global draw, no BatchNorm) make the two-replica run comparable step by step with the single-device run.
"""

import json
import subprocess
import sys
import textwrap

import numpy as np

SCRIPT = textwrap.dedent(
    """
    import json
    import numpy as np
    import qrobust_keras as qrk
    from qrobust_keras._keras import keras, tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (64, 6)).astype("float32")
    y = rng.integers(0, 3, 64)
    sw = rng.uniform(0.5, 2.0, 64).astype("float32")

    def build():
        keras.utils.set_random_seed(0)
        inp = keras.Input((6,))
        h = keras.layers.Dense(8, activation="tanh", name="fc")(inp)
        out = keras.layers.Dense(3, activation="softmax", name="logits")(h)
        m = keras.Model(inp, out)
        m.compile(keras.optimizers.SGD(0.2), "sparse_categorical_crossentropy")
        return m

    CASES = {
        "jr_exact": lambda: [qrk.JacobianRegularization(0.3, "all", n_proj=-1)],
        "jr_exact+at": lambda: [qrk.AdversarialTraining("pgd", eps=0.1, steps=2, ratio=1.0, random_start=False),
                                qrk.JacobianRegularization(0.3, "all", n_proj=-1)],
        "jr_fused": lambda: [qrk.JacobianRegularization(0.3, "all", n_proj=1, seed=0, log_layers_every=1)],
        "jr_fd": lambda: [qrk.JacobianRegularization(0.3, "all", n_proj=1, seed=0, estimator="finite_difference",
                                                     fd_step=1e-2)],
        # random starts: each replica draws its rows of the global draw
        "at_random": lambda: [qrk.AdversarialTraining("pgd", eps=0.1, steps=2, ratio=1.0, seed=3)],
        # ratio < 1: the attacked rows are spread over the global batch, so the replicas attack one process's rows
        # (at 0.2 the two replicas of a 16-row batch attack 1 and 2 rows)
        "at_half": lambda: [qrk.AdversarialTraining("pgd", eps=0.1, steps=2, ratio=0.5, seed=3)],
        "at_fifth": lambda: [qrk.AdversarialTraining("pgd", eps=0.1, steps=2, ratio=0.2, seed=3)],
        "trades": lambda: [qrk.TRADES(eps=0.1, beta=1.0, steps=2, seed=3)],
        # N-FGSM: its wider random start is drawn like PGD's (each replica its rows of the global draw)
        "at_nfgsm": lambda: [qrk.AdversarialTraining("nfgsm", eps=0.1, ratio=1.0, seed=3)],
        # the robust-validation monitor attacks the mirrored model after each epoch, as it would a plain one
        "robust_val": lambda: [qrk.RobustValidation(x[:32], y[:32], eps=0.1, steps=5, seed=1)],
    }

    def run(strategy, case):
        with strategy.scope():
            m = build()
        ds = tf.data.Dataset.from_tensor_slices((x, y, sw)).batch(16)
        h = m.fit(ds, epochs=2, verbose=0, callbacks=CASES[case]())
        return [w.tolist() for w in m.get_weights()], {k: [float(v) for v in vs] for k, vs in h.history.items()}

    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    out = {"replicas": mirrored.num_replicas_in_sync}
    for case in CASES:
        out[case] = {"single": run(tf.distribute.get_strategy(), case), "mirrored": run(mirrored, case)}
    print("RESULT" + json.dumps(out))
    """
)


def test_mirrored_two_logical_cpus_matches_single_device():
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=600)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT")]
    assert proc.returncode == 0 and lines, proc.stderr[-4000:]
    out = json.loads(lines[-1][len("RESULT"):])
    assert out["replicas"] == 2
    assert len(out["robust_val"]["mirrored"][1]["val_pgd_accuracy"]) == 2  # logged after both epochs
    for case in ("jr_exact", "jr_exact+at", "at_random", "at_half", "at_fifth", "trades", "at_nfgsm", "robust_val"):
        (w1, h1), (w2, h2) = out[case]["single"], out[case]["mirrored"]
        for a, b in zip(w1, w2):
            np.testing.assert_allclose(np.array(a), np.array(b), atol=2e-5, err_msg=case)
        assert set(h1) == set(h2) and "loss" in h1
        for key in h1:
            np.testing.assert_allclose(h1[key], h2[key], rtol=1e-4, err_msg=f"{case} {key}")
    # Random projections: each replica takes its rows of the global draw, so the estimate is one device's too.
    (w1, h1), (w2, h2) = out["jr_fused"]["single"], out["jr_fused"]["mirrored"]
    for a, b in zip(w1, w2):
        np.testing.assert_allclose(np.array(a), np.array(b), atol=2e-5, err_msg="jr_fused")
    for key in h1:
        np.testing.assert_allclose(h1[key], h2[key], rtol=1e-4, err_msg=f"jr_fused {key}")
    # The finite difference's input directions too: one device's rows of the global draw.
    (w1f, h1f), (w2f, h2f) = out["jr_fd"]["single"], out["jr_fd"]["mirrored"]
    for a, b in zip(w1f, w2f):
        np.testing.assert_allclose(np.array(a), np.array(b), atol=2e-5, err_msg="jr_fd")
    for key in h1f:
        np.testing.assert_allclose(h1f[key], h2f[key], rtol=1e-4, err_msg=f"jr_fd {key}")
    exact = out["jr_exact"]["single"][1]
    np.testing.assert_allclose(h1f["jr"], exact["jr"], rtol=0.5)
    assert np.isfinite(h1["jr"]).all() and np.isfinite(h1["jr/fc"]).all()
    np.testing.assert_allclose(h1["jr"], exact["jr"], rtol=0.5)  # and it estimates the exact penalty
