"""Tests of qrobust_keras.evaluation.transferability: diagonal = direct attack, Bernhard's sample protocol,
outputs (markdown, JSON, PNG), errors."""

import json
import pathlib

import numpy as np
import pytest

from qrobust_keras.attacks.pgd import pgd
from qrobust_keras.evaluation.transferability import transferability

import _diag_fixtures as fx  # noqa: E402  (put on sys.path by conftest.py)

EPS = 4 / 255


@pytest.fixture(scope="module")
def setup(shared_data):
    _, _, x_test, y_test = fx.cifar(shared_data)
    models = {"float": fx.trained("float", shared_data), "int4": fx.trained("quant", shared_data),
              "masked": fx.trained("masked", shared_data)}
    x, y = x_test[:80], y_test[:80]
    tm = transferability(models, x, y, attack="pgd", eps=EPS, attack_kwargs={"steps": 5})
    return models, x, y, tm


def _pred(model, x):
    return model.predict(x, verbose=0, batch_size=256).argmax(1)


def test_diagonal_equals_direct_white_box_success(setup):
    models, x, y, tm = setup
    for i, (name, model) in enumerate(models.items()):
        ok = _pred(model, x) == y
        x_adv = pgd(model, x[ok], y[ok], eps=EPS, steps=5, seed=0, verbose=0)
        direct = float(np.mean(_pred(model, x_adv) != y[ok]))
        assert tm.counts[i, i] == ok.sum() > 10
        assert tm.success[i, i] == direct, name
    np.testing.assert_array_equal(tm.diagonal, np.diag(tm.success))


def test_off_diagonal_uses_samples_both_models_classify_correctly(setup):
    models, x, y, tm = setup
    names = list(models)
    src, tgt = models["float"], models["int4"]
    ok_s, ok_t = _pred(src, x) == y, _pred(tgt, x) == y
    both = ok_s & ok_t
    assert tm.counts[0, 1] == tm.counts[1, 0] == both.sum()
    x_adv = pgd(src, x[ok_s], y[ok_s], eps=EPS, steps=5, seed=0, verbose=0)  # as transferability crafts it
    keep = both[ok_s]
    expected = float(np.mean(_pred(tgt, x_adv[keep]) != y[ok_s][keep]))
    assert tm.success[names.index("float"), names.index("int4")] == expected
    assert np.all((tm.success >= 0) & (tm.success <= 1))
    np.testing.assert_allclose(tm.clean_accuracy, [np.mean(_pred(m, x) == y) for m in models.values()])


def test_float_examples_transfer_to_the_masked_model_better_than_its_own_gradients(setup):
    _, _, _, tm = setup
    names = tm.names
    # The zero-gradient model resists its own PGD but not examples crafted on the float model. Its own PGD only
    # has the random start, which flips what uniform noise of the budget flips: below 0.1 on one CPU, 0.105 on
    # another (2 of 19 samples; uniform noise flipped 0.11-0.21 of them), against 0.50 (5 of 10) from the float
    # model's examples there.
    own = tm.success[names.index("masked"), names.index("masked")]
    assert own <= 0.25 and tm.success[names.index("float"), names.index("masked")] > 2 * own, tm.success


def test_markdown_json_and_heatmap(setup, tmp_path):
    _, _, _, tm = setup
    md = tm.to_markdown()
    assert "| source \\ target | float | int4 | masked |" in md and f"{tm.success[0, 1]:.3f}" in md
    path = tmp_path / "out" / "transfer.json"
    tm.to_json(path)
    data = json.loads(path.read_text())
    np.testing.assert_allclose(np.array(data["success"], float), tm.success)
    png = tm.heatmap(tmp_path / "out" / "transfer.png")
    raw = pathlib.Path(png).read_bytes()
    assert raw[:8] == b"\x89PNG\r\n\x1a\n" and len(raw) > 2000
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["transfer.json", "transfer.png"]


def test_callable_attack_identity_gives_zero_success(setup):
    models, x, y, _ = setup
    sub = {"float": models["float"], "int4": models["int4"]}
    tm = transferability(sub, x, y, attack=lambda m, xx, yy, eps, seed, clip_min, clip_max, **kw: xx, eps=EPS)
    np.testing.assert_array_equal(tm.success, np.zeros((2, 2)))


def test_errors(setup):
    models, x, y, _ = setup
    from qrobust_keras._keras import keras

    with pytest.raises(ValueError, match="models must be a non-empty dict"):
        transferability({}, x, y)
    with pytest.raises(ValueError, match="models must be a non-empty dict"):
        transferability([models["float"]], x, y)
    with pytest.raises(TypeError, match=r"models\['f'\] must be a Keras model"):
        transferability({"f": "model.tflite"}, x, y)
    with pytest.raises(ValueError, match=r"attack must be one of .* got attack='deepfool'"):
        transferability({"f": models["float"]}, x, y, attack="deepfool")
    with pytest.raises(ValueError, match="attack_kwargs must not contain 'eps'"):
        transferability({"f": models["float"]}, x, y, attack_kwargs={"eps": 0.1})
    three = keras.Sequential([keras.layers.Flatten(input_shape=(32, 32, 3)), keras.layers.Dense(3)])
    with pytest.raises(ValueError, match="same number of classes"):
        transferability({"f": models["float"], "t": three}, x, y)
    with pytest.raises(ValueError, match="y has 3 labels but x has 80 samples"):
        transferability({"f": models["float"]}, x, y[:3])
    with pytest.raises(ValueError, match=r"eps must be a finite number in \[0, 1\]"):
        transferability({"f": models["float"]}, x, y, eps=8)
