"""pgd and bim: agreement with cleverhans, exact constraints, restarts, seeds, targeted mode, EOT, bad inputs."""

import numpy as np
import pytest
from cleverhans.tf2.attacks.projected_gradient_descent import projected_gradient_descent

from qrobust_keras.attacks import bim, pgd
from qrobust_keras.models import logits_model


def _acc(model, x, y):
    return float((model.predict(x, verbose=0, batch_size=256).argmax(1) == y).mean())


@pytest.mark.parametrize("norm,eps", [("inf", 0.5 / 255), ("2", 0.05)])
def test_pgd_matches_cleverhans(small_model, attack_set, norm, eps):
    x, y = attack_set
    ours = pgd(small_model, x, y, eps=eps, norm=norm, steps=10, step_size=eps / 4, verbose=0)
    ref = projected_gradient_descent(logits_model(small_model), x, eps, eps / 4, 10, np.inf if norm == "inf" else 2,
                                     clip_min=0.0, clip_max=1.0, y=y, rand_init=True, rand_minmax=eps,
                                     sanity_checks=False).numpy()
    # Random starts differ, so samples near the boundary can differ: tolerance 3 points on 200 images (measured
    # differences are 0-0.5 point). Ours keeps the last iterate that fooled the model, so it may only be stronger.
    ours_acc, ref_acc = _acc(small_model, ours, y), _acc(small_model, ref, y)
    assert ours_acc <= ref_acc + 0.03
    assert ours_acc >= ref_acc - 0.03
    assert ours_acc < 0.8


def test_bim_matches_cleverhans_without_random_start(small_model, attack_set):
    x, y = attack_set
    eps = 0.5 / 255
    ours = bim(small_model, x, y, eps=eps, steps=10, step_size=eps / 4, verbose=0)
    ref = projected_gradient_descent(logits_model(small_model), x, eps, eps / 4, 10, np.inf, clip_min=0.0,
                                     clip_max=1.0, y=y, rand_init=False, sanity_checks=False).numpy()
    assert abs(_acc(small_model, ours, y) - _acc(small_model, ref, y)) <= 0.01  # deterministic: within 2 samples


@pytest.mark.parametrize("norm,eps", [("inf", 3 / 255), ("2", 0.3)])
def test_constraints_hold_exactly(small_model, attack_set, norm, eps):
    x, y = attack_set
    x_adv = pgd(small_model, x[:64], y[:64], eps=eps, norm=norm, steps=5, verbose=0)
    delta = x_adv.astype(np.float64) - x[:64].astype(np.float64)
    if norm == "inf":
        assert np.abs(delta).max() <= eps
        assert np.abs(delta).max() > 0.9 * eps  # the budget is used
    else:
        assert np.linalg.norm(delta.reshape(64, -1), axis=1).max() <= eps
    assert x_adv.dtype == np.float32 and x_adv.min() >= 0.0 and x_adv.max() <= 1.0


def test_custom_clip_range_is_respected(small_model, attack_set):
    x, y = attack_set
    x = np.clip(x[:32], 0.2, 0.8)
    x_adv = pgd(small_model, x, y[:32], eps=8 / 255, steps=3, clip_min=0.2, clip_max=0.8, verbose=0)
    assert x_adv.min() >= 0.2 and x_adv.max() <= 0.8


def test_same_seed_identical_and_seed_matters(small_model, attack_set):
    x, y = attack_set
    a = pgd(small_model, x[:64], y[:64], eps=1 / 255, steps=3, seed=5, verbose=0)
    b = pgd(small_model, x[:64], y[:64], eps=1 / 255, steps=3, seed=5, verbose=0)
    c = pgd(small_model, x[:64], y[:64], eps=1 / 255, steps=3, seed=6, verbose=0)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_restarts_keep_per_sample_best(small_model, attack_set):
    x, y = attack_set
    eps = 0.4 / 255
    one = pgd(small_model, x, y, eps=eps, steps=5, restarts=1, seed=3, verbose=0)
    three, info = pgd(small_model, x, y, eps=eps, steps=5, restarts=3, seed=3, verbose=0, return_info=True)
    fooled_one = small_model.predict(one, verbose=0).argmax(1) != y
    fooled_three = small_model.predict(three, verbose=0).argmax(1) != y
    # Restart 0 of the 3-restart run is the 1-restart run: every sample it fooled stays fooled.
    assert np.all(fooled_three[fooled_one])
    assert fooled_three.sum() >= fooled_one.sum()
    assert np.array_equal(info.success, fooled_three)
    assert np.all(info.gradients == 15)


def test_targeted_pgd_hits_targets(small_model, attack_set):
    x, y = attack_set
    target = (y + 1) % 10
    x_adv = pgd(small_model, x[:100], target[:100], eps=4 / 255, steps=20, targeted=True, verbose=0)
    hit = small_model.predict(x_adv, verbose=0).argmax(1) == target[:100]
    assert hit.mean() >= 0.7  # measured 0.86 on this model
    with pytest.raises(ValueError, match="targeted"):
        pgd(small_model, x[:4], None, eps=4 / 255, targeted=True, verbose=0)


