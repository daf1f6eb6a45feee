"""The named suites: AutoAttack's standard version as a cascade, the rand version for random models, quick labelled
as such, deployed files by transfer plus Square, and clear errors."""

import numpy as np
import pytest

from qrobust_keras._keras import keras, tf
from qrobust_keras.evaluation import evaluate_robustness
from qrobust_keras.evaluation.suite import settings_are_current, suite_plan


@pytest.fixture(scope="module")
def setup():
    rng = np.random.default_rng(0)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.layers.Conv2D(4, 3, activation="relu", input_shape=(8, 8, 1)),
                              keras.layers.Flatten(), keras.layers.Dense(10)])
    x = rng.uniform(size=(24, 8, 8, 1)).astype(np.float32)
    y = model.predict(x, verbose=0).argmax(1)
    return model, x, y


def test_standard_plan_is_autoattack_standard():
    plan = suite_plan("standard", n_classes=10)
    assert plan.attacks == ["apgd-ce", "apgd-t", "fab-t", "square"] and plan.cascade
    assert plan.attack_kwargs["apgd-t"] == {"steps": 100, "n_target_classes": 9}
    assert plan.attack_kwargs["fab-t"] == {"steps": 100, "n_target_classes": 9}
    # Square as ART's AutoAttack runs it (5 restarts), not the authors' single run: see the module docstring
    assert plan.attack_kwargs["square"] == {"queries": 5000, "p_init": 0.8, "restarts": 5}
    assert "x5 restarts" in plan.label
    assert suite_plan("rand").attack_kwargs["apgd-dlr"]["eot"] == 20
    assert "not standard" in suite_plan("quick").label


def test_cascade_gives_the_same_worst_case_as_every_attack_on_every_point(setup):
    model, x, y = setup
    kwargs = dict(attacks=["fgsm", "bim", "fab-t"], eps=[0.02, 0.05], seed=0, verbose=0, scale="quick")
    full = evaluate_robustness(model, x, y, cascade=False, **kwargs)
    cascade = evaluate_robustness(model, x, y, cascade=True, **kwargs)
    assert cascade.robust == full.robust
    assert 0 < sum(cascade.robust[0]) < len(x)            # the budget leaves something to compare


def test_standard_suite_is_reproducible_and_records_who_broke_what(setup):
    model, x, y = setup
    a = evaluate_robustness(model, x, y, eps=[0.02], suite="standard", seed=3, verbose=0)
    b = evaluate_robustness(model, x, y, eps=[0.02], suite="standard", seed=3, verbose=0)
    assert a.robust == b.robust and a.broken_by == b.broken_by
    assert a.settings["suite_label"].startswith("standard suite")
    counts = a.broken_counts()
    robust = sum(a.robust[0])
    clean_wrong = sum(1 for who in a.broken_by[0] if who == "clean")
    assert sum(c[0] for c in counts.values()) + robust + clean_wrong == len(x)
    # the cascade's rows are cumulative and end at the worst case
    assert a.accuracy["square"][0] == a.robust_accuracy[0]
    assert "standard suite" in a.to_markdown()
    # what the report recorded is this version's standard suite; the suite before Square's restarts is not
    assert settings_are_current("standard", a.settings["attack_kwargs"])
    earlier = {**a.settings["attack_kwargs"], "square": {"queries": 5000, "p_init": 0.8}}
    assert not settings_are_current("standard", earlier)
    assert not settings_are_current("quick", a.settings["attack_kwargs"])


def test_overridden_settings_are_not_called_standard(setup):
    model, x, y = setup
    r = evaluate_robustness(model, x[:8], y[:8], eps=[0.02], suite="standard", verbose=0,
                            attack_kwargs={"square": {"queries": 50}})
    assert "not the standard suite" in r.settings["suite_label"]
    quick = evaluate_robustness(model, x[:8], y[:8], eps=[0.02], suite="quick", verbose=0)
    assert "quick (not standard)" in quick.to_markdown()


class _Noise(keras.layers.Layer):
    """Gaussian noise at inference: a randomized defense."""

    def call(self, inputs):
        return inputs + tf.random.normal(tf.shape(inputs), stddev=0.05)


def test_a_random_model_gets_the_rand_version(setup):
    model, x, y = setup
    noisy = keras.Sequential([_Noise(input_shape=(8, 8, 1)), model])
    r = evaluate_robustness(noisy, x[:8], y[:8], eps=[0.02], suite="standard", verbose=0,
                            attack_kwargs={"apgd-ce": {"steps": 10}, "apgd-dlr": {"steps": 10}})
    assert r.attacks == ["apgd-ce", "apgd-dlr"]
    assert any("rand version" in note for note in r.notes)
    deterministic = evaluate_robustness(model, x[:8], y[:8], eps=[0.02], suite="standard", verbose=0,
                                        attack_kwargs={"square": {"queries": 20}})
    assert deterministic.attacks == ["apgd-ce", "apgd-t", "fab-t", "square"]


