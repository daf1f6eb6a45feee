"""Tests of qrobust_keras/cli/__init__.py's error handling: every failure a user can cause is one
`qrobust CMD: error: ...` line and exit status 2 (broken model files, the official MLCommons file, an --out that is a
file, unsafe or corrupt dataset pickles); Ctrl-C is one `qrobust CMD: interrupted` line and status 130; a failed
command leaves no empty --out folder behind, and never removes one that existed or holds files."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from qrobust_keras.cli import commands, main
from qrobust_keras.data import datasets

QROBUST = os.path.join(os.path.dirname(sys.executable), "qrobust")


def _one_error_line(err: str, command: str) -> str:
    """The single stderr line of a failed command (asserting it is the only one and no traceback)."""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"qrobust {command}: error: "), err
    return lines[0]


def _write_cifar(folder, n: int = 16, first_batch: bytes | None = None) -> None:
    """CIFAR-10 python batches of n random images; ``first_batch`` replaces data_batch_1's bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(folder / name, "wb") as f:
            pickle.dump({"labels": [int(v) for v in rng.integers(0, 10, n)],
                         "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8)}, f, protocol=2)
    if first_batch is not None:
        (folder / "data_batch_1").write_bytes(first_batch)


@pytest.fixture()
def official_resnet8(shared_data):
    path = shared_data / "models" / "mlcommons" / "pretrainedResnet.h5"
    if not path.is_file():
        pytest.fail(f"the official MLCommons file {path} is missing from the shared data")
    return path


@pytest.fixture()
def tiny_data(monkeypatch):
    tiny = np.zeros((4, 32, 32, 3), np.float32), np.zeros(4, int)
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: datasets.DataSpec("cifar10", tiny, tiny, "tiny"))


# ---------------------------------------------------------------------------------------------------------------------
# model files
# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["evaluate", "attack", "export"])
@pytest.mark.parametrize("name, expected", [("model.h5", "is not an HDF5 file"),
                                            ("model.keras", "is not a zip archive")])
def test_garbage_model_file_is_one_line_naming_the_path(command, name, expected, tmp_path, capsys):
    model = tmp_path / name
    model.write_bytes(b"\x00garbage" * 64)
    out = tmp_path / "out"
    assert main([command, str(model), "--out", str(out), "--verbose", "0"]) == 2
    line = _one_error_line(capsys.readouterr().err, command)
    assert f"path={str(model)!r} {expected}" in line and "truncated or corrupt" in line
    assert "file signature not found" not in line
    assert not out.exists()


def test_official_mlcommons_file_as_model_is_refused_with_the_way_to_load_it(official_resnet8, tmp_path, capsys):
    assert main(["evaluate", str(official_resnet8), "--out", str(tmp_path / "out"), "--verbose", "0"]) == 2
    line = _one_error_line(capsys.readouterr().err, "evaluate")
    folder = str(official_resnet8.parent)
    assert "official MLCommons Tiny ResNet-8" in line and "0-255 pixels" in line
    assert f"qrk.models.load_mlcommons('resnet8', {folder!r})" in line and f"--init-weights mlcommons:{folder}" in line
    assert not (tmp_path / "out").exists()


def test_train_from_the_official_file_fails_and_removes_the_run_folder_it_created(official_resnet8, tmp_path,
                                                                                   capsys):
    """fit_recipe creates the run folder, then refuses --init-weights pretrainedResnet.h5: the folder goes again
    (and the parent it created for it), the folder that existed stays."""
    data = tmp_path / "data"
    _write_cifar(data / "cifar-10-batches-py")
    run = tmp_path / "new" / "run"
    rc = main(["train", "--recipe", "mlcommons", "--data-dir", str(data), "--epochs", "1", "--init-weights",
               str(official_resnet8), "--out", str(run), "--verbose", "0"])
    assert rc == 2
    line = _one_error_line(capsys.readouterr().err, "train")
    assert "official MLCommons Tiny ResNet-8" in line and "--init-weights mlcommons:" in line
    assert not (tmp_path / "new").exists() and tmp_path.is_dir()


# ---------------------------------------------------------------------------------------------------------------------
# --out
# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["train", "evaluate", "attack", "export", "demo"])
def test_out_that_is_an_existing_file_is_refused(command, tmp_path, capsys):
    model = tmp_path / "m.h5"
    model.write_bytes(b"never read")
    taken = tmp_path / "taken.txt"
    taken.write_text("keep me")
    args = [str(model)] if command in ("evaluate", "attack", "export") else []
    for out, where in ((taken, "is an existing file"), (taken / "sub", f"lies under the existing file {str(taken)!r}")):
        assert main([command, *args, "--out", str(out)]) == 2
        line = _one_error_line(capsys.readouterr().err, command)
        assert f"--out {str(out)!r} {where}" in line and "names a folder" in line
    assert taken.read_text() == "keep me"


def test_report_out_that_is_a_folder_is_refused(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    assert main(["report", str(tmp_path / "run"), "--out", str(tmp_path)]) == 2
    assert "is an existing folder; --out of `qrobust report` is the report file" in capsys.readouterr().err


def test_out_file_is_refused_before_tensorflow_loads(tmp_path):
    (tmp_path / "m.h5").write_bytes(b"never read")
    (tmp_path / "taken").write_text("x")
    code = ("import sys\nfrom qrobust_keras.cli import main\nrc = main(['evaluate', 'm.h5', '--out', 'taken'])\n"
            "print('RC', rc, 'TF', 'tensorflow' in sys.modules)")
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env,
                            timeout=300)
    assert result.stdout.split()[-4:] == ["RC", "2", "TF", "False"], result.stderr
    assert "qrobust evaluate: error: --out 'taken' is an existing file" in result.stderr


# ---------------------------------------------------------------------------------------------------------------------
# dataset files
# ---------------------------------------------------------------------------------------------------------------------
class _MakesAFolder:
    """A pickle payload that would create ``path`` if it were ever run."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return os.mkdir, (self.path,)


def test_unsafe_pickle_is_one_line_and_runs_nothing(tmp_path, capsys):
    marker = tmp_path / "pwned"
    data = tmp_path / "data"
    _write_cifar(data / "cifar-10-batches-py", first_batch=pickle.dumps(_MakesAFolder(marker), protocol=2))
    run = tmp_path / "run"
    assert main(["train", "--data-dir", str(data), "--epochs", "1", "--out", str(run), "--verbose", "0"]) == 2
    line = _one_error_line(capsys.readouterr().err, "train")
    assert "refusing to load global posix.mkdir" in line or "refusing to load global os.mkdir" in line
    assert "nothing from it was executed" in line
    assert not marker.exists() and not run.exists()


def test_truncated_pickle_is_one_line_naming_the_file(tmp_path, capsys):
    data = tmp_path / "data"
    whole = pickle.dumps({"labels": [1] * 16, "data": np.zeros((16, 3072), np.uint8)}, protocol=2)
    _write_cifar(data / "cifar-10-batches-py", first_batch=whole[: len(whole) // 2])
    assert main(["train", "--data-dir", str(data), "--epochs", "1", "--out", str(tmp_path / "run"),
                 "--verbose", "0"]) == 2
    line = _one_error_line(capsys.readouterr().err, "train")
    assert "data_batch_1" in line and "is not a readable pickle (truncated or corrupted?)" in line


# ---------------------------------------------------------------------------------------------------------------------
# Ctrl-C and the folders a failed command leaves
# ---------------------------------------------------------------------------------------------------------------------
def _fit_that_fails(exc: BaseException, files: tuple[str, ...] = (), folders: tuple[str, ...] = ()):
    """A stand-in for fit_recipe: creates the run folder (and ``folders``, ``files`` in it), then raises ``exc``."""
    def fit(recipe, train, validation, out, **kwargs):
        os.makedirs(out, exist_ok=True)
        for name in folders:
            os.makedirs(os.path.join(out, name), exist_ok=True)
        for name in files:
            with open(os.path.join(out, name), "w") as f:
                f.write("epoch,loss\n0,1.0\n")
        raise exc

    return fit


def test_ctrl_c_in_train_is_one_line_with_the_resume_hint_and_status_130(monkeypatch, tiny_data, tmp_path, capsys):
    from qrobust_keras import recipes

    monkeypatch.setattr(recipes, "fit_recipe", _fit_that_fails(KeyboardInterrupt(), folders=("backup",)))
    run = tmp_path / "run"
    assert main(["train", "--out", str(run), "--verbose", "0"]) == 130
    assert capsys.readouterr().err == ("qrobust train: interrupted; rerun the same command to resume from the last "
                                       "finished epoch\n")
    assert not run.exists()  # created, left without files (only an empty backup/): removed


def test_ctrl_c_in_evaluate_is_one_line_without_resume_hint(monkeypatch, tmp_path, capsys):
    def interrupted(args):
        os.makedirs(args.out)
        raise KeyboardInterrupt

    monkeypatch.setattr(commands, "cmd_evaluate", interrupted)
    (tmp_path / "m.h5").write_bytes(b"never read")
    assert main(["evaluate", str(tmp_path / "m.h5"), "--out", str(tmp_path / "report"), "--verbose", "0"]) == 130
    assert capsys.readouterr().err == "qrobust evaluate: interrupted\n"
    assert not (tmp_path / "report").exists()


def test_a_killed_run_folder_with_epochs_stays_to_resume(monkeypatch, tiny_data, tmp_path, capsys):
    from qrobust_keras import recipes

    monkeypatch.setattr(recipes, "fit_recipe", _fit_that_fails(KeyboardInterrupt(), files=("history.csv",)))
    run = tmp_path / "run"
    assert main(["train", "--out", str(run), "--verbose", "0"]) == 130
    assert (run / "history.csv").read_text() == "epoch,loss\n0,1.0\n"


def test_a_folder_that_existed_stays_even_when_empty(monkeypatch, tiny_data, tmp_path, capsys):
    from qrobust_keras import recipes

    monkeypatch.setattr(recipes, "fit_recipe", _fit_that_fails(ValueError("bad recipe setting")))
    run = tmp_path / "run"
    run.mkdir()
    assert main(["train", "--out", str(run), "--verbose", "0"]) == 2
    assert _one_error_line(capsys.readouterr().err, "train").endswith("bad recipe setting")
    assert run.is_dir() and not os.listdir(run)


def test_an_error_removes_the_empty_folders_it_created_and_only_those(monkeypatch, tiny_data, tmp_path, capsys):
    from qrobust_keras import recipes

    (tmp_path / "keep").mkdir()
    monkeypatch.setattr(recipes, "fit_recipe", _fit_that_fails(ValueError("bad recipe setting"), folders=("backup",)))
    run = tmp_path / "keep" / "a" / "b" / "run"
    assert main(["train", "--out", str(run), "--verbose", "0"]) == 2
    assert not (tmp_path / "keep" / "a").exists() and (tmp_path / "keep").is_dir()
    monkeypatch.setattr(recipes, "fit_recipe", _fit_that_fails(RuntimeError("a bug"), folders=("backup",)))
    with pytest.raises(RuntimeError, match="a bug"):  # an unexpected error stays a traceback, and still cleans up
        main(["train", "--out", str(run), "--verbose", "0"])
    assert not (tmp_path / "keep" / "a").exists()


def test_sigint_during_real_training_exits_130_and_keeps_the_finished_epochs(tmp_path):
    """The console script under a real SIGINT after the first finished epoch: status 130, the one line, and a run
    folder that still holds that epoch for the rerun to resume from."""
    data = tmp_path / "data"
    _write_cifar(data / "cifar-10-batches-py", n=64)
    run = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    proc = subprocess.Popen([QROBUST, "train", "--recipe", "mlcommons", "--data-dir", str(data), "--epochs", "500",
                             "--val-samples", "0", "--init-weights", "none", "--out", str(run), "--verbose", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None:
            history = run / "history.csv"
            if history.is_file() and len(history.read_text().strip().splitlines()) >= 2:
                break
            time.sleep(0.5)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1] == ("qrobust train: interrupted; rerun the same command to resume from the "
                                            "last finished epoch")
    assert "Traceback" not in err
    assert len((run / "history.csv").read_text().strip().splitlines()) >= 2 and (run / "run_config.json").is_file()
