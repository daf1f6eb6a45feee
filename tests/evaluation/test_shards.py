"""Sharded evaluation: shards merged equal the unsharded evaluation per sample (deterministic and random attacks,
cascade, the quick suite), the checks that refuse shards that do not fit together, and the CLI's ``--shard`` and
``report --merge``."""

from __future__ import annotations

import copy
import json
import pickle

import numpy as np
import pytest

from qrobust_keras._keras import keras
from qrobust_keras.cli import main
from qrobust_keras.cli.parsing import parse_shard
from qrobust_keras.evaluation import RobustnessReport, evaluate_robustness, merge_summaries, run_attacks
from qrobust_keras.evaluation.shards import block_seed, model_fingerprint, shard_bounds

PER_SAMPLE = ("clean_correct", "robust", "broken_by", "clean_accuracy", "accuracy", "robust_accuracy", "n", "eps",
              "attacks", "settings", "model", "norm")


def _tiny_model(seed: int = 0, name: str = "tiny"):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.layers.Flatten(input_shape=(8, 8, 1)), keras.layers.Dense(16, activation="relu"),
                             keras.layers.Dense(3)], name=name)


@pytest.fixture(scope="module")
def setup():
    """A tiny 3-class model, 12 inputs in [0.1, 0.9] labelled by the model except two (misclassified clean)."""
    model = _tiny_model()
    x = np.random.default_rng(0).uniform(0.1, 0.9, size=(12, 8, 8, 1)).astype("float32")
    y = model.predict(x, verbose=0).argmax(1)
    y[[2, 9]] = (y[[2, 9]] + 1) % 3
    return model, x, y


def _assert_same_per_sample(merged: RobustnessReport, full: RobustnessReport) -> None:
    for field in PER_SAMPLE:
        assert getattr(merged, field) == getattr(full, field), field
    for field in ("mean_norm", "queries"):  # weighted means of the shards' means: equal up to float rounding
        for name in full.attacks:
            for a, b in zip(getattr(merged, field)[name], getattr(full, field)[name]):
                assert (a is None and b is None) or a == pytest.approx(b, rel=1e-9), (field, name)