def test_labels_default_to_predictions(small_model, attack_set):
    x, y = attack_set  # correctly classified, so predictions == y
    a = pgd(small_model, x[:32], None, eps=1 / 255, steps=3, verbose=0)
    b = pgd(small_model, x[:32], y[:32], eps=1 / 255, steps=3, verbose=0)
    assert np.array_equal(a, b)


def test_eot_uses_stochastic_quantizers_reproducibly(stochastic_model, attack_set):
    x, y = attack_set
    x, y = x[:32], y[:32]
    a, info = pgd(stochastic_model, x, y, eps=2 / 255, steps=3, eot=4, seed=1, verbose=0, return_info=True)
    b = pgd(stochastic_model, x, y, eps=2 / 255, steps=3, eot=4, seed=1, verbose=0)
    c = pgd(stochastic_model, x, y, eps=2 / 255, steps=3, eot=4, seed=2, verbose=0)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    assert "stochastic forward passes" in info.notes[0]
    assert np.all(info.gradients == 12)
    _, info1 = pgd(stochastic_model, x, y, eps=2 / 255, steps=3, verbose=0, return_info=True)
    assert "inference-mode" in info1.notes[0]


BAD = [
    (dict(eps=-0.1), "eps"),
    (dict(eps=8.0), "did you mean"),
    (dict(eps=float("nan")), "eps"),
    (dict(norm="l1"), "norm"),
    (dict(steps=0), "steps"),
    (dict(step_size=-1.0), "step_size"),
    (dict(batch_size=0), "batch_size"),
    (dict(restarts=0), "restarts"),
    (dict(seed=-1), "seed"),
    (dict(loss="hinge"), "loss"),
    (dict(loss="dlr", targeted=True), "untargeted only"),
]


@pytest.mark.parametrize("kwargs,match", BAD)
def test_bad_arguments_raise_clear_errors(small_model, attack_set, kwargs, match):
    x, y = attack_set
    args = dict(eps=2 / 255, verbose=0)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        pgd(small_model, x[:4], y[:4], **args)


def test_bad_inputs_raise_clear_errors(small_model, attack_set):
    x, y = attack_set
    x, y = x[:4].copy(), y[:4]
    with pytest.raises(ValueError, match="divide uint8 pixels by 255"):
        pgd(small_model, x * 255, y, eps=2 / 255, verbose=0)
    nan = x.copy()
    nan[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        pgd(small_model, nan, y, eps=2 / 255, verbose=0)
    with pytest.raises(ValueError, match="3 labels but x has 4"):
        pgd(small_model, x, y[:3], eps=2 / 255, verbose=0)
    with pytest.raises(ValueError, match="only 10 classes"):
        pgd(small_model, x, np.array([0, 1, 2, 12]), eps=2 / 255, verbose=0)
    with pytest.raises(ValueError, match="model expects"):
        pgd(small_model, x[:, :16], y, eps=2 / 255, verbose=0)
    with pytest.raises(TypeError, match="black-box attack"):
        pgd(lambda z: np.zeros((len(z), 10)), x, y, eps=2 / 255, verbose=0)


def test_fgsm_bim_and_pgd_of_any_length_share_one_trace_per_model(small_model, attack_set, tmp_path):
    """Tracing a model's gradient costs seconds, a step milliseconds: the step count, eps and the batch size are
    inputs of the compiled loop, and the label and score forward passes are compiled once per model."""
    from qrobust_keras.attacks import fgsm, square
    from qrobust_keras.attacks.gradients import _model_cache
    from qrobust_keras.models import load_model

    small_model.save(tmp_path / "m.h5")
    model = load_model(str(tmp_path / "m.h5"))            # a fresh copy: nothing traced for it yet
    x, y = attack_set
    fgsm(model, x[:37], y[:37], eps=2 / 255, verbose=0)
    pgd(model, x, y, eps=1 / 255, steps=3, verbose=0, batch_size=64)          # a last partial batch of 200 % 64
    bim(model, x[:50], y[:50], eps=4 / 255, steps=7, verbose=0)
    square(model, x[:20], y[:20], eps=4 / 255, queries=5, verbose=0)
    square(model, x[:30], y[:30], eps=2 / 255, queries=5, verbose=0)
    cache = _model_cache(model)
    traces = {key[0]: fn.experimental_get_tracing_count() for key, fn in cache.items()
              if hasattr(fn, "experimental_get_tracing_count")}
    loops = [fn for key, fn in cache.items() if key[0] == "sign"]
    assert len(loops) == 1 and loops[0][0].experimental_get_tracing_count() == 1
    assert traces == {"traced_logits": 1, "forward": 1}, traces
    assert cache[("forward",)] is cache[("traced_logits",)]  # a float model: the scoring is the traced pass itself
    # the score function black-box code wraps a Keras model in: one per model, one trace for any batch size
    from qrobust_keras.attacks.common import as_predict_fn

    as_predict_fn(model)(x[:3]), as_predict_fn(model, batch_size=16)(x[:40])
    assert cache[("scores",)].experimental_get_tracing_count() == 1
