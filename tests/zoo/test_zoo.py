"""The model zoo: publishing writes cards from measurements of the shipped files, loading checks every file, the
README leaderboard is rendered from the cards, and the shipped entries' cards agree with a fresh measurement."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import qrobust_keras as qrk
from qrobust_keras import zoo
from qrobust_keras.export import TFLiteModel
from qrobust_keras.evaluation.suite import suite_plan
from qrobust_keras.zoo import cards
from qrobust_keras.zoo.eval_sets import load_eval_set
from qrobust_keras.zoo.publish import evaluate_targets, publish, publish_reference, republish
from qrobust_keras.zoo.specs import REFERENCE_SPECS, SPECS

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TARGETS = [{"what": ">= 0% clean", "metric": "clean_accuracy", "min": 0.0},
           {"what": ">= 101% at 8/255", "metric": "robust_accuracy/8/255", "min": 1.01}]


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (12, 32, 32, 3)).astype(np.float32) / 255, np.arange(12) % 10


@pytest.fixture(scope="module")
def published(images, tmp_path_factory):
    """A tiny int4 ResNet-8 published into a scratch zoo with the quick suite."""
    folder = tmp_path_factory.mktemp("zoo")
    qrk._keras.keras.utils.set_random_seed(0)
    model = qrk.models.resnet8(policy="int4", filters=4)
    model.save(folder / "trained.h5")
    x, y = images
    card = publish("tiny", str(folder / "trained.h5"), (x, y), dataset="cifar10", eps=[2 / 255, 8 / 255],
                   representative_data=x, suite="quick", root=str(folder / "zoo"), targets=TARGETS,
                   cache=str(folder / "cache"), verbose=0, commands=["echo reproduce"])
    return folder, card


def test_the_card_holds_what_the_shipped_files_measure(published, images):
    folder, card = published
    root = str(folder / "zoo")
    x, y = images
    assert zoo.list(root) == ["tiny"] and zoo.card("tiny", root) == json.loads(json.dumps(card))
    assert set(zoo.REQUIRED_KEYS) <= set(card)
    assert sorted(card["files"]) == ["evaluation.json", "export.json", "model.h5", "model.int8.tflite"]
    zoo.verify("tiny", root)
    model = zoo.load("tiny", root)
    clean = float(np.mean(model.predict(x, verbose=0).argmax(1) == y))
    assert card["clean_accuracy"] == pytest.approx(clean)
    tfl = TFLiteModel(zoo.tflite_path("tiny", root), kernels="reference")   # what TFLite Micro computes
    assert card["int8"]["kernels"] == "reference" and "as TFLite Micro computes" in cards.render_markdown(card)
    assert card["int8"]["accuracy"] == pytest.approx(float(np.mean(tfl.predict(x).argmax(1) == y)))
    assert card["int8"]["file_bytes"] == os.path.getsize(zoo.tflite_path("tiny", root))
    exported = json.load(open(os.path.join(root, "tiny", "export.json")))
    assert exported["export"]["path"] == "model.int8.tflite"  # not the machine's scratch folder
    report = qrk.evaluation.RobustnessReport.from_dict(json.load(open(os.path.join(root, "tiny",
                                                                                    "evaluation.json"))))
    assert list(card["robust_accuracy"].values()) == pytest.approx(report.robust_accuracy)
    assert all(r <= card["clean_accuracy"] for r in card["robust_accuracy"].values())
    assert card["suite"] == "quick" and "quick (not standard)" in card["suite_settings"]["suite_label"]
    assert [t["met"] for t in card["targets"]] == [True, False]  # an impossible target is reported missed
    text = zoo.card_markdown(card)
    assert "**Targets missed:** >= 101% at 8/255" in text and "echo reproduce" in text


def test_a_corrupted_or_unknown_entry_is_refused_naming_the_file(published, tmp_path):
    import shutil

    folder, _ = published
    root = tmp_path / "copy"
    shutil.copytree(folder / "zoo", root)
    tfl = root / "tiny" / "model.int8.tflite"
    tfl.write_bytes(tfl.read_bytes()[:100])
    with pytest.raises(zoo.ZooError, match=r"model.int8.tflite.* is corrupted or truncated \(100 bytes"):
        zoo.load("tiny", str(root))
    os.remove(tfl)
    with pytest.raises(zoo.ZooError, match=r"model.int8.tflite.* is missing"):
        zoo.tflite_path("tiny", str(root))
    with pytest.raises(zoo.ZooError, match=r"name='nope' is not a zoo model; available: tiny"):
        zoo.card("nope", str(root))
    (root / "tiny" / "card.json").write_text("{")
    with pytest.raises(zoo.ZooError, match="cannot be read"):
        zoo.card("tiny", str(root))


def test_an_interrupted_publish_resumes_from_the_budgets_it_evaluated(published, images, capsys):
    folder, card = published
    x, y = images
    again = publish("tiny", str(folder / "trained.h5"), (x, y), dataset="cifar10", eps=[2 / 255, 8 / 255],
                    representative_data=x, suite="quick", root=str(folder / "zoo2"), cache=str(folder / "cache"),
                    verbose=1)
    out = capsys.readouterr().out
    assert out.count("taken from") == 2
    assert again["robust_accuracy"] == card["robust_accuracy"]
    # another model (another sha256) never reuses them: each saved budget is filed and keyed under the sha256 of
    # the model file it measured
    model_sha = card["files"]["model.h5"]
    saved = sorted(os.listdir(folder / "cache"))
    assert len(saved) == 2 and all(name.startswith(model_sha[:16] + "_quick_") for name in saved)
    for name in saved:
        assert json.loads((folder / "cache" / name).read_text())["key"]["model_sha256"] == model_sha


def test_a_budget_killed_between_seed_blocks_resumes_at_the_block_it_was_in(published, images, tmp_path, capsys,
                                                                              monkeypatch):
    """Each seed block's report is kept as soon as it is computed; a rerun takes the finished blocks, evaluates the
    rest, and the joined report is per sample the unsharded evaluation with the same blocks."""
    import qrobust_keras.evaluation as evaluation
    from qrobust_keras.zoo.budgets import evaluate_per_budget

    x, y = images
    model = zoo.load("tiny", str(published[0] / "zoo"))
    kwargs = dict(suite="quick", seed=0, scale="image", clip=(0.0, 1.0), name="tiny", cache=str(tmp_path),
                  model_sha256="ab" * 32, verbose=1, block=8)
    real = evaluation.evaluate_robustness

    def killed_in_block_two(*args, **kw):
        if kw.get("shard") == (1, 2):
            raise KeyboardInterrupt("killed")
        return real(*args, **kw)

    monkeypatch.setattr(evaluation, "evaluate_robustness", killed_in_block_two)
    with pytest.raises(KeyboardInterrupt):
        evaluate_per_budget(model, x, y, [8 / 255], **kwargs)
    assert [f.endswith(".block0of2.json") for f in os.listdir(tmp_path)] == [True]
    monkeypatch.setattr(evaluation, "evaluate_robustness", real)
    capsys.readouterr()
    report = evaluate_per_budget(model, x, y, [8 / 255], **kwargs)
    assert "seed block 1 of 2 taken from" in capsys.readouterr().out
    whole = real(model, x, y, eps=[8 / 255], suite="quick", seed=0, batch_size=8, verbose=0)
    assert report.robust == whole.robust and report.broken_by == whole.broken_by
    assert report.robust_accuracy == whole.robust_accuracy
    assert len(os.listdir(tmp_path)) == 1  # the budget's report; its block files are gone


def test_an_entry_is_republished_from_its_own_files_with_more_budgets(published, images, tmp_path, capsys):
    import shutil

    folder, card = published
    x, y = images
    root = tmp_path / "zoo"
    shutil.copytree(folder / "zoo", root)
    old = zoo.card("tiny", str(root))
    old["training"] = {"epochs": 48, "data": "run folder gone"}   # the facts a lost run folder can no longer give
    (root / "tiny" / "card.json").write_text(json.dumps(old))
    again = republish("tiny", (x, y), root=str(root), dataset="cifar10", eps=[1 / 255, 2 / 255, 8 / 255],
                      representative_data=x, suite="quick", cache=str(tmp_path / "cache"), verbose=1)
    out = capsys.readouterr().out
    assert out.count("taken from the entry's earlier evaluation") == 2
    assert again["training"] == old["training"] and again["recipe"] == card["recipe"]
    assert again["robust_accuracy"]["2/255"] == card["robust_accuracy"]["2/255"]
    assert again["robust_accuracy"]["8/255"] == card["robust_accuracy"]["8/255"]
    assert list(again["robust_accuracy"]) == ["1/255", "2/255", "8/255"]
    assert again["files"]["model.h5"] == card["files"]["model.h5"]
    zoo.verify("tiny", str(root))
    # another seed is another evaluation: nothing is reused, and the reason is printed (the check republish makes
    # before it evaluates anything)
    from qrobust_keras.zoo.budgets import reusable_budgets

    report = qrk.evaluation.RobustnessReport.from_json(root / "tiny" / "evaluation.json")
    model = zoo.load("tiny", str(root))
    same = dict(suite="quick", scale=report.settings["scale"], clip=(0.0, 1.0), verbose=1)
    assert sorted(reusable_budgets(report, model, x, y, seed=report.settings["seed"], **same)) == \
        sorted(report.eps)
    assert reusable_budgets(report, model, x, y, seed=1, **same) == {}
    assert "not reused: its seed differ" in capsys.readouterr().out
    # an evaluation made under earlier settings of the suite is not reused either
    report.settings["attack_kwargs"]["square"] = {"queries": 1}
    assert reusable_budgets(report, model, x, y, seed=report.settings["seed"], **same) == {}
    assert "not reused: its suite settings differ" in capsys.readouterr().out


def test_a_report_split_per_budget_concatenates_back(published, tmp_path):
    folder, card = published
    report = qrk.evaluation.RobustnessReport.from_json(folder / "zoo" / "tiny" / "evaluation.json")
    parts = report.split()
    assert [p.eps for p in parts] == [[e] for e in report.eps]
    assert [p.settings["eps_labels"] for p in parts] == [["2/255"], ["8/255"]]
    joined = qrk.evaluation.RobustnessReport.concat(parts)
    for field in ("eps", "accuracy", "robust_accuracy", "robust", "broken_by", "clean_correct", "seconds"):
        assert getattr(joined, field) == getattr(report, field), field
    assert joined.settings == report.settings


def test_reference_cards_ship_no_files_and_join_the_leaderboard(published, images, tmp_path):
    _, card = published
    x, y = images
    qrk._keras.keras.utils.set_random_seed(1)
    ref = publish_reference("ref_net", qrk.models.resnet8(policy="float", filters=4), (x, y), dataset="cifar10",
                            eps=[2 / 255, 8 / 255], representative_data=x, root=str(tmp_path), suite="quick",
                            verbose=0, pending_eps=[1 / 255])
    saved = json.loads((tmp_path / "ref_net.json").read_text())
    assert saved["files"] == {} and saved["shipped"] is False and saved["name"] == "ref_net"
    assert saved["budgets_pending"] == ["1/255"] and list(saved["robust_accuracy"]) == ["2/255", "8/255"]
    assert "**Not yet measured:** 1/255" in zoo.card_markdown(saved)
    assert cards.reference_cards(str(tmp_path)) == [saved] and ref["clean_accuracy"] == saved["clean_accuracy"]
    table = cards.leaderboard_markdown([card], [saved])
    assert "| `tiny` | quick |" in table and "| ref_net (reference, not shipped) | quick |" in table
    assert "missed: >= 101% at 8/255" in table


def test_the_readme_leaderboard_is_rewritten_between_its_markers(published, tmp_path):
    _, card = published
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{cards.BEGIN}\nstale\n{cards.END}\ntail\n")
    assert cards.update_readme(str(readme), [card], check=True) is True
    assert "stale" in readme.read_text()  # check mode writes nothing
    assert cards.update_readme(str(readme), [card]) is True
    text = readme.read_text()
    assert "stale" not in text and "`tiny`" in text and text.endswith(f"{cards.END}\ntail\n")
    assert cards.update_readme(str(readme), [card]) is False
    readme.write_text("# no markers\n")
    with pytest.raises(ValueError, match="lacks the leaderboard markers"):
        cards.update_readme(str(readme), [card])


def test_the_repository_readme_agrees_with_the_shipped_cards():
    result = subprocess.run([sys.executable, "-m", "qrobust_keras.zoo.cards", "--readme",
                             os.path.join(REPO, "README.md"), "--check"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr + "\nrun: python -m qrobust_keras.zoo.cards --readme README.md"


def test_targets_are_read_from_the_card():
    card = {"clean_accuracy": 0.8, "robust_accuracy": {"2/255": 0.44}}
    got = evaluate_targets(card, [{"what": "a", "metric": "clean_accuracy", "min": 0.8},
                                  {"what": "b", "metric": "robust_accuracy/2/255", "min": 0.45},
                                  {"what": "c", "metric": "robust_accuracy/8/255", "min": 0.1}])
    assert [t["met"] for t in got] == [True, False, None]  # 8/255 is not on the card: not measured, not failed
    card.update(name="m", dataset="cifar10", suite="standard", targets=got, int8={})
    text = cards.render_markdown({**card, "eval_samples": 1, "files": {}})
    assert "**Targets missed:** b (measured 44.0%)" in text and "**Targets not yet measured:** c" in text
    assert "| missed: b; not yet measured: c |" in cards.leaderboard_markdown([card], [])
    # a card measured with earlier settings of its suite says so wherever its numbers are shown
    assert cards.suite_status(card) == "standard"  # no recorded settings (older cards): shown as named
    plan = suite_plan("standard", 10).attack_kwargs
    card["suite_settings"] = {"attack_kwargs": plan}
    assert cards.suite_status(card) == "standard"
    card["suite_settings"] = {"attack_kwargs": {**plan, "square": {"queries": 5000, "p_init": 0.8}}}
    assert cards.suite_status(card).startswith("standard (earlier settings: an upper bound")
    text = cards.render_markdown({**card, "eval_samples": 1, "files": {}})
    assert "**Measured with earlier settings of the standard suite**" in text
    assert "| standard (earlier settings: an upper bound until republished) |" in \
        cards.leaderboard_markdown([card], [])


def test_leaderboard_columns_are_grouped_by_input_and_ordered_by_budget():
    base = {"dataset": "speech_commands", "suite": "standard", "clean_accuracy": 0.9, "int8": {}, "targets": []}
    ours = {**base, "name": "a", "robust_accuracy": {"MFCC 0.25": 0.5, "waveform 0.001": 0.1, "waveform 0.0005": 0.2}}
    ref = {**base, "name": "r", "robust_accuracy": {"MFCC 0.1": 0.7, "MFCC 1": 0.0}}
    assert "| MFCC 0.1 | MFCC 0.25 | MFCC 1 | waveform 0.0005 | waveform 0.001 |" in \
        cards.leaderboard_markdown([ours], [ref])
    image = {**base, "dataset": "cifar10", "name": "i", "robust_accuracy": {"8/255": 0.1, "1/255": 0.5, "2/255": 0.4}}
    assert "| 1/255 | 2/255 | 8/255 |" in cards.leaderboard_markdown([image], [])


@pytest.mark.parametrize("name", zoo.list())
def test_each_shipped_entry_measures_what_its_card_says(name, shared_data):
    """Clean and int8 accuracy of the shipped files on the card's evaluation set, measured again."""
    zoo.verify(name)
    card = zoo.card(name)
    folder = {"cifar10": shared_data / "cifar10", "speech_commands": shared_data / "speech_commands"}[card["dataset"]]
    evs = load_eval_set(card["dataset"], str(folder))
    x, y = evs.data
    assert card["eval_samples"] == len(x) and card["eval_set"] == evs.description
    if card["dataset"] == "cifar10":
        assert len(x) == 1017
    else:  # audio: MFCC and waveform budgets, each from its own evaluation file; every one measured or pending
        labels = list(card["robust_accuracy"]) + card["budgets_pending"]
        assert len(labels) == len(SPECS[name]["eps"]) + len(SPECS[name]["waveform_eps"])
        assert {b.split()[0] for b in labels} == {"MFCC", "waveform"}
        measured_wave = any(b.startswith("waveform") for b in card["robust_accuracy"])
        assert ("evaluation_waveform.json" in card["files"]) == measured_wave
    model = zoo.load(name)
    assert float(np.mean(model.predict(x, verbose=0).argmax(1) == y)) == pytest.approx(card["clean_accuracy"],
                                                                                        abs=2e-3)
    tfl = TFLiteModel(zoo.tflite_path(name), kernels=card["int8"].get("kernels") or "default")
    assert float(np.mean(tfl.predict(x).argmax(1) == y)) == pytest.approx(card["int8"]["accuracy"], abs=2e-3)
    assert card["suite"] == "standard" and card["suite_settings"]["suite_label"].startswith("standard")
    assert name in SPECS and card["commands"] == SPECS[name]["commands"]