CASES = {
    "fgsm+pgd": dict(attacks=["fgsm", "pgd"], eps=[0.03, 0.05], attack_kwargs={"pgd": {"steps": 3}}),
    "cascade with square": dict(attacks=["fgsm", "pgd", "square"], eps=[0.03, 0.05], cascade=True,
                                attack_kwargs={"pgd": {"steps": 3}, "square": {"queries": 30}}),
    "square": dict(attacks=["square"], eps=[0.05], attack_kwargs={"square": {"queries": 30}}),
    "quick suite": dict(suite="quick", eps=[0.03]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_three_shards_merged_equal_the_unsharded_evaluation_per_sample(setup, case):
    model, x, y = setup
    kwargs = dict(CASES[case], batch_size=4, seed=3, verbose=0)
    full = evaluate_robustness(model, x, y, **kwargs)
    shards = [evaluate_robustness(model, x, y, shard=(i, 3), **kwargs) for i in (2, 0, 1)]  # any order
    assert [s.settings["shard"]["start"] for s in shards] == [8, 0, 4] and [s.n for s in shards] == [4, 4, 4]
    merged = RobustnessReport.merge(shards)
    _assert_same_per_sample(merged, full)
    assert "shard" not in merged.settings and merged.settings["model_sha256"] == model_fingerprint(model)
    assert merged.total_seconds == pytest.approx(sum(s.total_seconds for s in shards))
    assert RobustnessReport.from_dict(json.loads(json.dumps(merged.to_dict()))) == merged
    # the attacks break some clean-correct samples and not all: the masks compared carry information
    assert 0 < full.robust_accuracy[-1] < full.clean_accuracy == 10 / 12


def test_random_draws_decide_samples_here_so_equality_is_not_trivial(setup):
    """PGD-3 from a random start and Square with 30 queries break different samples under different seeds on this
    model: the per-sample equality above holds only because each shard draws what the unsharded run draws for its
    samples."""
    model, x, y = setup
    settings = {"square": {"queries": 30}, "pgd": {"steps": 3}}
    for name in ("pgd", "square"):
        masks = {seed: evaluate_robustness(model, x, y, attacks=[name], eps=[0.03, 0.05], seed=seed, batch_size=4,
                                           attack_kwargs={name: settings[name]}, verbose=0).robust
                 for seed in (3, 4, 5)}
        assert len({json.dumps(m) for m in masks.values()}) > 1, name
    assert block_seed(3, 0) == 3 and len({block_seed(3, k) for k in range(3)}) == 3


def test_one_block_evaluations_keep_the_seed_of_the_attacks(setup):
    """At most one block of samples: the attack runs once with ``seed`` itself, as when called directly."""
    from qrobust_keras.attacks.registry import run_attack

    model, x, y = setup
    report = evaluate_robustness(model, x, y, attacks=["pgd"], eps=[0.1], seed=3, verbose=0,
                                 attack_kwargs={"pgd": {"steps": 3}})  # batch_size None: blocks of 256
    ok = np.asarray(report.clean_correct)
    x_adv = run_attack("pgd", model, x[ok], y[ok], 0.1, seed=3, verbose=0, overrides={"steps": 3})
    survived = model.predict(x_adv, verbose=0).argmax(1) == y[ok]
    assert np.asarray(report.robust[0])[ok].tolist() == survived.tolist()


def test_shard_bounds_cover_the_samples_once_in_whole_blocks():
    for n, count, block in [(1000, 3, 256), (12, 3, 4), (13, 3, 4), (7, 1, 256), (100, 7, 10)]:
        bounds = [shard_bounds(n, i, count, block) for i in range(count)]
        assert bounds[0][0] == 0 and bounds[-1][1] == n
        assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
        assert all(start % block == 0 and stop > start for start, stop in bounds)
    with pytest.raises(ValueError, match="shard count 4 exceeds the 3 seed block"):
        shard_bounds(12, 0, 4, 4)
    with pytest.raises(ValueError, match=r"shard must be \(index, count\) with 0 <= index < count; got shard=\(3, 3\)"):
        shard_bounds(12, 3, 3, 4)


# ---------------------------------------------------------------------------------------------------------------------
# shards that do not fit together
# ---------------------------------------------------------------------------------------------------------------------
FGSM = dict(attacks=["fgsm"], eps=[0.05], batch_size=4, seed=3, verbose=0)


@pytest.fixture(scope="module")
def fgsm_shards(setup):
    model, x, y = setup
    return [evaluate_robustness(model, x, y, shard=(i, 3), **FGSM) for i in range(3)]


def test_merge_refuses_shards_of_another_model(setup, fgsm_shards):
    model, x, y = setup
    other = keras.models.clone_model(model)
    other.set_weights([w + 0.01 for w in model.get_weights()])
    assert other.name == model.name
    odd = evaluate_robustness(other, x, y, shard=(1, 3), **FGSM)
    with pytest.raises(ValueError, match="shards differ in model_sha256: shard 0/3 has model_sha256='[0-9a-f]{64}', "
                                         "shard 1/3 has"):
        RobustnessReport.merge([fgsm_shards[0], odd, fgsm_shards[2]])


@pytest.mark.parametrize("change, message", [({"seed": 4}, "shards differ in seed: shard 0/3 has seed=3, shard 1/3 "
                                                           "has seed=4"),
                                             ({"eps": [0.06]}, "shards differ in eps: shard 0/3 has [0.05], shard 1/3 "
                                                               "has [0.06]")])
def test_merge_refuses_shards_of_other_settings(setup, fgsm_shards, change, message):
    model, x, y = setup
    odd = evaluate_robustness(model, x, y, shard=(1, 3), **{**FGSM, **change})
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        RobustnessReport.merge([fgsm_shards[0], odd, fgsm_shards[2]])


def test_merge_refuses_shards_of_other_samples(setup, fgsm_shards):
    model, x, y = setup
    odd = evaluate_robustness(model, x[::-1].copy(), y[::-1].copy(), shard=(1, 3), **FGSM)
    with pytest.raises(ValueError, match="shards differ in samples"):
        RobustnessReport.merge([fgsm_shards[0], odd, fgsm_shards[2]])


def test_merge_refuses_a_missing_or_duplicated_shard_and_unsharded_reports(setup, fgsm_shards):
    a, b, c = fgsm_shards
    with pytest.raises(ValueError, match="shard\\(s\\) 1/3 missing: merge needs all 3 shards"):
        RobustnessReport.merge([a, c])
    with pytest.raises(ValueError, match=r"shard 1/3 is given twice \(reports\[1\] and reports\[2\]\)"):
        RobustnessReport.merge([a, b, copy.deepcopy(b), c])
    with pytest.raises(ValueError, match="at least one"):
        RobustnessReport.merge([])
    model, x, y = setup
    whole = evaluate_robustness(model, x, y, **FGSM)
    with pytest.raises(ValueError, match=r"reports\[0\] \(model 'tiny', n=12\) has no shard record"):
        RobustnessReport.merge([whole])
    cut = copy.deepcopy(b)
    cut.clean_correct.pop()
    with pytest.raises(ValueError, match=r"shard 1/3 should hold samples \[4, 8\) of 12"):
        RobustnessReport.merge([a, cut, c])


def test_evaluate_refuses_bad_shards(setup):
    model, x, y = setup
    for shard in [(3, 3), (-1, 2), (1, 0), ("a", "b"), (1,)]:
        with pytest.raises(ValueError, match=r"shard must be \(index, count\) with 0 <= index < count; got shard="):
            evaluate_robustness(model, x, y, shard=shard, **FGSM)
    with pytest.raises(ValueError, match="shard count 4 exceeds the 3 seed block"):
        evaluate_robustness(model, x, y, shard=(0, 4), **FGSM)
    with pytest.raises(ValueError, match="include cw_l2, which a sharded evaluation cannot run"):
        run_attacks(model, "keras", x, y, ["fgsm", "cw_l2"], [0.05], shard=(0, 3), batch_size=4)


def test_run_attacks_shards_merge_into_the_unsharded_summary(setup):
    model, x, y = setup
    args = (model, "keras", x, y, ["fgsm", "pgd"], [0.03, 0.1])
    kwargs = dict(steps=2, seed=1, batch_size=4)
    full = run_attacks(*args, **kwargs)
    merged = merge_summaries([run_attacks(*args, shard=(i, 3), **kwargs) for i in (1, 2, 0)])
    for key in ("n", "clean", "results", "worst", "eps", "attacks", "suite_label", "upper_bound"):
        assert merged[key] == full[key], key
    with pytest.raises(ValueError, match=r"evaluations\[0\] holds no robustness_report"):
        merge_summaries([{"n": 3}])


# ---------------------------------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text", ["3/3", "-1/2", "a/b", "1/0", "1", "1/2/3", ""])
def test_parse_shard_rejects_bad_values_naming_them(text):
    with pytest.raises(ValueError) as err:
        parse_shard(text)
    message = str(err.value)
    assert message.startswith("--shard must be I/N with 0 <= I < N") and f"got --shard {text!r}" in message
    assert parse_shard(" 2/3 ") == (2, 3)


def test_parse_shard_hints_that_shards_count_from_zero():
    with pytest.raises(ValueError, match=r"the last of 3 is 2/3"):
        parse_shard("3/3")


@pytest.mark.parametrize("value", ["3/3", "-1/2", "a/b", "1/0"])
def test_bad_shard_on_the_command_line_is_a_usage_error(value, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", str(tmp_path / "m.h5"), f"--shard={value}"])
    assert exc.value.code == 2
    assert f"--shard must be I/N with 0 <= I < N (shard I of N, counted from 0, e.g. 0/4); got --shard {value!r}" \
        in capsys.readouterr().err


@pytest.fixture(scope="module")
def cli_setup(tmp_path_factory):
    """A tiny saved CIFAR-shaped model and a generated CIFAR-10 folder of 30 test images it mostly classifies right."""
    root = tmp_path_factory.mktemp("shards_cli")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.layers.Conv2D(4, 3, strides=4, activation="relu", input_shape=(32, 32, 3)),
                              keras.layers.Flatten(), keras.layers.Dense(10)], name="tiny_cifar")
    model.save(str(root / "tiny.h5"))
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (30, 32, 32, 3), dtype=np.uint8)
    y = model.predict(x.astype(np.float32) / 255, verbose=0).argmax(1)
    y[::7] = (y[::7] + 1) % 10
    folder = root / "data" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    batches = {f"data_batch_{i}": (x[:2], y[:2]) for i in range(1, 6)}
    batches["test_batch"] = (x, y)
    for name, (images, labels) in batches.items():
        with open(folder / name, "wb") as f:
            pickle.dump({"labels": [int(v) for v in labels],
                         "data": images.transpose(0, 3, 1, 2).reshape(len(images), -1)}, f, protocol=2)
    return root


