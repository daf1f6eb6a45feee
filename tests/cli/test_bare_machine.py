"""What a new user meets first: a quick, quiet `qrobust`, the --download path, a demo that survives missing pieces and
failed late steps, and a wheel that carries the package's data."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import urllib.error
import zipfile

import numpy as np
import pytest

from qrobust_keras.cli import main
from qrobust_keras.data import DataNotFoundError, cifar10
from qrobust_keras.data.datasets import load_dataset

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
QROBUST = os.path.join(os.path.dirname(sys.executable), "qrobust")


def _python(code: str, **kwargs) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "TF_USE_LEGACY_KERAS")}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300,
                          **kwargs)


@pytest.mark.parametrize("argv", [["--help"], ["evaluate", "--help"], ["train", "--help"],
                                  ["evaluate", "m.h5", "--eps", "8"], ["evaluate", "m.h5", "--attacks", "pgdd"],
                                  ["evaluate", "missing_model.h5"], ["report", "no_such_run_dir"]])
def test_help_and_argument_errors_import_no_tensorflow(argv, tmp_path):
    code = ("import sys\nfrom qrobust_keras.cli import main\ntry:\n    rc = main(%r)\nexcept SystemExit as e:\n"
            "    rc = e.code\nprint('RC', rc, 'TF', 'tensorflow' in sys.modules)" % argv)
    result = _python(code, cwd=tmp_path)
    assert result.stdout.split()[-4:] == ["RC", "0" if argv[-1] == "--help" else "2", "TF", "False"], result.stderr
    assert "I0000" not in result.stderr and "oneDNN" not in result.stderr


def test_console_script_errors_are_one_line_without_tensorflow_logs(tmp_path):
    """`qrobust report` on an empty folder loads TensorFlow, then fails: one line at the default verbosity; with
    --verbose 2 whatever TensorFlow prints at start-up is shown."""
    (tmp_path / "empty").mkdir()
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    quiet = subprocess.run([QROBUST, "report", str(tmp_path / "empty")], capture_output=True, text=True, env=env,
                           timeout=300)
    assert quiet.returncode == 2
    assert quiet.stderr.strip().splitlines() == [quiet.stderr.strip()] and "holds neither" in quiet.stderr
    loud = subprocess.run([QROBUST, "report", str(tmp_path / "empty"), "--verbose", "2"], capture_output=True,
                          text=True, env=env, timeout=300)
    tf_alone = _python("import os; os.environ['TF_USE_LEGACY_KERAS'] = '1'; import tensorflow").stderr
    assert loud.returncode == 2 and "holds neither" in loud.stderr.splitlines()[-1]
    if tf_alone.strip():  # this TensorFlow build logs at start-up: --verbose 2 must show it
        assert len(loud.stderr.strip().splitlines()) > 1


def _write_fake_cifar(folder, n=12):
    """Batches in the real python-pickle layout, as Keras' downloader leaves them."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(folder / name, "wb") as f:
            pickle.dump({"batch_label": name, "labels": [int(v) for v in rng.integers(0, 10, n)],
                         "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8)}, f, protocol=2)


@pytest.fixture()
def empty_machine(monkeypatch, tmp_path):
    monkeypatch.delenv(cifar10.ENV_VAR, raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    return tmp_path / "keras_home"


def test_download_path_with_a_patched_keras_loader(monkeypatch, empty_machine, capsys):
    from qrobust_keras._keras import keras

    def fake_get_file(fname, origin, untar, cache_dir, cache_subdir):
        assert origin == cifar10.DOWNLOAD_URL and untar
        _write_fake_cifar(empty_machine / "datasets" / "cifar-10-batches-py")
        return str(empty_machine / "datasets" / "cifar-10-batches-py")

    monkeypatch.setattr(keras.utils, "get_file", fake_get_file)
    with pytest.raises(DataNotFoundError):
        load_dataset("cifar10", None, verbose=0)                     # never downloads unless asked
    data = load_dataset("cifar10", None, verbose=0, download=True)
    assert data.train[0].shape == (60, 32, 32, 3) and data.test[0].shape == (12, 32, 32, 3)
    assert "downloading " + cifar10.DOWNLOAD_URL in capsys.readouterr().err


def test_download_failure_and_the_no_data_message_name_the_option(monkeypatch, empty_machine, tmp_path, capsys):
    from qrobust_keras._keras import keras

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(keras.utils, "get_file", offline)
    with pytest.raises(DataNotFoundError, match="could not download CIFAR-10 .*name resolution.*--data-dir"):
        load_dataset("cifar10", None, verbose=0, download=True)
    capsys.readouterr()
    assert main(["train", "--out", str(tmp_path / "run"), "--epochs", "1", "--verbose", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("qrobust train: error: rerun with --download") and len(err.strip().splitlines()) == 1
    assert main(["train", "--download", "--out", str(tmp_path / "run"), "--verbose", "0"]) == 2
    assert "could not download CIFAR-10" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_demo_skips_missing_optional_pieces_and_keeps_what_it_computed(monkeypatch, empty_machine, tmp_path):
    """tflite-micro and LiteRT 'missing', and the last step (attacking the int8 file) failing: the report is still
    written with the trained models' evaluations, names what was skipped with its pip command, and the exit status
    says that a step failed."""
    from qrobust_keras import demo

    monkeypatch.setattr(demo, "optional_pieces", lambda: {"tflite-micro": False, "ai-edge-litert": False})

    def broken(*args, **kwargs):
        raise RuntimeError("simulated failure of the last step")

    monkeypatch.setattr(demo, "_attack_file", broken)
    cfg = demo.DemoConfig(n_train=96, n_test=16, float_epochs=1, robust_epochs=1, eps=(8 / 255,), pgd_steps=2,
                          square_queries=5, n_tflm=4, n_file_attack=4)
    out = tmp_path / "demo_report"
    assert demo.run_demo(out=str(out), config=cfg, verbose=0) == 1
    text = (out / "report.md").read_text()
    assert "SYNTHETIC" in text and "pip install tflite-micro" in text and "pip install ai-edge-litert" in text
    assert "simulated failure of the last step" in text and "| stq_jr | **worst case** |" in text
    r = json.loads((out / "results.json").read_text())
    assert r["tflm_footprint"] is None and r["export"]["int8"] is True
    assert set(r["evaluations"]) == {"float (mlcommons)", "stq_jr"}
    assert r["robust_model"] == {"label": "stq_jr", "source": "trained here", "recipe": "stq_jr"}  # no zoo model
    assert (out / "stq_jr_int8.tflite").stat().st_size == r["export"]["size_bytes"]
    assert (out / "accuracy_vs_eps.png").stat().st_size > 1000


def test_wheel_carries_license_typing_marker_and_zoo(tmp_path):
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                             "-w", str(tmp_path), REPO], capture_output=True, text=True, timeout=600,
                            cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (wheel,) = [p for p in os.listdir(tmp_path) if p.endswith(".whl")]
    names = zipfile.ZipFile(tmp_path / wheel).namelist()
    assert "qrobust_keras/py.typed" in names and "qrobust_keras/cli/__init__.py" in names
    assert any(n.endswith(".dist-info/LICENSE") or "/licenses/LICENSE" in n for n in names), names
    zoo_files = sorted(n for n in names if n.startswith("qrobust_keras/zoo/") and not n.endswith(".py"))
    shipped = sorted(os.path.relpath(os.path.join(d, f), REPO).replace(os.sep, "/")
                     for d, _, fs in os.walk(os.path.join(REPO, "qrobust_keras", "zoo")) for f in fs
                     if not f.endswith((".py", ".pyc")) and "__pycache__" not in d
                     # a running publish's scratch folder (.NAME-partial-*) is git-ignored and not package data
                     and not any(part.startswith(".") for part in os.path.relpath(d, REPO).split(os.sep)))
    assert zoo_files == shipped
