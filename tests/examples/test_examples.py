"""Smoke tests of the example scripts with --quick (real data where the example is about real data)."""

from __future__ import annotations

import json
import os
import pathlib
import re
import runpy
import sys

import numpy as np
import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "examples"


def run_example(name, argv, capsys):
    """Run examples/<name> as __main__ with argv; returns (exit code, stdout)."""
    old = sys.argv
    sys.argv = [str(EXAMPLES / name)] + [str(a) for a in argv]
    try:
        with pytest.raises(SystemExit) as exc:
            runpy.run_path(str(EXAMPLES / name), run_name="__main__")
    finally:
        sys.argv = old
    captured = capsys.readouterr()
    return exc.value.code, captured.out, captured.err


def _pct(pattern, text):
    return [float(v) for v in re.findall(pattern, text)]


def test_train_cifar10_robust_quick(shared_data, tmp_path, capsys):
    mlcommons = f"mlcommons:{shared_data / 'models' / 'mlcommons'}"
    code, out, _ = run_example("train_cifar10_robust.py", ["--data-dir", shared_data / "cifar10", "--quick",
                                                           "--out", tmp_path / "run", "--init-weights", mlcommons],
                               capsys)
    assert code == 0
    clean = _pct(r"clean accuracy: ([\d.]+)% on 32 test images", out)
    worst = _pct(r"worst case ([\d.]+)%", out)
    assert len(clean) == 1 and len(worst) == 2 and all(w <= clean[0] for w in worst)
    config = json.loads((tmp_path / "run" / "run_config.json").read_text())
    assert config["recipe"]["name"] == "stq_jr"
    assert config["init_weights"]["path"].startswith("mlcommons:") and config["init_weights"]["layers"] == 17
    size = (tmp_path / "run" / "model_int8.tflite").stat().st_size
    assert f"{size:,} bytes, TFLite Micro arena" in out


def test_train_svhn_robust_without_data_stops_with_a_message(tmp_path, capsys):
    code, _, err = run_example("train_svhn_robust.py", ["--data-dir", tmp_path / "no_svhn", "--quick"], capsys)
    assert code == 2 and "SVHN not found" in err and "--synthetic" in err


def test_train_svhn_robust_quick_on_the_synthetic_stand_in(tmp_path, capsys):
    code, out, err = run_example("train_svhn_robust.py", ["--quick", "--synthetic", "--out", tmp_path / "run"],
                                 capsys)
    assert code == 0 and "GENERATED stand-in" in err
    assert len(re.findall(r"PGD-3 eps \d/255 \[SYNTHETIC\]: [\d.]+%", out)) == 2
    recipe = json.loads((tmp_path / "run" / "run_config.json").read_text())["recipe"]
    assert recipe["dataset"] == "svhn" and recipe["augment_flip"] is False


def test_train_kws_robust_quick(shared_data, tmp_path, capsys):
    code, out, _ = run_example("train_kws_robust.py", ["--data-dir", shared_data / "speech_commands", "--quick",
                                                       "--out", tmp_path / "run", "--eps-mfcc", "0.1,1"], capsys)
    assert code == 0
    m = re.search(r"speaker-disjoint split: (\d+) train / (\d+) validation / (\d+) test clips", out)
    assert m and sum(map(int, m.groups())) == 2936
    line = [l for l in out.splitlines() if l.startswith("stq_jr: clean")][0]
    clean, clean_w = map(float, re.search(r"clean ([\d.]+)% \(waveform path ([\d.]+)%\)", line).groups())
    assert clean == clean_w  # the MFCC layer computes exactly the training features
    sweep = "\n".join(l for l in out.splitlines() if l.startswith("  stq_jr | "))
    worsts = _pct(r"worst ([\d.]+)%", sweep)
    assert len(worsts) == 3 and all(w <= clean for w in worsts)  # MFCC eps 0.1 and 1, waveform eps 0.005
    assert worsts[1] <= worsts[0] + 100 / 24  # a larger budget does not leave more clips correct (24 clips)


def test_train_kws_robust_int4_at_starts_from_the_reference_weights(shared_data, tmp_path, capsys, monkeypatch):
    """int4_at starts from the official DS-CNN weights (here found through QROBUST_MLCOMMONS_DIR)."""
    models = shared_data / "models" / "mlcommons"
    monkeypatch.setenv("QROBUST_MLCOMMONS_DIR", str(models))
    code, out, _ = run_example("train_kws_robust.py", ["--data-dir", shared_data / "speech_commands", "--quick",
                                                       "--recipe", "int4_at", "--at-eps", "0.25", "--out",
                                                       tmp_path / "run", "--eps-mfcc", "0.1"], capsys)
    assert code == 0
    config = json.loads((tmp_path / "run" / "run_config.json").read_text())
    assert config["recipe"]["at_eps"] == 0.25 and config["recipe"]["policy"]["kernel"] == "int4"
    assert config["init_weights"] == {"path": f"mlcommons:{os.path.abspath(models)}", "layers": 19}
    # one epoch (3 steps) from random weights stays near chance (1/12) on the 276 validation clips; started from
    # the reference it keeps most of the reference's accuracy
    from qrobust_keras.recipes import read_history

    assert read_history(str(tmp_path / "run" / "history.csv"))[0]["val_accuracy"] > 0.5
    assert re.search(r"int4_at: clean [\d.]+%", out)
    code, _, err = run_example("train_kws_robust.py", ["--data-dir", shared_data / "speech_commands", "--at-eps", "0.5"],
                               capsys)
    assert code == 2 and "--at-eps applies to the adversarial-training recipes" in err


def test_attack_tflite_model_quick(shared_data, tmp_path, capsys):
    import qrobust_keras as qrk

    model = qrk.models.load_mlcommons("resnet8", shared_data / "models" / "mlcommons")
    (x, _), (x_test, y_test) = qrk.data.load_cifar10(shared_data / "cifar10", verbose=0)
    path = tmp_path / "ref_int8.tflite"
    qrk.export.export_tflite(model, path, representative_data=x[:64].astype(np.float32) / 255.0)
    np.savez(tmp_path / "data.npz", x=x_test[:16].astype(np.float32) / 255.0, y=y_test[:16])
    capsys.readouterr()
    code, out, _ = run_example("attack_tflite_model.py", [path, "--npz", tmp_path / "data.npz", "--quick",
                                                          "--tflm", "--eps", "8/255"], capsys)
    assert code == 0
    clean = _pct(r"clean accuracy: ([\d.]+)% on 16 samples", out)[0]
    assert clean >= 75.0  # the MLCommons int8 model: 87.7% on the exact test images
    assert "TFLite Micro agrees with LiteRT on 100.0% of 16 samples" in out
    robust = _pct(r"Square eps 8/255: ([\d.]+)% robust", out)[0]
    assert robust < clean  # the reference model is not robust at 8/255