def test_a_deployed_model_is_attacked_by_transfer_or_labelled_an_upper_bound(setup):
    model, x, y = setup

    def deployed(batch):
        return model.predict(batch, verbose=0)

    kw = dict(eps=[0.03], verbose=0, attack_kwargs={"square": {"queries": 30}})
    alone = evaluate_robustness(deployed, x, y, suite="standard", **kw)
    assert alone.attacks == ["square"] and "upper bound" in alone.settings["suite_label"]
    transfer = evaluate_robustness(deployed, x, y, suite="standard", source_model=model, **kw)
    assert transfer.attacks == ["apgd-ce", "apgd-t", "fab-t", "square"]
    assert "transferred" in transfer.settings["suite_label"]
    assert transfer.robust_accuracy[0] <= alone.robust_accuracy[0]


def test_a_search_model_is_queried_but_every_example_is_scored_on_the_model(setup):
    """search_model= (the same .tflite file on faster kernels) steers the black-box search; the numbers stay the
    model's: a stand-in that lies (every input misclassified) stops Square at once, and its examples are then
    scored on the model, which they do not fool."""
    model, x, y = setup

    def deployed(batch):
        return model.predict(batch, verbose=0)

    def twin(batch):
        return model.predict(batch, verbose=0)

    def liar(batch):  # shifts every score so that argmax is the next class: "broken" everywhere
        scores = model.predict(batch, verbose=0)
        return np.roll(scores, 1, axis=1)

    kw = dict(attacks=["square"], eps=[0.03], verbose=0, seed=0, attack_kwargs={"square": {"queries": 40}})
    plain = evaluate_robustness(deployed, x, y, **kw)
    same = evaluate_robustness(deployed, x, y, search_model=twin, **kw)
    assert same.robust == plain.robust and "twin" in same.settings["search_model"]
    fooled = evaluate_robustness(deployed, x, y, search_model=liar, **kw)
    assert fooled.robust_accuracy[0] >= plain.robust_accuracy[0] and fooled.robust_accuracy[0] > 0.5
    assert evaluate_robustness(liar, x, y, **kw).robust_accuracy[0] == 0.0   # what the stand-in alone would claim
    with pytest.raises(TypeError, match="search_model"):
        evaluate_robustness(model, x, y, search_model=deployed, **kw)
    with pytest.raises(ValueError, match="search_model= must score the same classes"):
        evaluate_robustness(deployed, x, y, search_model=lambda b: deployed(b)[:, :5], **kw)


def test_errors_name_the_argument(setup):
    model, x, y = setup
    with pytest.raises(ValueError, match="suite must be one of"):
        evaluate_robustness(model, x, y, suite="autoattack", verbose=0)
    with pytest.raises(ValueError, match="either suite= or attacks="):
        evaluate_robustness(model, x, y, suite="standard", attacks=["pgd"], verbose=0)
    with pytest.raises(ValueError, match="eps"):
        evaluate_robustness(model, x, y, suite="standard", eps=[-0.1], verbose=0)
    with pytest.raises(ValueError, match="y"):
        evaluate_robustness(model, x, y[:5], suite="standard", verbose=0)
    with pytest.raises(TypeError, match="source_model"):
        evaluate_robustness(model, x, y, suite="standard", source_model=model, verbose=0)


def test_budgets_evaluated_one_at_a_time_concatenate_to_the_joint_report(setup):
    from qrobust_keras.evaluation import RobustnessReport

    model, x, y = setup
    kwargs = dict(attacks=["fgsm", "bim"], seed=0, verbose=0, scale="quick", cascade=True)
    joint = evaluate_robustness(model, x, y, eps=[0.02, 0.05], **kwargs)
    parts = RobustnessReport.concat([evaluate_robustness(model, x, y, eps=[e], **kwargs) for e in (0.02, 0.05)])
    assert parts.robust == joint.robust and parts.accuracy == joint.accuracy and parts.broken_by == joint.broken_by
    assert parts.eps == joint.eps and parts.settings["eps_labels"] == joint.settings["eps_labels"]
    with pytest.raises(ValueError, match="at least one"):
        RobustnessReport.concat([])


def test_audio_budgets_are_labelled_in_their_own_units(setup):
    model, x, y = setup
    report = evaluate_robustness(model, x, y, attacks=["fgsm"], eps=[0.25, 1.0], scale="audio", verbose=0)
    assert report.settings["eps_labels"] == ["0.25", "1"]  # not "255/255", the image label of 1.0
    report.settings.pop("eps_labels")
    assert [p.settings["eps_labels"] for p in report.split()] == [["0.25"], ["1"]]
