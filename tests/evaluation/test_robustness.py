"""evaluate_robustness: consistent numbers (worst case <= every attack), re-scoring, predict functions, errors."""

import numpy as np
import pytest

from qrobust_keras.attacks import fgsm, pgd
from qrobust_keras.evaluation import evaluate_robustness

EPS = [0.0, 0.5 / 255, 1 / 255]


@pytest.fixture(scope="module")
def report(eval_setup):
    model, x, y = eval_setup
    return evaluate_robustness(model, x, y, attacks=["fgsm", "pgd", "apgd-dlr"], eps=EPS, scale="quick",
                               verbose=0, attack_kwargs={"pgd": {"steps": 5}})


def test_numbers_are_consistent(eval_setup, report):
    model, x, y = eval_setup
    clean = (model.predict(x, verbose=0).argmax(1) == y)
    assert report.n == 120 and report.clean_accuracy == pytest.approx(clean.mean())
    assert 0.2 < report.clean_accuracy < 0.8
    assert report.clean_correct == clean.tolist()
    for i, e in enumerate(EPS):
        per_attack = [report.accuracy[a][i] for a in report.attacks]
        assert report.robust_accuracy[i] <= min(per_attack)
        assert max(per_attack) <= report.clean_accuracy
        assert report.robust_accuracy[i] == pytest.approx(np.mean(report.robust[i]))
        assert not np.any(np.array(report.robust[i]) & ~clean)  # robust implies clean-correct
    assert report.robust_accuracy[0] == report.clean_accuracy  # eps = 0
    assert report.robust_accuracy[2] < report.robust_accuracy[1] < report.clean_accuracy
    for a in report.attacks:
        assert report.mean_norm[a][2] == pytest.approx(1 / 255)  # L-inf attacks use the whole budget
        assert report.queries[a] == [None, None, None]
    assert report.settings["attack_kwargs"] == {"pgd": {"steps": 5}}
    assert any("inference-mode" in note for note in report.notes)


def test_rows_equal_direct_attack_calls(eval_setup, report):
    model, x, y = eval_setup
    clean = model.predict(x, verbose=0).argmax(1) == y
    idx = np.flatnonzero(clean)
    x_adv = fgsm(model, x[idx], y[idx], eps=1 / 255, verbose=0)
    survived = model.predict(x_adv, verbose=0).argmax(1) == y[idx]
    assert report.accuracy["fgsm"][2] == pytest.approx(survived.sum() / len(x))
    x_adv = pgd(model, x[idx], y[idx], eps=1 / 255, steps=5, step_size=0.25 / 255, verbose=0)
    assert report.accuracy["pgd"][2] == pytest.approx(np.sum(model.predict(x_adv, verbose=0).argmax(1) == y[idx])
                                                      / len(x))


def test_cascade_rows_are_cumulative(eval_setup, report):
    model, x, y = eval_setup
    cascade = evaluate_robustness(model, x, y, attacks=["fgsm", "pgd", "apgd-dlr"], eps=[1 / 255], scale="quick",
                                  verbose=0, cascade=True, attack_kwargs={"pgd": {"steps": 5}})
    rows = [cascade.accuracy[a][0] for a in cascade.attacks]
    assert rows == sorted(rows, reverse=True)
    assert cascade.robust_accuracy[0] == rows[-1]
    assert cascade.accuracy["fgsm"][0] == report.accuracy["fgsm"][2]  # first attack sees the same samples
    assert abs(cascade.robust_accuracy[0] - report.robust_accuracy[2]) <= 0.02  # random starts differ per subset


def test_predict_function_gets_black_box_only(eval_setup):
    model, x, y = eval_setup

    def predict(batch):  # no gradients anywhere
        return model.predict(np.asarray(batch), verbose=0)

    with pytest.raises(TypeError, match="white-box attacks \\['pgd'\\] need a Keras model"):
        evaluate_robustness(predict, x, y, attacks=["pgd"], eps=[1 / 255], verbose=0)


def test_diagnostics_hook_attaches_results(eval_setup):
    model, x, y = eval_setup
    seen = {}

    def masking_check(m, xs, ys, rep):
        seen["n"] = len(xs)
        return {"fgsm_beats_pgd": rep.accuracy["fgsm"][0] < rep.accuracy["pgd"][0], "flags": ["demo flag"]}

    rep = evaluate_robustness(model, x, y, attacks=["fgsm", "pgd"], eps=[1 / 255], n=40, scale="quick",
                              verbose=0, diagnostics={"masking": masking_check})
    assert seen["n"] == 40 and rep.n == 40
    assert rep.diagnostics["masking"]["flags"] == ["demo flag"]
    assert rep.flags == ["masking: demo flag"]
    assert "WARNING: demo flag" in rep.to_markdown()


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(attacks=["pgd"], eps=[-0.1]), ValueError, "eps"),
    (dict(attacks=["pgd"], eps=[3.0]), ValueError, "did you mean"),
    (dict(attacks=[], eps=[0.01]), ValueError, "at least one attack"),
    (dict(attacks=["nope"], eps=[0.01]), ValueError, "unknown attack"),
    (dict(attacks=["cw_l2"], eps=[0.01]), ValueError, "supports norm 2"),
    (dict(attacks=["pgd"], eps=[0.01], n=0), ValueError, "n must be"),
    (dict(attacks=["pgd"], eps=[0.01], attack_kwargs={"fgsm": {}}), ValueError, "not run"),
])
def test_bad_arguments(eval_setup, kwargs, error, match):
    model, x, y = eval_setup
    with pytest.raises(error, match=match):
        evaluate_robustness(model, x, y, verbose=0, **kwargs)


def test_bad_data(eval_setup):
    model, x, y = eval_setup
    with pytest.raises(ValueError, match="labels but x has"):
        evaluate_robustness(model, x, y[:-1], attacks=["fgsm"], eps=[0.01], verbose=0)
    with pytest.raises(ValueError, match="divide uint8"):
        evaluate_robustness(model, x * 255, y, attacks=["fgsm"], eps=[0.01], verbose=0)


def test_black_box_evaluation_of_a_predict_function(eval_setup):
    from qrobust_keras._keras import tf

    model, x, y = eval_setup
    calls = []
    forward = tf.function(lambda t: model(t, training=False))

    def predict(batch):  # returns numpy: no gradients can flow through it
        calls.append(len(batch))
        return forward(tf.constant(np.asarray(batch, np.float32))).numpy()

    rep = evaluate_robustness(predict, x, y, attacks=["square", "spsa"], eps=[1 / 255, 2 / 255], n=40,
                              scale="quick", verbose=0, attack_kwargs={"spsa": {"steps": 5, "spsa_samples": 8}})
    assert rep.model == "predict"
    for i in range(2):
        assert rep.robust_accuracy[i] <= min(rep.accuracy["square"][i], rep.accuracy["spsa"][i])
        assert rep.accuracy["square"][i] <= rep.clean_accuracy
        assert 0 < rep.queries["square"][i] <= 200  # quick scale: at most 200 queries per sample
    assert rep.robust_accuracy[1] < rep.clean_accuracy
    assert sum(calls) > 40 * 2  # the attacks queried the function