def _evaluate(cli_setup, out, *extra):
    return main(["evaluate", str(cli_setup / "tiny.h5"), "--data-dir", str(cli_setup / "data"), "--attacks",
                 "fgsm,pgd", "--steps", "2", "--eps", "4/255,16/255", "-n", "24", "--batch-size", "8", "--seed", "1",
                 "--out", str(out), "--verbose", "0", *extra])


def test_cli_shards_and_report_merge_write_the_unsharded_evaluation(cli_setup, tmp_path, capsys):
    assert _evaluate(cli_setup, tmp_path / "full") == 0
    for i in range(3):
        assert _evaluate(cli_setup, tmp_path / f"shard{i}", "--shard", f"{i}/3") == 0
    shard = json.loads((tmp_path / "shard1" / "evaluation.json").read_text())
    record = shard["robustness_report"]["settings"]["shard"]
    assert shard["n"] == 8 and (record["start"], record["stop"], record["n_total"]) == (8, 16, 24)
    assert "shard 1/3 (samples 8-15 of 24)" in (tmp_path / "shard1" / "evaluation.md").read_text()
    capsys.readouterr()

    merged_dir = tmp_path / "merged"
    dirs = [str(tmp_path / f"shard{i}") for i in (2, 0, 1)]
    assert main(["report", "--merge", *dirs, "--out", str(merged_dir)]) == 0
    assert "merged 3 shards (24 samples)" in capsys.readouterr().out
    full = json.loads((tmp_path / "full" / "evaluation.json").read_text())
    merged = json.loads((merged_dir / "evaluation.json").read_text())
    assert list(merged) == list(full)
    for key in set(full) - {"robustness_report"}:
        assert merged[key] == full[key], key
    _assert_same_per_sample(RobustnessReport.from_dict(merged["robustness_report"]),
                            RobustnessReport.from_dict(full["robustness_report"]))
    assert 0 < full["worst"]["4/255"] < full["clean"]  # some samples broken, some not
    assert (merged_dir / "evaluation.md").read_text() == (tmp_path / "full" / "evaluation.md").read_text()
    assert (merged_dir / "accuracy_vs_eps.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # a missing shard, a shard of other attack settings, another sample list (--seed also draws the -n samples), a
    # folder without evaluation.json: one error line each, and no --out folder left behind
    rc = main(["report", "--merge", dirs[0], dirs[1], "--out", str(tmp_path / "bad")])
    assert rc == 2 and "shard(s) 1/3 missing" in capsys.readouterr().err and not (tmp_path / "bad").exists()
    for option, value, message in (("--steps", "3", "shards differ in attack_kwargs"),
                                   ("--seed", "2", "shards differ in samples (samples_sha256")):
        assert _evaluate(cli_setup, tmp_path / "odd", "--shard", "1/3", option, value) == 0
        capsys.readouterr()
        rc = main(["report", "--merge", dirs[0], dirs[1], str(tmp_path / "odd"), "--out", str(tmp_path / "bad")])
        assert rc == 2 and message in capsys.readouterr().err
    rc = main(["report", "--merge", dirs[0], str(tmp_path), "--out", str(tmp_path / "bad")])
    assert rc == 2 and f"--merge {str(tmp_path)!r} holds no evaluation.json" in capsys.readouterr().err


def test_cli_report_takes_run_dir_or_merge(tmp_path, capsys):
    assert main(["report"]) == 2
    err = capsys.readouterr().err
    assert "give RUN_DIR" in err and "not neither" in err
    assert main(["report", str(tmp_path), "--merge", str(tmp_path)]) == 2
    assert "not both" in capsys.readouterr().err
    assert main(["report", "--merge", str(tmp_path)]) == 2
    assert "--merge needs --out DIR" in capsys.readouterr().err