def test_reference_specs_and_zoo_specs_do_not_collide():
    assert not set(SPECS) & set(REFERENCE_SPECS)


def test_an_audio_entry_carries_mfcc_and_waveform_budgets(tmp_path, capsys):
    """A DS-CNN entry is measured on MFCCs and, behind the differentiable front end, on the same clips' waveforms;
    the card's budgets say which input they perturb, and each comes from its own evaluation file."""
    qrk._keras.keras.utils.set_random_seed(0)
    qrk.models.ds_cnn(policy="int4", filters=8).save(tmp_path / "kws.h5")
    waves = np.random.default_rng(0).uniform(-0.3, 0.3, (6, 16000)).astype(np.float32)
    feats, y = qrk.data.mfcc(waves), np.arange(6) % 12
    card = publish("kws", str(tmp_path / "kws.h5"), (feats, y), dataset="speech_commands", eps=[0.25],
                   scale="audio", representative_data=feats, suite="quick", root=str(tmp_path / "zoo"), verbose=0,
                   waveform_data=(waves.reshape(-1, *qrk.data.WAVEFORM_FOLD), y), waveform_eps=[5e-4],
                   pending_waveform_eps=[1e-3], cache=str(tmp_path / "cache"))
    assert list(card["robust_accuracy"]) == ["MFCC 0.25", "waveform 0.0005"]
    assert card["budgets_pending"] == ["waveform 0.001"] and "evaluation_waveform.json" in card["files"]
    entry = tmp_path / "zoo" / "kws"
    mfcc_report = qrk.evaluation.RobustnessReport.from_json(entry / "evaluation.json")
    wave_report = qrk.evaluation.RobustnessReport.from_json(entry / "evaluation_waveform.json")
    assert card["robust_accuracy"]["MFCC 0.25"] == mfcc_report.robust_accuracy[0]
    assert card["robust_accuracy"]["waveform 0.0005"] == wave_report.robust_accuracy[0]
    assert wave_report.settings["clip_min"] == -1.0 and wave_report.n == 6
    # the same clips: the front end computes the features the MFCC path was given
    assert wave_report.clean_correct == mfcc_report.clean_correct
    assert set(card["per_attack"]["pgd"]) == {"MFCC 0.25", "waveform 0.0005"}
    assert "| MFCC 0.25 | waveform 0.0005 |" in cards.leaderboard_markdown([card], [])
    assert "eps waveform 0.0005" in cards.render_markdown(card)
    # republished with one more waveform budget: both earlier budgets are taken from the entry's own reports
    capsys.readouterr()
    again = republish("kws", (feats, y), root=str(tmp_path / "zoo"), dataset="speech_commands", eps=[0.25],
                      scale="audio", representative_data=feats, suite="quick", cache=str(tmp_path / "cache2"),
                      waveform_data=(waves.reshape(-1, *qrk.data.WAVEFORM_FOLD), y), waveform_eps=[5e-4, 1e-3])
    assert capsys.readouterr().out.count("taken from the entry's earlier evaluation") == 2
    assert list(again["robust_accuracy"]) == ["MFCC 0.25", "waveform 0.0005", "waveform 0.001"]
    assert again["robust_accuracy"]["waveform 0.0005"] == card["robust_accuracy"]["waveform 0.0005"]
    assert again["budgets_pending"] == []


