"""The qrobust CLI end to end on tiny real data: train, evaluate (.h5, SavedModel, .tflite), export, report; eps
parsing; missing-data messages; resuming a killed run."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from qrobust_keras.cli import main, parse_eps, parse_eps_list, parse_policy
from qrobust_keras.data import datasets
from qrobust_keras.evaluation import evaluation_markdown, run_attacks


# ---------------------------------------------------------------------------------------------------------------------
# eps parsing
# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, value", [("8/255", 8 / 255), (" 2/255 ", 2 / 255), ("0.03", 0.03), ("3e-2", 0.03),
                                         ("1", 1.0), ("1/2", 0.5), ("0.5/2", 0.25)])
def test_parse_eps_accepts_fractions_and_decimals(text, value):
    assert parse_eps(text) == pytest.approx(value, rel=0, abs=1e-15)


@pytest.mark.parametrize("text, fragment", [("abc", "not a number"), ("8", "did you mean 8/255"),
                                            ("1/0", "not a number"), ("", "empty"), ("-0.1", "(0, 1]"),
                                            ("0", "(0, 1]"), ("8/255/2", "not a number"), ("nan", "not a number"),
                                            ("300/255", "(0, 1]")])
def test_parse_eps_rejects_bad_strings_with_a_clear_message(text, fragment):
    with pytest.raises(ValueError, match="eps") as err:
        parse_eps(text)
    assert fragment in str(err.value)


def test_parse_eps_list_sorts_and_deduplicates():
    assert parse_eps_list("8/255, 2/255,0.0078431372549019607,2/255") == [2 / 255, 8 / 255]
    with pytest.raises(ValueError, match="at least one"):
        parse_eps_list(" , ")


def test_bad_eps_on_the_command_line_exits_with_usage_error(capsys, tmp_path):
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", str(tmp_path / "m.h5"), "--eps", "8/255,eight"])
    assert exc.value.code == 2
    assert "eps='eight' is not a number or fraction" in capsys.readouterr().err


def test_unknown_attack_is_rejected(capsys, tmp_path):
    with pytest.raises(SystemExit):
        main(["attack", str(tmp_path / "m.h5"), "--attacks", "pgd,deepfool"])
    assert "unknown name(s) ['deepfool']" in capsys.readouterr().err


def test_train_policy_option_reaches_the_recipe(monkeypatch, tmp_path):
    from qrobust_keras import recipes

    seen = {}
    tiny = np.zeros((4, 32, 32, 3), np.float32), np.zeros(4, int)
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: datasets.DataSpec("cifar10", tiny, tiny, "tiny"))
    monkeypatch.setattr(recipes, "fit_recipe", lambda recipe, *a, **k: seen.setdefault("recipe", recipe))
    policy = '{"kernel": "int4", "activation": "int4", "overrides": {"conv_1": "int8", "logits": "int8"}}'
    assert main(["train", "--policy", policy, "--out", str(tmp_path / "run"), "--verbose", "0"]) == 0
    assert seen["recipe"].name == "stq_jr"
    assert seen["recipe"].policy["kernel"] == "int4"
    assert seen["recipe"].policy["overrides"] == {"conv_1": "int8", "logits": "int8"}
    assert parse_policy("int8")["activation"] == "int8"


def test_train_passes_init_weights_to_fit_recipe(monkeypatch, tmp_path):
    from qrobust_keras import recipes

    seen = []
    tiny = np.zeros((4, 32, 32, 3), np.float32), np.zeros(4, int)
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: datasets.DataSpec("cifar10", tiny, tiny, "tiny"))
    monkeypatch.setattr(recipes, "fit_recipe", lambda recipe, *a, **k: seen.append((recipe, k["init_weights"])))
    out = ["--out", str(tmp_path / "run"), "--verbose", "0"]
    assert main(["train", "--recipe", "int4_at", *out]) == 0
    assert seen[-1][0].init_weights == "mlcommons" and seen[-1][1] is None  # fit_recipe takes the recipe's
    assert main(["train", "--recipe", "int4_at", "--init-weights", "none", *out]) == 0
    assert seen[-1][1] == "none"  # fit_recipe turns it into a recipe with init_weights=None (test_recipes)
    assert main(["train", "--recipe", "int4_at", "--init-weights", "mlcommons:/m", *out]) == 0
    assert seen[-1][1] == "mlcommons:/m"


def test_train_filters_option_sets_the_width(monkeypatch, tmp_path, capsys):
    from qrobust_keras import recipes

    seen = []
    tiny = np.zeros((4, 32, 32, 3), np.float32), np.zeros(4, int)
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: datasets.DataSpec("cifar10", tiny, tiny, "tiny"))
    monkeypatch.setattr(recipes, "fit_recipe", lambda recipe, *a, **k: seen.append(recipe))
    out = ["--out", str(tmp_path / "run"), "--verbose", "0"]
    assert main(["train", "--recipe", "int4_at", "--filters", "26", "--init-weights", "none", *out]) == 0
    assert seen[-1].filters == 26 and recipes.build_model(seen[-1]).get_layer("stack3_conv_b").kernel.shape[-1] == 104
    assert main(["train", *out]) == 0 and seen[-1].filters is None
    assert main(["train", "--filters", "0", *out]) == 2
    assert "filters must be None (the MLCommons width) or a positive integer; got filters=0" in capsys.readouterr().err


@pytest.mark.parametrize("text, fragment", [("int5", "'int5' is not a quantizer spec"),
                                            ('{"kernel": int4}', "not valid JSON"),
                                            ('{"kernel": "int4", "bits": 3}', "unknown keys ['bits']"),
                                            ('{"overrides": {"conv_1": "int9"}}', "overrides['conv_1']='int9'")])
def test_bad_policy_exits_with_usage_error(text, fragment, capsys, tmp_path):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--policy", text, "--out", str(tmp_path / "run")])
    assert exc.value.code == 2
    assert fragment in capsys.readouterr().err


@pytest.mark.parametrize("command", ["train", "attack", "evaluate", "export", "report", "demo"])
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    assert f"usage: qrobust {command}" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------------------------------
# missing data
# ---------------------------------------------------------------------------------------------------------------------
def test_missing_data_dir_gives_one_clear_error_line(tmp_path, capsys):
    missing = tmp_path / "nowhere"
    rc = main(["train", "--data-dir", str(missing), "--epochs", "1", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert rc == 2
    assert f"data_dir={str(missing)!r} does not exist" in err
    assert "cifar-10-batches-py" in err and "QROBUST_DATA_DIR" in err
    assert "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_empty_data_dir_lists_where_it_looked(tmp_path, capsys):
    rc = main(["evaluate", str(tmp_path / "m.h5"), "--data-dir", str(tmp_path)])
    assert rc == 2
    assert "does not exist; expected a .h5/.keras file" in capsys.readouterr().err
    open(tmp_path / "m.h5", "w").close()
    rc = main(["train", "--data-dir", str(tmp_path), "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert rc == 2 and "CIFAR-10 not found in" in err and str(tmp_path) in err


# ---------------------------------------------------------------------------------------------------------------------
# train -> evaluate -> export -> report, end to end on 256 real images
# ---------------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, shared_data):
    out = tmp_path_factory.mktemp("cli") / "run"
    rc = main(["train", "--model", "resnet8", "--dataset", "cifar10", "--recipe", "stq_jr", "--data-dir",
               str(shared_data / "cifar10"), "--epochs", "1", "--train-samples", "256", "--val-samples", "64",
               "--out", str(out), "--verbose", "0"])
    assert rc == 0
    return out


def test_train_writes_config_history_and_model(trained_run):
    from qrobust_keras.models import load_model
    from qrobust_keras.recipes import read_history

    config = json.loads((trained_run / "run_config.json").read_text())
    assert config["status"] == "complete"
    assert config["recipe"]["name"] == "stq_jr" and config["recipe"]["epochs"] == 1
    assert config["run_info"]["n_train"] == 256 and config["run_info"]["n_test"] == 64
    rows = read_history(str(trained_run / "history.csv"))
    assert [r["epoch"] for r in rows] == [0]
    assert 0 <= rows[0]["val_accuracy"] <= 1 and rows[0]["lr"] == pytest.approx(1e-3)
    assert 0 < rows[0]["cpu_seconds"] and 0 < rows[0]["seconds"]  # CPU time counts every thread: may exceed wall
    assert "jr" in rows[0]  # the JR callback ran (its first epoch is the warm-up: penalty 0)
    recal = config["bn_recalibration"]  # stochastic-ternary recipe: BatchNorm re-estimated after training
    assert recal["samples"] == 256 and len(recal["std_change"]) == 7 and 0 <= recal["val_accuracy"] <= 1
    model = load_model(str(trained_run / "model.h5"))
    assert type(model.get_layer("stack2_conv_a")).__name__ == "QConv2D"
    assert not (trained_run / "backup").exists() or not os.listdir(trained_run / "backup")


def _test_images(shared_data, n):
    data = datasets.load_dataset("cifar10", str(shared_data / "cifar10"), n_test=n, seed=0, verbose=0, need_train=False)
    return data.test[0].astype(np.float32) / 255.0, data.test[1]


def test_evaluate_h5_and_savedmodel_agree_with_direct_prediction(trained_run, shared_data, tmp_path):
    from qrobust_keras.models import load_model

    report = tmp_path / "report"
    rc = main(["evaluate", str(trained_run / "model.h5"), "--data-dir", str(shared_data / "cifar10"),
               "--attacks", "fgsm,pgd", "--eps", "2/255,8/255", "-n", "40", "--steps", "3", "--out", str(report),
               "--verbose", "0"])
    assert rc == 0
    ev = json.loads((report / "evaluation.json").read_text())
    model = load_model(str(trained_run / "model.h5"))
    x, y = _test_images(shared_data, 40)
    assert ev["n"] == 40
    assert ev["clean"] == pytest.approx(np.mean(model.predict(x, verbose=0).argmax(1) == y))
    assert ev["eps"] == [2 / 255, 8 / 255]
    for lab in ("2/255", "8/255"):
        assert ev["worst"][lab] <= min(ev["results"]["fgsm"][lab], ev["results"]["pgd"][lab]) <= ev["clean"]
    assert (report / "accuracy_vs_eps.png").stat().st_size > 1000
    assert "| **worst case** |" in (report / "evaluation.md").read_text()

    saved = tmp_path / "saved_model"
    model.save(str(saved), save_format="tf")
    rc = main(["evaluate", str(saved), "--data-dir", str(shared_data / "cifar10"), "--attacks", "fgsm",
               "--eps", "8/255", "-n", "40", "--out", str(tmp_path / "report_sm"), "--verbose", "0"])
    assert rc == 0
    ev_sm = json.loads((tmp_path / "report_sm" / "evaluation.json").read_text())
    assert ev_sm["clean"] == ev["clean"]
    assert ev_sm["results"]["fgsm"]["8/255"] == ev["results"]["fgsm"]["8/255"]


def test_export_int8_with_c_array_then_attack_the_tflite_file(trained_run, shared_data, tmp_path, capsys):
    from qrobust_keras.export import TFLiteModel

    out = tmp_path / "export"
    rc = main(["export", str(trained_run / "model.h5"), "--int8", "--representative-data",
               str(shared_data / "cifar10"), "--samples", "64", "--c-array", "--out", str(out), "--verbose", "0"])
    assert rc == 0
    summary = json.loads((out / "export.json").read_text())
    tfl = out / "model.int8.tflite"
    assert summary["export"]["int8"] is True and summary["export"]["size_bytes"] == tfl.stat().st_size
    assert summary["export"]["agreement"] >= 0.9
    assert summary["tflm"]["all_ops_supported"] is True and summary["tflm"]["arena_bytes"] > 10_000
    cc = [p for p in summary["c_array"] if p.endswith(".cc")][0]
    assert f"{tfl.stat().st_size} bytes" in open(cc).read()
    capsys.readouterr()

    rc = main(["attack", str(tfl), "--data-dir", str(shared_data / "cifar10"), "--eps", "8/255", "-n", "24",
               "--queries", "20", "--out", str(tmp_path / "tfl_report"), "--verbose", "0"])
    assert rc == 0
    ev = json.loads((tmp_path / "tfl_report" / "evaluation.json").read_text())
    x, y = _test_images(shared_data, 24)
    assert ev["model_kind"] == "tflite" and list(ev["results"]) == ["square"]
    # scored on the reference kernels (what TFLite Micro computes), searched on LiteRT's default ones
    assert ev["clean"] == pytest.approx(np.mean(TFLiteModel(str(tfl), kernels="reference").predict(x).argmax(1) == y))
    assert "kernels='default'" in ev["robustness_report"]["settings"]["search_model"]
    assert ev["results"]["square"]["8/255"] <= ev["clean"]
    assert ev["upper_bound"] is True and "upper bound" in (tmp_path / "tfl_report" / "evaluation.md").read_text()

    # the file by transfer from its Keras model plus Square on the file: a worst case, not an upper bound
    rc = main(["attack", str(tfl), "--data-dir", str(shared_data / "cifar10"), "--eps", "8/255", "-n", "8",
               "--suite", "quick", "--source-model", str(trained_run / "model.h5"),
               "--out", str(tmp_path / "transfer"), "--verbose", "0"])
    assert rc == 0
    ev = json.loads((tmp_path / "transfer" / "evaluation.json").read_text())
    assert ev["upper_bound"] is False and "transferred" in ev["suite_label"] and "quick" in ev["suite_label"]
    assert list(ev["results"]) == ["fgsm", "pgd", "pgd-cw", "apgd-ce", "square"]
    capsys.readouterr()
    rc = main(["attack", str(tfl), "--data-dir", str(shared_data / "cifar10"), "--suite", "standard", "--attacks",
               "pgd", "-n", "4", "--out", str(tmp_path / "y")])
    assert rc == 2 and "either --suite or --attacks" in capsys.readouterr().err

    rc = main(["attack", str(tfl), "--data-dir", str(shared_data / "cifar10"), "--attacks", "pgd", "-n", "4",
               "--out", str(tmp_path / "x")])
    assert rc == 2 and "need gradients; a .tflite file can only be attacked with black-box" in capsys.readouterr().err


def test_report_renders_history_and_evaluations(trained_run, shared_data):
    rc = main(["evaluate", str(trained_run / "model.h5"), "--data-dir", str(shared_data / "cifar10"), "--attacks",
               "fgsm", "--eps", "8/255", "-n", "16", "--out", str(trained_run / "eval"), "--verbose", "0"])
    assert rc == 0
    rc = main(["report", str(trained_run)])
    assert rc == 0
    text = (trained_run / "report.md").read_text()
    ev = json.loads((trained_run / "eval" / "evaluation.json").read_text())
    assert "recipe **stq_jr**" in text and "1 finished epochs" in text
    assert f"{100 * ev['clean']:.1f}%" in text and "Evaluation: eval" in text
    assert (trained_run / "training.png").stat().st_size > 1000
    assert (trained_run / "accuracy_vs_eps.png").stat().st_size > 1000


def test_report_of_an_empty_folder_says_what_is_missing(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "holds neither history.csv nor any evaluation.json" in capsys.readouterr().err


def test_cw_l2_reports_success_and_distortion_of_the_examples_it_found():
    from qrobust_keras._keras import keras

    rng = np.random.default_rng(0)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.layers.Flatten(input_shape=(4, 4, 1)), keras.layers.Dense(3)])
    x = rng.uniform(0.2, 0.8, size=(12, 4, 4, 1)).astype("float32")
    y = model.predict(x, verbose=0).argmax(1)
    y[:2] = (y[:2] + 1) % 3  # two samples misclassified clean: never counted as attacked
    ev = run_attacks(model, "keras", x, y, ["cw_l2"], [0.01, 0.9])
    cw = ev["cw_l2_distortion"]
    assert cw["attacked"] == 10
    assert ev["clean"] == pytest.approx(10 / 12)
    # a linear model with inputs away from the box edges is fooled at some L2 distance for every sample
    assert cw["success"] == 1.0
    assert 0 < cw["median_l2"] and cw["median_linf"] <= cw["median_l2"]
    assert ev["results"]["cw_l2"]["0.9"] == 0.0  # every example found lies within L-inf 0.9
    assert ev["results"]["cw_l2"]["0.9"] <= ev["results"]["cw_l2"]["0.01"] <= ev["clean"]
    assert "C&W-L2 (minimum norm): fools 100.0% of the 10" in evaluation_markdown(ev, "t")
