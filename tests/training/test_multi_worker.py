"""Multi-worker training on this machine: two worker processes on 127.0.0.1 with TF_CONFIG
(MultiWorkerMirroredStrategy), compared with one process on the same global batch; kill and resume across workers;
bad TF_CONFIG values. Each worker is a fresh Python process (collective ops are configured at process start)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from qrobust_keras.training.distribute import check_tf_config

QROBUST = os.path.join(os.path.dirname(sys.executable), "qrobust")

DRIVER = textwrap.dedent(
    """
    import json
    import sys
    import numpy as np
    import qrobust_keras as qrk
    from qrobust_keras.training.distribute import make_strategy

    strategy = make_strategy(sys.argv[1])          # before any other TensorFlow op
    out, dump = sys.argv[2], sys.argv[3]
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (192, 32, 32, 3), dtype=np.uint8)
    y = rng.integers(0, 10, 192)
    recipe = qrk.recipes.get_recipe(sys.argv[4], dataset="cifar10", epochs=1, batch_size=64, filters=4,
                                    **json.loads(sys.argv[5]))
    model = qrk.recipes.fit_recipe(recipe, (x, y), None, out, verbose=0, strategy=strategy, init_weights="none")
    np.savez(dump, *model.get_weights())
    print("REPLICAS", strategy.num_replicas_in_sync)
    """
)


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _env(ports: list[int], index: int) -> dict:
    config = {"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]}, "task": {"type": "worker", "index": index}}
    return {**os.environ, "TF_CONFIG": json.dumps(config), "OMP_NUM_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1",
            "TF_NUM_INTRAOP_THREADS": "1"}


def _weights(path) -> list[np.ndarray]:
    with np.load(path) as data:
        return [data[f"arr_{i}"] for i in range(len(data.files))]


# The float ResNet-8 with BatchNorm, Adam, and adversarial training as int4_at does it: PGD-3 on half of each batch,
# crafted against the training graph (BatchNorm synchronised over the workers). The workers attack, together, the
# rows one process attacks, from one process's random starts. (Before, each worker attacked the first half of its
# share: 84.5% of the weights within the tolerance below instead of 99.3%.) The int4 model itself is not compared
# weight by weight: reordered float sums move an int4 activation across a rounding threshold here and there, and
# the forward pass then differs by a whole level (one step of int4_at: 91% of the weights within tolerance, with
# or without adversarial training); test_a_killed_multi_worker_job_... trains int4_at on two workers.
@pytest.mark.parametrize("recipe, overrides", [
    ("mlcommons", {"at_eps": 2 / 255, "at_ratio": 0.5})])
def test_two_workers_train_the_same_weights_as_one_process_on_the_global_batch(tmp_path, recipe, overrides):
    ports = _free_ports(2)
    out = tmp_path / "run"
    workers = [subprocess.Popen([sys.executable, "-c", DRIVER, "multi-worker", str(out), str(tmp_path / f"w{i}.npz"),
                                 recipe, json.dumps(overrides)],
                                env=_env(ports, i), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for i in range(2)]
    logs = [w.communicate(timeout=600) for w in workers]
    for w, (stdout, stderr) in zip(workers, logs):
        assert w.returncode == 0 and "REPLICAS 2" in stdout, stderr[-3000:]
    single = subprocess.run([sys.executable, "-c", DRIVER, "default", str(tmp_path / "single"),
                             str(tmp_path / "single.npz"), recipe, json.dumps(overrides)],
                            capture_output=True, text=True, timeout=600)
    assert single.returncode == 0 and "REPLICAS 1" in single.stdout, single.stderr[-3000:]
    w0, w1, ws = _weights(tmp_path / "w0.npz"), _weights(tmp_path / "w1.npz"), _weights(tmp_path / "single.npz")
    for a, b in zip(w0, w1):
        np.testing.assert_array_equal(a, b)  # all-reduced updates: the workers hold one model
    moved = sum(float(np.abs(a - b).max()) for a, b in zip(ws, _weights_of_init(tmp_path, recipe)))
    assert moved > 1e-3  # the comparison below is between trained weights, not two copies of the start
    # Equal within float tolerance: summing the gradient over two replicas reorders float additions, and Adam
    # (lr 1e-3) turns a gradient that is ~0 into a full +-lr step, so a few weights may move one step apart
    # (measured: 1 of 108 in the first kernel, by 1.8e-3). A strategy that lost the all-reduce, the sharding or
    # the global-batch BatchNorm statistics would put most weights about lr apart.
    diff = np.concatenate([np.abs(a - b).ravel() for a, b in zip(w0, ws)])
    scale = np.concatenate([np.abs(b).ravel() for b in ws])
    assert np.mean(diff <= 2e-4 + 1e-3 * scale) >= 0.99, np.mean(diff <= 2e-4 + 1e-3 * scale)
    assert diff.max() <= 2 * 1e-3 * 3  # at most two Adam steps of lr in the 3 steps of the epoch
    # only the chief wrote the run folder; the other worker's scratch folder is gone
    assert sorted(p.name for p in out.iterdir()) == ["backup", "history.csv", "last.h5", "model.h5",
                                                     "run_config.json"]
    config = json.loads((out / "run_config.json").read_text())
    assert config["strategy"]["replicas"] == 2 and "CollectiveAllReduce" in config["strategy"]["name"]
    assert config["sync_batchnorm"]  # every BatchNorm normalises over the global batch


def _weights_of_init(tmp_path, recipe):
    """The weights the runs start from (same seed, no training)."""
    script = textwrap.dedent(f"""
        import numpy as np, qrobust_keras as qrk
        recipe = qrk.recipes.get_recipe({recipe!r}, dataset="cifar10", epochs=1, batch_size=64, filters=4)
        np.savez({str(tmp_path / 'init.npz')!r}, *qrk.recipes.build_recipe(recipe)[0].get_weights())
    """)
    subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, timeout=300)
    return _weights(tmp_path / "init.npz")


def test_a_killed_multi_worker_job_resumes_without_losing_finished_epochs(tmp_path, shared_data):
    cifar = shared_data / "cifar10"
    ports = _free_ports(2)
    out = tmp_path / "run"
    cmd = [QROBUST, "train", "--strategy", "multi-worker", "--recipe", "int4_at",
           "--dataset", "cifar10", "--data-dir", str(cifar), "--train-samples", "192", "--val-samples", "0",
           "--epochs", "2", "--batch-size", "64", "--filters", "4", "--init-weights", "none", "--out", str(out),
           "--verbose", "0"]
    workers = [subprocess.Popen(cmd, env=_env(ports, i), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for i in range(2)]
    history = out / "history.csv"
    deadline = time.time() + 600
    while time.time() < deadline and not (history.exists() and history.read_text().count("\n") >= 2):
        assert all(w.poll() is None for w in workers), workers[0].communicate()[1][-3000:]
        time.sleep(0.2)
    for w in workers:  # the whole job is killed after its first epoch
        w.kill()
        w.wait()
    first = history.read_text().splitlines()
    assert len(first) >= 2 and not (out / "model.h5").exists()
    ports = _free_ports(2)
    workers = [subprocess.Popen(cmd, env=_env(ports, i), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for i in range(2)]
    for w in workers:
        _, stderr = w.communicate(timeout=600)
        assert w.returncode == 0, stderr[-3000:]
    rows = history.read_text().splitlines()
    assert len(rows) == 3 and rows[1] == first[1]  # epochs 0-1, the finished epoch 0 kept as it was
    assert (out / "model.h5").exists() and not list(out.glob(".worker-*"))


@pytest.mark.parametrize("text,message", [
    ("", "needs the TF_CONFIG environment variable"),
    ("{bad", "TF_CONFIG is not valid JSON"),
    ('{"cluster": {"worker": ["a:1"]}}', "needs a 'task' object"),
    ('{"cluster": {"worker": ["a:1", "a:1"]}, "task": {"type": "worker", "index": 0}}', "address 'a:1' twice"),
    ('{"cluster": {"worker": ["a"]}, "task": {"type": "worker", "index": 0}}', "'a' is not 'host:port'"),
    ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "chief", "index": 0}}', "task type 'chief' is not a job"),
    ('{"cluster": {"worker": ["a:1"], "ps": ["b:2"]}, "task": {"type": "worker", "index": 0}}', "parameter-server"),
    ('{"cluster": {"trainer": ["a:1"]}, "task": {"type": "trainer", "index": 0}}', "job 'trainer' is unknown"),
])
def test_bad_tf_config_is_refused_naming_what_is_wrong(text, message):
    with pytest.raises(ValueError, match=message):
        check_tf_config(text)


def test_the_cli_refuses_a_bad_tf_config_in_one_line(tmp_path):
    env = {**os.environ, "TF_CONFIG": '{"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "worker", '
                                      '"index": 2}}'}
    proc = subprocess.run([QROBUST, "train", "--strategy", "multi-worker", "--out",
                           str(tmp_path / "run")], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("qrobust train: error: TF_CONFIG task index 2 is out of")
    assert not (tmp_path / "run").exists()