def test_publish_budget_selection_names_what_it_refuses():
    import argparse

    from qrobust_keras.zoo.publish import _pick_budgets, main

    parser = argparse.ArgumentParser()
    spec = SPECS["ds_cnn_int4_at"]
    assert _pick_budgets(parser, "--eps", None, spec["eps"], "x") == spec["eps"]
    assert _pick_budgets(parser, "--waveform-eps", "none", spec["waveform_eps"], "x") == []
    assert _pick_budgets(parser, "--waveform-eps", "0.0005,1e-4", spec["waveform_eps"], "x") == [1e-4, 5e-4]
    with pytest.raises(SystemExit):
        _pick_budgets(parser, "--eps", "0.3", spec["eps"], "x")
    with pytest.raises(SystemExit):  # a Speech Commands entry needs its data folder, not CIFAR-10's
        main(["ds_cnn_int4_at", "--cifar10", "/nonexistent"])


def test_publish_cli_passes_its_cache_folder_on(monkeypatch, tmp_path):
    # --cache is where the evaluated blocks are kept (a folder that outlives the machine, e.g. one committed);
    # without it the default is runs/zoo_eval/NAME under the working folder
    from qrobust_keras.zoo import eval_sets, publish as publish_module

    seen = []
    x, y = np.zeros((2, 32, 32, 3), np.float32), np.zeros(2, np.int64)
    monkeypatch.setattr(eval_sets, "load_eval_set",
                        lambda dataset, folder: eval_sets.EvalSet((x, y), x, "two blank images", "images in [0, 1]"))
    monkeypatch.setattr(publish_module, "republish", lambda name, data, **kw: seen.append(kw["cache"]) or
                        zoo.card(name))
    name = "resnet8_int4_at2"
    assert publish_module.main([name, "--cifar10", "unused", "--cache", str(tmp_path / "kept")]) == 0
    assert publish_module.main([name, "--cifar10", "unused"]) == 0
    assert seen == [str(tmp_path / "kept"), os.path.join("runs", "zoo_eval", name)]


def test_zoo_list_shows_each_cards_suite_status(capsys):
    from qrobust_keras.cli import main

    assert main(["zoo", "list"]) == 0
    out = capsys.readouterr().out
    for name in zoo.list():  # a card of earlier suite settings says so here too, not just "standard"
        assert f"{name}" in out and f"worst case ({cards.suite_status(zoo.card(name))})" in out


def test_training_facts_count_epochs_a_resumed_run_lost_the_history_row_of(tmp_path):
    from qrobust_keras.zoo.publish import _training_facts

    (tmp_path / "run_config.json").write_text(json.dumps({"run_info": {"source": "images in DIR", "n_train": 9}}))
    (tmp_path / "history.csv").write_text("epoch,lr,seconds,cpu_seconds,val_accuracy\n"
                                          "1,0.1,10.0,8.0,0.5\n2,0.1,12.0,9.0,0.6\n")
    facts, _ = _training_facts(str(tmp_path), None)
    assert facts["epochs"] == 3 and facts["epochs_without_history"] == [0]
    assert facts["wall_seconds"] == 22.0 and facts["cpu_seconds"] == 17.0 and facts["final_val_accuracy"] == 0.6
    card = {"name": "x", "purpose": "", "dataset": "cifar10", "eval_samples": 1, "clean_accuracy": 0.5,
            "robust_accuracy": {}, "suite": "standard", "int8": {}, "files": {}, "training": facts}
    text = cards.render_markdown(card)
    assert "3 epochs" in text and "leave out epoch(s) 1," in text
    (tmp_path / "history.csv").write_text("epoch,seconds\n0,5.0\n1,6.0\n")
    facts, _ = _training_facts(str(tmp_path), None)
    assert facts["epochs"] == 2 and "epochs_without_history" not in facts


def test_int8_accuracy_not_measured_on_the_reference_kernels_is_marked():
    card = {"name": "m", "dataset": "cifar10", "suite": "standard", "clean_accuracy": 0.8,
            "robust_accuracy": {"2/255": 0.4}, "targets": [], "int8": {"accuracy": 0.79}}
    assert "| 79.0% (LiteRT default kernels) |" in cards.leaderboard_markdown([card], [])
    assert "accuracy of the file (LiteRT's default kernels) | 79.0% |" in \
        cards.render_markdown({**card, "eval_samples": 1, "files": {}})
    card["int8"]["kernels"] = "reference"
    assert "| 79.0% |" in cards.leaderboard_markdown([card], [])
    assert "accuracy of the file (reference kernels, as TFLite Micro computes) | 79.0% |" in \
        cards.render_markdown({**card, "eval_samples": 1, "files": {}})
